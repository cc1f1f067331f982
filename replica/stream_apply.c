/*
 * The replica's stream client (stream_cli.c): applying the records it
 * queued in the scratch file, each database's in order, without waiting
 * for local readers unless told to (see the overview in stream_cli.c).
 */
#include "stream_cli_i.h"

#include <errno.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"

size_t rep_cli_queued(const struct rep_cli *c)
{
	return c->sc ? rep_scratch_count(c->sc) : 0;
}

/* Whether this node became primary while reading the stream and may
 * still finish it (n->mu held): what the former primary sent before it
 * let the lease go is committed history older than this node's epoch. */
bool rep_cli_finishing_locked(const struct rep_cli *c, const rep_frame *f)
{
	const rep_node *n = c->n;

	return n->role.state == REP_ROLE_PROMOTING && c->hello_epoch &&
	       (!f || f->epoch == c->hello_epoch) &&
	       lib_clock_monotonic_ns() < n->role.finish_until_ns;
}

/* Whether records may be applied (n->mu held). new_data: bytes just
 * received, accepted while the stream's primary is followed, or while
 * this node, becoming primary, finishes the stream; otherwise records
 * already queued, which a node becoming primary waits for
 * (rep_follow.in_cb, role.c). */
static bool may_apply_locked(const struct rep_cli *c, bool new_data)
{
	const rep_node *n = c->n;

	if (n->role.gen == c->role_gen)
		return true;
	return new_data ? rep_cli_finishing_locked(c, NULL)
			: n->role.state == REP_ROLE_PROMOTING && c->hello_epoch;
}

/* Enters the handling of received data (rep_follow.in_cb set); false when
 * nothing may be applied any more (a stopping node takes new data until
 * libcurl's progress callback ends the transfer, but applies nothing
 * queued after that). */
bool rep_cli_enter(struct rep_cli *c, bool new_data)
{
	rep_node *n = c->n;
	bool ok;

	pthread_mutex_lock(&n->mu);
	ok = (new_data || n->role.state != REP_ROLE_STOPPED) &&
	     may_apply_locked(c, new_data);
	if (ok)
		n->follow.in_cb = true;
	pthread_mutex_unlock(&n->mu);
	return ok;
}

/* rep_follow.in_cb stays set while records received are queued. */
void rep_cli_leave(struct rep_cli *c)
{
	rep_node *n = c->n;

	pthread_mutex_lock(&n->mu);
	n->follow.in_cb = rep_cli_queued(c) > 0;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
}

/* Forgets the record being received and those not applied yet (the
 * next connection asks from the position the replica has). */
void rep_cli_drop(struct rep_cli *c)
{
	for (size_t i = 0; i < rep_cli_queued(c); i++) {
		rep_scratch_rec *r = rep_scratch_rec_at(c->sc, i);
		if (!r->done)
			fs_db_apply_cancel_wait(r->db);
	}
	if (c->sc)
		rep_scratch_clear(c->sc);
	c->in_record = false;
	c->skip = false;
	c->db = NULL;
	c->nwaiting = 0;
	rep_cli_leave(c);
}

bool rep_cli_has_queued(const struct rep_cli *c, const fs_db *db)
{
	for (size_t i = 0; i < rep_cli_queued(c); i++) {
		rep_scratch_rec *r = rep_scratch_rec_at(c->sc, i);
		if (!r->done && r->db == db)
			return true;
	}
	return false;
}

static bool is_waiting(const struct rep_cli *c, const fs_db *db)
{
	for (size_t i = 0; i < c->nwaiting; i++)
		if (c->waiting[i] == db)
			return true;
	return false;
}

/* Synchronous replication (ack_cli.c, A1): db's log holds pos durably
 * (fs_durable), before the records are applied. */
static void durable(void *ctx, fs_db *db, ltx_pos pos)
{
	struct rep_cli *c = ctx;

	rep_ack_note(c->ack, fs_db_name(db), pos);
}

/* Records idx[0..done) of db were applied: marked, counted, and the
 * primary's position known to be reached when it is. */
static void applied(struct rep_cli *c, fs_db *db, const size_t *idx,
		    size_t done)
{
	rep_node *n = c->n;
	int64_t now = lib_clock_wall_ms();
	ltx_pos local;
	rep_remote *r;

	if (done == 0)
		return;
	for (size_t k = 0; k < done; k++) {
		rep_scratch_rec *q = rep_scratch_rec_at(c->sc, idx[k]);
		q->done = true;
		if (q->ts)
			rep_metrics_observe_latency(&n->m,
						    (double)(now - q->ts));
		if (q->kind == 1)
			atomic_fetch_add(&n->m.snapshots_applied, 1);
	}
	atomic_fetch_add(&n->m.records_applied, done);
	local = fs_db_pos(db);
	pthread_mutex_lock(&n->mu);
	r = rep_remote_get(n, fs_db_name(db));
	if (r && r->pos.txid <= local.txid) {
		r->pos = local;
		r->behind_since_ms = 0;
	}
	pthread_mutex_unlock(&n->mu);
}

/* Applies the queued records of record i's database, from i on, in
 * order. A wait for local readers (-EAGAIN, nowait) leaves the rest
 * queued and the database in c->waiting. 0, or <0 with c->why set. */
static int apply_db(struct rep_cli *c, size_t i, bool wait)
{
	rep_node *n = c->n;
	fs_db *db = rep_scratch_rec_at(c->sc, i)->db;
	fs_durable ack_hook = {durable, c};
	fs_apply_rec recs[BATCH_MAX];
	size_t idx[BATCH_MAX];
	char err[400];
	int rc = 0;

	for (size_t j = i; j < rep_cli_queued(c) && rc == 0;) {
		size_t m = 0, done = 0;
		for (; j < rep_cli_queued(c) && m < BATCH_MAX; j++) {
			rep_scratch_rec *q = rep_scratch_rec_at(c->sc, j);
			if (q->db != db || q->done)
				continue;
			idx[m] = j;
			recs[m++] = (fs_apply_rec){q->off, q->len};
		}
		if (m == 0)
			break;
		rc = fs_db_apply_batch(db, rep_scratch_fd(c->sc), recs, m,
				       wait ? 0 : FS_APPLY_NOWAIT,
				       c->sync ? &ack_hook : NULL, &c->dec,
				       &done, err, sizeof(err));
		applied(c, db, idx, done);
	}
	if (rc == -EAGAIN && !wait) {
		if (c->nwaiting < WAIT_MAX)
			c->waiting[c->nwaiting++] = db;
		return 0;
	}
	if (rc < 0) {
		atomic_fetch_add(&n->m.apply_errors, 1);
		rep_cli_why(c, "db=%s: record rejected: %s", fs_db_name(db),
			    err);
		c->failed = true;
	}
	return rc;
}

/* READY is told (rep_follow.ready) once nothing received is queued. */
void rep_cli_tell_ready(struct rep_cli *c)
{
	rep_node *n = c->n;

	if (!c->got_ready || c->told_ready || rep_cli_queued(c) > 0)
		return;
	log_info("caught up with the primary");
	c->told_ready = true;
	pthread_mutex_lock(&n->mu);
	n->follow.ready = true;
	n->follow.caught_up_once = true;
	pthread_mutex_unlock(&n->mu);
}

/* Applies the records queued, each database's in order. wait: waits for
 * local readers (up to the apply timeout); otherwise a database whose
 * apply would wait stays queued and is tried again from c->retry_ns on.
 * 0, or <0 with c->why set. */
int rep_cli_apply(struct rep_cli *c, bool wait)
{
	int64_t now = lib_clock_monotonic_ns();
	bool retry = wait || now >= c->retry_ns;
	int rc = 0;

	if (c->failed)
		return -ECANCELED;
	if (retry)
		c->nwaiting = 0;
	for (size_t i = 0; i < rep_cli_queued(c) && rc == 0; i++) {
		rep_scratch_rec *q = rep_scratch_rec_at(c->sc, i);
		if (!q->done && !is_waiting(c, q->db))
			rc = apply_db(c, i, wait);
	}
	if (retry && c->nwaiting)
		c->retry_ns = now + RETRY_MS * NS_PER_MS;
	if (rc == 0 && c->sc && (rc = rep_scratch_settle(c->sc)) < 0)
		rep_cli_why(c, "scratch file: %s", strerror(-rc));
	if (rc == 0)
		rep_cli_tell_ready(c);
	return rc;
}

/* An apply that waits for local readers, tried again when due (outside
 * libcurl's callbacks). 0, or <0 with c->why set. */
int rep_cli_retry(struct rep_cli *c)
{
	int rc;

	if (!c->nwaiting || c->failed ||
	    lib_clock_monotonic_ns() < c->retry_ns)
		return 0;
	if (!rep_cli_enter(c, false)) {
		rep_cli_why(c, "the primary changed");
		return -ESTALE;
	}
	rc = rep_cli_apply(c, false);
	rep_cli_leave(c);
	return rc;
}

/* The stream ended: the records it brought completely are applied (they
 * are the primary's committed history), waiting for local readers,
 * unless an apply failed, the node stops or follows another primary. */
void rep_cli_finish(struct rep_cli *c)
{
	if (!rep_cli_queued(c) || c->failed || !rep_cli_enter(c, false))
		return;
	rep_cli_apply(c, true);
	rep_cli_leave(c);
}
