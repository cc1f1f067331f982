/* backup/object.c: names (format, parse, rejects) and the chain rules
 * (object.h O2, O3): the start by target, following by TXID, epochs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <cmocka.h>

#include "backup/object.h"

static void test_names(void **state)
{
	bk_obj o = {NULL, 3, 0x10, 0x2f, 0x8000000000000abc, 0, 0}, p;
	char key[256];

	(void)state;
	assert_int_equal(bk_obj_key(key, sizeof(key), "pre/x", "app.db", &o),
			 0);
	assert_string_equal(key, "pre/x/app.db/l0/0000000000000003-"
			    "0000000000000010-000000000000002f-"
			    "8000000000000abc.ltx");
	assert_true(bk_obj_parse(key, &p));
	assert_int_equal(p.epoch, 3);
	assert_int_equal(p.min_txid, 0x10);
	assert_int_equal(p.max_txid, 0x2f);
	assert_true(p.post == 0x8000000000000abc);
	assert_int_equal(bk_obj_key(key, sizeof(key), "", "a.db", &o), 0);
	assert_true(strncmp(key, "a.db/l0/", 8) == 0);
	assert_int_equal(bk_obj_key(key, 20, "", "a.db", &o), -ENAMETOOLONG);

	/* Rejected: upper case, wrong length, min 0, max < min, suffix. */
	assert_false(bk_obj_parse("d/l0/000000000000000A-0000000000000001-"
				  "0000000000000001-8000000000000000.ltx", &p));
	assert_false(bk_obj_parse("d/l0/0000000000000001-0000000000000001-"
				  "0000000000000001-800000000000000.ltx", &p));
	assert_false(bk_obj_parse("d/l0/0000000000000001-0000000000000000-"
				  "0000000000000001-8000000000000000.ltx", &p));
	assert_false(bk_obj_parse("d/l0/0000000000000001-0000000000000005-"
				  "0000000000000004-8000000000000000.ltx", &p));
	assert_false(bk_obj_parse("d/l0/0000000000000001-0000000000000001-"
				  "0000000000000001-8000000000000000.ltz", &p));
	assert_false(bk_obj_parse("d/l0/0000000000000001-0000000000000001-"
				  "0000000000000001-8000000000000000.ltx.tmp-1",
				  &p));
}

#define O(e, lo, hi) {"k", (e), (lo), (hi), 0, 0, 0}

static size_t chain(const bk_obj *v, size_t n, uint64_t target,
		    const bk_obj ***out)
{
	size_t k = 0;

	assert_int_equal(bk_obj_chain(v, n, NULL, target, out, &k), 0);
	return k;
}

static void test_chain_one_epoch(void **state)
{
	bk_obj v[] = {O(1, 1, 1), O(1, 2, 5), O(1, 6, 6), O(1, 7, 9)};
	const bk_obj **c = NULL;

	(void)state;
	assert_int_equal(chain(v, 4, UINT64_MAX, &c), 4);
	assert_ptr_equal(c[3], &v[3]);
	free(c);
	/* To TXID 6: up to the object holding it; 4 is inside 2-5. */
	assert_int_equal(chain(v, 4, 6, &c), 3);
	free(c);
	assert_int_equal(chain(v, 4, 4, &c), 2);
	free(c);
	/* A gap ends the chain. */
	bk_obj g[] = {O(1, 1, 1), O(1, 2, 5), O(1, 7, 9)};
	assert_int_equal(chain(g, 3, UINT64_MAX, &c), 2);
	free(c);
	/* No start object: nothing. */
	assert_int_equal(chain(v + 1, 3, UINT64_MAX, &c), 0);
	free(c);
}

static void test_chain_snapshot_start(void **state)
{
	/* A snapshot at 9 (a new chain) besides the log from 1. */
	bk_obj v[] = {O(1, 1, 1), O(1, 2, 5), O(2, 1, 9), O(2, 10, 12)};
	const bk_obj **c = NULL;

	(void)state;
	assert_int_equal(chain(v, 4, UINT64_MAX, &c), 2);
	assert_ptr_equal(c[0], &v[2]);
	assert_ptr_equal(c[1], &v[3]);
	free(c);
	/* Before the snapshot: the older chain. */
	assert_int_equal(chain(v, 4, 5, &c), 2);
	assert_ptr_equal(c[0], &v[0]);
	free(c);
	/* Ties at the same X: the higher epoch. */
	bk_obj w[] = {O(1, 1, 4), O(3, 1, 4)};
	assert_int_equal(chain(w, 2, UINT64_MAX, &c), 1);
	assert_ptr_equal(c[0], &w[1]);
	free(c);
	/* bk_obj_starts: every start, lowest X first. */
	size_t n = 0;
	assert_int_equal(bk_obj_starts(v, 4, &c, &n), 0);
	assert_int_equal(n, 2);
	assert_ptr_equal(c[0], &v[0]);
	assert_ptr_equal(c[1], &v[2]);
	free(c);
}

static void test_chain_epochs(void **state)
{
	/* Epoch 1 uploaded 1..8; epoch 2 took over after 5 and uploaded
	 * 6..7 and 8..10; epoch 1, stale, uploaded 9..9 late. */
	bk_obj v[] = {O(1, 1, 1), O(1, 2, 5), O(1, 6, 8), O(2, 6, 7),
		      O(2, 8, 10), O(1, 9, 9)};
	const bk_obj **c = NULL;

	(void)state;
	assert_int_equal(chain(v, 6, UINT64_MAX, &c), 4);
	assert_ptr_equal(c[2], &v[3]); /* the higher epoch at 6 */
	assert_ptr_equal(c[3], &v[4]);
	free(c);
	/* Never back to a lower epoch after a higher one. */
	bk_obj w[] = {O(2, 1, 1), O(1, 2, 3)};
	assert_int_equal(chain(w, 2, UINT64_MAX, &c), 1);
	free(c);
}

/* Rule O3 by a scan of every object per step (as it was first written):
 * the reference the sorted version must agree with. */
static size_t chain_ref(const bk_obj *objs, size_t n, uint64_t target,
			const bk_obj **v)
{
	const bk_obj *cur = NULL;
	size_t k = 0;

	/* The start: the highest in the order (epoch, X). */
	for (size_t i = 0; i < n; i++)
		if (objs[i].min_txid == 1 && objs[i].max_txid <= target &&
		    (!cur || objs[i].epoch > cur->epoch ||
		     (objs[i].epoch == cur->epoch &&
		      objs[i].max_txid > cur->max_txid)))
			cur = &objs[i];
	while (cur && k < n) {
		const bk_obj *next = NULL;
		v[k++] = cur;
		for (size_t i = 0; i < n; i++) {
			const bk_obj *o = &objs[i];
			if (o->min_txid != cur->max_txid + 1 ||
			    o->epoch < cur->epoch || o->min_txid > target)
				continue;
			if (!next || o->epoch > next->epoch ||
			    (o->epoch == next->epoch &&
			     o->max_txid > next->max_txid))
				next = o;
		}
		cur = next;
	}
	return k;
}

/* Random stores of competing epochs: the same chain as the reference. */
static void test_chain_random(void **state)
{
	bk_obj v[64];
	const bk_obj *ref[64], **c = NULL;
	unsigned seed = 12345;

	(void)state;
	for (int round = 0; round < 2000; round++) {
		size_t n = 1 + (size_t)(rand_r(&seed) % 64), k;
		uint64_t target = rand_r(&seed) % 4 ? UINT64_MAX :
				  1 + (uint64_t)(rand_r(&seed) % 40);
		for (size_t i = 0; i < n; i++) {
			uint64_t lo = rand_r(&seed) % 5 ? 1 + (uint64_t)(
				rand_r(&seed) % 40) : 1;
			v[i] = (bk_obj){"k", 1 + (uint64_t)(rand_r(&seed) % 3),
					lo, lo + (uint64_t)(rand_r(&seed) % 4),
					0, 0, 0};
		}
		k = chain(v, n, target, &c);
		assert_int_equal(k, chain_ref(v, n, target, ref));
		for (size_t i = 0; i < k; i++)
			assert_ptr_equal(c[i], ref[i]);
		free(c);
	}
}

/* A day of one object per second, twice (a competing epoch uploaded
 * every other object too): fast, where a scan per step took minutes. */
static void test_chain_many(void **state)
{
	size_t n = 2 * 86400, k;
	bk_obj *v = calloc(n, sizeof(*v));
	const bk_obj **c = NULL;

	(void)state;
	assert_non_null(v);
	for (size_t i = 0; i < 86400; i++) {
		v[i] = (bk_obj){"k", 1, i + 1, i + 1, 0, 0, 0};
		/* Epoch 2's duplicates, in reverse order, from TXID 50000. */
		v[n - 1 - i] = (bk_obj){"k", i + 1 >= 50000 ? 2 : 1, i + 1,
					i + 1, 0, 0, 0};
	}
	k = chain(v, n, UINT64_MAX, &c);
	assert_int_equal(k, 86400);
	assert_int_equal(c[k - 1]->max_txid, 86400);
	assert_int_equal(c[k - 1]->epoch, 2);
	assert_int_equal(c[49998]->epoch, 1);
	assert_int_equal(c[49999]->epoch, 2);
	free(c);
	k = chain(v, n, 1000, &c);
	assert_int_equal(k, 1000);
	free(c);
	free(v);
}

/* Rule O5: L1 names, only in l1/. */
static void test_l1_names(void **state)
{
	bk_obj o = {NULL, 3, 0x10, 0x2f, 0x8000000000000abc, 1,
		    1700000000123}, p;
	char key[256];

	(void)state;
	assert_int_equal(bk_obj_key(key, sizeof(key), "pre", "app.db", &o), 0);
	assert_string_equal(key, "pre/app.db/l1/0000000000000003-"
			    "0000000000000010-000000000000002f-"
			    "8000000000000abc-0000018bcfe5687b.ltx");
	assert_true(bk_obj_parse(key, &p));
	assert_int_equal(p.level, 1);
	assert_int_equal(p.ts_ms, 1700000000123);
	assert_int_equal(p.max_txid, 0x2f);
	/* An L1 name in l0/, an L0 name in l1/: neither. */
	key[strlen("pre/app.db/l")] = '0';
	assert_false(bk_obj_parse(key, &p));
	assert_false(bk_obj_parse("d/l1/0000000000000001-0000000000000001-"
				  "0000000000000001-8000000000000000.ltx", &p));
	assert_true(bk_obj_parse("d/l0/0000000000000001-0000000000000001-"
				 "0000000000000001-8000000000000000.ltx", &p));
	assert_int_equal(p.level, 0);
}

#define L1(e, lo, hi, post, ts) {"l1", (e), (lo), (hi), (post), 1, (ts)}
#define P(e, lo, hi, post) {"k", (e), (lo), (hi), (post), 0, 0}

/* Rule O6: runs of the chain replaced by the L1s that match them. */
static void test_substitute(void **state)
{
	bk_obj v[] = {P(1, 1, 1, 11), P(1, 2, 3, 13), P(1, 4, 5, 15),
		      P(1, 6, 8, 18), P(1, 9, 9, 19), P(1, 10, 12, 22),
		      L1(1, 2, 5, 15, 500),   /* elements 1..2 */
		      L1(1, 2, 8, 18, 800),   /* 1..3: the longer wins */
		      L1(1, 9, 12, 99, 1200), /* another history: not used */
		      L1(1, 9, 9, 19, 900),   /* 4..4 */
		      L1(1, 1, 3, 13, 300),   /* over the start: never */
		      L1(1, 3, 5, 15, 500)};  /* not at an element's start */
	const bk_obj **c = NULL, **s = NULL;
	size_t nc = 0, ns = 0, n = sizeof(v) / sizeof(v[0]);

	(void)state;
	assert_int_equal(bk_obj_chain(v, n, NULL, UINT64_MAX, &c, &nc), 0);
	assert_int_equal(nc, 6); /* L1s are not in the L0 chain */
	assert_int_equal(bk_obj_substitute(v, n, c, nc, UINT64_MAX, false, 0,
					   &s, &ns), 0);
	assert_int_equal(ns, 4);
	assert_ptr_equal(s[0], &v[0]);
	assert_ptr_equal(s[1], &v[7]);
	assert_ptr_equal(s[2], &v[9]);
	assert_ptr_equal(s[3], &v[5]);
	free(s);
	/* To TXID 7: the L1 to 8 goes past it; the one to 5 does not. */
	assert_int_equal(bk_obj_substitute(v, n, c, nc, 7, false, 0, &s, &ns),
			 0);
	assert_int_equal(ns, 5);
	assert_ptr_equal(s[1], &v[6]);
	assert_ptr_equal(s[2], &v[3]);
	free(s);
	/* By time: T must not be after the target time. */
	assert_int_equal(bk_obj_substitute(v, n, c, nc, UINT64_MAX, true, 799,
					   &s, &ns), 0);
	assert_int_equal(ns, 5);
	assert_ptr_equal(s[1], &v[6]);
	free(s);
	assert_int_equal(bk_obj_substitute(v, n, c, nc, UINT64_MAX, true, 100,
					   &s, &ns), 0);
	assert_int_equal(ns, 6);
	free(s);
	free(c);
}

static void test_chain_start_order(void **state)
{
	/* Epoch 1 uploaded 1..30 (start 1, snapshot at 20); epoch 2, behind
	 * (it had 25), found the store ahead and started with a snapshot at
	 * 25, then 26..40; epoch 1, stale, uploaded a snapshot at 45 late. */
	bk_obj v[] = {O(1, 1, 10), O(1, 11, 20), O(1, 1, 20), O(1, 21, 30),
		      O(2, 1, 25), O(2, 26, 40), O(1, 1, 45)};
	const bk_obj **c = NULL;
	size_t n = 0;

	(void)state;
	/* The newest: epoch 2's history, not epoch 1's higher starts. */
	assert_int_equal(chain(v, 7, UINT64_MAX, &c), 2);
	assert_ptr_equal(c[0], &v[4]);
	assert_ptr_equal(c[1], &v[5]);
	free(c);
	/* Below epoch 2's start: epoch 1's highest start at or before. */
	assert_int_equal(chain(v, 7, 22, &c), 2);
	assert_ptr_equal(c[0], &v[2]);
	assert_ptr_equal(c[1], &v[3]);
	free(c);
	assert_int_equal(bk_obj_starts(v, 7, &c, &n), 0);
	assert_int_equal(n, 4);
	assert_ptr_equal(c[0], &v[0]);
	assert_ptr_equal(c[1], &v[2]);
	assert_ptr_equal(c[2], &v[6]);
	assert_ptr_equal(c[3], &v[4]);
	free(c);
}

/* Rule O4 on a file store: the first key after this epoch's keys. */
static void test_newer_epoch(void **state)
{
	bk_store_opts so = {.type = BK_STORE_FILE};
	bk_obj objs[] = {O(3, 1, 5), O(3, 6, 9), O(5, 6, 7)};
	char dir[64] = "/tmp/ltxfs-bkobj-XXXXXX", key[256], err[512] = "";
	char cmd[128];
	bk_store *s = NULL;
	uint64_t newer = 99;
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	(void)state;
	assert_true(fd >= 0);
	assert_non_null(mkdtemp(dir));
	so.dir = dir;
	assert_int_equal(bk_store_open(&so, &s, err, sizeof(err)), 0);
	assert_int_equal(bk_obj_newer_epoch(s, "p", "a.db", 3, &newer, err,
					    sizeof(err)), 0);
	assert_int_equal(newer, 0); /* nothing stored */
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(bk_obj_key(key, sizeof(key), "p", "a.db",
					    &objs[i]), 0);
		assert_int_equal(bk_store_put(s, key, fd, 0, err, sizeof(err)),
				 0);
	}
	assert_int_equal(bk_obj_newer_epoch(s, "p", "a.db", 3, &newer, err,
					    sizeof(err)), 0);
	assert_int_equal(newer, 5);
	assert_int_equal(bk_obj_newer_epoch(s, "p", "a.db", 5, &newer, err,
					    sizeof(err)), 0);
	assert_int_equal(newer, 0);
	assert_int_equal(bk_obj_newer_epoch(s, "p", "a.db", 2, &newer, err,
					    sizeof(err)), 0);
	assert_int_equal(newer, 3);
	/* A foreign name sorting first: every key is looked at. */
	assert_int_equal(bk_store_put(s, "p/a.db/l0/0000000000000005-zz", fd,
				      0, err, sizeof(err)), 0);
	assert_int_equal(bk_obj_newer_epoch(s, "p", "a.db", 3, &newer, err,
					    sizeof(err)), 0);
	assert_int_equal(newer, 5);
	/* An L1 of a higher epoch is not rule O4's; bk_obj_list has both
	 * levels, and nothing deeper or foreign. */
	bk_obj l1 = {NULL, 9, 6, 9, 0x8000000000000001, 1, 1000};
	assert_int_equal(bk_obj_key(key, sizeof(key), "p", "a.db", &l1), 0);
	assert_int_equal(bk_store_put(s, key, fd, 0, err, sizeof(err)), 0);
	assert_int_equal(bk_store_put(s, "p/a.db/l1/x/0000000000000009-"
				      "0000000000000006-0000000000000009-"
				      "8000000000000001.ltx", fd, 0, err,
				      sizeof(err)), 0);
	assert_int_equal(bk_obj_newer_epoch(s, "p", "a.db", 5, &newer, err,
					    sizeof(err)), 0);
	assert_int_equal(newer, 0);
	{
		bk_keys keys = {0};
		bk_obj *all = NULL;
		size_t n = 0, l1s = 0;
		assert_int_equal(bk_obj_list(s, "p", "a.db", &keys, &all, &n,
					     err, sizeof(err)), 0);
		assert_int_equal(n, 4);
		for (size_t i = 0; i < n; i++)
			l1s += all[i].level == 1;
		assert_int_equal(l1s, 1);
		free(all);
		bk_keys_free(&keys);
	}
	close(fd);
	bk_store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_chain_one_epoch),
		cmocka_unit_test(test_chain_snapshot_start),
		cmocka_unit_test(test_chain_epochs),
		cmocka_unit_test(test_chain_random),
		cmocka_unit_test(test_l1_names),
		cmocka_unit_test(test_substitute),
		cmocka_unit_test(test_chain_many),
		cmocka_unit_test(test_chain_start_order),
		cmocka_unit_test(test_newer_epoch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
