#!/usr/bin/env python3
"""Benchmark of the write-forwarding proxy (docs/BENCHMARKS.md, "The
proxy"), pointed at any nodes:

  bench_proxy.py --direct URL --proxy URL --primary-direct URL \\
                 --replica-proxy URL [--seconds S] [--writes N]

    (a) local reads: GET /ping (and GET /rows/1, a SQLite read) over
        keep-alive connections (--conns, default 1,4: one, then four at
        once, a client process each), to the application directly
        (--direct) and through the proxy of the same node (--proxy),
        alternating in rounds of S/10 seconds; requests/s of each and
        their ratio.
    (b) forwarded writes: N times POST /rows through a replica's proxy
        (--replica-proxy) and N times directly to the primary's
        application (--primary-direct), alternating; median and p99 of
        each and of the difference. Then the read-your-writes wait: a
        GET /rows/ID with the write's cookie right after each forwarded
        write, median and p99, and what the replica's metrics say.

  bench_proxy.py --loopback [--seconds S] [--writes N]
    starts a primary and a replica on loopback with the test harness
    (tests/integration; needs LTXFS_BIN, /dev/fuse, root), an
    application (tests/integration/proxy_app.py) behind each proxy, and
    runs the above against them.

  bench_proxy.py --regions [--seconds S] [--writes N]
    builds the emulated regions of the regions tests
    (tests/integration/regions_harness.py; needs root, NFDELAY_BIN,
    LTXFS_BIN): regions a, b, c of two nodes each, one-way delays a-b 30,
    a-c 70, b-c 50 ms; ltxfs on every node (primary a0), each with its
    proxy (:8090) in front of proxy_app.py (127.0.0.1:8080) in its
    namespace. Then (b) with the client of the direct writes in a0's
    namespace (a0's application) and the client of the forwarded ones in
    c1's (c1's proxy, forwarded to a0's across 140 ms of RTT), (b') the
    forwarded writes again, each on a new client connection (the proxy's
    pool of connections to the primary's proxy), and (a) at c1. The
    replica's own measure of the cookie waits (ltxfs_proxy_read_wait_*)
    is printed too.

The client is a minimal HTTP/1.1 one on a raw socket, so that its own
cost is small next to what is measured; with --regions its sockets are
made in a node's network namespace (regions_harness.inside).
"""

import argparse
import multiprocessing
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
COOKIE = "__ltxfs_txid"


def in_ns(netnode):
    """A context in which new sockets are made in netnode's namespace
    (None: this process's)."""
    if netnode is None:
        import contextlib
        return contextlib.nullcontext()
    from regions_harness import inside
    return inside(netnode)


class Conn:
    """One keep-alive HTTP/1.1 connection (from netnode's namespace)."""

    def __init__(self, url, netnode=None):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        with in_ns(netnode):
            self.s = socket.create_connection((self.host, self.port),
                                              timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method, path, body=b"", headers=""):
        head = ("%s %s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Length: %d\r\n"
                "\r\n" % (method, path, self.host, self.port, headers,
                          len(body))).encode()
        self.s.sendall(head + body)
        while b"\r\n\r\n" not in self.buf:
            self.recv()
        end = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end:]
        m = re.search(r"(?i)\r\ncontent-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        while len(self.buf) < n:
            self.recv()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(head.split(" ", 2)[1]), head, body

    def recv(self):
        piece = self.s.recv(65536)
        if not piece:
            raise ConnectionError("closed by %s:%d" % (self.host, self.port))
        self.buf += piece

    def close(self):
        self.s.close()


def rate(url, path, seconds, netnode=None):
    c = Conn(url, netnode)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        st, _, _ = c.request("GET", path)
        if st != 200:
            raise RuntimeError("GET %s%s: %d" % (url, path, st))
        n += 1
    secs = time.monotonic() - t0
    c.close()
    return n, secs


def rate_many(url, path, seconds, conns, netnode=None):
    """Requests/s of conns connections at once (a process each)."""
    if conns == 1:
        n, secs = rate(url, path, seconds, netnode)
        return n / secs
    with multiprocessing.Pool(conns) as pool:
        res = pool.starmap(rate, [(url, path, seconds, netnode)] * conns)
    return sum(n / secs for n, secs in res)


def reads(direct, proxy, seconds, path, conns, netnode=None):
    tot = {"direct": 0.0, "proxy": 0.0}
    for _ in range(5):
        for name, url in (("direct", direct), ("proxy", proxy)):
            tot[name] += rate_many(url, path, seconds / 10, conns,
                                   netnode) / 5
    d, p = tot["direct"], tot["proxy"]
    print("reads GET %-8s %2d conn%s: direct %7.0f req/s, through the "
          "proxy %7.0f req/s, ratio %.3f"
          % (path, conns, "s" if conns > 1 else " ", d, p, p / d))
    return p / d


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def ms(xs):
    return "median %7.3f ms, p99 %7.3f ms" % (statistics.median(xs) * 1e3,
                                              pct(xs, 0.99) * 1e3)


def writes(primary_direct, replica_proxy, n, ns_direct=None,
           ns_proxy=None):
    d, f, w = Conn(primary_direct, ns_direct), Conn(replica_proxy,
                                                      ns_proxy), []
    lat_d, lat_f, diff = [], [], []
    for i in range(n):
        t0 = time.monotonic()
        st, _, _ = d.request("POST", "/rows", b"direct %d" % i)
        t1 = time.monotonic()
        st2, head, body = f.request("POST", "/rows", b"forwarded %d" % i)
        t2 = time.monotonic()
        if st != 200 or st2 != 200:
            raise RuntimeError("POST: %d, %d" % (st, st2))
        m = re.search(COOKIE + r"=([0-9a-f]{16})", head)
        if not m:
            raise RuntimeError("no cookie on a forwarded write")
        rid = json.loads(body)["id"]
        t3 = time.monotonic()
        st3, _, _ = f.request("GET", "/rows/%d" % rid,
                              headers="Cookie: %s=%s\r\n"
                              % (COOKIE, m.group(1)))
        t4 = time.monotonic()
        if st3 != 200:
            raise RuntimeError("stale read of row %d: %d" % (rid, st3))
        lat_d.append(t1 - t0)
        lat_f.append(t2 - t1)
        diff.append((t2 - t1) - (t1 - t0))
        w.append(t4 - t3)
    d.close()
    f.close()
    print("writes POST /rows  direct to the primary's app: %s" % ms(lat_d))
    print("writes POST /rows  through a replica's proxy:   %s" % ms(lat_f))
    print("forwarded - direct (per pair):                 %s" % ms(diff))
    print("GET with the cookie right after (0 stale):     %s" % ms(w))
    return {"direct": lat_d, "forwarded": lat_f, "diff": diff, "get": w}


def fresh_writes(replica_proxy, n, netnode=None):
    """n forwarded POSTs, each on a new connection to the replica's
    proxy (closed after its answer)."""
    lat = []
    for i in range(n):
        c = Conn(replica_proxy, netnode)
        t0 = time.monotonic()
        st, _, _ = c.request("POST", "/rows", b"fresh %d" % i,
                             headers="Connection: close\r\n")
        lat.append(time.monotonic() - t0)
        c.close()
        if st != 200:
            raise RuntimeError("POST on a new connection: %d" % st)
    print("writes POST /rows  through a replica's proxy, a new client "
          "connection each: %s" % ms(lat))
    return lat


def run(args):
    print("(a) local reads, %d s each way, alternating" % args.seconds)
    for conns in args.conns:
        reads(args.direct, args.proxy, args.seconds, "/ping", conns)
        reads(args.direct, args.proxy, args.seconds, "/rows/1", conns)
    print("(b) %d forwarded writes" % args.writes)
    writes(args.primary_direct, args.replica_proxy, args.writes)


def loopback(args):
    import subprocess
    sys.path.insert(0, os.path.join(HERE, "..", "integration"))
    import ltxfs_harness as h
    from cluster_harness import Cluster
    app_ports = [h.free_port() for _ in range(2)]
    px_ports = [h.free_port() for _ in range(2)]

    def yml(i):
        return ("proxy:\n  addr: 127.0.0.1:%d\n  target: 127.0.0.1:%d\n"
                "  db: app.db\n" % (px_ports[i], app_ports[i]))
    tok = "bench-token"
    with Cluster(1, token=tok, primary_yml=yml(0)) as cl:
        cl.add_replica(token=tok, extra_yml=yml(1))
        cl.start()
        c = h.connect(cl.primary.path("app.db"))
        c.execute("CREATE TABLE rows(id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO rows(v) VALUES ('one')")
        c.close()
        cl.wait_synced("app.db")
        with h.Procs() as procs:
            for n, port in zip(cl.nodes, app_ports):
                p = procs.spawn([sys.executable,
                                 os.path.join(HERE, "..", "integration",
                                              "proxy_app.py"),
                                 str(port), n.path("app.db")],
                                stdout=subprocess.PIPE)
                p.stdout.readline()
            u = "http://127.0.0.1:%d"
            args.direct, args.proxy = u % app_ports[1], u % px_ports[1]
            args.primary_direct = u % app_ports[0]
            args.replica_proxy = u % px_ports[1]
            run(args)
            m = cl.replicas[0].metrics()
            print("replica metrics: %s" % {k: v for k, v in m.items()
                                            if "proxy_read_wait" in k and
                                            ("count" in k or "sum" in k or
                                             "total" in k)})


def hist_pct(m, name, q):
    """The upper bound of the bucket holding quantile q of histogram
    name in metrics m ({name{le="x"}: count})."""
    tot = m.get(name + "_count", 0)
    if not tot:
        return None
    bounds = sorted((float(k.split('le="')[1].rstrip('"}')), v)
                    for k, v in m.items()
                    if k.startswith(name + "_bucket{") and "+Inf" not in k)
    for le, cum in bounds:
        if cum >= q * tot:
            return le
    return float("inf")


def regions(args):
    import subprocess
    sys.path.insert(0, os.path.join(HERE, "..", "integration"))
    import ltxfs_harness as h
    import regions_harness as rh
    app = os.path.join(HERE, "..", "integration", "proxy_app.py")
    yml = ("proxy:\n  addr: \":8090\"\n  target: 127.0.0.1:8080\n"
           "  db: app.db\n")
    delays = {("a", "b"): 30, ("a", "c"): 70, ("b", "c"): 50}
    print("load average at the start: %s" % " ".join(
        open("/proc/loadavg").read().split()[:3]))
    with rh.Regions({"a": 2, "b": 2, "c": 2}, delays) as net, \
            rh.RegionCluster(net, token="bench-token", extra_yml=yml) as cl:
        cl.start()
        a0, c1 = cl.node("a0"), cl.node("c1")
        c = h.connect(a0.path("app.db"))
        c.execute("CREATE TABLE rows(id INTEGER PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO rows(v) VALUES ('one')")
        c.close()
        cl.wait_synced("app.db")
        for n in cl.nodes:
            p = net.spawn(n.netnode, [sys.executable, app, "8080",
                                      n.path("app.db")],
                          stdout=subprocess.PIPE, what="app")
            line = rh._readline(p, 30)
            if not line.startswith("listening"):
                raise RuntimeError("app on %s: %r" % (n.name, line))
        rtt = net.tcp_connect_ms(c1.netnode, a0.netnode, 8090)
        print("TCP connect c1 -> a0 (one round trip): median %.1f ms "
              "(one-way delay a-c %d ms)"
              % (statistics.median(rtt), delays[("a", "c")]))
        local = "http://127.0.0.1:8080"
        c1_proxy = "http://%s:8090" % c1.netnode.ip
        print("(b) %d pairs: direct POST in a (a0's app), forwarded POST "
              "in c (c1's proxy -> a0's proxy -> a0's app)" % args.writes)
        # Warm-up, not measured: c1's proxy reads a0's /info (the
        # primary's proxy URL) and connects to a0's proxy once.
        w = Conn(c1_proxy, c1.netnode)
        w.request("POST", "/rows", b"warm-up")
        w.close()
        m0 = c1.metrics()
        res = writes(local, c1_proxy, args.writes, a0.netnode, c1.netnode)
        m1 = c1.metrics()
        wn = "ltxfs_proxy_read_wait_seconds"
        waits = m1.get(wn + "_count", 0) - m0.get(wn + "_count", 0)
        secs = m1.get(wn + "_sum", 0) - m0.get(wn + "_sum", 0)
        to = (m1.get("ltxfs_proxy_read_wait_timeouts_total", 0) -
              m0.get("ltxfs_proxy_read_wait_timeouts_total", 0))
        print("c1's cookie waits: %d of %d reads waited, %.1f ms on "
              "average, %d timed out; p99 of all the waits so far at most "
              "%s s (its histogram's bucket)"
              % (waits, args.writes, secs / waits * 1e3 if waits else 0,
                 to, hist_pct(m1, wn, 0.99)))
        rtt_ms = 2 * delays[("a", "c")]
        med = statistics.median(res["diff"]) * 1e3
        print("target: forwarded - direct at the median <= RTT + 2 ms = "
              "%d ms: %.1f ms, %s" % (rtt_ms + 2, med,
                                      "met" if med <= rtt_ms + 2
                                      else "NOT met"))
        p99 = pct(res["get"], 0.99) * 1e3
        print("target: p99 of the GET with the cookie <= one-way + 5 ms = "
              "%d ms: %.1f ms, %s" % (delays[("a", "c")] + 5, p99,
                                      "met" if p99 <= delays[("a", "c")] + 5
                                      else "NOT met"))
        print("(b') %d forwarded POSTs, a new client connection each"
              % max(args.writes // 5, 10))
        f0 = c1.metrics()
        fresh_writes(c1_proxy, max(args.writes // 5, 10), c1.netnode)
        f1 = c1.metrics()
        print("c1's connections to a0's proxy for them: %s" % {
            how: int(f1.get(k, 0) - f0.get(k, 0)) for how, k in (
                (how, 'ltxfs_proxy_forward_connections_total{how="%s"}'
                 % how) for how in ("new", "pooled", "kept"))})
        print("(a) local reads at c1, %g s each way, alternating"
              % args.seconds)
        for conns in args.conns:
            reads(local, c1_proxy, args.seconds, "/ping", conns, c1.netnode)
            reads(local, c1_proxy, args.seconds, "/rows/1", conns,
                  c1.netnode)
        print("load average at the end: %s" % " ".join(
            open("/proc/loadavg").read().split()[:3]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--direct")
    ap.add_argument("--proxy")
    ap.add_argument("--primary-direct")
    ap.add_argument("--replica-proxy")
    ap.add_argument("--loopback", action="store_true")
    ap.add_argument("--regions", action="store_true",
                    help="across the emulated regions (root)")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--conns", type=lambda v: [int(x) for x in v.split(",")],
                    default=[1, 4], help="connections at once, a list "
                    "(default 1,4)")
    args = ap.parse_args()
    if args.loopback:
        return loopback(args)
    if args.regions:
        return regions(args)
    if not (args.direct and args.proxy and args.primary_direct and
            args.replica_proxy):
        ap.error("give the four URLs, or --loopback")
    run(args)


if __name__ == "__main__":
    main()
