"""Transactions across ATTACHed databases: SQLite's super-journal
(fs/superjournal.h, docs/STORAGE.md "Transactions across attached
databases").

    test_attach.py modes         (suite fuse) in DELETE, TRUNCATE and
        PERSIST mode, a connection to a.db with b.db and c.db attached
        commits transactions that write two and three of them (and a
        rollback; then with locking_mode=EXCLUSIVE, with the main database
        outside the mount or a local one attached, and with a WAL database
        attached too): every COMMIT
        succeeds, each database holds its rows, each part is recorded when
        the super-journal is deleted (one TXID per database and commit),
        no super-journal is left in the mount or the data directory, and
        after a stop `ltxfs verify` is ok for each.
    test_attach.py app-crash     (suite fuse) the application is killed
        (SIGKILL, from an LD_PRELOAD shim, sj_shim.c) at each step of the
        multi-file commit: after the super-journal is written, at the
        first database write, at the super-journal's deletion, just after
        it, and between the two child journals' finalisations. The next
        connection (the daemon keeps running) must find both databases
        committed or both not, exactly as SQLite on a local disk (before
        the deletion: not; after: committed), -pos must follow, and after
        a stop `ltxfs verify` is ok and a start leaves no super-journal.
    test_attach.py daemon-crash  (suite fuse) the same steps, the
        application stopped there (SIGSTOP) and the daemon killed (kill -9),
        then the application; the node restarts and recovers: all or
        nothing as above, no super-journal left, `ltxfs verify` ok. Also
        the state of a daemon killed after recording the parts but before
        deleting the super-journal (built by putting a copy of it back):
        both parts rolled back, the rollbacks recorded.
    test_attach.py disk-full     (suite fuse) the first part's record fits
        in the data directory (a small tmpfs) and the second's does not:
        COMMIT fails, both databases roll back, the first part and its
        rollback are both recorded, no super-journal is left; with space
        again the same transaction commits; `ltxfs verify` is ok.
    test_attach.py cluster       (suite cluster) a replica receives both
        parts of every multi-database commit in the three modes, has the
        same rows and no super-journal.
"""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import ltxfs_harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("DELETE", "TRUNCATE", "PERSIST")
SJ_RE = re.compile(r"-mj([0-9A-F]{6}9[0-9A-F]{2}|[0-9A-F]{8})$")
# Steps of the multi-file commit (sj_shim.c) and whether SQLite on a local
# disk has committed the transaction once a process dies there.
STEPS = [("sj-sync", False), ("db-write", False), ("sj-unlink", False),
         ("sj-unlinked", True), ("journal-end-2", True)]


def build_shim(root):
    """Compiles sj_shim.c into root; returns the shared object's path."""
    out = os.path.join(root, "sj_shim.so")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    h.check(cc is not None, "no C compiler (cc) to build sj_shim.c")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-o", out,
                        os.path.join(HERE, "sj_shim.c"), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    h.check(r.returncode == 0, "building sj_shim.c: %s" % r.stderr)
    return out


def create(n, name, mode):
    c = h.connect(n.path(name))
    try:
        got = h.one(c, "PRAGMA journal_mode=%s" % mode)
        h.check(got.lower() == mode.lower(), "%s: journal_mode %s"
                % (name, got))
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
                  "k INTEGER, v BLOB)")
    finally:
        c.close()


def attach_conn(n, names, mode):
    """A connection to names[0] with the others attached as d1, d2...;
    journal_mode (not persistent outside WAL) set for every one."""
    c = h.connect(n.path(names[0]))
    for i, other in enumerate(names[1:]):
        c.execute("ATTACH ? AS d%d" % (i + 1), (n.path(other),))
    if mode:
        c.execute("PRAGMA journal_mode=%s" % mode)
    return c


def schemas(names):
    return ["main"] + ["d%d" % i for i in range(1, len(names))]


def counts(n, names):
    """Rows of each database, read in one read transaction."""
    c = attach_conn(n, names, None)
    try:
        c.execute("BEGIN")
        got = tuple(h.one(c, "SELECT count(*) FROM %s.t" % s)
                    for s in schemas(names))
        c.execute("COMMIT")
    finally:
        c.close()
    return got


def in_mount(names):
    """The names of databases in the mount (others are absolute paths of
    local files)."""
    return [x for x in names if not x.startswith("/")]


def txids(n, names):
    return tuple(n.pos(x)[0] for x in in_mount(names))


def sj_entries(n):
    return [e for e in n.listing() if SJ_RE.search(e)]


def stored_sj(n):
    d = os.path.join(n.data, "superjournals")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def check_no_strays(n, names):
    """The mount lists only these databases and their companions, and the
    data directory holds no other database and no super-journal."""
    allowed = set()
    names = in_mount(names)
    for x in names:
        allowed.update([x, x + "-pos", x + "-journal", x + "-wal",
                        x + "-shm"])
    extra = [e for e in n.listing() if e not in allowed]
    h.check(not extra, "stray entries in the mount: %s" % extra)
    dbs = sorted(os.listdir(os.path.join(n.data, "dbs")))
    h.check(set(dbs) <= set(names), "stray databases in the data "
            "directory: %s" % sorted(set(dbs) - set(names)))
    h.check(stored_sj(n) == [], "super-journals left in the data "
            "directory: %s" % stored_sj(n))


def verify_all(n, pos):
    rc, found, out = n.verify(expect_ok=False)
    bad = [db for db in pos if found.get(db) != pos[db]]
    h.check(rc == 0 and not bad, "ltxfs verify (exit %d), wrong for %s "
            "(expected %s):\n%s" % (rc, bad, pos, out))


# -- modes ---------------------------------------------------------------

def t_modes():
    with h.Node("attach-modes") as n:
        n.start()
        every = []
        for mode in MODES:
            names = ["a-%s.db" % mode.lower(), "b-%s.db" % mode.lower(),
                     "c-%s.db" % mode.lower()]
            every += names
            for x in names:
                create(n, x, mode)
            before = txids(n, names)
            mark = len(n.log_text())
            c = attach_conn(n, names, mode)
            try:
                for k in range(5):
                    c.execute("BEGIN")
                    for s in schemas(names):
                        c.execute("INSERT INTO %s.t(k, v) VALUES(?, "
                                  "randomblob(200))" % s, (k,))
                    c.execute("COMMIT")
                # Two of the three.
                c.execute("BEGIN")
                c.execute("INSERT INTO main.t(k) VALUES(100)")
                c.execute("INSERT INTO d2.t(k) VALUES(100)")
                c.execute("COMMIT")
                # A rollback records nothing.
                c.execute("BEGIN")
                for s in schemas(names):
                    c.execute("INSERT INTO %s.t(k) VALUES(-1)" % s)
                c.execute("ROLLBACK")
            finally:
                c.close()
            h.check(counts(n, names) == (6, 5, 6), "%s: rows %s"
                    % (mode, counts(n, names)))
            after = txids(n, names)
            h.check(after == (before[0] + 6, before[1] + 5, before[2] + 6),
                    "%s: TXIDs %s -> %s, expected one per database and "
                    "commit" % (mode, before, after))
            # Each commit used a super-journal, deleted once its parts
            # were recorded.
            found = re.findall(r"super-journal a-%s\.db-mj[0-9A-F]{9} "
                               r"deleted: (\d) databases' parts recorded"
                               % mode.lower(), n.log_text()[mark:])
            h.check(found == ["3"] * 5 + ["2"], "%s: super-journal "
                    "deletions logged: %s" % (mode, found))
            check_no_strays(n, every)
            print("  %-8s 6 commits across 2-3 databases: TXIDs %s -> %s"
                  % (mode, before, after))
        # locking_mode=EXCLUSIVE: SQLite truncates each journal instead
        # of deleting it (zeroing it, without a super-journal).
        names = ["x-main.db", "x-other.db"]
        every += names
        for x in names:
            create(n, x, "DELETE")
        before = txids(n, names)
        c = attach_conn(n, names, "DELETE")
        try:
            c.execute("PRAGMA locking_mode=EXCLUSIVE")
            for k in range(3):
                c.execute("BEGIN")
                for s in schemas(names):
                    c.execute("INSERT INTO %s.t(k) VALUES(?)" % s, (k,))
                c.execute("COMMIT")
            c.execute("INSERT INTO main.t(k) VALUES(3)")
        finally:
            c.close()
        h.check(counts(n, names) == (4, 3), "locking_mode=EXCLUSIVE: rows %s"
                % (counts(n, names),))
        after = txids(n, names)
        h.check(after == (before[0] + 4, before[1] + 3), "locking_mode="
                "EXCLUSIVE: TXIDs %s -> %s" % (before, after))
        check_no_strays(n, every)
        print("  DELETE   locking_mode=EXCLUSIVE, 3 commits across 2 "
              "databases and 1 in one: TXIDs %s -> %s" % (before, after))
        # The main database outside the mount: its super-journal is
        # outside too, and each part in the mount is recorded when its
        # journal ends. Then a local database attached to one in the
        # mount: the super-journal is in the mount.
        for names in ([os.path.join(local_dir(n), "main.db"), "o-1.db",
                       "o-2.db"],
                      ["o-main.db", os.path.join(local_dir(n), "other.db")]):
            every += in_mount(names)
            for x in names:
                create(n, x, "DELETE")
            before = txids(n, names)
            c = attach_conn(n, names, "DELETE")
            try:
                for k in range(4):
                    c.execute("BEGIN")
                    for s in schemas(names):
                        c.execute("INSERT INTO %s.t(k) VALUES(?)" % s, (k,))
                    c.execute("COMMIT")
            finally:
                c.close()
            h.check(counts(n, names) == (4,) * len(names), "%s: rows %s"
                    % (names, counts(n, names)))
            after = txids(n, names)
            h.check(after == tuple(t + 4 for t in before), "%s: TXIDs %s -> "
                    "%s" % (names, before, after))
            check_no_strays(n, every)
            h.check(not [f for f in os.listdir(local_dir(n))
                         if SJ_RE.search(f)], "super-journals left in %s"
                    % local_dir(n))
            print("  DELETE   4 commits, %s: TXIDs %s -> %s"
                  % ("main database outside the mount" if names[0][0] ==
                     "/" else "a local database attached", before, after))
        # A WAL database attached with two rollback-journal ones: SQLite
        # gives the WAL one no super-journal (no atomicity across it);
        # each database still commits and is recorded.
        names = ["w-main.db", "w-other.db", "w-wal.db"]
        every += names
        create(n, names[0], "DELETE")
        create(n, names[1], "DELETE")
        create(n, names[2], "WAL")
        c = attach_conn(n, names, None)
        try:
            for k in range(3):
                c.execute("BEGIN")
                for s in schemas(names):
                    c.execute("INSERT INTO %s.t(k) VALUES(?)" % s, (k,))
                c.execute("COMMIT")
            c.execute("BEGIN")
            c.execute("INSERT INTO main.t(k) VALUES(9)")
            c.execute("INSERT INTO d2.t(k) VALUES(9)")
            c.execute("COMMIT")
        finally:
            c.close()
        h.check(counts(n, names) == (4, 3, 4), "with a WAL database: rows "
                "%s" % (counts(n, names),))
        check_no_strays(n, every)
        # The namespace itself, without SQLite: a super-journal of a
        # database here is a plain local file; of no database, refused.
        sj = n.path("a-delete.db-mj0A1B2C93D")
        fd = os.open(sj, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"/x/a-delete.db-journal\0")
            os.fsync(fd)
            h.check(os.pread(fd, 100, 0) == b"/x/a-delete.db-journal\0",
                    "reading a super-journal back")
        finally:
            os.close(fd)
        h.expect_oserror(17, os.open, sj, os.O_RDWR | os.O_CREAT |
                         os.O_EXCL)
        h.check(os.path.basename(sj) in n.listing() and
                stored_sj(n) == [os.path.basename(sj)], "a super-journal "
                "is listed and stored: %s %s" % (n.listing(), stored_sj(n)))
        os.truncate(sj, 0)
        h.check(os.stat(sj).st_size == 0, "truncated")
        os.unlink(sj)
        h.check(not os.path.exists(sj) and stored_sj(n) == [], "deleted")
        h.expect_oserror(2, os.open, n.path("nosuch.db-mj0A1B2C93D"),
                         os.O_RDWR | os.O_CREAT | os.O_EXCL)
        check_no_strays(n, every)
        pos = {x: n.pos(x) for x in every}
        n.stop()
        verify_all(n, pos)
        n.start()
        check_no_strays(n, every)
        n.stop()


# -- crashes -------------------------------------------------------------

def local_dir(n):
    """A directory outside the mount, for local databases."""
    d = os.path.join(n.root, "local")
    os.makedirs(d, exist_ok=True)
    return d


def run_app(n, shim, names, mode, key, at, action, mark):
    """Starts the application (this file's `app`) with the shim; returns
    the Popen."""
    env = dict(os.environ)
    env.update({"LD_PRELOAD": shim,
                "LTXFS_SHIM_DIR": n.mnt + "/:" + local_dir(n) + "/",
                "LTXFS_SHIM_AT": at, "LTXFS_SHIM_ACTION": action,
                "LTXFS_SHIM_MARK": mark})
    env.pop("LSAN_OPTIONS", None)
    return subprocess.Popen([sys.executable, os.path.abspath(__file__),
                             "app", mode, str(key)] +
                            [n.path(x) for x in names], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def marks(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_stopped(p, mark, step):
    def stopped():
        if p.poll() is not None:
            raise h.TestFailure("the application exited (%s) before step "
                                "%s: %s" % (p.returncode, step,
                                            p.communicate()[0][-2000:]))
        return step in marks(mark) and proc_state(p.pid) == "T"
    h.wait_for(stopped, 30, "the application to stop at %s" % step)


def expect_state(n, names, before, committed, what):
    got = counts(n, names)
    want = tuple(x + 1 for x in before) if committed else before
    h.check(got == want, "%s: rows %s, expected %s (%s, as SQLite on a "
            "local disk)" % (what, got, want, "committed" if committed
                             else "rolled back"))
    for x in names:
        h.integrity_ok(n.path(x))


def t_app_crash():
    with h.Node("attach-app-crash") as n:
        shim = build_shim(n.root)
        n.start()
        every, pos = [], {}
        for mode in MODES:
            names = ["a-%s.db" % mode.lower(), "b-%s.db" % mode.lower()]
            every += names
            for x in names:
                create(n, x, mode)
            for i, (step, committed) in enumerate(STEPS):
                before, tx = counts(n, names), txids(n, names)
                orphans = set(sj_entries(n))
                mark = os.path.join(n.root, "mark-%s-%s" % (mode, step))
                p = run_app(n, shim, names, mode, i, step, "kill", mark)
                out, _ = p.communicate(timeout=60)
                h.check(p.returncode == -signal.SIGKILL and
                        marks(mark) == [step], "%s at %s: the application "
                        "exited %s, steps reached %s: %s"
                        % (mode, step, p.returncode, marks(mark),
                           out[-2000:]))
                what = "%s, killed at %s" % (mode, step)
                expect_state(n, names, before, committed, what)
                after = txids(n, names)
                want = tuple(t + 1 for t in tx) if committed else tx
                h.check(after == want, "%s: TXIDs %s -> %s, expected %s"
                        % (what, tx, after, want))
                # SQLite itself leaves a super-journal that no journal
                # points to yet (killed before any pointer) for ever.
                left = sorted(set(sj_entries(n)) - orphans)
                h.check(len(left) == (1 if step == "sj-sync" else 0),
                        "%s: super-journals in the mount: %s"
                        % (what, left))
                print("  %-8s killed at %-13s -> %s, TXIDs %s -> %s%s"
                      % (mode, step, "committed" if committed else
                         "rolled back", tx, after,
                         " (orphan %s left, as SQLite leaves it)" % left[0]
                         if left else ""))
        pos = {x: n.pos(x) for x in every}
        n.stop()
        verify_all(n, pos)
        n.start()
        check_no_strays(n, every)
        for x in every:
            h.check(n.pos(x) == pos[x], "%s: -pos changed" % x)
        n.stop()


def crash_daemon(n, p):
    """kill -9 of the daemon while the application is stopped, then of the
    application; the dead mount is unmounted."""
    n.kill9(unmount=False)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    h.lazy_unmount(n.mnt)


def t_daemon_crash():
    with h.Node("attach-daemon-crash") as n:
        shim = build_shim(n.root)
        n.start()
        every = []
        for mode in MODES:
            names = ["a-%s.db" % mode.lower(), "b-%s.db" % mode.lower()]
            every += names
            for x in names:
                create(n, x, mode)
            for i, (step, committed) in enumerate(STEPS):
                before, tx = counts(n, names), txids(n, names)
                mark = os.path.join(n.root, "mark-%s-%s" % (mode, step))
                start = len(n.log_text())
                p = run_app(n, shim, names, mode, i, step, "stop", mark)
                wait_stopped(p, mark, step)
                crash_daemon(n, p)
                n.start()
                what = "%s, daemon killed at %s" % (mode, step)
                expect_state(n, names, before, committed, what)
                after = txids(n, names)
                h.check(sj_entries(n) == [] and stored_sj(n) == [],
                        "%s: super-journals left: %s, %s" % (what,
                                                             sj_entries(n),
                                                             stored_sj(n)))
                log = n.log_text()[start:]
                print("  %-8s daemon killed at %-13s -> %s, TXIDs %s -> %s"
                      "%s" % (mode, step, "committed" if committed else
                              "rolled back", tx, after,
                              "; " + "; ".join(sorted(set(re.findall(
                                  r"(rolled back a hot journal|hot journal "
                                  r"of a transaction across attached "
                                  r"databases that committed[^;(]*|"
                                  r"super-journal \S+ removed)", log))))))
            # The daemon killed after recording both parts, before the
            # super-journal's deletion was done: the super-journal still
            # exists, so SQLite would roll both back, and so does ltxfs,
            # recording the rollbacks after the parts.
            before, tx = counts(n, names), txids(n, names)
            mark = os.path.join(n.root, "mark-%s-restored" % mode)
            p = run_app(n, shim, names, mode, 99, "sj-unlink,sj-unlinked",
                        "stop", mark)
            wait_stopped(p, mark, "sj-unlink")
            sjs = stored_sj(n)
            h.check(len(sjs) == 1, "super-journals stored: %s" % sjs)
            src = os.path.join(n.data, "superjournals", sjs[0])
            with open(src, "rb") as f:
                saved = f.read()
            os.kill(p.pid, signal.SIGCONT)
            wait_stopped(p, mark, "sj-unlinked")
            h.check(stored_sj(n) == [], "the super-journal was not deleted")
            crash_daemon(n, p)
            with open(src, "wb") as f:
                f.write(saved)
            start = len(n.log_text())
            n.start()
            what = "%s, parts recorded, super-journal put back" % mode
            expect_state(n, names, before, False, what)
            after = txids(n, names)
            h.check(all(a >= t + 2 for a, t in zip(after, tx)),
                    "%s: TXIDs %s -> %s: the parts and their rollbacks "
                    "should both be recorded" % (what, tx, after))
            h.check(len(re.findall(r"did not commit \(its super-journal "
                                   r"\S+ is still there\)",
                                   n.log_text()[start:])) == 2,
                    "%s: no rollback logged for both databases" % what)
            h.check(sj_entries(n) == [] and stored_sj(n) == [],
                    "%s: super-journals left" % what)
            print("  %-8s parts recorded, super-journal put back -> rolled "
                  "back, TXIDs %s -> %s" % (mode, tx, after))
        # The main database outside the mount: ltxfs learns of the
        # commit only at each journal's end; killed before that, it finds
        # the super-journal (outside) gone at start and records each part
        # then, the database as it is.
        names = [os.path.join(local_dir(n), "main.db"), "o-1.db", "o-2.db"]
        every += in_mount(names)
        for x in names:
            create(n, x, "DELETE")
        for step, committed in (("sj-unlink", False), ("sj-unlinked", True)):
            before, tx = counts(n, names), txids(n, names)
            mark = os.path.join(n.root, "mark-outside-%s" % step)
            start = len(n.log_text())
            p = run_app(n, shim, names, "DELETE", 7, step, "stop", mark)
            wait_stopped(p, mark, step)
            crash_daemon(n, p)
            n.start()
            what = "main database outside, daemon killed at %s" % step
            expect_state(n, names, before, committed, what)
            after = txids(n, names)
            log = n.log_text()[start:]
            if committed:
                h.check(len(re.findall(r"committed \(its super-journal "
                                       r"\S+ is gone\) but is not in the "
                                       r"log: recording all", log)) == 2,
                        "%s: the parts were not recorded at start" % what)
            h.check(not [f for f in os.listdir(local_dir(n))
                         if SJ_RE.search(f)], "%s: super-journal left in "
                    "%s" % (what, local_dir(n)))
            print("  DELETE   main database outside, daemon killed at %-11s"
                  " -> %s, TXIDs %s -> %s" % (step, "committed" if
                                             committed else "rolled back",
                                             tx, after))
        pos = {x: n.pos(x) for x in every}
        n.stop()
        verify_all(n, pos)
        n.start()
        check_no_strays(n, every)
        n.stop()


# -- a part that cannot be recorded --------------------------------------

def t_disk_full():
    """The data directory on a small tmpfs (test_disk_full.SmallDisk),
    filled so that the first part's record fits and the second's (1 MB of
    random bytes) does not: the super-journal's deletion fails, COMMIT
    fails, SQLite rolls both databases back, and the rollback of the part
    already recorded is recorded too."""
    from test_disk_full import SmallDisk
    if os.geteuid() != 0:
        print("SKIP: mounting the small tmpfs this test fills needs root")
        sys.exit(77)
    with h.Node("attach-disk-full") as n, SmallDisk(n.data) as disk:
        n.start()
        names = ["a.db", "b.db"]
        for x in names:
            create(n, x, "DELETE")
        before, tx = counts(n, names), txids(n, names)
        disk.fill(leave=1536 << 10)
        start = len(n.log_text())
        c = attach_conn(n, names, "DELETE")
        try:
            c.execute("BEGIN")
            c.execute("INSERT INTO main.t(k) VALUES(1)")
            c.execute("INSERT INTO d1.t(k, v) VALUES(1, randomblob(1 << 20))")
            try:
                c.execute("COMMIT")
                raise h.TestFailure("COMMIT succeeded although b.db's part "
                                    "could not be recorded")
            except sqlite3.OperationalError as e:
                print("  COMMIT failed: %s" % e)
            h.check(not c.in_transaction, "still in a transaction")
        finally:
            c.close()
        log = n.log_text()[start:]
        h.check(re.search(r"super-journal a\.db-mj[0-9A-F]{9}: recording "
                          r"b\.db's part failed \(No space left on device\)",
                          log), "no log line for the failed part")
        expect_state(n, names, before, False, "b.db's part did not fit")
        after = txids(n, names)
        h.check(after == (tx[0] + 2, tx[1]), "TXIDs %s -> %s: expected a.db's "
                "part and its rollback, nothing of b.db" % (tx, after))
        h.check(sj_entries(n) == [] and stored_sj(n) == [],
                "super-journals left: %s" % stored_sj(n))
        print("  a.db recorded, b.db did not fit: both rolled back, TXIDs "
              "%s -> %s" % (tx, after))
        disk.unfill()
        c = attach_conn(n, names, "DELETE")
        try:
            c.execute("BEGIN")
            c.execute("INSERT INTO main.t(k) VALUES(2)")
            c.execute("INSERT INTO d1.t(k, v) VALUES(2, randomblob(1 << 20))")
            c.execute("COMMIT")
        finally:
            c.close()
        expect_state(n, names, before, True, "with space again")
        pos = {x: n.pos(x) for x in names}
        n.stop()
        verify_all(n, pos)


# -- cluster -------------------------------------------------------------

def t_cluster():
    import cluster_harness as ch
    with ch.Cluster(2) as cl:
        cl.start()
        p, r = cl.primary, cl.replicas[0]
        every = []
        for mode in MODES:
            names = ["a-%s.db" % mode.lower(), "b-%s.db" % mode.lower()]
            every += names
            for x in names:
                create(p, x, mode)
            c = attach_conn(p, names, mode)
            try:
                for k in range(10):
                    c.execute("BEGIN")
                    for s in schemas(names):
                        c.execute("INSERT INTO %s.t(k, v) VALUES(?, "
                                  "randomblob(500))" % s, (k,))
                    c.execute("COMMIT")
            finally:
                c.close()
            for x in names:
                cl.wait_synced(x)
                h.check(h.content_digest(p.path(x)) ==
                        h.content_digest(r.path(x), ro=True),
                        "%s: the replica's rows differ" % x)
            h.check(sj_entries(r) == [] and stored_sj(r) == [],
                    "the replica has super-journals: %s %s"
                    % (sj_entries(r), stored_sj(r)))
            print("  %-8s 10 commits across 2 databases: both at %s on "
                  "the replica" % (mode, [r.pos_or_none(x)[0]
                                          for x in names]))
        check_no_strays(p, every)
        # Creating one on a replica: EROFS.
        h.expect_oserror(30, os.open, r.path("a-delete.db-mj0A1B2C93D"),
                         os.O_RDWR | os.O_CREAT | os.O_EXCL)


# -- the application run by the crash cases -------------------------------

def app():
    mode, key, paths = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    c = sqlite3.connect(paths[0], timeout=30, isolation_level=None)
    for i, other in enumerate(paths[1:]):
        c.execute("ATTACH ? AS d%d" % (i + 1), (other,))
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("BEGIN")
    for s in ["main"] + ["d%d" % i for i in range(1, len(paths))]:
        c.execute("INSERT INTO %s.t(k, v) VALUES(?, randomblob(300))" % s,
                  (key,))
    c.execute("COMMIT")
    print("committed")
    c.close()


if __name__ == "__main__":
    cases = {"modes": t_modes, "app-crash": t_app_crash,
             "daemon-crash": t_daemon_crash, "disk-full": t_disk_full,
             "cluster": t_cluster}
    if sys.argv[1] == "app":
        app()
    else:
        h.main(cases[sys.argv[1]])
