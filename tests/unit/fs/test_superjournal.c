/*
 * Tests for fs/superjournal.c and the super-journal pointer of
 * fs/journal.c: names (SQLite's and the older form, and what is not one);
 * the pointer at a journal's end read by SQLite's rules (a bad checksum,
 * a missing magic, a length out of range mean no pointer; the checksum
 * sums C chars); what SQLite makes of a hot journal (the super-journal in
 * the store, empty, absent, outside the mount, under another path of the
 * mount); the start-up sweep (kept while a journal points to it or a
 * child cannot be told, removed otherwise).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fs/journal.h"
#include "fs/superjournal.h"
#include "lib/bytes.h"

#define MNT "/ltxfs-test-no-such-mount"

typedef struct env {
	char dir[64];           /* the data directory */
	char out[PATH_MAX];     /* a directory outside the mount */
} env;

static int setup(void **state)
{
	env *e = calloc(1, sizeof(*e));
	char path[PATH_MAX];

	assert_non_null(e);
	snprintf(e->dir, sizeof(e->dir), "/tmp/ltxfs-test-sj-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(path, sizeof(path), "%s/dbs", e->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(e->out, sizeof(e->out), "%s/outside", e->dir);
	assert_int_equal(mkdir(e->out, 0755), 0);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	env *e = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

static void write_file(const char *path, const void *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, n), (ssize_t)n);
	close(fd);
}

/* A journal: a header with the magic, 1000 bytes of records, then (when
 * sj is not NULL) the pointer to sj with checksum sum + delta. */
static void write_journal(const char *path, const char *sj, uint32_t delta)
{
	uint8_t buf[4096] = {0};
	size_t n = 512 + 1000, len;
	uint32_t sum = 0;

	memcpy(buf, fs_journal_magic, 8);
	memset(buf + 512, 0x5a, 1000);
	if (sj) {
		len = strlen(sj);
		put_be32(buf + n, 0x40001); /* the lock page: not checked */
		memcpy(buf + n + 4, sj, len);
		for (size_t i = 0; i < len; i++)
			sum += (uint32_t)(int)sj[i];
		put_be32(buf + n + 4 + len, (uint32_t)len);
		put_be32(buf + n + 8 + len, sum + delta);
		memcpy(buf + n + 12 + len, fs_journal_magic, 8);
		n += 20 + len;
	}
	write_file(path, buf, n);
}

static void read_super(const char *path, char *out)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fs_journal_read_super(fd, out, FS_JOURNAL_SUPER_MAX),
			 0);
	close(fd);
}

static void test_names(void **state)
{
	static const char *const bad[] = {
		"a.db", "-mj0A1B2C93D", "a.db-mj0a1b2c93d", "a.db-mj0A1B2C03D",
		"a.db-mj0A1B2C9", "a.db-mjG0000000", "a/b-mj0A1B2C3D",
		"a.db-mj0A1B2C93D-journal", "a.db-mj0A1B2C93DE"};
	char main[64], name[80];
	uint64_t k1, k2, k3;

	(void)state;
	assert_true(fs_sj_parse_name("a.db-mj0A1B2C93D", main, sizeof(main),
				     &k1));
	assert_string_equal(main, "a.db");
	fs_sj_format_name("a.db", k1, name, sizeof(name));
	assert_string_equal(name, "a.db-mj0A1B2C93D");
	assert_true(fs_sj_parse_name("x-mj0A1B2C3D", main, sizeof(main), &k2));
	assert_string_equal(main, "x");
	fs_sj_format_name("x", k2, name, sizeof(name));
	assert_string_equal(name, "x-mj0A1B2C3D");
	assert_true(fs_sj_parse_name("x-mjFFFFFF9FF", NULL, 0, &k3));
	assert_true(k1 != k2 && k3 < (1ULL << 33));
	assert_false(fs_sj_parse_name("a.db-mj0A1B2C93D", main, 4, NULL));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(fs_sj_parse_name(bad[i], NULL, 0, NULL));
	assert_string_equal(fs_sj_basename("/a/b/c-mj0A1B2C3D"),
			    "c-mj0A1B2C3D");
	assert_string_equal(fs_sj_basename("c"), "c");
}

static void test_pointer(void **state)
{
	env *e = *state;
	char j[PATH_MAX], got[FS_JOURNAL_SUPER_MAX], big[600];
	const char *sj = "/m/\xc3\xa9t\xc3\xa9.db-mj0A1B2C93D"; /* UTF-8 */

	snprintf(j, sizeof(j), "%s/j", e->dir);
	write_journal(j, sj, 0);
	read_super(j, got);
	assert_string_equal(got, sj);
	write_journal(j, sj, 1); /* checksum off by one: no pointer */
	read_super(j, got);
	assert_string_equal(got, "");
	write_journal(j, NULL, 0);
	read_super(j, got);
	assert_string_equal(got, "");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	write_journal(j, big, 0); /* longer than SQLite's path limit */
	read_super(j, got);
	assert_string_equal(got, "");
	write_file(j, fs_journal_magic, 8); /* shorter than 16 bytes */
	read_super(j, got);
	assert_string_equal(got, "");
	/* A length past the file's start. */
	{
		uint8_t buf[24] = {0};
		put_be32(buf, 100);
		memcpy(buf + 8, fs_journal_magic, 8);
		write_file(j, buf, 16);
		read_super(j, got);
		assert_string_equal(got, "");
	}
}

static void store_put(env *e, const char *name, const char *content,
		      size_t n)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", e->dir, FS_SJ_DIR);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", e->dir, FS_SJ_DIR, name);
	write_file(path, content, n);
}

static enum fs_sj_fate fate_of(env *e, const char *sj)
{
	char j[PATH_MAX], got[FS_JOURNAL_SUPER_MAX];
	enum fs_sj_fate f;
	int fd;

	snprintf(j, sizeof(j), "%s/j", e->dir);
	write_journal(j, sj, 0);
	fd = open(j, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fs_sj_journal_fate(fd, e->dir, MNT, &f, got,
					    sizeof(got)), 0);
	close(fd);
	assert_string_equal(got, sj ? sj : "");
	return f;
}

static void test_fate(void **state)
{
	env *e = *state;
	char p[PATH_MAX + 32];

	store_put(e, "a.db-mj0000019AB", "x\0", 2);
	store_put(e, "a.db-mj0000029AB", "", 0);
	assert_int_equal(fate_of(e, NULL), FS_SJ_NONE);
	assert_int_equal(fate_of(e, MNT "/a.db-mj0000019AB"), FS_SJ_ROLL_BACK);
	/* Empty counts as absent (SQLite's access()). */
	assert_int_equal(fate_of(e, MNT "/a.db-mj0000029AB"), FS_SJ_COMMITTED);
	assert_int_equal(fate_of(e, MNT "/a.db-mj0000039AB"), FS_SJ_COMMITTED);
	/* The mount under another path (a container): the store decides. */
	assert_int_equal(fate_of(e, "/data/a.db-mj0000019AB"),
			 FS_SJ_ROLL_BACK);
	/* Outside the mount: the path itself. */
	snprintf(p, sizeof(p), "%s/m.db-mj0000049AB", e->out);
	assert_int_equal(fate_of(e, p), FS_SJ_COMMITTED);
	write_file(p, "y\0", 2);
	assert_int_equal(fate_of(e, p), FS_SJ_ROLL_BACK);
	snprintf(p, sizeof(p), "%s/m.db-mj0000049AB", MNT "/nodir");
	assert_int_equal(fate_of(e, p), FS_SJ_COMMITTED);
}

static bool stored(env *e, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s/%s", e->dir, FS_SJ_DIR, name);
	return stat(path, &st) == 0;
}

static void test_sweep(void **state)
{
	env *e = *state;
	char path[PATH_MAX + 32], content[PATH_MAX * 2];
	int n;

	/* S1: a.db's journal (a database here) points to it: kept. */
	snprintf(path, sizeof(path), "%s/dbs/a.db", e->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/dbs/a.db/journal", e->dir);
	write_journal(path, MNT "/a.db-mj0000019AB", 0);
	n = snprintf(content, sizeof(content), "%s%c%s%c",
		     MNT "/a.db-journal", 0, MNT "/b.db-journal", 0);
	store_put(e, "a.db-mj0000019AB", content, (size_t)n);
	/* S2: its children are gone: removed. */
	store_put(e, "a.db-mj0000029AB", content, (size_t)n);
	/* S3: a child outside, in a directory this process cannot see:
	 * kept. */
	n = snprintf(content, sizeof(content), "%s%c",
		     "/ltxfs-test-no-such-dir/q.db-journal", 0);
	store_put(e, "a.db-mj0000039AB", content, (size_t)n);
	/* S4: a child outside that points to it: kept. S5: one that does
	 * not exist, in a directory seen: removed. */
	snprintf(path, sizeof(path), "%s/q.db-journal", e->out);
	write_journal(path, "/elsewhere/a.db-mj0000049AB", 0);
	n = snprintf(content, sizeof(content), "%s%c", path, 0);
	store_put(e, "a.db-mj0000049AB", content, (size_t)n);
	n = snprintf(content, sizeof(content), "%s/r.db-journal%c", e->out, 0);
	store_put(e, "a.db-mj0000059AB", content, (size_t)n);
	/* S6: empty: removed. Not a super-journal's name: left alone. */
	store_put(e, "a.db-mj0000069AB", "", 0);
	store_put(e, "notes.txt", "z", 1);

	assert_int_equal(fs_sj_sweep(e->dir, MNT), 0);
	assert_true(stored(e, "a.db-mj0000019AB"));
	assert_false(stored(e, "a.db-mj0000029AB"));
	assert_true(stored(e, "a.db-mj0000039AB"));
	assert_true(stored(e, "a.db-mj0000049AB"));
	assert_false(stored(e, "a.db-mj0000059AB"));
	assert_false(stored(e, "a.db-mj0000069AB"));
	assert_true(stored(e, "notes.txt"));
	/* Once a.db's journal is finalised, S1 goes too. */
	snprintf(path, sizeof(path), "%s/dbs/a.db/journal", e->dir);
	assert_int_equal(truncate(path, 0), 0);
	assert_int_equal(fs_sj_sweep(e->dir, MNT), 0);
	assert_false(stored(e, "a.db-mj0000019AB"));
	/* No store at all is no error. */
	snprintf(path, sizeof(path), "rm -rf %s/%s", e->dir, FS_SJ_DIR);
	assert_int_equal(system(path), 0);
	assert_int_equal(fs_sj_sweep(e->dir, MNT), 0);
}

static int count_child(void *ctx, const char *path)
{
	int *n = ctx;

	assert_string_equal(path, *n == 0 ? "/m/a.db-journal"
					  : "/m/b.db-journal");
	(*n)++;
	return 0;
}

static void test_store(void **state)
{
	env *e = *state;
	struct stat st;
	int fd = -1, children = 0;

	assert_int_equal(fs_sj_open(e->dir, "bad", O_CREAT | O_RDWR, 0644, &fd),
			 -EINVAL);
	assert_int_equal(fs_sj_open(e->dir, "a.db-mj0000019AB",
				    O_CREAT | O_EXCL | O_RDWR, 0644, &fd),
			 0);
	assert_int_equal(write(fd, "/m/a.db-journal\0/m/b.db-journal\0", 32),
			 32);
	assert_int_equal(fs_sj_fsync(e->dir, fd, false), 0);
	close(fd);
	assert_int_equal(fs_sj_open(e->dir, "a.db-mj0000019AB",
				    O_CREAT | O_EXCL | O_RDWR, 0644, &fd),
			 -EEXIST);
	assert_int_equal(fs_sj_stat(e->dir, "a.db-mj0000019AB", &st), 0);
	assert_int_equal(st.st_size, 32);
	assert_int_equal(fs_sj_foreach_child(e->dir, "a.db-mj0000019AB",
					     count_child, &children),
			 0);
	assert_int_equal(children, 2);
	assert_int_equal(fs_sj_truncate(e->dir, "a.db-mj0000019AB", 0), 0);
	assert_int_equal(fs_sj_unlink(e->dir, "a.db-mj0000019AB"), 0);
	assert_int_equal(fs_sj_stat(e->dir, "a.db-mj0000019AB", &st), -ENOENT);
	assert_int_equal(fs_sj_unlink(e->dir, "a.db-mj0000019AB"), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_pointer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
