#!/usr/bin/env python3
"""The write-forwarding proxy (replica/proxy*.c, docs/PROTOCOL.md "The
proxy"): a primary and two replicas on loopback, each with its proxy in
front of a real application (proxy_app.py: http.server + sqlite3 on the
node's mount).

    test_proxy.py cluster     read-your-writes through a replica's proxy,
                              the forwarding headers, a 100 MB upload in
                              bounded memory, SSE and an upgrade passing
                              through, 401 without the token, no loops,
                              a forged cookie, proxy.max-lag, the
                              application down (502),
                              passthrough, the metrics; then the primary
                              stops: writes 503, reads still served
    test_proxy.py config      bad proxy.* values are refused naming the
                              key
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import ltxfs_harness as h
from cluster_harness import Cluster
from cluster_harness import http as call
from ltxfs_harness import TestFailure, check, free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "proxy-test-token"
DB = "app.db"
RYW_ROUNDS = 300
UPLOAD = 100 << 20
RSS_LIMIT_KIB = 64 << 10
COOKIE = "__ltxfs_txid"


def proxy_yml(port, app_port, extra=""):
    return ("proxy:\n  addr: 127.0.0.1:%d\n  target: 127.0.0.1:%d\n"
            "  db: %s\n  read-timeout: 1s\n  connect-timeout: 2s\n"
            "  passthrough: [\"/raw/*\"]\n"
            "  always-forward: [\"/headers/fwd\"]\n%s"
            % (port, app_port, DB, extra))


class Client:
    """One keep-alive connection to a proxy, with the cookie kept."""

    def __init__(self, port):
        self.port = port
        self.cookie = None
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method, path, body=None, headers=None):
        hdr = dict(headers or {})
        if self.cookie and "Cookie" not in hdr:
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
        return r.status, data, r

    def close(self):
        self.c.close()


def metric(node, kind):
    return node.metric('ltxfs_proxy_requests_total{kind="%s"}' % kind, 0)


def start_app(procs, node, port):
    p = procs.spawn([sys.executable, os.path.join(HERE, "proxy_app.py"),
                     str(port), node.path(DB)], stdout=subprocess.PIPE)
    line = p.stdout.readline()
    check(line.startswith(b"listening"), "the app did not start: %r" % line)
    return p


def ryw(cl, rp, pp):
    """Read-your-writes through a replica's proxy: 0 stale reads."""
    c = Client(rp)
    stale, ids = 0, []
    for i in range(RYW_ROUNDS):
        st, body, _ = c.request("POST", "/rows", body=b"row %d" % i)
        check(st == 200, "forwarded POST: %d %r" % (st, body))
        check(c.cookie, "the forwarded write set no cookie")
        rid = json.loads(body)["id"]
        ids.append(rid)
        st, _, _ = c.request("GET", "/rows/%d" % rid)
        stale += st != 200
    c.close()
    check(stale == 0, "%d stale reads of %d" % (stale, RYW_ROUNDS))
    r = cl.replicas[0]
    waited = metric(r, "waited_read")
    print("read-your-writes: %d rounds, 0 stale; %d reads waited for "
          "their TXID, %d were local at once"
          % (RYW_ROUNDS, waited, metric(r, "local_read")))
    check(metric(r, "forwarded_write") >= RYW_ROUNDS,
          "forwarded_write %s" % metric(r, "forwarded_write"))
    check(metric(cl.primary, "local_write") >= RYW_ROUNDS,
          "primary local_write %s" % metric(cl.primary, "local_write"))
    cl.wait_synced(DB)
    for n in cl.nodes:
        conn = h.ro_connect(n.path(DB))
        got = h.one(conn, "SELECT count(*) FROM rows WHERE id >= ? AND "
                    "id <= ?", (ids[0], ids[-1]))
        conn.close()
        check(got == RYW_ROUNDS, "%s has %d of the %d forwarded rows"
              % (n.name, got, RYW_ROUNDS))
    return c.cookie


def headers(cl, rp, app_ports):
    c = Client(rp)
    st, body, _ = c.request("GET", "/headers", headers={
        "X-Forwarded-For": "10.1.2.3", "Ltxfs-Authorization": "Bearer x"})
    d = {k.lower(): v for k, v in json.loads(body).items()}
    check(st == 200 and d["app-port"] == app_ports[1],
          "local read not served locally: %r" % d)
    check(d.get("x-forwarded-for") == "10.1.2.3, 127.0.0.1", "XFF %r" % d)
    check(d.get("x-forwarded-proto") == "http" and
          d.get("x-forwarded-host", "").startswith("127.0.0.1:"),
          "X-Forwarded-Proto/-Host %r" % d)
    check("ltxfs-authorization" not in d, "the token reached the app")
    st, body, _ = c.request("GET", "/headers/fwd")
    d = {k.lower(): v for k, v in json.loads(body).items()}
    check(st == 200 and d["app-port"] == app_ports[0],
          "always-forward read not served by the primary: %r" % d)
    check(d.get("ltxfs-forwarded") == cl.replicas[0].node_id(),
          "marker %r (node %s)" % (d.get("ltxfs-forwarded"),
                                   cl.replicas[0].node_id()))
    check("ltxfs-authorization" not in d, "the token reached the app")
    c.close()


def upload(cl, rp):
    """100 MB POSTed through the replica's proxy to the primary's app:
    both ltxfs processes stay under RSS_LIMIT_KIB."""
    before = [n.vm_hwm_kib() for n in cl.nodes[:2]]

    def body():
        piece = b"x" * 65536
        for _ in range(UPLOAD // len(piece)):
            yield piece
    c = http.client.HTTPConnection("127.0.0.1", rp, timeout=60)
    t0 = time.monotonic()
    c.request("POST", "/upload", body=body(),
              headers={"Content-Length": str(UPLOAD)})
    r = c.getresponse()
    data = r.read()
    secs = time.monotonic() - t0
    c.close()
    check(r.status == 200 and json.loads(data)["size"] == UPLOAD,
          "upload: %d %r" % (r.status, data))
    after = [n.vm_hwm_kib() for n in cl.nodes[:2]]
    print("100 MB forwarded upload in %.2f s; peak RSS (VmHWM) primary "
          "%d -> %d KiB, replica %d -> %d KiB"
          % (secs, before[0], after[0], before[1], after[1]))
    for n, kib in zip(cl.nodes[:2], after):
        check(kib < RSS_LIMIT_KIB, "%s: peak RSS %d KiB >= %d KiB"
              % (n.name, kib, RSS_LIMIT_KIB))


def read_until(s, buf, token, what):
    deadline = time.monotonic() + 20
    while token not in buf:
        check(time.monotonic() < deadline, "timed out waiting for " + what)
        piece = s.recv(65536)
        check(piece, "connection closed before " + what)
        buf += piece
    return buf


def sse(rp):
    """The first event arrives while the response is still open."""
    s = socket.create_connection(("127.0.0.1", rp), timeout=20)
    s.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = read_until(s, b"", b"data: one", "the first event")
    check(b"data: two" not in buf, "the second event came too early")
    st, _ = call("http://127.0.0.1:%d/sse-release" % rp)
    check(st == 200, "sse-release %d" % st)
    buf = read_until(s, buf, b"0\r\n\r\n", "the end of the stream")
    check(b"data: two" in buf, "second event missing: %r" % buf)
    s.close()


def upgrade(rp):
    s = socket.create_connection(("127.0.0.1", rp), timeout=20)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
              b"Upgrade: echo\r\n\r\n")
    buf = read_until(s, b"", b"\r\n\r\n", "the 101")
    check(buf.startswith(b"HTTP/1.1 101"), "upgrade: %r" % buf)
    buf = buf[buf.index(b"\r\n\r\n") + 4:]
    for word in (b"hello", b"again"):
        s.sendall(word + b"\n")
        buf = read_until(s, buf, b"echo: " + word + b"\n", "the echo")
    s.close()


def refusals(cl, pp, rp):
    """401 without the token; a marked request is never forwarded
    again; a forged cookie times out and goes to the primary."""
    for hdr in ({"Ltxfs-Forwarded": "0000000000000001"},
                {"Ltxfs-Forwarded": "0000000000000001",
                 "Ltxfs-Authorization": "Bearer wrong"}):
        st, body = call("http://127.0.0.1:%d/rows" % pp, method="POST",
                        data=b"forged", headers=hdr)
        check(st == 401, "marked request without the token: %d %r"
              % (st, body))
    writes = metric(cl.primary, "local_write")
    st, body = call("http://127.0.0.1:%d/rows" % rp, method="POST",
                    data=b"loop", headers={
                        "Ltxfs-Forwarded": "0000000000000001",
                        "Ltxfs-Authorization": "Bearer " + TOKEN})
    check(st == 503 and b"not forwarded again" in body,
          "marked request at a replica: %d %r" % (st, body))
    check(metric(cl.primary, "local_write") == writes,
          "the marked request reached the primary")
    t0 = time.monotonic()
    st, body = call("http://127.0.0.1:%d/rows" % rp, headers={
        "Cookie": "%s=7fffffffffffffff" % COOKIE})
    secs = time.monotonic() - t0
    check(st == 200, "forged cookie: %d %r" % (st, body))
    check(0.9 <= secs < 15, "forged cookie answered in %.2f s" % secs)
    r = cl.replicas[0]
    check(r.metric("ltxfs_proxy_read_wait_timeouts_total", 0) >= 1,
          "no wait timeout counted")
    check(metric(r, "forwarded_read") >= 2, "forged-cookie read not "
          "forwarded: %s" % metric(r, "forwarded_read"))
    t0 = time.monotonic()
    st, _ = call("http://127.0.0.1:%d/rows" % rp,
                 headers={"Cookie": "%s=zz; a=b" % COOKIE})
    check(st == 200 and time.monotonic() - t0 < 0.9,
          "a malformed cookie is ignored")
    fwd = metric(r, "forwarded_write")
    st, _ = call("http://127.0.0.1:%d/raw/x" % rp, method="POST", data=b"")
    check(st == 404 and metric(r, "forwarded_write") == fwd and
          metric(r, "passthrough") == 1, "passthrough: %d" % st)


def lag_ms(node):
    for d in node.info()["databases"]:
        if d.get("name") == DB:
            return d.get("lag_ms", 0)
    return 0


def served_by(port):
    st, body = call("http://127.0.0.1:%d/headers/lag" % port)
    check(st == 200, "GET /headers/lag: %d" % st)
    return json.loads(body)["app-port"]


def max_lag(cl, port, app_ports):
    """n2 (proxy.max-lag 500ms) sends reads to the primary while a
    local reader keeps it from applying a write for longer than that,
    and serves them again once it has caught up."""
    r = cl.replicas[1]
    check(served_by(port) == app_ports[2], "n2 not serving locally")
    ro = h.ro_connect(r.path(DB))
    ro.execute("BEGIN")
    ro.execute("SELECT count(*) FROM rows").fetchone()
    try:
        c = h.connect(cl.primary.path(DB))
        c.execute("INSERT INTO rows(v) VALUES ('lag')")
        c.close()
        wait_for(lambda: lag_ms(r) > 700, 20, "n2 behind by 700 ms")
        check(served_by(port) == app_ports[0],
              "a read at n2, %d ms behind, was not sent to the primary"
              % lag_ms(r))
    finally:
        ro.execute("COMMIT")
        ro.close()
    wait_for(lambda: lag_ms(r) == 0, 30, "n2 caught up")
    check(served_by(port) == app_ports[2], "n2 not local again")


def run_cluster():
    app_ports = [free_port() for _ in range(3)]
    proxy_ports = [free_port() for _ in range(3)]
    with Cluster(1, token=TOKEN,
                 primary_yml=proxy_yml(proxy_ports[0], app_ports[0])) as cl:
        for i in (1, 2):
            cl.add_replica(token=TOKEN, extra_yml=proxy_yml(
                proxy_ports[i], app_ports[i],
                "  max-lag: 500ms\n" if i == 2 else ""))
        cl.start()
        conn = h.connect(cl.primary.path(DB))
        conn.execute("CREATE TABLE rows(id INTEGER PRIMARY KEY, v TEXT)")
        conn.close()
        cl.wait_synced(DB)
        info = cl.primary.info()
        check(info.get("proxy", {}).get("url") ==
              "http://127.0.0.1:%d" % proxy_ports[0], "/info %r" % info)
        with h.Procs() as procs:
            apps = [start_app(procs, n, p)
                    for n, p in zip(cl.nodes, app_ports)]
            pp, rp = proxy_ports[0], proxy_ports[1]
            t = time.monotonic()
            c = Client(pp)
            st, _, _ = c.request("POST", "/rows", body=b"on the primary")
            check(st == 200 and c.cookie, "write on the primary's proxy")
            c.close()
            ryw(cl, rp, pp)
            print("read-your-writes: %.1f s" % (time.monotonic() - t))
            headers(cl, rp, app_ports)
            upload(cl, rp)
            sse(rp)
            upgrade(rp)
            refusals(cl, pp, rp)
            max_lag(cl, proxy_ports[2], app_ports)
            # The application of n2 down: 502.
            apps[2].kill()
            apps[2].wait(10)
            st, body = call("http://127.0.0.1:%d/rows" % proxy_ports[2])
            check(st == 502 and b"proxy.target" in body,
                  "application down: %d %r" % (st, body))
            text = cl.replicas[0].get("/metrics")[1].decode()
            for name in ("ltxfs_proxy_forward_latency_seconds_count",
                         "ltxfs_proxy_read_wait_seconds_count",
                         "ltxfs_proxy_read_waits_total"):
                check(name in text, "/metrics lacks " + name)
            # The primary stops: writes 503 with a reason, reads served.
            apps[0].kill()
            apps[0].wait(10)
            cl.primary.stop()
            st, body = call("http://127.0.0.1:%d/rows" % rp, method="POST",
                            data=b"no primary")
            check(st == 503 and b"primary" in body,
                  "write without a primary: %d %r" % (st, body))
            print("without a primary: %d %s" % (st, body.decode().strip()))
            st, body = call("http://127.0.0.1:%d/rows" % rp)
            check(st == 200, "read without a primary: %d" % st)
            apps[1].kill()
            apps[1].wait(10)


def run_config():
    cases = [
        ("proxy:\n  addr: 127.0.0.1:1\n  target: 127.0.0.1:2\n", "proxy.db"),
        ("proxy:\n  addr: 127.0.0.1:1\n  db: a.db\n", "proxy.target"),
        ("proxy:\n  addr: nonsense\n  target: :2\n  db: a.db\n",
         "proxy.addr"),
        ("proxy:\n  target: 127.0.0.1:2\n", "proxy.target"),
        ("proxy:\n  addr: :1\n  target: :2\n  db: a.db\n"
         "  advertise: https://x:1\n", "proxy.advertise"),
        ("proxy:\n  addr: :1\n  target: :2\n  db: a.db\n"
         "  passthrough: [raw]\n", "proxy.passthrough"),
        ("proxy:\n  read-timeout: soon\n", "proxy.read-timeout"),
    ]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ltxfs.yml")
        for text, key in cases:
            with open(path, "w") as f:
                f.write(text)
            p = subprocess.run([h.ltxfs_bin(), "config", "-c", path],
                               capture_output=True, text=True, timeout=30)
            check(p.returncode != 0 and key in p.stderr,
                  "%r: exit %d, %r" % (text, p.returncode, p.stderr))
        p = subprocess.run([h.ltxfs_bin(), "config", "--defaults"],
                           capture_output=True, text=True, timeout=30)
        check("read-timeout: 5s" in p.stdout and "\nproxy:\n" in p.stdout,
              "--defaults lacks the proxy section")


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "cluster"
    {"cluster": run_cluster, "config": run_config}[which]()


if __name__ == "__main__":
    h.main(main)
