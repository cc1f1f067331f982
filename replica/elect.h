/*
 * Failover with synchronous replication: the candidates compare their
 * durable positions before one takes a free etcd lease (elect.c has the
 * rules).
 */
#ifndef REPLICA_ELECT_H
#define REPLICA_ELECT_H

#include <stdbool.h>
#include <stdint.h>

#include "etcd.h"

struct rep_node;

/* How long candidates wait for each other to publish (at most TTL/2). */
#define REP_ELECT_WAIT_MS 1000

/* Rules E1-E3: publishes this node's position under prefix, waits, reads
 * the others'; true when this node may take the lease. Errors (etcd)
 * give false: the caller tries again. */
bool rep_elect_may_acquire(struct rep_node *n, rep_etcd *e,
			   const char *prefix, uint64_t node, int64_t ttl_s);

#endif
