/*
 * Replication on 127.0.0.1 with real ltxfs daemons (issue 4), each node
 * with its own mount and data directory, static lease:
 *
 *  1. lag: a writer paced at LTXFS_BENCH_LAG_RATE (1000) single-row
 *     transactions per second, WAL + synchronous=NORMAL, for
 *     LTXFS_BENCH_LAG_S (10) seconds on the primary; a second thread of
 *     this process polls a replica's <db>-pos through its mount every
 *     LTXFS_BENCH_POLL_US (100) microseconds. Lag of TXID x = first time
 *     the replica's position is >= x minus the time the primary's commit
 *     of x returned (one CLOCK_MONOTONIC, so no clock skew). The run
 *     checks that each INSERT was exactly one TXID.
 *  2. throughput: single-row INSERT transactions on a primary with two
 *     replicas attached and on a primary with none, WAL+NORMAL and
 *     DELETE+FULL, interleaved with native SQLite on the same disk.
 *  3. catch-up: a fresh replica (empty data dir) of a primary that holds
 *     a LTXFS_BENCH_CATCHUP_MB (1024) MiB database of random blobs, from
 *     starting the daemon until its position equals the primary's, once
 *     from the primary's log records and once from a snapshot (primary
 *     restarted with a log cap that prunes its log); peak RSS (VmHWM)
 *     and CPU time of both daemons.
 *  4. WAL apply (not part of "all"): what a replica spends applying
 *     records of a WAL-mode database in WAL style (its own WAL and
 *     wal-index for local readers, fs/walidx.c). Per run: (a) follow: the
 *     replica attached, LTXFS_BENCH_APPLY_TX (5000) single-row INSERTs on
 *     the primary paced at LTXFS_BENCH_APPLY_RATE (1000) per second, so
 *     that the replica keeps up and applies records one or two per WAL
 *     transaction (as the primary's stream batches them): the replica's
 *     CPU time (utime + stime) per record;
 *     (b) catch-up: the replica stopped, LTXFS_BENCH_APPLY_N (20000)
 *     single-row INSERTs on the primary, then the replica started and
 *     timed from its mount until its position equals the primary's
 *     (records per second; consecutive records share WAL transactions),
 *     and its CPU time per record (its start included).
 *
 *  5. export/import (not part of "all"): a LTXFS_BENCH_XFER_MB (50) MiB
 *     WAL-mode database of random blobs on the primary; per run the wall
 *     time of `ltxfs export` from the primary, from the replica, and of
 *     `ltxfs import` of that export back into the primary (the next
 *     transaction; its replication is waited for, not timed).
 *     LTXFS_BENCH_XFER_BASE=/path/to/another/ltxfs: a second primary and
 *     replica run that daemon binary (the clients are LTXFS_BIN's), and
 *     each run measures both pairs, in alternating order.
 *
 *  6. tls (not part of "all"): plain HTTP and HTTPS with mutual TLS
 *     side by side (a primary and a replica each; one CA and one
 *     certificate made with openssl), runs interleaved: lag p99 as in
 *     part 1, and catch-up of a fresh replica from the log records of
 *     a LTXFS_BENCH_TLS_MB (256) MiB database as in part 3; the ratio
 *     HTTPS / plain.
 *
 *  7. sync (not part of "all"): synchronous replication
 *     (replication.sync.min-replicas 1, docs/SYNC.md) against
 *     asynchronous, side by side (a primary and one replica each), runs
 *     interleaved with native SQLite: single-row INSERT transactions by
 *     one writer in WAL+NORMAL, WAL+FULL and DELETE+FULL, and by 8
 *     writer threads (their own connections, busy timeout 10 s) on one
 *     database and on 8 databases (one each), WAL+NORMAL. Ratios sync /
 *     async; the commit's median wait (ltxfs_sync_commit_wait_seconds).
 *
 * Usage: bench_repl [all|lag|throughput|catchup|walapply|xfer|tls|sync]
 *
 * Runs per measurement: LTXFS_BENCH_RUNS (default 3), medians reported.
 *
 * LTXFS_BENCH_PIN=1 (needs CPUs 0 and 1): this process (the application,
 * and the native SQLite baseline) and every primary daemon run on CPU 0
 * only, every replica daemon on CPU 1 only, in all parts and in both the
 * 0-replica and the 2-replica throughput runs: the primary side has the
 * same CPU either way and the replicas' apply work is off it, the
 * closest one machine gets to replicas on other hosts. Unset or 0: no
 * pinning (the scheduler places everything).
 * Every daemon is stopped and every mount removed at exit, after a
 * failure or on SIGINT/SIGTERM/SIGHUP too.
 *
 * Needs: root, /dev/fuse, LTXFS_BIN (the ltxfs binary; meson sets it).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_NODES 8
#define MOUNT_TIMEOUT_S 20.0
#define STOP_TIMEOUT_S 20.0

typedef struct node {
	char name[16];
	char root[4200], mnt[4300], data[4300], cfg[4300], log[4300];
	int port;         /* this node's HTTP port */
	int primary_port; /* 0: this node is the primary */
	pid_t pid;        /* -1 when not running */
	const char *bin;  /* the daemon's binary: ltxfs_bin unless set */
	long retention_bytes; /* data.retention-bytes; -1: the default */
	bool tls;         /* HTTPS + mutual TLS (part 6); its primary too */
	int sync;         /* replication.sync.min-replicas (part 7) */
	bool used;
} node;

/* Read by the signal handler: only async-signal-safe work touches them
 * there (kill, waitpid, nanosleep, fork, exec). */
static node nodes[MAX_NODES];
static int n_nodes;
static char root[4096], native[4200];
static bool root_created; /* by bench_dir: remove it on a signal too */
static const char *ltxfs_bin;
static bool pin; /* LTXFS_BENCH_PIN: primaries and us on CPU 0, replicas 1 */
static char pki[4200]; /* part 6: ca.crt, node.crt, node.key */

/* ---- processes and mounts (async-signal-safe helpers) -------------- */

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Runs argv to completion with stdio on /dev/null; returns its status or
 * -1. Async-signal-safe. */
static int run_quiet(char *const argv[])
{
	int st = -1;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0)
		return -1;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return st;
}

/* Whether an ltxfs FUSE mount is at path in /proc/mounts (not the
 * read-only guard it leaves beneath; paths here have no characters that
 * /proc/mounts escapes). Async-signal-safe. */
static bool is_mounted(const char *path)
{
	static char buf[1 << 17];
	size_t len = 0, plen = strlen(path);
	ssize_t r;
	int fd = open("/proc/mounts", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	while (len < sizeof(buf) - 1 &&
	       (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	for (char *p = buf; *p;) {
		char *sp = strchr(p, ' '), *nl = strchr(p, '\n');
		if (sp && (!nl || sp < nl) && strncmp(sp + 1, path, plen) == 0 &&
		    sp[1 + plen] == ' ' &&
		    strncmp(sp + 2 + plen, "fuse.ltxfs ", 11) == 0)
			return true;
		if (!nl)
			break;
		p = nl + 1;
	}
	return false;
}

/* SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL; lazy unmount when the
 * mount outlived the daemon. Returns the exit status (or -1).
 * Async-signal-safe. */
static int node_stop(node *n)
{
	int st = -1;

	if (n->pid > 0) {
		pid_t r = 0;
		kill(n->pid, SIGTERM);
		for (int i = 0; i < (int)(STOP_TIMEOUT_S * 100); i++) {
			r = waitpid(n->pid, &st, WNOHANG);
			if (r != 0)
				break;
			sleep_ms(10);
		}
		if (r == 0) {
			kill(n->pid, SIGKILL);
			while (waitpid(n->pid, &st, 0) < 0 && errno == EINTR)
				;
			st = -1;
		}
		n->pid = -1;
	}
	for (int i = 0; i < 100 && is_mounted(n->mnt); i++)
		sleep_ms(10);
	if (is_mounted(n->mnt)) {
		char *fu[] = {"fusermount3", "-u", "-z", n->mnt, NULL};
		char *um[] = {"umount", "-l", n->mnt, NULL};
		run_quiet(fu);
		if (is_mounted(n->mnt))
			run_quiet(um);
	}
	return st;
}

/* Removes the read-only guard ltxfs leaves beneath a stopped node's
 * mount (docs/STORAGE.md), so its tree can be removed.
 * Async-signal-safe. */
static void node_unguard(node *n)
{
	char *um[] = {"umount", "-l", n->mnt, NULL};

	for (int i = 0; i < 4; i++)
		run_quiet(um);
}

/* Stops every node and removes the scratch trees. Async-signal-safe. */
static void cleanup_all(void)
{
	for (int i = n_nodes - 1; i >= 0; i--)
		if (nodes[i].used) {
			node_stop(&nodes[i]);
			node_unguard(&nodes[i]);
		}
	if (!getenv("LTXFS_KEEP")) {
		for (int i = 0; i < n_nodes; i++) {
			char *rm[] = {"rm", "-rf", nodes[i].root, NULL};
			if (nodes[i].used)
				run_quiet(rm);
		}
		if (native[0]) {
			char *rm[] = {"rm", "-rf", native, NULL};
			run_quiet(rm);
		}
	}
	if (root_created)
		rmdir(root);
}

static void on_signal(int sig)
{
	cleanup_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void at_exit(void)
{
	cleanup_all();
}

/* Prints the load average and how busy the machine's CPUs were (all
 * processes, /proc/stat) since the previous call: the machine is shared. */
static void print_load(const char *when)
{
	static unsigned long long prev_busy, prev_total;
	unsigned long long v[8] = {0}, busy, total = 0;
	char la[128] = "?";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (!fgets(la, sizeof(la), f))
			snprintf(la, sizeof(la), "?\n");
		fclose(f);
	}
	f = fopen("/proc/stat", "r");
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
			   &v[7]) != 8)
			memset(v, 0, sizeof(v));
		fclose(f);
	}
	for (int i = 0; i < 8; i++)
		total += v[i];
	busy = total - v[3] - v[4]; /* minus idle and iowait */
	if (prev_total && total > prev_total)
		printf("machine %s: CPUs busy %.0f%% since the last mark; "
		       "loadavg %s", when, 100.0 * (double)(busy - prev_busy) /
		       (double)(total - prev_total), la);
	else
		printf("machine %s: loadavg %s", when, la);
	prev_busy = busy;
	prev_total = total;
	fflush(stdout);
}

/* ---- nodes ------------------------------------------------------------ */

/* A free TCP port on 127.0.0.1 (asked from the kernel, then released). */
static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int port, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		bench_fail("socket: %s", strerror(errno));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		bench_fail("bind 127.0.0.1:0: %s", strerror(errno));
	port = ntohs(a.sin_port);
	close(fd);
	for (int i = 0; i < n_nodes; i++)
		if (nodes[i].port == port)
			return free_port();
	return port;
}

static void write_config(const node *n)
{
	FILE *f = fopen(n->cfg, "w");

	if (!f)
		bench_fail("cannot write %s", n->cfg);
	fprintf(f, "fuse:\n  dir: %s\ndata:\n  dir: %s\n", n->mnt, n->data);
	if (n->retention_bytes >= 0)
		fprintf(f, "  retention-bytes: %ld\n", n->retention_bytes);
	fprintf(f, "http:\n  addr: 127.0.0.1:%d\n", n->port);
	if (n->tls)
		fprintf(f, "  tls-cert-file: %s/node.crt\n"
			"  tls-key-file: %s/node.key\n"
			"  tls-client-ca-file: %s/ca.crt\n"
			"  tls-ca-file: %s/ca.crt\n"
			"  tls-client-cert-file: %s/node.crt\n"
			"  tls-client-key-file: %s/node.key\n",
			pki, pki, pki, pki, pki, pki);
	fprintf(f, "lease:\n  type: static\n  hostname: %s\n"
		"  advertise-url: %s://127.0.0.1:%d\n",
		n->name, n->tls ? "https" : "http", n->port);
	if (n->primary_port)
		fprintf(f, "  candidate: false\n"
			"  primary-url: %s://127.0.0.1:%d\n",
			n->tls ? "https" : "http", n->primary_port);
	else
		fprintf(f, "  candidate: true\n");
	if (n->sync)
		fprintf(f, "replication:\n  sync:\n    min-replicas: %d\n"
			"    timeout: 10s\n", n->sync);
	fprintf(f, "log:\n  level: %s\n",
		getenv("LTXFS_BENCH_LOG_LEVEL") ? getenv("LTXFS_BENCH_LOG_LEVEL")
						: "info");
	if (fclose(f) != 0)
		bench_fail("cannot write %s", n->cfg);
}

/* A new node (not started); primary == NULL makes it a primary. */
static node *node_new(const char *name, const node *primary)
{
	node *n;

	if (n_nodes == MAX_NODES)
		bench_fail("too many nodes");
	n = &nodes[n_nodes];
	memset(n, 0, sizeof(*n));
	n->pid = -1;
	n->retention_bytes = -1;
	snprintf(n->name, sizeof(n->name), "%s", name);
	snprintf(n->root, sizeof(n->root), "%s/%s", root, name);
	snprintf(n->mnt, sizeof(n->mnt), "%s/%s/mnt", root, name);
	snprintf(n->data, sizeof(n->data), "%s/%s/data", root, name);
	snprintf(n->cfg, sizeof(n->cfg), "%s/%s/ltxfs.yml", root, name);
	snprintf(n->log, sizeof(n->log), "%s/%s/daemon.log", root, name);
	n->port = free_port();
	n->primary_port = primary ? primary->port : 0;
	n->tls = primary && primary->tls;
	n->used = true;
	n_nodes++;
	if (mkdir(n->root, 0755) < 0 || mkdir(n->mnt, 0755) < 0 ||
	    mkdir(n->data, 0755) < 0)
		bench_fail("mkdir under %s: %s", n->root, strerror(errno));
	write_config(n);
	return n;
}

static void print_log_tail(const node *n)
{
	char cmd[4500];

	fflush(stdout);
	fprintf(stderr, "---- last lines of %s ----\n", n->log);
	snprintf(cmd, sizeof(cmd), "tail -n 20 '%s' >&2", n->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log)\n");
}

static void node_fail(const node *n, const char *what)
	__attribute__((noreturn));
static void node_fail(const node *n, const char *what)
{
	print_log_tail(n);
	bench_fail("%s: %s", n->name, what);
}

/* With LTXFS_BENCH_PIN: fails unless every thread of n's daemon may run
 * on its CPU only (processes it forks inherit the mask). */
static void check_pinned(const node *n)
{
	int want = n->primary_port ? 1 : 0, threads = 0;
	char path[64];
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)n->pid);
	d = opendir(path);
	if (!d)
		node_fail(n, "cannot list the daemon's threads");
	while ((e = readdir(d)) != NULL) {
		cpu_set_t set;
		if (e->d_name[0] == '.')
			continue;
		CPU_ZERO(&set);
		if (sched_getaffinity(atoi(e->d_name), sizeof(set), &set) < 0)
			continue; /* the thread is gone */
		threads++;
		if (CPU_COUNT(&set) != 1 || !CPU_ISSET(want, &set)) {
			closedir(d);
			node_fail(n, "a daemon thread is not pinned to its "
				  "CPU");
		}
	}
	closedir(d);
	if (threads == 0)
		node_fail(n, "no daemon thread to check the pinning of");
}

/* LTXFS_BENCH_PIN: refuses without CPUs 0 and 1, then pins this process
 * (its only thread so far; later threads inherit) to CPU 0. */
static void pin_setup(void)
{
	const char *s = getenv("LTXFS_BENCH_PIN");
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;

	pin = s && *s && strcmp(s, "0") != 0;
	if (!pin)
		return;
	CPU_ZERO(&set);
	if (ncpu < 2 || sched_getaffinity(0, sizeof(set), &set) < 0 ||
	    !CPU_ISSET(0, &set) || !CPU_ISSET(1, &set))
		bench_fail("LTXFS_BENCH_PIN=1 needs CPUs 0 and 1 online and "
			   "allowed to this process (%ld CPUs online, %d "
			   "allowed): it puts the application and the primary "
			   "on CPU 0 and the replicas on CPU 1; run without "
			   "LTXFS_BENCH_PIN on this machine", ncpu,
			   CPU_COUNT(&set));
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		bench_fail("sched_setaffinity(CPU 0): %s", strerror(errno));
	printf("pinning: on (LTXFS_BENCH_PIN): application (this process, "
	       "also native SQLite) and primary daemons on CPU 0, replica "
	       "daemons on CPU 1; other processes of the machine are not "
	       "pinned\n");
}

/* Starts the daemon and waits for its mount; returns seconds taken. */
static double node_start(node *n)
{
	double t0 = bench_now();
	int st;

	n->pid = fork();
	if (n->pid < 0)
		bench_fail("fork: %s", strerror(errno));
	if (n->pid == 0) {
		int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int nul = open("/dev/null", O_RDONLY);
		setpgid(0, 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		if (pin) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(n->primary_port ? 1 : 0, &set);
			if (sched_setaffinity(0, sizeof(set), &set) < 0) {
				static const char m[] = "bench_repl: "
					"sched_setaffinity failed\n";
				if (write(2, m, sizeof(m) - 1) < 0) {
					/* nowhere else to say it */
				}
				_exit(125);
			}
		}
		/* Diagnostic: replicas that yield the CPUs to the primary
		 * and the application (as replicas on other machines
		 * would). */
		if (n->primary_port && getenv("LTXFS_BENCH_REPLICA_NICE") &&
		    setpriority(PRIO_PROCESS, 0,
				atoi(getenv("LTXFS_BENCH_REPLICA_NICE"))) < 0)
			_exit(126);
		execl(n->bin ? n->bin : ltxfs_bin, "ltxfs", "mount", "-c",
		      n->cfg, (char *)NULL);
		_exit(127);
	}
	while (!is_mounted(n->mnt)) {
		if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
			n->pid = -1;
			node_fail(n, "the daemon exited before mounting");
		}
		if (bench_now() - t0 > MOUNT_TIMEOUT_S)
			node_fail(n, "the mount did not appear in time");
		sleep_ms(2);
	}
	if (pin)
		check_pinned(n);
	return bench_now() - t0;
}

/* Lines of n's daemon log that contain what. */
static int log_count(const node *n, const char *what)
{
	char line[2048];
	int c = 0;
	FILE *f = fopen(n->log, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, what))
			c++;
	fclose(f);
	return c;
}

static long node_hwm_kib(const node *n)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)n->pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* User + system CPU seconds of the daemon so far (all its threads). */
static double node_cpu_s(const node *n)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	int fd, len;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)n->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	len = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	p = strrchr(buf, ')');
	/* After the command: state (3), then fields 4..13, utime (14),
	 * stime (15). */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			 "%llu %llu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Seconds n's threads (those alive now) spent on a CPU and waiting for
 * one (runnable but not running), from /proc/PID/task/TID/schedstat. */
static void node_sched(const node *n, double *run, double *wait)
{
	char path[64];
	DIR *d;
	struct dirent *e;

	*run = *wait = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)n->pid);
	d = opendir(path);
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		char p2[400];
		unsigned long long r, w;
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(p2, sizeof(p2), "%s/%s/schedstat", path, e->d_name);
		f = fopen(p2, "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu %llu", &r, &w) == 2) {
			*run += (double)r / 1e9;
			*wait += (double)w / 1e9;
		}
		fclose(f);
	}
	closedir(d);
}

/* ---- positions -------------------------------------------------------- */

static int pos_open(const node *n, const char *db)
{
	char path[4500];

	snprintf(path, sizeof(path), "%s/%s-pos", n->mnt, db);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* TXID from an open <db>-pos; 0 on a read or format error. */
static uint64_t pos_read_fd(int fd)
{
	char buf[64];
	ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);
	unsigned long long txid, sum;

	if (r != 34)
		return 0;
	buf[r] = '\0';
	if (sscanf(buf, "%16llx/%16llx", &txid, &sum) != 2)
		return 0;
	return txid;
}

/* TXID of db on n; 0 when the database does not exist there yet. */
static uint64_t pos_txid(const node *n, const char *db)
{
	int fd = pos_open(n, db);
	uint64_t txid;

	if (fd < 0)
		return 0;
	txid = pos_read_fd(fd);
	close(fd);
	return txid;
}

/* Waits (<= timeout_s) until the replica's position of db reaches txid;
 * returns the seconds waited. */
static double wait_txid(const node *r, const char *db, uint64_t txid,
			double timeout_s)
{
	double t0 = bench_now();

	while (pos_txid(r, db) < txid) {
		if (bench_now() - t0 > timeout_s) {
			char msg[300];
			snprintf(msg, sizeof(msg), "%s: TXID %" PRIu64
				 " not reached in %.0f s (at %" PRIu64 ")", db,
				 txid, timeout_s, pos_txid(r, db));
			node_fail(r, msg);
		}
		sleep_ms(1);
	}
	return bench_now() - t0;
}

/* TXID of db on n once it has not moved for 50 ms (at most 10 s). */
static uint64_t settled_txid(const node *n, const char *db)
{
	uint64_t a = pos_txid(n, db), b;

	for (int i = 0; i < 200; i++) {
		sleep_ms(50);
		b = pos_txid(n, db);
		if (b == a)
			return b;
		a = b;
	}
	node_fail(n, "the primary's position did not settle in 10 s");
}

/* ---- SQLite ----------------------------------------------------------- */

static void check(int rc, sqlite3 *db, const char *what)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
		bench_fail("%s: %s", what, db ? sqlite3_errmsg(db) : "?");
}

static void exec(sqlite3 *db, const char *sql)
{
	check(sqlite3_exec(db, sql, NULL, NULL, NULL), db, sql);
}

static sqlite3 *db_open(const char *dir, const char *name, int flags)
{
	char path[4500];
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	check(sqlite3_open_v2(path, &db, flags, NULL), NULL, path);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v;

	check(sqlite3_prepare_v2(db, sql, -1, &st, NULL), db, sql);
	if (sqlite3_step(st) != SQLITE_ROW)
		bench_fail("%s: no row (%s)", sql, sqlite3_errmsg(db));
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int env_int(const char *name, int def, int min)
{
	const char *s = getenv(name);
	int v = s && *s ? atoi(s) : def;

	return v < min ? min : v;
}

/* Runs per measurement: LTXFS_BENCH_RUNS, default 3, at most 64. */
static int runs(void)
{
	int n = env_int("LTXFS_BENCH_RUNS", 3, 1);

	return n > 64 ? 64 : n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* ---- 1. lag ----------------------------------------------------------- */

struct poller {
	int fd;
	uint64_t base;          /* TXID before the first INSERT */
	uint64_t end;           /* stop once this TXID is seen */
	long poll_us;
	double *seen;           /* seen[i]: first time TXID base+1+i was seen */
	atomic_bool stop;
	uint64_t polls;
};

static void *poll_main(void *arg)
{
	struct poller *p = arg;
	uint64_t last = p->base;
	struct timespec ts = {0, p->poll_us * 1000L};

	while (!atomic_load(&p->stop) && last < p->end) {
		uint64_t t = pos_read_fd(p->fd);
		p->polls++;
		if (t > last) {
			double now = bench_now();
			if (t > p->end)
				t = p->end;
			for (uint64_t x = last + 1; x <= t; x++)
				p->seen[x - p->base - 1] = now;
			last = t;
		}
		if (p->poll_us > 0)
			nanosleep(&ts, NULL);
	}
	return NULL;
}

struct lag_result {
	double p50, p99, max, rate;
	double p99_sent; /* from the start of the INSERT, not its return */
	int late; /* INSERTs that started > 1 ms after their slot */
};

static void lag_run(node *p, node *r, int run, struct lag_result *out)
{
	int rate = env_int("LTXFS_BENCH_LAG_RATE", 1000, 1);
	int secs = env_int("LTXFS_BENCH_LAG_S", 10, 1);
	int n = rate * secs;
	char name[64];
	double *commit = calloc((size_t)n, sizeof(double));
	double *sent = calloc((size_t)n, sizeof(double));
	double *lag = calloc((size_t)n, sizeof(double));
	double *lag_sent = calloc((size_t)n, sizeof(double));
	struct poller pl = {.poll_us = env_int("LTXFS_BENCH_POLL_US", 100, 0)};
	pthread_t th;
	sqlite3 *db;
	sqlite3_stmt *st;
	struct timespec start;
	double t0, t1;
	uint64_t end_txid;

	pl.seen = calloc((size_t)n, sizeof(double));
	if (!commit || !sent || !lag || !lag_sent || !pl.seen)
		bench_fail("out of memory");
	snprintf(name, sizeof(name), "lag-%d.db", run);
	db = db_open(p->mnt, name, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
		 "CREATE TABLE t(id INTEGER PRIMARY KEY, sent_ns INTEGER, "
		 "v TEXT)");
	/* The primary captures a WAL commit just after answering SQLite's
	 * write, so its -pos may trail the commit by a moment: wait until
	 * it holds still. */
	pl.base = settled_txid(p, name);
	if (pl.base == 0)
		node_fail(p, "no -pos for the lag database");
	wait_txid(r, name, pl.base, 30);
	pl.end = pl.base + (uint64_t)n;
	pl.fd = pos_open(r, name);
	if (pl.fd < 0)
		node_fail(r, "cannot open the -pos file");
	check(sqlite3_prepare_v2(db, "INSERT INTO t(sent_ns, v) VALUES (?, "
				 "'a row of about forty bytes of text..')",
				 -1, &st, NULL), db, "prepare");
	if (pthread_create(&th, NULL, poll_main, &pl) != 0)
		bench_fail("pthread_create");
	out->late = 0;
	clock_gettime(CLOCK_MONOTONIC, &start);
	t0 = bench_now();
	for (int i = 0; i < n; i++) {
		long long ns = (long long)start.tv_nsec +
			       (long long)i * 1000000000LL / rate;
		struct timespec slot = {start.tv_sec + (time_t)(ns / 1000000000),
					(long)(ns % 1000000000)};
		struct timespec now;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &slot,
				       NULL) == EINTR)
			;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - slot.tv_sec) * 1000000000LL +
		    (now.tv_nsec - slot.tv_nsec) > 1000000)
			out->late++;
		sqlite3_bind_int64(st, 1, (long long)now.tv_sec * 1000000000LL +
					      now.tv_nsec);
		sent[i] = bench_now();
		check(sqlite3_step(st), db, "insert");
		commit[i] = bench_now();
		sqlite3_reset(st);
	}
	t1 = bench_now();
	sqlite3_finalize(st);
	end_txid = settled_txid(p, name);
	if (end_txid != pl.end) {
		atomic_store(&pl.stop, true);
		pthread_join(th, NULL);
		bench_fail("lag: %d INSERTs moved the primary from TXID %" PRIu64
			   " to %" PRIu64 ", not one TXID each", n, pl.base,
			   end_txid);
	}
	/* The poller stops by itself at pl.end; bounded by a deadline. */
	for (int i = 0; i < 30000 && pos_txid(r, name) < pl.end; i++)
		sleep_ms(1);
	sleep_ms(5);
	atomic_store(&pl.stop, true);
	pthread_join(th, NULL);
	close(pl.fd);
	for (int i = 0; i < n; i++) {
		if (pl.seen[i] == 0)
			node_fail(r, "the replica did not reach the primary's "
				  "position within 30 s of the last commit");
		lag[i] = pl.seen[i] - commit[i];
		lag_sent[i] = pl.seen[i] - sent[i];
	}
	sqlite3_close(db);
	{
		/* The rows themselves, not only the position, are there. */
		sqlite3 *rd = db_open(r->mnt, name, SQLITE_OPEN_READONLY);
		int64_t c = query_int(rd, "SELECT count(*) FROM t");
		sqlite3_close(rd);
		if (c != n)
			bench_fail("lag: replica has %" PRId64 " rows, not %d",
				   c, n);
	}
	qsort(lag, (size_t)n, sizeof(double), cmp_double);
	qsort(lag_sent, (size_t)n, sizeof(double), cmp_double);
	out->p50 = lag[n / 2] * 1e3;
	out->p99_sent = lag_sent[(int)((double)n * 0.99)] * 1e3;
	out->p99 = lag[(int)((double)n * 0.99)] * 1e3;
	out->max = lag[n - 1] * 1e3;
	out->rate = n / (t1 - t0);
	printf("  lag run %d: %d tx in %.2f s (%.0f tx/s, %d late), polls %"
	       PRIu64 ", lag p50 %.3f ms p99 %.3f ms max %.3f ms "
	       "(min %.3f); from INSERT start p50 %.3f ms p99 %.3f ms max "
	       "%.3f ms\n", run, n, t1 - t0, out->rate, out->late, pl.polls,
	       out->p50, out->p99, out->max, lag[0] * 1e3,
	       lag_sent[n / 2] * 1e3, out->p99_sent, lag_sent[n - 1] * 1e3);
	fflush(stdout);
	free(commit);
	free(sent);
	free(lag);
	free(lag_sent);
	free(pl.seen);
}

static void bench_lag(node *p, node *r)
{
	int nr = runs();
	double p50[64], p99[64], mx[64], rt[64], p99s[64], worst = 0;

	printf("lag: %d tx/s for %d s, WAL + synchronous=NORMAL, polling "
	       "%s's -pos every %d us\n",
	       env_int("LTXFS_BENCH_LAG_RATE", 1000, 1),
	       env_int("LTXFS_BENCH_LAG_S", 10, 1), r->name,
	       env_int("LTXFS_BENCH_POLL_US", 100, 0));
	for (int i = 0; i < nr; i++) {
		struct lag_result res;
		lag_run(p, r, i, &res);
		p50[i] = res.p50;
		p99[i] = res.p99;
		mx[i] = res.max;
		rt[i] = res.rate;
		p99s[i] = res.p99_sent;
		if (res.max > worst)
			worst = res.max;
	}
	printf("summary: bench_repl: lag at %.0f tx/s = p50 %.3f ms, p99 %.3f "
	       "ms, max %.3f ms (medians; worst max %.3f ms; p99 from INSERT "
	       "start %.3f ms) (target p99 < 10 ms) %s\n",
	       bench_median(rt, nr), bench_median(p50, nr),
	       bench_median(p99, nr), bench_median(mx, nr), worst,
	       bench_median(p99s, nr),
	       bench_verdict(bench_median(p99, nr) < 10.0));
	fflush(stdout);
}

/* ---- 2. throughput with and without replicas -------------------------- */

/* CPU seconds spent during an insert run: this process (the
 * application), the primary, and the replicas together. */
struct cpu_use {
	double app, primary, replicas;
};

static node *cpu_nodes[3]; /* primary, replica, replica of the run */

static void cpu_snap(double v[4])
{
	v[0] = bench_cpu_self();
	for (int i = 0; i < 3; i++)
		v[i + 1] = cpu_nodes[i] ? node_cpu_s(cpu_nodes[i]) : 0;
}

/* n single-row INSERT transactions into a new database; tx/s. cpu_nodes
 * name the daemons whose CPU time goes to *cpu. */
static double insert_run(const char *dir, const char *name, const char *jm,
			 const char *sync, int n, struct cpu_use *cpu)
{
	double c0[4], c1[4];
	char sql[256];
	sqlite3 *db = db_open(dir, name, SQLITE_OPEN_READWRITE |
				       SQLITE_OPEN_CREATE);
	sqlite3_stmt *st;
	double t0, t;

	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; PRAGMA "
		 "synchronous=%s; CREATE TABLE t(id INTEGER PRIMARY KEY, v "
		 "TEXT);", jm, sync);
	exec(db, sql);
	check(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st,
				 NULL), db, "prepare");
	cpu_snap(c0);
	t0 = bench_now();
	for (int i = 0; i < n; i++) {
		sqlite3_bind_text(st, 1, "a row of about forty bytes of text..",
				  -1, SQLITE_STATIC);
		check(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
	}
	t = bench_now() - t0;
	cpu_snap(c1);
	cpu->app = c1[0] - c0[0];
	cpu->primary = c1[1] - c0[1];
	cpu->replicas = c1[2] - c0[2] + c1[3] - c0[3];
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n / t;
}

static void bench_throughput(node *pa, node *r1, node *r2, node *pb,
			     const char *jm, const char *sync, int n)
{
	int nr = runs();
	double nat[64], rep[64], solo[64], drain[64];
	double cpu_rep[3][64], cpu_solo[3][64];

	for (int i = 0; i < nr; i++) {
		char name[64], path[4500];
		uint64_t txid;
		double d1, d2;
		struct cpu_use cn, cr, cs;

		snprintf(name, sizeof(name), "ins-%s-%s-%d.db", jm, sync, i);
		memset(cpu_nodes, 0, sizeof(cpu_nodes));
		nat[i] = insert_run(native, name, jm, sync, n, &cn);
		snprintf(path, sizeof(path), "%s/%s", native, name);
		unlink(path);
		cpu_nodes[0] = pa;
		cpu_nodes[1] = r1;
		cpu_nodes[2] = r2;
		rep[i] = insert_run(pa->mnt, name, jm, sync, n, &cr);
		txid = pos_txid(pa, name);
		d1 = wait_txid(r1, name, txid, 120);
		d2 = wait_txid(r2, name, txid, 120);
		drain[i] = d1 > d2 ? d1 : d2;
		memset(cpu_nodes, 0, sizeof(cpu_nodes));
		cpu_nodes[0] = pb;
		solo[i] = insert_run(pb->mnt, name, jm, sync, n, &cs);
		cpu_rep[0][i] = cr.app * 1e6 / n;
		cpu_rep[1][i] = cr.primary * 1e6 / n;
		cpu_rep[2][i] = cr.replicas * 1e6 / n;
		cpu_solo[0][i] = cs.app * 1e6 / n;
		cpu_solo[1][i] = cs.primary * 1e6 / n;
		cpu_solo[2][i] = 0;
		printf("  insert %s+%s run %d: native %.0f, 0 replicas %.0f, "
		       "2 replicas %.0f tx/s (replicas caught up %.3f s "
		       "after the last commit)\n", jm, sync, i, nat[i], solo[i],
		       rep[i], drain[i]);
		printf("    CPU us/tx: native app %.1f; 0 replicas: app %.1f "
		       "primary %.1f; 2 replicas: app %.1f primary %.1f "
		       "replicas (both) %.1f\n", cn.app * 1e6 / n,
		       cpu_solo[0][i], cpu_solo[1][i], cpu_rep[0][i],
		       cpu_rep[1][i], cpu_rep[2][i]);
		fflush(stdout);
	}
	{
		double mn = bench_median(nat, nr), ms = bench_median(solo, nr);
		double mr = bench_median(rep, nr);
		printf("summary: bench_repl: insert %s+%s with 2 replicas = %.0f "
		       "tx/s, 0 replicas %.0f tx/s, native %.0f tx/s; ratio "
		       "2/0 replicas %.2f (target 0.90) %s\n", jm, sync, mr, ms,
		       mn, mr / ms, bench_verdict(mr / ms >= 0.9));
		printf("insert %s+%s CPU us/tx (medians): 0 replicas: app %.1f "
		       "primary %.1f; 2 replicas: app %.1f primary %.1f "
		       "replicas (both) %.1f\n", jm, sync,
		       bench_median(cpu_solo[0], nr),
		       bench_median(cpu_solo[1], nr),
		       bench_median(cpu_rep[0], nr), bench_median(cpu_rep[1], nr),
		       bench_median(cpu_rep[2], nr));
	}
	fflush(stdout);
}

/* ---- 3. catch-up -------------------------------------------------------- */

/* Fills db on n with about mb MiB of random blobs in DELETE journal mode,
 * in transactions of 64 MiB; returns the database size in bytes. */
static uint64_t prefill(node *n, const char *name, int mb, const char *jm)
{
	enum { BLOB = 64 * 1024 };
	sqlite3 *db = db_open(n->mnt, name, SQLITE_OPEN_READWRITE |
				     SQLITE_OPEN_CREATE);
	sqlite3_stmt *st;
	char *blob = malloc(BLOB);
	uint64_t seed = 42;
	long rows = (long)mb * (1024 * 1024 / BLOB);
	double t0 = bench_now();
	uint64_t bytes;
	char path[4500];

	if (!blob)
		bench_fail("out of memory");
	snprintf(path, sizeof(path), "PRAGMA page_size=4096; "
		 "PRAGMA journal_mode=%s; PRAGMA synchronous=NORMAL; "
		 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); BEGIN", jm);
	exec(db, path);
	check(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st,
				 NULL), db, "prepare");
	for (long i = 0; i < rows; i++) {
		for (size_t j = 0; j < BLOB; j += 8) {
			uint64_t r = bench_rand(&seed);
			memcpy(blob + j, &r, 8);
		}
		sqlite3_bind_blob(st, 1, blob, BLOB, SQLITE_STATIC);
		check(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
		if (i % 1024 == 1023)
			exec(db, "COMMIT; BEGIN");
	}
	exec(db, "COMMIT");
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(blob);
	snprintf(path, sizeof(path), "%s/%s", n->mnt, name);
	bytes = bench_file_size(path);
	printf("%s filled to %.1f MB (%" PRIu64 " pages, TXID %"
	       PRIu64 ") in %.1f s\n", name, (double)bytes / 1e6,
	       bytes / 4096, pos_txid(n, name), bench_now() - t0);
	fflush(stdout);
	return bytes;
}

/* One catch-up measurement series against primary p, which holds db
 * (bytes long, at txid); a fresh replica each run, wiped afterwards.
 * snapshot: whether the primary is expected to send a snapshot (its log
 * no longer starts at TXID 1) rather than its log records. */
struct catchup_result {
	double secs, rate, rate_m, rss_r;
};

/* One fresh replica r of p catching up (see catchup_runs); wiped
 * afterwards. */
static void catchup_one(node *p, node *r, const char *db, uint64_t bytes,
			uint64_t txid, bool snapshot, int i,
			struct catchup_result *out)
{
	const char *how = snapshot ? "snapshot" : "log records";
	char *rm[] = {"rm", "-rf", r->data, r->log, NULL};
	int snaps = log_count(p, "a snapshot at TXID");
	double t0, tm, t, cpu_p0 = node_cpu_s(p), cpu_r, cpu_p;
	double run_r, wait_r;
	char path[4500];

	run_quiet(rm);
	if (mkdir(r->data, 0755) < 0)
		bench_fail("mkdir %s: %s", r->data, strerror(errno));
	t0 = bench_now();
	tm = node_start(r);
	while (pos_txid(r, db) < txid) {
		if (bench_now() - t0 > 600)
			node_fail(r, "catch-up took over 600 s");
		if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
			r->pid = -1;
			node_fail(r, "the replica exited");
		}
		sleep_ms(2);
	}
	t = bench_now() - t0;
	node_sched(r, &run_r, &wait_r);
	cpu_r = node_cpu_s(r);
	cpu_p = node_cpu_s(p) - cpu_p0;
	if (pos_txid(r, db) != txid)
		bench_fail("catch-up: replica passed the primary");
	snprintf(path, sizeof(path), "%s/%s", r->mnt, db);
	if (bench_file_size(path) != bytes)
		bench_fail("catch-up: replica's database is %" PRIu64
			   " bytes, primary's %" PRIu64,
			   bench_file_size(path), bytes);
	if ((log_count(p, "a snapshot at TXID") > snaps) != snapshot)
		bench_fail("catch-up: expected the primary to send %s", how);
	out->secs = t;
	out->rate = (double)bytes / 1e6 / t;
	out->rate_m = (double)bytes / 1e6 / (t - tm);
	out->rss_r = (double)node_hwm_kib(r);
	printf("  catch-up from %s%s, run %d: %.3f s from exec (%.3f s "
	       "to mount), %.0f MB/s (%.0f MB/s after the mount); VmHWM "
	       "replica %.0f KiB, primary %ld KiB; CPU replica %.2f s, "
	       "primary %.2f s; replica threads on a CPU %.2f s, "
	       "runnable but waiting for a CPU %.2f s\n", how,
	       r->tls ? " over HTTPS" : "", i, t, tm, out->rate, out->rate_m,
	       out->rss_r, node_hwm_kib(p), cpu_r, cpu_p, run_r, wait_r);
	fflush(stdout);
	if (node_stop(r) != 0)
		node_fail(r, "unclean exit after SIGTERM");
}

/* One catch-up measurement series against primary p, which holds db
 * (bytes long, at txid); a fresh replica each run, wiped afterwards.
 * snapshot: whether the primary is expected to send a snapshot (its log
 * no longer starts at TXID 1) rather than its log records. */
static void catchup_runs(node *p, node *r, const char *db, uint64_t bytes,
			 uint64_t txid, bool snapshot)
{
	int nr = runs();
	double rate[64], rate_m[64], secs[64], rss_r[64];
	const char *how = snapshot ? "snapshot" : "log records";

	for (int i = 0; i < nr; i++) {
		struct catchup_result c;
		catchup_one(p, r, db, bytes, txid, snapshot, i, &c);
		secs[i] = c.secs;
		rate[i] = c.rate;
		rate_m[i] = c.rate_m;
		rss_r[i] = c.rss_r;
	}
	printf("summary: bench_repl: catch-up of %.0f MB from %s = %.2f s, "
	       "%.0f MB/s (%.0f MB/s after the mount) (target 150 MB/s) %s\n",
	       (double)bytes / 1e6, how, bench_median(secs, nr),
	       bench_median(rate, nr), bench_median(rate_m, nr),
	       bench_verdict(bench_median(rate, nr) >= 150));
	printf("summary: bench_repl: catch-up from %s peak RSS = replica %.0f "
	       "KiB (median), primary %ld KiB\n", how,
	       bench_median(rss_r, nr), node_hwm_kib(p));
	fflush(stdout);
}

/* A fresh replica catching up: first from the primary's log (kept whole:
 * data.retention-bytes: 0), then, after restarting the primary with a
 * 1-byte cap so that its log keeps only the last segment, from a
 * snapshot. */
static void bench_catchup(void)
{
	int mb = env_int("LTXFS_BENCH_CATCHUP_MB", 1024, 1);
	const char *db = "big.db";
	node *p = node_new("cp", NULL), *r;
	uint64_t bytes, txid;

	p->retention_bytes = 0;
	write_config(p);
	node_start(p);
	r = node_new("cr", p);
	bytes = prefill(p, db, mb, "DELETE");
	txid = pos_txid(p, db);
	printf("catch-up: primary VmHWM after the fill %ld KiB\n",
	       node_hwm_kib(p));
	catchup_runs(p, r, db, bytes, txid, false);

	node_stop(p);
	p->retention_bytes = 1;
	write_config(p);
	node_start(p);
	/* Retention runs every second; the segment holding the last record
	 * always stays, so a small database's log may not shrink at all. */
	for (int i = 0; i < 500 && log_count(p, "retention removed") == 0; i++)
		sleep_ms(10);
	if (pos_txid(p, db) != txid)
		node_fail(p, "the primary's position moved over a restart");
	if (log_count(p, "retention removed") > 0)
		catchup_runs(p, r, db, bytes, txid, true);
	else
		printf("summary: bench_repl: catch-up from snapshot = not "
		       "measured: the log of a %d MiB database is a single "
		       "segment, which retention keeps\n", mb);
	node_stop(p);
}

/* ---- 4. WAL apply -------------------------------------------------------- */

/* n single-row INSERTs into name on p, WAL + synchronous=NORMAL, rate per
 * second (0: as fast as they go); returns the primary's settled TXID
 * after them. */
static uint64_t wal_inserts(node *p, const char *name, int n, int rate)
{
	struct timespec start;

	sqlite3 *db = db_open(p->mnt, name, SQLITE_OPEN_READWRITE |
				     SQLITE_OPEN_CREATE);
	sqlite3_stmt *st;

	exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
		 "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
		 "v TEXT)");
	check(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st,
				 NULL), db, "prepare");
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < n; i++) {
		if (rate > 0) {
			long long ns = (long long)start.tv_nsec +
				       (long long)i * 1000000000LL / rate;
			struct timespec slot = {
				start.tv_sec + (time_t)(ns / 1000000000),
				(long)(ns % 1000000000)};
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME,
					       &slot, NULL) == EINTR)
				;
		}
		sqlite3_bind_text(st, 1, "a row of about forty bytes of text..",
				  -1, SQLITE_STATIC);
		check(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return settled_txid(p, name);
}

/* The replica has every row of name (read through its mount). */
static void check_rows(node *r, const char *name, int64_t want)
{
	sqlite3 *rd = db_open(r->mnt, name, SQLITE_OPEN_READONLY);
	int64_t c = query_int(rd, "SELECT count(*) FROM t");

	sqlite3_close(rd);
	if (c != want)
		bench_fail("walapply: replica has %" PRId64 " rows of %s, not %"
			   PRId64, c, name, want);
}

static void bench_walapply(void)
{
	int nr = runs(), nf = env_int("LTXFS_BENCH_APPLY_TX", 5000, 1);
	int rate = env_int("LTXFS_BENCH_APPLY_RATE", 1000, 1);
	int nc = env_int("LTXFS_BENCH_APPLY_N", 20000, 1);
	double f_cpu[64], c_rate[64], c_cpu[64];
	node *p = node_new("wp", NULL), *r;

	node_start(p);
	r = node_new("wr", p);
	node_start(r);
	printf("walapply: WAL + synchronous=NORMAL single-row INSERTs; follow "
	       "%d records at %d/s, catch-up %d records\n", nf, rate, nc);
	for (int i = 0; i < nr; i++) {
		char name[64];
		uint64_t base, txid;
		double t0, t, cpu0, tm;

		/* (a) follow */
		snprintf(name, sizeof(name), "follow-%d.db", i);
		base = wal_inserts(p, name, 1, 0);
		wait_txid(r, name, base, 60);
		cpu0 = node_cpu_s(r);
		txid = wal_inserts(p, name, nf, rate);
		wait_txid(r, name, txid, 120);
		f_cpu[i] = (node_cpu_s(r) - cpu0) * 1e6 / (double)(txid - base);
		check_rows(r, name, nf + 1);

		/* (b) catch-up */
		snprintf(name, sizeof(name), "catch-%d.db", i);
		base = wal_inserts(p, name, 1, 0);
		wait_txid(r, name, base, 60);
		if (node_stop(r) != 0)
			node_fail(r, "unclean exit after SIGTERM");
		txid = wal_inserts(p, name, nc, 0);
		t0 = bench_now();
		tm = node_start(r);
		wait_txid(r, name, txid, 600);
		t = bench_now() - t0 - tm;
		/* The daemon's whole CPU time, its start included. */
		c_cpu[i] = node_cpu_s(r) * 1e6 / (double)(txid - base);
		c_rate[i] = (double)(txid - base) / t;
		check_rows(r, name, nc + 1);
		printf("  walapply run %d: follow: replica CPU %.1f us/record; "
		       "catch-up: %" PRIu64 " records in %.3f s after the "
		       "mount, %.0f records/s, replica CPU %.1f us/record\n",
		       i, f_cpu[i], txid - base, t, c_rate[i], c_cpu[i]);
		fflush(stdout);
	}
	printf("summary: bench_repl: WAL apply = follow at %d/s: %.1f us "
	       "replica CPU/record; catch-up %.0f records/s, %.1f us "
	       "CPU/record (medians of %d)\n", rate, bench_median(f_cpu, nr),
	       bench_median(c_rate, nr), bench_median(c_cpu, nr), nr);
	fflush(stdout);
	node_stop(r);
	node_stop(p);
}

/* ---- 5. export and import ------------------------------------------ */

/* Runs `ltxfs VERB --url http://127.0.0.1:PORT DB FILE`; returns its
 * wall time in seconds. */
static double xfer_run(const char *verb, const node *n, const char *db,
		       const char *file)
{
	char url[64], what[128];
	char *argv[] = {(char *)ltxfs_bin, (char *)verb, "--url", url,
			(char *)db, (char *)file, NULL};
	double t0 = bench_now();
	int st;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", n->port);
	st = run_quiet(argv);
	if (st != 0) {
		snprintf(what, sizeof(what), "ltxfs %s %s: status 0x%x", verb,
			 db, st);
		node_fail(n, what);
	}
	return bench_now() - t0;
}

/* One pair of nodes of the xfer part, running one daemon binary. */
struct xfer_pair {
	const char *label;
	node *p, *r;
	uint64_t txid, bytes;
	double ep[64], er[64], im[64];
};

static void xfer_pair_start(struct xfer_pair *x, const char *label,
			    const char *bin, const char *pname,
			    const char *rname, int mb)
{
	x->label = label;
	x->p = node_new(pname, NULL);
	x->p->bin = bin;
	node_start(x->p);
	x->r = node_new(rname, x->p);
	x->r->bin = bin;
	node_start(x->r);
	x->bytes = prefill(x->p, "xfer.db", mb, "WAL");
	x->txid = settled_txid(x->p, "xfer.db");
	wait_txid(x->r, "xfer.db", x->txid, 600);
}

/* Run i of pair x: export from both nodes, the export back in. */
static void xfer_pair_run(struct xfer_pair *x, int i, const char *out)
{
	const char *db = "xfer.db";

	x->ep[i] = xfer_run("export", x->p, db, out);
	x->er[i] = xfer_run("export", x->r, db, out);
	if (bench_file_size(out) < x->bytes)
		bench_fail("xfer: the export has %" PRIu64 " bytes, the "
			   "database %" PRIu64, bench_file_size(out),
			   x->bytes);
	/* The export back in: the next transaction, replicated (the wait
	 * is not timed). */
	x->im[i] = xfer_run("import", x->p, db, out);
	if (settled_txid(x->p, db) != ++x->txid)
		node_fail(x->p, "xfer: the import was not one TXID");
	wait_txid(x->r, db, x->txid, 600);
	printf("  xfer run %d, %s: export from the primary %.3f s, from the "
	       "replica %.3f s; import %.3f s\n", i, x->label, x->ep[i],
	       x->er[i], x->im[i]);
	fflush(stdout);
}

static void bench_xfer(void)
{
	int nr = runs(), mb = env_int("LTXFS_BENCH_XFER_MB", 50, 1);
	const char *base = getenv("LTXFS_BENCH_XFER_BASE");
	struct xfer_pair x[2];
	int np = base && *base ? 2 : 1;
	char out[4500];

	xfer_pair_start(&x[0], "LTXFS_BIN", ltxfs_bin, "xp", "xr", mb);
	if (np == 2)
		xfer_pair_start(&x[1], "base", base, "bp", "br", mb);
	snprintf(out, sizeof(out), "%s/xfer-out.db", root);
	printf("xfer: xfer.db, WAL mode, %.1f MB; ltxfs export/import over "
	       "127.0.0.1%s%s\n", (double)x[0].bytes / 1e6,
	       np == 2 ? "; alternated with the base daemon " : "",
	       np == 2 ? base : "");
	for (int i = 0; i < nr; i++)
		for (int j = 0; j < np; j++)
			xfer_pair_run(&x[(i + j) % np], i, out);
	unlink(out);
	for (int j = 0; j < np; j++) {
		printf("summary: bench_repl: xfer %.0f MB WAL, %s = export "
		       "%.3f s (primary), %.3f s (replica); import %.3f s "
		       "(medians of %d)\n", (double)x[j].bytes / 1e6,
		       x[j].label, bench_median(x[j].ep, nr),
		       bench_median(x[j].er, nr), bench_median(x[j].im, nr),
		       nr);
		node_stop(x[j].r);
		node_stop(x[j].p);
	}
	fflush(stdout);
}

/* ---- 6. TLS ---------------------------------------------------------- */

/* A CA and one certificate for every node (IP:127.0.0.1, serverAuth and
 * clientAuth) in <root>/pki, made with openssl. */
static void make_pki(void)
{
	char cmd[16384];

	snprintf(pki, sizeof(pki), "%s/pki", root);
	if (mkdir(pki, 0755) < 0)
		bench_fail("mkdir %s: %s", pki, strerror(errno));
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && EC='-newkey ec -pkeyopt "
		 "ec_paramgen_curve:prime256v1 -nodes' && "
		 "openssl req -x509 $EC -keyout ca.key -out ca.crt -days 2 "
		 "-subj /CN=bench-ca && "
		 "openssl req $EC -keyout node.key -out node.csr "
		 "-subj /CN=bench-node && "
		 "printf 'basicConstraints=CA:FALSE\\nsubjectAltName="
		 "IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' "
		 "> node.ext && "
		 "openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key "
		 "-CAcreateserial -days 2 -out node.crt -extfile node.ext",
		 pki);
	if (system(cmd) != 0)
		bench_fail("openssl could not make the certificates in %s",
			   pki);
}

/* Plain HTTP and HTTPS with mutual TLS side by side, runs interleaved:
 * lag at LTXFS_BENCH_LAG_RATE, and catch-up of a
 * LTXFS_BENCH_TLS_MB (256) MiB database from the log records. */
static void bench_tls(void)
{
	int nr = runs(), mb = env_int("LTXFS_BENCH_TLS_MB", 256, 1);
	node *p[2], *r[2];
	double p99[2][64], rate[2][64];
	uint64_t bytes[2], txid[2];
	const char *label[2] = {"plain HTTP", "HTTPS + mTLS"};
	const char *db = "big.db";

	make_pki();
	for (int k = 0; k < 2; k++) {
		char name[8];
		snprintf(name, sizeof(name), "%sp", k ? "t" : "h");
		p[k] = node_new(name, NULL);
		p[k]->tls = k == 1;
		p[k]->retention_bytes = 0;
		write_config(p[k]);
		node_start(p[k]);
		snprintf(name, sizeof(name), "%sr", k ? "t" : "h");
		r[k] = node_new(name, p[k]);
		node_start(r[k]);
	}
	printf("tls: lag at %d tx/s for %d s, plain HTTP and HTTPS with "
	       "mutual TLS interleaved\n",
	       env_int("LTXFS_BENCH_LAG_RATE", 1000, 1),
	       env_int("LTXFS_BENCH_LAG_S", 10, 1));
	for (int i = 0; i < nr; i++)
		for (int k = 0; k < 2; k++) {
			struct lag_result res;
			printf("  %s:\n", label[k]);
			lag_run(p[k], r[k], i, &res);
			p99[k][i] = res.p99;
		}
	printf("summary: bench_repl: tls lag p99 at 1000 tx/s = plain %.3f "
	       "ms, HTTPS %.3f ms (medians) (target HTTPS p99 < 2 ms) %s\n",
	       bench_median(p99[0], nr), bench_median(p99[1], nr),
	       bench_verdict(bench_median(p99[1], nr) < 2.0));
	print_load("after tls lag");
	for (int k = 0; k < 2; k++) {
		node_stop(r[k]);
		bytes[k] = prefill(p[k], db, mb, "DELETE");
		txid[k] = pos_txid(p[k], db);
	}
	for (int i = 0; i < nr; i++)
		for (int k = 0; k < 2; k++) {
			struct catchup_result c;
			catchup_one(p[k], r[k], db, bytes[k], txid[k], false, i,
				    &c);
			rate[k][i] = c.rate;
		}
	printf("summary: bench_repl: tls catch-up of %.0f MB from log "
	       "records = plain %.0f MB/s, HTTPS %.0f MB/s, ratio %.2f "
	       "(medians) (target >= 0.90) %s\n", (double)bytes[0] / 1e6,
	       bench_median(rate[0], nr), bench_median(rate[1], nr),
	       bench_median(rate[1], nr) / bench_median(rate[0], nr),
	       bench_verdict(bench_median(rate[1], nr) /
				     bench_median(rate[0], nr) >= 0.9));
	fflush(stdout);
	for (int k = 0; k < 2; k++)
		node_stop(p[k]);
}

/* ---- 7. sync --------------------------------------------------------- */

struct writer_arg {
	const char *dir;
	char name[64];
	int n;
	double secs;
};

static void *writer_main(void *arg)
{
	struct writer_arg *w = arg;
	sqlite3 *db = db_open(w->dir, w->name, SQLITE_OPEN_READWRITE);
	sqlite3_stmt *st;
	double t0 = bench_now();

	sqlite3_busy_timeout(db, 10000);
	check(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st,
				 NULL), db, "prepare");
	for (int i = 0; i < w->n; i++) {
		sqlite3_bind_text(st, 1, "a row of about forty bytes of text..",
				  -1, SQLITE_STATIC);
		check(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
	}
	w->secs = bench_now() - t0;
	sqlite3_finalize(st);
	sqlite3_close(db);
	return NULL;
}

/* 8 threads, n INSERTs in all, on one database (dbs 1) or on one each
 * (dbs 8), WAL+NORMAL; tx/s. */
static double writers_run(const char *dir, const char *tag, int dbs, int n)
{
	struct writer_arg w[8];
	pthread_t th[8];
	double t0, t;

	for (int i = 0; i < dbs; i++) {
		char sql[256];
		sqlite3 *db;
		snprintf(w[i].name, sizeof(w[i].name), "%s-%d.db", tag, i);
		db = db_open(dir, w[i].name, SQLITE_OPEN_READWRITE |
					     SQLITE_OPEN_CREATE);
		snprintf(sql, sizeof(sql), "PRAGMA journal_mode=wal; PRAGMA "
			 "synchronous=normal; CREATE TABLE t(id INTEGER "
			 "PRIMARY KEY, v TEXT);");
		exec(db, sql);
		sqlite3_close(db);
	}
	for (int i = 0; i < 8; i++) {
		w[i].dir = dir;
		if (i >= dbs)
			memcpy(w[i].name, w[0].name, sizeof(w[i].name));
		w[i].n = n / 8;
	}
	t0 = bench_now();
	for (int i = 0; i < 8; i++)
		if (pthread_create(&th[i], NULL, writer_main, &w[i]) != 0)
			bench_fail("pthread_create");
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	t = bench_now() - t0;
	return (n / 8 * 8) / t;
}

/* The median of ltxfs_sync_commit_wait_seconds since its last call, from
 * the buckets (the upper bound of the bucket holding the median), ms. */
static double sync_wait_median_ms(const node *p)
{
	static double last[32];
	double le[32], cum[32], now[32];
	int nb = 0;
	char cmd[600], line[512];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "curl -s http://127.0.0.1:%d/metrics",
		 p->port);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f) && nb < 32) {
		double v;
		char b[32];
		if (sscanf(line, "ltxfs_sync_commit_wait_seconds_bucket{le="
				 "\"%31[^\"]\"} %lf", b, &v) != 2)
			continue;
		le[nb] = strcmp(b, "+Inf") == 0 ? 1e9 : atof(b);
		now[nb] = v;
		cum[nb] = v - last[nb];
		nb++;
	}
	pclose(f);
	memcpy(last, now, sizeof(now));
	for (int i = 0; nb && i < nb; i++)
		if (cum[i] >= cum[nb - 1] / 2)
			return le[i] * 1000;
	return -1;
}

static void sync_row(const char *what, double *nat, double *as, double *sy,
		     double *waits, int nr, double target)
{
	double ma = bench_median(as, nr), ms = bench_median(sy, nr);

	printf("summary: bench_repl: sync %s: native %.0f, async %.0f, sync "
	       "%.0f tx/s; sync/async %.2f", what, bench_median(nat, nr), ma,
	       ms, ms / ma);
	if (target > 0)
		printf(" (target %.2f) %s", target,
		       bench_verdict(ms / ma >= target));
	printf("; commit wait median <= %.1f ms\n", bench_median(waits, nr));
	fflush(stdout);
}

static void bench_sync(void)
{
	int nr = runs();
	node *pa = node_new("pa", NULL), *ra = node_new("ra", pa);
	node *ps = node_new("ps", NULL), *rs;
	static const char *const modes[][2] = {
		{"wal", "normal"}, {"wal", "full"}, {"delete", "full"}};
	static const double targets[] = {0, 0.8, 0};

	ps->sync = 1;
	write_config(ps);
	rs = node_new("rs", ps);
	node_start(pa);
	node_start(ra);
	node_start(ps);
	node_start(rs);
	for (size_t m = 0; m < 3; m++) {
		double nat[64], as[64], sy[64], waits[64];
		int n = strcmp(modes[m][0], "delete") == 0 ? 300 : 1000;
		struct cpu_use cu;
		for (int i = 0; i < nr; i++) {
			char name[64], path[4500], what[64];
			snprintf(name, sizeof(name), "s1-%s-%s-%d.db",
				 modes[m][0], modes[m][1], i);
			memset(cpu_nodes, 0, sizeof(cpu_nodes));
			nat[i] = insert_run(native, name, modes[m][0],
					    modes[m][1], n, &cu);
			snprintf(path, sizeof(path), "%s/%s", native, name);
			unlink(path);
			as[i] = insert_run(pa->mnt, name, modes[m][0],
					   modes[m][1], n, &cu);
			sync_wait_median_ms(ps);
			sy[i] = insert_run(ps->mnt, name, modes[m][0],
					   modes[m][1], n, &cu);
			waits[i] = sync_wait_median_ms(ps);
			snprintf(what, sizeof(what), "%s+%s", modes[m][0],
				 modes[m][1]);
			printf("  sync 1 writer %s run %d: native %.0f, async "
			       "%.0f, sync %.0f tx/s\n", what, i, nat[i],
			       as[i], sy[i]);
			fflush(stdout);
		}
		{
			char what[64];
			snprintf(what, sizeof(what), "1 writer %s+%s",
				 modes[m][0], modes[m][1]);
			sync_row(what, nat, as, sy, waits, nr, targets[m]);
		}
	}
	for (int dbs = 1; dbs <= 8; dbs += 7) {
		double nat[64], as[64], sy[64], waits[64];
		char what[64];
		for (int i = 0; i < nr; i++) {
			char tag[32];
			snprintf(tag, sizeof(tag), "w8-%d-%d", dbs, i);
			nat[i] = writers_run(native, tag, dbs, 2000);
			as[i] = writers_run(pa->mnt, tag, dbs, 2000);
			sync_wait_median_ms(ps);
			sy[i] = writers_run(ps->mnt, tag, dbs, 2000);
			waits[i] = sync_wait_median_ms(ps);
			printf("  sync 8 writers, %d database(s), run %d: native "
			       "%.0f, async %.0f, sync %.0f tx/s\n", dbs, i,
			       nat[i], as[i], sy[i]);
			fflush(stdout);
		}
		snprintf(what, sizeof(what), "8 writers on %d database%s "
			 "wal+normal", dbs, dbs > 1 ? "s" : "");
		sync_row(what, nat, as, sy, waits, nr, 0.7);
	}
	node_stop(rs);
	node_stop(ps);
	node_stop(ra);
	node_stop(pa);
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : "all";
	struct sigaction sa = {.sa_handler = on_signal};
	node *pa, *r1, *r2, *pb;

	bench_header("bench_repl");
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		bench_fail("/dev/fuse is not usable");
	ltxfs_bin = getenv("LTXFS_BIN");
	if (!ltxfs_bin)
		bench_fail("LTXFS_BIN is not set");
	root_created = !getenv("LTXFS_BENCH_DIR") ||
		       !*getenv("LTXFS_BENCH_DIR");
	snprintf(root, sizeof(root), "%s", bench_dir());
	atexit(at_exit); /* runs before bench_dir's own clean-up */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	snprintf(native, sizeof(native), "%s/native", root);
	if (mkdir(native, 0755) < 0)
		bench_fail("mkdir %s: %s", native, strerror(errno));
	printf("scratch: %s; ltxfs: %s\n", root, ltxfs_bin);
	pin_setup();
	print_load("at start");

	if (strcmp(only, "all") == 0 || strcmp(only, "lag") == 0 ||
	    strcmp(only, "throughput") == 0) {
		pa = node_new("pa", NULL);
		node_start(pa);
		r1 = node_new("r1", pa);
		r2 = node_new("r2", pa);
		node_start(r1);
		node_start(r2);
		if (strcmp(only, "throughput") != 0) {
			bench_lag(pa, r1);
			print_load("after lag");
		}
		if (strcmp(only, "lag") != 0) {
			pb = node_new("pb", NULL);
			node_start(pb);
			bench_throughput(pa, r1, r2, pb, "wal", "normal", 3000);
			bench_throughput(pa, r1, r2, pb, "delete", "full", 500);
			printf("summary: bench_repl: daemon peak RSS = primary "
			       "%ld KiB, replicas %ld / %ld KiB, lone primary "
			       "%ld KiB\n", node_hwm_kib(pa), node_hwm_kib(r1),
			       node_hwm_kib(r2), node_hwm_kib(pb));
			node_stop(pb);
			print_load("after throughput");
		}
		node_stop(r2);
		node_stop(r1);
		node_stop(pa);
	}
	if (strcmp(only, "all") == 0 || strcmp(only, "catchup") == 0) {
		bench_catchup();
		print_load("after catch-up");
	} else if (strcmp(only, "walapply") == 0) {
		bench_walapply();
		print_load("after walapply");
	} else if (strcmp(only, "xfer") == 0) {
		bench_xfer();
		print_load("after xfer");
	} else if (strcmp(only, "tls") == 0) {
		bench_tls();
		print_load("after tls");
	} else if (strcmp(only, "sync") == 0) {
		bench_sync();
		print_load("after sync");
	} else if (strcmp(only, "lag") != 0 &&
		   strcmp(only, "throughput") != 0) {
		bench_fail("usage: bench_repl "
			   "[all|lag|throughput|catchup|walapply|xfer|tls|"
			   "sync]");
	}
	return 0;
}
