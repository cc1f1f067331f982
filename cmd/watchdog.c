/*
 * The exit watchdog (cmd/watchdog.h has the why).
 *
 * Child states:
 *   WAIT_ARM --(connection number read)--> WATCH
 *   WAIT_ARM --(daemon gone, or pipe closed)--> exit
 *   WATCH --(daemon exiting for WATCHDOG_GRACE_MS, a thread blocked)-->
 *         abort connection --> wait for the daemon to be gone --> exit
 *   WATCH --(daemon gone)--> exit
 * "Gone" is every thread of the daemon having exited: its pidfd (opened
 * right after fork, while the daemon is surely alive) polls readable.
 * Not getppid(): the child is re-parented as soon as the thread that
 * forked it exits while every other thread is exiting too, which is
 * exactly when another thread may still be stuck on the mount. Without
 * pidfd_open (Linux < 5.3) getppid() is the fallback.
 */
#include "watchdog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/log.h"
#include "procfs.h"

#define WATCHDOG_TICK_MS 200
#define WATCHDOG_GRACE_MS 1000
#define FUSECTL_DIR "/sys/fs/fuse/connections"
/* Whether any thread of pid waits uninterruptibly (state D): a daemon
 * that is exiting and has one is stuck on a request to its own mount. */
static bool any_task_blocked(pid_t pid)
{
	char path[64], tpath[384];
	struct dirent *de;
	bool blocked = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return false;
	while (!blocked && (de = readdir(d)) != NULL) {
		char st;
		unsigned long fl;

		if (de->d_name[0] == '.')
			continue;
		snprintf(tpath, sizeof(tpath), "%s/%s/stat", path, de->d_name);
		blocked = cmd_procfs_stat(tpath, &st, &fl) && st == 'D';
	}
	closedir(d);
	return blocked;
}

static void say(const char *msg, unsigned conn, const char *why)
{
	/* The child has no logger state worth trusting after fork; one
	 * plain line on the daemon's stderr, like the daemon's own. */
	fprintf(stderr, "ltxfs watchdog: %s (FUSE connection %u)%s%s\n", msg,
		conn, why ? ": " : "", why ? why : "");
	fflush(stderr);
}

static void abort_conn(unsigned conn)
{
	char path[128];
	int fd, saverr;

	snprintf(path, sizeof(path), FUSECTL_DIR "/%u/abort", conn);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* fusectl not mounted here (or the connection is gone). */
		if (mount("fusectl", FUSECTL_DIR, "fusectl", 0, NULL) == 0 ||
		    errno == EBUSY)
			fd = open(path, O_WRONLY | O_CLOEXEC);
	}
	if (fd < 0) {
		saverr = errno;
		if (saverr != ENOENT)
			say("cannot abort the stuck daemon's mount", conn,
			    strerror(saverr));
		return;
	}
	if (write(fd, "1", 1) != 1) {
		saverr = errno;
		say("cannot abort the stuck daemon's mount", conn,
		    strerror(saverr));
	} else {
		say("the daemon is exiting but its own mount holds it; "
		    "aborted the connection",
		    conn, NULL);
	}
	close(fd);
}

/* Whether the daemon has exited: every thread gone (pidfd >= 0), or
 * this child re-parented (the fallback). */
static bool daemon_gone(int pidfd, pid_t daemon_pid)
{
	struct pollfd pfd = {.fd = pidfd, .events = POLLIN};

	if (pidfd < 0)
		return getppid() != daemon_pid;
	return poll(&pfd, 1, 0) != 0;
}

static void child_main(int rfd, pid_t daemon_pid)
{
	char buf[32];
	size_t got = 0;
	unsigned conn = 0;
	int exiting_ms = 0;
	bool aborted = false;
	sigset_t all;
	int pidfd;

	/* Ctrl-C goes to the whole process group; the daemon handles it,
	 * the watchdog outlives it until the daemon is gone. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	prctl(PR_SET_NAME, "ltxfs-watchdog", 0, 0, 0);
	/* The daemon is the parent: alive until getppid() says otherwise,
	 * so a pidfd opened now cannot name another process. */
	pidfd = (int)syscall(SYS_pidfd_open, daemon_pid, 0);
	if (pidfd >= 0 && getppid() != daemon_pid)
		_exit(0);

	/* WAIT_ARM */
	for (;;) {
		struct pollfd pfd = {.fd = rfd, .events = POLLIN};
		ssize_t n;

		if (daemon_gone(pidfd, daemon_pid))
			_exit(0);
		if (poll(&pfd, 1, WATCHDOG_TICK_MS) <= 0)
			continue;
		n = read(rfd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			_exit(0);
		got += (size_t)n;
		buf[got] = '\0';
		if (strchr(buf, '\n')) {
			conn = (unsigned)strtoul(buf, NULL, 10);
			break;
		}
		if (got == sizeof(buf) - 1)
			_exit(0);
	}
	close(rfd);

	/* WATCH. The connection is aborted only while the daemon is
	 * exiting and one of its threads is blocked: then its /dev/fuse
	 * descriptor is still open, so the connection number cannot have
	 * been reused by another mount. The thread group leader may be a
	 * zombie already while another thread is still on its way out (and
	 * may block only later): the watch goes on until every thread is
	 * gone. The daemon is not reaped before that (it is not this
	 * child's to reap), so its PID in /proc is still its own. */
	for (;;) {
		if (daemon_gone(pidfd, daemon_pid))
			_exit(0);
		if (cmd_procfs_exiting(daemon_pid)) {
			exiting_ms += WATCHDOG_TICK_MS;
			if (!aborted && exiting_ms >= WATCHDOG_GRACE_MS &&
			    any_task_blocked(daemon_pid) &&
			    !daemon_gone(pidfd, daemon_pid)) {
				abort_conn(conn);
				aborted = true;
			}
		}
		usleep(WATCHDOG_TICK_MS * 1000);
	}
}

int cmd_watchdog_start(void)
{
	int p[2], saverr;
	pid_t daemon_pid = getpid(), pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		saverr = errno;
		log_warn("watchdog: pipe: %s", strerror(saverr));
		return -saverr;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		saverr = errno;
		log_warn("watchdog: fork: %s", strerror(saverr));
		close(p[0]);
		close(p[1]);
		return -saverr;
	}
	if (pid == 0) {
		/* Keep stdin/out/err and the pipe; nothing else. */
		if (dup2(p[0], 3) < 0)
			_exit(0);
		close_range(4, ~0u, 0);
		child_main(3, daemon_pid);
		_exit(0);
	}
	close(p[0]);
	return p[1];
}

int cmd_watchdog_arm(int fd, const char *mountpoint)
{
	cmd_mount_entry me;
	char msg[32];
	unsigned conn = 0;
	int n, rc;

	rc = cmd_procfs_mount_at(mountpoint, &me);
	if (rc < 0) {
		log_warn("watchdog: %s is not in /proc/self/mountinfo: %s",
			 mountpoint, strerror(-rc));
		goto out;
	}
	conn = me.minor;
	n = snprintf(msg, sizeof(msg), "%u\n", conn);
	if (write(fd, msg, (size_t)n) != n) {
		rc = errno ? -errno : -EIO;
		log_warn("watchdog: arm: %s", strerror(-rc));
	}
out:
	close(fd);
	return rc;
}
