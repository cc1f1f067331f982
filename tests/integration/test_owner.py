"""One daemon per data directory and per mount point (cmd/owner.h), and a
restart after kill -9 clears the dead mount. One meson test per case:

    data-dir     a second daemon on a running node's data directory (its
                 own mount point and port; then the same directory through
                 a symlink) is refused at start, naming the holder's PID;
                 the running node's acknowledged writes are all there
    mount-point  three daemons started at once on one mount point (each
                 with its own data directory): one serves, two are refused
                 naming it, one mount only; a fourth started later is
                 refused naming the server's PID; SIGTERM to the server
                 leaves nothing mounted
    dead-mount   kill -9 leaves a dead mount (ENOTCONN); starting the node
                 again clears it (a warn line) and serves every
                 acknowledged write, five times over
    hidden-files a database an application wrote into the bare mount
                 point while ltxfs was down: the start warns, naming it
    guard        while no ltxfs serves the mount point (after a clean
                 stop, after kill -9, between a dead mount and the next
                 start), creating or writing a file there fails with EROFS,
                 and a connection opened before a stop cannot commit
                 anywhere; the next start mounts on the guard
"""

import errno
import os
import re
import sqlite3
import subprocess
import sys
import time

import ltxfs_harness as h

START_TIMEOUT = 30.0


def write_rows(n, db, first, count):
    """Inserts rows first..first+count-1, each its own transaction;
    returns the values acknowledged (the commit returned)."""
    c = h.connect(n.path(db))
    c.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER PRIMARY KEY)")
    done = []
    for v in range(first, first + count):
        c.execute("INSERT INTO t(v) VALUES(?)", (v,))
        done.append(v)
    c.close()
    return done


def rows(n, db):
    c = h.connect(n.path(db))
    try:
        return [r[0] for r in c.execute("SELECT v FROM t ORDER BY v")]
    finally:
        c.close()


def write_cfg(path, mnt, data, extra=""):
    with open(path, "w") as f:
        f.write("fuse:\n  dir: %s\ndata:\n  dir: %s\nhttp:\n  addr: "
                "127.0.0.1:%d\nlog:\n  level: info\n%s"
                % (mnt, data, h.free_port(), extra))


def run_refused(cfg, what):
    """Starts a daemon that must be refused: it exits 1 by itself within
    START_TIMEOUT. Returns its output."""
    try:
        r = subprocess.run([h.ltxfs_bin(), "mount", "-c", cfg],
                           capture_output=True, text=True,
                           timeout=START_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise h.TestFailure("%s: the second daemon was not refused: still "
                            "running after %.0fs" % (what, START_TIMEOUT))
    out = r.stdout + r.stderr
    h.check(r.returncode == 1, "%s: exit %d, expected 1 (refused):\n%s"
            % (what, r.returncode, out))
    return out


def t_data_dir():
    with h.Node("owner", log_level="info") as n:
        n.start()
        acked = write_rows(n, "a.db", 1, 50)
        pid = n.proc.pid
        mnt2 = os.path.join(n.root, "mnt2")
        os.mkdir(mnt2)
        link = os.path.join(n.root, "data-link")
        os.symlink(n.data, link)
        for data, what in ((n.data, "same data.dir"),
                           (link, "data.dir through a symlink")):
            cfg = os.path.join(n.root, "second.yml")
            write_cfg(cfg, mnt2, data)
            out = run_refused(cfg, what)
            h.check(re.search(r"data directory .* is in use by ltxfs PID "
                              r"%d on host \S+" % pid, out),
                    "%s: the refusal does not name PID %d and its host:\n%s"
                    % (what, pid, out))
            h.check(not h.is_mounted(mnt2), "%s: the second daemon left a "
                    "mount at %s" % (what, mnt2))
            print("  %s: refused: %s" % (what, out.strip().splitlines()[-1]))
        acked += write_rows(n, "a.db", 51, 50)
        h.check(rows(n, "a.db") == acked, "rows differ from the "
                "acknowledged writes after the refusals")
        n.stop()
        n.verify()
        n.start()
        h.check(rows(n, "a.db") == acked, "after a restart the rows differ "
                "from the acknowledged writes")
        n.stop()


def t_mount_point():
    with h.Node("owner", log_level="info") as n:
        mnt = n.mnt
        procs = []
        logs = []
        for i in range(3):
            data = os.path.join(n.root, "data%d" % i)
            cfg = os.path.join(n.root, "c%d.yml" % i)
            write_cfg(cfg, mnt, data)
            logs.append(open(os.path.join(n.root, "c%d.log" % i), "w+"))
            procs.append(None)
        try:
            for i in range(3):
                procs[i] = subprocess.Popen(
                    [h.ltxfs_bin(), "mount", "-c",
                     os.path.join(n.root, "c%d.yml" % i)],
                    stdin=subprocess.DEVNULL, stdout=logs[i],
                    stderr=subprocess.STDOUT, start_new_session=True)
            # Two must exit (refused); one keeps serving.
            h.wait_for(lambda: sum(p.poll() is not None for p in procs) >= 2,
                       START_TIMEOUT, "two of three daemons to be refused")
            h.wait_for(lambda: h.is_mounted(mnt), START_TIMEOUT,
                       "the winner to mount")
            live = [p for p in procs if p.poll() is None]
            h.check(len(live) == 1, "%d daemons still run, expected 1"
                    % len(live))
            winner = live[0]
            mounts = h.mounts_at(mnt)
            fuse = [m for m in mounts if m[1] == "fuse.ltxfs"]
            guards = [m for m in mounts if m[0] == "ltxfs-guard"]
            h.check(len(fuse) == 1 and len(guards) == 1 and
                    len(mounts) == 2, "mounts stacked on %s: %s (expected "
                    "one ltxfs on one guard)" % (mnt, mounts))
            for p, log in zip(procs, logs):
                if p is winner:
                    continue
                h.check(p.returncode == 1, "a refused daemon exited %d"
                        % p.returncode)
                log.seek(0)
                text = log.read()
                h.check(re.search(r"mount point .* is (already served|being "
                                  r"mounted) by ltxfs PID %d" % winner.pid,
                                  text),
                        "the refusal does not name the winner (PID %d):\n%s"
                        % (winner.pid, text))
            # The winner serves.
            acked = write_rows(n, "a.db", 1, 20)
            # A fourth, started later, is refused naming it.
            cfg = os.path.join(n.root, "c3.yml")
            write_cfg(cfg, mnt, os.path.join(n.root, "data3"))
            out = run_refused(cfg, "a daemon on a served mount point")
            h.check(re.search(r"already served by ltxfs PID %d" % winner.pid,
                              out), "the late refusal does not name PID %d:"
                    "\n%s" % (winner.pid, out))
            h.check(rows(n, "a.db") == acked, "rows changed")
            # SIGTERM to the winner unmounts its own mount, and no other.
            winner.terminate()
            rc = winner.wait(timeout=h.STOP_TIMEOUT)
            h.check(rc == 0, "the winner exited %d after SIGTERM" % rc)
            h.wait_for(lambda: not h.is_mounted(mnt), 10,
                       "the mount to be gone after SIGTERM")
        finally:
            for p in procs:
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(timeout=h.KILL_EXIT_TIMEOUT)
            for log in logs:
                log.close()
            h.unmount_all(mnt)


def t_dead_mount():
    with h.Node("owner", log_level="info") as n:
        n.start()
        acked = write_rows(n, "a.db", 1, 20)
        for cycle in range(5):
            n.kill9(unmount=False)
            h.check(h.is_mounted(n.mnt), "cycle %d: kill -9 left no mount "
                    "(the test needs the dead one)" % cycle)
            try:
                os.statvfs(n.mnt)  # always asks the daemon (no cache)
                dead = False
            except OSError as e:
                dead = e.errno == errno.ENOTCONN
            h.check(dead, "cycle %d: the mount is not dead (ENOTCONN) "
                    "after kill -9" % cycle)
            start = len(n.log_text())
            # Node.start refuses a mounted mount point; the daemon must
            # clear it itself, so start it the way a supervisor does.
            n._log = open(n.log_path, "ab")
            n.proc = subprocess.Popen(
                [h.ltxfs_bin(), "mount", "-c", n.cfg],
                stdin=subprocess.DEVNULL, stdout=n._log,
                stderr=subprocess.STDOUT, cwd=n.root,
                start_new_session=True)
            cleared = re.compile(r"mount point \S+ was a dead ltxfs mount "
                                 r".*unmounted it lazily")

            def cleared_or_exited():
                h.check(n.proc.poll() is None, "cycle %d: the restarted "
                        "daemon exited %s:\n%s" % (cycle, n.proc.returncode,
                                                    n.log_tail(5)))
                return cleared.search(n.log_text()[start:])
            h.wait_for(cleared_or_exited, START_TIMEOUT, "cycle %d: the "
                       "dead mount to be cleared (warn line)" % cycle)

            def serving():
                h.check(n.proc.poll() is None, "cycle %d: the daemon exited "
                        "%s:\n%s" % (cycle, n.proc.returncode,
                                     n.log_tail()))
                try:
                    return os.path.exists(n.path("a.db-pos"))
                except OSError:
                    return False
            h.wait_for(serving, START_TIMEOUT, "cycle %d: serving again"
                       % cycle)
            got = rows(n, "a.db")
            h.check(got == acked, "cycle %d: %d acknowledged rows, %d there"
                    % (cycle, len(acked), len(got)))
            acked += write_rows(n, "a.db", len(acked) + 1, 20)
            print("  cycle %d: dead mount cleared, %d rows" % (cycle,
                                                              len(acked)))
        n.stop()
        n.verify()


def t_hidden_files():
    with h.Node("owner", log_level="info") as n:
        c = h.connect(os.path.join(n.mnt, "app.db"))
        c.execute("CREATE TABLE t(x)")
        c.execute("INSERT INTO t VALUES (1)")
        c.close()
        n.start()
        n.wait_log(r"warn +mount point \S+ holds 1 file of its own "
                   r"\(app\.db\): written there while ltxfs was not "
                   r"mounted", 10)
        h.check(n.listing() == [], "the mount shows %s" % n.listing())
        n.stop()
        # The read-only guard stays: the bare directory is still hidden,
        # and nothing can be written there while ltxfs is down.
        h.check(h.has_guard(n.mnt), "no guard after the stop: %s"
                % h.mounts_at(n.mnt))
        h.check(os.listdir(n.mnt) == [], "the guard shows %s"
                % os.listdir(n.mnt))
        h.unmount_all(n.mnt)
        h.check(os.listdir(n.mnt) == ["app.db"], "the hidden file is gone: "
                "%s" % os.listdir(n.mnt))


def t_guard():
    with h.Node("owner", log_level="info") as n:
        n.start()
        c = h.connect(n.path("a.db"))
        c.execute("PRAGMA journal_mode=WAL")
        c.close()
        write_rows(n, "a.db", 1, 5)
        c = h.connect(n.path("a.db"))
        c.close()
        acked = list(range(1, 6)) + write_rows(n, "a.db", 6, 5)
        # A connection opened before the stop: its -wal and -shm are
        # opened by path, after it.
        stale = sqlite3.connect(n.path("a.db"), isolation_level=None)
        n.stop()
        h.check(h.has_guard(n.mnt), "no guard after a clean stop: %s"
                % h.mounts_at(n.mnt))
        for name in ("a.db-wal", "new.db"):
            h.expect_oserror(errno.EROFS, os.open,
                             os.path.join(n.mnt, name),
                             os.O_RDWR | os.O_CREAT, 0o644)
        try:
            stale.execute("BEGIN IMMEDIATE")
            stale.execute("INSERT INTO t VALUES (1000)")
            stale.execute("COMMIT")
            committed = True
        except sqlite3.Error:
            committed = False
        h.check(not committed, "a connection opened before the stop "
                "committed after it (into the bare directory?)")
        stale.close()
        h.check(os.listdir(n.mnt) == [], "files beneath: %s"
                % os.listdir(n.mnt))
        n.start()
        h.check(rows(n, "a.db") == acked and len(h.mounts_at(n.mnt)) == 2,
                "after the restart on the guard: rows %s, mounts %s"
                % (rows(n, "a.db"), h.mounts_at(n.mnt)))
        n.kill9(unmount=True)  # the harness clears the dead mount
        h.check(h.has_guard(n.mnt) and not h.is_mounted(n.mnt),
                "after kill -9 and unmount: %s" % h.mounts_at(n.mnt))
        h.expect_oserror(errno.EROFS, os.open, n.path("a.db"),
                         os.O_RDWR | os.O_CREAT, 0o644)
        n.start()
        h.check(rows(n, "a.db") == acked, "rows after kill -9")
        n.stop()


TESTS = {"guard": t_guard, "data-dir": t_data_dir, "mount-point": t_mount_point,
         "dead-mount": t_dead_mount, "hidden-files": t_hidden_files}

if __name__ == "__main__":
    h.main(TESTS[sys.argv[1]])
