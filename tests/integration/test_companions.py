#!/usr/bin/env python3
"""A database's companion names follow it at once, on every node.

    test_companions.py [delete|wal]

A primary and a replica (cluster_harness, static lease). First y.db is
created on the primary, its -pos read (the kernel caches it as present)
and y.db deleted: its -pos must be gone at once. Then on both nodes
every name of x.db is looked up while the database does not exist (stat
and open: ENOENT), so the kernel has cached their absence, and:

  - x.db is created on the primary: its -pos must stat, open and read at
    once there (no wait), and on the replica as soon as it has applied
    the primary's records; the companions the mode leaves (-wal and -shm
    in WAL mode, none in DELETE mode) must stat exactly when the
    directory listing (never cached) shows them;
  - x.db is deleted on the primary (with its -wal and -shm): x.db and
    every companion must be gone at once there (stat and open ENOENT),
    and on the replica as soon as it has applied the deletion;
  - x.db is created again: everything is back, as in the first step.

"At once" is literal: one stat right after the operation, no retry. On
the replica "applied" is its ltxfs_records_applied_total reaching the
primary's TXID (ltxfs_db_txid), counted after each apply returns.
"""

import errno
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ltxfs_harness as h  # noqa: E402
from ltxfs_harness import check, wait_for  # noqa: E402
from cluster_harness import ClusterNode  # noqa: E402

DB = "x.db"
SUFFIXES = ("", "-journal", "-wal", "-shm", "-pos")
SYNC_TIMEOUT = 30


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def exists(node, name):
    """stat() of a name in node's mount: True, or False on ENOENT (any
    other error fails the test)."""
    try:
        os.stat(node.path(name))
        return True
    except OSError as e:
        check(e.errno == errno.ENOENT, "%s: stat %s: %s"
              % (node.name, name, e))
        return False


def check_absent(node, names, when):
    for n in names:
        check(not exists(node, n), "%s: %s: stat %s succeeds"
              % (node.name, when, n))
        try:
            os.close(os.open(node.path(n), os.O_RDONLY))
            opened = True
        except OSError as e:
            check(e.errno == errno.ENOENT, "%s: %s: open %s: %s"
                  % (node.name, when, n, e))
            opened = False
        check(not opened, "%s: %s: open %s succeeds" % (node.name, when, n))


def read_pos(node, when, db=DB):
    """-pos must stat, open and read at once; returns its TXID."""
    name = db + "-pos"
    check(exists(node, name), "%s: %s: stat %s fails with ENOENT (a "
          "stale cached absence)" % (node.name, when, name))
    with open(node.path(name)) as f:
        text = f.read()
    check(len(text) == 34 and text[16] == "/" and text.endswith("\n"),
          "%s: %s: %s reads %r" % (node.name, when, name, text))
    return int(text[:16], 16)


def create(p, mode, rows, db=DB):
    c = sqlite3.connect(p.path(db))
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("CREATE TABLE t(x)")
    for i in range(rows):
        c.execute("INSERT INTO t VALUES (?)", (i,))
        c.commit()
    c.close()


def delete(p, db=DB):
    for sfx in ("-wal", "-shm", ""):
        if os.path.exists(p.path(db + sfx)):
            os.unlink(p.path(db + sfx))


def check_matches_listing(node, when):
    """Every name of x.db stats exactly when the listing shows it."""
    ls = set(node.listing())
    for sfx in SUFFIXES:
        name = DB + sfx
        check(exists(node, name) == (name in ls), "%s: %s: %s is %s the "
              "listing (%s) but stat says it %s" % (
                  node.name, when, name,
                  "in" if name in ls else "not in", sorted(ls),
                  "exists" if name not in ls else "does not exist"))


def txid(node):
    """The primary's TXID for x.db, a deletion's too: the last record of
    its LTX log (fs/log.h; LTX header: max TXID at byte 24)."""
    if not os.path.isdir(os.path.join(node.data, "dbs", DB, "log")):
        return 0
    recs = node.log_records_live(DB)
    return int.from_bytes(recs[-1][24:32], "big") if recs else 0


def applied(r):
    return int(r.metric("ltxfs_records_applied_total", 0))


def wait_applied(p, r, before, when):
    """Waits until the replica has applied the primary's records up to
    its TXID now: ltxfs_records_applied_total is counted after each apply
    returns (which is after it invalidated what it changed), whereas the
    listing and -pos change a moment before that."""
    want = txid(p)
    need = before[1] + want - before[0]
    r.wait_metric("ltxfs_records_applied_total", lambda v: v >= need,
                  SYNC_TIMEOUT, "%s: %s: replica applied the primary's "
                  "records up to TXID %d" % (r.name, when, want))


def on_replica_created(p, r, mode, before, when):
    p.settle(DB)
    wait_applied(p, r, before, when)
    read_pos(r, when)
    check_matches_listing(r, when)
    check(DB in r.listing(), "%s: %s: x.db not listed" % (r.name, when))
    if mode == "WAL":
        for sfx in ("-wal", "-shm"):
            check(exists(r, DB + sfx), "%s: %s: %s%s does not stat on "
                  "the replica" % (r.name, when, DB, sfx))
    check(not exists(r, DB + "-journal"), "%s: %s: a -journal on the "
          "replica" % (r.name, when))


def run(mode):
    p = ClusterNode("primary")
    r = ClusterNode("replica", primary_url=p.url)
    p.start()
    r.start()
    wait_for(lambda: r.metrics().get("ltxfs_stream_connected") == 1, 30,
             "replica's stream connected", interval=0.05)
    # y.db's names are first looked up once it exists: its -pos is
    # cached as present, and must be gone at once when it is deleted.
    create(p, mode, 2, db="y.db")
    read_pos(p, "y.db created", db="y.db")
    # A read marks the atime stale; a stat now caches every attribute.
    check(exists(p, "y.db-pos"), "primary: y.db-pos vanished")
    delete(p, db="y.db")
    check_absent(p, ["y.db" + s for s in SUFFIXES], "y.db deleted")
    names = [DB + s for s in SUFFIXES]
    for n in (p, r):
        check_absent(n, names, "before x.db exists")
    for round_ in ("created", "created again"):
        before = (txid(p), applied(r))
        create(p, mode, 3 if round_ == "created" else 5)
        read_pos(p, round_)
        check_matches_listing(p, round_)
        on_replica_created(p, r, mode, before, round_)
        log("  %-14s -pos at once on the primary and on the replica"
            % round_)
        if round_ == "created again":
            break
        before = (txid(p), applied(r))
        delete(p)
        check_absent(p, names, "deleted")
        wait_applied(p, r, before, "deleted")
        check_absent(r, names, "deleted")
        check(DB not in r.listing(), "%s: x.db still listed" % r.name)
        log("  %-14s every name gone at once on both" % "deleted")
    r.stop()
    p.stop()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "delete"
    check(mode in ("delete", "wal"), "mode: delete or wal, not %r" % mode)
    log("companions/%s" % mode)
    run(mode.upper())


if __name__ == "__main__":
    h.main(main)
