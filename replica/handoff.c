/*
 * A primary giving up its role cleanly, whatever its lease: the drain,
 * POST /handoff and POST /promote, and the stop. The lease only says
 * whether it can move (lease.h, handoff_begin) and gives itself up
 * (release).
 *
 * The drain (rep_drain), role PRIMARY -> DRAINING:
 *   1. new write transactions wait (fs_db_hold_txns), the open ones
 *      finish (at most REP_DRAIN_MS / 2, then they fail), the mount
 *      turns read-only;
 *   2. the streams served go on: each that finds nothing more to send
 *      since the drain began counts once (stream_srv.c,
 *      rep_drain_stream_idle_locked), until every connected replica has
 *      or REP_DRAIN_MS have passed;
 *   3. then the lease goes (release) and the node follows, or stops.
 * So a planned stop or handoff loses no acknowledged transaction unless
 * a replica is too slow or cut off (the log says how many confirmed).
 *
 * One drain at a time: rep_node.handoff_mu is held from the decision to
 * the release (lock order in node_i.h).
 */
#include "node_i.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "lease.h"
#include "lib/clock.h"
#include "lib/log.h"

#define NS_PER_MS 1000000LL
#define PROMOTE_TIMEOUT_MS 5000  /* POST /promote: the handoff asked */

static void hold_one(void *ctx, fs_db *db)
{
	fs_db_hold_txns(db, *(bool *)ctx);
}

static void any_open(void *ctx, fs_db *db)
{
	if (fs_db_txn_open(db))
		*(bool *)ctx = true;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = {ns / 1000000000LL, (long)(ns % 1000000000LL)};

	nanosleep(&ts, NULL);
}

/* Step 1: new transactions wait, the open ones finish (at most
 * REP_DRAIN_MS / 2), then every write fails. */
static void stop_writes(fs_mount *m)
{
	int64_t t_end = lib_clock_monotonic_ns() + REP_DRAIN_MS / 2 * NS_PER_MS;
	bool open = true;

	fs_mount_foreach(m, hold_one, &(bool){true});
	while (open && lib_clock_monotonic_ns() < t_end) {
		open = false;
		fs_mount_foreach(m, any_open, &open);
		if (open)
			sleep_ns(2 * NS_PER_MS);
	}
	fs_mount_set_role(m, true, "");
	fs_mount_foreach(m, hold_one, &(bool){false});
	/* A write that passed the read-only check just before the switch
	 * finishes (and is published) before the drain's commit gen is
	 * read: a barrier on every database's lock, and a moment. */
	open = false;
	fs_mount_foreach(m, any_open, &open);
	sleep_ns(20 * NS_PER_MS);
	fs_mount_foreach(m, any_open, &open);
}

/* Step 2 (mu held): up to the deadline for every connected replica. */
static void wait_replicas_locked(rep_node *n, int64_t end, int *want,
				 int *got)
{
	for (;;) {
		struct timespec ts;
		*want = atomic_load(&n->m.replicas);
		*got = n->drain.drained;
		if (*got >= *want || lib_clock_monotonic_ns() >= end)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * NS_PER_MS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&n->cond, &n->mu, &ts);
	}
}

void rep_drain(rep_node *n)
{
	int64_t end = lib_clock_monotonic_ns() + REP_DRAIN_MS * NS_PER_MS;
	int want = 0, got = 0;

	/* No stream counts until the gen to count from is known, once the
	 * last write has been published (stop_writes). */
	pthread_mutex_lock(&n->mu);
	n->drain.gen = UINT64_MAX;
	pthread_mutex_unlock(&n->mu);
	if (rep_role_drain(n) < 0)
		return; /* not the primary (any more) */
	if (n->mount)
		stop_writes(n->mount);
	pthread_mutex_lock(&n->mu);
	n->drain.gen = n->gen;
	pthread_cond_broadcast(&n->cond);
	wait_replicas_locked(n, end, &want, &got);
	pthread_mutex_unlock(&n->mu);
	if (got < want)
		log_warn("stopping: %d of %d replicas confirmed every "
			 "transaction within %d ms; the others may miss the "
			 "last ones", got, want, REP_DRAIN_MS);
	else
		log_info("stopping: every replica (%d) has every transaction",
			 want);
}

void rep_drain_stream_idle_locked(rep_node *n, uint64_t gen, bool *counted)
{
	if (n->role.state != REP_ROLE_DRAINING || gen < n->drain.gen ||
	    *counted)
		return;
	*counted = true;
	n->drain.drained++;
	pthread_cond_broadcast(&n->cond);
}

void rep_drain_stream_gone_locked(rep_node *n)
{
	n->drain.drained--;
}

void rep_handoff_stop(rep_node *n)
{
	rep_lease *l = n->lease;

	pthread_mutex_lock(&n->handoff_mu);
	l->ops->stop(l);
	rep_drain(n); /* nothing unless the role is PRIMARY */
	l->ops->release(l, "shutting down", false);
	pthread_mutex_unlock(&n->handoff_mu);
}

struct blocked_db {
	char name[REP_NAME_MAX + 1];
};

static void find_blocked(void *ctx, fs_db *db)
{
	struct blocked_db *b = ctx;

	if (!b->name[0] && fs_db_capture_blocked(db, NULL, 0))
		snprintf(b->name, sizeof(b->name), "%s", fs_db_name(db));
}

/* A transaction a full disk keeps out of the log would not reach the new
 * primary (docs/STORAGE.md, "A full disk"): 503, or 0. */
static unsigned refuse_blocked(rep_node *n, char *msg, size_t len)
{
	struct blocked_db b = {""};

	if (n->mount)
		fs_mount_foreach(n->mount, find_blocked, &b);
	if (!b.name[0])
		return 0;
	log_warn("handoff refused: db=%s: capture blocked: disk full (503)",
		 b.name);
	snprintf(msg, len, "db=%s: capture blocked: disk full; a handoff now "
		 "would lose its committed transactions", b.name);
	return 503;
}

unsigned rep_handoff(rep_node *n, uint64_t to, char *msg, size_t len)
{
	rep_lease *l = n->lease;
	int64_t t0 = lib_clock_monotonic_ns();
	unsigned st;
	char buf[32] = "";

	pthread_mutex_lock(&n->handoff_mu);
	st = l->ops->handoff_begin(l, 0, msg, len);
	if (st == 0)
		st = refuse_blocked(n, msg, len);
	if (st == 0 && to)
		st = l->ops->handoff_begin(l, to, msg, len);
	if (st != 0) {
		pthread_mutex_unlock(&n->handoff_mu);
		return st;
	}
	rep_drain(n);
	l->ops->release(l, "handing off", true);
	pthread_mutex_unlock(&n->handoff_mu);
	if (to)
		snprintf(buf, sizeof(buf), "%016" PRIx64, to);
	log_info("handed the lease of epoch %" PRIu64 " off%s%s after %" PRId64
		 " ms", l->ops->epoch(l), to ? " to " : "", buf,
		 (int64_t)((lib_clock_monotonic_ns() - t0) / NS_PER_MS));
	snprintf(msg, len, "handed off%s%s\n", to ? " to " : "", buf);
	return 200;
}

/* Up to timeout_ms for this node to be the primary. */
static bool wait_primary(rep_node *n, int64_t timeout_ms)
{
	int64_t end = lib_clock_monotonic_ns() + timeout_ms * NS_PER_MS;
	bool primary;

	pthread_mutex_lock(&n->mu);
	while (!(primary = rep_role_leads(n->role.state)) &&
	       n->role.state != REP_ROLE_STOPPED &&
	       lib_clock_monotonic_ns() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * NS_PER_MS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&n->cond, &n->mu, &ts);
	}
	pthread_mutex_unlock(&n->mu);
	return primary;
}

unsigned rep_promote(rep_node *n, char *msg, size_t len)
{
	rep_lease *l = n->lease;
	rep_http_body ans = REP_HTTP_BODY_INIT(255, false);
	char url[1200], primary[1024], err[CURL_ERROR_SIZE];
	long status = 0;
	rep_http_tls tls;

	if (l->ops->fixed) {
		snprintf(msg, len, "promote needs lease.type etcd");
		return 409;
	}
	if (rep_node_is_primary(n)) {
		snprintf(msg, len, "already the primary\n");
		return 200;
	}
	if (!n->o.lease.candidate) {
		snprintf(msg, len, "lease.candidate is false on this node");
		return 409;
	}
	if (rep_node_primary_url(n, primary, sizeof(primary)) < 0) {
		snprintf(msg, len, "the primary is not known yet");
		return 503;
	}
	snprintf(url, sizeof(url), "%s/handoff?to=%016" PRIx64, primary,
		 n->o.node_id);
	tls = rep_node_client_tls(n);
	if (rep_http_call("POST", url, n->o.http.token, &tls,
			  PROMOTE_TIMEOUT_MS, &status, &ans, err,
			  sizeof(err)) < 0)
		status = 0;
	if (status != 200) {
		snprintf(msg, len, "the primary refused the handoff (%ld): %s",
			 status, rep_http_body_text(&ans));
		rep_http_body_free(&ans);
		return 502;
	}
	rep_http_body_free(&ans);
	if (!wait_primary(n, PROMOTE_TIMEOUT_MS)) {
		snprintf(msg, len, "the primary handed off, but this node did "
			 "not become primary within 5 s");
		return 504;
	}
	snprintf(msg, len, "this node is the primary\n");
	return 200;
}
