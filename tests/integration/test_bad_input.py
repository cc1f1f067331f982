"""Bad input through the mount gets a specific error and loses nothing.
One meson test per subcommand:

    namespace    mkdir, rename, symlink, link, mknod in the mount: EPERM;
                 creating a dot name or a <db>-pos: EPERM; writing,
                 truncating or removing a -pos: EACCES/EPERM
    non-sqlite   a text file written into the mount: EINVAL, and nothing
                 but SQLite content is ever stored; overwriting a
                 database's header with junk: EINVAL, database unchanged
    journal-off  journal_mode=OFF and MEMORY writes to a database with
                 committed pages: SQLite's "disk I/O error", the database
                 unchanged, a log line naming the database; a first load
                 of a new database in journal_mode=OFF is accepted
    unaligned    writes not aligned to the page size: EINVAL, unchanged
    corrupt-log  a byte flipped in a record before the end of the log:
                 the node serves the others but not that database (log line naming
                 the database and "corrupt"); restoring the byte restores
                 service
    no-fuse-access  ltxfs mount without /dev/fuse (a tmpfs over /dev in a
                 mount namespace of its own) and without CAP_SYS_ADMIN
                 (dropped from the bounding set by setpriv): it exits at
                 once, nonzero, with one line naming what is missing and
                 how to grant it (--device /dev/fuse, --cap-add
                 SYS_ADMIN), and mounts nothing
"""

import errno
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import ltxfs_harness as h
from workload import create_db


def fill(path, rows, size=500):
    c = h.connect(path)
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    for _ in range(rows):
        c.execute("INSERT INTO t(v) VALUES(randomblob(?))", (size,))
    c.close()


def snapshot(n, db):
    """What must not change: -pos, the bytes of the file, the rows."""
    with open(n.path(db), "rb") as f:
        data = f.read()
    return n.pos(db), data, h.content_digest(n.path(db))


def check_unchanged(n, db, before, what):
    after = snapshot(n, db)
    h.check(after[0] == before[0], "%s: -pos %s -> %s" % (what, before[0],
                                                          after[0]))
    h.check(after[1] == before[1], "%s: the bytes of %s changed"
            % (what, db))
    h.check(after[2] == before[2], "%s: the rows of %s changed" % (what, db))
    h.integrity_ok(n.path(db))


def stop_and_verify(n):
    n.stop()
    n.verify()


def t_namespace():
    with h.Node("namespace") as n:
        n.start()
        create_db(n.path("a.db"), 4096, "DELETE")
        fill(n.path("a.db"), 5)
        before = snapshot(n, "a.db")
        p = n.path
        h.expect_oserror(errno.EPERM, os.mkdir, p("dir"))
        h.expect_oserror(errno.EPERM, os.mkdir, p("dir.db"))
        h.expect_oserror(errno.EPERM, os.rename, p("a.db"), p("b.db"))
        h.expect_oserror(errno.EPERM, os.symlink, p("a.db"), p("l.db"))
        h.expect_oserror(errno.EPERM, os.link, p("a.db"), p("hard.db"))
        h.expect_oserror(errno.EPERM, os.mkfifo, p("fifo.db"))
        h.expect_oserror(errno.EPERM, os.open, p(".hidden"),
                         os.O_CREAT | os.O_WRONLY, 0o644)
        h.expect_oserror(errno.EPERM, os.open, p("b.db-pos"),
                         os.O_CREAT | os.O_WRONLY, 0o644)
        h.expect_oserror((errno.EACCES, errno.EPERM), os.open,
                         p("a.db-pos"), os.O_WRONLY)
        h.expect_oserror((errno.EACCES, errno.EPERM), os.truncate,
                         p("a.db-pos"), 0)
        h.expect_oserror(errno.EPERM, os.unlink, p("a.db-pos"))
        ls = n.listing()
        h.check(ls == ["a.db", "a.db-pos"], "the mount lists %s" % ls)
        check_unchanged(n, "a.db", before, "refused namespace operations")
        for what in ('mkdir "dir"', 'rename "a.db"', 'symlink "l.db"',
                     'link "hard.db"', '".hidden"'):
            n.wait_log(re.escape(what), 10, "no log line for %s" % what)
        stop_and_verify(n)


def all_content_is_sqlite(n):
    """Every database in the listing is empty or starts with SQLite's
    header: the mount never stored other content."""
    for name in n.listing():
        if name.endswith("-pos"):
            continue
        with open(n.path(name), "rb") as f:
            head = f.read(16)
        h.check(head in (b"", h.SQLITE_MAGIC),
                "%s holds non-SQLite content %r" % (name, head))


def t_non_sqlite():
    with h.Node("non-sqlite") as n:
        n.start()
        # Python's buffered text file: the write reaches the mount at
        # close, which reports the EINVAL of the write.
        f = open(n.path("x.txt"), "w")
        f.write("hello")
        e = h.expect_oserror(errno.EINVAL, f.close)
        f = None
        # Unbuffered: the write itself fails.
        fd = os.open(n.path("notes.db"), os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            h.expect_oserror(errno.EINVAL, os.write, fd, b"hello world\n")
            h.expect_oserror(errno.EINVAL, os.write, fd, b"\0" * 4096)
        finally:
            os.close(fd)
        print("  text file: %s at close; listing %s"
              % (errno.errorcode[e], n.listing()))
        all_content_is_sqlite(n)
        for name in ("x.txt", "notes.db"):
            if name in n.listing():
                h.check(os.stat(n.path(name)).st_size == 0,
                        "%s has size %d" % (name,
                                            os.stat(n.path(name)).st_size))
        n.wait_log(r"db=x\.txt", 10, "no log line naming x.txt")
        n.wait_log(r"only SQLite databases", 10, "no log line naming x.txt")
        # A database's header overwritten with junk.
        create_db(n.path("a.db"), 4096, "DELETE")
        fill(n.path("a.db"), 20)
        before = snapshot(n, "a.db")
        fd = os.open(n.path("a.db"), os.O_WRONLY)
        try:
            h.expect_oserror(errno.EINVAL, os.pwrite, fd, b"junk" * 1024, 0)
        finally:
            os.close(fd)
        check_unchanged(n, "a.db", before, "a junk header")
        all_content_is_sqlite(n)
        # Still writable the normal way.
        fill(n.path("a.db"), 1)
        stop_and_verify(n)


def t_journal_off():
    with h.Node("journal-off") as n:
        n.start()
        for mode in ("OFF", "MEMORY"):
            db = "j-%s.db" % mode.lower()
            create_db(n.path(db), 4096, "DELETE")
            fill(n.path(db), 20)
            before = snapshot(n, db)
            c = h.connect(n.path(db))
            h.check(h.one(c, "PRAGMA journal_mode=%s" % mode).lower() ==
                    mode.lower(), "journal_mode=%s refused" % mode)
            try:
                c.execute("INSERT INTO t(v) VALUES(randomblob(100))")
                raise h.TestFailure("a write in journal_mode=%s succeeded"
                                    % mode)
            except sqlite3.OperationalError as e:
                h.check("disk I/O error" in str(e), "journal_mode=%s: "
                        "SQLite said %r, expected disk I/O error"
                        % (mode, str(e)))
            finally:
                c.close()
            check_unchanged(n, db, before, "journal_mode=%s" % mode)
            # The same at the system call: an aligned page write with no
            # journal and no WAL is EPERM.
            fd = os.open(n.path(db), os.O_RDWR)
            try:
                page2 = os.pread(fd, 4096, 4096)
                h.expect_oserror(errno.EPERM, os.pwrite, fd, page2, 4096)
            finally:
                os.close(fd)
            check_unchanged(n, db, before, "a write with no journal")
            line = n.wait_log(r"[^\n]*db=%s[^\n]*journal_mode=OFF[^\n]*"
                              % re.escape(db), 10, "no log line names %s "
                              "and journal_mode=OFF" % db).group(0)
            print("  %s: %s" % (mode, line))
            # The database is fine for a normal connection afterwards.
            fill(n.path(db), 2)
            h.check(n.pos(db)[0] == before[0][0] + 2,
                    "TXID %d after two inserts from %d" % (n.pos(db)[0],
                                                           before[0][0]))
        # A first load of a new database, in one transaction, is allowed.
        c = h.connect(n.path("load.db"))
        c.execute("PRAGMA page_size=4096")
        c.execute("PRAGMA journal_mode=OFF")
        c.execute("BEGIN")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.executemany("INSERT INTO t(v) VALUES(randomblob(300))",
                      [()] * 500)
        c.execute("COMMIT")
        c.close()
        h.integrity_ok(n.path("load.db"))
        h.check(n.pos("load.db")[0] == 1, "load.db: TXID %d after the "
                "first load" % n.pos("load.db")[0])
        stop_and_verify(n)


def t_unaligned():
    with h.Node("unaligned") as n:
        n.start()
        for mode, ps in (("DELETE", 4096), ("WAL", 1024)):
            db = "u-%s.db" % mode.lower()
            create_db(n.path(db), ps, mode)
            fill(n.path(db), 10)
            before = snapshot(n, db)
            fd = os.open(n.path(db), os.O_WRONLY)
            try:
                h.expect_oserror(errno.EINVAL, os.pwrite, fd, b"x" * 100, 10)
                h.expect_oserror(errno.EINVAL, os.pwrite, fd, b"x" * ps,
                                 ps + 100)
                h.expect_oserror(errno.EINVAL, os.pwrite, fd,
                                 b"x" * (ps + 1), ps)
            finally:
                os.close(fd)
            check_unchanged(n, db, before, "unaligned writes")
            n.wait_log(r"not aligned to the page size", 10,
                       "no log line about the unaligned write")
        stop_and_verify(n)


def t_corrupt_log():
    db, healthy = "c.db", "ok.db"
    with h.Node("corrupt-log") as n:
        n.start()
        create_db(n.path(db), 4096, "DELETE")
        for i in range(40):
            fill(n.path(db), 1, 1000 + i)
        create_db(n.path(healthy), 4096, "WAL")
        fill(n.path(healthy), 5)
        pos = n.pos(db)
        digest = h.content_digest(n.path(db))
        n.stop()
        n.verify()
        # Flip one byte in the middle of a record in the middle of the
        # log (far from the tail, so it cannot pass for a torn append).
        segs = n.segments(db)
        seg = segs[len(segs) // 2]
        with open(seg, "rb") as f:
            buf = bytearray(f.read())
        offs, off = [], 0
        while off + 4 <= len(buf):
            ln = int.from_bytes(buf[off:off + 4], "big")
            offs.append((off, ln))
            off += 4 + ln
        h.check(len(offs) >= 10, "only %d records in %s" % (len(offs), seg))
        roff, rlen = offs[len(offs) // 2]
        flip = roff + 4 + rlen // 2
        buf[flip] ^= 0xFF
        with open(seg, "wb") as f:
            f.write(buf)
        print("  flipped byte %d of %s (record %d of %d)"
              % (flip, os.path.basename(seg), len(offs) // 2 + 1,
                 len(offs)))
        rc, _, out = n.verify(db, expect_ok=False)
        h.check(rc != 0, "ltxfs verify passed a corrupt log:\n%s" % out)

        # The node serves the healthy database and never the corrupt one.
        st = n.start(expect_mount=False)
        h.check(st != "exited", "the daemon refused to start at all; "
                "only the corrupt database should be refused")
        ls = n.listing()
        h.check(db not in ls and db + "-pos" not in ls,
                "a database with a corrupt log is served: %s" % ls)
        h.check(healthy in ls, "the healthy database is not served")
        h.integrity_ok(n.path(healthy))
        try:
            fd = os.open(n.path(db), os.O_RDWR | os.O_CREAT, 0o644)
            os.close(fd)
            h.check(False, "creating %s over its corrupt log succeeded" % db)
        except OSError as e:
            print("  creating %s fails: %s" % (db, e.strerror))
        print("  the daemon serves %s without %s" % (ls, db))
        n.stop()
        lines = [l for l in n.log_text().split("start #2")[-1].splitlines()
                 if db in l and "corrupt" in l]
        h.check(lines, "no log line names %s and says corrupt" % db)
        print("  log: %s" % lines[0])
        # Nothing was lost: the byte back, the node serves again.
        buf[flip] ^= 0xFF
        with open(seg, "wb") as f:
            f.write(buf)
        n.start()
        h.check(n.pos(db) == pos, "-pos %s, was %s" % (n.pos(db), pos))
        h.check(h.content_digest(n.path(db)) == digest,
                "content changed")
        h.integrity_ok(n.path(db))
        n.stop()
        n.verify()


def refused_start(n, wrap, want):
    """Runs `ltxfs mount` under the command prefix wrap; it must exit
    nonzero within 10 s with one line on stderr containing every string
    of want, and leave nothing mounted."""
    cmd = wrap + [h.ltxfs_bin(), "mount", "-c", n.cfg]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=10, cwd=n.root)
    err = p.stderr.decode(errors="replace")
    print("  %s: exit %d, %r" % (" ".join(wrap[:2]), p.returncode, err))
    h.check(p.returncode != 0, "ltxfs mount exited 0")
    lines = err.splitlines()
    h.check(len(lines) == 1, "%d lines on stderr, not one" % len(lines))
    for w in want:
        h.check(w in lines[0], "the line does not say %r" % w)
    h.check(not h.is_mounted(n.mnt), "%s is mounted" % n.mnt)


def t_no_fuse_access():
    for tool in ("setpriv", "unshare"):
        h.check(shutil.which(tool), "%s is not installed (util-linux)"
                % tool)
    with h.Node("nofuse") as n:
        refused_start(n, ["unshare", "--mount", "--propagation",
                          "private", "--", "sh", "-c",
                          'mount -t tmpfs none /dev && exec "$@"', "sh"],
                      ["/dev/fuse", "--device /dev/fuse"])
        refused_start(n, ["setpriv", "--bounding-set", "-sys_admin",
                          "--inh-caps", "-sys_admin", "--"],
                      ["CAP_SYS_ADMIN", "--cap-add SYS_ADMIN"])
        # The same node starts once it has both.
        n.start()
        n.stop()


TESTS = {"namespace": t_namespace, "non-sqlite": t_non_sqlite,
         "journal-off": t_journal_off, "unaligned": t_unaligned,
         "corrupt-log": t_corrupt_log, "no-fuse-access": t_no_fuse_access}

if __name__ == "__main__":
    h.main(TESTS[sys.argv[1]])
