/*
 * Injectable I/O. Every durable-state syscall goes through lib_io, a table
 * that tests can swap entry by entry (as SQLite's aSyscall[] does) to make
 * pwrite fail with EIO or ENOSPC, write short, or fsync fail. Production
 * code never changes the table.
 *
 * The lib_io_* helpers loop over short transfers and EINTR and return 0 or
 * a negative errno, never -1.
 */
#ifndef LIB_IO_H
#define LIB_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct lib_io_table {
	ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
	ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
	ssize_t (*read)(int fd, void *buf, size_t n);
	ssize_t (*write)(int fd, const void *buf, size_t n);
	int (*fsync)(int fd);
	int (*fdatasync)(int fd);
	int (*ftruncate)(int fd, off_t len);
	int (*rename)(const char *from, const char *to);
	int (*renameat)(int dfd, const char *from, int tdfd, const char *to);
};

/* The fault-injection table: tests may overwrite entries and must restore
 * them with lib_io_reset(). */
extern struct lib_io_table lib_io;
void lib_io_reset(void);

/* Reads exactly n bytes at off. Returns 0, -errno, or -ENODATA when the
 * file ends first (*out_got, when not NULL, says how many were read). */
int lib_io_pread_full(int fd, void *buf, size_t n, off_t off,
		      size_t *out_got);
/* Reads up to n bytes from the current offset, stopping early only at end
 * of file; *out_got says how many. */
int lib_io_read_full(int fd, void *buf, size_t n, size_t *out_got);
int lib_io_pwrite_full(int fd, const void *buf, size_t n, off_t off);
int lib_io_write_full(int fd, const void *buf, size_t n);
int lib_io_fsync(int fd);
int lib_io_fdatasync(int fd);
int lib_io_ftruncate(int fd, off_t len);
int lib_io_rename(const char *from, const char *to);
/* fsyncs the directory dir. */
int lib_io_fsync_dir(const char *dir);
/* Replaces <dir>/<name> with n bytes, durably and atomically: writes
 * <name>.tmp, fsyncs it, renames it over <name>, fsyncs dir. */
int lib_io_write_file_atomic(const char *dir, const char *name,
			     const void *buf, size_t n);

/* One try at an open-file-description lock (F_OFD_SETLK) of type F_RDLCK,
 * F_WRLCK or F_UNLCK on bytes [start, start+len): these conflict with
 * SQLite's fcntl locks on the same file. 0, -EBUSY (another holds a
 * conflicting lock) or -errno. Not part of the fault table: locks are not
 * durable state. */
int lib_io_ofd_trylock(int fd, short type, off_t start, off_t len);

#endif
