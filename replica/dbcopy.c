/*
 * The copy of GET /export and POST /import in a child process
 * (replica/dbcopy.h; docs/STORAGE.md, "The daemon's own mappings").
 *
 * Why a process: SQLite maps a WAL-mode database's <db>-shm, and unmaps
 * it when the connection closes. Unmapping a file of the mount writes its
 * dirty pages back through FUSE while the unmapping process holds its
 * memory-map lock; in the daemon, the FUSE thread that must answer may
 * need that same lock, and the node hangs. In a child the mapping is the
 * child's, and the daemon's FUSE threads answer its write-back like any
 * application's. To the mount the child is an application: its import is
 * one SQLite write transaction, captured like any other.
 *
 * Why not fork(): the daemon has many threads (a fork would copy locks
 * held by others, and fork walks the whole address space with the map
 * lock held); posix_spawn execs at once.
 *
 * The child's environment: the daemon's binary (/proc/self/exe, so the
 * same version even after an upgrade replaced the file), the daemon's
 * environment variables, no signal blocked or ignored, stdin /dev/null,
 * stdout a pipe to the daemon, stderr the daemon's; every other
 * descriptor closed before the exec (closefrom), whatever its close-on-
 * exec flag: not /dev/fuse, not the daemon's locks, sockets or backing
 * files (libcurl's sockets, for one, are not close-on-exec).
 *
 * Child exit codes and the one line it prints on stdout:
 *
 *   0  copied                                   (nothing)
 *   1  SQLite failed; DST rolled back           SQLite's message
 *   2  usage                                    (usage on stderr)
 *   3  SQLITE_FULL; DST rolled back             SQLite's message
 *
 * Child: one budget of DBCOPY_BUSY_MS for every wait on a lock of the
 * copy (opening, the backup step; SQLite's busy handler and the retries
 * of a step that found the source busy), then "database is locked".
 *
 * Daemon: the child is killed (SIGKILL) when c->timeout_ms passes, the
 * client hangs up or c->cancel says so, then reaped within
 * DBCOPY_REAP_MS. A killed import leaves what a killed application
 * leaves: a hot journal the next connection rolls back, or WAL frames
 * without a commit.
 */
#include "dbcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"

#define DBCOPY_EXIT_FAILED 1
#define DBCOPY_EXIT_USAGE 2
#define DBCOPY_EXIT_FULL 3
#define DBCOPY_BUSY_MS 30000
#define DBCOPY_ROLLBACK_BUSY_MS 10000
#define DBCOPY_REAP_MS 10000

extern char **environ;

static int64_t now_ms(void)
{
	return lib_clock_monotonic_ns() / 1000000;
}

/* ---- the child ------------------------------------------------------ */

/* SQLite's busy handler: retry every 10 ms until *ctx (ms, monotonic). */
static int busy_until(void *ctx, int count)
{
	const int64_t *until_ms = ctx;

	(void)count;
	if (now_ms() >= *until_ms)
		return 0;
	usleep(10000);
	return 1;
}

/* A copy that failed part way (SQLITE_FULL, say) leaves dst with a hot
 * journal, which SQLite rolls back at the next read: read it now, so the
 * space the copy took is given back at once. */
static void rollback_dst(const char *dst)
{
	int64_t until = now_ms() + DBCOPY_ROLLBACK_BUSY_MS;
	sqlite3 *d = NULL;

	if (sqlite3_open_v2(dst, &d, SQLITE_OPEN_READWRITE, NULL) ==
	    SQLITE_OK) {
		sqlite3_busy_handler(d, busy_until, &until);
		(void)sqlite3_exec(d, "SELECT count(*) FROM sqlite_schema",
				   NULL, NULL, NULL);
	}
	sqlite3_close(d);
}

/* Copies src into dst with SQLite's backup API (consistent: it reads in
 * one read transaction and writes in one write transaction). -ENOSPC
 * when the disk filled (dst is rolled back), -EIO for other failures;
 * err says why. */
static int copy(const char *src, const char *dst, char *err, size_t errlen)
{
	int64_t until = now_ms() + DBCOPY_BUSY_MS;
	sqlite3 *s = NULL, *d = NULL;
	sqlite3_backup *b;
	bool started = false, copied = false;
	int rc;

	rc = sqlite3_open_v2(src, &s, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_open_v2(dst, &d, SQLITE_OPEN_READWRITE |
						      SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "opening: %s",
			 sqlite3_errmsg(d ? d : s));
		goto out;
	}
	sqlite3_busy_handler(s, busy_until, &until);
	sqlite3_busy_handler(d, busy_until, &until);
	b = sqlite3_backup_init(d, "main", s, "main");
	if (!b) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(d));
		rc = SQLITE_ERROR;
		goto out;
	}
	started = true;
	/* A busy source is not given to the busy handler: retry here. */
	while ((rc = sqlite3_backup_step(b, -1)) == SQLITE_BUSY ||
	       rc == SQLITE_LOCKED) {
		if (now_ms() >= until)
			break;
		usleep(10000);
	}
	sqlite3_backup_finish(b);
	copied = rc == SQLITE_DONE;
	if (copied)
		rc = SQLITE_OK;
	else
		snprintf(err, errlen, "%s", sqlite3_errstr(rc));
out:
	sqlite3_close(s);
	sqlite3_close(d);
	if (rc == SQLITE_OK)
		return 0;
	if (started && !copied)
		rollback_dst(dst);
	return rc == SQLITE_FULL ? -ENOSPC : -EIO;
}

int rep_dbcopy_main(int argc, char **argv)
{
	char err[300] = "";
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: ltxfs " REP_DBCOPY_CMD " SRC DST (the "
			"copy of GET /export and POST /import; the daemon "
			"runs it)\n");
		return DBCOPY_EXIT_USAGE;
	}
	/* Without the daemon there is no mount to copy from or into. */
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	rc = copy(argv[1], argv[2], err, sizeof(err));
	if (rc == 0)
		return 0;
	printf("%s\n", err);
	fflush(stdout);
	return rc == -ENOSPC ? DBCOPY_EXIT_FULL : DBCOPY_EXIT_FAILED;
}

/* ---- the daemon ----------------------------------------------------- */

/* Starts the child; *out_fd is the read end of its stdout. 0 or -ECHILD
 * (err says why). */
static int spawn_child(const rep_dbcopy *c, pid_t *out_pid, int *out_fd,
		       char *err, size_t errlen)
{
	char *argv[] = {"ltxfs", REP_DBCOPY_CMD, (char *)c->src,
			(char *)c->dst, NULL};
	static const int dfl_sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	int p[2], rc;

	if (pipe2(p, O_CLOEXEC) < 0) {
		rc = errno;
		snprintf(err, errlen, "the copy process: pipe: %s",
			 strerror(rc));
		return -ECHILD;
	}
	sigemptyset(&none);
	sigemptyset(&dfl);
	for (size_t i = 0; i < sizeof(dfl_sigs) / sizeof(dfl_sigs[0]); i++)
		sigaddset(&dfl, dfl_sigs[i]);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY,
					      0);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	if (rc == 0)
		rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	if (rc == 0)
		rc = posix_spawnattr_setsigmask(&at, &none);
	if (rc == 0)
		rc = posix_spawnattr_setsigdefault(&at, &dfl);
	if (rc == 0)
		rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
							   POSIX_SPAWN_SETSIGDEF);
	if (rc == 0)
		rc = posix_spawn(out_pid, "/proc/self/exe", &fa, &at, argv,
				 environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	if (rc != 0) {
		close(p[0]);
		snprintf(err, errlen, "starting the copy process "
			 "(/proc/self/exe " REP_DBCOPY_CMD "): %s",
			 strerror(rc));
		return -ECHILD;
	}
	*out_fd = p[0];
	return 0;
}

/* Appends what the child wrote on fd to msg (at most msglen - 1 bytes
 * kept, the rest read and dropped); *eof at its end. */
static void read_output(int fd, char *msg, size_t msglen, size_t *used,
			bool *eof)
{
	char buf[512];
	ssize_t r = read(fd, buf, sizeof(buf));

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) {
		*eof = true;
		return;
	}
	for (ssize_t i = 0; i < r && *used + 1 < msglen; i++)
		msg[(*used)++] = buf[i];
	msg[*used] = '\0';
}

/* Waits until the child pid has exited (its stdout read to the end):
 * 0 with *status, -ETIMEDOUT, -ECANCELED (*why set) or -ECHILD. */
static int wait_child(const rep_dbcopy *c, pid_t pid, int fd, char *msg,
		      size_t msglen, int *status, const char **why)
{
	int64_t until = now_ms() + c->timeout_ms;
	size_t used = 0;
	bool eof = false;

	msg[0] = '\0';
	for (;;) {
		struct pollfd pf[2];
		int64_t left = until - now_ms();
		nfds_t np = 0;
		int ci = -1;

		if (eof) {
			pid_t got = waitpid(pid, status, WNOHANG);
			if (got == pid)
				return 0;
			if (got < 0 && errno != EINTR) {
				*why = strerror(errno);
				return -ECHILD;
			}
		}
		if (c->cancel && c->cancel(c->ctx, why))
			return -ECANCELED;
		if (left <= 0) {
			*why = "timed out";
			return -ETIMEDOUT;
		}
		if (!eof)
			pf[np++] = (struct pollfd){fd, POLLIN, 0};
		/* Only a hang-up: data a client sends (it should not) must
		 * not wake this loop at every turn. */
		if (c->client_fd >= 0) {
			ci = (int)np;
			pf[np++] = (struct pollfd){c->client_fd, POLLRDHUP, 0};
		}
		if (left > (eof ? 1 : REP_DBCOPY_TICK_MS))
			left = eof ? 1 : REP_DBCOPY_TICK_MS;
		if (poll(pf, np, (int)left) < 0 && errno != EINTR) {
			*why = strerror(errno);
			return -ECHILD;
		}
		if (!eof && pf[0].revents)
			read_output(fd, msg, msglen, &used, &eof);
		if (ci >= 0 &&
		    (pf[ci].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			/* A stopping server shuts its connections down:
			 * that is the stop, not the client. */
			if (!c->cancel || !c->cancel(c->ctx, why))
				*why = "the client hung up";
			return -ECANCELED;
		}
	}
}

/* Kills the child and reaps it, waiting at most DBCOPY_REAP_MS (a FUSE
 * request it has sent is still answered first). */
static void kill_child(pid_t pid)
{
	int64_t until = now_ms() + DBCOPY_REAP_MS;
	int status;

	kill(pid, SIGKILL);
	while (now_ms() < until) {
		pid_t got = waitpid(pid, &status, WNOHANG);
		if (got == pid || (got < 0 && errno != EINTR))
			return;
		usleep(5000);
	}
	log_error("the export/import copy process %d did not exit %d ms "
		  "after SIGKILL; it is left unreaped", (int)pid,
		  DBCOPY_REAP_MS);
}

/* The last line the child printed, without its newline. */
static void chomp(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

int rep_dbcopy_run(const rep_dbcopy *c, char *err, size_t errlen)
{
	char msg[400];
	const char *why = "";
	int64_t t0 = now_ms();
	int fd = -1, status = 0, rc, code;
	pid_t pid;

	rc = spawn_child(c, &pid, &fd, err, errlen);
	if (rc < 0)
		return rc;
	log_debug("copy process %d: %s -> %s", (int)pid, c->src, c->dst);
	rc = wait_child(c, pid, fd, msg, sizeof(msg), &status, &why);
	close(fd);
	if (rc < 0) {
		kill_child(pid);
		snprintf(err, errlen, "the copy was stopped after %.1f s: %s",
			 (double)(now_ms() - t0) / 1000.0, why);
		return rc;
	}
	chomp(msg);
	log_debug("copy process %d: status 0x%x after %" PRId64 " ms",
		  (int)pid, status, now_ms() - t0);
	code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (code == 0)
		return 0;
	if ((code == DBCOPY_EXIT_FAILED || code == DBCOPY_EXIT_FULL) &&
	    msg[0]) {
		snprintf(err, errlen, "%s", msg);
		return code == DBCOPY_EXIT_FULL ? -ENOSPC : -EIO;
	}
	if (WIFSIGNALED(status))
		snprintf(err, errlen, "the copy process died of signal %d%s%s",
			 WTERMSIG(status), msg[0] ? ": " : "", msg);
	else
		snprintf(err, errlen, "the copy process exited with status "
			 "%d%s%s", code, msg[0] ? ": " : "", msg);
	return -ECHILD;
}
