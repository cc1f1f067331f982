#!/usr/bin/env python3
"""Retention: a replica behind the primary's retention gets a snapshot.

    test_retention.py [delete|wal] [bytes|age|boundary|verify]

A primary and a replica (static lease, HTTP on 127.0.0.1 ports). The
replica catches up record by record and is stopped. Then, with "bytes",
the primary (data.retention-bytes 64 KiB) writes well over the cap of
incompressible rows; with "age" (data.retention 1500ms, no cap) it writes
a small row every 0.2 s; until its LTX log no longer has the replica's
position (checked on disk and in /metrics, and the log line says why). The replica restarts: the primary must send it a
snapshot (its log line and both nodes' counters say so), the replica must
end at the primary's position with a byte-identical database file, pass
integrity_check, and keep following record by record afterwards. Last,
both stop, `ltxfs verify` passes on the pruned log, and the primary
reopens the pruned log at the same position.

"boundary": the replica's own record is pruned but the next one is kept;
the next record's pre-apply checksum proves the replica's position, so it
catches up by records, not by a snapshot.

"verify" (a primary alone, uncompressed log): `ltxfs verify` replays a
pruned log onto its base and says so; a kept record changed so that it
passes its own checksums but does not replay makes it fail naming the
TXID, also once retention has removed that record; without the base it
says "not proved" (exit 2).

The nodes are cluster_harness.ClusterNode (static lease).
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ltxfs_harness as h  # noqa: E402
from ltxfs_harness import check, wait_for  # noqa: E402
from cluster_harness import ClusterNode, file_digest  # noqa: E402

CAP = 64 * 1024
AGE_MS = 1500
DB = "ret.db"
SYNC_TIMEOUT = 60


def start_pair(mode, primary_data_yml, rows, size):
    """A primary (with primary_data_yml in its data section) and a
    replica, both started (debug logs); table t in journal mode `mode`
    with `rows` rows of `size` random bytes, replicated. Returns
    (primary, replica, replica's node ID, connection to the primary,
    the synced position)."""
    p = ClusterNode("primary", log_level="debug", data_yml=primary_data_yml)
    r = ClusterNode("replica", primary_url=p.url, log_level="debug")
    p.start()
    r.start()
    c = h.connect(p.path(DB))
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    write_rows(c, rows, size)
    at = wait_synced(p, r, "first catch-up")
    return p, r, r.node_id(), c, at


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def wait_synced(p, r, what):
    t0 = time.monotonic()
    # The writes are done: the primary's last commit (a WAL commit shows
    # in -pos just after COMMIT returns) is the target.
    want = p.settled_pos(DB)

    def same():
        return r.pos_or_none(DB) == want and want
    at = wait_for(same, SYNC_TIMEOUT, "%s: replica at the primary's "
                  "position (primary %s, replica %s)"
                  % (what, p.pos_or_none(DB), r.pos_or_none(DB)),
                  interval=0.05)
    log("  %-40s %.2fs" % (what, time.monotonic() - t0))
    return at


def write_rows(conn, n, size):
    for _ in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t(b) VALUES (randomblob(?))", (size,))
        conn.execute("COMMIT")


def write_and_compare(p, r, c, mode, rows, size, what):
    """rows more rows through c; once the replica has them, its database
    equals the primary's: the file byte for byte in rollback mode, the
    content in WAL mode (where the file alone is not the database)."""
    write_rows(c, rows, size)
    wait_synced(p, r, what)
    if mode == "delete":
        check(file_digest(p.path(DB)) == file_digest(r.path(DB)),
              "replica's database file differs from the primary's")
    else:
        check(h.content_digest(p.path(DB)) ==
              h.content_digest(r.path(DB), ro=True),
              "replica's database differs from the primary's")


def run(mode, policy):
    if policy == "bytes":
        keys = "  retention-bytes: %d\n" % CAP
    else:
        keys = "  retention: %dms\n  retention-bytes: 0\n" % AGE_MS
    p, r, rid, c, at = start_pair(mode, keys, 5, 1000)
    check(p.log_count(r"sending replica %s a snapshot" % rid) == 0,
          "primary sent a snapshot to a replica starting from nothing "
          "while its log starts at TXID 1")
    check(policy == "age" or p.first_segment(DB) == 1, "primary's log "
          "pruned under the cap (first segment %x)" % p.first_segment(DB))

    # The replica stops; the primary writes past its retention.
    r.stop()
    rtxid = at[0]
    label = '{db="%s"}' % DB

    def pruned():
        return (p.metric("ltxfs_log_first_txid" + label) or 0) > rtxid + 1
    if policy == "bytes":
        write_rows(c, 40, 6000)
        wait_for(pruned, 20, "primary's log pruned past TXID %d "
                 "(ltxfs_log_first_txid)" % rtxid)
        # The writes are over: within a pass or two the log is under the
        # cap (a pass may have run in the middle of the writes).
        wait_for(lambda: (p.metric("ltxfs_log_bytes" + label) or CAP + 1)
                 <= CAP, 10, "primary's log under the %d-byte cap" % CAP)
        lb = p.metric("ltxfs_log_bytes" + label)
        check(lb == p.log_bytes_on_disk(DB), "ltxfs_log_bytes %s but %d "
              "bytes of segments on disk" % (lb, p.log_bytes_on_disk(DB)))
    else:
        # Small records, one every 0.2 s, until the records the replica
        # needs are older than the age limit and gone: about twice the
        # limit (the segment rolls at the limit, then ages out).
        t0 = time.monotonic()
        for i in range(int(10 * AGE_MS / 200)):
            write_rows(c, 1, 500)
            if pruned():
                break
            time.sleep(0.2)
        check(pruned(), "primary's log not pruned by age past TXID %d "
              "after %.1fs of writes" % (rtxid, time.monotonic() - t0))
        log("  %-40s %.2fs" % ("pruned by age", time.monotonic() - t0))
        lb = p.metric("ltxfs_log_bytes" + label)
    ptxid = p.pos(DB)[0]
    first = p.first_segment(DB)
    check(first > rtxid + 1, "first segment on disk %d, replica at %d"
          % (first, rtxid))
    # The line follows the unlinks (after the directory's fsync).
    line = wait_for(lambda: re.search(
        r"db=%s: retention removed \d+ LTX segments? \(\d+ bytes, (\d+) "
        r"by age\)" % re.escape(DB), p.log_text()), 10,
        "the primary's retention log line")
    if policy == "age":
        check(int(line.group(1)) > 0, "pruned, but not by age: %s"
              % line.group(0))
    sent0 = p.metric("ltxfs_stream_snapshots_sent_total")

    # The replica comes back behind the log: a snapshot, then records.
    r.start()
    wait_synced(p, r, "catch-up after retention")
    m = re.search(r"db=%s: sending replica %s a snapshot at TXID "
                  r"([0-9a-f]{16}).*: its position is older than the "
                  r"records kept" % (re.escape(DB), rid), p.log_text())
    check(m is not None, "primary's log has no snapshot line for replica "
          "%s" % rid)
    check(int(m.group(1), 16) > rtxid, "snapshot at TXID %s, replica was "
          "at %d" % (m.group(1), rtxid))
    check(p.metric("ltxfs_stream_snapshots_sent_total") >= sent0 + 1,
          "ltxfs_stream_snapshots_sent_total did not grow")
    # The counter is bumped just after the -pos file moves: wait for it.
    r.wait_metric("ltxfs_snapshots_applied_total", lambda v: v >= 1, 10,
                  "replica's ltxfs_snapshots_applied_total to count the "
                  "snapshot")

    write_and_compare(p, r, c, mode, 5, 3000, "records after the snapshot")
    h.integrity_ok(p.path(DB))
    ro = h.ro_connect(r.path(DB))
    try:
        res = [x[0] for x in ro.execute("PRAGMA integrity_check")]
        n_r = h.one(ro, "SELECT count(*) FROM t")
    finally:
        ro.close()
    check(res == ["ok"], "replica integrity_check: %s" % res[:5])
    n_p = h.one(c, "SELECT count(*) FROM t")
    check(n_r == n_p, "row counts differ: replica %s, primary %s"
          % (n_r, n_p))
    c.close()

    final = p.pos(DB)
    r.stop()
    p.stop()
    if mode == "delete":
        check(file_digest(os.path.join(p.data, "dbs", DB, "database")) ==
              file_digest(os.path.join(r.data, "dbs", DB, "database")),
              "backing database files differ after a clean stop")
    rc, found, out = p.verify(DB)
    check(found.get(DB) == final, "verify on the primary: %s" % out)
    check("onto the base at TXID" in out, "verify did not say it replayed "
          "the pruned log onto its base: %s" % out)
    log("  verify on the primary: %s" % out.strip())
    rc, found, out = r.verify(DB)
    check(found.get(DB) == final, "verify on the replica: %s" % out)
    log("  verify on the replica: %s" % out.strip())

    # The pruned log reopens at the same position.
    p.start()
    check(p.pos(DB) == final, "primary reopened at %s, stopped at %s"
          % (p.pos(DB), final))
    check(p.first_segment(DB) >= first, "first segment went back after a "
          "restart")
    h.integrity_ok(p.path(DB))
    p.stop()
    if mode == "delete":
        # Verifying a pruned log is not a rubber stamp: one byte of page 2
        # changed in the primary's database file must fail it.
        path = os.path.join(p.data, "dbs", DB, "database")
        with open(path, "r+b") as f:
            f.seek(4096 + 1000)
            b = f.read(1)
            f.seek(4096 + 1000)
            f.write(bytes([b[0] ^ 0x01]))
        rc, found, out = p.verify(DB, expect_ok=False)
        check(rc == 1 and DB not in found and "page 2 differs" in out,
              "verify passed a changed database on a pruned log: %s" % out)
        log("  a changed page: %s" % out.strip())
    log("%s: replica at %d, primary wrote to %d; log starts at %d, %d "
        "bytes; snapshot at %s" % (policy, rtxid, ptxid, first, lb,
                                   m.group(1)))


def run_boundary(mode):
    """The replica's record is pruned but the next one is kept: the next
    record's pre-apply checksum proves the position, so the replica gets
    records, not a snapshot. With an 8 KiB cap segments roll at 4 KiB, so
    each record of a 6000-byte random row is a segment of its own and
    only the last one is kept."""
    p, r, rid, c, at = start_pair(mode, "  retention-bytes: 8192\n", 3,
                                  6000)
    label = '{db="%s"}' % DB
    snap_re = r"sending replica %s a snapshot" % rid
    wait_for(lambda: p.metric("ltxfs_log_first_txid" + label) == at[0],
             10, "primary's log down to its last record (TXID %d)" % at[0])
    r.stop()
    snaps = p.log_count(snap_re)
    write_rows(c, 1, 6000)
    wait_for(lambda: p.metric("ltxfs_log_first_txid" + label) == at[0] + 1,
             10, "primary's log down to TXID %d" % (at[0] + 1))
    check(p.first_segment(DB) == at[0] + 1, "first segment %d, want %d"
          % (p.first_segment(DB), at[0] + 1))

    r.start()
    wait_synced(p, r, "catch-up from the next record")
    check(p.log_count(snap_re) == snaps, "the primary sent a snapshot to a "
          "replica whose position the next record proves:\n%s"
          % "\n".join(p.log_text().splitlines()[-5:]))
    r.wait_metric("ltxfs_records_applied_total", lambda v: v >= 1, 10,
                  "replica's ltxfs_records_applied_total to count the "
                  "records")
    check((r.metric("ltxfs_snapshots_applied_total") or 0) == 0,
          "replica did not catch up by records alone")
    write_and_compare(p, r, c, mode, 2, 6000, "records after that")
    c.close()
    r.stop()
    p.stop()
    log("boundary: replica at %d, log started at %d; caught up by records"
        % (at[0], at[0] + 1))


def crc64(data):
    """CRC-64/ISO (shared/LTX.md): reflected 0xD800000000000000, init and
    xorout all ones."""
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xD800000000000000 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_TABLE = _crc_table()


def segment_records(path):
    """[(offset of the LTX file, its length, min TXID)] of a segment."""
    with open(path, "rb") as f:
        buf = f.read()
    out, off = [], 0
    while off + 4 <= len(buf):
        n = int.from_bytes(buf[off:off + 4], "big")
        out.append((off + 4, n, int.from_bytes(buf[off + 20:off + 28],
                                               "big")))
        off += 4 + n
    return out


def tamper(path, off, n):
    """Changes one byte of the first page of the (uncompressed) LTX file
    at off and recomputes its file checksum, so the record passes every
    check of its own and keeps its post-apply checksum, but no longer
    replays to it. Returns the original bytes."""
    with open(path, "r+b") as f:
        f.seek(off)
        orig = f.read(n)
        rec = bytearray(orig)
        check(rec[:4] == b"LTX1" and not int.from_bytes(rec[4:8], "big") &
              4, "record at %d of %s is not an uncompressed LTX file"
              % (off, path))
        rec[100 + 4 + 200] ^= 0x5A          # header, pgno, into the page
        rec[n - 8:] = (crc64(rec[:n - 8]) | 1 << 63).to_bytes(8, "big")
        f.seek(off)
        f.write(rec)
    return orig


def run_verify():
    """`ltxfs verify` on a log retention has pruned: it must replay the
    records kept onto the log's base and say so, fail naming the TXID of
    a kept record that passes its own checksums but does not replay, and
    say "not proved" (exit 2) when the base is missing. An uncompressed
    log (data.compress: false) lets the test change a record; with a
    128 KiB cap segments roll at 32 KiB, a few records each (three
    4 KiB pages a row: the leaf, its parent and page 1)."""
    p = ClusterNode("primary", data_yml="  retention-bytes: 131072\n"
                    "  compress: false\n")
    p.start()
    c = h.connect(p.path(DB))
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    write_rows(c, 40, 1000)
    c.close()
    label = '{db="%s"}' % DB
    wait_for(lambda: (p.metric("ltxfs_log_first_txid" + label) or 0) > 5,
             10, "the primary's log pruned")
    final = p.settled_pos(DB)
    p.stop()
    first = p.first_segment(DB)
    check(first > 2, "log not pruned: it starts at %d" % first)
    segs = p.segments(DB)
    check(len(segs) >= 3, "want 3 segments at least: %s" % segs)

    # A kept record, not the first, changed so it no longer replays.
    recs = segment_records(segs[1])
    off, n, bad = recs[0]
    orig = tamper(segs[1], off, n)
    rc, found, out = p.verify(DB, expect_ok=False)
    check(rc == 1 and DB not in found and "%016x" % bad in out,
          "verify did not fail naming TXID %016x, a kept record that does "
          "not replay (exit %d):\n%s" % (bad, rc, out))
    log("  a record that does not replay: %s" % out.strip())
    with open(segs[1], "r+b") as f:
        f.seek(off)
        f.write(orig)

    # The happy path: a full replay onto the base, said so.
    rc, found, out = p.verify(DB)
    check(found.get(DB) == final, "verify: %s (want %s)" % (out, final))
    want = "replayed TXIDs %016x..%016x onto the base at TXID %016x" % (
        first, final[0], first - 1)
    check(want in out, "verify did not say %r:\n%s" % (want, out))
    log("  pruned log verified: %s" % out.strip())

    # Without its base the pruned log cannot be replayed: not proved.
    base = os.path.join(p.log_dir(DB), "base")
    check(os.path.exists(base), "no base file %s" % base)
    os.rename(base, base + ".away")
    rc, found, out = p.verify(DB, expect_ok=False)
    check(rc == 2 and DB not in found and ": not proved: " in out,
          "verify of a pruned log without its base: exit %d\n%s"
          % (rc, out))
    log("  without the base: %s" % out.strip())
    os.rename(base + ".away", base)

    # Retention meets the record that does not replay as it removes it:
    # the base stops before it, the node says so, verify fails naming it.
    tamper(segs[1], off, n)
    p.start()
    c = h.connect(p.path(DB))
    write_rows(c, 20, 1000)
    c.close()
    wait_for(lambda: (p.metric("ltxfs_log_first_txid" + label) or 0) > bad,
             10, "the primary's log pruned past TXID %d" % bad)
    line = wait_for(lambda: re.search(
        r"db=%s: retention: TXID %016x does not replay" % (re.escape(DB),
                                                          bad),
        p.log_text()), 10, "the primary's log line on the record")
    p.stop()
    rc, found, out = p.verify(DB, expect_ok=False)
    check(rc == 1 and DB not in found and "retention could not replay "
          "TXID %016x" % bad in out, "verify after retention removed a "
          "record that does not replay: exit %d\n%s" % (rc, out))
    log("  retention found it: %s" % line.group(0))
    log("  then verify: %s" % out.strip())


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "delete"
    policy = sys.argv[2] if len(sys.argv) > 2 else "bytes"
    check(mode in ("delete", "wal"), "mode: delete or wal, not %r" % mode)
    check(policy in ("bytes", "age", "boundary", "verify"), "policy: "
          "bytes, age, boundary or verify, not %r" % policy)
    if policy == "boundary":
        run_boundary(mode)
    elif policy == "verify":
        run_verify()
    else:
        run(mode, policy)


if __name__ == "__main__":
    h.main(main)
