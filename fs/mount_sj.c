/*
 * The super-journals of the mount (fs/superjournal.h): <main>-mjXXXXXX9XX,
 * local files of the data directory's store, served while <main> is a
 * database here.
 *
 * Inode: FS_INO_SJ_BASE + (<main>'s slot << 33) + the name's key (33
 * bits, fs_sj_parse_name), so a name and its inode map to each other with
 * no table. An open one's backing descriptor is its fh, closed at
 * release.
 *
 * Caching: their absence is not cached (SQLite looks one up only to pick
 * a name and in a hot journal's recovery), and their pages are not kept
 * across opens (written once, read back only by a recovery).
 *
 * Deleting one commits a transaction across attached databases: each
 * database of the mount whose journal points to it has its part recorded
 * first (fs_db_capture_super), in the order the super-journal lists them;
 * a failure fails the unlink, and SQLite rolls the transaction back.
 */
#include "mount_i.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "lib/io.h"
#include "lib/log.h"
#include "superjournal.h"

#define FS_INO_SJ_BASE ((fuse_ino_t)1 << 60)
#define FS_SJ_KEY_BITS 33
#define JOURNAL_SUFFIX "-journal"

bool fs_mount_sj_ino(fuse_ino_t ino)
{
	return ino >= FS_INO_SJ_BASE;
}

/* The inode of the super-journal name: -ENOENT unless its main database
 * is served here. */
static int ino_of(fs_mount *m, const char *name, fuse_ino_t *out)
{
	char main[FS_NAME_MAX + 1];
	uint64_t key;
	size_t s;
	int rc;

	if (!fs_sj_parse_name(name, main, sizeof(main), &key))
		return -ENOENT;
	rc = fs_mount_slot_of(m, main, &s);
	if (rc == 0)
		*out = FS_INO_SJ_BASE + ((fuse_ino_t)s << FS_SJ_KEY_BITS) + key;
	return rc;
}

static int name_of(fs_mount *m, fuse_ino_t ino, char *name, size_t n)
{
	fuse_ino_t rel = ino - FS_INO_SJ_BASE;
	char main[FS_NAME_MAX + 1];
	int rc;

	rc = fs_mount_slot_name(m, (size_t)(rel >> FS_SJ_KEY_BITS), main,
				sizeof(main));
	if (rc == 0)
		fs_sj_format_name(main, rel & (((fuse_ino_t)1 << FS_SJ_KEY_BITS)
					       - 1), name, n);
	return rc;
}

static int attr_of(fs_mount *m, const char *name, fuse_ino_t ino,
		   struct stat *st)
{
	int rc = fs_sj_stat(fs_mount_data_dir(m), name, st);

	if (rc == 0) {
		st->st_ino = ino;
		st->st_nlink = 1;
	}
	return rc;
}

void fs_mount_sj_lookup(fuse_req_t req, fs_mount *m, const char *name)
{
	struct fuse_entry_param e;
	fuse_ino_t ino = 0;
	int rc = ino_of(m, name, &ino);

	memset(&e, 0, sizeof(e));
	if (rc == 0)
		rc = attr_of(m, name, ino, &e.attr);
	if (rc == -ENOENT) {
		fuse_reply_entry(req, &e); /* absent, not cached */
		return;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	e.ino = ino;
	e.attr_timeout = FS_CACHE_SECONDS;
	e.entry_timeout = FS_CACHE_SECONDS;
	fuse_reply_entry(req, &e);
}

static void reply_attr(fuse_req_t req, fs_mount *m, fuse_ino_t ino, int rc)
{
	char name[FS_NAME_MAX + 16];
	struct stat st;

	if (rc == 0)
		rc = name_of(m, ino, name, sizeof(name));
	if (rc == 0)
		rc = attr_of(m, name, ino, &st);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, FS_CACHE_SECONDS);
}

void fs_mount_sj_getattr(fuse_req_t req, fs_mount *m, fuse_ino_t ino)
{
	reply_attr(req, m, ino, 0);
}

void fs_mount_sj_setattr(fuse_req_t req, fs_mount *m, fuse_ino_t ino,
			 struct stat *attr, int to_set,
			 struct fuse_file_info *fi)
{
	char name[FS_NAME_MAX + 16];
	int rc = name_of(m, ino, name, sizeof(name));

	/* Modes, owners and times are accepted and not kept (fs/mount.c). */
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (fi)
			rc = lib_io_ftruncate((int)fi->fh, attr->st_size);
		else
			rc = fs_sj_truncate(fs_mount_data_dir(m), name,
					    attr->st_size);
	}
	reply_attr(req, m, ino, rc);
}

void fs_mount_sj_open(fuse_req_t req, fs_mount *m, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	char name[FS_NAME_MAX + 16];
	int fd = -1, rc = name_of(m, ino, name, sizeof(name));

	if (rc == 0)
		rc = fs_sj_open(fs_mount_data_dir(m), name,
				fi->flags & O_ACCMODE, 0, &fd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 0;
	fi->noflush = 1; /* see fs/mount.c, op_open */
	if (fuse_reply_open(req, fi) != 0)
		close(fd);
}

void fs_mount_sj_create(fuse_req_t req, fs_mount *m, const char *name,
			mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	fuse_ino_t ino = 0;
	int fd = -1, rc = ino_of(m, name, &ino);

	if (rc < 0) {
		log_warn("refusing to create super-journal \"%s\": its main "
			 "database is not served here", name);
	} else if (fs_mount_is_replica(m)) {
		log_warn("refusing to create super-journal \"%s\" (EROFS): "
			 "this node is a read-only replica", name);
		rc = -EROFS;
	}
	if (rc == 0)
		rc = fs_sj_open(fs_mount_data_dir(m), name,
				O_CREAT | O_RDWR | (fi->flags & O_EXCL), mode,
				&fd);
	memset(&e, 0, sizeof(e));
	if (rc == 0)
		rc = attr_of(m, name, ino, &e.attr);
	if (rc < 0) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, -rc);
		return;
	}
	e.ino = ino;
	e.attr_timeout = FS_CACHE_SECONDS;
	e.entry_timeout = FS_CACHE_SECONDS;
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 0;
	fi->noflush = 1;
	if (fuse_reply_create(req, &e, fi) != 0)
		close(fd);
}

void fs_mount_sj_read(fuse_req_t req, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	char *buf = malloc(size ? size : 1);
	size_t got = 0;
	int rc;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = lib_io_pread_full((int)fi->fh, buf, size, off, &got);
	if (rc < 0 && rc != -ENODATA)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

void fs_mount_sj_write(fuse_req_t req, const char *buf, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	int rc = lib_io_pwrite_full((int)fi->fh, buf, size, off);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_write(req, size);
}

void fs_mount_sj_fsync(fuse_req_t req, fs_mount *m, bool datasync,
		       struct fuse_file_info *fi)
{
	fuse_reply_err(req, -fs_sj_fsync(fs_mount_data_dir(m), (int)fi->fh,
					 datasync));
}

void fs_mount_sj_release(fuse_req_t req, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

struct commit {
	fs_mount *m;
	const char *name;
	size_t children;
};

/* One child journal of a super-journal being deleted: a database of this
 * mount whose journal points to it has its part recorded. */
static int commit_child(void *ctx, const char *path)
{
	struct commit *c = ctx;
	const char *base = fs_sj_basename(path);
	size_t bl = strlen(base), sl = strlen(JOURNAL_SUFFIX);
	char dbname[FS_NAME_MAX + 1];
	bool child = false;
	fs_db *db;
	int rc;

	if (bl <= sl || bl - sl > FS_NAME_MAX ||
	    strcmp(base + bl - sl, JOURNAL_SUFFIX) != 0)
		return 0;
	memcpy(dbname, base, bl - sl);
	dbname[bl - sl] = '\0';
	db = fs_mount_db(c->m, dbname);
	if (!db)
		return 0;
	rc = fs_db_capture_super(db, c->name, &child);
	if (child)
		c->children++;
	if (rc < 0)
		log_warn("super-journal %s: recording %s's part failed (%s): "
			 "its deletion fails, so SQLite rolls the transaction "
			 "back", c->name, dbname, strerror(-rc));
	return rc;
}

void fs_mount_sj_unlink(fuse_req_t req, fs_mount *m, const char *name)
{
	struct commit c = {m, name, 0};
	const char *dir = fs_mount_data_dir(m);
	struct stat st;
	fuse_ino_t ino;
	int rc = ino_of(m, name, &ino);

	if (rc == 0)
		rc = fs_sj_stat(dir, name, &st);
	if (rc == 0)
		rc = fs_sj_foreach_child(dir, name, commit_child, &c);
	if (rc == 0)
		rc = fs_sj_unlink(dir, name);
	if (rc == 0)
		log_debug("super-journal %s deleted: %zu databases' parts "
			  "recorded", name, c.children);
	fuse_reply_err(req, -rc);
}

struct list {
	fs_mount *m;
	fs_mount_sj_list_fn fn;
	void *ctx;
};

static int list_one(void *ctx, const char *name)
{
	struct list *l = ctx;
	fuse_ino_t ino = 0;

	if (ino_of(l->m, name, &ino) < 0)
		return 0;
	return l->fn(l->ctx, name, ino);
}

int fs_mount_sj_list(fs_mount *m, fs_mount_sj_list_fn fn, void *ctx)
{
	struct list l = {m, fn, ctx};

	return fs_sj_foreach(fs_mount_data_dir(m), list_one, &l);
}
