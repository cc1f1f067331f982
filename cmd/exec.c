/*
 * The supervision of `exec` (exec.h; docs/CONFIG.md, "exec").
 *
 * One thread, "exec", per ltxfs:
 *
 *   WAIT_READY --rep_node_ready--> RUN command 1 .. n-1 --each exits 0-->
 *   RUN command n (the application) --it exits--> DONE
 *         \ a command exits non-zero: DONE (its status is ltxfs's)
 *   any --stop (cmd_exec_signal)--> what runs gets the signal, grace_ms,
 *         then SIGKILL --> DONE
 *
 * An if-candidate command runs only when lease.candidate is true and this
 * node is the primary by then (its migration's result replicates to the
 * others); otherwise it is skipped, and logged. When that is the last
 * one, no application runs here and ltxfs goes on serving.
 *
 * Each command is /bin/sh -c CMD (or, from `ltxfs mount -- CMD ARGS`, CMD
 * looked up in PATH), spawned with:
 *   - its own process group (the signals ltxfs passes on reach the
 *     shell and what it started, by the group of the child's PID);
 *   - no descriptor but 0, 1, 2 (every other is closed in the child: the
 *     data directory's and mount point's locks, /dev/fuse, databases);
 *   - the signal mask empty and every disposition default (ltxfs blocks
 *     SIGINT/SIGTERM/SIGHUP and ignores SIGPIPE);
 *   - the environment of ltxfs plus LTXFS_PRIMARY ("1" on the primary,
 *     "" elsewhere), LTXFS_PRIMARY_URL (the primary's advertise URL, ""
 *     when unknown) and LTXFS_MOUNT (the mount point), as they are when
 *     it starts.
 * The command's end is the end of its process group: the shell may have
 * started the application as its child, and a signal passed on to the
 * group ends the shell at once while the application takes its time.
 * So ltxfs is a child subreaper (PR_SET_CHILD_SUBREAPER: what the shell
 * leaves becomes ltxfs's child), reaps the group's processes as they end
 * (waitpid(-pgid): never another child of the daemon, such as
 * replica/dbcopy.c's), and takes the status of the last one as the
 * command's. A process that leaves the group (a daemon it starts) is not
 * waited for.
 *
 * Lock: cmd_exec.mu guards child, app, stop, stop_sig, exit_code, done.
 */
#include "exec.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"

#define NS_PER_MS 1000000LL
#define READY_POLL_MS 50
#define READY_SAY_MS 10000       /* why it is not ready, this often */
#define KILL_WAIT_MS 10000       /* after SIGKILL, at most this long */

extern char **environ;

struct cmd_exec {
	cmd_exec_opts o;
	pthread_t thread;

	pthread_mutex_t mu;
	pthread_cond_t cond;     /* signalled on stop and when done */
	pid_t child;             /* the command running, 0 none */
	bool app;                /* ... and it is the application */
	bool stop;               /* cmd_exec_signal asked for a stop */
	int stop_sig;
	int exit_code;           /* -1 none */
	bool done;               /* the thread has ended */
};

static size_t ncmds(const cmd_exec *e)
{
	return e->o.argv ? 1 : e->o.list ? e->o.list->count : 0;
}

/* A command's text for the log: the shell line, or argv joined. */
static void describe(const cmd_exec *e, size_t i, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	if (!e->o.argv) {
		snprintf(buf, len, "%s", e->o.list->items[i].cmd);
		return;
	}
	for (char *const *a = e->o.argv; *a && off < len; a++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
					a == e->o.argv ? "" : " ", *a);
}

static void describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d",
			 WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)",
			 WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "ended with status 0x%x", status);
}

/* The shell's convention: the status, or 128 + the signal. */
static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

static bool stopping(cmd_exec *e)
{
	bool s;

	pthread_mutex_lock(&e->mu);
	s = e->stop;
	pthread_mutex_unlock(&e->mu);
	return s;
}

/* Waits on cond up to ms (mu held; released meanwhile). */
static void nap_locked(cmd_exec *e, int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * NS_PER_MS;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&e->cond, &e->mu, &ts);
}

/* WAIT_READY: true once the node is ready, false on a stop. */
static bool wait_ready(cmd_exec *e)
{
	int64_t said = 0;
	char why[400];

	for (;;) {
		int64_t now = lib_clock_monotonic_ns() / NS_PER_MS;
		if (stopping(e))
			return false;
		if (rep_node_ready(e->o.node, why, sizeof(why)))
			return true;
		if (!said || now - said >= READY_SAY_MS) {
			log_info("exec: waiting for the node to be ready: %s",
				 why);
			said = now;
		}
		pthread_mutex_lock(&e->mu);
		if (!e->stop)
			nap_locked(e, READY_POLL_MS);
		pthread_mutex_unlock(&e->mu);
	}
}

/* environ without our variables, then ours. Frees with free() of each
 * string we made and of the array: *own_from is the first we made. */
static char **child_env(cmd_exec *e, size_t *own_from)
{
	static const char *const ours[] = {"LTXFS_PRIMARY=",
					   "LTXFS_PRIMARY_URL=",
					   "LTXFS_MOUNT="};
	char url[1024] = "", buf[1200];
	bool primary = rep_node_is_primary(e->o.node);
	size_t n = 0, k = 0;
	char **env;

	rep_node_primary_url(e->o.node, url, sizeof(url));
	while (environ && environ[n])
		n++;
	env = calloc(n + 4, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool skip = false;
		for (size_t j = 0; j < 3; j++)
			skip |= strncmp(environ[i], ours[j],
					strlen(ours[j])) == 0;
		if (!skip)
			env[k++] = environ[i];
	}
	*own_from = k;
	env[k++] = strdup(primary ? "LTXFS_PRIMARY=1" : "LTXFS_PRIMARY=");
	snprintf(buf, sizeof(buf), "LTXFS_PRIMARY_URL=%s", url);
	env[k++] = strdup(buf);
	snprintf(buf, sizeof(buf), "LTXFS_MOUNT=%s", e->o.mountpoint);
	env[k++] = strdup(buf);
	for (size_t i = *own_from; i < k; i++)
		if (!env[i]) {
			for (size_t j = *own_from; j < k; j++)
				free(env[j]);
			free(env);
			return NULL;
		}
	return env;
}

static void free_env(char **env, size_t own_from)
{
	if (!env)
		return;
	for (size_t i = own_from; env[i]; i++)
		free(env[i]);
	free(env);
}

/* Spawns command i (see the top of the file). 0 with *pid, or -errno
 * (logged). */
static int spawn(cmd_exec *e, size_t i, pid_t *pid)
{
	char *sh[] = {"/bin/sh", "-c", NULL, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	size_t own_from = 0;
	char **env = child_env(e, &own_from);
	int rc;

	if (!env)
		return -ENOMEM;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
					       POSIX_SPAWN_SETSIGMASK |
					       POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
	if (e->o.argv) {
		rc = posix_spawnp(pid, e->o.argv[0], &fa, &attr, e->o.argv,
				  env);
	} else {
		sh[2] = e->o.list->items[i].cmd;
		rc = posix_spawn(pid, sh[0], &fa, &attr, sh, env);
	}
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	free_env(env, own_from);
	if (rc != 0) {
		char what[600];
		describe(e, i, what, sizeof(what));
		log_error("exec: cannot start \"%s\": %s", what, strerror(rc));
		return -rc;
	}
	return 0;
}

/* Whether command i runs here: an if-candidate one only on a candidate
 * that is the primary. */
static bool runs_here(cmd_exec *e, size_t i)
{
	char what[600];

	if (e->o.argv || !e->o.list->items[i].if_candidate)
		return true;
	if (e->o.candidate && rep_node_is_primary(e->o.node))
		return true;
	describe(e, i, what, sizeof(what));
	log_info("exec: skipping \"%s\" (if-candidate): %s", what,
		 e->o.candidate ? "this node is not the primary"
				: "lease.candidate is false");
	return false;
}

/* Runs command i to its end: 0 with its wait status in *status,
 * -ECANCELED (a stop came first), or -errno (it could not start,
 * logged). */
static int run_one(cmd_exec *e, size_t i, bool app, int *status)
{
	pid_t pid, got;
	int rc;

	pthread_mutex_lock(&e->mu);
	if (e->stop) {
		pthread_mutex_unlock(&e->mu);
		return -ECANCELED;
	}
	rc = spawn(e, i, &pid);
	if (rc == 0) {
		e->child = pid;
		e->app = app;
	}
	pthread_mutex_unlock(&e->mu);
	if (rc < 0)
		return rc;
	*status = 0;
	for (;;) {
		int st;
		got = waitpid(-pid, &st, 0);
		if (got > 0)
			*status = st; /* the last one's is the command's */
		else if (errno != EINTR)
			break; /* ECHILD: the group has ended */
	}
	pthread_mutex_lock(&e->mu);
	e->child = 0;
	e->app = false;
	pthread_mutex_unlock(&e->mu);
	return 0;
}

/* Runs the commands in order; the exit code for ltxfs, or -1. */
static int run_all(cmd_exec *e)
{
	size_t n = ncmds(e);
	char what[600], how[120];
	int status = 0, rc;

	for (size_t i = 0; i < n; i++) {
		bool app = i + 1 == n;
		if (!runs_here(e, i))
			continue;
		describe(e, i, what, sizeof(what));
		log_info("exec: starting %s \"%s\"%s",
			 app ? "the application" : "command",
			 what, app ? "" : " (it must exit 0)");
		rc = run_one(e, i, app, &status);
		if (rc == -ECANCELED)
			return -1;
		if (rc < 0)
			return rc == -ENOENT || rc == -EACCES ? 127 : 126;
		describe_status(status, how, sizeof(how));
		if (app) {
			log_info("exec: the application \"%s\" %s; stopping",
				 what, how);
			return status_code(status);
		}
		if (status != 0 && stopping(e))
			return -1; /* ended by the stop */
		if (status != 0) {
			log_error("exec: command %zu of %zu, \"%s\", %s; not "
				  "starting the application; stopping", i + 1,
				  n, what, how);
			return status_code(status) ? status_code(status) : 1;
		}
	}
	return -1;
}

static void *exec_main(void *arg)
{
	cmd_exec *e = arg;
	int code = -1;
	bool stop;

	if (wait_ready(e))
		code = run_all(e);
	pthread_mutex_lock(&e->mu);
	e->exit_code = code;
	e->done = true;
	stop = e->stop;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->mu);
	if (code < 0 && !stop) {
		/* The application was an if-candidate command skipped here:
		 * nothing to supervise, the node goes on serving. */
		log_info("exec: no application runs on this node; serving "
			 "until stopped");
		return NULL;
	}
	e->o.on_done(e->o.ctx);
	return NULL;
}

int cmd_exec_start(const cmd_exec_opts *opts, cmd_exec **out)
{
	cmd_exec *e;
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if (!opts->argv && (!opts->list || opts->list->count == 0))
		return 0;
	/* What a command's shell leaves behind is reaped here (above). */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		log_warn("exec: cannot become a child subreaper (%s): a "
			 "command's processes that outlive its shell are not "
			 "waited for", strerror(errno));
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->o = *opts;
	e->exit_code = -1;
	pthread_mutex_init(&e->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_cond_init(&e->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&e->thread, NULL, exec_main, e);
	if (rc != 0) {
		log_error("exec: cannot start its thread: %s", strerror(rc));
		pthread_cond_destroy(&e->cond);
		pthread_mutex_destroy(&e->mu);
		free(e);
		return -rc;
	}
	*out = e;
	return 0;
}

/* Waits (mu held) until the thread is done or ms have passed. */
static void wait_done_locked(cmd_exec *e, int64_t ms)
{
	int64_t end = lib_clock_monotonic_ns() + ms * NS_PER_MS;

	while (!e->done && lib_clock_monotonic_ns() < end) {
		int64_t left = (end - lib_clock_monotonic_ns()) / NS_PER_MS;
		nap_locked(e, left > 100 ? 100 : left > 0 ? left : 1);
	}
}

bool cmd_exec_hup(cmd_exec *e)
{
	bool passed = false;

	pthread_mutex_lock(&e->mu);
	if (e->child && e->app && !e->stop) {
		log_info("exec: signal %d passed on to the application "
			 "(process group %d)", SIGHUP, (int)e->child);
		kill(-e->child, SIGHUP);
		passed = true;
	}
	pthread_mutex_unlock(&e->mu);
	return passed;
}

bool cmd_exec_signal(cmd_exec *e, int sig)
{
	if (sig == SIGHUP)
		return false;
	pthread_mutex_lock(&e->mu);
	if (!e->stop) {
		e->stop = true;
		e->stop_sig = sig;
		pthread_cond_broadcast(&e->cond);
		if (e->child) {
			log_info("exec: signal %d passed on to %s (process "
				 "group %d); it has %" PRId64 " ms to exit",
				 sig,
				 e->app ? "the application" : "the command",
				 (int)e->child, e->o.grace_ms);
			kill(-e->child, sig);
		}
	}
	wait_done_locked(e, e->o.grace_ms);
	if (!e->done && e->child) {
		log_warn("exec: %s (process group %d) did not exit within "
			 "exec-grace-period (%" PRId64 " ms); killing it",
			 e->app ? "the application" : "the command",
			 (int)e->child, e->o.grace_ms);
		kill(-e->child, SIGKILL);
	}
	wait_done_locked(e, KILL_WAIT_MS);
	if (!e->done)
		log_error("exec: the supervised process has not ended %d ms "
			  "after SIGKILL; stopping without it", KILL_WAIT_MS);
	pthread_mutex_unlock(&e->mu);
	return true;
}

int cmd_exec_exit_code(cmd_exec *e)
{
	int code;

	pthread_mutex_lock(&e->mu);
	code = e->done ? e->exit_code : -1;
	pthread_mutex_unlock(&e->mu);
	return code;
}

void cmd_exec_free(cmd_exec *e)
{
	bool done;

	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	done = e->done;
	pthread_mutex_unlock(&e->mu);
	if (!done)
		cmd_exec_signal(e, SIGTERM);
	pthread_join(e->thread, NULL);
	pthread_cond_destroy(&e->cond);
	pthread_mutex_destroy(&e->mu);
	free(e);
}
