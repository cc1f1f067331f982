/*
 * replica/node.c and commit.c: the node's public calls that need no
 * mount, on a real node of the static lease (a data directory of its
 * own): commit subscribers are added in order up to their limit and not
 * after the start; rep_node_wait_txid ends at its deadline, or at once
 * when the node stops; rep_node_primary_url and rep_node_ready on a
 * replica that has not reached its primary.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "replica/node_i.h"

#define NS_PER_MS 1000000LL

static char dir[64];

static int setup(void **state)
{
	(void)state;
	lib_log_configure(LIB_LOG_ERROR, LIB_LOG_TEXT, NULL);
	snprintf(dir, sizeof(dir), "/tmp/ltxfs-test-node-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static rep_node *new_node(bool candidate)
{
	rep_node_opts o = {
		.data_dir = dir,
		.mountpoint = "/nonexistent",
		.node_id = 0x5,
		.http = {.addr = "127.0.0.1:0"},
		.lease = {.type = REP_LEASE_STATIC,
			  .candidate = candidate,
			  .advertise_url = "http://127.0.0.1:2",
			  .primary_url = candidate ? "" : "http://127.0.0.1:1"},
	};
	rep_node *n = NULL;

	assert_int_equal(rep_node_new(&o, &n), 0);
	return n;
}

static void sub(void *ctx, fs_db *db, ltx_pos pos)
{
	(void)ctx;
	(void)db;
	(void)pos;
}

static void test_commit_subscribers(void **state)
{
	rep_node *n = new_node(true);
	size_t builtin = n->subs.count;
	int ctx[REP_COMMIT_SUBS_MAX];

	(void)state;
	/* retention, streams, waits: the node's own, in that order. */
	assert_int_equal(builtin, 3);
	assert_ptr_equal(n->subs.s[0].ctx, n);
	for (size_t i = builtin; i < REP_COMMIT_SUBS_MAX; i++)
		assert_int_equal(rep_node_on_commit_add(n, sub, &ctx[i]), 0);
	assert_int_equal(rep_node_on_commit_add(n, sub, NULL), -ENOSPC);
	assert_ptr_equal(n->subs.s[builtin].ctx, &ctx[builtin]);
	assert_ptr_equal(n->subs.s[REP_COMMIT_SUBS_MAX - 1].ctx,
			 &ctx[REP_COMMIT_SUBS_MAX - 1]);
	rep_node_free(n);

	n = new_node(true);
	rep_commit_fix(n); /* what rep_node_start does */
	assert_int_equal(rep_node_on_commit_add(n, sub, NULL), -EBUSY);
	rep_node_free(n);
}

static void test_wait_deadline(void **state)
{
	rep_node *n = new_node(true);
	int64_t t0 = lib_clock_monotonic_ns();

	(void)state;
	assert_int_equal(rep_node_wait_txid(n, "x.db", 1,
					    t0 + 150 * NS_PER_MS),
			 -ETIMEDOUT);
	assert_true(lib_clock_monotonic_ns() - t0 >= 150 * NS_PER_MS);
	assert_true(lib_clock_monotonic_ns() - t0 < 5000 * NS_PER_MS);
	assert_int_equal(atomic_load(&n->waiters), 0);
	rep_node_free(n);
}

static void *stop_later(void *arg)
{
	usleep(100 * 1000);
	rep_node_stop(arg);
	return NULL;
}

static void test_wait_ends_at_stop(void **state)
{
	rep_node *n = new_node(false);
	int64_t t0 = lib_clock_monotonic_ns();
	pthread_t t;

	(void)state;
	assert_int_equal(pthread_create(&t, NULL, stop_later, n), 0);
	assert_int_equal(rep_node_wait_txid(n, "x.db", 1,
					    t0 + 30000 * NS_PER_MS),
			 -ESHUTDOWN);
	assert_true(lib_clock_monotonic_ns() - t0 < 10000 * NS_PER_MS);
	pthread_join(t, NULL);
	rep_node_free(n);
}

static void test_replica_queries(void **state)
{
	rep_node *n = new_node(false);
	char url[64], why[200];

	(void)state;
	assert_int_equal(rep_node_primary_url(n, url, sizeof(url)), 0);
	assert_string_equal(url, "http://127.0.0.1:1");
	assert_false(rep_node_caught_up(n));
	assert_false(rep_node_ready(n, why, sizeof(why)));
	assert_string_equal(why, "not serving: the mount is not ready");
	rep_node_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_subscribers),
		cmocka_unit_test(test_wait_deadline),
		cmocka_unit_test(test_wait_ends_at_stop),
		cmocka_unit_test(test_replica_queries),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
