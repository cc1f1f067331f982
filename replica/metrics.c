/*
 * GET /info (JSON) and GET /metrics (Prometheus text exposition 0.0.4).
 * Field meanings are in docs/PROTOCOL.md.
 */
#include "node_i.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/log.h"
#include "lease.h"
#include "lib/clock.h"

/* /info's role: DRAINING is still the primary, PROMOTING not yet. */
static const char *role_name(int role)
{
	return rep_role_leads(role) ? "primary" : "replica";
}

static void hex(char *buf, uint64_t v)
{
	snprintf(buf, 17, "%016" PRIx64, v);
}

struct info_ctx {
	rep_node *n;
	json_t *arr;
	int64_t now;
};

/* A replica's lag for one database, in ms and TXIDs (mu held). */
static void lag_of(rep_node *n, const char *name, ltx_pos local,
		   int64_t now, int64_t *out_ms, uint64_t *out_txids,
		   ltx_pos *out_primary)
{
	rep_remote *r = NULL;

	*out_ms = 0;
	*out_txids = 0;
	*out_primary = local;
	for (size_t i = 0; i < n->follow.nremotes; i++)
		if (strcmp(n->follow.remotes[i].name, name) == 0)
			r = &n->follow.remotes[i];
	if (!r || rep_role_leads(n->role.state))
		return;
	*out_primary = r->pos;
	if (r->pos.txid > local.txid) {
		*out_txids = r->pos.txid - local.txid;
		if (r->behind_since_ms)
			*out_ms = now - r->behind_since_ms;
	}
}

/* "state" and, when not ok, "reason" of one database (a full disk that
 * blocks capture; docs/PROTOCOL.md, GET /info). */
static void info_capture_state(json_t *o, fs_db *db)
{
	char reason[64];
	bool blocked = fs_db_capture_blocked(db, reason, sizeof(reason));

	json_object_set_new(o, "state", json_string(blocked ?
						    "capture-blocked" : "ok"));
	if (blocked)
		json_object_set_new(o, "reason", json_string(reason));
}

static void info_db(void *ctx, fs_db *db)
{
	struct info_ctx *c = ctx;
	ltx_pos p = fs_db_pos(db), pp;
	char a[17], b[17];
	int64_t lag_ms;
	uint64_t lag_tx;
	json_t *o;

	/* A new database is listed once it has a TXID, or when a full disk
	 * keeps its first one out of the log. */
	if (!fs_db_has(db, FS_KIND_DB) ||
	    (p.txid == 0 && !fs_db_capture_blocked(db, NULL, 0)))
		return;
	pthread_mutex_lock(&c->n->mu);
	lag_of(c->n, fs_db_name(db), p, c->now, &lag_ms, &lag_tx, &pp);
	pthread_mutex_unlock(&c->n->mu);
	hex(a, p.txid);
	hex(b, p.checksum);
	o = json_pack("{s:s, s:s, s:s, s:I, s:I}", "name", fs_db_name(db),
		      "txid", a, "checksum", b, "lag_ms", (json_int_t)lag_ms,
		      "lag_txids", (json_int_t)lag_tx);
	if (o) {
		info_capture_state(o, db);
		json_array_append_new(c->arr, o);
	}
}

/* A database this node does not serve (fs_mount_foreach_out_of_service):
 * no position, a state and the reason. */
static void info_oos(void *ctx, const char *name, const char *reason)
{
	struct info_ctx *c = ctx;
	json_t *o = json_pack("{s:s, s:s, s:s}", "name", name, "state",
			      "out-of-service", "reason", reason);

	if (o)
		json_array_append_new(c->arr, o);
}

/* "upstream" (a replica: what it streams from; null on the primary) and
 * "followers" (the streams this node serves), mu held (cascade.h). */
static void info_cascade_locked(rep_node *n, json_t *root)
{
	const rep_cascade *c = &n->cascade;
	json_t *arr = json_array(), *up = json_null();
	char id[17];

	if (!rep_role_leads(n->role.state)) {
		hex(id, c->node);
		up = json_pack("{s:s, s:s, s:i}", "url", c->url, "node",
			       c->node ? id : "", "depth", c->depth);
	}
	json_object_set_new(root, "upstream", up);
	for (const rep_follower *f = c->followers; f && arr; f = f->next) {
		hex(id, f->node);
		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}",
				       "node", id, "region", f->region, "url",
				       f->url, "peer", f->peer, "since_ms",
				       (json_int_t)f->since_ms, "bytes_sent",
				       (json_int_t)atomic_load(&f->bytes),
				       "records_sent",
				       (json_int_t)atomic_load(&f->records)));
	}
	if (arr)
		json_object_set_new(root, "followers", arr);
}

char *rep_info_json(rep_node *n)
{
	struct info_ctx c = {n, json_array(), lib_clock_wall_ms()};
	char node[17], cluster[17];
	json_t *root;
	char *s;
	int role;
	uint64_t epoch;
	bool connected, ready;
	const char *primary;

	if (!c.arr)
		return NULL;
	fs_mount_foreach(n->mount, info_db, &c);
	fs_mount_foreach_out_of_service(n->mount, info_oos, &c);
	pthread_mutex_lock(&n->mu);
	hex(node, n->o.node_id);
	hex(cluster, n->cluster_id);
	role = n->role.state;
	epoch = n->epoch;
	connected = n->follow.connected;
	ready = n->follow.ready;
	primary = rep_role_leads(role) ? n->o.lease.advertise_url
				       : n->role.primary_url;
	root = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:b, s:b, s:i, s:o}",
			 "node", node, "cluster", n->cluster_id ? cluster : "",
			 "role", role_name(role), "epoch", (json_int_t)epoch,
			 "primary", primary ? primary : "", "advertise_url",
			 n->o.lease.advertise_url, "connected",
			 rep_role_leads(role) ? 1 : connected, "ready",
			 rep_role_leads(role) ? 1 : ready, "replicas",
			 (int)atomic_load(&n->m.replicas), "databases", c.arr);
	if (root) {
		json_object_set_new(root, "region", json_string(n->o.region));
		info_cascade_locked(n, root);
	}
	pthread_mutex_unlock(&n->mu);
	if (!root)
		return NULL;
	rep_ext_info(n, root);
	s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (s) {
		size_t len = strlen(s);
		char *t = realloc(s, len + 2);
		if (t) {
			t[len] = '\n';
			t[len + 1] = '\0';
			s = t;
		}
	}
	return s;
}

struct text {
	char *p;
	size_t len, cap;
	bool oom;
};

__attribute__((format(printf, 2, 3)))
static void add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t cap = t->cap * 2 + (size_t)n;
			char *p = realloc(t->p, cap);
			if (!p) {
				t->oom = true;
				return;
			}
			t->p = p;
			t->cap = cap;
		}
	}
}

struct metric_ctx {
	rep_node *n;
	struct text *t;
	int64_t now;
	int pass;
};

static void metric_db(void *ctx, fs_db *db)
{
	struct metric_ctx *c = ctx;
	ltx_pos p = fs_db_pos(db), pp;
	int64_t lag_ms;
	uint64_t lag_tx;
	const char *name = fs_db_name(db);

	if (p.txid == 0 || !fs_db_has(db, FS_KIND_DB))
		return;
	pthread_mutex_lock(&c->n->mu);
	lag_of(c->n, name, p, c->now, &lag_ms, &lag_tx, &pp);
	pthread_mutex_unlock(&c->n->mu);
	switch (c->pass) {
	case 0:
		add(c->t, "ltxfs_db_txid{db=\"%s\"} %" PRIu64 "\n", name,
		    p.txid);
		break;
	case 1:
		add(c->t, "ltxfs_replication_lag_seconds{db=\"%s\"} %.3f\n",
		    name, (double)lag_ms / 1000.0);
		break;
	case 2:
		add(c->t, "ltxfs_replication_lag_txids{db=\"%s\"} %" PRIu64
		    "\n", name, lag_tx);
		break;
	case 3:
		add(c->t, "ltxfs_replica_wal_frames_pending{db=\"%s\"} %" PRIu32
		    "\n", name, fs_db_wal_pending(db));
		break;
	case 4:
	case 5: {
		fs_log_stats ls;
		fs_log_get_stats(fs_db_log(db), &ls);
		if (c->pass == 4)
			add(c->t, "ltxfs_log_bytes{db=\"%s\"} %" PRIu64 "\n",
			    name, ls.bytes);
		else
			add(c->t, "ltxfs_log_first_txid{db=\"%s\"} %" PRIu64
			    "\n", name, ls.first_txid);
		break;
	}
	}
}

/* ltxfs_db_out_of_service: 0 for every database served (those with a
 * main file and TXID > 0, as the other db gauges), 1 for each out of
 * service. */
static void oos_served(void *ctx, fs_db *db)
{
	struct text *t = ctx;

	if (fs_db_pos(db).txid == 0 || !fs_db_has(db, FS_KIND_DB))
		return;
	add(t, "ltxfs_db_out_of_service{db=\"%s\"} 0\n", fs_db_name(db));
}

static void oos_damaged(void *ctx, const char *name, const char *reason)
{
	add(ctx, "ltxfs_db_out_of_service{db=\"%s\"} 1\n", name);
}

static void oos_metrics(rep_node *n, struct text *t)
{
	add(t, "# HELP ltxfs_db_out_of_service 1 while the database is not "
		"served (its LTX log is damaged; /info says why)\n"
		"# TYPE ltxfs_db_out_of_service gauge\n");
	fs_mount_foreach(n->mount, oos_served, t);
	fs_mount_foreach_out_of_service(n->mount, oos_damaged, t);
}

struct capture_ctx {
	struct text *t;
	bool counter;
};

static void capture_db(void *ctx, fs_db *db)
{
	struct capture_ctx *c = ctx;
	const char *name = fs_db_name(db);

	if (!fs_db_has(db, FS_KIND_DB) ||
	    (fs_db_pos(db).txid == 0 && !fs_db_capture_blocked(db, NULL, 0)))
		return;
	if (c->counter)
		add(c->t, "ltxfs_db_capture_disk_full_total{db=\"%s\"} %"
		    PRIu64 "\n", name, fs_db_capture_full_total(db));
	else
		add(c->t, "ltxfs_db_capture_blocked{db=\"%s\"} %d\n", name,
		    fs_db_capture_blocked(db, NULL, 0));
}

/* Capture blocked by a full disk, per database (docs/STORAGE.md, "A
 * full disk"). */
static void capture_metrics(rep_node *n, struct text *t)
{
	struct capture_ctx c = {t, false};

	add(t, "# HELP ltxfs_db_capture_blocked 1 while a full disk keeps "
		"committed transactions out of the database's LTX log\n"
		"# TYPE ltxfs_db_capture_blocked gauge\n");
	fs_mount_foreach(n->mount, capture_db, &c);
	c.counter = true;
	add(t, "# HELP ltxfs_db_capture_disk_full_total Capture attempts "
		"the LTX log refused for a full disk (the first and each "
		"retry)\n# TYPE ltxfs_db_capture_disk_full_total counter\n");
	fs_mount_foreach(n->mount, capture_db, &c);
}

/* The lease as this node sees it (lease.h; the static lease: primary is
 * the role, epoch 1, no deadline, the counters 0). */
static void lease_metrics(rep_node *n, struct text *t)
{
	rep_lease_stats s = {0};

	n->lease->ops->stats(n->lease, &s);
	add(t, "# HELP ltxfs_lease_primary 1 while this node holds the lease "
		"and accepts writes\n# TYPE ltxfs_lease_primary gauge\n"
		"ltxfs_lease_primary %d\n", s.primary);
	add(t, "# HELP ltxfs_lease_epoch Epoch of the lease held or followed "
		"(0 before one is known)\n# TYPE ltxfs_lease_epoch gauge\n"
		"ltxfs_lease_epoch %" PRIu64 "\n", s.epoch);
	add(t, "# HELP ltxfs_lease_deadline_seconds Primary: seconds left "
		"until it turns read-only unless the lease is renewed (0 "
		"otherwise)\n# TYPE ltxfs_lease_deadline_seconds gauge\n"
		"ltxfs_lease_deadline_seconds %.3f\n",
	    (double)s.deadline_left_ns / 1e9);
	add(t, "# HELP ltxfs_lease_renewals_total Lease keepalives etcd "
		"answered with a TTL\n# TYPE ltxfs_lease_renewals_total "
		"counter\nltxfs_lease_renewals_total %" PRIu64 "\n",
	    s.renewals);
	add(t, "# HELP ltxfs_lease_renewal_failures_total Lease keepalives "
		"that failed or found the lease gone\n"
		"# TYPE ltxfs_lease_renewal_failures_total counter\n"
		"ltxfs_lease_renewal_failures_total %" PRIu64 "\n",
	    s.renewal_failures);
	add(t, "# HELP ltxfs_lease_acquisitions_total Times this node "
		"acquired the lease (created the primary key)\n"
		"# TYPE ltxfs_lease_acquisitions_total counter\n"
		"ltxfs_lease_acquisitions_total %" PRIu64 "\n", s.acquisitions);
	add(t, "# HELP ltxfs_lease_etcd_errors_total etcd requests that "
		"failed (unreachable, TLS, refused credentials, errors)\n"
		"# TYPE ltxfs_lease_etcd_errors_total counter\n"
		"ltxfs_lease_etcd_errors_total %" PRIu64 "\n", s.etcd_errors);
}

/* The extensions' metrics (ext.c), appended. */
static void ext_metrics(rep_node *n, struct text *t)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f) {
		t->oom = true;
		return;
	}
	rep_ext_metrics(n, f);
	if (fclose(f) != 0 || !buf)
		t->oom = true;
	else if (len)
		add(t, "%s", buf);
	free(buf);
}

char *rep_metrics_text(rep_node *n)
{
	struct text t = {malloc(4096), 0, 4096, false};
	struct metric_ctx c = {n, &t, lib_clock_wall_ms(), 0};
	rep_metrics *m = &n->m;
	uint64_t cum = 0;
	static const char *const help[] = {
		"ltxfs_db_txid TXID of the last transaction in the database",
		"ltxfs_replication_lag_seconds How long this replica has known "
		"of a transaction it has not applied (0 when caught up)",
		"ltxfs_replication_lag_txids Transactions the primary has that "
		"this replica has not applied",
		"ltxfs_replica_wal_frames_pending WAL frames local readers keep "
		"from being checkpointed",
		"ltxfs_log_bytes Size of the database's LTX log (retention: "
		"data.retention, data.retention-bytes)",
		"ltxfs_log_first_txid First TXID the LTX log still has; older "
		"positions catch up by snapshot",
	};

	if (!t.p)
		return NULL;
	for (c.pass = 0; c.pass < 6; c.pass++) {
		char name[64];
		sscanf(help[c.pass], "%63s", name);
		add(&t, "# HELP %s\n# TYPE %s gauge\n", help[c.pass], name);
		fs_mount_foreach(n->mount, metric_db, &c);
	}
	oos_metrics(n, &t);
	capture_metrics(n, &t);
	pthread_mutex_lock(&n->mu);
	add(&t, "# HELP ltxfs_primary 1 when this node is the primary\n"
		"# TYPE ltxfs_primary gauge\nltxfs_primary %d\n",
	    rep_role_leads(n->role.state));
	add(&t, "# HELP ltxfs_epoch Highest lease epoch seen\n"
		"# TYPE ltxfs_epoch gauge\nltxfs_epoch %" PRIu64 "\n", n->epoch);
	add(&t, "# HELP ltxfs_stream_connected 1 when this replica's stream "
		"is open\n# TYPE ltxfs_stream_connected gauge\n"
		"ltxfs_stream_connected %d\n", n->follow.connected);
	{
		char id[17];
		hex(id, n->o.node_id);
		/* region is [A-Za-z0-9._-] (cascade.h): no escaping. */
		add(&t, "# HELP ltxfs_node_info This node: its ID, region "
			"and role\n# TYPE ltxfs_node_info gauge\n"
			"ltxfs_node_info{node=\"%s\",region=\"%s\",role=\"%s\"} 1\n",
		    id, n->o.region, role_name(n->role.state));
	}
	add(&t, "# HELP ltxfs_stream_upstream_depth 1 when this replica "
		"streams from the primary, 2 from another replica, 0 not "
		"connected or the primary\n"
		"# TYPE ltxfs_stream_upstream_depth gauge\n"
		"ltxfs_stream_upstream_depth %d\n",
	    rep_role_leads(n->role.state) ? 0 : n->cascade.depth);
	pthread_mutex_unlock(&n->mu);
	{
		char why[400];
		add(&t, "# HELP ltxfs_ready 1 when GET /readyz answers 200 "
			"(this node can serve an application)\n"
			"# TYPE ltxfs_ready gauge\nltxfs_ready %d\n",
		    rep_node_ready(n, why, sizeof(why)));
	}
	lease_metrics(n, &t);
	add(&t, "# HELP ltxfs_connected_replicas Streams served now\n"
		"# TYPE ltxfs_connected_replicas gauge\n"
		"ltxfs_connected_replicas %d\n", atomic_load(&m->replicas));
#define COUNTER(name, field, text)                                          \
	add(&t, "# HELP " name " " text "\n# TYPE " name " counter\n" name  \
		" %" PRIu64 "\n", (uint64_t)atomic_load(&m->field))
	COUNTER("ltxfs_stream_bytes_sent_total", bytes_sent,
		"LTX bytes streamed to replicas");
	COUNTER("ltxfs_stream_records_sent_total", records_sent,
		"LTX records (transactions and snapshots) streamed");
	COUNTER("ltxfs_stream_snapshots_sent_total", snapshots_sent,
		"Snapshots streamed instead of records");
	COUNTER("ltxfs_stream_bytes_received_total", bytes_received,
		"LTX bytes received from the primary");
	COUNTER("ltxfs_records_applied_total", records_applied,
		"LTX records applied on this replica");
	COUNTER("ltxfs_snapshots_applied_total", snapshots_applied,
		"Snapshots applied on this replica");
	COUNTER("ltxfs_apply_errors_total", apply_errors,
		"Records rejected or failed (each followed by a reconnect)");
	COUNTER("ltxfs_stream_reconnects_total", reconnects,
		"Stream connections this replica opened after the first");
	COUNTER("ltxfs_stream_upstream_fallbacks_total", upstream_fallbacks,
		"Streams from a replica upstream that ended and made this "
		"node fall back to another upstream");
	COUNTER("ltxfs_http_unauthorized_total", unauthorized,
		"Requests refused for a missing or wrong token or client "
		"certificate");
#undef COUNTER
	add(&t, "# HELP ltxfs_apply_latency_seconds From commit on the primary "
		"(LTX timestamp) to applied here\n"
		"# TYPE ltxfs_apply_latency_seconds histogram\n");
	for (int i = 0; i <= REP_LAT_BUCKETS; i++) {
		cum += atomic_load(&m->lat_bucket[i]);
		if (i < REP_LAT_BUCKETS)
			add(&t, "ltxfs_apply_latency_seconds_bucket{le=\"%g\"} %"
			    PRIu64 "\n", rep_lat_bounds_ms[i] / 1000.0, cum);
		else
			add(&t, "ltxfs_apply_latency_seconds_bucket{le=\"+Inf\"}"
			    " %" PRIu64 "\n", cum);
	}
	add(&t, "ltxfs_apply_latency_seconds_sum %.6f\n"
		"ltxfs_apply_latency_seconds_count %" PRIu64 "\n",
	    (double)atomic_load(&m->lat_sum_us) / 1e6,
	    (uint64_t)atomic_load(&m->lat_count));
	ext_metrics(n, &t);
	if (t.oom) {
		free(t.p);
		return NULL;
	}
	return t.p;
}
