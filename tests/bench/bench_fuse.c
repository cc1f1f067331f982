/*
 * The FUSE mount against native SQLite on the same disk, in the same run
 * (issue 3): single-row INSERT transactions in WAL+NORMAL, WAL+FULL and
 * DELETE+FULL, and point SELECTs on a warm ~100 MB WAL database and a
 * ~20 MB DELETE-mode one (a hot-journal check per read), each as
 * median tx/s over several interleaved runs and the ratio mount/native.
 * Also the daemon's peak RSS and, with LTXFS_BENCH_BIG=1, a 1 GiB
 * database's clean-restart time. LTXFS_BENCH_NO_COMPRESS=1 stores the LTX
 * log uncompressed (data.compress: false).
 *
 * Needs: root, /dev/fuse, LTXFS_BIN (the ltxfs binary; meson sets it).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

static char root[4096], mnt[4200], data[4200], native[4200], cfgpath[4200];
static pid_t daemon_pid = -1;

static void check(int rc, sqlite3 *db, const char *what)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
		bench_fail("%s: %s", what, db ? sqlite3_errmsg(db) : "?");
}

static void exec(sqlite3 *db, const char *sql)
{
	check(sqlite3_exec(db, sql, NULL, NULL, NULL), db, sql);
}

static bool mounted(void)
{
	char line[8192];
	bool found = false;
	FILE *f = fopen("/proc/mounts", "r");

	if (!f)
		return false;
	/* The FUSE mount, not the read-only guard ltxfs leaves beneath. */
	while (fgets(line, sizeof(line), f))
		if (strstr(line, mnt) && strstr(line, " fuse.ltxfs "))
			found = true;
	fclose(f);
	return found;
}

static double start_daemon(void)
{
	const char *bin = getenv("LTXFS_BIN");
	double t0 = bench_now();

	if (!bin)
		bench_fail("LTXFS_BIN is not set");
	daemon_pid = fork();
	if (daemon_pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, 2);
		execl(bin, bin, "mount", "-c", cfgpath, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 2000 && !mounted(); i++)
		usleep(5000);
	if (!mounted())
		bench_fail("the mount did not appear in 10 s");
	return bench_now() - t0;
}

static long daemon_hwm_kib(void)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)daemon_pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void stop_daemon(void)
{
	int st;

	if (daemon_pid <= 0)
		return;
	kill(daemon_pid, SIGTERM);
	waitpid(daemon_pid, &st, 0);
	daemon_pid = -1;
}

/* Removes the read-only guard the daemon leaves beneath its mount
 * (docs/STORAGE.md), so the directory can be removed. */
static void remove_guard(void)
{
	char cmd[4300];

	snprintf(cmd, sizeof(cmd), "umount -l %.4200s 2>/dev/null", mnt);
	for (int i = 0; i < 4 && system(cmd) == 0; i++)
		;
}

/* N single-row INSERT transactions; returns tx/s. */
static double insert_run(const char *dir, const char *jmode, const char *sync,
			 int n, int run)
{
	char path[4400], sql[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	double t0, t;

	snprintf(path, sizeof(path), "%s/ins-%s-%s-%d.db", dir, jmode, sync,
		 run);
	check(sqlite3_open(path, &db), NULL, path);
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; PRAGMA "
		 "synchronous=%s; CREATE TABLE t(id INTEGER PRIMARY KEY, v "
		 "TEXT);", jmode, sync);
	exec(db, sql);
	check(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st,
				 NULL), db, "prepare");
	t0 = bench_now();
	for (int i = 0; i < n; i++) {
		sqlite3_bind_text(st, 1, "a row of about forty bytes of text..",
				  -1, SQLITE_STATIC);
		check(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
	}
	t = bench_now() - t0;
	sqlite3_finalize(st);
	sqlite3_close(db);
	unlink(path);
	return n / t;
}

static void bench_inserts(const char *jmode, const char *sync, int n,
			  double target)
{
	int runs = bench_runs();
	double nat[64], fus[64], mn, mf;

	for (int r = 0; r < runs && r < 64; r++) {
		nat[r] = insert_run(native, jmode, sync, n, r);
		fus[r] = insert_run(mnt, jmode, sync, n, r);
	}
	mn = bench_median(nat, runs);
	mf = bench_median(fus, runs);
	printf("insert %s+%s: native %.0f tx/s, mount %.0f tx/s\n", jmode,
	       sync, mn, mf);
	printf("summary: bench_fuse: insert %s+%s = %.0f tx/s ratio %.2f "
	       "(target %.2f) %s\n", jmode, sync, mf, mf / mn, target,
	       mf / mn >= target ? "ok" : "BELOW TARGET");
}

/* A database of mb MB of 1000-byte random blobs in journal mode jmode. */
static void make_db(const char *path, int mb, const char *jmode)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	uint64_t seed = 42;
	char blob[1000], sql[128];

	check(sqlite3_open(path, &db), NULL, path);
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; CREATE TABLE "
		 "t(id INTEGER PRIMARY KEY, v BLOB); BEGIN", jmode);
	exec(db, sql);
	check(sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &st,
				 NULL), db, "prepare");
	for (long i = 0; i < (long)mb * 1000; i++) {
		for (size_t j = 0; j < sizeof(blob); j += 8) {
			uint64_t r = bench_rand(&seed);
			memcpy(blob + j, &r, 8);
		}
		sqlite3_bind_blob(st, 1, blob, sizeof(blob), SQLITE_STATIC);
		check(sqlite3_step(st), db, "insert");
		sqlite3_reset(st);
		if (i % 20000 == 19999)
			exec(db, "COMMIT; BEGIN");
	}
	exec(db, "COMMIT");
	if (strcmp(jmode, "wal") == 0)
		exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static double select_run(const char *path, int n, long rows)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	uint64_t seed = 7;
	double t0, t;

	check(sqlite3_open(path, &db), NULL, path);
	check(sqlite3_prepare_v2(db, "SELECT length(v) FROM t WHERE id = ?",
				 -1, &st, NULL), db, "prepare");
	for (int warm = 0; warm < 2; warm++) {
		t0 = bench_now();
		for (int i = 0; i < n; i++) {
			sqlite3_bind_int64(st, 1, (long)(bench_rand(&seed) %
							  rows) + 1);
			if (sqlite3_step(st) != SQLITE_ROW)
				bench_fail("point select found no row");
			sqlite3_reset(st);
		}
		t = bench_now() - t0;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n / t;
}

/* Point SELECTs, each its own read transaction, on a database of mb MB
 * in journal mode jmode. In a rollback-journal mode SQLite checks for a
 * hot journal at every read transaction (a lookup of <db>-journal, which
 * does not exist): the mount answers it from the kernel's cached
 * absence, so the ratio stays that of WAL mode. */
static void bench_selects(const char *jmode, int mb)
{
	char a[4400], b[4400];
	int runs = bench_runs();
	double nat[64], fus[64], mn, mf;

	snprintf(a, sizeof(a), "%s/sel-%s.db", native, jmode);
	snprintf(b, sizeof(b), "%s/sel-%s.db", mnt, jmode);
	make_db(a, mb, jmode);
	make_db(b, mb, jmode);
	for (int r = 0; r < runs && r < 64; r++) {
		nat[r] = select_run(a, 20000, mb * 1000L);
		fus[r] = select_run(b, 20000, mb * 1000L);
	}
	mn = bench_median(nat, runs);
	mf = bench_median(fus, runs);
	printf("point select (%d MB, %s): native %.0f/s, mount %.0f/s\n", mb,
	       jmode, mn, mf);
	printf("summary: bench_fuse: point select %s = %.0f /s ratio %.2f "
	       "(target 0.80) %s\n", jmode, mf, mf / mn,
	       mf / mn >= 0.8 ? "ok" : "BELOW TARGET");
	unlink(a);
	unlink(b);
}

static void bench_big(void)
{
	char b[4400];
	double t;
	long hwm;

	snprintf(b, sizeof(b), "%s/big.db", mnt);
	make_db(b, 1024, "wal");
	hwm = daemon_hwm_kib();
	printf("summary: bench_fuse: daemon peak RSS with a 1 GiB database = "
	       "%ld KiB (limit 64 MiB + 16 B/page = %ld KiB) %s\n", hwm,
	       65536 + 16L * 262144 / 1024,
	       hwm < 65536 + 16L * 262144 / 1024 ? "ok" : "BELOW TARGET");
	stop_daemon();
	t = start_daemon();
	{
		sqlite3 *db;
		double t0 = bench_now();
		check(sqlite3_open(b, &db), NULL, b);
		exec(db, "SELECT count(*) FROM t WHERE id < 10");
		sqlite3_close(db);
		t += bench_now() - t0;
	}
	printf("summary: bench_fuse: clean restart with a 1 GiB database = "
	       "%.3f s (target < 1 s) %s\n", t, t < 1.0 ? "ok" : "BELOW TARGET");
}

int main(void)
{
	FILE *f;

	bench_header("bench_fuse");
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		bench_fail("/dev/fuse is not usable");
	snprintf(root, sizeof(root), "%s", bench_dir());
	atexit(stop_daemon); /* runs before bench_dir's own clean-up */
	snprintf(mnt, sizeof(mnt), "%s/mnt", root);
	snprintf(data, sizeof(data), "%s/data", root);
	snprintf(native, sizeof(native), "%s/native", root);
	snprintf(cfgpath, sizeof(cfgpath), "%s/ltxfs.yml", root);
	mkdir(mnt, 0755);
	mkdir(native, 0755);
	f = fopen(cfgpath, "w");
	if (!f)
		bench_fail("cannot write %s", cfgpath);
	fprintf(f, "fuse:\n  dir: %s\ndata:\n  dir: %s\n  compress: %s\n"
		"log:\n  level: warn\n", mnt, data,
		getenv("LTXFS_BENCH_NO_COMPRESS") ? "false" : "true");
	fclose(f);
	start_daemon();
	bench_inserts("wal", "normal", 3000, 0.25);
	bench_inserts("wal", "full", 1000, 0.7);
	bench_inserts("delete", "full", 500, 0.5);
	bench_selects("wal", 100);
	bench_selects("delete", 20);
	printf("summary: bench_fuse: daemon peak RSS = %ld KiB\n",
	       daemon_hwm_kib());
	if (getenv("LTXFS_BENCH_BIG"))
		bench_big();
	stop_daemon();
	remove_guard();
	{
		char cmd[4400];
		snprintf(cmd, sizeof(cmd), "rm -rf %.1300s %.1300s %.1300s",
			 data, native, mnt);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", data);
	}
	unlink(cfgpath);
	return 0;
}
