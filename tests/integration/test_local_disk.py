"""What SQLite and its users do in a database's directory, through the
mount: each either works as on a local disk or is refused before anything
changes, with a reason (docs/STORAGE.md, "Supported and refused
operations"). One meson test per case:

    wal-page-size        a WAL made by a database of another page size,
                         copied next to a WAL-mode database (cp, chunked
                         writes, its header written in pieces; WALs that
                         hold every page, page 1 and some, or not page 1):
                         refused with EINVAL at its header, nothing
                         recorded; SQLite reads the database as before,
                         writes go on, the name can be deleted and made
                         again, and the log replays to what SQLite reads
    wal-page-size-start  such a WAL found in the data directory at start
                         (left there by a daemon that took it): moved
                         aside, not read, the node starts and serves it
    wal-remove           rm, truncate -s 0 or cp over a -wal that holds
                         committed transactions no checkpoint copied:
                         EBUSY (SQLite would lose them, the log keeps
                         them); once checkpointed, it goes
    capture-error-delete a WAL capture that fails for good (the log's
                         directory read-only: EROFS) refuses writes with
                         EIO, and deleting the database ends that: the
                         name made again takes writes, the log verifies
    backup               the backup API into a new name in the mount (the
                         sqlite3 CLI's .backup, Python's
                         Connection.backup), from a DELETE and a WAL
                         database: a database of the mount, verified
    rename-link          rename() and link() of a database or companion:
                         EPERM, a log line saying why and what instead
    temp-files           the names a sqlite3 workload creates in the
                         mount (strace): the database, -journal, -wal,
                         -shm and a super-journal, nothing else; temporary
                         files go to the temporary directory, and one
                         pointed into the mount fails with a clear error
    read-only            ?mode=ro and ?immutable=1 connections read
    exclusive            PRAGMA locking_mode=EXCLUSIVE writes in DELETE,
                         TRUNCATE, PERSIST and WAL mode, recorded
    journal-switch-busy  journal_mode=WAL (and back) while another
                         connection reads: SQLITE_BUSY as on a local disk,
                         nothing changed; once it has ended, the switch
                         works and is recorded
    page-size-wal        PRAGMA page_size and VACUUM in WAL mode keep the
                         page size, as on a local disk
    cluster/replica      on a replica: ?mode=ro and ?immutable=1 read
                         while records are applied; a locking_mode=
                         EXCLUSIVE reader delays applies only while it is
                         open, in rollback and WAL mode; a journal mode
                         switch and a backup replicate
"""

import errno
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import ltxfs_harness as h
from ltxfs_harness import check, wait_for


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def make_wal_db(path, page_size, rows, tag):
    """A WAL-mode database in a local directory, its WAL never
    checkpointed; returns the open connection (closing it would
    checkpoint and delete the WAL)."""
    for s in ("", "-wal", "-shm"):
        if os.path.exists(path + s):
            os.unlink(path + s)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA page_size=%d" % page_size)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO t(v) VALUES(?)", [(tag * 50,)] * rows)
    return c


WAL_SHAPES = ("whole", "partial", "nopage1")


def foreign_wal(tmp, page_size, shape):
    """The bytes of a WAL made by a database of page_size in tmp:
    whole    every page of its database, page 1 included (a database
             never checkpointed)
    partial  after a checkpoint, one transaction that writes page 1 and
             a few others of a database larger than the target
    nopage1  after a checkpoint, one transaction that does not write
             page 1"""
    path = os.path.join(tmp, "src-%d-%s.db" % (page_size, shape))
    c = make_wal_db(path, page_size, 300, "w")
    if shape != "whole":
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if shape == "partial":
        c.execute("CREATE TABLE u(x)")
        c.execute("INSERT INTO t(v) VALUES('partial')")
    elif shape == "nopage1":
        c.execute("UPDATE t SET v='nopage1' WHERE id=300")
    with open(path + "-wal", "rb") as f:
        data = f.read()
    c.close()
    check(len(data) > 32 and int.from_bytes(data[8:12], "big") == page_size,
          "%s: a WAL of page size %d" % (path, page_size))
    return data


def copy_cp(src_bytes, dst, tmp):
    """cp(1) of the bytes (from a local file) to dst; returns the errno
    name of its failure from its message, or None."""
    src = os.path.join(tmp, "copy-src")
    with open(src, "wb") as f:
        f.write(src_bytes)
    r = subprocess.run(["cp", src, dst], capture_output=True, text=True,
                       timeout=60)
    if r.returncode == 0:
        return None
    return "EINVAL" if "Invalid argument" in r.stderr else r.stderr.strip()


def copy_chunks(src_bytes, dst, tmp, chunk=65536):
    """Writes the bytes to dst in chunks, as a copy tool does; returns
    the errno name of the first failure, or None."""
    pieces = []
    if chunk == "header-in-pieces":
        # The 32-byte header 8 bytes at a time, then the rest.
        pieces = [(o, src_bytes[o:o + 8]) for o in range(0, 32, 8)]
        pieces.append((32, src_bytes[32:]))
    else:
        pieces = [(o, src_bytes[o:o + chunk])
                  for o in range(0, len(src_bytes), chunk)]
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for off, b in pieces:
            try:
                os.pwrite(fd, b, off)
            except OSError as e:
                return errno.errorcode.get(e.errno, str(e.errno))
        os.fsync(fd)
    finally:
        os.close(fd)
    return None


class Failures(list):
    """Failures collected to report together; each is logged at once."""

    def append(self, msg):
        log("  FAIL: %s" % msg)
        super().append(msg)


COPIERS = {"cp": copy_cp, "chunks": copy_chunks,
           "header-in-pieces": lambda b, d, t: copy_chunks(
               b, d, t, "header-in-pieces")}


def remove_db(n, db):
    for s in ("-wal", "-shm", "-journal", ""):
        try:
            os.unlink(n.path(db + s))
        except FileNotFoundError:
            pass


def t_wal_page_size():
    """Item 3 of issue 10. A WAL whose page size differs from its
    database's is never SQLite's own; such a WAL copied in produced a
    record SQLite did not read (`ltxfs verify`: the log replays to
    another size or page count than the live database), or a capture
    that failed ("reading page 4 ... No data available", "refusing
    further writes until restart": every write failed with EIO, even
    after the database was deleted and made again)."""
    failures = Failures()
    tmp = tempfile.mkdtemp(prefix="ltxfs-wps-")
    cases = []
    for dps, wps in ((4096, 1024), (1024, 4096)):
        for shape in WAL_SHAPES:
            cases.append((dps, wps, shape, "cp"))
    cases.append((4096, 1024, "whole", "chunks"))
    cases.append((4096, 8192, "partial", "header-in-pieces"))
    try:
        with h.Node("wal-page-size", log_level="info") as n:
            n.start()
            state = {}
            for i, (dps, wps, shape, how) in enumerate(cases):
                db = "w%d.db" % i
                what = "%s: a %d-byte-page WAL (%s) by %s next to a " \
                       "%d-byte-page database" % (db, wps, shape, how, dps)
                c = make_wal_db(n.path(db), dps, 200, "d")
                c.close()  # checkpointed, its WAL removed
                pos0 = n.pos(db)
                digest0 = h.content_digest(n.path(db))
                mark = len(n.log_text())
                refused = COPIERS[how](foreign_wal(tmp, wps, shape),
                                       n.path(db + "-wal"), tmp)
                state[db] = (what, refused, pos0, digest0, mark)
                try:
                    if n.pos(db) != pos0:
                        failures.append("%s: -pos %s after the copy, was %s"
                                        % (what, n.pos(db), pos0))
                    if h.content_digest(n.path(db)) != digest0:
                        failures.append("%s: SQLite reads another database "
                                        "after the copy" % what)
                except sqlite3.Error as e:
                    failures.append("%s: a read after the copy: %s"
                                    % (what, e))
                try:
                    c = h.connect(n.path(db), timeout=2)
                    c.execute("INSERT INTO t(v) VALUES('after')")
                    c.close()
                except sqlite3.Error as e:
                    failures.append("%s: a write after the copy: %s"
                                    % (what, e))
                log("  %s: copy %s" % (what, refused or "succeeded"))
            # What SQLite reads is what the log replays to.
            n.stop()
            rc, found, out = n.verify(expect_ok=False)
            for db, (what, _, _, _, _) in state.items():
                if db not in found:
                    failures.append("%s: ltxfs verify: %s" % (what, [
                        l for l in out.splitlines()
                        if l.startswith(db + ":")]))
            n.start()
            # The name can be deleted and made again, and takes writes.
            for db, (what, _, _, _, _) in state.items():
                try:
                    remove_db(n, db)
                    c = h.connect(n.path(db), timeout=2)
                    c.execute("PRAGMA journal_mode=WAL")
                    c.execute("CREATE TABLE again(x)")
                    c.execute("INSERT INTO again VALUES(1)")
                    c.close()
                except (OSError, sqlite3.Error) as e:
                    failures.append("%s: deleted and made again: %s"
                                    % (what, e))
            n.stop()
            rc, found, out = n.verify(expect_ok=False)
            for db, (what, _, _, _, _) in state.items():
                if db not in found:
                    failures.append("%s: ltxfs verify after it was made "
                                    "again: %s" % (what, [
                                        l for l in out.splitlines()
                                        if l.startswith(db + ":")]))
            # The rule: refused at its header, with a log line.
            for db, (what, refused, _, _, _) in state.items():
                if refused != "EINVAL":
                    failures.append("%s: the copy %s, expected EINVAL"
                                    % (what, refused or "succeeded"))
            text = n.log_text()
            for db, (what, _, _, _, mark) in state.items():
                if not re.search(r"db=%s: refusing a WAL header with page "
                                 r"size \d+ \(EINVAL, nothing written\)"
                                 % re.escape(db), text[mark:]):
                    failures.append("%s: no log line refusing it" % what)
            h.check(not failures, "\n".join(failures))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def t_wal_page_size_start():
    """A WAL of another page size in the data directory at start (one a
    daemon took and could not capture; here put there by hand): the
    daemon failed to start ("appending TXID ...: reading page 4 ...: No
    data available", "cannot open: Input/output error"). It is moved
    aside, not read; the node serves the database as its log has it."""
    tmp = tempfile.mkdtemp(prefix="ltxfs-wps-")
    try:
        with h.Node("wal-page-size-start", log_level="info") as n:
            n.start()
            db = "s.db"
            c = make_wal_db(n.path(db), 1024, 200, "d")
            c.close()
            pos0 = n.pos(db)
            digest0 = h.content_digest(n.path(db))
            n.stop()
            wal = foreign_wal(tmp, 4096, "partial")
            backing = os.path.join(n.data, "dbs", db)
            with open(os.path.join(backing, "wal"), "wb") as f:
                f.write(wal)
            mark = len(n.log_text())
            n.start()
            line = n.wait_log(r"db=s\.db: its WAL has page size 4096 and "
                              r"the database 1024: not read, and moved to "
                              r"\S+wal\.refused", 10, start=mark).group(0)
            log("  log: %s" % line)
            check(not os.path.exists(os.path.join(backing, "wal")),
                  "the WAL is still there")
            with open(os.path.join(backing, "wal.refused"), "rb") as f:
                check(f.read() == wal, "wal.refused is not the WAL")
            check(n.pos(db) == pos0, "-pos %s, was %s" % (n.pos(db), pos0))
            check(h.content_digest(n.path(db)) == digest0,
                  "SQLite reads another database")
            c = h.connect(n.path(db))
            c.execute("INSERT INTO t(v) VALUES('after')")
            c.close()
            check(n.pos(db)[0] == pos0[0] + 1, "a write: -pos %s" %
                  (n.pos(db),))
            h.integrity_ok(n.path(db))
            n.stop()
            n.verify()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def t_capture_error_delete():
    """A capture that fails for a reason other than a full disk refuses
    every later write with EIO ("refusing further writes until
    restart"), so nothing is built on a transaction the log lacks.
    Deleting the database ends it: the name made again took no write
    (EIO, "disk I/O error") until a restart."""
    with h.Node("capture-error-delete", log_level="info") as n:
        # Segments roll at 4 KiB (a quarter of the cap).
        with open(n.cfg) as f:
            cfg = f.read()
        with open(n.cfg, "w") as f:
            f.write(re.sub(r"(?m)^(data:\n  dir: .*\n)",
                           r"\1  retention-bytes: 16384\n", cfg))
        n.start()
        db = "e.db"
        c = h.connect(n.path(db))
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        # A record past 4 KiB: the next one starts a new segment.
        c.execute("INSERT INTO t(v) VALUES(randomblob(20000))")
        n.settle(db)
        logdir = os.path.join(n.data, "dbs", db, "log")
        subprocess.run(["mount", "--bind", logdir, logdir], check=True,
                       timeout=30)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", logdir],
                           check=True, timeout=30)
            mark = len(n.log_text())
            c.execute("INSERT INTO t(v) VALUES(randomblob(100))")
            line = n.wait_log(r"db=e\.db: capturing a WAL transaction "
                              r"failed \(Read-only file system\); refusing "
                              r"further writes until restart", 10,
                              start=mark).group(0)
            log("  log: %s" % line)
            try:
                c.execute("INSERT INTO t(v) VALUES(randomblob(100))")
                raise h.TestFailure("a write after the failed capture "
                                    "succeeded")
            except sqlite3.OperationalError as e:
                check("disk I/O error" in str(e), "the write: %s" % e)
            c.close()
        finally:
            subprocess.run(["umount", logdir], timeout=30)
        # Still refused: the failed transaction is in the WAL only.
        c = h.connect(n.path(db), timeout=2)
        try:
            c.execute("INSERT INTO t(v) VALUES(randomblob(100))")
            raise h.TestFailure("a write succeeded before the deletion")
        except sqlite3.OperationalError as e:
            check("disk I/O error" in str(e), "the write: %s" % e)
        c.close()
        mark = len(n.log_text())
        remove_db(n, db)
        for mode in ("WAL", "DELETE"):
            c = h.connect(n.path(db), timeout=2)
            try:
                c.execute("PRAGMA journal_mode=%s" % mode)
                c.execute("CREATE TABLE IF NOT EXISTS again(x)")
                c.execute("INSERT INTO again VALUES(?)", (mode,))
            except sqlite3.Error as e:
                raise h.TestFailure("made again, %s mode: %s" % (mode, e))
            c.close()
        n.wait_log(r"db=e\.db: deleted; the capture that failed before "
                   r"\(Read-only file system\) was of the database just "
                   r"deleted: writes are taken again", 10, start=mark)
        check(h.one(h.connect(n.path(db)), "SELECT count(*) FROM again")
              == 2, "rows after it was made again")
        h.integrity_ok(n.path(db))
        n.stop()
        n.verify()



def t_wal_remove():
    """Removing or truncating a -wal whose committed transactions no
    checkpoint has copied into the database file (rm, truncate -s 0, cp
    over it): on a local disk SQLite loses them; through the mount the
    primary lost them while its log and the replicas kept them (`ltxfs
    verify`: "the log replays to 2 pages, the live database has 1"). It
    is refused with EBUSY and a log line; after a checkpoint it works,
    and SQLite's own removal at its last close is never refused."""
    tmp = tempfile.mkdtemp(prefix="ltxfs-walrm-")
    try:
        with h.Node("wal-remove", log_level="info") as n:
            n.start()
            db = "q.db"
            c = h.connect(n.path(db))
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA wal_autocheckpoint=0")
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            c.executemany("INSERT INTO t(v) VALUES(?)",
                          [("row %d" % i,) for i in range(50)])
            pos = n.pos(db)
            wal = n.path(db + "-wal")
            other = os.path.join(tmp, "other-wal")
            with open(other, "wb") as g:
                g.write(foreign_wal(tmp, 4096, "whole"))
            mark = len(n.log_text())
            # cp: the truncation of its O_TRUNC, or (where that is not
            # done) its write of another header.
            tries = (("rm", ["rm", wal], "remove"),
                     ("truncate -s 0", ["truncate", "-s", "0", wal],
                      "truncate"),
                     ("cp over it", ["cp", other, wal],
                      "(truncate|write another header over)"))
            for what, argv, verb in tries:
                r = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=30)
                check(r.returncode != 0 and "Device or resource busy" in
                      r.stderr, "%s: exit %d %r" % (what, r.returncode,
                                                    r.stderr))
                n.wait_log(r"db=q\.db: refusing to %s q\.db-wal \(EBUSY\): "
                           r"its committed transactions wrote \d+ pages"
                           % verb, 10, start=mark)
                log("  %s: %s" % (what, r.stderr.strip()))
            check(h.one(c, "SELECT count(*) FROM t") == 50, "rows lost")
            c2 = h.connect(n.path(db))
            check(h.one(c2, "SELECT count(*) FROM t") == 50, "rows lost "
                  "for a new connection")
            c2.close()
            check(n.pos(db) == pos, "-pos %s, was %s" % (n.pos(db), pos))
            line = n.wait_log(r"db=q\.db: refusing to remove.*", 1,
                              start=mark).group(0)
            log("  log: %s" % line)
            # Checkpointed, it goes.
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.execute("INSERT INTO t(v) VALUES('after')")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.close()
            if os.path.exists(wal):
                os.unlink(wal)
            c = h.connect(n.path(db))
            check(h.one(c, "SELECT count(*) FROM t") == 51, "rows after "
                  "the checkpoint and the removal")
            c.close()
            n.stop()
            n.verify()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

CASES = {
    "wal-page-size": t_wal_page_size,
    "wal-page-size-start": t_wal_page_size_start,
    "capture-error-delete": t_capture_error_delete,
    "wal-remove": t_wal_remove,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_local_disk.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    h.main(CASES[sys.argv[1]])
