/*
 * LD_PRELOAD shim for tests/integration/test_attach.py: stops or kills a
 * SQLite process at one step of a commit across attached databases
 * (fs/superjournal.h has the steps). test_attach.py compiles it with cc.
 *
 * Environment:
 *   LTXFS_SHIM_DIR     the mount (and more directories, ':' between):
 *                      only files whose path starts with one are watched (a super-journal is "<db>-mjXXXXXX9XX",
 *                      a journal "<db>-journal", anything else a database)
 *   LTXFS_SHIM_AT      comma-separated steps, each acted on once:
 *     sj-sync          the super-journal's first fsync (it is written; no
 *                      journal points to it yet)
 *     db-write         the first database write after that (the first
 *                      child journal points to it and is synced)
 *     sj-unlink        the super-journal's deletion, before it is done
 *     sj-unlinked      just after that deletion returned (committed)
 *     journal-end-N    the N-th child journal's finalisation after that
 *                      (unlink, or ftruncate to 0), before it is done
 *   LTXFS_SHIM_ACTION  "kill" (SIGKILL, the default) or "stop" (SIGSTOP;
 *                      the process goes on when continued)
 *   LTXFS_SHIM_MARK    a file that gets one line per step reached, before
 *                      the action
 * Nothing is watched before the super-journal is created.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

enum kind { K_NONE, K_SJ, K_JOURNAL, K_DB };

#define MAX_FD 4096

static enum kind kinds[MAX_FD];
static bool armed, sj_gone;
static int journal_ends;

static bool hex_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

/* "-mj" and 9 hex digits (SQLite's "-mj%06X9%02X") or 8 (older). */
static bool is_sj(const char *name)
{
	size_t n = strlen(name);

	return (n > 12 && strncmp(name + n - 12, "-mj", 3) == 0 &&
		hex_digits(name + n - 9, 9)) ||
	       (n > 11 && strncmp(name + n - 11, "-mj", 3) == 0 &&
		hex_digits(name + n - 8, 8));
}

/* Whether path starts with one of LTXFS_SHIM_DIR's directories. */
static bool watched(const char *path)
{
	const char *dirs = getenv("LTXFS_SHIM_DIR");

	while (dirs && *dirs) {
		const char *end = strchr(dirs, ':');
		size_t len = end ? (size_t)(end - dirs) : strlen(dirs);
		if (len && strncmp(path, dirs, len) == 0)
			return true;
		dirs = end ? end + 1 : NULL;
	}
	return false;
}

static enum kind kind_of(const char *path)
{
	size_t n = strlen(path);

	if (!watched(path))
		return K_NONE;
	if (is_sj(path))
		return K_SJ;
	if (n > 8 && strcmp(path + n - 8, "-journal") == 0)
		return K_JOURNAL;
	if (n > 4 && (strcmp(path + n - 4, "-wal") == 0 ||
		      strcmp(path + n - 4, "-shm") == 0))
		return K_NONE;
	return K_DB;
}

/* Acts when step is one of LTXFS_SHIM_AT's (once each). */
static void step(const char *name)
{
	static char done[512];
	const char *at = getenv("LTXFS_SHIM_AT"), *act, *mark;
	char want[64];
	size_t wl;

	if (!at)
		return;
	snprintf(want, sizeof(want), ",%s,", name);
	wl = strlen(want);
	{
		char list[512];
		snprintf(list, sizeof(list), ",%s,", at);
		if (!strstr(list, want) || strstr(done, want))
			return;
	}
	if (strlen(done) + wl < sizeof(done))
		strcat(done, want);
	mark = getenv("LTXFS_SHIM_MARK");
	if (mark) {
		int fd = ((int (*)(const char *, int, ...))dlsym(
			RTLD_NEXT, "open"))(mark, O_WRONLY | O_CREAT | O_APPEND,
					    0644);
		if (fd >= 0) {
			char line[80];
			int len = snprintf(line, sizeof(line), "%s\n", name);
			if (write(fd, line, (size_t)len) < 0)
				abort();
			fsync(fd);
			close(fd);
		}
	}
	act = getenv("LTXFS_SHIM_ACTION");
	raise(act && strcmp(act, "stop") == 0 ? SIGSTOP : SIGKILL);
}

static void note_open(int fd, const char *path)
{
	enum kind k;

	if (fd < 0 || fd >= MAX_FD)
		return;
	k = kind_of(path);
	kinds[fd] = k;
	if (k == K_SJ)
		armed = true;
}

static enum kind fd_kind(int fd)
{
	return fd >= 0 && fd < MAX_FD ? kinds[fd] : K_NONE;
}

static void journal_end(void)
{
	char name[32];

	if (!armed || !sj_gone)
		return;
	snprintf(name, sizeof(name), "journal-end-%d", ++journal_ends);
	step(name);
}

#define REAL(ret, fn, ...)                                                  \
	static ret (*real_##fn)(__VA_ARGS__);                               \
	if (!real_##fn)                                                     \
		real_##fn = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #fn)

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int fd;
	REAL(int, open, const char *, int, ...);

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	fd = real_open(path, flags, mode);
	note_open(fd, path);
	return fd;
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;
	int fd;
	REAL(int, open64, const char *, int, ...);

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	fd = real_open64(path, flags, mode);
	note_open(fd, path);
	return fd;
}

int close(int fd)
{
	REAL(int, close, int);

	if (fd >= 0 && fd < MAX_FD)
		kinds[fd] = K_NONE;
	return real_close(fd);
}

static void before_sync(int fd)
{
	if (fd_kind(fd) == K_SJ)
		step("sj-sync");
}

int fsync(int fd)
{
	REAL(int, fsync, int);

	before_sync(fd);
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	REAL(int, fdatasync, int);

	before_sync(fd);
	return real_fdatasync(fd);
}

static void before_write(int fd)
{
	if (armed && fd_kind(fd) == K_DB)
		step("db-write");
}

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(ssize_t, write, int, const void *, size_t);

	before_write(fd);
	return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(ssize_t, pwrite, int, const void *, size_t, off_t);

	before_write(fd);
	return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(ssize_t, pwrite64, int, const void *, size_t, off_t);

	before_write(fd);
	return real_pwrite64(fd, buf, n, off);
}

static void before_truncate(int fd, off_t len)
{
	if (len == 0 && fd_kind(fd) == K_JOURNAL)
		journal_end();
}

int ftruncate(int fd, off_t len)
{
	REAL(int, ftruncate, int, off_t);

	before_truncate(fd, len);
	return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len)
{
	REAL(int, ftruncate64, int, off_t);

	before_truncate(fd, len);
	return real_ftruncate64(fd, len);
}

int unlink(const char *path)
{
	enum kind k = kind_of(path);
	int rc;
	REAL(int, unlink, const char *);

	if (k == K_SJ && armed)
		step("sj-unlink");
	else if (k == K_JOURNAL)
		journal_end();
	rc = real_unlink(path);
	if (k == K_SJ && armed && rc == 0) {
		sj_gone = true;
		step("sj-unlinked");
	}
	return rc;
}
