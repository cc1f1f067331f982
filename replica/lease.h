/*
 * The etcd lease (docs/PROTOCOL.md, "Lease keys in etcd"): which node is
 * primary, in which epoch, for a node whose configuration says
 * lease.type: etcd. Internal to replica/; the node owns it.
 *
 *   rep_lease_new(n, &l);       // after rep_node_new (opts hold etcd's)
 *   rep_lease_start(l);         // once the mount serves
 *   rep_lease_stop(l);          // clean shutdown: a primary turns
 *                               // read-only and revokes its lease
 *   rep_lease_free(l);
 */
#ifndef REPLICA_LEASE_H
#define REPLICA_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rep_node;
typedef struct rep_lease rep_lease;

int rep_lease_new(struct rep_node *n, rep_lease **out);
int rep_lease_start(rep_lease *l);
void rep_lease_stop(rep_lease *l);
void rep_lease_free(rep_lease *l);

/* For /metrics (replica/metrics.c): this node's view of the lease. */
typedef struct rep_lease_stats {
	bool primary;              /* holds the lease and accepts writes */
	uint64_t epoch;            /* of the key held or followed; 0 none */
	int64_t deadline_left_ns;  /* primary: until read-only; else 0 */
	uint64_t renewals;         /* keepalives etcd answered with a TTL */
	uint64_t renewal_failures; /* keepalives that failed or found the
				    * lease gone */
	uint64_t acquisitions;     /* times this node created the key */
	uint64_t etcd_errors;      /* failed etcd requests (etcd.h) */
} rep_lease_stats;

void rep_lease_get_stats(rep_lease *l, rep_lease_stats *out);

/* POST /handoff on the primary: no new writes, every connected replica
 * gets every transaction (up to 1 s), then the lease goes; with to != 0
 * only that node may take it for one TTL (<prefix>/handoff). Returns an
 * HTTP status and a one-line message in msg. */
unsigned rep_lease_handoff(rep_lease *l, uint64_t to, char *msg, size_t len);
/* POST /promote on a replica: asks the primary to hand off to this node
 * and waits (up to 5 s) until it is primary. */
unsigned rep_lease_promote(rep_lease *l, char *msg, size_t len);

#endif
