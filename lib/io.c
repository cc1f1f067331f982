#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const struct lib_io_table default_table = {
	.pread = pread,
	.pwrite = pwrite,
	.read = read,
	.write = write,
	.fsync = fsync,
	.fdatasync = fdatasync,
	.ftruncate = ftruncate,
	.rename = rename,
	.renameat = renameat,
};

struct lib_io_table lib_io = {
	.pread = pread,
	.pwrite = pwrite,
	.read = read,
	.write = write,
	.fsync = fsync,
	.fdatasync = fdatasync,
	.ftruncate = ftruncate,
	.rename = rename,
	.renameat = renameat,
};

void lib_io_reset(void)
{
	lib_io = default_table;
}

int lib_io_pread_full(int fd, void *buf, size_t n, off_t off,
		      size_t *out_got)
{
	size_t got = 0;
	int rc = 0;

	while (got < n) {
		ssize_t r = lib_io.pread(fd, (char *)buf + got, n - got,
					 off + (off_t)got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		if (r == 0) {
			rc = -ENODATA;
			break;
		}
		got += (size_t)r;
	}
	if (out_got)
		*out_got = got;
	return rc;
}

int lib_io_read_full(int fd, void *buf, size_t n, size_t *out_got)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = lib_io.read(fd, (char *)buf + got, n - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			*out_got = got;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*out_got = got;
	return 0;
}

int lib_io_pwrite_full(int fd, const void *buf, size_t n, off_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = lib_io.pwrite(fd, (const char *)buf + done,
					  n - done, off + (off_t)done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

int lib_io_write_full(int fd, const void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = lib_io.write(fd, (const char *)buf + done,
					 n - done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

int lib_io_fsync(int fd)
{
	return lib_io.fsync(fd) < 0 ? -errno : 0;
}

int lib_io_fdatasync(int fd)
{
	return lib_io.fdatasync(fd) < 0 ? -errno : 0;
}

int lib_io_ftruncate(int fd, off_t len)
{
	while (lib_io.ftruncate(fd, len) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

int lib_io_rename(const char *from, const char *to)
{
	return lib_io.rename(from, to) < 0 ? -errno : 0;
}

int lib_io_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -errno;
	rc = lib_io_fsync(fd);
	close(fd);
	return rc;
}

int lib_io_write_file_atomic(const char *dir, const char *name,
			     const void *buf, size_t n)
{
	char path[4096], tmp[4096];
	int fd, rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
		    sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name) >=
		    sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	rc = lib_io_write_full(fd, buf, n);
	if (rc == 0)
		rc = lib_io_fsync(fd);
	close(fd);
	if (rc == 0)
		rc = lib_io_rename(tmp, path);
	if (rc == 0)
		rc = lib_io_fsync_dir(dir);
	else
		unlink(tmp);
	return rc;
}

int lib_io_ofd_trylock(int fd, short type, off_t start, off_t len)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = start;
	fl.l_len = len;
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES || errno == EINTR)
		return -EBUSY;
	return -errno;
}
