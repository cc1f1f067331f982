/*
 * ltxfs as SQLite's WAL writer and checkpointer on a replica (walidx.h).
 *
 * Everything below is SQLite 3.40.1's protocol (src/wal.c, os_unix.c) as
 * readers of the ordinary library expect it; nothing is ours but the
 * choice of who writes. WAL file format: fs/wal.h and shared/SQLITE.md.
 *
 * WAL-INDEX (<db>-shm), native byte order, in 32 KiB regions.
 *
 * Region 0 starts with a 136-byte header:
 *   off size field
 *     0   48 index header, copy 1 (readers read it first)
 *    48   48 index header, copy 2 (the writer writes it first)
 *    96    4 nBackfill: frames 1..nBackfill are in the database file
 *   100   20 aReadMark[0..4]: a reader holding READ(i) (i >= 1) shared
 *            reads frames up to its own mxFrame, which is at least
 *            aReadMark[i]; 0xffffffff: unused. READ0 readers read only
 *            the database (they start when nBackfill == mxFrame)
 *   120    8 lock bytes (never read or written)
 *   128    4 nBackfillAttempted: highest frame a checkpoint started on
 *   132    4 unused
 *
 * Index header (48 bytes, twice):
 *   off size field
 *     0    4 iVersion 3007000
 *     4    4 unused (0)
 *     8    4 iChange: +1 per transaction
 *    12    1 isInit: 1
 *    13    1 bigEndCksum: WAL checksums big-endian (0: ours are LE)
 *    14    2 szPage: page size, 1 meaning 65536
 *    16    4 mxFrame: last frame of the last committed transaction
 *    20    4 nPage: database size in pages after it
 *    24    8 aFrameCksum[2]: the WAL's running checksum at mxFrame
 *    32    8 aSalt[2]: the WAL header's salts, as its 8 big-endian bytes
 *    40    8 aCksum[2]: SQLite's WAL checksum over bytes 0..39 taken as
 *            native 32-bit words, starting from 0, 0
 *
 * Hash regions: region r indexes frames iZero+1 .. iZero+n, where
 * region 0 has n = 4062 (its page array starts after the header, at byte
 * 136) and iZero 0, and region r > 0 has n = 4096 and iZero =
 * 4062 + (r-1)*4096:
 *   off          size  field
 *   0 (136 in r0) 4*n  aPgno[k]: page of frame iZero+k+1 (0: none)
 *   16384        16384 aHash[8192], u16: 0 empty, else k+1 for aPgno[k]
 * A page P hashes to slot (P*383) & 8191; collisions probe forward (+1,
 * wrapping). The table is at most half full, so a probe ends at an empty
 * slot. Entries are only added in frame order, so later frames of a page
 * lie further along its probe chain, and a reader ignores slots whose
 * frame exceeds its mxFrame.
 *
 * ACCESS. Readers map -shm through the mount, so the kernel's page cache
 * of that file is the memory they share. We never map it: unmapping a
 * file of our own mount would write its dirty pages back through FUSE to
 * this very process while it holds its memory-map lock, which the FUSE
 * thread that must take the write may need (docs/STORAGE.md, "The
 * daemon's own mappings"). We read it with pread through the mount (the
 * mount opens -shm with keep_cache, never direct_io, so a pread is
 * served from those pages), and we write it in one of two ways:
 *  - shm_store (the daemon, walidx.h): the bytes go to -shm's storage,
 *    then into those page-cache pages in place (FUSE_NOTIFY_STORE), with
 *    no request through the mount. The storage must never end older than
 *    the pages it would refill after an eviction: a page a reader dirtied
 *    may be on its way to the storage carrying bytes older than ours, so
 *    while we own -shm the caller takes only the read marks from writes
 *    through the mount, and fs_walidx_close first waits for the
 *    write-backs in flight (fdatasync through the mount). At open we
 *    write the header and the checkpoint fields we own even when they
 *    stay as they are;
 *  - pwrite through the mount (no shm_store; tests on plain files): the
 *    kernel copies the bytes into the same pages, waits for write-back
 *    in flight, then has them written to the storage. Through FUSE each
 *    pwrite is a round trip to the daemon, which is why the daemon uses
 *    shm_store (docs/BENCHMARKS.md, "WAL apply").
 * Either way one write is one kernel copy into the pages:
 *  - its stores have no order among themselves, but two writes separated
 *    by a full fence reach readers in program order (the second copy
 *    starts after the first call returned);
 *  - the kernel copies an aligned word with one store in practice, not by
 *    contract: its x86-64 and arm64 copy routines move 8-byte-aligned
 *    data in words of 8 bytes or more, or with the CPU's string move (rep
 *    movsb, where the CPU has fast short moves). On the development
 *    machine (AMD EPYC, rep movsb) a 2-byte pwrite was never seen torn by
 *    a reader of the mapping in 1.2e9 reads across 7e5 writes. Readers
 *    act on single words of the index (hash slots, nBackfill) without a
 *    lock, as SQLite's writer stores them atomically; the header copies
 *    they check as a whole (SQLite's writer copies them with memcpy).
 *    Hence W2.
 * The index entries (aPgno and aHash) are written by us alone, so we keep
 * our own copy of each region (read once; readers never change it) and
 * write the changed words from it, rewriting unchanged bytes between them
 * with the values they already hold. The header and the checkpoint record
 * are read from the file each time (readers write the read marks).
 *  W1 Publishing is three steps, each one or more writes, in this order
 *     with a full fence between steps: the transaction's index entries,
 *     header copy 2, header copy 1 (R1, R2).
 *  W2 Every write covers whole 8-byte-aligned words from an 8-byte-aligned
 *     buffer (growing the file, past its end, aside), and no byte another
 *     process may change meanwhile; the read marks, which readers write
 *     under their own lock, are written one 4-byte word at a time (a
 *     reader reads a mark without a lock only to choose one, and checks it
 *     again once it holds the mark's lock, which excludes a writer).
 *  W3 A failed index write changes no published state (it covers frames
 *     beyond mxFrame); a failed header write is undone by publishing the
 *     previous header again (readers meanwhile see two differing copies
 *     and wait: recovery needs WRITE, which we hold).
 *
 * Rules the writer keeps (numbered; the code cites them):
 *  R1 A frame is written to the WAL, and its aPgno/aHash entry written,
 *     before any header counting it is published (W1). The first entry
 *     of a region (k == 0) clears the whole region first: its old entries
 *     all belong to frames no reader uses.
 *  R2 A header is published by writing copy 2, a full barrier, then copy 1;
 *     only while holding WRITE (or DMS exclusively, before anyone can
 *     read). The storage and the invalidate callback are done first.
 *  R3 Frames at or below the published mxFrame are never overwritten,
 *     except after a restart.
 *  R4 Restart (nBackfill 0, aReadMark[1] 0, aReadMark[2..4] unused, then
 *     the header with mxFrame 0, salt-1 + 1, new salt-2, then frame 1
 *     onwards overwrites the WAL) only when nBackfill == mxFrame and
 *     READ1..4 are held exclusively: then every reader holds READ0 and
 *     reads only the database, and a reader starting meanwhile retries
 *     until READ1..4 are free. (SQLite writes the header first; with
 *     READ1..4 held either order is safe, and this one leaves a consistent
 *     state, the old header over a reset record, if the header's write
 *     fails.)
 *  R5 A checkpoint backfills only frames up to mxSafeFrame: for each mark
 *     i in 1..4 below it, READ(i) is taken exclusively for an instant and
 *     the mark raised (1) or cleared (2..4); if a reader holds it, the safe
 *     frame drops to the mark. Database writes happen only while holding
 *     READ0 exclusively (READ0 readers read the database alone), and
 *     nBackfill is raised only after them (and after invalidation). When
 *     mxSafeFrame == mxFrame the database is truncated to nPage pages.
 *  R6 An abandoned transaction's index entries are removed (slots with
 *     k+1 beyond the published mxFrame zeroed, their aPgno cleared); its
 *     frames stay in the WAL beyond mxFrame. If a commit frame was already
 *     written, its header is zeroed so SQLite's recovery cannot take it.
 *
 * LOCKS (fcntl byte ranges; ours are OFD locks, so they belong to this
 * object's open file descriptions and do not mix with the process's
 * classic POSIX locks, nor go away when SQLite in this process closes
 * its descriptors):
 *   -shm  120 WRITE    exclusive for each transaction (begin..commit)
 *         121 CKPT     exclusive for each checkpoint
 *         122 RECOVER  exclusive (with CKPT and READ0..4, as SQLite's
 *                      recovery) while replacing a bad header at open
 *         123 READ0    exclusive while backfilling (R5)
 *     124-127 READ1..4 exclusive for an instant: restart (R4), marks (R5)
 *         128 DMS      shared from open to close; exclusive only while the
 *                      first user initialises -shm
 *   db    0x40000000 PENDING  read-locked for an instant at open
 *         0x40000002 +510 SHARED read-locked from open to close: no SQLite
 *                      connection can then take EXCLUSIVE, so none
 *                      checkpoints or deletes the WAL when it closes
 * Locks are only ever tried (F_OFD_SETLK); a wait is a bounded poll.
 * Order: WRITE before READ1..4 (begin); CKPT before READ1..4 and READ0
 * (checkpoint); at open DMS, then WRITE, then CKPT (then READ1..4) or
 * CKPT..READ4 at once.
 *
 * STATES (one object; calls are serialised by the caller):
 *   IDLE --begin--> TXN --commit/abort--> IDLE
 *   IDLE: no WRITE lock; hdr and backfill equal the published header
 *         and nBackfill (as far as we know: begin and checkpoint re-read
 *         them, since a reader may have run a recovery in between).
 *   TXN:  WRITE held; frames hdr.mx_frame+1 .. txn_last are written and
 *         indexed in our copy of the index (written to -shm at commit,
 *         W1); one more page may be pending in frame[]; txn_rc is the
 *         first error (then only abort or a failing commit remain).
 */
#include "walidx.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "wal.h"

#define IDX_VERSION 3007000u
#define IDX_REGION 32768u
#define IDX_HDR_SIZE 48u
#define IDX_HDR_TOTAL 136u
#define IDX_CKSUM_SPAN 40u
#define HT_NPAGE 4096u
#define HT_NPAGE_ONE (HT_NPAGE - IDX_HDR_TOTAL / 4u)
#define HT_NSLOT (2u * HT_NPAGE)
#define HT_MUL 383u
#define HT_HASH_OFF (4u * HT_NPAGE)

#define CK_OFF 96u /* the checkpoint record */
#define CK_BACKFILL 96u
#define CK_MARK(i) (100u + 4u * (unsigned)(i))
#define CK_ATTEMPTED 128u
#define CK_UNUSED 132u
#define MARK_UNUSED 0xffffffffu
#define NREADER 5

#define LK_WRITE 120
#define LK_CKPT 121
#define LK_RECOVER 122
#define LK_READ(i) (123 + (i))
#define LK_DMS 128

#define DB_PENDING 0x40000000LL
#define DB_SHARED_FIRST (DB_PENDING + 2)
#define DB_SHARED_SIZE 510

_Static_assert(HT_NPAGE_ONE == 4062, "first region holds 4062 frames");
_Static_assert(IDX_REGION == 2u * HT_NSLOT + 4u * HT_NPAGE,
	       "a region is the page array plus the hash table");
_Static_assert(CK_MARK(NREADER) == LK_WRITE, "lock bytes follow the marks");
_Static_assert(CK_UNUSED + 4u == IDX_HDR_TOTAL, "136-byte index header");
_Static_assert(FS_WALIDX_READER_OFF == CK_MARK(1) &&
		       FS_WALIDX_READER_LEN == CK_MARK(NREADER) - CK_MARK(1),
	       "readers own aReadMark[1..4]");
_Static_assert(IDX_HDR_TOTAL % 8u == 0, "the index starts on a word");

#define HOST_BIG_ENDIAN (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)

/* The index header, decoded (native values; salts as their WAL bytes). */
typedef struct idx_hdr {
	uint32_t change;
	uint8_t is_init;
	uint8_t big_end_cksum;
	uint16_t sz_page;
	uint32_t mx_frame;
	uint32_t n_page;
	uint32_t frame_cksum[2];
	uint8_t salt[8];
	uint32_t cksum[2];
} idx_hdr;

#define IDX_WORDS (IDX_REGION / 8u)
/* Changed words closer than this are written in one span. */
#define IDX_GAP_WORDS 32u

/* Our copy of one region's index entries (ACCESS): b is NULL until the
 * region is first used; dirty has a bit per 8-byte word not yet written
 * to -shm, all within words [lo, hi). Region 0's first IDX_HDR_TOTAL
 * bytes are not kept. */
typedef struct idx_region {
	uint8_t *b;
	uint64_t dirty[IDX_WORDS / 64];
	uint32_t lo, hi;
} idx_region;

struct fs_walidx {
	int wal_fd; /* caller's */
	int db_fd;  /* caller's */
	void (*invalidate)(void *ctx, int which, uint64_t off, uint64_t len);
	int (*shm_store)(void *ctx, uint64_t off, const void *buf, size_t n);
	void *ctx;
	char *shm_path; /* for messages */
	int shm_fd;     /* ours: pread (ACCESS), holds the -shm locks */
	int lock_fd;    /* ours: db_path, holds SHARED */
	uint32_t page_size;
	idx_region *region;
	uint32_t nregion;
	idx_hdr hdr;       /* see STATES */
	uint32_t backfill; /* nBackfill as last read or written by us */
	uint32_t ckpt_seq; /* the WAL header's checkpoint sequence */
	/* TXN state */
	bool in_txn;
	int txn_rc;
	uint32_t txn_last; /* last frame written */
	uint32_t txn_cksum[2];
	bool pending;
	uint8_t *frame; /* 24-byte frame header + the pending page */
	uint8_t *buf;   /* one page, scratch */
	bool ready; /* open finished: the header is ours to keep */
	fs_walidx_stats stats;
};

/* --- native-order values --------------------------------------------- */

static uint32_t get_ne32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static void put_ne32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static uint16_t get_ne16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static void put_ne16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

/* --- the -shm file (ACCESS) ------------------------------------------- */

static int shm_read(fs_walidx *w, void *buf, size_t n, uint64_t off)
{
	int rc = lib_io_pread_full(w->shm_fd, buf, n, (off_t)off, NULL);

	if (rc == -ENODATA)
		rc = -EIO;
	if (rc < 0)
		log_error("%s: reading %zu bytes at %" PRIu64 ": %s",
			  w->shm_path, n, off, strerror(-rc));
	return rc;
}

static int shm_write(fs_walidx *w, const void *buf, size_t n, uint64_t off)
{
	int rc;

	if (w->shm_store)
		return w->shm_store(w->ctx, off, buf, n); /* it logs */
	rc = lib_io_pwrite_full(w->shm_fd, buf, n, (off_t)off);
	if (rc < 0)
		log_error("%s: writing %zu bytes at %" PRIu64 ": %s",
			  w->shm_path, n, off, strerror(-rc));
	return rc;
}

/* A 32-bit field of the checkpoint record, as the file has it now (read
 * with the aligned 8-byte word that holds it, W2). */
static int ck_get(fs_walidx *w, uint32_t off, uint32_t *out)
{
	_Alignas(8) uint8_t b[8];
	uint32_t word = off & ~7u;
	int rc = shm_read(w, b, sizeof(b), word);

	if (rc == 0)
		*out = get_ne32(b + (off - word));
	return rc;
}

/* Sets field off of the checkpoint record to v. nBackfill and
 * nBackfillAttempted are written with the other half of their 8-byte word
 * (aReadMark[0], unused: only SQLite's recovery writes those, and it is
 * excluded by the locks we hold then); a read mark alone (W2). */
static int ck_put(fs_walidx *w, uint32_t off, uint32_t v)
{
	_Alignas(8) uint8_t b[8];
	int rc;

	if (off != CK_BACKFILL && off != CK_ATTEMPTED) {
		put_ne32(b, v);
		return shm_write(w, b, 4, off);
	}
	rc = shm_read(w, b, sizeof(b), off);
	if (rc < 0)
		return rc;
	put_ne32(b, v);
	return shm_write(w, b, sizeof(b), off);
}

/* --- locks ------------------------------------------------------------ */

static void ofd_unlock(int fd, off_t start, off_t len)
{
	(void)lib_io_ofd_trylock(fd, F_UNLCK, start, len);
}

static void sleep_us(int64_t us)
{
	struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

/* Tries until timeout_ms have passed (once when timeout_ms <= 0). */
static int ofd_lock_wait(int fd, short type, off_t start, off_t len,
			 int timeout_ms)
{
	int64_t deadline = lib_clock_monotonic_ns() +
			   (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
	int64_t nap = 50;

	for (;;) {
		int rc = lib_io_ofd_trylock(fd, type, start, len);
		int64_t left;
		if (rc != -EBUSY)
			return rc;
		left = (deadline - lib_clock_monotonic_ns()) / 1000;
		if (left <= 0)
			return -EBUSY;
		sleep_us(nap < left ? nap : left);
		if (nap < 10000)
			nap *= 2;
	}
}

/* --- the index header --------------------------------------------------- */

static void hdr_encode(const idx_hdr *h, uint8_t *b)
{
	put_ne32(b, IDX_VERSION);
	put_ne32(b + 4, 0);
	put_ne32(b + 8, h->change);
	b[12] = h->is_init;
	b[13] = h->big_end_cksum;
	put_ne16(b + 14, h->sz_page);
	put_ne32(b + 16, h->mx_frame);
	put_ne32(b + 20, h->n_page);
	put_ne32(b + 24, h->frame_cksum[0]);
	put_ne32(b + 28, h->frame_cksum[1]);
	memcpy(b + 32, h->salt, 8);
	put_ne32(b + 40, h->cksum[0]);
	put_ne32(b + 44, h->cksum[1]);
}

static void hdr_cksum(const uint8_t *b, uint32_t *out)
{
	out[0] = out[1] = 0;
	fs_wal_checksum(HOST_BIG_ENDIAN, b, IDX_CKSUM_SPAN, &out[0], &out[1]);
}

/* Reads the published header, and nBackfill (*out_nb, even when the
 * header is bad): 0, -EAGAIN (the copies differ: a write in progress),
 * -EBADMSG (not initialised, bad checksum or version) or -errno. Both
 * copies come in one read, in no particular order, unlike a reader's
 * (copy 1, a fence, copy 2): only while we hold WRITE or CKPT, when no
 * one else writes the header or nBackfill (SQLite's recovery, the only
 * other writer of a replica's header, takes both first). */
static int hdr_read(fs_walidx *w, idx_hdr *out, uint32_t *out_nb)
{
	uint8_t buf[CK_BACKFILL + 4];
	const uint8_t *a = buf, *b = buf + IDX_HDR_SIZE;
	uint32_t ck[2];
	int rc;

	rc = shm_read(w, buf, sizeof(buf), 0);
	if (rc < 0)
		return rc;
	*out_nb = get_ne32(buf + CK_BACKFILL);
	if (memcmp(a, b, IDX_HDR_SIZE) != 0)
		return -EAGAIN;
	memset(out, 0, sizeof(*out));
	out->change = get_ne32(a + 8);
	out->is_init = a[12];
	out->big_end_cksum = a[13];
	out->sz_page = get_ne16(a + 14);
	out->mx_frame = get_ne32(a + 16);
	out->n_page = get_ne32(a + 20);
	out->frame_cksum[0] = get_ne32(a + 24);
	out->frame_cksum[1] = get_ne32(a + 28);
	memcpy(out->salt, a + 32, 8);
	out->cksum[0] = get_ne32(a + 40);
	out->cksum[1] = get_ne32(a + 44);
	if (!out->is_init || get_ne32(a) != IDX_VERSION)
		return -EBADMSG;
	hdr_cksum(a, ck);
	if (ck[0] != out->cksum[0] || ck[1] != out->cksum[1])
		return -EBADMSG;
	return 0;
}

/* hdr_read, retried while a write is in progress elsewhere. */
static int hdr_read_stable(fs_walidx *w, idx_hdr *out, uint32_t *out_nb)
{
	int rc = -EAGAIN;

	for (int i = 0; i < 100 && rc == -EAGAIN; i++) {
		if (i)
			sleep_us(100);
		rc = hdr_read(w, out, out_nb);
	}
	return rc == -EAGAIN ? -EBADMSG : rc;
}

static bool hdr_same(const idx_hdr *a, const idx_hdr *b)
{
	return a->change == b->change && a->sz_page == b->sz_page &&
	       a->mx_frame == b->mx_frame && a->n_page == b->n_page &&
	       a->frame_cksum[0] == b->frame_cksum[0] &&
	       a->frame_cksum[1] == b->frame_cksum[1] &&
	       memcmp(a->salt, b->salt, 8) == 0 &&
	       a->big_end_cksum == b->big_end_cksum;
}

/* Publishes w->hdr (R2, W1): copy 2, a full fence, copy 1. The fence
 * before copy 2 orders it after the index entries' writes. */
static int hdr_publish(fs_walidx *w)
{
	_Alignas(8) uint8_t b[IDX_HDR_SIZE];
	int rc;

	w->hdr.is_init = 1;
	w->hdr.big_end_cksum = 0;
	hdr_encode(&w->hdr, b);
	hdr_cksum(b, w->hdr.cksum);
	hdr_encode(&w->hdr, b);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	rc = shm_write(w, b, IDX_HDR_SIZE, IDX_HDR_SIZE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (rc == 0)
		rc = shm_write(w, b, IDX_HDR_SIZE, 0);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return rc;
}

/* Publishes w->hdr; if that fails, publishes prev again and keeps it as
 * w->hdr (W3). */
static int hdr_publish_or_undo(fs_walidx *w, const idx_hdr *prev)
{
	int rc = hdr_publish(w);

	if (rc < 0) {
		w->hdr = *prev;
		if (hdr_publish(w) < 0)
			log_error("%s: the wal-index header stays damaged "
				  "until the next transaction writes it again",
				  w->shm_path);
	}
	return rc;
}

static uint16_t sz_page_field(uint32_t ps)
{
	return (uint16_t)((ps & 0xff00u) | (ps >> 16));
}

static void random_bytes(uint8_t *p, size_t n)
{
	ssize_t got = getrandom(p, n, GRND_NONBLOCK);

	if (got != (ssize_t)n) {
		uint64_t x = (uint64_t)lib_clock_monotonic_ns() ^
			     ((uint64_t)getpid() << 32) ^ (uintptr_t)p;
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			p[i] = (uint8_t)x;
		}
	}
}

/* --- regions ------------------------------------------------------------ */

/* Extends -shm from size to need bytes with zeros: every block is
 * allocated now, so a full file system is an error here. */
static int shm_grow(fs_walidx *w, uint64_t size, uint64_t need)
{
	uint8_t *zero = calloc(1, IDX_REGION);
	int rc = zero ? 0 : -ENOMEM;

	while (rc == 0 && size < need) {
		size_t n = need - size < IDX_REGION ? (size_t)(need - size)
						    : IDX_REGION;
		rc = shm_write(w, zero, n, size);
		size += n;
	}
	free(zero);
	return rc;
}

/* Loads our copy of region r at its first use (ACCESS), growing -shm to
 * hold the region first when grow (only while holding WRITE or DMS
 * exclusively, as SQLite does). */
static int region_load(fs_walidx *w, uint32_t r, bool grow)
{
	uint64_t base = (uint64_t)r * IDX_REGION, need = base + IDX_REGION;
	uint32_t skip = r == 0 ? IDX_HDR_TOTAL : 0;
	struct stat st;
	uint8_t *b;
	int rc;

	if (r < w->nregion && w->region[r].b)
		return 0;
	if (r >= w->nregion) {
		uint32_t n = r + 8;
		idx_region *a = realloc(w->region, n * sizeof(*a));
		if (!a)
			return -ENOMEM;
		memset(a + w->nregion, 0, (n - w->nregion) * sizeof(*a));
		w->region = a;
		w->nregion = n;
	}
	if (fstat(w->shm_fd, &st) < 0) {
		rc = -errno;
		log_error("%s: fstat: %s", w->shm_path, strerror(-rc));
		return rc;
	}
	if ((uint64_t)st.st_size < need) {
		if (!grow) {
			log_error("%s: region %" PRIu32 " is past the end of "
				  "the file (%jd bytes)",
				  w->shm_path, r, (intmax_t)st.st_size);
			return -EIO;
		}
		rc = shm_grow(w, (uint64_t)st.st_size, need);
		if (rc < 0)
			return rc;
	}
	b = malloc(IDX_REGION);
	if (!b)
		return -ENOMEM;
	memset(b, 0, skip);
	rc = shm_read(w, b + skip, IDX_REGION - skip, base + skip);
	if (rc < 0) {
		free(b);
		return rc;
	}
	memset(&w->region[r], 0, sizeof(w->region[r]));
	w->region[r].b = b;
	return 0;
}

/* Forgets our copies: another process rewrote the index. */
static void regions_drop(fs_walidx *w)
{
	for (uint32_t r = 0; r < w->nregion; r++) {
		free(w->region[r].b);
		memset(&w->region[r], 0, sizeof(w->region[r]));
	}
}

/* Bytes [off, off+len) of our copy of region r are to be written. */
static void region_dirty(fs_walidx *w, uint32_t r, uint32_t off,
			 uint32_t len)
{
	idx_region *g = &w->region[r];
	uint32_t first = off / 8, end = (off + len + 7) / 8;

	for (uint32_t i = first; i < end; i++)
		g->dirty[i / 64] |= (uint64_t)1 << (i % 64);
	if (g->lo >= g->hi) {
		g->lo = first;
		g->hi = end;
	}
	if (first < g->lo)
		g->lo = first;
	if (end > g->hi)
		g->hi = end;
}

static bool word_dirty(const idx_region *g, uint32_t i)
{
	return (g->dirty[i / 64] >> (i % 64)) & 1;
}

static uint32_t frame_region(uint32_t frame)
{
	return (frame + HT_NPAGE - HT_NPAGE_ONE - 1) / HT_NPAGE;
}

static uint32_t region_zero(uint32_t r)
{
	return r == 0 ? 0 : HT_NPAGE_ONE + (r - 1) * HT_NPAGE;
}

/* Offset of aPgno[k] in region r. */
static uint32_t pgno_off(uint32_t r, uint32_t k)
{
	return (r == 0 ? IDX_HDR_TOTAL : 0) + 4 * k;
}

static uint32_t slot_off(uint32_t key)
{
	return HT_HASH_OFF + 2 * key;
}

static uint32_t hash_slot(uint32_t pgno)
{
	return (pgno * HT_MUL) & (HT_NSLOT - 1);
}

/* Writes the changed words of region r, in spans of whole 8-byte words
 * (W2), changed words closer than IDX_GAP_WORDS in one. */
static int region_flush(fs_walidx *w, uint32_t r)
{
	idx_region *g = &w->region[r];

	for (uint32_t i = g->lo; i < g->hi;) {
		uint32_t start, end;
		int rc;
		if (!word_dirty(g, i)) {
			i++;
			continue;
		}
		start = i;
		end = i + 1;
		for (i = end; i < g->hi && i - end < IDX_GAP_WORDS; i++)
			if (word_dirty(g, i))
				end = i + 1;
		rc = shm_write(w, g->b + 8 * start, 8 * (size_t)(end - start),
			       (uint64_t)r * IDX_REGION + 8 * start);
		if (rc < 0)
			return rc;
		i = end;
	}
	memset(g->dirty, 0, sizeof(g->dirty));
	g->lo = g->hi = 0;
	return 0;
}

/* Writes the index entries changed since the last flush (W1): they count
 * only frames beyond the published mxFrame, so a failure changes nothing
 * readers use. */
static int index_flush(fs_walidx *w)
{
	for (uint32_t r = 0; r < w->nregion; r++) {
		int rc = w->region[r].b ? region_flush(w, r) : 0;
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Removes the entries of frames after last from last's region (R6); later
 * regions are cleared when their first entry is added (R1). */
static void index_truncate(fs_walidx *w, uint32_t last)
{
	uint32_t r, limit, n, end;
	uint8_t *b;

	if (last == 0)
		return;
	r = frame_region(last);
	if (r >= w->nregion || !w->region[r].b)
		return;
	b = w->region[r].b;
	limit = last - region_zero(r);
	for (uint32_t i = 0; i < HT_NSLOT; i++)
		if (get_ne16(b + slot_off(i)) > limit) {
			put_ne16(b + slot_off(i), 0);
			region_dirty(w, r, slot_off(i), 2);
		}
	n = r == 0 ? HT_NPAGE_ONE : HT_NPAGE;
	for (end = n; end > limit && get_ne32(b + pgno_off(r, end - 1)) == 0;
	     end--)
		;
	if (end > limit) {
		memset(b + pgno_off(r, limit), 0, 4 * (size_t)(end - limit));
		region_dirty(w, r, pgno_off(r, limit), 4 * (end - limit));
	}
}

/* Adds frame -> pgno to our copy of the index (R1; written by
 * index_flush). WRITE held. */
static int index_append(fs_walidx *w, uint32_t frame, uint32_t pgno)
{
	uint32_t r = frame_region(frame), idx, key, left;
	uint8_t *b;
	int rc;

	rc = region_load(w, r, true);
	if (rc < 0)
		return rc;
	b = w->region[r].b;
	idx = frame - region_zero(r);
	if (idx == 1) {
		memset(b + pgno_off(r, 0), 0, IDX_REGION - pgno_off(r, 0));
		region_dirty(w, r, pgno_off(r, 0), IDX_REGION - pgno_off(r, 0));
	}
	if (get_ne32(b + pgno_off(r, idx - 1)) != 0)
		index_truncate(w, frame - 1); /* an older abandoned writer */
	left = idx;
	for (key = hash_slot(pgno); get_ne16(b + slot_off(key)) != 0;
	     key = (key + 1) & (HT_NSLOT - 1)) {
		if (left-- == 0) {
			log_error("%s: hash table of region %" PRIu32
				  " is full", w->shm_path, r);
			return -EIO;
		}
	}
	put_ne32(b + pgno_off(r, idx - 1), pgno);
	put_ne16(b + slot_off(key), (uint16_t)idx);
	region_dirty(w, r, pgno_off(r, idx - 1), 4);
	region_dirty(w, r, slot_off(key), 2);
	return 0;
}

/* The last frame <= max holding pgno, or 0 (*out). */
static int index_find(fs_walidx *w, uint32_t pgno, uint32_t max,
		      uint32_t *out)
{
	*out = 0;
	if (max == 0)
		return 0;
	for (int64_t r = frame_region(max); r >= 0; r--) {
		uint32_t zero = region_zero((uint32_t)r), best = 0, key, h;
		uint8_t *b;
		int rc = region_load(w, (uint32_t)r, false);
		if (rc < 0)
			return rc;
		b = w->region[r].b;
		key = hash_slot(pgno);
		for (uint32_t n = 0;
		     n < HT_NSLOT && (h = get_ne16(b + slot_off(key))) != 0;
		     n++, key = (key + 1) & (HT_NSLOT - 1)) {
			uint32_t f = zero + h;
			if (f <= max && f > best &&
			    get_ne32(b + pgno_off((uint32_t)r, h - 1)) == pgno)
				best = f;
		}
		if (best) {
			*out = best;
			return 0;
		}
	}
	return 0;
}

/* --- the checkpoint record (bytes 96..135) ------------------------------- */

/* After a restart or a fresh header: nothing backfilled, mark 1 at 0, the
 * others unused; with unused, bytes 132..135 zeroed too. One write of
 * the record as read (the lock bytes 120..127 keep their content). Only
 * while holding READ1..4 exclusively, or locks that imply it, so no
 * reader writes a mark meanwhile (W2). */
static int ckpt_reset(fs_walidx *w, bool unused)
{
	_Alignas(8) uint8_t b[IDX_HDR_TOTAL - CK_OFF];
	int rc = shm_read(w, b, sizeof(b), CK_OFF);

	if (rc < 0)
		return rc;
	put_ne32(b + (CK_BACKFILL - CK_OFF), 0);
	put_ne32(b + (CK_ATTEMPTED - CK_OFF), 0);
	put_ne32(b + (CK_MARK(0) - CK_OFF), 0);
	put_ne32(b + (CK_MARK(1) - CK_OFF), 0);
	for (int i = 2; i < NREADER; i++)
		put_ne32(b + (CK_MARK(i) - CK_OFF), MARK_UNUSED);
	if (unused)
		put_ne32(b + (CK_UNUSED - CK_OFF), 0);
	return shm_write(w, b, sizeof(b), CK_OFF);
}

/* R4; WRITE and READ1..4 held. published: the header readers see now (it
 * is w->hdr again if this fails, W3). */
static int restart(fs_walidx *w, const idx_hdr *published)
{
	int rc = ckpt_reset(w, false);

	if (rc < 0) {
		w->hdr = *published;
		return rc;
	}
	put_be32(w->hdr.salt, get_be32(w->hdr.salt) + 1);
	random_bytes(w->hdr.salt + 4, 4);
	w->hdr.mx_frame = 0;
	w->hdr.frame_cksum[0] = w->hdr.frame_cksum[1] = 0;
	w->backfill = 0;
	rc = hdr_publish_or_undo(w, published);
	if (rc < 0)
		return rc;
	w->ckpt_seq++;
	w->stats.restarts++;
	return 0;
}

/* A fresh header (mxFrame 0, nPage n_page, new salts), after the
 * checkpoint record is reset. Only while no reader can use -shm (DMS or
 * every lock of SQLite's recovery held exclusively). */
static int hdr_fresh(fs_walidx *w, uint32_t n_page)
{
	int rc = ckpt_reset(w, true);

	if (rc < 0)
		return rc;
	w->backfill = 0;
	memset(&w->hdr, 0, sizeof(w->hdr));
	w->hdr.sz_page = sz_page_field(w->page_size);
	w->hdr.n_page = n_page;
	random_bytes(w->hdr.salt, 8);
	return hdr_publish(w);
}

/* Re-reads the published header into w->hdr, and nBackfill (WRITE or
 * CKPT held): a reader may have recovered meanwhile. have_write: an
 * unreadable header is then replaced by ours. */
static int hdr_refresh(fs_walidx *w, bool have_write)
{
	idx_hdr live;
	uint32_t nb = 0;
	int rc = hdr_read_stable(w, &live, &nb);

	if (rc < 0 && rc != -EBADMSG)
		return rc;
	w->backfill = nb;
	if (rc < 0) {
		if (!have_write) {
			log_warn("%s: the wal-index header is unreadable; "
				 "not checkpointing",
				 w->shm_path);
			return -EAGAIN;
		}
		log_warn("%s: the wal-index header was damaged; writing "
			 "ours again (mxFrame %" PRIu32 ")",
			 w->shm_path, w->hdr.mx_frame);
		return hdr_publish(w);
	}
	if (live.sz_page != w->hdr.sz_page) {
		log_error("%s: another process changed the page size in the "
			  "wal-index header (%u, ours %u)",
			  w->shm_path, live.sz_page, w->hdr.sz_page);
		return -EPROTO;
	}
	if (!hdr_same(&live, &w->hdr)) {
		log_warn("%s: the wal-index header was changed by another "
			 "process (mxFrame %" PRIu32 " -> %" PRIu32
			 "); adopting it",
			 w->shm_path, w->hdr.mx_frame, live.mx_frame);
		w->hdr = live;
		regions_drop(w); /* its index may differ from ours too */
	}
	return 0;
}

/* --- open ------------------------------------------------------------- */

/* SHARED on the database, as SQLite takes it: PENDING read-locked for the
 * moment the SHARED range is read-locked. */
static int lock_db_shared(fs_walidx *w, const char *path)
{
	int64_t deadline = lib_clock_monotonic_ns() +
			   (int64_t)FS_WALIDX_OPEN_TIMEOUT_MS * 1000000;
	int rc;

	for (;;) {
		rc = ofd_lock_wait(w->lock_fd, F_RDLCK, DB_PENDING, 1,
				   FS_WALIDX_OPEN_TIMEOUT_MS);
		if (rc < 0)
			break;
		rc = lib_io_ofd_trylock(w->lock_fd, F_RDLCK, DB_SHARED_FIRST,
					DB_SHARED_SIZE);
		ofd_unlock(w->lock_fd, DB_PENDING, 1);
		if (rc != -EBUSY || lib_clock_monotonic_ns() > deadline)
			break;
		sleep_us(1000);
	}
	if (rc < 0)
		log_error("%s: SHARED lock: %s", path, strerror(-rc));
	return rc;
}

/* DMS: *out_first when we hold it exclusively (nobody else has -shm
 * open), else shared. */
static int lock_dms(fs_walidx *w, bool *out_first)
{
	int64_t deadline = lib_clock_monotonic_ns() +
			   (int64_t)FS_WALIDX_OPEN_TIMEOUT_MS * 1000000;
	int rc;

	for (;;) {
		rc = lib_io_ofd_trylock(w->shm_fd, F_WRLCK, LK_DMS, 1);
		if (rc == 0) {
			*out_first = true;
			return 0;
		}
		if (rc == -EBUSY)
			rc = lib_io_ofd_trylock(w->shm_fd, F_RDLCK, LK_DMS, 1);
		if (rc == 0) {
			*out_first = false;
			return 0;
		}
		/* Someone is initialising it (exclusive) right now. */
		if (rc != -EBUSY || lib_clock_monotonic_ns() > deadline)
			break;
		sleep_us(1000);
	}
	log_error("%s: DMS lock: %s", w->shm_path, strerror(-rc));
	return rc;
}

/* Empties the WAL storage once the published header counts no frame, and
 * still under the lock that published it (WRITE, or DMS exclusively), so
 * that no other writer can have appended frames meanwhile. */
static int wal_empty(fs_walidx *w)
{
	struct stat st;
	int rc;

	if (fstat(w->wal_fd, &st) < 0) {
		rc = -errno;
		log_error("%s: fstat of the WAL: %s", w->shm_path,
			  strerror(-rc));
		return rc;
	}
	if (st.st_size == 0)
		return 0;
	rc = lib_io_ftruncate(w->wal_fd, 0);
	if (rc < 0) {
		log_error("%s: truncating the WAL: %s", w->shm_path,
			  strerror(-rc));
		return rc;
	}
	if (w->invalidate)
		w->invalidate(w->ctx, 1, 0, (uint64_t)st.st_size);
	return 0;
}

/* The first user: -shm is ours to reset. DMS held exclusively. */
static int init_first(fs_walidx *w, uint32_t db_pages)
{
	int rc = lib_io_ftruncate(w->shm_fd, 0);

	if (rc < 0) {
		log_error("%s: truncating: %s", w->shm_path, strerror(-rc));
		return rc;
	}
	rc = region_load(w, 0, true);
	if (rc == 0)
		rc = hdr_fresh(w, db_pages);
	if (rc == 0)
		rc = wal_empty(w);
	if (rc < 0)
		return rc;
	/* downgrade */
	return lib_io_ofd_trylock(w->shm_fd, F_RDLCK, LK_DMS, 1);
}

/* Not the first user: under WRITE, adopt the header, restart it, or
 * replace it when unreadable. */
static int init_adopt(fs_walidx *w, uint32_t db_pages)
{
	idx_hdr live;
	uint32_t nb = 0;
	int rc;

	rc = ofd_lock_wait(w->shm_fd, F_WRLCK, LK_WRITE, 1,
			   FS_WALIDX_OPEN_TIMEOUT_MS);
	if (rc < 0) {
		log_error("%s: WRITE lock: %s", w->shm_path, strerror(-rc));
		return rc;
	}
	rc = region_load(w, 0, true);
	if (rc == 0)
		rc = hdr_read_stable(w, &live, &nb);
	if (rc < 0 && rc != -EBADMSG)
		goto out;
	if (rc == -EBADMSG) {
		/* Every lock SQLite's recovery takes: CKPT, RECOVER and
		 * READ0..4, so that no checkpointer works from the old index
		 * and no reader is inside a snapshot whose frames we are
		 * about to drop (it may have begun before the header was
		 * damaged). */
		rc = ofd_lock_wait(w->shm_fd, F_WRLCK, LK_CKPT,
				   LK_READ(NREADER) - LK_CKPT,
				   FS_WALIDX_OPEN_TIMEOUT_MS);
		if (rc < 0) {
			log_error("%s: CKPT, RECOVER and READ locks for an "
				  "unreadable header: %s",
				  w->shm_path, strerror(-rc));
			goto out;
		}
		rc = hdr_fresh(w, db_pages);
		if (rc == 0)
			rc = wal_empty(w);
		ofd_unlock(w->shm_fd, LK_CKPT, LK_READ(NREADER) - LK_CKPT);
		goto out;
	}
	w->hdr = live;
	w->backfill = nb;
	if (live.mx_frame == 0) {
		/* It counts no frame, so every reader reads the database
		 * alone and nothing needs a restart: our page size and size
		 * go into it. (SQLite's own recovery of an empty WAL leaves
		 * szPage and the salts 0; its first frame, like ours, then
		 * starts the WAL.) A stray nBackfill would make readers skip
		 * frames (they read from nBackfill+1): cleared, with CKPT.
		 * The header and nBackfill are written even when they stay
		 * as they are, so that -shm's storage holds them as stored
		 * (walidx.h, shm_store). */
		rc = ofd_lock_wait(w->shm_fd, F_WRLCK, LK_CKPT, 1,
				   FS_WALIDX_OPEN_TIMEOUT_MS);
		if (rc < 0) {
			log_error("%s: CKPT lock: %s", w->shm_path,
				  strerror(-rc));
			goto out;
		}
		rc = ck_put(w, CK_BACKFILL, 0);
		ofd_unlock(w->shm_fd, LK_CKPT, 1);
		if (rc < 0)
			goto out;
		w->backfill = 0;
		w->hdr.sz_page = sz_page_field(w->page_size);
		w->hdr.n_page = db_pages;
		if (!hdr_same(&live, &w->hdr))
			w->hdr.change++;
		rc = hdr_publish_or_undo(w, &live);
		if (rc == 0)
			rc = wal_empty(w);
		goto out;
	}
	/* It counts frames of a WAL we are about to empty (or pages of
	 * another size): restart it (R4), with CKPT so that no checkpointer
	 * is copying from the old frames. With READ1..4 held no reader uses
	 * a frame; the caller guarantees the database holds them all. */
	rc = ofd_lock_wait(w->shm_fd, F_WRLCK, LK_CKPT, 1,
			   FS_WALIDX_OPEN_TIMEOUT_MS);
	if (rc == 0)
		rc = ofd_lock_wait(w->shm_fd, F_WRLCK, LK_READ(1), 4,
				   FS_WALIDX_OPEN_TIMEOUT_MS);
	if (rc < 0) {
		log_error("%s: readers still use the %" PRIu32 " frames of "
			  "the previous WAL: %s",
			  w->shm_path, live.mx_frame, strerror(-rc));
		ofd_unlock(w->shm_fd, LK_CKPT, 1);
		goto out;
	}
	if (nb != live.mx_frame)
		log_warn("%s: the wal-index counts frames %" PRIu32 "..%" PRIu32
			 " that were never checkpointed; they are dropped",
			 w->shm_path, nb + 1, live.mx_frame);
	w->hdr.sz_page = sz_page_field(w->page_size);
	w->hdr.n_page = db_pages;
	w->hdr.change++;
	rc = restart(w, &live);
	if (rc == 0)
		w->stats.restarts--; /* not a restart of ours */
	ofd_unlock(w->shm_fd, LK_READ(1), 4);
	if (rc == 0)
		rc = wal_empty(w);
	ofd_unlock(w->shm_fd, LK_CKPT, 1);
out:
	ofd_unlock(w->shm_fd, LK_WRITE, 1);
	return rc;
}

int fs_walidx_open(const fs_walidx_files *files, uint32_t page_size,
		   uint32_t db_pages, fs_walidx **out)
{
	fs_walidx *w = NULL;
	struct stat st;
	bool first = false;
	mode_t mode = 0644;
	int rc;

	*out = NULL;
	if (page_size < 512 || page_size > 65536 ||
	    (page_size & (page_size - 1)) || !files->db_path ||
	    !files->shm_path || files->wal_fd < 0 || files->db_fd < 0) {
		log_error("walidx: bad arguments (page size %" PRIu32 ")",
			  page_size);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->shm_fd = w->lock_fd = -1;
	w->wal_fd = files->wal_fd;
	w->db_fd = files->db_fd;
	w->invalidate = files->invalidate;
	w->shm_store = files->shm_store;
	w->ctx = files->ctx;
	w->page_size = page_size;
	w->shm_path = strdup(files->shm_path);
	w->frame = malloc(FS_WAL_FRAME_HDR_SIZE + (size_t)page_size);
	w->buf = malloc(page_size);
	if (!w->shm_path || !w->frame || !w->buf) {
		rc = -ENOMEM;
		goto fail;
	}

	w->lock_fd = open(files->db_path, O_RDONLY | O_CLOEXEC);
	if (w->lock_fd < 0) {
		rc = -errno;
		log_error("%s: %s", files->db_path, strerror(-rc));
		goto fail;
	}
	if (fstat(w->lock_fd, &st) == 0)
		mode = st.st_mode & 0777; /* -shm gets the database's mode */
	rc = lock_db_shared(w, files->db_path);
	if (rc < 0)
		goto fail;

	w->shm_fd = open(files->shm_path, O_RDWR | O_CREAT | O_CLOEXEC, mode);
	if (w->shm_fd < 0) {
		rc = -errno;
		log_error("%s: %s", files->shm_path, strerror(-rc));
		goto fail;
	}
	rc = lock_dms(w, &first);
	if (rc < 0)
		goto fail;
	/* Either way the header then counts no frame, and the WAL storage
	 * is emptied before the lock that guards it is released. */
	rc = first ? init_first(w, db_pages) : init_adopt(w, db_pages);
	if (rc < 0)
		goto fail;
	w->ready = true;
	*out = w;
	return 0;
fail:
	fs_walidx_close(w);
	return rc;
}

/* --- transactions ---------------------------------------------------------- */

static int wal_write_header(fs_walidx *w)
{
	uint8_t b[FS_WAL_HDR_SIZE];
	uint32_t s0 = 0, s1 = 0;
	int rc;

	put_be32(b, FS_WAL_MAGIC_LE);
	put_be32(b + 4, FS_WAL_VERSION);
	put_be32(b + 8, w->page_size);
	put_be32(b + 12, w->ckpt_seq);
	memcpy(b + 16, w->hdr.salt, 8);
	fs_wal_checksum(false, b, 24, &s0, &s1);
	put_be32(b + 24, s0);
	put_be32(b + 28, s1);
	rc = lib_io_pwrite_full(w->wal_fd, b, sizeof(b), 0);
	if (rc < 0) {
		log_error("%s: writing the WAL header: %s", w->shm_path,
			  strerror(-rc));
		return rc;
	}
	w->txn_cksum[0] = s0;
	w->txn_cksum[1] = s1;
	return 0;
}

/* R6: zeroes frame f's header, so that SQLite's recovery never takes the
 * commit frame of a transaction we abandon. */
static void frame_void(fs_walidx *w, uint32_t f)
{
	static const uint8_t zero[FS_WAL_FRAME_HDR_SIZE];
	int rc = lib_io_pwrite_full(w->wal_fd, zero, sizeof(zero),
				    (off_t)fs_wal_frame_offset(w->page_size,
							       f - 1));

	if (rc < 0)
		log_error("%s: could not void the commit frame %" PRIu32
			  " of an abandoned transaction: %s",
			  w->shm_path, f, strerror(-rc));
}

/* Writes the pending page as frame txn_last + 1 and indexes it (R1). A
 * commit frame that is written but cannot be indexed is voided (R6). */
static int frame_write(fs_walidx *w, uint32_t commit)
{
	uint32_t f = w->txn_last + 1, s0, s1;
	uint8_t *fh = w->frame;
	int rc;

	if (f == 1) {
		rc = wal_write_header(w);
		if (rc < 0)
			return rc;
	}
	s0 = w->txn_cksum[0];
	s1 = w->txn_cksum[1];
	put_be32(fh + 4, commit);
	memcpy(fh + 8, w->hdr.salt, 8);
	fs_wal_checksum(false, fh, 8, &s0, &s1);
	fs_wal_checksum(false, fh + FS_WAL_FRAME_HDR_SIZE, w->page_size, &s0,
			&s1);
	put_be32(fh + 16, s0);
	put_be32(fh + 20, s1);
	rc = lib_io_pwrite_full(w->wal_fd, fh,
				FS_WAL_FRAME_HDR_SIZE + (size_t)w->page_size,
				(off_t)fs_wal_frame_offset(w->page_size, f - 1));
	if (rc < 0) {
		log_error("%s: writing WAL frame %" PRIu32 ": %s", w->shm_path,
			  f, strerror(-rc));
		return rc;
	}
	rc = index_append(w, f, get_be32(fh));
	if (rc < 0) {
		if (commit)
			frame_void(w, f);
		return rc;
	}
	w->txn_last = f;
	w->txn_cksum[0] = s0;
	w->txn_cksum[1] = s1;
	w->stats.frames++;
	return 0;
}

int fs_walidx_begin(fs_walidx *w, int timeout_ms)
{
	int rc;

	if (w->in_txn) {
		log_error("%s: begin inside a transaction", w->shm_path);
		return -EINVAL;
	}
	rc = ofd_lock_wait(w->shm_fd, F_WRLCK, LK_WRITE, 1, timeout_ms);
	if (rc < 0) {
		if (rc == -EBUSY)
			log_debug("%s: WRITE lock busy for %d ms", w->shm_path,
				  timeout_ms);
		else
			log_error("%s: WRITE lock: %s", w->shm_path,
				  strerror(-rc));
		return rc;
	}
	rc = hdr_refresh(w, true);
	if (rc == 0 && w->hdr.mx_frame > 0 && w->backfill == w->hdr.mx_frame &&
	    lib_io_ofd_trylock(w->shm_fd, F_WRLCK, LK_READ(1), 4) == 0) {
		idx_hdr published = w->hdr;
		rc = restart(w, &published);
		ofd_unlock(w->shm_fd, LK_READ(1), 4);
	}
	if (rc < 0) {
		ofd_unlock(w->shm_fd, LK_WRITE, 1);
		return rc;
	}
	w->in_txn = true;
	w->txn_rc = 0;
	w->txn_last = w->hdr.mx_frame;
	w->txn_cksum[0] = w->hdr.frame_cksum[0];
	w->txn_cksum[1] = w->hdr.frame_cksum[1];
	w->pending = false;
	return 0;
}

int fs_walidx_page(fs_walidx *w, uint32_t pgno, const void *data)
{
	int rc;

	if (!w->in_txn) {
		log_error("%s: page outside a transaction", w->shm_path);
		return -EINVAL;
	}
	if (w->txn_rc < 0)
		return w->txn_rc;
	if (pgno == 0) {
		log_error("%s: page number 0", w->shm_path);
		w->txn_rc = -EINVAL;
		return w->txn_rc;
	}
	if (w->pending && get_be32(w->frame) != pgno) {
		rc = frame_write(w, 0);
		if (rc < 0) {
			w->txn_rc = rc;
			return rc;
		}
	}
	put_be32(w->frame, pgno);
	memcpy(w->frame + FS_WAL_FRAME_HDR_SIZE, data, w->page_size);
	w->pending = true;
	return 0;
}

/* Page 1 as the published state has it: from its last frame, else the
 * database. */
static int read_page1(fs_walidx *w, uint8_t *out)
{
	uint32_t f;
	size_t got = 0;
	int rc = index_find(w, 1, w->hdr.mx_frame, &f);

	if (rc < 0)
		return rc;
	if (f)
		rc = lib_io_pread_full(
			w->wal_fd, out, w->page_size,
			(off_t)(fs_wal_frame_offset(w->page_size, f - 1) +
				FS_WAL_FRAME_HDR_SIZE),
			&got);
	else
		rc = lib_io_pread_full(w->db_fd, out, w->page_size, 0, &got);
	if (rc < 0)
		log_error("%s: reading page 1 (frame %" PRIu32 "): %s",
			  w->shm_path, f, strerror(-rc));
	return rc;
}

static void txn_end(fs_walidx *w)
{
	w->in_txn = false;
	w->pending = false;
	ofd_unlock(w->shm_fd, LK_WRITE, 1);
}

void fs_walidx_abort(fs_walidx *w)
{
	if (!w || !w->in_txn)
		return;
	if (w->txn_last > w->hdr.mx_frame)
		index_truncate(w, w->hdr.mx_frame);
	w->stats.aborts++;
	txn_end(w);
}

int fs_walidx_commit(fs_walidx *w, uint32_t commit_pages, bool sync)
{
	uint64_t start, end;
	idx_hdr prev;
	int rc;

	if (!w->in_txn) {
		log_error("%s: commit outside a transaction", w->shm_path);
		return -EINVAL;
	}
	rc = w->txn_rc;
	if (rc == 0 && commit_pages == 0) {
		log_error("%s: commit with a database of 0 pages",
			  w->shm_path);
		rc = -EINVAL;
	}
	if (rc < 0)
		goto fail;
	if (!w->pending) {
		if (commit_pages == w->hdr.n_page) {
			txn_end(w); /* nothing changed */
			return 0;
		}
		rc = read_page1(w, w->frame + FS_WAL_FRAME_HDR_SIZE);
		if (rc < 0)
			goto fail;
		put_be32(w->frame, 1);
		w->pending = true;
	}
	rc = frame_write(w, commit_pages);
	if (rc < 0)
		goto fail;
	if (sync) {
		rc = lib_io_fdatasync(w->wal_fd);
		if (rc < 0) {
			log_error("%s: fdatasync of the WAL: %s", w->shm_path,
				  strerror(-rc));
			goto fail_committed;
		}
	}
	start = w->hdr.mx_frame ? fs_wal_frame_offset(w->page_size,
						      w->hdr.mx_frame)
				: 0;
	end = fs_wal_frame_offset(w->page_size, w->txn_last);
	if (w->invalidate)
		w->invalidate(w->ctx, 1, start, end - start);
	rc = index_flush(w);
	if (rc < 0)
		goto fail_committed;
	prev = w->hdr;
	w->hdr.mx_frame = w->txn_last;
	w->hdr.n_page = commit_pages;
	w->hdr.change++;
	w->hdr.frame_cksum[0] = w->txn_cksum[0];
	w->hdr.frame_cksum[1] = w->txn_cksum[1];
	rc = hdr_publish_or_undo(w, &prev);
	if (rc < 0)
		goto fail_committed;
	w->stats.commits++;
	txn_end(w);
	return 0;

fail_committed:
	frame_void(w, w->txn_last);
fail:
	fs_walidx_abort(w);
	return rc;
}

/* --- checkpoint --------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void inval_db(fs_walidx *w, uint64_t off, uint64_t len)
{
	if (w->invalidate && len)
		w->invalidate(w->ctx, 0, off, len);
}

/* Copies the last frame of each page among frames from+1..to (pages up to
 * n_page) into the database. CKPT and READ0 held. */
static int backfill(fs_walidx *w, uint32_t from, uint32_t to,
		    uint32_t n_page)
{
	uint64_t *list, run_off = 0, run_len = 0;
	uint32_t n = 0, ps = w->page_size;
	int rc = 0;

	list = malloc(sizeof(*list) * (size_t)(to - from));
	if (!list)
		return -ENOMEM;
	for (uint32_t f = from + 1; f <= to; f++) {
		uint32_t r = frame_region(f), pgno;
		rc = region_load(w, r, false);
		if (rc < 0)
			goto out;
		pgno = get_ne32(w->region[r].b +
				pgno_off(r, f - region_zero(r) - 1));
		if (pgno == 0 || pgno > n_page)
			continue;
		list[n++] = (uint64_t)pgno << 32 | f;
	}
	qsort(list, n, sizeof(*list), cmp_u64);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t pgno = (uint32_t)(list[i] >> 32);
		uint32_t f = (uint32_t)list[i];
		uint64_t off = (uint64_t)(pgno - 1) * ps;
		if (i + 1 < n && (uint32_t)(list[i + 1] >> 32) == pgno)
			continue; /* a later frame of the same page follows */
		rc = lib_io_pread_full(w->wal_fd, w->buf, ps,
				       (off_t)(fs_wal_frame_offset(ps, f - 1) +
					       FS_WAL_FRAME_HDR_SIZE),
				       NULL);
		if (rc < 0) {
			log_error("%s: reading WAL frame %" PRIu32 ": %s",
				  w->shm_path, f, strerror(-rc));
			goto out;
		}
		rc = lib_io_pwrite_full(w->db_fd, w->buf, ps, (off_t)off);
		if (rc < 0) {
			log_error("%s: checkpoint writing page %" PRIu32
				  ": %s",
				  w->shm_path, pgno, strerror(-rc));
			goto out;
		}
		w->stats.backfilled++;
		if (run_len && run_off + run_len == off) {
			run_len += ps;
		} else {
			inval_db(w, run_off, run_len);
			run_off = off;
			run_len = ps;
		}
	}
out:
	inval_db(w, run_off, run_len);
	free(list);
	return rc;
}

/* The database file to n_page pages (R5, complete checkpoints). */
static int db_set_size(fs_walidx *w, uint32_t n_page)
{
	uint64_t want = (uint64_t)n_page * w->page_size;
	struct stat st;
	int rc;

	if (fstat(w->db_fd, &st) < 0) {
		rc = -errno;
		log_error("%s: fstat of the database: %s", w->shm_path,
			  strerror(-rc));
		return rc;
	}
	if ((uint64_t)st.st_size == want)
		return 0;
	rc = lib_io_ftruncate(w->db_fd, (off_t)want);
	if (rc < 0) {
		log_error("%s: truncating the database to %" PRIu32
			  " pages: %s",
			  w->shm_path, n_page, strerror(-rc));
		return rc;
	}
	if ((uint64_t)st.st_size > want)
		inval_db(w, want, (uint64_t)st.st_size - want);
	else
		inval_db(w, (uint64_t)st.st_size, want - (uint64_t)st.st_size);
	return 0;
}

int fs_walidx_checkpoint(fs_walidx *w, bool sync, bool *out_done)
{
	uint32_t mx, safe, nb = 0;
	int rc;

	*out_done = false;
	if (w->in_txn) {
		log_error("%s: checkpoint inside a transaction", w->shm_path);
		return -EINVAL;
	}
	rc = lib_io_ofd_trylock(w->shm_fd, F_WRLCK, LK_CKPT, 1);
	if (rc == -EBUSY)
		return 0;
	if (rc < 0) {
		log_error("%s: CKPT lock: %s", w->shm_path, strerror(-rc));
		return rc;
	}
	rc = hdr_refresh(w, false);
	if (rc < 0) {
		rc = rc == -EAGAIN ? 0 : rc;
		goto out;
	}
	mx = w->hdr.mx_frame;
	nb = w->backfill;
	if (nb >= mx) {
		*out_done = nb == mx;
		goto out;
	}
	/* R5: the safe frame. */
	safe = mx;
	for (int i = 1; i < NREADER && rc == 0; i++) {
		uint32_t y = 0;
		rc = ck_get(w, CK_MARK(i), &y);
		if (rc < 0 || safe <= y)
			continue;
		if (lib_io_ofd_trylock(w->shm_fd, F_WRLCK, LK_READ(i), 1) ==
		    0) {
			rc = ck_put(w, CK_MARK(i), i == 1 ? safe : MARK_UNUSED);
			ofd_unlock(w->shm_fd, LK_READ(i), 1);
		} else {
			/* Its reader holds it, so no one changes it now: read
			 * it again under that guarantee (W2). */
			rc = ck_get(w, CK_MARK(i), &y);
			if (rc == 0 && y < safe)
				safe = y;
		}
	}
	if (rc < 0 || nb >= safe)
		goto out;
	if (lib_io_ofd_trylock(w->shm_fd, F_WRLCK, LK_READ(0), 1) < 0)
		goto out; /* a reader reads the database alone */
	rc = ck_put(w, CK_ATTEMPTED, safe);
	if (rc == 0 && sync) {
		rc = lib_io_fdatasync(w->wal_fd);
		if (rc < 0)
			log_error("%s: fdatasync of the WAL: %s", w->shm_path,
				  strerror(-rc));
	}
	if (rc == 0)
		rc = backfill(w, nb, safe, w->hdr.n_page);
	if (rc == 0 && safe == mx)
		rc = db_set_size(w, w->hdr.n_page);
	if (rc == 0 && sync) {
		rc = lib_io_fdatasync(w->db_fd);
		if (rc < 0)
			log_error("%s: fdatasync of the database: %s",
				  w->shm_path, strerror(-rc));
	}
	if (rc == 0)
		rc = ck_put(w, CK_BACKFILL, safe);
	if (rc == 0) {
		w->backfill = safe;
		w->stats.checkpoints++;
		if (safe == mx)
			w->stats.checkpoints_done++;
		*out_done = safe == mx;
	}
	ofd_unlock(w->shm_fd, LK_READ(0), 1);
out:
	ofd_unlock(w->shm_fd, LK_CKPT, 1);
	return rc;
}

uint32_t fs_walidx_published(fs_walidx *w)
{
	return w->hdr.mx_frame;
}

uint32_t fs_walidx_pending(fs_walidx *w)
{
	uint32_t mx = w->hdr.mx_frame, nb = w->backfill;

	return mx > nb ? mx - nb : 0;
}

void fs_walidx_get_stats(fs_walidx *w, fs_walidx_stats *out)
{
	*out = w->stats;
}

void fs_walidx_close(fs_walidx *w)
{
	if (!w)
		return;
	fs_walidx_abort(w);
	if (w->ready) {
		bool done;
		(void)fs_walidx_checkpoint(w, true, &done);
	}
	/* Readers' pages of -shm written back after this must be taken
	 * whole again (walidx.h, shm_store): let those already in flight,
	 * which may carry bytes older than ours, land first. */
	if (w->shm_store && w->shm_fd >= 0) {
		int rc = lib_io_fdatasync(w->shm_fd);
		if (rc < 0)
			log_warn("%s: waiting for readers' pages to be written "
				 "back: %s", w->shm_path, strerror(-rc));
	}
	regions_drop(w);
	if (w->shm_fd >= 0)
		close(w->shm_fd); /* releases DMS and any other -shm lock */
	if (w->lock_fd >= 0)
		close(w->lock_fd); /* releases SHARED */
	free(w->region);
	free(w->shm_path);
	free(w->frame);
	free(w->buf);
	free(w);
}
