/*
 * The replication node: this node's role (primary or replica), its
 * cluster and epoch, the HTTP API (docs/PROTOCOL.md) and the stream that
 * keeps a replica's databases up to date.
 *
 * Life cycle:
 *   rep_node_new(&opts, &n);          // reads cluster.id and epoch
 *   rep_node_on_commit_add(n, ...);   // components that follow commits
 *   mount opts: on_commit = rep_node_on_commit, commit_ctx = n,
 *               readonly = !rep_node_is_primary(n),
 *               primary = rep_node_primary_desc(n)
 *   rep_node_start(n, mount);         // HTTP server; stream client on a
 *                                     // replica; the lease
 *   ... SIGTERM:
 *   rep_node_stop(n);                 // before the mount stops serving
 *   rep_node_free(n);
 *
 * Roles come from a lease (replica/lease.h): static (the configuration
 * says whether this node is the primary) or etcd (the nodes compete).
 * The role state machine is written down in role.c.
 */
#ifndef REPLICA_NODE_H
#define REPLICA_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sync.h"
#include "fs/db.h"
#include "fs/mount.h"
#include "ltx/pos.h"

typedef struct rep_node rep_node;

/* The HTTP server (server.c). */
typedef struct rep_http_opts {
	const char *addr;            /* "[host]:port", "host:port", ":port" */
	const char *token;           /* "": no authentication */
	int64_t max_import_size;     /* POST /import body; 0: no cap */
	int64_t ready_max_lag_ms;    /* GET /readyz: a replica further
				      * behind is not ready; 0: the
				      * default, REP_READY_MAX_LAG_MS */
	const char *metrics_token;   /* also reads /metrics, /info; "" */
	bool metrics_open;           /* /metrics, /info need no token */
	/* TLS, NULL or "" unset (docs/CONFIG.md): the server's
	 * certificate and key, the CA of client certificates (mutual
	 * TLS); the client side's CA (else the system store),
	 * certificate and key. */
	const char *tls_cert_file, *tls_key_file, *tls_client_ca_file;
	const char *tls_ca_file, *tls_client_cert_file;
	const char *tls_client_key_file;
} rep_http_opts;

#define REP_READY_MAX_LAG_MS 10000

enum rep_lease_type {
	REP_LEASE_STATIC = 0,
	REP_LEASE_ETCD = 1,
};

/* lease.etcd (lease_etcd.c, etcd.h); used during rep_node_new only. */
typedef struct rep_etcd_opts {
	char *const *endpoints;
	size_t nendpoints;
	const char *prefix;
	int64_t ttl_ms;
	const char *username, *password;
	/* https endpoints (etcd.h): NULL or "" unset. */
	const char *tls_ca_file, *tls_cert_file, *tls_key_file;
} rep_etcd_opts;

/* Which node is primary (lease.h). */
typedef struct rep_lease_opts {
	int type;                    /* enum rep_lease_type */
	bool candidate;              /* may be primary; static: is it */
	const char *advertise_url;   /* this node's URL for others */
	const char *primary_url;     /* static lease, replica: the primary */
	const char *upstream_url;    /* replica: stream from this replica
				      * ("": by region, else the primary;
				      * cascade.h) */
	const char *hostname;
	rep_etcd_opts etcd;
} rep_lease_opts;

/* Retention of the LTX logs (retention.h). */
typedef struct rep_retention_opts {
	int64_t ms;                  /* keep LTX records at least this long */
	int64_t bytes;               /* per database; 0: no size cap */
} rep_retention_opts;

typedef struct rep_node_opts {
	const char *data_dir;
	const char *mountpoint;
	uint64_t node_id;
	const char *region;          /* "" none (cascade.h) */
	rep_http_opts http;
	rep_lease_opts lease;
	rep_retention_opts retention;
	rep_sync_opts sync;          /* synchronous replication (sync.h) */
} rep_node_opts;

/* The node's roles (role.c has the transitions and their invariants). */
enum rep_role {
	REP_ROLE_INIT = 0,           /* rep_node_new has not decided yet */
	REP_ROLE_REPLICA = 1,        /* read-only, follows the primary */
	REP_ROLE_PROMOTING = 2,      /* has the lease; finishes the former
				      * primary's stream; no writes yet */
	REP_ROLE_PRIMARY = 3,        /* accepts writes, serves /stream */
	REP_ROLE_DRAINING = 4,       /* primary, no new writes; serves its
				      * replicas every transaction */
	REP_ROLE_STOPPED = 5,        /* rep_node_stop: nothing more */
	REP_ROLE_COUNT
};

int rep_node_new(const rep_node_opts *opts, rep_node **out);
void rep_node_free(rep_node *n);

/* The role now (enum rep_role). */
int rep_node_role(rep_node *n);
/* PRIMARY or DRAINING: this node is the one replicas follow. */
bool rep_node_is_primary(rep_node *n);
/* The highest epoch this node has seen (its own while it is the
 * primary); each new primary raises it. */
uint64_t rep_node_epoch(rep_node *n);
/* The lease deadline the mount enforces on writes (fs_mount_opts); owned
 * by n, 0 with the static lease. */
const _Atomic int64_t *rep_node_write_deadline(rep_node *n);
/* What a replica shows in /.primary and EROFS messages (owned by n). */
const char *rep_node_primary_desc(rep_node *n);
/* The current primary's advertise URL into buf (this node's own when it
 * is the primary). 0; -ENOENT when no primary is known (buf ""),
 * -ENAMETOOLONG when it does not fit. */
int rep_node_primary_url(rep_node *n, char *buf, size_t len);

/* Whether a replica is connected to the primary and has caught up with
 * it once on this stream (the primary: always). */
bool rep_node_caught_up(rep_node *n);
/* Whether this node can serve an application now (GET /readyz; the rules
 * are in ready.c): the primary once it serves, a replica once caught up
 * and while within http.ready-max-lag of the primary. When not, why
 * holds one line saying why. */
bool rep_node_ready(rep_node *n, char *why, size_t len);

/* Waits until database db has reached TXID txid (applied on a replica,
 * committed on the primary), or the deadline (CLOCK_MONOTONIC, ns)
 * passes. 0; -ETIMEDOUT; -ESHUTDOWN when the node stops. A database that
 * does not exist yet is waited for too. */
int rep_node_wait_txid(rep_node *n, const char *db, uint64_t txid,
		       int64_t deadline_ns);

/* Commit subscribers: called after every transaction recorded (primary)
 * or applied (replica), in the order added, on the thread that committed
 * (keep it short: no I/O, no waiting). Added before rep_node_start; the
 * list is fixed from then on. 0, -ENOSPC (REP_COMMIT_SUBS_MAX), -EBUSY
 * (started). */
#define REP_COMMIT_SUBS_MAX 8
typedef void (*rep_commit_fn)(void *ctx, fs_db *db, ltx_pos pos);
int rep_node_on_commit_add(rep_node *n, rep_commit_fn fn, void *ctx);

/* fs_sync_fn (fs/db.h) for the mount when replication.sync.min-replicas
 * is above 0: waits for the replicas' acknowledgements (sync.h, Y3). */
int rep_node_sync_wait(void *ctx, fs_db *db, ltx_pos pos);

/* fs_commit_fn: a transaction was recorded (primary) or applied
 * (replica); calls the subscribers. */
void rep_node_on_commit(void *ctx, fs_db *db, ltx_pos pos);

/* Extensions: components outside the node (the proxy, replica/proxy.h)
 * that add to GET /metrics and GET /info (ext.c). Added before
 * rep_node_start, fixed from then on; ctx must outlive the node's HTTP
 * server (rep_node_stop). metrics appends Prometheus text to f (NULL:
 * none); info returns the JSON text (malloc'd, the caller frees) of the
 * value /info shows under name (NULL: none). 0, -ENOSPC
 * (REP_EXTS_MAX), -EBUSY (started). */
#define REP_EXTS_MAX 8
typedef struct rep_node_ext {
	const char *name;
	void *ctx;
	void (*metrics)(void *ctx, FILE *f);
	char *(*info)(void *ctx);
} rep_node_ext;
int rep_node_ext_add(rep_node *n, const rep_node_ext *e);

/* How long database db has been behind the primary, ms (0 on the
 * primary, when caught up, or when its lag is not known). */
int64_t rep_node_lag_ms(rep_node *n, const char *db);

/* SIGHUP: re-reads the server's certificate, key and client CA (they
 * are also checked once a second). 0 reloaded; -ENOENT: no TLS
 * configured; other < 0: refused, the old ones stay (logged). */
int rep_node_reload_tls(rep_node *n);

/* Starts the HTTP server and, on a replica, the stream client. */
int rep_node_start(rep_node *n, fs_mount *m);
/* Stops the node: the lease is given up (the etcd lease's primary drains
 * its replicas first: handoff.c), then the stream client and the HTTP
 * server stop; the mount still serves. */
void rep_node_stop(rep_node *n);

#endif
