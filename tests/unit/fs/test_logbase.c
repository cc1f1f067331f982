/*
 * Tests for fs/logbase.c: applying records to page checksums gives what
 * applying them to a real database file gives (ltx_dbfile_apply, the
 * reference): updates, growth with pages that read as zeros, the lock
 * page, shrinking, deletion, a new page size; records that do not follow
 * or do not replay are refused naming their TXID; a base written and
 * loaded again is the same; a damaged base file is refused with its rule.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fs/logbase.h"
#include "lib/bytes.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "tests/unit/testutil.h"

#define PS 4096

/* A database file (the reference) and the table built beside it. */
typedef struct env {
	int ref;                /* the database, by ltx_dbfile_apply */
	uint64_t sum;           /* its checksum */
	uint64_t txid;
	fs_logbase *b;
	char dir[64];
} env;

static int setup(void **state)
{
	env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	e->ref = tu_memfd();
	e->sum = LTX_CHECKSUM_EMPTY;
	assert_int_equal(fs_logbase_new(tu_memfd(), &e->b), 0);
	snprintf(e->dir, sizeof(e->dir), "/tmp/ltxfs-test-logbase-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	env *e = *state;
	char cmd[128];

	close(e->ref);
	fs_logbase_free(e->b);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

/* The checksum of fd's database after pages pgnos (tu_fill_page seed)
 * written at page size ps and a cut or extension to commit pages; fd
 * starts as a copy of from, or empty when from < 0. */
static uint64_t expected_post(int from, uint32_t ps, uint32_t commit,
			      const uint32_t *pgnos, size_t n, uint32_t seed)
{
	int fd = tu_memfd();
	uint8_t *page = malloc(ps);
	tu_buf x = TU_BUF_INIT;
	uint64_t sum;
	uint32_t pages;
	ltx_err err;

	assert_non_null(page);
	if (from >= 0) {
		tu_read_fd(from, &x);
		if (x.len)
			assert_int_equal(pwrite(fd, x.data, x.len, 0),
					 (ssize_t)x.len);
		tu_buf_free(&x);
	}
	for (size_t i = 0; i < n; i++) {
		tu_fill_page(page, ps, pgnos[i], seed);
		assert_int_equal(pwrite(fd, page, ps,
					(off_t)(pgnos[i] - 1) * ps), ps);
	}
	assert_int_equal(ftruncate(fd, (off_t)commit * ps), 0);
	assert_int_equal(ltx_dbfile_checksum(fd, ps, &pages, &sum, &err), 0);
	close(fd);
	free(page);
	return sum;
}

/* TXID e->txid + 1: an LTX file of pages pgnos at page size ps and
 * commit, with the right post-apply checksum, or post when not 0. */
static void make(env *e, uint32_t ps, uint32_t commit, const uint32_t *pgnos,
		 size_t n, uint32_t seed, uint64_t post, tu_buf *out)
{
	ltx_header h = tu_header(0, ps, commit, e->txid + 1, e->sum);
	ltx_trailer tr;
	ltx_err err;

	if (!post)
		post = expected_post(e->txid == 0 ? -1 : e->ref, ps, commit,
				     pgnos, n, seed);
	assert_int_equal(tu_encode(&h, 0, pgnos, n, seed, post, out, &tr,
				   &err), 0);
}

static int apply_table(env *e, const tu_buf *f, char *why, size_t n)
{
	ltx_mem_reader m = {f->data, f->len, 0};
	ltx_decoder *dec = NULL;
	int rc;

	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "t", &dec),
			 0);
	rc = fs_logbase_apply(e->b, dec, NULL, NULL, why, n);
	ltx_decoder_free(dec);
	return rc;
}

/* Applies f to the reference and to the table; both must agree, page by
 * page. */
static void apply_both(env *e, const tu_buf *f)
{
	ltx_mem_reader m = {f->data, f->len, 0};
	const fs_logbase_info *in = fs_logbase_get_info(e->b);
	ltx_decoder *dec = NULL;
	uint8_t *page = malloc(LTX_MAX_PAGE_SIZE);
	char why[300] = "";
	struct stat st;
	ltx_header h;
	ltx_err err;

	assert_non_null(page);
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "t", &dec),
			 0);
	assert_int_equal(ltx_dbfile_apply(e->ref, dec, &e->sum, &h, &err), 0);
	ltx_decoder_free(dec);
	assert_int_equal(apply_table(e, f, why, sizeof(why)), 0);
	e->txid = h.max_txid;
	assert_int_equal(in->txid, e->txid);
	assert_int_equal(in->checksum, e->sum);
	assert_int_equal(fstat(e->ref, &st), 0);
	assert_int_equal(in->commit, (uint32_t)(st.st_size / h.page_size));
	for (uint32_t p = 1; p <= in->commit; p++) {
		uint64_t v;
		assert_int_equal(fs_logbase_get(e->b, p, &v), 0);
		if (p == ltx_lock_pgno(h.page_size)) {
			assert_int_equal(v, 0);
			continue;
		}
		assert_int_equal(pread(e->ref, page, h.page_size,
				       (off_t)(p - 1) * h.page_size),
				 h.page_size);
		assert_int_equal(v, ltx_checksum_page(p, page, h.page_size));
	}
	free(page);
}

static void test_matches_dbfile(void **state)
{
	env *e = *state;
	static const uint32_t snap[] = {1, 2, 3, 4, 5};
	static const uint32_t upd[] = {2, 5};
	static const uint32_t gap[] = {3, 9};       /* 6..8 read as zeros */
	static const uint32_t cut[] = {1};
	static const uint32_t grow[] = {2, 12};
	static const uint32_t none[] = {0};
	tu_buf f = TU_BUF_INIT;

	make(e, PS, 5, snap, 5, 1, 0, &f);
	apply_both(e, &f);
	assert_int_equal(fs_logbase_get_info(e->b)->since, 1);
	f.len = 0;
	make(e, PS, 5, upd, 2, 2, 0, &f);
	apply_both(e, &f);
	f.len = 0;
	make(e, PS, 10, gap, 2, 3, 0, &f);          /* grows, 10 zero */
	apply_both(e, &f);
	f.len = 0;
	make(e, PS, 4, cut, 1, 4, 0, &f);           /* shrinks */
	apply_both(e, &f);
	f.len = 0;
	make(e, PS, 14, grow, 2, 5, 0, &f);         /* 5..11, 13, 14 zero */
	apply_both(e, &f);
	f.len = 0;
	make(e, PS, 0, none, 0, 6, 0, &f);          /* deleted */
	apply_both(e, &f);
	assert_int_equal(fs_logbase_get_info(e->b)->checksum,
			 LTX_CHECKSUM_EMPTY);
	f.len = 0;
	make(e, PS, 3, snap, 3, 7, 0, &f);          /* created again */
	apply_both(e, &f);
	tu_buf_free(&f);
}

/* Pages 2..to that read as zeros, XORed into sum (the lock page
 * skipped). */
static uint64_t xor_zeros(uint64_t sum, uint32_t ps, uint32_t to)
{
	uint8_t *zero = calloc(1, ps);

	assert_non_null(zero);
	for (uint32_t p = 2; p <= to; p++)
		if (p != ltx_lock_pgno(ps))
			sum = ltx_checksum_xor(sum, ltx_checksum_page(p, zero,
								      ps));
	free(zero);
	return sum;
}

static void test_lock_page(void **state)
{
	env *e = *state;
	const uint32_t ps = 65536, lock = ltx_lock_pgno(65536);
	const uint32_t one[] = {1}, past[] = {lock + 1};
	uint8_t *page = malloc(ps);
	tu_buf f = TU_BUF_INIT;
	char why[300] = "";
	uint64_t p1, post, v;

	/* Growing across the lock page (byte 2^30: a reference file would
	 * be 1 GiB, so the sums are made here): it is never counted. */
	assert_non_null(page);
	tu_fill_page(page, ps, 1, 1);
	p1 = ltx_checksum_xor(LTX_CHECKSUM_EMPTY, ltx_checksum_page(1, page,
								    ps));
	make(e, ps, 1, one, 1, 1, p1, &f);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), 0);
	e->txid = 1;
	e->sum = p1;
	tu_fill_page(page, ps, lock + 1, 2);
	post = ltx_checksum_xor(xor_zeros(p1, ps, lock),
				ltx_checksum_page(lock + 1, page, ps));
	f.len = 0;
	make(e, ps, lock + 1, past, 1, 2, post, &f);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), 0);
	assert_int_equal(fs_logbase_get_info(e->b)->checksum, post);
	assert_int_equal(fs_logbase_get(e->b, lock, &v), 0);
	assert_int_equal(v, 0);
	e->txid = 2;
	e->sum = post;
	/* Back below it: pages lock and lock + 1 cut. */
	tu_fill_page(page, ps, 1, 3);
	post = xor_zeros(ltx_checksum_xor(LTX_CHECKSUM_EMPTY,
					  ltx_checksum_page(1, page, ps)),
			 ps, lock - 1);
	f.len = 0;
	make(e, ps, lock - 1, one, 1, 3, post, &f);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), 0);
	assert_int_equal(fs_logbase_get_info(e->b)->commit, lock - 1);
	tu_buf_free(&f);
	free(page);
}

static void test_page_size_change(void **state)
{
	env *e = *state;
	const uint32_t snap[] = {1, 2, 3, 4};
	uint32_t all[10];
	tu_buf f = TU_BUF_INIT;
	char why[300] = "";
	uint64_t post;

	make(e, PS, 4, snap, 4, 1, 0, &f);
	apply_both(e, &f);
	/* VACUUM to 1 KiB pages: a full record, not a snapshot, whose
	 * pre-apply checksum is the old database's. */
	for (uint32_t i = 0; i < 10; i++)
		all[i] = i + 1;
	post = expected_post(-1, 1024, 10, all, 10, 2);
	f.len = 0;
	make(e, 1024, 10, all, 10, 2, post, &f);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), 0);
	assert_int_equal(fs_logbase_get_info(e->b)->page_size, 1024);
	assert_int_equal(fs_logbase_get_info(e->b)->commit, 10);
	assert_int_equal(fs_logbase_get_info(e->b)->checksum, post);
	tu_buf_free(&f);
}

static void test_refuses(void **state)
{
	env *e = *state;
	const uint32_t snap[] = {1, 2}, upd[] = {2};
	tu_buf f = TU_BUF_INIT;
	char why[300] = "";
	ltx_header h;
	ltx_trailer tr;
	ltx_err err;

	/* Nothing comes before a record that is not a snapshot. */
	e->txid = 4;
	e->sum = LTX_CHECKSUM_EMPTY | 77;
	make(e, PS, 2, upd, 1, 1, LTX_CHECKSUM_FLAG | 5, &f);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "TXID 0000000000000005 is not a "
				    "snapshot"));
	e->txid = 0;
	e->sum = LTX_CHECKSUM_EMPTY;
	f.len = 0;
	make(e, PS, 2, snap, 2, 1, 0, &f);
	apply_both(e, &f);
	/* A record that skips a TXID, or starts from another checksum. */
	h = tu_header(0, PS, 2, 3, e->sum);
	f.len = 0;
	assert_int_equal(tu_encode(&h, 0, upd, 1, 2, LTX_CHECKSUM_FLAG | 9,
				   &f, &tr, &err), 0);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "TXID 0000000000000003 does not follow"));
	h = tu_header(0, PS, 2, 2, e->sum ^ 1);
	f.len = 0;
	assert_int_equal(tu_encode(&h, 0, upd, 1, 2, LTX_CHECKSUM_FLAG | 9,
				   &f, &tr, &err), 0);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "does not follow"));
	/* A record that follows and passes its own checksums but whose
	 * pages do not give its post-apply checksum. */
	f.len = 0;
	make(e, PS, 2, upd, 1, 2, LTX_CHECKSUM_FLAG | 9, &f);
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "TXID 0000000000000002 does not "
				    "replay"));
	/* A corrupt one: its file checksum. */
	f.len = 0;
	make(e, PS, 2, upd, 1, 2, 0, &f);
	f.data[LTX_HEADER_SIZE + 4 + 100] ^= 1;
	assert_int_equal(apply_table(e, &f, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "TXID 0000000000000002: "));
	tu_buf_free(&f);
}

static int load_fresh(const char *path, fs_logbase_info *out, char *why,
		      size_t n)
{
	fs_logbase *b = NULL;
	int rc;

	assert_int_equal(fs_logbase_new(tu_memfd(), &b), 0);
	rc = fs_logbase_load(b, path, why, n);
	if (rc == 0)
		*out = *fs_logbase_get_info(b);
	fs_logbase_free(b);
	return rc;
}

/* Builds a base of two records (stopped at TXID 3 when stop) and
 * writes it as dir/base; path gets its path. */
static void build_base_file(env *e, char *path, size_t n, bool stop)
{
	const uint32_t snap[] = {1, 2, 3}, upd[] = {3};
	tu_buf f = TU_BUF_INIT;
	char tmpl[128];
	fs_logbase *b;
	int fd;

	/* The table in a real file, so it can be written and renamed. */
	snprintf(tmpl, sizeof(tmpl), "%s/base.new", e->dir);
	fd = open(tmpl, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	b = e->b;
	assert_int_equal(fs_logbase_new(fd, &e->b), 0);
	fs_logbase_free(b);
	make(e, PS, 3, snap, 3, 1, 0, &f);
	apply_both(e, &f);
	f.len = 0;
	make(e, PS, 3, upd, 1, 2, 0, &f);
	apply_both(e, &f);
	if (stop)
		fs_logbase_stop(e->b, 3, "TXID 0000000000000003 does not "
				"replay: a test");
	assert_int_equal(fs_logbase_write(e->b), 0);
	snprintf(path, n, "%s/%s", e->dir, FS_LOGBASE_NAME);
	assert_int_equal(rename(tmpl, path), 0);
	tu_buf_free(&f);
}

static void test_write_load(void **state)
{
	env *e = *state;
	char path[128], why[300] = "";
	fs_logbase_info in;
	const fs_logbase_info *mine;

	build_base_file(e, path, sizeof(path), true);
	mine = fs_logbase_get_info(e->b);
	assert_int_equal(load_fresh(path, &in, why, sizeof(why)), 0);
	assert_int_equal(in.txid, 2);
	assert_int_equal(in.txid, mine->txid);
	assert_int_equal(in.checksum, mine->checksum);
	assert_int_equal(in.commit, 3);
	assert_int_equal(in.page_size, PS);
	assert_int_equal(in.since, 1);
	assert_int_equal(in.stopped, 3);
	assert_string_equal(in.why, "TXID 0000000000000003 does not replay: "
			    "a test");
}

/* Changes byte off of the file at path (xor), and when fix recomputes
 * its file checksum. */
static void damage(const char *path, off_t off, uint8_t x, bool fix)
{
	tu_buf d = TU_BUF_INIT;
	uint8_t be[8];
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	tu_read_fd(fd, &d);
	d.data[off] ^= x;
	if (fix) {
		put_be64(be, ltx_crc64(0, d.data, d.len - 8) |
				     LTX_CHECKSUM_FLAG);
		memcpy(d.data + d.len - 8, be, 8);
	}
	assert_int_equal(pwrite(fd, d.data, d.len, 0), (ssize_t)d.len);
	close(fd);
	tu_buf_free(&d);
}

static void expect_rule(const char *path, const char *rule)
{
	char why[300] = "";
	fs_logbase_info in;

	assert_int_equal(load_fresh(path, &in, why, sizeof(why)), -EBADMSG);
	if (!strstr(why, rule))
		fail_msg("want %s, got: %s", rule, why);
}

static void test_load_refuses_damage(void **state)
{
	env *e = *state;
	char path[128], why[300];
	fs_logbase_info in;
	struct stat st;

	assert_int_equal(load_fresh("/nonexistent/base", &in, why,
				    sizeof(why)), -ENOENT);
	build_base_file(e, path, sizeof(path), false);
	assert_int_equal(load_fresh(path, &in, why, sizeof(why)), 0);
	damage(path, 0, 1, false);                  /* magic */
	expect_rule(path, "rule B1");
	damage(path, 0, 1, false);
	damage(path, 248 + 8, 1, false);            /* page 2's checksum */
	expect_rule(path, "rule B3");
	damage(path, 248 + 8, 0x80, true);          /* its bit 63, agreed */
	expect_rule(path, "rule B5");
	damage(path, 248 + 8, 0x80, true);          /* bit 63 back: B6 */
	expect_rule(path, "rule B6");
	damage(path, 248 + 8, 0x01, true);          /* back as it was */
	assert_int_equal(load_fresh(path, &in, why, sizeof(why)), 0);
	damage(path, 8 + 2, 0x01, true);            /* page size 4352 */
	expect_rule(path, "rule B4");
	damage(path, 8 + 2, 0x01, true);
	damage(path, 32 + 7, 0x04, true);           /* since 5 > TXID 2 */
	expect_rule(path, "rule B7");
	damage(path, 32 + 7, 0x04, true);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 1), 0);
	expect_rule(path, "rule B2");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_matches_dbfile, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_page, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_page_size_change, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_load, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_load_refuses_damage, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
