/*
 * One daemon per data directory and per mount point (cmd/owner.h has the
 * rules).
 *
 * <data.dir>/lock, written by the holder after it took the lock (text,
 * one field a line; a reader that finds it locked shows them):
 *   pid PID
 *   host HOSTNAME
 *   holds WHAT           ("mount /litefs")
 *   since YYYY-MM-DDTHH:MM:SSZ
 * The content is only a description: the flock() is the ownership.
 */
#include "owner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/io.h"
#include "lib/log.h"
#include "procfs.h"

#define OWNER_LOCK_FILE "lock"
#define OWNER_EXIT_WAIT_MS 10000 /* longest wait for an exiting holder */
#define OWNER_POLL_MS 50
#define OWNER_MAX_DEAD_MOUNTS 8  /* dead mounts stacked on one path */
#define OWNER_PROBE_MS 2000      /* longest wait for a mount to answer */
#define OWNER_HIDDEN_NAMES 5     /* files beneath the mount named */
#define OWNER_GUARD_SOURCE "ltxfs-guard"
#define FUSE_FSTYPE "fuse.ltxfs"

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* One try at an exclusive flock: 0, -EBUSY or -errno. */
static int try_flock(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK ? -EBUSY : -errno;
}

/* The holder of fd's flock on this host (/proc/locks), 0 if unknown. */
static pid_t local_holder(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return 0;
	return cmd_procfs_flock_holder(st.st_dev, st.st_ino);
}

/* Takes fd's flock; when it is held by a process of this host that is
 * exiting (a kill -9 a moment ago), waits for it, bounded. */
static int flock_or_wait_exiting(int fd)
{
	int waited = 0, rc;
	pid_t holder;

	while ((rc = try_flock(fd)) == -EBUSY && waited < OWNER_EXIT_WAIT_MS) {
		holder = local_holder(fd);
		if (holder <= 0 || !cmd_procfs_exiting(holder))
			break;
		sleep_ms(OWNER_POLL_MS);
		waited += OWNER_POLL_MS;
	}
	return rc;
}

/* The lock file's fields, as one phrase: "PID 12 on host h (mount /x,
 * since T)"; what it cannot read it leaves out. */
static void describe_holder(int fd, pid_t local, char *out, size_t n)
{
	char buf[1024], pid[32] = "", host[256] = "", holds[PATH_MAX] = "";
	char since[64] = "", *line, *save = NULL;
	size_t got = 0;

	if (lib_io_pread_full(fd, buf, sizeof(buf) - 1, 0, &got) < 0 &&
	    got == 0)
		got = 0;
	buf[got] = '\0';
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "pid ", 4) == 0)
			snprintf(pid, sizeof(pid), "%s", line + 4);
		else if (strncmp(line, "host ", 5) == 0)
			snprintf(host, sizeof(host), "%s", line + 5);
		else if (strncmp(line, "holds ", 6) == 0)
			snprintf(holds, sizeof(holds), "%s", line + 6);
		else if (strncmp(line, "since ", 6) == 0)
			snprintf(since, sizeof(since), "%s", line + 6);
	}
	if (local > 0)
		snprintf(pid, sizeof(pid), "%d", (int)local);
	if (!pid[0]) {
		snprintf(out, n, "another process (it has not said which yet)");
		return;
	}
	snprintf(out, n, "ltxfs PID %s%s%s%s%s%s%s%s", pid,
		 host[0] ? " on host " : "", host,
		 holds[0] || since[0] ? " (" : "", holds,
		 holds[0] && since[0] ? ", since " : (since[0] ? "since " : ""),
		 since, holds[0] || since[0] ? ")" : "");
}

static int write_holder(int fd, const char *what)
{
	char host[256] = "", since[64] = "", buf[PATH_MAX + 512];
	time_t now = time(NULL);
	struct tm tm;
	int len, rc;

	gethostname(host, sizeof(host) - 1);
	if (gmtime_r(&now, &tm))
		strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
	len = snprintf(buf, sizeof(buf), "pid %d\nhost %s\nholds %s\nsince %s\n",
		       (int)getpid(), host, what, since);
	if (len < 0 || (size_t)len >= sizeof(buf))
		return -ENAMETOOLONG;
	rc = lib_io_ftruncate(fd, 0);
	if (rc == 0)
		rc = lib_io_pwrite_full(fd, buf, (size_t)len, 0);
	if (rc == 0)
		rc = lib_io_fsync(fd);
	return rc;
}

int cmd_owner_lock_data(const char *cmd, const char *data_dir,
			const char *what, int *out_fd)
{
	char path[PATH_MAX], who[PATH_MAX + 512];
	int fd, rc, saverr;

	*out_fd = -1;
	snprintf(path, sizeof(path), "%s/" OWNER_LOCK_FILE, data_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		saverr = errno;
		fprintf(stderr, "%s: cannot open %s: %s\n", cmd, path,
			strerror(saverr));
		return -saverr;
	}
	rc = flock_or_wait_exiting(fd);
	if (rc == -EBUSY) {
		describe_holder(fd, local_holder(fd), who, sizeof(who));
		fprintf(stderr, "%s: data directory %s is in use by %s; one "
			"process per data directory: stop that one first\n",
			cmd, data_dir, who);
		goto fail;
	}
	if (rc < 0) {
		fprintf(stderr, "%s: cannot lock %s: %s; ltxfs needs file locks "
			"in its data directory to keep a second daemon off "
			"it (on NFS, mount without local_lock=flock)\n", cmd,
			path, strerror(-rc));
		goto fail;
	}
	rc = write_holder(fd, what);
	if (rc < 0) {
		fprintf(stderr, "%s: cannot write %s: %s\n", cmd, path,
			strerror(-rc));
		goto fail;
	}
	*out_fd = fd;
	return 0;
fail:
	close(fd);
	return rc;
}

/* --- mount point --- */

/* Unmounts path lazily: umount2 when privileged, else fusermount3. */
static int lazy_unmount(const char *path)
{
	pid_t pid;
	int status;

	if (umount2(path, MNT_DETACH) == 0)
		return 0;
	if (errno != EPERM)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", path,
		       (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EPERM;
}

/* The holder of a flock on the guard at path (any inode of it: it has
 * one directory), 0 when none. */
static pid_t guard_holder(const char *path)
{
	cmd_mount_entry g;

	if (cmd_procfs_mount_at_source(path, OWNER_GUARD_SOURCE, &g) < 0)
		return 0;
	return cmd_procfs_flock_holder(makedev(g.major, g.minor), 0);
}

/* The holder of the flock on the directory beneath a mount at path: its
 * inode is the parent directory's entry (readdir's d_ino is not crossed
 * by mounts), on the parent's device. 0 when unknown. */
static pid_t mount_holder(const char *path)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/'), *base;
	struct dirent *de;
	struct stat st;
	pid_t pid = 0;
	DIR *d;

	if (!slash || !slash[1])
		return 0;
	base = slash + 1;
	snprintf(parent, sizeof(parent), "%.*s",
		 slash == path ? 1 : (int)(slash - path), path);
	if (stat(parent, &st) < 0)
		return 0;
	d = opendir(parent);
	if (!d)
		return 0;
	while (pid == 0 && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, base) == 0)
			pid = cmd_procfs_flock_holder(st.st_dev, de->d_ino);
	closedir(d);
	return pid ? pid : guard_holder(path);
}

/* One line: path is mounted; holder is the serving daemon if known. */
static void refuse_mounted(const char *cmd, const char *path,
			   const cmd_mount_entry *me, pid_t holder)
{
	if (strcmp(me->fstype, FUSE_FSTYPE) != 0)
		fprintf(stderr, "%s: %s is already mounted (%s); unmount it "
			"first\n", cmd, path, me->fstype);
	else if (holder > 0)
		fprintf(stderr, "%s: mount point %s is already served by ltxfs "
			"PID %d; one daemon per mount point: stop that one "
			"first\n", cmd, path, (int)holder);
	else
		fprintf(stderr, "%s: mount point %s is already served by "
			"another ltxfs (its PID is not visible here); stop it "
			"first\n", cmd, path);
}

/* Whether the ltxfs mount at path is served: statfs() always asks the
 * daemon (no cache answers it), so a dead connection says ENOTCONN. Asked
 * from a child, so a daemon that is stopped (SIGSTOP) cannot hang this
 * one: 1 served, 0 dead, -ETIMEDOUT or -errno. */
static int probe_served(const char *path)
{
	struct statfs sf;
	int status, waited = 0;
	pid_t pid, got;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (statfs(path, &sf) == 0)
			_exit(0);
		_exit(errno == ENOTCONN || errno == ECONNABORTED ? 1 : 2);
	}
	while ((got = waitpid(pid, &status, WNOHANG)) == 0 &&
	       waited < OWNER_PROBE_MS) {
		sleep_ms(OWNER_POLL_MS / 5);
		waited += OWNER_POLL_MS / 5;
	}
	if (got == 0) {
		kill(pid, SIGKILL); /* a FUSE request ends on a fatal signal */
		waitpid(pid, &status, 0);
		return -ETIMEDOUT;
	}
	if (got < 0 || !WIFEXITED(status))
		return -EIO;
	return WEXITSTATUS(status) == 0 ? 1 :
	       WEXITSTATUS(status) == 1 ? 0 : -EIO;
}

/* Clears dead ltxfs mounts stacked at path (a killed daemon's), refuses a
 * served one. 0, or -errno after one line on stderr. */
static int clear_dead_mounts(const char *cmd, const char *path)
{
	cmd_mount_entry me;
	pid_t holder;
	int rc;

	for (int i = 0; i < OWNER_MAX_DEAD_MOUNTS; i++) {
		if (cmd_procfs_mount_at(path, &me) < 0 ||
		    strcmp(me.fstype, FUSE_FSTYPE) != 0)
			return 0;
		holder = mount_holder(path);
		if (holder > 0 && !cmd_procfs_exiting(holder)) {
			refuse_mounted(cmd, path, &me, holder);
			return -EBUSY;
		}
		rc = probe_served(path);
		if (rc == 1) {
			refuse_mounted(cmd, path, &me, 0);
			return -EBUSY;
		}
		if (rc < 0) {
			fprintf(stderr, "%s: mount point %s is an ltxfs mount "
				"that does not answer (%s): is its daemon "
				"stopped? stop it, or unmount it (fusermount3 -u "
				"-z %s)\n", cmd, path, strerror(-rc), path);
			return rc;
		}
		rc = lazy_unmount(path);
		if (rc < 0) {
			fprintf(stderr, "%s: mount point %s is a dead ltxfs mount "
				"and unmounting it failed: %s; unmount it by hand "
				"(fusermount3 -u -z %s)\n", cmd, path,
				strerror(-rc), path);
			return rc;
		}
		log_warn("mount point %s was a dead ltxfs mount (its daemon is "
			 "gone, FUSE connection %u): unmounted it lazily", path,
			 me.minor);
	}
	fprintf(stderr, "%s: mount point %s still holds a dead ltxfs mount "
		"after %d unmounts; unmount it by hand\n", cmd, path,
		OWNER_MAX_DEAD_MOUNTS);
	return -EBUSY;
}

/* Files in the directory beneath the mount are hidden while it is
 * mounted and are not replicated: an application that wrote them while
 * no ltxfs was mounted (a start before the node's, a crash loop) lost
 * those writes to everyone else. Said once, loudly, naming a few. */
static void warn_hidden_files(const char *path, int dirfd)
{
	char names[512] = "";
	struct dirent *de;
	size_t used = 0;
	int fd, n = 0;
	DIR *d;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n++ < OWNER_HIDDEN_NAMES && used < sizeof(names))
			used += (size_t)snprintf(names + used,
						 sizeof(names) - used, "%s%s",
						 used ? ", " : "", de->d_name);
	}
	closedir(d);
	if (n > 0)
		log_warn("mount point %s holds %d file%s of its own (%s%s): "
			 "written there while ltxfs was not mounted, they are "
			 "hidden by the mount and not replicated; move them "
			 "away, and start applications only once the node "
			 "serves", path, n, n == 1 ? "" : "s", names,
			 n > OWNER_HIDDEN_NAMES ? ", ..." : "");
}

/* A flock on the directory at path now (the guard's root, or the bare
 * directory); -EBUSY after a line naming the holder. */
static int lock_dir(const char *cmd, const char *path, int *out_fd)
{
	int fd, rc, saverr;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		saverr = errno;
		fprintf(stderr, "%s: mount point %s: %s\n", cmd, path,
			strerror(saverr));
		return -saverr;
	}
	rc = flock_or_wait_exiting(fd);
	if (rc == -EBUSY)
		fprintf(stderr, "%s: mount point %s is being mounted by ltxfs "
			"PID %d; one daemon per mount point\n", cmd, path,
			(int)local_holder(fd));
	else if (rc < 0)
		fprintf(stderr, "%s: cannot lock mount point %s: %s\n", cmd,
			path, strerror(-rc));
	if (rc < 0) {
		close(fd);
		return rc;
	}
	*out_fd = fd;
	return 0;
}

/* Whether the newest mount at path is a guard (and which, in *me). */
static bool guard_on_top(const char *path, cmd_mount_entry *me)
{
	return cmd_procfs_mount_at(path, me) == 0 &&
	       strcmp(me->source, OWNER_GUARD_SOURCE) == 0;
}

/* Puts the read-only guard at path, and locks its root (gfd). 0; -EBUSY
 * when another daemon locked it first; 1 when no guard can be mounted
 * here (no privilege): the daemon goes on without. */
static int put_guard(const char *cmd, const char *path, int *gfd)
{
	int saverr;

	if (mount(OWNER_GUARD_SOURCE, path, "tmpfs",
		  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=4k,nr_inodes=4,mode=0755") < 0) {
		saverr = errno;
		log_warn("mount point %s: no read-only guard beneath the mount "
			 "(%s): while no ltxfs serves it, applications that "
			 "write there write to the bare directory", path,
			 strerror(saverr));
		return 1;
	}
	log_info("mount point %s: a read-only guard (tmpfs %s) stays beneath "
		 "the mount, so writes fail with EROFS whenever no ltxfs "
		 "serves it", path, OWNER_GUARD_SOURCE);
	return lock_dir(cmd, path, gfd);
}

int cmd_owner_claim_mount(const char *cmd, const char *mountpoint,
			  char *real, int out_fd[2])
{
	cmd_mount_entry me;
	struct stat st;
	int fd = -1, gfd = -1, rc, saverr;
	bool guarded;

	out_fd[0] = out_fd[1] = -1;
	rc = cmd_procfs_mount_path(mountpoint, real);
	if (rc < 0) {
		fprintf(stderr, "%s: mount point %s: %s; create it first\n", cmd,
			mountpoint, strerror(-rc));
		return rc;
	}
	rc = clear_dead_mounts(cmd, real);
	if (rc < 0)
		return rc;
	if (stat(real, &st) < 0) {
		saverr = errno;
		fprintf(stderr, "%s: mount point %s is missing (%s); create it "
			"first\n", cmd, real, strerror(saverr));
		return -saverr;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: mount point %s is not a directory\n", cmd,
			real);
		return -ENOTDIR;
	}
	guarded = guard_on_top(real, &me);
	if (!guarded && cmd_procfs_mount_at(real, &me) == 0) {
		refuse_mounted(cmd, real, &me, mount_holder(real));
		return -EBUSY;
	}
	rc = lock_dir(cmd, real, &fd);
	if (rc < 0)
		return rc;
	if (!guarded) {
		warn_hidden_files(real, fd);
		rc = put_guard(cmd, real, &gfd);
		if (rc < 0)
			goto fail;
		guarded = rc == 0;
	}
	/* Mounted between the check and the lock (by something that does
	 * not take the lock, as ltxfs does). */
	if (guarded ? !guard_on_top(real, &me) :
		      cmd_procfs_mount_at(real, &me) == 0) {
		refuse_mounted(cmd, real, &me, 0);
		rc = -EBUSY;
		goto fail;
	}
	out_fd[0] = fd;
	out_fd[1] = gfd;
	return 0;
fail:
	if (gfd >= 0)
		close(gfd);
	close(fd);
	return rc;
}
