"""Runs ltxfs_workload.py writers against a database in a mount and checks
the result against the writers' models. Shared by the integration tests."""

import json
import os
import re
import subprocess
import sys
import time

from ltxfs_harness import Procs, TestFailure, check, connect, one

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "ltxfs_workload.py")


def create_db(path, page_size, journal_mode, exclusive=False):
    """Creates the database with its page size, journal mode and the shared
    `events` table."""
    c = connect(path)
    try:
        c.execute("PRAGMA page_size=%d" % page_size)
        if exclusive:
            c.execute("PRAGMA locking_mode=EXCLUSIVE")
        got = one(c, "PRAGMA journal_mode=%s" % journal_mode)
        check(got.lower() == journal_mode.lower(),
              "journal_mode=%s gave %s" % (journal_mode, got))
        c.execute("CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY "
                  "KEY, worker INTEGER, seq INTEGER, note TEXT)")
        check(one(c, "PRAGMA page_size") == page_size,
              "page_size is %s, wanted %d" % (one(c, "PRAGMA page_size"),
                                              page_size))
    finally:
        c.close()


def run_writers(path, page_size, journal_mode, seed, workers, txns,
                exclusive=False, vacuum=True, timeout=600, worker_base=0,
                readers=0, reader_seconds=0):
    """Runs `workers` writer processes (concurrently, or one after another
    with exclusive) and optional readers; returns the writers' results."""
    def argv(w):
        a = [sys.executable, WORKLOAD, "write", "--db", path, "--worker",
             str(w), "--seed", str(seed), "--txns", str(txns),
             "--journal-mode", journal_mode, "--page-size", str(page_size)]
        if exclusive:
            a.append("--exclusive")
        if vacuum:
            a += ["--vacuum-at", str(txns // 2 + w)]
        return a

    results = []
    deadline = time.monotonic() + timeout
    stop_file = os.path.join(os.path.dirname(os.path.dirname(path)),
                             "stop-readers-" + os.path.basename(path))
    if os.path.exists(stop_file):
        os.unlink(stop_file)
    with Procs() as procs:
        rd = [procs.spawn([sys.executable, WORKLOAD, "read", "--db", path,
                           "--seconds", str(reader_seconds),
                           "--stop-file", stop_file],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) for _ in range(readers)]
        ws = range(worker_base, worker_base + workers)
        if exclusive:
            batches = [[w] for w in ws]
        else:
            batches = [list(ws)]
        for batch in batches:
            ps = [(w, procs.spawn(argv(w), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
                  for w in batch]
            for w, p in ps:
                left = max(1.0, deadline - time.monotonic())
                try:
                    out, err = p.communicate(timeout=left)
                except subprocess.TimeoutExpired:
                    raise TestFailure("writer %d still running after %ds"
                                      % (w, timeout))
                check(p.returncode == 0, "writer %d exited %d:\n%s"
                      % (w, p.returncode, err[-3000:]))
                results.append(json.loads(out.strip().splitlines()[-1]))
        if readers:
            with open(stop_file, "w"):
                pass
        for p in rd:
            left = max(1.0, deadline - time.monotonic())
            out, err = p.communicate(timeout=left + reader_seconds)
            check(p.returncode == 0, "reader exited %d:\n%s"
                  % (p.returncode, err[-3000:]))
            r = json.loads(out.strip().splitlines()[-1])
            check(not r["problems"], "reader: %s" % r["problems"])
            check(r["reads"] > 0, "reader made no reads")
            results.append(dict(r, reader=True))
    return results


def check_models(path, results):
    """The database holds exactly what each writer's model says."""
    writers = [r for r in results if not r.get("reader")]
    c = connect(path)
    try:
        tables = {r[0] for r in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='table'")}
        idx = {r[0] for r in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='index'")}
        for r in writers:
            w = r["worker"]
            mine = {t for t in tables if re.fullmatch(r"w%d_t\d+" % w, t)}
            check(mine == set(r["model"]), "worker %d: tables %s, model %s"
                  % (w, sorted(mine), sorted(r["model"])))
            for t, rows in r["model"].items():
                got = {str(i): [v, n] for i, v, n in c.execute(
                    'SELECT id, v, n FROM "%s"' % t)}
                check(got == rows, "worker %d table %s: %d rows, model %d; "
                      "first differing id %s" % (
                          w, t, len(got), len(rows),
                          next((k for k in sorted(set(got) | set(rows))
                                if got.get(k) != rows.get(k)), None)))
                want_ix = set(r["indexes"].get(t, []))
                have_ix = {i for i in idx if i.startswith(t + "_ix")}
                check(have_ix == want_ix, "worker %d table %s: indexes %s, "
                      "model %s" % (w, t, sorted(have_ix), sorted(want_ix)))
            n = one(c, "SELECT count(*) FROM events WHERE worker = ?", (w,))
            check(n == r["commits"], "worker %d: %d events, %d commits"
                  % (w, n, r["commits"]))
    finally:
        c.close()
