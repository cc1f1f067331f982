/*
 * WAL capture. Frames are checked as SQLite writes them (salts, running
 * checksum); when a commit frame arrives the transaction's pages (the last
 * frame of each page) are queued and the write is answered at once; the
 * FUSE thread that answered then turns the queue into LTX records
 * (fs_db_capture_pending), so no other thread has to be woken. The WAL
 * already holds the committed frames durably, so the commit path does no
 * extra durable I/O (shared/DESIGN.md, principle 2).
 *
 * What must not happen before the queue is drained, and waits for it:
 * a WAL restart (a new header at offset 0), truncation or deletion of the
 * WAL, any write over a queued frame, and any write to the database file
 * (a checkpoint), which would change the pages the capture reads.
 * Whoever waits for the queue captures it itself when nobody else is.
 *
 * A full disk (the log refuses the head with ENOSPC): the head stays
 * queued (wal_full) and its frames stay safe, since everything above
 * fails with ENOSPC instead of waiting, and so does every new WAL write
 * (SQLite: SQLITE_FULL). It is tried again at each such write and by
 * fs_db_capture_retry (the node's 1 s pass), at most every
 * FS_DB_FULL_RETRY_MS; the first success resumes everything.
 *
 * Tracker states (under db->mu):
 *   NO_HEADER  wal_hdr_ok false: nothing valid; a frame written past the
 *              header is refused (EIO, logged): SQLite writes a header
 *              before any frame, so the tracker has lost the WAL, and a
 *              frame it does not check would be a commit left out of the
 *              log (a promoted replica appended to the WAL its apply wrote
 *              and none of its commits was captured)
 *   OPEN       wal_hdr_ok: frames [32, wal_valid) checked; those from
 *              wal_txn_start are the open transaction (db->frames)
 * A replica's WAL is written by fs/walidx.c, not through here; at its
 * promotion fs_db_wal_adopt_locked enters OPEN at the end of its last
 * published transaction, every transaction before it already in the log.
 * A write into the header's 32 bytes is judged by the header the file
 * will then hold (its other bytes read from the file, so a header
 * written in pieces counts, as it does for SQLite): a new valid header
 * enters OPEN with wal_valid = 32, the same header again changes
 * nothing; truncation, deletion or an invalid header returns to
 * NO_HEADER.
 *
 * Removing or truncating the WAL (rm, truncate, cp over it), or writing
 * another header over it, while its committed frames hold pages the
 * database file does not have yet (no checkpoint copied them) is refused
 * with EBUSY: SQLite would lose those transactions, which the log and the
 * replicas keep. SQLite itself does any of these only after a complete
 * checkpoint. The pages the generation's committed frames wrote are kept
 * as a bitmap (wal_pages) for that.
 *
 * A header whose page size is not the database file's is refused before
 * it is written (EINVAL): SQLite never writes one (a database's page
 * size cannot change in WAL mode), so it is another database's WAL, and
 * SQLite would read this file's pages cut at the WAL's page size where
 * the WAL holds page 1, and frames cut to the file's page size (with
 * undefined bytes past a shorter frame) where it does not. Refused, the
 * WAL has no valid header, which SQLite ignores too.
 * docs/STORAGE.md, "Capture".
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_i.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"

static uint64_t frame_size(const fs_db *db)
{
	return FS_WAL_FRAME_HDR_SIZE + (uint64_t)db->wal_hdr.page_size;
}

static int capture_txn(fs_db *db, fs_wal_txn *t);

/* Captures queued transactions until the queue is empty or its head
 * meets a full disk; mu held (it is released around each capture). Only
 * one thread captures at a time. A transaction leaves the queue only
 * once it is in the log (or capture failed for good): the head that met
 * a full disk stays, its frames safe in the WAL, for the next try. */
static void process_queue_locked(fs_db *db)
{
	db->capturing = true;
	while (db->q_head && !db->capture_err) {
		fs_wal_txn *t = db->q_head;
		uint64_t txid = db->pub_pos.txid + 1;
		int rc;
		pthread_mutex_unlock(&db->mu);
		rc = capture_txn(db, t);
		if (rc == 0 && db->opts.on_commit)
			db->opts.on_commit(db->opts.commit_ctx, db,
					   fs_db_pos(db));
		pthread_mutex_lock(&db->mu);
		if (fs_db_rc_full(rc)) {
			fs_db_full_locked(db, true, txid, "WAL");
			break;
		}
		db->q_head = t->next;
		if (!db->q_head)
			db->q_tail = NULL;
		free(t);
		if (rc == 0) {
			fs_db_unfull_locked(db, true, "the WAL transactions "
					    "waiting for space are in the LTX "
					    "log");
		} else if (!db->capture_err) {
			log_error("db=%s: capturing a WAL transaction failed "
				  "(%s); refusing further writes until restart "
				  "or its deletion", db->name, strerror(-rc));
			db->capture_err = rc;
		}
	}
	db->capturing = false;
	pthread_cond_broadcast(&db->cond);
}

int fs_db_drain_locked(fs_db *db)
{
	bool tried = false;

	while (!db->capture_err &&
	       (db->q_head || db->capturing || db->sync_pending)) {
		if (db->capturing || db->sync_pending) {
			pthread_cond_wait(&db->cond, &db->mu);
		} else if (db->wal_full &&
			   (tried || !fs_db_full_retry_due_locked(db))) {
			return -ENOSPC;
		} else {
			tried = true;
			process_queue_locked(db);
		}
	}
	return 0;
}

void fs_db_capture_pending(fs_db *db)
{
	pthread_mutex_lock(&db->mu);
	if (!db->capturing && !db->sync_pending &&
	    fs_db_full_retry_due_locked(db))
		process_queue_locked(db);
	pthread_mutex_unlock(&db->mu);
}

void fs_db_wal_retry(fs_db *db)
{
	pthread_mutex_lock(&db->mu);
	if (db->wal_full && !db->capturing && !db->sync_pending &&
	    fs_db_full_retry_due_locked(db))
		process_queue_locked(db);
	pthread_mutex_unlock(&db->mu);
}

static int push_frame(fs_db *db, uint32_t pgno)
{
	if (db->nframes == db->capframes) {
		size_t cap = db->capframes ? db->capframes * 2 : 64;
		fs_frame *p = realloc(db->frames, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		db->frames = p;
		db->capframes = cap;
	}
	db->frames[db->nframes].pgno = pgno;
	db->frames[db->nframes].s0 = db->wal_s0;
	db->frames[db->nframes].s1 = db->wal_s1;
	db->nframes++;
	return 0;
}

static int cmp_src(const void *a, const void *b)
{
	const fs_page_src *x = a, *y = b;

	if (x->pgno != y->pgno)
		return x->pgno < y->pgno ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Marks pgno as written by a committed frame of this generation. */
static int wal_pages_add(fs_db *db, uint32_t pgno)
{
	size_t byte = pgno / 8;

	if (byte >= db->wal_pages_len) {
		size_t n = db->wal_pages_len ? db->wal_pages_len : 1024;
		uint8_t *p;
		while (n <= byte)
			n *= 2;
		p = realloc(db->wal_pages, n);
		if (!p)
			return -ENOMEM;
		memset(p + db->wal_pages_len, 0, n - db->wal_pages_len);
		db->wal_pages = p;
		db->wal_pages_len = n;
	}
	db->wal_pages[byte] |= (uint8_t)(1u << (pgno % 8));
	if (pgno > db->wal_pages_max)
		db->wal_pages_max = pgno;
	return 0;
}

/* Builds the queued form of the open transaction ending at commit. */
static int make_txn(fs_db *db, uint32_t commit, fs_wal_txn **out)
{
	size_t n = db->nframes, k = 0;
	uint64_t fsz = frame_size(db);
	fs_wal_txn *t = malloc(sizeof(*t) + n * sizeof(fs_page_src));
	uint64_t first = (db->wal_txn_start - FS_WAL_HDR_SIZE) / fsz;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		t->pages[i].pgno = db->frames[i].pgno;
		t->pages[i].fd = db->fds[FS_KIND_WAL];
		t->pages[i].off = fs_wal_frame_offset(db->wal_hdr.page_size,
						      first + i) +
				  FS_WAL_FRAME_HDR_SIZE;
	}
	qsort(t->pages, n, sizeof(fs_page_src), cmp_src);
	/* Keep the last frame of each page. */
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && t->pages[i + 1].pgno == t->pages[i].pgno)
			continue;
		if (wal_pages_add(db, t->pages[i].pgno) < 0) {
			free(t);
			return -ENOMEM;
		}
		t->pages[k++] = t->pages[i];
	}
	t->n = k;
	t->next = NULL;
	t->commit = commit;
	t->page_size = db->wal_hdr.page_size;
	t->wal_off = db->wal_txn_start;
	t->wal_size = db->wal_valid - db->wal_txn_start;
	t->salt1 = db->wal_hdr.salt1;
	t->salt2 = db->wal_hdr.salt2;
	*out = t;
	return 0;
}

static void enqueue(fs_db *db, fs_wal_txn *t)
{
	if (db->q_tail)
		db->q_tail->next = t;
	else
		db->q_head = t;
	db->q_tail = t;
}

/* Checks frames from wal_valid while whole frames are on disk. With
 * enqueue false (recovery), committed transactions are returned through
 * the queue all the same; the caller captures them. */
static int advance(fs_db *db, const uint8_t *wbuf, uint64_t woff, size_t wn)
{
	uint64_t fsz = frame_size(db);
	int rc;

	while (db->wal_hdr_ok && db->wal_valid + fsz <= db->wal_size) {
		uint32_t pgno, commit;
		uint32_t s0 = db->wal_s0, s1 = db->wal_s1;
		const uint8_t *fh = db->frame_buf;
		const uint8_t *pg = db->frame_buf + FS_WAL_FRAME_HDR_SIZE;
		if (wbuf && db->last_hdr_off == db->wal_valid &&
		    woff == db->wal_valid + FS_WAL_FRAME_HDR_SIZE &&
		    wn == db->wal_hdr.page_size) {
			/* SQLite's usual pattern: the frame header, then
			 * the page; both are in hand, no read needed. */
			fh = db->last_hdr;
			pg = wbuf;
		} else {
			rc = lib_io_pread_full(db->fds[FS_KIND_WAL],
					       db->frame_buf, (size_t)fsz,
					       (off_t)db->wal_valid, NULL);
			if (rc < 0)
				return rc;
		}
		if (!fs_wal_frame_check(&db->wal_hdr, fh, pg, &s0, &s1, &pgno,
					&commit))
			return 0; /* not (yet) a valid frame */
		db->wal_s0 = s0;
		db->wal_s1 = s1;
		rc = push_frame(db, pgno);
		if (rc < 0)
			return rc;
		db->wal_valid += fsz;
		if (commit != 0) {
			fs_wal_txn *t;
			rc = make_txn(db, commit, &t);
			if (rc < 0)
				return rc;
			enqueue(db, t);
			if (wbuf && db->opts.sync_wait)
				db->sync_pending = true; /* sync_commit */
			db->nframes = 0;
			db->wal_txn_start = db->wal_valid;
			if (db->holds > 0)
				db->hold_commit_seen = true;
		}
	}
	return 0;
}

static void tracker_reset(fs_db *db)
{
	db->wal_hdr_ok = false;
	db->wal_valid = FS_WAL_HDR_SIZE;
	db->wal_txn_start = FS_WAL_HDR_SIZE;
	db->nframes = 0;
	db->cap_wal_end = 0;
	db->wal_void_from = db->wal_void_to = 0;
	if (db->wal_pages_max)
		memset(db->wal_pages, 0, db->wal_pages_max / 8 + 1);
	db->wal_pages_max = 0;
}

#define CHECK_RUN_BYTES (256 * 1024) /* one read: consecutive pages */

static bool wal_page_set(const fs_db *db, uint32_t p)
{
	return db->wal_pages[p / 8] & (1u << (p % 8));
}

/* Counts the pages from..to (all marked) whose content in the database
 * file is not the committed one (the checksum the last record gave it;
 * an unknown checksum counts as held), read in one pread. As
 * fs_db_wal_check_drop_locked. */
static int count_missing(fs_db *db, uint32_t from, uint32_t to, uint8_t *buf,
			 uint32_t *io_missing, uint32_t *io_first)
{
	size_t got = 0, ps = db->page_size;
	uint32_t lock = ltx_lock_pgno(db->page_size);
	int rc;

	rc = lib_io_pread_full(db->fds[FS_KIND_DB], buf,
			       (size_t)(to - from + 1) * ps,
			       (off_t)(from - 1) * (off_t)ps, &got);
	if (rc < 0 && rc != -ENODATA)
		return rc;
	for (uint32_t p = from; p <= to; p++) {
		size_t at = (size_t)(p - from) * ps;
		uint64_t want = p < db->ncksums ? db->cksums[p] : 0;
		if (p == lock || want == 0)
			continue;
		/* Past the file's end: not there. */
		if (at + ps <= got &&
		    ltx_checksum_page(p, buf + at, ps) == want)
			continue;
		if ((*io_missing)++ == 0)
			*io_first = p;
	}
	return 0;
}

int fs_db_wal_check_drop_locked(fs_db *db, uint64_t new_size,
				const char *what)
{
	uint32_t missing = 0, first = 0, run, last;
	uint8_t *buf;
	int rc = 0;

	/* Committed frames lie before the open transaction's first. */
	if (!db->wal_hdr_ok || new_size >= db->wal_txn_start ||
	    db->wal_pages_max == 0 || db->fds[FS_KIND_DB] < 0 ||
	    db->page_size == 0)
		return 0;
	run = CHECK_RUN_BYTES / db->page_size;
	if (run == 0)
		run = 1;
	buf = malloc((size_t)run * db->page_size);
	if (!buf)
		return -ENOMEM;
	last = db->wal_pages_max < db->commit ? db->wal_pages_max : db->commit;
	for (uint32_t p = 1; p <= last && rc == 0; p++) {
		uint32_t q = p;
		if (!wal_page_set(db, p))
			continue;
		while (q < last && q - p + 1 < run && wal_page_set(db, q + 1))
			q++;
		rc = count_missing(db, p, q, buf, &missing, &first);
		p = q;
	}
	free(buf);
	if (rc < 0) {
		log_error("db=%s: reading the database file to check its WAL: "
			  "%s", db->name, strerror(-rc));
		return rc;
	}
	if (missing == 0)
		return 0;
	log_error("db=%s: refusing to %s %s-wal (EBUSY): its committed "
		  "transactions wrote %" PRIu32 " pages (page %" PRIu32 " the "
		  "first) that the database file does not hold yet (no "
		  "checkpoint copied them); without the WAL SQLite would lose "
		  "them, while the LTX log and the replicas keep them. "
		  "Checkpoint first (PRAGMA wal_checkpoint(TRUNCATE)), or "
		  "remove the database itself", db->name, what, db->name,
		  missing, first);
	return -EBUSY;
}

void fs_db_wal_forget_locked(fs_db *db)
{
	while (db->q_head) {
		fs_wal_txn *t = db->q_head;
		db->q_head = t->next;
		free(t);
	}
	db->q_tail = NULL;
	tracker_reset(db);
}

static bool same_header(const fs_wal_hdr *a, const fs_wal_hdr *b)
{
	return a->big_endian_cksum == b->big_endian_cksum &&
	       a->page_size == b->page_size && a->ckpt_seq == b->ckpt_seq &&
	       a->salt1 == b->salt1 && a->salt2 == b->salt2 &&
	       a->cksum1 == b->cksum1 && a->cksum2 == b->cksum2;
}

/* Whether writing hdr ends the current generation: its frames are no
 * longer SQLite's (another header, or none). */
static bool ends_generation(fs_db *db, const uint8_t *hdr)
{
	fs_wal_hdr h;

	return db->wal_hdr_ok && (fs_wal_hdr_parse(hdr, &h) < 0 ||
				  !same_header(&h, &db->wal_hdr));
}

/* A valid header opens a new WAL generation; the same header again (a
 * tool rewriting it in place) keeps the frames already checked, which a
 * new generation would take for new transactions. */
static int take_header(fs_db *db, const uint8_t *hdr)
{
	fs_wal_hdr h;

	if (fs_wal_hdr_parse(hdr, &h) == 0 && db->wal_hdr_ok &&
	    same_header(&h, &db->wal_hdr))
		return 0;
	tracker_reset(db);
	if (fs_wal_hdr_parse(hdr, &h) < 0)
		return 0;
	if (!db->frame_buf || h.page_size != db->wal_hdr.page_size) {
		uint8_t *p = realloc(db->frame_buf,
				     FS_WAL_FRAME_HDR_SIZE + h.page_size);
		if (!p)
			return -ENOMEM;
		db->frame_buf = p;
	}
	db->wal_hdr = h;
	db->wal_hdr_ok = true;
	db->wal_s0 = h.cksum1;
	db->wal_s1 = h.cksum2;
	return 0;
}

/* The WAL header as it will be once n bytes of buf are written at off
 * (< FS_WAL_HDR_SIZE): the bytes it does not cover are the file's, zeros
 * past its end. mu held. */
static int header_after_write(fs_db *db, const uint8_t *buf, size_t n,
			      off_t off, uint8_t *hdr)
{
	size_t from = (size_t)off, got = 0;
	size_t len = n < FS_WAL_HDR_SIZE - from ? n : FS_WAL_HDR_SIZE - from;
	int rc = 0;

	if (from > 0 || len < FS_WAL_HDR_SIZE)
		rc = lib_io_pread_full(db->fds[FS_KIND_WAL], hdr,
				       FS_WAL_HDR_SIZE, 0, &got);
	if (rc < 0 && rc != -ENODATA) {
		log_error("db=%s: reading the header of %s-wal: %s", db->name,
			  db->name, strerror(-rc));
		return rc;
	}
	if (rc == -ENODATA)
		memset(hdr + got, 0, FS_WAL_HDR_SIZE - got);
	memcpy(hdr + from, buf, len);
	return 0;
}

/* The page size in the database file's header; 0 when it has none (an
 * empty file: SQLite then takes page 1, and its page size, from the
 * WAL). mu held. */
static uint32_t db_file_page_size(fs_db *db)
{
	ltx_err err = {0};
	uint32_t ps = 0;

	if (db->fds[FS_KIND_DB] < 0 ||
	    ltx_dbfile_page_size(db->fds[FS_KIND_DB], &ps, &err) < 0)
		return 0;
	return ps;
}

/* Whether hdr is a valid WAL header whose page size (*out_wps) is not
 * the database file's (*out_dps): module comment. mu held. */
static bool header_page_size_differs(fs_db *db, const uint8_t *hdr,
				     uint32_t *out_wps, uint32_t *out_dps)
{
	fs_wal_hdr h;

	if (fs_wal_hdr_parse(hdr, &h) < 0)
		return false; /* no WAL to SQLite either */
	*out_wps = h.page_size;
	*out_dps = db_file_page_size(db);
	return *out_dps != 0 && *out_dps != h.page_size;
}

#define FS_WAL_PS_WHY "SQLite never writes such a WAL (a database's page " \
	"size cannot change in WAL mode): it is another database's, and " \
	"SQLite would mix its pages with this file's"

/* A write that makes such a header: refused, nothing written. */
static int refuse_header_write(fs_db *db, const uint8_t *hdr)
{
	uint32_t wps = 0, dps = 0;

	if (!header_page_size_differs(db, hdr, &wps, &dps))
		return 0;
	log_error("db=%s: refusing a WAL header with page size %" PRIu32
		  " (EINVAL, nothing written): the database's page size is %"
		  PRIu32 ". " FS_WAL_PS_WHY ". Copy a database with its own "
		  "WAL, or checkpoint it first (PRAGMA "
		  "wal_checkpoint(TRUNCATE)) and copy the database alone",
		  db->name, wps, dps);
	return -EINVAL;
}

/* The running checksum at the open transaction's start: the frame
 * before it, or the header's. */
static void checksum_at_txn_start(fs_db *db)
{
	uint64_t fsz = frame_size(db);
	uint8_t fh[FS_WAL_FRAME_HDR_SIZE];

	if (db->wal_txn_start == FS_WAL_HDR_SIZE) {
		db->wal_s0 = db->wal_hdr.cksum1;
		db->wal_s1 = db->wal_hdr.cksum2;
	} else if (lib_io_pread_full(db->fds[FS_KIND_WAL], fh, sizeof(fh),
				     (off_t)(db->wal_txn_start - fsz),
				     NULL) == 0) {
		db->wal_s0 = get_be32(fh + 16);
		db->wal_s1 = get_be32(fh + 20);
	}
}

/* A write below wal_valid rewrites a frame of the open transaction
 * (SQLite does this when a transaction writes a page twice): re-check
 * from that frame. */
static void rewind_to(fs_db *db, uint64_t off)
{
	uint64_t fsz = frame_size(db);
	size_t idx;

	if (off >= db->wal_valid || off < db->wal_txn_start)
		return;
	idx = (size_t)((off - db->wal_txn_start) / fsz);
	db->wal_valid = db->wal_txn_start + idx * fsz;
	db->nframes = idx;
	if (idx == 0) {
		checksum_at_txn_start(db);
	} else {
		db->wal_s0 = db->frames[idx - 1].s0;
		db->wal_s1 = db->frames[idx - 1].s1;
	}
}

/* A frame written while no header is tracked: module comment. */
static int refuse_untracked(fs_db *db, off_t off)
{
	log_error("db=%s: refusing a write at offset %lld of %s-wal (EIO): "
		  "ltxfs tracks no WAL header for it, so its frames could "
		  "not be checked or captured into the LTX log", db->name,
		  (long long)off, db->name);
	return -EIO;
}

int fs_db_wal_write(fs_db *db, const void *buf, size_t n, off_t off)
{
	uint64_t end = (uint64_t)off + n;
	uint8_t hdr[FS_WAL_HDR_SIZE];
	bool in_hdr = off < FS_WAL_HDR_SIZE && n > 0;
	int rc;

	pthread_mutex_lock(&db->mu);
	rc = fs_db_refuse_ro_locked(db, FS_KIND_WAL);
	if (rc < 0)
		goto out;
	if (db->capture_err) {
		rc = db->capture_err;
		goto out;
	}
	/* The log is full: no new frame until the queue is in it (one
	 * more try first, when due). A transaction under way fails with
	 * SQLITE_FULL; SQLite rolls it back. */
	if (db->wal_full && fs_db_drain_locked(db) < 0) {
		rc = -ENOSPC;
		goto out;
	}
	if (db->holds > 0) {
		fs_db_wait_hold_wal_locked(db, (uint64_t)off);
		rc = fs_db_refuse_ro_locked(db, FS_KIND_WAL);
		if (rc < 0)
			goto out;
	}
	if (!in_hdr && !db->wal_hdr_ok) {
		rc = refuse_untracked(db, off);
		goto out;
	}
	if (db->wal_void_to) {
		if ((uint64_t)off > db->wal_void_from &&
		    (uint64_t)off < db->wal_void_to) {
			/* The rest of the write whose commit was taken back
			 * (the kernel split it): that write failed. */
			rc = -EIO;
			goto out;
		}
		db->wal_void_from = db->wal_void_to = 0;
	}
	if (off < FS_WAL_HDR_SIZE)
		fs_db_wait_snapshot_locked(db, false); /* a WAL restart */
	/* Anything that could touch queued frames waits for the queue. */
	if (((uint64_t)off < db->wal_txn_start || off == 0) &&
	    fs_db_drain_locked(db) < 0) {
		rc = -ENOSPC;
		goto out;
	}
	if (in_hdr) {
		rc = header_after_write(db, buf, n, off, hdr);
		if (rc == 0)
			rc = refuse_header_write(db, hdr);
		if (rc == 0 && ends_generation(db, hdr))
			rc = fs_db_wal_check_drop_locked(db, 0, "write another "
							 "header over");
		if (rc < 0)
			goto out;
	}
	rc = lib_io_pwrite_full(db->fds[FS_KIND_WAL], buf, n, off);
	if (rc < 0)
		goto out;
	if (end > db->wal_size)
		db->wal_size = end;
	if (n == FS_WAL_FRAME_HDR_SIZE) {
		memcpy(db->last_hdr, buf, n);
		db->last_hdr_off = (uint64_t)off;
	} else if ((uint64_t)off <= db->last_hdr_off + FS_WAL_FRAME_HDR_SIZE &&
		   end > db->last_hdr_off) {
		db->last_hdr_off = UINT64_MAX; /* overwritten */
	}
	if (in_hdr) {
		rc = take_header(db, hdr);
		if (rc < 0)
			goto out;
	} else if (db->wal_hdr_ok) {
		rewind_to(db, (uint64_t)off);
	}
	rc = advance(db, buf, (uint64_t)off, n);
out:
	pthread_mutex_unlock(&db->mu);
	return rc;
}

int fs_db_wal_reset(fs_db *db, off_t new_size)
{
	/* Caller holds mu and has drained. */
	db->wal_size = (uint64_t)new_size;
	if ((uint64_t)new_size < db->wal_valid)
		tracker_reset(db);
	return 0;
}

static int capture_txn(fs_db *db, fs_wal_txn *t)
{
	int rc;

	pthread_mutex_lock(&db->capture_mu);
	rc = fs_db_capture(db, t->pages, t->n, t->commit, t->page_size,
			   t->wal_off, t->wal_size, t->salt1, t->salt2);
	if (rc == 0) {
		pthread_mutex_lock(&db->mu);
		db->cap_wal_end = t->wal_off + t->wal_size;
		fs_db_publish_locked(db);
		pthread_mutex_unlock(&db->mu);
	}
	pthread_mutex_unlock(&db->capture_mu);
	return rc;
}

/* Makes a WAL transaction that was not acknowledged invalid (mu held):
 * SQLite got an error for the write of its commit frame and rolls it
 * back, so its next transaction writes where this one began. The commit
 * frame's first 4 page bytes are complemented in the backing file, so
 * neither SQLite's recovery nor ours (a restart) takes it for a commit
 * (an odd change to one word cannot leave the running checksum as it
 * was). The tracker goes back to the transaction's start, and the rest
 * of the write, should the kernel have split it and SQLite write it
 * again, is refused (wal_void_*). The caller drops the -wal's cached
 * pages once the write is answered (fs/mount.c, op_write). */
static int take_back_wal_txn_locked(fs_db *db, const fs_wal_txn *t)
{
	uint64_t fsz = frame_size(db);
	off_t at = (off_t)(t->wal_off + t->wal_size - fsz +
			   FS_WAL_FRAME_HDR_SIZE);
	int fd = db->fds[FS_KIND_WAL];
	uint8_t w[4];
	int rc;

	rc = lib_io_pread_full(fd, w, sizeof(w), at, NULL);
	for (size_t i = 0; rc == 0 && i < sizeof(w); i++)
		w[i] = (uint8_t)~w[i];
	if (rc == 0)
		rc = lib_io_pwrite_full(fd, w, sizeof(w), at);
	if (rc == 0)
		rc = lib_io_fdatasync(fd);
	db->wal_txn_start = t->wal_off;
	db->wal_valid = t->wal_off;
	db->nframes = 0;
	db->last_hdr_off = UINT64_MAX;
	db->wal_void_from = t->wal_off;
	db->wal_void_to = t->wal_off + t->wal_size;
	checksum_at_txn_start(db);
	if (rc < 0)
		log_error("db=%s: invalidating the commit frame of a failed "
			  "WAL transaction at byte %lld: %s", db->name,
			  (long long)at, strerror(-rc));
	return rc;
}

int fs_db_wal_sync_commit(fs_db *db)
{
	fs_wal_txn *t;
	ltx_pos pos = {0};
	int rc, wrc = 0;

	pthread_mutex_lock(&db->mu);
	if (!db->sync_pending) {
		pthread_mutex_unlock(&db->mu);
		return 0;
	}
	while (db->capturing)
		pthread_cond_wait(&db->cond, &db->mu);
	/* The writer holds SQLite's WAL write lock until this returns, so
	 * its transaction is the queue's last. One before it is a full
	 * disk's, which stays queued: this one fails with ENOSPC (below). */
	t = db->q_tail;
	db->capturing = true;
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_lock(&db->capture_mu);
	if (db->q_head != t || db->capture_err)
		rc = db->capture_err ? db->capture_err : -ENOSPC;
	else
		rc = fs_db_capture(db, t->pages, t->n, t->commit,
				   t->page_size, t->wal_off, t->wal_size,
				   t->salt1, t->salt2);
	pos = db->pos;
	pthread_mutex_unlock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	db->sync_log_due = rc == 0 && db->wal_commit_synced;
	db->wal_commit_synced = false;
	pthread_mutex_unlock(&db->mu);
	if (rc == 0)
		wrc = db->opts.sync_wait(db->opts.sync_ctx, db, pos);
	if (rc == 0 && wrc >= 0)
		wrc = fs_db_sync_log_due(db); /* when sync_wait did not */
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	if (rc == 0 && wrc >= 0) {
		db->wal_commit_unsynced = true;
		db->cap_wal_end = t->wal_off + t->wal_size;
		fs_db_undo_forget(db);
		fs_db_publish_locked(db);
		fs_db_unfull_locked(db, true, "a WAL transaction is in the LTX "
				    "log");
	} else {
		if (rc == 0) {
			int urc = fs_db_undo_locked(db);
			log_warn("db=%s: WAL commit TXID %016" PRIx64 " failed "
				 "(EIO): not acknowledged by enough replicas "
				 "(%s)%s", db->name, pos.txid, strerror(-wrc),
				 urc < 0 ? "; taking it back failed: its "
					   "outcome is unknown" : "; taken back");
			rc = -EIO;
		} else if (!fs_db_rc_full(rc)) {
			rc = -EIO;
		}
		(void)take_back_wal_txn_locked(db, t);
	}
	/* t is the queue's only transaction here, or was left behind by a
	 * full disk: drop it either way (its frames are invalid or in). */
	if (db->q_tail == t) {
		fs_wal_txn **pp = &db->q_head;
		while (*pp != t)
			pp = &(*pp)->next;
		*pp = NULL;
		db->q_tail = db->q_head;
		while (db->q_tail && db->q_tail->next)
			db->q_tail = db->q_tail->next;
		free(t);
	}
	db->capturing = false;
	db->sync_pending = false;
	pthread_cond_broadcast(&db->cond);
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
	if (rc == 0 && db->opts.on_commit)
		db->opts.on_commit(db->opts.commit_ctx, db, pos);
	return rc;
}

int fs_db_wal_adopt_locked(fs_db *db, uint32_t max_frames)
{
	uint8_t hdr[FS_WAL_HDR_SIZE];
	struct stat st;
	uint64_t end;
	int rc;

	if (db->q_head)
		return -EBUSY; /* a primary's queue: not a replica's WAL */
	tracker_reset(db);
	if (db->fds[FS_KIND_WAL] < 0)
		return 0;
	if (fstat(db->fds[FS_KIND_WAL], &st) < 0)
		return -errno;
	db->wal_size = (uint64_t)st.st_size;
	if (db->wal_size < FS_WAL_HDR_SIZE)
		return 0;
	rc = lib_io_pread_full(db->fds[FS_KIND_WAL], hdr, sizeof(hdr), 0, NULL);
	if (rc == 0)
		rc = take_header(db, hdr);
	if (rc < 0 || !db->wal_hdr_ok)
		return rc;
	end = FS_WAL_HDR_SIZE + (uint64_t)max_frames * frame_size(db);
	if (db->wal_size > end)
		db->wal_size = end; /* SQLite writes over the rest */
	rc = advance(db, NULL, 0, 0);
	while (db->q_head) {
		fs_wal_txn *t = db->q_head;
		db->q_head = t->next;
		free(t);
	}
	db->q_tail = NULL;
	db->cap_wal_end = db->wal_txn_start;
	return rc;
}

/* Start-up: a WAL whose page size is not the database file's and none of
 * whose transactions is in the log (put there by hand, or left by a
 * daemon that took it) is moved aside to dbs/<name>/wal.refused,
 * replacing an older one, so SQLite does not read it either. */
static int refuse_wal_at_start(fs_db *db, uint32_t wps, uint32_t dps)
{
	char from[PATH_MAX], to[PATH_MAX];
	int rc;

	tracker_reset(db);
	snprintf(from, sizeof(from), "%s/%s", db->dir,
		 fs_kind_backing[FS_KIND_WAL]);
	snprintf(to, sizeof(to), "%s/%s.refused", db->dir,
		 fs_kind_backing[FS_KIND_WAL]);
	rc = lib_io_rename(from, to);
	if (rc < 0) {
		log_error("db=%s: moving its WAL of another page size aside "
			  "(%s -> %s): %s", db->name, from, to, strerror(-rc));
		return rc;
	}
	close(db->fds[FS_KIND_WAL]);
	db->fds[FS_KIND_WAL] = -1;
	db->wal_size = 0;
	log_error("db=%s: its WAL has page size %" PRIu32 " and the database "
		  "%" PRIu32 ": not read, and moved to %s (nothing of it is in "
		  "the LTX log). " FS_WAL_PS_WHY ".", db->name, wps, dps, to);
	return lib_io_fsync_dir(db->dir);
}

/*
 * Start-up: reads the WAL's committed frames. Transactions the log already
 * has (the log tail names the WAL range it was captured from, and salts
 * identify the generation) only refresh page checksums; later ones are
 * captured now, so a commit acknowledged just before a crash is kept.
 */
int fs_db_wal_recover(fs_db *db, bool trusted)
{
	uint8_t hdr[FS_WAL_HDR_SIZE];
	fs_log_tail tail = fs_log_get_tail(db->log);
	struct stat st;
	uint64_t captured_end = 0;
	uint32_t wps = 0, dps = 0;
	int rc;

	tracker_reset(db);
	if (db->fds[FS_KIND_WAL] < 0)
		return 0;
	if (fstat(db->fds[FS_KIND_WAL], &st) < 0)
		return -errno;
	db->wal_size = (uint64_t)st.st_size;
	if (db->wal_size < FS_WAL_HDR_SIZE)
		return 0;
	rc = lib_io_pread_full(db->fds[FS_KIND_WAL], hdr, sizeof(hdr), 0, NULL);
	if (rc < 0)
		return rc;
	rc = take_header(db, hdr);
	if (rc < 0 || !db->wal_hdr_ok)
		return rc;
	if (tail.wal_offset && tail.wal_salt1 == db->wal_hdr.salt1 &&
	    tail.wal_salt2 == db->wal_hdr.salt2)
		captured_end = tail.wal_offset + tail.wal_size;
	if (captured_end == 0 && header_page_size_differs(db, hdr, &wps, &dps))
		return refuse_wal_at_start(db, wps, dps);
	rc = advance(db, NULL, 0, 0);
	if (rc < 0)
		return rc;
	while (db->q_head) {
		fs_wal_txn *t = db->q_head;
		db->q_head = t->next;
		if (!db->q_head)
			db->q_tail = NULL;
		if (t->wal_off + t->wal_size <= captured_end) {
			/* Already in the log: its pages' checksums are the
			 * WAL's, not the database file's. */
			if (db->page_size == 0)
				db->page_size = t->page_size;
			for (size_t i = 0; i < t->n && rc == 0; i++) {
				uint8_t *pg = db->frame_buf +
					      FS_WAL_FRAME_HDR_SIZE;
				if (t->pages[i].pgno > t->commit)
					continue;
				rc = lib_io_pread_full(t->pages[i].fd, pg,
						       t->page_size,
						       (off_t)t->pages[i].off,
						       NULL);
				if (rc == 0)
					rc = fs_db_cksum_set(
						db, t->pages[i].pgno,
						ltx_checksum_page(
							t->pages[i].pgno, pg,
							t->page_size));
			}
			db->cap_wal_end = t->wal_off + t->wal_size;
		} else {
			log_warn("db=%s: capturing WAL transaction at WAL "
				 "offset %" PRIu64 " committed before the "
				 "last stop", db->name, t->wal_off);
			rc = fs_db_capture(db, t->pages, t->n, t->commit,
					   t->page_size, t->wal_off,
					   t->wal_size, t->salt1, t->salt2);
			if (fs_db_rc_full(rc)) {
				/* Served all the same: this one and those
				 * after it wait in the queue for space. */
				t->next = db->q_head;
				db->q_head = t;
				if (!db->q_tail)
					db->q_tail = t;
				fs_db_full_locked(db, true, db->pos.txid + 1,
						  "WAL");
				return 0;
			}
			if (rc == 0)
				db->cap_wal_end = t->wal_off + t->wal_size;
		}
		free(t);
		if (rc < 0)
			break;
	}
	if (rc == 0)
		db->cap_wal_end = db->wal_txn_start;
	(void)trusted;
	return rc;
}
