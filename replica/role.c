/*
 * The node's role: one state machine, moved only by the functions below,
 * each of which checks its transition against allowed[][] (an assert,
 * and -EPERM in a build without asserts).
 *
 *                      rep_node_new
 *               (static replica, etcd)  (static candidate)
 *                  +--------+-----------------+
 *                  v                          v
 *   +--------> REPLICA --lease acquired--> PROMOTING --stream--> PRIMARY
 *   |           |  ^ \__new primary__/                 finished    | |
 *   |           |  +-------lease lost (deadline, etcd says gone)---+ |
 *   |           |                                                    |
 *   |           |                         stop, POST /handoff        |
 *   +--lease released or lost-- DRAINING <---------------------------+
 *               |                  |
 *               +----> STOPPED <---+   (rep_node_stop; also from INIT:
 *                                       a node that never started; a
 *                                       primary always drains first)
 *
 * Invariants of each state (assert_role_state checks what it can see):
 *   INIT       rep_node_new has not decided; no thread runs; not
 *              started.
 *   REPLICA    the mount is read-only; primary_url is the primary's
 *              advertise URL or "" (unknown: the client idles); the
 *              stream client may apply records of that primary only
 *              (a stream started under another role gen is ended).
 *   PROMOTING  the lease is this node's, but the mount is still
 *              read-only; the stream client may finish the stream it was
 *              reading (the former primary's last transactions) until it
 *              ends or finish_until_ns passes, and applies nothing after
 *              that; /stream is refused. Only rep_role_lead is in this
 *              state, waiting; nothing else may move the role meanwhile.
 *   PRIMARY    the mount is writable (up to the lease's write deadline);
 *              primary_url is ""; /stream is served; the stream client
 *              idles (etcd) or was never started (static).
 *   DRAINING   still the primary for replicas (/stream served, /info
 *              says primary), but no new write transaction starts; once
 *              the open ones end the mount is read-only (handoff.c).
 *   STOPPED    final: the stream client and the streams served end, and
 *              nothing moves the role again.
 *
 * rep_role_sm.gen is bumped by every transition, so a stream client that
 * connected under another gen knows its primary is no longer the one.
 */
#include "node_i.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"

#define NS_PER_MS 1000000LL

/* allowed[from][to]: the only transitions there are. */
static const bool allowed[REP_ROLE_COUNT][REP_ROLE_COUNT] = {
	[REP_ROLE_INIT] = {[REP_ROLE_REPLICA] = true,
			   [REP_ROLE_PRIMARY] = true,
			   [REP_ROLE_STOPPED] = true},
	[REP_ROLE_REPLICA] = {[REP_ROLE_REPLICA] = true,
			      [REP_ROLE_PROMOTING] = true,
			      [REP_ROLE_STOPPED] = true},
	[REP_ROLE_PROMOTING] = {[REP_ROLE_PRIMARY] = true},
	[REP_ROLE_PRIMARY] = {[REP_ROLE_REPLICA] = true,
			      [REP_ROLE_DRAINING] = true},
	[REP_ROLE_DRAINING] = {[REP_ROLE_REPLICA] = true,
			       [REP_ROLE_STOPPED] = true},
	[REP_ROLE_STOPPED] = {false},
};

static const char *const names[REP_ROLE_COUNT] = {
	[REP_ROLE_INIT] = "init",
	[REP_ROLE_REPLICA] = "replica",
	[REP_ROLE_PROMOTING] = "promoting",
	[REP_ROLE_PRIMARY] = "primary",
	[REP_ROLE_DRAINING] = "draining",
	[REP_ROLE_STOPPED] = "stopped",
};

static bool valid(int role)
{
	return role >= 0 && role < REP_ROLE_COUNT;
}

bool rep_role_allowed(int from, int to)
{
	return valid(from) && valid(to) && allowed[from][to];
}

const char *rep_role_name(int role)
{
	return valid(role) ? names[role] : "?";
}

bool rep_role_leads(int role)
{
	return role == REP_ROLE_PRIMARY || role == REP_ROLE_DRAINING;
}

/* What can be checked of the current state's invariants (mu held). */
static void assert_role_state(const rep_node *n)
{
	const rep_role_sm *r = &n->role;

	assert(valid(r->state));
	assert(r->state == REP_ROLE_INIT ||
	       (r->primary_url && r->primary_desc));
	assert(!rep_role_leads(r->state) || !r->primary_url[0]);
	assert((r->state == REP_ROLE_PROMOTING) == (r->finish_until_ns != 0));
	(void)r;
}

/* The one place the state changes (mu held). */
static int transition_locked(rep_node *n, int to)
{
	int from = n->role.state;

	assert(rep_role_allowed(from, to));
	if (!rep_role_allowed(from, to)) {
		log_error("role: %s -> %s is not a transition there is; "
			  "refused", rep_role_name(from), rep_role_name(to));
		return -EPERM;
	}
	n->role.state = to;
	n->role.gen++;
	pthread_cond_broadcast(&n->cond);
	rep_sync_kick(n->sync); /* waiting commits look at the role (Y3) */
	return 0;
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

/* Sets the primary this node follows ("" for none), mu held. Takes the
 * strings. */
static void set_primary_locked(rep_node *n, char *url, char *desc)
{
	free(n->role.primary_url);
	free(n->role.primary_desc);
	n->role.primary_url = url;
	n->role.primary_desc = desc;
}

/* PROMOTING (mu held): what the former primary sent before it let the
 * lease go (a handoff or a clean stop sends everything, then closes the
 * stream) is applied before this node takes writes, or its replicas,
 * ahead of it, would be overwritten by its snapshot. The stream client
 * goes on until the stream ends or REP_FINISH_STREAM_MS pass (a former
 * primary that is stopped or cut off sends nothing more), and takes
 * nothing new after that (stream_apply.c, rep_cli_enter); records it has
 * received are applied first (rep_follow.in_cb). */
static void finish_stream_locked(rep_node *n)
{
	int64_t t0 = lib_clock_monotonic_ns();
	bool waited = n->follow.in_stream;

	while (n->follow.in_stream &&
	       (lib_clock_monotonic_ns() < n->role.finish_until_ns ||
		n->follow.in_cb)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * NS_PER_MS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&n->cond, &n->mu, &ts);
	}
	if (waited)
		log_info("%s the former primary's stream before taking writes "
			 "(%" PRId64 " ms)",
			 n->follow.in_stream ? "stopped reading" : "finished",
			 (int64_t)((lib_clock_monotonic_ns() - t0) /
				   NS_PER_MS));
}

static void raise_epoch_locked(rep_node *n, uint64_t epoch)
{
	if (epoch > n->epoch)
		n->epoch = epoch;
}

int rep_role_follow(rep_node *n, uint64_t epoch, const char *primary_url)
{
	char *url = dup_or_empty(primary_url);
	char *desc = dup_or_empty(primary_url);
	uint64_t e;
	int rc;

	if (!url || !desc) {
		free(url);
		free(desc);
		return -ENOMEM;
	}
	pthread_mutex_lock(&n->mu);
	rc = transition_locked(n, REP_ROLE_REPLICA);
	if (rc == 0) {
		raise_epoch_locked(n, epoch);
		set_primary_locked(n, url, desc);
		assert_role_state(n);
	}
	e = n->epoch;
	pthread_mutex_unlock(&n->mu);
	if (rc < 0) {
		free(url);
		free(desc);
		return rc;
	}
	if (n->mount)
		fs_mount_set_role(n->mount, true, desc);
	log_info("role: replica (epoch %" PRIu64 ", primary %s)", e,
		 primary_url ? primary_url : "");
	return 0;
}

int rep_role_lead(rep_node *n, uint64_t epoch)
{
	char *url = strdup(""), *desc = strdup("");
	uint64_t e;
	int rc;

	if (!url || !desc) {
		free(url);
		free(desc);
		return -ENOMEM;
	}
	pthread_mutex_lock(&n->mu);
	if (n->role.state == REP_ROLE_INIT) {
		rc = transition_locked(n, REP_ROLE_PRIMARY);
	} else {
		/* Not primary (for /info, /promote, writes) until done. */
		rc = transition_locked(n, REP_ROLE_PROMOTING);
		if (rc == 0) {
			n->role.finish_until_ns =
				lib_clock_monotonic_ns() +
				REP_FINISH_STREAM_MS * NS_PER_MS;
			assert_role_state(n);
			finish_stream_locked(n);
			n->role.finish_until_ns = 0;
			rc = transition_locked(n, REP_ROLE_PRIMARY);
		}
	}
	if (rc == 0) {
		raise_epoch_locked(n, epoch);
		set_primary_locked(n, url, desc);
		assert_role_state(n);
	}
	e = n->epoch;
	pthread_mutex_unlock(&n->mu);
	if (rc < 0) {
		free(url);
		free(desc);
		return rc;
	}
	if (n->mount) {
		/* The daemon's own handles in its mount (a replica's WAL
		 * index and locks) would stand in the writers' way. */
		fs_mount_release_apply(n->mount);
		fs_mount_set_role(n->mount, false, desc);
	}
	log_info("role: primary (epoch %" PRIu64 ")", e);
	return 0;
}

int rep_role_drain(rep_node *n)
{
	int rc = -EPERM;

	pthread_mutex_lock(&n->mu);
	if (n->role.state == REP_ROLE_PRIMARY)
		rc = transition_locked(n, REP_ROLE_DRAINING);
	pthread_mutex_unlock(&n->mu);
	return rc;
}

int rep_role_stop(rep_node *n)
{
	int rc = 0;

	pthread_mutex_lock(&n->mu);
	if (n->role.state != REP_ROLE_STOPPED)
		rc = transition_locked(n, REP_ROLE_STOPPED);
	pthread_mutex_unlock(&n->mu);
	return rc;
}

void rep_role_free(rep_role_sm *r)
{
	free(r->primary_url);
	free(r->primary_desc);
	r->primary_url = r->primary_desc = NULL;
}
