"""Synchronous replication (docs/SYNC.md; replication.sync) on a cluster of
real nodes on 127.0.0.1 ports (cluster_harness.py, static lease: n0 is
the primary).

    test_sync.py CASE

Cases:
  modes-delete, modes-wal, modes-wal-exclusive
          min-replicas 1: three seeded concurrent writers (workload.py)
          on the primary; every commit waited for an acknowledgement
          (ltxfs_sync_commits_total{result="acknowledged"} grew by at
          least the number of commits, none timed out or failed), and the
          replica ends byte-identical (test_cluster.check_identical).
  fail    min-replicas 1, timeout 1 s, both replicas stopped (SIGSTOP): a
          commit fails after the timeout with SQLite's "disk I/O error",
          in WAL and in DELETE mode; the row is absent, the primary's
          -pos and LTX log did not move, and the metrics count it; the
          replicas, continued (SIGCONT: they still hold the records sent
          before), converge to the primary without the failed rows, and
          commits succeed again. Then a failed WAL commit followed by a
          kill -9 of the primary: after a restart the row is still absent
          and `ltxfs verify` passes.
  degrade on-timeout degrade: the first commit with the replica stopped
          waits out the timeout and succeeds; the next ones do not wait;
          the metric and the log say degraded; once the replica is back
          a commit says "sync: resumed" and commits wait again (the wait
          histogram's count grows).
  ack     POST /ack: no token 401, a malformed position 400, another
          epoch 409; a node without sync answers 409.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import ltxfs_harness as h
from cluster_harness import Cluster
from ltxfs_harness import TestFailure, check, connect, one, wait_for
from test_cluster import check_identical, is_wal
from workload import create_db, run_writers

TOKEN = "sync-test-token"
ACKED = 'ltxfs_sync_commits_total{result="acknowledged"}'
TIMEOUTS = 'ltxfs_sync_commits_total{result="timeout"}'
DEGRADED = 'ltxfs_sync_commits_total{result="degraded"}'
WAITS = "ltxfs_sync_commit_wait_seconds_count"
EIO_TEXT = "disk I/O error"


def sync_yml(min_replicas=1, timeout="5s", on_timeout="fail"):
    return ("replication:\n  sync:\n    min-replicas: %d\n    timeout: %s\n"
            "    on-timeout: %s\n" % (min_replicas, timeout, on_timeout))


def log(msg):
    sys.stdout.write("%.2f %s\n" % (time.monotonic(), msg))
    sys.stdout.flush()


class Stopped:
    """SIGSTOPs the nodes' daemons; SIGCONTs them on exit (or cont())."""

    def __init__(self, nodes):
        self.nodes = list(nodes)
        self.live = False

    def __enter__(self):
        for n in self.nodes:
            os.kill(n.pid(), signal.SIGSTOP)
        self.live = True
        return self

    def cont(self):
        if self.live:
            for n in self.nodes:
                os.kill(n.pid(), signal.SIGCONT)
        self.live = False

    def __exit__(self, et, ev, tb):
        self.cont()
        return False


def insert(c, v):
    c.execute("INSERT INTO t(v) VALUES (?)", (v,))


def failed_commit(c, v, at_least):
    """An insert that must fail with EIO after at least at_least s."""
    t0 = time.monotonic()
    try:
        insert(c, v)
    except sqlite3.Error as e:
        took = time.monotonic() - t0
        check(EIO_TEXT in str(e), "the failed commit said %r, want %r"
              % (str(e), EIO_TEXT))
        check(took >= at_least, "the commit failed after %.2f s, before "
              "the timeout" % took)
        return took
    raise TestFailure("insert %r succeeded with every replica stopped"
                      % (v,))


def count_of(c, v):
    return one(c, "SELECT count(*) FROM t WHERE v = ?", (v,))


# -- modes -------------------------------------------------------------------

MODES = {"delete": ("DELETE", False), "wal": ("WAL", False),
         "wal-exclusive": ("WAL", True)}


def modes(mode):
    jm, exclusive = MODES[mode]
    with Cluster(2, extra_yml=sync_yml()) as cl:
        cl.start()
        p = cl.primary
        db = "w.db"
        path = p.path(db)
        create_db(path, 4096, jm, exclusive=exclusive)
        before = p.metric(ACKED, 0)
        t0 = time.monotonic()
        res = run_writers(path, 4096, jm, seed=7100 + len(mode), workers=3,
                          txns=40, exclusive=exclusive, timeout=180)
        commits = sum(r["commits"] for r in res)
        log("%d commits in %.2f s" % (commits, time.monotonic() - t0))
        m = p.metrics()
        acked = m.get(ACKED, 0) - before
        log("acknowledged %d, timeouts %d, wait count %d"
            % (acked, m.get(TIMEOUTS, 0), m.get(WAITS, 0)))
        check(acked >= commits, "%d commits but %d acknowledged waits"
              % (commits, acked))
        check(m.get(TIMEOUTS, 0) == 0, "commits timed out")
        check(m.get(DEGRADED, 0) == 0, "commits degraded")
        check(m.get("ltxfs_sync_replicas_connected") == 1, "replicas "
              "connected: %s" % m.get("ltxfs_sync_replicas_connected"))
        pos = check_identical(cl, db)
        log("replica byte-identical at TXID %d" % pos[0])
        check(is_wal(cl.replicas[0].path(db)) == (jm == "WAL"), "journal "
              "mode header byte")


# -- fail --------------------------------------------------------------------

def fail_one(cl, db, mode, value):
    """A failed commit in mode on db with every replica stopped; checks
    the primary kept nothing of it. Returns the open connection."""
    p = cl.primary
    c = connect(p.path(db))
    check(one(c, "PRAGMA journal_mode=%s" % mode).lower() == mode.lower(),
          "journal mode")
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)")
    for i in range(5):
        insert(c, "ok-%d" % i)
    pos = p.settled_pos(db)
    log_bytes = p.log_bytes_on_disk(db)
    timeouts = p.metric(TIMEOUTS, 0)
    with Stopped(cl.replicas):
        took = failed_commit(c, value, 1.0)
        log("%s: the commit failed after %.2f s" % (mode, took))
        check(count_of(c, value) == 0, "%s: the failed row is there" % mode)
        c2 = connect(p.path(db))
        check(count_of(c2, value) == 0, "%s: a new connection sees the "
              "failed row" % mode)
        c2.close()
        check(p.pos(db) == pos, "%s: -pos moved from %s to %s"
              % (mode, pos, p.pos(db)))
        check(p.log_bytes_on_disk(db) == log_bytes, "%s: the LTX log "
              "grew from %d to %d bytes" % (mode, log_bytes,
                                            p.log_bytes_on_disk(db)))
        check(p.metric(TIMEOUTS, 0) == timeouts + 1, "timeout not counted")
    return c


def wait_replicas_at(cl, db):
    """Waits until every replica holds the primary's position of db. A
    replica that was stopped while a commit failed may still read that
    commit's record from its socket when it continues: it is then ahead
    of the primary, which replaces its copy with a snapshot. A commit
    made before that would wait behind the snapshot for the replica's
    acknowledgement and could time out (docs/SYNC.md, "Limits")."""
    want = cl.primary.settled_pos(db)
    for r in cl.replicas:
        wait_for(lambda r=r: r.pos_or_none(db) == want, 30,
                 "%s at the primary's position of %s" % (r.name, db))


def fail():
    with Cluster(3, extra_yml=sync_yml(timeout="1s")) as cl:
        cl.start()
        p = cl.primary
        conns = {}
        for db, mode in (("wal.db", "WAL"), ("del.db", "DELETE")):
            conns[db] = fail_one(cl, db, mode, "failed-" + mode)
            # The replicas continued: the next commit goes through, and
            # they end identical, without the failed row.
            wait_replicas_at(cl, db)
            insert(conns[db], "after-" + mode)
            pos = check_identical(cl, db)
            for r in cl.replicas:
                rc = connect(r.path(db))
                check(count_of(rc, "failed-" + mode) == 0, "%s: %s has the "
                      "failed row" % (r.name, db))
                check(count_of(rc, "after-" + mode) == 1, "%s: %s lacks "
                      "the row after" % (r.name, db))
                rc.close()
            log("%s: replicas identical at TXID %d without the failed row"
                % (mode, pos[0]))
        for c in conns.values():
            c.close()
        # A failed WAL commit, then the application and the primary die
        # (kill -9: SQLite neither checkpoints nor removes the WAL): the
        # commit frame, made invalid, is not recovered as a commit.
        with Stopped(cl.replicas):
            app = subprocess.Popen(
                [sys.executable, __file__, "_fail_and_wait",
                 p.path("wal.db"), "failed-then-kill"],
                stdout=subprocess.PIPE, text=True)
            try:
                line = app.stdout.readline().strip()
                check(line == "failed", "the application said %r" % line)
                p.kill9()
            finally:
                app.kill()
                app.wait(timeout=30)
        p.start()
        c = connect(p.path("wal.db"))
        check(count_of(c, "failed-then-kill") == 0, "the failed row came "
              "back after kill -9 and a restart")
        wait_replicas_at(cl, "wal.db")
        insert(c, "after-restart")
        c.close()
        pos = check_identical(cl, "wal.db")
        cl.stop()
        _, found, out = p.verify("wal.db", "del.db")
        check(found.get("wal.db") == pos, "ltxfs verify: %s\n%s"
              % (found, out))
        log("after kill -9 and restart: row absent, verify ok at TXID %d"
            % pos[0])


# -- degrade -----------------------------------------------------------------

def degrade():
    with Cluster(2, extra_yml=sync_yml(timeout="1s",
                                       on_timeout="degrade")) as cl:
        cl.start()
        p, r = cl.primary, cl.replicas[0]
        c = connect(p.path("d.db"))
        one(c, "PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        insert(c, "first")
        with Stopped([r]) as s:
            t0 = time.monotonic()
            insert(c, "slow")
            took = time.monotonic() - t0
            check(took >= 1.0, "the first commit took %.2f s, want the "
                  "timeout" % took)
            t0 = time.monotonic()
            for i in range(20):
                insert(c, "fast-%d" % i)
            fast = time.monotonic() - t0
            log("degraded: first commit %.2f s, 20 more in %.2f s"
                % (took, fast))
            check(fast < 1.0, "degraded commits still wait (%.2f s)" % fast)
            check(p.metric("ltxfs_sync_degraded") == 1, "not degraded")
            check(p.metric(DEGRADED, 0) >= 21, "degraded commits not "
                  "counted")
            check(p.log_count(r"sync: degraded") == 1, "no warn line")
            s.cont()
            # A commit resumes once the replica acknowledged the one
            # before it: bounded tries.
            deadline = time.monotonic() + 30
            i = 0
            while p.log_count(r"sync: resumed") == 0:
                check(time.monotonic() < deadline, "sync never resumed")
                insert(c, "back-%d" % i)
                i += 1
                time.sleep(0.05)
            log("resumed after %d commits" % i)
        check(p.metric("ltxfs_sync_degraded") == 0, "still degraded")
        waits = p.metric(WAITS, 0)
        insert(c, "waits-again")
        check(p.metric(WAITS, 0) == waits + 1, "the commit after resuming "
              "did not wait")
        c.close()
        cl.wait_synced("d.db")


# -- ack ---------------------------------------------------------------------

def ack():
    with Cluster(2, token=TOKEN, extra_yml=sync_yml()) as cl:
        cl.start()
        p = cl.primary
        node = cl.replicas[0].node_id()
        epoch = p.info()["epoch"]
        good = "/ack?node=%s&epoch=%d&pos=x.db/%016x/%016x" % (node, epoch,
                                                               1, 2)
        st, _ = p.get(good, token="", method="POST", data=b"")
        check(st == 401, "no token: %d" % st)
        st, body = p.get(good, method="POST", data=b"")
        check(st == 204, "a good ack: %d %r" % (st, body))
        for bad in ("/ack?node=%s&epoch=%d&pos=x.db/1/2" % (node, epoch),
                    "/ack?node=zz&epoch=%d" % epoch,
                    "/ack?node=%s&epoch=0" % node):
            st, body = p.get(bad, method="POST", data=b"")
            check(st == 400, "%s: %d %r" % (bad, st, body))
        st, body = p.get(good.replace("epoch=%d" % epoch,
                                      "epoch=%d" % (epoch + 1)),
                         method="POST", data=b"")
        check(st == 409, "another epoch: %d %r" % (st, body))
    with Cluster(1, token=TOKEN) as cl:
        cl.start()
        st, body = cl.primary.get("/ack?node=%016x&epoch=1" % 5,
                                  method="POST", data=b"")
        check(st == 409, "a node without sync: %d %r" % (st, body))


CASES = {
    "modes-delete": lambda: modes("delete"),
    "modes-wal": lambda: modes("wal"),
    "modes-wal-exclusive": lambda: modes("wal-exclusive"),
    "fail": fail,
    "degrade": degrade,
    "ack": ack,
}

def fail_and_wait(path, value):
    """(child process) A commit that must fail, then waits to be killed
    with its connection open."""
    c = connect(path)
    failed_commit(c, value, 1.0)
    print("failed", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_fail_and_wait":
        fail_and_wait(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_sync.py CASE\ncases: %s\n"
                         % " ".join(CASES))
        sys.exit(2)
    log("sync/%s" % sys.argv[1])
    h.main(CASES[sys.argv[1]])
