"""The etcd lease with the ltxfs image in podman containers (suite
deploy-etcd; podman_harness.py). etcd runs on this host (Debian's
etcd-server, test_etcd.Etcd), listening on the gateway address of the
podman network the test creates, and the containers reach it there.

    failover   3 candidate containers (LTXFS_LEASE_TYPE=etcd, TTL 4 s),
               each with its own volume; one becomes primary; rows written
               there are read on the others; `podman kill` of the primary
               (SIGKILL): another takes over within TTL + 2 s and takes
               writes; the old one started again rejoins as a replica and
               its sqlite3 reads every row written after the failover, in
               WAL mode
    stop       `podman stop` (SIGTERM) of the primary during writes: it
               exits within 30 s, another takes over, and every
               acknowledged id is on the new primary
"""

import json
import random
import sys
import time
import urllib.request

import podman_harness as ph
from podman_harness import Pod, TestFailure, check, podman, wait_for
from test_deploy import Writer, ids
from test_etcd import Etcd

TTL = 4


def info(p, c, ip=None):
    """The node's GET /info, asked from this host at the container's
    address (no podman exec: the takeover is timed by it), or None. ip:
    the address if known (a podman inspect per poll made each poll take
    up to a second under load, which counted in the takeover time)."""
    ip = ip or p.ip(c)
    if not ip:
        return None
    try:
        with urllib.request.urlopen("http://%s:20202/info" % ip,
                                    timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def primaries(p, cs, ips):
    """The containers of cs whose /info says primary; ips: the known
    addresses (a container not yet started has none: asked again)."""
    out = []
    for c in cs:
        if not ips.get(c):
            ips[c] = p.ip(c)
        i = info(p, c, ips[c])
        if i and i.get("role") == "primary":
            out.append(c)
    return out


def one_primary(p, cs, timeout, what):
    """Waits for exactly one primary among cs, which must all be running
    (their addresses are taken once)."""
    ips = {}

    def got():
        ps = primaries(p, cs, ips)
        check(len(ps) <= 1, "two primaries: %s" % ps)
        return ps[0] if ps else None
    return wait_for(got, timeout, what, interval=0.1)


class Cluster:
    """etcd on the network's gateway, three candidate containers."""

    def __init__(self, p):
        sub = random.randrange(100, 200)
        self.net = p.network(subnet="10.%d.9.0/24" % sub)
        gw = "10.%d.9.1" % sub
        self.etcd = Etcd()
        self.etcd.url = "http://%s:%d" % (gw, self.etcd.port)
        self.p = p
        self.cs = []
        self.env = {"LTXFS_LEASE_TYPE": "etcd",
                    "LTXFS_ETCD_ENDPOINTS": self.etcd.url,
                    "LTXFS_ETCD_PREFIX": "/" + p.run,
                    "LTXFS_ETCD_TTL": "%ds" % TTL}

    def start(self):
        # The network's bridge, with the gateway's address, exists once a
        # container is on it: the nodes first (they retry etcd), then etcd.
        for i in range(3):
            self.cs.append(self.p.node("e%d" % i, self.net, env=self.env))
        self.etcd.start()
        return one_primary(self.p, self.cs, 60, "a primary")

    def close(self):
        self.etcd.stop()
        self.etcd.close()


def t_failover():
    with Pod() as p:
        p.image()
        cl = Cluster(p)
        try:
            a = cl.start()
            print("  primary: %s" % a)
            p.sql(a, "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER "
                  "PRIMARY KEY, who TEXT)")
            acked = set(Writer(p, a, 1, 50).wait())
            check(len(acked) == 50, "%d of 50 written" % len(acked))
            others = [c for c in cl.cs if c != a]
            for c in others:
                wait_for(lambda: ids(p, c) == acked, 30,
                         "%s to read the rows" % c, interval=0.2)
            t0 = time.monotonic()
            podman("kill", a)
            b = one_primary(p, others, TTL + 10, "a new primary")
            dt = time.monotonic() - t0
            print("  %s took over %.1fs after the kill" % (b, dt))
            check(dt <= TTL + 2, "takeover took %.1fs > TTL + 2 s" % dt)
            new = set(Writer(p, b, 1000, 30).wait())
            check(len(new) == 30, "%d of 30 written on %s" % (len(new), b))
            podman("start", a)
            wait_for(lambda: (info(p, a) or {}).get("role") == "replica",
                     60, "%s to rejoin as a replica" % a, interval=0.2)
            p.wait_ready(a)
            i = info(p, a)
            print("  %s rejoined: %s" % (a, json.dumps(i)[:300]))
            got = ids(p, a)
            check(acked | new <= got, "%s's sqlite3 lacks %d rows written "
                  "after the failover (e.g. %s)"
                  % (a, len((acked | new) - got),
                     sorted((acked | new) - got)[:5]))
            check(p.sql(a, "PRAGMA integrity_check").strip() == "ok",
                  "integrity on %s" % a)
        finally:
            cl.close()


def t_stop():
    with Pod() as p:
        p.image()
        cl = Cluster(p)
        try:
            a = cl.start()
            p.sql(a, "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
            w = Writer(p, a, 1, 100000)
            wait_for(lambda: len(w.acked) >= 100, 60, "100 writes")
            t0 = time.monotonic()
            rc = p.stop(a, timeout=30)
            dt = time.monotonic() - t0
            acked = set(w.wait())
            print("  %s stopped in %.1fs, exit %d; %d acknowledged"
                  % (a, dt, rc, len(acked)))
            check(dt < 30, "the primary took %.1fs to stop" % dt)
            check(rc == 0, "exit code %d" % rc)
            others = [c for c in cl.cs if c != a]
            b = one_primary(p, others, TTL + 10, "a new primary")
            lost = acked - ids(p, b)
            check(not lost, "%s lacks %d acknowledged ids (e.g. %s)"
                  % (b, len(lost), sorted(lost)[:5]))
        finally:
            cl.close()


TESTS = {"failover": t_failover, "stop": t_stop}

if __name__ == "__main__":
    ph.main(TESTS[sys.argv[1]])
