#!/usr/bin/env python3
"""Soak: faults a production node meets, cycle after cycle, against a
writer with an invariant. Not part of CI (it runs for as long as asked).

    LTXFS_BIN=build/cmd/ltxfs python3 tests/soak/soak.py --cycles 500

A primary and a replica (static lease) on loopback; the primary's data
directory is a small tmpfs the script mounts (and always unmounts), so
that a disk can really fill. A writer process runs bank transfers in two
databases (wal.db in WAL mode, del.db in DELETE mode): each transaction
moves an amount between two of ten accounts (the total never changes) and
inserts its sequence number into a ledger. A sequence number is
"acknowledged" when COMMIT returned; it is appended to acked.txt outside
the mount at once. The writer reconnects after any error; a failed COMMIT
is not acknowledged (it may or may not be there). A writer that dies (a
WAL connection's -shm mapping on a mount whose daemon was killed gets
SIGBUS) is started again and counted, as a supervisor would.

Each cycle applies one fault, round-robin:
    kill9-primary   SIGKILL the primary, start it again as a supervisor
                    would (onto its dead mount)
    kill9-replica   SIGKILL the replica, start it again
    stop-replica    SIGSTOP the replica 2-8 s while the writer goes on
    stop-primary    SIGSTOP the primary 1-3 s
    disk-full       fill the primary's disk; writes must fail ("database or
                    disk is full") and reads work; free it: writes resume
                    without a restart
    restart         SIGTERM and start again, primary or replica in turn
then pauses the writer and checks, with deadlines:
    - every acknowledged sequence number is in the primary's ledger, the
      total is unchanged, integrity_check is ok;
    - the replica reaches the primary's position and has the same content;
    - the writer commits again after the fault (not wedged).
A cycle whose checks do not finish within their deadline counts as
wedged; the run stops at the first wedged or lost write, keeping the logs
(--keep). Figures go to stdout and, with --json FILE, to a file.
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import ltxfs_harness as h  # noqa: E402
from cluster_harness import Cluster  # noqa: E402
from ltxfs_harness import TestFailure, check, wait_for  # noqa: E402

ACCOUNTS = 10
START_BALANCE = 1000
DBS = (("wal.db", "WAL"), ("del.db", "DELETE"))
RECOVER_TIMEOUT = 90.0   # a fault's end to writes and sync again
TMPFS_SIZE = "96m"

FAULTS = ["kill9-primary", "kill9-replica", "stop-replica", "stop-primary",
          "disk-full", "restart"]


class Wedged(Exception):
    pass


def create(path, mode):
    c = h.connect(path)
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("CREATE TABLE IF NOT EXISTS acct(id INTEGER PRIMARY KEY, "
              "bal INTEGER NOT NULL)")
    c.execute("CREATE TABLE IF NOT EXISTS ledger(seq INTEGER PRIMARY KEY, "
              "pad BLOB)")
    c.execute("BEGIN")
    if h.one(c, "SELECT count(*) FROM acct") == 0:
        for i in range(ACCOUNTS):
            c.execute("INSERT INTO acct VALUES(?, ?)", (i, START_BALANCE))
    c.execute("COMMIT")
    c.close()


WRITER_SRC = r"""
import random, sqlite3, sys, time
mnt, out, rate, seq0, accounts = (sys.argv[1], sys.argv[2],
                                  float(sys.argv[3]), int(sys.argv[4]),
                                  int(sys.argv[5]))
dbs = sys.argv[6:]
f = open(out, "a", buffering=1)
conns = {}
seq = seq0
i = 0
while True:
    db = dbs[i % len(dbs)]
    i += 1
    seq += 1
    a, b = random.sample(range(accounts), 2)
    amt = random.randint(1, 50)
    try:
        c = conns.get(db)
        if c is None:
            c = conns[db] = sqlite3.connect(mnt + "/" + db, timeout=5.0,
                                            isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE acct SET bal = bal - ? WHERE id = ?", (amt, a))
        c.execute("UPDATE acct SET bal = bal + ? WHERE id = ?", (amt, b))
        c.execute("INSERT INTO ledger VALUES(?, randomblob(?))",
                  (seq, random.randint(10, 600)))
        c.execute("COMMIT")
    except (sqlite3.Error, OSError) as e:
        f.write("E %s %s\n" % ("full" if "full" in str(e) else "other",
                               str(e).replace("\n", " ")))
        c = conns.pop(db, None)
        try:
            c and c.close()
        except sqlite3.Error:
            pass
        time.sleep(0.05)
        continue
    f.write("A %s %d\n" % (db, seq))
    time.sleep(1.0 / rate)
"""


class Writer:
    """The application: a child process running transfers in both
    databases through the mount, reconnecting after any error. A commit
    is acknowledged when its "A db seq" line is in the ack file (written
    right after COMMIT returned, before anything else). The child may die
    (SIGBUS: a WAL connection's -shm mapping on a mount whose daemon was
    killed); it is started again and counted, as a supervisor would."""

    def __init__(self, node, root, rate):
        self.node = node
        self.ack_path = os.path.join(root, "acked.txt")
        self.src = os.path.join(root, "writer.py")
        with open(self.src, "w") as f:
            f.write(WRITER_SRC)
        self.rate = rate
        self.proc = None
        self.acked = {db: set() for db, _ in DBS}
        self.errors = {}
        self.full_errors = 0
        self.crashes = 0
        self.off = 0
        self.next_seq = 0
        self.mu = threading.Lock()
        self.running = False
        self.quit = False
        self.mon = threading.Thread(target=self._monitor, daemon=True)
        self.mon.start()

    def _spawn(self):
        self.next_seq += 10000000  # each child numbers from its own base
        self.proc = subprocess.Popen(
            [sys.executable, self.src, self.node.mnt, self.ack_path,
             str(self.rate), str(self.next_seq), str(ACCOUNTS)] +
            [db for db, _ in DBS], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _read(self):
        try:
            with open(self.ack_path) as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind("\n") + 1
        self.off += len(data[:end].encode())
        for line in data[:end].splitlines():
            parts = line.split(" ", 2)
            if parts[0] == "A":
                self.acked[parts[1]].add(int(parts[2]))
            elif parts[0] == "E":
                msg = parts[2] if len(parts) > 2 else ""
                self.errors[msg] = self.errors.get(msg, 0) + 1
                if parts[1] == "full":
                    self.full_errors += 1

    def _monitor(self):
        while not self.quit:
            with self.mu:
                self._read()
                if self.running and self.proc is not None and \
                        self.proc.poll() is not None:
                    self.crashes += 1
                    self._spawn()
            time.sleep(0.05)

    def resume(self):
        with self.mu:
            self.running = True
            if self.proc is None:
                self._spawn()

    def pause(self):
        with self.mu:
            self.running = False
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.kill()
                try:
                    self.proc.wait(timeout=RECOVER_TIMEOUT)
                except subprocess.TimeoutExpired:
                    raise Wedged("the writer did not die within %.0fs of "
                                 "SIGKILL (stuck on the mount)"
                                 % RECOVER_TIMEOUT)
                self.proc = None
            self._read()

    def stop(self):
        self.pause()
        self.quit = True
        self.mon.join(timeout=5)

    def acks(self):
        with self.mu:
            self._read()
            return sum(len(s) for s in self.acked.values())

    def full(self):
        with self.mu:
            self._read()
            return self.full_errors


def start_supervised(n):
    """Starts n's daemon as a supervisor would after a crash: onto a mount
    point that may still hold its dead mount (no unmount by the test)."""
    n._log = open(n.log_path, "ab")
    n.starts += 1
    n._log.write(b"==== soak: start #%d ====\n" % n.starts)
    n._log.flush()
    n.proc = subprocess.Popen([h.ltxfs_bin(), "mount", "-c", n.cfg],
                              stdin=subprocess.DEVNULL, stdout=n._log,
                              stderr=subprocess.STDOUT, cwd=n.root,
                              start_new_session=True)

    def up():
        if n.proc.poll() is not None:
            raise Wedged("%s exited %s at start:\n%s"
                         % (n.name, n.proc.returncode, n.log_tail(10)))
        return n.healthy()
    try:
        wait_for(up, RECOVER_TIMEOUT, "%s to serve again" % n.name)
    except TestFailure as e:
        raise Wedged(str(e))


def kill9(n):
    os.kill(n.proc.pid, signal.SIGKILL)
    try:
        n.proc.wait(timeout=h.KILL_EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Wedged("%s still running %.0fs after SIGKILL"
                     % (n.name, h.KILL_EXIT_TIMEOUT))
    n._reap()


def fill_disk(path):
    """Writes a filler file until the file system is full; returns its
    path."""
    filler = os.path.join(path, "filler")
    st = os.statvfs(path)
    print("  disk-full: %d of %d KiB free before the filler"
          % (st.f_bavail * st.f_frsize // 1024,
             st.f_blocks * st.f_frsize // 1024))
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(4096):
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break
        try:
            for _ in range(256):
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


def check_state(cl, w, cycle, fault):
    """Pauses the writer, checks every acknowledged write and the
    invariant on the primary, the replica's convergence, then resumes."""
    p, r = cl.primary, cl.replicas[0]
    w.pause()
    lost = 0
    for db, _ in DBS:
        try:
            c = h.connect(p.path(db), timeout=30)
            seqs = {row[0] for row in c.execute("SELECT seq FROM ledger")}
            total = h.one(c, "SELECT sum(bal) FROM acct")
            c.close()
        except sqlite3.Error as e:
            raise Wedged("cycle %d (%s): reading %s on the primary: %s"
                         % (cycle, fault, db, e))
        missing = w.acked[db] - seqs
        lost += len(missing)
        if missing:
            print("LOST cycle %d (%s): %s is missing %d acknowledged: %s"
                  % (cycle, fault, db, len(missing), sorted(missing)[:20]))
        check(total == ACCOUNTS * START_BALANCE, "cycle %d: %s total %s"
              % (cycle, db, total))
        h.integrity_ok(p.path(db))

        def capture_ok():
            st = [d.get("state", "ok") for d in p.info()["databases"]
                  if d["name"] == db]
            return st == ["ok"]
        try:
            # A capture a full disk held back is retried once a second:
            # until it is in, the log (and -pos) is behind the file.
            wait_for(capture_ok, RECOVER_TIMEOUT, "%s: capture resumed on "
                     "the primary" % db)
            cl.wait_synced(db, timeout=RECOVER_TIMEOUT)
        except TestFailure as e:
            raise Wedged("cycle %d (%s): %s" % (cycle, fault, e))
        check(h.content_digest(r.path(db), ro=True) ==
              h.content_digest(p.path(db)),
              "cycle %d: %s differs on the replica at the same position"
              % (cycle, db))
    before = w.acks()
    w.resume()
    try:
        wait_for(lambda: w.acks() > before, RECOVER_TIMEOUT,
                 "cycle %d (%s): a write acknowledged after the fault"
                 % (cycle, fault))
    except TestFailure as e:
        raise Wedged("%s; writer errors: %s" % (e, w.errors))
    return lost


def do_fault(cl, w, fault, tmpfs, cycle):
    p, r = cl.primary, cl.replicas[0]
    if fault == "kill9-primary":
        time.sleep(random.uniform(0.2, 1.0))
        kill9(p)
        start_supervised(p)
    elif fault == "kill9-replica":
        time.sleep(random.uniform(0.2, 1.0))
        kill9(r)
        start_supervised(r)
    elif fault == "stop-replica":
        os.kill(r.proc.pid, signal.SIGSTOP)
        time.sleep(random.uniform(2, 8))
        os.kill(r.proc.pid, signal.SIGCONT)
    elif fault == "stop-primary":
        os.kill(p.proc.pid, signal.SIGSTOP)
        time.sleep(random.uniform(1, 3))
        os.kill(p.proc.pid, signal.SIGCONT)
    elif fault == "disk-full":
        full0 = w.full()
        filler = fill_disk(tmpfs)
        try:
            wait_for(lambda: w.full() > full0, RECOVER_TIMEOUT,
                     "cycle %d: a write refused as 'disk is full'" % cycle)
            # Reads keep working meanwhile.
            for db, _ in DBS:
                c = h.connect(p.path(db), timeout=10)
                h.one(c, "SELECT count(*) FROM ledger")
                c.close()
            time.sleep(random.uniform(1, 4))
        finally:
            os.unlink(filler)
    elif fault == "restart":
        n = p if cycle % 2 == 0 else r
        n.stop()
        n.start()
        if n is r:
            cl.wait_connected(r, timeout=RECOVER_TIMEOUT)
    else:
        raise ValueError(fault)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--rate", type=float, default=100.0,
                    help="writer transactions per second, at most")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true",
                    help="keep the directories after a failure")
    a = ap.parse_args()
    faults = a.faults.split(",")
    for f in faults:
        check(f in FAULTS, "unknown fault %s" % f)
    seed = a.seed if a.seed is not None else int(time.time())
    random.seed(seed)
    h.skip_unless_fuse()
    if a.keep:
        os.environ["LTXFS_KEEP"] = "1"
    t0 = time.monotonic()
    counts = {f: 0 for f in faults}
    lost = wedged = 0
    failure = None
    w = None
    with Cluster(2, primary_data_yml="  retention: 60s\n") as cl:
        p = cl.primary
        tmpfs = p.data
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE,
                        "tmpfs", tmpfs], check=True)
        try:
            cl.start()
            for db, mode in DBS:
                create(p.path(db), mode)
            w = Writer(p, p.root, a.rate)
            w.resume()
            cycle = 0
            for cycle in range(a.cycles):
                fault = faults[cycle % len(faults)]
                try:
                    do_fault(cl, w, fault, tmpfs, cycle)
                    n = check_state(cl, w, cycle, fault)
                except Wedged as e:
                    wedged += 1
                    failure = "wedged: %s" % e
                    break
                except TestFailure as e:
                    failure = "cycle %d (%s): %s" % (cycle, fault, e)
                    break
                counts[fault] += 1
                lost += n
                if n:
                    failure = "lost %d acknowledged writes" % n
                    break
                if cycle % 10 == 9:
                    print("cycle %d: %d acknowledged, %d lost, %.0fs"
                          % (cycle + 1, w.acks(), lost,
                             time.monotonic() - t0))
                    sys.stdout.flush()
        finally:
            if w is not None:
                try:
                    w.stop()
                except Wedged as e:
                    failure = failure or "wedged: %s" % e
            if failure:
                for n in cl.nodes:
                    h.print_log_tail(n, 40)
            if failure is None:
                cl.stop()
            for n in cl.nodes:
                if n.running():
                    n.kill9(strict=False)
            h.unmount_all(p.mnt)
            if failure:
                # Keep the primary's data (on the tmpfs) for inspection.
                subprocess.run(["cp", "-a", tmpfs, p.root + "/data-kept"])
            subprocess.run(["umount", "-l", tmpfs])
    figures = {
        "seed": seed,
        "cycles": sum(counts.values()),
        "faults": counts,
        "acknowledged": w.acks() if w else 0,
        "lost": lost,
        "wedged": wedged,
        "writer_errors": sum(w.errors.values()) if w else 0,
        "writer_error_kinds": dict(sorted(w.errors.items(),
                                          key=lambda kv: -kv[1])[:8])
        if w else {},
        "disk_full_refusals": w.full_errors if w else 0,
        "writer_crashes": w.crashes if w else 0,
        "seconds": round(time.monotonic() - t0, 1),
        "failure": failure,
    }
    print(json.dumps(figures, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=2)
    sys.exit(1 if failure else 0)


if __name__ == "__main__":
    main()
