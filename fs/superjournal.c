/* Super-journals: the store and SQLite's rules; see superjournal.h. */
#include "superjournal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "lib/io.h"
#include "lib/log.h"

/* SQLite lists at most 127 databases of 512-byte names: far below. */
#define SJ_CONTENT_MAX (1u << 20)
#define JOURNAL_SUFFIX "-journal"

/* The value of the n upper-case hex digits at s, or -1. */
static int64_t hex_value(const char *s, size_t n)
{
	int64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= '0' && c <= '9')
			v = v << 4 | (c - '0');
		else if (c >= 'A' && c <= 'F')
			v = v << 4 | (c - 'A' + 10);
		else
			return -1;
	}
	return v;
}

bool fs_sj_parse_name(const char *name, char *main, size_t mainlen,
		      uint64_t *out_key)
{
	size_t len = strlen(name), ml;
	int64_t v;
	uint64_t key;

	if (strchr(name, '/'))
		return false;
	/* "-mj%06X9%02X" (SQLite since 3.6), then "-mj%08X" (older). */
	if (len > 12 && memcmp(name + len - 12, "-mj", 3) == 0 &&
	    name[len - 3] == '9' && (v = hex_value(name + len - 9, 6)) >= 0 &&
	    hex_value(name + len - 2, 2) >= 0) {
		ml = len - 12;
		key = (uint64_t)1 << 32 | (uint64_t)v << 8 |
		      (uint64_t)hex_value(name + len - 2, 2);
	} else if (len > 11 && memcmp(name + len - 11, "-mj", 3) == 0 &&
		   (v = hex_value(name + len - 8, 8)) >= 0) {
		ml = len - 11;
		key = (uint64_t)v;
	} else {
		return false;
	}
	if (main) {
		if (ml >= mainlen)
			return false;
		memcpy(main, name, ml);
		main[ml] = '\0';
	}
	if (out_key)
		*out_key = key;
	return true;
}

void fs_sj_format_name(const char *main, uint64_t key, char *buf, size_t n)
{
	uint32_t id = (uint32_t)(key & 0xffffffffu);

	if (key >> 32)
		snprintf(buf, n, "%s-mj%06X9%02X", main, id >> 8, id & 0xffu);
	else
		snprintf(buf, n, "%s-mj%08X", main, id);
}

const char *fs_sj_basename(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static void store_dir(const char *data_dir, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", data_dir, FS_SJ_DIR);
}

static int store_path(const char *data_dir, const char *name, char *buf,
		      size_t n)
{
	if (!fs_sj_parse_name(name, NULL, 0, NULL))
		return -EINVAL;
	if ((size_t)snprintf(buf, n, "%s/%s/%s", data_dir, FS_SJ_DIR, name) >=
	    n)
		return -ENAMETOOLONG;
	return 0;
}

/* Creates the store (once), durably. */
static int store_make(const char *data_dir)
{
	char dir[PATH_MAX];
	int rc;

	store_dir(data_dir, dir, sizeof(dir));
	if (mkdir(dir, 0755) == 0)
		return lib_io_fsync_dir(data_dir);
	if (errno == EEXIST)
		return 0;
	rc = -errno;
	log_error("cannot create the super-journal directory %s: %s", dir,
		  strerror(-rc));
	return rc;
}

int fs_sj_open(const char *data_dir, const char *name, int flags,
	       mode_t mode, int *out_fd)
{
	char path[PATH_MAX];
	int fd, rc = store_path(data_dir, name, path, sizeof(path));

	*out_fd = -1;
	if (rc == 0 && (flags & O_CREAT))
		rc = store_make(data_dir);
	if (rc < 0)
		return rc;
	fd = open(path, flags | O_CLOEXEC, mode & 0777);
	if (fd < 0) {
		rc = -errno;
		if (rc != -ENOENT && rc != -EEXIST)
			log_error("super-journal %s: opening %s: %s", name, path,
				  strerror(-rc));
		return rc;
	}
	*out_fd = fd;
	return 0;
}

int fs_sj_stat(const char *data_dir, const char *name, struct stat *out)
{
	char path[PATH_MAX];
	int rc = store_path(data_dir, name, path, sizeof(path));

	if (rc == 0 && stat(path, out) < 0)
		rc = -errno;
	return rc;
}

int fs_sj_truncate(const char *data_dir, const char *name, off_t size)
{
	char path[PATH_MAX];
	int rc = store_path(data_dir, name, path, sizeof(path));

	if (rc == 0 && truncate(path, size) < 0)
		rc = -errno;
	return rc;
}

int fs_sj_fsync(const char *data_dir, int fd, bool datasync)
{
	char dir[PATH_MAX];
	int rc = datasync ? lib_io_fdatasync(fd) : lib_io_fsync(fd);

	store_dir(data_dir, dir, sizeof(dir));
	if (rc == 0)
		rc = lib_io_fsync_dir(dir);
	return rc;
}

int fs_sj_unlink(const char *data_dir, const char *name)
{
	char path[PATH_MAX], dir[PATH_MAX];
	int rc = store_path(data_dir, name, path, sizeof(path));

	if (rc < 0)
		return rc;
	if (unlink(path) < 0)
		return -errno;
	store_dir(data_dir, dir, sizeof(dir));
	rc = lib_io_fsync_dir(dir);
	if (rc < 0)
		log_error("super-journal %s: syncing %s after its deletion: %s",
			  name, dir, strerror(-rc));
	return rc;
}

int fs_sj_foreach(const char *data_dir, fs_sj_each_fn fn, void *ctx)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	store_dir(data_dir, dir, sizeof(dir));
	d = opendir(dir);
	if (!d) {
		rc = errno == ENOENT ? 0 : -errno;
		if (rc < 0)
			log_error("cannot read the super-journal directory %s: "
				  "%s", dir, strerror(-rc));
		return rc;
	}
	while (rc == 0 && (de = readdir(d)) != NULL)
		if (fs_sj_parse_name(de->d_name, NULL, 0, NULL))
			rc = fn(ctx, de->d_name);
	closedir(d);
	return rc;
}

int fs_sj_foreach_child(const char *data_dir, const char *name,
			fs_sj_child_fn fn, void *ctx)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd = -1, rc;

	rc = fs_sj_open(data_dir, name, O_RDONLY, 0, &fd);
	if (rc < 0)
		return rc;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if ((uint64_t)st.st_size > SJ_CONTENT_MAX) {
		log_error("super-journal %s holds %jd bytes, more than SQLite "
			  "writes (child journal names)", name,
			  (intmax_t)st.st_size);
		rc = -EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	rc = lib_io_pread_full(fd, buf, (size_t)st.st_size, 0, &got);
	if (rc == -ENODATA)
		rc = 0;
	if (rc < 0)
		goto out;
	buf[got] = '\0';
	for (size_t off = 0; rc == 0 && off < got;) {
		size_t len = strlen(buf + off);
		if (len)
			rc = fn(ctx, buf + off);
		off += len + 1;
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Whether path's directory is the mount point (both without a trailing
 * '/'; SQLite names files by their full path). */
static bool in_mount(const char *path, const char *mountpoint)
{
	const char *base = fs_sj_basename(path);
	size_t dl, ml;

	if (!mountpoint || base == path)
		return false;
	dl = (size_t)(base - path) - 1;
	ml = strlen(mountpoint);
	while (ml > 1 && mountpoint[ml - 1] == '/')
		ml--;
	return dl == ml && memcmp(path, mountpoint, dl) == 0;
}

/* SQLite's access(SQLITE_ACCESS_EXISTS): an empty regular file is not. */
static bool sqlite_exists(const struct stat *st)
{
	return !S_ISREG(st->st_mode) || st->st_size > 0;
}

/* Whether the super-journal at path sj exists, as SQLite would find it. */
static int super_exists(const char *sj, const char *data_dir,
			const char *mountpoint, bool *out)
{
	const char *base = fs_sj_basename(sj);
	struct stat st;
	int rc, e;

	*out = false;
	if (fs_sj_parse_name(base, NULL, 0, NULL)) {
		rc = fs_sj_stat(data_dir, base, &st);
		if (rc == 0) {
			*out = sqlite_exists(&st);
			return 0;
		}
		if (rc != -ENOENT) {
			log_error("super-journal %s: %s", sj, strerror(-rc));
			return rc;
		}
	}
	if (in_mount(sj, mountpoint))
		return 0; /* not in the store: gone */
	if (stat(sj, &st) == 0) {
		*out = sqlite_exists(&st);
		return 0;
	}
	e = errno;
	if (e != ENOENT && e != ENOTDIR)
		log_warn("super-journal %s (outside the mount): %s; taken as "
			 "absent, as SQLite would", sj, strerror(e));
	return 0;
}

int fs_sj_journal_fate(int jfd, const char *data_dir, const char *mountpoint,
		       enum fs_sj_fate *out, char *sj, size_t n)
{
	bool exists = false;
	int rc;

	*out = FS_SJ_NONE;
	rc = fs_journal_read_super(jfd, sj, n);
	if (rc < 0 || !sj[0])
		return rc;
	rc = super_exists(sj, data_dir, mountpoint, &exists);
	if (rc == 0)
		*out = exists ? FS_SJ_ROLL_BACK : FS_SJ_COMMITTED;
	return rc;
}

struct sweep {
	const char *data_dir;
	const char *mountpoint;
	const char *name;       /* the super-journal being looked at */
	bool keep;
	char why[PATH_MAX + 100];
};

/* Where the child journal at path is to be read: a database's of this
 * node (its backing file) when path's directory is the mount point, or
 * when path names one of them and cannot be seen by this process (the
 * mount as the application sees it, elsewhere); path itself otherwise.
 * "" for a name in the mount that no journal can have. */
static void child_file(const struct sweep *s, const char *path, char *buf,
		       size_t n)
{
	const char *base = fs_sj_basename(path);
	size_t bl = strlen(base), sl = strlen(JOURNAL_SUFFIX);
	bool journal = bl > sl && strcmp(base + bl - sl, JOURNAL_SUFFIX) == 0;
	char dbdir[PATH_MAX];
	struct stat st;

	snprintf(dbdir, sizeof(dbdir), "%s/dbs/%.*s", s->data_dir,
		 journal ? (int)(bl - sl) : 0, base);
	if (in_mount(path, s->mountpoint)) {
		if (!journal || strlen(dbdir) + sizeof("/journal") > n)
			buf[0] = '\0';
		else
			snprintf(buf, n, "%s/journal", dbdir);
		return;
	}
	snprintf(buf, n, "%s", path);
	if (journal && stat(dbdir, &st) == 0 && S_ISDIR(st.st_mode) &&
	    stat(path, &st) < 0 && strlen(dbdir) + sizeof("/journal") <= n)
		snprintf(buf, n, "%s/journal", dbdir);
}

/* Whether the directory holding path can be seen by this process. */
static bool dir_visible(const char *path)
{
	const char *base = fs_sj_basename(path);
	char dir[PATH_MAX];
	struct stat st;

	if (base == path)
		return true;
	snprintf(dir, sizeof(dir), "%.*s", (int)(base - path), path);
	return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* SQLite's test in its super-journal deletion: does the child journal at
 * path exist (non-empty) and point to this super-journal? Stops (1) at
 * the first that does, or that cannot be told. */
static int child_points(void *ctx, const char *path)
{
	struct sweep *s = ctx;
	char file[PATH_MAX], sj[FS_JOURNAL_SUPER_MAX];
	struct stat st;
	int fd, rc;

	child_file(s, path, file, sizeof(file));
	if (!file[0])
		return 0;
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = errno;
		if ((rc == ENOENT || rc == ENOTDIR) &&
		    (strcmp(file, path) != 0 || dir_visible(path)))
			return 0;
		snprintf(s->why, sizeof(s->why), "its child journal %s cannot "
			 "be read here (%s)", path, strerror(rc));
		s->keep = true;
		return 1;
	}
	rc = fstat(fd, &st) < 0 ? -errno : 0;
	if (rc == 0 && st.st_size > 0)
		rc = fs_journal_read_super(fd, sj, sizeof(sj));
	else
		sj[0] = '\0';
	close(fd);
	if (rc < 0) {
		snprintf(s->why, sizeof(s->why), "its child journal %s cannot "
			 "be read (%s)", path, strerror(-rc));
		s->keep = true;
		return 1;
	}
	if (sj[0] && strcmp(fs_sj_basename(sj), s->name) == 0) {
		snprintf(s->why, sizeof(s->why), "the journal %s still points "
			 "to it", path);
		s->keep = true;
		return 1;
	}
	return 0;
}

static int sweep_one(void *ctx, const char *name)
{
	struct sweep *s = ctx;
	int rc;

	s->name = name;
	s->keep = false;
	rc = fs_sj_foreach_child(s->data_dir, name, child_points, s);
	if (rc < 0) {
		log_warn("super-journal %s kept: reading it: %s", name,
			 strerror(-rc));
		return 0;
	}
	if (s->keep) {
		log_warn("super-journal %s kept: %s", name, s->why);
		return 0;
	}
	rc = fs_sj_unlink(s->data_dir, name);
	if (rc < 0)
		log_warn("super-journal %s: removing it: %s", name,
			 strerror(-rc));
	else
		log_info("super-journal %s removed: no journal points to it "
			 "any more (a transaction across attached databases "
			 "that broke off)", name);
	return 0;
}

int fs_sj_sweep(const char *data_dir, const char *mountpoint)
{
	struct sweep s = {.data_dir = data_dir, .mountpoint = mountpoint};

	return fs_sj_foreach(data_dir, sweep_one, &s);
}
