/* backup/retain.c: rules R2 and R3 (which objects a retention pass
 * deletes, given the anchor), and one pass against a file store (R1: the
 * anchor from the starts' snapshot times; R4: the deletions). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backup/retain.h"
#include "lib/bytes.h"
#include "ltx/encoder.h"

#define O(e, lo, hi) {"k", (e), (lo), (hi), 0, 0, 0}
#define L1(e, lo, hi, post) {"l1", (e), (lo), (hi), (post), 1, 0}

/* The plan for objs with the anchor at index a (-1: none), as a string
 * of 'd' (deleted) and '.' (kept). */
static const char *plan(const bk_obj *v, size_t n, int a, uint64_t epoch)
{
	static char out[64];
	bool del[64];
	size_t ndel = 99, count = 0;

	assert_true(n < sizeof(out));
	assert_int_equal(bk_retain_plan(v, n, a < 0 ? NULL : &v[a], epoch, del,
					&ndel), 0);
	for (size_t i = 0; i < n; i++) {
		out[i] = del[i] ? 'd' : '.';
		count += del[i];
	}
	out[n] = '\0';
	assert_int_equal(ndel, count);
	return out;
}

static void test_one_history(void **state)
{
	/* Start 1..1, 2..10, snapshot at 10, 11..20, snapshot at 20,
	 * 21..30. */
	bk_obj v[] = {O(1, 1, 1), O(1, 2, 10), O(1, 1, 10), O(1, 11, 20),
		      O(1, 1, 20), O(1, 21, 30)};

	(void)state;
	/* No anchor (the store is younger than the retention): nothing. */
	assert_string_equal(plan(v, 6, -1, 1), "......");
	/* The oldest start: nothing (11..20 is on its chain and the
	 * snapshot at 10's). */
	assert_string_equal(plan(v, 6, 0, 1), "......");
	/* The snapshot at 10: the chain from 1 before it goes. */
	assert_string_equal(plan(v, 6, 2, 1), "dd....");
	/* The snapshot at 20: everything before it goes; 21..30 stays. */
	assert_string_equal(plan(v, 6, 4, 1), "dddd..");
	/* An anchor that is not a start of objs: an error, nothing. */
	bool del[6];
	size_t ndel = 9;
	assert_int_equal(bk_retain_plan(v, 6, &v[1], 1, del, &ndel), -EINVAL);
	assert_int_equal(ndel, 0);
}

/* L1 objects (rule O6) are kept when they stand for a run of a kept
 * chain, deleted otherwise. */
static void test_l1(void **state)
{
	/* Start 1..1, 2..10, snapshot at 10, 11..20, 21..30; L1s: 2..10 (the
	 * old chain), 11..30 and 11..20 and 21..30 (the kept chain), 11..30
	 * of another history (its checksum differs), 12..30 (no element
	 * starts at 12), 11..25 (no element ends at 25). */
	bk_obj v[] = {O(1, 1, 1), O(1, 2, 10), O(1, 1, 10), O(1, 11, 20),
		      O(1, 21, 30), L1(1, 2, 10, 0), L1(1, 11, 30, 0),
		      L1(1, 11, 20, 0), L1(1, 21, 30, 0), L1(1, 11, 30, 7),
		      L1(1, 12, 30, 0), L1(1, 11, 25, 0)};

	(void)state;
	assert_string_equal(plan(v, 12, 2, 1), "dd...d...ddd");
	/* Anchored at the oldest start: both chains kept, with their L1s. */
	assert_string_equal(plan(v, 12, 0, 1), ".........ddd");
}

static void test_epochs(void **state)
{
	/* Epoch 1: start 1..5, 6..10; epoch 2 took over after 10: 11..20,
	 * snapshot at 20, 21..25; epoch 1, stale, uploaded 11..12 late
	 * (a branch no chain follows after epoch 2's 11..20); epoch 3, a
	 * newer primary this uploader (epoch 2) does not know of yet,
	 * uploaded 26..27 and 30..31 (a gap: reached by no chain). */
	bk_obj v[] = {O(1, 1, 5), O(1, 6, 10), O(1, 11, 12), O(2, 11, 20),
		      O(2, 1, 20), O(2, 21, 25), O(3, 26, 27), O(3, 30, 31)};

	(void)state;
	/* Anchor at the first start: only the stale branch goes; epoch 3's
	 * unreachable object is not this uploader's to delete. */
	assert_string_equal(plan(v, 8, 0, 2), "..d.....");
	/* Anchor at epoch 2's snapshot: epoch 1's chain and branch go,
	 * and epoch 2's 11..20 (only the chain from 1 used it). */
	assert_string_equal(plan(v, 8, 4, 2), "dddd....");
	/* The same pass by an uploader of epoch 3 removes epoch 3's
	 * unreachable 30..31 too. */
	assert_string_equal(plan(v, 8, 4, 3), "dddd...d");
}

static void test_diverged(void **state)
{
	/* Epoch 1 reached 30 (snapshot at 20); epoch 2 had only 25, found
	 * the store ahead and started over with a snapshot at 25, then
	 * 26..40. Rule O3 orders epoch 2's start above epoch 1's. */
	bk_obj v[] = {O(1, 1, 10), O(1, 11, 20), O(1, 1, 20), O(1, 21, 30),
		      O(2, 1, 25), O(2, 26, 40)};

	(void)state;
	/* Anchor at epoch 1's snapshot at 20: it and epoch 2's start are
	 * kept with their chains. */
	assert_string_equal(plan(v, 6, 2, 2), "dd....");
	/* Anchor at epoch 2's start: all of epoch 1's history goes. */
	assert_string_equal(plan(v, 6, 4, 2), "dddd..");
}

/* A record: a 4-byte length then an LTX snapshot of one page (a start
 * object's body) committed at ts_ms, written to fd. */
static void start_body(int fd, uint64_t txid, int64_t ts_ms)
{
	ltx_header h = {.flags = 0, .page_size = 512, .commit = 1,
			.min_txid = 1, .max_txid = txid, .timestamp = ts_ms};
	uint8_t page[512] = {0}, len[4];
	ltx_encoder *enc = NULL;
	ltx_err le = {0};
	int out = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	uint8_t buf[4096];
	ssize_t got;

	assert_true(out >= 0);
	memcpy(page, "SQLite format 3", 16);
	page[16] = 2; /* page size 512 */
	assert_int_equal(ltx_encoder_new(&h, 0, ltx_write_to_fd, &out, &enc,
					 &le), 0);
	assert_int_equal(ltx_encoder_add_page(enc, 1, page, &le), 0);
	assert_int_equal(ltx_encoder_finish(enc, 0, NULL, &le), 0);
	ltx_encoder_free(enc);
	got = pread(out, buf, sizeof(buf), 0);
	assert_true(got > 0);
	put_be32(len, (uint32_t)got);
	assert_int_equal(pwrite(fd, len, 4, 0), 4);
	assert_int_equal(pwrite(fd, buf, (size_t)got, 4), got);
	close(out);
}

static void put(bk_store *s, const char *db, bk_obj o, int64_t ts_ms)
{
	char key[256], err[512] = "";
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	assert_true(fd >= 0);
	if (o.min_txid == 1)
		start_body(fd, o.max_txid, ts_ms);
	assert_int_equal(bk_obj_key(key, sizeof(key), "", db, &o), 0);
	assert_int_equal(bk_store_put(s, key, fd, (uint64_t)lseek(fd, 0,
								SEEK_END),
				      err, sizeof(err)), 0);
	close(fd);
}

static void test_run_file_store(void **state)
{
	bk_store_opts so = {.type = BK_STORE_FILE};
	char dir[64] = "/tmp/ltxfs-bkret-XXXXXX", err[512] = "", cmd[128];
	bk_store *s = NULL;
	bk_retain_result res;
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	size_t n = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	so.dir = dir;
	assert_int_equal(bk_store_open(&so, &s, err, sizeof(err)), 0);
	/* Starts at times 1000 (X 1), 2000 (X 10), 3000 (X 20). */
	put(s, "a.db", (bk_obj)O(1, 1, 1), 1000);
	put(s, "a.db", (bk_obj)O(1, 2, 10), 0);
	put(s, "a.db", (bk_obj)O(1, 1, 10), 2000);
	put(s, "a.db", (bk_obj)O(1, 11, 20), 0);
	put(s, "a.db", (bk_obj)O(1, 1, 20), 3000);
	put(s, "a.db", (bk_obj)O(1, 21, 22), 0);

	/* A cutoff before every snapshot: nothing. */
	assert_int_equal(bk_retain_run(s, "", "a.db", 999, 1, &res, err,
				       sizeof(err)), 0);
	assert_int_equal(res.deleted, 0);
	assert_int_equal(res.anchor_txid, 0);
	/* Between the 2nd and the 3rd: the anchor is the snapshot at 10. */
	assert_int_equal(bk_retain_run(s, "", "a.db", 2999, 1, &res, err,
				       sizeof(err)), 0);
	assert_int_equal(res.deleted, 2);
	assert_int_equal(res.anchor_txid, 10);
	assert_int_equal(res.anchor_ms, 2000);
	assert_int_equal(bk_obj_list(s, "", "a.db", &keys, &objs, &n, err,
				     sizeof(err)), 0);
	assert_int_equal(n, 4);
	assert_int_equal(objs[0].min_txid, 1);
	assert_int_equal(objs[0].max_txid, 10);
	free(objs);
	bk_keys_free(&keys);
	/* Again: nothing more. */
	assert_int_equal(bk_retain_run(s, "", "a.db", 2999, 1, &res, err,
				       sizeof(err)), 0);
	assert_int_equal(res.deleted, 0);
	bk_store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_history),
		cmocka_unit_test(test_l1),
		cmocka_unit_test(test_epochs),
		cmocka_unit_test(test_diverged),
		cmocka_unit_test(test_run_file_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
