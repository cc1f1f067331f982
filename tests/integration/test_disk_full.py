#!/usr/bin/env python3
"""A full disk on the primary (suite cluster; docs/STORAGE.md, "A full
disk"). The primary's data directory is a small tmpfs this test mounts
(and always unmounts); the disk is filled with a filler file and
"freed" by removing it. Every acknowledged write is recorded here,
outside the mount, and looked for on the replica at the end.

Cases (argv[1]):
  wal     A WAL commit is acknowledged while the LTX log cannot take it:
          the database says "capture-blocked" in /info (with the reason),
          ltxfs_db_capture_blocked is 1 and the log says so; new writes
          fail with SQLITE_FULL ("database or disk is full"), reads see
          the acknowledged row, a checkpoint fails cleanly; once the
          filler is gone the capture resumes by itself (no restart, no
          write needed), and the replica receives every acknowledged
          write; a restart on the still-full disk serves the database
          capture-blocked. The log stays valid (`ltxfs verify` after a
          clean stop).
  delete  A DELETE-mode commit whose journal fits but whose LTX record
          does not: the COMMIT fails (SQLite: disk I/O error), /info and
          the metrics say capture-blocked until the next reader rolls the
          hot journal back; reads keep working on the same and on a new
          connection, no restart; with space back, writes go on and the
          replica has every acknowledged write and nothing of the failed
          one. A database file copied in (no journal) whose record does
          not fit is recorded once the space is back, with no write.
  delete-freelist  The same with a transaction that reused free pages
          (not journaled): reads fail with "disk I/O error" while even
          the rollback's record does not fit, never see the failed
          transaction, and work again once there is space (no restart).
  import  POST /import of a database larger than the disk: with
          Content-Length, 507 before the body; chunked, 507 as soon as
          the upload is over, with the space released at once (statvfs);
          `ltxfs import` shows the 507; an upload that fits whose copy
          into the mount does not: 507, the copy rolled back and the
          space free before the answer; http.max-import-size: 413 before
          the body, or once a chunked body passes it; the node goes on
          working (writes, replication, `ltxfs verify`).
"""

import http.client
import os
import sqlite3
import subprocess
import sys
import time

import cluster_harness as ch
import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, wait_for

TMPFS_SIZE = 16 << 20
STATE_TIMEOUT = 15.0


def log(msg):
    sys.stdout.write("%.2f %s\n" % (time.monotonic(), msg))
    sys.stdout.flush()


class SmallDisk:
    """A tmpfs of size bytes mounted on dir (a node's data directory,
    before the node starts); unmounted on exit (lazily: the daemon may
    still hold files of it), even when the test fails."""

    def __init__(self, dir, size=TMPFS_SIZE):
        self.dir = dir
        self.size = size
        self.filler = os.path.join(dir, "filler")

    def __enter__(self):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" %
                            self.size, "tmpfs", self.dir],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise TestFailure("mount -t tmpfs on %s: %s" % (self.dir,
                                                             r.stderr))
        return self

    def __exit__(self, et, ev, tb):
        subprocess.run(["umount", "-l", self.dir], timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return False

    def free(self):
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def fill(self, leave=0):
        """Writes the filler until the disk is full, then gives back
        leave bytes (rounded to whole pages) by truncating it."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        try:
            chunk = b"\xa5" * (1 << 20)
            n = 0
            while n < 4 * self.size // len(chunk) + 8:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    if e.errno != 28:
                        raise
                    if len(chunk) == 4096:
                        break
                    chunk = chunk[:len(chunk) // 16 or 4096]
                    if len(chunk) < 4096:
                        chunk = b"\xa5" * 4096
                n += 1
            if leave:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, max(0, size - leave))
        finally:
            os.close(fd)
        log("disk filled: %d bytes free" % self.free())

    def unfill(self):
        os.unlink(self.filler)
        log("filler removed: %d bytes free" % self.free())


def db_state(node, db):
    for d in node.info()["databases"]:
        if d["name"] == db:
            return d
    return None


def wait_state(node, db, state, timeout=STATE_TIMEOUT):
    last = []

    def ok():
        d = db_state(node, db)
        last[:] = [d]
        return d if d and d.get("state") == state else None
    try:
        return wait_for(ok, timeout, "%s: %s to be %s in /info"
                        % (node.name, db, state), interval=0.05)
    except TestFailure as e:
        raise TestFailure("%s (last: %s)" % (e, last))


def replica_ids(r, db):
    c = h.ro_connect(r.path(db))
    try:
        return set(x[0] for x in c.execute("SELECT id FROM t"))
    finally:
        c.close()


def wait_replica_has(cl, db, acked):
    r = cl.replicas[0]
    cl.wait_synced(db, timeout=60)
    got = replica_ids(r, db)
    missing = sorted(set(acked) - got)
    check(not missing, "%s: acknowledged rows missing on the replica: %s"
          % (db, missing[:20]))
    h.integrity_ok(r.path(db), ro=True)
    return got


def expect_full(c, sql, args=()):
    try:
        c.execute(sql, args)
    except sqlite3.OperationalError as e:
        check("database or disk is full" in str(e), "%s: %s, expected "
              "\"database or disk is full\"" % (sql, e))
        return
    raise TestFailure("%s succeeded on a full disk" % sql)


# -- wal ------------------------------------------------------------------

def wal():
    db = "app.db"
    with ch.Cluster(2) as cl, SmallDisk(cl.primary.data) as disk:
        p = cl.primary
        cl.start()
        pid = p.pid()
        c = h.connect(p.path(db))
        check(h.one(c, "PRAGMA journal_mode=WAL") == "wal", "WAL mode")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        acked = []
        # Grow the WAL to about 1 MiB and checkpoint it: the next
        # transactions overwrite its frames in place and need no space.
        c.execute("BEGIN")
        for i in range(1, 241):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(3000))",
                      (i,))
        c.execute("COMMIT")
        acked += range(1, 241)
        c.execute("PRAGMA wal_checkpoint(PASSIVE)")
        wait_replica_has(cl, db, acked)
        log("WAL of %d bytes, checkpointed" %
            os.path.getsize(p.path(db + "-wal")))

        disk.fill()
        # Acknowledged: its frames fit in the WAL; its LTX record (40 KB
        # of random bytes) cannot go into the log.
        c.execute("BEGIN")
        for i in range(241, 251):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(3000))",
                      (i,))
        c.execute("COMMIT")
        acked += range(241, 251)
        log("commit of rows 241-250 acknowledged on a full disk")

        d = wait_state(p, db, "capture-blocked")
        check(d.get("reason") == "capture blocked: disk full",
              "/info reason: %r" % d)
        p.wait_metric('ltxfs_db_capture_blocked{db="%s"}' % db,
                      lambda v: v == 1, STATE_TIMEOUT)
        p.wait_log(r"db=%s: capture blocked: disk full" % db,
                   STATE_TIMEOUT)
        expect_full(c, "INSERT INTO t(id, v) VALUES (1000, randomblob(10))")
        c2 = h.connect(p.path(db))
        expect_full(c2, "INSERT INTO t(id, v) VALUES (1001, randomblob(10))")
        check(h.one(c2, "SELECT count(*) FROM t WHERE id <= 250") == 250,
              "a new connection does not see the acknowledged rows")
        check(h.one(c, "SELECT count(*) FROM t") == 250, "reads")
        # A checkpoint would overwrite pages the capture still reads.
        expect_full(c2, "PRAGMA wal_checkpoint(TRUNCATE)")
        c2.close()
        check(db_state(p, db)["state"] == "capture-blocked", "still blocked")

        # A restart on the still-full disk: the transaction waits in the
        # WAL and the database is served, capture-blocked.
        c.close()
        p.stop()
        p.start()
        pid = p.pid()
        wait_state(p, db, "capture-blocked")
        c = h.connect(p.path(db))
        check(h.one(c, "SELECT count(*) FROM t") == 250, "reads after the "
              "restart")
        expect_full(c, "INSERT INTO t(id, v) VALUES (1002, randomblob(10))")

        disk.unfill()
        wait_state(p, db, "ok")
        check("reason" not in db_state(p, db), "reason once ok")
        p.wait_metric('ltxfs_db_capture_blocked{db="%s"}' % db,
                      lambda v: v == 0, STATE_TIMEOUT)
        p.wait_log(r"db=%s: capture resumed" % db, STATE_TIMEOUT)
        check(p.pid() == pid, "the primary restarted")
        wait_replica_has(cl, db, acked)
        log("replica has rows 1-250 with no write after the space came "
            "back")

        for i in range(251, 261):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(3000))",
                      (i,))
            acked.append(i)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        got = wait_replica_has(cl, db, acked)
        check(got == set(acked), "replica rows beyond the acknowledged: %s"
              % sorted(got - set(acked))[:20])
        check(p.pid() == pid, "the primary restarted")
        cl.stop()
        p.verify(db)
        log("ok: %d acknowledged rows on the replica, log verified"
            % len(acked))


# -- delete ---------------------------------------------------------------

def delete():
    db = "app.db"
    with ch.Cluster(2) as cl, SmallDisk(cl.primary.data) as disk:
        p = cl.primary
        cl.start()
        pid = p.pid()
        c = h.connect(p.path(db))
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.execute("BEGIN")
        for i in range(1, 201):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(900))",
                      (i,))
        c.execute("COMMIT")
        acked = {i: None for i in range(1, 201)}
        wait_replica_has(cl, db, acked)
        before = h.content_digest(p.path(db))

        # The transaction rewrites about 12 pages of random bytes: its
        # journal (about 50 KB) fits in what is left, its LTX record (as
        # large: random bytes do not compress) does not.
        failed = None
        for leave in range(56 << 10, 160 << 10, 8 << 10):
            disk.fill(leave=leave)
            try:
                c.execute("BEGIN")
                c.execute("UPDATE t SET v = randomblob(900) WHERE id <= 40")
                c.execute("COMMIT")
            except sqlite3.OperationalError as e:
                failed = str(e)
            else:
                raise TestFailure("the commit fit on a full disk (%d bytes "
                                  "left)" % leave)
            if "database or disk is full" not in failed:
                break
            log("journal did not fit with %d bytes left; more" % leave)
            if c.in_transaction:
                c.execute("ROLLBACK")
            disk.unfill()
            failed = None
        check(failed is not None, "no leave size made the log refuse")
        log("COMMIT failed with %r" % failed)
        # Until a reader rolls the hot journal back, the transaction is
        # neither recorded nor undone.
        check(os.path.exists(p.path(db + "-journal")), "no hot journal")
        d = wait_state(p, db, "capture-blocked")
        check(d.get("reason") == "capture blocked: disk full",
              "/info reason: %r" % d)
        check(p.metric('ltxfs_db_capture_blocked{db="%s"}' % db) == 1,
              "ltxfs_db_capture_blocked")
        check(p.metric('ltxfs_db_capture_disk_full_total{db="%s"}' % db,
                       0) >= 1, "ltxfs_db_capture_disk_full_total")

        # Reads keep working: the hot journal is rolled back.
        check(h.one(c, "SELECT count(*) FROM t") == 200, "reads (same "
              "connection)")
        c2 = h.connect(p.path(db))
        check(h.one(c2, "SELECT count(*) FROM t") == 200, "reads (new "
              "connection)")
        c2.close()
        check(h.content_digest(p.path(db)) == before,
              "the failed transaction is not rolled back")
        check(not os.path.exists(p.path(db + "-journal")),
              "a journal is left")
        check(p.metric('ltxfs_db_capture_blocked{db="%s"}' % db) == 0,
              "ltxfs_db_capture_blocked after the rollback")
        p.wait_log(r"db=%s: capture blocked: disk full" % db,
                   STATE_TIMEOUT)
        wait_state(p, db, "ok")

        disk.unfill()
        for i in range(201, 221):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(900))",
                      (i,))
            acked[i] = None

        # A first load with no journal (a database file copied in) that
        # fits on the disk while its record does not: recorded once there
        # is space, with no write needed.
        src = os.path.join(p.root, "copy-src.db")
        c.execute("VACUUM INTO ?", (src,))
        with open(src, "rb") as f:
            data = f.read()
        disk.fill(leave=len(data) + (64 << 10))
        with open(p.path("copy.db"), "wb") as f:
            for off in range(0, len(data), 4096):
                f.write(data[off:off + 4096])
                f.flush()
        wait_state(p, "copy.db", "capture-blocked")
        disk.unfill()
        wait_state(p, "copy.db", "ok")
        cl.wait_synced("copy.db")
        check(h.content_digest(cl.replicas[0].path("copy.db"), ro=True) ==
              h.content_digest(p.path(db)), "copy.db on the replica")
        c.close()
        check(p.pid() == pid, "the primary restarted")
        wait_replica_has(cl, db, acked)
        check(h.content_digest(p.path(db)) ==
              h.content_digest(cl.replicas[0].path(db), ro=True),
              "replica content differs from the primary's")
        cl.stop()
        p.verify()
        log("ok: every acknowledged row on the replica, the failed "
            "transaction on neither")


def delete_freelist():
    """The failed transaction reused free pages, which SQLite does not
    journal: its rollback leaves them changed, and that change must be
    recorded too. While even that does not fit, reads fail with "disk I/O
    error" (docs/STORAGE.md, "A full disk"); they never see the failed
    transaction, and once there is space the next read completes the
    rollback, with no restart; primary and replica end identical."""
    db = "app.db"
    with ch.Cluster(2) as cl, SmallDisk(cl.primary.data) as disk:
        p = cl.primary
        cl.start()
        pid = p.pid()
        c = h.connect(p.path(db))
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.execute("BEGIN")
        for i in range(1, 301):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(900))",
                      (i,))
        c.execute("COMMIT")
        c.execute("DELETE FROM t WHERE id > 100")
        check(h.one(c, "PRAGMA freelist_count") > 40, "a freelist")
        acked = {i: None for i in range(1, 101)}
        wait_replica_has(cl, db, acked)
        before = h.content_digest(p.path(db))

        failed = None
        for leave in range(4 << 10, 200 << 10, 4 << 10):
            disk.fill(leave=leave)
            try:
                c.execute("BEGIN")
                c.execute("INSERT INTO t SELECT id + 1000, "
                          "randomblob(900) FROM t WHERE id <= 40")
                c.execute("COMMIT")
            except sqlite3.OperationalError as e:
                failed = str(e)
            else:
                raise TestFailure("the commit fit on a full disk (%d bytes "
                                  "left)" % leave)
            if "database or disk is full" not in failed:
                break
            if c.in_transaction:
                c.execute("ROLLBACK")
            disk.unfill()
            failed = None
        check(failed is not None, "no leave size made the log refuse")
        log("COMMIT failed with %r" % failed)
        try:
            n = h.one(c, "SELECT count(*) FROM t")
            check(n == 100, "read %d rows, not the 100 committed" % n)
            log("read while full: %d rows" % n)
        except sqlite3.OperationalError as e:
            check("disk I/O error" in str(e), "read while full: %s" % e)
            log("read while full: %s (the rollback's record does not fit)"
                % e)
        disk.unfill()
        check(h.one(c, "SELECT count(*) FROM t") == 100, "read after the "
              "space came back")
        check(h.content_digest(p.path(db)) == before,
              "the failed transaction is not rolled back")
        wait_state(p, db, "ok")
        c.execute("INSERT INTO t(id, v) VALUES (500, randomblob(900))")
        acked[500] = None
        c.close()
        check(p.pid() == pid, "the primary restarted")
        wait_replica_has(cl, db, acked)
        check(h.content_digest(p.path(db)) ==
              h.content_digest(cl.replicas[0].path(db), ro=True),
              "replica content differs from the primary's")
        cl.stop()
        p.verify()
        log("ok")


# -- import ---------------------------------------------------------------

def make_big_db(path, size):
    if os.path.exists(path):
        os.unlink(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("BEGIN")
    for i in range(size // 8000 + 1):
        c.execute("INSERT INTO big(v) VALUES (randomblob(8000))")
    c.execute("COMMIT")
    c.close()


def post_import(node, db, path, chunked, timeout=30.0):
    """POST /import; returns (status, body, seconds from the end of the
    upload to the answer). Sends the body without waiting for 100
    Continue; an answer before the body is read is taken too."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port,
                                      timeout=timeout)
    size = os.path.getsize(path)
    t_end = None
    try:
        conn.putrequest("POST", "/import?db=%s" % db)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(size))
        conn.endheaders()
        try:
            with open(path, "rb") as f:
                while True:
                    b = f.read(1 << 16)
                    if not b:
                        break
                    conn.send(b"%x\r\n%s\r\n" % (len(b), b) if chunked
                              else b)
            if chunked:
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        t_end = time.monotonic()
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        return r.status, body, time.monotonic() - t_end
    finally:
        conn.close()


def import_full():
    db = "app.db"
    with ch.Cluster(2, primary_yml="") as cl, \
            SmallDisk(cl.primary.data) as disk:
        p = cl.primary
        cl.start()
        c = h.connect(p.path(db))
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        acked = []
        for i in range(1, 21):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(500))",
                      (i,))
            acked.append(i)
        wait_replica_has(cl, db, acked)
        big = os.path.join(p.root, "big.db")
        make_big_db(big, 24 << 20)
        free0 = disk.free()
        log("%d bytes free; importing %d bytes" % (free0,
                                                  os.path.getsize(big)))

        # With Content-Length: refused before the body.
        st, body, _ = post_import(p, "imp.db", big, chunked=False)
        log("Content-Length: %d %s" % (st, body.strip()))
        check(st == 507, "import larger than the disk: %d %r" % (st, body))
        check("space" in body, "507 without a reason: %r" % body)

        # Chunked: the disk fills while it arrives.
        st, body, dt = post_import(p, "imp.db", big, chunked=True)
        log("chunked: %d %s (%.2fs after the upload)" % (st, body.strip(),
                                                       dt))
        check(st == 507, "chunked import larger than the disk: %d %r"
              % (st, body))
        check(dt < 5.0, "the answer took %.1fs after the upload" % dt)
        free1 = disk.free()
        check(free1 >= free0 - (1 << 20), "space not released: %d bytes "
              "free, %d before" % (free1, free0))

        # `ltxfs import` (libcurl, Expect: 100-continue) shows the 507.
        r = subprocess.run([h.ltxfs_bin(), "import", "--url", p.url,
                            "imp.db", big], capture_output=True, text=True,
                           timeout=60)
        log("ltxfs import: exit %d: %s" % (r.returncode, r.stderr.strip()))
        check(r.returncode == 1 and "HTTP 507" in r.stderr and
              "free space" in r.stderr, "ltxfs import of a database "
              "larger than the disk: exit %d, %r" % (r.returncode,
                                                     r.stderr))

        # The upload fits, its copy into the mount does not.
        mid = os.path.join(p.root, "mid.db")
        make_big_db(mid, free0 * 5 // 8)
        st, body, _ = post_import(p, "imp2.db", mid, chunked=False)
        log("upload fits, copy does not: %d %s" % (st, body.strip()))
        check(st == 507 and "database or disk is full" in body,
              "import whose copy fills the disk: %d %r" % (st, body))
        free2 = disk.free()
        check(free2 >= free0 - (1 << 20), "space not released: %d bytes "
              "free, %d before" % (free2, free0))

        # The node goes on working.
        for i in range(21, 41):
            c.execute("INSERT INTO t(id, v) VALUES (?, randomblob(500))",
                      (i,))
            acked.append(i)
        wait_replica_has(cl, db, acked)
        c.close()
        cl.stop()
        p.verify()

        # http.max-import-size: 413.
        with open(p.cfg) as f:
            text = f.read()
        check("http:\n" in text, "config layout: %r" % text)
        with open(p.cfg, "w") as f:
            f.write(text.replace("http:\n", "http:\n  max-import-size: "
                                 "1048576\n", 1))
        cl.start()
        small = os.path.join(p.root, "small.db")
        make_big_db(small, 2 << 20)
        for chunked in (False, True):
            st, body, _ = post_import(p, "imp.db", small, chunked=chunked)
            log("max-import-size, chunked=%s: %d %s" % (chunked, st,
                                                       body.strip()))
            check(st == 413, "import over http.max-import-size: %d %r"
                  % (st, body))
            check("max-import-size" in body, "413 without the key: %r"
                  % body)
        tiny = os.path.join(p.root, "tiny.db")
        make_big_db(tiny, 100 << 10)
        st, body, _ = post_import(p, "imp.db", tiny, chunked=False)
        check(st == 200, "a small import: %d %r" % (st, body))
        cl.wait_synced("imp.db")
        c = h.connect(p.path(db))
        c.execute("INSERT INTO t(id, v) VALUES (41, randomblob(500))")
        acked.append(41)
        c.close()
        wait_replica_has(cl, db, acked)
        cl.stop()
        p.verify()
        log("ok")


CASES = {"wal": wal, "delete": delete, "delete-freelist": delete_freelist,
         "import": import_full}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.exit("usage: test_disk_full.py %s" % "|".join(CASES))
    if os.geteuid() != 0:
        print("SKIP: mounting the small tmpfs this test fills needs root")
        sys.exit(77)
    h.main(CASES[sys.argv[1]])
