#!/usr/bin/env python3
"""`ltxfs export` and `ltxfs import` against a real two-node cluster
(static lease, bearer token, HTTP on 127.0.0.1):

  - export from the replica equals the primary's content (to a file with
    --url and $LTXFS_TOKEN, to stdout with -c), and a failed export leaves
    an existing OUT untouched;
  - import on the primary becomes its next transaction and replicates
    (into an existing database and into a new one);
  - import on the replica fails with HTTP 409 and the replica's reason,
    and changes nothing;
  - bad input gets its status: a bad database name 400, a body that is not
    a SQLite file 400, an unknown database 404, a wrong token 401, and no
    server at all a one-line connection error.
"""

import os
import re
import subprocess
import tempfile

import ltxfs_harness as H
from ltxfs_harness import check
from cluster_harness import ClusterNode, free_port

TOKEN = "xfer-test-token"
SYNC_TIMEOUT = 30.0


def ltxfs(args, env_token=None, stdout=None):
    env = dict(os.environ)
    env.pop("LTXFS_TOKEN", None)
    if env_token is not None:
        env["LTXFS_TOKEN"] = env_token
    return subprocess.run([H.ltxfs_bin()] + args, env=env, timeout=120,
                          stdout=stdout if stdout else subprocess.PIPE,
                          stderr=subprocess.PIPE)


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def expect_fail(r, status, words, what):
    """r failed with exit 1 and one stderr line naming status and words."""
    err = text(r.stderr).strip()
    check(r.returncode == 1, "%s: exit %d, expected 1; stderr: %s"
          % (what, r.returncode, err))
    check(len(err.splitlines()) == 1, "%s: expected one line on stderr, "
          "got %r" % (what, err))
    if status is not None:
        check("HTTP %d" % status in err, "%s: %r does not name HTTP %d"
              % (what, err, status))
    for w in words:
        check(w in err, "%s: %r does not say %r" % (what, err, w))


def wait_synced(primary, replica, db):
    """Waits until the replica's /info shows the primary's position of db,
    then checks its <db>-pos file agrees. (Polls /info, not <db>-pos: a
    lookup of a name that does not exist yet may be cached negatively.)"""
    want = primary.settled_pos(db)
    hexpos = ("%016x" % want[0], "%016x" % want[1])

    def same():
        for d in replica.info()["databases"]:
            if d["name"] == db and (d["txid"], d["checksum"]) == hexpos:
                return True
        return False
    H.wait_for(same, SYNC_TIMEOUT, "replica to reach %s at %016x" %
               (db, want[0]), interval=0.05)
    check(replica.pos(db) == want, "%s-pos on the replica: %r, /info and "
          "the primary say %r" % (db, replica.pos(db), want))
    return want


def make_db(path, rows, tag):
    if os.path.exists(path):
        os.unlink(path)
    c = H.connect(path)
    c.execute("CREATE TABLE imported(id INTEGER PRIMARY KEY, tag TEXT, "
              "v BLOB)")
    c.execute("BEGIN")
    for i in range(rows):
        c.execute("INSERT INTO imported(tag, v) VALUES (?, ?)",
                  (tag, os.urandom(100)))
    c.execute("COMMIT")
    c.close()


def test():
    work = tempfile.mkdtemp(prefix="ltxfs-it-xfer-")
    # start() waits for /healthz: the replica's /info is polled below.
    primary = ClusterNode("primary", token=TOKEN)
    replica = ClusterNode("replica", primary_url=primary.url, token=TOKEN)
    purl, rurl = primary.url, replica.url
    try:
        primary.start()
        replica.start()

        # Content on the primary: a rollback-journal and a WAL database.
        app = primary.path("app.db")
        c = H.connect(app)
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x TEXT)")
        for i in range(20):
            c.execute("INSERT INTO t(x) VALUES (?)", ("row %d" % i * 7,))
        c.close()
        c = H.connect(primary.path("wal.db"))
        check(H.one(c, "PRAGMA journal_mode=WAL") == "wal", "WAL mode")
        c.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, b BLOB)")
        for i in range(30):
            c.execute("INSERT INTO w(b) VALUES (?)", (os.urandom(3000),))
        c.close()
        wait_synced(primary, replica, "app.db")
        wait_synced(primary, replica, "wal.db")

        # 1. Export from the replica equals the primary's content.
        for db in ("app.db", "wal.db"):
            out = os.path.join(work, "export-" + db)
            r = ltxfs(["export", "--url", rurl, db, out], env_token=TOKEN)
            check(r.returncode == 0, "export %s from replica: exit %d: %s"
                  % (db, r.returncode, text(r.stderr)))
            check(re.search(r"\d+ bytes written to", text(r.stderr)),
                  "export message: %r" % text(r.stderr))
            check(not [f for f in os.listdir(work) if ".db." in f],
                  "export left a temporary file: %s" % os.listdir(work))
            H.integrity_ok(out)
            check(H.content_digest(out) == H.content_digest(
                primary.path(db)), "%s exported from the replica differs "
                "from the primary" % db)
        # ... to stdout, with the token and address from the config.
        out = os.path.join(work, "stdout.db")
        with open(out, "wb") as f:
            r = ltxfs(["export", "-c", replica.cfg, "app.db", "-"],
                      stdout=f)
        check(r.returncode == 0, "export to stdout: exit %d: %s"
              % (r.returncode, text(r.stderr)))
        check(H.content_digest(out) == H.content_digest(app),
              "export to stdout differs from the primary")
        exported_app = H.content_digest(out)

        # 2. Import on the primary: next transaction, replicates.
        src = os.path.join(work, "import-src.db")
        make_db(src, 500, "first")
        before = primary.pos("app.db")
        r = ltxfs(["import", "-c", primary.cfg, "app.db", src])
        check(r.returncode == 0, "import on primary: exit %d: %s"
              % (r.returncode, text(r.stderr)))
        after = primary.pos("app.db")
        check(after[0] == before[0] + 1, "import was not the next "
              "transaction: TXID %d -> %d" % (before[0], after[0]))
        check(("TXID %016x" % after[0]) in text(r.stdout),
              "import output %r does not name TXID %016x"
              % (text(r.stdout), after[0]))
        want = H.content_digest(src)
        check(H.content_digest(app) == want, "primary content after "
              "import differs from the imported file")
        wait_synced(primary, replica, "app.db")
        check(H.content_digest(replica.path("app.db"), ro=True) == want,
              "replica content after import differs from the file")
        # Into a database that does not exist yet, from stdin.
        src2 = os.path.join(work, "import-new.db")
        make_db(src2, 50, "new")
        with open(src2, "rb") as f:
            r = subprocess.run([H.ltxfs_bin(), "import", "--url", purl,
                                "fresh.db", "-"], stdin=f,
                               capture_output=True, timeout=120,
                               env=dict(os.environ, LTXFS_TOKEN=TOKEN))
        check(r.returncode == 0, "import of a new database from stdin: "
              "exit %d: %s" % (r.returncode, text(r.stderr)))
        wait_synced(primary, replica, "fresh.db")
        check(H.content_digest(replica.path("fresh.db"), ro=True) ==
              H.content_digest(src2), "fresh.db on the replica differs")

        # A WAL-mode file (the export of wal.db) into a new name.
        walsrc = os.path.join(work, "export-wal.db")
        with open(walsrc, "rb") as f:
            check(f.read(20)[18:20] == b"\x02\x02", "the export of wal.db "
                  "is not a WAL-mode file")
        r = ltxfs(["import", "-c", primary.cfg, "walcopy.db", walsrc])
        check(r.returncode == 0, "import of a WAL-mode file: exit %d: %s"
              % (r.returncode, text(r.stderr)))
        wait_synced(primary, replica, "walcopy.db")
        check(H.content_digest(replica.path("walcopy.db"), ro=True) ==
              H.content_digest(primary.path("wal.db")),
              "walcopy.db on the replica differs from wal.db")

        for n in (primary, replica):
            left = [f for f in os.listdir(n.data)
                    if f.startswith((".import", ".export"))]
            check(not left, "%s: export/import left %s in the data "
                  "directory" % (n.name, left))

        # 3. Import on the replica: 409, reason, nothing changes.
        rpos = replica.pos("app.db")
        r = ltxfs(["import", "-c", replica.cfg, "app.db", src2])
        expect_fail(r, 409, ["replica", "primary"], "import on replica")
        check(replica.pos("app.db") == rpos and primary.pos("app.db") ==
              after, "a refused import changed a position")

        # 4. Bad input.
        for name in (".hidden", "a/b", "app.db-wal", "x-journal",
                     "app.db-mj0A1B2C93D"):
            r = ltxfs(["export", "--url", purl, name, os.path.join(
                work, "bad.db")], env_token=TOKEN)
            expect_fail(r, 400, ["db must name"], "export %r" % name)
            r = ltxfs(["import", "--url", purl, name, src],
                      env_token=TOKEN)
            expect_fail(r, 400, ["db must name"], "import %r" % name)
        check(not os.path.exists(os.path.join(work, "bad.db")),
              "a failed export created OUT")
        keep = os.path.join(work, "keep.db")
        with open(keep, "wb") as f:
            f.write(b"keep me")
        r = ltxfs(["export", "--url", rurl, "nosuch.db", keep],
                  env_token=TOKEN)
        expect_fail(r, 404, ["no such database"], "export nosuch.db")
        with open(keep, "rb") as f:
            check(f.read() == b"keep me", "a failed export changed OUT")
        junk = os.path.join(work, "junk.bin")
        with open(junk, "wb") as f:
            f.write(os.urandom(4096))
        r = ltxfs(["import", "--url", purl, "app.db", junk],
                  env_token=TOKEN)
        expect_fail(r, 400, ["not a SQLite database"], "import of junk")
        r = ltxfs(["export", "--url", purl, "app.db", "-"],
                  env_token="wrong-token")
        expect_fail(r, 401, ["token"], "export with a wrong token")
        r = ltxfs(["import", "--url", purl, "app.db", src])
        expect_fail(r, 401, ["token"], "import without a token")
        check(primary.pos("app.db") == after, "a refused import changed "
              "the primary")
        dead = free_port()
        r = ltxfs(["export", "--url", "http://127.0.0.1:%d" % dead,
                   "app.db", os.path.join(work, "dead.db")],
                  env_token=TOKEN)
        expect_fail(r, None, ["127.0.0.1:%d" % dead], "export from no "
                    "server")
        r = ltxfs(["export", "app.db"])
        check(r.returncode == 2 and b"usage" in r.stderr,
              "export without OUT: exit %d" % r.returncode)
        r = ltxfs(["import", "-c", primary.cfg, "app.db",
                   os.path.join(work, "missing.db")])
        expect_fail(r, None, ["missing.db"], "import of a missing file")

        # The earlier export was a snapshot of the old content.
        check(exported_app != H.content_digest(app), "import changed "
              "nothing?")
        H.integrity_ok(app)
        replica.stop()
        primary.stop()
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    H.main(test)
