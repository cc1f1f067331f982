/*
 * The etcd lease: elects the primary, fences it, and tells replicas where
 * it is. Keys (docs/PROTOCOL.md, "Lease keys in etcd"):
 *
 *   <prefix>/cluster   "%016x": the cluster ID, created if absent by the
 *                      first candidate; a node of another cluster is
 *                      refused (it stays a read-only replica and says so)
 *   <prefix>/primary   {"node", "hostname", "url", "cluster"} JSON,
 *                      attached to the primary's lease; created only if
 *                      absent. Its create_revision is the epoch.
 *   <prefix>/handoff   "%016x": during a handoff to that node, attached
 *                      to a lease of one TTL; only that node acquires
 *                      while it exists.
 *
 * States of this node's lease (one thread, "lease", makes every
 * transition but FENCE, which the watchdog thread makes, and the release,
 * which the node makes (handoff.c); all under l->mu). The node's role
 * follows (role.c): PRIMARY is rep_role_lead, FENCED and FOLLOW
 * rep_role_follow.
 *
 *   FOLLOW --key absent, candidate--> ACQUIRE --created--> PRIMARY
 *     ^  \--key present: follow its url and epoch (watch it)
 *     |                      ACQUIRE --someone else's--> FOLLOW
 *     |
 *   PRIMARY: keepalive every TTL/3. deadline = when the last successful
 *            keepalive (or the grant) was sent + the TTL granted - a
 *            margin, on CLOCK_BOOTTIME.
 *     --deadline passed (etcd unreachable, or this process stopped)-->
 *   FENCED:  read-only; keeps sending keepalives:
 *     --keepalive answers with a TTL (the lease never lapsed: nobody
 *       else can have the key)--> PRIMARY again, same epoch
 *     --keepalive says the lease is gone--> FOLLOW
 *   PRIMARY --stop (threads joined), the node drains, release-->
 *            FENCED, revoke --> (end)
 *   PRIMARY --POST /handoff: handoff_begin (the handoff key), the node
 *            drains, release--> FOLLOW, revoke (no acquiring for one TTL
 *            unless a handoff names this node)
 *
 * Invariant: the mount is writable only in PRIMARY, and only before the
 * deadline: the watchdog checks every WATCHDOG_MS, and the mount's write
 * path refuses writes at or after it (rep_node.write_deadline_ns).
 *
 * Each transition to PRIMARY and to FENCED/FOLLOW is appended to
 * <data.dir>/lease.log ("<wall ms> primary epoch=E node=N" and
 * "<wall ms> fenced epoch=E node=N reason=..."): which epoch each
 * node's LTX records belong to, for the tests' epoch checker.
 */
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "elect.h"
#include "etcd.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "node_i.h"

#define WATCHDOG_MS 20
#define WATCH_MAX_MS 5000        /* re-read the key at least this often */
#define RETRY_MS 250
#define NS_PER_MS 1000000LL

enum lstate { L_FOLLOW, L_PRIMARY, L_FENCED, L_REFUSED };

struct lease_etcd {
	rep_lease base;
	rep_node *n;
	uint64_t node_id;        /* this node's */
	bool candidate;          /* lease.candidate */
	rep_etcd *etcd;
	char *key_primary, *key_cluster, *key_handoff;
	char *key_prefix;        /* lease.etcd.prefix, no trailing '/' */
	int64_t ttl_s;
	int64_t margin_ns;
	atomic_bool stop;        /* also cancels a watch */
	/* For /metrics (ops->stats). */
	atomic_uint_fast64_t renewals, renewal_failures, acquisitions;
	pthread_t thr, dog;
	bool started;

	pthread_mutex_t mu;      /* guards below; before rep_node.mu */
	int state;               /* enum lstate */
	int64_t lease_id;        /* ours, 0 none */
	int64_t epoch;           /* of the key we hold or follow */
	int64_t deadline_ns;     /* PRIMARY: CLOCK_BOOTTIME */
	int64_t no_acquire_ns;   /* after a handoff: CLOCK_MONOTONIC */
	char *following;         /* url of the primary we follow */
};

static void lease_log(struct lease_etcd *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void lease_log(struct lease_etcd *l, const char *fmt, ...)
{
	char path[PATH_MAX], line[512];
	va_list ap;
	int len, fd;

	len = snprintf(line, sizeof(line), "%" PRId64 " ", lib_clock_wall_ms());
	va_start(ap, fmt);
	len += vsnprintf(line + len, sizeof(line) - (size_t)len - 1, fmt, ap);
	va_end(ap);
	if (len > (int)sizeof(line) - 2)
		len = (int)sizeof(line) - 2;
	line[len++] = '\n';
	snprintf(path, sizeof(path), "%s/lease.log",
		 rep_node_options(l->n)->data_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, (size_t)len) != len)
		log_warn("cannot append to %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void sleep_ms(struct lease_etcd *l, int64_t ms)
{
	int64_t end = lib_clock_monotonic_ns() + ms * NS_PER_MS;

	while (!atomic_load(&l->stop)) {
		int64_t left = end - lib_clock_monotonic_ns();
		struct timespec ts;
		if (left <= 0)
			break;
		if (left > 50 * NS_PER_MS)
			left = 50 * NS_PER_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left;
		nanosleep(&ts, NULL);
	}
}

/* --- transitions (l->mu held) --- */

static void to_primary(struct lease_etcd *l, int64_t deadline_ns)
{
	l->state = L_PRIMARY;
	l->deadline_ns = deadline_ns;
	rep_node_set_write_deadline(l->n, deadline_ns);
	free(l->following);
	l->following = NULL;
	rep_role_lead(l->n, (uint64_t)l->epoch);
	lease_log(l, "primary epoch=%" PRId64 " node=%016" PRIx64, l->epoch,
		  l->node_id);
}

/* PRIMARY -> FENCED (lease may still be ours) or FOLLOW (it is gone). */
static void to_readonly(struct lease_etcd *l, int state, const char *why)
{
	bool was = l->state == L_PRIMARY;

	l->state = state;
	if (state == L_FOLLOW)
		l->lease_id = 0;
	if (!was)
		return;
	rep_role_follow(l->n, (uint64_t)l->epoch, "");
	lease_log(l, "fenced epoch=%" PRId64 " node=%016" PRIx64 " reason=%s",
		  l->epoch, l->node_id, why);
	log_warn("epoch %" PRId64 ": no longer accepting writes: %s", l->epoch,
		 why);
}

static void follow(struct lease_etcd *l, int64_t epoch, const char *url)
{
	bool same = l->following && strcmp(l->following, url) == 0 &&
		    l->epoch == epoch;

	if (same)
		return;
	if (rep_node_see_epoch(l->n, (uint64_t)epoch) < 0) {
		log_error("etcd says the primary (%s) holds epoch %" PRId64
			  ", older than the epoch %" PRIu64 " this node has "
			  "seen: refusing to follow it (was etcd's data "
			  "reset?)", url, epoch, rep_node_epoch(l->n));
		return;
	}
	free(l->following);
	l->following = strdup(url);
	l->epoch = epoch;
	l->state = L_FOLLOW;
	rep_role_follow(l->n, (uint64_t)epoch, url);
}

/* --- the watchdog: read-only at the deadline, whatever else happens --- */

static void *dog_main(void *arg)
{
	struct lease_etcd *l = arg;

	while (!atomic_load(&l->stop)) {
		struct timespec ts = {0, WATCHDOG_MS * NS_PER_MS};
		pthread_mutex_lock(&l->mu);
		if (l->state == L_PRIMARY &&
		    lib_clock_boottime_ns() >= l->deadline_ns)
			to_readonly(l, L_FENCED, "the lease deadline passed "
				    "without a successful renewal");
		pthread_mutex_unlock(&l->mu);
		clock_nanosleep(CLOCK_BOOTTIME, 0, &ts, NULL);
	}
	return NULL;
}

/* --- the cluster key --- */

static int parse_hex64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 16);
	return errno || end == s || *end || *out == 0 ? -EBADMSG : 0;
}

/* 0 when this node belongs to the cluster in etcd (creating it when a
 * candidate finds none), 1 to try again later, -EPROTO when refused. */
static int check_cluster(struct lease_etcd *l)
{
	rep_node *n = l->n;
	rep_etcd_kv kv = {0};
	uint64_t mine, theirs, had;
	bool created;
	char buf[32];
	int rc;

	mine = had = rep_node_cluster(n);
	rc = rep_etcd_get(l->etcd, l->key_cluster, 2000, &kv, NULL);
	if (rc < 0)
		return 1;
	if (!kv.found) {
		if (!l->candidate)
			return 1; /* a candidate creates it */
		while (mine == 0)
			if (getrandom(&mine, sizeof(mine), 0) !=
			    (ssize_t)sizeof(mine))
				mine = (uint64_t)lib_clock_wall_ms();
		snprintf(buf, sizeof(buf), "%016" PRIx64, mine);
		rc = rep_etcd_create(l->etcd, l->key_cluster, buf, 0, 2000,
				     &created, &kv);
		if (rc < 0 || !kv.found) {
			rep_etcd_kv_clear(&kv);
			return 1;
		}
		if (created)
			log_info("created cluster %s in etcd (%s)", buf,
				 l->key_cluster);
	}
	rc = parse_hex64(kv.value, &theirs);
	if (rc < 0) {
		log_error("etcd key %s holds \"%.40s\", not a cluster ID; "
			  "refusing to take part", l->key_cluster, kv.value);
		rep_etcd_kv_clear(&kv);
		return -EPROTO;
	}
	rep_etcd_kv_clear(&kv);
	/* Only an ID this node already had can conflict: one it made up
	 * just now and lost the race to create is simply not used. */
	if (had && had != theirs) {
		log_error("this node belongs to cluster %016" PRIx64 " (its "
			  "data directory says so) but etcd's %s is cluster "
			  "%016"
			  PRIx64 "; refusing to take part: this node stays "
			  "read-only (wrong lease.etcd.prefix, or a data "
			  "directory from another cluster)", had,
			  l->key_cluster, theirs);
		return -EPROTO;
	}
	if (!had && rep_node_set_cluster(n, theirs) < 0)
		return 1;
	return 0;
}

/* --- the primary key --- */

static char *primary_value(struct lease_etcd *l)
{
	const rep_node_opts *o = rep_node_options(l->n);
	char node[32], cluster[32];
	json_t *j;
	char *s;

	snprintf(node, sizeof(node), "%016" PRIx64, l->node_id);
	snprintf(cluster, sizeof(cluster), "%016" PRIx64,
		 rep_node_cluster(l->n));
	j = json_pack("{ssssssss}", "node", node, "hostname",
		      o->lease.hostname, "url", o->lease.advertise_url,
		      "cluster", cluster);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return s;
}

/* The url and node of a primary key's value; false when malformed. */
static bool parse_primary(const rep_etcd_kv *kv, char *url, size_t cap,
			  uint64_t *node)
{
	json_t *j = json_loads(kv->value, 0, NULL);
	json_t *u = json_object_get(j, "url"), *nd = json_object_get(j, "node");
	bool ok = json_is_string(u) && json_is_string(nd) &&
		  strlen(json_string_value(u)) < cap &&
		  parse_hex64(json_string_value(nd), node) == 0;

	if (ok)
		snprintf(url, cap, "%s", json_string_value(u));
	json_decref(j);
	return ok;
}

/* Key absent: false while a handoff names another node (or this node
 * just handed off). */
static bool may_acquire(struct lease_etcd *l)
{
	rep_etcd_kv kv = {0};
	uint64_t to = 0;
	bool ok = true;

	if (rep_etcd_get(l->etcd, l->key_handoff, 2000, &kv, NULL) < 0)
		return false;
	if (kv.found && parse_hex64(kv.value, &to) == 0) {
		rep_etcd_kv_clear(&kv);
		return to == l->node_id; /* handed to us, or not */
	}
	rep_etcd_kv_clear(&kv);
	pthread_mutex_lock(&l->mu);
	if (l->no_acquire_ns && lib_clock_monotonic_ns() < l->no_acquire_ns)
		ok = false;
	pthread_mutex_unlock(&l->mu);
	/* Synchronous replication: the furthest candidate (elect.c). */
	if (ok && rep_sync_on(l->n->sync))
		ok = rep_elect_may_acquire(l->n, l->etcd, l->key_prefix,
					   l->node_id, l->ttl_s);
	return ok;
}

/* FOLLOW, key absent: grant, create-if-absent. */
static void try_acquire(struct lease_etcd *l)
{
	rep_etcd_kv kv = {0};
	int64_t id = 0, ttl = 0, sent;
	char *val = primary_value(l);
	bool created = false;
	int rc;

	if (!val)
		return;
	sent = lib_clock_boottime_ns();
	rc = rep_etcd_grant(l->etcd, l->ttl_s, 2000, &id, &ttl);
	if (rc < 0) {
		free(val);
		return;
	}
	rc = rep_etcd_create(l->etcd, l->key_primary, val, id, 2000, &created,
			     &kv);
	free(val);
	if (rc < 0 || !created) {
		rep_etcd_revoke(l->etcd, id, 2000);
		rep_etcd_kv_clear(&kv);
		return;
	}
	if (rep_node_see_epoch(l->n, (uint64_t)kv.create_rev) < 0) {
		log_error("acquired the lease at revision %" PRId64 ", older "
			  "than the epoch %" PRIu64 " this node has seen; "
			  "giving it back (was etcd's data reset?)",
			  kv.create_rev, rep_node_epoch(l->n));
		rep_etcd_revoke(l->etcd, id, 2000);
		rep_etcd_kv_clear(&kv);
		sleep_ms(l, 5000);
		return;
	}
	atomic_fetch_add(&l->acquisitions, 1);
	pthread_mutex_lock(&l->mu);
	l->lease_id = id;
	l->epoch = kv.create_rev;
	if (lib_clock_boottime_ns() < sent + ttl * 1000000000LL - l->margin_ns)
		to_primary(l, sent + ttl * 1000000000LL - l->margin_ns);
	else
		l->state = L_FENCED; /* too slow already: renew first */
	pthread_mutex_unlock(&l->mu);
	log_info("acquired the lease: epoch %" PRId64 ", TTL %" PRId64 " s",
		 kv.create_rev, ttl);
	{
		rep_etcd_kv h = {0};
		bool gone;
		int rc2 = rep_etcd_get(l->etcd, l->key_handoff, 2000, &h,
				       NULL);
		if (rc2 == 0 && h.found)
			rep_etcd_delete_if(l->etcd, l->key_handoff,
					   h.create_rev, 2000, &gone);
		rep_etcd_kv_clear(&h);
	}
	rep_etcd_kv_clear(&kv);
}

struct watch_ctx {
	int64_t create_rev;
};

static bool on_event(void *ctx, int type, const rep_etcd_kv *kv, int64_t rev)
{
	struct watch_ctx *w = ctx;

	return type == REP_ETCD_DELETE || kv->create_rev != w->create_rev;
}

/* FOLLOW: read the key; follow it, or acquire; then watch for a change. */
static void follow_step(struct lease_etcd *l)
{
	rep_etcd_kv kv = {0};
	struct watch_ctx w = {0};
	int64_t rev = 0;
	uint64_t node = 0;
	char url[1024];
	int rc = rep_etcd_get(l->etcd, l->key_primary, 2000, &kv, &rev);

	if (rc < 0) {
		sleep_ms(l, RETRY_MS);
		return;
	}
	if (!kv.found) {
		if (l->candidate && may_acquire(l)) {
			try_acquire(l);
			pthread_mutex_lock(&l->mu);
			rc = l->state == L_FOLLOW;
			pthread_mutex_unlock(&l->mu);
			if (!rc)
				return;
		}
	} else if (!parse_primary(&kv, url, sizeof(url), &node)) {
		log_error("etcd key %s holds \"%.80s\", not a primary's "
			  "description; waiting for it to change",
			  l->key_primary, kv.value);
	} else if (node == l->node_id) {
		int64_t mine;
		pthread_mutex_lock(&l->mu);
		mine = l->lease_id;
		pthread_mutex_unlock(&l->mu);
		if (kv.lease != mine) {
			log_info("etcd names this node primary under lease %"
				 PRId64 " of an earlier run; revoking it",
				 kv.lease);
			rep_etcd_revoke(l->etcd, kv.lease, 2000);
			rep_etcd_kv_clear(&kv);
			return;
		}
	} else {
		pthread_mutex_lock(&l->mu);
		follow(l, kv.create_rev, url);
		pthread_mutex_unlock(&l->mu);
	}
	w.create_rev = kv.found ? kv.create_rev : 0;
	rep_etcd_kv_clear(&kv);
	rc = rep_etcd_watch(l->etcd, l->key_primary, rev + 1, WATCH_MAX_MS,
			    on_event, &w, &l->stop);
	if (rc < 0 && rc != -ESTALE)
		sleep_ms(l, RETRY_MS);
}

/* PRIMARY or FENCED: renew every TTL/3; resume or step down. */
static void primary_step(struct lease_etcd *l)
{
	int64_t id, ttl = 0, sent, next;
	int rc;

	pthread_mutex_lock(&l->mu);
	id = l->lease_id;
	pthread_mutex_unlock(&l->mu);
	sent = lib_clock_boottime_ns();
	rc = rep_etcd_keepalive(l->etcd, id, l->ttl_s * 1000 / 3, &ttl);
	atomic_fetch_add(rc == 0 ? &l->renewals : &l->renewal_failures, 1);
	pthread_mutex_lock(&l->mu);
	if (rc == 0) {
		int64_t dl = sent + ttl * 1000000000LL - l->margin_ns;
		if (l->state == L_FENCED) {
			if (lib_clock_boottime_ns() < dl) {
				log_info("the lease of epoch %" PRId64 " is "
					 "still ours: accepting writes again",
					 l->epoch);
				to_primary(l, dl);
			}
		} else if (dl > l->deadline_ns) {
			l->deadline_ns = dl;
			rep_node_set_write_deadline(l->n, dl);
		}
	} else if (rc == -ENOENT) {
		to_readonly(l, L_FOLLOW, "etcd says the lease is gone");
		l->lease_id = 0;
	}
	pthread_mutex_unlock(&l->mu);
	if (rc == -ENOENT)
		return;
	next = rc == 0 ? l->ttl_s * 1000 / 3 : RETRY_MS;
	sleep_ms(l, next - (lib_clock_boottime_ns() - sent) / NS_PER_MS);
}

static void *lease_main(void *arg)
{
	struct lease_etcd *l = arg;
	int rc;

	/* The cluster first: nothing else until this node is part of it. */
	while (!atomic_load(&l->stop)) {
		rc = check_cluster(l);
		if (rc == 0)
			break;
		if (rc < 0) {
			pthread_mutex_lock(&l->mu);
			l->state = L_REFUSED;
			pthread_mutex_unlock(&l->mu);
			return NULL;
		}
		sleep_ms(l, RETRY_MS);
	}
	while (!atomic_load(&l->stop)) {
		int st;
		pthread_mutex_lock(&l->mu);
		st = l->state;
		pthread_mutex_unlock(&l->mu);
		if (st == L_FOLLOW)
			follow_step(l);
		else
			primary_step(l);
	}
	return NULL;
}

/* --- the ops (lease.h) --- */

static int etcd_start(rep_lease *base)
{
	struct lease_etcd *l = (struct lease_etcd *)base;
	int rc = pthread_create(&l->thr, NULL, lease_main, l);

	if (rc != 0)
		return -rc;
	rc = pthread_create(&l->dog, NULL, dog_main, l);
	if (rc != 0) {
		atomic_store(&l->stop, true);
		pthread_join(l->thr, NULL);
		return -rc;
	}
	l->started = true;
	return 0;
}

static void etcd_stop(rep_lease *base)
{
	struct lease_etcd *l = (struct lease_etcd *)base;

	if (!l->started)
		return;
	atomic_store(&l->stop, true);
	pthread_join(l->thr, NULL);
	pthread_join(l->dog, NULL);
	l->started = false;
}

static bool etcd_held(rep_lease *base)
{
	struct lease_etcd *l = (struct lease_etcd *)base;
	bool held;

	pthread_mutex_lock(&l->mu);
	held = l->state == L_PRIMARY;
	pthread_mutex_unlock(&l->mu);
	return held;
}

static uint64_t etcd_epoch(rep_lease *base)
{
	struct lease_etcd *l = (struct lease_etcd *)base;
	int64_t e;

	pthread_mutex_lock(&l->mu);
	e = l->epoch;
	pthread_mutex_unlock(&l->mu);
	return e > 0 ? (uint64_t)e : 0;
}

/* Before the drain: this node must hold the lease; with to != 0, only
 * `to` may take the key for one TTL (<prefix>/handoff). */
static unsigned etcd_handoff_begin(rep_lease *base, uint64_t to, char *msg,
				   size_t len)
{
	struct lease_etcd *l = (struct lease_etcd *)base;
	rep_etcd_kv kv = {0};
	int64_t hid = 0, ttl = 0;
	bool created = false;
	char buf[32];

	if (!etcd_held(base)) {
		snprintf(msg, len, "this node is not the primary");
		return 409;
	}
	if (!to)
		return 0;
	snprintf(buf, sizeof(buf), "%016" PRIx64, to);
	if (rep_etcd_grant(l->etcd, l->ttl_s, 2000, &hid, &ttl) < 0 ||
	    rep_etcd_create(l->etcd, l->key_handoff, buf, hid, 2000,
			    &created, &kv) < 0 || !created) {
		rep_etcd_kv_clear(&kv);
		if (hid)
			rep_etcd_revoke(l->etcd, hid, 2000);
		snprintf(msg, len, "etcd: cannot record the handoff "
			 "(another one under way, or etcd unreachable)");
		return 503;
	}
	rep_etcd_kv_clear(&kv);
	return 0;
}

/* The lease goes: read-only (FENCED, or FOLLOW after a handoff, when no
 * acquiring is tried for one TTL), then revoked so that another
 * candidate takes over at once. */
static void etcd_release(rep_lease *base, const char *why, bool handed_off)
{
	struct lease_etcd *l = (struct lease_etcd *)base;
	int64_t id = 0, epoch;

	pthread_mutex_lock(&l->mu);
	if (l->state == L_PRIMARY || l->state == L_FENCED) {
		id = l->lease_id; /* to_readonly forgets it in FOLLOW */
		to_readonly(l, handed_off ? L_FOLLOW : L_FENCED, why);
		l->lease_id = 0;
	}
	if (handed_off)
		l->no_acquire_ns = lib_clock_monotonic_ns() +
				   l->ttl_s * 1000000000LL;
	epoch = l->epoch;
	pthread_mutex_unlock(&l->mu);
	if (id) {
		int rc = rep_etcd_revoke(l->etcd, id, 2000);
		if (handed_off)
			return;
		if (rc == 0 || rc == -ENOENT)
			log_info("revoked the lease of epoch %" PRId64
				 ": another node may take over", epoch);
		else
			log_warn("could not revoke the lease (%s); another "
				 "node takes over when it expires",
				 strerror(-rc));
	}
}

static void etcd_stats(rep_lease *base, rep_lease_stats *out)
{
	struct lease_etcd *l = (struct lease_etcd *)base;

	pthread_mutex_lock(&l->mu);
	out->primary = l->state == L_PRIMARY;
	out->epoch = l->epoch > 0 ? (uint64_t)l->epoch : 0;
	out->deadline_left_ns = 0;
	if (out->primary) {
		int64_t left = l->deadline_ns - lib_clock_boottime_ns();
		out->deadline_left_ns = left > 0 ? left : 0;
	}
	pthread_mutex_unlock(&l->mu);
	out->renewals = (uint64_t)atomic_load(&l->renewals);
	out->renewal_failures = (uint64_t)atomic_load(&l->renewal_failures);
	out->acquisitions = (uint64_t)atomic_load(&l->acquisitions);
	out->etcd_errors = rep_etcd_errors(l->etcd);
}

static void etcd_free(rep_lease *base)
{
	struct lease_etcd *l = (struct lease_etcd *)base;

	if (!l)
		return;
	etcd_stop(base);
	rep_etcd_free(l->etcd);
	free(l->key_primary);
	free(l->key_cluster);
	free(l->key_handoff);
	free(l->key_prefix);
	free(l->following);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static const rep_lease_ops etcd_ops = {
	.type = "etcd",
	.fixed = false,
	.start = etcd_start,
	.stop = etcd_stop,
	.held = etcd_held,
	.epoch = etcd_epoch,
	.handoff_begin = etcd_handoff_begin,
	.release = etcd_release,
	.stats = etcd_stats,
	.free = etcd_free,
};

static int make_keys(struct lease_etcd *l, const char *prefix)
{
	size_t plen;

	if (!prefix || !prefix[0])
		prefix = "/ltxfs";
	plen = strlen(prefix);
	while (plen > 1 && prefix[plen - 1] == '/')
		plen--;
	l->key_primary = malloc(plen + 16);
	l->key_cluster = malloc(plen + 16);
	l->key_handoff = malloc(plen + 16);
	l->key_prefix = strndup(prefix, plen);
	if (!l->key_primary || !l->key_cluster || !l->key_handoff ||
	    !l->key_prefix)
		return -ENOMEM;
	snprintf(l->key_primary, plen + 16, "%.*s/primary", (int)plen, prefix);
	snprintf(l->key_cluster, plen + 16, "%.*s/cluster", (int)plen, prefix);
	snprintf(l->key_handoff, plen + 16, "%.*s/handoff", (int)plen, prefix);
	return 0;
}

int rep_lease_etcd_new(rep_node *n, rep_lease **out)
{
	const rep_node_opts *o = rep_node_options(n);
	const rep_etcd_opts *eo = &o->lease.etcd;
	struct lease_etcd *l = calloc(1, sizeof(*l));
	int rc;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	pthread_mutex_init(&l->mu, NULL);
	l->base.ops = &etcd_ops;
	l->base.n = n;
	l->n = n;
	l->node_id = o->node_id;
	l->candidate = o->lease.candidate;
	rc = make_keys(l, eo->prefix);
	if (rc < 0) {
		etcd_free(&l->base);
		return rc;
	}
	l->ttl_s = (eo->ttl_ms + 999) / 1000;
	if (l->ttl_s < 1)
		l->ttl_s = 1;
	/* Read-only this long before etcd could expire the lease: clock
	 * rate differences and the time the switch itself takes. */
	l->margin_ns = l->ttl_s * 1000000000LL / 20;
	if (l->margin_ns < 100 * NS_PER_MS)
		l->margin_ns = 100 * NS_PER_MS;
	rc = rep_etcd_new(eo->endpoints, eo->nendpoints, eo->username,
			  eo->password, &l->etcd);
	if (rc == 0)
		rc = rep_etcd_set_tls(l->etcd, eo->tls_ca_file,
				      eo->tls_cert_file, eo->tls_key_file);
	if (rc < 0) {
		log_error("lease.etcd: %s", rc != -EINVAL ? strerror(-rc)
				: l->etcd ? "tls-cert-file and tls-key-file "
					    "go together"
					  : "no endpoints");
		etcd_free(&l->base);
		return rc;
	}
	l->state = L_FOLLOW;
	/* Every node starts as a replica that does not know the primary. */
	rc = rep_role_follow(n, 0, "");
	if (rc < 0) {
		etcd_free(&l->base);
		return rc;
	}
	*out = &l->base;
	return 0;
}
