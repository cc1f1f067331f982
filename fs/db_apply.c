/*
 * Replica side of the db core: the read-only switch, applying records
 * received from the primary, and start-up recovery of a replica.
 *
 * Applying one record (fs_db_apply_ltx), in order:
 *   1. verify it whole: every LTX rule and the file checksum;
 *   2. check it follows this database's position (TXID and checksum),
 *      unless it is a snapshot;
 *   3. append it to the local log (the replica's position is the log's);
 *   4. apply its pages, atomically for local readers, in one of two ways:
 *      - rollback style (the database is not in WAL mode here): take
 *        SQLite's PENDING then EXCLUSIVE lock on the database through the
 *        mount, as a writer would, so no reader is inside a read
 *        transaction; write the pages into the backing file, truncate,
 *        drop the kernel's cached pages, release. Readers wait at most as
 *        long as the longest read transaction already open when the apply
 *        began (PENDING stops new ones); we wait at most apply_timeout_ms.
 *        The lock is taken before step 3, so a wait that ends without it
 *        leaves the log and the database as they were. A caller that
 *        must not block (FS_APPLY_NOWAIT) gets -EAGAIN instead of the
 *        wait: PENDING stays taken, and its next try goes on with the
 *        same wait (same start, same timeout).
 *      - WAL style (the database is in WAL mode here): ltxfs is the one
 *        WAL writer for local readers (fs/walidx.h): the pages become
 *        frames in the replica's own WAL, published by a new wal-index
 *        header. Readers are never waited for; a long read transaction
 *        only holds back checkpoints, so the WAL grows meanwhile.
 *   5. prove the result: the database checksum kept per page, updated in
 *      O(pages changed), must equal the record's post-apply checksum;
 *      otherwise the position is reset to zero so the primary sends a
 *      snapshot, with an error logged.
 *
 * A record with commit 0 deletes the database: its files go, the position
 * stays (the log continues if the name is created again).
 *
 * Locks: apply_mu (serialises applies; never taken by FUSE handlers),
 * then capture_mu, then mu. Nothing that goes through the mount (opening,
 * locking, invalidation) is done with capture_mu or mu held, since FUSE
 * handlers take mu.
 */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db_apply.h"
#include "db_i.h"
#include "journal.h"
#include "superjournal.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/decoder.h"
#include "walidx.h"

#define SQLITE_PENDING_BYTE 0x40000000
#define SQLITE_SHARED_FIRST (SQLITE_PENDING_BYTE + 2)
#define SQLITE_SHARED_SIZE 510
#define RO_LOG_INTERVAL_NS (10LL * 1000 * 1000 * 1000)
#define DEFAULT_APPLY_TIMEOUT_MS 30000

struct fs_log *fs_db_log(fs_db *db)
{
	return db->log;
}

void fs_db_set_readonly(fs_db *db, bool readonly, const char *primary)
{
	char *p = primary ? strdup(primary) : NULL;

	pthread_mutex_lock(&db->mu);
	db->readonly = readonly;
	free(db->primary);
	db->primary = p;
	pthread_mutex_unlock(&db->mu);
}

bool fs_db_readonly(fs_db *db)
{
	bool ro;

	pthread_mutex_lock(&db->mu);
	ro = db->readonly;
	pthread_mutex_unlock(&db->mu);
	return ro;
}

int fs_db_refuse_ro_locked(fs_db *db, enum fs_kind kind)
{
	int64_t now, dl;

	if (kind == FS_KIND_SHM)
		return 0;
	if (!db->readonly) {
		dl = db->opts.write_deadline_ns
			     ? atomic_load(db->opts.write_deadline_ns)
			     : 0;
		if (dl == 0 || lib_clock_boottime_ns() < dl)
			return 0;
		now = lib_clock_monotonic_ns();
		if (db->ro_logged_ms == 0 ||
		    now - (int64_t)db->ro_logged_ms >= RO_LOG_INTERVAL_NS) {
			db->ro_logged_ms = (uint64_t)now;
			log_warn("db=%s: write to %s%s refused (EROFS): this "
				 "primary's lease deadline has passed without "
				 "a renewal", db->name, db->name,
				 fs_kind_suffix[kind]);
		}
		return -EROFS;
	}
	now = lib_clock_monotonic_ns();
	if (db->ro_logged_ms == 0 ||
	    now - (int64_t)db->ro_logged_ms >= RO_LOG_INTERVAL_NS) {
		db->ro_logged_ms = (uint64_t)now;
		log_warn("db=%s: write to %s%s refused (EROFS): this node is a "
			 "read-only replica; write on the primary, %s",
			 db->name, db->name, fs_kind_suffix[kind],
			 db->primary ? db->primary : "(not known yet)");
	}
	return -EROFS;
}

int fs_db_refuse_ro_open(fs_db *db)
{
	int64_t now;

	pthread_mutex_lock(&db->mu);
	now = lib_clock_monotonic_ns();
	if (db->ro_logged_ms == 0 ||
	    now - (int64_t)db->ro_logged_ms >= RO_LOG_INTERVAL_NS) {
		db->ro_logged_ms = (uint64_t)now;
		log_warn("db=%s: opening it for writing refused (EROFS): this "
			 "node is a read-only replica (SQLite goes on "
			 "read-only and fails writes with \"attempt to write a "
			 "readonly database\"); write on the primary, %s",
			 db->name, db->primary ? db->primary
					       : "(not known yet)");
	}
	pthread_mutex_unlock(&db->mu);
	return -EROFS;
}

void fs_db_wait_unfrozen_locked(fs_db *db, bool txn_open)
{
	while (db->freeze > 0 && !txn_open)
		pthread_cond_wait(&db->cond, &db->mu);
}

/* Records the pending frames for fs_db_wal_pending (apply_mu held). */
static void note_pending(fs_db *db)
{
	__atomic_store_n(&db->wal_pending,
			 db->walidx ? fs_walidx_pending(db->walidx) : 0,
			 __ATOMIC_RELAXED);
}

/* Never waits for apply_mu: an apply may hold it for as long as it waits
 * for local readers (up to the apply timeout), and /metrics must answer
 * meanwhile; the count as of the last apply is given then. */
uint32_t fs_db_wal_pending(fs_db *db)
{
	if (pthread_mutex_trylock(&db->apply_mu) == 0) {
		note_pending(db);
		pthread_mutex_unlock(&db->apply_mu);
	}
	return __atomic_load_n(&db->wal_pending, __ATOMIC_RELAXED);
}

void fs_db_apply_checkpoint(fs_db *db)
{
	bool done = false;

	pthread_mutex_lock(&db->apply_mu);
	if (db->walidx && fs_walidx_pending(db->walidx) > 0)
		fs_walidx_checkpoint(db->walidx, false, &done);
	note_pending(db);
	pthread_mutex_unlock(&db->apply_mu);
}

/* --- SQLite locks through the mount --- */

static void mount_path(const fs_db *db, enum fs_kind k, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s%s", db->opts.mountpoint, db->name,
		 fs_kind_suffix[k]);
}

static void inval(fs_db *db, enum fs_kind k, int64_t off, int64_t len)
{
	if (db->opts.on_inval)
		db->opts.on_inval(db->opts.inval_ctx, db, k, off, len);
}

/* Opens the database through the mount for its locks (apply_mu held). */
static int open_lock_fd(fs_db *db)
{
	char path[PATH_MAX];

	if (db->lock_fd >= 0 || !db->opts.mountpoint)
		return 0;
	mount_path(db, FS_KIND_DB, path, sizeof(path));
	db->lock_fd = open(path, O_RDWR | O_CLOEXEC);
	if (db->lock_fd < 0) {
		int rc = -errno;
		log_error("db=%s: opening %s to take SQLite's locks: %s",
			  db->name, path, strerror(-rc));
		return rc;
	}
	return 0;
}

static void close_lock_fd(fs_db *db)
{
	if (db->lock_fd >= 0)
		close(db->lock_fd); /* its locks go with it */
	db->lock_fd = -1;
	db->wait_since_ns = 0;
}

static int apply_timeout_ms(const fs_db *db)
{
	return db->opts.apply_timeout_ms > 0 ? db->opts.apply_timeout_ms
					     : DEFAULT_APPLY_TIMEOUT_MS;
}

/* One try for SQLite's EXCLUSIVE lock: PENDING (no new readers), then
 * the SHARED range (the readers inside a transaction have left). *what
 * names the lock that was busy. */
static int try_exclusive(fs_db *db, const char **what)
{
	int rc;

	*what = "the PENDING lock";
	rc = lib_io_ofd_trylock(db->lock_fd, F_WRLCK, SQLITE_PENDING_BYTE, 1);
	if (rc == 0) {
		*what = "the EXCLUSIVE lock";
		rc = lib_io_ofd_trylock(db->lock_fd, F_WRLCK,
					SQLITE_SHARED_FIRST,
					SQLITE_SHARED_SIZE);
	}
	return rc;
}

/* SQLite's EXCLUSIVE lock, polled as SQLite's busy handler would, up to
 * the apply timeout counted from the first try (db->wait_since_ns, kept
 * across nowait calls); says so in the log while it waits. nowait: one
 * try, -EAGAIN while readers hold it, PENDING kept. -EBUSY, PENDING let
 * go, once the timeout has passed. apply_mu held. */
static int lock_exclusive(fs_db *db, bool nowait)
{
	useconds_t nap = 100;
	const char *what;
	int rc;

	if (db->lock_fd < 0)
		return 0;
	while ((rc = try_exclusive(db, &what)) == -EBUSY) {
		int64_t now = lib_clock_monotonic_ns(), ms;
		if (!db->wait_since_ns) {
			db->wait_since_ns = now;
			db->wait_log_ms = 1000;
		}
		ms = (now - db->wait_since_ns) / 1000000;
		if (ms >= apply_timeout_ms(db)) {
			log_warn("db=%s: gave up waiting %d ms for %s held by "
				 "local readers; the apply is retried",
				 db->name, apply_timeout_ms(db), what);
			break;
		}
		if (ms >= db->wait_log_ms) {
			log_info("db=%s: apply waits for %s: a local reader "
				 "has held a read transaction for %" PRId64
				 " ms", db->name, what, ms);
			db->wait_log_ms += 5000;
		}
		if (nowait)
			return -EAGAIN;
		usleep(nap);
		if (nap < 2000)
			nap *= 2;
	}
	db->wait_since_ns = 0;
	if (rc < 0)
		lib_io_ofd_trylock(db->lock_fd, F_UNLCK, SQLITE_PENDING_BYTE,
				   1);
	return rc;
}

/* EXCLUSIVE only if it is free now (no wait); -EBUSY otherwise. */
static int lock_exclusive_now(fs_db *db)
{
	int rc;

	if (db->lock_fd < 0)
		return 0;
	rc = lib_io_ofd_trylock(db->lock_fd, F_WRLCK, SQLITE_PENDING_BYTE, 1);
	if (rc == 0) {
		rc = lib_io_ofd_trylock(db->lock_fd, F_WRLCK,
					SQLITE_SHARED_FIRST,
					SQLITE_SHARED_SIZE);
		if (rc < 0)
			lib_io_ofd_trylock(db->lock_fd, F_UNLCK,
					   SQLITE_PENDING_BYTE, 1);
	}
	return rc < 0 ? -EBUSY : 0;
}

static void unlock_exclusive(fs_db *db)
{
	db->wait_since_ns = 0;
	if (db->lock_fd < 0)
		return;
	lib_io_ofd_trylock(db->lock_fd, F_UNLCK, SQLITE_SHARED_FIRST,
			   SQLITE_SHARED_SIZE);
	lib_io_ofd_trylock(db->lock_fd, F_UNLCK, SQLITE_PENDING_BYTE, 1);
}

void fs_db_apply_cancel_wait(fs_db *db)
{
	pthread_mutex_lock(&db->apply_mu);
	if (db->wait_since_ns)
		unlock_exclusive(db);
	pthread_mutex_unlock(&db->apply_mu);
}

/* --- applying pages --- */

struct apply {
	fs_db *db;
	const char *src;        /* for messages */
	int fd;
	uint64_t off, len;
	ltx_header hdr;
	ltx_trailer tr;
	bool offline;           /* start-up: nothing mounted, no readers */
	bool wal;               /* WAL style */
	bool locked;            /* rollback style: SQLite's EXCLUSIVE held */
	bool full;              /* every page replaced: checksum afresh */
	uint64_t sum;           /* running database checksum */
	uint32_t old_commit;
	uint32_t old_ps;
	uint64_t min_off, max_end; /* database bytes written (rollback) */
	ltx_decoder **cache;    /* the caller's decoder, reused; may be NULL */
	int p1_mode;            /* page 1 written: 2 WAL mode, 1 not; 0 none */
};

/* A decoder over fd's bytes [off, off+len): the caller's cached one reset
 * (no allocation, its zstd context kept), else a new one (which becomes
 * the cached one when cache is not NULL). Release with decoder_done. */
static int decoder_get(ltx_decoder **cache, fs_range_reader *rr,
		       const char *src, ltx_decoder **out)
{
	int rc;

	if (cache && *cache) {
		*out = *cache;
		return ltx_decoder_reset(*cache, fs_range_read, rr, src);
	}
	rc = ltx_decoder_new(fs_range_read, rr, src, out);
	if (rc == 0 && cache)
		*cache = *out;
	return rc;
}

static void decoder_done(ltx_decoder **cache, ltx_decoder *dec)
{
	if (!cache || *cache != dec)
		ltx_decoder_free(dec);
}

static void backing_path(const fs_db *db, enum fs_kind k, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", db->dir, fs_kind_backing[k]);
}

/* Creates a backing file that does not exist yet (apply_mu held). */
static int ensure_backing(fs_db *db, enum fs_kind k)
{
	char path[PATH_MAX];
	int fd, rc = 0;
	bool made = false;

	pthread_mutex_lock(&db->mu);
	if (db->fds[k] < 0) {
		backing_path(db, k, path, sizeof(path));
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			rc = -errno;
			log_error("db=%s: creating %s: %s", db->name, path,
				  strerror(-rc));
		} else {
			db->fds[k] = fd;
			made = true;
		}
	}
	pthread_mutex_unlock(&db->mu);
	if (made)
		inval(db, k, -1, 0);
	return rc;
}

/* Is the database in WAL mode here (header bytes 18 and 19 are 2)? */
static bool file_in_wal_mode(fs_db *db)
{
	uint8_t b[2];
	size_t got = 0;

	if (db->fds[FS_KIND_DB] < 0)
		return false;
	if (lib_io_pread_full(db->fds[FS_KIND_DB], b, 2, 18, &got) < 0 ||
	    got < 2)
		return false;
	return b[0] == 2 && b[1] == 2;
}

static void walidx_inval(void *ctx, int which, uint64_t off, uint64_t len)
{
	inval(ctx, which == 0 ? FS_KIND_DB : FS_KIND_WAL, (int64_t)off,
	      (int64_t)len);
}

/* -shm's storage, then the pages readers map (fs/walidx.c, ACCESS). */
static int walidx_store(void *ctx, uint64_t off, const void *buf, size_t n)
{
	fs_db *db = ctx;
	int fd, rc;

	pthread_mutex_lock(&db->mu);
	fd = db->fds[FS_KIND_SHM];
	pthread_mutex_unlock(&db->mu);
	rc = fd < 0 ? -ENOENT : lib_io_pwrite_full(fd, buf, n, (off_t)off);
	if (rc < 0) {
		log_error("db=%s: writing %zu bytes at %" PRIu64 " of the "
			  "-shm's storage: %s", db->name, n, off,
			  strerror(-rc));
		return rc;
	}
	return db->opts.on_store(db->opts.inval_ctx, db, FS_KIND_SHM, off,
				 buf, n); /* it logs */
}

static void set_shm_owned(fs_db *db, bool owned)
{
	pthread_mutex_lock(&db->mu);
	db->shm_owned = owned;
	pthread_mutex_unlock(&db->mu);
}

/* Closes walidx (it waits for readers' pages in flight to -shm's storage
 * first), then lets writes through the mount reach all of -shm again. */
static void close_walidx(fs_db *db)
{
	fs_walidx_close(db->walidx);
	db->walidx = NULL;
	set_shm_owned(db, false);
}

static int open_walidx(fs_db *db)
{
	char dbp[PATH_MAX], shmp[PATH_MAX];
	fs_walidx_files f = {0};
	int fd, rc;

	if (db->walidx)
		return 0;
	/* The -wal entry is created through the mount so the kernel knows
	 * it; its content is written to the backing file directly. */
	mount_path(db, FS_KIND_WAL, dbp, sizeof(dbp));
	fd = open(dbp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		log_error("db=%s: creating %s: %s", db->name, dbp,
			  strerror(-rc));
		return rc;
	}
	close(fd);
	mount_path(db, FS_KIND_DB, dbp, sizeof(dbp));
	mount_path(db, FS_KIND_SHM, shmp, sizeof(shmp));
	f.db_path = dbp;
	f.shm_path = shmp;
	f.wal_fd = db->fds[FS_KIND_WAL];
	f.db_fd = db->fds[FS_KIND_DB];
	f.invalidate = walidx_inval;
	if (db->opts.on_store)
		f.shm_store = walidx_store;
	f.ctx = db;
	if (f.wal_fd < 0 || f.db_fd < 0)
		return -ENOENT;
	if (f.shm_store)
		set_shm_owned(db, true); /* walidx.h, shm_store */
	rc = fs_walidx_open(&f, db->page_size, db->commit, &db->walidx);
	if (rc < 0)
		set_shm_owned(db, false);
	return rc;
}

static int old_sum(struct apply *a, uint32_t pgno, uint64_t *out)
{
	fs_db *db = a->db;

	if (a->full || pgno > a->old_commit) {
		*out = 0;
		return 0;
	}
	return fs_db_cksum_get(db, pgno, out);
}

/* Rollback style: runs of consecutive pages go to the database file in
 * one pwrite of up to RUN_BYTES. */
#define RUN_BYTES (256u * 1024)

struct run {
	uint8_t *buf;
	uint32_t max, n;         /* pages it holds at most, and now */
	uint32_t first;          /* page number of buf's first page */
};

static int run_flush(struct apply *a, struct run *r)
{
	uint32_t ps = a->hdr.page_size;
	uint64_t o = (uint64_t)(r->first - 1) * ps, len = (uint64_t)r->n * ps;
	int rc;

	if (r->n == 0)
		return 0;
	rc = lib_io_pwrite_full(a->db->fds[FS_KIND_DB], r->buf, (size_t)len,
				(off_t)o);
	if (o < a->min_off)
		a->min_off = o;
	if (o + len > a->max_end)
		a->max_end = o + len;
	r->n = 0;
	return rc;
}

static int apply_pages(struct apply *a, ltx_decoder *dec, uint8_t *page)
{
	fs_db *db = a->db;
	uint32_t ps = a->hdr.page_size, pgno;
	struct run r = {NULL, 0, 0, 0};
	int rc;

	if (!a->wal) {
		r.max = RUN_BYTES / ps ? RUN_BYTES / ps : 1;
		r.buf = malloc((size_t)r.max * ps);
		if (!r.buf)
			return -ENOMEM;
	}
	for (;;) {
		uint8_t *p = a->wal ? page : r.buf + (size_t)r.n * ps;
		uint64_t old = 0, now;
		rc = ltx_decoder_next_page(dec, &pgno, p);
		if (rc != 1)
			break;
		now = ltx_checksum_page(pgno, p, ps);
		if (pgno == 1)
			a->p1_mode = p[18] == 2 && p[19] == 2 ? 2 : 1;
		rc = old_sum(a, pgno, &old);
		if (rc < 0)
			break;
		if (old)
			a->sum = ltx_checksum_xor(a->sum, old);
		a->sum = ltx_checksum_xor(a->sum, now);
		if (a->wal) {
			rc = fs_walidx_page(db->walidx, pgno, p);
		} else if (r.n > 0 && pgno != r.first + r.n) {
			/* Not next to the run (the page just decoded is in
			 * the slot after it): write the run, start anew. */
			uint32_t held = r.n;
			rc = run_flush(a, &r);
			memcpy(r.buf, r.buf + (size_t)held * ps, ps);
			r.first = pgno;
			r.n = 1;
			if (rc == 0 && r.n == r.max)
				rc = run_flush(a, &r);
		} else {
			if (r.n++ == 0)
				r.first = pgno;
			if (r.n == r.max)
				rc = run_flush(a, &r);
		}
		if (rc == 0)
			rc = fs_db_cksum_set(db, pgno, now);
		if (rc < 0)
			break;
	}
	if (rc == 0 && !a->wal)
		rc = run_flush(a, &r);
	free(r.buf);
	if (rc < 0 && ltx_decoder_err(dec)->kind == LTX_OK)
		return rc;
	if (rc < 0) {
		log_error("db=%s: %s: %s", db->name, a->src,
			  ltx_decoder_err(dec)->msg);
		return rc;
	}
	/* Pages cut off by a smaller commit leave the checksum. */
	if (!a->full)
		for (uint32_t p = a->hdr.commit + 1; p <= a->old_commit; p++) {
			uint64_t old;
			if (p == ltx_lock_pgno(ps))
				continue;
			rc = fs_db_cksum_get(db, p, &old);
			if (rc < 0)
				return rc;
			a->sum = ltx_checksum_xor(a->sum, old);
		}
	for (uint32_t p = a->hdr.commit + 1; p < db->ncksums; p++)
		db->cksums[p] = 0;
	return ltx_decoder_finish(dec, NULL);
}

/* Whether a record is applied WAL style (the database file exists). */
static bool wal_style(fs_db *db, const struct apply *a)
{
	return !a->offline &&
	       (db->walidx || (db->opts.mountpoint && db->commit > 0 &&
			       a->hdr.page_size == db->page_size &&
			       file_in_wal_mode(db)));
}

/* A record applied rollback style takes SQLite's EXCLUSIVE lock before
 * anything of it is written, the local log included: a wait for local
 * readers that ends without the lock (-EAGAIN with nowait, -EBUSY past
 * the apply timeout) leaves everything as it was. apply_mu held. */
static int lock_for_record(struct apply *a, bool nowait)
{
	fs_db *db = a->db;
	int rc;

	if (a->hdr.commit == 0 || a->offline)
		return 0; /* a delete locks as it can (apply_delete) */
	rc = ensure_backing(db, FS_KIND_DB);
	if (rc < 0 || wal_style(db, a))
		return rc;
	rc = open_lock_fd(db);
	if (rc == 0)
		rc = lock_exclusive(db, nowait);
	a->locked = rc == 0;
	return rc;
}

/* errbuf for a lock_for_record failure. */
static void lock_failed(const fs_db *db, int rc, char *errbuf, size_t errlen)
{
	if (rc == -EAGAIN)
		snprintf(errbuf, errlen, "waiting for local readers");
	else if (rc == -EBUSY)
		snprintf(errbuf, errlen, "local readers held the database "
			 "for the whole apply timeout (%d ms)",
			 apply_timeout_ms(db));
	else
		snprintf(errbuf, errlen, "taking SQLite's lock: %s",
			 strerror(-rc));
}

static void unlock_record(struct apply *a)
{
	if (a->locked)
		unlock_exclusive(a->db);
	a->locked = false;
}

/* Applies the pages of a verified record (apply_mu held). */
static int apply_record(struct apply *a)
{
	fs_db *db = a->db;
	fs_range_reader rr = {a->fd, a->off, a->off + a->len};
	ltx_decoder *dec = NULL;
	uint8_t *page = NULL;
	ltx_header h;
	int rc;

	page = malloc(a->hdr.page_size);
	if (!page)
		return -ENOMEM;
	rc = decoder_get(a->cache, &rr, a->src, &dec);
	if (rc == 0)
		rc = ltx_decoder_read_header(dec, &h);
	if (rc < 0)
		goto out;
	rc = ensure_backing(db, FS_KIND_DB);
	if (rc < 0)
		goto out;
	a->wal = wal_style(db, a);
	if (a->wal) {
		unlock_record(a); /* none: decided as lock_for_record did */
		rc = open_walidx(db);
		if (rc == 0)
			rc = fs_walidx_begin(db->walidx,
					     apply_timeout_ms(db));
		if (rc < 0)
			goto out;
	} else if (!a->offline && !a->locked) {
		rc = lock_for_record(a, false);
		if (rc < 0)
			goto out;
	}
	/* No capture runs on a replica: apply_mu guards the checksums,
	 * commit and page size here. capture_mu is not held while walidx
	 * works, since it goes through the mount (whose handlers take it). */
	a->old_commit = db->commit;
	a->old_ps = db->page_size;
	a->full = ltx_header_is_snapshot(&a->hdr) || db->commit == 0 ||
		  db->page_size != a->hdr.page_size;
	a->sum = a->full ? LTX_CHECKSUM_EMPTY : db->pos.checksum;
	if (a->full && db->cksums)
		memset(db->cksums, 0, (size_t)db->ncksums * sizeof(uint64_t));
	db->page_size = a->hdr.page_size;
	a->min_off = UINT64_MAX;
	a->max_end = 0;
	rc = apply_pages(a, dec, page);
	if (rc == 0 && !a->wal) {
		uint64_t size = (uint64_t)a->hdr.commit * a->hdr.page_size;
		struct stat st;
		if (fstat(db->fds[FS_KIND_DB], &st) == 0 &&
		    (uint64_t)st.st_size != size) {
			rc = lib_io_ftruncate(db->fds[FS_KIND_DB], (off_t)size);
			a->min_off = 0;
			a->max_end = 0; /* to the end */
		}
	}
	if (rc == 0 && a->wal)
		rc = fs_walidx_commit(db->walidx, a->hdr.commit, false);
	else if (rc < 0 && a->wal)
		fs_walidx_abort(db->walidx);
	if (rc == 0) {
		db->commit = a->hdr.commit;
		if (a->sum != a->tr.post_apply_checksum) {
			log_error("db=%s: after applying TXID %016" PRIx64
				  " the database checksum is %016" PRIx64 " but "
				  "the primary's is %016" PRIx64 ": the local "
				  "copy was damaged; asking for a snapshot",
				  db->name, a->hdr.max_txid, a->sum,
				  a->tr.post_apply_checksum);
			rc = -EBADMSG;
		}
		pthread_mutex_lock(&db->capture_mu);
		pthread_mutex_lock(&db->mu);
		if (rc == 0) {
			db->pos.txid = a->hdr.max_txid;
			db->pos.checksum = a->tr.post_apply_checksum;
		} else {
			db->pos.txid = 0;
			db->pos.checksum = 0;
			db->need_snapshot = true;
		}
		fs_db_publish_locked(db);
		pthread_mutex_unlock(&db->mu);
		pthread_mutex_unlock(&db->capture_mu);
	}
	if (!a->wal && !a->offline && a->max_end != a->min_off)
		inval(db, FS_KIND_DB, (int64_t)(a->min_off == UINT64_MAX ?
						0 : a->min_off),
		      a->max_end > a->min_off ?
			      (int64_t)(a->max_end - a->min_off) : 0);
	unlock_record(a);
	if (rc == 0 && a->wal) {
		bool done = false;
		fs_walidx_checkpoint(db->walidx, false, &done);
	} else if (rc == 0 && !a->offline && db->opts.mountpoint &&
		   file_in_wal_mode(db)) {
		/* Now in WAL mode: readers opening it read-only need the
		 * -wal and a valid index before the next record comes. */
		if (open_walidx(db) < 0)
			log_warn("db=%s: cannot set up the WAL index yet; "
				 "retried with the next record", db->name);
	}
out:
	unlock_record(a);
	decoder_done(a->cache, dec);
	free(page);
	return rc;
}

/* A record with commit 0: the database was deleted on the primary. */
static int apply_delete(struct apply *a)
{
	fs_db *db = a->db;
	char path[PATH_MAX];
	bool locked = false;
	bool wal = db->walidx || file_in_wal_mode(db);

	if (db->walidx)
		close_walidx(db);
	/* In WAL mode SQLite holds SHARED for as long as a connection is
	 * open, not only inside a transaction: waiting for EXCLUSIVE would
	 * stall the stream (every database) for the whole apply timeout and
	 * then delete anyway. Take it only if it is free now. */
	if (open_lock_fd(db) == 0)
		locked = (wal ? lock_exclusive_now(db)
			      : lock_exclusive(db, false)) == 0;
	if (!locked && wal)
		log_info("db=%s: deleting it while local connections still "
			 "have it open", db->name);
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	for (int k = FS_KIND_DB; k <= FS_KIND_SHM; k++) {
		if (db->fds[k] < 0)
			continue;
		backing_path(db, (enum fs_kind)k, path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("db=%s: removing %s: %s", db->name, path,
				 strerror(errno));
		close(db->fds[k]);
		db->fds[k] = -1;
	}
	if (db->cksums)
		memset(db->cksums, 0, (size_t)db->ncksums * sizeof(uint64_t));
	db->commit = 0;
	db->pos.txid = a->hdr.max_txid;
	db->pos.checksum = a->tr.post_apply_checksum;
	fs_db_publish_locked(db);
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
	if (locked)
		unlock_exclusive(db);
	close_lock_fd(db);
	for (int k = FS_KIND_DB; k <= FS_KIND_SHM; k++)
		inval(db, (enum fs_kind)k, -1, 0);
	log_info("db=%s: deleted on the primary at TXID %016" PRIx64,
		 db->name, a->hdr.max_txid);
	return 0;
}

static int verify_record(ltx_decoder **cache, int fd, uint64_t off,
			 uint64_t len, ltx_header *hdr, ltx_trailer *tr,
			 char *errbuf, size_t errlen)
{
	fs_range_reader rr = {fd, off, off + len};
	ltx_decoder *dec = NULL;
	int rc = decoder_get(cache, &rr, "record", &dec);

	if (rc < 0) {
		snprintf(errbuf, errlen, "no decoder: %s", strerror(-rc));
		decoder_done(cache, dec);
		return rc;
	}
	rc = ltx_decoder_verify(dec, hdr, tr, NULL);
	if (rc < 0)
		snprintf(errbuf, errlen, "%s", ltx_decoder_err(dec)->msg);
	decoder_done(cache, dec);
	return rc;
}

/* The log synced, then durable told of its position (fs_durable);
 * apply_mu held. A failed sync tells nothing. */
static void made_durable(fs_db *db, const fs_durable *durable)
{
	int rc;

	if (!durable || !durable->fn)
		return;
	rc = fs_log_sync(db->log);
	if (rc < 0) {
		log_error("db=%s: syncing the LTX log to acknowledge records: "
			  "%s", db->name, strerror(-rc));
		return;
	}
	durable->fn(durable->ctx, db, fs_log_get_tail(db->log).pos);
}

static int apply_one(fs_db *db, int fd, uint64_t off, uint64_t len,
		     ltx_decoder **cache, bool nowait,
		     const fs_durable *durable, char *errbuf, size_t errlen)
{
	struct apply a = {.db = db, .src = "record", .fd = fd, .off = off,
			  .len = len, .cache = cache};
	ltx_pos pos;
	int rc;

	snprintf(errbuf, errlen, "ok");
	pthread_mutex_lock(&db->apply_mu);
	if (nowait && db->wait_since_ns) {
		/* The last try of this record (the first not applied) waits
		 * for readers: nothing to verify until it has the lock. */
		rc = lock_exclusive(db, true);
		if (rc < 0) {
			lock_failed(db, rc, errbuf, errlen);
			goto out;
		}
		a.locked = true;
	}
	rc = verify_record(cache, fd, off, len, &a.hdr, &a.tr, errbuf,
			   errlen);
	if (rc < 0) {
		log_warn("db=%s: rejected a record: %s", db->name, errbuf);
		goto out;
	}
	pthread_mutex_lock(&db->capture_mu);
	pos = db->pos;
	pthread_mutex_unlock(&db->capture_mu);
	if (!ltx_header_is_snapshot(&a.hdr) &&
	    (a.hdr.min_txid != pos.txid + 1 ||
	     a.hdr.pre_apply_checksum != pos.checksum)) {
		snprintf(errbuf, errlen, "record %016" PRIx64 "-%016" PRIx64
			 " starts at %016" PRIx64 "/%016" PRIx64 " but the "
			 "database is at %016" PRIx64 "/%016" PRIx64,
			 a.hdr.min_txid, a.hdr.max_txid, a.hdr.min_txid - 1,
			 a.hdr.pre_apply_checksum, pos.txid, pos.checksum);
		log_warn("db=%s: %s", db->name, errbuf);
		rc = -ESTALE;
		goto out;
	}
	if (!a.locked && (rc = lock_for_record(&a, nowait)) < 0) {
		lock_failed(db, rc, errbuf, errlen);
		goto out;
	}
	if (ltx_header_is_snapshot(&a.hdr))
		rc = fs_log_reset(db->log);
	if (rc == 0)
		rc = fs_log_append_raw(db->log, fd, off, len, &a.hdr, &a.tr);
	if (rc < 0) {
		snprintf(errbuf, errlen, "appending to the local log: %s",
			 strerror(-rc));
		goto out;
	}
	made_durable(db, durable);
	rc = a.hdr.commit == 0 ? apply_delete(&a) : apply_record(&a);
	if (rc < 0)
		snprintf(errbuf, errlen, "applying TXID %016" PRIx64 ": %s",
			 a.hdr.max_txid, strerror(-rc));
	else
		log_debug("db=%s: applied TXID %016" PRIx64 "-%016" PRIx64
			  " (%" PRIu64 " bytes, commit %" PRIu32 ")", db->name,
			  a.hdr.min_txid, a.hdr.max_txid, len, a.hdr.commit);
out:
	unlock_record(&a);
	note_pending(db);
	pthread_mutex_unlock(&db->apply_mu);
	if (rc == 0 && db->opts.on_commit)
		db->opts.on_commit(db->opts.commit_ctx, db, fs_db_pos(db));
	return rc;
}

int fs_db_apply_ltx(fs_db *db, int fd, uint64_t off, uint64_t len,
		    char *errbuf, size_t errlen)
{
	return apply_one(db, fd, off, len, NULL, false, NULL, errbuf, errlen);
}

/* --- applying a run of records in one WAL transaction --- */

/* Verifies records (every LTX rule, the file checksum) and takes the
 * longest prefix that can share one WAL transaction: ordinary records
 * (no snapshot, no delete, this page size), each starting where the one
 * before ends, the first at the database's position. apply_mu held.
 * Returns how many; a[] gets their headers and trailers. */
static size_t run_prefix(fs_db *db, int fd, const fs_apply_rec *recs,
			 size_t n, ltx_decoder **cache, struct apply *a)
{
	char err[256];
	ltx_pos pos;
	size_t m;

	pthread_mutex_lock(&db->capture_mu);
	pos = db->pos;
	pthread_mutex_unlock(&db->capture_mu);
	for (m = 0; m < n; m++) {
		a[m] = (struct apply){.db = db, .src = "record", .fd = fd,
				      .off = recs[m].off, .len = recs[m].len,
				      .cache = cache, .wal = true};
		if (verify_record(cache, fd, recs[m].off, recs[m].len,
				  &a[m].hdr, &a[m].tr, err, sizeof(err)) < 0)
			break; /* apply_one rejects it, with the reason */
		if (ltx_header_is_snapshot(&a[m].hdr) || a[m].hdr.commit == 0 ||
		    a[m].hdr.page_size != db->page_size ||
		    a[m].hdr.min_txid != pos.txid + 1 ||
		    a[m].hdr.pre_apply_checksum != pos.checksum)
			break;
		pos.txid = a[m].hdr.max_txid;
		pos.checksum = a[m].tr.post_apply_checksum;
	}
	return m;
}

/* Writes the pages of a[0..m) as one WAL transaction (apply_mu held, the
 * records verified and in the local log): each record's running database
 * checksum must equal its post-apply checksum; the transaction is
 * published once, with the last record's size, so local readers see the
 * state before the run or after it. */
static int apply_run_pages(fs_db *db, struct apply *a, size_t m)
{
	fs_range_reader rr;
	ltx_decoder *dec = NULL;
	uint8_t *page = malloc(db->page_size);
	uint32_t commit0 = db->commit;
	uint64_t sum = db->pos.checksum;
	size_t bad = m;
	int rc;

	if (!page)
		return -ENOMEM;
	rc = fs_walidx_begin(db->walidx, apply_timeout_ms(db));
	for (size_t i = 0; rc == 0 && i < m; i++) {
		ltx_header h;
		rr = (fs_range_reader){a[i].fd, a[i].off, a[i].off + a[i].len};
		rc = decoder_get(a[i].cache, &rr, a[i].src, &dec);
		if (rc == 0)
			rc = ltx_decoder_read_header(dec, &h);
		if (rc == 0) {
			a[i].old_commit = db->commit;
			a[i].old_ps = db->page_size;
			a[i].full = false;
			a[i].sum = sum;
			rc = apply_pages(&a[i], dec, page);
		}
		decoder_done(a[i].cache, dec);
		dec = NULL;
		if (rc < 0)
			break;
		db->commit = a[i].hdr.commit;
		sum = a[i].sum;
		if (sum != a[i].tr.post_apply_checksum) {
			bad = i;
			rc = -EBADMSG;
		}
	}
	if (rc == 0)
		rc = fs_walidx_commit(db->walidx, a[m - 1].hdr.commit, false);
	else
		fs_walidx_abort(db->walidx); /* no-op when begin failed */
	free(page);
	if (rc < 0 && bad == m) {
		/* As for one record: the position stays, nothing of the run
		 * is published. */
		db->commit = commit0;
		log_error("db=%s: applying TXIDs %016" PRIx64 "-%016" PRIx64
			  ": %s", db->name, a[0].hdr.min_txid,
			  a[m - 1].hdr.max_txid, strerror(-rc));
		return rc;
	}
	if (rc < 0) {
		db->commit = commit0;
		log_error("db=%s: after applying TXID %016" PRIx64 " the "
			  "database checksum is %016" PRIx64 " but the "
			  "primary's is %016" PRIx64 ": the local copy was "
			  "damaged; asking for a snapshot", db->name,
			  a[bad].hdr.max_txid, sum,
			  a[bad].tr.post_apply_checksum);
	}
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	if (rc == 0) {
		db->pos.txid = a[m - 1].hdr.max_txid;
		db->pos.checksum = a[m - 1].tr.post_apply_checksum;
	} else {
		db->pos.txid = 0;
		db->pos.checksum = 0;
		db->need_snapshot = true;
	}
	fs_db_publish_locked(db);
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
	return rc;
}

/* After a run of m records: checkpoint now when the WAL holds
 * FS_APPLY_CKPT_FRAMES frames, or when the database has left WAL mode on
 * the primary (readers in rollback mode read the database file alone). */
static bool ckpt_due(fs_db *db, const struct apply *a, size_t m)
{
	if (fs_walidx_pending(db->walidx) >= FS_APPLY_CKPT_FRAMES)
		return true;
	for (size_t i = m; i-- > 0;)
		if (a[i].p1_mode)
			return a[i].p1_mode != 2;
	return !file_in_wal_mode(db);
}

/* Applies what it can of recs as one run; *out_k = records applied (0:
 * recs[0] needs apply_one). */
static int apply_run(fs_db *db, int fd, const fs_apply_rec *recs, size_t n,
		     const fs_durable *durable, ltx_decoder **cache,
		     size_t *out_k, char *errbuf, size_t errlen)
{
	struct apply *a;
	size_t m = 0;
	int rc = 0;

	*out_k = 0;
	if (n > FS_APPLY_RUN_MAX)
		n = FS_APPLY_RUN_MAX;
	a = malloc(n * sizeof(*a));
	if (!a)
		return 0; /* apply_one then */
	pthread_mutex_lock(&db->apply_mu);
	if (db->walidx && db->opts.mountpoint && db->commit > 0 &&
	    db->fds[FS_KIND_DB] >= 0)
		m = run_prefix(db, fd, recs, n, cache, a);
	for (size_t i = 0; i < m; i++) {
		rc = fs_log_append_raw(db->log, fd, a[i].off, a[i].len,
				       &a[i].hdr, &a[i].tr);
		if (rc < 0) {
			snprintf(errbuf, errlen, "appending to the local "
				 "log: %s", strerror(-rc));
			m = i;
			break;
		}
	}
	if (m > 0)
		made_durable(db, durable);
	if (m > 0) {
		int rc2 = apply_run_pages(db, a, m);
		if (rc2 < 0) {
			snprintf(errbuf, errlen, "applying TXIDs %016" PRIx64
				 "-%016" PRIx64 ": %s", a[0].hdr.min_txid,
				 a[m - 1].hdr.max_txid, strerror(-rc2));
			rc = rc2;
		} else {
			*out_k = m;
			log_debug("db=%s: applied TXID %016" PRIx64 "-%016"
				  PRIx64 " (%zu records in one WAL "
				  "transaction, commit %" PRIu32 ")",
				  db->name, a[0].hdr.min_txid,
				  a[m - 1].hdr.max_txid, m,
				  a[m - 1].hdr.commit);
		}
	}
	if (*out_k > 0 && ckpt_due(db, a, *out_k)) {
		bool done = false;
		fs_walidx_checkpoint(db->walidx, false, &done);
	}
	note_pending(db);
	pthread_mutex_unlock(&db->apply_mu);
	free(a);
	if (*out_k > 0 && db->opts.on_commit)
		db->opts.on_commit(db->opts.commit_ctx, db, fs_db_pos(db));
	return rc;
}

int fs_db_apply_batch(fs_db *db, int fd, const fs_apply_rec *recs, size_t n,
		      unsigned flags, const fs_durable *durable,
		      ltx_decoder **cache, size_t *out_done, char *errbuf,
		      size_t errlen)
{
	size_t i = 0;
	int rc = 0;

	snprintf(errbuf, errlen, "ok");
	while (i < n && rc == 0) {
		size_t k = 0;
		rc = apply_run(db, fd, recs + i, n - i, durable, cache, &k,
			       errbuf, errlen);
		if (rc == 0 && k == 0) {
			rc = apply_one(db, fd, recs[i].off, recs[i].len, cache,
				       (flags & FS_APPLY_NOWAIT) != 0, durable,
				       errbuf, errlen);
			k = rc == 0;
		}
		i += k;
	}
	*out_done = i;
	return rc;
}

/* --- start-up of a replica --- */

static int read_trailer(int fd, uint64_t off, uint64_t len, ltx_trailer *tr)
{
	uint8_t b[LTX_TRAILER_SIZE];
	int rc = lib_io_pread_full(fd, b, sizeof(b),
				   (off_t)(off + len - LTX_TRAILER_SIZE), NULL);

	if (rc == 0)
		ltx_trailer_decode(b, tr);
	return rc;
}

/* Replays the log's records after the one whose post-apply checksum is
 * the database file's, into the file (nothing is mounted yet). */
static int replay_after(fs_db *db, uint64_t file_sum)
{
	fs_log_iter *it = NULL;
	int fd;
	uint64_t off, len, from = UINT64_MAX;
	ltx_header h;
	ltx_trailer t;
	ltx_pos at = {0};
	fs_log_stats ls;
	int rc;

	/* Find the last record the file matches (from the first record
	 * retention kept). */
	fs_log_get_stats(db->log, &ls);
	rc = fs_log_iter_open(db->log, ls.first_txid > 1 ? ls.first_txid - 1
							: 0, &it);
	while (rc == 0 && (rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1)
		if ((rc = read_trailer(fd, off, len, &t)) == 0 &&
		    t.post_apply_checksum == file_sum) {
			from = h.max_txid;
			at.txid = h.max_txid;
			at.checksum = t.post_apply_checksum;
			db->commit = h.commit;
			db->page_size = h.page_size;
		}
	fs_log_iter_free(it);
	it = NULL;
	if (rc < 0)
		return rc;
	if (from == UINT64_MAX) {
		/* An empty file and a log that starts with a snapshot. */
		if (file_sum != LTX_CHECKSUM_EMPTY)
			return -ENOENT;
		from = 0;
		db->commit = 0;
	}
	db->pos = at;
	log_warn("db=%s: the database file is at %016" PRIx64 "/%016" PRIx64
		 "; replaying the log's later records", db->name, at.txid,
		 at.checksum);
	rc = fs_log_iter_open(db->log, from, &it);
	while (rc == 0 && (rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1) {
		struct apply a = {.db = db, .src = "log", .fd = fd, .off = off,
				  .len = len, .hdr = h, .offline = true};
		if (h.commit == 0)
			return -ENOENT; /* a delete inside: start afresh */
		rc = read_trailer(fd, off, len, &a.tr);
		if (rc == 0)
			rc = apply_record(&a);
		if (rc == 0 && db->pos.txid != h.max_txid)
			rc = -EBADMSG;
	}
	fs_log_iter_free(it);
	return rc < 0 ? rc : 0;
}

int fs_db_replica_recover(fs_db *db, bool clean)
{
	uint64_t sum;
	int rc;

	/* The WAL and index are rebuilt as records arrive; every committed
	 * record is in the log. */
	for (int k = FS_KIND_WAL; k <= FS_KIND_SHM; k++)
		if (db->fds[k] >= 0 && lib_io_ftruncate(db->fds[k], 0) < 0)
			return -EIO;
	if (db->fds[FS_KIND_JOURNAL] >= 0) {
		char path[PATH_MAX];
		backing_path(db, FS_KIND_JOURNAL, path, sizeof(path));
		close(db->fds[FS_KIND_JOURNAL]);
		db->fds[FS_KIND_JOURNAL] = -1;
		unlink(path);
	}
	if (clean || db->pos.txid == 0)
		goto done;
	if (db->commit == 0 && db->fds[FS_KIND_DB] < 0)
		goto done; /* deleted */
	rc = fs_db_scan_checksum(db, &sum);
	if (rc == 0 && sum == db->pos.checksum)
		goto done;
	rc = rc < 0 ? rc : replay_after(db, rc == 0 ? sum : 0);
	if (rc < 0) {
		log_warn("db=%s: the database cannot be brought to its log's "
			 "position (%s); starting afresh from a snapshot of "
			 "the primary", db->name, strerror(-rc));
		rc = fs_log_reset(db->log);
		if (rc == 0 && db->fds[FS_KIND_DB] >= 0)
			rc = lib_io_ftruncate(db->fds[FS_KIND_DB], 0);
		if (rc < 0)
			return rc;
		db->pos.txid = 0;
		db->pos.checksum = 0;
		db->commit = 0;
		if (db->cksums)
			memset(db->cksums, 0,
			       (size_t)db->ncksums * sizeof(uint64_t));
	}
done:
	db->readonly = true;
	return 0;
}

void fs_db_apply_prepare(fs_db *db)
{
	pthread_mutex_lock(&db->apply_mu);
	if (!db->walidx && db->opts.mountpoint && db->commit > 0 &&
	    fs_db_readonly(db) && file_in_wal_mode(db) && open_walidx(db) < 0)
		log_warn("db=%s: cannot set up the WAL index yet; retried with "
			 "the next record", db->name);
	pthread_mutex_unlock(&db->apply_mu);
}

void fs_db_release_apply(fs_db *db)
{
	pthread_mutex_lock(&db->apply_mu);
	if (db->walidx) {
		bool done = false;
		uint32_t published;
		int rc;
		fs_walidx_checkpoint(db->walidx, true, &done);
		if (!done) {
			log_warn("db=%s: local readers kept %" PRIu32 " WAL "
				 "frames from being checkpointed at close; the "
				 "next start replays the log", db->name,
				 fs_walidx_pending(db->walidx));
			db->apply_unclean = true;
		}
		published = fs_walidx_published(db->walidx);
		close_walidx(db);
		/* SQLite may append to this WAL once the node is primary. */
		pthread_mutex_lock(&db->mu);
		rc = fs_db_wal_adopt_locked(db, published);
		pthread_mutex_unlock(&db->mu);
		if (rc < 0)
			log_warn("db=%s: taking over the WAL the replica "
				 "wrote: %s (frames written past a header "
				 "ltxfs does not track are refused)",
				 db->name, strerror(-rc));
	}
	close_lock_fd(db);
	note_pending(db);
	pthread_mutex_unlock(&db->apply_mu);
}

int fs_db_abandon_txn(fs_db *db)
{
	char sj[FS_JOURNAL_SUPER_MAX] = "";
	enum fs_sj_fate fate = FS_SJ_NONE;
	uint8_t magic[8];
	size_t got = 0;
	uint32_t restored = 0;
	uint64_t sum = 0;
	char path[PATH_MAX];
	bool hot = false;
	int rc;

	pthread_mutex_lock(&db->mu);
	if (db->fds[FS_KIND_JOURNAL] >= 0 &&
	    lib_io_pread_full(db->fds[FS_KIND_JOURNAL], magic, 8, 0, &got) ==
		    0)
		hot = fs_journal_has_magic(magic, got);
	pthread_mutex_unlock(&db->mu);
	if (!hot)
		return 0;
	pthread_mutex_lock(&db->apply_mu);
	rc = open_lock_fd(db);
	if (rc == 0)
		rc = lock_exclusive(db, false); /* the writer's txn ends */
	if (rc < 0)
		goto out;
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	if (db->fds[FS_KIND_JOURNAL] >= 0 && db->fds[FS_KIND_DB] >= 0 &&
	    lib_io_pread_full(db->fds[FS_KIND_JOURNAL], magic, 8, 0, &got) ==
		    0 &&
	    fs_journal_has_magic(magic, got)) {
		/* A part of a transaction across attached databases whose
		 * super-journal is gone committed (and is in the log): only
		 * its journal goes, as SQLite would finalise it. */
		rc = fs_sj_journal_fate(db->fds[FS_KIND_JOURNAL], db->data_dir,
					db->opts.mountpoint, &fate, sj,
					sizeof(sj));
		if (rc == 0 && fate != FS_SJ_COMMITTED)
			rc = fs_journal_rollback(db->fds[FS_KIND_JOURNAL],
						 db->fds[FS_KIND_DB],
						 &restored);
		backing_path(db, FS_KIND_JOURNAL, path, sizeof(path));
		close(db->fds[FS_KIND_JOURNAL]);
		db->fds[FS_KIND_JOURNAL] = -1;
		unlink(path);
		db->journal_live = false;
		db->ndirty = 0;
		if (db->dirty_bits)
			memset(db->dirty_bits, 0, db->ndirty_bits);
	}
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
	if (rc == 0)
		rc = fs_db_scan_checksum(db, &sum);
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	if (rc < 0 || sum != db->pos.checksum) {
		log_warn("db=%s: the transaction left unfinished when this node "
			 "stopped being primary could not be rolled back cleanly "
			 "(%s); asking the primary for a snapshot", db->name,
			 rc < 0 ? strerror(-rc) : "checksum differs");
		db->pos.txid = 0;
		db->pos.checksum = 0;
		db->need_snapshot = true;
		fs_db_publish_locked(db);
	} else if (fate == FS_SJ_COMMITTED) {
		log_warn("db=%s: removed the journal left when this node stopped "
			 "being primary: its transaction across attached "
			 "databases had committed (its super-journal %s is gone) "
			 "and is in the log", db->name, sj);
	} else {
		log_warn("db=%s: rolled back the transaction left unfinished "
			 "when this node stopped being primary (%" PRIu32
			 " pages restored; it was never committed)", db->name,
			 restored);
	}
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
	inval(db, FS_KIND_JOURNAL, -1, 0);
	inval(db, FS_KIND_DB, 0, 0);
	unlock_exclusive(db);
	rc = 0;
out:
	pthread_mutex_unlock(&db->apply_mu);
	return rc;
}
