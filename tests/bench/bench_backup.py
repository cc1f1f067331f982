#!/usr/bin/env python3
"""Benchmarks of continuous backup (docs/BENCHMARKS.md, "Continuous
backup"; issue 15). Needs LTXFS_BIN (a release build), /dev/fuse, root,
and s3rver (scripts/install-deps):

    LTXFS_BIN=$PWD/build-rel/cmd/ltxfs python3 tests/bench/bench_backup.py \\
        [--rounds N] [--round-s S] [--big-mib M] [--pitr-tx N]
        [--pitr-interval D] [--compaction-interval D]

(a) primary write throughput with backup off, to a file store and to
    s3rver: three primaries side by side (each alone on its static lease),
    one autocommit INSERT of a 100-byte row per transaction, in rounds of
    S seconds taken in turn (off, file, s3, off, ...), N rounds each;
    transactions per second of each and the ratios to "off" (sum over the
    rounds, and the median of the rounds' ratios).
(b) restore of an M MiB database (one incompressible row per 4 KiB page;
    one snapshot object made with `ltxfs ltx encode-db`) from the file
    store and from s3rver on loopback: seconds, MB/s (object bytes) and
    peak RSS of the `ltxfs restore` child (getrusage), twice each; and
    how fast s3rver alone serves the object (a GET into a file).
(c) point-in-time restore after many small transactions: a primary with
    backup to the file store (backup.interval D, 1 s unless
    --pitr-interval), compaction every --compaction-interval (5 s), a 64
    MiB table, then N single-row transactions; once L1 objects cover all
    but the last L0 objects, restores of the latest TXID and of one in the
    middle, with the L1 objects and again with l1/ moved away (L0 only):
    objects read, records applied, seconds.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import ltxfs_harness as h  # noqa: E402
from cluster_harness import ClusterNode  # noqa: E402
import test_backup as tb  # noqa: E402


def out(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def throughput(args, s3, bdir):
    kinds = ["off", "file", "s3"]
    ymls = {"off": "", "file": tb.backup_yml("file", bdir=bdir),
            "s3": tb.backup_yml("s3", s3)}
    nodes = {k: ClusterNode("tp-" + k, log_level="warn", extra_yml=ymls[k])
             for k in kinds}
    rates = {k: [] for k in kinds}
    try:
        conns = {}
        for k in kinds:
            nodes[k].start()
            c = h.connect(nodes[k].path(tb.DB))
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            conns[k] = c
        for _ in range(args.rounds):
            for k in kinds:
                c, n, t_end = conns[k], 0, time.monotonic() + args.round_s
                t0 = time.monotonic()
                while time.monotonic() < t_end:
                    c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
                    n += 1
                rates[k].append(n / (time.monotonic() - t0))
        for k in kinds:
            conns[k].close()
        for k in ("file", "s3"):
            txid = nodes[k].settled_pos(tb.DB)[0]
            tb.wait_backed_up(nodes[k], txid, "throughput " + k)
    finally:
        for n in nodes.values():
            n.close()
    out("(a) write throughput, %d rounds of %.1f s each, in turn"
        % (args.rounds, args.round_s))
    for k in kinds:
        ratios = [a / b for a, b in zip(rates[k], rates["off"])]
        out("  %-4s %8.0f tx/s (rounds %s)  ratio to off: %.3f (sum), "
            "%.3f (median of rounds)"
            % (k, statistics.mean(rates[k]),
               " ".join("%.0f" % r for r in rates[k]),
               sum(rates[k]) / sum(rates["off"]), statistics.median(ratios)))


def restore_big(args, s3, work):
    db = os.path.join(work, "big.db")
    tb.big_db(db, args.big_mib)
    for kind in ("file", "s3"):
        key, body, cks = tb.snapshot_object(db, work)
        size = os.path.getsize(body)
        bdir = os.path.join(work, "store-" + kind)
        tb.put_object(key, body, s3=s3 if kind == "s3" else None, bdir=bdir)
        cfg = os.path.join(work, "ltxfs-%s.yml" % kind)
        with open(cfg, "w") as f:
            f.write(tb.backup_yml(kind, s3, bdir))
        if kind == "s3":
            get = os.path.join(work, "get.obj")
            t0 = time.monotonic()
            with urllib.request.urlopen("%s/%s/%s" % (
                    s3.url, tb.BUCKET, key), timeout=600) as r, \
                    open(get, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            secs = time.monotonic() - t0
            out("(b) s3rver alone: GET of the %d-byte object: %.2f s, "
                "%.0f MB/s" % (size, secs, size / 1e6 / secs))
            os.unlink(get)
        for i in range(2):
            o = os.path.join(work, "out.db")
            secs, rss, text = tb.timed_restore(cfg, o)
            h.check("checksum %016x" % cks in text, "restore: %s" % text)
            out("(b) restore %d MiB from %-4s #%d: %.2f s, %.0f MB/s, peak "
                "RSS %.1f MiB" % (args.big_mib, kind, i + 1, secs,
                                 size / 1e6 / secs, rss))
            os.unlink(o)
    os.unlink(db)


def pitr(args, work):
    bdir = os.path.join(work, "store-pitr")
    yml = tb.backup_yml("file", bdir=bdir, interval=args.pitr_interval,
                        extra="  compaction-interval: %s\n"
                        % args.compaction_interval)
    l0dir = os.path.join(bdir, "it", tb.DB, "l0")
    l1dir = os.path.join(bdir, "it", tb.DB, "l1")
    n = ClusterNode("pitr", log_level="warn", extra_yml=yml)
    try:
        n.start()
        c = h.connect(n.path(tb.DB))
        c.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
        c.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                  "FROM s WHERE i < 16384) INSERT INTO big(b) SELECT "
                  "randomblob(3900) FROM s")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        first = n.settled_pos(tb.DB)[0]
        t0 = time.monotonic()
        for i in range(args.pitr_tx):
            c.execute("INSERT INTO t(v) VALUES ('tx %d')" % i)
        write_s = time.monotonic() - t0
        last = n.settled_pos(tb.DB)[0]
        c.close()
        tb.wait_backed_up(n, last, "pitr")
        out("(c) %d single-row transactions after a 64 MiB table, "
            "written in %.1f s (backup.interval %s): %d L0 objects"
            % (args.pitr_tx, write_s, args.pitr_interval,
               len(os.listdir(l0dir))))
        # Compaction leaves at most one L0 object after its last L1.
        t0 = time.monotonic()
        t_end = t0 + 600
        while time.monotonic() < t_end:
            ends = [x for x, _ in tb.l1_objects(l1dir)]
            if ends and max(ends) >= last - 1:
                break
            time.sleep(0.5)
        out("(c) L1 objects: %d, the last ending at TXID %016x, %.1f s "
            "after the backup caught up" % (len(ends), max(ends or [0]),
                                             time.monotonic() - t0))
        n.stop()
        for level in ("with L1", "L0 only"):
            if level == "L0 only":
                os.rename(l1dir, l1dir + ".away")
            for what, txid in (("latest", last),
                               ("middle", (first + last) // 2)):
                o = os.path.join(work, "pitr-%s.db" % what)
                t0 = time.monotonic()
                p = tb.ltxfs("restore", "-c", n.cfg, tb.DB, o, "--txid",
                             "%016x" % txid, check_rc=0)
                out("(c) %s: restore to the %s TXID %016x: %.2f s: %s"
                    % (level, what, txid, time.monotonic() - t0,
                       p.stdout.splitlines()[0]))
    finally:
        n.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-s", type=float, default=2.0)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--pitr-tx", type=int, default=3000)
    ap.add_argument("--pitr-interval", default="1s")
    ap.add_argument("--compaction-interval", default="5s")
    ap.add_argument("--only", choices=["a", "b", "c"])
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ltxfs-bench-backup-")
    try:
        # Each part its own s3rver (their objects share a key).
        for part, fn in (("a", lambda s3: throughput(
                args, s3, os.path.join(work, "store-tp"))),
                         ("b", lambda s3: restore_big(args, s3, work)),
                         ("c", lambda s3: pitr(args, work))):
            if args.only not in (None, part):
                continue
            s3 = tb.S3rver()
            try:
                s3.start()
                fn(s3)
            finally:
                s3.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
