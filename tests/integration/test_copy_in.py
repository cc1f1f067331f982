"""Copying an existing database into the mount (docs/STORAGE.md, "A copy
into the mount"). One meson test per subcommand:

    tools      cp, cp --sparse=always, dd at block sizes 512, 1000, 4096,
               64K and 1M, install, shutil.copy, and writes out of order
               (from the end back, and from four threads at once), on
               databases of page sizes 512..65536 and 4 KiB..1.5 MiB (most
               past 128 KiB; every tool on page sizes 512 and 4096, four
               on the others): the tool exits 0, the file is the source
               byte for byte, recorded at its close as exactly one snapshot
               (TXID 1, -pos = the source's checksum), SQLite reads it and
               writes to it
    refused    what cannot be done is refused before any byte changes,
               with a log line that says why and what to do: a truncated
               database (close fails with EINVAL, the file is emptied), a
               file that is not SQLite (EINVAL at its first write), a copy
               over a database with committed pages (EPERM at open; in
               rollback mode and in WAL mode with a connection open) and
               truncate -s 0 of one (EPERM), while cp -f (a delete, then
               the new database) works, and so does a copy into a name
               whose PERSIST-mode -journal was left; a SQLite writer while a copy is
               incomplete (EBUSY for its journal); a daemon killed during
               a copy (an incomplete file is emptied at the next start, a
               complete one recorded)
    page-size  item 4 of issue 10: 200 databases created by ATTACH with a
               random page size under reused names (deleted each time,
               the daemon restarted every 20), each then VACUUMed to
               another page size in a rollback-journal mode: every one
               works, and ltxfs verify replays the log
    cluster    copies on a primary reach its replica as one snapshot each,
               byte for byte; a refused copy never does
    big        (suite slow) a 200 MB database copied in with cp, against
               cp to a local directory (median of 3), the daemon's peak
               memory bounded
"""

import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import ltxfs_harness as h
from ltxfs_harness import check

PAGE_SIZES = (512, 1024, 4096, 8192, 65536)


def log(msg):
    sys.stdout.write("  %s\n" % msg)
    sys.stdout.flush()


def make_db(path, page_size, size, mode="DELETE", seed=1, zero_free=False):
    """A database of about size bytes (at least two pages) outside the
    mount. zero_free: secure_delete on and some rows deleted, so it holds
    pages of zeros (cp --sparse=always leaves holes for them)."""
    if os.path.exists(path):
        os.unlink(path)
    rng = random.Random(seed)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA page_size=%d" % page_size)
    c.execute("PRAGMA journal_mode=%s" % mode)
    if zero_free:
        c.execute("PRAGMA secure_delete=ON")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, s TEXT)")
    c.execute("CREATE INDEX t_s ON t(s)")
    c.execute("BEGIN")
    i = 0
    while True:
        i += 1
        c.execute("INSERT INTO t(v, s) VALUES (randomblob(?), ?)",
                  (rng.randint(50, 3000), "row %d %d" % (i, rng.random())))
        if i % 50 == 0:
            c.execute("COMMIT")
            if os.path.getsize(path) >= size:
                break
            c.execute("BEGIN")
    if zero_free:
        c.execute("DELETE FROM t WHERE id % 3 = 0")
    if mode.upper() == "WAL":
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return path


def db_checksum(path):
    r = subprocess.run([h.ltxfs_bin(), "ltx", "checksum", path],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "ltx checksum %s: %s" % (path, r.stderr))
    return int(r.stdout.strip(), 16)


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# -- the ways of copying a file in ---------------------------------------

def run_tool(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return r.returncode, (r.stdout + r.stderr).strip()


def copy_reverse(src, dst, chunk=48 << 10):
    """pwrite()s the file from its end back to its start."""
    data = file_bytes(src)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        offs = list(range(0, len(data), chunk))
        for off in reversed(offs):
            os.pwrite(fd, data[off:off + chunk], off)
    finally:
        os.close(fd)


def copy_threads(src, dst, chunk=20000, nthreads=4):
    """Four threads pwrite() chunks (not a page multiple) of the file in a
    shuffled order through one file descriptor."""
    data = file_bytes(src)
    offs = list(range(0, len(data), chunk))
    random.Random(7).shuffle(offs)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    errs = []

    def work(part):
        try:
            for off in part:
                os.pwrite(fd, data[off:off + chunk], off)
        except OSError as e:
            errs.append(e)
    ts = [threading.Thread(target=work, args=(offs[i::nthreads],))
          for i in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    os.close(fd)
    if errs:
        raise errs[0]


def copy_with(tool, src, dst):
    """Copies src to dst with tool; returns (rc, output)."""
    if tool == "cp":
        return run_tool(["cp", src, dst])
    if tool == "cp-sparse":
        return run_tool(["cp", "--sparse=always", src, dst])
    if tool.startswith("dd-"):
        return run_tool(["dd", "if=" + src, "of=" + dst,
                         "bs=" + tool[3:], "status=none"])
    if tool == "install":
        return run_tool(["install", "-m", "0644", src, dst])
    try:
        if tool == "shutil":
            shutil.copy(src, dst)
        elif tool == "reverse":
            copy_reverse(src, dst)
        elif tool == "threads":
            copy_threads(src, dst)
        else:
            raise h.TestFailure("no tool %s" % tool)
    except OSError as e:
        return 1, "%s: %s" % (tool, e)
    return 0, ""


TOOLS = ("cp", "cp-sparse", "dd-512", "dd-1000", "dd-4096", "dd-64K",
         "dd-1M", "install", "shutil", "reverse", "threads")


def check_copied(n, db, src, what):
    """db in the mount is src, recorded at its close as one snapshot."""
    want = file_bytes(src)
    got = file_bytes(n.path(db))
    check(len(got) == len(want), "%s: %d bytes in the mount, %d in the "
          "source" % (what, len(got), len(want)))
    check(got == want, "%s: the bytes differ from the source" % what)
    # Recorded by the close itself: -pos as it is, without an fsync.
    pos = n.raw_pos(db)
    check(pos == (1, db_checksum(src)), "%s: -pos %016x/%016x after the "
          "copy, want TXID 1 and the source's checksum %016x"
          % (what, pos[0], pos[1], db_checksum(src)))
    recs = n.log_records_live(db)
    check(len(recs) == 1, "%s: %d LTX records, want one snapshot"
          % (what, len(recs)))
    h.integrity_ok(n.path(db))
    check(h.content_digest(n.path(db)) == h.content_digest(src),
          "%s: the rows differ from the source's" % what)


def t_tools():
    with h.Node("copy-tools") as n:
        n.start()
        srcdir = os.path.join(n.root, "src")
        os.mkdir(srcdir)
        few = ("cp", "dd-1000", "dd-64K", "threads")
        # Every page size past 128 KiB; every tool for two of them.
        specs = [(ps, max(300 << 10, 4 * ps), "DELETE", False,
                  TOOLS if ps in (512, 4096) else few)
                 for ps in PAGE_SIZES]
        specs += [(4096, 4096, "DELETE", False, few),      # one page
                  (512, 1024, "DELETE", False, few),       # two pages
                  (4096, 1500 << 10, "WAL", False, ("cp", "dd-1M",
                                                    "reverse")),
                  (1024, 600 << 10, "DELETE", True,        # zero pages
                   ("cp-sparse", "dd-4096"))]
        k = 0
        t0 = time.monotonic()
        for si, (ps, size, mode, zero, tools) in enumerate(specs):
            src = make_db(os.path.join(srcdir, "s%d.db" % si), ps, size,
                          mode, seed=si, zero_free=zero)
            for tool in tools:
                k += 1
                db = "c%d-%s.db" % (si, tool)
                what = "%s of a %d-byte database, page size %d (%s)" % (
                    tool, os.path.getsize(src), ps, mode)
                rc, out = copy_with(tool, src, n.path(db))
                check(rc == 0, "%s: exit %d: %s" % (what, rc, out))
                check_copied(n, db, src, what)
                # An ordinary SQLite transaction on it afterwards.
                c = h.connect(n.path(db))
                c.execute("INSERT INTO t(v, s) VALUES (randomblob(10), "
                          "'after')")
                c.close()
                check(n.pos(db)[0] == 2, "%s: TXID %d after one more "
                      "transaction" % (what, n.pos(db)[0]))
        log("%d copies with %d tools in %.1fs" % (k, len(TOOLS),
                                                 time.monotonic() - t0))
        n.stop()
        n.verify()


def wait_size(n, db, size, what):
    """The last close is answered after close(2) returns: wait for it."""
    def ok():
        return os.stat(n.path(db)).st_size == size
    h.wait_for(ok, 10, "%s: %s to be %d bytes (is %d)" % (
        what, db, size, os.stat(n.path(db)).st_size))


def unchanged(n, db, before, what):
    after = (n.pos(db), file_bytes(n.path(db)),
             h.content_digest(n.path(db)))
    check(after[0] == before[0], "%s: -pos %s -> %s" % (what, before[0],
                                                        after[0]))
    check(after[1] == before[1], "%s: the bytes of %s changed" % (what, db))
    check(after[2] == before[2], "%s: the rows of %s changed" % (what, db))
    h.integrity_ok(n.path(db))


def state(n, db):
    return (n.pos(db), file_bytes(n.path(db)), h.content_digest(n.path(db)))


def refused_incomplete(n, srcdir):
    # A database cut short: the copy's close fails and the file is
    # emptied, with a line naming it and the reason.
    full = make_db(os.path.join(srcdir, "full.db"), 4096, 1 << 20)
    cut = os.path.join(srcdir, "cut.db")
    with open(cut, "wb") as f:
        f.write(file_bytes(full)[:200 << 10])
    start = len(n.log_text())
    rc, out = copy_with("cp", cut, n.path("cut.db"))
    check(rc != 0 and "Invalid argument" in out, "cp of a truncated "
          "database: exit %d: %r" % (rc, out))
    wait_size(n, "cut.db", 0, "a truncated copy")
    check(n.raw_pos("cut.db")[0] == 0, "a truncated copy was recorded: "
          "-pos %s" % (n.raw_pos("cut.db"),))
    line = n.wait_log(r"db=cut\.db: [^\n]*not a complete SQLite database:"
                      r"[^\n]*emptied[^\n]*", 10, start=start).group(0)
    log("truncated copy: %s; log: %s" % (out, line))
    pages = int.from_bytes(file_bytes(full)[28:32], "big")
    check("header says %d pages, the file holds 50" % pages in line,
          "the line does not say why: %s" % line)
    # The same name takes a complete copy afterwards.
    rc, out = copy_with("cp", full, n.path("cut.db"))
    check(rc == 0, "cp after the refused copy: %s" % out)
    check_copied(n, "cut.db", full, "a copy after a refused one")


def refused_not_sqlite(n, srcdir):
    junk = os.path.join(srcdir, "junk.bin")
    with open(junk, "wb") as f:
        f.write(random.Random(3).randbytes(300 << 10))
    rc, out = copy_with("cp", junk, n.path("junk.db"))
    check(rc != 0 and "Invalid argument" in out, "cp of a non-SQLite "
          "file: exit %d: %r" % (rc, out))
    check(os.stat(n.path("junk.db")).st_size == 0, "junk.db is not empty")
    n.wait_log(r"db=junk\.db: [^\n]*only SQLite databases", 10)
    # A SQLite header with an impossible page size.
    bad = bytearray(file_bytes(make_db(os.path.join(srcdir, "b.db"), 4096,
                                       200 << 10)))
    bad[16:18] = (3000).to_bytes(2, "big")
    with open(os.path.join(srcdir, "badps.db"), "wb") as f:
        f.write(bad)
    rc, out = copy_with("cp", os.path.join(srcdir, "badps.db"),
                        n.path("badps.db"))
    check(rc != 0 and "Invalid argument" in out, "cp of a header with "
          "page size 3000: exit %d: %r" % (rc, out))
    check(os.stat(n.path("badps.db")).st_size == 0, "badps.db not empty")


def refused_over(n, srcdir):
    other = make_db(os.path.join(srcdir, "other.db"), 4096, 300 << 10,
                    seed=9)
    # Rollback mode, nobody connected.
    make_db(os.path.join(srcdir, "a.db"), 4096, 200 << 10, seed=10)
    rc, out = copy_with("cp", os.path.join(srcdir, "a.db"), n.path("a.db"))
    check(rc == 0, "cp a.db: %s" % out)
    c = h.connect(n.path("a.db"))
    c.execute("INSERT INTO t(v, s) VALUES (randomblob(100), 'x')")
    c.close()
    before = state(n, "a.db")
    start = len(n.log_text())
    for tool in ("cp", "dd-4096", "redirect"):
        if tool == "redirect":
            # A plain open with O_TRUNC, as a shell's > does.
            try:
                with open(n.path("a.db"), "wb") as f:
                    f.write(file_bytes(other))
                rc, out = 0, ""
            except OSError as e:
                rc, out = 1, str(e)
        else:
            rc, out = copy_with(tool, other, n.path("a.db"))
        check(rc != 0 and "not permitted" in out, "%s over a database "
              "with committed pages: exit %d: %r" % (tool, rc, out))
        unchanged(n, "a.db", before, "%s over a.db" % tool)
    line = n.wait_log(r"db=a\.db: refusing[^\n]*O_TRUNC[^\n]*", 10,
                      start=start).group(0)
    check("rm" in line and "ltxfs import" in line, "the line does not say "
          "what to do: %s" % line)
    log("cp over a database: %s; log: %s" % (out, line))
    rc, out = run_tool(["truncate", "-s", "0", n.path("a.db")])
    check(rc != 0 and "not permitted" in out, "truncate -s 0: %d %r"
          % (rc, out))
    unchanged(n, "a.db", before, "truncate -s 0 of a.db")
    rc, out = run_tool(["dd", "if=" + other, "of=" + n.path("a.db"),
                        "bs=4096", "conv=notrunc", "status=none"])
    check(rc != 0, "dd conv=notrunc over a.db worked")
    unchanged(n, "a.db", before, "dd conv=notrunc over a.db")

    # WAL mode with a connection open: its -wal exists.
    make_db(os.path.join(srcdir, "w.db"), 4096, 200 << 10, mode="WAL",
            seed=11)
    rc, out = copy_with("cp", os.path.join(srcdir, "w.db"), n.path("w.db"))
    check(rc == 0, "cp w.db: %s" % out)
    c = h.connect(n.path("w.db"))
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("INSERT INTO t(v, s) VALUES (randomblob(100), 'x')")
    check(os.path.exists(n.path("w.db-wal")), "no -wal")
    before = state(n, "w.db")
    for tool in ("cp", "dd-4096"):
        rc, out = copy_with(tool, other, n.path("w.db"))
        check(rc != 0 and "not permitted" in out, "%s over a WAL database "
              "in use: exit %d: %r" % (tool, rc, out))
        unchanged(n, "w.db", before, "%s over w.db" % tool)
    rc, out = run_tool(["truncate", "-s", "0", n.path("w.db")])
    check(rc != 0 and "not permitted" in out, "truncate -s 0 of a WAL "
          "database in use: %d %r" % (rc, out))
    unchanged(n, "w.db", before, "truncate -s 0 of w.db")
    c.execute("INSERT INTO t(v, s) VALUES (randomblob(100), 'y')")
    c.close()
    h.integrity_ok(n.path("w.db"))

    # cp -f removes what it cannot open and copies again: a delete, then
    # the new database.
    txid = n.pos("a.db")[0]
    rc, out = run_tool(["cp", "-f", other, n.path("a.db")])
    check(rc == 0, "cp -f: %s" % out)
    check(file_bytes(n.path("a.db")) == file_bytes(other), "cp -f: bytes")
    check(n.raw_pos("a.db") == (txid + 2, db_checksum(other)), "cp -f: "
          "-pos %s, want TXID %d (a delete, then the copy)"
          % (n.raw_pos("a.db"), txid + 2))
    h.integrity_ok(n.path("a.db"))


def copy_over_persist_journal(n, srcdir):
    """A PERSIST-mode database removed without its -journal (its header
    zeroed): a copy into the name is a first load like any other (it was
    taken for a transaction and never recorded)."""
    c = h.connect(n.path("p.db"))
    c.execute("PRAGMA journal_mode=PERSIST")
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES (1)")
    c.close()
    txid = n.pos("p.db")[0] + 1  # the delete
    os.unlink(n.path("p.db"))
    check(os.path.exists(n.path("p.db-journal")), "no -journal left")
    src = make_db(os.path.join(srcdir, "p.db"), 4096, 300 << 10, seed=14)
    rc, out = copy_with("cp", src, n.path("p.db"))
    check(rc == 0, "cp over a PERSIST journal: %s" % out)
    check(n.raw_pos("p.db") == (txid + 1, db_checksum(src)), "p.db: -pos "
          "%s after the copy, want TXID %d" % (n.raw_pos("p.db"), txid + 1))
    c = h.connect(n.path("p.db"))
    c.execute("INSERT INTO t(v, s) VALUES (randomblob(10), 'after')")
    c.close()
    h.integrity_ok(n.path("p.db"))


def refused_writer_during_copy(n, srcdir):
    src = make_db(os.path.join(srcdir, "half.db"), 4096, 400 << 10,
                  seed=12)
    data = file_bytes(src)
    # Half a copy: SQLite finds it malformed (the header says more pages
    # than the file holds) and nothing changes.
    fd = os.open(n.path("half.db"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data[:len(data) // 2])
        c = h.connect(n.path("half.db"), timeout=1)
        try:
            c.execute("CREATE TABLE x(a)")
            raise h.TestFailure("a SQLite write during a copy worked")
        except sqlite3.DatabaseError as e:
            log("SQLite write during a copy: %s" % e)
        finally:
            c.close()
        os.write(fd, data[len(data) // 2:])
    finally:
        os.close(fd)
    check(n.raw_pos("half.db") == (1, db_checksum(src)), "half.db: -pos "
          "%s after the copy" % (n.raw_pos("half.db"),))
    c = h.connect(n.path("half.db"))
    c.execute("CREATE TABLE x(a)")
    c.close()
    check(n.pos("half.db")[0] == 2, "half.db: TXID %d" % n.pos("half.db")[0])

    # A header whose page count is not valid (as SQLite before 3.7.0
    # left it): SQLite reads the file by its size, and its journal is
    # refused (EBUSY) until the copy's last close says it is complete.
    old = bytearray(data)
    old[92:96] = (int.from_bytes(old[24:28], "big") + 1).to_bytes(4, "big")
    legacy = os.path.join(srcdir, "legacy.db")
    with open(legacy, "wb") as f:
        f.write(old)
    fd = os.open(n.path("legacy.db"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, bytes(old))
        os.fsync(fd)
        check(n.raw_pos("legacy.db")[0] == 0, "recorded at an fsync while "
              "it could be incomplete")
        start = len(n.log_text())
        c = h.connect(n.path("legacy.db"), timeout=1)
        try:
            c.execute("CREATE TABLE x(a)")
            raise h.TestFailure("a SQLite write during a copy worked")
        except sqlite3.DatabaseError as e:
            log("SQLite write during a copy of an old header: %s" % e)
        finally:
            c.close()
        line = n.wait_log(r"db=legacy\.db: refusing[^\n]*EBUSY[^\n]*", 10,
                          start=start).group(0)
        log("log: %s" % line)
    finally:
        os.close(fd)
    check(n.raw_pos("legacy.db")[0] == 1, "legacy.db: -pos %s after the "
          "copy" % (n.raw_pos("legacy.db"),))
    check(file_bytes(n.path("legacy.db")) == bytes(old), "legacy.db bytes")
    c = h.connect(n.path("legacy.db"))
    c.execute("CREATE TABLE x(a)")
    c.close()
    check(n.pos("legacy.db")[0] == 2, "legacy.db: TXID %d"
          % n.pos("legacy.db")[0])
    h.integrity_ok(n.path("legacy.db"))


def refused_killed(n, srcdir):
    src = make_db(os.path.join(srcdir, "k.db"), 4096, 400 << 10, seed=13)
    data = file_bytes(src)
    for db, upto in (("killed-half.db", len(data) // 2),
                     ("killed-whole.db", len(data))):
        fd = os.open(n.path(db), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data[:upto])
        n.kill9(unmount=False)
        try:
            os.close(fd)
        except OSError:
            pass
        h.lazy_unmount(n.mnt)
        start = len(n.log_text())
        n.start()
        if upto < len(data):
            n.wait_log(r"db=%s: [^\n]*not a complete SQLite database"
                       % re.escape(db), 10, start=start)
            check(os.stat(n.path(db)).st_size == 0, "%s: %d bytes after "
                  "the restart" % (db, os.stat(n.path(db)).st_size))
            check(n.pos(db)[0] == 0, "%s recorded" % db)
        else:
            check(n.pos(db) == (1, db_checksum(src)), "%s: -pos %s after "
                  "the restart" % (db, n.pos(db)))
            h.integrity_ok(n.path(db))


def t_refused():
    with h.Node("copy-refused") as n:
        n.start()
        srcdir = os.path.join(n.root, "src")
        os.mkdir(srcdir)
        refused_incomplete(n, srcdir)
        refused_not_sqlite(n, srcdir)
        refused_over(n, srcdir)
        copy_over_persist_journal(n, srcdir)
        refused_writer_during_copy(n, srcdir)
        refused_killed(n, srcdir)
        n.stop()
        n.verify()


def t_page_size():
    """Item 4 of issue 10: a new database's page size was taken from a
    database of the same name that had been deleted (the delete record's
    page size, after a restart), so SQLite's second page was refused as
    'not aligned to the page size 4096' and the transaction failed with
    SQLITE_IOERR; and a VACUUM to a larger page size in a rollback-journal
    mode failed the same way."""
    iters, restart_every = 200, 20
    rng = random.Random(42)
    modes = ("DELETE", "TRUNCATE", "PERSIST")
    with h.Node("page-size", log_level="info") as n:
        n.start()
        # The case as reported: a database deleted, the daemon restarted,
        # the name created again with page size 1024.
        c = h.connect(n.path("aux0.db"))
        c.execute("CREATE TABLE t(x)")
        c.close()
        os.unlink(n.path("aux0.db"))
        n.stop()
        n.start()
        main = h.connect(n.path("main.db"))
        main.execute("CREATE TABLE IF NOT EXISTS m(x)")
        t0 = time.monotonic()
        prev = {"aux0.db": 4096}
        for i in range(iters):
            if i and i % restart_every == 0:
                main.close()
                n.stop()
                n.start()
                main = h.connect(n.path("main.db"))
            name = "aux%d.db" % (i % 3)
            ps = rng.choice([p for p in PAGE_SIZES + (2048, 16384, 32768)
                             if p != prev.get(name)]) if i else 1024
            mode = rng.choice(modes)
            what = "iteration %d: %s created with page size %d (%s)" % (
                i, name, ps, mode)
            try:
                main.execute("ATTACH ? AS aux", (n.path(name),))
                main.execute("PRAGMA aux.page_size=%d" % ps)
                main.execute("PRAGMA aux.journal_mode=%s" % mode)
                main.execute("CREATE TABLE aux.t(id INTEGER PRIMARY KEY, "
                             "v BLOB)")
                main.execute("INSERT INTO aux.t(v) VALUES (randomblob(?))",
                              (3 * ps,))
                main.execute("INSERT INTO aux.t(v) VALUES (randomblob(100))")
                got = h.one(main, "PRAGMA aux.page_size")
                check(got == ps, "%s: page size %s" % (what, got))
                if i % 2 == 0:
                    ps2 = rng.choice([p for p in PAGE_SIZES if p != ps])
                    main.execute("PRAGMA aux.page_size=%d" % ps2)
                    main.execute("VACUUM aux")
                    got = h.one(main, "PRAGMA aux.page_size")
                    check(got == ps2, "%s: VACUUM to page size %d gave %s"
                          % (what, ps2, got))
                    ps = ps2
                check(h.one(main, "SELECT count(*) FROM aux.t") == 2,
                      "%s: rows" % what)
                res = h.one(main, "PRAGMA aux.integrity_check")
                check(res == "ok", "%s: integrity_check %s" % (what, res))
                main.execute("DETACH aux")
            except sqlite3.Error as e:
                lines = [l for l in n.log_text().splitlines()
                         if "error" in l][-3:]
                raise h.TestFailure("%s: %s; log: %s" % (what, e, lines))
            prev[name] = ps
            check(n.pos(name)[0] >= 2, "%s: TXID %d" % (what,
                                                        n.pos(name)[0]))
            os.unlink(n.path(name))
        main.close()
        log("%d databases in %.1fs" % (iters, time.monotonic() - t0))
        n.stop()
        n.verify()


def t_cluster():
    """Databases copied in on the primary reach the replica as exactly
    one snapshot each, identical to the file copied; a refused copy never
    reaches it."""
    import cluster_harness as ch
    with ch.Cluster(2) as cl:
        p, r = cl.primary, cl.replicas[0]
        cl.start()
        srcdir = os.path.join(p.root, "src")
        os.mkdir(srcdir)
        specs = [("a.db", 4096, 400 << 10, "DELETE", "cp"),
                 ("b.db", 65536, 700 << 10, "DELETE", "dd-64K"),
                 ("c.db", 1024, 300 << 10, "WAL", "threads"),
                 ("d.db", 512, 200 << 10, "DELETE", "dd-1000")]
        srcs = {}
        for i, (db, ps, size, mode, tool) in enumerate(specs):
            srcs[db] = make_db(os.path.join(srcdir, db), ps, size, mode,
                               seed=20 + i)
            rc, out = copy_with(tool, srcs[db], p.path(db))
            check(rc == 0, "%s of %s: %s" % (tool, db, out))
        # A truncated copy: refused on the primary, nothing sent.
        cut = os.path.join(srcdir, "cut.db")
        with open(cut, "wb") as f:
            f.write(file_bytes(srcs["a.db"])[:200 << 10])
        rc, out = copy_with("cp", cut, p.path("cut.db"))
        check(rc != 0, "the truncated copy worked")
        wait_size(p, "cut.db", 0, "the truncated copy")
        for db, src in srcs.items():
            cl.wait_synced(db)
            check(r.pos(db) == (1, db_checksum(src)), "%s on the replica: "
                  "-pos %s" % (db, r.pos(db)))
            check(file_bytes(r.path(db)) == file_bytes(src), "%s on the "
                  "replica differs from the file copied" % db)
            recs = r.log_records_live(db)
            check(len(recs) == 1, "%s: %d records on the replica, want "
                  "one snapshot" % (db, len(recs)))
            check(h.content_digest(r.path(db), ro=True) ==
                  h.content_digest(src), "%s: rows on the replica" % db)
        check(not os.path.exists(r.path("cut.db")) or
              os.path.getsize(r.path("cut.db")) == 0,
              "the refused copy reached the replica")
        # Written to afterwards, as any database.
        c = h.connect(p.path("a.db"))
        c.execute("INSERT INTO t(v, s) VALUES (randomblob(5000), 'new')")
        c.close()
        cl.wait_synced("a.db")
        check(h.content_digest(r.path("a.db"), ro=True) ==
              h.content_digest(p.path("a.db")), "a.db after a write")
        rc, out = copy_with("cp", srcs["a.db"], p.path("cut.db"))
        check(rc == 0, "cp into the refused name: %s" % out)
        cl.wait_synced("cut.db")
        check(file_bytes(r.path("cut.db")) == file_bytes(srcs["a.db"]),
              "cut.db on the replica")
        cl.stop()
        p.verify()
        r.verify()


def median(xs):
    return sorted(xs)[len(xs) // 2]


def t_big():
    """A 200 MB database copied in with cp: timed against cp to a local
    directory (median of 3 each), recorded as one snapshot, and the
    daemon's peak memory stays far below the database's size."""
    import cluster_harness as ch
    size = int(os.environ.get("LTXFS_COPY_MB", "200")) << 20
    with ch.ClusterNode("big") as n:
        n.start()
        src = make_db(os.path.join(n.root, "big-src.db"), 4096, size)
        local = os.path.join(n.root, "local")
        os.mkdir(local)
        file_bytes(src)  # in the page cache for both
        hwm0 = n.vm_hwm_kib()
        t_local, t_mount = [], []
        for i in range(3):
            dst = os.path.join(local, "copy%d.db" % i)
            t0 = time.monotonic()
            rc, out = run_tool(["cp", src, dst])
            t_local.append(time.monotonic() - t0)
            check(rc == 0, "cp to a local directory: %s" % out)
            os.unlink(dst)
            db = "big%d.db" % i
            t0 = time.monotonic()
            rc, out = run_tool(["cp", src, n.path(db)])
            t_mount.append(time.monotonic() - t0)
            check(rc == 0, "cp into the mount: %s" % out)
            check(n.raw_pos(db) == (1, db_checksum(src)), "%s: -pos %s"
                  % (db, n.raw_pos(db)))
            check(len(n.log_records_live(db)) == 1, "%s: one record" % db)
        h.integrity_ok(n.path("big0.db"))
        hwm = n.vm_hwm_kib()
        mb = os.path.getsize(src) / 1e6
        log("cp of a %.0f MB database: local %.2fs, into the mount %.2fs "
            "(median of 3; %.0f MB/s, x%.1f); daemon VmHWM %d -> %d KiB"
            % (mb, median(t_local), median(t_mount),
               mb / median(t_mount), median(t_mount) / median(t_local),
               hwm0, hwm))
        check(hwm - hwm0 < 64 << 10, "the daemon's peak memory grew by %d "
              "KiB for a %.0f MB copy" % (hwm - hwm0, mb))
        n.stop()


TESTS = {"tools": t_tools, "refused": t_refused, "page-size": t_page_size,
         "cluster": t_cluster, "big": t_big}

if __name__ == "__main__":
    h.main(TESTS[sys.argv[1]])
