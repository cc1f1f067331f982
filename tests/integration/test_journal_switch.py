"""Switching journal modes on a live database: DELETE -> WAL -> TRUNCATE ->
WAL -> PERSIST -> DELETE, with writes in each mode (from a fresh
connection each time, and from the connection that switched), a restart
of the node in the middle, then a clean stop and `ltxfs verify`.

Every committed row is tracked; after each phase the rows and
integrity_check are checked, and at the end each record of the log is
replayed on its own and must be a consistent state.
"""

import ltxfs_harness as h

PHASES = ["DELETE", "WAL", "TRUNCATE", "WAL", "PERSIST", "DELETE"]
ROWS_PER_PHASE = 40


def test():
    db = "switch.db"
    with h.Node("switch") as n:
        n.start()
        path = n.path(db)
        c = h.connect(path)
        c.execute("PRAGMA page_size=4096")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, phase TEXT, "
                  "v BLOB)")
        c.close()
        want = {}
        rid = 0
        for i, mode in enumerate(PHASES):
            c = h.connect(path)
            got = h.one(c, "PRAGMA journal_mode=%s" % mode)
            h.check(got.lower() == mode.lower(), "phase %d: journal_mode="
                    "%s gave %s" % (i, mode, got))
            before = n.pos(db)[0]
            # Writes on the connection that switched ...
            for k in range(ROWS_PER_PHASE // 2):
                rid += 1
                v = bytes([rid % 251]) * (100 + 37 * k)
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO t VALUES(?, ?, ?)", (rid, mode, v))
                if k % 5 == 0:
                    c.execute("UPDATE t SET phase = phase || '+' WHERE "
                              "id = ?", (rid - 1,))
                    if rid - 1 in want:
                        want[rid - 1] = (want[rid - 1][0] + "+",
                                         want[rid - 1][1])
                c.execute("COMMIT")
                want[rid] = (mode, v)
            c.close()
            # ... and from a new one (WAL persists; rollback modes other
            # than DELETE are per connection, so set them again).
            c = h.connect(path)
            if mode != "WAL":
                c.execute("PRAGMA journal_mode=%s" % mode)
            h.check(h.one(c, "PRAGMA journal_mode").lower() == mode.lower(),
                    "phase %d: a new connection is in journal_mode %s"
                    % (i, h.one(c, "PRAGMA journal_mode")))
            for k in range(ROWS_PER_PHASE // 2):
                rid += 1
                v = b"n" * (50 + k)
                c.execute("INSERT INTO t VALUES(?, ?, ?)", (rid, mode, v))
                want[rid] = (mode, v)
            c.execute("DELETE FROM t WHERE id = ?", (rid - 3,))
            del want[rid - 3]
            c.close()
            after = n.pos(db)[0]
            h.check(after >= before + ROWS_PER_PHASE // 2 + 1,
                    "phase %d (%s): TXID only went %d -> %d"
                    % (i, mode, before, after))
            h.integrity_ok(path)
            c = h.connect(path)
            rows = {r[0]: (r[1], r[2]) for r in
                    c.execute("SELECT id, phase, v FROM t")}
            c.close()
            h.check(rows == want, "phase %d (%s): %d rows, expected %d"
                    % (i, mode, len(rows), len(want)))
            print("  phase %d %-8s TXID %d -> %d, %d rows"
                  % (i, mode, before, after, len(rows)))
            if i == 2:
                # A restart in the middle: the position carries over.
                pos = n.pos(db)
                n.stop()
                n.verify(db)
                n.start()
                h.check(n.pos(db) == pos, "-pos changed across a restart: "
                        "%s -> %s" % (pos, n.pos(db)))
        pos = n.pos(db)
        n.stop()
        _, found, _ = n.verify(db)
        h.check(found.get(db) == pos, "verify %s, -pos %s"
                % (found.get(db), pos))

        def step(i, scratch):
            c = h.connect(scratch)
            try:
                qc = [r[0] for r in c.execute("PRAGMA quick_check")]
            finally:
                c.close()
            h.check(qc == ["ok"], "record %d: quick_check %s"
                    % (i + 1, qc[:3]))
        nrec = n.replay_each(db, step)
        h.check(nrec == pos[0], "%d records for TXID %d" % (nrec, pos[0]))


if __name__ == "__main__":
    h.main(test)
