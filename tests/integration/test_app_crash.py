"""The application (SQLite) crashes; the daemon keeps running.

    test_app_crash.py at-truncate     (suite fuse) for DELETE, TRUNCATE,
        PERSIST and WAL: a VACUUM that shrinks the database, its process
        killed at SQLite's ftruncate, i.e. after the commit (journal
        deleted, zeroed, or WAL frames written) and before the file is cut
        short (in TRUNCATE mode the journal truncation itself is stopped,
        leaving a hot journal). The next connection must see a consistent
        database with every committed row, can write, and after a clean
        stop `ltxfs verify` must pass.
    test_app_crash.py random MODE     (suite slow) 20 times: a writer
        (crash-write: small and bigger transactions, VACUUMs) killed with
        SIGKILL at a seeded random moment; a new connection checks
        integrity_check, every acknowledged row and the running total;
        after the last round a clean stop and `ltxfs verify`.
"""

import random
import signal
import subprocess
import sys
import time

import ltxfs_harness as h
from workload import WORKLOAD, create_db


def t_at_truncate():
    results = {}
    with h.Node("app-crash-truncate") as n:
        n.start()
        for mode in ("DELETE", "TRUNCATE", "PERSIST", "WAL"):
            db = "v-%s.db" % mode.lower()
            path = n.path(db)
            create_db(path, 4096, mode)
            c = h.connect(path)
            c.execute("PRAGMA journal_mode=%s" % mode)
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            c.executemany("INSERT INTO t(v) VALUES(randomblob(3000))",
                          [()] * 100)
            c.execute("DELETE FROM t WHERE id > 10")
            pages = h.one(c, "PRAGMA page_count")
            c.close()
            r = subprocess.run([sys.executable, WORKLOAD, "vacuum-die",
                                "--db", path, "--journal-mode", mode],
                               capture_output=True, text=True, timeout=120)
            h.check(r.returncode == -signal.SIGSYS, "%s: the VACUUM "
                    "process exited %d, expected to be killed at "
                    "ftruncate: %s%s" % (mode, r.returncode, r.stdout,
                                         r.stderr[-2000:]))
            h.integrity_ok(path)
            c = h.connect(path)
            if mode != "WAL":
                c.execute("PRAGMA journal_mode=%s" % mode)
            rows = h.one(c, "SELECT count(*) FROM t")
            h.check(rows == 10, "%s: %d rows after the crash" % (mode, rows))
            c.execute("INSERT INTO t(v) VALUES(x'0102')")
            now = h.one(c, "PRAGMA page_count")
            c.close()
            h.integrity_ok(path)
            results[db] = (mode, pages, now)
        pos = {db: n.pos(db) for db in results}
        n.stop()
        rc, found, out = n.verify(expect_ok=False)
        bad = []
        for db, (mode, pages, now) in sorted(results.items()):
            ok = found.get(db) == pos[db]
            line = [l for l in out.splitlines() if l.startswith(db + ":")]
            print("  %-8s %d -> %d pages (file %d pages): verify %s"
                  % (mode, pages, now,
                     h.os.stat(h.os.path.join(n.data, "dbs", db,
                                              "database")).st_size // 4096,
                     line[0] if line else "(no line)"))
            if not ok:
                bad.append("%s: %s" % (mode, line[0] if line else out))
        h.check(rc == 0 and not bad, "ltxfs verify after the application "
                "died between commit and truncation:\n  "
                + "\n  ".join(bad))
        n.start()
        for db in results:
            h.check(n.pos(db) == pos[db], "%s: -pos changed" % db)
            h.integrity_ok(n.path(db))
        n.stop()


def read_acks(path):
    acks = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                acks.append((int(parts[0]), int(parts[1])))
    return acks


def t_random(mode, iterations=20):
    rng = random.Random("app-crash/" + mode)
    db = "app.db"
    with h.Node("app-crash-" + mode.lower()) as n:
        ack_file = n.root + "/acks"
        open(ack_file, "w").close()
        n.start()
        path = n.path(db)
        print("  iter  delay  rows  TXID")
        for it in range(iterations):
            before = len(read_acks(ack_file))
            delay = rng.uniform(0.05, 1.0)
            with h.Procs() as procs:
                w = procs.spawn([sys.executable, WORKLOAD, "crash-write",
                                 "--db", path, "--journal-mode", mode,
                                 "--seed", "app/%d" % it, "--seconds", "30",
                                 "--ack-file", ack_file],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
                h.wait_for(lambda: len(read_acks(ack_file)) > before or
                           w.poll() is not None, 30,
                           "the writer's first commit")
                time.sleep(delay)   # the random moment of the crash
                w.kill()
                out, _ = w.communicate(timeout=30)
            h.check(w.returncode == -signal.SIGKILL, "writer exit %d: %s"
                    % (w.returncode, out[-2000:]))
            acks = read_acks(ack_file)
            h.integrity_ok(path)
            c = h.connect(path)
            try:
                ids = [r[0] for r in c.execute("SELECT id FROM rows "
                                               "ORDER BY id")]
                total = h.one(c, "SELECT s FROM total WHERE k = 1")
            finally:
                c.close()
            mx = acks[-1][0]
            h.check(ids == list(range(1, len(ids) + 1)),
                    "row ids are not 1..%d" % len(ids))
            h.check(mx <= len(ids) <= mx + 1, "%d rows, %d acknowledged"
                    % (len(ids), mx))
            h.check(total == sum(ids), "total %s, sum of ids %d"
                    % (total, sum(ids)))
            print("  %4d  %.2fs  %4d  %d" % (it, delay, len(ids),
                                             n.pos(db)[0]))
        pos = n.pos(db)
        n.stop()
        _, found, _ = n.verify(db)
        h.check(found.get(db) == pos, "verify %s, -pos %s"
                % (found.get(db), pos))


if __name__ == "__main__":
    if sys.argv[1] == "at-truncate":
        h.main(t_at_truncate)
    else:
        h.main(lambda: t_random(sys.argv[2]))
