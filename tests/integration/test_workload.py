"""A seeded random workload from concurrent writers, for one journal mode,
at page sizes 1024, 4096 and 65536.

    test_workload.py MODE     MODE: delete truncate persist wal wal-exclusive

For each page size, on a fresh node: three writer processes (one after
another for wal-exclusive, where each holds the database exclusively)
run inserts, updates, deletes, CREATE/DROP TABLE/INDEX, rollbacks and a
VACUUM through the mount. Then:
  - integrity_check is ok and the database holds exactly the writers'
    models (their tables, rows and indexes, one `events` row per commit);
  - a clean stop; `ltxfs verify` exits 0 with the -pos TXID and checksum;
  - the log holds exactly TXID records; at page size 4096, replayed one
    at a time each is a whole transaction (see check_records), and the
    TXID grew by one per commit plus those that change no rows (VACUUM,
    some rollbacks);
  - after a restart the -pos is unchanged and so is every row.
"""

import sys
import time

import ltxfs_harness as h
from workload import check_models, create_db, run_writers

MODES = {
    "delete": ("DELETE", False),
    "truncate": ("TRUNCATE", False),
    "persist": ("PERSIST", False),
    "wal": ("WAL", False),
    "wal-exclusive": ("WAL", True),
}
PAGE_SIZES = (1024, 4096, 65536)
# The record-by-record replay runs `ltxfs ltx apply` once a record (slow
# under ASan): at this page size only.
REPLAY_PAGE_SIZE = 4096
WORKERS = 3
TXNS = 150


def check_records(n, db, setup_txid, n_txid):
    """Every record of the log is one whole transaction: replayed one at a
    time, each state passes quick_check and either has one more `events`
    row than the one before (a commit) or the same content (a VACUUM, or
    a rollback that left freelist pages with other bytes). Returns the
    number of records of the second kind."""
    state = {"events": 0, "dump": None, "same": 0}
    bad = []

    def step(i, scratch):
        txid = i + 1
        c = h.connect(scratch)
        try:
            qc = [r[0] for r in c.execute("PRAGMA quick_check")]
            if qc != ["ok"]:
                bad.append("TXID %d: quick_check %s" % (txid, qc[:3]))
                return
            if txid < setup_txid:
                return
            ev = h.one(c, "SELECT count(*) FROM events")
            dump = hash(tuple(c.iterdump()))
        finally:
            c.close()
        if txid > setup_txid:
            if ev == state["events"]:
                if dump != state["dump"]:
                    bad.append("TXID %d changes rows but adds no events "
                               "row" % txid)
                state["same"] += 1
            elif ev != state["events"] + 1:
                bad.append("TXID %d: events %d after %d"
                           % (txid, ev, state["events"]))
        state["events"], state["dump"] = ev, dump
    nrec = n.replay_each(db, step)
    h.check(nrec == n_txid, "%d records in the log, TXID %d"
            % (nrec, n_txid))
    h.check(not bad, "log records that are not whole transactions:\n  "
            + "\n  ".join(bad[:10]))
    return state["same"]


def one_size(mode, page_size):
    journal_mode, exclusive = MODES[mode]
    db = "work.db"
    with h.Node("%s-%d" % (mode, page_size)) as n:
        n.start()
        path = n.path(db)
        create_db(path, page_size, journal_mode, exclusive)
        setup_txid, _ = n.pos(db)
        h.check(setup_txid >= 1, "no TXID after creating the database")
        t0 = time.monotonic()
        res = run_writers(path, page_size, journal_mode,
                          seed="%s/%d" % (mode, page_size), workers=WORKERS,
                          txns=TXNS, exclusive=exclusive)
        t_run = time.monotonic() - t0
        h.integrity_ok(path)
        check_models(path, res)
        commits = sum(r["commits"] for r in res)
        vacuums = sum(r["vacuums"] for r in res)
        busy = sum(r["busy"] for r in res)
        rollbacks = sum(r["rollbacks"] for r in res)
        txid, cksum = n.pos(db)
        grew = txid - setup_txid
        print("  %-13s page %5d: %d commits, %d rollbacks, %d vacuums, "
              "%d busy retries; TXID %d -> %d" % (
                  mode, page_size, commits, rollbacks, vacuums, busy,
                  setup_txid, txid))
        digest = h.content_digest(path)
        n.stop()
        _, found, _ = n.verify(db)
        h.check(found.get(db) == (txid, cksum),
                "verify says %s, -pos said %016x/%016x"
                % (found.get(db), txid, cksum))
        nrec = len(n.log_records(db))
        h.check(nrec == txid, "%d records in the log, TXID %d"
                % (nrec, txid))
        if page_size == REPLAY_PAGE_SIZE:
            t0 = time.monotonic()
            same = check_records(n, db, setup_txid, txid)
            print("    writers %.1fs, record-by-record replay %.1fs"
                  % (t_run, time.monotonic() - t0))
            h.check(grew == commits + same and
                    same <= vacuums + rollbacks,
                    "TXID grew by %d for %d commits, %d VACUUMs and %d "
                    "rollbacks; %d records changed no rows"
                    % (grew, commits, vacuums, rollbacks, same))
        else:
            h.check(commits <= grew <= commits + vacuums + rollbacks,
                    "TXID grew by %d for %d commits, %d VACUUMs and %d "
                    "rollbacks" % (grew, commits, vacuums, rollbacks))
        n.start()
        h.check(n.pos(db) == (txid, cksum), "-pos after restart %s, "
                "before %s" % (n.pos(db), (txid, cksum)))
        h.check(h.content_digest(path) == digest,
                "content changed across the restart")
        h.integrity_ok(path)
        n.stop()
        n.verify(db)


def test():
    mode = sys.argv[1]
    h.check(mode in MODES, "unknown mode %r" % mode)
    for ps in PAGE_SIZES:
        one_size(mode, ps)


if __name__ == "__main__":
    h.main(test)
