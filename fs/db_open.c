/*
 * Opening and closing a database: start-up recovery and the clean marker.
 *
 * Start-up, in order:
 *  1. open the log; its tail is the position (TXID, checksum, commit);
 *  2. a hot journal (header magic present) is either a transaction the
 *     log already has (database checksum = the log's: the journal is
 *     deleted, completing the commit) or one it does not (rolled back);
 *     one that points to a super-journal follows SQLite's rule instead
 *     (recover_journal);
 *  3. the WAL's committed frames are read: those the log has refresh page
 *     checksums, later ones are captured;
 *  4. a database with no committed page whose file is not empty (a
 *     first load the daemon stopped before recording) is recorded as a
 *     snapshot when it is a complete database, else emptied (db_load.c);
 *  5. unless the last stop was clean (the marker file `clean` holds the
 *     same position), the whole database is checksummed against the log;
 *     a mismatch is a loud error and the database is not served.
 * The marker is removed before serving, and written again by a clean
 * close after everything is durable, so a crash always means a check.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "db_i.h"
#include "journal.h"
#include "superjournal.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"

static int open_backing_existing(fs_db *db, enum fs_kind k)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", db->dir, fs_kind_backing[k]);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	db->fds[k] = fd;
	return 0;
}

static int read_marker(fs_db *db, ltx_pos *out)
{
	char path[PATH_MAX], buf[LTX_POS_STRLEN + 2] = {0};
	int fd, rc;
	size_t got = 0;

	snprintf(path, sizeof(path), "%s/clean", db->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = lib_io_read_full(fd, buf, LTX_POS_STRLEN + 1, &got);
	close(fd);
	if (rc < 0)
		return rc;
	if (got != LTX_POS_STRLEN + 1 || buf[LTX_POS_STRLEN] != '\n')
		return -EBADMSG;
	buf[LTX_POS_STRLEN] = '\0';
	return ltx_pos_parse(buf, out);
}

static int remove_marker(fs_db *db)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/clean", db->dir);
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	return lib_io_fsync_dir(db->dir);
}

static int write_marker(fs_db *db)
{
	char text[LTX_POS_STRLEN + 2];

	ltx_pos_format(db->pos, text);
	text[LTX_POS_STRLEN] = '\n';
	return lib_io_write_file_atomic(db->dir, "clean", text,
					LTX_POS_STRLEN + 1);
}

/* Records the database as it now is, every page, as the next TXID when
 * it differs from the log's last state (what says why, in a warn line);
 * nothing when it does not. */
static int record_whole(fs_db *db, const char *what)
{
	uint64_t sum;
	uint32_t pages;
	ltx_err err = {0};
	int rc;

	if (db->pos.txid == 0 || db->page_size == 0)
		return 0;
	rc = ltx_dbfile_checksum(db->fds[FS_KIND_DB], db->page_size, &pages,
				 &sum, &err);
	if (rc < 0) {
		log_error("db=%s: checksum scan: %s", db->name, err.msg);
		return rc;
	}
	if (sum == db->pos.checksum)
		return 0;
	log_warn("db=%s: %s: recording all %" PRIu32 " pages as TXID %016"
		 PRIx64, db->name, what, pages, db->pos.txid + 1);
	db->capture_full = true;
	rc = fs_db_capture(db, NULL, 0, pages, db->page_size, 0, 0, 0, 0);
	db->capture_full = false;
	return rc;
}

/*
 * After a hot journal's playback the database is SQLite's last committed
 * state, but not always byte for byte: SQLite does not journal a page it
 * reuses from the freelist (its old content is garbage to SQLite), so
 * such a page keeps what the interrupted transaction wrote. The log's
 * checksum then differs although nothing committed is missing. The
 * database as it now is gets recorded as the next transaction, with
 * every page (replicas apply it like any other), instead of refusing to
 * serve a database that SQLite finds consistent. The same happens when a
 * part of a transaction across attached databases that the log already
 * had is rolled back (its super-journal was still there: the daemon died
 * between recording the parts and deleting it).
 */
static int record_rollback(fs_db *db)
{
	char what[160];

	snprintf(what, sizeof(what), "after the playback the database "
		 "differs from its log at TXID %016" PRIx64 " (reused free "
		 "pages SQLite does not restore, or a rolled-back part the log "
		 "had)", db->pos.txid);
	return record_whole(db, what);
}

/* Drops the journal's backing file, durably. */
static int remove_journal(fs_db *db)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", db->dir,
		 fs_kind_backing[FS_KIND_JOURNAL]);
	close(db->fds[FS_KIND_JOURNAL]);
	db->fds[FS_KIND_JOURNAL] = -1;
	if (unlink(path) < 0)
		return -errno;
	return lib_io_fsync_dir(db->dir);
}

/*
 * A hot journal, decided as SQLite decides it, with what ltxfs knows:
 *  - it points to a super-journal that is gone: a transaction across
 *    attached databases that committed; nothing is played back. Its part
 *    is normally in the log already (recorded when the super-journal was
 *    deleted); when it is not, the database as it is gets recorded;
 *  - it points to one that exists: rolled back, whatever the log holds;
 *  - it points to none: a transaction the log already has (the database's
 *    checksum is the log's: the capture precedes the journal's end) is
 *    completed, any other is rolled back.
 */
static int recover_journal(fs_db *db)
{
	char sj[FS_JOURNAL_SUPER_MAX], what[FS_JOURNAL_SUPER_MAX + 200];
	enum fs_sj_fate fate;
	uint8_t magic[8];
	size_t got = 0;
	uint64_t sum;
	uint32_t restored = 0;
	int rc;

	if (db->fds[FS_KIND_JOURNAL] < 0 || db->fds[FS_KIND_DB] < 0)
		return 0;
	rc = lib_io_pread_full(db->fds[FS_KIND_JOURNAL], magic, 8, 0, &got);
	if (rc == -ENODATA || !fs_journal_has_magic(magic, got))
		return 0;
	if (rc < 0)
		return rc;
	rc = fs_sj_journal_fate(db->fds[FS_KIND_JOURNAL], db->data_dir,
				db->opts.mountpoint, &fate, sj, sizeof(sj));
	if (rc < 0)
		return rc;
	/* At the log's page size: a file that is not even a whole number
	 * of its pages (a VACUUM to another page size cut short) is not
	 * the log's last state, so it is rolled back. */
	rc = fs_db_scan_checksum(db, &sum);
	if (rc < 0 && rc != -EBADMSG)
		return rc;
	if (rc < 0)
		sum = 0; /* not a whole number of pages: not the log's */
	if (fate == FS_SJ_COMMITTED) {
		if (db->pos.txid && sum == db->pos.checksum) {
			log_warn("db=%s: hot journal of a transaction across "
				 "attached databases that committed (its "
				 "super-journal %s is gone) and that the log has "
				 "(TXID %016" PRIx64 "): removing it", db->name,
				 sj, db->pos.txid);
		} else {
			snprintf(what, sizeof(what), "hot journal of a "
				 "transaction across attached databases that "
				 "committed (its super-journal %s is gone) but "
				 "is not in the log", sj);
			rc = record_whole(db, what);
			if (rc < 0)
				return rc;
		}
	} else if (fate == FS_SJ_NONE && db->pos.txid &&
		   sum == db->pos.checksum) {
		log_warn("db=%s: hot journal of a transaction the log already "
			 "has (TXID %016" PRIx64 "): completing its commit",
			 db->name, db->pos.txid);
	} else {
		rc = fs_journal_rollback(db->fds[FS_KIND_JOURNAL],
					 db->fds[FS_KIND_DB], &restored);
		if (rc < 0) {
			log_error("db=%s: rolling back the hot journal: %s",
				  db->name, strerror(-rc));
			return rc;
		}
		if (fate == FS_SJ_ROLL_BACK)
			log_warn("db=%s: rolled back a hot journal left by a "
				 "crash (%" PRIu32 " pages restored): its "
				 "transaction across attached databases did not "
				 "commit (its super-journal %s is still there)",
				 db->name, restored, sj);
		else
			log_warn("db=%s: rolled back a hot journal left by a "
				 "crash (%" PRIu32 " pages restored)", db->name,
				 restored);
		rc = record_rollback(db);
		if (rc < 0)
			return rc;
	}
	return remove_journal(db);
}

/* Checks the whole database against the log, filling every checksum. */
static int verify_full(fs_db *db, char *why, size_t whylen)
{
	uint8_t *buf = NULL;
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	uint32_t lock;
	int rc = 0;

	if (db->page_size == 0 || db->commit == 0)
		return 0;
	lock = ltx_lock_pgno(db->page_size);
	buf = malloc(db->page_size);
	if (!buf)
		return -ENOMEM;
	for (uint32_t p = 1; p <= db->commit; p++) {
		uint64_t c;
		if (p == lock)
			continue;
		rc = fs_db_cksum_get(db, p, &c);
		if (rc < 0)
			break;
		sum = ltx_checksum_xor(sum, c);
	}
	free(buf);
	if (rc < 0)
		return rc;
	if (sum != db->pos.checksum) {
		snprintf(why, whylen, "the database's checksum %016" PRIx64
			 " does not match its LTX log at %016" PRIx64 "/%016"
			 PRIx64, sum, db->pos.txid, db->pos.checksum);
		log_error("db=%s: %s; refusing to serve it (run `ltxfs verify`, "
			  "or restore it from a replica)", db->name, why);
		return -EBADMSG;
	}
	return 0;
}

static int recover(fs_db *db, char *why, size_t whylen)
{
	fs_log_tail tail = fs_log_get_tail(db->log);
	ltx_pos marker = {0};
	bool clean;
	int rc;

	db->pos = tail.pos;
	db->commit = tail.commit;
	db->page_size = tail.page_size;
	/* The committed pages are the log's, at its page size, even when
	 * the file's header says another (a hot journal of a VACUUM that
	 * changed it, rolled back below). */
	if (db->commit == 0 && db->fds[FS_KIND_DB] >= 0) {
		struct stat st;
		uint32_t ps;
		ltx_err err = {0};
		if (fstat(db->fds[FS_KIND_DB], &st) == 0 && st.st_size >= 100 &&
		    ltx_dbfile_page_size(db->fds[FS_KIND_DB], &ps, &err) == 0)
			db->page_size = ps;
	}
	clean = read_marker(db, &marker) == 0 &&
		marker.txid == db->pos.txid &&
		marker.checksum == db->pos.checksum;
	rc = remove_marker(db);
	if (rc < 0)
		return rc;
	if (db->opts.readonly) {
		rc = fs_db_replica_recover(db, clean);
		if (rc == 0 && !clean && db->pos.txid)
			rc = verify_full(db, why, whylen);
		if (rc < 0)
			return rc;
		db->pub_pos = db->pos;
		return 0;
	}
	rc = recover_journal(db);
	if (rc < 0)
		return rc;
	rc = fs_db_wal_recover(db, clean);
	if (rc < 0)
		return rc;
	if (db->commit == 0) {
		/* No committed page: a file there is a first load the daemon
		 * stopped before recording it (or one put in the data
		 * directory): recorded if complete, else emptied. */
		db->page_size = 0;
		rc = fs_db_load_recover(db);
		if (rc < 0)
			return rc;
		clean = true;
	}
	if (!clean && db->pos.txid && db->commit) {
		/* Only a database with committed pages has anything to
		 * check: a new one, a deleted one or an empty name has not. */
		log_info("db=%s: last stop was not clean: checking its %" PRIu32
			 " pages against its log at TXID %016" PRIx64, db->name,
			 db->commit, db->pos.txid);
		rc = verify_full(db, why, whylen);
		if (rc < 0)
			return rc;
	}
	db->pub_pos = db->pos;
	return 0;
}

int fs_db_open(const char *data_dir, const char *name, const fs_db_opts *opts,
	       fs_db **out, char *why, size_t whylen)
{
	char path[PATH_MAX], reason[FS_LOG_WHY_MAX] = "";
	fs_db *db = calloc(1, sizeof(*db));
	int rc;

	*out = NULL;
	if (!db)
		return -ENOMEM;
	for (int k = 0; k <= FS_KIND_SHM; k++)
		db->fds[k] = -1;
	db->last_hdr_off = UINT64_MAX;
	pthread_mutex_init(&db->mu, NULL);
	pthread_mutex_init(&db->capture_mu, NULL);
	pthread_mutex_init(&db->apply_mu, NULL);
	pthread_cond_init(&db->cond, NULL);
	db->lock_fd = -1;
	db->hold_fd = -1;
	db->opts = *opts;
	db->name = strdup(name);
	db->data_dir = strdup(data_dir);
	if (asprintf(&db->dir, "%s/dbs/%s", data_dir, name) < 0)
		db->dir = NULL;
	if (!db->name || !db->dir || !db->data_dir) {
		rc = -ENOMEM;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/dbs", data_dir);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	if (mkdir(db->dir, 0755) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/log", db->dir);
	rc = fs_log_open(path, name, &db->log, reason, sizeof(reason));
	if (rc < 0)
		goto fail;
	for (int k = 0; k <= FS_KIND_SHM; k++) {
		rc = open_backing_existing(db, (enum fs_kind)k);
		if (rc < 0)
			goto fail;
	}
	rc = recover(db, reason, sizeof(reason));
	if (rc < 0)
		goto fail;
	db->opened = true;
	*out = db;
	return 0;
fail:
	if (!reason[0])
		snprintf(reason, sizeof(reason), "%s", strerror(-rc));
	if (rc != -EBADMSG) /* damage is logged where it is found */
		log_error("db=%s: cannot open: %s", name, reason);
	if (why && whylen)
		snprintf(why, whylen, "%s", reason);
	fs_db_close(db);
	return rc;
}

int fs_db_discard(const char *data_dir, const char *name, char *aside,
		  size_t asidelen)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	static const char *const files[] = {"database", "journal", "wal",
					    "shm", "clean"};
	struct stat st;
	int rc;

	snprintf(dir, sizeof(dir), "%s/dbs/%s", data_dir, name);
	if (aside && asidelen)
		aside[0] = '\0';
	snprintf(path, sizeof(path), "%s/log", dir);
	if (stat(path, &st) == 0) {
		rc = fs_log_set_aside(path, path, aside, asidelen);
		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno; /* the caller logs it */
	}
	return lib_io_fsync_dir(dir);
}

void fs_db_close(fs_db *db)
{
	bool clean;

	if (!db)
		return;
	if (db->opened) {
		fs_db_release_apply(db);
		pthread_mutex_lock(&db->mu);
		if (fs_db_drain_locked(db) < 0)
			log_warn("db=%s: closing with WAL transactions that a "
				 "full disk keeps out of the LTX log; they stay "
				 "in the WAL and are captured at the next start",
				 db->name);
		pthread_mutex_unlock(&db->mu);
		clean = !db->capture_err && !db->q_head && !db->apply_unclean;
		for (int k = 0; k <= FS_KIND_WAL; k++)
			if (db->fds[k] >= 0 && lib_io_fsync(db->fds[k]) < 0)
				clean = false;
		if (clean && fs_log_sync(db->log) == 0 && write_marker(db) == 0)
			log_info("db=%s: closed cleanly at %016" PRIx64
				 "/%016" PRIx64, db->name, db->pos.txid,
				 db->pos.checksum);
	}
	while (db->q_head) {
		fs_wal_txn *t = db->q_head;
		db->q_head = t->next;
		free(t);
	}
	for (int k = 0; k <= FS_KIND_SHM; k++)
		if (db->fds[k] >= 0)
			close(db->fds[k]);
	fs_log_close(db->log);
	pthread_mutex_destroy(&db->mu);
	pthread_mutex_destroy(&db->capture_mu);
	pthread_mutex_destroy(&db->apply_mu);
	free(db->primary);
	pthread_cond_destroy(&db->cond);
	ZSTD_freeCCtx(db->zstd_cctx);
	free(db->cksums);
	fs_db_undo_free(db);
	free(db->dirty);
	free(db->dirty_bits);
	free(db->frames);
	free(db->frame_buf);
	free(db->wal_pages);
	free(db->name);
	free(db->dir);
	free(db->data_dir);
	free(db);
}
