/*
 * Synchronous replication (docs/SYNC.md): on the primary, a commit is
 * answered only once `min-replicas` replicas have the record durably in
 * their LTX logs; replicas say so with POST /ack (replica/ack_cli.c).
 *
 * The primary's side (sync.c):
 *   Y1 an acknowledgement names the replica (its node ID), the epoch of
 *      the stream its records came on, and for each database the position
 *      (TXID/checksum) its log holds fsynced. It is refused (409) when the
 *      epoch is not this node's or this node does not lead; such acks
 *      never count.
 *   Y2 a record at position P of database D is acknowledged by a replica
 *      whose last ack for D has a TXID above P's, or P's TXID and
 *      checksum. Only replicas that stream from the primary itself ack
 *      (the primary asks them with the Ltxfs-Sync response header; a
 *      cascading replica's followers do not count).
 *   Y3 rep_node_sync_wait waits, with no lock of fs/ held, until
 *      min-replicas distinct replicas acknowledged, and fails (-EROFS)
 *      as soon as this node stops leading or its lease's write deadline
 *      passes: a fenced primary never confirms a commit. At the timeout:
 *      on-timeout fail gives -ETIMEDOUT (the commit is taken back, the
 *      application gets EIO); degrade gives 0, and commits stop waiting
 *      (degraded, said once in the log) until, at a commit, min-replicas
 *      replicas have acknowledged the record before it, which ends the
 *      episode (said once) and that commit waits again.
 *   Y4 every ack wakes every waiter; each checks its own record, so one
 *      round trip releases every commit waiting at that moment (group
 *      commit across databases and replicas).
 */
#ifndef REPLICA_SYNC_H
#define REPLICA_SYNC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ltx/pos.h"

/* The header in a /stream response by which the primary asks the
 * replica to acknowledge (value "1"). */
#define REP_HDR_SYNC "Ltxfs-Sync"
/* Replicas remembered (acks of more are refused, 503). */
#define REP_SYNC_PEERS_MAX 64

typedef struct rep_sync_opts {
	int min_replicas;        /* 0: asynchronous */
	int64_t timeout_ms;
	bool degrade;            /* on-timeout: degrade (else fail) */
} rep_sync_opts;

typedef struct rep_sync rep_sync;
struct rep_node;

int rep_sync_new(const rep_sync_opts *o, struct rep_node *n, rep_sync **out);
void rep_sync_free(rep_sync *s);
bool rep_sync_on(const rep_sync *s);

/* Y1: one database's acknowledged position from replica node in epoch.
 * 0; -ESTALE (409) the epoch is not this node's or it does not lead;
 * -ENOSPC (503) too many replicas. */
int rep_sync_ack(rep_sync *s, uint64_t node, uint64_t epoch,
		 const char *db, ltx_pos pos);
/* Wakes every waiter to re-check (a role change). */
void rep_sync_kick(rep_sync *s);

/* Prometheus text (ltxfs_sync_*) and the /info object (malloc'd). */
void rep_sync_metrics(rep_sync *s, FILE *f);
char *rep_sync_info(rep_sync *s);

#endif
