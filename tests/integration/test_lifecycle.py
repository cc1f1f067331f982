"""A node's life cycle as orchestrators see it, on real clusters of the
static lease (cluster_harness.py): the clean stop of a primary, and
GET /readyz.

    test_lifecycle.py CASE

  static-drain-delete, static-drain-wal
      The primary is stopped with SIGTERM under a write workload (two
      writers of 16 KiB rows, each commit recorded outside the mount once
      SQLite returned), while one replica is a little behind (SIGSTOPped
      for STALL_S around the SIGTERM, so that what it lacks is more than
      the sockets hold): once the primary has exited, both replicas have
      every acknowledged commit (0 lost), as the etcd handoff guarantees.
  readyz-catchup
      A replica that joins late, behind by a large database (64 MiB of
      incompressible rows in 128 transactions, which it receives as
      records), answers 503 "catching up ... N transactions behind" while it
      catches up, and its first 200 comes only once it has the primary's
      position.
  readyz-primary-gone
      With http.ready-max-lag 2s: a ready replica whose primary stops
      stays ready at first, answers 503 once the bound has passed ("no
      word from the primary"), and 200 again once the primary is back.
      The primary's own /readyz is 200 all along it runs; ltxfs_ready
      follows /readyz.
"""

import os
import re
import signal
import sqlite3
import sys
import threading
import time

import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, wait_for
from cluster_harness import Cluster, http

DB = "life.db"
STALL_S = 0.25
ROW = 16384


def log(msg):
    sys.stdout.write("%s\n" % msg)
    sys.stdout.flush()


class Writers:
    """n threads inserting rows into DB on node, one transaction each;
    acks holds every id whose COMMIT returned (outside the mount)."""

    def __init__(self, node, n=2):
        self.node = node
        self.acks = []
        self.errors = []
        self.stop = threading.Event()
        self.mu = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,),
                                         daemon=True) for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, k):
        try:
            c = sqlite3.connect(self.node.path(DB), timeout=5,
                                isolation_level=None)
        except sqlite3.Error as e:
            self.errors.append(str(e))
            return
        i = 0
        while not self.stop.is_set() and i < 1000000:
            rid = k * 1000000 + i
            i += 1
            try:
                c.execute("INSERT INTO t(id, v) VALUES(?, ?)",
                          (rid, os.urandom(ROW)))
            except sqlite3.Error as e:
                # The stopping primary refuses writes: expected; the
                # rows before were acknowledged.
                self.errors.append(str(e))
                break
            with self.mu:
                self.acks.append(rid)
        try:
            c.close()
        except sqlite3.Error:
            pass

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
            check(not t.is_alive(), "a writer is still running")


def replica_ids(node):
    c = h.ro_connect(node.path(DB))
    try:
        return set(r[0] for r in c.execute("SELECT id FROM t"))
    finally:
        c.close()


def static_drain(mode):
    with Cluster(3) as cl:
        cl.start()
        p = cl.primary
        c = h.connect(p.path(DB))
        got = h.one(c, "PRAGMA journal_mode=%s" % mode)
        check(got.lower() == mode.lower(), "journal_mode is %s" % got)
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        c.close()
        cl.wait_synced(DB)
        w = Writers(p)
        w.start()
        wait_for(lambda: len(w.acks) >= 100, 60, "100 acknowledged writes")
        slow = cl.replicas[0]
        os.kill(slow.pid(), signal.SIGSTOP)
        try:
            time.sleep(STALL_S)
            t0 = time.monotonic()
            p.proc.send_signal(signal.SIGTERM)
            time.sleep(STALL_S / 2)
        finally:
            os.kill(slow.pid(), signal.SIGCONT)
        rc = p.wait_exit(60)
        took = time.monotonic() - t0
        w.finish()
        check(rc == 0, "the primary exited %d after SIGTERM" % rc)
        acks = set(w.acks)
        log("static-drain-%s: %d acknowledged writes, the primary stopped "
            "in %.2f s; writers ended with: %s"
            % (mode, len(acks), took, sorted(set(w.errors))[:2]))
        # Nothing can reach the replicas any more: what they have now
        # (once the records they received are applied) is all they get.
        for r in cl.replicas:
            missing = []

            def all_there():
                missing[:] = sorted(acks - replica_ids(r))
                return not missing
            try:
                wait_for(all_there, 10, "%s to have every acknowledged "
                         "write" % r.name)
            except TestFailure:
                raise TestFailure("%s lacks %d of %d acknowledged writes "
                                  "after the primary's clean stop (e.g. "
                                  "%s)" % (r.name, len(missing), len(acks),
                                           missing[:5]))
        text = p.log_text()
        check("has every transaction" in text,
              "the primary did not drain its replicas: %s"
              % text[-2000:])
        log("static-drain-%s: both replicas have all %d (0 lost)"
            % (mode, len(acks)))
        for r in cl.replicas:
            r.stop()


def readyz(node):
    """(status, body text) of GET /readyz, no token; (0, why) when the
    node does not answer."""
    try:
        st, body = http(node.url + "/readyz", timeout=5)
        return st, body.decode(errors="replace").strip()
    except OSError as e:
        return 0, str(e)


def readyz_catchup():
    with Cluster(2, token="tok") as cl:
        p = cl.primary
        p.start()
        c = h.connect(p.path(DB))
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(128):
            c.execute("BEGIN")
            for j in range(8):
                c.execute("INSERT INTO t(v) VALUES(?)", (os.urandom(65536),))
            c.execute("COMMIT")
        c.close()
        want = p.settled_pos(DB)
        st, body = readyz(p)
        check(st == 200 and body == "ready", "the primary's /readyz: %d %s"
              % (st, body))
        r = cl.replicas[0]
        seen = []
        first_ok = []
        stop = threading.Event()

        def poll():
            # From before the replica answers at all until its first 200.
            while not stop.is_set():
                st, body = readyz(r)
                if st == 200:
                    first_ok.append((time.monotonic(), r.pos_or_none(DB)))
                    return
                if st:
                    seen.append((st, body))
                time.sleep(0.002)
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        t0 = time.monotonic()
        r.start()
        wait_for(lambda: first_ok, 120, "%s: /readyz 200" % r.name)
        stop.set()
        t.join(10)
        took = first_ok[0][0] - t0
        catching = [b for st, b in seen if st == 503 and "catching up" in b]
        behind = [b for b in catching if re.search(r"\d+ transactions? "
                                                   r"behind", b)]
        log("readyz-catchup: %d answers 503 before the first 200 (%.2f s "
            "after start), e.g. %r" % (len(seen), took,
                                       (behind or catching or [""])[-1]))
        check(seen and all(st == 503 for st, b in seen),
              "answers before the first 200: %s" % seen[:3])
        check(catching, "no 503 said it was catching up: %s" % seen[-3:])
        check(behind, "no 503 said how far behind it was while it caught "
              "up the snapshot: %s" % seen[-3:])
        check(first_ok[0][1] == want, "%s said ready at %s, the primary is "
              "at %s" % (r.name, first_ok[0][1], want))
        check(r.metrics().get("ltxfs_ready") == 1, "ltxfs_ready is not 1")
        cl.stop()


def readyz_primary_gone():
    lag = 2.0
    with Cluster(2, extra_yml="") as cl:
        r = cl.replicas[0]
        with open(r.cfg) as f:
            text = f.read()
        check("http:\n" in text, "config layout changed")
        with open(r.cfg, "w") as f:
            f.write(text.replace("http:\n", "http:\n  ready-max-lag: 2s\n",
                                 1))
        cl.start()
        p = cl.primary
        c = h.connect(p.path(DB))
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO t(v) VALUES('a')")
        c.close()
        cl.wait_synced(DB)
        wait_for(lambda: readyz(r)[0] == 200, 10, "%s ready" % r.name)
        check(r.metrics().get("ltxfs_ready") == 1, "ltxfs_ready is not 1")
        t0 = time.monotonic()
        p.stop()
        st, body = readyz(r)
        check(st == 200, "%s not ready at once when its primary stopped: "
              "%d %s" % (r.name, st, body))
        wait_for(lambda: readyz(r)[0] == 503, lag + 10,
                 "%s: /readyz 503 after the primary stopped" % r.name)
        took = time.monotonic() - t0
        st, body = readyz(r)
        log("readyz-primary-gone: 503 %.2f s after the primary stopped: %r"
            % (took, body))
        check(took >= lag - 1.2, "503 after %.2f s, before the bound of "
              "%.1f s (the last heartbeat was up to 1 s before the stop)"
              % (took, lag))
        check("no word from the primary" in body, "reason: %r" % body)
        check(r.metrics().get("ltxfs_ready") == 0, "ltxfs_ready is not 0")
        t1 = time.monotonic()
        p.start()
        wait_for(lambda: readyz(r)[0] == 200, 30,
                 "%s: /readyz 200 once the primary is back" % r.name)
        log("readyz-primary-gone: 200 again %.2f s after the primary's "
            "start" % (time.monotonic() - t1))
        cl.stop()


CASES = {
    "static-drain-delete": lambda: static_drain("DELETE"),
    "static-drain-wal": lambda: static_drain("WAL"),
    "readyz-catchup": readyz_catchup,
    "readyz-primary-gone": readyz_primary_gone,
}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_lifecycle.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    log("lifecycle/%s" % sys.argv[1])
    h.main(CASES[sys.argv[1]])
