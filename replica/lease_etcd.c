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
 * States of this node (one thread, "lease", makes every transition but
 * FENCE, which the watchdog thread makes, and the handoff, which an HTTP
 * thread makes; all under l->mu):
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
 *   PRIMARY --stop--> DRAIN --> read-only, revoke --> (end)
 *   PRIMARY --POST /handoff--> DRAIN --> revoke --> FOLLOW (no acquiring
 *            for one TTL unless a handoff names this node)
 *   DRAIN:   the mount read-only, the role still primary so the streams
 *            go on, until every connected replica found nothing more to
 *            send (at most DRAIN_MS).
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

#include <curl/curl.h>

#include "etcd.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "node_i.h"

#define WATCHDOG_MS 20
#define WATCH_MAX_MS 5000        /* re-read the key at least this often */
#define RETRY_MS 250
#define DRAIN_MS 1000            /* clean stop: wait for replicas */
#define NS_PER_MS 1000000LL

enum lstate { L_FOLLOW, L_PRIMARY, L_FENCED, L_REFUSED };

struct rep_lease {
	rep_node *n;
	rep_etcd *etcd;
	char *key_primary, *key_cluster, *key_handoff;
	int64_t ttl_s;
	int64_t margin_ns;
	atomic_bool stop;        /* also cancels a watch */
	/* For /metrics (rep_lease_get_stats). */
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

static void lease_log(rep_lease *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void lease_log(rep_lease *l, const char *fmt, ...)
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
	snprintf(path, sizeof(path), "%s/lease.log", l->n->o.data_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, (size_t)len) != len)
		log_warn("cannot append to %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void sleep_ms(rep_lease *l, int64_t ms)
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

static void to_primary(rep_lease *l, int64_t deadline_ns)
{
	l->state = L_PRIMARY;
	l->deadline_ns = deadline_ns;
	atomic_store(&l->n->write_deadline_ns, deadline_ns);
	free(l->following);
	l->following = NULL;
	rep_node_set_role(l->n, REP_ROLE_PRIMARY, (uint64_t)l->epoch, "");
	lease_log(l, "primary epoch=%" PRId64 " node=%016" PRIx64, l->epoch,
		  l->n->o.node_id);
}

/* PRIMARY -> FENCED (lease may still be ours) or FOLLOW (it is gone). */
static void to_readonly(rep_lease *l, int state, const char *why)
{
	bool was = l->state == L_PRIMARY;

	l->state = state;
	if (state == L_FOLLOW)
		l->lease_id = 0;
	if (!was)
		return;
	rep_node_set_role(l->n, REP_ROLE_REPLICA, (uint64_t)l->epoch, "");
	lease_log(l, "fenced epoch=%" PRId64 " node=%016" PRIx64 " reason=%s",
		  l->epoch, l->n->o.node_id, why);
	log_warn("epoch %" PRId64 ": no longer accepting writes: %s", l->epoch,
		 why);
}

static void follow(rep_lease *l, int64_t epoch, const char *url)
{
	bool same = l->following && strcmp(l->following, url) == 0 &&
		    l->epoch == epoch;

	if (same)
		return;
	if (rep_node_see_epoch(l->n, (uint64_t)epoch) < 0) {
		log_error("etcd says the primary (%s) holds epoch %" PRId64
			  ", older than the epoch %" PRIu64 " this node has "
			  "seen: refusing to follow it (was etcd's data "
			  "reset?)", url, epoch, l->n->epoch);
		return;
	}
	free(l->following);
	l->following = strdup(url);
	l->epoch = epoch;
	l->state = L_FOLLOW;
	rep_node_set_role(l->n, REP_ROLE_REPLICA, (uint64_t)epoch, url);
}

/* --- the watchdog: read-only at the deadline, whatever else happens --- */

static void *dog_main(void *arg)
{
	rep_lease *l = arg;

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
static int check_cluster(rep_lease *l)
{
	rep_node *n = l->n;
	rep_etcd_kv kv = {0};
	uint64_t mine, theirs, had;
	bool created;
	char buf[32];
	int rc;

	pthread_mutex_lock(&n->mu);
	mine = had = n->cluster_id;
	pthread_mutex_unlock(&n->mu);
	rc = rep_etcd_get(l->etcd, l->key_cluster, 2000, &kv, NULL);
	if (rc < 0)
		return 1;
	if (!kv.found) {
		if (!n->o.candidate)
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

static char *primary_value(rep_lease *l)
{
	rep_node *n = l->n;
	char node[32], cluster[32];
	json_t *j;
	char *s;

	snprintf(node, sizeof(node), "%016" PRIx64, n->o.node_id);
	pthread_mutex_lock(&n->mu);
	snprintf(cluster, sizeof(cluster), "%016" PRIx64, n->cluster_id);
	pthread_mutex_unlock(&n->mu);
	j = json_pack("{ssssssss}", "node", node, "hostname", n->o.hostname,
		      "url", n->advertise, "cluster", cluster);
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
static bool may_acquire(rep_lease *l)
{
	rep_etcd_kv kv = {0};
	uint64_t to = 0;
	bool ok = true;

	if (rep_etcd_get(l->etcd, l->key_handoff, 2000, &kv, NULL) < 0)
		return false;
	if (kv.found && parse_hex64(kv.value, &to) == 0) {
		rep_etcd_kv_clear(&kv);
		return to == l->n->o.node_id; /* handed to us, or not */
	}
	rep_etcd_kv_clear(&kv);
	pthread_mutex_lock(&l->mu);
	if (l->no_acquire_ns && lib_clock_monotonic_ns() < l->no_acquire_ns)
		ok = false;
	pthread_mutex_unlock(&l->mu);
	return ok;
}

/* FOLLOW, key absent: grant, create-if-absent. */
static void try_acquire(rep_lease *l)
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
			  kv.create_rev, l->n->epoch);
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
static void follow_step(rep_lease *l)
{
	rep_node *n = l->n;
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
		if (n->o.candidate && may_acquire(l)) {
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
	} else if (node == n->o.node_id) {
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
static void primary_step(rep_lease *l)
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
			atomic_store(&l->n->write_deadline_ns, dl);
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
	rep_lease *l = arg;
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

/* --- life cycle --- */

int rep_lease_new(rep_node *n, rep_lease **out)
{
	rep_lease *l = calloc(1, sizeof(*l));
	const char *prefix = n->o.etcd_prefix && n->o.etcd_prefix[0]
				     ? n->o.etcd_prefix
				     : "/ltxfs";
	size_t plen = strlen(prefix);
	int rc;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	pthread_mutex_init(&l->mu, NULL);
	l->n = n;
	while (plen > 1 && prefix[plen - 1] == '/')
		plen--;
	l->key_primary = malloc(plen + 16);
	l->key_cluster = malloc(plen + 16);
	l->key_handoff = malloc(plen + 16);
	if (!l->key_primary || !l->key_cluster || !l->key_handoff) {
		rep_lease_free(l);
		return -ENOMEM;
	}
	snprintf(l->key_primary, plen + 16, "%.*s/primary", (int)plen, prefix);
	snprintf(l->key_cluster, plen + 16, "%.*s/cluster", (int)plen, prefix);
	snprintf(l->key_handoff, plen + 16, "%.*s/handoff", (int)plen, prefix);
	l->ttl_s = (n->o.etcd_ttl_ms + 999) / 1000;
	if (l->ttl_s < 1)
		l->ttl_s = 1;
	/* Read-only this long before etcd could expire the lease: clock
	 * rate differences and the time the switch itself takes. */
	l->margin_ns = l->ttl_s * 1000000000LL / 20;
	if (l->margin_ns < 100 * NS_PER_MS)
		l->margin_ns = 100 * NS_PER_MS;
	rc = rep_etcd_new(n->o.etcd_endpoints, n->o.etcd_nendpoints,
			  n->o.etcd_username, n->o.etcd_password, &l->etcd);
	if (rc == 0)
		rc = rep_etcd_set_tls(l->etcd, n->o.etcd_tls_ca_file,
				      n->o.etcd_tls_cert_file,
				      n->o.etcd_tls_key_file);
	if (rc < 0) {
		log_error("lease.etcd: %s", rc != -EINVAL ? strerror(-rc)
				: l->etcd ? "tls-cert-file and tls-key-file "
					    "go together"
					  : "no endpoints");
		rep_lease_free(l);
		return rc;
	}
	l->state = L_FOLLOW;
	*out = l;
	return 0;
}

int rep_lease_start(rep_lease *l)
{
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

static void hold_one(void *ctx, fs_db *db)
{
	fs_db_hold_txns(db, *(bool *)ctx);
}

static void any_open(void *ctx, fs_db *db)
{
	if (fs_db_txn_open(db))
		*(bool *)ctx = true;
}

/* A clean stop (l->mu held): no new writes, then up to DRAIN_MS for every
 * connected replica to have received every transaction, streams still
 * open, before the lease goes. */
static void drain(rep_lease *l)
{
	rep_node *n = l->n;
	int64_t end = lib_clock_monotonic_ns() + DRAIN_MS * NS_PER_MS;
	int want = 0, got = 0;

	if (n->mount) {
		/* New transactions wait, the open ones finish (at most
		 * DRAIN_MS / 2), then every write fails. */
		int64_t t_end = lib_clock_monotonic_ns() +
				DRAIN_MS / 2 * NS_PER_MS;
		bool open = true;
		fs_mount_foreach(n->mount, hold_one, &(bool){true});
		while (open && lib_clock_monotonic_ns() < t_end) {
			open = false;
			fs_mount_foreach(n->mount, any_open, &open);
			if (open) {
				struct timespec ts = {0, 2 * NS_PER_MS};
				nanosleep(&ts, NULL);
			}
		}
		fs_mount_set_role(n->mount, true, "");
		fs_mount_foreach(n->mount, hold_one, &(bool){false});
		/* A write that passed the read-only check just before the
		 * switch finishes (and is published) before drain_gen is
		 * read: a barrier on every database's lock, and a moment. */
		open = false;
		fs_mount_foreach(n->mount, any_open, &open);
		{
			struct timespec ts = {0, 20 * NS_PER_MS};
			nanosleep(&ts, NULL);
		}
		fs_mount_foreach(n->mount, any_open, &open);
	}
	pthread_mutex_lock(&n->mu);
	n->draining = true;
	n->drain_gen = n->gen;
	pthread_cond_broadcast(&n->cond);
	for (;;) {
		struct timespec ts;
		want = atomic_load(&n->m.replicas);
		got = n->drained;
		if (got >= want || lib_clock_monotonic_ns() >= end)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * NS_PER_MS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&n->cond, &n->mu, &ts);
	}
	pthread_mutex_unlock(&n->mu);
	if (got < want)
		log_warn("stopping: %d of %d replicas confirmed every "
			 "transaction within %d ms; the others may miss the "
			 "last ones", got, want, DRAIN_MS);
	else
		log_info("stopping: every replica (%d) has every transaction",
			 want);
}

void rep_lease_stop(rep_lease *l)
{
	int64_t id = 0;

	if (!l || !l->started)
		return;
	atomic_store(&l->stop, true);
	pthread_join(l->thr, NULL);
	pthread_join(l->dog, NULL);
	l->started = false;
	pthread_mutex_lock(&l->mu);
	if (l->state == L_PRIMARY)
		drain(l);
	if (l->state == L_PRIMARY || l->state == L_FENCED) {
		to_readonly(l, L_FENCED, "shutting down");
		id = l->lease_id;
		l->lease_id = 0;
	}
	pthread_mutex_unlock(&l->mu);
	if (id) {
		int rc = rep_etcd_revoke(l->etcd, id, 2000);
		if (rc == 0 || rc == -ENOENT)
			log_info("revoked the lease of epoch %" PRId64
				 ": another node may take over", l->epoch);
		else
			log_warn("could not revoke the lease (%s); another "
				 "node takes over when it expires",
				 strerror(-rc));
	}
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

unsigned rep_lease_handoff(rep_lease *l, uint64_t to, char *msg, size_t len)
{
	int64_t id, hid = 0, ttl = 0;
	char buf[32];
	rep_etcd_kv kv = {0};
	bool created = false;
	int64_t t0 = lib_clock_monotonic_ns();

	if (!l) {
		snprintf(msg, len, "handoff needs lease.type etcd");
		return 409;
	}
	pthread_mutex_lock(&l->mu);
	if (l->state != L_PRIMARY) {
		pthread_mutex_unlock(&l->mu);
		snprintf(msg, len, "this node is not the primary");
		return 409;
	}
	if (l->n->mount) {
		/* A transaction a full disk keeps out of the log would not
		 * reach the new primary (docs/STORAGE.md, "A full disk"). */
		struct blocked_db b = {""};
		fs_mount_foreach(l->n->mount, find_blocked, &b);
		if (b.name[0]) {
			pthread_mutex_unlock(&l->mu);
			log_warn("handoff refused: db=%s: capture blocked: "
				 "disk full (503)", b.name);
			snprintf(msg, len, "db=%s: capture blocked: disk full; "
				 "a handoff now would lose its committed "
				 "transactions", b.name);
			return 503;
		}
	}
	if (to) {
		/* Only `to` may take the key for one TTL. */
		snprintf(buf, sizeof(buf), "%016" PRIx64, to);
		if (rep_etcd_grant(l->etcd, l->ttl_s, 2000, &hid, &ttl) < 0 ||
		    rep_etcd_create(l->etcd, l->key_handoff, buf, hid, 2000,
				    &created, &kv) < 0 || !created) {
			pthread_mutex_unlock(&l->mu);
			rep_etcd_kv_clear(&kv);
			if (hid)
				rep_etcd_revoke(l->etcd, hid, 2000);
			snprintf(msg, len, "etcd: cannot record the handoff "
				 "(another one under way, or etcd "
				 "unreachable)");
			return 503;
		}
		rep_etcd_kv_clear(&kv);
	}
	drain(l);
	id = l->lease_id;
	to_readonly(l, L_FOLLOW, "handing off");
	l->lease_id = 0;
	l->no_acquire_ns = lib_clock_monotonic_ns() + l->ttl_s * 1000000000LL;
	pthread_mutex_unlock(&l->mu);
	rep_etcd_revoke(l->etcd, id, 2000);
	log_info("handed the lease of epoch %" PRId64 " off%s%s after %" PRId64
		 " ms", l->epoch, to ? " to " : "", to ? buf : "",
		 (int64_t)((lib_clock_monotonic_ns() - t0) / NS_PER_MS));
	snprintf(msg, len, "handed off%s%s\n", to ? " to " : "", to ? buf : "");
	return 200;
}

struct promote_ans {
	char body[256];
	size_t len;
};

static size_t promote_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct promote_ans *a = ctx;
	size_t n = size * nmemb, take = sizeof(a->body) - 1 - a->len;

	if (take > n)
		take = n;
	memcpy(a->body + a->len, data, take);
	a->len += take;
	a->body[a->len] = '\0';
	return n;
}

unsigned rep_lease_promote(rep_lease *l, char *msg, size_t len)
{
	rep_node *n = l ? l->n : NULL;
	struct promote_ans ans = {{0}, 0};
	struct curl_slist *hdrs = NULL;
	char url[1200], auth[600];
	long status = 0;
	CURL *c;

	if (!l) {
		snprintf(msg, len, "promote needs lease.type etcd");
		return 409;
	}
	if (rep_node_is_primary(n)) {
		snprintf(msg, len, "already the primary\n");
		return 200;
	}
	if (!n->o.candidate) {
		snprintf(msg, len, "lease.candidate is false on this node");
		return 409;
	}
	pthread_mutex_lock(&n->mu);
	snprintf(url, sizeof(url), "%s/handoff?to=%016" PRIx64,
		 n->primary_url ? n->primary_url : "", n->o.node_id);
	pthread_mutex_unlock(&n->mu);
	if (strncmp(url, "/handoff", 8) == 0) {
		snprintf(msg, len, "the primary is not known yet");
		return 503;
	}
	c = curl_easy_init();
	if (!c)
		return 500;
	if (n->o.token[0]) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
			 n->o.token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, promote_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &ans);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	if (status != 200) {
		snprintf(msg, len, "the primary refused the handoff (%ld): %s",
			 status, ans.body);
		return 502;
	}
	for (int i = 0; i < 250 && !rep_node_is_primary(n); i++)
		sleep_ms(l, 20);
	if (!rep_node_is_primary(n)) {
		snprintf(msg, len, "the primary handed off, but this node did "
			 "not become primary within 5 s");
		return 504;
	}
	snprintf(msg, len, "this node is the primary\n");
	return 200;
}

void rep_lease_get_stats(rep_lease *l, rep_lease_stats *out)
{
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

void rep_lease_free(rep_lease *l)
{
	if (!l)
		return;
	rep_lease_stop(l);
	rep_etcd_free(l->etcd);
	free(l->key_primary);
	free(l->key_cluster);
	free(l->key_handoff);
	free(l->following);
	pthread_mutex_destroy(&l->mu);
	free(l);
}
