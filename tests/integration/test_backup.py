#!/usr/bin/env python3
"""Continuous backup and restore (docs/BACKUP.md).

    test_backup.py s3|file|store-down|epoch-check|bad-input|failover|
                   stale-primary|restore-on-empty|retention|compact

A primary alone (static lease) with backup.type s3 (a real s3rver from
the npm registry, started here on a loopback port with its own
directory, stopped by PID) or file.

"s3", "file": a workload (rollback journal, then WAL; inserts, updates,
deletes, a VACUUM) records after each transaction the node's position
(-pos: TXID and database checksum) and a digest of the rows. Once the
backup has caught up (/metrics ltxfs_backup_txid), `ltxfs restore`
rebuilds the database as of the latest TXID, a TXID in the middle and a
timestamp in the middle; each restored file must have the recorded
database checksum (`ltxfs ltx checksum`) and rows, and pass
integrity_check. `ltxfs backup ls` shows the range; --dry-run writes
nothing.

"store-down": s3rver is stopped for a while under writes: uploads fail
(/metrics ltxfs_backup_up 0, /info says failing, one log line), the node
keeps committing; its age retention (1 s, far shorter than the outage)
must not prune the records not yet uploaded (the first segment stays at
or before the backup's position). s3rver restarts on the same directory
and port, the backup catches up without a snapshot, and restores of the
latest TXID and of one in the middle of the outage have every row.

"failover": two nodes on an etcd lease (Debian's etcd-server, as the
etcd suite runs it); the primary stops (graceful handoff); the new
primary, in a higher epoch, continues the backup from the store's
position without a snapshot; restores to TXIDs before and after the
epoch change are right.

"stale-primary": the primary is stopped (SIGSTOP) right after writes it
has not uploaded yet (backup.interval 1 s); the other node takes the
lease, writes and uploads in its epoch; the stale one continues
(SIGCONT) and turns replica; no object of the old epoch may appear in
the store after that (the epoch check before each put, object rule O4);
restores (latest, and TXIDs of the new epoch) give the new primary's
database.

"epoch-check": one primary with a file store; an object of a higher
epoch appears in the store (a copy of its last object under a name with
epoch + 1); at its next put the node must see it (object rule O4), log
that it is stale, and put nothing more.

"restore-on-empty": every node lost (stopped, data directory emptied); a
new candidate with backup.restore-on-empty starts at the store's TXID and
checksum with the rows, continues the backup without a snapshot, and a new
replica catches up from it; a store that cannot be reached stops the
start.

"compact": a file store, backup.interval 200ms, compaction-interval 1s;
a workload with inserts, updates, deletes, a DELETE + VACUUM that shrinks
the database and regrowth, in two halves, each followed by small
transactions until L1 objects cover it. Restores to the latest TXID, a
TXID and a time in the second half must equal what was recorded and read
fewer objects than with the l1/ directory moved away, which must give
the same databases (the L1 path and the L0 path agree); `ltxfs backup
compact` on the L0 objects alone makes L1 objects the latest restore
reads. A byte flipped in an L1 object makes the restore fail naming the
object.

"bad-input": a wrong access key ID makes `ltxfs mount` fail at start-up
with "access denied"; --txid before the store's first point fails
clearly; a byte flipped inside an object makes restore fail naming the
object's key and an offset.
"""

import datetime
import glob
import os
import re
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ltxfs_harness as h  # noqa: E402
from ltxfs_harness import check, wait_for  # noqa: E402
from cluster_harness import ClusterNode  # noqa: E402

DB = "bk.db"
BUCKET = "ltxfs-backup"
KEY_ID = SECRET = "S3RVER"  # s3rver's built-in credentials
S3RVER_DIRS = ["/opt/ltxfs-test/s3rver"]
CATCH_UP = 30
RETENTION_MS = 1000
OUTAGE_S = 3.0
STALE_INTERVAL = "1s"


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def s3rver_bin():
    """s3rver as scripts/install-deps installs it (or S3RVER_BIN)."""
    env = os.environ.get("S3RVER_BIN")
    if env:
        return env
    for d in S3RVER_DIRS:
        p = os.path.join(d, "node_modules", ".bin", "s3rver")
        if os.access(p, os.X_OK):
            return p
    raise h.TestFailure("s3rver not found in %s (scripts/install-deps "
                        "installs it)" % S3RVER_DIRS)


class S3rver:
    """A real S3 protocol server on 127.0.0.1:port with its own
    directory; stopped by its PID."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ltxfs-s3rver-")
        self.port = h.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.log = open(os.path.join(self.dir, "s3rver.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen(
            [s3rver_bin(), "-d", os.path.join(self.dir, "data"), "-a",
             "127.0.0.1", "-p", str(self.port), "--configure-bucket",
             BUCKET], stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            check(self.proc.poll() is None, "s3rver exited: see %s"
                  % self.dir)
            try:
                import urllib.request
                urllib.request.urlopen(self.url + "/", timeout=1).read()
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True
        wait_for(up, 30, "s3rver on %s" % self.url)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def objects(self):
        """Paths of the stored objects' bodies."""
        return sorted(p for p in glob.glob(os.path.join(
            self.dir, "data", BUCKET, "**", "*.ltx._S3rver_object"),
            recursive=True))

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def backup_yml(kind, s3=None, bdir=None, key_id=KEY_ID,
               interval="200ms", extra=""):
    if kind == "s3":
        return ("backup:\n  type: s3\n  endpoint: %s\n  bucket: %s\n"
                "  prefix: it\n  access-key-id: %s\n"
                "  secret-access-key: %s\n  force-path-style: true\n"
                "  interval: %s\n%s" % (s3.url, BUCKET, key_id, SECRET,
                                        interval, extra))
    return ("backup:\n  type: file\n  dir: %s\n  prefix: it\n"
            "  interval: %s\n%s" % (bdir, interval, extra))


def ltxfs(*args, check_rc=None):
    p = subprocess.run([h.ltxfs_bin()] + list(args), capture_output=True,
                       text=True, timeout=120)
    if check_rc is not None:
        check(p.returncode == check_rc, "ltxfs %s: exit %d, want %d: %s%s"
              % (" ".join(args), p.returncode, check_rc, p.stdout,
                 p.stderr))
    return p


class Workload:
    """Transactions on DB, each followed by its record: (txid, checksum,
    rows digest, time after it)."""

    def __init__(self, node):
        self.node = node
        self.c = h.connect(node.path(DB))
        self.points = []

    def tx(self, *sql):
        self.c.execute("BEGIN")
        for s in sql:
            self.c.execute(s)
        self.c.execute("COMMIT")
        self.record()

    def record(self):
        txid, cks = self.node.settled_pos(DB)
        if self.points and self.points[-1][0] == txid:
            return
        self.points.append((txid, cks, h.content_digest(
            self.node.path(DB)), time.time()))
        # The next commit's LTX timestamp (ms) is after this time.
        time.sleep(0.003)

    def run(self, n=12, mode_switch=True):
        c = self.c
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
                  "v TEXT, b BLOB)")
        self.record()
        for i in range(n):
            self.tx("INSERT INTO t(v, b) VALUES ('row %d', randomblob(%d))"
                    % (i, 300 + 97 * i))
            if i % 3 == 2:
                self.tx("UPDATE t SET v = v || '+' WHERE id %% 2 = %d"
                        % (i % 2))
            if i % 4 == 3:
                self.tx("DELETE FROM t WHERE id = (SELECT min(id) FROM t)")
                # Past an upload interval: the chain spans objects.
                time.sleep(0.25)
        if mode_switch:
            c.execute("PRAGMA journal_mode=WAL")
            self.record()
            for i in range(n // 2):
                self.tx("INSERT INTO t(v, b) VALUES ('wal %d', "
                        "randomblob(2000))" % i)
            c.execute("DELETE FROM t WHERE id % 3 = 0")
            self.record()
            c.execute("VACUUM")
            self.record()
            self.tx("INSERT INTO t(v) VALUES ('after vacuum')")


def wait_backed_up(node, txid, what):
    key = 'ltxfs_backup_txid{db="%s"}' % DB
    return node.wait_metric(key, lambda v: v >= txid, CATCH_UP,
                            "%s: backup at TXID %x" % (what, txid))


def restore(cfg, out, *extra, rc=0):
    t0 = time.monotonic()
    p = ltxfs("restore", "-c", cfg, DB, out, *extra)
    log("restore %s: %.2f s: %s%s" % (" ".join(extra) or "(latest)",
                                      time.monotonic() - t0,
                                      p.stdout.strip(), p.stderr.strip()))
    check(p.returncode == rc, "restore %s: exit %d, want %d: %s"
          % (extra, p.returncode, rc, p.stderr))
    return p


SUMMARY_RE = (r"(?m)^restore: %s -> TXID %016x checksum %016x \(committed "
              r"[^)]*\): \d+ objects, \d+ records, \d+ bytes, [\d.]+ s, "
              r"[\d.]+ MB/s$")


def check_restored(out, point, what, reported=None):
    """out has point's checksum, rows and passes integrity_check; so says
    the restore's summary line (reported: its CompletedProcess), with no
    progress output on stderr when it is not a terminal."""
    txid, cks, digest, _ = point
    if reported is not None:
        check(re.search(SUMMARY_RE % (re.escape(DB), txid, cks),
                        reported.stdout), "%s: summary %r, want TXID %016x "
              "checksum %016x" % (what, reported.stdout, txid, cks))
        check(reported.stderr == "", "%s: stderr %r (no terminal: no "
              "progress)" % (what, reported.stderr))
    p = ltxfs("ltx", "checksum", out, check_rc=0)
    check("%016x" % cks in p.stdout, "%s: checksum %s, want %016x"
          % (what, p.stdout.strip(), cks))
    h.integrity_ok(out)
    check(h.content_digest(out) == digest, "%s: rows differ from the "
          "database at TXID %x" % (what, txid))
    log("%s: TXID %016x checksum %016x rows ok" % (what, txid, cks))


PROGRESS_RE = (r"\rrestore: object (\d+)/(\d+) \([\d.]+ of [\d.]+ MiB\), "
               r"[\d.]+ MiB, (\d+) records, [\d.]+ MB/s\x1b\[K")


def check_tty_progress(cfg, out, point):
    """On a terminal (script(1) gives it one), restore shows progress on
    stderr, its last line at every object of the chain and every record
    the summary counts, then the summary."""
    cmd = " ".join(shlex.quote(a) for a in [h.ltxfs_bin(), "restore", "-c",
                                            cfg, DB, out])
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"],
                       capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    text = p.stdout.decode(errors="replace")
    check(p.returncode == 0, "restore on a terminal: exit %d: %r"
          % (p.returncode, text))
    shown = re.findall(PROGRESS_RE, text)
    summary = re.search(SUMMARY_RE % (re.escape(DB), point[0], point[1]),
                        text.replace("\r\n", "\n"))
    check(summary, "restore on a terminal: no summary in %r" % text)
    records = re.search(r"(\d+) records", summary.group(0)).group(1)
    check(shown and shown[-1][0] == shown[-1][1] and
          shown[-1][2] == records, "restore on a terminal: progress %r "
          "in %r" % (shown, text))
    log("restore on a terminal: %d progress lines" % len(shown))


def rfc3339(t):
    return datetime.datetime.fromtimestamp(
        t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def case_roundtrip(kind):
    s3 = S3rver() if kind == "s3" else None
    bdir = tempfile.mkdtemp(prefix="ltxfs-backup-dir-")
    if s3:
        s3.start()
    n = ClusterNode("primary", log_level="debug",
                    extra_yml=backup_yml(kind, s3, bdir))
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")
    try:
        n.start()
        w = Workload(n)
        w.run()
        # The point in the middle, by time: a pause around it.
        mid_i = len(w.points) // 2
        time.sleep(0.05)
        last = w.points[-1]
        wait_backed_up(n, last[0], "after the workload")
        info = n.info()
        check(info["backup"]["state"] == "ok", "/info backup: %r"
              % info["backup"])
        check(n.metric('ltxfs_backup_objects_total{db="%s"}' % DB, 0) >= 1,
              "no object counted")
        out = os.path.join(out_dir, "latest.db")
        check_restored(out, last, "latest", restore(n.cfg, out))
        mid = w.points[mid_i]
        out = os.path.join(out_dir, "mid.db")
        check_restored(out, mid, "TXID %x" % mid[0],
                       restore(n.cfg, out, "--txid", "%016x" % mid[0]))
        # A timestamp between point k and k+1 (Workload.record).
        k = len(w.points) - 4
        out = os.path.join(out_dir, "time.db")
        check_restored(out, w.points[k], "timestamp after TXID %x"
                       % w.points[k][0], restore(
                           n.cfg, out, "--timestamp",
                           rfc3339(w.points[k][3])))
        check_tty_progress(n.cfg, os.path.join(out_dir, "tty.db"), last)
        dry = os.path.join(out_dir, "dry.db")
        p = restore(n.cfg, dry, "--dry-run")
        check("dry run" in p.stdout and not os.path.exists(dry),
              "dry run wrote %s" % dry)
        p = ltxfs("backup", "ls", "-c", n.cfg, DB, check_rc=0)
        log("backup ls: " + p.stdout.strip())
        check(re.search(r"(?m)^0000000000000001 %016x " % last[0],
                        p.stdout), "backup ls: %r" % p.stdout)
        n.stop()
    finally:
        n.close()
        if s3:
            s3.close()
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)


def case_store_down():
    s3 = S3rver()
    s3.start()
    # Age retention far shorter than the outage: the backup's hold on
    # the log (docs/BACKUP.md, the low-water mark) must keep every
    # record not yet uploaded, so no snapshot is needed afterwards and
    # every point of the outage is restorable.
    n = ClusterNode("primary", log_level="debug",
                    extra_yml=backup_yml("s3", s3),
                    data_yml="  retention: %dms\n" % RETENTION_MS)
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")
    try:
        n.start()
        w = Workload(n)
        w.run(n=4, mode_switch=False)
        wait_backed_up(n, w.points[-1][0], "before the outage")
        s3.stop()
        down_from = len(w.points)
        t_end = time.monotonic() + OUTAGE_S
        i = 0
        while time.monotonic() < t_end:
            w.tx("INSERT INTO t(v, b) VALUES ('during outage %d', "
                 "randomblob(500))" % i)
            i += 1
            time.sleep(0.05)
        n.wait_metric("ltxfs_backup_up", lambda v: v == 0, CATCH_UP,
                      "backup_up 0 while s3rver is down")
        info = n.info()["backup"]
        check(info["state"] == "failing" and info["error"],
              "/info backup while down: %r" % info)
        check(n.metric('ltxfs_backup_errors_total{db="%s"}' % DB, 0) >= 1,
              "no error counted")
        fails = len(re.findall(r"uploads fail", n.log_text()))
        check(fails == 1, "%d 'uploads fail' log lines, want 1" % fails)
        check(n.metric('ltxfs_backup_lag_txids{db="%s"}' % DB, 0) > 0,
              "no lag while down")
        # Retention ran meanwhile (segments old enough), but held.
        time.sleep(RETENTION_MS / 1000.0 + 1.2)
        lag = n.metric('ltxfs_backup_lag_seconds{db="%s"}' % DB, 0)
        check(lag >= RETENTION_MS / 1000.0 + 1.0, "lag in seconds %.3f "
              "while the store was down that long" % lag)
        w.tx("INSERT INTO t(v) VALUES ('last')")
        first = n.first_segment(DB)
        check(first <= w.points[down_from - 1][0] + 1, "the log was "
              "pruned past the backup's position: first segment %x, "
              "backup at %x" % (first, w.points[down_from - 1][0]))
        s3.start()
        wait_backed_up(n, w.points[-1][0], "after the outage")
        n.wait_log(r"uploads work again", 10)
        n.wait_metric('ltxfs_backup_lag_seconds{db="%s"}' % DB,
                      lambda v: v == 0, CATCH_UP, "lag 0 s once caught up")
        check("snapshot at TXID" not in n.log_text(), "a snapshot was "
              "needed: the log lost records the backup had not stored")
        out = os.path.join(out_dir, "latest.db")
        restore(n.cfg, out)
        check_restored(out, w.points[-1], "latest after the outage")
        mid = w.points[(down_from + len(w.points)) // 2]
        out = os.path.join(out_dir, "mid.db")
        restore(n.cfg, out, "--txid", "%016x" % mid[0])
        check_restored(out, mid, "TXID %x, during the outage" % mid[0])
        # After the catch-up, age retention prunes again.
        n.wait_log(r"retention removed", 15, "retention prunes again")
        n.stop()
    finally:
        n.close()
        s3.close()
        shutil.rmtree(out_dir, ignore_errors=True)


def case_epoch_check():
    """One primary (static lease, file store). An object of a higher
    epoch than the node's appears in the store (as a newer primary's
    would: the same bytes under a name with epoch + 1); the node must see
    it at its next put (object rule O4), log that it is stale, and put
    nothing more, though it keeps committing."""
    bdir = tempfile.mkdtemp(prefix="ltxfs-backup-dir-")
    n = ClusterNode("primary", log_level="debug",
                    extra_yml=backup_yml("file", bdir=bdir))
    ldir = os.path.join(bdir, "it", DB, "l0")
    try:
        n.start()
        w = Workload(n)
        w.run(n=2, mode_switch=False)
        wait_backed_up(n, w.points[-1][0], "before the newer epoch")
        keys = sorted(os.listdir(ldir))
        epoch = int(keys[-1][:16], 16)
        newer = "%016x%s" % (epoch + 1, keys[-1][16:])
        shutil.copyfile(os.path.join(ldir, keys[-1]),
                        os.path.join(ldir, newer))
        for i in range(3):
            w.tx("INSERT INTO t(v) VALUES ('after the newer epoch %d')" % i)
        try:
            n.wait_log(r"the store holds epoch %016x, newer than this "
                       r"primary's" % (epoch + 1), 15)
        except h.TestFailure:
            raise h.TestFailure("the uploader did not see the newer "
                                "epoch before its put; store: %r; log:\n%s"
                                % (sorted(os.listdir(ldir)), n.log_tail()))
        time.sleep(0.6)  # three intervals: nothing may be put
        late = sorted(set(os.listdir(ldir)) - set(keys) - {newer})
        check(not late, "put after a newer epoch appeared: %r" % late)
        log("stale at epoch %x: nothing put" % epoch)
        n.stop()
    finally:
        n.close()
        shutil.rmtree(bdir, ignore_errors=True)


def case_bad_input():
    s3 = S3rver()
    s3.start()
    # s3rver checks the access key ID (403 InvalidAccessKeyId), not
    # SigV4 signatures: the wrong credential is the key ID.
    bad = ClusterNode("badcreds", extra_yml=backup_yml("s3", s3,
                                                       key_id="WRONG"))
    n = ClusterNode("primary", log_level="debug",
                    extra_yml=backup_yml("s3", s3))
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")
    try:
        st = bad.start(expect_mount=False)
        check(st == "exited", "a node with a wrong access key mounted")
        text = bad.log_text()
        check("access denied by s3:%s/%s (check credentials)"
              % (s3.url, BUCKET) in text, "no clear error: %s" % text[-800:])
        log("wrong credentials: refused at start-up")
        n.start()
        w = Workload(n)
        w.run(n=4, mode_switch=False)
        wait_backed_up(n, w.points[-1][0], "workload")
        n.stop()
        # Restore itself with wrong credentials: the same clear error.
        p = restore(bad.cfg, os.path.join(out_dir, "x.db"), rc=1)
        check("access denied" in p.stderr, "restore, bad creds: %r"
              % p.stderr)
        # --txid before the store's first point: TXID 1 is the first
        # point, so use a store that starts later (the snapshot rule is
        # not in play here): ask for 0 (invalid) and for a TXID past
        # the end.
        p = restore(n.cfg, os.path.join(out_dir, "x.db"), "--txid", "0",
                    rc=2)
        p = restore(n.cfg, os.path.join(out_dir, "x.db"), "--txid",
                    "%016x" % (w.points[-1][0] + 100), rc=1)
        check("not a restorable point" in p.stderr, "past the end: %r"
              % p.stderr)
        # Remove the chain's start: every TXID is before the first point.
        objs = s3.objects()
        check(len(objs) >= 2, "objects: %r" % objs)
        first = [o for o in objs if "-0000000000000001-" in o]
        check(len(first) == 1, "start objects: %r" % first)
        # A byte flipped in the middle of the last object's first record.
        victim = objs[-1]
        with open(victim, "r+b") as f:
            data = f.read()
            pos = len(data) // 2
            f.seek(pos)
            f.write(bytes([data[pos] ^ 0x40]))
        p = restore(n.cfg, os.path.join(out_dir, "x.db"), rc=1)
        name = os.path.basename(victim).replace("._S3rver_object", "")
        check(name in p.stderr and "offset" in p.stderr,
              "corrupt object: %r" % p.stderr)
        check(not os.path.exists(os.path.join(out_dir, "x.db")),
              "a failed restore wrote OUT")
        shutil.move(first[0], first[0] + ".aside")
        p = restore(n.cfg, os.path.join(out_dir, "x.db"), "--txid",
                    "%016x" % w.points[1][0], rc=1)
        check("before the first restorable point" in p.stderr or
              "no backup" in p.stderr, "--txid too early: %r" % p.stderr)
    finally:
        n.close()
        bad.close()
        s3.close()
        shutil.rmtree(out_dir, ignore_errors=True)


def case_failover():
    """Two etcd-lease nodes: the primary is stopped (graceful handoff);
    the new primary (a higher epoch) continues the backup from the
    store's position without a snapshot; restores before and after the
    epoch change are right."""
    from test_etcd import Etcd, EtcdNode, wait_one_primary
    etcd = Etcd()
    s3 = S3rver()
    nodes = []
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")
    try:
        etcd.start()
        s3.start()
        nodes = [EtcdNode("n%d" % i, etcd, extra_yml=backup_yml("s3", s3))
                 for i in range(2)]
        for n in nodes:
            n.start()
        p = wait_one_primary(nodes, 20)
        q = [n for n in nodes if n is not p][0]
        w = Workload(p)
        w.run(n=4, mode_switch=False)
        before = w.points[-1]
        wait_backed_up(p, before[0], "the first primary")
        w.c.close()
        p.proc.send_signal(signal.SIGTERM)
        check(p.wait_exit(60) == 0, "%s did not stop cleanly" % p.name)
        wait_one_primary([q], 20)
        w.node, w.c = q, h.connect(q.path(DB))
        for i in range(6):
            w.tx("INSERT INTO t(v) VALUES ('new primary %d')" % i)
        wait_backed_up(q, w.points[-1][0], "the new primary")
        check("snapshot at TXID" not in q.log_text(), "the new primary "
              "uploaded a snapshot instead of continuing")
        epochs = sorted({os.path.basename(o)[:16] for o in s3.objects()})
        check(len(epochs) == 2, "objects of epochs %r, want two" % epochs)
        log("objects of epochs %s" % ", ".join(epochs))
        for point, what in ((w.points[-1], "latest, new epoch"),
                            (before, "last of the old epoch"),
                            (w.points[len(w.points) - 3],
                             "mid, new epoch")):
            out = os.path.join(out_dir, "%x.db" % point[0])
            restore(q.cfg, out, "--txid", "%016x" % point[0])
            check_restored(out, point, what)
        w.c.close()
        q.stop()
    finally:
        for n in nodes:
            n.close()
        s3.close()
        etcd.close()
        shutil.rmtree(out_dir, ignore_errors=True)


def case_stale_primary():
    """The primary is stopped (SIGSTOP) with writes maybe not yet
    uploaded; the other node takes the lease (a higher epoch), writes and
    uploads; the stale one continues (SIGCONT) and turns replica. Whatever
    it uploaded late, restores give the new primary's history."""
    from test_etcd import Etcd, EtcdNode, wait_one_primary
    etcd = Etcd()
    s3 = S3rver()
    nodes = []
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")
    try:
        etcd.start()
        s3.start()
        # A long interval: the writes just before SIGSTOP are surely
        # not uploaded yet (the stale primary has something to put late).
        nodes = [EtcdNode("n%d" % i, etcd, extra_yml=backup_yml(
            "s3", s3, interval=STALE_INTERVAL)) for i in range(2)]
        for n in nodes:
            n.start()
        p = wait_one_primary(nodes, 20)
        q = [n for n in nodes if n is not p][0]
        w = Workload(p)
        w.run(n=4, mode_switch=False)
        wait_backed_up(p, w.points[-1][0], "the first primary")
        for i in range(3):
            w.tx("INSERT INTO t(v) VALUES ('not uploaded %d')" % i)
        stale_last = w.points[-1][0]
        w.c.close()
        p.proc.send_signal(signal.SIGSTOP)
        try:
            old = {os.path.basename(o) for o in s3.objects()}
            old_epoch = max(k[:16] for k in old)
            check(max(int(k[34:50], 16) for k in old) < stale_last,
                  "the stale primary uploaded TXID %x before SIGSTOP: "
                  "nothing left to upload late" % stale_last)
            wait_one_primary([q], 30)
            c = h.connect(q.path(DB))
            w.node, w.c, w.points = q, c, []
            for i in range(5):
                w.tx("INSERT INTO t(v) VALUES ('new primary %d')" % i)
            wait_backed_up(q, w.points[-1][0], "the new primary")
            before = {os.path.basename(o) for o in s3.objects()}
        finally:
            p.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: p.role() == "replica", 30,
                 "the stale primary to turn replica")
        # A late upload happens at the stale uploader's first pass after
        # SIGCONT (its wait has long expired): give it a few intervals.
        time.sleep(1.5)
        late = sorted(k for k in (os.path.basename(o) for o in s3.objects())
                      if k not in before and k[:16] <= old_epoch)
        check(not late, "the stale primary put objects of its old epoch "
              "after the new primary's: %r" % late)

        for point, what in ((w.points[-1], "latest of the new primary"),
                            (w.points[1], "early in the new epoch")):
            out = os.path.join(out_dir, "%x.db" % point[0])
            restore(q.cfg, out, "--txid", "%016x" % point[0])
            check_restored(out, point, what)
        out = os.path.join(out_dir, "latest.db")
        restore(q.cfg, out)
        check_restored(out, w.points[-1], "latest (no --txid)")
        log("objects: %s" % ", ".join(os.path.basename(o)[:50]
                                      for o in s3.objects()))
        w.c.close()
    finally:
        for n in nodes:
            n.close()
        s3.close()
        etcd.close()
        shutil.rmtree(out_dir, ignore_errors=True)


ON_EMPTY = "  restore-on-empty: true\n"
BIG_MIB = 1024
BIG_RSS_MIB = 64
BIG_SECONDS = 60


def big_db(path, mib):
    """A database of about mib MiB: one row of incompressible bytes per
    4 KiB page."""
    c = sqlite3.connect(path)
    c.executescript("PRAGMA page_size=4096; PRAGMA journal_mode=OFF; "
                    "PRAGMA synchronous=OFF; CREATE TABLE t(id INTEGER "
                    "PRIMARY KEY, b BLOB);")
    c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
              "FROM n WHERE i < ?) INSERT INTO t(b) SELECT randomblob(3900) "
              "FROM n", (mib * 256,))
    c.commit()
    c.close()


def snapshot_object(db, work):
    """db as a store object (backup/object.h, rule O2: one snapshot record
    at TXID 1, epoch 1): (key, path of its body, checksum)."""
    ltx = os.path.join(work, "snap.ltx")
    cks = int(ltxfs("ltx", "encode-db", db, ltx, check_rc=0).stdout, 16)
    body = os.path.join(work, "snap.obj")
    with open(ltx, "rb") as src, open(body, "wb") as dst:
        dst.write(struct.pack(">I", os.path.getsize(ltx)))
        shutil.copyfileobj(src, dst, 1 << 20)
    os.unlink(ltx)
    return ("it/%s/l0/%016x-%016x-%016x-%016x.ltx" % (DB, 1, 1, 1, cks),
            body, cks)


def put_object(key, body, s3=None, bdir=None):
    """The object into the file store's directory or into s3rver (which
    takes an unsigned PUT)."""
    if s3 is None:
        path = os.path.join(bdir, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.rename(body, path)
        return
    import urllib.request
    with open(body, "rb") as f:
        req = urllib.request.Request(
            "%s/%s/%s" % (s3.url, BUCKET, key), data=f, method="PUT",
            headers={"Content-Length": str(os.path.getsize(body))})
        urllib.request.urlopen(req, timeout=600).read()
    os.unlink(body)


def timed_restore(cfg, out):
    """`ltxfs restore` in a child: (seconds, peak RSS of the child in MiB
    (getrusage through wait4), its stdout)."""
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t0 = time.monotonic()
        pid = subprocess.Popen([h.ltxfs_bin(), "restore", "-c", cfg, DB,
                                out], stdout=so, stderr=se).pid
        _, status, ru = os.wait4(pid, 0)
        secs = time.monotonic() - t0
        so.seek(0)
        se.seek(0)
        text, err = so.read().decode(), se.read().decode()
    check(os.waitstatus_to_exitcode(status) == 0, "restore: status %d: %s"
          % (status, err))
    return secs, ru.ru_maxrss / 1024.0, text


def case_restore_big():
    """A BIG_MIB database restores from the file store in bounded memory
    (peak RSS of the restore below BIG_RSS_MIB) and in under BIG_SECONDS
    (release build), with the right checksum."""
    work = tempfile.mkdtemp(prefix="ltxfs-bigrestore-")
    try:
        db = os.path.join(work, "src.db")
        big_db(db, BIG_MIB)
        key, body, cks = snapshot_object(db, work)
        os.unlink(db)
        bdir = os.path.join(work, "store")
        put_object(key, body, bdir=bdir)
        cfg = os.path.join(work, "ltxfs.yml")
        with open(cfg, "w") as f:
            f.write(backup_yml("file", bdir=bdir))
        out = os.path.join(work, "out.db")
        secs, rss, text = timed_restore(cfg, out)
        log("restore of %d MiB: %.1f s, peak RSS %.1f MiB: %s"
            % (BIG_MIB, secs, rss, text.strip()))
        check("checksum %016x" % cks in text, "restored checksum: %s" % text)
        check(rss < BIG_RSS_MIB, "peak RSS %.1f MiB >= %d MiB"
              % (rss, BIG_RSS_MIB))
        check(secs < BIG_SECONDS, "%.1f s >= %d s" % (secs, BIG_SECONDS))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lose(node):
    """A node lost: stopped, its data directory emptied."""
    node.stop()
    shutil.rmtree(node.data)
    os.mkdir(node.data)


def case_restore_on_empty():
    """Every node lost (and the store's chain compacted into an L1
    object); a new candidate with backup.restore-on-empty starts from the
    store (the file store: listed at any depth) at the store's TXID and
    checksum, with the rows, continues the backup
    without a snapshot, and a new replica (restore-on-empty too, but not
    a candidate: it restores nothing) catches up from it. A store that
    cannot be reached stops the start."""
    bdir = tempfile.mkdtemp(prefix="ltxfs-backup-dir-")
    yml = backup_yml("file", bdir=bdir) + ON_EMPTY
    p = ClusterNode("primary", extra_yml=yml)
    nodes, dead = [p], []
    try:
        p.start()
        w = Workload(p)
        w.run(n=4)
        # Objects of their own (backup.interval 200 ms): compaction
        # below has at least two L0 objects after the start to merge.
        for i in range(3):
            wait_backed_up(p, w.points[-1][0], "object %d" % i)
            w.tx("INSERT INTO t(v) VALUES ('own object %d')" % i)
        last = w.points[-1]
        wait_backed_up(p, last[0], "before every node is lost")
        w.c.close()
        lose(p)
        # Part of the chain as an L1 object: the new primary's log then
        # holds its merged record, which the replica below applies too.
        c = ltxfs("backup", "compact", "-c", p.cfg, DB, check_rc=0)
        log("backup compact: " + c.stdout.strip())
        check(re.search(r"into [1-9]\d* L1", c.stdout), "no L1 object to "
              "restore from: %r" % c.stdout)
        q = ClusterNode("new-primary", extra_yml=yml)
        nodes.append(q)
        q.start()
        log(q.wait_log(r".*db=%s: restored from file:.*" % re.escape(DB),
                       5).group(0))
        check(q.settled_pos(DB) == last[:2], "restored at %r, the store "
              "holds %016x/%016x" % (q.settled_pos(DB), last[0], last[1]))
        check(h.content_digest(q.path(DB)) == last[2], "restored rows "
              "differ")
        h.integrity_ok(q.path(DB))
        w.node, w.c = q, h.connect(q.path(DB))
        w.tx("INSERT INTO t(v) VALUES ('after restore-on-empty')")
        r = ClusterNode("replica", primary_url=q.url, extra_yml=yml)
        nodes.append(r)
        r.start()
        wait_for(lambda: r.pos_or_none(DB) == w.points[-1][:2], CATCH_UP,
                 "the replica at the restored primary's position")
        check(h.content_digest(r.path(DB)) == w.points[-1][2],
              "the replica's rows differ")
        check("not a candidate" in r.log_text(), "the replica: %s"
              % r.log_text()[-600:])
        wait_backed_up(q, w.points[-1][0], "after restore-on-empty")
        check("snapshot at TXID" not in q.log_text(), "the restored "
              "primary uploaded a snapshot instead of continuing")
        w.c.close()
        log("restore-on-empty: TXID %016x restored, replica caught up, "
            "backup continued" % last[0])
        for n in (r, q):
            n.stop()
        dead.append(S3rver())  # never started: nothing listens there
        down = ClusterNode("store-down", extra_yml=backup_yml(
            "s3", dead[0]) + ON_EMPTY)
        nodes.append(down)
        check(down.start(expect_mount=False) == "exited", "a node whose "
              "store cannot be reached started empty")
        m = re.search(r".*backup.restore-on-empty: .*not starting.*",
                      down.log_text())
        check(m, "no clear error: %s" % down.log_text()[-600:])
        log("store unreachable: " + m.group(0))
        check(not os.listdir(os.path.join(down.data, "dbs"))
              if os.path.isdir(os.path.join(down.data, "dbs")) else True,
              "a failed restore left databases")
    finally:
        for n in nodes:
            n.close()
        for s3 in dead:
            s3.close()
        shutil.rmtree(bdir, ignore_errors=True)


SNAP_INTERVAL_S = 2
RETAIN_S = 5


def store_objects(bdir):
    """Every object's key in a file store, as (epoch, min, max)."""
    out = []
    for path in glob.glob(os.path.join(bdir, "it", DB, "l0", "*.ltx")):
        e, lo, hi, _ = os.path.basename(path)[:-4].split("-")
        out.append((int(e, 16), int(lo, 16), int(hi, 16)))
    return sorted(out, key=lambda o: (o[1] != 1, o[1], o[2]))


def case_retention():
    """Scheduled snapshots and retention by age: a node writes for about
    15 s with backup.snapshot-interval 2s and backup.retention 5s; the
    store must hold several snapshots, each older chain must reach the
    newest point (the records up to a snapshot go before it), the
    oldest points must be gone and every point of the last 5 s
    restorable. Compaction runs every second meanwhile: retention must
    delete the L1 objects of the chains it deletes and keep those of the
    kept chains (the restores read them)."""
    bdir = tempfile.mkdtemp(prefix="ltxfs-backup-dir-")
    extra = ("  snapshot-interval: %ds\n  retention: %ds\n"
             "  compaction-interval: 1s\n" % (SNAP_INTERVAL_S, RETAIN_S))
    n = ClusterNode("primary", log_level="debug",
                    extra_yml=backup_yml("file", None, bdir, extra=extra))
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")
    try:
        n.start()
        w = Workload(n)
        w.c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
        w.record()
        end = time.monotonic() + 3 * SNAP_INTERVAL_S + RETAIN_S + 2
        i = 0
        while time.monotonic() < end and i < 2000:
            w.tx("INSERT INTO t(v, b) VALUES ('r%d', randomblob(200))" % i,
                 "DELETE FROM t WHERE id <= %d" % (i - 20))
            i += 1
            time.sleep(0.04)
        last = w.points[-1]
        wait_backed_up(n, last[0], "after the writes")
        deleted = 'ltxfs_backup_deleted_total{db="%s"}' % DB
        n.wait_metric(deleted, lambda v: v >= 1, 3 * SNAP_INTERVAL_S + 5,
                      "retention deleted objects")
        snaps = n.metric('ltxfs_backup_snapshots_total{db="%s"}' % DB, 0)
        check(snaps >= 3, "%d scheduled snapshots in %d s, want >= 3"
              % (snaps, 3 * SNAP_INTERVAL_S + RETAIN_S + 2))
        n.stop()
        stopped = time.time()
        objs = store_objects(bdir)
        starts = [o for o in objs if o[1] == 1]
        log("%d transactions, %d points; %d scheduled snapshots; the store "
            "holds %d objects, %d starts at %s" % (
                i, len(w.points), snaps, len(objs), len(starts),
                ", ".join("%x" % o[2] for o in starts)))
        check(len(starts) >= 2, "starts %r" % starts)
        # L1 objects: none of a deleted chain (their M is above the
        # oldest kept start's X), some of the kept ones.
        l1 = [int(k.split("-")[1], 16) for _, k in l1_objects(
            os.path.join(bdir, "it", DB, "l1"))]
        log("L1 objects from TXIDs %s" % ", ".join("%x" % m for m in l1))
        check(l1 and all(m > starts[0][2] for m in l1), "L1 objects from "
              "TXIDs %r, the oldest kept start at %x" % (l1, starts[0][2]))
        # The first start (TXID 1) and the oldest points are gone.
        check(starts[0][2] > w.points[0][0], "the first chain is still "
              "there: %r" % starts)
        restore(n.cfg, os.path.join(out_dir, "gone.db"), "--txid",
                "%016x" % w.points[0][0], rc=1)
        # Every kept start's chain reaches the newest point: the records
        # up to each snapshot were uploaded before it.
        p = ltxfs("backup", "ls", "-c", n.cfg, DB, check_rc=0)
        log("backup ls:\n" + p.stdout.rstrip())
        ranges = re.findall(r"(?m)^([0-9a-f]{16}) ([0-9a-f]{16}) ",
                            p.stdout)
        check(len(ranges) == len(starts) and all(
            int(b, 16) == last[0] for _, b in ranges),
            "ranges %r: each must reach %x" % (ranges, last[0]))
        # Restorable: the latest, the point just before each kept
        # snapshot but the oldest, and the points of the last RETAIN_S
        # seconds by time.
        check_restored(os.path.join(out_dir, "latest.db"), last, "latest",
                       restore(n.cfg, os.path.join(out_dir, "latest.db")))
        by_txid = {pt[0]: pt for pt in w.points}
        for st in starts[1:]:
            pt = by_txid.get(st[2] - 1)
            if pt is None:
                continue
            out = os.path.join(out_dir, "before-%x.db" % st[2])
            check_restored(out, pt, "TXID %x, before the snapshot at %x"
                           % (pt[0], st[2]), restore(
                               n.cfg, out, "--txid", "%016x" % pt[0]))
        window = [pt for pt in w.points
                  if pt[3] >= stopped - RETAIN_S + 0.5]
        check(window, "no point in the last %d s" % RETAIN_S)
        for pt in (window[0], window[len(window) // 2]):
            out = os.path.join(out_dir, "t-%x.db" % pt[0])
            check_restored(out, pt, "time after TXID %x (%.1f s before "
                           "the stop)" % (pt[0], stopped - pt[3]),
                           restore(n.cfg, out, "--timestamp",
                                   rfc3339(pt[3])))
    finally:
        n.close()
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)


def l1_objects(l1dir):
    """(max TXID, name) of the L1 objects in a file store's l1/."""
    if not os.path.isdir(l1dir):
        return []
    return sorted((int(k.split("-")[2], 16), k) for k in os.listdir(l1dir)
                  if k.endswith(".ltx"))


def objects_read(p):
    m = re.search(r": (\d+) objects, ", p.stdout)
    check(m, "no object count in %r" % p.stdout)
    return int(m.group(1))


def case_compact():
    bdir = tempfile.mkdtemp(prefix="ltxfs-backup-dir-")
    n = ClusterNode("primary", log_level="debug", extra_yml=backup_yml(
        "file", bdir=bdir, extra="  compaction-interval: 1s\n"))
    l1dir = os.path.join(bdir, "it", DB, "l1")
    out_dir = tempfile.mkdtemp(prefix="ltxfs-restore-")

    def covered(w, txid, what):
        """Small transactions (more L0 objects) until an L1 object ends
        at or after txid."""
        t_end = time.monotonic() + CATCH_UP
        i = 0
        while time.monotonic() < t_end:
            if any(x >= txid for x, _ in l1_objects(l1dir)):
                log("%s: L1 objects %s" % (what, [k for _, k in
                                                   l1_objects(l1dir)]))
                return
            w.tx("INSERT INTO t(v) VALUES ('tick %d')" % i)
            i += 1
            time.sleep(0.3)
        raise h.TestFailure("%s: no L1 object reaches TXID %x in %d s: "
                            "%r; log:\n%s" % (what, txid, CATCH_UP,
                                              l1_objects(l1dir),
                                              n.log_tail()))

    try:
        n.start()
        w = Workload(n)
        w.c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
        w.record()
        for i in range(10):
            w.tx("INSERT INTO t(v, b) VALUES ('row %d', randomblob(3000))"
                 % i)
            if i % 3 == 1:
                w.tx("UPDATE t SET v = v || '+', b = randomblob(500) "
                     "WHERE id %% 2 = %d" % (i % 2))
            time.sleep(0.08)
        # A shrink, then regrowth.
        w.tx("DELETE FROM t WHERE id > 2")
        w.c.execute("VACUUM")
        w.record()
        for i in range(6):
            w.tx("INSERT INTO t(v, b) VALUES ('regrow %d', "
                 "randomblob(2500))" % i)
            time.sleep(0.08)
        covered(w, w.points[-1][0], "first half")
        half = len(w.points)
        for i in range(8):
            w.tx("INSERT INTO t(v, b) VALUES ('second %d', "
                 "randomblob(1500))" % i)
            if i % 2:
                w.tx("DELETE FROM t WHERE id = (SELECT min(id) FROM t)")
            time.sleep(0.08)
        w.c.execute("DELETE FROM t WHERE id % 2 = 0")
        w.record()
        w.c.execute("VACUUM")
        w.record()
        w.tx("INSERT INTO t(v, b) VALUES ('after', randomblob(9000))")
        covered(w, w.points[-1][0], "second half")
        last = w.points[-1]
        wait_backed_up(n, last[0], "after the workload")
        check(n.metric('ltxfs_backup_compactions_total{db="%s"}' % DB, 0)
              >= 2, "ltxfs_backup_compactions_total below 2")
        n.stop()
        # Points of the second half: after the first L1 ends.
        mid = w.points[(half + len(w.points)) // 2]
        k = (half + len(w.points)) // 2 + 2
        cases = [("latest", last, ()),
                 ("TXID %x" % mid[0], mid, ("--txid", "%016x" % mid[0])),
                 ("timestamp after TXID %x" % w.points[k][0], w.points[k],
                  ("--timestamp", rfc3339(w.points[k][3])))]
        with_l1 = []
        for i, (what, point, args) in enumerate(cases):
            out = os.path.join(out_dir, "l1-%d.db" % i)
            p = restore(n.cfg, out, *args)
            check_restored(out, point, what + " (L1)", p)
            with_l1.append(objects_read(p))
        moved = l1dir + ".away"
        os.rename(l1dir, moved)
        for i, (what, point, args) in enumerate(cases):
            out = os.path.join(out_dir, "l0-%d.db" % i)
            p = restore(n.cfg, out, *args)
            check_restored(out, point, what + " (L0 only)", p)
            n0 = objects_read(p)
            check(with_l1[i] < n0, "%s: %d objects read with L1, %d "
                  "without" % (what, with_l1[i], n0))
            log("%s: %d objects with L1, %d with L0 only"
                % (what, with_l1[i], n0))
            if i == 0:
                l0_latest = n0
        # `ltxfs backup compact` from the command line, on the L0 objects
        # alone: the latest point again, from its L1 objects.
        p = ltxfs("backup", "compact", "-c", n.cfg, DB, check_rc=0)
        log("backup compact: " + p.stdout.strip())
        check(re.search(r"\d+ objects merged into [1-9]\d* L1", p.stdout),
              "backup compact: %r" % p.stdout)
        out = os.path.join(out_dir, "cli.db")
        p = restore(n.cfg, out)
        check_restored(out, last, "latest after backup compact", p)
        check(objects_read(p) < l0_latest, "after backup compact: %d "
              "objects read, %d L0" % (objects_read(p), l0_latest))
        shutil.rmtree(l1dir)
        os.rename(moved, l1dir)
        # A byte flipped in an L1 object: the restore fails naming it.
        name = l1_objects(l1dir)[0][1]
        with open(os.path.join(l1dir, name), "r+b") as f:
            data = f.read()
            pos = len(data) // 2
            f.seek(pos)
            f.write(bytes([data[pos] ^ 0x40]))
        p = restore(n.cfg, os.path.join(out_dir, "bad.db"), rc=1)
        check(name in p.stderr and "offset" in p.stderr, "corrupt L1: %r"
              % p.stderr)
    finally:
        n.close()
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "s3"
    t0 = time.monotonic()
    if mode in ("s3", "file"):
        case_roundtrip(mode)
    elif mode == "store-down":
        case_store_down()
    elif mode == "restore-big":
        case_restore_big()
    elif mode == "restore-on-empty":
        case_restore_on_empty()
    elif mode == "epoch-check":
        case_epoch_check()
    elif mode == "bad-input":
        case_bad_input()
    elif mode == "failover":
        case_failover()
    elif mode == "stale-primary":
        case_stale_primary()
    elif mode == "retention":
        case_retention()
    elif mode == "compact":
        case_compact()
    else:
        raise h.TestFailure("unknown mode %s" % mode)
    log("PASS %s (%.1f s)" % (mode, time.monotonic() - t0))


if __name__ == "__main__":
    h.main(main)
