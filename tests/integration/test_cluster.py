"""Replication across a cluster of real ltxfs nodes on 127.0.0.1 ports
(cluster_harness.py): node n0 is the primary (static lease), the others
replicas streaming from it over HTTP.

    test_cluster.py CASE

CASE is one of the names in CASES below (see each function's comment).
Every wait is a poll with a deadline; timings are printed.

How databases are compared. A replica is "identical" when, with the
writers done:
  - its <db>-pos equals the primary's (TXID and database checksum);
  - the database file, read through each mount, is byte-identical. In
    WAL mode the file alone is not the database: committed frames may
    still sit in the WAL, on the primary (SQLite's WAL) and on a replica
    (the WAL ltxfs writes for its local readers). So in WAL mode the
    primary is checkpointed first (PRAGMA wal_checkpoint(TRUNCATE): it
    writes no transaction, so the position stays) and we wait until the
    replica reports no WAL frame left to checkpoint
    (ltxfs_replica_wal_frames_pending 0); then both files hold every
    committed page and must be equal byte for byte;
  - the logical content (schema and every row, via SQLite on the
    replica's mount) is equal, and PRAGMA integrity_check is ok there.
"""

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, connect, one, wait_for
from cluster_harness import Cluster, ClusterNode, file_digest, http
from workload import check_models, create_db, run_writers

MODES = {"delete": "DELETE", "truncate": "TRUNCATE", "persist": "PERSIST",
         "wal": "WAL"}


def log(msg):
    sys.stdout.write("%s\n" % msg)
    sys.stdout.flush()


class Timer:
    def __init__(self):
        self.t0 = time.monotonic()
        self.last = self.t0

    def lap(self, what):
        now = time.monotonic()
        log("  %-44s %6.2fs (total %.2fs)" % (what, now - self.last,
                                              now - self.t0))
        self.last = now


ro_connect = h.ro_connect


def ro_integrity(path):
    h.integrity_ok(path, ro=True)


def ro_digest(path):
    """content_digest through a read-only connection (replicas)."""
    return h.content_digest(path, ro=True)


def wal_pending(node, db):
    return node.metrics().get(
        'ltxfs_replica_wal_frames_pending{db="%s"}' % db, 0)


def is_wal(path):
    with open(path, "rb") as f:
        hdr = f.read(20)
    return len(hdr) == 20 and hdr[18] == 2


def checkpoint_primary(cl, db):
    c = connect(cl.primary.path(db))
    try:
        r = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        c.close()
    check(r[0] == 0, "primary: wal_checkpoint(TRUNCATE) busy: %s" % (r,))


def check_identical(cl, db, nodes=None, timeout=60):
    """See the module comment. Returns the primary's position."""
    nodes = cl.replicas if nodes is None else nodes
    ppath = cl.primary.path(db)
    wal = is_wal(ppath)
    if wal:
        before = cl.primary.settled_pos(db)
        checkpoint_primary(cl, db)
        check(cl.primary.pos(db) == before, "a checkpoint changed the "
              "primary's position %s -> %s" % (before, cl.primary.pos(db)))
    cl.wait_synced(db, timeout=timeout, nodes=nodes)
    pos = cl.primary.pos(db)
    want = file_digest(ppath)
    want_content = h.content_digest(ppath)
    want_size = os.path.getsize(ppath)
    for r in nodes:
        rpath = r.path(db)
        if wal:
            wait_for(lambda: wal_pending(r, db) == 0, timeout,
                     "%s: %s's WAL checkpointed" % (r.name, db),
                     interval=0.05)
        got = file_digest(rpath)
        check(got == want, "%s: %s differs from the primary's (%d vs %d "
              "bytes) at %016x" % (r.name, db, os.path.getsize(rpath),
                                   want_size, pos[0]))
        check(file_digest(os.path.join(r.data, "dbs", db, "database")) ==
              want, "%s: data dir copy of %s differs from the mount's"
              % (r.name, db))
        ro_integrity(rpath)
        check(ro_digest(rpath) == ro_digest(ppath), "%s: %s content "
              "differs" % (r.name, db))
        check(r.pos(db) == pos, "%s: moved on while comparing" % r.name)
    check(want_content == h.content_digest(ppath), "primary changed")
    return pos


def simple_txns(path, n, start=0, blob=64, mode=None):
    """n small transactions on table t (created when missing)."""
    c = connect(path)
    try:
        if mode:
            got = one(c, "PRAGMA journal_mode=%s" % mode)
            check(got.lower() == mode.lower(), "journal_mode %s" % got)
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
                  "v BLOB)")
        for i in range(n):
            c.execute("INSERT INTO t(v) VALUES (randomblob(?))",
                      (blob + (start + i) % 97,))
    finally:
        c.close()


def start_synced(cl, db, n, mode=None):
    """Starts every node of cl, commits n transactions on db (simple_txns)
    and waits until the replicas are identical. Returns the first
    replica."""
    cl.start()
    simple_txns(cl.primary.path(db), n, mode=mode)
    check_identical(cl, db)
    return cl.replicas[0] if cl.replicas else None


def hold_reader(r, db):
    """A read-only connection to db on replica r inside a read
    transaction that has read table t; returns it and t's row count."""
    rc = ro_connect(r.path(db))
    rc.execute("BEGIN")
    return rc, one(rc, "SELECT count(*) FROM t")


# -- 1. identical ----------------------------------------------------------

def identical(mode):
    """3 nodes; three seeded concurrent writers on the primary (workload.py:
    inserts, updates, deletes, DDL, rollbacks, a VACUUM); every replica
    ends identical (see the module comment) and holds the writers'
    models; after a clean stop `ltxfs verify` passes on every node at
    that position."""
    jm = MODES[mode]
    t = Timer()
    with Cluster(3) as cl:
        cl.start()
        t.lap("start 3 nodes")
        db = "w.db"
        path = cl.primary.path(db)
        create_db(path, 4096, jm)
        res = run_writers(path, 4096, jm, seed=4000 + len(mode), workers=3,
                          txns=80, timeout=120)
        t.lap("workload: %d commits" % sum(r["commits"] for r in res))
        pos = check_identical(cl, db)
        t.lap("replicas identical at TXID %d" % pos[0])
        for r in cl.replicas:
            check_models(r.path(db), res)
            check(is_wal(r.path(db)) == (jm == "WAL"), "%s: journal mode "
                  "header byte" % r.name)
        t.lap("writers' models on the replicas")
        cl.stop()
        t.lap("clean stop")
        for n in cl.nodes:
            _, found, out = n.verify(db)
            check(found.get(db) == pos, "%s: ltxfs verify says %s, want "
                  "%s:\n%s" % (n.name, found.get(db), pos, out))
        t.lap("ltxfs verify on every node")


# -- 2. invariant ----------------------------------------------------------

ACCOUNTS = 100
BALANCE = 1000
MIN_TRANSFERS = 500


def reader_main(path, seconds, stop_file):
    """(child process) Checks sum(balance) in a tight loop on a replica;
    prints one JSON line."""
    c = ro_connect(path)
    deadline = time.monotonic() + float(seconds)
    reads = broken = errors = 0
    versions = set()
    last_v = -1
    first_err = None
    backwards = 0
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        try:
            c.execute("BEGIN")
            s, n = c.execute("SELECT sum(balance), count(*) FROM "
                             "accounts").fetchone()
            v = c.execute("SELECT n FROM version").fetchone()[0]
            c.execute("COMMIT")
        except sqlite3.Error as e:
            errors += 1
            if first_err is None:
                first_err = "%s (%s)" % (e, getattr(e, "sqlite_errorname",
                                                    "?"))
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            continue
        reads += 1
        if s != ACCOUNTS * BALANCE or n != ACCOUNTS:
            broken += 1
            if first_err is None:
                first_err = "sum %s count %s at version %s" % (s, n, v)
        if v < last_v:
            backwards += 1
        last_v = v
        versions.add(v)
    if os.path.exists(stop_file):
        # The stop file is written once the replica's -pos shows the last
        # transfer: a read transaction begun now must see it (the loop's
        # last read may have begun before).
        try:
            v = c.execute("SELECT n FROM version").fetchone()[0]
            if v < last_v:
                backwards += 1
            last_v = v
        except sqlite3.Error as e:
            errors += 1
            if first_err is None:
                first_err = "final read: %s" % e
    c.close()
    print(json.dumps({"reads": reads, "broken": broken, "errors": errors,
                      "versions": len(versions), "last": last_v,
                      "backwards": backwards, "first": first_err}))


def invariant(mode):
    """A reader process on a replica checks sum(balance) == constant in
    a tight loop while the primary runs up to 10,000 random transfers
    (for about LTXFS_INVARIANT_SECONDS; on a slow machine longer, until
    at least MIN_TRANSFERS are done, at most 60 s more)."""
    jm = MODES[mode]
    budget = float(os.environ.get("LTXFS_INVARIANT_SECONDS",
                                  "15" if asan() else "25"))
    t = Timer()
    with Cluster(2) as cl, h.Procs() as procs:
        cl.start()
        db = "bank.db"
        path = cl.primary.path(db)
        c = connect(path)
        check(one(c, "PRAGMA journal_mode=%s" % jm).lower() == jm.lower(),
              "journal mode")
        c.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, "
                  "balance INTEGER NOT NULL)")
        c.execute("CREATE TABLE version(n INTEGER)")
        c.execute("BEGIN")
        c.executemany("INSERT INTO accounts VALUES (?, ?)",
                      [(i, BALANCE) for i in range(ACCOUNTS)])
        c.execute("INSERT INTO version VALUES (0)")
        c.execute("COMMIT")
        cl.wait_synced(db)
        t.lap("setup")
        stop = os.path.join(cl.replicas[0].root, "stop-reader")
        rd = procs.spawn([sys.executable, os.path.abspath(__file__),
                          "_reader", cl.replicas[0].path(db),
                          str(budget + 120), stop],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        rng = random.Random(42)
        t_start = time.monotonic()
        deadline = t_start + budget
        hard_deadline = deadline + 60
        done = 0
        while done < 10000 and (time.monotonic() < deadline or
                                (done < MIN_TRANSFERS and
                                 time.monotonic() < hard_deadline)):
            a, b = rng.randrange(ACCOUNTS), rng.randrange(ACCOUNTS)
            amt = rng.randint(1, 50)
            try:
                c.execute("BEGIN IMMEDIATE")
                c.execute("UPDATE accounts SET balance = balance - ? "
                          "WHERE id = ?", (amt, a))
                c.execute("UPDATE accounts SET balance = balance + ? "
                          "WHERE id = ?", (amt, b))
                c.execute("UPDATE version SET n = n + 1")
                c.execute("COMMIT")
            except sqlite3.Error as e:
                raise TestFailure("transfer %d on the primary: %s (%s)"
                                  % (done + 1, e, getattr(
                                      e, "sqlite_errorname", "?")))
            done += 1
        c.close()
        t.lap("%d transfers on the primary" % done)
        check(done >= MIN_TRANSFERS, "only %d transfers in %.0fs"
              % (done, time.monotonic() - t_start))
        rp = cl.replicas[0].pos(db)[0]
        log("  replica behind by %d transactions when the writer ended"
            % (done - (rp - (cl.primary.pos(db)[0] - done))))
        cl.wait_synced(db)
        t.lap("replica synced")
        with open(stop, "w"):
            pass
        out, err = rd.communicate(timeout=60)
        check(rd.returncode == 0, "reader exited %d: %s"
              % (rd.returncode, err[-2000:]))
        r = json.loads(out.strip().splitlines()[-1])
        log("  reader: %s" % r)
        check(r["broken"] == 0, "the reader saw the invariant broken %d "
              "times: %s" % (r["broken"], r["first"]))
        check(r["errors"] == 0, "the reader got %d errors: %s"
              % (r["errors"], r["first"]))
        check(r["backwards"] == 0, "the reader saw the version go back")
        check(r["reads"] >= 100 and r["versions"] >= 10,
              "the reader saw too little: %d reads, %d versions"
              % (r["reads"], r["versions"]))
        check(r["last"] == done, "the reader's last version %d, want %d"
              % (r["last"], done))
        check_identical(cl, db)
        t.lap("identical")
        cl.stop()
        t.lap("clean stop")


# -- 3. joining and restarts -----------------------------------------------

def late_join():
    """A replica that starts after the primary has data, and after the
    primary's small retention has pruned the start of the log, catches up
    by a snapshot and ends identical. (Catching up by records is
    replica-restart's case.)"""
    t = Timer()
    with Cluster(2, primary_data_yml="  retention: 0s\n"
                 "  retention-bytes: 65536\n") as cl:
        cl.primary.start()
        db = "late.db"
        simple_txns(cl.primary.path(db), 300, blob=2000)
        t.lap("300 transactions before the replica")

        # Retention runs once a second; the replica must not start before
        # it has pruned, or it may fetch the whole log as records. (The
        # metric follows the unlinks; the segments are not read here
        # while the pruner removes them.)
        first = int(cl.primary.wait_metric(
            'ltxfs_log_first_txid{db="%s"}' % db, lambda v: v > 1, 30,
            "retention to prune late.db's log"))
        t.lap("log pruned to start at TXID %d" % first)
        r = cl.replicas[0]
        cl.start([r])
        check_identical(cl, db)
        t.lap("late replica identical")
        m = cl.primary.metrics()
        sent_snap = m.get("ltxfs_stream_snapshots_sent_total", 0)
        log("  primary log starts at TXID %s; snapshots sent %d, records "
            "sent %d" % (first, sent_snap,
                         m.get("ltxfs_stream_records_sent_total", 0)))
        check(sent_snap >= 1, "the log starts at %s but no snapshot was "
              "sent" % first)
        # Bumped just after the -pos file moves: waited for, not read once.
        r.wait_metric("ltxfs_snapshots_applied_total", lambda v: v >= 1, 10,
                      "%s: the snapshot counted as applied" % r.name)
        simple_txns(cl.primary.path(db), 20)
        check_identical(cl, db)
        t.lap("20 more, identical")
        cl.stop()


def seed_diverged(cl, r, db, n, blob):
    """Gives replica r (not started) a copy of db with n transactions of
    other content, made by a throwaway primary of the same cluster: at
    equal TXIDs its checksums differ from the primary's."""
    with open(os.path.join(cl.primary.data, "cluster.id")) as f:
        cid = f.read()
    other = ClusterNode("other")
    try:
        with open(os.path.join(other.data, "cluster.id"), "w") as f:
            f.write(cid)
        other.start()
        c = connect(other.path(db))
        c.execute("CREATE TABLE other(id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(n - 1):
            c.execute("INSERT INTO other(v) VALUES (randomblob(?))",
                      (blob,))
        c.close()
        check(other.pos(db)[0] == n, "other: TXID %d, want %d"
              % (other.pos(db)[0], n))
        other.stop()
        shutil.copytree(os.path.join(other.data, "dbs"),
                        os.path.join(r.data, "dbs"))
        with open(os.path.join(r.data, "cluster.id"), "w") as f:
            f.write(cid)
    finally:
        other.close()


def diverged():
    """A replica whose copy diverged from the primary's (same TXID, other
    checksum) is sent a snapshot, with a log line naming both positions,
    and ends identical; a replica ahead of the primary likewise."""
    t = Timer()
    with Cluster(3) as cl:
        cl.primary.start()
        db = "dv.db"
        simple_txns(cl.primary.path(db), 5)
        want = cl.primary.pos(db)
        check(want[0] == 6, "primary TXID %d" % want[0])
        r1, r2 = cl.replicas
        seed_diverged(cl, r1, db, 6, 300)
        seed_diverged(cl, r2, db, 9, 300)
        t.lap("primary at TXID 6; replicas seeded at 6 and 9")
        cl.start(cl.replicas)
        check_identical(cl, db)
        t.lap("both identical")
        line = cl.primary.wait_log(r"db=dv\.db: replica [0-9a-f]+ diverged.*",
                                   15).group(0)
        check(("%016x/" % 6) in line and ("%016x" % want[1]) in line,
              "the divergence line lacks the positions: %s" % line)
        cl.primary.wait_log(r"db=dv\.db: sending replica [0-9a-f]+ a "
                            r"snapshot .*: the replica is ahead", 15)
        check(cl.primary.metrics().get(
            "ltxfs_stream_snapshots_sent_total") == 2, "snapshots sent")
        for r in cl.replicas:
            n = r.wait_metric("ltxfs_snapshots_applied_total",
                              lambda v: v >= 1, 10,
                              "%s: the snapshot counted" % r.name)
            check(n == 1, "%s: %s snapshots applied, want 1" % (r.name, n))
        simple_txns(cl.primary.path(db), 10, start=5)
        check_identical(cl, db)
        t.lap("10 more as records, identical")
        cl.stop()


def replica_restart():
    """A replica stopped and restarted resumes from its own position (one
    rollback-mode and one WAL-mode database): the primary sends only the
    newer records (no snapshot)."""
    t = Timer()
    dbs = {"r.db": "DELETE", "rw.db": "WAL"}
    with Cluster(2) as cl:
        cl.start()
        for db, mode in dbs.items():
            simple_txns(cl.primary.path(db), 50, mode=mode)
            check_identical(cl, db)
        r = cl.replicas[0]
        t.lap("50 txns in each, identical")
        r.stop()
        before = sum(cl.primary.pos(db)[0] for db in dbs)
        for db in dbs:
            simple_txns(cl.primary.path(db), 40, start=50)
        t.lap("replica stopped; 40 more in each")
        mark = len(cl.primary.log_text())
        r.start()
        cl.wait_connected(r)
        for db in dbs:
            check_identical(cl, db)
        t.lap("replica restarted, identical")
        m = cl.primary.metrics()
        check(m.get("ltxfs_stream_snapshots_sent_total", -1) == 0,
              "the primary sent %s snapshots"
              % m.get("ltxfs_stream_snapshots_sent_total"))
        rm = r.metrics()
        newer = sum(cl.primary.pos(db)[0] for db in dbs) - before
        # The counter follows the -pos file: wait until it reaches newer,
        # then it must be exactly that.
        got = r.wait_metric("ltxfs_records_applied_total",
                            lambda v: v >= newer, 10, "%s: %d records "
                            "counted as applied" % (r.name, newer))
        check(got == newer, "the restarted replica applied %s records, "
              "want %d" % (got, newer))
        check(rm.get("ltxfs_snapshots_applied_total") == 0, "snapshot")
        text = cl.primary.log_text()[mark:]
        check(re.search(r"opened with 2 database positions", text),
              "the primary's log does not show the replica's positions")
        check("snapshot" not in text, "the primary's log mentions a "
              "snapshot:\n%s" % text)
        cl.stop()


def primary_restart():
    """The primary stops and starts again (same port, same data): the
    replicas reconnect and resume without a snapshot."""
    t = Timer()
    with Cluster(3) as cl:
        db = "p.db"
        start_synced(cl, db, 40, mode="WAL")
        t.lap("40 txns, identical")
        cl.primary.stop()
        t.lap("primary stopped")
        for r in cl.replicas:
            wait_for(lambda: r.metrics().get("ltxfs_stream_connected") == 0,
                     30, "%s: notices the primary is gone" % r.name)
        cl.primary.start()
        for r in cl.replicas:
            cl.wait_connected(r)
        t.lap("primary restarted, replicas reconnected")
        simple_txns(cl.primary.path(db), 40, start=40)
        check_identical(cl, db)
        t.lap("40 more, identical")
        for r in cl.replicas:
            m = r.metrics()
            check(m.get("ltxfs_stream_reconnects_total", 0) >= 1,
                  "%s: no reconnect counted" % r.name)
            check(m.get("ltxfs_snapshots_applied_total") == 0,
                  "%s: got a snapshot" % r.name)
        check(cl.primary.metrics().get(
            "ltxfs_stream_snapshots_sent_total") == 0, "snapshot sent")
        cl.stop()


# -- 4. bad input -----------------------------------------------------------

def corrupt_transit():
    """The primary flips a byte of the 5th record it sends
    (LTXFS_TEST_FLIP_RECORD): the replica rejects it, keeps its database
    intact, reconnects and ends identical."""
    t = Timer()
    with Cluster(2) as cl:
        os.environ["LTXFS_TEST_FLIP_RECORD"] = "5"
        try:
            cl.primary.start()
        finally:
            del os.environ["LTXFS_TEST_FLIP_RECORD"]
        cl.start(cl.replicas)
        db = "c.db"
        r = cl.replicas[0]
        path = cl.primary.path(db)
        simple_txns(path, 3, blob=3000)
        cl.wait_synced(db)
        t.lap("3 txns (4 records) synced")
        simple_txns(path, 20, start=3, blob=3000)
        cl.primary.wait_log(r"flipping byte \d+ of record 5", 30)
        r.wait_log(r"db=c\.db: .*record rejected|rejected a record", 30)
        ro_integrity(r.path(db))
        t.lap("the replica rejected record 5, its copy intact")
        check_identical(cl, db)
        t.lap("identical after the reconnect")
        m = r.metrics()
        check(m.get("ltxfs_apply_errors_total", 0) >= 1, "no apply error")
        check(m.get("ltxfs_stream_reconnects_total", 0) >= 1,
              "no reconnect")
        check(r.log_count(r"record rejected") >= 1, "no log line")
        cl.stop()


def flip_record(node, db):
    """Flips 4 bytes in the middle of a record in the middle of db's last
    LTX segment (the one checked at start; far from its tail, so it
    cannot pass for a torn append). The node must be stopped. Returns
    (segment file name, byte offset of the record)."""
    seg = node.segments(db)[-1]
    with open(seg, "rb") as f:
        buf = bytearray(f.read())
    recs, off = [], 0
    while off + 4 <= len(buf):
        n = int.from_bytes(buf[off:off + 4], "big")
        recs.append((off, n))
        off += 4 + n
    check(len(recs) >= 5, "only %d records in %s" % (len(recs), seg))
    roff, rlen = recs[len(recs) // 2]
    at = roff + 4 + rlen // 2
    for i in range(4):
        buf[at + i] ^= 0xFF
    with open(seg, "wb") as f:
        f.write(buf)
    log("  %s: flipped 4 bytes of record %d of %d in %s (record at byte "
        "%d)" % (node.name, len(recs) // 2 + 1, len(recs),
                 os.path.basename(seg), roff))
    return os.path.basename(seg), roff


def db_info(node, db):
    """db's entry in node's /info, or None."""
    for d in node.info()["databases"]:
        if d["name"] == db:
            return d
    return None


def oos_metric(node, db):
    return 'ltxfs_db_out_of_service{db="%s"}' % db


def expect_refused(path):
    """Opening path (a database out of service) fails with EBADMSG, and
    so does SQLite."""
    import errno
    h.expect_oserror(errno.EBADMSG, os.open, path, os.O_RDONLY)
    try:
        c = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            c.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            c.close()
        raise TestFailure("SQLite read %s, out of service" % path)
    except sqlite3.Error as e:
        log("  SQLite on %s: %s" % (os.path.basename(path), e))


def replica_corrupt_log():
    """A replica's LTX log of one database is corrupt (bytes flipped in a
    record in the middle of its last segment, found at start). That
    database alone is out of service (/info, /metrics, a log line naming
    segment, offset and rule); the others go on replicating, also while
    it cannot heal (a bind mount on its log directory makes moving the
    log aside fail); then it heals from the primary: the damaged log
    kept aside, position and content equal to the primary's. A second
    corrupt one (y.db, WAL mode) heals at once, at the primary's first
    record for it."""
    t = Timer()
    dbs = {"a.db": "DELETE", "b.db": "WAL", "x.db": "DELETE",
           "y.db": "WAL"}
    bad = "x.db"
    with Cluster(2) as cl:
        cl.start()
        for db, mode in dbs.items():
            simple_txns(cl.primary.path(db), 20, mode=mode)
            check_identical(cl, db)
        r = cl.replicas[0]
        t.lap("4 databases, 20 txns each, identical")
        r.stop()
        seg, roff = flip_record(r, bad)
        flip_record(r, "y.db")
        logdir = r.log_dir(bad)
        subprocess.run(["mount", "--bind", logdir, logdir], check=True,
                       timeout=30)
        try:
            mark = len(r.log_text())
            r.start()
            cl.wait_connected(r)
            t.lap("replica restarted with x.db's and y.db's logs corrupt")
            r.wait_log(r"db=y\.db: healing a damaged copy .*rule R1.*"
                       r"re-snapshotted", 30, start=mark)
            check_identical(cl, "y.db")
            t.lap("y.db healed at once, identical")
            # The others replicate while x.db cannot be healed.
            for i, db in enumerate(("a.db", "b.db", "y.db")):
                simple_txns(cl.primary.path(db), 10, start=20)
                check_identical(cl, db)
            t.lap("a.db, b.db, y.db: 10 more each, identical")
            d = wait_for(lambda: (lambda e: e if e and e.get("state") ==
                                  "out-of-service" else None)(
                                      db_info(r, bad)), 15,
                         "%s: /info says %s is out of service"
                         % (r.name, bad))
            log("  /info: %s" % json.dumps(d))
            check(seg in d.get("reason", "") and "R1" in d["reason"],
                  "/info reason lacks the segment or rule: %r" % d)
            check(r.metric(oos_metric(r, bad)) == 1, "metric: %s"
                  % r.metric(oos_metric(r, bad)))
            for db in ("a.db", "b.db", "y.db"):
                check(r.metric(oos_metric(r, db)) == 0, "%s: %s" % (
                    db, r.metric(oos_metric(r, db))))
            line = r.wait_log(r"db=x\.db: .*%s.*byte %d.*rule R1.*"
                              % (re.escape(seg), roff), 10,
                              start=mark).group(0)
            log("  log: %s" % line)
            expect_refused(r.path(bad))
            m = r.metrics()
            check(m.get("ltxfs_apply_errors_total", 0) == 0,
                  "apply errors: %s" % m.get("ltxfs_apply_errors_total"))
        finally:
            subprocess.run(["umount", logdir], timeout=30)
        t.lap("out of service, reported; the others replicated")
        # x.db heals at the primary's next record for it.
        simple_txns(cl.primary.path(bad), 5, start=20)
        line = r.wait_log(r"db=x\.db: healing a damaged copy.*re-snapshotted.*",
                          30, start=mark).group(0)
        log("  log: %s" % line)
        check_identical(cl, bad)
        r.wait_metric(oos_metric(r, bad), lambda v: v == 0, 10)
        check(db_info(r, bad).get("state", "ok") != "out-of-service",
              "still out of service: %r" % db_info(r, bad))
        aside = [f for f in os.listdir(os.path.join(r.data, "dbs", bad))
                 if f.startswith("log.damaged-")]
        check(len(aside) == 1, "damaged log kept aside: %s" % aside)
        check(seg in os.listdir(os.path.join(r.data, "dbs", bad,
                                             aside[0])),
              "%s lacks %s" % (aside[0], seg))
        t.lap("healed from the primary; damaged log in %s" % aside[0])
        for db in dbs:
            simple_txns(cl.primary.path(db), 5, start=40)
            check_identical(cl, db)
        t.lap("5 more in each, identical")
        cl.stop()


def run_repair(node, db):
    """`ltxfs repair -c CFG DB`: (exit code, output)."""
    p = subprocess.run([h.ltxfs_bin(), "repair", "-c", node.cfg, db],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


WAL_LEFTOVER = r"""
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA wal_autocheckpoint=0")
for i in range(int(sys.argv[2])):
    c.execute("INSERT INTO t(v) VALUES (randomblob(3000))")
os._exit(0)  # no close: no checkpoint, the frames stay in the WAL
"""


def primary_corrupt_log():
    """The primary's LTX log of one database (WAL mode, its last
    transactions still in the WAL) is corrupt: that database alone is
    out of service there (opening it fails with EBADMSG; /info, /metrics
    and a log line that says to run `ltxfs repair`), the others are
    written and replicate, the replica keeps its copy. `ltxfs repair`
    refuses while the node runs and for an intact log, then gives it a
    new log from the database file (WAL included); the primary serves it
    at a higher TXID with the same content and the replica converges by
    a snapshot."""
    t = Timer()
    dbs = {"a.db": "DELETE", "b.db": "WAL", "x.db": "WAL"}
    bad = "x.db"
    with Cluster(2) as cl:
        cl.start()
        p, r = cl.primary, cl.replicas[0]
        for db, mode in dbs.items():
            simple_txns(p.path(db), 20, mode=mode)
            check_identical(cl, db)
        subprocess.run([sys.executable, "-c", WAL_LEFTOVER, p.path(bad),
                        "5"], check=True, timeout=60)
        pos = p.settled_pos(bad)
        cl.wait_synced(bad)
        want = ro_digest(p.path(bad))
        check(os.path.getsize(os.path.join(p.data, "dbs", bad, "wal")) > 0,
              "no transactions left in %s's WAL" % bad)
        t.lap("3 databases identical; x.db's last 5 in its WAL")
        p.stop()
        seg, roff = flip_record(p, bad)
        mark = len(p.log_text())
        p.start()
        cl.wait_connected(r)
        d = db_info(p, bad)
        log("  /info: %s" % json.dumps(d))
        check(d and d.get("state") == "out-of-service" and
              seg in d.get("reason", "") and "R1" in d["reason"],
              "/info: %r" % d)
        check(p.metric(oos_metric(p, bad)) == 1, "metric %s"
              % p.metric(oos_metric(p, bad)))
        line = p.wait_log(r"db=x\.db: out of service on this primary: .*"
                          r"%s.*byte %d.*rule R1.*ltxfs repair.*"
                          % (re.escape(seg), roff), 10, start=mark).group(0)
        log("  log: %s" % line)
        expect_refused(p.path(bad))
        import errno
        h.expect_oserror(errno.EBADMSG, os.open, p.path(bad),
                         os.O_RDWR | os.O_CREAT, 0o644)
        check(r.pos(bad) == pos and ro_digest(r.path(bad)) == want,
              "the replica's copy of %s changed" % bad)
        for db in ("a.db", "b.db"):
            simple_txns(p.path(db), 10, start=20)
            check_identical(cl, db)
        t.lap("out of service on the primary; a.db, b.db written, identical")
        rc, out = run_repair(p, bad)
        check(rc == 1 and re.search(r"data directory .* is in use by ltxfs "
                                    r"PID %d" % p.pid(), out),
              "repair while running: "
              "exit %d: %s" % (rc, out))
        p.stop()
        rc, out = run_repair(p, "a.db")
        check(rc == 1 and "not damaged" in out, "repair of an intact log: "
              "exit %d: %s" % (rc, out))
        rc, out = run_repair(p, bad)
        log("  ltxfs repair %s: exit %d\n    %s"
            % (bad, rc, out.strip().replace("\n", "\n    ")))
        check(rc == 0, "repair failed")
        dd = os.path.join(p.data, "dbs", bad)
        aside = [f for f in os.listdir(dd) if f.startswith("log.damaged-")]
        check(len(aside) == 1 and seg in os.listdir(os.path.join(dd,
                                                                 aside[0])),
              "damaged log kept aside: %s" % aside)
        check(not os.path.exists(os.path.join(dd, "wal")), "WAL left")
        t.lap("repair refused twice, then done")
        p.start()
        cl.wait_connected(r)
        now = p.settled_pos(bad)
        check(now[0] == pos[0] + 1, "repaired at TXID %d, want %d"
              % (now[0], pos[0] + 1))
        check(ro_digest(p.path(bad)) == want, "content changed")
        h.integrity_ok(p.path(bad))
        check(p.metric(oos_metric(p, bad)) == 0, "still out of service")
        check_identical(cl, bad)
        check(p.metric("ltxfs_stream_snapshots_sent_total", 0) >= 1,
              "no snapshot sent")
        t.lap("served again at TXID %d; the replica identical" % now[0])
        for db in dbs:
            simple_txns(p.path(db), 5, start=40)
            check_identical(cl, db)
        t.lap("5 more in each, identical")
        cl.stop()
        p.verify()


def primary_corrupt_db():
    """The primary's LTX log of a database is damaged and so is its file
    (a page overwritten): `ltxfs repair` refuses (PRAGMA integrity_check),
    and the procedure of docs/STORAGE.md takes the replica's copy
    instead: export from the replica, the database's directory moved out
    of the primary's data directory, import on the primary; the replica
    converges (a snapshot) and replication goes on."""
    t = Timer()
    with Cluster(2) as cl:
        db = "x.db"
        r = start_synced(cl, db, 20, mode="DELETE")
        p = cl.primary
        want = ro_digest(r.path(db))
        p.stop()
        flip_record(p, db)
        with open(os.path.join(p.data, "dbs", db, "database"), "r+b") as f:
            f.seek(4096)
            f.write(bytes(range(256)) * 16)
        rc, out = run_repair(p, db)
        log("  ltxfs repair: exit %d: %s" % (rc, out.strip().splitlines()[-1]))
        check(rc == 1 and "integrity_check" in out, "repair of a damaged "
              "file: exit %d: %s" % (rc, out))
        t.lap("log and file damaged; repair refused")
        copy = os.path.join(p.root, "copy.db")
        e = subprocess.run([h.ltxfs_bin(), "export", "--url", r.url, db,
                            copy], capture_output=True, text=True,
                           timeout=60)
        check(e.returncode == 0, "export: %s%s" % (e.stdout, e.stderr))
        shutil.move(os.path.join(p.data, "dbs", db),
                    os.path.join(p.root, "damaged-" + db))
        p.start()
        cl.wait_connected(r)
        i = subprocess.run([h.ltxfs_bin(), "import", "-c", p.cfg, db, copy],
                           capture_output=True, text=True, timeout=60)
        check(i.returncode == 0, "import: %s%s" % (i.stdout, i.stderr))
        check(ro_digest(p.path(db)) == want, "the primary's content is not "
              "the replica's copy")
        check_identical(cl, db)
        t.lap("the replica's copy exported, imported, identical")
        simple_txns(p.path(db), 5, start=20)
        check_identical(cl, db)
        t.lap("5 more, identical")
        cl.stop()


def primary_corrupt_old_segment():
    """A record in an older segment of the primary's log (start-up checks
    only the last segment) is corrupt, and a replica that was stopped
    needs it: the primary finds it when it reads the record to send
    (logged with segment, offset and rule) and sends a snapshot instead;
    the replica converges and the other database replicates."""
    t = Timer()
    with Cluster(2, primary_data_yml="  retention-bytes: 4194304\n") as cl:
        db, other = "x.db", "a.db"
        p = cl.primary
        r = start_synced(cl, db, 5, mode="DELETE")
        simple_txns(p.path(other), 5)
        check_identical(cl, other)
        r.stop()
        simple_txns(p.path(db), 60, start=5, blob=20000)
        check(len(p.segments(db)) >= 2, "one segment: %s"
              % p.segments(db))
        t.lap("replica stopped; 60 more in %s, %d segments"
              % (db, len(p.segments(db))))
        p.stop()
        seg = p.segments(db)[0]
        with open(seg, "rb") as f:
            buf = bytearray(f.read())
        recs, off = [], 0
        while off + 4 <= len(buf):
            n = int.from_bytes(buf[off:off + 4], "big")
            recs.append((off, n))
            off += 4 + n
        roff, rlen = recs[len(recs) // 2]
        check(len(recs) > 10, "only %d records in %s" % (len(recs), seg))
        for i in range(4):
            buf[roff + 4 + rlen // 2 + i] ^= 0xFF
        with open(seg, "wb") as f:
            f.write(buf)
        log("  flipped 4 bytes of record %d of %d in %s (byte %d)"
            % (len(recs) // 2 + 1, len(recs), os.path.basename(seg), roff))
        mark = len(p.log_text())
        p.start()
        cl.start([r])
        check_identical(cl, db)
        line = p.wait_log(r"db=x\.db: .*%s.*byte %d.*rule R1.*" % (
            re.escape(os.path.basename(seg)), roff), 10,
            start=mark).group(0)
        log("  log: %s" % line)
        check(p.metric("ltxfs_stream_snapshots_sent_total", 0) >= 1,
              "no snapshot sent")
        check(r.metric("ltxfs_apply_errors_total", 0) == 0,
              "the replica rejected records")
        t.lap("the replica got a snapshot, identical")
        simple_txns(p.path(other), 5, start=5)
        simple_txns(p.path(db), 5, start=65)
        check_identical(cl, other)
        check_identical(cl, db)
        t.lap("5 more in each, identical")
        cl.stop()


TOKEN = "t0ken-for-tests"


def bad_token():
    """With http.token set: requests without or with a wrong token get 401
    and a log line naming the peer; /healthz needs none; a replica with
    a wrong token is refused, the right one replicates."""
    t = Timer()
    with Cluster(2, token=TOKEN) as cl:
        db = "tok.db"
        start_synced(cl, db, 5)
        t.lap("replication with the token")
        p = cl.primary
        for path in ("/info", "/metrics", "/stream?node=0000000000000001",
                     "/export?db=tok.db"):
            for tok in ("", "wrong"):
                mark = len(p.log_text())
                st, body = http(p.url + path,
                                token=tok if tok else None)
                check(st == 401, "%s with token %r: %d %r"
                      % (path, tok, st, body))
                check(b"token" in body, "401 body says nothing: %r" % body)
                p.wait_log(r"refused GET %s from 127\.0\.0\.1:\d+"
                           % re.escape(path.split("?")[0]), 5,
                           start=mark)
        st, body = http(p.url + "/healthz")
        check(st == 200, "/healthz without a token: %d" % st)
        st, _ = http(p.url + "/info", token=TOKEN)
        check(st == 200, "/info with the token: %d" % st)
        t.lap("401s and log lines")
        bad = cl.add_replica(token="not-the-token", name="bad")
        bad.start()
        bad.wait_log(r"answered 401", 30)
        check(bad.pos_or_none(db) is None, "the refused replica has data")
        check(p.metrics().get("ltxfs_http_unauthorized_total", 0) >= 9,
              "unauthorized counter")
        t.lap("replica with a wrong token refused")
        cl.stop()


def other_cluster():
    """A replica whose data directory belongs to another cluster is refused,
    with a message naming both cluster IDs, and gets nothing."""
    t = Timer()
    with Cluster(2) as cl:
        db = "oc.db"
        start_synced(cl, db, 5)
        with open(os.path.join(cl.primary.data, "cluster.id")) as f:
            mine = f.read().strip()
        other = "%016x" % (int(mine, 16) ^ 0x5a5a5a5a00000001)
        stranger = cl.add_replica(name="stranger")
        with open(os.path.join(stranger.data, "cluster.id"), "w") as f:
            f.write(other + "\n")
        stranger.start()
        line = stranger.wait_log(r"ended: .*%s.*" % other, 30).group(0)
        check(mine in line and other in line, "the replica's message "
              "does not name both IDs: %s" % line)
        pl = cl.primary.wait_log(r"refusing stream .*", 30).group(0)
        check(mine in pl and other in pl, "the primary's message does not "
              "name both IDs: %s" % pl)
        check(stranger.pos_or_none(db) is None, "the stranger got data")
        with open(os.path.join(stranger.data, "cluster.id")) as f:
            check(f.read().strip() == other, "cluster.id was changed")
        t.lap("refused, both IDs named")
        cl.stop()


def bad_stream():
    """Malformed /stream (and other) requests get 400 with a reason; the
    primary keeps serving."""
    t = Timer()
    with Cluster(2) as cl:
        cl.start()
        p = cl.primary
        node = "&node=00000000000000aa"
        cases = [
            ("/stream", "node"),
            ("/stream?node=xyz", "node must be 16 hex"),
            ("/stream?node=00000000000000aa&cluster=12", "cluster must"),
            ("/stream?db=a.db:1" + node, "db must be"),
            ("/stream?db=a.db:zzzzzzzzzzzzzzzz/0000000000000000" + node,
             "db must be"),
            ("/stream?db=.hidden:0000000000000001/0000000000000000" + node,
             "db must be"),
            ("/stream?bogus=1" + node, "unknown parameter"),
            ("/export", "db must"),
            ("/export?db=../x", "db must"),
        ]
        for path, reason in cases:
            st, body = http(p.url + path)
            check(st == 400, "%s: %d %r, want 400" % (path, st, body))
            check(reason.encode() in body, "%s: reason %r lacks %r"
                  % (path, body, reason))
        st, body = http(p.url + "/stream?node=00000000000000aa",
                        method="POST", data=b"x")
        check(st == 405, "POST /stream: %d" % st)
        st, body = http(p.url + "/nothing")
        check(st == 404, "/nothing: %d" % st)
        t.lap("%d malformed requests answered" % (len(cases) + 2))
        db = "bs.db"
        simple_txns(p.path(db), 5)
        check_identical(cl, db)
        t.lap("still replicating")
        cl.stop()


def replica_write():
    """A write on a replica fails (SQLite: readonly) and the replica's log
    has a line naming the primary."""
    t = Timer()
    with Cluster(2) as cl:
        db = "rw.db"
        r = start_synced(cl, db, 3)
        mark = len(r.log_text())
        c = connect(r.path(db))
        try:
            c.execute("INSERT INTO t(v) VALUES (1)")
            raise TestFailure("an INSERT on the replica succeeded")
        except sqlite3.OperationalError as e:
            check("readonly" in str(e), "INSERT on the replica: %s" % e)
            log("  sqlite3 on the replica: %s" % e)
        finally:
            c.close()
        line = r.wait_log(r".*refused.*", 15, start=mark).group(0)
        check(cl.primary.url in line or "n0" in line, "the log line does "
              "not name the primary: %s" % line)
        log("  replica log: %s" % line.strip())
        h.expect_oserror((30, 13), os.open, r.path(db), os.O_WRONLY)
        h.expect_oserror((30, 13), os.open, r.path("new.db"),
                         os.O_CREAT | os.O_WRONLY)
        with open(r.path(".primary")) as f:
            txt = f.read()
        check(cl.primary.url in txt or "n0" in txt, ".primary: %r" % txt)
        check_identical(cl, db)
        t.lap("refused with a log line")
        cl.stop()


# -- 5. create and delete ---------------------------------------------------

def create_delete():
    """Databases created on the primary appear on the replicas; deleted
    ones disappear; a name created again replicates again."""
    t = Timer()
    with Cluster(3) as cl:
        cl.start()
        names = ["a.db", "b.db", "c.db"]
        for i, n in enumerate(names):
            simple_txns(cl.primary.path(n), 5 + i,
                        mode="WAL" if n == "b.db" else "DELETE")
        for n in names:
            check_identical(cl, n)
        t.lap("3 databases created and replicated")
        # Open connections on a replica (out of any transaction) must not
        # hold the deletion back: a WAL-mode connection keeps SQLite's
        # SHARED lock for as long as it is open.
        held = [ro_connect(cl.replicas[0].path(n)) for n in ("a.db", "b.db")]
        for c in held:
            check(one(c, "SELECT count(*) FROM t") > 0, "no rows")
        for n in ("a.db", "b.db"):
            for suffix in ("-wal", "-shm", ""):
                if os.path.exists(cl.primary.path(n + suffix)):
                    os.unlink(cl.primary.path(n + suffix))
        for r in cl.replicas:
            wait_for(lambda: not ({"a.db", "b.db"} & set(r.listing())),
                     30, "%s: deleted databases gone (listing %s)"
                     % (r.name, r.listing()), interval=0.05)
            check("c.db" in r.listing(), "%s: c.db gone" % r.name)
        for c in held:
            c.close()
        t.lap("2 deleted (connections open), gone on the replicas")
        simple_txns(cl.primary.path("a.db"), 4, mode="DELETE")
        check_identical(cl, "a.db")
        check_identical(cl, "c.db")
        t.lap("a.db created again, replicated")
        cl.stop()


# -- 6. big transaction -----------------------------------------------------

RSS_LIMIT_MIB = 100


def rss_limit_mib():
    """RSS_LIMIT_MIB; in an ASan build its freed-memory quarantine (256 MiB
    by default) is cut to 4 MiB for the daemons started after this call,
    and 50 MiB are allowed for its shadow memory and allocator."""
    if not asan():
        return RSS_LIMIT_MIB
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in opts:
        os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + \
            "quarantine_size_mb=4"
    return RSS_LIMIT_MIB + 50


def asan():
    try:
        with open(os.environ["LTXFS_BIN"], "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def big_txn():
    """One 100 MB transaction (incompressible blobs) replicates; peak RSS
    (VmHWM) of the primary and the replica stays under RSS_LIMIT_MIB (plus
    ASan's own overhead in a sanitizer build)."""
    t = Timer()
    limit = rss_limit_mib()
    with Cluster(2) as cl:
        cl.start()
        db = "big.db"
        c = connect(cl.primary.path(db))
        c.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
        c.execute("BEGIN")
        for i in range(100):
            c.execute("INSERT INTO b(v) VALUES (randomblob(1000000))")
        c.execute("COMMIT")
        c.close()
        t.lap("100 MB transaction on the primary")
        check_identical(cl, db, timeout=120)
        t.lap("replicated, identical")
        rss = {n.name: n.vm_hwm_kib() // 1024 for n in cl.nodes}
        log("  peak RSS (VmHWM): primary %d MiB, replica %d MiB (limit "
            "%d MiB%s)" % (rss["n0"], rss["n1"], limit,
                           ", ASan" if asan() else ""))
        for n, v in rss.items():
            check(v < limit, "%s: peak RSS %d MiB >= %d MiB" % (n, v, limit))
        cl.stop()


def snapshot_1g():
    """(slow) A 1 GiB database reaches a replica as a snapshot (its copy
    diverged at TXID 1, see seed_diverged); peak RSS of both daemons stays
    bounded."""
    t = Timer()
    limit = rss_limit_mib()
    with Cluster(2) as cl:
        cl.primary.start()
        db = "huge.db"
        c = connect(cl.primary.path(db))
        c.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
        for k in range(16):
            c.execute("BEGIN")
            for i in range(64):
                c.execute("INSERT INTO b(v) VALUES (randomblob(1048000))")
            c.execute("COMMIT")
        c.close()
        size = os.path.getsize(cl.primary.path(db))
        check(size > 1 << 30, "only %d bytes" % size)
        t.lap("%.2f GiB on the primary" % (size / (1 << 30)))
        r = cl.replicas[0]
        seed_diverged(cl, r, db, 1, 100)
        cl.start([r])
        check_identical(cl, db, timeout=600)
        t.lap("replica identical (snapshot)")
        check(r.metrics().get("ltxfs_snapshots_applied_total") == 1,
              "no snapshot applied")
        rss = {n.name: n.vm_hwm_kib() // 1024 for n in cl.nodes}
        log("  peak RSS (VmHWM): primary %d MiB, replica %d MiB (limit %d)"
            % (rss["n0"], rss["n1"], limit))
        for n, v in rss.items():
            check(v < limit, "%s: peak RSS %d MiB >= %d MiB" % (n, v, limit))
        cl.stop()


# -- 7. WAL with a long reader ----------------------------------------------

def wal_long_reader():
    """A reader on a WAL replica holds a read transaction while the primary
    commits 200 transactions: it keeps its snapshot, replication goes on
    (the -pos advances), and once it ends the WAL is checkpointed and the
    replica identical."""
    t = Timer()
    with Cluster(2) as cl:
        db = "lr.db"
        r = start_synced(cl, db, 10, mode="WAL")
        rc, n0 = hold_reader(r, db)
        d0 = one(rc, "SELECT sum(length(v)) FROM t")
        pos0 = r.pos(db)
        t.lap("reader holds a snapshot at %d rows" % n0)
        simple_txns(cl.primary.path(db), 200, start=10, mode="WAL")
        t.lap("200 commits on the primary")
        cl.wait_synced(db)
        check(r.pos(db)[0] == pos0[0] + 200, "pos did not advance by 200")
        check(one(rc, "SELECT count(*) FROM t") == n0 and
              one(rc, "SELECT sum(length(v)) FROM t") == d0,
              "the reader's snapshot changed")
        pend = wal_pending(r, db)
        log("  WAL frames pending while the reader holds: %d" % pend)
        check(pend > 0, "no frames held back by the reader")
        t.lap("replica synced, reader's snapshot unchanged")
        rc.execute("COMMIT")
        check(one(rc, "SELECT count(*) FROM t") == n0 + 200,
              "the reader does not see the new rows after its txn")
        rc.close()
        # Nothing else commits: the replica checkpoints by itself once
        # the reader is gone (at its next idle heartbeat).
        wait_for(lambda: wal_pending(r, db) == 0, 30,
                 "%s: WAL checkpointed after the reader ended" % r.name,
                 interval=0.05)
        t.lap("checkpointed with no further commit")
        check_identical(cl, db)
        ro_integrity(r.path(db))
        t.lap("checkpointed and identical")
        cl.stop()


def replica_kill9():
    """kill -9 of a WAL replica while a local reader holds a read
    transaction and the replica's -shm mapping has just been written: the
    daemon exits by itself (its exit watchdog frees a hung exit; the
    harness fails the test otherwise), and once restarted it resumes and
    ends identical."""
    t = Timer()
    with Cluster(2) as cl:
        db = "k9.db"
        r = start_synced(cl, db, 10, mode="WAL")
        p = cl.primary.path(db)
        for rnd in range(3):
            rc = ro_connect(r.path(db))
            rc.execute("BEGIN")
            one(rc, "SELECT count(*) FROM t")
            simple_txns(p, 30, start=10 + 30 * rnd, mode="WAL")
            cl.wait_synced(db)
            t0 = time.monotonic()
            r.kill9()
            log("  round %d: exited %.2fs after SIGKILL" %
                (rnd, time.monotonic() - t0))
            try:
                rc.close()
            except sqlite3.Error:
                pass
            r.start()
            check_identical(cl, db)
            ro_integrity(r.path(db))
            t.lap("round %d: restarted and identical" % rnd)
        stuck = r.log_text().count("ltxfs watchdog:")
        log("  exits the watchdog had to free: %d of 3" % stuck)
        cl.stop()


def own_mappings(pid, mnt):
    """Lines of /proc/PID/maps that map a file of the mount at mnt (by
    its path or by the mount's device number)."""
    st = os.stat(mnt)
    dev = "%02x:%02x" % (os.major(st.st_dev), os.minor(st.st_dev))
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
            if path.startswith(mnt + "/") or (parts[3] == dev and
                                              parts[4] != "0"):
                out.append(line.strip())
    return out


def shm_bytes(path):
    """A -shm's content without what readers write (aReadMark[1..4]) and
    the lock bytes (120..127)."""
    with open(path, "rb") as f:
        b = bytearray(f.read())
    b[104:128] = bytes(24)
    return bytes(b)


def spin_reader_main(path, stop_file):
    """(child process) Read transactions on table t in a loop until
    stop_file exists; each must see a row count no smaller than the one
    before. Prints one JSON line."""
    c = ro_connect(path)
    reads = errors = backwards = 0
    last = -1
    first_err = None
    deadline = time.monotonic() + 300
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        try:
            c.execute("BEGIN")
            n = one(c, "SELECT count(*) FROM t")
            m = one(c, "SELECT max(id) FROM t")
            c.execute("COMMIT")
        except sqlite3.Error as e:
            errors += 1
            if first_err is None:
                first_err = str(e)
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            continue
        reads += 1
        if n < last or n != m:
            backwards += 1
            if first_err is None:
                first_err = "count %d after %d (max id %s)" % (n, last, m)
        last = n
    c.close()
    print(json.dumps({"reads": reads, "errors": errors, "last": last,
                      "backwards": backwards, "first": first_err}))


def wal_own_mappings():
    """The daemon maps no file of its own mount (docs/STORAGE.md, "The
    daemon's own mappings"): unmapping one would write dirty pages back
    through FUSE to the daemon itself while it holds its memory-map lock.
    A WAL replica applies 300 transactions, one at a time, while a local
    reader process runs read transactions in a loop (its read marks dirty
    the -shm); /proc/PID/maps of the replica's daemon is read after each
    and once synced. The reader sees the row count only grow and ends at
    the last one."""
    t = Timer()
    with Cluster(2) as cl, h.Procs() as procs:
        db = "om.db"
        r = start_synced(cl, db, 10, mode="WAL")
        stop = os.path.join(r.root, "stop-spin")
        rd = procs.spawn([sys.executable, os.path.abspath(__file__),
                          "_spin", r.path(db), stop],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        p = connect(cl.primary.path(db))
        base = cl.primary.settled_pos(db)[0]
        seen = []
        for i in range(300):
            # One TXID per INSERT (the primary records it just after the
            # commit returns).
            p.execute("INSERT INTO t(v) VALUES (randomblob(100))")
            want = base + i + 1
            wait_for(lambda: (r.pos_or_none(db) or (0, 0))[0] >= want, 30,
                     "%s: TXID %d applied" % (r.name, want),
                     interval=0.002)
            seen += own_mappings(r.pid(), r.mnt)
            if seen:
                break
        p.close()
        t.lap("%d transactions applied one by one" % (i + 1))
        check(not seen, "the replica's daemon maps files of its own mount "
              "after TXID %d: %s" % (want, seen[:4]))
        check(os.path.exists(r.path(db) + "-shm"), "no -shm on the replica")
        cl.wait_synced(db)
        with open(stop, "w"):
            pass
        out, err = rd.communicate(timeout=60)
        check(rd.returncode == 0, "reader exited %d: %s"
              % (rd.returncode, err[-2000:]))
        res = json.loads(out.strip().splitlines()[-1])
        log("  reader: %s" % res)
        check(res["errors"] == 0 and res["backwards"] == 0,
              "the reader saw errors or a count going back: %s" % res)
        check(res["last"] == 310, "the reader's last count %d, want 310"
              % res["last"])
        check(not own_mappings(r.pid(), r.mnt), "mappings once synced")
        check_identical(cl, db)
        t.lap("identical")
        # What readers see of -shm is in its storage too: with no reader
        # left, the kernel drops the file's cached pages, and a new reader
        # and the next transactions find the same state there.
        shm = r.path(db) + "-shm"
        backing = os.path.join(r.data, "dbs", db, "shm")
        check(shm_bytes(shm) == shm_bytes(backing), "the -shm read through "
              "the mount differs from its storage (%s)" % backing)
        fd = os.open(shm, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        c = ro_connect(r.path(db))
        check(one(c, "SELECT count(*) FROM t") == 310, "after the -shm's "
              "pages were dropped: %d rows" % one(c, "SELECT count(*) FROM t"))
        c.close()
        simple_txns(cl.primary.path(db), 5)
        cl.wait_synced(db)
        c = ro_connect(r.path(db))
        check(one(c, "SELECT count(*) FROM t") == 315, "5 more transactions "
              "after the -shm's pages were dropped")
        c.close()
        check(r.log_count("changed by another process|was damaged") == 0,
              "the replica found its wal-index header changed")
        t.lap("-shm's storage holds what readers saw")
        cl.stop()


def copy_children(pid):
    """PIDs of the export/import copy processes (`ltxfs __copy-db`) whose
    parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # The parent PID is the 2nd field after the ")" ending comm.
        if (int(st[st.rindex(")") + 2:].split()[1]) == pid and
                b"__copy-db" in argv):
            out.append(int(d))
    return out


_kcmp = None


def same_file(pid1, fd1, pid2, fd2):
    """Whether fd1 of pid1 and fd2 of pid2 are one open file description
    (kcmp(2) KCMP_FILE); None when kcmp is not available here."""
    global _kcmp
    import ctypes
    import platform
    if _kcmp is None:
        nr = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
        libc = ctypes.CDLL(None, use_errno=True)
        _kcmp = (lambda *a: libc.syscall(nr, *a)) if nr else False
    if not _kcmp:
        return None
    r = _kcmp(pid1, pid2, 0, fd1, fd2)
    return None if r < 0 and ctypes.get_errno() == 38 else r == 0


def fd_targets(pid, low=0):
    out = {}
    fdir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fdir)
    except OSError:
        return out
    for fd in fds:
        if int(fd) < low:
            continue
        try:
            out[int(fd)] = os.readlink(os.path.join(fdir, fd))
        except OSError:
            pass
    return out


def inherited_fds(child, daemon):
    """Descriptors of process child, above stderr, that are open file
    descriptions of process daemon (a copy process must have inherited
    none: not /dev/fuse, the daemon's locks, sockets or backing files).
    Without kcmp(2): those naming /dev/fuse or a socket."""
    out = []
    mine = fd_targets(child, 3)
    theirs = fd_targets(daemon)
    for cfd, target in sorted(mine.items()):
        for dfd in theirs:
            same = same_file(child, cfd, daemon, dfd)
            if same is None:
                same = (target == theirs[dfd] and
                        target.startswith(("/dev/fuse", "socket:")))
            if same:
                out.append("%d -> %s (the daemon's %d)" % (cfd, target, dfd))
                break
    return out


class MapsSampler:
    """Reads /proc/PID/maps of every node's daemon in a loop on a thread
    (own_mappings), and the descriptors of any copy process they run
    (inherited_fds), until stopped."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.phase = "start"      # what the test is doing (for messages)
        self.mapped = []          # (phase, node, maps line)
        self.bad_fds = []         # (node, child pid, fd line)
        self.children = set()     # copy processes seen
        self.samples = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        deadline = time.monotonic() + 300
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            for n in self.nodes:
                pid = n.pid()
                phase = self.phase
                self.mapped += [(phase, n.name, m) for m in
                                own_mappings(pid, n.mnt)]
                for c in copy_children(pid):
                    self.children.add(c)
                    self.bad_fds += [(n.name, c, f)
                                     for f in inherited_fds(c, pid)]
            self.samples += 1

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=30)


def xfer_own_mappings():
    """GET /export and POST /import map nothing through the daemon's own
    mount (docs/STORAGE.md, "The daemon's own mappings"): SQLite's copy of
    a WAL-mode database maps its -shm, and runs in a child process, never
    in the daemon. While a WAL database of about 8 MB is exported from the
    primary and from the replica, and imported into the primary (once
    while an application holds the write lock for a second, so the copy
    waits with its connections open), /proc/PID/maps of both daemons is
    read in a loop; and the copy process must hold no descriptor the
    daemon had (only files of the mount and its own files in the data
    directory). The import is the next transaction and replicates."""
    t = Timer()
    tmp = tempfile.mkdtemp(prefix="ltxfs-it-xom-")
    with Cluster(2) as cl:
        db = "xom.db"
        r = start_synced(cl, db, 10, mode="WAL")
        c = connect(cl.primary.path(db))
        c.execute("BEGIN")
        for i in range(2000):
            c.execute("INSERT INTO t(v) VALUES (randomblob(4000))")
        c.execute("COMMIT")
        c.close()
        cl.wait_synced(db)
        t.lap("8 MB in WAL mode on both nodes")
        sampler = MapsSampler(cl.nodes)
        try:
            exports = []
            for node in (cl.primary, r, cl.primary, r):
                sampler.phase = "export from " + node.name
                st, body = node.get("/export?db=" + db)
                check(st == 200, "export from %s: %d %r"
                      % (node.name, st, body[:200]))
                exports.append(body)
            t.lap("4 exports (%d bytes each)" % len(exports[0]))
            src = os.path.join(tmp, "exported.db")
            with open(src, "wb") as f:
                f.write(exports[-1])
            check(is_wal(src), "the export of a WAL database is not WAL")
            want = h.content_digest(src)
            check(want == h.content_digest(cl.primary.path(db)),
                  "the export differs from the primary's content")
            with open(src, "rb") as f:
                data = f.read()
            before = cl.primary.settled_pos(db)[0]
            sampler.phase = "import"
            st, body = http(cl.primary.url + "/import?db=" + db,
                            method="POST", data=data)
            check(st == 200, "import: %d %r" % (st, body))
            # Again, while an application holds the write lock: the copy
            # waits for it (busy handler) with its connections open.
            w = connect(cl.primary.path(db))
            w.execute("BEGIN IMMEDIATE")
            sampler.phase = "import waiting for the lock"
            res = {}
            th = threading.Thread(target=lambda: res.update(
                r=http(cl.primary.url + "/import?db=" + db, method="POST",
                       data=data)))
            th.start()
            time.sleep(1.0)  # the lock is held this long, on purpose
            w.execute("COMMIT")
            w.close()
            th.join(timeout=60)
            check("r" in res and res["r"][0] == 200, "import after the "
                  "lock: %r" % (res.get("r"),))
            t.lap("2 imports")
        finally:
            sampler.stop()
        log("  %d samples, %d copy processes seen" % (sampler.samples,
                                                     len(sampler.children)))
        phases = sorted(set("%s (%s)" % (m[0], m[1]) for m in sampler.mapped))
        check(not sampler.mapped, "a daemon maps files of its own mount "
              "during %s: %s" % (", ".join(phases), sampler.mapped[0][2]
                                 if sampler.mapped else ""))
        check(sampler.children, "no copy process was seen while an "
              "import waited a second for the write lock")
        check(not sampler.bad_fds, "a copy process holds descriptors it "
              "inherited from the daemon: %s" % sampler.bad_fds[:6])
        check(cl.primary.pos(db)[0] == before + 2, "the 2 imports are not "
              "the next 2 transactions: TXID %d after %d"
              % (cl.primary.pos(db)[0], before))
        check(h.content_digest(cl.primary.path(db)) == want,
              "the primary's content after the import")
        check_identical(cl, db)
        t.lap("imports replicated, identical")
        cl.stop()
    shutil.rmtree(tmp, ignore_errors=True)


LOCK_HOLDER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(120)
"""


def hold_write_lock(procs, path):
    """A process that holds db's write lock (BEGIN IMMEDIATE, nothing
    written) until it is killed."""
    p = procs.spawn([sys.executable, "-c", LOCK_HOLDER, path],
                    stdout=subprocess.PIPE, text=True)
    check(p.stdout.readline().strip() == "locked", "the lock holder did "
          "not take the lock")
    return p


def raw_import(node, db, data):
    """A socket that has sent POST /import?db=db with data as its body
    and not read the answer."""
    import socket
    s = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    s.sendall(b"POST /import?db=%s HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: %d\r\n\r\n" % (db.encode(), len(data)) + data)
    return s


def xfer_cancel():
    """The copy process of an export/import (a child of the daemon, `ltxfs
    __copy-db`) is killed when its client hangs up and when the node
    stops: an import waits for an application's write lock; (1) its client
    closes the connection: the copy process is gone within seconds, and
    nothing was imported; (2) the daemon gets SIGTERM: it answers 503 (or
    closes the connection), kills the copy process and exits 0 within
    seconds, not after SQLite's 30 s busy wait."""
    t = Timer()
    tmp = tempfile.mkdtemp(prefix="ltxfs-it-xc-")
    with Cluster(1) as cl, h.Procs() as procs:
        p = cl.primary
        db = "xc.db"
        cl.start()
        simple_txns(p.path(db), 20, mode="WAL")
        before = p.settled_pos(db)
        want = h.content_digest(p.path(db))
        src = os.path.join(tmp, "imp.db")
        c = connect(src)
        c.execute("CREATE TABLE imported(v BLOB)")
        c.execute("INSERT INTO imported VALUES (randomblob(50000))")
        c.close()
        with open(src, "rb") as f:
            data = f.read()
        pid = p.pid()

        holder = hold_write_lock(procs, p.path(db))
        sock = raw_import(p, db, data)
        kids = wait_for(lambda: copy_children(pid), 10,
                        "a copy process waiting for the lock")
        t.lap("import waits for the lock (copy process %s)" % kids)
        sock.close()
        wait_for(lambda: not any(os.path.exists("/proc/%d" % k)
                                 for k in kids), 5,
                 "the copy process gone after the client hung up",
                 interval=0.02)
        t.lap("client hung up: copy process gone")
        p.wait_log("import into db=%s failed: the copy was stopped after "
                   "[0-9.]+ s: the client hung up" % db, 5)
        holder.kill()
        holder.wait()
        check(p.settled_pos(db) == before, "the cancelled import changed "
              "the position: %s -> %s" % (before, p.settled_pos(db)))
        check(h.content_digest(p.path(db)) == want, "the cancelled import "
              "changed the content")
        h.integrity_ok(p.path(db))

        holder = hold_write_lock(procs, p.path(db))
        res = {}

        def post():
            try:
                res["r"] = http(p.url + "/import?db=" + db, method="POST",
                                data=data, timeout=60)
            except OSError as e:  # the connection closed unanswered
                res["r"] = (None, str(e).encode())
        th = threading.Thread(target=post)
        th.start()
        kids = wait_for(lambda: copy_children(pid), 10,
                        "a copy process waiting for the lock")
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        th.join(timeout=20)
        check("r" in res, "no answer to the import 20 s after SIGTERM")
        log("  import during the stop: %s after %.2fs"
            % (res["r"], time.monotonic() - t0))
        check(res["r"][0] in (503, None), "import during the stop: %r"
              % (res["r"],))
        rc = p.wait_exit(20)
        dt = time.monotonic() - t0
        check(rc == 0, "exit code %s after SIGTERM" % rc)
        check(dt < 10, "the daemon took %.1fs to stop" % dt)
        check(not any(os.path.exists("/proc/%d" % k) for k in kids),
              "the copy process outlived the daemon")
        check(p.log_count("import into db=%s failed: the copy was stopped "
                          "after [0-9.]+ s: the node is stopping" % db) == 1,
              "no log line for the import stopped by the node's stop")
        t.lap("stopped in %.2fs; copy process killed" % dt)
        holder.kill()
        holder.wait()
        cl.start()
        check(p.settled_pos(db) == before, "after the restart: %s, want %s"
              % (p.settled_pos(db), before))
        check(h.content_digest(p.path(db)) == want, "content after the "
              "restart")
        cl.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def hot_writer_main(path, seconds, blob, stop_file):
    """Child process: back-to-back large transactions on path until
    stop_file exists, for at most seconds."""
    c = sqlite3.connect(path, timeout=30, isolation_level=None)
    c.execute("PRAGMA synchronous=OFF")
    t0 = time.monotonic()
    n = 0
    while (time.monotonic() - t0 < seconds and n < 100000 and
           not os.path.exists(stop_file)):
        c.execute("INSERT INTO t(v) VALUES (randomblob(?))", (blob,))
        n += 1
    c.close()


def fairness():
    """A database whose writer keeps the stream busy (large transactions,
    back to back, in the first slot, the replica behind on it) does not
    starve another: a single transaction on a second database reaches the
    replica while the busy writer is still running.

    The busy writer runs until the test stops it (at most HOT_MAX
    seconds), not for a fixed time: on a slow machine the cold
    transaction must still be measured against a running writer."""
    t = Timer()
    with Cluster(2) as cl:
        cl.start()
        hot, cold = "hot.db", "cold.db"
        hp = cl.primary.path(hot)
        r = cl.replicas[0]
        simple_txns(hp, 1)
        simple_txns(cl.primary.path(cold), 1)
        check_identical(cl, cold)
        cl.wait_synced(hot)
        hot_max, lag_wait, cold_wait = 60.0, 3.0, 30.0
        stop = os.path.join(cl.primary.root, "stop-hot")
        w = subprocess.Popen([sys.executable, __file__, "_hot", hp,
                              str(hot_max), str(4 << 20), stop])
        try:
            def behind():
                return cl.primary.pos(hot)[0] - r.pos(hot)[0]
            t0 = time.monotonic()
            lag = 0
            while time.monotonic() - t0 < lag_wait and w.poll() is None:
                lag = max(lag, behind())
                if lag >= 3:
                    break
                time.sleep(0.01)
            log("  replica behind on hot.db by %d transactions" % lag)
            check(w.poll() is None, "the hot writer ended early (exit %s)"
                  % w.returncode)
            simple_txns(cl.primary.path(cold), 1, start=1)
            want = cl.primary.pos(cold)
            got_at = None
            t1 = time.monotonic()
            while w.poll() is None and time.monotonic() - t1 < cold_wait:
                if r.pos_or_none(cold) == want:
                    got_at = time.monotonic() - t1
                    break
                time.sleep(0.005)
            still = w.poll() is None
            lag_then = behind()
            log("  cold.db reached the replica after %s s (hot writer "
                "%s, replica then %d behind on hot.db)"
                % ("%.3f" % got_at if got_at is not None else "never",
                   "running" if still else "done", lag_then))
            check(got_at is not None and still, "cold.db's transaction "
                  "did not reach the replica while hot.db's writer ran")
        finally:
            with open(stop, "w"):
                pass
            w.wait(timeout=hot_max + 30)
        check(w.returncode == 0, "hot writer exited %s" % w.returncode)
        cl.wait_synced(hot)
        cl.wait_synced(cold)
        t.lap("both databases synced")
        cl.stop()


def journal_switch():
    """The primary switches the database between WAL and rollback modes
    while a replica keeps a connection open on it: every state replicates
    identically and the open connection sees each new commit."""
    t = Timer()
    with Cluster(2) as cl:
        db = "js.db"
        r = start_synced(cl, db, 10, mode="WAL")
        p = cl.primary.path(db)
        held = ro_connect(r.path(db))
        n = one(held, "SELECT count(*) FROM t")
        for mode in ("DELETE", "WAL", "TRUNCATE", "WAL", "PERSIST"):
            simple_txns(p, 5, start=n, mode=mode)
            n += 5
            check_identical(cl, db)
            check(is_wal(r.path(db)) == (mode == "WAL"), "%s: the replica's "
                  "header says wal=%s" % (mode, is_wal(r.path(db))))
            got = one(held, "SELECT count(*) FROM t")
            check(got == n, "%s: the open connection sees %d rows, want %d"
                  % (mode, got, n))
            t.lap("%s: identical, the open connection sees it" % mode)
        held.close()
        cl.stop()


MANY_DBS = 900


def many_dbs():
    """MANY_DBS databases (their descriptors go past FD_SETSIZE, and a
    replica's /stream URL naming every position past 32 KiB): both nodes
    restart, the replica reconnects, and a later write replicates."""
    t = Timer()
    names = ["d%04d.db" % i for i in range(MANY_DBS)]
    with Cluster(2) as cl:
        cl.start()
        for n in names:
            c = connect(cl.primary.path(n))
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            c.close()
        t.lap("%d databases created" % MANY_DBS)
        r = cl.replicas[0]
        for n in (names[0], names[-1]):
            cl.wait_synced(n)
        wait_for(lambda: len([x for x in r.listing() if x.endswith(".db")])
                 == MANY_DBS, 60, "%d databases on the replica" % MANY_DBS)
        t.lap("replicated")
        r.stop()
        cl.primary.stop()
        cl.primary.start()
        r.start()
        cl.wait_connected(r)
        t.lap("both restarted, the replica reconnected")
        simple_txns(cl.primary.path(names[-1]), 3)
        check_identical(cl, names[-1])
        check(r.metrics().get("ltxfs_snapshots_applied_total") == 0,
              "snapshots after the restart")
        t.lap("a write after the restart replicated")
        cl.stop()


def rollback_reader():
    """A reader on a rollback-mode replica holds a read transaction: the
    apply of a new commit waits for it (SQLite's EXCLUSIVE lock), the
    reader keeps its snapshot, /metrics still answers at once and shows
    the lag, and the apply goes through as soon as the reader ends."""
    t = Timer()
    with Cluster(2) as cl:
        db = "rb.db"
        r = start_synced(cl, db, 5, mode="DELETE")
        rc, n0 = hold_reader(r, db)
        pos0 = r.pos(db)
        simple_txns(cl.primary.path(db), 3, start=5)
        want = cl.primary.pos(db)
        r.wait_log(r"db=rb\.db: apply waits for", 30)
        t.lap("the apply waits for the reader")
        t0 = time.monotonic()
        m = r.metrics()
        took = time.monotonic() - t0
        log("  /metrics answered in %.3fs during the wait" % took)
        check(took < 2, "/metrics took %.1fs while an apply waited" % took)
        check(m.get('ltxfs_replication_lag_txids{db="rb.db"}', 0) >= 1,
              "no lag shown: %s" % {k: v for k, v in m.items()
                                    if "rb.db" in k})
        check(r.pos(db) == pos0, "the replica moved under the reader")
        check(one(rc, "SELECT count(*) FROM t") == n0, "snapshot changed")
        rc.execute("COMMIT")
        rc.close()
        t0 = time.monotonic()
        wait_for(lambda: r.pos(db) == want, 30, "the apply after the "
                 "reader ended", interval=0.02)
        t.lap("applied %.2fs after the reader ended"
              % (time.monotonic() - t0))
        check_identical(cl, db)
        cl.stop()


APPLY_TIMEOUT_S = 3


def reader_timeout():
    """A reader on a rollback-mode replica holds its read transaction past
    the apply timeout (data.apply-timeout, 3 s here): the replica gives up on the record (logged,
    counted, the stream reconnects) without keeping any of it, and once
    the reader ends it applies it and converges. (The record used to be
    in the local log already: every later try was refused, "does not
    follow the log's last position", until a restart.)"""
    t = Timer()
    with Cluster(2, data_yml="  apply-timeout: %ds\n"
                 % APPLY_TIMEOUT_S) as cl:
        db = "to.db"
        r = start_synced(cl, db, 5, mode="DELETE")
        rc, n0 = hold_reader(r, db)
        pos0 = r.pos(db)
        simple_txns(cl.primary.path(db), 3, start=5)
        want = cl.primary.pos(db)
        t0 = time.monotonic()
        r.wait_log(r"db=to\.db: gave up waiting %d ms"
                   % (APPLY_TIMEOUT_S * 1000), 60)
        waited = time.monotonic() - t0
        t.lap("the apply gave up on the reader after %.1fs" % waited)
        check(waited >= APPLY_TIMEOUT_S - 0.5, "gave up after %.1fs, "
              "before data.apply-timeout" % waited)
        check(r.pos(db) == pos0, "the replica moved under the reader")
        check(one(rc, "SELECT count(*) FROM t") == n0, "snapshot changed")
        rc.execute("COMMIT")
        rc.close()
        t0 = time.monotonic()
        wait_for(lambda: r.pos(db) == want, 30, "the apply after the "
                 "reader ended", interval=0.02)
        t.lap("applied %.2fs after the reader ended"
              % (time.monotonic() - t0))
        check(r.log_count(r"does not follow") == 0,
              "the replica's log kept a record it did not apply")
        check_identical(cl, db)
        cl.stop()


LAG_TXNS = 400


def lag_txids(r, db):
    return r.metric('ltxfs_replication_lag_txids{db="%s"}' % db, 0)


def lag_reader(mode):
    """A reader on the replica holds a read transaction while the primary
    commits LAG_TXNS transactions. In rollback mode the apply waits for
    the reader (SQLite's EXCLUSIVE lock): lag_txids (/metrics and /info)
    must reach the real gap, the primary's TXID minus the replica's,
    while it waits, and fall to 0 once the reader ends. In WAL mode the
    apply does not wait: the replica catches up under the reader, lag 0,
    and the reader keeps its snapshot."""
    t = Timer()
    with Cluster(2) as cl:
        db = "lag.db"
        r = start_synced(cl, db, 5, mode=MODES[mode])
        rc, n0 = hold_reader(r, db)
        pos0 = r.pos(db)
        simple_txns(cl.primary.path(db), LAG_TXNS, start=5)
        want = cl.primary.pos(db)
        t.lap("%d commits while the reader holds" % LAG_TXNS)
        if mode == "wal":
            cl.wait_synced(db)
            check(lag_txids(r, db) == 0, "lag %d after the replica caught "
                  "up under a WAL reader" % lag_txids(r, db))
        else:
            gap = want[0] - pos0[0]
            last = []

            def lag_is_gap():
                last[:] = [lag_txids(r, db)]
                return last[0] == gap
            try:
                wait_for(lag_is_gap, 20, "lag_txids to reach the gap of "
                         "%d while the apply waits" % gap, interval=0.05)
            except TestFailure as e:
                raise TestFailure("%s (last value %s)" % (e, last))
            info = [d for d in r.info()["databases"] if d["name"] == db]
            check(info and info[0]["lag_txids"] == gap and
                  info[0]["lag_ms"] > 0, "/info while the apply waits: %s"
                  % info)
            check(r.pos(db) == pos0, "the replica moved under the reader")
            t.lap("lag_txids %d (the real gap) while the apply waits"
                  % gap)
        check(one(rc, "SELECT count(*) FROM t") == n0, "snapshot changed")
        rc.execute("COMMIT")
        rc.close()
        wait_for(lambda: r.pos(db) == want, 30, "the apply after the "
                 "reader ended", interval=0.02)
        wait_for(lambda: lag_txids(r, db) == 0, 10, "lag_txids back to 0",
                 interval=0.05)
        t.lap("applied, lag_txids 0")
        check(r.metric("ltxfs_stream_reconnects_total", 0) == 0,
              "the replica reconnected")
        check_identical(cl, db)
        cl.stop()


# -- a replica that was stopped catches up ---------------------------------

SIGSTOP_DBS = 60
SIGSTOP_CYCLES = 2
HOT_TXNS = 2000
FILL_BLOB = 64 * 1024
FILL_ROUNDS = 40


def tiny_txns(path, n):
    """n one-row updates (synchronous off): records of about 300 bytes,
    dozens to each 16 KiB chunk of a catch-up."""
    c = connect(path)
    try:
        c.execute("PRAGMA synchronous=OFF")
        c.execute("CREATE TABLE IF NOT EXISTS k(id INTEGER PRIMARY KEY, "
                  "n INTEGER)")
        c.execute("INSERT OR IGNORE INTO k VALUES (1, 0)")
        for _ in range(n):
            c.execute("UPDATE k SET n = n + 1 WHERE id = 1")
    finally:
        c.close()


def fill_stream(cl, names, start):
    """Commits FILL_BLOB rows to each of names, round after round, until
    the primary stops sending (the stopped replica's socket buffers are
    full: what commits next waits in the primary's log). Returns the
    rounds it took."""
    p = cl.primary
    for rnd in range(FILL_ROUNDS):
        sent0 = p.metric("ltxfs_stream_records_sent_total", 0)
        for n in names:
            simple_txns(p.path(n), 1, start=start + rnd, blob=FILL_BLOB)
        if p.metric("ltxfs_stream_records_sent_total", 0) - sent0 == 0:
            return rnd + 1
    raise TestFailure("the primary went on sending to a stopped replica "
                      "after %d rounds of %d commits" % (FILL_ROUNDS,
                                                         len(names)))


def sigstop_catchup():
    """SIGSTOP_CYCLES times, the replica is SIGSTOPped while the primary
    commits to SIGSTOP_DBS databases until the stream backs up, then
    HOT_TXNS small transactions to hot.db, then SIGCONT: it catches up
    without rejecting a record or reconnecting, and every database
    reaches the primary's position. The tail of the catch-up is hot.db
    alone, read from the primary's log as fast as the stream takes it:
    every libcurl callback is a full chunk of dozens of its records and
    ends inside one. LTXFS_TEST_SCRATCH_KEEP=0 makes the replica give its
    scratch file's space back after every batch (not only past 4 MiB):
    the truncation once cut the record still being received when its
    DATA had come but not its END ("bad magic at byte 0", a reconnect),
    a few times per cycle here."""
    t = Timer()
    names = ["s%02d.db" % i for i in range(SIGSTOP_DBS)]
    hot = "hot.db"
    with Cluster(2) as cl:
        os.environ["LTXFS_TEST_SCRATCH_KEEP"] = "0"
        try:
            cl.start()
        finally:
            del os.environ["LTXFS_TEST_SCRATCH_KEEP"]
        r = cl.replicas[0]
        for n in names:
            simple_txns(cl.primary.path(n), 1)
        tiny_txns(cl.primary.path(hot), 1)
        for n in names + [hot]:
            cl.wait_synced(n)
        t.lap("%d databases replicated" % (len(names) + 1))
        before = r.metrics()
        for cycle in range(SIGSTOP_CYCLES):
            os.kill(r.pid(), signal.SIGSTOP)
            try:
                rounds = fill_stream(cl, names, 1 + FILL_ROUNDS * cycle)
                tiny_txns(cl.primary.path(hot), HOT_TXNS)
                t.lap("cycle %d: %d rounds to back up, then %d commits"
                      % (cycle, rounds, HOT_TXNS))
            finally:
                os.kill(r.pid(), signal.SIGCONT)
            for n in names + [hot]:
                cl.wait_synced(n, timeout=60)
            t.lap("cycle %d: caught up after SIGCONT" % cycle)
            rejected = r.log_count(r"rejected a record|record rejected")
            check(rejected == 0, "the replica rejected %d record(s) while "
                  "catching up (cycle %d)" % (rejected, cycle))
        after = r.metrics()
        for k in ("ltxfs_stream_reconnects_total",
                  "ltxfs_apply_errors_total"):
            log("  %s: %d during the catch-ups"
                % (k, after.get(k, 0) - before.get(k, 0)))
        check(after.get("ltxfs_apply_errors_total", 0) ==
              before.get("ltxfs_apply_errors_total", 0),
              "apply errors while catching up")
        check(after.get("ltxfs_stream_reconnects_total", 0) ==
              before.get("ltxfs_stream_reconnects_total", 0),
              "the replica reconnected while catching up")
        check_identical(cl, hot)
        check_identical(cl, names[0])
        t.lap("identical")
        cl.stop()


# -- 8. export and import ---------------------------------------------------

def export_import():
    """GET /export from a replica equals the primary's content; POST
    /import on the primary becomes the next transaction and replicates;
    on a replica it is refused naming the primary."""
    t = Timer()
    with Cluster(2) as cl:
        db = "ex.db"
        r = start_synced(cl, db, 30, mode="WAL")
        st, body = r.get("/export?db=" + db)
        check(st == 200, "export from the replica: %d %r" % (st, body[:200]))
        tmp = tempfile.mkdtemp(prefix="ltxfs-it-export-")
        exp = os.path.join(tmp, "exported.db")
        with open(exp, "wb") as f:
            f.write(body)
        h.integrity_ok(exp)
        check(h.content_digest(exp) == h.content_digest(cl.primary.path(db)),
              "the export differs from the primary's content")
        st, _ = r.get("/export?db=none.db")
        check(st == 404, "export of a missing db: %d" % st)
        t.lap("export from the replica (%d bytes)" % len(body))
        # A different database to import.
        imp = os.path.join(tmp, "import.db")
        c = connect(imp)
        c.execute("CREATE TABLE imported(k TEXT PRIMARY KEY, v INTEGER)")
        c.executemany("INSERT INTO imported VALUES (?, ?)",
                      [("k%d" % i, i * i) for i in range(500)])
        c.close()
        with open(imp, "rb") as f:
            data = f.read()
        before = cl.primary.pos(db)[0]
        st, body = http(cl.primary.url + "/import?db=" + db, method="POST",
                        data=data)
        check(st == 200, "import: %d %r" % (st, body))
        j = json.loads(body)
        check(int(j["txid"], 16) == before + 1, "import TXID %s after %d"
              % (j["txid"], before))
        check(cl.primary.pos(db)[0] == before + 1, "-pos after import")
        check(h.content_digest(cl.primary.path(db)) == h.content_digest(imp),
              "the primary's content is not the imported database")
        check_identical(cl, db)
        t.lap("import replicated")
        st, body = http(r.url + "/import?db=" + db, method="POST", data=data)
        check(st == 409 and (cl.primary.url.encode() in body or
                             b"n0" in body),
              "import on a replica: %d %r" % (st, body))
        st, body = http(cl.primary.url + "/import?db=" + db, method="POST",
                        data=b"x" * 1000)
        check(st == 400, "import of garbage: %d %r" % (st, body))
        check(cl.primary.pos(db)[0] == before + 1, "garbage changed -pos")
        shutil.rmtree(tmp, ignore_errors=True)
        cl.stop()


CASES = {
    "invariant-wal": lambda: invariant("wal"),
    "invariant-delete": lambda: invariant("delete"),
    "late-join": late_join,
    "diverged": diverged,
    "replica-restart": replica_restart,
    "primary-restart": primary_restart,
    "corrupt-transit": corrupt_transit,
    "replica-corrupt-log": replica_corrupt_log,
    "primary-corrupt-log": primary_corrupt_log,
    "primary-corrupt-db": primary_corrupt_db,
    "primary-corrupt-old-segment": primary_corrupt_old_segment,
    "bad-token": bad_token,
    "other-cluster": other_cluster,
    "bad-stream": bad_stream,
    "replica-write": replica_write,
    "create-delete": create_delete,
    "big-txn": big_txn,
    "snapshot-1g": snapshot_1g,
    "wal-long-reader": wal_long_reader,
    "replica-kill9": replica_kill9,
    "wal-own-mappings": wal_own_mappings,
    "xfer-own-mappings": xfer_own_mappings,
    "xfer-cancel": xfer_cancel,
    "fairness": fairness,
    "rollback-reader": rollback_reader,
    "reader-timeout": reader_timeout,
    "journal-switch": journal_switch,
    "many-dbs": many_dbs,
    "export-import": export_import,
    "sigstop-catchup": sigstop_catchup,
    "lag-reader-delete": lambda: lag_reader("delete"),
    "lag-reader-wal": lambda: lag_reader("wal"),
}
for _m in MODES:
    CASES["identical-" + _m] = (lambda m: lambda: identical(m))(_m)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_reader":
        reader_main(*sys.argv[2:5])
        sys.exit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "_spin":
        spin_reader_main(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if len(sys.argv) == 6 and sys.argv[1] == "_hot":
        hot_writer_main(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]),
                        sys.argv[5])
        sys.exit(0)
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_cluster.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    log("cluster/%s" % sys.argv[1])
    h.main(CASES[sys.argv[1]])
