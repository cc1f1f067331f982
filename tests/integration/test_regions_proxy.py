"""The write-forwarding proxy across emulated regions (suite regions,
regions_harness.py): regions a, b, c of two nodes each, one-way delays
a-b 30 ms, a-c 70 ms, b-c 50 ms (as test_regions.py). ltxfs on all six
nodes, primary a0 (static lease, a cluster token); every node runs a
proxy (proxy.addr :8090) in front of proxy_app.py (SQLite on the node's
mount, 127.0.0.1:8080), both in the node's namespace. The clients are
threads of this test whose sockets are made in c1's namespace (a client
in the far region, next to c1), unless a case says otherwise.

    test_regions_proxy.py proxy

  read-your-writes
      CLIENTS clients at once, ROUNDS rounds each (1,000 in all): POST
      /rows through c1's proxy (forwarded to a0's proxy), then at once
      GET /rows/ID through the same proxy with the cookie the proxy
      returned; every GET must find the row (0 stale reads allowed; a
      client that dropped the cookie reads stale rows here). The
      latencies of both and the replica's cookie waits are printed.
      Then, after convergence, every forwarded row is on all six nodes
      (sqlite3 on each mount).
  forwarding headers
      A POST forwarded from c1 reaches a0's application (its database
      path is echoed) with X-Forwarded-For (the client's address in c),
      X-Forwarded-Proto http, X-Forwarded-Host (c1's proxy), the
      Ltxfs-Forwarded marker and no Ltxfs-Authorization.
  forged cookie
      A GET through c1's proxy with a cookie TXID far in the future is
      answered (200, by a0's application) after proxy.read-timeout (1 s)
      and within 1 s + 5 s: counted in
      ltxfs_proxy_read_wait_timeouts_total and
      ltxfs_proxy_requests_total{kind="forwarded_read"}.
  no token
      A request marked Ltxfs-Forwarded sent from region c straight to
      a0's proxy without the cluster token, or with a wrong one: 401,
      and the application did not write.
  upstream pool
      POSTs through c1's proxy, each on a new client connection: c1's
      proxy forwards them over kept connections to a0's proxy
      (ltxfs_proxy_forward_connections_total{how="pooled"}), so a0's
      proxy accepts at most 2 new connections for them
      (ltxfs_proxy_connections_accepted_total) and each costs one round
      trip, not two (median printed).
  big upload
      UPLOAD_MB MiB POSTed through c1's proxy to a0's application
      (/upload counts the bytes), streamed across 140 ms of RTT: the
      peak RSS (VmHWM, reset by /proc/PID/clear_refs before) of c1's and
      a0's ltxfs daemons (the proxy runs inside the daemon) grows by
      less than RSS_GROWTH_KIB (a proxy that held the body would grow by
      UPLOAD_MB); MB/s printed.
  primary stopped
      a0's application and ltxfs stop: two POSTs through c1's proxy get
      503 with a body naming the primary; GETs through c1's and b0's
      proxies are still served by their local applications.
"""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import ltxfs_harness as h
from ltxfs_harness import check, wait_for
from regions_harness import (NsHTTPConnection, RegionCluster, Regions,
                             _readline, inside)

HERE = os.path.dirname(os.path.abspath(__file__))
REGIONS = {"a": 2, "b": 2, "c": 2}
DELAYS = {("a", "b"): 30, ("a", "c"): 70, ("b", "c"): 50}
DB = "app.db"
TOKEN = "regions-proxy-token"
COOKIE = "__ltxfs_txid"
APP_PORT = 8080
PROXY_PORT = 8090
READ_TIMEOUT_S = 1.0
CLIENTS = 8
ROUNDS = 125
POOL_ROUNDS = 10
UPLOAD_MB = 32
RSS_GROWTH_KIB = 12 << 10
PROXY_YML = ("proxy:\n  addr: \":%d\"\n  target: 127.0.0.1:%d\n"
             "  db: %s\n  read-timeout: %dms\n  connect-timeout: 2s\n"
             % (PROXY_PORT, APP_PORT, DB, READ_TIMEOUT_S * 1000))


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def ms(xs):
    return "median %.1f ms, p99 %.1f ms, max %.1f ms" % (
        statistics.median(xs) * 1e3, pct(xs, 0.99) * 1e3, max(xs) * 1e3)


class Client:
    """One keep-alive connection from src's namespace to dst's proxy,
    keeping the cookie the proxy sets."""

    def __init__(self, src, dst, port=PROXY_PORT, timeout=30):
        self.c = NsHTTPConnection(src, dst.ip, port, timeout=timeout)
        self.cookie = None

    def request(self, method, path, body=None, headers=None,
                send_cookie=True):
        hdr = dict(headers or {})
        if send_cookie and self.cookie and "Cookie" not in hdr:
            hdr["Cookie"] = "%s=%s" % (COOKIE, self.cookie)
        self.c.request(method, path, body=body, headers=hdr)
        r = self.c.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            m = re.match(COOKIE + r"=([0-9a-f]{16})", v)
            if k.lower() == "set-cookie" and m:
                self.cookie = m.group(1)
        if r.getheader("Connection", "").lower() == "close":
            self.c.close()
        return r.status, data

    def close(self):
        self.c.close()


def kind(node, k):
    return node.metric('ltxfs_proxy_requests_total{kind="%s"}' % k, 0)


def start_apps(net, cl):
    apps = {}
    for n in cl.nodes:
        p = net.spawn(n.netnode, [sys.executable,
                                  os.path.join(HERE, "proxy_app.py"),
                                  str(APP_PORT), n.path(DB)],
                      stdout=subprocess.PIPE, what="app on " + n.name)
        line = _readline(p, 30)
        check(line.startswith("listening"), "%s: the app did not start "
              "(%r, exit %s)" % (n.name, line, p.poll()))
        apps[n.name] = p
    return apps


def ryw_client(k, src, dst, out):
    """Client k: ROUNDS writes, each read back at once with the cookie."""
    c = Client(src, dst)
    res = {"stale": 0, "ids": [], "post": [], "get": [], "error": None}
    try:
        for i in range(ROUNDS):
            t0 = time.monotonic()
            st, body = c.request("POST", "/rows", body=b"ryw %d %d" % (k, i))
            t1 = time.monotonic()
            if st != 200 or not c.cookie:
                raise RuntimeError("forwarded POST: %d %r, cookie %r"
                                   % (st, body, c.cookie))
            rid = json.loads(body)["id"]
            st, _ = c.request("GET", "/rows/%d" % rid)
            t2 = time.monotonic()
            if st not in (200, 404):
                raise RuntimeError("GET /rows/%d: %d" % (rid, st))
            res["stale"] += st == 404
            res["ids"].append(rid)
            res["post"].append(t1 - t0)
            res["get"].append(t2 - t1)
    except Exception as e:      # reported by the main thread
        res["error"] = "client %d: %s" % (k, e)
    finally:
        c.close()
    out[k] = res


def read_your_writes(net, cl):
    c1 = cl.node("c1")
    waits0 = c1.metric("ltxfs_proxy_read_waits_total", 0)
    fwd0 = kind(c1, "forwarded_write")
    out = {}
    threads = [threading.Thread(target=ryw_client,
                                args=(k, c1.netnode, c1.netnode, out))
               for k in range(CLIENTS)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
        check(not th.is_alive(), "a read-your-writes client hangs")
    secs = time.monotonic() - t
    errors = [r["error"] for r in out.values() if r["error"]]
    check(not errors, "; ".join(errors))
    stale = sum(r["stale"] for r in out.values())
    ids = sorted(i for r in out.values() for i in r["ids"])
    total = CLIENTS * ROUNDS
    posts = [x for r in out.values() for x in r["post"]]
    gets = [x for r in out.values() for x in r["get"]]
    waits = c1.metric("ltxfs_proxy_read_waits_total", 0) - waits0
    log("read-your-writes through c1's proxy (RTT to a0 %d ms): %d "
        "clients x %d rounds = %d in %.1f s, %d stale reads; %d reads "
        "waited for their TXID" % (2 * net.one_way_ms("a", "c"), CLIENTS,
                                   ROUNDS, total, secs, stale, waits))
    log("  forwarded POST: %s" % ms(posts))
    log("  GET with the cookie right after: %s" % ms(gets))
    check(stale == 0, "%d stale reads of %d" % (stale, total))
    check(len(ids) == total and len(set(ids)) == total,
          "%d distinct row IDs for %d writes" % (len(set(ids)), total))
    check(kind(c1, "forwarded_write") - fwd0 == total,
          "c1 forwarded %d writes of %d"
          % (kind(c1, "forwarded_write") - fwd0, total))
    t = time.monotonic()
    cl.wait_synced(DB, timeout=60)
    for n in cl.nodes:
        conn = h.ro_connect(n.path(DB))
        got = [r[0] for r in conn.execute(
            "SELECT id FROM rows WHERE v LIKE 'ryw %' ORDER BY id")]
        conn.close()
        check(got == ids, "%s has %d of the %d forwarded rows"
              % (n.name, len(set(got) & set(ids)), total))
    log("  all %d rows on all 6 nodes (converged in %.2f s)"
        % (total, time.monotonic() - t))


def forwarding_headers(cl):
    c1, a0 = cl.node("c1"), cl.node("a0")
    c = Client(c1.netnode, c1.netnode)
    st, body = c.request("POST", "/headers/x", body=b"hello",
                         headers={"Host": "app.example:8443"})
    c.close()
    check(st == 200, "POST /headers through c1: %d %r" % (st, body))
    d = {k.lower(): v for k, v in json.loads(body).items()}
    check(d["app-db"] == a0.path(DB), "served by %s, not a0's app"
          % d["app-db"])
    check(d.get("x-forwarded-for") == c1.netnode.ip,
          "X-Forwarded-For %r (client at %s)" % (d.get("x-forwarded-for"),
                                                 c1.netnode.ip))
    check(d.get("x-forwarded-proto") == "http" and
          d.get("x-forwarded-host") == "app.example:8443",
          "X-Forwarded-Proto/-Host: %r" % d)
    check(d.get("ltxfs-forwarded") == c1.node_id(), "marker %r (c1 is %s)"
          % (d.get("ltxfs-forwarded"), c1.node_id()))
    check("ltxfs-authorization" not in d, "the token reached the app")
    log("forwarding headers at a0's app: X-Forwarded-For %s, -Proto %s, "
        "-Host %s" % (d["x-forwarded-for"], d["x-forwarded-proto"],
                      d["x-forwarded-host"]))


def forged_cookie(cl):
    c1, a0 = cl.node("c1"), cl.node("a0")
    to0 = c1.metric("ltxfs_proxy_read_wait_timeouts_total", 0)
    fr0 = kind(c1, "forwarded_read")
    c = Client(c1.netnode, c1.netnode)
    t0 = time.monotonic()
    st, body = c.request("GET", "/headers/forged", headers={
        "Cookie": "%s=7fffffffffffffff" % COOKIE})
    secs = time.monotonic() - t0
    c.close()
    check(st == 200, "forged cookie: %d %r" % (st, body))
    check(json.loads(body)["app-db"] == a0.path(DB),
          "the forged-cookie read was not sent to a0")
    log("forged cookie: answered by a0's app in %.2f s (read-timeout "
        "%.0f s)" % (secs, READ_TIMEOUT_S))
    check(READ_TIMEOUT_S <= secs < READ_TIMEOUT_S + 5,
          "forged cookie answered in %.2f s" % secs)
    check(c1.metric("ltxfs_proxy_read_wait_timeouts_total", 0) == to0 + 1,
          "wait timeouts %s -> %s" % (to0, c1.metric(
              "ltxfs_proxy_read_wait_timeouts_total", 0)))
    check(kind(c1, "forwarded_read") == fr0 + 1, "forwarded reads %s -> "
          "%s" % (fr0, kind(c1, "forwarded_read")))


def no_token(cl):
    c1, a0 = cl.node("c1"), cl.node("a0")
    writes = kind(a0, "local_write")
    for hdr in ({"Ltxfs-Forwarded": c1.node_id()},
                {"Ltxfs-Forwarded": c1.node_id(),
                 "Ltxfs-Authorization": "Bearer wrong"}):
        c = Client(c1.netnode, a0.netnode)
        st, body = c.request("POST", "/rows", body=b"forged", headers=hdr)
        c.close()
        check(st == 401 and b"cluster token" in body,
              "marked request without the token at a0: %d %r" % (st, body))
    check(kind(a0, "local_write") == writes, "a refused request wrote")
    conn = h.ro_connect(a0.path(DB))
    n = h.one(conn, "SELECT count(*) FROM rows WHERE v = 'forged'")
    conn.close()
    check(n == 0, "%d forged rows on a0" % n)
    log("no token: 401 from a0's proxy for a request from region c")


def upstream_pool(cl):
    c1, a0 = cl.node("c1"), cl.node("a0")
    acc = "ltxfs_proxy_connections_accepted_total"
    pooled = 'ltxfs_proxy_forward_connections_total{how="pooled"}'
    acc0, pooled0 = a0.metric(acc), c1.metric(pooled)
    check(acc0 is not None and pooled0 is not None,
          "/metrics lacks %s or %s" % (acc, pooled))
    lat = []
    for i in range(POOL_ROUNDS):
        c = Client(c1.netnode, c1.netnode)
        t0 = time.monotonic()
        st, body = c.request("POST", "/rows", body=b"pool %d" % i,
                             headers={"Connection": "close"})
        lat.append(time.monotonic() - t0)
        c.close()
        check(st == 200, "POST on a new connection: %d %r" % (st, body))
    accepted = a0.metric(acc, 0) - acc0
    reused = c1.metric(pooled, 0) - pooled0
    log("upstream pool: %d forwarded POSTs, each on a new client "
        "connection: %s; a0's proxy accepted %d connections, c1 took %d "
        "from its pool" % (POOL_ROUNDS, ms(lat), accepted, reused))
    check(accepted <= 2, "a0's proxy accepted %d connections for %d "
          "forwarded requests (no pool?)" % (accepted, POOL_ROUNDS))
    check(reused >= POOL_ROUNDS - 2, "c1 reused %d pooled connections"
          % reused)


def status_kib(node, key):
    with open("/proc/%d/status" % node.pid()) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise h.TestFailure("%s: no %s in /proc status" % (node.name, key))


def big_upload(cl):
    c1, a0 = cl.node("c1"), cl.node("a0")
    size = UPLOAD_MB << 20
    before = []
    for n in (c1, a0):
        # VmHWM back to VmRSS: the peak below is this upload's.
        with open("/proc/%d/clear_refs" % n.pid(), "w") as f:
            f.write("5")
        before.append(status_kib(n, "VmRSS"))

    def body():
        piece = b"x" * 65536
        for _ in range(size // len(piece)):
            yield piece
    c = Client(c1.netnode, c1.netnode, timeout=120)
    t0 = time.monotonic()
    st, data = c.request("POST", "/upload", body=body(),
                         headers={"Content-Length": str(size)})
    secs = time.monotonic() - t0
    c.close()
    check(st == 200 and json.loads(data)["size"] == size,
          "upload: %d %r" % (st, data))
    after = [status_kib(n, "VmHWM") for n in (c1, a0)]
    log("%d MiB forwarded c1 -> a0 in %.2f s (%.1f MB/s); RSS of the "
        "ltxfs daemons (the proxies run in them) before -> peak during "
        "it: c1 %d -> %d KiB, a0 %d -> %d KiB"
        % (UPLOAD_MB, secs, size / secs / 1e6, before[0], after[0],
           before[1], after[1]))
    for n, b, a in zip((c1, a0), before, after):
        check(a - b < RSS_GROWTH_KIB, "%s: peak RSS grew by %d KiB during "
              "the upload (>= %d KiB)" % (n.name, a - b, RSS_GROWTH_KIB))


def primary_stopped(net, cl, apps):
    c1, b0, a0 = cl.node("c1"), cl.node("b0"), cl.node("a0")
    net.stop(apps.pop("a0"))
    a0.stop()

    def refused():
        # Sent after a0's exit, so behind the FINs a0's sockets sent
        # c1 before (the same delay queue): c1 has seen them all.
        with inside(c1.netnode):
            s = socket.socket()
        try:
            s.settimeout(5)
            s.connect((a0.netnode.ip, PROXY_PORT))
            return False
        except ConnectionRefusedError:
            return True
        finally:
            s.close()
    wait_for(refused, 30, "a0's proxy port refused from c1",
             interval=0.05)
    for i in range(2):
        c = Client(c1.netnode, c1.netnode)
        t0 = time.monotonic()
        st, body = c.request("POST", "/rows", body=b"no primary %d" % i)
        secs = time.monotonic() - t0
        c.close()
        log("without a primary, POST %d through c1: %d in %.2f s: %s"
            % (i, st, secs, body.decode().strip()))
        check(st == 503 and b"primary" in body,
              "write without a primary: %d %r" % (st, body))
    for n in (c1, b0):
        c = Client(n.netnode, n.netnode)
        st, body = c.request("GET", "/headers/local")
        c.close()
        check(st == 200 and json.loads(body)["app-db"] == n.path(DB),
              "read at %s without a primary: %d %r" % (n.name, st, body))


def run():
    with Regions(REGIONS, DELAYS) as net, \
            RegionCluster(net, token=TOKEN, extra_yml=PROXY_YML) as cl:
        t = time.monotonic()
        cl.start()
        a0 = cl.node("a0")
        conn = h.connect(a0.path(DB))
        conn.execute("CREATE TABLE rows(id INTEGER PRIMARY KEY, v TEXT)")
        conn.close()
        cl.wait_synced(DB, timeout=60)
        apps = start_apps(net, cl)
        check(a0.info().get("proxy", {}).get("url") ==
              "http://%s:%d" % (a0.netnode.ip, PROXY_PORT),
              "a0's /info proxy: %r" % a0.info().get("proxy"))
        log("6 nodes with proxies and apps up in %.1f s"
            % (time.monotonic() - t))
        for step in (lambda: read_your_writes(net, cl),
                     lambda: forwarding_headers(cl),
                     lambda: forged_cookie(cl),
                     lambda: no_token(cl),
                     lambda: upstream_pool(cl),
                     lambda: big_upload(cl),
                     lambda: primary_stopped(net, cl, apps)):
            t = time.monotonic()
            step()
            log("  (%.1f s)" % (time.monotonic() - t))
        for p in apps.values():
            net.stop(p)
        cl.stop()


CASES = {"proxy": run}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_regions_proxy.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    log("regions/%s" % sys.argv[1])
    h.main(CASES[sys.argv[1]])
