/*
 * replica/dbcopy.c: the copy of export/import in a child process. The
 * child is this test binary run as `__copy-db SRC DST` (main dispatches
 * to rep_dbcopy_main, as cmd/main.c does), on files of a temporary
 * directory: a copy arrives whole, SQLite's failures come back with their
 * message, and a child that waits for a lock is killed and reaped when
 * its bound passes, when cancel says so, or when the client hangs up.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "replica/dbcopy.h"

static char dir[64];

static void path_of(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
}

static void exec_sql(sqlite3 *db, const char *sql)
{
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
}

static sqlite3 *open_db(const char *name)
{
	char path[128];
	sqlite3 *db = NULL;

	path_of(path, sizeof(path), name);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	return db;
}

/* name: a WAL-mode database with rows rows of table t, some in its WAL. */
static void make_db(const char *name, int rows)
{
	sqlite3 *db = open_db(name);

	exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; "
		     "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
	for (int i = 0; i < rows; i++)
		exec_sql(db, "INSERT INTO t(v) VALUES (randomblob(1000))");
	sqlite3_close(db);
}

static int64_t count_rows(const char *name)
{
	sqlite3 *db = open_db(name);
	sqlite3_stmt *st;
	int64_t n;

	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1,
					    &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* No child of this process is left, running or unreaped. */
static void assert_no_child(void)
{
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static int run(const char *src, const char *dst, int64_t timeout_ms,
	       int client_fd, bool (*cancel)(void *, const char **),
	       void *ctx, char *err, size_t errlen)
{
	char s[128], d[128];
	rep_dbcopy c = {.src = s, .dst = d, .timeout_ms = timeout_ms,
			.client_fd = client_fd, .cancel = cancel, .ctx = ctx};

	path_of(s, sizeof(s), src);
	path_of(d, sizeof(d), dst);
	err[0] = '\0';
	return rep_dbcopy_run(&c, err, errlen);
}

static void test_copies_a_wal_database(void **state)
{
	char err[300];

	(void)state;
	make_db("src.db", 300);
	assert_int_equal(run("src.db", "out.db", 30000, -1, NULL, NULL, err,
			     sizeof(err)), 0);
	assert_int_equal(count_rows("out.db"), 300);
	assert_no_child();
	/* Into an existing database: its content is replaced. */
	make_db("other.db", 5);
	assert_int_equal(run("other.db", "out.db", 30000, -1, NULL, NULL, err,
			     sizeof(err)), 0);
	assert_int_equal(count_rows("out.db"), 5);
	assert_no_child();
}

static void test_sqlite_failure_is_eio_with_message(void **state)
{
	char err[300];

	(void)state;
	assert_int_equal(run("missing.db", "x.db", 30000, -1, NULL, NULL, err,
			     sizeof(err)), -EIO);
	assert_non_null(strstr(err, "unable to open database file"));
	make_db("src.db", 1);
	assert_int_equal(run("src.db", "no/such/dir.db", 30000, -1, NULL,
			     NULL, err, sizeof(err)), -EIO);
	assert_non_null(strstr(err, "opening"));
	assert_no_child();
}

/* dst locked by a write transaction of this process: the child waits. */
static sqlite3 *lock_dst(const char *name)
{
	sqlite3 *db = open_db(name);

	exec_sql(db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, "
		     "v BLOB); BEGIN IMMEDIATE");
	return db;
}

static void test_timeout_kills(void **state)
{
	char err[300];
	sqlite3 *lk;
	double t0;

	(void)state;
	make_db("src.db", 10);
	lk = lock_dst("locked.db");
	t0 = now_s();
	assert_int_equal(run("src.db", "locked.db", 300, -1, NULL, NULL, err,
			     sizeof(err)), -ETIMEDOUT);
	assert_true(now_s() - t0 < 5.0);
	assert_non_null(strstr(err, "timed out"));
	assert_no_child();
	exec_sql(lk, "COMMIT");
	sqlite3_close(lk);
	assert_int_equal(count_rows("locked.db"), 0);
}

static int cancel_calls;

static bool cancel_third(void *ctx, const char **why)
{
	(void)ctx;
	if (++cancel_calls < 3)
		return false;
	*why = "cancelled by the test";
	return true;
}

static void test_cancel_kills(void **state)
{
	char err[300];
	sqlite3 *lk;

	(void)state;
	make_db("src.db", 10);
	lk = lock_dst("locked.db");
	cancel_calls = 0;
	assert_int_equal(run("src.db", "locked.db", 30000, -1, cancel_third,
			     NULL, err, sizeof(err)), -ECANCELED);
	assert_non_null(strstr(err, "cancelled by the test"));
	assert_no_child();
	sqlite3_close(lk);
}

static void test_client_hangup_kills(void **state)
{
	char err[300];
	sqlite3 *lk;
	int sv[2];
	double t0;

	(void)state;
	make_db("src.db", 10);
	lk = lock_dst("locked.db");
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	/* Data from the client is not a hang-up. */
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(run("src.db", "locked.db", 300, sv[0], NULL, NULL,
			     err, sizeof(err)), -ETIMEDOUT);
	assert_no_child();
	assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
	t0 = now_s();
	assert_int_equal(run("src.db", "locked.db", 30000, sv[0], NULL, NULL,
			     err, sizeof(err)), -ECANCELED);
	assert_true(now_s() - t0 < 5.0);
	assert_non_null(strstr(err, "the client hung up"));
	assert_no_child();
	close(sv[0]);
	close(sv[1]);
	sqlite3_close(lk);
}

static void test_usage(void **state)
{
	char *argv[] = {REP_DBCOPY_CMD, "only-one", NULL};

	(void)state;
	assert_int_equal(rep_dbcopy_main(2, argv), 2);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/ltxfs-dbcopy-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_copies_a_wal_database,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_sqlite_failure_is_eio_with_message, setup,
			teardown),
		cmocka_unit_test_setup_teardown(test_timeout_kills, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_cancel_kills, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_client_hangup_kills,
						setup, teardown),
		cmocka_unit_test(test_usage),
	};

	/* The child side, as cmd/main.c runs it. */
	if (argc > 1 && strcmp(argv[1], REP_DBCOPY_CMD) == 0)
		return rep_dbcopy_main(argc - 1, argv + 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
