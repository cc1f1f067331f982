/*
 * replica/cascade.c: who may serve /stream (rules C1, C2), when a stream
 * served by a replica must end (C3), the choice of an upstream and its
 * fallback (C4, C5), the registry of followers. Real nodes of the static
 * lease (rep_node_new, a data directory of their own, no mount); the
 * primary's /info is at a port nothing listens on (127.0.0.1:1), so the
 * choice by region finds no candidate.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/log.h"
#include "replica/node_i.h"

#define PRIMARY_URL "http://127.0.0.1:1"
#define UPSTREAM_URL "http://127.0.0.1:3"
#define SELF 0x1234

static char dir[] = "/tmp/ltxfs-test-cascade-XXXXXX";

static int setup(void **state)
{
	(void)state;
	lib_log_configure(LIB_LOG_ERROR, LIB_LOG_TEXT, NULL);
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static rep_node *new_node(bool candidate, const char *region,
			  const char *upstream)
{
	rep_node_opts o = {
		.data_dir = dir,
		.mountpoint = "/nonexistent",
		.node_id = SELF,
		.region = region,
		.http = {.addr = "127.0.0.1:0"},
		.lease = {.type = REP_LEASE_STATIC,
			  .candidate = candidate,
			  .advertise_url = "http://127.0.0.1:2",
			  .primary_url = candidate ? "" : PRIMARY_URL,
			  .upstream_url = upstream},
	};
	rep_node *n = NULL;

	assert_int_equal(rep_node_new(&o, &n), 0);
	assert_non_null(n);
	return n;
}

static void test_region_valid(void **state)
{
	char big[REP_REGION_MAX + 2];

	(void)state;
	assert_true(rep_region_valid("eu-west"));
	assert_true(rep_region_valid("a.b_c-1"));
	memset(big, 'r', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_false(rep_region_valid(big));
	big[REP_REGION_MAX] = '\0';
	assert_true(rep_region_valid(big));
	assert_false(rep_region_valid(""));
	assert_false(rep_region_valid("eu west"));
	assert_false(rep_region_valid("a\"b"));
	assert_false(rep_region_valid("a\\b"));
	assert_false(rep_region_valid("r\xc3\xa9gion"));
}

static unsigned may_serve(rep_node *n, uint64_t node)
{
	char err[400];
	unsigned st;

	err[0] = '\0';
	pthread_mutex_lock(&n->mu);
	st = rep_cascade_may_serve_locked(n, node, err, sizeof(err));
	pthread_mutex_unlock(&n->mu);
	assert_true(st == 0 || err[0]);
	return st;
}

static void set_upstream(rep_node *n, uint64_t node, int depth, bool ready)
{
	pthread_mutex_lock(&n->mu);
	rep_cascade_hello_locked(n, node, depth - 1);
	n->follow.ready = ready;
	pthread_mutex_unlock(&n->mu);
}

static void test_primary_serves(void **state)
{
	rep_node *n = new_node(true, "", "");

	(void)state;
	assert_true(rep_node_is_primary(n));
	assert_int_equal(may_serve(n, 0x99), 0);
	assert_int_equal(may_serve(n, SELF), 409); /* C2: itself */
	rep_node_free(n);
}

/* C1: a replica serves only at depth 1 and once caught up; C2: never to
 * its own upstream; C3: its streams end at depth 2 or a new role gen. */
static void test_replica_serves(void **state)
{
	rep_node *n = new_node(false, "", "");
	uint64_t gen;

	(void)state;
	assert_int_equal(rep_node_role(n), REP_ROLE_REPLICA);
	assert_int_equal(may_serve(n, 0x99), 421);     /* not connected */
	set_upstream(n, 0x77, 1, false);
	assert_int_equal(may_serve(n, 0x99), 421);     /* not caught up */
	set_upstream(n, 0x77, 1, true);
	assert_int_equal(may_serve(n, 0x99), 0);
	assert_int_equal(may_serve(n, 0x77), 409);     /* its upstream */
	assert_int_equal(may_serve(n, SELF), 409);
	pthread_mutex_lock(&n->mu);
	gen = n->role.gen;
	assert_true(rep_cascade_serving_locked(n, gen));
	assert_false(rep_cascade_serving_locked(n, gen + 1));
	pthread_mutex_unlock(&n->mu);
	set_upstream(n, 0x55, 2, true);                /* via a replica */
	assert_int_equal(may_serve(n, 0x99), 421);
	pthread_mutex_lock(&n->mu);
	assert_false(rep_cascade_serving_locked(n, gen));
	n->cascade.depth = 0;                          /* reconnecting */
	assert_true(rep_cascade_serving_locked(n, gen));
	pthread_mutex_unlock(&n->mu);
	assert_int_equal(may_serve(n, 0x99), 421);
	rep_node_free(n);
}

/* C4 a and c, C5: lease.upstream-url first; once its stream failed it is
 * avoided and the primary is chosen, marked for a recheck (C6). */
static void test_choose_explicit(void **state)
{
	rep_node *n = new_node(false, "", UPSTREAM_URL);
	char url[REP_URL_MAX + 1];
	bool to_primary, recheck;

	(void)state;
	rep_cascade_choose(n, PRIMARY_URL, url, sizeof(url), &to_primary,
			   &recheck);
	assert_string_equal(url, UPSTREAM_URL);
	assert_false(to_primary);
	assert_false(recheck);
	rep_cascade_connecting(n, url, to_primary, recheck);
	rep_cascade_ended(n, true);
	assert_int_equal(atomic_load(&n->m.upstream_fallbacks), 1);
	rep_cascade_choose(n, PRIMARY_URL, url, sizeof(url), &to_primary,
			   &recheck);
	assert_string_equal(url, PRIMARY_URL);
	assert_true(to_primary);
	assert_true(recheck);
	/* A stream from the primary that ends avoids nothing. */
	rep_cascade_connecting(n, url, to_primary, recheck);
	rep_cascade_ended(n, true);
	assert_int_equal(atomic_load(&n->m.upstream_fallbacks), 1);
	rep_node_free(n);
}

/* C4 b and c: with a region, the primary's /info is asked; unreachable,
 * the primary is chosen and checked again later. Without a region, the
 * primary, for good. */
static void test_choose_region(void **state)
{
	rep_node *n = new_node(false, "c", "");
	char url[REP_URL_MAX + 1];
	bool to_primary, recheck;

	(void)state;
	rep_cascade_choose(n, PRIMARY_URL, url, sizeof(url), &to_primary,
			   &recheck);
	assert_string_equal(url, PRIMARY_URL);
	assert_true(to_primary);
	assert_true(recheck);
	rep_node_free(n);
	n = new_node(false, "", "");
	rep_cascade_choose(n, PRIMARY_URL, url, sizeof(url), &to_primary,
			   &recheck);
	assert_string_equal(url, PRIMARY_URL);
	assert_true(to_primary);
	assert_false(recheck);
	rep_node_free(n);
}

static void test_followers(void **state)
{
	rep_node *n = new_node(true, "", "");
	rep_follower a = {.node = 1}, b = {.node = 2}, c = {.node = 3};

	(void)state;
	pthread_mutex_lock(&n->mu);
	rep_cascade_follower_add_locked(n, &a);
	rep_cascade_follower_add_locked(n, &b);
	rep_cascade_follower_add_locked(n, &c);
	assert_int_equal(n->cascade.nfollowers, 3);
	rep_cascade_follower_remove_locked(n, &b);
	assert_int_equal(n->cascade.nfollowers, 2);
	assert_ptr_equal(n->cascade.followers, &c);
	assert_ptr_equal(c.next, &a);
	rep_cascade_follower_remove_locked(n, &b);     /* not there */
	assert_int_equal(n->cascade.nfollowers, 2);
	rep_cascade_follower_remove_locked(n, &c);
	rep_cascade_follower_remove_locked(n, &a);
	assert_null(n->cascade.followers);
	assert_int_equal(n->cascade.nfollowers, 0);
	pthread_mutex_unlock(&n->mu);
	rep_node_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_region_valid),
		cmocka_unit_test(test_primary_serves),
		cmocka_unit_test(test_replica_serves),
		cmocka_unit_test(test_choose_explicit),
		cmocka_unit_test(test_choose_region),
		cmocka_unit_test(test_followers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
