#!/usr/bin/env python3
"""Commit latency of synchronous replication across an emulated round
trip (docs/SYNC.md, docs/BENCHMARKS.md):

  bench_sync.py [--commits N] [--rtt MS]

builds two emulated regions (tests/integration/regions_harness.py; needs
root, NFDELAY_BIN, LTXFS_BIN) of two nodes each, with MS/2 ms one way
between them (default 20 ms of round trip), and two clusters side by
side: a0 primary, b0 its replica (asynchronous), and a1 primary, b1 its
replica with replication.sync.min-replicas 1. Then N (default 200)
single-row INSERT transactions (WAL, synchronous=NORMAL) on each primary,
alternating one by one, each timed from the INSERT to its return; the
median and p99 of each, and of sync minus async. Target: the median of
the difference at most the round trip + 1 ms.
"""

import argparse
import os
import sqlite3
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

SYNC = "replication:\n  sync:\n    min-replicas: 1\n    timeout: 10s\n"


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(p * len(s)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--rtt", type=int, default=20)
    args = ap.parse_args()
    import regions_harness as rh
    one_way = args.rtt // 2
    print("load average at the start: %s" % " ".join(
        open("/proc/loadavg").read().split()[:3]))
    with rh.Regions({"a": 2, "b": 2}, {("a", "b"): one_way}) as net:
        a0 = rh.RegionNode(net.node("a0"))
        b0 = rh.RegionNode(net.node("b0"), primary_url=a0.url)
        a1 = rh.RegionNode(net.node("a1"), extra_yml=SYNC)
        b1 = rh.RegionNode(net.node("b1"), primary_url=a1.url,
                           extra_yml=SYNC)
        nodes = [a0, b0, a1, b1]
        try:
            for n in nodes:
                n.start()
            rtt = net.tcp_connect_ms(net.node("a1"), net.node("b1"),
                                     rh.NODE_PORT)
            print("TCP connect a1 -> b1 (one round trip): median %.1f ms"
                  % statistics.median(rtt))
            conns = []
            for p in (a0, a1):
                c = sqlite3.connect(p.path("lat.db"), timeout=30,
                                    isolation_level=None)
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("PRAGMA synchronous=NORMAL")
                c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
                conns.append(c)
            # Warm-up: the replicas connected and acknowledging.
            for i in range(10):
                for c in conns:
                    c.execute("INSERT INTO t(v) VALUES (?)", ("warm",))
            lat = ([], [])
            for i in range(args.commits):
                for k, c in enumerate(conns):
                    t0 = time.perf_counter()
                    c.execute("INSERT INTO t(v) VALUES (?)", ("x" * 40,))
                    lat[k].append((time.perf_counter() - t0) * 1e3)
            diff = [s - a for a, s in zip(*lat)]
            for what, v in (("async", lat[0]), ("sync", lat[1]),
                            ("sync - async", diff)):
                print("%-12s median %6.2f ms, p99 %6.2f ms"
                      % (what, statistics.median(v), pct(v, 0.99)))
            med = statistics.median(diff)
            print("summary: bench_sync: added commit latency at %d ms RTT: "
                  "median %.2f ms, p99 %.2f ms (target median <= %d ms) %s"
                  % (args.rtt, med, pct(diff, 0.99), args.rtt + 1,
                     "met" if med <= args.rtt + 1 else "NOT met"))
            w = a1.metrics()
            print("a1: %d commits acknowledged, %d timed out"
                  % (w.get('ltxfs_sync_commits_total{result='
                           '"acknowledged"}', 0),
                     w.get('ltxfs_sync_commits_total{result="timeout"}',
                           0)))
            for c in conns:
                c.close()
        finally:
            for n in reversed(nodes):
                if n.running():
                    n.stop()
            for n in nodes:
                n.close()
    print("load average at the end: %s" % " ".join(
        open("/proc/loadavg").read().split()[:3]))


if __name__ == "__main__":
    main()
