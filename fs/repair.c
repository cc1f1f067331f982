/* `ltxfs repair`'s steps on the data directory: see repair.h. */
#include "repair.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "superjournal.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "livedb.h"
#include "log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"

/* Plays a hot journal back into the database file and removes it, as
 * SQLite would: one that points to a super-journal that is gone belongs
 * to a transaction across attached databases that committed, and is only
 * removed. *out_pages: pages restored, -1 when there was no hot journal,
 * -2 when it was removed without a playback. */
static int play_back_journal(const char *dir, const char *data_dir,
			     const char *mountpoint, int64_t *out_pages,
			     char *msg, size_t msglen)
{
	char jpath[PATH_MAX], dpath[PATH_MAX], sj[FS_JOURNAL_SUPER_MAX];
	enum fs_sj_fate fate = FS_SJ_NONE;
	uint8_t magic[8];
	size_t got = 0;
	uint32_t restored = 0;
	int jfd, dfd = -1, rc;

	*out_pages = -1;
	snprintf(jpath, sizeof(jpath), "%s/journal", dir);
	jfd = open(jpath, O_RDONLY | O_CLOEXEC);
	if (jfd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = lib_io_pread_full(jfd, magic, sizeof(magic), 0, &got);
	if (rc == -ENODATA || (rc == 0 && !fs_journal_has_magic(magic, got))) {
		close(jfd);
		return 0; /* not hot: nothing to undo */
	}
	if (rc == 0)
		rc = fs_sj_journal_fate(jfd, data_dir, mountpoint, &fate, sj,
					sizeof(sj));
	snprintf(dpath, sizeof(dpath), "%s/database", dir);
	dfd = rc == 0 && fate != FS_SJ_COMMITTED
		      ? open(dpath, O_RDWR | O_CLOEXEC) : -1;
	if (rc == 0 && fate != FS_SJ_COMMITTED && dfd < 0)
		rc = -errno;
	if (rc == 0 && dfd >= 0)
		rc = fs_journal_rollback(jfd, dfd, &restored);
	if (rc == 0 && dfd >= 0)
		rc = lib_io_fsync(dfd);
	close(jfd);
	if (dfd >= 0)
		close(dfd);
	if (rc == 0 && unlink(jpath) < 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(msg, msglen, "playing back the hot journal: %s",
			 strerror(-rc));
		return rc;
	}
	*out_pages = fate == FS_SJ_COMMITTED ? -2 : (int64_t)restored;
	return 0;
}

/* Writes the WAL's committed frames into the database file and cuts the
 * file to the database's size. *out_frames: pages copied. */
static int checkpoint_wal(fs_live_db *l, uint32_t *out_frames, char *msg,
			  size_t msglen)
{
	uint8_t *buf = malloc(l->page_size ? l->page_size : 1);
	int rc = 0;

	*out_frames = 0;
	if (!buf)
		return -ENOMEM;
	for (uint32_t p = 1; rc == 0 && p <= l->pages; p++) {
		if (p >= l->nframe_off || !l->frame_off[p])
			continue;
		rc = fs_live_read(l, p, buf);
		if (rc == 0)
			rc = lib_io_pwrite_full(l->db_fd, buf, l->page_size,
						(off_t)(p - 1) * l->page_size);
		if (rc == 0)
			(*out_frames)++;
	}
	free(buf);
	if (rc == 0)
		rc = lib_io_ftruncate(l->db_fd,
				      (off_t)l->pages * l->page_size);
	if (rc == 0)
		rc = lib_io_fsync(l->db_fd);
	if (rc < 0)
		snprintf(msg, msglen, "writing the WAL's committed frames into "
			 "the database file: %s", strerror(-rc));
	return rc;
}

int fs_repair_settle(const char *dir, const char *data_dir,
		     const char *mountpoint, const char *name,
		     uint32_t *out_pages, char *msg, size_t msglen)
{
	static const char *const gone[] = {"wal", "shm"};
	char path[PATH_MAX], done[200] = "";
	fs_live_db l;
	int64_t restored;
	uint32_t frames = 0;
	int rc;

	*out_pages = 0;
	rc = play_back_journal(dir, data_dir, mountpoint, &restored, msg,
			       msglen);
	if (rc < 0)
		return rc;
	rc = fs_live_open(dir, true, &l, msg, msglen);
	if (rc == 0 && l.db_fd < 0) {
		snprintf(msg, msglen, "%s has no database file", name);
		rc = -ENOENT;
	}
	if (rc == 0 && l.page_size)
		rc = checkpoint_wal(&l, &frames, msg, msglen);
	*out_pages = l.page_size ? l.pages : 0;
	fs_live_close(&l);
	for (size_t i = 0; rc == 0 && i < sizeof(gone) / sizeof(gone[0]);
	     i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, gone[i]);
		if (unlink(path) < 0 && errno != ENOENT) {
			rc = -errno;
			snprintf(msg, msglen, "cannot remove %s: %s", path,
				 strerror(-rc));
		}
	}
	if (rc == 0)
		rc = lib_io_fsync_dir(dir);
	if (rc < 0)
		return rc;
	if (restored >= 0)
		snprintf(done, sizeof(done), "played back a hot journal (%"
			 PRId64 " pages); ", restored);
	else if (restored == -2)
		snprintf(done, sizeof(done), "removed the journal of a "
			 "transaction across attached databases that committed "
			 "(its super-journal is gone); ");
	snprintf(msg, msglen, "%s%" PRIu32 " pages from the WAL written into "
		 "the database file; %" PRIu32 " pages", done, frames,
		 *out_pages);
	return 0;
}

struct snap_fill {
	int fd;
	uint32_t page_size, pages;
	uint8_t *buf;
};

static int fill_snapshot(void *ctx, ltx_encoder *enc, uint64_t *out_post,
			 ltx_err *err)
{
	struct snap_fill *f = ctx;
	uint32_t lock = ltx_lock_pgno(f->page_size);
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	int rc;

	for (uint32_t p = 1; p <= f->pages; p++) {
		if (p == lock)
			continue;
		rc = lib_io_pread_full(f->fd, f->buf, f->page_size,
				       (off_t)(p - 1) * f->page_size, NULL);
		if (rc < 0)
			return ltx_err_set(err, LTX_ERR_IO, 0, "reading page %"
					   PRIu32 ": %s", p, strerror(-rc));
		sum = ltx_checksum_xor(sum, ltx_checksum_page(p, f->buf,
							     f->page_size));
		rc = ltx_encoder_add_page(enc, p, f->buf, err);
		if (rc < 0)
			return rc;
	}
	*out_post = sum;
	return 0;
}

/* Removes a leftover log.new/ of an interrupted repair. */
static int remove_leftover(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0
		    && unlinkat(dirfd(d), de->d_name, 0) < 0 && rc == 0)
			rc = -errno;
	closedir(d);
	if (rc == 0 && rmdir(path) < 0)
		rc = -errno;
	return rc;
}

/* Writes log.new/ with one snapshot record of the database file. */
static int write_new_log(const char *dir, const char *fresh, const char *name,
			 uint64_t txid, uint64_t node_id, int zstd_level,
			 ltx_pos *out, char *msg, size_t msglen)
{
	char path[PATH_MAX], why[FS_LOG_WHY_MAX];
	struct snap_fill f = {.fd = -1};
	ltx_header h = {0};
	ltx_trailer t;
	ltx_err err = {0};
	fs_log *log = NULL;
	struct stat st;
	int rc;

	snprintf(path, sizeof(path), "%s/database", dir);
	f.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f.fd < 0 || fstat(f.fd, &st) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "cannot open %s: %s", path, strerror(-rc));
		goto out;
	}
	rc = ltx_dbfile_page_size(f.fd, &f.page_size, &err);
	if (rc < 0) {
		snprintf(msg, msglen, "%s: %s", path, err.msg);
		goto out;
	}
	f.pages = (uint32_t)((uint64_t)st.st_size / f.page_size);
	f.buf = malloc(f.page_size);
	if (!f.buf) {
		rc = -ENOMEM;
		goto out;
	}
	rc = fs_log_open(fresh, name, &log, why, sizeof(why));
	if (rc < 0) {
		snprintf(msg, msglen, "cannot start a log in %s: %s", fresh, why);
		goto out;
	}
	h.flags = zstd_level > 0 ? LTX_FLAG_COMPRESS_ZSTD : 0;
	h.page_size = f.page_size;
	h.commit = f.pages;
	h.min_txid = 1; /* a snapshot */
	h.max_txid = txid;
	h.timestamp = lib_clock_wall_ms();
	h.node_id = node_id;
	rc = fs_log_append(log, &h, zstd_level, fill_snapshot, &f, &t);
	if (rc == 0)
		rc = fs_log_sync(log);
	if (rc < 0) {
		snprintf(msg, msglen, "writing the snapshot into %s: %s", fresh,
			 strerror(-rc));
		goto out;
	}
	out->txid = txid;
	out->checksum = t.post_apply_checksum;
out:
	fs_log_close(log);
	free(f.buf);
	if (f.fd >= 0)
		close(f.fd);
	return rc;
}

int fs_repair_relog(const char *dir, const char *name, uint64_t txid,
		    uint64_t node_id, int zstd_level, ltx_pos *out,
		    char *aside, size_t asidelen, char *msg, size_t msglen)
{
	char logdir[PATH_MAX], fresh[PATH_MAX], path[PATH_MAX];
	int rc;

	aside[0] = '\0';
	snprintf(logdir, sizeof(logdir), "%s/log", dir);
	snprintf(fresh, sizeof(fresh), "%s/log.new", dir);
	rc = remove_leftover(fresh);
	if (rc < 0) {
		snprintf(msg, msglen, "cannot remove the leftover %s: %s",
			 fresh, strerror(-rc));
		return rc;
	}
	rc = write_new_log(dir, fresh, name, txid, node_id, zstd_level, out,
			   msg, msglen);
	if (rc < 0)
		return rc;
	/* One step from the damaged log to the new one in log/. */
	if (renameat2(AT_FDCWD, fresh, AT_FDCWD, logdir, RENAME_EXCHANGE) == 0)
		rc = fs_log_set_aside(fresh, logdir, aside, asidelen);
	else if (errno == ENOENT) /* no log at all */
		rc = rename(fresh, logdir) < 0 ? -errno : 0;
	else if (errno == EINVAL || errno == ENOSYS) {
		/* No exchange here: a crash between the two renames leaves
		 * no log/ (the next start would record the database as
		 * TXID 1), and log.new/ (run repair again). */
		rc = fs_log_set_aside(logdir, logdir, aside, asidelen);
		if (rc == 0 && rename(fresh, logdir) < 0)
			rc = -errno;
	} else
		rc = -errno;
	if (rc < 0) {
		snprintf(msg, msglen, "cannot put the new log in place of %s: "
			 "%s", logdir, strerror(-rc));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/clean", dir);
	if (unlink(path) < 0 && errno != ENOENT) {
		rc = -errno;
		snprintf(msg, msglen, "cannot remove %s: %s", path,
			 strerror(-rc));
		return rc;
	}
	return lib_io_fsync_dir(dir);
}
