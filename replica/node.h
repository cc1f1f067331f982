/*
 * The replication node: this node's role (primary or replica), its
 * cluster and epoch, the HTTP API (docs/PROTOCOL.md) and the stream that
 * keeps a replica's databases up to date.
 *
 * Life cycle:
 *   rep_node_new(&opts, &n);          // reads cluster.id and epoch
 *   mount opts: on_commit = rep_node_on_commit, commit_ctx = n,
 *               readonly = !rep_node_is_primary(n),
 *               primary = rep_node_primary_desc(n)
 *   rep_node_start(n, mount);         // HTTP server; stream client on a
 *                                     // replica
 *   ... SIGTERM:
 *   rep_node_stop(n);                 // before the mount stops serving
 *   rep_node_free(n);
 *
 * Roles come from a lease. Static lease: the configuration says whether
 * this node is the primary (candidate) and, on a replica, the primary's
 * URL; the epoch is 1. etcd lease (etcd_nendpoints > 0, replica/lease.h):
 * every node starts as a replica that does not know the primary yet, and
 * the lease moves it. rep_node_set_role is the one transition.
 */
#ifndef REPLICA_NODE_H
#define REPLICA_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "fs/db.h"
#include "fs/mount.h"
#include "ltx/pos.h"

typedef struct rep_node rep_node;

typedef struct rep_node_opts {
	const char *data_dir;
	const char *mountpoint;
	uint64_t node_id;
	const char *http_addr;       /* "[host]:port", "host:port", ":port" */
	const char *token;           /* "": no authentication */
	int64_t max_import_size;     /* POST /import body; 0: no cap */
	bool candidate;              /* static lease: this node is primary */
	const char *advertise_url;   /* this node's URL for others */
	const char *primary_url;     /* static lease, replica: the primary */
	const char *hostname;
	int64_t retention_ms;        /* keep LTX records at least this long */
	int64_t retention_bytes;     /* per database; 0: no size cap */
	/* lease.type etcd (replica/lease.h); etcd_nendpoints 0: static. */
	char *const *etcd_endpoints; /* the caller's, used during new */
	size_t etcd_nendpoints;
	const char *etcd_prefix;
	int64_t etcd_ttl_ms;
	const char *etcd_username, *etcd_password;
	/* https endpoints (replica/etcd.h): NULL or "" unset. */
	const char *etcd_tls_ca_file, *etcd_tls_cert_file, *etcd_tls_key_file;
} rep_node_opts;

enum rep_role {
	REP_ROLE_REPLICA = 0,
	REP_ROLE_PRIMARY = 1,
};

int rep_node_new(const rep_node_opts *opts, rep_node **out);
void rep_node_free(rep_node *n);

bool rep_node_is_primary(rep_node *n);
/* The lease deadline the mount enforces on writes (fs_mount_opts); owned
 * by n, 0 with the static lease. */
const _Atomic int64_t *rep_node_write_deadline(rep_node *n);
/* What a replica shows in /.primary and EROFS messages (owned by n). */
const char *rep_node_primary_desc(rep_node *n);

/* fs_commit_fn: a transaction was recorded (primary) or applied
 * (replica); wakes the streams. */
void rep_node_on_commit(void *ctx, fs_db *db, ltx_pos pos);

/* Starts the HTTP server and, on a replica, the stream client. */
int rep_node_start(rep_node *n, fs_mount *m);
/* Stops the stream client and the HTTP server; the mount still serves. */
void rep_node_stop(rep_node *n);

#endif
