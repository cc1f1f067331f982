/* backup/store_file.c: put (atomic, replacing), get of a range, list
 * (sorted, direct children, no temporary files), delete, bad keys. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/store.h"

typedef struct env {
	char dir[64];
	bk_store *s;
	char err[512];
} env;

static int setup(void **state)
{
	env *e = calloc(1, sizeof(*e));
	bk_store_opts o = {.type = BK_STORE_FILE};

	snprintf(e->dir, sizeof(e->dir), "/tmp/ltxfs-bk-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	o.dir = e->dir;
	assert_int_equal(bk_store_open(&o, &e->s, e->err, sizeof(e->err)), 0);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	env *e = *state;
	char cmd[128];

	bk_store_free(e->s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

/* A temporary file holding text. */
static int mem_fd(const char *text)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	return fd;
}

static void get_text(env *e, const char *key, uint64_t off, uint64_t len,
		     const char *want)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	char buf[256] = "";
	uint64_t got = 0;

	assert_int_equal(bk_store_get(e->s, key, off, len, fd, &got, e->err,
				      sizeof(e->err)), 0);
	assert_int_equal(got, strlen(want));
	assert_int_equal(pread(fd, buf, sizeof(buf) - 1, 0), (ssize_t)got);
	assert_string_equal(buf, want);
	close(fd);
}

/* Listing prefix gives exactly p/a.db/l0/a.ltx and p/a.db/l0/b.ltx. */
static void expect_both(env *e, const char *prefix)
{
	bk_keys k = {0};

	assert_int_equal(bk_store_list(e->s, prefix, &k, e->err,
				       sizeof(e->err)), 0);
	assert_int_equal(k.n, 2);
	assert_string_equal(k.v[0], "p/a.db/l0/a.ltx");
	assert_string_equal(k.v[1], "p/a.db/l0/b.ltx");
	bk_keys_free(&k);
}

static void test_put_get_list(void **state)
{
	env *e = *state;
	bk_keys k = {0};
	char path[256];
	int fd = mem_fd("hello world");

	assert_int_equal(bk_store_put(e->s, "p/a.db/l0/b.ltx", fd, 11, e->err,
				      sizeof(e->err)), 0);
	assert_int_equal(bk_store_put(e->s, "p/a.db/l0/a.ltx", fd, 5, e->err,
				      sizeof(e->err)), 0);
	close(fd);
	get_text(e, "p/a.db/l0/b.ltx", 0, 0, "hello world");
	get_text(e, "p/a.db/l0/b.ltx", 6, 0, "world");
	get_text(e, "p/a.db/l0/b.ltx", 2, 3, "llo");
	get_text(e, "p/a.db/l0/a.ltx", 0, 100, "hello");
	/* A crash's leftover temporary file is not listed. */
	snprintf(path, sizeof(path), "%s/p/a.db/l0/c.ltx.tmp-1", e->dir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	expect_both(e, "p/a.db/l0/");
	/* Rule F2: at any depth below the prefix (as s3 lists). */
	expect_both(e, "p/");
	/* Replacing is atomic and whole. */
	fd = mem_fd("new");
	assert_int_equal(bk_store_put(e->s, "p/a.db/l0/b.ltx", fd, 3, e->err,
				      sizeof(e->err)), 0);
	close(fd);
	get_text(e, "p/a.db/l0/b.ltx", 0, 0, "new");
	assert_int_equal(bk_store_delete(e->s, "p/a.db/l0/b.ltx", e->err,
					 sizeof(e->err)), 0);
	assert_int_equal(bk_store_list(e->s, "p/a.db/l0/", &k, e->err,
				       sizeof(e->err)), 0);
	assert_int_equal(k.n, 1);
	bk_keys_free(&k);
	/* Nothing under a prefix yet: an empty list. */
	assert_int_equal(bk_store_list(e->s, "q/", &k, e->err,
				       sizeof(e->err)), 0);
	assert_int_equal(k.n, 0);
}

/* list after a key, at most max keys: the first ones in key order. */
static void test_list_after(void **state)
{
	env *e = *state;
	static const char *const names[] = {"d/a", "d/b", "d/c", "d/d"};
	bk_keys k = {0};
	int fd = mem_fd("x");

	for (size_t i = 0; i < 4; i++)
		assert_int_equal(bk_store_put(e->s, names[i], fd, 1, e->err,
					      sizeof(e->err)), 0);
	close(fd);
	assert_int_equal(bk_store_list_after(e->s, "d/", "d/a~", 1, &k, e->err,
					     sizeof(e->err)), 0);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.v[0], "d/b");
	bk_keys_free(&k);
	assert_int_equal(bk_store_list_after(e->s, "d/", "d/b", 0, &k, e->err,
					     sizeof(e->err)), 0);
	assert_int_equal(k.n, 2);
	assert_string_equal(k.v[0], "d/c");
	assert_string_equal(k.v[1], "d/d");
	bk_keys_free(&k);
	assert_int_equal(bk_store_list_after(e->s, "d/", "d/d", 5, &k, e->err,
					     sizeof(e->err)), 0);
	assert_int_equal(k.n, 0);
	bk_keys_free(&k);
}

static void test_errors(void **state)
{
	env *e = *state;
	uint64_t got;
	int fd = mem_fd("x");

	assert_int_equal(bk_store_get(e->s, "no/such.ltx", 0, 0, fd, &got,
				      e->err, sizeof(e->err)), -ENOENT);
	assert_non_null(strstr(e->err, "no/such.ltx"));
	assert_int_equal(bk_store_put(e->s, "../x", fd, 1, e->err,
				      sizeof(e->err)), -EINVAL);
	assert_int_equal(bk_store_put(e->s, "/x", fd, 1, e->err,
				      sizeof(e->err)), -EINVAL);
	close(fd);
	bk_store_opts o = {.type = BK_STORE_FILE, .dir = ""};
	bk_store *s = NULL;
	assert_int_equal(bk_store_open(&o, &s, e->err, sizeof(e->err)),
			 -EINVAL);
	assert_non_null(strstr(e->err, "backup.dir"));
	bk_store_opts s3 = {.type = BK_STORE_S3, .endpoint = "http://h",
			    .bucket = "b"};
	unsetenv("AWS_ACCESS_KEY_ID");
	assert_int_equal(bk_store_open(&s3, &s, e->err, sizeof(e->err)),
			 -EINVAL);
	assert_non_null(strstr(e->err, "AWS_ACCESS_KEY_ID"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_list, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_list_after, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
