/*
 * replica/role.c: the node's role state machine. Every transition of the
 * table is made on a real node (rep_node_new with the static lease, a
 * data directory of its own, no mount), and each disallowed one is
 * caught: it fails the assert (in a child process) or, in a build
 * without asserts, is refused with -EPERM and the role stays.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "replica/node_i.h"

#define PRIMARY_URL "http://127.0.0.1:1"

static char dir[] = "/tmp/ltxfs-test-role-XXXXXX";

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

/* A node of the static lease: the primary (candidate) or a replica. */
static rep_node *new_node(bool candidate)
{
	rep_node_opts o = {
		.data_dir = dir,
		.mountpoint = "/nonexistent",
		.node_id = 0x1234,
		.http = {.addr = "127.0.0.1:0"},
		.lease = {.type = REP_LEASE_STATIC,
			  .candidate = candidate,
			  .advertise_url = "http://127.0.0.1:2",
			  .primary_url = candidate ? "" : PRIMARY_URL},
	};
	rep_node *n = NULL;

	assert_int_equal(rep_node_new(&o, &n), 0);
	assert_non_null(n);
	return n;
}

static void test_table(void **state)
{
	/* The transitions there are, and only those. */
	static const int yes[][2] = {
		{REP_ROLE_INIT, REP_ROLE_REPLICA},
		{REP_ROLE_INIT, REP_ROLE_PRIMARY},
		{REP_ROLE_INIT, REP_ROLE_STOPPED},
		{REP_ROLE_REPLICA, REP_ROLE_REPLICA},
		{REP_ROLE_REPLICA, REP_ROLE_PROMOTING},
		{REP_ROLE_REPLICA, REP_ROLE_STOPPED},
		{REP_ROLE_PROMOTING, REP_ROLE_PRIMARY},
		{REP_ROLE_PRIMARY, REP_ROLE_REPLICA},
		{REP_ROLE_PRIMARY, REP_ROLE_DRAINING},
		{REP_ROLE_DRAINING, REP_ROLE_REPLICA},
		{REP_ROLE_DRAINING, REP_ROLE_STOPPED},
	};

	(void)state;
	for (int from = 0; from < REP_ROLE_COUNT; from++) {
		for (int to = 0; to < REP_ROLE_COUNT; to++) {
			bool want = false;
			for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
				want |= yes[i][0] == from && yes[i][1] == to;
			if (rep_role_allowed(from, to) != want)
				fail_msg("%s -> %s: allowed is %d, want %d",
					 rep_role_name(from), rep_role_name(to),
					 rep_role_allowed(from, to), want);
		}
	}
	assert_false(rep_role_allowed(-1, REP_ROLE_REPLICA));
	assert_false(rep_role_allowed(REP_ROLE_REPLICA, REP_ROLE_COUNT));
	assert_string_equal(rep_role_name(REP_ROLE_DRAINING), "draining");
	assert_true(rep_role_leads(REP_ROLE_PRIMARY));
	assert_true(rep_role_leads(REP_ROLE_DRAINING));
	assert_false(rep_role_leads(REP_ROLE_PROMOTING));
}

/* INIT -> PRIMARY -> DRAINING -> REPLICA -> PROMOTING -> PRIMARY ->
 * REPLICA -> REPLICA -> STOPPED, and INIT -> REPLICA. */
static void test_every_transition(void **state)
{
	rep_node *n = new_node(true);
	char url[64];
	uint64_t gen;

	(void)state;
	assert_int_equal(rep_node_role(n), REP_ROLE_PRIMARY);
	assert_true(rep_node_is_primary(n));
	assert_int_equal(rep_node_epoch(n), 1);
	assert_int_equal(rep_node_primary_url(n, url, sizeof(url)), 0);
	assert_string_equal(url, "http://127.0.0.1:2");

	gen = n->role.gen;
	assert_int_equal(rep_role_drain(n), 0);
	assert_int_equal(rep_node_role(n), REP_ROLE_DRAINING);
	assert_true(rep_node_is_primary(n));
	assert_true(n->role.gen > gen);
	/* A drain asked of a node that is not PRIMARY is refused. */
	assert_int_equal(rep_role_drain(n), -EPERM);

	assert_int_equal(rep_role_follow(n, 2, ""), 0);
	assert_int_equal(rep_node_role(n), REP_ROLE_REPLICA);
	assert_false(rep_node_is_primary(n));
	assert_int_equal(rep_node_primary_url(n, url, sizeof(url)), -ENOENT);
	assert_string_equal(url, "");
	assert_int_equal(rep_node_epoch(n), 2);

	assert_int_equal(rep_role_lead(n, 3), 0); /* via PROMOTING */
	assert_int_equal(rep_node_role(n), REP_ROLE_PRIMARY);
	assert_int_equal(rep_node_epoch(n), 3);

	assert_int_equal(rep_role_follow(n, 3, PRIMARY_URL), 0);
	assert_int_equal(rep_node_primary_url(n, url, sizeof(url)), 0);
	assert_string_equal(url, PRIMARY_URL);
	assert_string_equal(rep_node_primary_desc(n), PRIMARY_URL);
	assert_int_equal(rep_node_primary_url(n, url, 4), -ENAMETOOLONG);
	/* REPLICA -> REPLICA: another primary; the epoch never goes back. */
	assert_int_equal(rep_role_follow(n, 1, "http://127.0.0.1:3"), 0);
	assert_int_equal(rep_node_epoch(n), 3);
	assert_string_equal(rep_node_primary_desc(n), "http://127.0.0.1:3");

	assert_int_equal(rep_role_stop(n), 0);
	assert_int_equal(rep_node_role(n), REP_ROLE_STOPPED);
	assert_int_equal(rep_role_stop(n), 0); /* idempotent */
	rep_node_free(n);

	n = new_node(false);
	assert_int_equal(rep_node_role(n), REP_ROLE_REPLICA);
	assert_string_equal(rep_node_primary_desc(n), PRIMARY_URL);
	rep_node_free(n);
}

struct promote_ctx {
	rep_node *n;
	int rc;
};

static void *promote_main(void *arg)
{
	struct promote_ctx *p = arg;

	p->rc = rep_role_lead(p->n, 5);
	return NULL;
}

/* PROMOTING: not primary while the former primary's stream is read,
 * primary once it ends. */
static void test_promoting_finishes_the_stream(void **state)
{
	rep_node *n = new_node(false);
	struct promote_ctx p = {n, 1};
	int64_t t0;
	pthread_t t;

	(void)state;
	pthread_mutex_lock(&n->mu);
	n->follow.in_stream = true;
	pthread_mutex_unlock(&n->mu);
	t0 = lib_clock_monotonic_ns();
	assert_int_equal(pthread_create(&t, NULL, promote_main, &p), 0);
	while (rep_node_role(n) != REP_ROLE_PROMOTING) {
		assert_true(lib_clock_monotonic_ns() - t0 < 5000000000LL);
		usleep(1000);
	}
	assert_false(rep_node_is_primary(n));
	usleep(50 * 1000);
	assert_int_equal(rep_node_role(n), REP_ROLE_PROMOTING);
	pthread_mutex_lock(&n->mu);
	n->follow.in_stream = false; /* the stream ended */
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
	pthread_join(t, NULL);
	assert_int_equal(p.rc, 0);
	assert_int_equal(rep_node_role(n), REP_ROLE_PRIMARY);
	assert_true(lib_clock_monotonic_ns() - t0 <
		    (int64_t)(REP_FINISH_STREAM_MS + 2000) * 1000000LL);
	rep_node_free(n);
}

/* What a child does to the node before it exits. */
enum wrong {
	WRONG_PROMOTE_PRIMARY,   /* PRIMARY -> PROMOTING */
	WRONG_FOLLOW_STOPPED,    /* STOPPED -> REPLICA */
	WRONG_LEAD_STOPPED,      /* STOPPED -> PROMOTING */
};

/* In a child: the disallowed transition aborts (assert), or returns
 * -EPERM with the role unchanged (exit 3); anything else is exit 1 (2:
 * the node did not stop). */
static void expect_caught(enum wrong w)
{
	int status = 0;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		rep_node *n = new_node(true);
		int before, rc;
		/* No core dump of the expected abort. */
		signal(SIGABRT, SIG_DFL);
		if (w != WRONG_PROMOTE_PRIMARY) {
			rep_node_stop(n); /* DRAINING, then STOPPED */
			if (rep_node_role(n) != REP_ROLE_STOPPED)
				_exit(2);
		}
		before = rep_node_role(n);
		if (w == WRONG_FOLLOW_STOPPED)
			rc = rep_role_follow(n, 1, PRIMARY_URL);
		else
			rc = rep_role_lead(n, 9);
		_exit(rc == -EPERM && rep_node_role(n) == before ? 3 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		assert_int_equal(WTERMSIG(status), SIGABRT);
	else
		assert_int_equal(WEXITSTATUS(status), 3);
}

static void test_disallowed_caught(void **state)
{
	(void)state;
	expect_caught(WRONG_PROMOTE_PRIMARY);
	expect_caught(WRONG_FOLLOW_STOPPED);
	expect_caught(WRONG_LEAD_STOPPED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_every_transition),
		cmocka_unit_test(test_promoting_finishes_the_stream),
		cmocka_unit_test(test_disallowed_caught),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
