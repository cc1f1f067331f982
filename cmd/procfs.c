/*
 * Reading /proc (cmd/procfs.h).
 *
 * /proc/self/mountinfo, one line per mount (proc(5)):
 *   ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SRC SOPTS
 *   paths escape space, tab, newline and backslash as \ooo (octal).
 * /proc/locks, one line per lock (or waiter, marked "->"):
 *   N: [->] FLOCK|POSIX|OFDLCK ADVISORY|MANDATORY READ|WRITE PID MJ:MN:INO ...
 *   MJ and MN are hex, INO decimal; OFD locks show PID -1.
 * /proc/self/status, "Name:\tvalue" lines; CapBnd is the bounding set
 *   as 16 hex digits, bit N for capability N.
 */
#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* include/linux/sched.h: the task is getting shut down. */
#define TASK_PF_EXITING 0x00000004u

/* Unescapes a mountinfo path field (\ooo octal escapes) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++, o++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				    (s[3] - '0'));
			s += 3;
		} else {
			*o = *s;
		}
	}
	*o = '\0';
}

/* The n-th field after " - " of a mountinfo line (0: the file system
 * type, 1: the source), unescaped. */
static void line_tail_field(const char *line, int n, char *out, size_t len)
{
	const char *p = strstr(line, " - ");
	size_t k = 0;

	out[0] = '\0';
	if (!p)
		return;
	p += 3;
	for (; n > 0 && p; n--) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p)
		return;
	while (p[k] && p[k] != ' ' && p[k] != '\n' && k + 1 < len)
		k++;
	memcpy(out, p, k);
	out[k] = '\0';
	unescape(out);
}

/* The newest mount at path (whose source is source, unless NULL). */
static int mount_at(const char *path, const char *source,
		    cmd_mount_entry *out)
{
	char line[8192], mnt[PATH_MAX], src[sizeof(out->source)];
	unsigned maj, min;
	bool found = false;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &maj, &min, mnt) !=
		    3)
			continue;
		unescape(mnt);
		if (strcmp(mnt, path) != 0)
			continue;
		line_tail_field(line, 1, src, sizeof(src));
		if (source && strcmp(src, source) != 0)
			continue;
		/* Later lines are newer mounts stacked on the same path. */
		out->major = maj;
		out->minor = min;
		line_tail_field(line, 0, out->fstype, sizeof(out->fstype));
		memcpy(out->source, src, sizeof(src));
		found = true;
	}
	fclose(f);
	return found ? 0 : -ENOENT;
}

int cmd_procfs_mount_at(const char *path, cmd_mount_entry *out)
{
	return mount_at(path, NULL, out);
}

int cmd_procfs_mount_at_source(const char *path, const char *source,
			       cmd_mount_entry *out)
{
	return mount_at(path, source, out);
}

int cmd_procfs_mount_path(const char *path, char *out)
{
	char dir[PATH_MAX], real[PATH_MAX];
	const char *base;
	struct stat st;
	char *slash;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	while (strlen(dir) > 1 && dir[strlen(dir) - 1] == '/')
		dir[strlen(dir) - 1] = '\0';
	if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
		return realpath(dir, out) ? 0 : -errno;
	slash = strrchr(dir, '/');
	if (!slash) {
		base = dir;
		if (!realpath(".", real))
			return -errno;
	} else {
		*slash = '\0';
		base = slash + 1;
		if (!realpath(dir[0] ? dir : "/", real))
			return -errno;
	}
	if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || !base[0])
		return realpath(path, out) ? 0 : -errno;
	if ((size_t)snprintf(out, PATH_MAX, "%s/%s",
			     strcmp(real, "/") == 0 ? "" : real,
			     base) >= PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

bool cmd_procfs_stat(const char *path, char *out_state,
		     unsigned long *out_flags)
{
	char buf[1024], *p;
	ssize_t n;
	int fd, field;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields count
	 * from the last ')'. After it: state (3), ppid, pgrp, session,
	 * tty_nr, tpgid, flags (9). */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return false;
	*out_state = p[2];
	for (field = 2; field < 9 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return false;
	*out_flags = strtoul(p + 1, NULL, 10);
	return true;
}

bool cmd_procfs_exiting(pid_t pid)
{
	char path[64], state;
	unsigned long flags;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!cmd_procfs_stat(path, &state, &flags))
		return false;
	return state == 'Z' || state == 'X' || (flags & TASK_PF_EXITING);
}

pid_t cmd_procfs_flock_holder(dev_t dev, ino_t ino)
{
	char line[512], type[16], *p;
	unsigned mj, mn;
	unsigned long long lino;
	long pid;
	pid_t found = 0;
	FILE *f;

	f = fopen("/proc/locks", "re");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		p = strchr(line, ':');
		if (!p || strstr(line, "->"))
			continue; /* waiters do not hold */
		if (sscanf(p + 1, " %15s %*s %*s %ld %x:%x:%llu", type, &pid,
			   &mj, &mn, &lino) != 5)
			continue;
		if (strcmp(type, "FLOCK") == 0 && pid > 0 &&
		    mj == major(dev) && mn == minor(dev) &&
		    (ino == 0 || lino == (unsigned long long)ino))
			found = (pid_t)pid;
	}
	fclose(f);
	return found;
}

int cmd_procfs_cap_bounding(int cap, bool *out)
{
	unsigned long long set;
	char line[256];
	int rc = -ENOENT;
	FILE *f;

	f = fopen("/proc/self/status", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "CapBnd: %llx", &set) == 1) {
			*out = cap >= 0 && cap < 64 && (set >> cap & 1);
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}
