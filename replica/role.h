/*
 * The node's role state machine (role.c: the diagram, the table of
 * allowed transitions and each state's invariants). Internal to
 * replica/: the leases (lease_static.c, lease_etcd.c), the drain
 * (handoff.c) and the node's life cycle (node.c) move it; everything
 * else reads rep_node.role under rep_node.mu.
 *
 * Every function here takes rep_node.mu itself (callers must not hold
 * it) and returns 0 or -EPERM for a transition the table does not allow
 * (which is a bug: it also fails an assert). The mount's read-only
 * switch follows the role (fs_mount_set_role), after mu is released.
 */
#ifndef REPLICA_ROLE_H
#define REPLICA_ROLE_H

#include <stdbool.h>
#include <stdint.h>

struct rep_node;

/* The role, its primary and what the stream client needs to know of a
 * change; every field guarded by rep_node.mu. */
typedef struct rep_role_sm {
	int state;               /* enum rep_role */
	uint64_t gen;            /* bumped by every transition and every
				  * change of primary: a stream started
				  * under another gen is ended */
	char *primary_url;       /* REPLICA: the primary's advertise URL
				  * ("" unknown); "" otherwise */
	char *primary_desc;      /* /.primary text and EROFS messages */
	int64_t finish_until_ns; /* PROMOTING: the former primary's
				  * stream is applied until then
				  * (CLOCK_MONOTONIC) */
} rep_role_sm;

/* Whether the table allows from -> to (both enum rep_role). */
bool rep_role_allowed(int from, int to);
const char *rep_role_name(int role);
/* PRIMARY or DRAINING: the node replicas follow, that serves /stream. */
bool rep_role_leads(int role);

/* -> REPLICA following primary_url ("" unknown) in epoch (raised, never
 * lowered): from INIT, REPLICA, PRIMARY (the lease is lost) or DRAINING
 * (it was handed off). The mount turns read-only. */
int rep_role_follow(struct rep_node *n, uint64_t epoch,
		    const char *primary_url);
/* -> PRIMARY in epoch: from INIT at once; from REPLICA through
 * PROMOTING, which finishes the former primary's stream first (up to
 * REP_FINISH_STREAM_MS). The mount turns writable. */
int rep_role_lead(struct rep_node *n, uint64_t epoch);
#define REP_FINISH_STREAM_MS 500
/* PRIMARY -> DRAINING (handoff.c holds new writes, then turns the mount
 * read-only). -EPERM, without an assert, when not PRIMARY: a drain
 * asked of a replica is not a bug. */
int rep_role_drain(struct rep_node *n);
/* -> STOPPED, from INIT, REPLICA or DRAINING (a primary drains first:
 * rep_node_stop). */
int rep_role_stop(struct rep_node *n);

void rep_role_free(rep_role_sm *r);

#endif
