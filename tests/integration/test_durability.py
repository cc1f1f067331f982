"""The LTX log is made as durable as SQLite asks its own files to be
(docs/STORAGE.md, "Durability of the log"): a commit that SQLite syncs
is in a synced log record before the commit returns, and a commit it does
not sync costs no sync of the log. Counted with strace on the daemon:
fdatasync/fsync calls on the database's LTX segment files.

    sync-modes   DELETE and WAL with synchronous=FULL: at least one log
                 sync per commit; WAL with synchronous=OFF: (almost) none
"""

import os
import re
import shutil
import subprocess
import sys

import ltxfs_harness as h

COMMITS = 40


def count_log_syncs(n, db, mode, sync):
    """Runs COMMITS commits on db in journal mode mode with synchronous
    sync while strace follows the daemon; returns how many fdatasync or
    fsync calls were made on its LTX segments."""
    c = h.connect(n.path(db))
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("PRAGMA synchronous=%s" % sync)
    c.execute("CREATE TABLE IF NOT EXISTS t(x)")
    c.execute("INSERT INTO t VALUES (0)")
    out = os.path.join(n.root, "strace-%s-%s.txt" % (mode, sync))
    st = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e",
                           "trace=fsync,fdatasync", "-o", out, "-p",
                           str(n.proc.pid)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        # strace says nothing when attached: a first sync seen proves it.
        def attached():
            c.execute("INSERT INTO t VALUES (-1)")
            os.fsync(os.open(n.path(db), os.O_RDONLY))
            return os.path.exists(out) and "sync(" in open(out).read()
        h.wait_for(attached, 20, "strace to attach", interval=0.1)
        start = len(open(out).read())
        for i in range(COMMITS):
            c.execute("INSERT INTO t VALUES (?)", (i,))
        c.close()
    finally:
        st.terminate()  # detaches and writes out every line first
        st.wait(timeout=10)
    text = open(out).read()[start:]
    return len(re.findall(r"sync\(\d+</[^>]*/dbs/%s/log/[0-9a-f]{16}\.seg>"
                          % re.escape(db), text))


def t_sync_modes():
    h.check(shutil.which("strace"), "strace is not installed (package "
            "strace, from scripts/install-deps)")
    with h.Node("dur", log_level="info") as n:
        n.start()
        got = {}
        for db, mode, sync in (("d.db", "DELETE", "FULL"),
                               ("w.db", "WAL", "FULL"),
                               ("o.db", "WAL", "OFF")):
            got[(mode, sync)] = count_log_syncs(n, db, mode, sync)
            print("  %s synchronous=%s: %d log syncs for %d commits"
                  % (mode, sync, got[(mode, sync)], COMMITS))
        h.check(got[("DELETE", "FULL")] >= COMMITS,
                "DELETE/FULL: %d log syncs for %d commits"
                % (got[("DELETE", "FULL")], COMMITS))
        h.check(got[("WAL", "FULL")] >= COMMITS,
                "WAL/FULL: %d log syncs for %d commits"
                % (got[("WAL", "FULL")], COMMITS))
        h.check(got[("WAL", "OFF")] <= 2, "WAL/OFF: %d log syncs for %d "
                "commits SQLite did not sync" % (got[("WAL", "OFF")],
                                                 COMMITS))
        n.stop()


TESTS = {"sync-modes": t_sync_modes}

if __name__ == "__main__":
    h.main(TESTS[sys.argv[1]])
