/*
 * Internals of replica/, shared by its files: node.c (life cycle,
 * identity, waits), role.c (the role state machine), commit.c (commit
 * subscribers), handoff.c (drain, handoff, promote), the leases
 * (lease_static.c, lease_etcd.c: through the calls marked "for the
 * leases" only), server.c, stream_srv.c, the stream client
 * (stream_cli.c, stream_frames.c, stream_apply.c), cascade.c,
 * retention.c and metrics.c.
 *
 * Lock order (replica/): rep_node.handoff_mu, then a lease's own mutex,
 * then rep_node.mu, then any fs/ lock (fs/db_i.h). Nothing is called
 * into fs/ that applies or snapshots with mu held.
 * The proxy (proxy*.c) is outside the node: rep_proxy.mu is a leaf, and
 * it calls the node and fs/ with no lock of its own held.
 */
#ifndef REPLICA_NODE_I_H
#define REPLICA_NODE_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cascade.h"
#include "http_client.h"
#include "frame.h"
#include "node.h"
#include "role.h"

#define REP_HEARTBEAT_MS 1000
#define REP_LAT_BUCKETS 14

struct rep_lease;

/* What a replica knows of the primary's position of one database. */
typedef struct rep_remote {
	char name[REP_NAME_MAX + 1];
	ltx_pos pos;             /* the primary's, from heartbeats/records */
	int64_t behind_since_ms; /* wall clock when we first knew we were
				  * behind; 0 when caught up */
} rep_remote;

typedef struct rep_metrics {
	atomic_uint_fast64_t bytes_sent, records_sent, snapshots_sent;
	atomic_uint_fast64_t bytes_received, records_applied;
	atomic_uint_fast64_t snapshots_applied, apply_errors, reconnects;
	atomic_uint_fast64_t unauthorized;
	atomic_uint_fast64_t upstream_fallbacks; /* cascade.h, C5 */
	atomic_int replicas;     /* streams being served now */
	/* Commit-on-primary to applied-here latency, ms. */
	atomic_uint_fast64_t lat_count, lat_sum_us;
	atomic_uint_fast64_t lat_bucket[REP_LAT_BUCKETS + 1];
} rep_metrics;

extern const double rep_lat_bounds_ms[REP_LAT_BUCKETS];

/* What the replica's stream client (stream_cli.c) shares with the rest
 * of the node; guarded by rep_node.mu. A node becoming primary finishes
 * the stream it is reading (role.c, PROMOTING) by these. */
typedef struct rep_follow {
	bool in_stream;          /* the client is inside a stream */
	bool in_cb;              /* ... and handling data it received, or
				  * holding records received that wait to
				  * be applied (stream_apply.c) */
	bool connected;          /* HELLO received on the open stream */
	bool ready;              /* caught up once on this stream */
	bool caught_up_once;     /* ... on any stream since the start */
	int64_t last_frame_ms;
	uint64_t primary_node;   /* from HELLO */
	rep_remote *remotes;
	size_t nremotes, capremotes;
} rep_follow;

/* A drain under way (handoff.c); guarded by rep_node.mu. While the role
 * is DRAINING, streams that found nothing to send since commit gen
 * count in drained (stream_srv.c); gen is UINT64_MAX until the writes
 * have stopped. */
typedef struct rep_drain_state {
	uint64_t gen;
	int drained;
} rep_drain_state;

/* The commit subscribers (commit.c): fixed once the node started, then
 * read without a lock. */
typedef struct rep_commit_subs {
	struct {
		rep_commit_fn fn;
		void *ctx;
	} s[REP_COMMIT_SUBS_MAX];
	size_t count;
	bool fixed;
} rep_commit_subs;

/* The extensions (ext.c): fixed once the node started, then read without
 * a lock. */
typedef struct rep_exts {
	rep_node_ext e[REP_EXTS_MAX];
	size_t count;
} rep_exts;

struct rep_node {
	rep_node_opts o;         /* strings owned (duplicated); the etcd
				  * ones are not kept (used during new) */
	fs_mount *mount;
	struct rep_lease *lease; /* static or etcd; never NULL once new
				  * returned */
	struct MHD_Daemon *mhd;
	struct rep_tls *tls;     /* http.tls-cert-file set, else NULL */
	bool tls_watching;       /* its file watcher runs (rep_node_start) */
	struct {
		pthread_mutex_t mu;
		int64_t window_ns;   /* CLOCK_MONOTONIC second of count */
		unsigned count, dropped;
	} mhd_log;               /* server_tls.c: libmicrohttpd's lines */
	rep_commit_subs subs;
	rep_exts exts;           /* ext.c; fixed with subs */
	pthread_mutex_t handoff_mu; /* one drain at a time (handoff.c) */

	pthread_mutex_t mu;      /* guards everything below but what says
				  * otherwise */
	pthread_cond_t cond;     /* broadcast on commit, role change, stop */
	rep_role_sm role;        /* role.c */
	uint64_t epoch;          /* highest seen; persisted in <data>/epoch */
	uint64_t cluster_id;     /* 0 until known; <data>/cluster.id */
	uint64_t gen;            /* bumped on every commit */
	rep_follow follow;       /* replica: the stream client's state */
	rep_cascade cascade;     /* its upstream, the followers served
				  * (cascade.h) */
	rep_drain_state drain;  /* handoff.c */
	atomic_int waiters;      /* in rep_node_wait_txid (atomic) */
	_Atomic int64_t write_deadline_ns; /* etcd lease: CLOCK_BOOTTIME;
					    * 0: none (static) (atomic) */

	pthread_t client;        /* the stream client; node.c's only */
	bool client_started;
	struct rep_retention *retention; /* retention.c's thread, or NULL */
	rep_sync *sync;          /* sync.c; set by rep_node_new, never NULL */
	rep_metrics m;           /* atomics */
	int flip_record;         /* test fault: corrupt the Nth record sent */
	atomic_int records_out;  /* counts records for flip_record */
};

/* node.c */
int rep_node_set_cluster(rep_node *n, uint64_t id);
int rep_node_see_epoch(rep_node *n, uint64_t epoch);
rep_remote *rep_remote_get(rep_node *n, const char *name); /* mu held */
void rep_metrics_observe_latency(rep_metrics *m, double ms);
/* A temporary file in the data directory, already unlinked. */
int rep_tmpfile(rep_node *n);

/* node.c, for the leases: the configuration and identity they need, and
 * what they tell the node besides its role (role.h). */
const rep_node_opts *rep_node_options(rep_node *n);
uint64_t rep_node_cluster(rep_node *n);
/* The client side's TLS files (http.tls-ca-file, tls-client-*). */
rep_http_tls rep_node_client_tls(rep_node *n);
/* The deadline the mount refuses writes at (CLOCK_BOOTTIME ns; 0 none). */
void rep_node_set_write_deadline(rep_node *n, int64_t deadline_ns);

/* commit.c: the node's own subscribers, added by rep_node_new; the list
 * fixed by rep_node_start. */
int rep_commit_add_builtin(rep_node *n);
void rep_commit_fix(rep_node *n);

/* handoff.c: drain, graceful handoff and promote. */
/* A primary stops or hands off: PRIMARY -> DRAINING, new write
 * transactions held back and the open ones finished, the mount
 * read-only, then up to REP_DRAIN_MS for every connected replica to have
 * received every transaction. handoff_mu held. */
#define REP_DRAIN_MS 1000
void rep_drain(rep_node *n);
/* stream_srv.c, mu held: a stream found nothing to send since commit gen
 * gen; counted once (*counted) while the role is DRAINING. */
void rep_drain_stream_idle_locked(rep_node *n, uint64_t gen,
				  bool *counted);
/* stream_srv.c, mu held: a stream counted in the drain ended. */
void rep_drain_stream_gone_locked(rep_node *n);
/* POST /handoff (to: the node that may take over, 0 any) and POST
 * /promote: an HTTP status and a one-line message in msg. */
unsigned rep_handoff(rep_node *n, uint64_t to, char *msg, size_t len);
unsigned rep_promote(rep_node *n, char *msg, size_t len);
/* rep_node_stop: a primary drains, then the lease goes. */
void rep_handoff_stop(rep_node *n);

/* server.c */
struct sockaddr;
void rep_peer_text(const struct sockaddr *sa, char *buf, size_t n);
int rep_server_start(rep_node *n);
void rep_server_stop(rep_node *n);

/* stream_srv.c: the /stream response for one replica. */
struct MHD_Connection;
struct MHD_Response;
int rep_stream_response(rep_node *n, struct MHD_Connection *c,
			struct MHD_Response **out, unsigned *out_status,
			char *err, size_t errlen);
/* The commit subscriber that wakes the streams served. */
void rep_stream_on_commit(void *ctx, fs_db *db, ltx_pos pos);

/* stream_cli.c */
void *rep_client_main(void *arg);

/* ext.c: the extensions' parts of /metrics and /info. */
void rep_ext_metrics(rep_node *n, FILE *f);
struct json_t;
void rep_ext_info(rep_node *n, struct json_t *root);

/* metrics.c */
char *rep_info_json(rep_node *n);
char *rep_metrics_text(rep_node *n);

#endif
