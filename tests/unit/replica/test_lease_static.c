/*
 * replica/lease_static.c through the lease ops (replica/lease.h), on a
 * real node (rep_node_new, a data directory of its own, no mount): the
 * configured primary holds the lease in epoch 1 and names the cluster; a
 * replica follows lease.primary-url; the lease cannot move (handoff and
 * promote 409); a primary that stops drains its replicas first.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/log.h"
#include "replica/lease.h"
#include "replica/node_i.h"

#define PRIMARY_URL "http://127.0.0.1:1"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	lib_log_configure(LIB_LOG_ERROR, LIB_LOG_TEXT, NULL);
	snprintf(dir, sizeof(dir), "/tmp/ltxfs-test-lease-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int new_node(bool candidate, const char *primary, rep_node **out)
{
	rep_node_opts o = {
		.data_dir = dir,
		.mountpoint = "/nonexistent",
		.node_id = 0x99,
		.http = {.addr = "127.0.0.1:0"},
		.lease = {.type = REP_LEASE_STATIC,
			  .candidate = candidate,
			  .advertise_url = "http://127.0.0.1:2",
			  .primary_url = primary},
	};

	return rep_node_new(&o, out);
}

static char *read_text(const char *name)
{
	char path[128];
	static char buf[64];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void test_primary(void **state)
{
	rep_node *n = NULL;
	rep_lease *l;
	rep_lease_stats st;
	char msg[200], *text;

	(void)state;
	assert_int_equal(new_node(true, "", &n), 0);
	l = n->lease;
	assert_string_equal(l->ops->type, "static");
	assert_true(l->ops->fixed);
	assert_int_equal(l->ops->start(l), 0);
	assert_true(l->ops->held(l));
	assert_int_equal(l->ops->epoch(l), 1);
	assert_int_equal(rep_node_role(n), REP_ROLE_PRIMARY);
	/* The first primary names the cluster; the epoch is kept. */
	assert_true(rep_node_cluster(n) != 0);
	text = read_text("cluster.id");
	assert_non_null(text);
	assert_int_equal(strlen(text), 17);
	text = read_text("epoch");
	assert_non_null(text);
	assert_string_equal(text, "1\n");
	assert_int_equal(*rep_node_write_deadline(n), 0);

	memset(&st, 0xff, sizeof(st));
	l->ops->stats(l, &st);
	assert_true(st.primary);
	assert_int_equal(st.epoch, 1);
	assert_int_equal(st.deadline_left_ns, 0);
	assert_int_equal(st.renewals + st.renewal_failures + st.acquisitions +
				 st.etcd_errors, 0);

	/* It cannot move. */
	assert_int_equal(l->ops->handoff_begin(l, 0, msg, sizeof(msg)), 409);
	assert_string_equal(msg, "handoff needs lease.type etcd");
	assert_int_equal(rep_handoff(n, 0, msg, sizeof(msg)), 409);
	assert_string_equal(msg, "handoff needs lease.type etcd");
	assert_int_equal(rep_promote(n, msg, sizeof(msg)), 409);
	assert_string_equal(msg, "promote needs lease.type etcd");
	assert_int_equal(rep_node_role(n), REP_ROLE_PRIMARY);

	/* Released (stopping), it stays what it was configured to be. */
	l->ops->stop(l);
	l->ops->release(l, "test", false);
	assert_true(l->ops->held(l));
	rep_node_free(n);
}

static void test_replica(void **state)
{
	rep_node *n = NULL;
	rep_lease *l;
	rep_lease_stats st;
	char url[64];

	(void)state;
	assert_int_equal(new_node(false, PRIMARY_URL, &n), 0);
	l = n->lease;
	assert_false(l->ops->held(l));
	assert_int_equal(rep_node_role(n), REP_ROLE_REPLICA);
	assert_int_equal(rep_node_primary_url(n, url, sizeof(url)), 0);
	assert_string_equal(url, PRIMARY_URL);
	l->ops->stats(l, &st);
	assert_false(st.primary);
	assert_int_equal(st.epoch, 1);
	assert_false(rep_node_caught_up(n)); /* not connected */
	rep_node_free(n);
}

static void test_replica_needs_primary_url(void **state)
{
	rep_node *n = NULL;

	(void)state;
	assert_int_equal(new_node(false, "", &n), -EINVAL);
	assert_null(n);
}

/* A static primary that stops drains its replicas first (handoff.c):
 * DRAINING, then STOPPED. */
static void test_primary_stop_drains(void **state)
{
	rep_node *n = NULL;
	char *log = NULL;
	size_t len = 0;
	FILE *sink = open_memstream(&log, &len);

	(void)state;
	assert_non_null(sink);
	assert_int_equal(new_node(true, "", &n), 0);
	lib_log_configure(LIB_LOG_INFO, LIB_LOG_TEXT, sink);
	rep_node_stop(n);
	lib_log_configure(LIB_LOG_ERROR, LIB_LOG_TEXT, NULL);
	fclose(sink);
	assert_int_equal(rep_node_role(n), REP_ROLE_STOPPED);
	assert_non_null(strstr(log, "every replica (0) has every transaction"));
	free(log);
	rep_node_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_primary),
		cmocka_unit_test(test_replica),
		cmocka_unit_test(test_replica_needs_primary_url),
		cmocka_unit_test(test_primary_stop_drains),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
