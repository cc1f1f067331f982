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
 * A full disk: when the log refuses the record (ENOSPC), the journal
 * operation fails with ENOSPC and is not done, so SQLite rolls the
 * transaction back from the journal at the next access (the commit was
 * never acknowledged). The dirty set is kept, so the rollback's end
 * records whatever it did not restore. docs/STORAGE.md, "A full disk".
 *
 * A database write with no journal is refused (journal_mode=OFF and
 * MEMORY cannot be captured), except into a database that holds no
 * committed pages yet (VACUUM INTO, a first bulk load): that is captured
 * as one snapshot when the file is synced or closed.
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

int fs_db_create(fs_db *db, enum fs_kind kind, mode_t mode)
{
	int rc = 0;

	if (kind == FS_KIND_POS)
		return -EPERM;
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

/*
 * The journal's transaction ended (or a first unjournaled load is being
 * closed): record it if the database changed. capture_mu and mu held.
 */
static int end_txn(fs_db *db, const char *why)
{
	fs_page_src *pages = NULL;
	uint8_t *buf = NULL;
	uint32_t ps, commit;
	size_t n = 0;
	int rc = 0;

	if (db->ndirty == 0 || db->fds[FS_KIND_DB] < 0)
		goto out_clear;
	if (db->pos.txid == 0 && db_is_empty(db)) {
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
	qsort(db->dirty, db->ndirty, sizeof(uint32_t), cmp_u32);
	pages = malloc(db->ndirty * sizeof(*pages));
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
		if (ps == db->page_size && p <= db->commit && db->pos.txid) {
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
	if (n == 0 && commit == db->commit && ps == db->page_size &&
	    db->pos.txid) {
		log_debug("db=%s: %s: no page changed (rolled back)", db->name,
			  why);
		fs_db_unfull_locked(db, false, "the transaction that could not "
				    "be recorded was rolled back");
		goto out_clear;
	}
	rc = fs_db_capture(db, pages, n, commit, ps, 0, 0, 0, 0);
	if (rc == 0) {
		db->cap_wal_end = 0;
		fs_db_publish_locked(db);
		fs_db_unfull_locked(db, false, "a rollback-journal transaction "
				    "is in the LTX log");
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
	dirty_clear(db);
	db->unjournaled = false;
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

static bool journal_live(fs_db *db)
{
	struct stat st;

	return db->fds[FS_KIND_JOURNAL] >= 0 &&
	       fstat(db->fds[FS_KIND_JOURNAL], &st) == 0 && st.st_size > 0;
}

static int db_write(fs_db *db, const uint8_t *buf, size_t n, off_t off)
{
	bool checkpoint, live;
	uint32_t ps = db->page_size;
	uint32_t file_pages = 0;
	int rc;

	if (off == 0 && n >= 100) {
		uint32_t hps = get_be16(buf + 16);
		if (memcmp(buf, "SQLite format 3", 16) != 0) {
			log_error("db=%s: write to the database file is not a "
				  "SQLite database header; only SQLite "
				  "databases may be stored here", db->name);
			return -EINVAL;
		}
		ps = hps == 1 ? 65536 : hps;
	}
	if (ps == 0 && n >= 512 && n <= 65536 && (n & (n - 1)) == 0 &&
	    off % (off_t)n == 0)
		ps = (uint32_t)n; /* a new database, page 1 not written yet */
	if (ps == 0) {
		log_error("db=%s: write of %zu bytes at offset %jd before the "
			  "database header; only SQLite databases may be stored "
			  "here", db->name, n, (intmax_t)off);
		return -EINVAL;
	}
	if (off % ps || n % ps) {
		log_error("db=%s: write of %zu bytes at offset %jd is not "
			  "aligned to the page size %" PRIu32, db->name, n,
			  (intmax_t)off, ps);
		return -EINVAL;
	}
	live = journal_live(db);
	checkpoint = !live && db->fds[FS_KIND_WAL] >= 0;
	if (!live && !checkpoint) {
		if (db->commit != 0 && !db->unjournaled) {
			log_error("db=%s: write without a rollback journal "
				  "or WAL: journal_mode=OFF and MEMORY cannot be "
				  "replicated; use DELETE, TRUNCATE, PERSIST or "
				  "WAL", db->name);
			return -EPERM;
		}
		db->unjournaled = true;
	}
	if (!checkpoint) {
		rc = db_file_pages(db, ps, &file_pages);
		if (rc < 0)
			return rc;
		for (uint64_t o = 0; o < n; o += ps) {
			uint32_t p = (uint32_t)(((uint64_t)off + o) / ps + 1);
			uint64_t sum;
			if (ps == db->page_size && p <= db->commit &&
			    p <= file_pages && db->pos.txid) {
				/* Record the committed checksum while the
				 * file still holds it. */
				rc = fs_db_cksum_get(db, p, &sum);
				if (rc < 0)
					return rc;
			}
			rc = dirty_add(db, p);
			if (rc < 0)
				return rc;
		}
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
		return fs_db_wal_write(db, buf, n, off);
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
		rc = 0;
		if (off == 0 && n >= 8 && !fs_journal_has_magic(buf, n) &&
		    lib_io_pread_full(db->fds[kind], old, 8, 0, &got) == 0 &&
		    fs_journal_has_magic(old, got))
			rc = end_txn(db, "journal header zeroed");
		if (rc == 0)
			rc = lib_io_pwrite_full(db->fds[kind], buf, n, off);
	}
	unlock_db_op(db);
	notify(db, before);
	return rc;
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
		if (db->page_size && journal_live(db) && db->pos.txid) {
			/* Pages cut off must keep their committed
			 * checksums for the commit to XOR them out. */
			uint32_t first = (uint32_t)((uint64_t)size /
						    db->page_size) + 1;
			uint32_t fp = 0;
			uint64_t sum;
			rc = db_file_pages(db, db->page_size, &fp);
			for (uint32_t p = first; rc == 0 && p <= fp &&
						 p <= db->commit; p++)
				if (p != ltx_lock_pgno(db->page_size))
					rc = fs_db_cksum_get(db, p, &sum);
			if (rc == 0 && size > 0)
				rc = dirty_add(db, (uint32_t)((uint64_t)size /
							      db->page_size));
		} else if (!journal_live(db) && db->fds[FS_KIND_WAL] < 0 &&
			   db->commit != 0 && !db->unjournaled &&
			   (uint64_t)size < (uint64_t)db->commit *
						    db->page_size) {
			/* Cutting pages past the committed size (SQLite does
			 * after a VACUUM's journal is gone) changes nothing. */
			log_error("db=%s: truncate without a rollback journal "
				  "or WAL cannot be replicated", db->name);
			rc = -EPERM;
		}
		break;
	case FS_KIND_JOURNAL:
		if (size == 0)
			rc = end_txn(db, "journal truncated");
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

int fs_db_fsync(fs_db *db, enum fs_kind kind, bool datasync)
{
	ltx_pos before = fs_db_pos(db);
	int fd, rc = 0;

	if (kind == FS_KIND_POS)
		return 0;
	if (kind == FS_KIND_DB) {
		/* Waits for the WAL's captures, but the file's data is
		 * made durable even while a full disk keeps them out. */
		(void)lock_for_db_op(db);
		if (db->unjournaled && !journal_live(db))
			rc = end_txn(db, "first load synced");
		unlock_db_op(db);
		notify(db, before);
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

void fs_db_release(fs_db *db, enum fs_kind kind)
{
	ltx_pos before = fs_db_pos(db);

	if (kind != FS_KIND_DB || fs_db_readonly(db))
		return;
	(void)lock_for_db_op(db);
	if (db->unjournaled && !journal_live(db))
		end_txn(db, "first load closed");
	unlock_db_op(db);
	notify(db, before);
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
		rc = end_txn(db, "journal deleted");
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
		db->unjournaled = false;
		db->page_size = 0;
	}
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
	bool first_load;

	fs_db_wal_retry(db);
	/* A first load (no journal) that a full disk kept out of the log
	 * is recorded at its next fsync or close, or here. A transaction
	 * with a journal is not retried: SQLite rolls it back. */
	pthread_mutex_lock(&db->mu);
	first_load = db->journal_full && db->unjournaled &&
		     fs_db_full_retry_due_locked(db);
	pthread_mutex_unlock(&db->mu);
	if (!first_load || fs_db_readonly(db))
		return;
	(void)lock_for_db_op(db);
	if (db->journal_full && db->unjournaled && !journal_live(db))
		(void)end_txn(db, "first load, tried again");
	unlock_db_op(db);
	notify(db, before);
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
