"""Harness for the integration tests: one ltxfs node on a real FUSE mount.

A Node owns a temporary directory

    <tmp>/mnt        the mount point (fuse.dir)
    <tmp>/data       the data directory (data.dir)
    <tmp>/ltxfs.yml  its configuration
    <tmp>/daemon.log the daemon's stdout and stderr (every start appends)

and the daemon process (`$LTXFS_BIN mount -c ltxfs.yml`). Every wait is a
poll with a deadline; nothing sleeps and hopes. Node.close() (and leaving a
`with Node() as n:` block, even by an exception) kills whatever is still
running and lazily unmounts whatever is still mounted, so a failing test
leaves no mount and no process behind.

main(fn) runs a test function: it exits 77 when /dev/fuse is missing (the
only skip), 1 with the traceback and the tail of every daemon log when the
test raises, and 0 otherwise.
"""

import errno
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

MOUNT_TIMEOUT = 30.0   # daemon start to mount visible (ASan, loaded VM)
STOP_TIMEOUT = 60.0    # SIGTERM to exit and unmount
KILL_EXIT_TIMEOUT = 15.0  # SIGKILL to exit (ASan exits are slow)
POLL = 0.02

SQLITE_MAGIC = b"SQLite format 3\x00"

_nodes = []            # every Node not yet closed, for main()'s cleanup


class TestFailure(Exception):
    pass


def check(cond, msg):
    """Raises TestFailure(msg) when cond is false."""
    if not cond:
        raise TestFailure(msg)


def ltxfs_bin():
    b = os.environ.get("LTXFS_BIN")
    if not b:
        raise TestFailure("LTXFS_BIN is not set (meson sets it to the "
                          "ltxfs executable)")
    if not os.access(b, os.X_OK):
        raise TestFailure("LTXFS_BIN=%s is not executable" % b)
    return b


def wait_for(cond, timeout, what, interval=POLL):
    """Polls cond() until it returns a true value, at most timeout seconds.
    Returns that value; raises TestFailure naming `what` on the deadline."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        v = cond()
        if v:
            return v
        n += 1
        if time.monotonic() >= deadline or n > timeout / interval * 4 + 100:
            raise TestFailure("timed out after %.1fs waiting for %s"
                              % (timeout, what))
        time.sleep(interval)


def free_port():
    """A TCP port free on 127.0.0.1 just now (bound to 0, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _unescape_mount_path(p):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p)


def mounts_at(path):
    """(source, type) of every mount at path, oldest first."""
    real = os.path.realpath(path)
    out = []
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and _unescape_mount_path(parts[1]) == real:
                    out.append((parts[0], parts[2]))
    except OSError:
        pass
    return out


def is_mounted(path):
    """Whether an ltxfs FUSE mount is at path (the read-only guard that
    ltxfs leaves beneath it, cmd/owner.h, does not count)."""
    return any(t == "fuse.ltxfs" for _, t in mounts_at(path))


def has_guard(path):
    return any(src == "ltxfs-guard" for src, _ in mounts_at(path))


def fuse_connection(path):
    """The FUSE connection number (minor device) of the mount at path,
    from /proc/self/mountinfo (asks nothing of the mount), or None."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and _unescape_mount_path(parts[4]) == real:
                    return parts[2].split(":")[1]
    except OSError:
        pass
    return None


def abort_fuse_connection(path):
    """Aborts the FUSE connection mounted at path through fusectl (mounted
    here if it is not). Returns whether it did."""
    conn = fuse_connection(path)
    if conn is None:
        return False
    ctl = "/sys/fs/fuse/connections"
    if not os.path.exists(os.path.join(ctl, conn)):
        subprocess.run(["mount", "-t", "fusectl", "none", ctl], timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(os.path.join(ctl, conn, "abort"), "w") as f:
            f.write("1")
        sys.stdout.write("aborted FUSE connection %s of %s\n" % (conn, path))
        return True
    except OSError:
        return False


def unmount_all(path):
    """Lazily unmounts everything at path (ltxfs and its guard), bounded,
    so the directory can be removed."""
    for _ in range(8):
        if not mounts_at(path):
            return
        if is_mounted(path):
            lazy_unmount(path)
        else:
            subprocess.run(["umount", "-l", path], timeout=30,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    check(not mounts_at(path), "%s: mounts left: %s" % (path,
                                                      mounts_at(path)))


def lazy_unmount(path):
    """fusermount3 -u -z, then waits (bounded) until it is gone."""
    if not is_mounted(path):
        return
    subprocess.run(["fusermount3", "-u", "-z", path], timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if is_mounted(path):
        subprocess.run(["umount", "-l", path], timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: not is_mounted(path), 10, "lazy unmount of %s" % path)


class Node:
    """One ltxfs daemon with its own mount point and data directory."""

    def __init__(self, name="node", log_level="debug", extra_yml=""):
        self.name = name
        self.root = tempfile.mkdtemp(prefix="ltxfs-it-%s-" % name)
        self.mnt = os.path.join(self.root, "mnt")
        self.data = os.path.join(self.root, "data")
        self.cfg = os.path.join(self.root, "ltxfs.yml")
        self.log_path = os.path.join(self.root, "daemon.log")
        os.mkdir(self.mnt)
        os.mkdir(self.data)
        if not re.search(r"(?m)^http:", extra_yml):
            # Its own port, so tests can run side by side (20202 is the
            # default and may be taken).
            extra_yml += "http:\n  addr: 127.0.0.1:%d\n" % free_port()
        with open(self.cfg, "w") as f:
            f.write("fuse:\n  dir: %s\ndata:\n  dir: %s\nlog:\n"
                    "  level: %s\n%s" % (self.mnt, self.data, log_level,
                                         extra_yml))
        self.proc = None
        self._log = None
        self.starts = 0
        self.mount_args = []   # after `mount -c ltxfs.yml` (e.g. -- CMD)
        self.cmd_prefix = []   # before the daemon's argv (e.g. nsenter)
        _nodes.append(self)

    # -- lifecycle -----------------------------------------------------

    def start(self, expect_mount=True):
        """Starts the daemon and waits (<= MOUNT_TIMEOUT) for the mount.
        With expect_mount=False, waits instead for either the mount or the
        daemon's exit and returns which happened ("mounted" / "exited")."""
        check(self.proc is None, "%s: start while running" % self.name)
        check(not is_mounted(self.mnt), "%s: %s is still mounted"
              % (self.name, self.mnt))
        self._log = open(self.log_path, "ab")
        self.starts += 1
        self._log.write(b"==== harness: start #%d ====\n" % self.starts)
        self._log.flush()
        self.proc = subprocess.Popen(
            self.cmd_prefix + [ltxfs_bin(), "mount", "-c", self.cfg] +
            self.mount_args,
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.root,
            start_new_session=True)

        def state():
            if is_mounted(self.mnt):
                return "mounted"
            if self.proc.poll() is not None:
                return "exited"
            return None
        try:
            st = wait_for(state, MOUNT_TIMEOUT, "%s to mount %s"
                          % (self.name, self.mnt))
        except TestFailure:
            self.kill9(strict=False)
            raise
        if expect_mount and st != "mounted":
            rc = self.proc.returncode
            self._reap()
            raise TestFailure("%s: daemon exited with %s before mounting"
                              % (self.name, rc))
        return st

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; waits for exit and unmount. Returns the exit code and
        fails the test unless it is 0 and the mount is gone."""
        check(self.proc is not None, "%s: stop while not running"
              % self.name)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9(strict=False)
            raise TestFailure("%s: daemon did not exit within %.0fs of "
                              "SIGTERM (killed)" % (self.name, timeout))
        self._reap()
        try:
            wait_for(lambda: not is_mounted(self.mnt), 10,
                     "%s: unmount after exit" % self.name)
        except TestFailure:
            lazy_unmount(self.mnt)
            raise TestFailure("%s: mount still present after a clean stop"
                              % self.name)
        check(rc == 0, "%s: daemon exit code %s after SIGTERM"
              % (self.name, rc))
        return rc

    def kill9(self, unmount=True, strict=True):
        """SIGKILL the daemon, wait for it, lazily unmount the dead mount
        (unless unmount is false: then processes that still use the mount
        get ENOTCONN instead of the empty directory beneath; call
        lazy_unmount(n.mnt) once they are gone).

        A killed daemon must exit by itself within KILL_EXIT_TIMEOUT: its
        own files on the mount would otherwise hang its exit, which is
        what ltxfs's exit watchdog (cmd/watchdog.c) prevents. When it does
        not, the connection is aborted here so nothing stays hung, and
        (strict) the test fails."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=KILL_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                abort_fuse_connection(self.mnt)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                self._reap()
                if unmount:
                    lazy_unmount(self.mnt)
                if strict:
                    raise TestFailure(
                        "%s: still running %.0fs after SIGKILL (its exit "
                        "hangs on its own mount; connection aborted by the "
                        "test)" % (self.name, KILL_EXIT_TIMEOUT))
                return
            self._reap()
        if unmount:
            lazy_unmount(self.mnt)

    def wait_exit(self, timeout):
        """Waits for the daemon to exit on its own; returns its code."""
        check(self.proc is not None, "%s: not running" % self.name)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("%s: daemon still running after %.0fs"
                              % (self.name, timeout))
        self._reap()
        lazy_unmount(self.mnt)
        return rc

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _reap(self):
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    def close(self, keep=False):
        """Kills and unmounts whatever is left; removes the directory unless
        keep (or $LTXFS_KEEP) says otherwise."""
        try:
            if self.proc is not None:
                self.kill9(strict=False)
            unmount_all(self.mnt)
        finally:
            if self in _nodes:
                _nodes.remove(self)
            if not keep and not os.environ.get("LTXFS_KEEP"):
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            print_log_tail(self)
        self.close(keep=et is not None and bool(os.environ.get("LTXFS_KEEP")))
        return False

    # -- paths, positions, logs -------------------------------------

    def path(self, name):
        return os.path.join(self.mnt, name)

    # pos() settles first (see settle()); a cluster's nodes turn this
    # off, as a replica may hold its database's locks for a reader.
    settle_pos = True

    def settle(self, db):
        """Makes db's -pos show every commit SQLite has returned from.
        In WAL mode the daemon answers the commit's write first and
        records it just after (fs/mount.c: "record it now, off the
        caller's path"), so a -pos read right after COMMIT may still
        show the transaction before. An fsync of the database file
        waits for those records (fs/db.c, lock_for_db_op) and changes
        nothing else once the first load is over."""
        fd = os.open(self.path(db), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def settled_pos(self, db):
        """pos(db) after settle(db): the position of the last commit."""
        self.settle(db)
        return self.raw_pos(db)

    def pos(self, db):
        """(txid, checksum) from the mount's <db>-pos file (settled first
        unless settle_pos is off)."""
        if self.settle_pos:
            self.settle(db)
        return self.raw_pos(db)

    def raw_pos(self, db):
        """(txid, checksum) from the mount's <db>-pos file as it is."""
        with open(self.path(db + "-pos")) as f:
            text = f.read()
        m = re.fullmatch(r"([0-9a-f]{16})/([0-9a-f]{16})\n", text)
        check(m is not None, "%s-pos: malformed %r" % (db, text))
        return int(m.group(1), 16), int(m.group(2), 16)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout, what=None, start=0):
        """Waits until the log (from character offset start) matches the
        regular expression pattern; returns the match. (A line may be
        logged after the reply the test saw, e.g. at a FUSE release.)"""
        def found():
            return re.search(pattern, self.log_text()[start:])
        return wait_for(found, timeout, what or "%s: log line /%s/"
                        % (self.name, pattern), interval=0.05)

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def verify(self, *dbs, expect_ok=True, timeout=300):
        """Runs `ltxfs verify` (the node should be stopped or quiet).
        Returns (rc, {db: (txid, checksum)} for the ok lines, stdout)."""
        r = subprocess.run([ltxfs_bin(), "verify", "-c", self.cfg] +
                           list(dbs), capture_output=True, text=True,
                           timeout=timeout)
        found = {}
        for line in r.stdout.splitlines():
            m = re.match(r"(.+?): ok: TXID ([0-9a-f]{16}), .*checksum "
                         r"([0-9a-f]{16})", line)
            if m:
                found[m.group(1)] = (int(m.group(2), 16),
                                     int(m.group(3), 16))
        if expect_ok:
            check(r.returncode == 0, "ltxfs verify %s: exit %d\n%s%s"
                  % (" ".join(dbs), r.returncode, r.stdout, r.stderr))
        return r.returncode, found, r.stdout + r.stderr

    def listing(self):
        return sorted(os.listdir(self.mnt))

    def segments(self, db):
        d = os.path.join(self.data, "dbs", db, "log")
        return [os.path.join(d, f) for f in sorted(os.listdir(d))
                if f.endswith(".seg")]

    def log_records(self, db):
        """The LTX files of db's log, in order (fs/log.h: a segment is
        records of a big-endian u32 length and that many bytes)."""
        recs = []
        for seg in self.segments(db):
            with open(seg, "rb") as f:
                buf = f.read()
            off = 0
            while off + 4 <= len(buf):
                n = int.from_bytes(buf[off:off + 4], "big")
                check(n > 0 and off + 4 + n <= len(buf),
                      "%s: bad record length %d at %d" % (seg, n, off))
                recs.append(buf[off + 4:off + 4 + n])
                off += 4 + n
            check(off == len(buf), "%s: %d trailing bytes"
                  % (seg, len(buf) - off))
        return recs

    def log_records_live(self, db, timeout=10.0):
        """log_records(db) of a running node: a record being appended may
        be torn and retention may remove a segment between the listing
        and its read; such a read is retried (bounded) and the last
        attempt's error is raised."""
        last = []

        def attempt():
            try:
                return (self.log_records(db),)
            except (OSError, TestFailure) as e:
                last[:] = [e]
                return None
        try:
            return wait_for(attempt, timeout, "%s: a whole read of %s's "
                            "log" % (self.name, db))[0]
        except TestFailure as e:
            raise TestFailure("%s (last error: %s)" % (e, last))

    def replay_each(self, db, step):
        """Applies db's log one record at a time into a scratch database
        with one `ltxfs ltx apply --step`, calling step(i, scratch_path)
        after record i (0-based), while the tool waits. The node should
        be stopped."""
        recs = self.log_records(db)
        scratch = os.path.join(self.root, "replay-%s" % db)
        rdir = scratch + ".records"
        if os.path.exists(scratch):
            os.unlink(scratch)
        shutil.rmtree(rdir, ignore_errors=True)
        os.makedirs(rdir)
        files = []
        for i, r in enumerate(recs):
            files.append(os.path.join(rdir, "%08d.ltx" % i))
            with open(files[-1], "wb") as f:
                f.write(r)
        p = subprocess.Popen([ltxfs_bin(), "ltx", "apply", "--step",
                              scratch] + files, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        rd = StepReader(p)
        try:
            for i, f in enumerate(files):
                last = i + 1 == len(files)
                line = rd.applied()
                if last:
                    p.stdin.close()
                    rc = p.wait(timeout=120)
                    ok = rc == 0 and re.fullmatch("[0-9a-f]{16}", line)
                else:
                    ok = line.startswith("applied %s " % f)
                if not ok:
                    p.kill()
                    check(False, "ltx apply of record %d of %s: %s%s"
                          % (i, db, line, p.stderr.read()))
                step(i, scratch)
                if not last:
                    p.stdin.write("\n")
                    p.stdin.flush()
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            for s in (p.stdin, p.stdout, p.stderr):
                if not s.closed:
                    s.close()
            shutil.rmtree(rdir, ignore_errors=True)
            if os.path.exists(scratch):
                os.unlink(scratch)
        return len(recs)


class StepReader:
    """Lines of `ltxfs ltx apply --step`'s stdout, read from the raw pipe
    (select works on what the pipe holds, not on a Python buffer)."""

    def __init__(self, p):
        self.fd = p.stdout.fileno()
        self.buf = b""

    def line(self, timeout=120):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0))
            chunk = os.read(self.fd, 65536) if ready else b""
            if not chunk:
                return self.buf.decode(errors="replace") or "(no answer)"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def applied(self):
        """The next "applied FILE CHECKSUM" line, the verify lines before
        it ("FILE: ok: ...") skipped."""
        for _ in range(16):
            line = self.line()
            if ": ok: " not in line:
                return line
        return "(no applied line)"


def print_log_tail(node, n=60):
    sys.stdout.write("---- %s: last %d lines of %s ----\n%s\n----\n"
                     % (node.name, n, node.log_path, node.log_tail(n)))
    sys.stdout.flush()


# -- SQLite helpers -------------------------------------------------------

def connect(path, timeout=30.0):
    """Autocommit connection (transactions are explicit) with a busy
    timeout."""
    return sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)


def one(conn, sql, args=()):
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def integrity_ok(path, ro=False):
    """PRAGMA integrity_check is ok (ro: through a read-only
    connection, as on a replica)."""
    c = ro_connect(path) if ro else connect(path)
    try:
        res = [r[0] for r in c.execute("PRAGMA integrity_check")]
    finally:
        c.close()
    check(res == ["ok"], "%s: integrity_check: %s"
          % (os.path.basename(path), "; ".join(res[:10])))


def ro_connect(path, timeout=30.0):
    """A read-only connection (a replica's database refuses writers)."""
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True,
                           timeout=timeout, isolation_level=None,
                           check_same_thread=False)


def content_digest(path, ro=False):
    """A digest of every table's rows, ordered, and the schema, read in
    one read transaction (ro: through a read-only connection, as on a
    replica)."""
    import hashlib
    h = hashlib.sha256()
    c = ro_connect(path) if ro else connect(path)
    try:
        c.execute("BEGIN")
        tables = [r[0] for r in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' AND "
            "name NOT LIKE 'sqlite_%' ORDER BY name")]
        for r in c.execute("SELECT type, name, tbl_name, sql FROM "
                           "sqlite_schema ORDER BY type, name"):
            h.update(repr(r).encode())
        for t in tables:
            for r in c.execute('SELECT * FROM "%s" ORDER BY 1' % t):
                for v in r:
                    if isinstance(v, bytes):
                        h.update(b"B%d:" % len(v))
                        h.update(v)
                    else:
                        h.update(repr(v).encode())
                h.update(b"\n")
        c.execute("COMMIT")
    finally:
        c.close()
    return h.hexdigest()


def expect_oserror(errnos, fn, *args):
    """Calls fn(*args); fails unless it raises OSError with an errno in
    errnos. Returns the errno."""
    if isinstance(errnos, int):
        errnos = (errnos,)
    try:
        fn(*args)
    except OSError as e:
        check(e.errno in errnos, "%s%r: errno %s (%s), expected %s"
              % (getattr(fn, "__name__", fn), args, e.errno,
                 errno.errorcode.get(e.errno), "/".join(
                     errno.errorcode.get(x, str(x)) for x in errnos)))
        return e.errno
    raise TestFailure("%s%r succeeded, expected %s"
                      % (getattr(fn, "__name__", fn), args, "/".join(
                          errno.errorcode.get(x, str(x)) for x in errnos)))


# -- subprocesses ---------------------------------------------------------

class Procs:
    """Child processes that are always killed on exit from the block."""

    def __init__(self):
        self.procs = []

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        return False


# -- the test runner ------------------------------------------------------

def skip_unless_fuse():
    if not os.path.exists("/dev/fuse"):
        print("SKIP: /dev/fuse is missing (load the fuse module or run the "
              "container with --device /dev/fuse)")
        sys.exit(77)
    if shutil.which("fusermount3") is None:
        raise TestFailure("fusermount3 is not installed (package fuse3)")


def main(fn):
    """Runs fn() as a test program (see the module comment)."""
    t0 = time.monotonic()
    rc = 0

    def on_term(signum, frame):
        # meson's timeout: fail, but through the cleanup below.
        raise TestFailure("terminated by signal %d (test timeout?)"
                          % signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        skip_unless_fuse()
        fn()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        for n in list(_nodes):
            print_log_tail(n)
        rc = 1
    finally:
        for n in list(_nodes):
            try:
                n.close(keep=rc != 0 and bool(os.environ.get("LTXFS_KEEP")))
            except Exception:
                traceback.print_exc(file=sys.stdout)
                rc = 1
    print("%s: %s in %.1fs" % (os.path.basename(sys.argv[0]),
                               "FAIL" if rc else "ok",
                               time.monotonic() - t0))
    sys.stdout.flush()
    sys.exit(rc)
