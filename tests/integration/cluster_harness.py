"""Harness for the cluster tests: N ltxfs nodes on one machine, each a
real FUSE mount (ltxfs_harness.Node) with its HTTP API on a 127.0.0.1
port, replicating over loopback with the static lease.

    with Cluster(3) as cl:          # node 0 is the primary
        cl.start()                  # every node mounted, replicas streaming
        ...write through cl.primary.path("db")...
        cl.wait_synced("db")        # each replica's -pos == the primary's

Ports are picked by binding port 0 on 127.0.0.1 and closing the socket
just before the daemon starts (a small race with other programs; a
daemon that cannot listen fails its start with a clear message).
Every wait is a poll with a deadline.
"""

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, free_port, wait_for

HTTP_TIMEOUT = 30.0


def http(url, method="GET", token=None, data=None, headers=None,
         timeout=HTTP_TIMEOUT, context=None):
    """One HTTP request; returns (status, body bytes) for any status.
    context: the ssl.SSLContext of an https:// URL."""
    hdr = dict(headers or {})
    if token is not None:
        hdr["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=data, method=method, headers=hdr)
    try:
        with urllib.request.urlopen(req, timeout=timeout,
                                    context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, body


class Tls:
    """A node's http.tls-* files (paths; None: unset) and the context
    the harness reaches it with (trusting ca, showing client_cert)."""

    def __init__(self, cert, key, ca, client_ca=None, client_cert=None,
                 client_key=None):
        self.cert, self.key, self.ca = cert, key, ca
        self.client_ca = client_ca
        self.client_cert, self.client_key = client_cert, client_key

    def yml(self):
        keys = [("tls-cert-file", self.cert), ("tls-key-file", self.key),
                ("tls-ca-file", self.ca),
                ("tls-client-ca-file", self.client_ca),
                ("tls-client-cert-file", self.client_cert),
                ("tls-client-key-file", self.client_key)]
        return "".join("  %s: %s\n" % (k, v) for k, v in keys if v)

    def context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class ClusterNode(h.Node):
    """A Node with an HTTP port and the lease section of its role (the
    static lease; a subclass may write another in lease_yml()). Its
    pos() reads -pos as it is (a replica's database may be locked for a
    reader); settled_pos() is for the primary's final position."""

    settle_pos = False

    def __init__(self, name, primary_url=None, token=None, extra_yml="",
                 log_level="info", data_yml="", tls=None, http_yml="",
                 host="127.0.0.1", port=None):
        """host, port: where http.addr listens (default a free port on
        127.0.0.1; another host is e.g. a network namespace's address)."""
        self.host = host
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.ssl = tls.context() if tls else None
        self.url = "%s://%s:%d" % ("https" if tls else "http", host,
                                   self.port)
        self.token = token
        lease = self.lease_yml(name, primary_url)
        httpc = "http:\n  addr: %s:%d\n" % (host, self.port) + http_yml
        if token is not None:
            httpc += "  token: \"%s\"\n" % token
        if tls:
            httpc += tls.yml()
        super().__init__(name=name, log_level=log_level,
                         extra_yml=httpc + lease + extra_yml)
        self.is_primary = primary_url is None
        if data_yml:
            # More keys of the data section (e.g. "  retention: 1s\n").
            with open(self.cfg) as f:
                text = f.read()
            head = "data:\n  dir: %s\n" % self.data
            check(head in text, "config layout changed: %r" % text)
            with open(self.cfg, "w") as f:
                f.write(text.replace(head, head + data_yml, 1))

    def lease_yml(self, name, primary_url):
        lease = ("lease:\n  type: static\n  candidate: %s\n"
                 "  hostname: %s\n  advertise-url: %s\n"
                 % ("false" if primary_url else "true", name, self.url))
        if primary_url:
            lease += "  primary-url: %s\n" % primary_url
        return lease

    def start(self, expect_mount=True):
        st = super().start(expect_mount)
        if st == "mounted":
            wait_for(self.healthy, h.MOUNT_TIMEOUT, "%s: /healthz"
                     % self.name)
        return st

    def healthy(self):
        try:
            return http(self.url + "/healthz", timeout=2,
                        context=self.ssl)[0] == 200
        except OSError:
            return False

    def get(self, path, token=None, **kw):
        """GET path (with this node's token unless one is given)."""
        kw.setdefault("context", self.ssl)
        return http(self.url + path,
                    token=self.token if token is None else token, **kw)

    def info(self):
        st, body = self.get("/info")
        check(st == 200, "%s: /info answered %d: %r" % (self.name, st, body))
        return json.loads(body)

    def metrics(self):
        """{metric name with labels: float} from /metrics."""
        st, body = self.get("/metrics")
        check(st == 200, "%s: /metrics answered %d" % (self.name, st))
        out = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
        return out

    def metric(self, name, default=None):
        """One value of /metrics (name with its labels), or default."""
        return self.metrics().get(name, default)

    def wait_metric(self, name, cond, timeout, what=None):
        """Waits until cond(value of metric name, 0 when absent) holds;
        returns the value. A counter that follows an event the test saw
        (e.g. ltxfs_records_applied_total, bumped just after the -pos
        file changes) is read this way, not once."""
        last = []

        def ok():
            v = self.metric(name, 0)
            last[:] = [v]
            return (v,) if cond(v) else None
        try:
            return wait_for(ok, timeout, what or "%s: %s" % (self.name,
                                                               name),
                            interval=0.05)[0]
        except TestFailure as e:
            raise TestFailure("%s (last value %s)" % (e, last))

    def node_id(self):
        with open(os.path.join(self.data, "node.id")) as f:
            return f.read().strip()

    def log_dir(self, db):
        return os.path.join(self.data, "dbs", db, "log")

    def first_segment(self, db):
        """The first TXID of db's oldest log segment on disk (0: none)."""
        names = [f for f in os.listdir(self.log_dir(db))
                 if f.endswith(".seg")]
        return min(int(f[:16], 16) for f in names) if names else 0

    def log_bytes_on_disk(self, db):
        """Bytes of db's log segments (the node should be quiet: a segment
        removed meanwhile fails the test)."""
        d = self.log_dir(db)
        return sum(os.path.getsize(os.path.join(d, f))
                   for f in os.listdir(d) if f.endswith(".seg"))

    def pos_or_none(self, db):
        try:
            return self.pos(db)
        except (OSError, TestFailure):
            return None

    def pid(self):
        check(self.proc is not None, "%s: not running" % self.name)
        return self.proc.pid

    def vm_hwm_kib(self):
        """Peak resident set (VmHWM) of the daemon, KiB."""
        with open("/proc/%d/status" % self.pid()) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise TestFailure("%s: no VmHWM in /proc status" % self.name)

    def log_count(self, pattern):
        return len(re.findall(pattern, self.log_text()))


class Cluster:
    """Node 0 is the primary (lease.candidate true); the others are
    replicas with lease.primary-url pointing at it."""

    def __init__(self, n, token=None, extra_yml="", primary_yml="",
                 replica_yml="", primary_data_yml="", tls=None, http_yml="",
                 data_yml=""):
        """tls: a Tls every node uses; http_yml, data_yml: more keys of
        the http and data sections on every node ("  key: value\n")."""
        self.nodes = []
        self.tls, self.http_yml, self.data_yml = tls, http_yml, data_yml
        self.primary = ClusterNode("n0", token=token,
                                   extra_yml=extra_yml + primary_yml,
                                   data_yml=data_yml + primary_data_yml,
                                   tls=tls,
                                   http_yml=http_yml)
        self.nodes.append(self.primary)
        for i in range(1, n):
            self.add_replica(token=token, extra_yml=extra_yml + replica_yml)

    @property
    def replicas(self):
        return self.nodes[1:]

    def add_replica(self, token=None, extra_yml="", name=None, tls=None):
        """tls: this replica's, else the cluster's."""
        r = ClusterNode(name or "n%d" % len(self.nodes),
                        primary_url=self.primary.url, token=token,
                        extra_yml=extra_yml, tls=tls or self.tls,
                        http_yml=self.http_yml, data_yml=self.data_yml)
        self.nodes.append(r)
        return r

    def start(self, nodes=None):
        for n in nodes if nodes is not None else self.nodes:
            n.start()
        for n in (nodes if nodes is not None else self.nodes):
            if not n.is_primary:
                self.wait_connected(n)

    def wait_connected(self, r, timeout=30):
        wait_for(lambda: r.metrics().get("ltxfs_stream_connected") == 1,
                 timeout, "%s: stream to the primary connected" % r.name,
                 interval=0.05)

    def wait_synced(self, db, timeout=60, nodes=None):
        """Waits until each replica's <db>-pos equals the primary's (which
        must not change meanwhile: the writers are done). Returns the
        seconds it took."""
        t0 = time.monotonic()
        want = self.primary.settled_pos(db)
        for r in nodes if nodes is not None else self.replicas:
            last = []

            def same():
                p = r.pos_or_none(db)
                last[:] = [p]
                return p == want
            try:
                wait_for(same, timeout, "%s: %s-pos to reach %016x/%016x"
                         % (r.name, db, want[0], want[1]), interval=0.05)
            except TestFailure as e:
                raise TestFailure("%s (last seen %s)" % (e, last))
        return time.monotonic() - t0

    def stop(self):
        for n in reversed(self.nodes):
            if n.running():
                n.stop()

    def close(self):
        for n in reversed(self.nodes):
            n.close(keep=bool(os.environ.get("LTXFS_KEEP")))

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            for n in self.nodes:
                h.print_log_tail(n)
        self.close()
        return False


def file_digest(path):
    import hashlib
    d = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            d.update(b)
    return d.hexdigest()
