/*
 * The db core: backing files, the rollback-journal tracker, start-up
 * recovery and shutdown. WAL capture is in db_wal.c, record building in
 * db_capture.c; the lock order is in db_i.h.
 *
 * Rollback-journal capture. While <name>-journal exists and is not empty,
 * a transaction may be under way: every database page written is added to
 * the dirty set (its committed checksum recorded first if unknown, while
 * the file still holds it). The transaction ends when the journal is
 * deleted (DELETE), truncated to zero (TRUNCATE) or its header's magic is
 * overwritten with zeros (PERSIST). At that moment the dirty pages hold
 * either the new content (commit) or the restored original (rollback,
 * including the playback of a hot journal): pages whose checksum did not
 * change are left out, and when nothing changed nothing is recorded. The
 * record is appended to the log before the journal operation is done, so
 * a crash in between leaves a hot journal and a log that already has the
 * transaction; recovery sees the database checksum equals the log's and
 * completes the commit instead of rolling back.
 *
 * A transaction across attached databases (fs/superjournal.h) commits
 * when SQLite deletes its super-journal, before any child journal is
 * finalised: each database whose journal points to it is recorded then
 * (fs_db_capture_super), and its journal's end later records nothing.
 *
 * A full disk: when the log refuses the record (ENOSPC), the journal
 * operation fails with ENOSPC and is not done, so SQLite rolls the
 * transaction back from the journal at the next access (the commit was
 * never acknowledged). The dirty set is kept, so the rollback's end
 * records whatever it did not restore. docs/STORAGE.md, "A full disk".
 *
 * The dirty set counts in pages of the committed page size: a
 * transaction that changes the page size (VACUUM after PRAGMA page_size)
 * writes pages of either size, and is recorded whole. Writes are checked
 * against the smaller of the committed page size and the one the
 * transaction wrote in the header, or 512 (the smallest) when the
 * database has no committed page; the header is checked at commit.
 *
 * A database write with no journal is refused (journal_mode=OFF and
 * MEMORY cannot be captured; a WAL checkpoint is the exception), except
 * into a database that holds no committed pages yet: a first load
 * (db_load.c: a database copied in, VACUUM INTO), recorded as one
 * snapshot once the file is a complete database. Truncating a database
 * below its committed size is refused outside a journal transaction, and
 * so is opening it with O_TRUNC: copying over a database in place cannot
 * be replicated safely.
 */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_i.h"
#include "journal.h"
#include "superjournal.h"
#include "walidx.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"

const char *const fs_kind_backing[FS_KIND_COUNT] = {
	"database", "journal", "wal", "shm", NULL};
const char *const fs_kind_suffix[FS_KIND_COUNT] = {
	"", "-journal", "-wal", "-shm", "-pos"};

#define CLEAN_MARKER "clean"

static void backing_path(const fs_db *db, enum fs_kind k, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", db->dir, fs_kind_backing[k]);
}

int fs_db_sync_log_due(fs_db *db)
{
	int rc;

	if (!db->sync_log_due)
		return 0;
	db->sync_log_due = false;
	rc = fs_log_sync(db->log);
	if (rc < 0)
		log_error("db=%s: syncing the LTX log of a synchronous commit: "
			  "%s", db->name, strerror(-rc));
	return rc;
}

bool fs_db_sync_on(const fs_db *db)
{
	return db->opts.sync_wait != NULL;
}

const char *fs_db_name(const fs_db *db)
{
	return db->name;
}

ltx_pos fs_db_pos(fs_db *db)
{
	ltx_pos p;

	pthread_mutex_lock(&db->mu);
	p = db->pub_pos;
	pthread_mutex_unlock(&db->mu);
	return p;
}

void fs_db_pos_text(fs_db *db, char *buf)
{
	ltx_pos_format(fs_db_pos(db), buf);
	buf[LTX_POS_STRLEN] = '\n';
	buf[LTX_POS_STRLEN + 1] = '\0';
}

bool fs_db_has(fs_db *db, enum fs_kind kind)
{
	bool has;

	pthread_mutex_lock(&db->mu);
	has = db->fds[kind == FS_KIND_POS ? FS_KIND_DB : kind] >= 0;
	pthread_mutex_unlock(&db->mu);
	return has;
}

int fs_db_stat(fs_db *db, enum fs_kind kind, struct stat *out)
{
	int rc = 0;

	pthread_mutex_lock(&db->mu);
	if (db->fds[kind == FS_KIND_POS ? FS_KIND_DB : kind] < 0)
		rc = -ENOENT;
	else if (fstat(db->fds[kind == FS_KIND_POS ? FS_KIND_DB : kind],
		       out) < 0)
		rc = -errno;
	pthread_mutex_unlock(&db->mu);
	if (rc == 0 && kind == FS_KIND_POS) {
		out->st_mode = S_IFREG | 0444;
		out->st_size = LTX_POS_STRLEN + 1;
		out->st_blocks = 0;
	}
	return rc;
}

static int open_backing(fs_db *db, enum fs_kind k, int flags, mode_t mode)
{
	char path[PATH_MAX];
	int fd;

	backing_path(db, k, path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC | flags, mode);
	if (fd < 0)
		return -errno;
	db->fds[k] = fd;
	return 0;
}

int fs_db_read(fs_db *db, enum fs_kind kind, void *buf, size_t n, off_t off,
	       size_t *out_got)
{
	int fd, rc;

	if (kind == FS_KIND_POS) {
		char text[LTX_POS_STRLEN + 2];
		size_t len = LTX_POS_STRLEN + 1;
		fs_db_pos_text(db, text);
		if ((size_t)off >= len) {
			*out_got = 0;
			return 0;
		}
		*out_got = n < len - (size_t)off ? n : len - (size_t)off;
		memcpy(buf, text + off, *out_got);
		return 0;
	}
	pthread_mutex_lock(&db->mu);
	fd = db->fds[kind];
	pthread_mutex_unlock(&db->mu);
	if (fd < 0)
		return -ENOENT;
	rc = lib_io_pread_full(fd, buf, n, off, out_got);
	return rc == -ENODATA ? 0 : rc;
}

/* --- rollback-journal tracker (mu held) --- */

static int dirty_add(fs_db *db, uint32_t pgno)
{
	size_t byte = pgno / 8;

	if (byte >= db->ndirty_bits) {
		size_t n = db->ndirty_bits ? db->ndirty_bits : 1024;
		uint8_t *p;
		while (n <= byte)
			n *= 2;
		p = realloc(db->dirty_bits, n);
		if (!p)
			return -ENOMEM;
		memset(p + db->ndirty_bits, 0, n - db->ndirty_bits);
		db->dirty_bits = p;
		db->ndirty_bits = n;
	}
	if (db->dirty_bits[byte] & (1u << (pgno % 8)))
		return 0;
	if (db->ndirty == db->capdirty) {
		size_t cap = db->capdirty ? db->capdirty * 2 : 256;
		uint32_t *p = realloc(db->dirty, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		db->dirty = p;
		db->capdirty = cap;
	}
	db->dirty_bits[byte] |= (uint8_t)(1u << (pgno % 8));
	db->dirty[db->ndirty++] = pgno;
	return 0;
}

static void dirty_clear(fs_db *db)
{
	for (size_t i = 0; i < db->ndirty; i++)
		db->dirty_bits[db->dirty[i] / 8] = 0;
	db->ndirty = 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int db_file_pages(fs_db *db, uint32_t ps, uint32_t *out)
{
	struct stat st;

	if (fstat(db->fds[FS_KIND_DB], &st) < 0)
		return -errno;
	*out = (uint32_t)((uint64_t)st.st_size / ps);
	return 0;
}

/* The database's size in pages: the header's count (offset 28) when it is
 * valid (offset 92 equals the change counter at 24), else the file's. The
 * file can be longer: SQLite truncates it only after the journal is gone
 * (VACUUM, incremental vacuum), and those pages are not the database's. */
static int db_commit_pages(fs_db *db, uint32_t ps, uint32_t *out)
{
	uint8_t h[100];
	uint32_t file_pages = 0;
	int rc = db_file_pages(db, ps, &file_pages);

	if (rc < 0)
		return rc;
	*out = file_pages;
	if (lib_io_pread_full(db->fds[FS_KIND_DB], h, sizeof(h), 0, NULL) == 0 &&
	    get_be32(h + 92) == get_be32(h + 24) && get_be32(h + 28) != 0 &&
	    get_be32(h + 28) < file_pages)
		*out = get_be32(h + 28);
	return 0;
}

/* The page size of the committed database; 0 while it holds no page
 * (a page size left by a deleted database means nothing). */
static uint32_t committed_ps(const fs_db *db)
{
	return db->commit ? db->page_size : 0;
}

static bool db_is_empty(fs_db *db)
{
	struct stat st;

	return fstat(db->fds[FS_KIND_DB], &st) == 0 && st.st_size == 0;
}

/* Reads the page size from the database file's header. */
static int db_header_page_size(fs_db *db, uint32_t *out)
{
	ltx_err err = {0};

	return ltx_dbfile_page_size(db->fds[FS_KIND_DB], out, &err);
}

/* Forgets the journal transaction's tracker (capture_mu and mu held). */
static void txn_clear(fs_db *db)
{
	dirty_clear(db);
	db->txn_synced = false;
	db->txn_dirty = false;
	db->txn_ps = 0;
}

/* end_txn: the record is in the log and waits for its acknowledgements
 * (synchronous replication; sync_commit). */
#define FS_SYNC_WAIT 1

/*
 * The journal's transaction ended: record it if the database changed.
 * capture_mu and mu held. FS_SYNC_WAIT in synchronous mode.
 */
static int end_txn(fs_db *db, const char *why)
{
	fs_page_src *pages = NULL;
	uint8_t *buf = NULL;
	uint32_t ps, commit;
	size_t n = 0;
	int rc = 0;

	if ((db->ndirty == 0 && !db->txn_dirty) || db->fds[FS_KIND_DB] < 0)
		goto out_clear;
	if (db->commit == 0 && db_is_empty(db)) {
		/* A new database's first transaction rolled back to no
		 * page at all: nothing to record. */
		log_debug("db=%s: %s: still empty (rolled back)", db->name,
			  why);
		fs_db_unfull_locked(db, false, "the transaction that could not "
				    "be recorded was rolled back");
		goto out_clear;
	}
	rc = db_header_page_size(db, &ps);
	if (rc < 0) {
		log_error("db=%s: %s: the database file has no valid header; "
			  "nothing recorded", db->name, why);
		rc = -EIO;
		goto out_clear;
	}
	rc = db_commit_pages(db, ps, &commit);
	if (rc < 0)
		goto out_clear;
	/* qsort's array must not be NULL, even with no element (UBSan) */
	if (db->ndirty > 1)
		qsort(db->dirty, db->ndirty, sizeof(uint32_t), cmp_u32);
	pages = malloc((db->ndirty ? db->ndirty : 1) * sizeof(*pages));
	buf = malloc(ps);
	if (!pages || !buf) {
		rc = -ENOMEM;
		goto out_clear;
	}
	for (size_t i = 0; i < db->ndirty; i++) {
		uint32_t p = db->dirty[i];
		uint64_t off = (uint64_t)(p - 1) * ps;
		if (p > commit || p == ltx_lock_pgno(ps))
			continue;
		if (ps == committed_ps(db) && p <= db->commit) {
			/* Unchanged pages (a rollback restored them) stay
			 * out of the record. */
			uint64_t old = 0, now;
			rc = lib_io_pread_full(db->fds[FS_KIND_DB], buf, ps,
					       (off_t)off, NULL);
			if (rc < 0)
				goto out_clear;
			now = ltx_checksum_page(p, buf, ps);
			if (fs_db_cksum_get(db, p, &old) == 0 && old == now)
				continue;
		}
		pages[n].pgno = p;
		pages[n].fd = db->fds[FS_KIND_DB];
		pages[n].off = off;
		n++;
	}
	if (n == 0 && commit == db->commit && ps == committed_ps(db)) {
		log_debug("db=%s: %s: no page changed (rolled back)", db->name,
			  why);
		fs_db_unfull_locked(db, false, "the transaction that could not "
				    "be recorded was rolled back");
		goto out_clear;
	}
	rc = fs_db_capture(db, pages, n, commit, ps, 0, 0, 0, 0);
	if (rc == 0 && db->opts.sync_wait) {
		/* Synchronous: synced while the replicas work. */
		db->sync_log_due = db->txn_synced;
	} else if (rc == 0 && db->txn_synced) {
		/* SQLite synced the database file for this transaction: the
		 * record is made as durable before its journal goes. */
		rc = fs_log_sync(db->log);
		if (rc < 0)
			log_error("db=%s: syncing the LTX log after TXID %016"
				  PRIx64 ": %s", db->name, db->pos.txid,
				  strerror(-rc));
	}
	if (rc == 0) {
		db->cap_wal_end = 0;
		fs_db_unfull_locked(db, false, "a rollback-journal transaction "
				    "is in the LTX log");
		if (db->opts.sync_wait) {
			/* The caller waits (sync_commit) and publishes; the
			 * tracker stays until the outcome is known. */
			rc = FS_SYNC_WAIT;
			goto out_keep;
		}
		fs_db_publish_locked(db);
	} else if (fs_db_rc_full(rc)) {
		/* The journal operation fails, so SQLite rolls the
		 * transaction back; its pages stay dirty, so whatever the
		 * rollback does not restore (free pages SQLite reuses
		 * without journaling them) is recorded when it ends. */
		fs_db_full_locked(db, false, db->pos.txid + 1, why);
		rc = -ENOSPC;
		goto out_keep;
	}
	if (rc < 0 && !db->capture_err) {
		log_error("db=%s: capturing the transaction failed (%s); "
			  "refusing further writes until restart or its "
			  "deletion", db->name, strerror(-rc));
		db->capture_err = rc;
	}
out_clear:
	txn_clear(db);
out_keep:
	free(pages);
	free(buf);
	return rc;
}


static void notify(fs_db *db, ltx_pos before)
{
	ltx_pos now = fs_db_pos(db);

	if (db->opts.on_commit && now.txid != before.txid)
		db->opts.on_commit(db->opts.commit_ctx, db, now);
}

/* Locks for a database-file operation: drains WAL captures first (a
 * checkpoint must not change pages the capture thread still reads), then
 * capture_mu and mu. Returns the drain's result: -ENOSPC while a WAL
 * transaction waits for space in the log (the locks are taken all the
 * same); then anything that would change the database file, the WAL's
 * frames or its existence must fail. */
static int lock_for_db_op(fs_db *db)
{
	int rc;

	pthread_mutex_lock(&db->mu);
	rc = fs_db_drain_locked(db);
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	return rc;
}

static void unlock_db_op(fs_db *db)
{
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
}

/* end_txn said FS_SYNC_WAIT (capture_mu and mu held): lets both go, waits
 * for the acknowledgements (fs_sync_fn, which has the record sent), and
 * takes both again; the caller's notify() tells the commit callback. 0: acknowledged,
 * published, the tracker cleared, and the caller ends the journal;
 * -EIO: the record was taken back (fs_db_undo_locked) and the tracker
 * kept, so the journal stays hot and SQLite rolls the transaction back
 * (whose own end then finds every page back and records nothing). The
 * journal's live state keeps snapshots, loads and handoff holds out
 * meanwhile; SQLite's lock keeps writers out. */
static int sync_commit(fs_db *db, const char *why)
{
	ltx_pos pos = db->pos;
	int rc, urc;

	unlock_db_op(db);
	rc = db->opts.sync_wait(db->opts.sync_ctx, db, pos);
	if (rc >= 0)
		rc = fs_db_sync_log_due(db); /* when sync_wait did not */
	(void)lock_for_db_op(db);
	if (rc >= 0) {
		fs_db_undo_forget(db);
		fs_db_publish_locked(db);
		txn_clear(db);
		return 0;
	}
	urc = fs_db_undo_locked(db);
	if (urc < 0)
		log_error("db=%s: %s: TXID %016" PRIx64 " was not acknowledged "
			  "(%s) and taking it back failed (%s): its outcome is "
			  "unknown", db->name, why, pos.txid, strerror(-rc),
			  strerror(-urc));
	else
		log_warn("db=%s: %s: TXID %016" PRIx64 " failed (EIO): not "
			 "acknowledged by enough replicas (%s); taken back, "
			 "SQLite rolls it back", db->name, why, pos.txid,
			 strerror(-rc));
	return -EIO;
}

/* Ends the journal's transaction (capture_mu and mu held): end_txn, and
 * in synchronous mode the wait for its acknowledgements. */
static int end_journal(fs_db *db, const char *why)
{
	int rc = end_txn(db, why);

	return rc == FS_SYNC_WAIT ? sync_commit(db, why) : rc;
}

static bool journal_live(fs_db *db)
{
	struct stat st;

	return db->fds[FS_KIND_JOURNAL] >= 0 &&
	       fstat(db->fds[FS_KIND_JOURNAL], &st) == 0 && st.st_size > 0;
}

/* A journal whose header has its magic: a transaction is open (or hot).
 * A PERSIST-mode journal stays behind with its magic zeroed, even when
 * its database is removed; it does not make a copy into the name part of
 * a transaction. */
static bool journal_active(fs_db *db)
{
	uint8_t magic[8];
	size_t got = 0;

	return journal_live(db) &&
	       lib_io_pread_full(db->fds[FS_KIND_JOURNAL], magic, sizeof(magic),
				 0, &got) == 0 &&
	       fs_journal_has_magic(magic, got);
}

/* A rollback journal or WAL is about to be used: a first load that is
 * still open is recorded first, or the operation refused (db_load.c). */
static int settle_load(fs_db *db, const char *what)
{
	ltx_pos before;
	bool loading;
	int rc;

	pthread_mutex_lock(&db->mu);
	loading = db->loading;
	pthread_mutex_unlock(&db->mu);
	if (!loading)
		return 0;
	before = fs_db_pos(db);
	(void)lock_for_db_op(db);
	rc = fs_db_load_settle(db, what);
	unlock_db_op(db);
	notify(db, before);
	return rc;
}

int fs_db_create(fs_db *db, enum fs_kind kind, mode_t mode)
{
	int rc = 0;

	if (kind == FS_KIND_POS)
		return -EPERM;
	if (kind == FS_KIND_JOURNAL || kind == FS_KIND_WAL) {
		rc = settle_load(db, kind == FS_KIND_WAL ? "create its WAL"
							 : "create its rollback "
							   "journal");
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&db->mu);
	if (db->fds[kind] < 0 && (kind == FS_KIND_DB || kind == FS_KIND_JOURNAL))
		rc = fs_db_refuse_ro_locked(db, kind);
	if (rc == 0 && db->fds[kind] < 0) {
		rc = open_backing(db, kind, O_CREAT, mode & 0777);
		if (rc < 0)
			log_error("db=%s: creating %s%s: %s", db->name,
				  db->name, fs_kind_suffix[kind],
				  strerror(-rc));
	}
	pthread_mutex_unlock(&db->mu);
	return rc;
}

/* A write at offset 0 must keep SQLite's header (-EINVAL otherwise);
 * *out_ps gets the page size it says, 0 when it does not reach it. */
static int check_header_write(fs_db *db, const uint8_t *buf, size_t n,
			      off_t off, uint32_t *out_ps)
{
	uint32_t ps;

	*out_ps = 0;
	if (off != 0 || n < 16)
		return 0;
	ps = n >= 18 ? get_be16(buf + 16) : 512;
	ps = ps == 1 ? 65536 : ps;
	if (memcmp(buf, "SQLite format 3", 16) != 0 || ps < 512 ||
	    ps > 65536 || (ps & (ps - 1))) {
		log_error("db=%s: write to the database file is not a "
			  "SQLite database header; only SQLite databases may "
			  "be stored here", db->name);
		return -EINVAL;
	}
	*out_ps = n >= 18 ? ps : 0;
	return 0;
}

static int check_aligned(fs_db *db, size_t n, off_t off, uint32_t unit)
{
	if (off % (off_t)unit == 0 && n % unit == 0)
		return 0;
	log_error("db=%s: write of %zu bytes at offset %jd is not aligned to "
		  "the page size %" PRIu32, db->name, n, (intmax_t)off, unit);
	return -EINVAL;
}

/* A write while a rollback journal is live: one of the transaction's
 * pages (module comment). */
static int journal_txn_write(fs_db *db, const uint8_t *buf, size_t n,
			     off_t off, uint32_t hps)
{
	uint32_t cps = committed_ps(db), unit = cps ? cps : 512;
	uint32_t file_pages = 0;
	uint64_t first, last;
	int rc;

	if (hps)
		db->txn_ps = hps;
	if (db->txn_ps && db->txn_ps < unit)
		unit = db->txn_ps;
	rc = check_aligned(db, n, off, unit);
	if (rc < 0 || n == 0)
		return rc;
	if (cps == 0) {
		/* No committed page: the commit records every page. */
		db->txn_dirty = true;
		return lib_io_pwrite_full(db->fds[FS_KIND_DB], buf, n, off);
	}
	rc = db_file_pages(db, cps, &file_pages);
	if (rc < 0)
		return rc;
	first = (uint64_t)off / cps + 1;
	last = ((uint64_t)off + n - 1) / cps + 1;
	for (uint64_t p = first; p <= last; p++) {
		uint64_t sum;
		if (p > UINT32_MAX)
			return -EFBIG;
		if (p <= db->commit && p <= file_pages) {
			/* Record the committed checksum while the file
			 * still holds it. */
			rc = fs_db_cksum_get(db, (uint32_t)p, &sum);
			if (rc < 0)
				return rc;
		}
		rc = dirty_add(db, (uint32_t)p);
		if (rc < 0)
			return rc;
	}
	return lib_io_pwrite_full(db->fds[FS_KIND_DB], buf, n, off);
}

static int db_write(fs_db *db, const uint8_t *buf, size_t n, off_t off)
{
	bool live = journal_live(db);
	uint32_t hps;
	int rc;

	if (db->commit == 0 && !journal_active(db))
		return fs_db_load_write(db, buf, n, off);
	rc = check_header_write(db, buf, n, off, &hps);
	if (rc < 0)
		return rc;
	if (live)
		return journal_txn_write(db, buf, n, off, hps);
	/* No journal: a WAL checkpoint writes committed pages. */
	rc = check_aligned(db, n, off, committed_ps(db));
	if (rc < 0)
		return rc;
	if (db->fds[FS_KIND_WAL] < 0) {
		log_error("db=%s: write without a rollback journal or WAL: "
			  "journal_mode=OFF and MEMORY cannot be replicated; "
			  "use DELETE, TRUNCATE, PERSIST or WAL", db->name);
		return -EPERM;
	}
	return lib_io_pwrite_full(db->fds[FS_KIND_DB], buf, n, off);
}

/* A write to -shm through the mount while walidx owns its storage: a
 * local reader's dirty page written back. Only the bytes readers own are
 * taken; the page's other bytes may be older than what walidx stored
 * since (fs/walidx.c, ACCESS). */
static int shm_write_readers(int fd, const void *buf, size_t n, off_t off)
{
	uint64_t start = (uint64_t)off, lo = start, hi = start + n;

	if (lo < FS_WALIDX_READER_OFF)
		lo = FS_WALIDX_READER_OFF;
	if (hi > FS_WALIDX_READER_OFF + FS_WALIDX_READER_LEN)
		hi = FS_WALIDX_READER_OFF + FS_WALIDX_READER_LEN;
	if (lo >= hi)
		return 0;
	return lib_io_pwrite_full(fd, (const uint8_t *)buf + (lo - start),
				  (size_t)(hi - lo), (off_t)lo);
}

int fs_db_write(fs_db *db, enum fs_kind kind, const void *buf, size_t n,
		off_t off)
{
	ltx_pos before;
	bool owned;
	int fd, rc, drained;

	switch (kind) {
	case FS_KIND_WAL:
		rc = settle_load(db, "write its WAL");
		return rc < 0 ? rc : fs_db_wal_write(db, buf, n, off);
	case FS_KIND_SHM:
		pthread_mutex_lock(&db->mu);
		fd = db->fds[FS_KIND_SHM];
		owned = db->shm_owned;
		pthread_mutex_unlock(&db->mu);
		if (fd < 0)
			return -ENOENT;
		return owned ? shm_write_readers(fd, buf, n, off)
			     : lib_io_pwrite_full(fd, buf, n, off);
	case FS_KIND_POS:
		return -EPERM;
	default:
		break;
	}
	before = fs_db_pos(db);
	pthread_mutex_lock(&db->mu);
	rc = fs_db_refuse_ro_locked(db, kind);
	if (rc == 0) {
		/* A journal write may start a transaction; a database
		 * write with no journal is a WAL checkpoint. */
		if (kind == FS_KIND_JOURNAL)
			fs_db_wait_unfrozen_locked(db, journal_live(db));
		else
			fs_db_wait_snapshot_locked(db, journal_live(db));
		/* Read-only may have come while it waited. */
		rc = fs_db_refuse_ro_locked(db, kind);
	}
	pthread_mutex_unlock(&db->mu);
	if (rc < 0)
		return rc;
	drained = lock_for_db_op(db);
	if (db->capture_err) {
		rc = -EIO;
	} else if (drained < 0) {
		rc = drained; /* a checkpoint while the log is full */
	} else if (db->fds[kind] < 0) {
		rc = -ENOENT;
	} else if (kind == FS_KIND_DB) {
		rc = db_write(db, buf, n, off);
	} else {
		/* Journal: a header write that clears the magic ends a
		 * PERSIST-mode transaction. */
		uint8_t old[8];
		size_t got = 0;
		rc = fs_db_load_settle(db, "write its rollback journal");
		if (rc == 0 && off == 0 && n >= 8 &&
		    !fs_journal_has_magic(buf, n) &&
		    lib_io_pread_full(db->fds[kind], old, 8, 0, &got) == 0 &&
		    fs_journal_has_magic(old, got))
			rc = end_journal(db, "journal header zeroed");
		if (rc == 0)
			rc = lib_io_pwrite_full(db->fds[kind], buf, n, off);
	}
	unlock_db_op(db);
	notify(db, before);
	return rc;
}

/* Truncating the database file (capture_mu and mu held): see the module
 * comment. */
static int truncate_db(fs_db *db, off_t size)
{
	uint32_t cps = committed_ps(db), first, fp = 0;
	uint64_t sum;
	int rc;

	if (db->commit == 0 && !journal_active(db)) {
		/* Part of a first load (cp extends a file that ends in a
		 * hole), or its end (emptied: nothing to record). */
		db->loading = size > 0;
		return 0;
	}
	if (journal_live(db)) {
		if (cps == 0) {
			db->txn_dirty = true;
			return 0;
		}
		/* Pages cut off must keep their committed checksums for
		 * the commit to XOR them out. */
		first = (uint32_t)((uint64_t)size / cps) + 1;
		rc = db_file_pages(db, cps, &fp);
		for (uint32_t p = first; rc == 0 && p <= fp && p <= db->commit;
		     p++)
			if (p != ltx_lock_pgno(cps))
				rc = fs_db_cksum_get(db, p, &sum);
		if (rc == 0 && size > 0)
			rc = dirty_add(db, (uint32_t)((uint64_t)size / cps));
		return rc;
	}
	/* Cutting pages past the committed size (SQLite does after a
	 * VACUUM's journal is gone, and a checkpoint) changes nothing. */
	if ((uint64_t)size >= (uint64_t)db->commit * cps)
		return 0;
	log_error("db=%s: refusing to truncate it to %jd bytes (EPERM): it "
		  "holds a committed database (%" PRIu32 " pages, TXID %016"
		  PRIx64 "), and cutting it outside a rollback-journal "
		  "transaction cannot be replicated. To replace it, remove it "
		  "first (rm: recorded as a delete) and copy the new one in, "
		  "or use `ltxfs import`; to empty it, delete its rows with "
		  "SQLite", db->name, (intmax_t)size, db->commit, db->pos.txid);
	return -EPERM;
}

int fs_db_truncate(fs_db *db, enum fs_kind kind, off_t size)
{
	ltx_pos before = fs_db_pos(db);
	int rc = 0, drained;

	if (kind == FS_KIND_POS)
		return -EPERM;
	if (kind != FS_KIND_SHM) {
		pthread_mutex_lock(&db->mu);
		rc = fs_db_refuse_ro_locked(db, kind);
		if (rc == 0) {
			/* Truncating the journal to 0 ends the open
			 * transaction (TRUNCATE mode), as above. */
			bool live = (kind == FS_KIND_DB ||
				     kind == FS_KIND_JOURNAL) &&
				    journal_live(db);
			if (kind == FS_KIND_JOURNAL)
				fs_db_wait_unfrozen_locked(db, live);
			else
				fs_db_wait_snapshot_locked(db, live);
			rc = fs_db_refuse_ro_locked(db, kind);
		}
		pthread_mutex_unlock(&db->mu);
		if (rc < 0)
			return rc;
	}
	drained = lock_for_db_op(db);
	if (db->fds[kind] < 0) {
		rc = -ENOENT;
		goto out;
	}
	if (db->capture_err && kind != FS_KIND_SHM) {
		rc = -EIO;
		goto out;
	}
	if (drained < 0 && kind != FS_KIND_SHM) {
		rc = drained;
		goto out;
	}
	switch (kind) {
	case FS_KIND_DB:
		rc = truncate_db(db, size);
		break;
	case FS_KIND_JOURNAL:
		if (size == 0)
			rc = end_journal(db, "journal truncated");
		break;
	case FS_KIND_WAL:
		rc = fs_db_wal_check_drop_locked(db, (uint64_t)size,
						 "truncate");
		break;
	default:
		break;
	}
	if (rc == 0)
		rc = lib_io_ftruncate(db->fds[kind], size);
	if (rc == 0 && kind == FS_KIND_WAL)
		fs_db_wal_reset(db, size);
out:
	unlock_db_op(db);
	notify(db, before);
	return rc;
}

/* The LTX log made durable up to the last record captured (capture_mu
 * and mu held, captures drained). mu is let go during the sync (readers
 * of the files need it); capture_mu keeps appends out. A failure is
 * logged here. */
static int sync_log_locked(fs_db *db)
{
	int rc;

	pthread_mutex_unlock(&db->mu);
	rc = fs_log_sync(db->log);
	pthread_mutex_lock(&db->mu);

	if (rc < 0)
		log_error("db=%s: syncing the LTX log at TXID %016" PRIx64
			  ": %s", db->name, db->pos.txid, strerror(-rc));
	return rc;
}

int fs_db_fsync(fs_db *db, enum fs_kind kind, bool datasync)
{
	ltx_pos before = fs_db_pos(db);
	char why[256];
	bool emptied;
	int fd, rc = 0, lrc;

	if (kind == FS_KIND_POS)
		return 0;
	if (kind == FS_KIND_DB) {
		/* Waits for the WAL's captures, but the file's data is
		 * made durable even while a full disk keeps them out. A
		 * first load is recorded once complete; before that its
		 * bytes are only made durable (dd oflag=sync syncs each
		 * block of a copy). */
		(void)lock_for_db_op(db);
		rc = fs_db_load_end(db, FS_LOAD_SYNC, why, sizeof(why),
				    &emptied);
		if (journal_live(db))
			db->txn_synced = true; /* the journal's end syncs */
		else if ((lrc = sync_log_locked(db)) < 0 && rc >= 0)
			rc = lrc; /* a checkpoint, or no journal at all */
		unlock_db_op(db);
		notify(db, before);
		if (rc == -EAGAIN || rc == -EINPROGRESS)
			log_debug("db=%s: synced while not a complete database "
				  "yet (%s): not recorded", db->name, why);
		else if (rc < 0)
			return rc;
	}
	if (kind == FS_KIND_WAL) {
		/* SQLite syncs its WAL at a commit (synchronous=FULL) and
		 * before a checkpoint copies frames into the database: the
		 * records of what it syncs are made as durable. */
		(void)lock_for_db_op(db);
		rc = sync_log_locked(db);
		if (db->wal_commit_unsynced) {
			db->wal_commit_synced = true; /* fs_db_sync_log_due */
			db->wal_commit_unsynced = false;
		}
		unlock_db_op(db);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&db->mu);
	fd = db->fds[kind];
	pthread_mutex_unlock(&db->mu);
	if (fd < 0)
		return -ENOENT;
	return datasync ? lib_io_fdatasync(fd) : lib_io_fsync(fd);
}

int fs_db_flush(fs_db *db, enum fs_kind kind)
{
	ltx_pos before = fs_db_pos(db);
	char why[256];
	bool emptied;
	int rc;

	if (kind != FS_KIND_DB || fs_db_readonly(db))
		return 0;
	(void)lock_for_db_op(db);
	rc = fs_db_load_end(db, FS_LOAD_CLOSE, why, sizeof(why), &emptied);
	unlock_db_op(db);
	notify(db, before);
	if (rc == -EAGAIN) {
		log_warn("db=%s: closed while the file written into it is not a "
			 "complete SQLite database (%s): not recorded; the "
			 "close fails with EINVAL, and the file is emptied when "
			 "its last handle is closed unless it is complete by "
			 "then", db->name, why);
		return -EINVAL;
	}
	/* Only the last close tells; a full disk: recorded when there is
	 * space ("A full disk"). */
	return rc == -EINPROGRESS || rc == -ENOSPC ? 0 : rc;
}

static void inval_db(fs_db *db)
{
	if (db->opts.on_inval)
		db->opts.on_inval(db->opts.inval_ctx, db, FS_KIND_DB, 0, 0);
}

void fs_db_release(fs_db *db, enum fs_kind kind)
{
	ltx_pos before = fs_db_pos(db);
	char why[256];
	bool emptied = false, loading;

	if (kind != FS_KIND_DB)
		return;
	pthread_mutex_lock(&db->mu);
	loading = db->loading;
	pthread_mutex_unlock(&db->mu);
	if (!loading)
		return;
	(void)lock_for_db_op(db);
	if (db->readonly)
		emptied = fs_db_load_abandon(db);
	else
		(void)fs_db_load_end(db, FS_LOAD_FINAL, why, sizeof(why),
				     &emptied);
	unlock_db_op(db);
	notify(db, before);
	if (emptied)
		inval_db(db); /* the kernel still has its size and pages */
}

bool fs_db_loadable(fs_db *db)
{
	bool yes;

	pthread_mutex_lock(&db->capture_mu);
	yes = db->commit == 0;
	pthread_mutex_unlock(&db->capture_mu);
	return yes && !fs_db_readonly(db);
}

int fs_db_open_truncate(fs_db *db, enum fs_kind kind)
{
	struct stat st;
	uint64_t txid;
	uint32_t pages;

	if (kind == FS_KIND_POS)
		return -EPERM;
	if (kind == FS_KIND_DB) {
		pthread_mutex_lock(&db->capture_mu);
		pages = db->commit;
		txid = db->pos.txid;
		pthread_mutex_unlock(&db->capture_mu);
		if (pages) {
			log_error("db=%s: refusing to open it with O_TRUNC "
				  "(EPERM; cp, dd, install or a shell's > over "
				  "it): it holds a committed database (%" PRIu32
				  " pages, TXID %016" PRIx64 ") that a copy "
				  "would overwrite in place, under its open "
				  "connections and outside any transaction, "
				  "which cannot be replicated. Remove it first "
				  "(rm: recorded as a delete, then the copy is "
				  "a new database; cp -f does both) or import "
				  "the file as its next transaction with "
				  "`ltxfs import %s FILE`", db->name, pages,
				  txid, db->name);
			return -EPERM;
		}
	}
	if (fs_db_stat(db, kind, &st) == 0 && st.st_size == 0)
		return 0;
	return fs_db_truncate(db, kind, 0);
}

int fs_db_unlink(fs_db *db, enum fs_kind kind)
{
	ltx_pos before = fs_db_pos(db);
	char path[PATH_MAX];
	int rc = 0, drained;

	if (kind == FS_KIND_POS)
		return -EPERM;
	pthread_mutex_lock(&db->mu);
	rc = fs_db_refuse_ro_locked(db, kind);
	if (rc == 0) {
		/* Deleting the journal ends the open transaction (DELETE
		 * mode): a snapshot's freeze waits for exactly that. */
		fs_db_wait_unfrozen_locked(db, kind == FS_KIND_JOURNAL &&
						       journal_live(db));
		rc = fs_db_refuse_ro_locked(db, kind);
	}
	pthread_mutex_unlock(&db->mu);
	if (rc < 0)
		return rc;
	drained = lock_for_db_op(db);
	if (db->fds[kind] < 0) {
		rc = -ENOENT;
		goto out;
	}
	if (drained < 0 && kind != FS_KIND_SHM) {
		rc = drained;
		goto out;
	}
	if (kind == FS_KIND_JOURNAL)
		rc = end_journal(db, "journal deleted");
	else if (kind == FS_KIND_WAL)
		rc = fs_db_wal_check_drop_locked(db, 0, "remove");
	else if (kind == FS_KIND_DB && (rc = fs_db_capture_delete(db)) == 0)
		fs_db_publish_locked(db);
	if (rc < 0)
		goto out;
	backing_path(db, kind, path, sizeof(path));
	if (unlink(path) < 0) {
		rc = -errno;
		goto out;
	}
	close(db->fds[kind]);
	db->fds[kind] = -1;
	if (kind == FS_KIND_WAL)
		fs_db_wal_reset(db, 0);
	if (kind == FS_KIND_DB) {
		dirty_clear(db);
		db->txn_dirty = false;
		db->txn_ps = 0;
		db->loading = false;
		db->load_final = false;
		db->page_size = 0;
	}
out:
	unlock_db_op(db);
	notify(db, before);
	return rc;
}

/* Whether the live journal points to the super-journal sj_name; mu
 * held. */
static bool journal_points_to(fs_db *db, const char *sj_name)
{
	char sj[FS_JOURNAL_SUPER_MAX];

	if (!journal_live(db) ||
	    fs_journal_read_super(db->fds[FS_KIND_JOURNAL], sj, sizeof(sj)) < 0)
		return false;
	return sj[0] && strcmp(fs_sj_basename(sj), sj_name) == 0;
}

int fs_db_capture_super(fs_db *db, const char *sj_name, bool *out_child)
{
	ltx_pos before = fs_db_pos(db);
	int rc = 0, drained;

	*out_child = false;
	drained = lock_for_db_op(db);
	if (!journal_points_to(db, sj_name))
		goto out;
	*out_child = true;
	rc = fs_db_refuse_ro_locked(db, FS_KIND_JOURNAL);
	if (rc == 0 && db->capture_err)
		rc = -EIO;
	if (rc == 0 && drained < 0)
		rc = drained;
	/* The database file holds the transaction (SQLite wrote and synced
	 * every child before it deletes the super-journal); the journal is
	 * finalised later and then ends nothing. */
	if (rc == 0)
		rc = end_journal(db, "its super-journal's deletion");
out:
	unlock_db_op(db);
	notify(db, before);
	return rc;
}

int fs_db_drain(fs_db *db)
{
	int rc;

	pthread_mutex_lock(&db->mu);
	rc = fs_db_drain_locked(db);
	pthread_mutex_unlock(&db->mu);
	return rc;
}

void fs_db_capture_retry(fs_db *db)
{
	ltx_pos before = fs_db_pos(db);
	char why[256];
	bool first_load, emptied = false;

	fs_db_wal_retry(db);
	/* A first load (no journal) that a full disk kept out of the log
	 * is recorded at its next fsync or close, or here. A transaction
	 * with a journal is not retried: SQLite rolls it back. */
	pthread_mutex_lock(&db->mu);
	first_load = db->journal_full && db->loading &&
		     fs_db_full_retry_due_locked(db);
	pthread_mutex_unlock(&db->mu);
	if (!first_load || fs_db_readonly(db))
		return;
	(void)lock_for_db_op(db);
	if (db->journal_full && db->loading && !journal_live(db))
		(void)fs_db_load_end(db, FS_LOAD_SYNC, why, sizeof(why),
				     &emptied);
	unlock_db_op(db);
	notify(db, before);
	if (emptied)
		inval_db(db);
}

bool fs_db_capture_blocked(fs_db *db, char *reason, size_t n)
{
	bool blocked;

	pthread_mutex_lock(&db->mu);
	blocked = db->wal_full || db->journal_full;
	pthread_mutex_unlock(&db->mu);
	if (reason && n)
		snprintf(reason, n, "%s", blocked ? "capture blocked: disk full"
						  : "");
	return blocked;
}

uint64_t fs_db_capture_full_total(fs_db *db)
{
	uint64_t v;

	pthread_mutex_lock(&db->mu);
	v = db->full_total;
	pthread_mutex_unlock(&db->mu);
	return v;
}
