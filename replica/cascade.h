/*
 * Cascading replicas (docs/REGIONS.md; docs/PROTOCOL.md, "Cascading
 * replicas"): which node a replica streams from (its upstream), and the
 * followers a node serves /stream to. Internal to replica/: the stream
 * client (stream_cli.c, stream_frames.c) chooses and records its
 * upstream here, the stream server (stream_srv.c) asks whether it may
 * serve and registers its followers, metrics.c shows both.
 *
 * Rules:
 *   C1 A node serves /stream when it is the primary, or when it is a
 *      replica whose current upstream is the primary (depth 1) and that
 *      has caught up with it (READY applied) on its current stream. So a
 *      cascade is at most one level deep (primary -> intermediate ->
 *      followers) and cannot form a cycle: a node following a replica
 *      (depth 2) or still connecting (depth 0) refuses every follower.
 *   C2 A node also refuses a follower that is itself or that is its own
 *      upstream (by node ID), with a log line: a configuration that
 *      points two nodes at each other is said plainly.
 *   C3 An intermediate stamps its frames with the epoch it has seen (the
 *      primary's) and relays, in its heartbeats, the primary's position
 *      of each database when it knows one ahead of its own. It ends the
 *      streams it serves when its role or primary changes (its followers
 *      then hear of the new epoch through their next connection) or when
 *      its depth becomes 2.
 *   C4 A replica's upstream, chosen before each connection:
 *        a. lease.upstream-url, unless avoided (C5);
 *        b. else, with a region: the primary's /info lists the nodes that
 *           follow it directly; of those in this node's region with a
 *           node ID lower than this node's own and not avoided, the
 *           lowest; so each region's lowest-ID node follows the primary
 *           and the others follow it;
 *        c. else the primary (the lease's URL).
 *   C5 A stream from an upstream that is not the primary that ends for
 *      any reason but this node's own stop or role change (the upstream
 *      died, refused, or changed its own upstream) makes that URL avoided
 *      for REP_CASCADE_AVOID_MS, and the next connection (after the
 *      shortest backoff) goes to the next choice of C4. Positions are
 *      resumed as always: the records an upstream relays are the
 *      primary's, byte for byte, so another upstream's log proves them.
 *   C6 A stream that is not C4's first choice (a fallback, or the
 *      primary taken by rule b for want of a candidate) is checked again
 *      every REP_CASCADE_RECHECK_MS: when C4 chooses another upstream
 *      now, the stream ends and the next one goes there.
 *
 * $LTXFS_TEST_CASCADE_MS (100..30000) replaces both periods, for tests.
 *
 * Every field is guarded by rep_node.mu, except the followers' byte and
 * record counters (atomics).
 */
#ifndef REPLICA_CASCADE_H
#define REPLICA_CASCADE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

struct rep_node;

#define REP_REGION_MAX 63
#define REP_CASCADE_AVOID_MAX 4
#define REP_CASCADE_AVOID_MS 30000
#define REP_CASCADE_RECHECK_MS 30000
/* The headers a follower names itself with on GET /stream. */
#define REP_HDR_REGION "X-Ltxfs-Region"
#define REP_HDR_ADVERTISE "X-Ltxfs-Advertise-Url"

/* A node this one serves /stream to. */
typedef struct rep_follower {
	struct rep_follower *next;
	uint64_t node;
	char region[REP_REGION_MAX + 1];
	char url[REP_URL_MAX + 1];     /* its advertise URL, "" unknown */
	char peer[64];
	int64_t since_ms;              /* wall clock */
	atomic_uint_fast64_t bytes, records; /* sent to it */
} rep_follower;

typedef struct rep_cascade {
	/* The stream client's upstream (a replica). */
	char url[REP_URL_MAX + 1];     /* "" none */
	bool to_primary;               /* url is the lease's primary URL */
	bool recheck;                  /* C6 applies */
	int64_t recheck_ns;            /* ... from then (monotonic) */
	uint64_t node;                 /* from its HELLO; 0 unknown */
	int depth;                     /* 0 not connected, 1 the upstream is
					* the primary, 2 a replica */
	struct {
		char url[REP_URL_MAX + 1];
		int64_t until_ns;      /* monotonic */
	} avoid[REP_CASCADE_AVOID_MAX];
	rep_follower *followers;
	int nfollowers;
} rep_cascade;

/* Whether s is a valid region name: 1..63 bytes of [A-Za-z0-9._-]. */
bool rep_region_valid(const char *s);

/* Client side (the stream thread, n->mu not held). */
/* C4: the upstream URL for the next connection into url; *to_primary
 * whether it is primary; *recheck whether C6 applies. */
void rep_cascade_choose(struct rep_node *n, const char *primary, char *url,
			size_t len, bool *to_primary, bool *recheck);
/* A connection to url starts (depth 0). */
void rep_cascade_connecting(struct rep_node *n, const char *url,
			    bool to_primary, bool recheck);
/* Its HELLO came (mu held): the upstream's node ID and hops (0: it is
 * the primary). */
void rep_cascade_hello_locked(struct rep_node *n, uint64_t node, int hops);
/* C5: the stream ended; avoid: not for this node's own reasons. */
void rep_cascade_ended(struct rep_node *n, bool avoid);
/* C6: 1 when the stream should end to move to another upstream (its
 * URL in why), else 0. Called between reads. */
int rep_cascade_recheck(struct rep_node *n, char *why, size_t len);

/* Server side. */
/* C1, C2 (mu held): 0 when this node may serve follower node, else an
 * HTTP status with the reason in err. */
unsigned rep_cascade_may_serve_locked(struct rep_node *n, uint64_t node,
				      char *err, size_t len);
/* C3 (mu held): whether a stream this replica opened under role gen gen
 * may go on. */
bool rep_cascade_serving_locked(struct rep_node *n, uint64_t gen);
/* The registry of followers (mu held). */
void rep_cascade_follower_add_locked(struct rep_node *n, rep_follower *f);
void rep_cascade_follower_remove_locked(struct rep_node *n, rep_follower *f);

#endif
