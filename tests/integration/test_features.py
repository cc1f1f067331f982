"""SQLite features through the mount, one per meson test:

    test_features.py vacuum-into   VACUUM INTO a new file in the mount (from
                                   a WAL and a DELETE database): the copy is
                                   a database of the mount and verifies
    test_features.py shrink        VACUUM that shrinks the file, and
                                   auto_vacuum=INCREMENTAL with
                                   incremental_vacuum, in DELETE, TRUNCATE,
                                   PERSIST and WAL
    test_features.py multi         four databases written at once (WAL,
                                   DELETE, TRUNCATE, PERSIST) with readers
                                   running during the writes
    test_features.py rm            rm of a database (its -pos goes; the
                                   others still verify; it stays gone over
                                   a restart; recreating it works)
    test_features.py page-size     VACUUM to smaller page sizes; the log
                                   verifies
    test_features.py ltx-step      `ltxfs ltx apply --step` over a log's
                                   records: it stops where told ("q", end
                                   of input), the database then holds the
                                   records applied so far, and all of them
                                   give the node's -pos checksum
"""

import os
import re
import sqlite3
import subprocess
import sys

import ltxfs_harness as h
from workload import check_models, create_db, run_writers


def fill(path, rows, size, table="t"):
    c = h.connect(path)
    c.execute("BEGIN IMMEDIATE")
    c.execute('CREATE TABLE IF NOT EXISTS "%s"(id INTEGER PRIMARY KEY, '
              'v BLOB)' % table)
    c.executemany('INSERT INTO "%s"(v) VALUES(randomblob(?))' % table,
                  [(size,)] * rows)
    c.execute("COMMIT")
    c.close()


def stop_verify_restart(n, dbs):
    """Clean stop, verify each db against its -pos, restart, -pos kept."""
    pos = {db: n.pos(db) for db in dbs}
    digests = {db: h.content_digest(n.path(db)) for db in dbs}
    n.stop()
    _, found, out = n.verify()
    for db in dbs:
        h.check(found.get(db) == pos[db], "%s: verify %s, -pos %s\n%s"
                % (db, found.get(db), pos[db], out))
    n.start()
    for db in dbs:
        h.check(n.pos(db) == pos[db], "%s: -pos %s after restart, %s "
                "before" % (db, n.pos(db), pos[db]))
        h.check(h.content_digest(n.path(db)) == digests[db],
                "%s: content changed across the restart" % db)
        h.integrity_ok(n.path(db))


def t_vacuum_into():
    with h.Node("vacuum-into") as n:
        n.start()
        for mode in ("WAL", "DELETE"):
            src = "src-%s.db" % mode.lower()
            dst = "copy-%s.db" % mode.lower()
            create_db(n.path(src), 4096, mode)
            fill(n.path(src), 300, 700)
            c = h.connect(n.path(src))
            c.execute("DELETE FROM t WHERE id % 3 = 0")
            c.execute("CREATE INDEX t_v ON t(v)")
            c.execute("VACUUM INTO ?", (n.path(dst),))
            c.close()
            h.check(dst in n.listing() and dst + "-pos" in n.listing(),
                    "VACUUM INTO: %s is not in the mount: %s"
                    % (dst, n.listing()))
            txid, _ = n.pos(dst)
            h.check(txid >= 1, "%s-pos is %d after VACUUM INTO" % (dst, txid))
            h.integrity_ok(n.path(dst))
            h.check(h.content_digest(n.path(dst)) ==
                    h.content_digest(n.path(src)),
                    "%s differs from %s" % (dst, src))
            # The copy is an ordinary database of the mount now.
            c = h.connect(n.path(dst))
            c.execute("INSERT INTO t(v) VALUES(x'01')")
            c.close()
            h.check(n.pos(dst)[0] == txid + 1, "a write to %s made TXID "
                    "%d -> %d" % (dst, txid, n.pos(dst)[0]))
            print("  VACUUM INTO from %s: %s at TXID %d" % (mode, dst,
                                                           txid))
        stop_verify_restart(n, ["src-wal.db", "copy-wal.db",
                                "src-delete.db", "copy-delete.db"])
        n.stop()


def file_pages(n, db, ps):
    return os.stat(os.path.join(n.data, "dbs", db, "database")).st_size // ps


def t_shrink():
    failures = []
    with h.Node("shrink") as n:
        n.start()
        for mode in ("DELETE", "TRUNCATE", "PERSIST", "WAL"):
            for kind in ("vacuum", "incremental"):
                db = "%s-%s.db" % (kind, mode.lower())
                try:
                    shrink_one(n, db, mode, kind)
                except Exception as e:
                    failures.append("%s in %s: %s" % (kind, mode, e))
                    print("  FAIL %s" % failures[-1])
        h.check(not failures, "shrinking failed:\n  " +
                "\n  ".join(failures))
        stop_verify_restart(n, [d for d in n.listing()
                                if d.endswith(".db")])
        n.stop()


def shrink_one(n, db, mode, kind):
    ps = 4096
    path = n.path(db)
    c = h.connect(path)
    c.execute("PRAGMA page_size=%d" % ps)
    if kind == "incremental":
        c.execute("PRAGMA auto_vacuum=INCREMENTAL")
    h.check(h.one(c, "PRAGMA journal_mode=%s" % mode).lower() ==
            mode.lower(), "journal_mode=%s refused" % mode)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    h.check(h.one(c, "PRAGMA auto_vacuum") ==
            (2 if kind == "incremental" else 0), "auto_vacuum is %s"
            % h.one(c, "PRAGMA auto_vacuum"))
    c.close()
    fill(path, 400, 3000)
    c = h.connect(path)
    if mode != "WAL":
        c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("DELETE FROM t WHERE id > 40")
    before = h.one(c, "PRAGMA page_count")
    free = h.one(c, "PRAGMA freelist_count")
    h.check(free > 100, "only %d free pages" % free)
    if kind == "vacuum":
        c.execute("VACUUM")
    else:
        # Python's sqlite3 steps a statement without result columns only
        # once (one page); the sqlite3 CLI runs it to the end, in one
        # transaction.
        pre = "" if mode == "WAL" else "PRAGMA journal_mode=%s;" % mode
        r = subprocess.run(["sqlite3", path, pre + "PRAGMA "
                            "incremental_vacuum(%d);" % (free // 2)],
                           capture_output=True, text=True, timeout=120)
        h.check(r.returncode == 0, "sqlite3 incremental_vacuum: exit %d: "
                "%s" % (r.returncode, r.stderr.strip()))
    after = h.one(c, "PRAGMA page_count")
    h.check(after < before - 100 // 2, "%s: page_count %d -> %d"
            % (kind, before, after))
    if mode == "WAL":
        h.check(h.one(c, "PRAGMA wal_checkpoint(TRUNCATE)") == 0,
                "checkpoint busy")
    c.close()
    h.integrity_ok(path)
    fp = file_pages(n, db, ps)
    h.check(fp == after, "%s: the file has %d pages, SQLite says %d"
            % (db, fp, after))
    h.check(os.stat(path).st_size == after * ps, "%s: st_size %d in the "
            "mount, %d pages" % (db, os.stat(path).st_size, after))
    c = h.connect(path)
    if mode != "WAL":
        c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("INSERT INTO t(v) VALUES(randomblob(5000))")
    c.close()
    h.integrity_ok(path)
    print("  %-11s %-8s page_count %d -> %d, TXID %d"
          % (kind, mode, before, after, n.pos(db)[0]))


def t_multi():
    specs = [("m-wal-1.db", "WAL", 4096), ("m-delete.db", "DELETE", 1024),
             ("m-truncate.db", "TRUNCATE", 8192), ("m-wal-2.db", "WAL", 65536),
             ("m-persist.db", "PERSIST", 4096)]
    with h.Node("multi") as n:
        n.start()
        for db, mode, ps in specs:
            create_db(n.path(db), ps, mode)
        # One run_writers per database, all at once, each with two
        # writers and two readers, in threads of this process.
        import threading
        results, errors = {}, []

        def go(db, mode, ps):
            try:
                results[db] = run_writers(
                    n.path(db), ps, mode, seed="multi/" + db, workers=2,
                    txns=80, readers=2, reader_seconds=300)
            except Exception as e:
                errors.append("%s: %s" % (db, e))
        ts = [threading.Thread(target=go, args=s) for s in specs]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=600)
            h.check(not t.is_alive(), "a writer thread is still running")
        h.check(not errors, "\n".join(errors))
        for db, mode, ps in specs:
            h.integrity_ok(n.path(db))
            check_models(n.path(db), results[db])
            reads = sum(r["reads"] for r in results[db] if r.get("reader"))
            commits = sum(r["commits"] for r in results[db]
                          if not r.get("reader"))
            print("  %-14s %-8s page %5d: %d commits, %d reads, TXID %d"
                  % (db, mode, ps, commits, reads, n.pos(db)[0]))
        stop_verify_restart(n, [s[0] for s in specs])
        n.stop()


def t_rm():
    with h.Node("rm") as n:
        n.start()
        for db, mode in (("keep.db", "WAL"), ("gone.db", "DELETE"),
                         ("gone-wal.db", "WAL"), ("keep2.db", "TRUNCATE")):
            create_db(n.path(db), 4096, mode)
            fill(n.path(db), 50, 2000)
        for db in ("gone.db", "gone-wal.db"):
            os.unlink(n.path(db))
            ls = n.listing()
            h.check(db not in ls and db + "-pos" not in ls,
                    "after rm %s the mount lists %s" % (db, ls))
            h.check(not os.path.exists(n.path(db + "-pos")),
                    "%s-pos still opens after rm" % db)
        h.expect_oserror(h.errno.EPERM, os.unlink, n.path("keep.db-pos"))
        fill(n.path("keep.db"), 10, 100)
        keep = ["keep.db", "keep2.db"]
        pos = {db: n.pos(db) for db in keep}
        n.stop()
        rc, found, out = n.verify()
        for db in keep:
            h.check(found.get(db) == pos[db], "%s: verify %s, -pos %s\n%s"
                    % (db, found.get(db), pos[db], out))
        n.start()
        ls = n.listing()
        for db in ("gone.db", "gone-wal.db"):
            h.check(db not in ls and db + "-pos" not in ls,
                    "after a restart the mount lists the deleted %s: %s"
                    % (db, ls))
        for db in keep:
            h.integrity_ok(n.path(db))
        # Recreate one in another mode and page size.
        create_db(n.path("gone.db"), 1024, "WAL")
        fill(n.path("gone.db"), 20, 300)
        h.integrity_ok(n.path("gone.db"))
        c = h.connect(n.path("gone.db"))
        h.check(h.one(c, "SELECT count(*) FROM t") == 20,
                "the recreated gone.db has old rows")
        h.check(h.one(c, "PRAGMA page_size") == 1024,
                "the recreated gone.db has the old page size")
        c.close()
        print("  recreated gone.db at %016x/%016x" % n.pos("gone.db"))
        stop_verify_restart(n, keep + ["gone.db"])
        n.stop()


def t_startup_log():
    """The start-up log says what is true: a new database, a deleted one
    and an empty non-database name are not 'checked against the log';
    after a kill -9 only a database with committed pages is, once."""
    check_re = re.compile(r"db=(\S+): last stop was not clean")
    with h.Node("n", log_level="info") as n:
        n.start()
        start = len(n.log_text())
        c = sqlite3.connect(n.path("a.db"))
        c.execute("CREATE TABLE t(x)")
        c.execute("INSERT INTO t VALUES (1)")
        c.commit()
        c.close()
        c = sqlite3.connect(n.path("gone.db"))
        c.execute("CREATE TABLE t(x)")
        c.commit()
        c.close()
        os.unlink(n.path("gone.db"))
        open(n.path("empty.txt"), "w").close()
        n.settle("a.db")
        created = check_re.findall(n.log_text()[start:])
        h.check(not created, "new databases were 'checked against their "
                "log' as if a stop had not been clean: %s" % created)
        n.stop()
        start = len(n.log_text())
        n.start()
        n.stop()
        clean = check_re.findall(n.log_text()[start:])
        h.check(not clean, "a clean restart checked %s" % clean)
        n.start()
        start = len(n.log_text())
        n.kill9()
        n.start()
        h.integrity_ok(n.path("a.db"))
        after = check_re.findall(n.log_text()[start:])
        h.check(after == ["a.db"], "after kill -9 the start-up checked %s; "
                "expected only a.db (gone.db is deleted, empty.txt holds "
                "nothing)" % after)
        n.stop()


def t_page_size():
    """VACUUM to another page size (rollback journal: the one mode where
    SQLite allows it) is recorded as a full record with the new page size
    and the old database's pre-apply checksum; `ltxfs verify` replays it
    (it used to fail it: its replay XORed out the old pages read at the
    new size), and the database goes on afterwards. (To a smaller size:
    VACUUM to a larger one fails through the mount for now, its 4 KiB
    writes refused as not aligned to the new 8 KiB pages.)"""
    with h.Node("n") as n:
        n.start()
        for db, ps in (("down.db", 1024), ("down2.db", 2048)):
            create_db(n.path(db), 4096, "DELETE")
            fill(n.path(db), 60, 700)
            c = h.connect(n.path(db))
            c.execute("PRAGMA page_size=%d" % ps)
            c.execute("VACUUM")
            h.check(h.one(c, "PRAGMA page_size") == ps, "%s: page size "
                    "still %d" % (db, h.one(c, "PRAGMA page_size")))
            c.close()
            fill(n.path(db), 10, 700)
            h.integrity_ok(n.path(db))
        stop_verify_restart(n, ["down.db", "down2.db"])
        n.stop()
        rc, found, out = n.verify()
        for db in ("down.db", "down2.db"):
            h.check("%s: ok: " % db in out and "replayed TXIDs" in out,
                    "verify after a page size change: %s" % out)
        print(out.strip())


def step_apply(n, scratch, files, answers):
    """Runs `ltx apply --step` answering each "applied" line with the
    next of answers (None: close stdin). Returns the checksums it
    printed and its exit code."""
    if os.path.exists(scratch):
        os.unlink(scratch)
    p = subprocess.Popen([h.ltxfs_bin(), "ltx", "apply", "--step", scratch]
                         + files, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rd = h.StepReader(p)
    sums = []
    for a in answers:
        line = rd.applied()
        h.check(line.startswith("applied "), "no applied line: %r" % line)
        sums.append(line.split()[-1])
        if a is None:
            break
        p.stdin.write(a.encode())
        p.stdin.flush()
    p.stdin.close()
    out = (rd.buf + p.stdout.read()).decode()
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    p.stdout.close()
    p.stderr.close()
    return sums, rc, out, err


def ltx_checksum(path):
    return subprocess.run([h.ltxfs_bin(), "ltx", "checksum", path],
                          capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()


def t_ltx_step():
    with h.Node("n") as n:
        n.start()
        db = "step.db"
        create_db(n.path(db), 4096, "DELETE")
        for i in range(3):
            fill(n.path(db), 5, 300)
        txid, cksum = n.pos(db)
        n.stop()
        recs = n.log_records(db)
        h.check(len(recs) == txid == 4, "%d records, TXID %d"
                % (len(recs), txid))
        files = []
        for i, r in enumerate(recs):
            files.append(os.path.join(n.root, "rec%d.ltx" % i))
            with open(files[-1], "wb") as f:
                f.write(r)
        scratch = os.path.join(n.root, "scratch.db")
        # "q" after the second record: two applied, exit 0.
        sums, rc, out, err = step_apply(n, scratch, files, ["\n", "q\n"])
        h.check(rc == 0 and len(sums) == 2, "q: rc %d, %s %s %s"
                % (rc, sums, out, err))
        h.check(ltx_checksum(scratch) == sums[1], "after q the database "
                "checksum %s is not the second record's %s"
                % (ltx_checksum(scratch), sums[1]))
        # End of input after the first: one applied.
        sums1, rc, out, err = step_apply(n, scratch, files, [None])
        h.check(rc == 0 and ltx_checksum(scratch) == sums1[0] == sums[0],
                "EOF: rc %d, %s %s" % (rc, sums1, err))
        # Every record: the final line is the node's checksum.
        sums, rc, out, err = step_apply(n, scratch, files, ["\n"] * 3)
        h.check(rc == 0 and out.strip().splitlines()[-1] == "%016x" % cksum
                and ltx_checksum(scratch) == "%016x" % cksum,
                "all: rc %d, out %r, -pos %016x" % (rc, out, cksum))
        h.check(len(set(sums)) == 3, "the checksums did not change per "
                "record: %s" % sums)


TESTS = {"vacuum-into": t_vacuum_into, "shrink": t_shrink,
         "multi": t_multi, "rm": t_rm, "startup-log": t_startup_log,
         "page-size": t_page_size, "ltx-step": t_ltx_step}

if __name__ == "__main__":
    h.main(TESTS[sys.argv[1]])
