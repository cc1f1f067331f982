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
                         again, and the log replays to what SQLite reads;
                         a database copied in with its own WAL is
                         recorded as SQLite reads it
    wal-page-size-start  such a WAL found in the data directory at start
                         (left there by a daemon that took it): moved
                         aside, not read, the node starts and serves it
    capture-error-delete a WAL capture that fails for good (the log's
                         directory read-only: EROFS) refuses writes with
                         EIO, and deleting the database ends that: the
                         name made again takes writes, the log verifies
    wal-remove           rm, truncate -s 0 or cp over a -wal that holds
                         committed transactions no checkpoint copied:
                         EBUSY (SQLite would lose them, the log keeps
                         them); once checkpointed, it goes
    vacuum-page-size-crash  a VACUUM to another page size killed at its
                         commit (a hot journal): rolled back at the next
                         start, nothing recorded
    backup               the backup API into a new name in the mount (the
                         sqlite3 CLI's .backup, Python's
                         Connection.backup) and into an existing database
                         (.restore), from a DELETE and a WAL database: a
                         database of the mount, verified
    rename-link          rename() and link() of a database or companion:
                         EPERM, a log line saying why and what instead
    temp-files           the names a sqlite3 workload opens in the mount
                         in each journal mode (strace): the database,
                         -journal, -wal and -shm, nothing else; its
                         temporary files go to SQLITE_TMPDIR, and one
                         pointed into the mount fails at once (EPERM,
                         "unable to open database file", a log line)
    read-only            ?mode=ro and ?immutable=1 connections read, and
                         refuse writes, as on a local disk
    exclusive            PRAGMA locking_mode=EXCLUSIVE writes in DELETE,
                         TRUNCATE, PERSIST and WAL mode (another
                         connection: SQLITE_BUSY, as on a local disk),
                         recorded
    journal-switch-busy  journal_mode=WAL (and back) while another
                         connection reads: SQLITE_BUSY as on a local disk,
                         nothing changed; once it has ended, the switch
                         works and is recorded
    page-size-wal        PRAGMA page_size and VACUUM in WAL mode keep the
                         page size, as on a local disk
    cluster-replica      (suite cluster) on a replica: ?mode=ro and
                         ?immutable=1 read while records are applied; a
                         locking_mode=EXCLUSIVE reader holds the applies
                         back while it is open (rollback modes) or cannot
                         read (WAL, as on a local disk); a journal mode
                         switch refused as busy, then done, and a backup
                         replicate
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
    """rm db*: the database first (recorded as deleted), then its
    companions (a -wal whose transactions no checkpoint copied cannot go
    while its database is there: wal-remove)."""
    for s in ("", "-journal", "-shm", "-wal"):
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
            # A database copied in with its own WAL (the database first,
            # as cp a.db a.db-wal does): recorded as SQLite reads it.
            n.start()
            src = os.path.join(tmp, "own.db")
            c = make_wal_db(src, 4096, 200, "a")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.executemany("INSERT INTO t(v) VALUES(?)", [("b",)] * 50)
            for suffix in ("", "-wal"):
                shutil.copy(src + suffix, os.path.join(tmp, "own-copy.db"
                                                      + suffix))
            c.close()
            for suffix in ("", "-wal"):
                r = subprocess.run(["cp", os.path.join(tmp, "own-copy.db" +
                                                       suffix),
                                    n.path("own.db" + suffix)],
                                   capture_output=True, text=True,
                                   timeout=60)
                check(r.returncode == 0, "cp own.db%s: %s" % (suffix,
                                                             r.stderr))
            c = h.connect(n.path("own.db"))
            check(h.one(c, "SELECT count(*) FROM t") == 250, "own.db: rows")
            c.close()
            log("  own.db: copied with its own WAL, TXID %d" %
                n.pos("own.db")[0])
            n.stop()
            n.verify("own.db")
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


def on_both(n, scenario):
    """Runs scenario(dir) in a local directory and in the mount; both
    must give the same outcome (a list of what SQLite said)."""
    local = tempfile.mkdtemp(prefix="ltxfs-local-")
    try:
        want = scenario(local)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    got = scenario(n.mnt)
    check(got == want, "%s: through the mount %s, on a local disk %s"
          % (scenario.__name__, got, want))
    for step in got:
        log("  %s: %s" % (scenario.__name__, step))
    return got


def fill_t(path, rows, mode="DELETE"):
    c = h.connect(path)
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
              "v TEXT)")
    c.executemany("INSERT INTO t(v) VALUES(?)",
                  [("row %d" % i,) for i in range(rows)])
    c.execute("CREATE INDEX IF NOT EXISTS t_v ON t(v)")
    c.close()


def t_backup():
    """The backup API into the mount gives a database of the mount: new
    names (Python's Connection.backup, sqlite3's .backup), an existing
    database (.restore from a local file), from DELETE and WAL sources."""
    tmp = tempfile.mkdtemp(prefix="ltxfs-backup-")
    dbs = []
    try:
        with h.Node("backup", log_level="info") as n:
            n.start()
            for mode in ("DELETE", "WAL"):
                src = "src-%s.db" % mode.lower()
                fill_t(n.path(src), 300, mode)
                want = h.content_digest(n.path(src))
                py, cli, rst = ["%s-%s.db" % (k, mode.lower())
                                for k in ("py", "cli", "restored")]
                s = h.connect(n.path(src))
                d = h.connect(n.path(py))
                s.backup(d)
                d.close()
                s.close()
                r = subprocess.run(["sqlite3", n.path(src), ".backup '%s'"
                                    % n.path(cli)], capture_output=True,
                                   text=True, timeout=60)
                check(r.returncode == 0, ".backup: %s" % r.stderr)
                # .restore into a database of the mount that exists.
                local = os.path.join(tmp, "local-%s.db" % mode.lower())
                r = subprocess.run(["sqlite3", n.path(src), ".backup '%s'"
                                    % local], capture_output=True,
                                   text=True, timeout=60)
                check(r.returncode == 0, ".backup to local: %s" % r.stderr)
                fill_t(n.path(rst), 5)
                before = n.pos(rst)
                r = subprocess.run(["sqlite3", n.path(rst), ".restore '%s'"
                                    % local], capture_output=True,
                                   text=True, timeout=60)
                check(r.returncode == 0, ".restore: %s" % r.stderr)
                check(n.pos(rst)[0] > before[0], ".restore recorded "
                      "nothing: -pos %s" % (n.pos(rst),))
                for dst in (py, cli, rst):
                    check(dst in n.listing() and dst + "-pos" in
                          n.listing(), "%s is not in the mount: %s"
                          % (dst, n.listing()))
                    check(h.content_digest(n.path(dst)) == want,
                          "%s differs from %s" % (dst, src))
                    h.integrity_ok(n.path(dst))
                    txid = n.pos(dst)[0]
                    c = h.connect(n.path(dst))
                    c.execute("INSERT INTO t(v) VALUES('more')")
                    c.close()
                    check(n.pos(dst)[0] == txid + 1, "%s: a write made "
                          "TXID %d -> %d" % (dst, txid, n.pos(dst)[0]))
                    log("  %s (from %s): a database of the mount, TXID %d"
                        % (dst, src, txid))
                dbs += [src, py, cli, rst]
            n.stop()
            _, found, out = n.verify()
            for db in dbs:
                check(db in found, "verify: %s\n%s" % (db, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def t_rename_link():
    """rename() and link() of a database or a companion: EPERM, with a
    log line that says why and what to do instead; nothing changes."""
    with h.Node("rename-link", log_level="info") as n:
        n.start()
        db = "a.db"
        c = h.connect(n.path(db))
        fill_t(n.path(db), 20, "WAL")
        c.execute("SELECT count(*) FROM t").fetchone()  # -wal, -shm open
        pos = n.pos(db)
        digest = h.content_digest(n.path(db))
        names = n.listing()
        mark = len(n.log_text())
        for name in (db, db + "-wal", db + "-shm"):
            h.expect_oserror(errno.EPERM, os.rename, n.path(name),
                             n.path("b" + name[1:]))
            n.wait_log(r'refusing to rename "%s" to "%s" \(EPERM\): a '
                       r'database and its -journal, -wal and -shm are '
                       r'replicated under their names; copy it under the '
                       r'new name \(VACUUM INTO, or the backup API'
                       % (re.escape(name), re.escape("b" + name[1:])), 10,
                       start=mark)
        h.expect_oserror(errno.EPERM, os.link, n.path(db), n.path("c.db"))
        line = n.wait_log(r'refusing a hard link "c\.db" \(EPERM\).*', 10,
                          start=mark).group(0)
        log("  log: %s" % line)
        r = subprocess.run(["mv", n.path(db), n.path("m.db")],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode != 0 and "Operation not permitted" in r.stderr,
              "mv: exit %d: %s" % (r.returncode, r.stderr))
        c.close()
        check(n.listing() == names or n.listing() == [db, db + "-pos"],
              "the mount lists %s" % n.listing())
        check(n.pos(db) == pos and h.content_digest(n.path(db)) == digest,
              "a refused rename changed %s" % db)
        n.stop()
        n.verify()


TEMP_SQL = """
PRAGMA cache_size=10;
PRAGMA journal_mode=%s;
CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000)
INSERT INTO t(a, b) SELECT hex(randomblob(16)), randomblob(300) FROM c;
CREATE INDEX t_a ON t(a);
SELECT count(*) FROM (SELECT a FROM t ORDER BY b);
SELECT count(DISTINCT b) FROM t;
CREATE TEMP TABLE tt AS SELECT * FROM t;
BEGIN; SAVEPOINT s1; UPDATE t SET a = a || 'x' WHERE id %% 2 = 0;
RELEASE s1; UPDATE t SET id = id + 100000 WHERE id > 2990; COMMIT;
CREATE TABLE u(x UNIQUE); INSERT INTO u VALUES (1), (2);
UPDATE OR FAIL u SET x = x + 1;
VACUUM;
SELECT count(*) FROM t;
"""


def t_temp_files():
    """The names a sqlite3 workload (sorts and an index bigger than its
    cache, a temporary table, a statement journal, a failed statement,
    VACUUM) opens or creates in the mount, seen by strace: the database
    and its -journal, -wal and -shm only. Its temporary files go to the
    temporary directory; SQLITE_TMPDIR pointed into the mount makes their
    creation fail (EPERM; SQLite: "unable to open database file")."""
    if shutil.which("strace") is None:
        raise h.TestFailure("strace is not installed (scripts/install-deps "
                            "installs it)")
    tmp = tempfile.mkdtemp(prefix="ltxfs-strace-")
    try:
        with h.Node("temp-files", log_level="info") as n:
            n.start()
            for mode in ("DELETE", "TRUNCATE", "PERSIST", "WAL"):
                db = "s-%s.db" % mode.lower()
                trace = os.path.join(tmp, "trace-%s" % mode)
                r = subprocess.run(
                    ["strace", "-f", "-qq", "-o", trace, "-e",
                     "trace=open,openat,creat,unlink,unlinkat,rename,"
                     "renameat,renameat2,mkdir,link,linkat",
                     "sqlite3", n.path(db)], input=TEMP_SQL % mode,
                    capture_output=True, text=True, timeout=120,
                    env=dict(os.environ, SQLITE_TMPDIR=tmp))
                check("UNIQUE constraint failed" in r.stderr and
                      r.stdout.split()[-1] == "3000",
                      "%s: sqlite3 said %r %r" % (mode, r.stdout,
                                                  r.stderr))
                in_mount, temps = set(), set()
                with open(trace) as f:
                    for line in f:
                        for p in re.findall(r'"([^"]+)"', line):
                            if p.startswith(n.mnt + "/"):
                                in_mount.add(os.path.basename(p))
                            elif p.startswith(tmp + "/etilqs_"):
                                temps.add(p)
                allowed = {db, db + "-journal", db + "-wal", db + "-shm"}
                check(in_mount <= allowed, "%s: names in the mount: %s"
                      % (mode, sorted(in_mount - allowed)))
                check(temps, "%s: no temporary file in SQLITE_TMPDIR"
                      % mode)
                log("  %s: in the mount %s; %d temporary files in "
                    "SQLITE_TMPDIR" % (mode, sorted(in_mount), len(temps)))
            mark = len(n.log_text())
            r = subprocess.run(
                ["sqlite3", n.path("s-delete.db")],
                input="PRAGMA cache_size=10;\nSELECT count(*) FROM "
                      "(SELECT a FROM t ORDER BY b);\n",
                capture_output=True, text=True,
                timeout=60, env=dict(os.environ, SQLITE_TMPDIR=n.mnt))
            check(r.returncode != 0 and "unable to open database file" in
                  r.stderr, "a temporary file in the mount: %r" % r.stderr)
            line = n.wait_log(r'refusing to create "etilqs_\w+" \(EPERM\): '
                              r'a SQLite temporary file.*SQLITE_TMPDIR.*',
                              10, start=mark)
            log("  SQLITE_TMPDIR in the mount: %s; log: %s"
                % (r.stderr.strip(), line.group(0)))
            n.stop()
            n.verify()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def t_read_only():
    """?mode=ro and ?immutable=1 connections read a DELETE and a WAL
    database of the primary; a write through them is refused by SQLite
    ("attempt to write a readonly database"), as on a local disk."""
    def scenario(d):
        out = []
        for mode in ("DELETE", "WAL"):
            p = os.path.join(d, "ro-%s.db" % mode.lower())
            fill_t(p, 50, mode)
            for q in ("mode=ro", "immutable=1"):
                c = sqlite3.connect("file:%s?%s" % (p, q), uri=True,
                                    isolation_level=None)
                n_rows = h.one(c, "SELECT count(*) FROM t")
                try:
                    c.execute("INSERT INTO t(v) VALUES('x')")
                    w = "write ok"
                except sqlite3.Error as e:
                    w = str(e)
                out.append("%s %s: %d rows, quick_check %s; %s" % (
                    mode, q, n_rows, h.one(c, "PRAGMA quick_check"), w))
                c.close()
        return out
    with h.Node("read-only", log_level="info") as n:
        n.start()
        on_both(n, scenario)
        n.stop()
        n.verify()


def t_exclusive():
    """PRAGMA locking_mode=EXCLUSIVE: a connection that holds the
    database writes in DELETE, TRUNCATE, PERSIST and WAL mode, another
    connection meanwhile gets SQLITE_BUSY, as on a local disk; every
    commit is recorded and the log verifies."""
    def scenario(d):
        out = []
        for mode in ("DELETE", "TRUNCATE", "PERSIST", "WAL"):
            p = os.path.join(d, "x-%s.db" % mode.lower())
            c = h.connect(p)
            c.execute("PRAGMA locking_mode=EXCLUSIVE")
            c.execute("PRAGMA journal_mode=%s" % mode)
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            for i in range(10):
                c.execute("INSERT INTO t(v) VALUES(?)", ("row %d" % i,))
            o = sqlite3.connect(p, timeout=0.1, isolation_level=None)
            try:
                r = "other reads %d rows" % h.one(o, "SELECT count(*) "
                                                     "FROM t")
            except sqlite3.Error as e:
                r = "other: %s" % e
            o.close()
            c.close()
            c = h.connect(p)
            out.append("%s: %s; after close %d rows, %s" % (
                mode, r, h.one(c, "SELECT count(*) FROM t"),
                h.one(c, "PRAGMA integrity_check")))
            c.close()
        return out
    with h.Node("exclusive", log_level="info") as n:
        n.start()
        on_both(n, scenario)
        for mode in ("DELETE", "TRUNCATE", "PERSIST", "WAL"):
            db = "x-%s.db" % mode.lower()
            txid = n.pos(db)[0]
            check(txid >= 11, "%s: TXID %d after 11 commits" % (db, txid))
        n.stop()
        n.verify()


def t_journal_switch_busy():
    """PRAGMA journal_mode=WAL while another connection reads, and back
    to DELETE while another connection has the WAL open: SQLITE_BUSY
    ("database is locked"), nothing changed, as on a local disk; once
    the other connection is done, the switch works and is recorded."""
    def scenario(d):
        out = []
        p = os.path.join(d, "js.db")
        fill_t(p, 20, "DELETE")
        other = h.connect(p)
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM t").fetchone()
        w = sqlite3.connect(p, timeout=0.2, isolation_level=None)
        for step, busy_other in (("WAL", True), ("WAL", False),
                                 ("DELETE", True), ("DELETE", False)):
            if not busy_other:
                if other.in_transaction:
                    other.execute("COMMIT")
                else:
                    other.close()
            try:
                got = h.one(w, "PRAGMA journal_mode=%s" % step)
            except sqlite3.Error as e:
                got = str(e)
            with open(p, "rb") as f:
                hdr = f.read(20)
            out.append("to %s%s: %s (file header version %d/%d)" % (
                step, " while another connection is open" if busy_other
                else "", got, hdr[18], hdr[19]))
            if step == "WAL" and not busy_other:
                w.execute("INSERT INTO t(v) VALUES('in WAL')")
                # The other connection reads in WAL mode now.
                out.append("other sees %d rows" % h.one(
                    other, "SELECT count(*) FROM t"))
                other.execute("BEGIN")
                other.execute("SELECT count(*) FROM t").fetchone()
                other.execute("COMMIT")  # its WAL stays open
        w.close()
        c = h.connect(p)
        out.append("%d rows, %s" % (h.one(c, "SELECT count(*) FROM t"),
                                    h.one(c, "PRAGMA integrity_check")))
        c.close()
        return out
    with h.Node("journal-switch-busy", log_level="info") as n:
        n.start()
        on_both(n, scenario)
        n.stop()
        n.verify()


def t_page_size_wal():
    """In WAL mode SQLite keeps the page size through PRAGMA page_size
    and VACUUM (it cannot change it there), through the mount as on a
    local disk, and the VACUUM is recorded. (A VACUUM to another page
    size in a rollback-journal mode: copy-in/page-size.)"""
    def scenario(d):
        out = []
        p = os.path.join(d, "pw.db")
        fill_t(p, 200, "WAL")
        c = h.connect(p)
        for ps in (8192, 1024, 65536):
            c.execute("PRAGMA page_size=%d" % ps)
            try:
                c.execute("VACUUM")
                r = "VACUUM ok"
            except sqlite3.Error as e:
                r = str(e)
            out.append("page_size=%d, %s: page size %d, %s, %s" % (
                ps, r, h.one(c, "PRAGMA page_size"),
                h.one(c, "PRAGMA journal_mode"),
                h.one(c, "PRAGMA integrity_check")))
        c.close()
        return out
    with h.Node("page-size-wal", log_level="info") as n:
        n.start()
        on_both(n, scenario)
        n.stop()
        n.verify()




def t_cluster_replica():
    """On a replica: ?mode=ro and ?immutable=1 connections read while
    records are applied (immutable=1 is for a file that does not change:
    a connection opened after the applies reads them); a locking_mode=
    EXCLUSIVE reader holds SQLite's SHARED lock for its life, so in a
    rollback-journal mode the applies wait until it is closed (other
    readers go on) and then catch up at once, and in WAL mode it cannot
    read ("disk I/O error", as a read-only connection gets on a local
    disk); journal_mode=WAL refused
    as busy on the primary changes nothing on the replica, and once it
    is done the switch replicates; a backup into the primary's mount
    replicates."""
    import test_cluster as tc
    from cluster_harness import Cluster
    with Cluster(2) as cl:
        cl.start()
        r = cl.replicas[0]
        for mode in ("DELETE", "WAL"):
            db = "r-%s.db" % mode.lower()
            p, rp = cl.primary.path(db), r.path(db)
            tc.simple_txns(p, 5, mode=mode)
            tc.check_identical(cl, db)
            ro = sqlite3.connect("file:%s?mode=ro" % rp, uri=True,
                                 isolation_level=None)
            im = sqlite3.connect("file:%s?immutable=1" % rp, uri=True,
                                 isolation_level=None)
            check(h.one(ro, "SELECT count(*) FROM t") == 5 and
                  h.one(im, "SELECT count(*) FROM t") == 5, "%s: reads"
                  % mode)
            tc.simple_txns(p, 3, start=5)
            cl.wait_synced(db)
            check(h.one(ro, "SELECT count(*) FROM t") == 8, "%s: mode=ro "
                  "does not see the applies" % mode)
            check(h.one(im, "PRAGMA quick_check") == "ok", "%s: immutable"
                  % mode)
            im.close()
            im = sqlite3.connect("file:%s?immutable=1" % rp, uri=True,
                                 isolation_level=None)
            got = h.one(im, "SELECT count(*) FROM t")
            # In WAL mode immutable=1 reads the database file alone, not
            # the WAL (as on a local disk): what is checkpointed.
            check(got == 8 if mode != "WAL" else got <= 8, "%s: a new "
                  "immutable=1 connection reads %d rows" % (mode, got))
            im.close()
            ro.close()
            log("  %s: mode=ro and immutable=1 read on the replica (a new "
                "immutable=1 connection: %d of 8 rows)" % (mode, got))
            # A reader in locking_mode=EXCLUSIVE.
            x = sqlite3.connect("file:%s?mode=ro" % rp, uri=True,
                                isolation_level=None, timeout=1)
            x.execute("PRAGMA locking_mode=EXCLUSIVE")
            try:
                n0 = h.one(x, "SELECT count(*) FROM t")
            except sqlite3.OperationalError as e:
                check(mode == "WAL" and "disk I/O error" in str(e),
                      "%s: an EXCLUSIVE reader: %s" % (mode, e))
                log("  WAL: a locking_mode=EXCLUSIVE reader: %s" % e)
                x.close()
                continue
            check(mode != "WAL", "WAL: an EXCLUSIVE reader read %d" % n0)
            pos0 = r.pos(db)
            tc.simple_txns(p, 3, start=8)
            want = cl.primary.settled_pos(db)
            r.wait_log(r"db=%s: apply waits for the EXCLUSIVE lock"
                       % re.escape(db), 10)
            check(r.pos(db) == pos0, "applied under the EXCLUSIVE reader")
            o = sqlite3.connect("file:%s?mode=ro" % rp, uri=True,
                                isolation_level=None, timeout=0.2)
            try:
                other = "reads %d rows" % h.one(o, "SELECT count(*) FROM t")
            except sqlite3.OperationalError as e:
                other = str(e)
            o.close()
            check(h.one(x, "SELECT count(*) FROM t") == n0, "the EXCLUSIVE "
                  "reader's rows changed")
            t0 = time.monotonic()
            x.close()
            wait_for(lambda: r.pos(db) == want, 40, "the applies after the "
                     "EXCLUSIVE reader closed")
            log("  %s: applies waited for a locking_mode=EXCLUSIVE reader "
                "(another reader meanwhile: %s); caught up %.2fs after it "
                "closed" % (mode, other, time.monotonic() - t0))
            tc.check_identical(cl, db)
        # journal_mode=WAL while a reader on the primary is in a read
        # transaction: busy, nothing replicated; then the switch.
        db = "r-delete.db"
        p = cl.primary.path(db)
        before = cl.primary.pos(db)
        rd = h.connect(p)
        rd.execute("BEGIN")
        rd.execute("SELECT count(*) FROM t").fetchone()
        w = sqlite3.connect(p, timeout=0.2, isolation_level=None)
        try:
            w.execute("PRAGMA journal_mode=WAL")
            raise h.TestFailure("journal_mode=WAL under a reader worked")
        except sqlite3.OperationalError as e:
            check("locked" in str(e), "journal_mode=WAL: %s" % e)
        check(cl.primary.pos(db) == before, "a refused switch was recorded")
        rd.execute("COMMIT")
        rd.close()
        check(h.one(w, "PRAGMA journal_mode=WAL") == "wal", "the switch")
        w.execute("INSERT INTO t(v) VALUES(x'01')")
        w.close()
        tc.check_identical(cl, db)
        check(tc.is_wal(r.path(db)), "the replica's copy is not in WAL mode")
        # A backup into the primary's mount replicates.
        s = h.connect(p)
        d = h.connect(cl.primary.path("r-copy.db"))
        s.backup(d)
        d.close()
        s.close()
        tc.check_identical(cl, "r-copy.db")
        check(h.content_digest(r.path("r-copy.db"), ro=True) ==
              h.content_digest(p), "the backup's copy on the replica")
        log("  journal_mode=WAL: busy under a reader, then replicated; a "
            "backup replicated")
        cl.stop()
        for n in cl.nodes:
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


def t_vacuum_page_size_crash():
    """A VACUUM to another page size in DELETE mode, its process killed
    at the journal's deletion (its commit): the database file holds the
    new page size and its journal is hot. The daemon, stopped and started
    again, rolls it back at start. It used to check the file against its
    log at the page size the file's header said (the new one), and after
    the rollback found the old database cut at that size different from
    its log: it recorded it, every page, as a new transaction of the
    wrong page size."""
    import signal
    from workload import WORKLOAD, create_db
    with h.Node("vacuum-page-size-crash", log_level="info") as n:
        n.start()
        db = "vc.db"
        create_db(n.path(db), 4096, "DELETE")
        fill_t(n.path(db), 400)
        c = h.connect(n.path(db))
        c.execute("DELETE FROM t WHERE id % 3 = 0")
        c.close()
        pos, digest = n.pos(db), h.content_digest(n.path(db))
        r = subprocess.run([sys.executable, WORKLOAD, "vacuum-die", "--db",
                            n.path(db), "--journal-mode", "DELETE",
                            "--die-at", "unlink", "--vacuum-page-size",
                            "1024"], capture_output=True, text=True,
                           timeout=120)
        check(r.returncode == -signal.SIGSYS, "the VACUUM exited %d, "
              "expected to be killed at unlink: %s%s" % (
                  r.returncode, r.stdout, r.stderr[-2000:]))
        check(os.path.exists(n.path(db + "-journal")), "no hot journal")
        with open(n.path(db), "rb") as f:
            hps = int.from_bytes(f.read(18)[16:18], "big")
        check(hps == 1024, "the file's header says page size %d" % hps)
        n.stop()
        mark = len(n.log_text())
        n.start()
        n.wait_log(r"db=vc\.db: rolled back a hot journal", 10, start=mark)
        check(not re.search(r"db=vc\.db: after the playback",
                            n.log_text()[mark:]),
              "the rollback was recorded: %s" % n.log_tail(5))
        check(n.pos(db) == pos, "-pos %s, was %s" % (n.pos(db), pos))
        check(h.content_digest(n.path(db)) == digest, "rows changed")
        c = h.connect(n.path(db))
        check(h.one(c, "PRAGMA page_size") == 4096, "page size")
        c.execute("INSERT INTO t(v) VALUES('after')")
        c.close()
        h.integrity_ok(n.path(db))
        n.stop()
        n.verify()

CASES = {
    "wal-page-size": t_wal_page_size,
    "wal-page-size-start": t_wal_page_size_start,
    "capture-error-delete": t_capture_error_delete,
    "backup": t_backup,
    "rename-link": t_rename_link,
    "temp-files": t_temp_files,
    "read-only": t_read_only,
    "exclusive": t_exclusive,
    "journal-switch-busy": t_journal_switch_busy,
    "page-size-wal": t_page_size_wal,
    "cluster-replica": t_cluster_replica,
    "wal-remove": t_wal_remove,
    "vacuum-page-size-crash": t_vacuum_page_size_crash,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_local_disk.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    h.main(CASES[sys.argv[1]])
