/*
 * The file store (store.h): a directory. A key is a path relative to the
 * directory; its '/'-separated parts are directories, made on put.
 *
 * Rules:
 *   F1 put writes <key>.tmp-<pid>, fsyncs it, renames it over <key> and
 *      fsyncs the key's directory: a reader sees the old object or the
 *      whole new one, and a crash leaves at most a *.tmp-* file, which
 *      list never shows.
 *   F2 list shows the regular files at any depth below the prefix's
 *      directory (as s3 lists every key under a prefix); with `after`,
 *      only keys that sort after it (a scan of the whole tree).
 *   F3 a key never contains "..", never starts with '/'.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/io.h"

typedef struct file_store {
	bk_store base;
	char dir[4096];
} file_store;

#define COPY_BUF (1u << 20)

static int key_path(file_store *fs, const char *key, char *buf, size_t len,
		    char *err, size_t errlen)
{
	if (key[0] == '/' || strstr(key, "..")) {
		snprintf(err, errlen, "backup: %s: bad key \"%s\"",
			 fs->base.desc, key);
		return -EINVAL;
	}
	if ((size_t)snprintf(buf, len, "%s/%s", fs->dir, key) >= len) {
		snprintf(err, errlen, "backup: %s: key too long", fs->base.desc);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Makes every directory of path's parent. */
static int make_parents(const char *path)
{
	char tmp[4400];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

/* Copies n bytes from in at in_off to out at out_off (-1: its offset). */
static int copy_range(int in, uint64_t in_off, int out, uint64_t n)
{
	char *buf = malloc(COPY_BUF);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	while (n > 0 && rc == 0) {
		size_t want = n < COPY_BUF ? (size_t)n : COPY_BUF, got = 0;
		rc = lib_io_pread_full(in, buf, want, (off_t)in_off, &got);
		if (rc == -ENODATA && got > 0)
			rc = 0;
		if (rc == 0 && got == 0)
			rc = -ENODATA;
		if (rc == 0)
			rc = lib_io_write_full(out, buf, got);
		in_off += got;
		n -= got;
	}
	free(buf);
	return rc;
}

static int file_put(bk_store *s, const char *key, int fd, uint64_t len,
		    char *err, size_t errlen)
{
	file_store *fs = (file_store *)s;
	char path[4200], tmp[4300], dir[4200];
	int rc, out = -1;
	char *slash;

	rc = key_path(fs, key, path, sizeof(path), err, errlen);
	if (rc < 0)
		return rc;
	snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid());
	rc = make_parents(path);
	if (rc == 0) {
		out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (out < 0)
			rc = -errno;
	}
	if (rc == 0)
		rc = copy_range(fd, 0, out, len);
	if (rc == 0)
		rc = lib_io_fsync(out);
	if (out >= 0 && close(out) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0)
		rc = lib_io_rename(tmp, path);
	if (rc == 0) {
		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		*slash = '\0';
		rc = lib_io_fsync_dir(dir);
	}
	if (rc < 0) {
		unlink(tmp);
		snprintf(err, errlen, "backup: %s: cannot write %s: %s",
			 fs->base.desc, key, strerror(-rc));
		return rc == -EACCES ? -EACCES : -EIO;
	}
	return 0;
}

static int file_get(bk_store *s, const char *key, uint64_t off, uint64_t len,
		    int fd, uint64_t *out_len, char *err, size_t errlen)
{
	file_store *fs = (file_store *)s;
	char path[4200];
	struct stat st;
	int rc, in;

	rc = key_path(fs, key, path, sizeof(path), err, errlen);
	if (rc < 0)
		return rc;
	in = open(path, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		rc = -errno;
		snprintf(err, errlen, "backup: %s: cannot read %s: %s",
			 fs->base.desc, key, strerror(-rc));
		return rc == -ENOENT ? -ENOENT : -EIO;
	}
	rc = fstat(in, &st) < 0 ? -errno : 0;
	if (rc == 0 && off > (uint64_t)st.st_size)
		off = (uint64_t)st.st_size;
	if (rc == 0 && (len == 0 || off + len > (uint64_t)st.st_size))
		len = (uint64_t)st.st_size - off;
	if (rc == 0)
		rc = copy_range(in, off, fd, len);
	close(in);
	if (rc < 0) {
		snprintf(err, errlen, "backup: %s: cannot read %s: %s",
			 fs->base.desc, key, strerror(-rc));
		return -EIO;
	}
	*out_len = len;
	return 0;
}

static int file_list(bk_store *s, const char *prefix, const char *after,
		     size_t max, bk_keys *out, char *err, size_t errlen)
{
	file_store *fs = (file_store *)s;
	char path[4200];
	struct dirent *e;
	DIR *d;
	int rc;

	rc = key_path(fs, prefix, path, sizeof(path), err, errlen);
	if (rc < 0)
		return rc;
	d = opendir(path);
	if (!d) {
		rc = -errno;
		if (rc == -ENOENT)
			return 0; /* nothing stored under it yet */
		snprintf(err, errlen, "backup: %s: cannot list %s: %s",
			 fs->base.desc, prefix, strerror(-rc));
		return rc == -EACCES ? -EACCES : -EIO;
	}
	while ((e = readdir(d)) != NULL && rc == 0) {
		char key[4200];
		bool dir = e->d_type == DT_DIR && strcmp(e->d_name, ".") &&
			   strcmp(e->d_name, "..");
		if ((!dir && e->d_type != DT_REG) || strstr(e->d_name, ".tmp-"))
			continue;
		if ((size_t)snprintf(key, sizeof(key), "%s%s%s", prefix,
				     e->d_name, dir ? "/" : "") >= sizeof(key))
			continue;
		if (dir)
			rc = file_list(s, key, after, max, out, err, errlen);
		else if (!after || strcmp(key, after) > 0)
			rc = bk_keys_push(out, key);
	}
	closedir(d);
	(void)max; /* bk_store_list_after keeps the first max */
	if (rc == -ENOMEM)
		snprintf(err, errlen, "backup: out of memory");
	return rc;
}

static int file_del(bk_store *s, const char *key, char *err, size_t errlen)
{
	file_store *fs = (file_store *)s;
	char path[4200];
	int rc = key_path(fs, key, path, sizeof(path), err, errlen);

	if (rc == 0 && unlink(path) < 0 && errno != ENOENT) {
		rc = -errno;
		snprintf(err, errlen, "backup: %s: cannot delete %s: %s",
			 fs->base.desc, key, strerror(-rc));
		return -EIO;
	}
	return rc;
}

static void file_free(bk_store *s)
{
	free(s);
}

static const struct bk_store_ops file_ops = {
	.put = file_put,
	.get = file_get,
	.list = file_list,
	.del = file_del,
	.free = file_free,
};

int bk_store_file_open(const bk_store_opts *o, bk_store **out, char *err,
		       size_t errlen)
{
	file_store *fs;
	struct stat st;

	if (!o->dir || !o->dir[0]) {
		snprintf(err, errlen, "backup: backup.dir is required with "
			 "backup.type: file");
		return -EINVAL;
	}
	if (mkdir(o->dir, 0755) < 0 && errno != EEXIST) {
		int rc = -errno;
		snprintf(err, errlen, "backup: cannot create backup.dir %s: %s",
			 o->dir, strerror(-rc));
		return rc;
	}
	if (stat(o->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "backup: backup.dir %s is not a "
			 "directory", o->dir);
		return -ENOTDIR;
	}
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->base.ops = &file_ops;
	snprintf(fs->dir, sizeof(fs->dir), "%s", o->dir);
	snprintf(fs->base.desc, sizeof(fs->base.desc), "file:%s", o->dir);
	*out = &fs->base;
	return 0;
}
