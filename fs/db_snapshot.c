/*
 * The primary's snapshot of a database at its current position, for a
 * replica that is new, too far behind, ahead or diverged.
 *
 * Consistency without stopping writers for long: a freeze (fs_db.freeze)
 * holds back anything that would start a rollback transaction, checkpoint
 * into the database file, or restart the WAL; transactions already open
 * finish. Once no rollback transaction is open and every WAL commit is
 * captured, the position P is read together with the end E of the WAL
 * range captured so far. The pages of P are then: for a page with a frame
 * in the WAL before E, its last such frame; otherwise the database file's
 * page. New WAL commits may append beyond E meanwhile (they are recorded
 * as P+1, ... and streamed after the snapshot). The freeze ends when the
 * pages are read, before the snapshot is sent.
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
#include <time.h>
#include <unistd.h>

#include "db_i.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/encoder.h"

struct fd_writer {
	int fd;
	uint64_t off;
};

static int write_fd_at(void *ctx, const void *buf, size_t n)
{
	struct fd_writer *w = ctx;
	int rc = lib_io_pwrite_full(w->fd, buf, n, (off_t)w->off);

	if (rc == 0)
		w->off += n;
	return rc;
}

static bool journal_open(fs_db *db)
{
	struct stat st;

	return db->fds[FS_KIND_JOURNAL] >= 0 &&
	       fstat(db->fds[FS_KIND_JOURNAL], &st) == 0 && st.st_size > 0;
}

void fs_db_wait_snapshot_locked(fs_db *db, bool txn_open)
{
	while (db->freeze > db->holds && !txn_open)
		pthread_cond_wait(&db->cond, &db->mu);
}

void fs_db_wait_hold_wal_locked(fs_db *db, uint64_t off)
{
	/* A transaction's first write: a new WAL header, or the first frame
	 * header after the last commit with nothing of its own written. */
	bool first = off == 0 || (off == db->wal_txn_start &&
				  db->wal_valid == db->wal_txn_start &&
				  db->nframes == 0);

	while (first && db->holds > 0 && db->hold_commit_seen)
		pthread_cond_wait(&db->cond, &db->mu);
}

static void unfreeze(fs_db *db)
{
	pthread_mutex_lock(&db->mu);
	db->freeze--;
	pthread_cond_broadcast(&db->cond);
	pthread_mutex_unlock(&db->mu);
}

/* Maps each page to its last WAL frame before end (0: none). */
static int wal_overlay(fs_db *db, uint64_t end, uint32_t ps, uint32_t commit,
		       uint64_t **out)
{
	uint64_t fsz = FS_WAL_FRAME_HDR_SIZE + (uint64_t)ps;
	uint64_t *map;
	uint8_t h[FS_WAL_FRAME_HDR_SIZE];
	int rc = 0;

	*out = NULL;
	if (end <= FS_WAL_HDR_SIZE || db->fds[FS_KIND_WAL] < 0)
		return 0;
	map = calloc((size_t)commit + 1, sizeof(*map));
	if (!map)
		return -ENOMEM;
	for (uint64_t off = FS_WAL_HDR_SIZE; off + fsz <= end; off += fsz) {
		uint32_t pgno;
		rc = lib_io_pread_full(db->fds[FS_KIND_WAL], h, sizeof(h),
				       (off_t)off, NULL);
		if (rc < 0)
			break;
		pgno = get_be32(h);
		if (pgno >= 1 && pgno <= commit)
			map[pgno] = off + FS_WAL_FRAME_HDR_SIZE;
	}
	if (rc < 0) {
		free(map);
		return rc;
	}
	*out = map;
	return 0;
}

int fs_db_snapshot_ltx(fs_db *db, int out_fd, ltx_header *out_hdr,
		       uint64_t *out_len)
{
	struct fd_writer w = {out_fd, 0};
	ltx_encoder *enc = NULL;
	ltx_header h = {0};
	ltx_trailer t;
	ltx_err err = {0};
	uint64_t *map = NULL, sum = LTX_CHECKSUM_EMPTY, wal_end;
	uint8_t *page = NULL;
	ltx_pos pos;
	uint32_t ps, commit, lock;
	int rc;

	pthread_mutex_lock(&db->mu);
	db->freeze++;
	while (journal_open(db)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 2000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&db->cond, &db->mu, &ts);
	}
	/* While a full disk keeps WAL transactions out of the log, the
	 * snapshot is of the last one in it: checkpoints wait too, so the
	 * database file and the WAL up to cap_wal_end still hold it. */
	(void)fs_db_drain_locked(db);
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_lock(&db->capture_mu);
	pthread_mutex_lock(&db->mu);
	pos = db->pos;
	ps = db->page_size;
	commit = db->commit;
	wal_end = db->cap_wal_end;
	pthread_mutex_unlock(&db->mu);
	pthread_mutex_unlock(&db->capture_mu);
	if (commit == 0 || ps == 0 || db->fds[FS_KIND_DB] < 0) {
		rc = -ENOENT;
		goto out;
	}
	rc = wal_overlay(db, wal_end, ps, commit, &map);
	if (rc < 0)
		goto out;
	page = malloc(ps);
	if (!page) {
		rc = -ENOMEM;
		goto out;
	}
	h.flags = db->opts.zstd_level > 0 ? LTX_FLAG_COMPRESS_ZSTD : 0;
	h.page_size = ps;
	h.commit = commit;
	h.min_txid = 1;
	h.max_txid = pos.txid;
	h.timestamp = lib_clock_wall_ms();
	h.node_id = db->opts.node_id;
	rc = ltx_encoder_new(&h, db->opts.zstd_level, write_fd_at, &w, &enc,
			     &err);
	lock = ltx_lock_pgno(ps);
	for (uint32_t p = 1; rc == 0 && p <= commit; p++) {
		int fd = db->fds[FS_KIND_DB];
		uint64_t off = (uint64_t)(p - 1) * ps;
		if (p == lock)
			continue;
		if (map && map[p]) {
			fd = db->fds[FS_KIND_WAL];
			off = map[p];
		}
		rc = lib_io_pread_full(fd, page, ps, (off_t)off, NULL);
		if (rc == -ENODATA)
			rc = -EIO;
		if (rc == 0) {
			sum = ltx_checksum_xor(sum, ltx_checksum_page(p, page,
								      ps));
			rc = ltx_encoder_add_page(enc, p, page, &err);
		}
	}
	unfreeze(db);
	if (rc == 0 && sum != pos.checksum) {
		log_error("db=%s: snapshot at TXID %016" PRIx64 " has checksum "
			  "%016" PRIx64 " but the position says %016" PRIx64,
			  db->name, pos.txid, sum, pos.checksum);
		rc = -EBADMSG;
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, sum, &t, &err);
	if (rc < 0 && err.msg[0])
		log_error("db=%s: snapshot: %s", db->name, err.msg);
	if (rc == 0) {
		*out_hdr = h;
		*out_len = w.off;
	}
	ltx_encoder_free(enc);
	free(map);
	free(page);
	return rc;
out:
	unfreeze(db);
	free(map);
	return rc;
}

/* SQLite's WAL write lock: byte 120 of the -shm, held by the one writer
 * for its write transaction (SQLITE.md, "POSIX locks on -shm"). */
#define SHM_WRITE_LOCK 120

/* Opens <mount>/<name>-shm for the WAL write lock. None (no -shm: no
 * SQLite connection has the database open in WAL mode, so no WAL
 * transaction can be in flight) is not an error. */
static void hold_wal_open(fs_db *db)
{
	char path[PATH_MAX];
	int n;

	if (!db->opts.mountpoint || !fs_db_has(db, FS_KIND_SHM))
		return;
	n = snprintf(path, sizeof(path), "%s/%s-shm", db->opts.mountpoint,
		     db->name);
	if (n < 0 || (size_t)n >= sizeof(path))
		return;
	db->hold_fd = open(path, O_RDWR | O_CLOEXEC);
	if (db->hold_fd < 0 && errno != ENOENT)
		log_warn("db=%s: handoff: cannot open %s (%s): WAL write "
			 "transactions are not waited for", db->name, path,
			 strerror(errno));
}

void fs_db_hold_txns(fs_db *db, bool hold)
{
	if (!hold) {
		if (db->hold_waited && fs_db_txn_open(db))
			log_warn("db=%s: handoff: a write transaction is still "
				 "open; it fails, as this node no longer "
				 "accepts writes", db->name);
		else if (db->hold_waited)
			log_info("db=%s: handoff: the open write transaction "
				 "finished", db->name);
		if (db->hold_fd >= 0) {
			if (db->hold_locked)
				(void)lib_io_ofd_trylock(db->hold_fd, F_UNLCK,
							 SHM_WRITE_LOCK, 1);
			close(db->hold_fd);
		}
		db->hold_fd = -1;
		db->hold_locked = false;
		db->hold_waited = false;
		pthread_mutex_lock(&db->mu);
		/* WAL commits that arrived during the hold are captured (and
		 * announced to the streams) before the caller moves on (not
		 * while a full disk blocks capture: the handoff is refused
		 * then, replica/lease_etcd.c). */
		(void)fs_db_drain_locked(db);
		db->holds--;
		db->hold_commit_seen = false;
		pthread_mutex_unlock(&db->mu);
		unfreeze(db);
		return;
	}
	pthread_mutex_lock(&db->mu);
	db->freeze++;
	db->holds++;
	db->hold_commit_seen = false;
	pthread_mutex_unlock(&db->mu);
	hold_wal_open(db);
	if (fs_db_txn_open(db)) {
		db->hold_waited = true;
		log_info("db=%s: handoff: new write transactions wait; waiting "
			 "for the open one to finish", db->name);
	}
}

bool fs_db_txn_open(fs_db *db)
{
	bool open, committed;

	pthread_mutex_lock(&db->mu);
	open = journal_open(db);
	committed = db->hold_commit_seen;
	pthread_mutex_unlock(&db->mu);
	if (db->hold_fd >= 0 && !db->hold_locked) {
		int rc = lib_io_ofd_trylock(db->hold_fd, F_WRLCK,
					    SHM_WRITE_LOCK, 1);
		if (rc == 0)
			db->hold_locked = true;
		else if (rc != -EBUSY)
			log_warn("db=%s: handoff: WAL write lock: %s",
				 db->name, strerror(-rc));
		/* Taken by another writer after the open transaction
		 * committed: a new transaction, held at its first write. */
		open = open || (rc == -EBUSY && !committed);
	}
	return open;
}
