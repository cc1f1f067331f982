/*
 * Commit subscribers: fs/ calls rep_node_on_commit after every
 * transaction recorded (primary) or applied (replica); it calls each
 * component that registered, in order. The node's own, added by
 * rep_node_new:
 *
 *   1. retention (retention.c)  gives the database's log the policy
 *   2. streams (stream_srv.c)   wakes the /stream responses
 *   3. waits (node.c)           wakes rep_node_wait_txid callers
 *
 * then whatever rep_node_on_commit_add adds before rep_node_start. The
 * list is fixed when the node starts (rep_commit_fix), so the commit
 * path reads it without a lock.
 */
#include "node_i.h"

#include <errno.h>

#include "retention.h"

int rep_node_on_commit_add(rep_node *n, rep_commit_fn fn, void *ctx)
{
	rep_commit_subs *s = &n->subs;

	if (s->fixed)
		return -EBUSY;
	if (s->count == REP_COMMIT_SUBS_MAX)
		return -ENOSPC;
	s->s[s->count].fn = fn;
	s->s[s->count].ctx = ctx;
	s->count++;
	return 0;
}

void rep_commit_fix(rep_node *n)
{
	n->subs.fixed = true;
}

void rep_node_on_commit(void *ctx, fs_db *db, ltx_pos pos)
{
	rep_node *n = ctx;

	for (size_t i = 0; i < n->subs.count; i++)
		n->subs.s[i].fn(n->subs.s[i].ctx, db, pos);
}

/* Wakes rep_node_wait_txid, when anyone waits. */
static void wake_waiters(void *ctx, fs_db *db, ltx_pos pos)
{
	rep_node *n = ctx;

	(void)db;
	(void)pos;
	if (atomic_load(&n->waiters) == 0)
		return;
	pthread_mutex_lock(&n->mu);
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
}

int rep_commit_add_builtin(rep_node *n)
{
	int rc = rep_node_on_commit_add(n, rep_retention_on_commit, n);

	if (rc == 0)
		rc = rep_node_on_commit_add(n, rep_stream_on_commit, n);
	if (rc == 0)
		rc = rep_node_on_commit_add(n, wake_waiters, n);
	return rc;
}
