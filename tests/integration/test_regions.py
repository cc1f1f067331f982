"""Emulated regions (suite regions, regions_harness.py): three regions a,
b, c of two nodes each, every node in its own network namespace, one-way
delays a-b 30 ms, a-c 70 ms, b-c 50 ms, under 1 ms inside a region.

    test_regions.py CASE

  delay
      The delay is real: TCP connect times (one round trip) between
      regions x and y are at least 2 * delay(x, y) and under
      2 * delay(x, y) + 20 ms (median); inside a region under 5 ms. An
      HTTP download of 8 MiB from a0 to c0 (curl in c0's namespace) runs
      at more than 1 MB/s; its speed is printed. A SIGKILLed nfdelay
      black-holes nothing (--queue-bypass): traffic into its node goes
      on, only the other direction still delayed.
  replicate
      ltxfs on all six nodes (primary a0, static lease) replicates a
      workload of incompressible rows across the delays and converges:
      every node at the primary's position, the same rows, read by
      sqlite3 and by a small HTTP app (regions_app.py) running in the
      far region's namespaces on their mounts (the app on the primary
      wrote a row; the one on replica c1 reads it and cannot write).
      The time from a commit's start on the primary to its position on
      each replica is measured and printed (median, max): in a far
      region at least the one-way delay. The byte counters show what
      crosses into region c today: each of c's two nodes received at
      least the random bytes written, from region a (one stream copy
      per replica; cascading replicas would make it one per region),
      and nothing from region b.
  etcd-failover
      The etcd lease across regions: etcd in a1's namespace, only region
      a's nodes candidates. The primary (in a) is SIGKILLed: the other
      node of a takes the lease, its first write reaches every replica
      (the times are printed), the killed node rejoins as a replica, and
      all six nodes converge with the same rows; no node of b or c ever
      is primary.
"""

import os
import sqlite3
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import ltxfs_harness as h
from ltxfs_harness import check, wait_for
from cluster_harness import http
import test_etcd as te
from regions_harness import RegionCluster, Regions, start_etcd

REGIONS = {"a": 2, "b": 2, "c": 2}
DELAYS = {("a", "b"): 30, ("a", "c"): 70, ("b", "c"): 50}
DB = "regions.db"


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def listen_everywhere(net, port):
    """The app of start_app in every node's namespace, as a TCP listener
    (its database, never opened, is a path that does not exist)."""
    for n in net.nodes.values():
        net.start_app(n, "/nonexistent/regions.db", port)


def check_rtt(net, src, dst, port, slack_ms=20.0):
    ow = net.one_way_ms(src.region, dst.region)
    ts = net.tcp_connect_ms(src, dst, port)
    med = statistics.median(ts)
    log("rtt %s -> %s: one-way %d ms, connects %s ms (median %.1f)"
        % (src.name, dst.name, ow, " ".join("%.1f" % t for t in ts), med))
    if ow == 0:
        check(med < 5.0, "%s -> %s: median connect %.1f ms inside a "
              "region (expected < 5)" % (src.name, dst.name, med))
        return med
    check(min(ts) >= 2 * ow, "%s -> %s: a connect took %.1f ms < 2 x %d "
          "ms" % (src.name, dst.name, min(ts), ow))
    check(med < 2 * ow + slack_ms, "%s -> %s: median connect %.1f ms >= "
          "2 x %d + %.0f ms" % (src.name, dst.name, med, ow, slack_ms))
    return med


def throughput(net, src, dst, mb=8):
    """HTTP download of mb MiB of src's file by curl in dst's namespace;
    prints MB/s. A floor of 1 MB/s catches a delayer that collapses TCP
    (delaying outbound packets gave 0.14 MB/s)."""
    d = tempfile.mkdtemp(prefix="ltxfs-regions-www-")
    try:
        with open(os.path.join(d, "blob"), "wb") as f:
            f.write(os.urandom(mb << 20))
        net.spawn(src, [sys.executable, "-m", "http.server", "--bind",
                        src.ip, "--directory", d, "8081"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  what="http.server on " + src.name)

        def up():
            try:
                socket.create_connection((src.ip, 8081), timeout=2).close()
                return True
            except OSError:
                return False
        wait_for(up, 30, "http.server on %s" % src.name, interval=0.05)
        out = net.exec(dst, ["curl", "-sS", "-o", "/dev/null", "-w",
                             "%{size_download} %{speed_download}",
                             "http://%s:8081/blob" % src.ip], timeout=120)
        size, speed = out.split()
        check(int(size) == mb << 20, "downloaded %s bytes of %d"
              % (size, mb << 20))
        log("throughput %s -> %s (RTT %d ms): %.1f MB/s over HTTP"
            % (src.name, dst.name,
               2 * net.one_way_ms(src.region, dst.region),
               float(speed) / 1e6))
        check(float(speed) > 1e6, "%s -> %s: %.2f MB/s (under 1 MB/s)"
              % (src.name, dst.name, float(speed) / 1e6))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def delay():
    port = 8080
    with Regions(REGIONS, DELAYS) as net:
        listen_everywhere(net, port)
        n = net.node
        for s, d in (("a0", "a1"), ("b1", "b0"), ("c0", "c1"),
                     ("a0", "b0"), ("b1", "a1"), ("a1", "c0"),
                     ("c1", "a0"), ("b0", "c1"), ("c0", "b1")):
            check_rtt(net, n(s), n(d), port)
        throughput(net, n("a0"), n("c0"))
        # A dead delayer: c0's inbound delay goes, a0's stays.
        net.kill_delayer(n("c0"))
        ts = net.tcp_connect_ms(n("a0"), n("c0"), port)
        med = statistics.median(ts)
        log("rtt a0 -> c0 with c0's nfdelay killed: %s ms"
            % " ".join("%.1f" % t for t in ts))
        check(min(ts) >= 70 and med < 90, "a0 -> c0 after c0's nfdelay "
              "died: connects %s ms (expected 70 to 90: a0's inbound "
              "delay only)" % ts)
        check(net.bytes_in_from(n("c0"), "a") > 0,
              "c0: no bytes counted from region a")


def write_rows(conn, txns, rows, size):
    for _ in range(txns):
        conn.execute("BEGIN")
        for _ in range(rows):
            conn.execute("INSERT INTO t(region, v) VALUES ('a', "
                         "randomblob(?))", (size,))
        conn.execute("COMMIT")


def commit_latencies(cl, conn, samples):
    """For each of samples single-row commits on the primary: seconds from
    the commit's start to its position on each replica. Returns {name:
    [seconds]}."""
    out = {r.name: [] for r in cl.replicas}
    for i in range(samples):
        t0 = time.monotonic()
        conn.execute("INSERT INTO t(region, v) VALUES ('a', randomblob(64))")
        want = cl.primary.settled_pos(DB)
        seen = {}

        def all_there():
            for r in cl.replicas:
                # The time after the read that saw the position: taken
                # before it, a slow read of another replica's file made
                # a commit look faster than the delay (69.9 ms < 70).
                if r.name not in seen and r.pos_or_none(DB) == want:
                    seen[r.name] = time.monotonic() - t0
            return len(seen) == len(cl.replicas)
        wait_for(all_there, 30, "commit %d on every replica" % i,
                 interval=0.002)
        for k, v in seen.items():
            out[k].append(v)
    return out


def replicate():
    with Regions(REGIONS, DELAYS) as net, RegionCluster(net) as cl:
        t = time.monotonic()
        cl.start()
        log("6 nodes up and streaming in %.1fs" % (time.monotonic() - t))
        p = cl.primary.path(DB)
        # The app on the primary writes a row of its own table.
        a_url = net.start_app(cl.primary.netnode, p)
        st, body = http(a_url + "/", method="POST", data=b"hello from a")
        check(st == 200, "POST to the app on a0: %d %r" % (st, body))
        conn = h.connect(p)
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, region TEXT, "
                     "v BLOB)")
        t = time.monotonic()
        write_rows(conn, 60, 8, 4096)
        log("workload: 60 transactions, %d bytes, in %.1fs"
            % (os.path.getsize(p), time.monotonic() - t))
        took = cl.wait_synced(DB, timeout=60)
        log("every replica at the primary's position %.2fs after the "
            "last commit" % took)

        lat = commit_latencies(cl, conn, 10)
        for r in cl.replicas:
            ms = [x * 1000 for x in lat[r.name]]
            log("commit -> position on %s (region %s, one-way %d ms): "
                "median %.1f ms, max %.1f ms" % (
                    r.name, r.netnode.region,
                    net.one_way_ms("a", r.netnode.region),
                    statistics.median(ms), max(ms)))
            ow = net.one_way_ms("a", r.netnode.region)
            check(min(ms) >= ow, "%s: a commit reached it in %.1f ms, "
                  "under the one-way delay %d ms" % (r.name, min(ms), ow))
        conn.close()

        want_pos = cl.primary.settled_pos(DB)
        cl.wait_synced(DB, timeout=60)
        want = h.content_digest(p)
        rc = h.ro_connect(p)
        count = h.one(rc, "SELECT count(*) FROM t")
        rc.close()
        for r in cl.replicas:
            check(r.pos(DB) == want_pos, "%s: position %s, primary %s"
                  % (r.name, r.pos(DB), want_pos))
            check(h.content_digest(r.path(DB), ro=True) == want,
                  "%s: rows differ from the primary's" % r.name)
        # Processes in the far region's namespaces see the mounts.
        c0, c1 = cl.region("c")
        out = net.exec(c0.netnode, ["sqlite3", "-readonly", c0.path(DB),
                                    "SELECT count(*) FROM t"])
        check(out.strip() == str(count), "sqlite3 in c0's namespace: %r, "
              "expected %d rows" % (out, count))
        url = net.start_app(c1.netnode, c1.path(DB))
        st, _ = http(url + "/", method="POST", data=b"x")
        check(st == 500, "a POST to the app on replica c1 answered %d "
              "(its database is read-only)" % st)
        st, body = http(url + "/")
        check(st == 200 and body == b'{"rows": [[1, "hello from a"]]}',
              "GET of the app on c1: %d %r" % (st, body[:200]))

        size = os.path.getsize(p)
        payload = 60 * 8 * 4096     # random bytes: the stream cannot
        into_c = 0                  # compress them
        for r in (c0, c1):
            got_a = net.bytes_in_from(r.netnode, "a")
            got_b = net.bytes_in_from(r.netnode, "b")
            into_c += got_a
            log("%s received %d bytes from region a, %d from region b "
                "(database %d bytes, %d of them random)"
                % (r.name, got_a, got_b, size, payload))
            check(got_a >= payload, "%s: %d bytes from region a, less "
                  "than the random bytes written (%d)"
                  % (r.name, got_a, payload))
            check(got_b < 64 * 1024, "%s: %d bytes from region b (no "
                  "node of b sends to c)" % (r.name, got_b))
        log("bytes into region c from region a: %d = %.2f x the random "
            "bytes written (one stream copy per replica)"
            % (into_c, into_c / payload))
        cl.stop()


def insert_when_writable(node, v, timeout=30):
    """One row on a new primary, retried while its mount is still
    read-only (it took the lease a moment ago)."""
    def attempt():
        try:
            c = h.connect(node.path(DB), timeout=5)
            try:
                c.execute("INSERT INTO t(region, v) VALUES (?, "
                          "randomblob(64))", (v,))
            finally:
                c.close()
            return True
        except sqlite3.OperationalError:
            return False
    wait_for(attempt, timeout, "%s: a write on the new primary" % node.name,
             interval=0.05)


def etcd_failover():
    with Regions(REGIONS, DELAYS) as net:
        etcd = start_etcd(net, net.node("a1"))
        try:
            with RegionCluster(net, etcd=etcd, candidates=["a"]) as cl:
                t = time.monotonic()
                cl.start()
                p = cl.primary
                log("6 nodes up, %s primary, in %.1fs"
                    % (p.name, time.monotonic() - t))
                check(p.netnode.region == "a", "%s (region %s) took the "
                      "lease; only region a's nodes are candidates"
                      % (p.name, p.netnode.region))
                conn = h.connect(p.path(DB))
                conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, "
                             "region TEXT, v BLOB)")
                write_rows(conn, 20, 4, 1024)
                conn.close()
                cl.wait_synced(DB, timeout=60)

                t0 = time.monotonic()
                p.kill9()
                q = cl.wait_primary(te.TTL + 15)
                took = time.monotonic() - t0
                check(q.netnode.region == "a", "%s (region %s) took the "
                      "lease after %s died" % (q.name, q.netnode.region,
                                               p.name))
                insert_when_writable(q, "after")
                cl.wait_synced(DB, timeout=60,
                               nodes=[n for n in cl.replicas
                                      if n.running()])
                log("kill -9 of primary %s: %s primary after %.2fs, its "
                    "first write on every replica (c0, c1: 70 ms away) "
                    "%.2fs after the kill (TTL %.0f s)"
                    % (p.name, q.name, took, time.monotonic() - t0,
                       te.TTL))
                p.start()
                cl.wait_connected(p)
                cl.wait_synced(DB, timeout=60)
                want = h.content_digest(q.path(DB))
                for n in cl.replicas:
                    check(n.role() == "replica", "%s: role %s"
                          % (n.name, n.role()))
                    check(n.netnode.region == "a" or
                          n.log_count("acquired the lease") == 0,
                          "%s (region %s, not a candidate) acquired the "
                          "lease" % (n.name, n.netnode.region))
                    check(h.content_digest(n.path(DB), ro=True) == want,
                          "%s: rows differ from the primary's" % n.name)
                check(q.log_count("acquired the lease") == 1,
                      "%s: no 'acquired the lease' in its log" % q.name)
                cl.stop()
        finally:
            etcd.close()


CASES = {"delay": delay, "replicate": replicate,
         "etcd-failover": etcd_failover}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_regions.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    log("regions/%s" % sys.argv[1])
    h.main(CASES[sys.argv[1]])
