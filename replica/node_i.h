/*
 * Internals of replica/, shared by node.c, server.c, stream_srv.c,
 * the stream client (stream_cli.c, stream_frames.c, stream_apply.c) and
 * metrics.c.
 *
 * Lock order (replica/): rep_node.mu, then any fs/ lock (fs/db_i.h).
 * Nothing is called into fs/ that applies or snapshots with mu held.
 */
#ifndef REPLICA_NODE_I_H
#define REPLICA_NODE_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "node.h"

#define REP_HEARTBEAT_MS 1000
#define REP_LAT_BUCKETS 14

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
	atomic_int replicas;     /* streams being served now */
	/* Commit-on-primary to applied-here latency, ms. */
	atomic_uint_fast64_t lat_count, lat_sum_us;
	atomic_uint_fast64_t lat_bucket[REP_LAT_BUCKETS + 1];
} rep_metrics;

extern const double rep_lat_bounds_ms[REP_LAT_BUCKETS];

struct rep_node {
	rep_node_opts o;         /* strings owned (duplicated) */
	char *advertise;         /* advertise URL, never NULL */
	fs_mount *mount;
	struct MHD_Daemon *mhd;

	pthread_mutex_t mu;      /* guards everything below */
	pthread_cond_t cond;     /* broadcast on commit, role change, stop */
	uint64_t gen;            /* bumped on every commit */
	int role;                /* enum rep_role */
	uint64_t epoch;          /* highest seen; persisted in <data>/epoch */
	uint64_t cluster_id;     /* 0 until known; <data>/cluster.id */
	char *primary_url;       /* replica: where the primary is */
	char *primary_desc;      /* /.primary text */
	uint64_t primary_node;   /* from HELLO */
	bool stopping;
	bool connected;          /* replica: stream open */
	bool ready;              /* replica: caught up once on this stream */
	int64_t last_frame_ms;
	rep_remote *remotes;
	size_t nremotes, capremotes;

	uint64_t role_gen;       /* bumped by every rep_node_set_role */
	/* A replica becoming primary finishes the stream it is reading (the
	 * former primary's last transactions, sent before it let the lease
	 * go) until the stream ends or finish_until_ns (CLOCK_MONOTONIC)
	 * passes, before it accepts writes (node.c, stream_cli.c). */
	bool in_stream;          /* the client is inside a stream */
	bool in_cb;              /* ... and handling data it received, or
				  * holding records received that wait to
				  * be applied (stream_apply.c) */
	bool promoting;          /* finishing it: not primary yet */
	int64_t finish_until_ns;
	_Atomic int64_t write_deadline_ns; /* etcd lease: CLOCK_BOOTTIME;
					    * 0: none (static) */
	struct rep_lease *lease; /* etcd lease, or NULL (static) */
	/* A stopping primary, read-only already, waits for its replicas:
	 * streams that found nothing to send since drain_gen count in
	 * drained (stream_srv.c). */
	bool draining;
	uint64_t drain_gen;
	int drained;

	pthread_t client;
	bool client_started;
	struct rep_retention *retention; /* retention.c's thread, or NULL */
	rep_metrics m;
	int flip_record;         /* test fault: corrupt the Nth record sent */
	atomic_int records_out;  /* counts records for flip_record */
};

/* node.c */
int rep_node_set_cluster(rep_node *n, uint64_t id);
int rep_node_see_epoch(rep_node *n, uint64_t epoch);
/* The one role transition (mu not held): role, epoch (raised, never
 * lowered), the primary's URL on a replica ("" unknown); switches the
 * mount's databases read-only or writable. */
void rep_node_set_role(rep_node *n, int role, uint64_t epoch,
		       const char *primary_url);
rep_remote *rep_remote_get(rep_node *n, const char *name); /* mu held */
void rep_metrics_observe_latency(rep_metrics *m, double ms);
/* A temporary file in the data directory, already unlinked. */
int rep_tmpfile(rep_node *n);

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

/* stream_cli.c */
void *rep_client_main(void *arg);

/* metrics.c */
char *rep_info_json(rep_node *n);
char *rep_metrics_text(rep_node *n);

#endif
