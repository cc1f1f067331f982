"""Databases that cross the 1 GiB lock page (suite slow).

SQLite never writes the page that holds byte 0x40000000 (page 16385 at a
64 KiB page size); an LTX file must not carry it. Through the mount, with
page_size 65536:
  - DELETE mode: ~1.1 GiB of rows in transactions of 50 MiB (mostly
    zeroblob, with random rows so the pages next to the lock page differ);
  - WAL mode: ~1.1 GiB of randomblob rows, checkpointed as it goes.
Then on each: rows updated on both sides of the lock page; the tail of
the table deleted and a VACUUM, so the file shrinks back below 1 GiB
across the lock page; integrity_check, a clean stop, `ltxfs verify`, and
a restart that keeps -pos and the rows.
"""

import os
import time

import ltxfs_harness as h

PS = 65536
LOCK_PGNO = 0x40000000 // PS + 1
ROW = 1 << 20           # 16 overflow pages a row
ROWS_PER_TXN = 50
TXNS = 22               # 1100 MiB


def grow(path, mode):
    c = h.connect(path)
    c.execute("PRAGMA page_size=%d" % PS)
    c.execute("PRAGMA journal_mode=%s" % mode)
    c.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
    for t in range(TXNS):
        c.execute("BEGIN IMMEDIATE")
        for r in range(ROWS_PER_TXN):
            if mode == "WAL" or r % 5 == 0:
                c.execute("INSERT INTO b(v) VALUES(randomblob(?))", (ROW,))
            else:
                c.execute("INSERT INTO b(v) VALUES(zeroblob(?))", (ROW,))
        c.execute("COMMIT")
    pages = h.one(c, "PRAGMA page_count")
    c.close()
    return pages


def run(n, db, mode):
    path = n.path(db)
    t0 = time.monotonic()
    pages = grow(path, mode)
    t_grow = time.monotonic() - t0
    h.check(pages > LOCK_PGNO + 100, "%s: only %d pages" % (db, pages))
    c = h.connect(path)
    # Rows on both sides of the lock page.
    n_rows = h.one(c, "SELECT count(*) FROM b")
    mid = n_rows * (LOCK_PGNO - 1) // pages
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE b SET v = randomblob(?) WHERE id BETWEEN ? AND ?",
              (ROW, mid - 3, mid + 3))
    c.execute("COMMIT")
    h.integrity_ok(path)
    grown = n.pos(db)
    # Shrink below 1 GiB, across the lock page.
    c.execute("DELETE FROM b WHERE id > ?", (n_rows * 8 // 10,))
    c.execute("VACUUM")
    if mode == "WAL":
        h.check(h.one(c, "PRAGMA wal_checkpoint(TRUNCATE)") == 0,
                "checkpoint busy")
    after = h.one(c, "PRAGMA page_count")
    c.close()
    h.check(after < LOCK_PGNO, "%s: %d pages after the VACUUM" % (db, after))
    h.check(os.stat(path).st_size == after * PS, "%s: %d bytes, %d pages"
            % (db, os.stat(path).st_size, after))
    h.integrity_ok(path)
    print("  %s %-6s: %d pages (lock page %d) in %.1fs, TXID %d; VACUUM "
          "to %d pages, TXID %d" % (db, mode, pages, LOCK_PGNO, t_grow,
                                    grown[0], after, n.pos(db)[0]))


def test():
    dbs = [("lock-delete.db", "DELETE"), ("lock-wal.db", "WAL")]
    with h.Node("lock-page", log_level="info") as n:
        n.start()
        for db, mode in dbs:
            run(n, db, mode)
        pos = {db: n.pos(db) for db, _ in dbs}
        digests = {db: h.content_digest(n.path(db)) for db, _ in dbs}
        n.stop()
        t0 = time.monotonic()
        _, found, out = n.verify()
        print("  verify: %.1fs" % (time.monotonic() - t0))
        for db, _ in dbs:
            h.check(found.get(db) == pos[db], "%s: verify %s, -pos %s\n%s"
                    % (db, found.get(db), pos[db], out))
        t0 = time.monotonic()
        n.start()
        print("  restart after a clean stop: %.2fs" % (time.monotonic() - t0))
        for db, _ in dbs:
            h.check(n.pos(db) == pos[db], "%s: -pos changed across a "
                    "restart" % db)
            h.check(h.content_digest(n.path(db)) == digests[db],
                    "%s: rows changed across a restart" % db)
        n.stop()


if __name__ == "__main__":
    h.main(test)
