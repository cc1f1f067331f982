/*
 * Tests for fs/repair.c, fs_repair_settle: a hot journal is played back,
 * except one that points to a super-journal that is gone (its transaction
 * across attached databases committed: the journal is only removed), as
 * SQLite decides it; one that points to a super-journal that exists is
 * played back.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
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
#include "fs/repair.h"
#include "fs/superjournal.h"
#include "lib/bytes.h"

#define PS 4096
#define MNT "/ltxfs-test-no-such-mount"
#define SJ "x.db-mj0000019AB"

typedef struct env {
	char dir[64];            /* the data directory */
	char db[PATH_MAX];       /* dbs/x.db */
	uint8_t orig[PS], now[PS];
} env;

static void path_in(env *e, const char *name, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", e->db, name);
}

static void read_page(env *e, uint32_t pgno, uint8_t *buf)
{
	char path[PATH_MAX + 16];
	int fd;

	path_in(e, "database", path, sizeof(path));
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, PS, (off_t)(pgno - 1) * PS), PS);
	close(fd);
}

/* A database of 2 pages whose page 2 is then changed in place (the
 * transaction's new content), and a hot journal holding page 2's original
 * content and a pointer to MNT/SJ. */
static int setup(void **state)
{
	env *e = calloc(1, sizeof(*e));
	char path[PATH_MAX + 16], dbs[128];
	uint8_t rec[8 + PS], hdr[512] = {0}, tail[128];
	uint32_t sum = 0, len = (uint32_t)strlen(MNT "/" SJ), cks = 0;
	sqlite3 *db = NULL;
	int fd;

	assert_non_null(e);
	snprintf(e->dir, sizeof(e->dir), "/tmp/ltxfs-test-repair-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(dbs, sizeof(dbs), "%s/dbs", e->dir);
	assert_int_equal(mkdir(dbs, 0755), 0);
	snprintf(e->db, sizeof(e->db), "%s/x.db", dbs);
	assert_int_equal(mkdir(e->db, 0755), 0);
	path_in(e, "database", path, sizeof(path));
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA page_size=4096; CREATE TABLE "
				      "t(x); INSERT INTO t VALUES('before')",
				      NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	read_page(e, 2, e->orig);
	memcpy(e->now, e->orig, PS);
	memcpy(e->now + PS - 16, "the transaction", 16);
	fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, e->now, PS, PS), PS);
	close(fd);

	memcpy(hdr, fs_journal_magic, 8);
	put_be32(hdr + 8, 1);           /* nRec */
	put_be32(hdr + 12, 0);          /* checksum initialiser */
	put_be32(hdr + 16, 2);          /* pages before */
	put_be32(hdr + 20, 512);        /* sector */
	put_be32(hdr + 24, PS);
	put_be32(rec, 2);
	memcpy(rec + 4, e->orig, PS);
	for (int i = PS - 200; i > 0; i -= 200)
		sum += e->orig[i];
	put_be32(tail, sum);            /* the record's checksum */
	put_be32(tail + 4, 0x40001);    /* the pointer: lock page number */
	memcpy(tail + 8, MNT "/" SJ, len);
	for (uint32_t i = 0; i < len; i++)
		cks += (uint32_t)(int)(MNT "/" SJ)[i];
	put_be32(tail + 8 + len, len);
	put_be32(tail + 12 + len, cks);
	memcpy(tail + 16 + len, fs_journal_magic, 8);
	path_in(e, "journal", path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	assert_int_equal(write(fd, rec, 4 + PS), 4 + PS);
	assert_int_equal(write(fd, tail, 24 + len), (ssize_t)(24 + len));
	close(fd);
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

static void settle(env *e, char *msg, size_t n)
{
	char path[PATH_MAX + 16];
	struct stat st;
	uint32_t pages = 0;

	assert_int_equal(fs_repair_settle(e->db, e->dir, MNT, "x.db", &pages,
					  msg, n), 0);
	assert_int_equal(pages, 2);
	path_in(e, "journal", path, sizeof(path));
	assert_int_equal(stat(path, &st), -1);
}

static void test_super_gone(void **state)
{
	env *e = *state;
	uint8_t page[PS];
	char msg[512];

	settle(e, msg, sizeof(msg));
	assert_non_null(strstr(msg, "committed (its super-journal is gone)"));
	read_page(e, 2, page);
	assert_memory_equal(page, e->now, PS);
}

static void test_super_there(void **state)
{
	env *e = *state;
	uint8_t page[PS];
	char msg[512];
	int fd = -1;

	assert_int_equal(fs_sj_open(e->dir, SJ, O_CREAT | O_RDWR, 0644, &fd),
			 0);
	assert_int_equal(write(fd, MNT "/x.db-journal", sizeof(MNT "/x.db-journal")),
			 (ssize_t)sizeof(MNT "/x.db-journal"));
	close(fd);
	settle(e, msg, sizeof(msg));
	assert_non_null(strstr(msg, "played back a hot journal (1 pages)"));
	read_page(e, 2, page);
	assert_memory_equal(page, e->orig, PS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_super_gone, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_super_there, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
