"""Leader election on etcd (suite etcd): real etcd (Debian's etcd-server,
/usr/bin/etcd) on free 127.0.0.1 ports with its own data directory, three
ltxfs nodes (all candidates, lease.type etcd, TTL 2 s) on real FUSE
mounts, a writer that always writes to whichever node /info calls the
primary and records every acknowledged commit.

Cases (argv[1]):
  failover   kill -9 of the primary under writes: a new primary accepts a
             write within TTL + 2 s (measured, printed); the old one
             restarts, rejoins as a replica and converges.
  failover-wal  the same with the database in WAL mode.
  sigstop    SIGSTOP of the primary past its TTL, then SIGCONT: it is
             read-only, no write it acknowledged is later than the new
             primary's first, and it rejoins as a replica.
  etcd-down  etcd stopped: the primary is read-only by its deadline; etcd
             back: a primary is elected and writes resume.
  shutdown   SIGTERM of the primary: another node accepts writes within
             2 s (the lease is revoked, not left to expire).

After every case, the epoch checker (check_epochs) reads every node's LTX
log and lease.log: records with the same TXID have the same checksum on
every node; each record was committed by its writer while it held the
lease of some epoch (lease.log intervals), the epochs never go down along
the TXID order, and no two epochs' writes interleave in time.
"""

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, wait_for
from cluster_harness import ClusterNode, free_port  # noqa: F401 (te.free_port)

TTL = 2.0
PREFIX = "/ltxfs-it"
DB = "etcd.db"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def http_json(url, body=None, timeout=2.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data,
                                 method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Etcd:
    """One real etcd member on loopback ports, its own data directory.
    host, cmd_prefix: another address to listen on and a prefix of its
    command (regions_harness runs it in a network namespace)."""

    def __init__(self, host="127.0.0.1", cmd_prefix=()):
        self.root = tempfile.mkdtemp(prefix="ltxfs-it-etcd-")
        self.host, self.cmd_prefix = host, list(cmd_prefix)
        self.port = free_port()
        self.peer = free_port()
        self.url = "http://%s:%d" % (host, self.port)
        self.proc = None
        self.log_path = os.path.join(self.root, "etcd.log")

    def server_args(self):
        """etcd arguments beyond data dir, name and URLs (a subclass
        serving https adds its certificates here)."""
        return []

    def answers(self):
        """Whether etcd answers a client request on self.url."""
        try:
            http_json(self.url + "/v3/kv/range", {"key": "eA=="})
            return True
        except (OSError, ValueError):
            return False

    def start(self):
        """Starts etcd (server_args()) and waits until answers()."""
        check(os.access("/usr/bin/etcd", os.X_OK),
              "/usr/bin/etcd is missing (package etcd-server)")
        p = "http://%s:%d" % (self.host, self.peer)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd_prefix + ["/usr/bin/etcd", "--data-dir", os.path.join(self.root, "d"),
             "--name", "default",
             "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url] + self.server_args() +
            ["--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", "default=" + p],
            stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise TestFailure("etcd exited with %s; see %s"
                                  % (self.proc.returncode, self.log_path))
            return self.answers()
        wait_for(up, 30, "etcd to answer on %s" % self.url, interval=0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def close(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class EtcdNode(ClusterNode):
    """A ClusterNode with lease.type etcd, a candidate. Its configuration
    ends with the lease.etcd section (test_etcd_tls.py appends to it)."""

    def __init__(self, name, etcd, endpoints=None, auth=None, **kw):
        """kw: more of ClusterNode's (tls, token, http_yml)."""
        self._endpoints = endpoints or [etcd.url]
        self._auth = auth
        super().__init__(name, log_level="info", **kw)

    def lease_yml(self, name, primary_url):
        yml = ("lease:\n  type: etcd\n  candidate: true\n"
               "  advertise-url: %s\n  hostname: %s\n"
               "  etcd:\n    endpoints: [%s]\n    prefix: %s\n"
               "    ttl: %ds\n" % (self.url, name,
                                   ", ".join(self._endpoints), PREFIX,
                                   int(TTL)))
        if self._auth:
            yml += "    username: %s\n    password: %s\n" % self._auth
        return yml

    def fuse_conn(self):
        """The FUSE connection number of this node's mount, or None."""
        return h.fuse_connection(self.mnt)

    def info(self):
        """/info, or None when it does not answer within a second."""
        try:
            st, body = self.get("/info", timeout=1.0)
            return json.loads(body) if st == 200 else None
        except (OSError, ValueError):
            return None

    def role(self):
        i = self.info() if self.running() else None
        return i["role"] if i else None

    def ready_replica(self):
        """Whether /info (asked once) says a replica that is ready."""
        i = self.info() if self.running() else None
        return bool(i and i["role"] == "replica" and i.get("ready"))

    def ready(self):
        i = self.info() if self.running() else None
        return bool(i and i.get("ready"))

    def wait_ready_replica(self, timeout, what=None):
        wait_for(self.ready_replica, timeout, what or
                 "%s to rejoin as a ready replica" % self.name)


class Writer(threading.Thread):
    """Writes one row per transaction to whichever node says it is
    primary; records (id, node, ack time) for each acknowledged commit
    and counts the failures."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.stop_ev = threading.Event()
        self.acks = []          # (id, node name, monotonic ack time)
        self.fails = 0
        self.lock = threading.Lock()
        self.next_id = 1
        self.paused = threading.Event()

    def primary(self):
        for n in self.nodes:
            if n.running() and n.role() == "primary":
                return n
        return None

    def run(self):
        deadline = time.monotonic() + 600
        conn, on = None, None
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            if self.paused.is_set():
                if conn:
                    conn.close()
                    conn, on = None, None
                time.sleep(0.01)
                continue
            if conn is None:
                on = self.primary()
                if on is None:
                    time.sleep(0.02)
                    continue
                try:
                    conn = h.connect(on.path(DB), timeout=1.0)
                except sqlite3.Error:
                    conn = None
                    time.sleep(0.02)
                    continue
            i = self.next_id
            try:
                conn.execute("INSERT INTO t(id, v, at) VALUES(?, ?, ?)",
                             (i, "x" * 100, on.name))
                with self.lock:
                    self.acks.append((i, on.name, time.monotonic()))
                self.next_id += 1
            except sqlite3.Error:
                with self.lock:
                    self.fails += 1
                self.next_id += 1
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
                conn, on = None, None
                time.sleep(0.01)
        if conn:
            conn.close()

    def finish(self, timeout=60):
        self.stop_ev.set()
        self.join(timeout)
        check(not self.is_alive(), "the writer did not stop within %.0f s"
              % timeout)

    def acks_after(self, t):
        with self.lock:
            return len([a for a in self.acks if a[2] > t])

    def wait_acks_after(self, t, n, timeout, what):
        """Waits for n acknowledged writes after monotonic time t."""
        wait_for(lambda: self.acks_after(t) >= n, timeout, what)

    def first_ack_after(self, t, other_than=None):
        """The first ack after t from a node other than other_than (a
        write in flight when that node was killed may still be acked
        just after t)."""
        with self.lock:
            for a in self.acks:
                if a[2] > t and a[1] != other_than:
                    return a
        return None


def primaries(nodes):
    return [n for n in nodes if n.running() and n.role() == "primary"]


def wait_one_primary(nodes, timeout):
    def one():
        p = primaries(nodes)
        return p[0] if len(p) == 1 else None
    return wait_for(one, timeout, "exactly one primary", interval=0.05)


def start_writes(nodes, n, mode="DELETE"):
    """setup(nodes, mode), then a Writer started and n writes
    acknowledged. Returns (primary, writer)."""
    p = setup(nodes, mode)
    w = Writer(nodes)
    w.start()
    wait_for(lambda: len(w.acks) >= n, 30, "%d writes on the primary" % n)
    return p, w


def promote(q):
    """`ltxfs promote -c` q's configuration; fails the test unless it
    exits 0. Returns its stdout."""
    r = subprocess.run([h.ltxfs_bin(), "promote", "-c", q.cfg],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "ltxfs promote: exit %d: %s%s"
          % (r.returncode, r.stdout, r.stderr))
    return r.stdout


def median_max(took):
    took = sorted(took)
    return (took[(len(took) - 1) // 2] + took[len(took) // 2]) / 2, took[-1]


def setup(nodes, mode="DELETE"):
    for n in nodes:
        n.start()
    p = wait_one_primary(nodes, 20)
    c = h.connect(p.path(DB))
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT, "
              "at TEXT)")
    c.close()
    wait_synced(nodes, 30)
    return p


def wait_synced(nodes, timeout):
    """Waits until every running node shows one position. The writes
    must be over; the primary's last WAL commit is settled first (it
    shows in -pos just after COMMIT returns; ltxfs_harness.Node.settle),
    so the replicas are not compared with the one before it."""
    seen = {}
    for n in nodes:
        if n.running() and n.role() == "primary":
            try:
                n.settle(DB)
            except OSError:
                pass

    def same():
        seen.clear()
        for n in nodes:
            if not n.running():
                continue
            try:
                seen[n.name] = n.pos(DB)
            except (OSError, TestFailure) as e:
                seen[n.name] = str(e)
        return len(set(seen.values())) == 1
    try:
        wait_for(same, timeout, "every running node at the same position",
                 interval=0.05)
    except TestFailure:
        raise TestFailure("nodes not at one position within %.0f s: %r"
                          % (timeout, seen))


# -- the epoch checker ----------------------------------------------------

def lease_intervals(node):
    """[(epoch, start_ms, end_ms or None)] from node's lease.log."""
    out = []
    path = os.path.join(node.data, "lease.log")
    if not os.path.exists(path):
        return out
    with open(path) as f:
        text = f.read()
    # The node may be appending: a last line without its newline is
    # not read yet.
    for line in text.split("\n")[:-1]:
        parts = line.split()
        if len(parts) < 3:
            continue
        ms = int(parts[0])
        kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        if parts[1] == "primary":
            if out and out[-1][2] is None:
                out[-1] = (out[-1][0], out[-1][1], ms)
            out.append((int(kv["epoch"]), ms, None))
        elif parts[1] == "fenced" and out and out[-1][2] is None:
            out[-1] = (out[-1][0], out[-1][1], ms)
    return out


def node_id(node):
    with open(os.path.join(node.data, "node.id")) as f:
        return int(f.read().strip(), 16)


def log_records_live(node):
    """node's log records, read while it runs (a torn record or a segment
    removed under the read is read again; ltxfs_harness)."""
    return node.log_records_live(DB)


def check_epochs(nodes, log_nodes=None):
    """The checker described in the module comment; returns a summary.
    log_nodes: whose logs to read (default: all; they are stopped)."""
    by_id = {node_id(n): n for n in nodes}
    ivals = {node_id(n): lease_intervals(n) for n in nodes}
    post = {}                       # txid -> (checksum, node name)
    writes = {}                     # epoch -> [(ts, txid, writer)]
    nrec = 0
    for n in (log_nodes or nodes):
        last_epoch = 0
        for r in log_records_live(n):
            mn = int.from_bytes(r[16:24], "big")
            mx = int.from_bytes(r[24:32], "big")
            ts = int.from_bytes(r[32:40], "big", signed=True)
            writer = int.from_bytes(r[72:80], "big")
            cks = int.from_bytes(r[-16:-8], "big")
            nrec += 1
            if mx in post:
                check(post[mx][0] == cks,
                      "TXID %d: %s has checksum %016x, %s has %016x: two "
                      "nodes committed different content at one TXID"
                      % (mx, n.name, cks, post[mx][1], post[mx][0]))
            else:
                post[mx] = (cks, n.name)
            if mn == 1 and mx > 1:
                continue            # a snapshot: no single commit
            check(writer in ivals, "TXID %d on %s: writer %016x is not a "
                  "node of this test" % (mx, n.name, writer))
            ep = None
            for e, s, t in ivals[writer]:
                if s <= ts and (t is None or ts <= t):
                    ep = e
            check(ep is not None, "TXID %d on %s: committed by %s at %d, "
                  "outside any lease it held (%r)" % (
                      mx, n.name, by_id[writer].name, ts, ivals[writer]))
            check(ep >= last_epoch, "TXID %d on %s: epoch %d after epoch "
                  "%d" % (mx, n.name, ep, last_epoch))
            last_epoch = ep
            writes.setdefault(ep, set()).add((ts, mx, writer))
    spans = []
    for ep, ws in writes.items():
        check(len({w for _, _, w in ws}) == 1, "epoch %d has writes from "
              "several nodes: %r" % (ep, sorted(ws)))
        spans.append((ep, min(ws)[0], max(ws)[0]))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        check(a[2] <= b[1], "epoch %d wrote until %d but epoch %d wrote "
              "from %d: two primaries at once" % (a[0], a[2], b[0], b[1]))
    return "%d records, %d TXIDs, epochs %s" % (
        nrec, len(post), ",".join(str(s[0]) for s in spans))


def count_rows(node):
    c = h.connect(node.path(DB))
    try:
        return {r[0] for r in c.execute("SELECT id FROM t")}
    finally:
        c.close()


def finish_writes(nodes, w, since, n, what):
    """Waits for n writes acknowledged after monotonic time since, stops
    the writer, then converge_and_check(). Returns the writes lost."""
    w.wait_acks_after(since, n, 30, what)
    w.finish()
    return converge_and_check(nodes, w)


def converge_and_check(nodes, w):
    wait_one_primary(nodes, 20)
    wait_synced(nodes, 60)
    ids = None
    for n in nodes:
        h.integrity_ok(n.path(DB))
        got = count_rows(n)
        check(ids is None or got == ids, "%s has rows other nodes lack"
              % n.name)
        ids = got
    lost = [a for a in w.acks if a[0] not in ids]
    print("acknowledged writes: %d, failed attempts: %d, acknowledged but "
          "lost to asynchronous failover: %d" % (len(w.acks), w.fails,
                                                  len(lost)))
    for n in nodes:
        n.stop()
    print("epoch checker:", check_epochs(nodes))
    return len(lost)


# -- cases ------------------------------------------------------------------

def case_failover(nodes, etcd, mode="DELETE"):
    p, w = start_writes(nodes, 50, mode)
    t0 = time.monotonic()
    p.kill9()
    a = wait_for(lambda: w.first_ack_after(t0, p.name), TTL + 10,
                 "a write accepted by a new primary")
    took = a[2] - t0
    print("failover: kill -9 of %s to the first write accepted by %s: "
          "%.2f s (TTL %.0f s)" % (p.name, a[1], took, TTL))
    check(a[1] != p.name, "the write went to the killed node")
    check(took <= TTL + 2, "failover took %.2f s > TTL + 2 s" % took)
    w.wait_acks_after(t0, 20, 30, "20 writes on the new primary")
    p.start()
    p.wait_ready_replica(30)
    finish_writes(nodes, w, t0, 40, "more writes")


def case_failover_wal(nodes, etcd):
    """failover with the database in WAL mode: the killed primary
    restarts onto its own -wal and -shm and rejoins; every node's SQLite
    then reads the same rows (converge_and_check)."""
    case_failover(nodes, etcd, "WAL")


def case_sigstop(nodes, etcd):
    p, w = start_writes(nodes, 50)
    t0 = time.monotonic()
    os.kill(p.proc.pid, signal.SIGSTOP)
    probe = [1000000]

    def new_primary_write():
        # The writer is stuck in the stopped node's mount: probe here.
        for n in nodes:
            if n is p or n.role() != "primary":
                continue
            c = h.connect(n.path(DB), timeout=1.0)
            try:
                c.execute("INSERT INTO t(id, v, at) VALUES(?, 'probe', ?)",
                          (probe[0], n.name))
                return (n.name, time.monotonic())
            except sqlite3.Error:
                probe[0] += 1
                return None
            finally:
                c.close()
        return None
    try:
        a = wait_for(new_primary_write, TTL + 10,
                     "a write accepted by a new primary", interval=0.05)
        print("sigstop: %s stopped; first write on %s after %.2f s"
              % (p.name, a[0], a[1] - t0))
        # Keep it stopped a while past its TTL.
        time.sleep(0.5)
    finally:
        os.kill(p.proc.pid, signal.SIGCONT)
    a = (None, a[0], a[1])
    t1 = time.monotonic()
    wait_for(lambda: p.role() == "replica", 10,
             "%s to be a replica after SIGCONT" % p.name)
    # A late write straight to it fails.
    c = h.connect(p.path(DB), timeout=1.0)
    try:
        c.execute("INSERT INTO t(id, v, at) VALUES(-1, 'late', 'late')")
        raise TestFailure("a write on the resumed old primary succeeded")
    except sqlite3.Error as e:
        print("late write on %s failed as it should: %s" % (p.name, e))
    finally:
        c.close()
    # Its log before it is brought up to date: every commit in it was
    # made while it held its lease (an acknowledgement seen late may be
    # of a commit made before SIGSTOP).
    print("epoch checker on %s's own log after SIGCONT: %s"
          % (p.name, check_epochs(nodes, [p])))
    p.wait_ready_replica(30, "%s to catch up as a replica" % p.name)
    for ln in p.log_text().splitlines():
        if "left unfinished" in ln or "refused (EROFS)" in ln:
            print("sigstop: %s: %s" % (p.name, ln.split("  ", 1)[-1]))
    finish_writes(nodes, w, t1, 20, "writes after SIGCONT")


def case_etcd_down(nodes, etcd):
    p, w = start_writes(nodes, 30)
    t0 = time.monotonic()
    t0_wall_ms = time.time() * 1000
    etcd.stop()

    def ro():
        c = h.connect(p.path(DB), timeout=0.5)
        try:
            c.execute("INSERT INTO t(id, v, at) VALUES(-2, 'probe', 'x')")
            c.execute("DELETE FROM t WHERE id = -2")
            return False
        except sqlite3.Error as e:
            return "readonly" in str(e) or "read-only" in str(e)
        finally:
            c.close()
    wait_for(ro, TTL + 3, "the primary to turn read-only without etcd",
             interval=0.05)
    # When it did, by its own lease.log (the probe above has slack).
    fenced = [e for e in lease_intervals(p) if e[2] is not None]
    check(fenced, "%s: no fenced line in lease.log" % p.name)
    took = (fenced[-1][2] - t0_wall_ms) / 1000.0
    print("etcd-down: %s read-only %.2f s after etcd was stopped (TTL "
          "%.0f s)" % (p.name, took, TTL))
    check(took <= TTL, "read-only only after %.2f s > TTL" % took)
    n_before = len(w.acks)
    time.sleep(0.5)
    late = [x for x in w.acks if x[2] > t0 + TTL]
    check(not late, "writes acknowledged after the deadline: %r" % late[:3])
    etcd.start()
    t1 = time.monotonic()
    a = wait_for(lambda: w.first_ack_after(t1), TTL + 15,
                 "writes to resume once etcd is back")
    print("etcd-down: etcd back; writes resume after %.2f s on %s"
          % (a[2] - t1, a[1]))
    check(len(w.acks) > n_before, "no writes after etcd came back")
    finish_writes(nodes, w, t1, 20, "writes after etcd came back")


def case_shutdown(nodes, etcd):
    p, w = start_writes(nodes, 30)
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    a = wait_for(lambda: w.first_ack_after(t0, p.name), 10,
                 "a write on a new primary")
    took = a[2] - t0
    print("shutdown: SIGTERM of %s to the first write on %s: %.2f s"
          % (p.name, a[1], took))
    check(a[1] != p.name, "the write went to the stopping node")
    check(took < 2.0, "handoff took %.2f s >= 2 s" % took)
    rc = p.wait_exit(60)
    check(rc == 0, "%s exited %d" % (p.name, rc))
    p.start()
    p.wait_ready_replica(30)
    w.finish()
    lost = converge_and_check(nodes, w)
    check(lost == 0, "a clean stop lost %d acknowledged writes" % lost)


def insert_acked(w, node, first_id, n, v):
    """n rows (ids from first_id, value v) committed straight on node,
    each recorded in w.acks as acknowledged."""
    c = h.connect(node.path(DB))
    try:
        for i in range(first_id, first_id + n):
            c.execute("INSERT INTO t(id, v, at) VALUES(?, ?, ?)",
                      (i, v, node.name))
            w.acks.append((i, node.name, time.monotonic()))
    finally:
        c.close()


def case_diverge(nodes, etcd):
    """The primary commits what no replica has (they are stopped), dies;
    a new primary commits other transactions at the same TXIDs; the old
    one rejoins: detected by checksum, re-snapshotted, the discarded
    range logged."""
    p, w = start_writes(nodes, 20)
    w.finish()
    wait_synced(nodes, 30)
    others = [n for n in nodes if n is not p]
    for n in others:
        n.stop()     # (a stopped process would still get the records
                     # through its socket buffers)
    insert_acked(w, p, 500000, 10, "lost")
    before = p.pos(DB)
    p.kill9()
    for n in others:
        n.start()
    q = wait_one_primary(others, TTL + 10)
    insert_acked(w, q, 600000, 15, "new")
    print("diverge: %s was at TXID %d with 10 unreplicated commits; %s is "
          "now at TXID %d" % (p.name, before[0], q.name, q.pos(DB)[0]))
    # It rejoins under writes: its snapshot is taken while transactions
    # come and go.
    w2 = Writer(nodes)
    w2.start()
    wait_for(lambda: len(w2.acks) >= 10, 30, "writes on %s" % q.name)
    p.start()
    p.wait_ready_replica(30)
    t2 = time.monotonic()
    w2.wait_acks_after(t2, 10, 30, "writes after the rejoin")
    w2.finish()
    w.acks.extend(w2.acks)
    wait_synced(nodes, 30)
    lines = [ln for ln in p.log_text().splitlines() if "are discarded" in ln]
    check(lines, "%s did not log the discarded TXID range" % p.name)
    print("diverge: %s logged: %s" % (p.name, lines[0].split("  ", 1)[-1]))
    check(q.pos(DB) == p.pos(DB), "not converged")
    converge_and_check(nodes, w)


def start_bench(nodes):
    """setup(nodes) and a Writer started; returns ($TRIALS or 10, it)."""
    trials = int(os.environ.get("TRIALS", "10"))
    setup(nodes)
    w = Writer(nodes)
    w.start()
    return trials, w


def kill_trials(nodes, w, trials, writes):
    """trials times: once `writes` writes went to the primary and the
    others are ready, kill -9 of the primary, then its restart; returns
    the seconds from each kill to the first write on a new primary."""
    took = []
    for i in range(trials):
        p = wait_one_primary(nodes, 30)
        wait_for(lambda: len([x for x in w.acks if x[1] == p.name])
                 >= writes, 30, "writes on %s" % p.name)
        for n in nodes:
            if n is not p:
                wait_for(n.ready, 30, "%s ready" % n.name)
        t0 = time.monotonic()
        p.kill9()
        a = wait_for(lambda: w.first_ack_after(t0, p.name), TTL + 20,
                     "a write on a new primary")
        took.append(a[2] - t0)
        print("trial %d: %.2f s (%s -> %s), %d acknowledged so far"
              % (i + 1, a[2] - t0, p.name, a[1], len(w.acks)))
        p.start()
        wait_for(p.ready, 60, "%s ready again" % p.name)
    return took


def bench_failover(nodes, etcd):
    """Not a test: kill -9 of the primary under writes, TRIALS times;
    the time to the first write accepted by the new primary, median and
    max, and the acknowledged writes lost (docs/BENCHMARKS.md). As
    bench-failover-sync, with synchronous replication."""
    trials, w = start_bench(nodes)
    took = kill_trials(nodes, w, trials, 10)
    w.finish()
    med, mx = median_max(took)
    print("failover at TTL %.0f s over %d trials: median %.2f s, max %.2f s"
          % (TTL, len(took), med, mx))
    converge_and_check(nodes, w)


def case_kill_sync(nodes, etcd):
    """replication.sync.min-replicas 1 (docs/SYNC.md): kill -9 of the
    primary under the writer, TRIALS (default 3) times, each time once
    the others are ready; at the end every node has every acknowledged
    write (0 lost) and the epoch checker holds."""
    setup(nodes)
    w = Writer(nodes)
    w.start()
    kill_trials(nodes, w, int(os.environ.get("TRIALS", "3")), 20)
    w.finish()
    lost = converge_and_check(nodes, w)
    check(lost == 0, "%d acknowledged writes lost with synchronous "
          "replication" % lost)


def case_lease_loss_sync(nodes, etcd):
    """replication.sync (timeout 10 s): with both replicas stopped no
    commit is acknowledged; then etcd stops too. A commit waiting for
    acknowledgements fails once the primary's lease deadline passes
    (within the TTL), not at the 10 s timeout: a fenced primary never
    confirms one (ltxfs_sync_commits_total{result="lease"}); its row is
    nowhere once everything is back."""
    p, w = start_writes(nodes, 20)
    w.finish()
    others = [n for n in nodes if n is not p]
    c = h.connect(p.path(DB), timeout=30)
    for n in others:
        os.kill(n.proc.pid, signal.SIGSTOP)
    try:
        etcd.stop()
        t0 = time.monotonic()
        try:
            c.execute("INSERT INTO t(id, v, at) VALUES(-5, 'fenced', 'x')")
            raise TestFailure("a commit succeeded with no replica and no "
                              "etcd")
        except sqlite3.Error as e:
            took = time.monotonic() - t0
            print("lease-loss-sync: the waiting commit failed after %.2f s "
                  "(TTL %.0f s, sync timeout 10 s): %s" % (took, TTL, e))
            check(took <= TTL + 1, "failed after %.2f s, not at the lease "
                  "deadline" % took)
        c.close()
        check(p.metric('ltxfs_sync_commits_total{result="lease"}', 0) >= 1,
              "the failure not counted as a lease loss")
    finally:
        for n in others:
            os.kill(n.proc.pid, signal.SIGCONT)
        etcd.start()
    # The failed commit left its journal hot (DELETE mode). Still the
    # primary (its lease did not lapse while etcd was down), the node
    # lets the next access roll it back, as an application's would; a
    # replica now, the node rolls it back itself (fs_db_abandon_txn).
    if wait_one_primary(nodes, 30) is p:
        c = h.connect(p.path(DB))
        h.one(c, "SELECT count(*) FROM t")
        c.close()
    wait_synced(nodes, 60)
    for n in nodes:
        c = h.connect(n.path(DB))
        check(h.one(c, "SELECT count(*) FROM t WHERE id = -5") == 0,
              "%s has the fenced primary's row" % n.name)
        c.close()


def case_elect_defer(nodes, etcd):
    """replication.sync.min-replicas 1: the candidates compare their
    positions before one takes a free lease (replica/elect.c). A
    candidate key in etcd of a node further ahead (a later epoch) that
    never takes the lease (it died: its key lives one TTL) keeps the
    others from taking it: they say so in the log; once the key expires
    one of them takes it, with every acknowledged write."""
    setup(nodes)
    w = Writer(nodes)
    w.start()
    p = wait_one_primary(nodes, 30)
    wait_for(lambda: len(w.acks) >= 20, 30, "20 writes")
    for n in nodes:
        if n is not p:
            wait_for(n.ready, 30, "%s ready" % n.name)
    lease = http_json(etcd.url + "/v3/lease/grant",
                      {"TTL": str(int(TTL) + 2)})["ID"]
    fake = json.dumps({"node": "0000000000000001", "epoch": 1 << 40,
                       "dbs": {}})
    http_json(etcd.url + "/v3/kv/put", {
        "key": b64(PREFIX + "/candidate/0000000000000001"),
        "value": b64(fake), "lease": lease})
    t0 = time.monotonic()
    p.kill9()
    others = [n for n in nodes if n is not p]
    wait_for(lambda: all(n.log_count(r"candidate 0000000000000001 is "
                                     r"further ahead") > 0
                         for n in others), TTL + 10,
             "both candidates deferring to the one further ahead")
    check(not primaries(nodes), "a node took the lease while a candidate "
          "further ahead was there")
    a = wait_for(lambda: w.first_ack_after(t0, p.name), 3 * TTL + 20,
                 "a write on a new primary once the key expired")
    print("deferred: the first write on %s came %.2f s after the kill "
          "(TTL %.0f s, the ahead key's %.0f s)" % (a[1], a[2] - t0, TTL,
                                                    TTL + 2))
    check(a[2] - t0 >= TTL, "a new primary %.2f s after the kill, before "
          "the key ahead expired" % (a[2] - t0))
    p.start()
    wait_for(p.ready, 60, "%s ready again" % p.name)
    w.wait_acks_after(a[2], 10, 30, "10 more writes")
    w.finish()
    lost = converge_and_check(nodes, w)
    check(lost == 0, "%d acknowledged writes lost" % lost)


def case_auth(nodes, etcd):
    """etcd with authentication on; the first endpoint listed is dead (the
    client fails over); a node with a wrong password takes no part."""
    def ctl(*args):
        r = subprocess.run(["etcdctl", "--endpoints", etcd.url] +
                           list(args), capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
        check(r.returncode == 0, "etcdctl %s: %s%s" % (" ".join(args),
                                                       r.stdout, r.stderr))
    check(shutil.which("etcdctl") is not None,
          "etcdctl is missing (package etcd-client)")
    ctl("user", "add", "root:rootpw")
    ctl("user", "add", "ltx:ltxpw")
    ctl("role", "add", "ltx")
    ctl("role", "grant-permission", "ltx", "--prefix=true", "readwrite",
        PREFIX)
    ctl("user", "grant-role", "ltx", "ltx")
    ctl("auth", "enable")
    dead = "http://127.0.0.1:%d" % free_port()
    good = [EtcdNode("a%d" % i, etcd, [dead, etcd.url], ("ltx", "ltxpw"))
            for i in range(2)]
    bad = EtcdNode("bad", etcd, [dead, etcd.url], ("ltx", "wrong"))
    nodes.extend(good + [bad])
    for n in good + [bad]:
        n.start()
    p = wait_one_primary(good, 20)
    c = h.connect(p.path(DB))
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, at TEXT)")
    c.close()
    wait_synced(good, 30)
    wait_for(lambda: "refused user" in bad.log_text(), 30,
             "the node with a wrong password to log the refusal")
    # /info asked once, until it answers (1 s each, a loaded machine).
    bi = wait_for(bad.info, 30, "%s: /info" % bad.name)
    check(bi["role"] == "replica" and not bi.get("cluster"),
          "the node with a wrong password joined: %r" % bi)
    print("auth: %s is primary through the second endpoint; the node with "
          "a wrong password stays out" % p.name)
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    q = wait_one_primary([n for n in good if n is not p], 10)
    print("auth: handoff to %s in %.2f s" % (q.name, time.monotonic() - t0))
    p.wait_exit(60)
    for n in [q, bad]:
        n.stop()


def case_other_cluster(nodes, etcd):
    """A node whose data directory belongs to another cluster is refused:
    it logs why, stays read-only and never takes the lease."""
    a, b = nodes[0], nodes[1]
    del nodes[2:]
    with open(os.path.join(b.data, "cluster.id"), "w") as f:
        f.write("0123456789abcdef\n")
    a.start()
    wait_one_primary([a], 20)
    b.start()
    wait_for(lambda: "refusing to take part" in b.log_text(), 30,
             "the node of another cluster to be refused")
    a.stop()                      # the key goes: b must not take it
    # Nothing to wait for: b must stay a replica over a whole TTL and
    # more, while the lease is free; /info is asked until it answers.
    time.sleep(TTL + 1)
    bi = wait_for(b.info, 30, "%s: /info" % b.name)
    check(bi["role"] == "replica", "the node of another cluster became %s"
          % bi["role"])
    try:
        c = h.connect(b.path(DB), timeout=1.0)
        c.execute("CREATE TABLE x(a)")
        c.close()
        raise TestFailure("a write on the refused node succeeded")
    except sqlite3.Error as e:
        print("other-cluster: write on the refused node failed: %s" % e)
    print("other-cluster: %s" % [ln.split("  ", 1)[-1] for ln in
                                 b.log_text().splitlines()
                                 if "refusing to take part" in ln][0])
    b.stop()


def case_promote(nodes, etcd):
    """`ltxfs promote` (POST /promote) on a replica under writes: it
    becomes the primary,
    the first write on it within 1 s, no acknowledged write lost, the
    former primary a replica."""
    p, w = start_writes(nodes, 30)
    q = [n for n in nodes if n is not p][0]
    wait_for(q.ready, 30, "%s ready" % q.name)
    t0 = time.monotonic()
    out = promote(q)
    qi = wait_for(q.info, 30, "%s: /info" % q.name)
    check(qi["role"] == "primary", "%s is %s after ltxfs promote (%s)"
          % (q.name, qi["role"], out.strip()))
    a = wait_for(lambda: w.first_ack_after(t0, p.name), 10,
                 "a write on the promoted node")
    took = a[2] - t0
    print("promote: ltxfs promote on %s to the first write on %s: %.2f s"
          % (q.name, a[1], took))
    check(a[1] == q.name, "the first write went to %s" % a[1])
    check(took < 1.0, "handoff took %.2f s >= 1 s" % took)
    p.wait_ready_replica(30, "%s to be a ready replica" % p.name)
    lost = finish_writes(nodes, w, t0, 20, "writes after the handoff")
    check(lost == 0, "the handoff lost %d acknowledged writes" % lost)


def bench_promote(nodes, etcd):
    """Not a test: `ltxfs promote` of a replica under writes, TRIALS
    times; the time to the first write accepted by it, median and max."""
    trials, w = start_bench(nodes)
    took = []
    for i in range(trials):
        p = wait_one_primary(nodes, 30)
        q = [n for n in nodes if n is not p][i % 2]
        wait_for(q.ready, 30, "%s ready" % q.name)
        n0 = len(w.acks)
        wait_for(lambda: len(w.acks) >= n0 + 10, 30, "writes")
        t0 = time.monotonic()
        promote(q)
        a = wait_for(lambda: w.first_ack_after(t0, p.name), 10,
                     "a write on %s" % q.name)
        took.append(a[2] - t0)
        print("trial %d: %.3f s (%s -> %s)" % (i + 1, a[2] - t0, p.name,
                                               a[1]))
    w.finish()
    med, mx = median_max(took)
    print("handoff (ltxfs promote to the first write on the new primary) "
          "over %d trials: median %.3f s, max %.3f s"
          % (len(took), med, mx))
    lost = converge_and_check(nodes, w)
    check(lost == 0, "handoffs lost %d acknowledged writes" % lost)


def case_chaos(nodes, etcd):
    """Suite slow: CHAOS_SECONDS (default 300) of random kill -9, SIGSTOP
    past the TTL and restarts of nodes every few seconds under the
    writer; then every node converges to one integrity-checked content,
    the epoch checker holds, and the acknowledged writes lost to
    asynchronous failover are counted. As chaos-sync, with synchronous
    replication (min-replicas 1), none may be lost."""
    import random
    seconds = float(os.environ.get("CHAOS_SECONDS", "300"))
    seed = int(os.environ.get("CHAOS_SEED", str(int(time.time()))))
    rnd = random.Random(seed)
    print("chaos: %.0f s, seed %d" % (seconds, seed))
    setup(nodes)
    w = Writer(nodes)
    w.start()
    end = time.monotonic() + seconds
    actions = {"kill": 0, "stop": 0, "restart": 0}
    while time.monotonic() < end:
        time.sleep(rnd.uniform(1.0, 4.0))
        up = [n for n in nodes if n.running()]
        down = [n for n in nodes if not n.running()]
        choice = rnd.choice(["kill", "stop", "restart", "restart"]
                            if down else ["kill", "stop"])
        if choice in ("kill", "stop") and len(up) < 2:
            choice = "restart"
        if choice == "restart" and down:
            n = rnd.choice(down)
            n.start()
        elif choice == "kill":
            n = rnd.choice(up)
            n.kill9()
        elif choice == "stop":
            n = rnd.choice(up)
            os.kill(n.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(TTL + rnd.uniform(0.2, 1.5))
            finally:
                os.kill(n.proc.pid, signal.SIGCONT)
        else:
            continue
        actions[choice] += 1
        print("chaos: %6.1f s left: %s %s; acks %d" % (
            end - time.monotonic(), choice, n.name, len(w.acks)))
    for n in nodes:
        if not n.running():
            n.start()
    wait_one_primary(nodes, 30)
    a0 = len(w.acks)
    wait_for(lambda: len(w.acks) >= a0 + 10, 60, "writes after the chaos")
    w.finish()
    print("chaos: %r" % actions)
    lost = converge_and_check(nodes, w)
    print("chaos: acknowledged writes lost to asynchronous failover: %d"
          % lost)
    if os.environ.get("CHAOS_SYNC"):
        check(lost == 0, "%d acknowledged writes lost with synchronous "
              "replication" % lost)


CASES = {"failover": case_failover, "failover-wal": case_failover_wal,
         "sigstop": case_sigstop,
         "etcd-down": case_etcd_down, "shutdown": case_shutdown,
         "diverge": case_diverge, "bench-failover": bench_failover,
         "auth": case_auth, "other-cluster": case_other_cluster,
         "promote": case_promote, "bench-promote": bench_promote,
         "chaos": case_chaos, "kill-sync": case_kill_sync,
         "elect-defer": case_elect_defer, "chaos-sync": case_chaos,
         "bench-failover-sync": bench_failover,
         "lease-loss-sync": case_lease_loss_sync}
# Cases run with synchronous replication (min-replicas 1).
SYNC_CASES = ("kill-sync", "elect-defer", "chaos-sync",
              "bench-failover-sync", "lease-loss-sync")
SYNC_YML = ("replication:\n  sync:\n    min-replicas: 1\n"
            "    timeout: 10s\n")


def run():
    global TTL
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    TTL = float(os.environ.get("TTL", TTL))
    check(case in CASES, "usage: test_etcd.py %s" % "|".join(CASES))
    etcd = Etcd()
    nodes = []
    try:
        etcd.start()
        kw = {"extra_yml": SYNC_YML} if case in SYNC_CASES else {}
        if case == "chaos-sync":
            os.environ["CHAOS_SYNC"] = "1"
        if case != "auth":
            nodes = [EtcdNode("n%d" % i, etcd, **kw) for i in range(3)]
        CASES[case](nodes, etcd)
    except BaseException:
        for n in nodes:
            h.print_log_tail(n, 40)
        sys.stdout.write("---- etcd log tail ----\n")
        try:
            with open(etcd.log_path, "rb") as f:
                sys.stdout.write(f.read()[-3000:].decode("utf-8",
                                                          "replace"))
        except OSError:
            pass
        raise
    finally:
        for n in nodes:
            n.close()
        etcd.close()


if __name__ == "__main__":
    h.main(run)
