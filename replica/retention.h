/*
 * Retention of the per-database LTX logs: a thread that applies
 * data.retention and data.retention-bytes (rep_node_opts) to every
 * database's log at start and every REP_RETENTION_INTERVAL_MS, on the
 * primary and on replicas alike, off the commit path. The rules are
 * fs_log_prune's (fs/log.h); the choices are in docs/STORAGE.md,
 * "Retention". The same pass tries again every WAL capture that a full
 * disk blocked (fs_db_capture_retry; docs/STORAGE.md, "A full disk"), so
 * capture resumes within a second of space coming back even when no
 * application writes.
 *
 *   rep_retention_start(n);   // from rep_node_start, after the mount
 *   rep_retention_on_commit          // a commit subscriber (commit.c)
 *   rep_retention_stop(n);    // from rep_node_stop
 */
#ifndef REPLICA_RETENTION_H
#define REPLICA_RETENTION_H

#include "ltx/pos.h"

#define REP_RETENTION_INTERVAL_MS 1000

struct rep_node;

/* Runs one pass now (the logs are pruned before the first stream is
 * served), then starts the thread. */
int rep_retention_start(struct rep_node *n);
/* Stops and joins the thread; safe when it was never started. */
void rep_retention_stop(struct rep_node *n);
/* The commit subscriber (rep_commit_fn, ctx the node): gives db's log
 * the policy (a few atomic stores), so a database created and written at
 * once rolls its segments by it from its second record on, before the
 * next pass. */
struct fs_db;
void rep_retention_on_commit(void *ctx, struct fs_db *db, ltx_pos pos);

#endif
