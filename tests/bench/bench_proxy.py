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

The client is a minimal HTTP/1.1 one on a raw socket, so that its own
cost is small next to what is measured.
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


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.s = socket.create_connection((self.host, self.port), timeout=30)
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


def rate(url, path, seconds):
    c = Conn(url)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        st, _, _ = c.request("GET", path)
        if st != 200:
            raise RuntimeError("GET %s%s: %d" % (url, path, st))
        n += 1
    secs = time.monotonic() - t0
    c.close()
    return n, secs


def rate_many(url, path, seconds, conns):
    """Requests/s of conns connections at once (a process each)."""
    if conns == 1:
        n, secs = rate(url, path, seconds)
        return n / secs
    with multiprocessing.Pool(conns) as pool:
        res = pool.starmap(rate, [(url, path, seconds)] * conns)
    return sum(n / secs for n, secs in res)


def reads(direct, proxy, seconds, path, conns):
    tot = {"direct": 0.0, "proxy": 0.0}
    for _ in range(5):
        for name, url in (("direct", direct), ("proxy", proxy)):
            tot[name] += rate_many(url, path, seconds / 10, conns) / 5
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


def writes(primary_direct, replica_proxy, n):
    d, f, w = Conn(primary_direct), Conn(replica_proxy), []
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--direct")
    ap.add_argument("--proxy")
    ap.add_argument("--primary-direct")
    ap.add_argument("--replica-proxy")
    ap.add_argument("--loopback", action="store_true")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--conns", type=lambda v: [int(x) for x in v.split(",")],
                    default=[1, 4], help="connections at once, a list "
                    "(default 1,4)")
    args = ap.parse_args()
    if args.loopback:
        return loopback(args)
    if not (args.direct and args.proxy and args.primary_direct and
            args.replica_proxy):
        ap.error("give the four URLs, or --loopback")
    run(args)


if __name__ == "__main__":
    main()
