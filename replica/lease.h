/*
 * The lease: which node is primary, in which epoch. An interface (an ops
 * table) with one implementation per lease.type; the node owns one and
 * knows nothing of its kind:
 *
 *   lease_static.c  the configuration says (lease.candidate, epoch 1)
 *   lease_etcd.c    nodes compete for a key in etcd (docs/PROTOCOL.md,
 *                   "Lease keys in etcd")
 *
 * A lease moves the node's role through role.h (rep_role_lead when it is
 * acquired, rep_role_follow when it is lost or names another primary);
 * it reads the node through the calls of node_i.h ("for the leases"),
 * never its fields. Graceful handoff and the drain are the node's
 * (handoff.c); a lease only says whether it can move (handoff_begin) and
 * gives itself up (release).
 *
 *   rep_lease_new(n, &l);       // from rep_node_new: sets the first role
 *   l->ops->start(l);           // from rep_node_start, once the mount
 *                               // serves
 *   l->ops->stop(l);            // from rep_node_stop: no more acquiring
 *                               // or renewing
 *   [handoff.c drains]          // when this node is the primary
 *   l->ops->release(l, ...);    // the lease goes; the mount read-only
 *   l->ops->free(l);
 *
 * Thread safety: every op may be called from any thread; each
 * implementation has its own lock, taken before rep_node.mu (lock order
 * in node_i.h).
 */
#ifndef REPLICA_LEASE_H
#define REPLICA_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rep_node;
typedef struct rep_lease rep_lease;

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

typedef struct rep_lease_ops {
	const char *type;          /* "static", "etcd" */
	bool fixed;                /* the first role is the only one */
	/* Starts acquiring, renewing or following (threads). 0 or -errno. */
	int (*start)(rep_lease *l);
	/* No more acquiring, renewing or following; a lease held stays held
	 * until release. Idempotent. */
	void (*stop)(rep_lease *l);
	/* Whether this node holds the lease now and may take writes: the
	 * outcome of the last acquire or renewal. */
	bool (*held)(rep_lease *l);
	/* Epoch of the lease held or followed; 0 before one is known. */
	uint64_t (*epoch)(rep_lease *l);
	/* Handoff hooks (handoff.c). Before the drain: may the primary hand
	 * off, to node `to` only (0: any candidate)? 0, or an HTTP status
	 * (409 the lease cannot move, 503 not now) with a one-line reason
	 * in msg. */
	unsigned (*handoff_begin)(rep_lease *l, uint64_t to, char *msg,
				  size_t len);
	/* After the drain (or without one): the lease goes and the node
	 * follows (rep_role_follow); why is for the log. handed_off: this
	 * node does not take the lease again for a while. Nothing when the
	 * lease is not held. */
	void (*release)(rep_lease *l, const char *why, bool handed_off);
	void (*stats)(rep_lease *l, rep_lease_stats *out);
	void (*free)(rep_lease *l);
} rep_lease_ops;

/* The part every implementation starts with. */
struct rep_lease {
	const rep_lease_ops *ops;
	struct rep_node *n;
};

/* The implementation of the node's lease.type (rep_node_opts.lease),
 * with the node's first role set. 0 or -errno (logged). */
int rep_lease_new(struct rep_node *n, rep_lease **out);
int rep_lease_static_new(struct rep_node *n, rep_lease **out);
int rep_lease_etcd_new(struct rep_node *n, rep_lease **out);

#endif
