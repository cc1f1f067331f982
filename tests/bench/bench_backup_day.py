#!/usr/bin/env python3
"""Point-in-time restore of a large database after a day of changes
(docs/BENCHMARKS.md, "Continuous backup"; issue 15). Needs LTXFS_BIN (a
release build), /dev/fuse and root:

    LTXFS_BIN=$PWD/build-rel/cmd/ltxfs python3 tests/bench/bench_backup_day.py \\
        [--big-mib 1024] [--hours 24] [--tx-per-s 10] [--work DIR]
        [--compact]

1. A database of --big-mib MiB (one incompressible row per 4 KiB page)
   is copied into a primary's mount (recorded as one snapshot), then the
   changes of --hours hours at --tx-per-s transactions per second are
   committed as fast as they go, in WAL mode: nine of ten insert a
   100-byte row into a small table, one in ten rewrites a row of the big
   table (a page of it).
2. The primary's LTX log is cut into the objects its uploader would have
   made with `backup.interval: 1s` under that load: the snapshot alone,
   then one object per second of the day, each holding --tx-per-s
   records (the store's layout, docs/BACKUP.md: bodies are the log's
   records unchanged, names from their headers and trailers). Writing the
   day in real time would take the day; the objects and records are the
   same.
3. `ltxfs restore` from that file store: the newest point and the point
   in the middle of the day, each timed, with the objects and records
   its summary reports and the peak RSS of the child.
4. With --compact: `ltxfs backup compact` (timed; its
   backup.compaction-interval scaled so that an L1 object spans 10
   minutes of the modelled day, as a running uploader's) merges the
   day's L0 objects into L1 objects (docs/BACKUP.md, "Compaction"), and the two
   restores run again, now reading the L1 objects.

With --work DIR the store is kept in DIR/store and reused by the next
run (pass the same sizes).
"""

import argparse
import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import ltxfs_harness as h  # noqa: E402
from cluster_harness import ClusterNode  # noqa: E402
import test_backup as tb  # noqa: E402

DB = tb.DB
EPOCH = 1


def out(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def write_day(node, big, args):
    """The big database into the mount, then the day's transactions."""
    t0 = time.monotonic()
    shutil.copyfile(big, node.path(DB))
    out("copied %d MiB into the mount in %.1f s"
        % (args.big_mib, time.monotonic() - t0))
    c = h.connect(node.path(DB))
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE hot(id INTEGER PRIMARY KEY, v TEXT)")
    rows = args.big_mib * 256
    n = args.hours * 3600 * args.tx_per_s
    t0 = time.monotonic()
    for i in range(n):
        if i % 10 == 9:
            c.execute("UPDATE t SET b = randomblob(3900) WHERE id = ?",
                      (1 + (i * 7919) % rows,))
        else:
            c.execute("INSERT INTO hot(v) VALUES (?)",
                      ("change %09d " % i + "x" * 86,))
        if i % 100000 == 99999:
            out("  %d of %d transactions, %.0f tx/s"
                % (i + 1, n, (i + 1) / (time.monotonic() - t0)))
    c.close()
    out("%d transactions in %.1f s" % (n, time.monotonic() - t0))
    return n


def records(log_dir):
    """The records of the LTX log, in order: (bytes, min, max, post-apply
    checksum). One record in memory at a time: a restore child forked
    later inherits this process's resident size into its peak RSS."""
    for seg in sorted(glob.glob(os.path.join(log_dir, "*.seg"))):
        with open(seg, "rb") as f:
            while True:
                pfx = f.read(4)
                if len(pfx) < 4:
                    break
                (n,) = struct.unpack(">I", pfx)
                rec = pfx + f.read(n)
                lo, hi = struct.unpack(">QQ", rec[4 + 16:4 + 32])
                (post,) = struct.unpack(">Q", rec[-16:-8])
                yield rec, lo, hi, post


def cut_objects(log_dir, store, per_object):
    """The log's records as the uploader's objects: a snapshot record
    alone, then per_object records each."""
    d = os.path.join(store, "it", DB, "l0")
    os.makedirs(d, exist_ok=True)
    count = 0
    batch = []

    def flush():
        nonlocal count
        if not batch:
            return
        name = "%016x-%016x-%016x-%016x.ltx" % (
            EPOCH, batch[0][1], batch[-1][2], batch[-1][3])
        with open(os.path.join(d, name), "wb") as f:
            for r in batch:
                f.write(r[0])
        count += 1
        batch.clear()

    first = last = None
    for r in records(log_dir):
        if r[1] == 1:
            flush()
            batch.append(r)
            flush()
        else:
            batch.append(r)
            if len(batch) == per_object:
                flush()
        first = first or r[2]
        last = r[2]
    flush()
    return count, first, last


def restore(cfg, outp, *extra):
    """One `ltxfs restore` child: its time, its summary's counts and its
    own peak RSS (wait4)."""
    with tempfile.TemporaryFile("w+") as so, \
            tempfile.TemporaryFile("w+") as se:
        t0 = time.monotonic()
        p = subprocess.Popen([h.ltxfs_bin(), "restore", "-c", cfg, DB,
                              outp] + list(extra), stdout=so, stderr=se)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        secs = time.monotonic() - t0
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if p.returncode != 0:
        raise SystemExit("restore %s failed: %s" % (extra, stderr))
    m = re.search(r"(\d+) objects, (\d+) records, (\d+) bytes", stdout)
    out("restore %-26s %7.1f s  %6s objects  %7s records  %6.0f MiB read"
        "  peak RSS %.0f MiB" % (" ".join(extra) or "(newest)", secs,
                                 m.group(1), m.group(2),
                                 int(m.group(3)) / 1048576,
                                 ru.ru_maxrss / 1024))
    os.unlink(outp)


def first_ts(path):
    """The LTX timestamp (ms) of an object's first record."""
    with open(path, "rb") as f:
        head = f.read(4 + 40)
    return struct.unpack(">q", head[4 + 32:4 + 40])[0]


def scaled_window(store, args):
    """backup.compaction-interval's 10 minutes of the modelled day, in
    the commit time the day was written in (it took minutes, not hours):
    so the L1 objects `backup compact` makes span what a running
    uploader's would."""
    d = os.path.join(store, "it", DB, "l0")
    names = sorted(os.listdir(d), key=lambda k: int(k.split("-")[1], 16))
    span = first_ts(os.path.join(d, names[-1])) - first_ts(
        os.path.join(d, names[1]))
    return max(1000, int(600 * span / (args.hours * 3600)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--tx-per-s", type=int, default=10)
    ap.add_argument("--work")
    ap.add_argument("--compact", action="store_true")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="ltxfs-bench-day-")
    os.makedirs(work, exist_ok=True)
    store = os.path.join(work, "store")
    cfg = os.path.join(work, "restore.yml")
    with open(cfg, "w") as f:
        f.write("backup:\n  type: file\n  dir: %s\n  prefix: it\n" % store)
    try:
        if not os.path.isdir(store):
            big = os.path.join(work, "big.db")
            tb.big_db(big, args.big_mib)
            node = ClusterNode("day", log_level="warn", data_yml=(
                "  retention: 720h\n  retention-bytes: %d\n" % (1 << 40)))
            try:
                node.start()
                write_day(node, big, args)
                node.stop()
                t0 = time.monotonic()
                n, first, last = cut_objects(
                    os.path.join(node.data, "dbs", DB, "log"), store,
                    args.tx_per_s)
                out("%d objects (TXIDs %x..%x) in the store in %.1f s"
                    % (n, first, last, time.monotonic() - t0))
            finally:
                node.close()
                os.unlink(big)
        objs = sorted(os.listdir(os.path.join(store, "it", DB, "l0")))
        last = int(objs[-1].split("-")[2], 16) if objs else 0
        out("store: %d objects, newest TXID %x" % (len(objs), last))
        restore(cfg, os.path.join(work, "out.db"))
        restore(cfg, os.path.join(work, "out.db"), "--txid",
                "%016x" % (last // 2))
        if args.compact:
            window = scaled_window(store, args)
            with open(cfg, "a") as f:
                f.write("  compaction-interval: %dms\n" % window)
            out("compaction window %d ms (10 minutes of the modelled day)"
                % window)
            t0 = time.monotonic()
            p = subprocess.run([h.ltxfs_bin(), "backup", "compact", "-c",
                                cfg, DB], capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit("backup compact failed: %s" % p.stderr)
            out("backup compact: %.1f s: %s" % (time.monotonic() - t0,
                                                p.stdout.strip()))
            restore(cfg, os.path.join(work, "out.db"))
            restore(cfg, os.path.join(work, "out.db"), "--txid",
                    "%016x" % (last // 2))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
