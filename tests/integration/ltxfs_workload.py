"""A seeded random SQLite workload, run as a separate process per writer.

    python3 ltxfs_workload.py write --db PATH --worker W --seed S --txns N
        [--journal-mode M] [--exclusive] [--vacuum-at K] [--page-size P]
    python3 ltxfs_workload.py read --db PATH --seconds T [--stop-file F]

`write`: N transactions, each BEGIN IMMEDIATE; one row into the shared
table `events` (so every commit changes the database); 1 to 5 operations
on the worker's own tables w<W>_t<k> (insert, update, delete, CREATE/DROP
TABLE, CREATE/DROP INDEX); COMMIT, or ROLLBACK one time in ten. At
transaction K a VACUUM. The worker keeps a model of its own tables and
prints, as one JSON line, the model and its counts. Only the worker
writes its tables, so the model is exactly what the database must hold.

`crash-write`: see crash_write(). `vacuum-die`: see vacuum_die().

`read`: until T seconds pass or the stop file appears, reads `events`
(its count must never go down) and runs PRAGMA quick_check; prints a JSON
line with the number of reads and any problem.
"""

import argparse
import json
import os
import random
import sqlite3
import sys
import time

BUSY_RETRIES = 20


def connect(path, exclusive, journal_mode):
    c = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    if exclusive:
        c.execute("PRAGMA locking_mode=EXCLUSIVE")
    if journal_mode:
        got = c.execute("PRAGMA journal_mode=%s" % journal_mode).fetchone()[0]
        if got.lower() != journal_mode.lower():
            raise RuntimeError("journal_mode=%s gave %s" % (journal_mode, got))
    return c


def payload(rng, page_size):
    # Mostly small rows, sometimes rows that need overflow pages.
    if rng.random() < 0.1:
        n = rng.randint(page_size, 3 * page_size)
    else:
        n = rng.randint(1, 200)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                   for _ in range(min(n, 64))) * (n // 64 + 1)


def write(a):
    rng = random.Random("%s/%s" % (a.seed, a.worker))
    c = connect(a.db, a.exclusive, a.journal_mode)
    model = {}          # table -> {id: [v, n]}
    indexes = {}        # table -> set of index names
    next_id = {}
    commits = rollbacks = vacuums = busy = 0
    prefix = "w%d_t" % a.worker
    tcount = 0

    def new_table(m, ix):
        nonlocal tcount
        name = "%s%d" % (prefix, tcount)
        tcount += 1
        c.execute('CREATE TABLE "%s"(id INTEGER PRIMARY KEY, v TEXT, '
                  'n INTEGER)' % name)
        m[name] = {}
        ix[name] = set()
        return name

    for i in range(a.txns):
        if i == a.vacuum_at:
            for attempt in range(BUSY_RETRIES):
                try:
                    c.execute("VACUUM")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    busy += 1
                    time.sleep(0.05 * (attempt + 1))
            else:
                raise RuntimeError("VACUUM: database stayed locked")
            vacuums += 1
        # The transaction is built on copies, kept only on commit.
        state = rng.getstate()
        for attempt in range(BUSY_RETRIES):
            rng.setstate(state)
            m = {t: {k: list(v) for k, v in rows.items()}
                 for t, rows in model.items()}
            ix = {t: set(s) for t, s in indexes.items()}
            nid = dict(next_id)
            try:
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO events(worker, seq, note) "
                          "VALUES(?, ?, ?)", (a.worker, i,
                                              payload(rng, 64)))
                if not m:
                    new_table(m, ix)
                for _ in range(rng.randint(1, 5)):
                    t = rng.choice(sorted(m))
                    op = rng.random()
                    if op < 0.45:
                        for _ in range(rng.randint(1, 8)):
                            rid = nid.get(t, 1)
                            nid[t] = rid + 1
                            v, n = payload(rng, a.page_size), rng.randint(
                                -1000, 1000)
                            c.execute('INSERT INTO "%s"(id, v, n) VALUES'
                                      '(?, ?, ?)' % t, (rid, v, n))
                            m[t][rid] = [v, n]
                    elif op < 0.65 and m[t]:
                        for rid in rng.sample(sorted(m[t]),
                                              min(len(m[t]), 5)):
                            k = rng.randint(1, 9)
                            c.execute('UPDATE "%s" SET n = n + ? WHERE id = ?'
                                      % t, (k, rid))
                            m[t][rid][1] += k
                    elif op < 0.80 and m[t]:
                        for rid in rng.sample(sorted(m[t]),
                                              min(len(m[t]), 3)):
                            c.execute('DELETE FROM "%s" WHERE id = ?' % t,
                                      (rid,))
                            del m[t][rid]
                    elif op < 0.87:
                        if len(m) < 3:
                            new_table(m, ix)
                        elif len(m) > 1:
                            c.execute('DROP TABLE "%s"' % t)
                            del m[t]
                            del ix[t]
                    elif op < 0.95:
                        if ix[t]:
                            name = ix[t].pop()
                            c.execute('DROP INDEX "%s"' % name)
                        else:
                            name = "%s_ix%d" % (t, i)
                            c.execute('CREATE INDEX "%s" ON "%s"(n, v)'
                                      % (name, t))
                            ix[t].add(name)
                    else:
                        t2 = rng.choice(sorted(m))
                        c.execute('UPDATE "%s" SET v = v || ? WHERE id IN '
                                  '(SELECT id FROM "%s" ORDER BY id LIMIT 2)'
                                  % (t2, t2), ("x",))
                        for rid in sorted(m[t2])[:2]:
                            m[t2][rid][0] += "x"
                if rng.random() < 0.1:
                    c.execute("ROLLBACK")
                    rollbacks += 1
                    # Names taken inside a rolled-back transaction may be
                    # taken again; only ids are kept monotonic.
                    next_id = nid
                else:
                    c.execute("COMMIT")
                    commits += 1
                    model, indexes, next_id = m, ix, nid
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                busy += 1
                if c.in_transaction:
                    c.execute("ROLLBACK")
                time.sleep(0.01 * (attempt + 1))
        else:
            raise RuntimeError("transaction %d: database stayed locked" % i)
    c.close()
    out = {"worker": a.worker, "commits": commits, "rollbacks": rollbacks,
           "vacuums": vacuums, "busy": busy,
           "model": {t: {str(k): v for k, v in rows.items()}
                     for t, rows in model.items()},
           "indexes": {t: sorted(s) for t, s in indexes.items()}}
    sys.stdout.write(json.dumps(out) + "\n")


def read(a):
    deadline = time.monotonic() + a.seconds
    reads = 0
    last = -1
    problems = []
    c = sqlite3.connect(a.db, timeout=60.0, isolation_level=None)
    while time.monotonic() < deadline and len(problems) < 5:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        try:
            n = c.execute("SELECT count(*) FROM events").fetchone()[0]
            if n < last:
                problems.append("events went from %d to %d" % (last, n))
            last = n
            if reads % 5 == 0:
                r = c.execute("PRAGMA quick_check").fetchall()
                if r != [("ok",)]:
                    problems.append("quick_check: %r" % (r[:5],))
            reads += 1
            # Read while the writers write, without starving them of the
            # two cores.
            time.sleep(0.001)
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                problems.append("read: %s" % e)
    c.close()
    sys.stdout.write(json.dumps({"reads": reads, "last": last,
                                 "problems": problems}) + "\n")


def crash_write(a):
    """Commits one row per transaction (and keeps `total` equal to the
    sum of the ids, so a torn transaction shows; now and then a bigger
    transaction, and a VACUUM that shrinks the file); after each COMMIT
    returns, appends "<id> <-pos TXID>" to the ack file, flushed and
    fsynced. Runs until an error (the daemon killed under it) or
    --seconds; exits 3 on an error, printing it."""
    c = sqlite3.connect(a.db, timeout=10.0, isolation_level=None)
    c.execute("PRAGMA journal_mode=%s" % a.journal_mode)
    c.execute("PRAGMA synchronous=FULL")
    c.execute("CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, "
              "v BLOB)")
    c.execute("CREATE TABLE IF NOT EXISTS total(k INTEGER PRIMARY KEY, "
              "s INTEGER)")
    c.execute("CREATE TABLE IF NOT EXISTS junk(v BLOB)")
    c.execute("INSERT OR IGNORE INTO total VALUES(1, 0)")
    nxt = (c.execute("SELECT max(id) FROM rows").fetchone()[0] or 0) + 1
    rng = random.Random("%s/%d" % (a.seed, nxt))
    deadline = time.monotonic() + a.seconds
    ack = open(a.ack_file, "a")
    try:
        while time.monotonic() < deadline:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO rows VALUES(?, randomblob(?))",
                      (nxt, rng.choice((10, 100, 1000, 5000))))
            c.execute("UPDATE total SET s = s + ? WHERE k = 1", (nxt,))
            if nxt % 31 == 0:
                # A bigger transaction: many pages, a longer journal.
                c.execute("UPDATE rows SET v = randomblob(length(v)) "
                          "WHERE id % 7 = ?", (nxt % 7,))
                c.execute("INSERT INTO junk(v) VALUES(randomblob(200000))")
            c.execute("COMMIT")
            if nxt % 97 == 0:
                # Frees pages, then rewrites and shrinks the file
                # (SQLite truncates it at the end of the commit).
                c.execute("DELETE FROM junk")
                c.execute("VACUUM")
            with open(a.db + "-pos") as f:
                txid = int(f.read().split("/")[0], 16)
            ack.write("%d %d\n" % (nxt, txid))
            ack.flush()
            os.fsync(ack.fileno())
            nxt += 1
    except (sqlite3.Error, OSError) as e:
        sys.stdout.write("error after id %d: %s\n" % (nxt - 1, e))
        sys.exit(3)
    finally:
        ack.close()


# Audit architecture and system call numbers: ftruncate(2), and the call
# glibc's unlink(3) makes (aarch64 has no unlink(2)).
SYSCALLS = {"x86_64": (0xC000003E, {"ftruncate": 77, "unlink": 87}),
            "aarch64": (0xC00000B7, {"ftruncate": 46, "unlink": 35})}


def die_at(call="ftruncate"):
    """Installs a seccomp filter that kills this process at its next
    call: ftruncate(2) is the moment between SQLite's commit (journal
    deleted, truncated or zeroed) and its cutting the database file
    short; unlink, in DELETE mode, the moment before the commit, when the
    database file holds the transaction and its journal is still hot."""
    import ctypes
    import platform
    import struct
    m = platform.machine()
    if m not in SYSCALLS:
        raise RuntimeError("no %s system call number for %s" % (call, m))
    audit, nr = SYSCALLS[m][0], SYSCALLS[m][1][call]
    ld, jeq, ret = 0x20, 0x15, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    insns = [(ld, 0, 0, 4), (jeq, 1, 0, audit), (ret, 0, 0, allow),
             (ld, 0, 0, 0), (jeq, 0, 1, nr), (ret, 0, 0, kill),
             (ret, 0, 0, allow)]
    buf = ctypes.create_string_buffer(b"".join(
        struct.pack("HBBI", *i) for i in insns))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = Prog(len(insns), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:          # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # SECCOMP filter
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def vacuum_die(a):
    """VACUUM (to --vacuum-page-size if given; in WAL mode then a
    checkpoint), the process killed by the kernel (as by SIGSYS) at
    SQLite's first ftruncate, or unlink with --die-at unlink. Prints
    "survived" and exits 0 if there was none."""
    c = sqlite3.connect(a.db, timeout=10.0, isolation_level=None)
    c.execute("PRAGMA journal_mode=%s" % a.journal_mode)
    c.execute("PRAGMA wal_autocheckpoint=0")
    if a.vacuum_page_size:
        c.execute("PRAGMA page_size=%d" % a.vacuum_page_size)
    if a.die_at == "unlink":
        # VACUUM's temporary database in memory: its file would be the
        # first unlink (SQLite removes a temporary file once opened).
        c.execute("PRAGMA temp_store=MEMORY")
    die_at(a.die_at)
    c.execute("VACUUM")
    if a.journal_mode.upper() == "WAL":
        c.execute("PRAGMA wal_checkpoint(FULL)")
    sys.stdout.write("survived\n")
    c.close()
    sys.exit(0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["write", "read", "crash-write",
                                   "vacuum-die"])
    p.add_argument("--db", required=True)
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--seed", default="1")
    p.add_argument("--txns", type=int, default=100)
    p.add_argument("--journal-mode", default="")
    p.add_argument("--exclusive", action="store_true")
    p.add_argument("--vacuum-at", type=int, default=-1)
    p.add_argument("--page-size", type=int, default=4096)
    p.add_argument("--die-at", default="ftruncate",
                   choices=("ftruncate", "unlink"))
    p.add_argument("--vacuum-page-size", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--stop-file", default="")
    p.add_argument("--ack-file", default="")
    a = p.parse_args()
    {"write": write, "read": read, "crash-write": crash_write,
     "vacuum-die": vacuum_die}[a.cmd](a)


if __name__ == "__main__":
    main()
