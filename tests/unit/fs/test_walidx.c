/*
 * Tests for fs/walidx.c against the real SQLite library (unix VFS) on
 * plain files: SQLite on plain files speaks the same -shm protocol as it
 * does through the mount.
 *
 * Page sets are real: a SOURCE database (WAL mode unless said otherwise)
 * is changed with SQL, checkpointed with TRUNCATE, and its file compared
 * page by page with the previous image; each difference is one walidx
 * transaction on TARGET, a copy of SOURCE's first image whose db_path and
 * shm_path are the real files and whose wal_fd/db_fd are opened on the
 * real files too. Readers are ordinary SQLite connections on TARGET, in
 * this process or in forked ones.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "fs/wal.h"
#include "fs/walidx.h"
#include "lib/bytes.h"
#include "lib/io.h"

/* ---- helpers ----------------------------------------------------------- */

enum {
	APPLY_ORDER = 0,        /* pages in page order */
	APPLY_SHUFFLE = 1,      /* random order */
	APPLY_STALE_FIRST = 2,  /* every page first with wrong content */
	APPLY_DUP_ADJACENT = 4, /* pages twice in a row, wrong one first */
};

typedef struct env {
	char dir[256];
	char src[300], tgt[300], tgt_wal[310], tgt_shm[310];
	int src_fd; /* SOURCE's database, open from setup to teardown */
	bool wal_mode;
	sqlite3 *s; /* SOURCE */
	uint8_t *prev;
	size_t prev_len;
	uint32_t ps;
	int wal_fd, db_fd;
	fs_walidx *w;
	uint64_t rng;
	uint64_t inval_calls[2];
	int store_fd; /* >= 0: walidx writes -shm through env_store on it */
} env;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rnd(env *e)
{
	e->rng ^= e->rng << 13;
	e->rng ^= e->rng >> 7;
	e->rng ^= e->rng << 17;
	return e->rng;
}

static void exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

/* Full write to a pipe; false on error. */
static bool pipe_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t k = write(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		b += k;
		n -= (size_t)k;
	}
	return true;
}

static bool pipe_read_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n > 0) {
		ssize_t k = read(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		b += k;
		n -= (size_t)k;
	}
	return true;
}

/*
 * LOCKS AND close(): closing ANY descriptor of a file drops every classic
 * POSIX lock this process holds on it, so opening and closing the target
 * database or its -shm while a SQLite connection in this process has them
 * open silently releases that connection's SHARED, DMS and READ locks (and
 * walidx would then see no reader). Files SQLite may hold open here are
 * therefore read through descriptors kept open for the env's whole life
 * (read_fd), or by a child process (read_path_child: its descriptors are
 * its own). fs_walidx_close closes descriptors too, so no SQLite
 * connection on TARGET may be open in this process when walidx closes.
 */

/* A file's content, read by a child process. */
static void read_path_child(const char *path, uint8_t **out, size_t *len)
{
	int pfd[2], status = 0;
	uint64_t n = 0;
	bool ok;
	pid_t pid;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct stat st;
		uint8_t buf[65536];
		int fd = open(path, O_RDONLY);
		uint64_t left;
		close(pfd[0]);
		if (fd < 0 || fstat(fd, &st) < 0)
			_exit(1);
		left = n = (uint64_t)st.st_size;
		if (!pipe_write_all(pfd[1], &n, sizeof(n)))
			_exit(2);
		while (left > 0) {
			ssize_t k = read(fd, buf,
					 left < sizeof(buf) ? left : sizeof(buf));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0 || !pipe_write_all(pfd[1], buf, (size_t)k))
				_exit(3);
			left -= (uint64_t)k;
		}
		_exit(0);
	}
	close(pfd[1]);
	ok = pipe_read_all(pfd[0], &n, sizeof(n));
	*len = ok ? (size_t)n : 0;
	*out = malloc(*len ? *len : 1);
	ok = ok && *out && pipe_read_all(pfd[0], *out, *len);
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("reading %s in a child: status %#x", path, status);
}

/* A file's content, through a descriptor that stays open. */
static void read_fd(int fd, uint8_t **out, size_t *len)
{
	struct stat st;
	size_t got = 0;

	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	*out = malloc(*len ? *len : 1);
	assert_non_null(*out);
	assert_int_equal(lib_io_pread_full(fd, *out, *len, 0, &got), 0);
	assert_int_equal(got, *len);
}

/* Only for files no SQLite connection of this process has open. */
static void write_path(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(lib_io_pwrite_full(fd, p, n, 0), 0);
	close(fd);
}

static void copy_fd(int from, const char *to)
{
	uint8_t *b;
	size_t n;
	read_fd(from, &b, &n);
	write_path(to, b, n);
	free(b);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

/* A hash of every row of every table, inside the caller's transaction (no
 * assertions: child processes use it too). SQLITE_OK or the error. */
static int hash_tables(sqlite3 *db, uint64_t *out, int64_t *rows)
{
	char names[16][64];
	int n = 0, rc;
	uint64_t h = 0xcbf29ce484222325ULL;
	int64_t nrows = 0;
	sqlite3_stmt *st;

	rc = sqlite3_prepare_v2(db,
				"SELECT name FROM sqlite_schema "
				"WHERE type='table' ORDER BY name",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 16)
		snprintf(names[n++], sizeof(names[0]), "%s",
			 (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return rc;
	for (int t = 0; t < n; t++) {
		char sql[1100];
		snprintf(sql, sizeof(sql), "SELECT * FROM \"%s\" ORDER BY rowid",
			 names[t]);
		rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
		if (rc != SQLITE_OK)
			return rc;
		h = fnv(h, names[t], strlen(names[t]));
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			nrows++;
			for (int c = 0; c < sqlite3_column_count(st); c++) {
				int type = sqlite3_column_type(st, c);
				h = fnv(h, &type, sizeof(type));
				if (type == SQLITE_INTEGER) {
					int64_t v = sqlite3_column_int64(st, c);
					h = fnv(h, &v, sizeof(v));
				} else if (type == SQLITE_FLOAT) {
					double v = sqlite3_column_double(st, c);
					h = fnv(h, &v, sizeof(v));
				} else if (type != SQLITE_NULL) {
					const void *v = sqlite3_column_blob(st, c);
					h = fnv(h, v,
						(size_t)sqlite3_column_bytes(st, c));
				}
			}
		}
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return rc;
	}
	*out = h;
	if (rows)
		*rows = nrows;
	return SQLITE_OK;
}

/* A hash of every row of every table (in one read transaction); also
 * returns the row count when rows is not NULL. */
static uint64_t db_hash(sqlite3 *db, int64_t *rows)
{
	uint64_t h = 0;
	int rc;

	exec(db, "BEGIN");
	rc = hash_tables(db, &h, rows);
	if (rc != SQLITE_OK)
		fail_msg("hashing tables: %s (%s)", sqlite3_errstr(rc),
			 sqlite3_errmsg(db));
	exec(db, "COMMIT");
	return h;
}

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc != SQLITE_OK)
		fail_msg("open %s: %s", path, sqlite3_errstr(rc));
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static const char *text1(sqlite3 *db, const char *sql, char *buf,
			 size_t len)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL),
			 SQLITE_OK);
	buf[0] = 0;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(buf, len, "%s",
			 (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return buf;
}

static void assert_check_ok(sqlite3 *db, const char *pragma)
{
	char buf[256];
	assert_string_equal(text1(db, pragma, buf, sizeof(buf)), "ok");
}

/* A fresh connection's view of TARGET. */
static uint64_t target_hash(env *e)
{
	sqlite3 *db = open_db(e->tgt);
	uint64_t h = db_hash(db, NULL);
	sqlite3_close(db);
	return h;
}

static uint64_t source_hash(env *e)
{
	return db_hash(e->s, NULL);
}

/* SOURCE's file as of now (checkpointed into the database). */
static void source_image(env *e, uint8_t **out, size_t *len)
{
	if (e->wal_mode) {
		sqlite3_stmt *st;
		assert_int_equal(sqlite3_prepare_v2(
					 e->s, "PRAGMA wal_checkpoint(TRUNCATE)",
					 -1, &st, NULL),
				 SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_int_equal(sqlite3_column_int(st, 0), 0); /* not busy */
		sqlite3_finalize(st);
	}
	read_fd(e->src_fd, out, len);
	assert_int_equal(*len % e->ps, 0);
}

static void env_invalidate(void *ctx, int which, uint64_t off, uint64_t len)
{
	env *e = ctx;
	assert_true(which == 0 || which == 1);
	e->inval_calls[which]++;
	(void)off;
	(void)len;
}

static void env_setup(env *e, uint32_t ps, bool wal_mode, uint64_t seed)
{
	char sql[64];

	memset(e, 0, sizeof(*e));
	e->wal_fd = e->db_fd = e->src_fd = e->store_fd = -1;
	e->ps = ps;
	e->wal_mode = wal_mode;
	e->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
	snprintf(e->dir, sizeof(e->dir), "/tmp/walidx-test-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->src, sizeof(e->src), "%s/source.db", e->dir);
	snprintf(e->tgt, sizeof(e->tgt), "%s/target.db", e->dir);
	snprintf(e->tgt_wal, sizeof(e->tgt_wal), "%s-wal", e->tgt);
	snprintf(e->tgt_shm, sizeof(e->tgt_shm), "%s-shm", e->tgt);
	assert_int_equal(sqlite3_open(e->src, &e->s), SQLITE_OK);
	e->src_fd = open(e->src, O_RDONLY); /* sqlite3_open created it */
	assert_true(e->src_fd >= 0);
	snprintf(sql, sizeof(sql), "PRAGMA page_size=%u", ps);
	exec(e->s, sql);
	exec(e->s, wal_mode ? "PRAGMA journal_mode=WAL"
			    : "PRAGMA journal_mode=DELETE");
	exec(e->s, "PRAGMA synchronous=OFF; PRAGMA wal_autocheckpoint=0");
}

/* TARGET := SOURCE's current image; its files opened (no walidx yet). */
static void target_create(env *e)
{
	free(e->prev);
	source_image(e, &e->prev, &e->prev_len);
	write_path(e->tgt, e->prev, e->prev_len);
	write_path(e->tgt_wal, "", 0);
	unlink(e->tgt_shm);
	e->db_fd = open(e->tgt, O_RDWR);
	e->wal_fd = open(e->tgt_wal, O_RDWR);
	assert_true(e->db_fd >= 0 && e->wal_fd >= 0);
}

static int env_store(void *ctx, uint64_t off, const void *buf, size_t n);

static int walidx_start(env *e)
{
	fs_walidx_files f = {
		.db_path = e->tgt,
		.shm_path = e->tgt_shm,
		.wal_fd = e->wal_fd,
		.db_fd = e->db_fd,
		.invalidate = env_invalidate,
		.shm_store = e->store_fd >= 0 ? env_store : NULL,
		.ctx = e,
	};
	return fs_walidx_open(&f, e->ps, (uint32_t)(e->prev_len / e->ps),
			      &e->w);
}

static void env_teardown(env *e)
{
	DIR *d;
	struct dirent *de;

	fs_walidx_close(e->w);
	e->w = NULL;
	if (e->s)
		sqlite3_close(e->s);
	if (e->src_fd >= 0)
		close(e->src_fd);
	if (e->wal_fd >= 0)
		close(e->wal_fd);
	if (e->db_fd >= 0)
		close(e->db_fd);
	if (e->store_fd >= 0)
		close(e->store_fd);
	free(e->prev);
	d = opendir(e->dir);
	while (d && (de = readdir(d))) {
		char p[600];
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", e->dir, de->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(e->dir);
}

/* Changed pages of SOURCE since the last apply, as one walidx
 * transaction (pages in an order chosen by mode). Returns the number of
 * pages changed. */
static uint32_t apply(env *e, int mode)
{
	uint8_t *img, *junk;
	size_t len;
	uint32_t n, ps = e->ps, nchanged = 0, *list;

	source_image(e, &img, &len);
	n = (uint32_t)(len / ps);
	list = malloc(sizeof(*list) * (n + 1));
	junk = malloc(ps);
	assert_non_null(list);
	assert_non_null(junk);
	for (uint32_t p = 1; p <= n; p++) {
		size_t off = (size_t)(p - 1) * ps;
		if (off + ps > e->prev_len ||
		    memcmp(img + off, e->prev + off, ps) != 0)
			list[nchanged++] = p;
	}
	if (mode & APPLY_SHUFFLE)
		for (uint32_t i = nchanged; i > 1; i--) {
			uint32_t j = (uint32_t)(rnd(e) % i), t = list[i - 1];
			list[i - 1] = list[j];
			list[j] = t;
		}
	assert_int_equal(fs_walidx_begin(e->w, 2000), 0);
	if (mode & APPLY_STALE_FIRST)
		for (uint32_t i = 0; i < nchanged; i++) {
			for (uint32_t k = 0; k < ps; k++)
				junk[k] = (uint8_t)rnd(e);
			assert_int_equal(fs_walidx_page(e->w, list[i], junk), 0);
		}
	for (uint32_t i = 0; i < nchanged; i++) {
		const uint8_t *page = img + (size_t)(list[i] - 1) * ps;
		if (mode & APPLY_DUP_ADJACENT) {
			memset(junk, 0xa5, ps);
			assert_int_equal(fs_walidx_page(e->w, list[i], junk), 0);
		}
		assert_int_equal(fs_walidx_page(e->w, list[i], page), 0);
	}
	assert_int_equal(fs_walidx_commit(e->w, n, false), 0);
	free(e->prev);
	e->prev = img;
	e->prev_len = len;
	free(list);
	free(junk);
	return nchanged;
}

static void checkpoint_full(env *e)
{
	bool done = false;
	for (int i = 0; i < 100 && !done; i++) {
		assert_int_equal(fs_walidx_checkpoint(e->w, i & 1, &done), 0);
		if (!done)
			usleep(10000);
	}
	assert_true(done);
	assert_int_equal(fs_walidx_pending(e->w), 0);
}

/* TARGET's database file is SOURCE's, byte for byte. */
static void assert_files_equal(env *e)
{
	uint8_t *t;
	size_t n;
	read_fd(e->db_fd, &t, &n);
	assert_int_equal(n, e->prev_len);
	assert_memory_equal(t, e->prev, n);
	free(t);
}

/* SQLite's recovery, run on copies of TARGET's database and WAL (no
 * -shm), finds the same content: the WAL file itself is valid. */
static void assert_wal_recovers(env *e, uint64_t want)
{
	char db[320], wal[330], shm[330];
	sqlite3 *c;

	snprintf(db, sizeof(db), "%s/recover.db", e->dir);
	snprintf(wal, sizeof(wal), "%s-wal", db);
	snprintf(shm, sizeof(shm), "%s-shm", db);
	unlink(shm);
	copy_fd(e->db_fd, db);
	copy_fd(e->wal_fd, wal);
	c = open_db(db);
	assert_true(db_hash(c, NULL) == want);
	assert_check_ok(c, "PRAGMA integrity_check");
	sqlite3_close(c);
	unlink(db);
	unlink(wal);
	unlink(shm);
}

/* The -shm header as a reader checks it. */
typedef struct shm_view {
	bool valid;
	uint32_t change, mx_frame, n_page, salt1, salt2, backfill;
	uint16_t sz_page;
} shm_view;

static shm_view read_shm(const char *path)
{
	uint8_t *b;
	size_t n;
	shm_view v = {0};
	uint32_t s0 = 0, s1 = 0, c0, c1;

	read_path_child(path, &b, &n);
	if (n >= 136 && memcmp(b, b + 48, 48) == 0 && b[12] == 1) {
		fs_wal_checksum(false, b, 40, &s0, &s1);
		memcpy(&c0, b + 40, 4);
		memcpy(&c1, b + 44, 4);
		memcpy(&v.change, b + 8, 4);
		memcpy(&v.sz_page, b + 14, 2);
		memcpy(&v.mx_frame, b + 16, 4);
		memcpy(&v.n_page, b + 20, 4);
		memcpy(&v.backfill, b + 96, 4);
		v.salt1 = get_be32(b + 32);
		v.salt2 = get_be32(b + 36);
		v.valid = s0 == c0 && s1 == c1;
	}
	free(b);
	return v;
}

static void workload_schema(env *e)
{
	exec(e->s, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, b BLOB);"
		   "CREATE INDEX t_v ON t(v);"
		   "CREATE TABLE kv(k TEXT UNIQUE, x);");
}

/* One random transaction on SOURCE. */
static void workload_step(env *e, int i)
{
	char sql[256];
	uint64_t r = rnd(e) % 100;

	if (i % 40 == 39) {
		exec(e->s, "VACUUM");
	} else if (i == 120) {
		exec(e->s, "DELETE FROM t WHERE id % 5 != 0");
	} else if (i == 60) {
		exec(e->s, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT "
			   "x+1 FROM c WHERE x<300) INSERT INTO t(v, b) "
			   "SELECT random() % 1000, randomblob(1500) FROM c");
	} else if (r < 40) {
		snprintf(sql, sizeof(sql),
			 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT "
			 "x+1 FROM c WHERE x<%d) INSERT INTO t(v, b) SELECT "
			 "random() %% 1000, randomblob(abs(random()) %% %d) "
			 "FROM c",
			 (int)(rnd(e) % 30) + 1, (int)(rnd(e) % 3000) + 1);
		exec(e->s, sql);
	} else if (r < 65) {
		snprintf(sql, sizeof(sql),
			 "UPDATE t SET v = v + 1, b = randomblob(%d) WHERE "
			 "id %% 7 = %d",
			 (int)(rnd(e) % 2000), (int)(rnd(e) % 7));
		exec(e->s, sql);
	} else if (r < 85) {
		snprintf(sql, sizeof(sql),
			 "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY "
			 "random() LIMIT %d)",
			 (int)(rnd(e) % 20));
		exec(e->s, sql);
	} else {
		snprintf(sql, sizeof(sql),
			 "INSERT OR REPLACE INTO kv VALUES('k%d', "
			 "randomblob(%d))",
			 (int)(rnd(e) % 50), (int)(rnd(e) % 600));
		exec(e->s, sql);
	}
}

static int apply_mode(int i)
{
	static const int modes[] = {APPLY_ORDER, APPLY_SHUFFLE,
				    APPLY_SHUFFLE | APPLY_STALE_FIRST,
				    APPLY_DUP_ADJACENT};
	return modes[i % 4];
}

/* ---- 1. sequential ----------------------------------------------------- */

static void test_sequential(void **state)
{
	env e;
	fs_walidx_stats st;
	uint32_t max_pages = 0, min_pages_after_max = UINT32_MAX;

	(void)state;
	env_setup(&e, 4096, true, 1);
	workload_schema(&e);
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	for (int i = 0; i < 200; i++) {
		uint32_t pages;
		workload_step(&e, i);
		apply(&e, apply_mode(i));
		pages = (uint32_t)(e.prev_len / e.ps);
		if (pages > max_pages) {
			max_pages = pages;
			min_pages_after_max = UINT32_MAX;
		} else if (pages < min_pages_after_max) {
			min_pages_after_max = pages;
		}
		if (target_hash(&e) != source_hash(&e))
			fail_msg("transaction %d: TARGET differs from SOURCE",
				 i);
		if (i % 5 == 4) {
			bool done;
			assert_int_equal(fs_walidx_checkpoint(e.w, false, &done),
					 0);
			assert_true(done); /* no reader is left open */
		}
		if (i % 50 == 27)
			assert_wal_recovers(&e, source_hash(&e));
	}
	/* The workload both grew and shrank the file. */
	assert_true(min_pages_after_max < max_pages);
	checkpoint_full(&e);
	assert_files_equal(&e);
	{
		sqlite3 *c = open_db(e.tgt);
		assert_check_ok(c, "PRAGMA integrity_check");
		sqlite3_close(c);
	}
	fs_walidx_get_stats(e.w, &st);
	assert_true(st.commits > 150); /* a few steps change nothing */
	assert_true(st.restarts >= 30);
	assert_true(st.checkpoints_done >= 40);
	assert_true(e.inval_calls[0] > 0 && e.inval_calls[1] > 0);
	env_teardown(&e);
}

/* ---- 2. concurrent readers ------------------------------------------------ */

#define NACC 64
#define NXFER 1200
/* The writer pauses every PAUSE_EVERY transfers (bursts, as replication
 * brings them) until a checkpoint completes and no reader holds READ1..4;
 * the next transaction must then restart the WAL. Reader 0 begins its
 * long read transactions during bursts, on frames not yet backfilled
 * (READ1..4, not READ0), so that checkpoints during bursts stop at its
 * mark: partial checkpoints while readers read both files. */
#define PAUSE_EVERY 100
#define PAUSE_MS 5000
#define RUN_MS 60000
#define NREADERS 3
#define LONG_HOLD_MS 150

typedef struct shared {
	volatile int stop;
	volatile int burst; /* the writer is between two pauses */
	volatile int applied; /* transfers published so far */
	volatile long iters[NREADERS];
	volatile long holds; /* long read transactions completed */
	volatile long max_span; /* most commits published during one */
	volatile long max_n[NREADERS];
	volatile char msg[NREADERS][160];
} shared;

static int64_t expect_wsum[NXFER + 1];

typedef struct xfer {
	int from, to, amount;
} xfer;

static xfer xfers[NXFER + 1];

static void plan_transfers(env *e)
{
	int64_t bal[NACC + 1];
	int64_t w = 0;

	for (int a = 1; a <= NACC; a++) {
		bal[a] = 1000;
		w += bal[a] * a;
	}
	expect_wsum[0] = w;
	for (int n = 1; n <= NXFER; n++) {
		xfer *x = &xfers[n];
		x->from = (int)(rnd(e) % NACC) + 1;
		x->to = (x->from + (int)(rnd(e) % (NACC - 1))) % NACC + 1;
		x->amount = (int)(rnd(e) % 50) + 1;
		w -= (int64_t)x->amount * x->from;
		w += (int64_t)x->amount * x->to;
		expect_wsum[n] = w;
	}
}

typedef struct snap {
	int64_t n, sum, wsum, hist;
} snap;

static int snap_read(sqlite3 *db, sqlite3_stmt *q, snap *out)
{
	int rc = sqlite3_step(q);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(q);
		return rc;
	}
	out->n = sqlite3_column_int64(q, 0);
	out->sum = sqlite3_column_int64(q, 1);
	out->wsum = sqlite3_column_int64(q, 2);
	out->hist = sqlite3_column_int64(q, 3);
	sqlite3_reset(q);
	(void)db;
	return SQLITE_OK;
}

#define CHILD_FAIL(code, ...)                                                \
	do {                                                                 \
		snprintf((char *)sh->msg[c], sizeof(sh->msg[c]), __VA_ARGS__); \
		return (code);                                               \
	} while (0)

/* Reader c: 0 holds long read transactions; 2 reconnects each time. */
static int reader_main(const char *path, int c, shared *sh)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	int64_t last_n = -1, deadline = now_ms() + RUN_MS + 30000;
	long it = 0;
	int rc;

	while (!sh->stop && now_ms() < deadline) {
		snap a = {0}, b = {0};
		if (!db) {
			if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE,
					    NULL) != SQLITE_OK)
				CHILD_FAIL(10, "open: %s", sqlite3_errmsg(db));
			sqlite3_busy_timeout(db, 5000);
			if (sqlite3_prepare_v2(
				    db,
				    "SELECT (SELECT n FROM meta), sum(balance), "
				    "sum(balance * id), (SELECT count(*) FROM "
				    "history) FROM accounts",
				    -1, &q, NULL) != SQLITE_OK)
				CHILD_FAIL(11, "prepare: %s",
					   sqlite3_errmsg(db));
		}
		if (c == 0 && it % 4 == 0) {
			int64_t w0 = now_ms();
			while (!sh->burst && !sh->stop && now_ms() - w0 < 2000)
				usleep(200);
		}
		if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
			CHILD_FAIL(12, "BEGIN: %s", sqlite3_errmsg(db));
		rc = snap_read(db, q, &a);
		if (rc != SQLITE_OK)
			CHILD_FAIL(13, "query: %s", sqlite3_errstr(rc));
		if (a.n < 0 || a.n > NXFER || a.sum != NACC * 1000 ||
		    a.wsum != expect_wsum[a.n] || a.hist != a.n)
			CHILD_FAIL(20, "bad state: n %" PRId64 " sum %" PRId64
				   " wsum %" PRId64 " (want %" PRId64
				   ") history %" PRId64,
				   a.n, a.sum, a.wsum,
				   expect_wsum[a.n < 0 || a.n > NXFER ? 0 : a.n],
				   a.hist);
		if (a.n < last_n)
			CHILD_FAIL(21, "went back from %" PRId64 " to %" PRId64,
				   last_n, a.n);
		last_n = a.n;
		if (c == 0 && it % 4 == 0) {
			int64_t t0 = now_ms();
			int applied0 = sh->applied;
			while (now_ms() - t0 < LONG_HOLD_MS && !sh->stop) {
				usleep(20000);
				rc = snap_read(db, q, &b);
				if (rc != SQLITE_OK)
					CHILD_FAIL(14, "query: %s",
						   sqlite3_errstr(rc));
				if (memcmp(&a, &b, sizeof(a)) != 0)
					CHILD_FAIL(22,
						   "snapshot moved from n %" PRId64
						   " to %" PRId64,
						   a.n, b.n);
			}
			if (sh->applied - applied0 > sh->max_span)
				sh->max_span = sh->applied - applied0;
			sh->holds++;
		}
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			CHILD_FAIL(15, "COMMIT: %s", sqlite3_errmsg(db));
		if (it % 25 == 0) {
			sqlite3_stmt *qc;
			const unsigned char *r;
			if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1,
					       &qc, NULL) != SQLITE_OK)
				CHILD_FAIL(16, "quick_check: %s",
					   sqlite3_errmsg(db));
			rc = sqlite3_step(qc);
			r = rc == SQLITE_ROW ? sqlite3_column_text(qc, 0) : NULL;
			if (!r || strcmp((const char *)r, "ok") != 0) {
				snprintf((char *)sh->msg[c], sizeof(sh->msg[c]),
					 "quick_check: %s",
					 r ? (const char *)r : sqlite3_errstr(rc));
				sqlite3_finalize(qc);
				return 23;
			}
			sqlite3_finalize(qc);
		}
		if (c == 2) {
			sqlite3_finalize(q);
			sqlite3_close(db);
			db = NULL;
			q = NULL;
		}
		sh->iters[c] = ++it;
		sh->max_n[c] = (long)last_n;
		if (c == 1)
			usleep(500);
	}
	sqlite3_finalize(q);
	sqlite3_close(db);
	return 0;
}

/* Whether anyone holds one of READ1..4 (F_OFD_GETLK sees both OFD and
 * classic locks of other owners). */
static bool read_locks_held(int shm_fd)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 124;
	fl.l_len = 4;
	assert_int_equal(fcntl(shm_fd, F_OFD_GETLK, &fl), 0);
	return fl.l_type != F_UNLCK;
}

static void source_transfer(env *e, int n)
{
	char sql[512];
	xfer *x = &xfers[n];

	snprintf(sql, sizeof(sql),
		 "BEGIN;"
		 "UPDATE accounts SET balance = balance - %d WHERE id = %d;"
		 "UPDATE accounts SET balance = balance + %d WHERE id = %d;"
		 "UPDATE meta SET n = n + 1;"
		 "INSERT INTO history VALUES(%d, %d, %d, %d, randomblob(90));"
		 "COMMIT",
		 x->amount, x->from, x->amount, x->to, n, x->from, x->to,
		 x->amount);
	exec(e->s, sql);
}

static void test_concurrent_readers(void **state)
{
	env e;
	shared *sh;
	pid_t pids[NREADERS];
	int pipefd[2];
	fs_walidx_stats st;
	long done_count = 0;
	int64_t t0;
	int shm_fd, pauses = 0, pause_restarts = 0;

	(void)state;
	env_setup(&e, 4096, true, 2);
	plan_transfers(&e);
	exec(e.s, "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance "
		  "INTEGER, pad BLOB);"
		  "CREATE TABLE meta(k INTEGER PRIMARY KEY, n INTEGER);"
		  "CREATE TABLE history(n INTEGER PRIMARY KEY, a, b, amt, pad);"
		  "INSERT INTO meta VALUES(1, 0);"
		  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
		  "WHERE x<64) INSERT INTO accounts SELECT x, 1000, "
		  "randomblob(300) FROM c");
	target_create(&e);
	/* No SQLite connection may be open across fork. */
	sqlite3_close(e.s);
	e.s = NULL;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	memset((void *)sh, 0, sizeof(*sh));
	assert_int_equal(pipe(pipefd), 0);
	for (int c = 0; c < NREADERS; c++) {
		pids[c] = fork();
		assert_true(pids[c] >= 0);
		if (pids[c] == 0) {
			char go;
			close(pipefd[1]);
			/* walidx initialises -shm before readers start */
			if (read(pipefd[0], &go, 1) != 0)
				_exit(30);
			if (getenv("WDEBUG")) fprintf(stderr, "reader %d pid %d\n", c, getpid());
			_exit(reader_main(e.tgt, c, sh));
		}
	}
	close(pipefd[0]);
	assert_int_equal(sqlite3_open(e.src, &e.s), SQLITE_OK);
	exec(e.s, "PRAGMA synchronous=OFF; PRAGMA wal_autocheckpoint=0");
	assert_int_equal(walidx_start(&e), 0);
	close(pipefd[1]); /* go */

	shm_fd = open(e.tgt_shm, O_RDWR); /* no SQLite of ours has it open */
	assert_true(shm_fd >= 0);
	sh->burst = 1;
	t0 = now_ms();
	for (int n = 1; n <= NXFER; n++) {
		bool done;
		source_transfer(&e, n);
		apply(&e, n % 3 == 0 ? APPLY_SHUFFLE : APPLY_ORDER);
		sh->applied = n;
		assert_int_equal(fs_walidx_checkpoint(e.w, false, &done), 0);
		done_count += done;
		/* Let the readers start before the first transfers fly by. */
		if (n == 1)
			for (int k = 0; k < 200 && (!sh->iters[0] ||
						    !sh->iters[1]);
			     k++)
				usleep(5000);
		if (n % PAUSE_EVERY == 0) {
			fs_walidx_stats before;
			int64_t p0 = now_ms();
			bool quiet = false;
			sh->burst = 0;
			while (!quiet && now_ms() - p0 < PAUSE_MS) {
				assert_int_equal(fs_walidx_checkpoint(
							 e.w, false, &done),
						 0);
				done_count += done;
				quiet = done && !read_locks_held(shm_fd);
				if (!quiet)
					usleep(2000);
			}
			if (!quiet)
				fail_msg("after %d transfers: no complete "
					 "checkpoint with READ1..4 free in "
					 "%d ms",
					 n, PAUSE_MS);
			/* From now on readers take READ0 only (but for one
			 * that read nBackfill before the checkpoint ended
			 * and is only now taking its READ lock: rare). */
			fs_walidx_get_stats(e.w, &before);
			if (n < NXFER) {
				source_transfer(&e, ++n);
				apply(&e, APPLY_ORDER);
				sh->applied = n;
				fs_walidx_get_stats(e.w, &st);
				pause_restarts += st.restarts > before.restarts;
				sh->burst = 1;
			}
			pauses++;
		}
	}
	close(shm_fd);
	print_message("walidx: %d transfers applied in %" PRId64 " ms, "
		      "%d pauses, %d followed by a restart\n",
		      NXFER, now_ms() - t0, pauses, pause_restarts);
	sh->stop = 1;
	for (int c = 0; c < NREADERS; c++) {
		int status = 0;
		pid_t r = 0;
		for (int k = 0; k < 3000 && r == 0; k++) {
			r = waitpid(pids[c], &status, WNOHANG);
			if (r == 0)
				usleep(10000);
		}
		if (r == 0) {
			kill(pids[c], SIGKILL);
			waitpid(pids[c], &status, 0);
			fail_msg("reader %d did not stop", c);
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("reader %d failed (status %#x): %s", c, status,
				 (const char *)sh->msg[c]);
		print_message("walidx: reader %d: %ld read transactions, "
			      "last n %ld\n",
			      c, sh->iters[c], sh->max_n[c]);
		assert_true(sh->iters[c] > 0);
	}
	print_message("walidx: %ld long read transactions, up to %ld commits "
		      "during one; %ld complete checkpoints\n",
		      sh->holds, sh->max_span, done_count);
	assert_true(sh->holds >= 3);
	assert_true(sh->max_span >= 5); /* commits went on meanwhile */
	fs_walidx_get_stats(e.w, &st);
	print_message("walidx: %" PRIu64 " restarts, %" PRIu64
		      " checkpoints (%" PRIu64 " complete)\n",
		      st.restarts, st.checkpoints, st.checkpoints_done);
	assert_int_equal(pauses, NXFER / PAUSE_EVERY);
	assert_true(pause_restarts >= pauses - 2); /* pauses - 1 followed */
	assert_true(st.checkpoints_done >= (uint64_t)pauses);
	/* ... and partial ones, stopped by reader 0's marks. */
	assert_true(st.checkpoints > st.checkpoints_done);
	assert_true(done_count >= pauses);
	checkpoint_full(&e);
	assert_files_equal(&e);
	assert_true(target_hash(&e) == source_hash(&e));
	munmap(sh, sizeof(*sh));
	env_teardown(&e);
}

/* ---- 3. large transactions, 64 KiB pages ---------------------------------- */

static void test_large_transaction(void **state)
{
	env e;
	sqlite3 *old;
	uint32_t n;
	int64_t rows;

	(void)state;
	env_setup(&e, 1024, true, 3);
	exec(e.s, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)");
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	/* A connection opened before, kept across the transactions. */
	old = open_db(e.tgt);
	assert_true(db_hash(old, NULL) == target_hash(&e));

	exec(e.s, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM "
		  "c WHERE x<6000) INSERT INTO big SELECT x, randomblob(800) "
		  "FROM c");
	n = apply(&e, APPLY_SHUFFLE);
	assert_true(n > 6000); /* frames in hash regions 0 and 1 */
	assert_true(fs_walidx_pending(e.w) > 4062);
	assert_true(db_hash(old, &rows) == source_hash(&e));
	assert_int_equal(rows, 6000);
	assert_true(target_hash(&e) == source_hash(&e));

	exec(e.s, "WITH RECURSIVE c(x) AS (SELECT 6001 UNION ALL SELECT x+1 "
		  "FROM c WHERE x<8500) INSERT INTO big SELECT x, "
		  "randomblob(800) FROM c; UPDATE big SET b = randomblob(700) "
		  "WHERE id % 100 = 0");
	apply(&e, APPLY_STALE_FIRST);
	assert_true(fs_walidx_pending(e.w) > 4062 + 4096); /* and 2 */
	assert_true(db_hash(old, &rows) == source_hash(&e));
	assert_int_equal(rows, 8500);
	assert_wal_recovers(&e, source_hash(&e));
	checkpoint_full(&e);
	assert_files_equal(&e);
	assert_check_ok(old, "PRAGMA integrity_check");
	sqlite3_close(old);
	env_teardown(&e);

	/* 64 KiB pages: szPage 1 in the index header. */
	env_setup(&e, 65536, true, 4);
	workload_schema(&e);
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	assert_int_equal(read_shm(e.tgt_shm).sz_page, 1);
	for (int i = 0; i < 30; i++) {
		workload_step(&e, i);
		apply(&e, apply_mode(i));
		assert_true(target_hash(&e) == source_hash(&e));
		if (i == 15)
			checkpoint_full(&e);
	}
	assert_wal_recovers(&e, source_hash(&e));
	checkpoint_full(&e);
	assert_files_equal(&e);
	env_teardown(&e);
}

/* ---- 4. abort, busy, faults, readers holding back --------------------------- */

static int fail_calls;
static ssize_t failing_pwrite(int fd, const void *b, size_t n, off_t off)
{
	if (fail_calls-- == 0) {
		errno = EIO;
		return -1;
	}
	return pwrite(fd, b, n, off);
}

static int failing_fdatasync(int fd)
{
	(void)fd;
	errno = EIO;
	return -1;
}

static void test_abort_busy_faults(void **state)
{
	env e;
	uint64_t h0;
	uint8_t junk[4096];
	int fd2;
	struct flock fl = {0};
	int64_t t0, dt;
	fs_walidx_stats st0, st1;
	bool done;
	sqlite3 *r;

	(void)state;
	env_setup(&e, 4096, true, 5);
	workload_schema(&e);
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	for (int i = 0; i < 5; i++) {
		workload_step(&e, i);
		apply(&e, APPLY_ORDER);
	}
	h0 = target_hash(&e);
	assert_true(h0 == source_hash(&e));

	/* Abort: garbage pages never become visible. */
	memset(junk, 0x5a, sizeof(junk));
	assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
	for (uint32_t p = 1; p <= 5; p++)
		assert_int_equal(fs_walidx_page(e.w, p, junk), 0);
	r = open_db(e.tgt); /* a reader during the transaction */
	exec(r, "PRAGMA cache_size=2"); /* it reads the files, not a cache */
	assert_true(db_hash(r, NULL) == h0);
	fs_walidx_abort(e.w);
	assert_true(db_hash(r, NULL) == h0);
	assert_true(target_hash(&e) == h0);
	/* The next transaction overwrites the abandoned frames. */
	workload_step(&e, 5);
	apply(&e, APPLY_SHUFFLE);
	assert_true(db_hash(r, NULL) == source_hash(&e));
	assert_wal_recovers(&e, source_hash(&e));

	/* WRITE held through another open file description: -EBUSY in
	 * about the timeout. */
	fd2 = open(e.tgt_shm, O_RDWR);
	assert_true(fd2 >= 0);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 120;
	fl.l_len = 1;
	assert_int_equal(fcntl(fd2, F_OFD_SETLK, &fl), 0);
	t0 = now_ms();
	assert_int_equal(fs_walidx_begin(e.w, 200), -EBUSY);
	dt = now_ms() - t0;
	assert_true(dt >= 190 && dt < 2000);
	fl.l_type = F_UNLCK;
	assert_int_equal(fcntl(fd2, F_OFD_SETLK, &fl), 0);
	assert_int_equal(fs_walidx_begin(e.w, 200), 0);
	fs_walidx_abort(e.w);
	/* ... and by a SQLite write transaction (classic POSIX lock, same
	 * process). */
	exec(r, "BEGIN IMMEDIATE");
	assert_int_equal(fs_walidx_begin(e.w, 50), -EBUSY);
	exec(r, "ROLLBACK");
	/* CKPT held elsewhere: the checkpoint gives up at once. */
	workload_step(&e, 6);
	apply(&e, APPLY_ORDER);
	fl.l_type = F_WRLCK;
	fl.l_start = 121;
	assert_int_equal(fcntl(fd2, F_OFD_SETLK, &fl), 0);
	assert_int_equal(fs_walidx_checkpoint(e.w, false, &done), 0);
	assert_false(done);
	assert_true(fs_walidx_pending(e.w) > 0);
	fl.l_type = F_UNLCK;
	assert_int_equal(fcntl(fd2, F_OFD_SETLK, &fl), 0);
	checkpoint_full(&e);
	h0 = source_hash(&e);

	/* A failed pwrite: the transaction is lost, not half-published. */
	fail_calls = 3;
	lib_io.pwrite = failing_pwrite;
	assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
	{
		int rc = 0;
		for (uint32_t p = 1; p <= 8 && rc == 0; p++)
			rc = fs_walidx_page(e.w, p, junk);
		assert_int_equal(rc, -EIO);
		assert_int_equal(fs_walidx_page(e.w, 9, junk), -EIO);
		assert_int_equal(fs_walidx_commit(e.w, 9, false), -EIO);
	}
	lib_io_reset();
	assert_true(target_hash(&e) == h0);
	/* A failed fdatasync after the commit frame was written. */
	lib_io.fdatasync = failing_fdatasync;
	assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
	for (uint32_t p = 2; p <= 4; p++)
		assert_int_equal(fs_walidx_page(e.w, p, junk), 0);
	assert_int_equal(fs_walidx_commit(e.w, (uint32_t)(e.prev_len / e.ps),
					  true),
			 -EIO);
	lib_io_reset();
	assert_true(target_hash(&e) == h0);
	assert_true(db_hash(r, NULL) == h0);
	/* SQLite's recovery does not take the voided commit frame. */
	assert_wal_recovers(&e, h0);

	/* Zero pages, size change: page 1 is the commit frame. */
	{
		uint32_t n = (uint32_t)(e.prev_len / e.ps);
		assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
		assert_int_equal(fs_walidx_commit(e.w, n + 2, false), 0);
		assert_int_equal(fs_walidx_pending(e.w), 1);
		assert_true(target_hash(&e) == h0);
		assert_int_equal(read_shm(e.tgt_shm).n_page, n + 2);
		checkpoint_full(&e);
		{
			struct stat s;
			assert_int_equal(stat(e.tgt, &s), 0);
			assert_int_equal(s.st_size, (off_t)(n + 2) * e.ps);
		}
		assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
		assert_int_equal(fs_walidx_commit(e.w, n, false), 0);
		/* Zero pages, same size: nothing is published. */
		assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
		assert_int_equal(fs_walidx_commit(e.w, n, false), 0);
		assert_int_equal(fs_walidx_pending(e.w), 1);
		checkpoint_full(&e);
		assert_files_equal(&e);
	}

	/* A READ0 reader (it started on a fully backfilled WAL) holds back
	 * backfilling, but neither commits nor the restart before them (it
	 * reads the database alone), and its snapshot stays. */
	assert_true(db_hash(r, NULL) == h0);
	exec(r, "BEGIN; SELECT count(*) FROM t");
	fs_walidx_get_stats(e.w, &st0);
	workload_step(&e, 7);
	apply(&e, APPLY_ORDER);
	fs_walidx_get_stats(e.w, &st1);
	assert_int_equal(st1.restarts, st0.restarts + 1);
	assert_int_equal(fs_walidx_checkpoint(e.w, false, &done), 0);
	assert_false(done);
	assert_int_equal(fs_walidx_pending(e.w), read_shm(e.tgt_shm).mx_frame);
	{
		uint64_t h;
		assert_int_equal(hash_tables(r, &h, NULL), SQLITE_OK);
		assert_true(h == h0);
	}
	exec(r, "COMMIT");
	checkpoint_full(&e);
	/* A reader using the WAL (READ1..4) prevents the restart: the next
	 * transaction appends instead, and the reader's snapshot stays. */
	workload_step(&e, 8);
	apply(&e, APPLY_ORDER);
	fs_walidx_get_stats(e.w, &st0);
	h0 = source_hash(&e);
	exec(r, "BEGIN; SELECT count(*) FROM t"); /* pins frames (READ1) */
	checkpoint_full(&e); /* its mark is mxFrame: nothing to hold back */
	workload_step(&e, 9);
	apply(&e, APPLY_ORDER);
	fs_walidx_get_stats(e.w, &st1);
	assert_int_equal(st1.restarts, st0.restarts);
	{
		shm_view v = read_shm(e.tgt_shm);
		assert_int_equal(v.mx_frame - v.backfill,
				 fs_walidx_pending(e.w));
		assert_true(v.backfill > 0); /* appended, not restarted */
	}
	assert_int_equal(fs_walidx_checkpoint(e.w, false, &done), 0);
	assert_false(done); /* the reader's mark holds the new frames back */
	{
		uint64_t h;
		assert_int_equal(hash_tables(r, &h, NULL), SQLITE_OK);
		assert_true(h == h0); /* its frames were not overwritten */
	}
	exec(r, "COMMIT");
	assert_true(db_hash(r, NULL) == source_hash(&e));
	assert_true(h0 != source_hash(&e));
	checkpoint_full(&e);
	workload_step(&e, 10);
	apply(&e, APPLY_ORDER);
	fs_walidx_get_stats(e.w, &st1);
	assert_int_equal(st1.restarts, st0.restarts + 1);
	sqlite3_close(r);
	close(fd2); /* only now: see LOCKS AND close() */
	checkpoint_full(&e);
	assert_files_equal(&e);
	env_teardown(&e);
}

/* ---- 5. open: initialise or adopt ------------------------------------------- */

static void test_open(void **state)
{
	env e;
	shm_view v0, v1;
	sqlite3 *r;
	struct stat s;
	uint8_t junk[100000];

	(void)state;
	env_setup(&e, 4096, true, 6);
	workload_schema(&e);
	for (int i = 0; i < 5; i++)
		workload_step(&e, i);
	target_create(&e);

	/* No -shm, no reader: initialised. */
	assert_int_equal(walidx_start(&e), 0);
	assert_int_equal(stat(e.tgt_shm, &s), 0);
	assert_int_equal(s.st_size, 32768);
	v0 = read_shm(e.tgt_shm);
	assert_true(v0.valid);
	assert_int_equal(v0.mx_frame, 0);
	assert_int_equal(v0.n_page, e.prev_len / e.ps);
	assert_int_equal(v0.sz_page, 4096);
	assert_true(target_hash(&e) == source_hash(&e));
	fs_walidx_close(e.w);
	e.w = NULL;

	/* A stale -shm full of garbage and nobody holding it: reset. */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7 + 3);
	write_path(e.tgt_shm, junk, sizeof(junk));
	assert_int_equal(walidx_start(&e), 0);
	assert_int_equal(stat(e.tgt_shm, &s), 0);
	assert_int_equal(s.st_size, 32768);
	assert_true(read_shm(e.tgt_shm).valid);
	workload_step(&e, 5);
	apply(&e, APPLY_ORDER);
	assert_true(target_hash(&e) == source_hash(&e));
	checkpoint_full(&e);
	fs_walidx_close(e.w);
	e.w = NULL;

	/* A reader already there (it initialised -shm itself, from an
	 * empty WAL): adopted. */
	unlink(e.tgt_shm);
	assert_int_equal(ftruncate(e.wal_fd, 0), 0);
	r = open_db(e.tgt);
	assert_true(db_hash(r, NULL) == source_hash(&e));
	v0 = read_shm(e.tgt_shm);
	assert_true(v0.valid);
	assert_int_equal(walidx_start(&e), 0);
	v1 = read_shm(e.tgt_shm);
	assert_true(v1.valid);
	assert_int_equal(v1.salt1, v0.salt1);
	assert_int_equal(v1.salt2, v0.salt2);
	assert_int_equal(v1.mx_frame, 0);
	workload_step(&e, 6);
	apply(&e, APPLY_SHUFFLE);
	assert_true(db_hash(r, NULL) == source_hash(&e));
	assert_true(target_hash(&e) == source_hash(&e));
	checkpoint_full(&e);
	/* r first (see LOCKS AND close()); walidx's SHARED lock keeps r's
	 * close from checkpointing and deleting the WAL. */
	sqlite3_close(r);
	assert_int_equal(stat(e.tgt_wal, &s), 0);
	assert_true(s.st_size > 0);
	fs_walidx_close(e.w);
	e.w = NULL;

	/* The existing header counts frames (an application, the first to
	 * open, recovered the index from our WAL, wrote, and checkpointed):
	 * adopted and restarted, the WAL emptied. */
	r = open_db(e.tgt);
	exec(r, "INSERT INTO kv VALUES('local', 1)");
	exec(r, "PRAGMA wal_checkpoint(PASSIVE)");
	v0 = read_shm(e.tgt_shm);
	assert_true(v0.valid && v0.mx_frame > 0 && v0.backfill == v0.mx_frame);
	free(e.prev);
	read_fd(e.db_fd, &e.prev, &e.prev_len);
	assert_int_equal(walidx_start(&e), 0);
	v1 = read_shm(e.tgt_shm);
	assert_true(v1.valid);
	assert_int_equal(v1.mx_frame, 0);
	assert_int_equal(v1.backfill, 0);
	assert_int_equal(v1.salt1, v0.salt1 + 1);
	assert_int_equal(stat(e.tgt_wal, &s), 0);
	assert_int_equal(s.st_size, 0);
	{
		char buf[32];
		assert_string_equal(text1(r, "SELECT x FROM kv WHERE k='local'",
					  buf, sizeof(buf)),
				    "1");
	}
	sqlite3_close(r);
	env_teardown(&e);
}

/* ---- 6. a database whose header says rollback journal -------------------- */

/* SOURCE in DELETE mode: TARGET's header bytes 18/19 are 1 (legacy), yet
 * walidx publishes WAL frames. A reader that finds a -wal file opens the
 * database in WAL mode regardless of the header and sees them; a reader
 * that finds none reads only the database file (the old content). */
static void test_rollback_header(void **state)
{
	env e;
	sqlite3 *r;
	char buf[64];
	uint64_t old;

	(void)state;
	env_setup(&e, 4096, false, 7);
	workload_schema(&e);
	for (int i = 0; i < 5; i++)
		workload_step(&e, i);
	target_create(&e);
	assert_int_equal(e.prev[18], 1);
	assert_int_equal(e.prev[19], 1);
	assert_int_equal(walidx_start(&e), 0);
	old = target_hash(&e);
	for (int i = 5; i < 10; i++) {
		workload_step(&e, i);
		apply(&e, APPLY_SHUFFLE);
	}
	assert_true(old != source_hash(&e));
	r = open_db(e.tgt);
	assert_true(db_hash(r, NULL) == source_hash(&e));
	assert_string_equal(text1(r, "PRAGMA journal_mode", buf, sizeof(buf)),
			    "wal");
	sqlite3_close(r);
	/* Without the -wal file the frames are invisible. */
	{
		char db[320];
		snprintf(db, sizeof(db), "%s/nowal.db", e.dir);
		copy_fd(e.db_fd, db);
		r = open_db(db);
		assert_true(db_hash(r, NULL) == old);
		assert_string_equal(text1(r, "PRAGMA journal_mode", buf,
					  sizeof(buf)),
				    "delete");
		sqlite3_close(r);
		unlink(db);
	}
	checkpoint_full(&e);
	assert_files_equal(&e);
	env_teardown(&e);
}

/* ---- 7. an unreadable header while a reader is inside a snapshot ------- */

/* The reader child: a read transaction begun on TARGET (pages of kv read),
 * then 'r' to the parent; after the parent's 'c' (it damaged the header and
 * is reopening walidx), up to 1 s for the WAL to be emptied under it (a
 * correct walidx waits for this snapshot instead), then every table read
 * (pages not cached yet, some only in the WAL) and compared with want. */
static int damaged_reader(const char *path, const char *wal, uint64_t want,
			  int rfd, int wfd)
{
	sqlite3 *db = NULL;
	uint64_t h = 0;
	char c = 0;
	int64_t t0;
	int rc;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK)
		return 10;
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, "BEGIN; SELECT count(*) FROM kv", NULL, NULL,
			 NULL) != SQLITE_OK)
		return 11;
	if (write(wfd, "r", 1) != 1 || read(rfd, &c, 1) != 1 || c != 'c')
		return 12;
	t0 = now_ms();
	while (now_ms() - t0 < 1000) {
		struct stat st;
		if (stat(wal, &st) == 0 && st.st_size == 0)
			break;
		usleep(10000);
	}
	rc = hash_tables(db, &h, NULL);
	if (rc != SQLITE_OK)
		return 13;
	if (h != want)
		return 14;
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return 15;
	sqlite3_close(db);
	return 0;
}

static void test_open_damaged_header(void **state)
{
	env e;
	uint64_t h;
	int to_child[2], to_parent[2], status = 0, fd;
	uint8_t junk[96];
	pid_t pid;
	char c = 0;

	(void)state;
	env_setup(&e, 4096, true, 8);
	workload_schema(&e);
	for (int i = 0; i < 3; i++)
		workload_step(&e, i);
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	for (int i = 3; i < 8; i++) {
		workload_step(&e, i);
		apply(&e, APPLY_ORDER);
	}
	/* Frames not checkpointed: the reader's table pages are in the
	 * WAL only. */
	assert_true(fs_walidx_pending(e.w) > 10);
	h = source_hash(&e);
	/* No SQLite connection may be open across fork. */
	sqlite3_close(e.s);
	e.s = NULL;
	assert_int_equal(pipe(to_child), 0);
	assert_int_equal(pipe(to_parent), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(to_child[1]);
		close(to_parent[0]);
		_exit(damaged_reader(e.tgt, e.tgt_wal, h, to_child[0],
				     to_parent[1]));
	}
	close(to_child[0]);
	close(to_parent[1]);
	assert_int_equal(read(to_parent[0], &c, 1), 1);
	assert_int_equal(c, 'r');

	/* walidx goes away (its last checkpoint cannot pass the reader's
	 * mark but need not: the mark is mxFrame), the header is damaged,
	 * walidx comes back while the reader still reads its snapshot. */
	fs_walidx_close(e.w);
	e.w = NULL;
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 13 + 1);
	fd = open(e.tgt_shm, O_RDWR); /* no SQLite of ours has it open */
	assert_true(fd >= 0);
	assert_int_equal(lib_io_pwrite_full(fd, junk, sizeof(junk), 0), 0);
	close(fd);
	assert_false(read_shm(e.tgt_shm).valid);
	assert_int_equal(write(to_child[1], "c", 1), 1);
	assert_int_equal(walidx_start(&e), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("the reader's snapshot broke (status %#x)", status);
	close(to_child[1]);
	close(to_parent[0]);
	{
		shm_view v = read_shm(e.tgt_shm);
		struct stat st;
		assert_true(v.valid);
		assert_int_equal(v.mx_frame, 0);
		assert_int_equal(stat(e.tgt_wal, &st), 0);
		assert_int_equal(st.st_size, 0);
	}
	assert_true(target_hash(&e) == h);
	env_teardown(&e);
}

/* ---- 8. a commit frame written but not indexed -------------------------- */

static ssize_t pwrite_failing_on_shm(int fd, const void *b, size_t n,
				     off_t off)
{
	char link[64], path[512];
	ssize_t len;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, path, sizeof(path) - 1);
	if (len > 4 && memcmp(path + len - 4, "-shm", 4) == 0) {
		errno = EIO;
		return -1;
	}
	return pwrite(fd, b, n, off);
}

/* The commit frame is the first of hash region 1, whose -shm space cannot
 * be allocated: the commit fails, and SQLite's recovery must not find the
 * transaction in the WAL file either (R6). */
static void test_commit_index_fault(void **state)
{
	env e;
	uint8_t junk[1024];
	uint64_t h0;
	uint32_t n = 4063; /* frames 1..4062 fill region 0 */

	(void)state;
	env_setup(&e, 1024, true, 9);
	workload_schema(&e);
	workload_step(&e, 0);
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	h0 = target_hash(&e);
	assert_int_equal(read_shm(e.tgt_shm).mx_frame, 0);

	assert_int_equal(fs_walidx_begin(e.w, 1000), 0);
	for (uint32_t p = 1; p <= n; p++) {
		memset(junk, (int)(p & 0xff), sizeof(junk));
		assert_int_equal(fs_walidx_page(e.w, p, junk), 0);
	}
	lib_io.pwrite = pwrite_failing_on_shm;
	assert_int_equal(fs_walidx_commit(e.w, n, false), -EIO);
	lib_io_reset();
	assert_int_equal(read_shm(e.tgt_shm).mx_frame, 0);
	assert_true(target_hash(&e) == h0);
	assert_wal_recovers(&e, h0);

	/* walidx goes on. */
	workload_step(&e, 1);
	apply(&e, APPLY_SHUFFLE);
	assert_true(target_hash(&e) == source_hash(&e));
	assert_wal_recovers(&e, source_hash(&e));
	checkpoint_full(&e);
	assert_files_equal(&e);
	env_teardown(&e);
}

/* ---- 9. writes through shm_store -------------------------------------- */

static struct {
	bool in_store;
	long stores, words, marks, records, grows, direct;
} st9;

/* W2: whole aligned 8-byte words from aligned memory; a read mark alone
 * (4 bytes); the whole checkpoint record [96, 136) (a reset, under
 * READ1..4); or growing the file (from its end). */
static int env_store(void *ctx, uint64_t off, const void *buf, size_t n)
{
	env *e = ctx;
	struct stat sb;
	int rc = 0;

	st9.stores++;
	assert_int_equal(fstat(e->store_fd, &sb), 0);
	if ((uintptr_t)buf % 8 != 0)
		fail_msg("store from an unaligned buffer (%zu bytes at %" PRIu64
			 ")", n, off);
	if (off >= (uint64_t)sb.st_size) {
		st9.grows++;
	} else if (off >= FS_WALIDX_READER_OFF &&
	    off < FS_WALIDX_READER_OFF + FS_WALIDX_READER_LEN) {
		if (n != 4 || off % 4 != 0)
			fail_msg("a read mark written with %zu bytes at %" PRIu64,
				 n, off);
		st9.marks++;
	} else if (off == 96 && n == 40) {
		st9.records++;
	} else {
		if (off % 8 != 0 || n % 8 != 0 || n == 0)
			fail_msg("store of %zu bytes at %" PRIu64 ": not whole "
				 "words", n, off);
		if (off < FS_WALIDX_READER_OFF + FS_WALIDX_READER_LEN &&
		    off + n > FS_WALIDX_READER_OFF)
			fail_msg("store of %zu bytes at %" PRIu64 " covers read "
				 "marks", n, off);
		st9.words++;
	}
	st9.in_store = true;
	if (pwrite(e->store_fd, buf, n, (off_t)off) != (ssize_t)n)
		rc = -EIO;
	st9.in_store = false;
	return rc;
}

static ssize_t pwrite_counting_shm(int fd, const void *b, size_t n,
				   off_t off)
{
	char link[64], path[512];
	ssize_t len;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, path, sizeof(path) - 1);
	if (!st9.in_store && len > 4 && memcmp(path + len - 4, "-shm", 4) == 0)
		st9.direct++;
	return pwrite(fd, b, n, off);
}

/* With shm_store, walidx writes -shm through it alone, in whole aligned
 * words (readers' marks aside), and readers see every transaction. */
static void test_store_words(void **state)
{
	env e;
	sqlite3 *r, *hold;

	(void)state;
	memset(&st9, 0, sizeof(st9));
	env_setup(&e, 1024, true, 11);
	workload_schema(&e);
	target_create(&e);
	e.store_fd = open(e.tgt_shm, O_RDWR | O_CREAT, 0644);
	assert_true(e.store_fd >= 0);
	lib_io.pwrite = pwrite_counting_shm;
	assert_int_equal(walidx_start(&e), 0);
	r = open_db(e.tgt);
	hold = open_db(e.tgt);
	exec(r, "PRAGMA cache_size=2");
	for (int i = 0; i < 60; i++) {
		workload_step(&e, i);
		apply(&e, apply_mode(i));
		if (db_hash(r, NULL) != source_hash(&e))
			fail_msg("transaction %d: a reader differs from SOURCE",
				 i);
		if (i % 3 == 0) /* sets a read mark, holds frames back */
			exec(hold, "BEGIN; SELECT count(*) FROM kv");
		if (i % 3 == 1)
			exec(hold, "COMMIT");
		if (i % 10 == 9)
			checkpoint_full(&e);
	}
	sqlite3_close(hold);
	sqlite3_close(r);
	checkpoint_full(&e);
	assert_files_equal(&e);
	fs_walidx_close(e.w);
	e.w = NULL;
	lib_io_reset();
	assert_int_equal(st9.direct, 0);
	assert_true(st9.words > 100 && st9.marks > 0 && st9.records > 0 &&
		    st9.grows > 0);
	env_teardown(&e);
}

/* ---- 10. a partial checkpoint stops at a reader's mark ------------------ */

static void test_partial_checkpoint(void **state)
{
	env e;
	sqlite3 *r;
	uint64_t h1, h;
	uint32_t mx1;
	shm_view v;
	bool done;

	(void)state;
	env_setup(&e, 4096, true, 10);
	workload_schema(&e);
	for (int i = 0; i < 3; i++)
		workload_step(&e, i);
	target_create(&e);
	assert_int_equal(walidx_start(&e), 0);
	r = open_db(e.tgt);
	exec(r, "PRAGMA cache_size=2"); /* it reads the files, not a cache */
	workload_step(&e, 3);
	apply(&e, APPLY_ORDER);
	checkpoint_full(&e);
	/* Frames beyond nBackfill, then a reader pins them (its mark is
	 * mxFrame now), then more frames. */
	workload_step(&e, 4);
	apply(&e, APPLY_ORDER);
	h1 = source_hash(&e);
	v = read_shm(e.tgt_shm);
	mx1 = v.mx_frame;
	assert_true(v.backfill < mx1);
	exec(r, "BEGIN; SELECT count(*) FROM kv");
	for (int i = 5; i < 8; i++) {
		workload_step(&e, i);
		apply(&e, APPLY_SHUFFLE);
	}
	assert_true(read_shm(e.tgt_shm).mx_frame > mx1);
	/* Backfilled exactly up to the mark, not one frame further. */
	assert_int_equal(fs_walidx_checkpoint(e.w, true, &done), 0);
	assert_false(done);
	v = read_shm(e.tgt_shm);
	assert_int_equal(v.backfill, mx1);
	assert_int_equal(fs_walidx_pending(e.w), v.mx_frame - mx1);
	assert_int_equal(fs_walidx_checkpoint(e.w, false, &done), 0);
	assert_false(done);
	assert_int_equal(read_shm(e.tgt_shm).backfill, mx1);
	/* The reader's snapshot, read from the WAL and the database. */
	assert_int_equal(hash_tables(r, &h, NULL), SQLITE_OK);
	assert_true(h == h1);
	assert_true(target_hash(&e) == source_hash(&e));
	exec(r, "COMMIT");
	checkpoint_full(&e);
	assert_files_equal(&e);
	assert_true(db_hash(r, NULL) == source_hash(&e));
	sqlite3_close(r);
	env_teardown(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sequential),
		cmocka_unit_test(test_concurrent_readers),
		cmocka_unit_test(test_large_transaction),
		cmocka_unit_test(test_abort_busy_faults),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_rollback_header),
		cmocka_unit_test(test_open_damaged_header),
		cmocka_unit_test(test_commit_index_fault),
		cmocka_unit_test(test_partial_checkpoint),
		cmocka_unit_test(test_store_words),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("fs/walidx", tests, NULL, NULL);
}
