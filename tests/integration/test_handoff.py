"""Graceful handoff with a write transaction in flight (suite etcd): the
primary stops accepting new write transactions, lets the open one finish,
and only then gives up the lease (issue 5, "Graceful handoff").

Real etcd and three ltxfs nodes, as in test_etcd.py (whose helpers this
uses). Cases (argv[1]) <how>-<mode>:
  how   promote: `ltxfs promote` on a replica; sigterm: SIGTERM of the
        primary (a clean stop hands off too)
  mode  wal or delete: the database's journal mode

Each case:
  1. connection A on the primary: BEGIN IMMEDIATE and an INSERT (the
     write transaction is open: SQLite holds the WAL write lock, or the
     rollback journal holds the page);
  2. the handoff starts; once the primary's log says it waits for the open
     transaction, connection B on the primary tries a new write
     transaction, and A commits;
  3. A's COMMIT must succeed, B's write must fail; the handoff completes;
     A's row is on the new primary and on every node, B's row on none; the
     nodes converge, integrity-checked, and the epoch checker holds.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import ltxfs_harness as h
from ltxfs_harness import check, wait_for
import test_etcd as te

A_ID = 1000000
B_ID = 1000001
WAIT_LINE = b"handoff: new write transactions wait"


def log_has(node, needle):
    try:
        with open(node.log_path, "rb") as f:
            return needle in f.read()
    except OSError:
        return False


def run_case(how, mode):
    etcd = te.Etcd()
    nodes = []
    try:
        etcd.start()
        nodes = [te.EtcdNode("n%d" % i, etcd) for i in range(3)]
        p = te.setup(nodes)
        if mode == "wal":
            c = h.connect(p.path(te.DB))
            got = h.one(c, "PRAGMA journal_mode=WAL")
            c.close()
            check(got == "wal", "journal_mode is %s, not wal" % got)
            te.wait_synced(nodes, 30)
        q = [n for n in nodes if n is not p][0]
        wait_for(lambda: q.info() and q.info().get("ready"), 30,
                 "%s ready" % q.name)

        a = h.connect(p.path(te.DB))
        a.execute("BEGIN IMMEDIATE")
        a.execute("INSERT INTO t(id, v, at) VALUES(?, 'in flight', ?)",
                  (A_ID, p.name))

        t0 = time.monotonic()
        promote = None
        if how == "promote":
            promote = subprocess.Popen(
                [h.ltxfs_bin(), "promote", "-c", q.cfg],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        else:
            p.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: log_has(p, WAIT_LINE), 10,
                 "%s to say it waits for the open transaction" % p.name,
                 interval=0.005)
        t_wait = time.monotonic()

        # A new write transaction on the old primary, from another
        # connection: it must not be accepted.
        b_res = {}

        def try_b():
            b = h.connect(p.path(te.DB), timeout=5.0)
            try:
                b.execute("INSERT INTO t(id, v, at) VALUES(?, 'new', ?)",
                          (B_ID, p.name))
                b_res["ok"] = True
            except Exception as e:  # noqa: BLE001 - any failure counts
                b_res["err"] = "%s: %s" % (type(e).__name__, e)
            finally:
                b.close()
        tb = threading.Thread(target=try_b, daemon=True)
        tb.start()

        a.execute("COMMIT")
        t_commit = time.monotonic()
        a.close()
        print("%s-%s: the handoff waited; A committed %.0f ms after the "
              "primary said so (%.0f ms after the handoff began)"
              % (how, mode, (t_commit - t_wait) * 1000,
                 (t_commit - t0) * 1000))

        if promote:
            out, _ = promote.communicate(timeout=30)
            check(promote.returncode == 0, "ltxfs promote: exit %d: %s"
                  % (promote.returncode, out.decode("utf-8", "replace")))
        else:
            rc = p.wait_exit(60)
            check(rc == 0, "%s exited %d after SIGTERM" % (p.name, rc))
        t_done = time.monotonic()
        tb.join(30)
        check(not tb.is_alive(), "B's write still hangs 30 s on")
        check("ok" not in b_res, "a write transaction begun after the "
              "handoff began was accepted by the old primary")
        print("%s-%s: handoff done %.0f ms after it began; B failed: %s"
              % (how, mode, (t_done - t0) * 1000, b_res.get("err")))
        check(log_has(p, b"handoff: the open write transaction finished"),
              "%s did not log that the open transaction finished"
              % p.name)

        new = te.wait_one_primary(nodes, 20)
        check(new is not p, "%s is still the primary" % p.name)
        if how == "promote":
            check(new is q, "%s is primary, not the promoted %s"
                  % (new.name, q.name))
        rows = te.count_rows(new)
        check(A_ID in rows, "the transaction that was open during the "
              "handoff is missing on the new primary %s" % new.name)
        check(B_ID not in rows, "the refused write is on %s" % new.name)
        # The new primary accepts writes.
        c = h.connect(new.path(te.DB))
        c.execute("INSERT INTO t(id, v, at) VALUES(?, 'after', ?)",
                  (A_ID + 10, new.name))
        c.close()

        if how == "sigterm":
            p.start()
        wait_for(lambda: p.role() == "replica" and p.info().get("ready"),
                 30, "%s to be a ready replica" % p.name)
        te.wait_synced(nodes, 60)
        ids = None
        for n in nodes:
            h.integrity_ok(n.path(te.DB))
            got = te.count_rows(n)
            check(ids is None or got == ids, "%s has other rows than %s"
                  % (n.name, nodes[0].name))
            ids = got
        check(A_ID in ids and A_ID + 10 in ids and B_ID not in ids,
              "rows after convergence: in-flight %s, after %s, refused %s"
              % (A_ID in ids, A_ID + 10 in ids, B_ID in ids))
        for n in nodes:
            n.stop()
        print("epoch checker:", te.check_epochs(nodes))
    except BaseException:
        for n in nodes:
            h.print_log_tail(n, 40)
        raise
    finally:
        for n in nodes:
            n.close()
        etcd.close()


CASES = ["promote-wal", "promote-delete", "sigterm-wal", "sigterm-delete"]


def run():
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    check(case in CASES, "usage: test_handoff.py %s" % "|".join(CASES))
    te.TTL = float(os.environ.get("TTL", te.TTL))
    how, mode = case.split("-")
    run_case(how, mode)


if __name__ == "__main__":
    h.main(run)
