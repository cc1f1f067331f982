"""A hot journal whose playback does not restore every page (suite fuse).

SQLite does not journal a page it takes from the freelist: its old
content is garbage to SQLite. A transaction interrupted after writing such
a page leaves, once its journal is played back, a database that SQLite
finds consistent but that differs byte for byte from the last committed
state in the LTX log. ltxfs must serve it, recording it as the next
transaction (every page), not refuse it (fs/db_open.c, record_rollback).

The crash is built by hand, deterministically, in the stopped node's data
directory: a hot journal holding page 1's committed content, page 1
changed (the interrupted transaction's header write), a freelist leaf
overwritten (not journaled), no clean-stop marker. Then:
  - the node serves the database; the log says it rolled back and
    recorded the database as the next TXID;
  - -pos is one TXID past the committed one; integrity_check is ok; the
    committed rows are all there;
  - a write works; after a clean stop `ltxfs verify` passes.
"""

import os
import struct

import ltxfs_harness as h
from ltxfs_harness import check

DB = "fl.db"
PS = 4096
NONCE = 0x5A17C0DE


def journal_cksum(page):
    # fs/journal.c record_cksum (SQLite's pager_cksum): the nonce plus
    # every 200th byte, from the end.
    c = NONCE
    i = PS - 200
    while i > 0:
        c = (c + page[i]) & 0xFFFFFFFF
        i -= 200
    return c


def test():
    with h.Node("freelist") as n:
        n.start()
        c = h.connect(n.path(DB))
        c.execute("PRAGMA page_size=%d" % PS)
        c.execute("PRAGMA journal_mode=DELETE")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.execute("BEGIN")
        for i in range(60):
            c.execute("INSERT INTO t VALUES(?, randomblob(3500))", (i,))
        c.execute("COMMIT")
        c.execute("DELETE FROM t WHERE id >= 20")
        kept = h.one(c, "SELECT count(*) FROM t")
        free = h.one(c, "PRAGMA freelist_count")
        c.close()
        check(free >= 2, "only %d free pages" % free)
        txid, _ = n.pos(DB)
        n.stop()

        d = os.path.join(n.data, "dbs", DB)
        dbf = os.path.join(d, "database")
        with open(dbf, "rb") as f:
            data = bytearray(f.read())
        npages = len(data) // PS
        trunk = struct.unpack(">I", data[32:36])[0]
        check(trunk >= 2, "no freelist trunk page (%d)" % trunk)
        t0 = (trunk - 1) * PS
        nleaf = struct.unpack(">I", data[t0 + 4:t0 + 8])[0]
        check(nleaf >= 1, "the freelist trunk lists no leaf")
        leaf = struct.unpack(">I", data[t0 + 8:t0 + 12])[0]
        check(2 <= leaf <= npages, "leaf page %d out of range" % leaf)

        # The hot journal: one segment, page 1's committed content.
        page1 = bytes(data[0:PS])
        hdr = (bytes.fromhex("d9d505f920a163d7") +
               struct.pack(">IIIII", 1, NONCE, npages, 512, PS))
        rec = (struct.pack(">I", 1) + page1 +
               struct.pack(">I", journal_cksum(page1)))
        with open(os.path.join(d, "journal"), "wb") as f:
            f.write(hdr.ljust(512, b"\0") + rec)
            f.flush()
            os.fsync(f.fileno())
        # The interrupted transaction's writes: page 1's change counter,
        # and a reused free page, which SQLite did not journal.
        cc = struct.unpack(">I", data[24:28])[0]
        data[24:28] = struct.pack(">I", (cc + 1) & 0xFFFFFFFF)
        lo = (leaf - 1) * PS
        data[lo:lo + PS] = b"\xab" * PS
        with open(dbf, "r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.unlink(os.path.join(d, "clean"))
        except FileNotFoundError:
            pass

        n.start()
        path = n.path(DB)
        check(os.path.exists(path), "%s is not served after the playback"
              % DB)
        log = n.log_text()
        check("rolled back a hot journal" in log,
              "the hot journal was not played back")
        check("recording all %d pages as TXID %016x" % (npages, txid + 1)
              in log, "the database was not recorded as TXID %d"
              % (txid + 1))
        got, _ = n.pos(DB)
        check(got == txid + 1, "-pos TXID %d, want %d" % (got, txid + 1))
        h.integrity_ok(path)
        c = h.connect(path)
        check(h.one(c, "SELECT count(*) FROM t") == kept,
              "rows changed by the playback")
        c.execute("INSERT INTO t VALUES(1000, 'after')")
        c.close()
        after, _ = n.pos(DB)
        check(after == txid + 2, "-pos TXID %d after a write, want %d"
              % (after, txid + 2))
        n.stop()
        _, found, _ = n.verify(DB)
        check(found.get(DB, (None,))[0] == after,
              "verify found %s, want TXID %d" % (found.get(DB), after))
        print("recovered: TXID %d -> %d (all %d pages), then %d"
              % (txid, txid + 1, npages, after))


if __name__ == "__main__":
    h.main(test)
