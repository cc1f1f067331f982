/*
 * Capture: one committed transaction becomes one LTX record in the log,
 * and the database's position and checksum advance in O(pages changed).
 *
 * The database checksum is the XOR of page checksums (ltx/checksum.h). For
 * each page the transaction wrote, the page's previous checksum is XORed
 * out (from db->cksums; an unknown entry is read from the database file,
 * which holds the committed content of every page not known otherwise, see
 * fs_db_cksum_get) and the new one XORed in; pages cut off by a shrinking
 * commit are XORed out. TXID 1 is a snapshot (every page), and so is any
 * transaction that changes the page size.
 *
 * A record must replay: onto its pre-apply position, its pages must give
 * its post-apply checksum, as a replica (fs/db_apply.c) and the log's
 * replay (fs/logbase.c) compute it. An incremental record XORs out the
 * old checksums of its pages, so it is only made when this capture's base
 * is the log's last record: the same page count and page size (the log
 * itself refuses a record that does not follow its last position). A new
 * page size is recorded whole (every page 1..commit, its checksum
 * from its pages alone), as a replay starts afresh then; a base in memory
 * that is not the log's is refused (-EIO, logged), nothing appended. A
 * full record reads the pages the transaction did not write from the
 * database file at its own page size, zeros past the file's end, as
 * SQLite reads them.
 *
 * Callers hold capture_mu (recovery: nothing else runs yet) and then
 * publish the new position with fs_db_publish_locked.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "db_i.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"

static int grow_cksums(fs_db *db, uint32_t pgno)
{
	uint32_t n;
	uint64_t *p;

	if (pgno < db->ncksums)
		return 0;
	n = db->ncksums ? db->ncksums : 1024;
	while (n <= pgno)
		n = n > UINT32_MAX / 2 ? UINT32_MAX : n * 2;
	p = realloc(db->cksums, (size_t)n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + db->ncksums, 0, (size_t)(n - db->ncksums) * sizeof(*p));
	db->cksums = p;
	db->ncksums = n;
	return 0;
}

int fs_db_cksum_set(fs_db *db, uint32_t pgno, uint64_t sum)
{
	int rc = grow_cksums(db, pgno);

	if (rc == 0)
		db->cksums[pgno] = sum;
	return rc;
}

/* The committed checksum of pgno. Unknown entries are read from the
 * database file: a page is unknown only when it has not been written since
 * this process started and is not in the WAL, so the file holds it. */
int fs_db_cksum_get(fs_db *db, uint32_t pgno, uint64_t *out)
{
	uint8_t *buf;
	int rc;

	if (pgno < db->ncksums && db->cksums[pgno]) {
		*out = db->cksums[pgno];
		return 0;
	}
	buf = malloc(db->page_size);
	if (!buf)
		return -ENOMEM;
	rc = lib_io_pread_full(db->fds[FS_KIND_DB], buf, db->page_size,
			       (off_t)(pgno - 1) * db->page_size, NULL);
	if (rc == -ENODATA) {
		log_error("db=%s: page %" PRIu32 " is part of the database at "
			  "TXID %016" PRIx64 " but missing from its file",
			  db->name, pgno, db->pos.txid);
		rc = -EIO;
	}
	if (rc == 0) {
		*out = ltx_checksum_page(pgno, buf, db->page_size);
		rc = fs_db_cksum_set(db, pgno, *out);
	}
	free(buf);
	return rc;
}

struct capture {
	fs_db *db;
	const fs_page_src *pages;
	size_t n;
	uint32_t commit;
	uint32_t page_size;
	bool full;               /* every page 1..commit, checksum afresh */
	uint8_t *buf;
	uint64_t gap_from_off;   /* reads at or past this may run off the end */
	uint64_t *staged;        /* new checksum per included page */
	uint32_t *staged_pgno;
	size_t nstaged;
};

/* Adds one page to the record and to the running checksum. */
static int add_page(struct capture *c, ltx_encoder *enc, uint32_t pgno,
		    int fd, uint64_t off, uint64_t *sum, ltx_err *err)
{
	fs_db *db = c->db;
	uint64_t now, old;
	int rc;

	if (fd < 0) {
		memset(c->buf, 0, c->page_size);
		rc = 0;
	} else {
		size_t got = 0;
		rc = lib_io_pread_full(fd, c->buf, c->page_size, (off_t)off,
				       &got);
		if (rc == -ENODATA && off >= c->gap_from_off) {
			/* A new page past the end of the file: zeros. */
			memset(c->buf + got, 0, c->page_size - got);
			rc = 0;
		}
	}
	if (rc < 0)
		return ltx_err_set(err, LTX_ERR_IO, (int64_t)off,
				   "reading page %" PRIu32 " of db %s: %s",
				   pgno, db->name, strerror(-rc));
	now = ltx_checksum_page(pgno, c->buf, c->page_size);
	if (!c->full && pgno <= db->commit) {
		rc = fs_db_cksum_get(db, pgno, &old);
		if (rc < 0)
			return ltx_err_set(err, LTX_ERR_IO, 0, "checksum of "
					   "page %" PRIu32 ": %s", pgno,
					   strerror(-rc));
		*sum = ltx_checksum_xor(*sum, old);
	}
	*sum = ltx_checksum_xor(*sum, now);
	c->staged[c->nstaged] = now;
	c->staged_pgno[c->nstaged++] = pgno;
	return ltx_encoder_add_page(enc, pgno, c->buf, err);
}

static int fill(void *ctx, ltx_encoder *enc, uint64_t *out_post, ltx_err *err)
{
	struct capture *c = ctx;
	fs_db *db = c->db;
	uint32_t lock = ltx_lock_pgno(c->page_size);
	uint64_t sum = c->full ? LTX_CHECKSUM_EMPTY : db->pos.checksum;
	size_t j = 0;
	int rc;

	if (c->full) {
		for (uint32_t p = 1; p <= c->commit; p++) {
			int fd = db->fds[FS_KIND_DB];
			uint64_t off = (uint64_t)(p - 1) * c->page_size;
			while (j < c->n && c->pages[j].pgno < p)
				j++;
			if (p == lock)
				continue;
			if (j < c->n && c->pages[j].pgno == p) {
				fd = c->pages[j].fd;
				off = c->pages[j].off;
			}
			rc = add_page(c, enc, p, fd, off, &sum, err);
			if (rc < 0)
				return rc;
		}
	} else {
		/* Pages a growing commit adds but the transaction did not
		 * write are recorded as they are (the file's content, or
		 * zeros past its end), so every node has the same bytes. */
		uint32_t gap = db->commit + 1;
		for (j = 0; j <= c->n; j++) {
			const fs_page_src *s = j < c->n ? &c->pages[j] : NULL;
			uint32_t upto = s ? s->pgno : c->commit + 1;
			for (; gap < upto && gap <= c->commit; gap++) {
				if (gap == lock)
					continue;
				rc = add_page(c, enc, gap, db->fds[FS_KIND_DB],
					      (uint64_t)(gap - 1) * c->page_size,
					      &sum, err);
				if (rc < 0)
					return rc;
			}
			if (!s)
				break;
			if (s->pgno >= gap)
				gap = s->pgno + 1;
			if (s->pgno > c->commit || s->pgno == lock)
				continue;
			rc = add_page(c, enc, s->pgno, s->fd, s->off, &sum, err);
			if (rc < 0)
				return rc;
		}
		/* Pages cut off by a shrinking commit leave the checksum. */
		for (uint32_t p = c->commit + 1; p <= db->commit; p++) {
			uint64_t old;
			if (p == lock)
				continue;
			rc = fs_db_cksum_get(db, p, &old);
			if (rc < 0)
				return ltx_err_set(err, LTX_ERR_IO, 0,
						   "checksum of page %" PRIu32
						   ": %s", p, strerror(-rc));
			sum = ltx_checksum_xor(sum, old);
		}
	}
	*out_post = sum;
	return 0;
}

void fs_db_publish_locked(fs_db *db)
{
	db->pub_pos = db->pos;
	pthread_cond_broadcast(&db->cond);
}

bool fs_db_rc_full(int rc)
{
	return rc == -ENOSPC || rc == -EDQUOT;
}

void fs_db_full_locked(fs_db *db, bool wal, uint64_t txid, const char *what)
{
	bool was = db->wal_full || db->journal_full;

	db->full_total++;
	db->full_fails++;
	db->full_try_ns = lib_clock_monotonic_ns();
	if (wal && !db->wal_full)
		log_warn("db=%s: capture blocked: disk full: WAL transaction "
			 "TXID %016" PRIx64 " is committed (in the WAL) but "
			 "not in the LTX log yet; until it is, writes, "
			 "checkpoints and WAL restarts fail with ENOSPC (tried "
			 "again every second and at each write)", db->name,
			 txid);
	else if (!wal && !was)
		log_warn("db=%s: capture blocked: disk full: the transaction "
			 "ending now (%s) cannot be recorded as TXID %016"
			 PRIx64 "; the operation that ends it fails with ENOSPC "
			 "(SQLite rolls a journaled transaction back)",
			 db->name, what, txid);
	if (wal)
		db->wal_full = true;
	else
		db->journal_full = true;
}

void fs_db_unfull_locked(fs_db *db, bool wal, const char *how)
{
	bool *flag = wal ? &db->wal_full : &db->journal_full;

	if (!*flag)
		return;
	*flag = false;
	if (db->wal_full || db->journal_full)
		return;
	log_info("db=%s: capture resumed: %s (%" PRIu64 " capture "
		 "attempt(s) refused for a full disk)", db->name, how,
		 db->full_fails);
	db->full_fails = 0;
}

bool fs_db_full_retry_due_locked(fs_db *db)
{
	return (!db->wal_full && !db->journal_full) ||
	       lib_clock_monotonic_ns() - db->full_try_ns >=
		       (int64_t)FS_DB_FULL_RETRY_MS * 1000000;
}

/* Whether the capture must record every page (module comment), or -EIO
 * (logged) when its base in memory is not the log's last record. */
static int must_be_full(fs_db *db, uint32_t page_size, bool *out_full)
{
	fs_log_tail tail = fs_log_get_tail(db->log);

	/* A base that is not the log's last position at all the log
	 * refuses itself (fs_log_append: "does not follow"). */
	if (db->pos.txid && tail.pos.txid == db->pos.txid && tail.commit &&
	    (db->commit != tail.commit || db->page_size != tail.page_size)) {
		log_error("db=%s: refusing to record TXID %016" PRIx64 " (EIO): "
			  "its base in memory (%" PRIu32 " pages of %" PRIu32
			  " bytes) is not the LTX log's last record's (%" PRIu32
			  " pages of %" PRIu32 " bytes), so the record would not "
			  "replay", db->name, db->pos.txid + 1, db->commit,
			  db->page_size, tail.commit, tail.page_size);
		return -EIO;
	}
	/* With no committed page there is nothing to XOR out, whatever
	 * the page size. */
	*out_full = db->pos.txid == 0 || db->capture_full ||
		    (tail.commit && tail.page_size != page_size);
	return 0;
}

int fs_db_capture(fs_db *db, const fs_page_src *pages, size_t n,
		  uint32_t commit, uint32_t page_size, uint64_t wal_off,
		  uint64_t wal_size, uint32_t salt1, uint32_t salt2)
{
	struct capture c = {0};
	ltx_header h = {0};
	ltx_trailer t;
	size_t cap;
	int rc;

	c.db = db;
	c.pages = pages;
	c.n = n;
	c.commit = commit;
	c.page_size = page_size;
	rc = must_be_full(db, page_size, &c.full);
	if (rc < 0)
		return rc;
	if (db->page_size == 0)
		db->page_size = page_size;
	if (c.full)
		cap = n + commit;
	else
		cap = n + (commit > db->commit ? commit - db->commit : 0);
	/* Reads from the database file at or past this offset may run off
	 * its end: zeros there, as SQLite reads. An incremental record's
	 * pages up to the committed size must be in the file. */
	c.gap_from_off = c.full ? 0 : (uint64_t)db->commit * page_size;
	c.buf = malloc(page_size);
	c.staged = malloc((cap + 1) * sizeof(uint64_t));
	c.staged_pgno = malloc((cap + 1) * sizeof(uint32_t));
	if (!c.buf || !c.staged || !c.staged_pgno) {
		rc = -ENOMEM;
		goto out;
	}
	if (db->opts.sync_wait) {
		/* Synchronous replication may take the record back. */
		rc = fs_db_undo_prepare(db, c.full, cap + (db->commit > commit ?
							   db->commit - commit :
							   0));
		if (rc < 0)
			goto out;
	}
	h.flags = db->opts.zstd_level > 0 ? LTX_FLAG_COMPRESS_ZSTD : 0;
	h.page_size = page_size;
	h.commit = commit;
	h.min_txid = h.max_txid = db->pos.txid + 1;
	h.timestamp = lib_clock_wall_ms();
	h.pre_apply_checksum = h.min_txid == 1 ? 0 : db->pos.checksum;
	h.wal_offset = wal_off;
	h.wal_size = wal_size;
	h.wal_salt1 = wal_off ? salt1 : 0;
	h.wal_salt2 = wal_off ? salt2 : 0;
	h.node_id = db->opts.node_id;
	if (!db->zstd_cctx && h.flags)
		db->zstd_cctx = ZSTD_createCCtx();
	rc = fs_log_append_cctx(db->log, &h, db->opts.zstd_level,
				db->zstd_cctx, fill, &c, &t);
	if (rc < 0)
		goto out; /* nothing changed: the capture can be tried again */
	if (c.full && db->cksums) {
		/* A full record replaces every checksum. */
		memset(db->cksums, 0, (size_t)db->ncksums * sizeof(uint64_t));
	}
	for (size_t i = 0; i < c.nstaged; i++) {
		fs_db_undo_note(db, c.staged_pgno[i]);
		rc = fs_db_cksum_set(db, c.staged_pgno[i], c.staged[i]);
		if (rc < 0)
			goto out;
	}
	for (uint32_t p = commit + 1; p < db->ncksums && p <= db->commit;
	     p++) {
		fs_db_undo_note(db, p);
		db->cksums[p] = 0;
	}
	fs_db_undo_keep(db, h.max_txid);
	db->capture_full = false;
	db->pos.txid = h.max_txid;
	db->pos.checksum = t.post_apply_checksum;
	db->commit = commit;
	db->page_size = page_size;
	log_debug("db=%s: TXID %016" PRIx64 " captured: %zu pages, commit %"
		  PRIu32 ", checksum %016" PRIx64, db->name, h.max_txid,
		  c.nstaged, commit, t.post_apply_checksum);
out:
	free(c.buf);
	free(c.staged);
	free(c.staged_pgno);
	return rc;
}

static int fill_none(void *ctx, ltx_encoder *enc, uint64_t *out_post,
		     ltx_err *err)
{
	*out_post = LTX_CHECKSUM_EMPTY;
	return 0;
}

/* Once the deletion is recorded the name starts afresh: a capture that
 * failed before (capture_err) was of the database just deleted, and its
 * WAL transactions that never went into the log go with it. mu held. */
static void forget_failed_capture(fs_db *db)
{
	if (!db->capture_err)
		return;
	log_info("db=%s: deleted; the capture that failed before (%s) was "
		 "of the database just deleted: writes are taken again",
		 db->name, strerror(-db->capture_err));
	fs_db_wal_forget_locked(db);
	db->capture_err = 0;
}

int fs_db_capture_delete(fs_db *db)
{
	ltx_header h = {0};
	ltx_trailer t;
	int rc;

	if (db->pos.txid == 0) {
		forget_failed_capture(db);
		return 0;
	}
	h.flags = db->opts.zstd_level > 0 ? LTX_FLAG_COMPRESS_ZSTD : 0;
	h.page_size = db->page_size ? db->page_size : 4096;
	h.commit = 0;
	h.min_txid = h.max_txid = db->pos.txid + 1;
	h.timestamp = lib_clock_wall_ms();
	h.pre_apply_checksum = db->pos.checksum;
	h.node_id = db->opts.node_id;
	rc = fs_log_append(db->log, &h, db->opts.zstd_level, fill_none, NULL,
			   &t);
	if (rc < 0)
		return rc;
	if (db->cksums)
		memset(db->cksums, 0, (size_t)db->ncksums * sizeof(uint64_t));
	db->pos.txid = h.max_txid;
	db->pos.checksum = LTX_CHECKSUM_EMPTY;
	db->commit = 0;
	log_info("db=%s: deleted at TXID %016" PRIx64, db->name, h.max_txid);
	forget_failed_capture(db);
	return 0;
}

int fs_db_scan_checksum(fs_db *db, uint64_t *out)
{
	ltx_err err = {0};
	uint32_t pages;
	int rc;

	if (db->fds[FS_KIND_DB] < 0 || db->page_size == 0) {
		*out = LTX_CHECKSUM_EMPTY;
		return 0;
	}
	rc = ltx_dbfile_checksum(db->fds[FS_KIND_DB], db->page_size, &pages,
				 out, &err);
	if (rc < 0)
		log_error("db=%s: checksum scan: %s", db->name, err.msg);
	return rc;
}
