"""Crash recovery (suite slow): kill -9 the daemon under a writer.

    test_crash.py MODE [ITERATIONS]     MODE: wal or delete (default 20)

Each iteration, on the same database: start the node; a writer process
(synchronous=FULL) commits one row per transaction and, after each COMMIT
returns, appends the row id and the -pos TXID it read to an ack file
outside the mount (flushed and fsynced); after a seeded random delay the
daemon is killed with SIGKILL; the writer then fails; the dead mount is
lazily unmounted; the node is started again (recovery) and:
  - integrity_check is ok;
  - every acknowledged row is there, the ids are 1..max with max at most
    one past the last acknowledged (the commit in flight may or may not
    have made it), and `total` is the sum of the ids (no torn commit);
  - the -pos TXID is at least every TXID the writer read;
then a clean stop and `ltxfs verify` must pass before the next round.
"""

import os
import random
import subprocess
import sys
import time

import ltxfs_harness as h
from workload import WORKLOAD

MODES = {"wal": "WAL", "delete": "DELETE"}


def read_acks(path):
    acks = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:     # a torn last line cannot be fsynced
                acks.append((int(parts[0]), int(parts[1])))
    return acks


def test():
    mode = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    journal_mode = MODES[mode]
    rng = random.Random("crash/" + mode)
    db = "crash.db"
    with h.Node("crash-" + mode) as n:
        ack_file = n.root + "/acks"
        open(ack_file, "w").close()
        n.start()
        c = h.connect(n.path(db))
        c.execute("PRAGMA page_size=4096")
        c.execute("PRAGMA journal_mode=%s" % journal_mode)
        c.execute("CREATE TABLE rows(id INTEGER PRIMARY KEY, v BLOB)")
        c.close()
        print("  iter  delay  acked  rows  TXID(writer)  TXID(after)  writer")
        for it in range(iterations):
            if not n.running():
                n.start()
            delay = rng.uniform(0.05, 1.2)
            acked_before = len(read_acks(ack_file))
            with h.Procs() as procs:
                w = procs.spawn([sys.executable, WORKLOAD, "crash-write",
                                 "--db", n.path(db), "--journal-mode",
                                 journal_mode, "--seed", "crash/%s/%d"
                                 % (mode, it), "--seconds", "30",
                                 "--ack-file", ack_file],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
                # The writer is under way once it has acknowledged one.
                h.wait_for(lambda: len(read_acks(ack_file)) > acked_before
                           or w.poll() is not None, 30,
                           "the writer's first commit")
                if w.poll() is not None:
                    raise h.TestFailure("the writer stopped early: %s"
                                        % w.communicate()[0])
                time.sleep(delay)   # the random moment of the crash
                # The dead mount stays until the writer has failed, so it
                # cannot write into the directory beneath.
                n.kill9(unmount=False)
                try:
                    out, _ = w.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    raise h.TestFailure("the writer hung after the daemon "
                                        "was killed")
                wrc = w.returncode
            h.lazy_unmount(n.mnt)
            stray = os.listdir(n.mnt)
            h.check(not stray, "files beneath the mount point: %s" % stray)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            h.check(wrc == 3, "writer exit %s after the kill: %s"
                    % (wrc, out[-2000:]))
            acks = read_acks(ack_file)
            n.start()
            path = n.path(db)
            h.integrity_ok(path)
            c = h.connect(path)
            try:
                ids = [r[0] for r in c.execute("SELECT id FROM rows "
                                               "ORDER BY id")]
                total = h.one(c, "SELECT s FROM total WHERE k = 1")
            finally:
                c.close()
            max_ack = acks[-1][0]
            h.check(ids == list(range(1, len(ids) + 1)),
                    "row ids are not 1..%d (%d rows)" % (len(ids),
                                                          len(ids)))
            h.check(len(ids) >= max_ack, "acknowledged row %d is lost "
                    "(rows 1..%d)" % (max_ack, len(ids)))
            h.check(len(ids) <= max_ack + 1, "%d rows, only %d "
                    "acknowledged" % (len(ids), max_ack))
            h.check(total == sum(ids), "total %s, sum of ids %d: a torn "
                    "transaction" % (total, sum(ids)))
            wtxid = max(t for _, t in acks)
            txid, _ = n.pos(db)
            h.check(txid >= wtxid, "-pos TXID %d after recovery, the "
                    "writer read %d" % (txid, wtxid))
            print("  %4d  %.2fs  %5d  %4d  %12d  %11d  %s"
                  % (it, delay, len(acks) - acked_before, len(ids), wtxid,
                     txid, last[:60]))
            sys.stdout.flush()
            n.stop()
            _, found, _ = n.verify(db)
            h.check(found.get(db, (None,))[0] == txid,
                    "verify TXID %s, -pos %d" % (found.get(db), txid))


if __name__ == "__main__":
    h.main(test)
