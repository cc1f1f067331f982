"""Cascading replicas and regions (suites cluster and etcd;
docs/REGIONS.md, replica/cascade.h): real nodes on loopback.

Cases (argv[1]):
  static     static lease. P (region a); R1 (region c) follows P; F1
             (region c, lease.upstream-url R1) and F2 (region c, chosen
             by region) follow R1. Writes through P reach every node; P
             streams one copy (to R1 only: its stream byte counter equals
             what R1 received and what F1 alone received); /info shows
             who follows whom, /.primary still names P. kill -9 of R1:
             F1 and F2 fall back within a few seconds (to P, or F1 to
             F2), resume from their positions without a snapshot, and
             converge with P.
  bad        lease.upstream-url at the node itself: as written in
             lease.advertise-url, a configuration error; under another
             name, refused (409) and the node falls back to P. Two nodes whose upstream-url name
             each other: never a cycle (sampled), each refusal logged,
             both converge.
  regions    emulated regions (suite regions): a cascade per region,
             one copy of the stream into each region by the byte
             counters, kill -9 of an intermediate (case_regions).
  etcd       etcd lease, three candidates in one region: the primary's
             two replicas form a cascade (one follows the other); kill -9
             of the primary under writes; a new primary, the old one
             rejoins, the cascade forms again under the new primary and
             its epoch reaches the last node through the intermediate;
             then every node's rows are the same and the epoch checker
             (test_etcd.py) holds over every node's LTX log.

Node IDs are set (data/node.id) so that the region's choice is known:
the lowest ID of a region follows the primary. LTXFS_TEST_CASCADE_MS
shortens the avoid and recheck periods of cascade.h to 2 s.
"""

import os
import subprocess
import sys
import time

import ltxfs_harness as h
from ltxfs_harness import check, wait_for
from cluster_harness import ClusterNode, http

DB = "cascade.db"
FALLBACK_MAX_S = 8.0


def set_id(node, v):
    with open(os.path.join(node.data, "node.id"), "w") as f:
        f.write("%016x\n" % v)


def node(name, primary=None, region="", upstream=None, nid=None):
    extra = "region: \"%s\"\n" % region if region else ""
    n = ClusterNode(name, primary_url=primary.url if primary else None,
                    extra_yml=extra)
    if upstream:
        with open(n.cfg) as f:
            text = f.read()
        check("  primary-url: " in text, "config layout changed")
        with open(n.cfg, "w") as f:
            f.write(text.replace("  primary-url: ", "  upstream-url: %s\n"
                                 "  primary-url: " % upstream, 1))
    if nid:
        set_id(n, nid)
    return n


def upstream(n):
    i = n.info() or {}
    u = i.get("upstream") or {}
    return u.get("url"), u.get("node"), u.get("depth")


def wait_upstream(n, want_url, depth, timeout=30):
    def ok():
        u = upstream(n)
        return u if u[0] == want_url and u[2] == depth else None
    return wait_for(ok, timeout, "%s to stream from %s (depth %d)"
                    % (n.name, want_url, depth), interval=0.05)


def wait_ready(n, timeout=30):
    wait_for(lambda: n.get("/readyz", timeout=2)[0] == 200, timeout,
             "%s: /readyz 200" % n.name, interval=0.05)


def write_rows(p, first, count, size=600):
    c = h.connect(p.path(DB))
    try:
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
                  "v TEXT)")
        for i in range(first, first + count):
            c.execute("INSERT INTO t VALUES(?, ?)", (i, "%06d" % i * (size
                                                                   // 6)))
    finally:
        c.close()


def rows(n):
    c = h.ro_connect(n.path(DB))
    try:
        return [r[0] for r in c.execute("SELECT id FROM t ORDER BY id")]
    finally:
        c.close()


def wait_same(nodes, timeout=60):
    want = nodes[0].settled_pos(DB)
    for n in nodes[1:]:
        wait_for(lambda: n.pos_or_none(DB) == want, timeout,
                 "%s: %s at %016x/%016x" % (n.name, DB, want[0], want[1]),
                 interval=0.05)
    ids = rows(nodes[0])
    for n in nodes[1:]:
        check(rows(n) == ids, "%s has other rows than %s"
              % (n.name, nodes[0].name))
        h.integrity_ok(n.path(DB), ro=True)
    return ids


def m(n, name):
    return n.metric(name, 0)


def case_static(nodes):
    p = node("p", region="a", nid=0x9000)
    r1 = node("r1", p, region="c", nid=0x100)
    f1 = node("f1", p, region="c", upstream=r1.url, nid=0x300)
    f2 = node("f2", p, region="c", nid=0x200)
    nodes += [p, r1, f1, f2]
    p.start()
    write_rows(p, 1, 1)
    r1.start()
    wait_upstream(r1, p.url, 1)
    wait_ready(r1)
    f1.start()
    f2.start()
    wait_upstream(f1, r1.url, 2)
    wait_upstream(f2, r1.url, 2)
    wait_same([p, r1, f1, f2])

    # Who follows whom.
    pi, ri = p.info(), r1.info()
    check(pi["region"] == "a" and ri["region"] == "c", "regions in /info")
    check(pi["upstream"] is None, "the primary has no upstream")
    fol = pi["followers"]
    check(len(fol) == 1 and fol[0]["node"] == r1.node_id() and
          fol[0]["region"] == "c" and fol[0]["url"] == r1.url,
          "the primary serves R1 only: %r" % fol)
    check(sorted(f["node"] for f in ri["followers"]) ==
          sorted([f1.node_id(), f2.node_id()]),
          "R1 serves F1 and F2: %r" % ri["followers"])
    for f in (f1, f2):
        i = f.info()
        check(i["upstream"]["node"] == r1.node_id(), "%s: upstream node"
              % f.name)
        check(i["primary"] == p.url, "%s: /info primary is %r"
              % (f.name, i["primary"]))
        with open(f.path(".primary")) as fh:
            check(p.url in fh.read(), "%s: /.primary names the primary"
                  % f.name)
        check(m(f, "ltxfs_stream_upstream_depth") == 2, "depth metric")
        wait_ready(f)           # caught up with R1, not behind P
    check(m(p, 'ltxfs_node_info{node="%s",region="a",role="primary"}'
            % p.node_id()) == 1, "ltxfs_node_info of the primary")
    check(m(p, "ltxfs_connected_replicas") == 1, "one stream on P")
    check(m(r1, "ltxfs_connected_replicas") == 2, "two streams on R1")

    # One copy leaves the primary.
    before = {n.name: (m(n, "ltxfs_stream_bytes_sent_total"),
                       m(n, "ltxfs_stream_bytes_received_total"))
              for n in (p, r1, f1, f2)}
    write_rows(p, 2, 300)
    wait_same([p, r1, f1, f2])
    after = {}
    for n in (p, r1, f1, f2):
        after[n.name] = (m(n, "ltxfs_stream_bytes_sent_total"),
                         m(n, "ltxfs_stream_bytes_received_total"))
    d = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1])
         for k in after}
    print("stream bytes during 300 writes: P sent %d; R1 received %d, "
          "sent %d; F1 received %d; F2 received %d"
          % (d["p"][0], d["r1"][1], d["r1"][0], d["f1"][1], d["f2"][1]))
    check(d["f1"][1] > 50000, "F1 received %d bytes" % d["f1"][1])
    check(d["p"][0] == d["r1"][1], "P sent %d bytes, R1 received %d"
          % (d["p"][0], d["r1"][1]))
    check(d["p"][0] <= 1.05 * d["f1"][1], "P sent %d bytes: more than one "
          "copy (F1 received %d)" % (d["p"][0], d["f1"][1]))
    check(d["r1"][0] == d["f1"][1] + d["f2"][1], "R1 sent %d, F1 + F2 "
          "received %d" % (d["r1"][0], d["f1"][1] + d["f2"][1]))

    # kill -9 of the intermediate.
    snaps = {f.name: m(f, "ltxfs_snapshots_applied_total") for f in (f1, f2)}
    t0 = time.monotonic()
    r1.kill9()
    write_rows(p, 1000, 50)
    took = {}
    for f in (f1, f2):
        def moved(f=f):
            u = upstream(f)
            return u if u[0] in (p.url, f2.url) and u[2] in (1, 2) and \
                u[0] != f.url else None
        u = wait_for(moved, 30, "%s to leave R1" % f.name, interval=0.05)
        took[f.name] = time.monotonic() - t0
        print("%s: streaming from %s (depth %s) %.2f s after kill -9 of R1"
              % (f.name, u[0], u[2], took[f.name]))
    check(max(took.values()) <= FALLBACK_MAX_S, "fallback took %r"
          % took)
    ids = wait_same([p, f1, f2])
    check(ids == list(range(1, 302)) + list(range(1000, 1050)),
          "rows after the fallback")
    for f in (f1, f2):
        check(m(f, "ltxfs_snapshots_applied_total") == snaps[f.name],
              "%s applied a snapshot after the fallback" % f.name)
        check(m(f, "ltxfs_stream_upstream_fallbacks_total") >= 1,
              "%s: fallback counted" % f.name)
        wait_ready(f)
    check(m(p, "ltxfs_stream_snapshots_sent_total") == 0,
          "the primary sent a snapshot")
    for n in (f1, f2, p):
        n.stop()                # exit code 0: no leak, a clean stop


def case_bad(nodes):
    p = node("p", region="a", nid=0x9000)
    a = node("a", p, region="c", nid=0x100)
    with open(a.cfg) as f:
        text = f.read()
    # Its own URL as written in lease.advertise-url: a configuration
    # error; the same node under another name: refused at run time.
    with open(a.cfg, "w") as f:
        f.write(text.replace("  primary-url: ", "  upstream-url: %s\n"
                             "  primary-url: " % a.url, 1))
    r = subprocess.run([h.ltxfs_bin(), "config", "-c", a.cfg],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode != 0 and "cannot stream from itself" in r.stderr,
          "ltxfs config with upstream-url = advertise-url: exit %d: %s"
          % (r.returncode, r.stderr))
    with open(a.cfg, "w") as f:
        f.write(text.replace("  primary-url: ", "  upstream-url: %s\n"
                             "  primary-url: " % a.url.replace(
                                 "127.0.0.1", "localhost"), 1))
    b = node("b", p, region="d", nid=0x200)
    c = node("c", p, region="d", upstream=b.url, nid=0x300)
    with open(b.cfg) as f:
        text = f.read()
    with open(b.cfg, "w") as f:
        f.write(text.replace("  primary-url: ", "  upstream-url: %s\n"
                             "  primary-url: " % c.url, 1))
    nodes += [p, a, b, c]
    p.start()
    write_rows(p, 1, 20)
    for n in (a, b, c):
        n.start()
    wait_upstream(a, p.url, 1)
    a.wait_log("cannot stream from itself", 20)
    # B and C: whichever follows the other, never both.
    end = time.monotonic() + 8
    seen = set()
    while time.monotonic() < end:
        ub, uc = upstream(b), upstream(c)
        check(not (ub[1] == c.node_id() and uc[1] == b.node_id()),
              "a cycle: B follows C and C follows B")
        seen.add((ub[0], ub[2], uc[0], uc[2]))
        time.sleep(0.1)
    print("B/C upstreams seen: %r" % sorted(seen, key=str))
    write_rows(p, 100, 20)
    wait_same([p, a, b, c])
    refused = b.log_count("form a cycle|serves /stream only while") + \
        c.log_count("form a cycle|serves /stream only while")
    check(refused >= 1, "no refusal between B and C was logged")
    st, body = http(a.url + "/stream?node=%s" % a.node_id(), timeout=5)
    check(st == 409, "/stream from the node itself answered %d: %r"
          % (st, body))
    # A follows P: P asking A for a stream would be a cycle. (A tries
    # itself again every 2 s: meanwhile it answers 421, never 200.)
    last = []

    def cycle_refused():
        last[:] = http(a.url + "/stream?node=%s" % p.node_id(), timeout=5)
        check(last[0] in (409, 421), "/stream from A's upstream answered "
              "%d: %r" % tuple(last))
        return last[0] == 409 and b"cycle" in last[1]
    wait_for(cycle_refused, 10, "A to refuse its upstream as a cycle "
             "(last %r)" % (last,), interval=0.05)
    for n in (c, b, a, p):
        n.stop()


def case_etcd(nodes):
    import test_etcd as te
    te.TTL = 2.0
    etcd = te.Etcd()
    try:
        etcd.start()
        for i, nid in enumerate((0x100, 0x200, 0x300)):
            n = te.EtcdNode("n%d" % i, etcd, extra_yml="region: c\n")
            set_id(n, nid)
            nodes.append(n)
        p, w = te.start_writes(nodes, 30)
        reps = sorted((n for n in nodes if n is not p), key=lambda n:
                      n.node_id())
        # The lower-ID replica follows the primary, the other follows it.
        wait_upstream(reps[0], p.url, 1)
        wait_upstream(reps[1], reps[0].url, 2)
        print("cascade: %s -> %s -> %s" % (p.name, reps[0].name,
                                            reps[1].name))
        t0 = time.monotonic()
        p.kill9()
        a = wait_for(lambda: w.first_ack_after(t0, p.name), te.TTL + 10,
                     "a write accepted by a new primary")
        print("failover under a cascade: %.2f s" % (a[2] - t0))
        w.wait_acks_after(t0, 20, 30, "20 writes on the new primary")
        p.start()
        p.wait_ready_replica(30)
        q = te.wait_one_primary(nodes, 20)
        # The cascade forms again under the new primary (rechecked every
        # 2 s here), and the new epoch reaches the follower through it.
        reps = sorted((n for n in nodes if n is not q), key=lambda n:
                      n.node_id())
        wait_upstream(reps[0], q.url, 1)
        wait_upstream(reps[1], reps[0].url, 2)
        epoch = q.info()["epoch"]
        wait_for(lambda: reps[1].info()["epoch"] == epoch, 10,
                 "%s at epoch %d" % (reps[1].name, epoch))
        print("cascade after the failover: %s -> %s -> %s (epoch %d)"
              % (q.name, reps[0].name, reps[1].name, epoch))
        te.finish_writes(nodes, w, t0, 40, "more writes")
    except BaseException:
        sys.stdout.write("---- etcd log tail ----\n")
        try:
            with open(etcd.log_path, "rb") as f:
                sys.stdout.write(f.read()[-2000:].decode("utf-8",
                                                          "replace"))
        except OSError:
            pass
        raise
    finally:
        for n in nodes:
            n.close()
        nodes.clear()
        etcd.close()


def write_random(p, txns, rows=8, size=4096):
    """txns transactions of rows random (incompressible) blobs on p."""
    c = h.connect(p.path(DB))
    try:
        c.execute("CREATE TABLE IF NOT EXISTS r(id INTEGER PRIMARY KEY, "
                  "v BLOB)")
        for _ in range(txns):
            c.execute("BEGIN")
            for _ in range(rows):
                c.execute("INSERT INTO r(v) VALUES (randomblob(?))",
                          (size,))
            c.execute("COMMIT")
    finally:
        c.close()
    return txns * rows * size


def case_regions(nodes):
    """Emulated regions (regions_harness.py; suite regions): a (the
    primary a0, and a1), b and c of two nodes each, one-way delays a-b
    30 ms, a-c 70 ms, b-c 50 ms. Every node has its region and no
    lease.upstream-url: b0 and c0 (the lower node IDs of their regions)
    follow a0, b1 and c1 follow them. The bytes into region c from
    region a are one copy of the stream; kill -9 of c0: c1 falls back to
    a0 without a snapshot and converges."""
    from regions_harness import RegionCluster, Regions
    regions = {"a": 2, "b": 2, "c": 2}
    delays = {("a", "b"): 30, ("a", "c"): 70, ("b", "c"): 50}
    ids = {"a0": 0x9000, "a1": 0x9100, "b0": 0x200, "b1": 0x300,
           "c0": 0x400, "c1": 0x500}
    with Regions(regions, delays) as net, RegionCluster(net) as cl:
        for n in cl.nodes:
            with open(n.cfg, "a") as f:
                f.write("region: %s\n" % n.netnode.region)
            set_id(n, ids[n.name])
        p, a1 = cl.primary, cl.node("a1")
        b0, b1 = cl.region("b")
        c0, c1 = cl.region("c")
        p.start()
        write_random(p, 1)
        for n in (a1, b0, c0):
            n.start()
        for n in (a1, b0, c0):
            wait_upstream(n, p.url, 1)
            wait_ready(n)
        b1.start()
        c1.start()
        wait_upstream(b1, b0.url, 2)
        wait_upstream(c1, c0.url, 2)
        cl.wait_synced(DB)
        print("cascades: a0 -> a1; a0 -> b0 -> b1; a0 -> c0 -> c1")

        def counters():
            return {n.name: {r: net.bytes_in_from(n.netnode, r)
                             for r in regions} for n in cl.replicas}
        before = counters()
        payload = write_random(p, 60)
        cl.wait_synced(DB)
        after = counters()
        d = {k: {r: after[k][r] - before[k][r] for r in regions}
             for k in after}
        for k in sorted(d):
            print("%s received from a %d, b %d, c %d bytes (payload %d)"
                  % (k, d[k]["a"], d[k]["b"], d[k]["c"], payload))
        for x0, x1, x in (("b0", "b1", "b"), ("c0", "c1", "c")):
            into = d[x0]["a"] + d[x1]["a"]
            print("bytes into region %s from region a: %d = %.2f x the "
                  "random bytes written" % (x, into, into / payload))
            check(d[x0]["a"] >= payload, "%s: %d bytes from a, under the "
                  "payload %d" % (x0, d[x0]["a"], payload))
            check(d[x1]["a"] < 64 * 1024, "%s: %d bytes from region a "
                  "(it streams from %s)" % (x1, d[x1]["a"], x0))
            check(d[x1][x] >= payload, "%s: %d bytes from its region"
                  % (x1, d[x1][x]))
            check(into <= 1.3 * payload, "region %s received %d bytes "
                  "from a: more than one copy of %d" % (x, into, payload))
        check(m(p, "ltxfs_connected_replicas") == 3, "the primary serves "
              "a1, b0, c0 only")

        snaps = m(c1, "ltxfs_snapshots_applied_total")
        t0 = time.monotonic()
        c0.kill9()
        write_random(p, 10)
        wait_upstream(c1, p.url, 1)
        print("c1: streaming from a0 %.2f s after kill -9 of c0"
              % (time.monotonic() - t0))
        check(time.monotonic() - t0 <= FALLBACK_MAX_S, "fallback too slow")
        live = [n for n in cl.replicas if n is not c0]
        cl.wait_synced(DB, nodes=live)
        want = h.content_digest(p.path(DB))
        for n in live:
            check(h.content_digest(n.path(DB), ro=True) == want,
                  "%s: rows differ from the primary's" % n.name)
        check(m(c1, "ltxfs_snapshots_applied_total") == snaps,
              "c1 applied a snapshot after the fallback")
        check(m(p, "ltxfs_stream_snapshots_sent_total") == 0,
              "the primary sent a snapshot")
        cl.stop()


CASES = {"static": case_static, "bad": case_bad, "etcd": case_etcd,
         "regions": case_regions}


def run():
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    check(case in CASES, "usage: test_cascade.py %s" % "|".join(CASES))
    os.environ["LTXFS_TEST_CASCADE_MS"] = "2000"
    nodes = []
    try:
        CASES[case](nodes)
    except BaseException:
        for n in nodes:
            h.print_log_tail(n, 40)
        raise
    finally:
        for n in nodes:
            n.close()


if __name__ == "__main__":
    h.main(run)
