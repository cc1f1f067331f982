/*
 * The backup uploader: see uploader.h. One thread; every interval, when
 * this node is the primary, for each database:
 *
 *   U1 the store's position of the database (the end of its chain,
 *      object.h rule O3: epoch, TXID, post-apply checksum) is read from
 *      the store's listing the first time, and again after a failed
 *      upload and whenever this node's epoch changes; afterwards it is
 *      what this thread last uploaded.
 *   U2 an object of a higher epoch than this node's in the store (at
 *      U1's listing, and asked again just before every put: object.h
 *      rule O4, one LIST request of one key): this node is a stale
 *      primary; it uploads nothing for that database. What remains is
 *      the race between that answer and the put: a newer primary's
 *      first object stored after the store answered the check and
 *      before this put completes (this thread stopped or slow between
 *      the two, e.g. SIGSTOP, or a put that takes up to the request
 *      timeout) is not seen; docs/BACKUP.md says what that costs.
 *   U3 the node's log records after the store's TXID are uploaded as one
 *      object (up to BK_OBJECT_MAX_BYTES; the rest next time), provided
 *      the first one follows the store's position (min TXID = TXID + 1
 *      and pre-apply = the store's checksum) or is itself a snapshot.
 *      Otherwise (the log no longer holds them, the store is ahead, or
 *      its history differs) a snapshot of the database is uploaded
 *      (min TXID 1), which starts a new chain.
 *   U5 the low-water mark: while this node is the primary, each log is
 *      held (fs_log_set_hold) after the store's TXID, so age-based
 *      retention keeps every record not yet uploaded (from the start,
 *      and for a new database from its first pass: TXID 0 until the
 *      store's position is known). data.retention-bytes still prunes
 *      them; U3 then uploads a snapshot. A replica, or a stale primary
 *      (U2), holds nothing.
 *   U4 a failure keeps the position, counts an error and tries again
 *      after a doubling delay (BK_BACKOFF_MIN_MS..MAX); the log says so
 *      once when the store starts failing and once when it works again.
 *   U6 scheduled snapshots: once the snapshot interval has passed since
 *      the chain's start was taken (its LTX time, read with the position
 *      at U1) and the database changed since, a snapshot at TXID S is
 *      taken; the log records up to S are uploaded first (U3), then the
 *      snapshot, which starts a new chain: the old chain reaches S, so
 *      every point before S stays restorable.
 *   U7 retention (retain.h): at most once per min(snapshot interval,
 *      BK_RETAIN_EVERY_MS), on a primary that the store (rule O4) shows
 *      is not stale, the objects no restore to a point after
 *      now - retention needs are deleted. A failure is logged and
 *      counted; uploads go on.
 *   U8 after a pass of a database that worked, not stale, at most once
 *      per compaction interval: compaction (compact.h) of its newest L0
 *      objects into an L1, for at most BK_COMPACT_BUDGET_MS (uploads wait
 *      meanwhile); what is left goes on at the next pass. A failure is
 *      counted as an error and logged, and is tried again one interval
 *      later; it does not touch the uploads' backoff.
 *
 * Files: this one runs the thread and the rules; uploader_build.c makes
 * the objects (U3), uploader_report.c the /metrics and /info parts;
 * uploader_i.h has the state they share.
 *
 * Locks: mu guards the per-database table and the state that /metrics
 * and /info read; the store and the temporary files belong to the
 * thread.
 */
#include "uploader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/db.h"
#include "fs/log.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "compact.h"
#include "object.h"
#include "retain.h"
#include "uploader_i.h"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The state of db (mu held); NULL when the table is full. */
static struct db_state *state_of(bk_uploader *u, const char *name)
{
	struct db_state *v;

	for (size_t i = 0; i < u->ndbs; i++)
		if (strcmp(u->dbs[i].name, name) == 0)
			return &u->dbs[i];
	if (u->ndbs == BK_MAX_DBS)
		return NULL;
	v = realloc(u->dbs, (u->ndbs + 1) * sizeof(*v));
	if (!v)
		return NULL;
	u->dbs = v;
	memset(&v[u->ndbs], 0, sizeof(*v));
	snprintf(v[u->ndbs].name, sizeof(v[u->ndbs].name), "%s", name);
	return &v[u->ndbs++];
}

/* U1: the end of db's chain in the store. */
static int read_position(bk_uploader *u, struct db_state *st, char *err,
			 size_t errlen)
{
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	const bk_obj **chain = NULL;
	size_t n = 0, nchain = 0;
	int rc;

	rc = bk_obj_list(u->store, u->prefix, st->name, &keys, &objs, &n, err,
			 errlen);
	if (rc == 0)
		rc = bk_obj_chain(objs, n, NULL, UINT64_MAX, &chain, &nchain);
	if (rc == 0 && nchain > 0 && chain[0]->min_txid == 1) {
		ltx_header hdr; /* U6: when the chain's start was taken */
		rc = bk_obj_first_header(u->store, chain[0]->key, &hdr, err,
					 errlen);
		st->snap_ms = rc == 0 ? hdr.timestamp : 0;
		st->snap_txid = chain[0]->max_txid;
	}
	if (rc == 0) {
		const bk_obj *end = nchain ? chain[nchain - 1] : NULL;
		pthread_mutex_lock(&u->mu);
		st->epoch = end ? end->epoch : 0;
		st->txid = end ? end->max_txid : 0;
		st->post = end ? end->post : 0;
		/* Any object of a higher epoch than ours: a newer primary. */
		for (size_t i = 0; i < n; i++)
			if (objs[i].epoch > st->epoch)
				st->epoch = objs[i].epoch;
		st->known = true;
		pthread_mutex_unlock(&u->mu);
	}
	free(chain);
	free(objs);
	bk_keys_free(&keys);
	return rc;
}

static void note_failure(bk_uploader *u, struct db_state *st, int rc,
			 const char *err)
{
	pthread_mutex_lock(&u->mu);
	st->errors++;
	u->errors_total++;
	st->known = false; /* read the store's position again (U1) */
	if (!u->failing)
		log_warn("backup: %s: uploads fail, retrying with backoff "
			 "(database %s): %s", bk_store_desc(u->store), st->name,
			 err);
	u->failing = true;
	snprintf(u->last_err, sizeof(u->last_err), "%s", err);
	u->backoff_ms = u->backoff_ms ? u->backoff_ms * 2 : BK_BACKOFF_MIN_MS;
	if (u->backoff_ms > BK_BACKOFF_MAX_MS)
		u->backoff_ms = BK_BACKOFF_MAX_MS;
	u->retry_at_ms = mono_ms() + u->backoff_ms;
	pthread_mutex_unlock(&u->mu);
	(void)rc;
}

static void note_success(bk_uploader *u)
{
	pthread_mutex_lock(&u->mu);
	if (u->failing)
		log_info("backup: %s: uploads work again",
			 bk_store_desc(u->store));
	u->failing = false;
	u->last_err[0] = '\0';
	u->backoff_ms = 0;
	pthread_mutex_unlock(&u->mu);
}

/* U2: the store holds epoch newer > this node's epoch for db: upload
 * nothing for it, hold nothing (U5); logged once. Returns 0. */
static int mark_stale(bk_uploader *u, fs_db *db, struct db_state *st,
		      uint64_t newer, uint64_t epoch)
{
	fs_log_set_hold(fs_db_log(db), FS_LOG_NO_HOLD);
	if (!st->stale)
		log_warn("backup: database %s: the store holds epoch "
			 "%016" PRIx64 ", newer than this primary's "
			 "%016" PRIx64 ": not uploading", st->name, newer,
			 epoch);
	pthread_mutex_lock(&u->mu);
	st->epoch = newer;
	st->stale = true;
	pthread_mutex_unlock(&u->mu);
	return 0;
}

/* U2 and the put of the object in b: dropped (0) when this node is no
 * longer the primary of epoch or the store holds an object of a newer
 * epoch (object rule O4); put (1), after which the store's position is
 * b's end; or a negative errno with err set. */
static int put_built(bk_uploader *u, fs_db *db, struct db_state *st,
		     uint64_t epoch, const struct built *b, char *err,
		     size_t errlen)
{
	char key[1024];
	uint64_t newer = 0;
	int rc;

	/* Locally first: a node that lost the lease (or saw a newer epoch)
	 * while building the object drops it. Object rule O3 makes any
	 * later upload of a stale primary lose to the newer primary's
	 * objects in restores. */
	if (!rep_node_is_primary(u->node) || rep_node_epoch(u->node) != epoch)
		return 0;
	/* Then against the store (O4): a newer primary's object means this
	 * node is stale, whatever its role says. */
	rc = bk_obj_newer_epoch(u->store, u->prefix, st->name, epoch, &newer,
				err, errlen);
	if (rc < 0)
		return rc;
	if (newer > epoch)
		return mark_stale(u, db, st, newer, epoch);
	rc = bk_obj_key(key, sizeof(key), u->prefix, st->name, &b->o);
	if (rc == 0)
		rc = bk_store_put(u->store, key, b->fd, b->len, err, errlen);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&u->mu);
	st->epoch = epoch;
	st->txid = b->o.max_txid;
	st->post = b->o.post;
	st->bytes += b->len;
	st->objects++;
	if (b->o.min_txid == 1) {
		st->snap_ms = b->first_ms;
		st->snap_txid = b->o.max_txid;
	}
	/* The rest (past BK_OBJECT_MAX_BYTES) is counted from its own first
	 * record's time at the next pass. */
	st->pending_ms = 0;
	pthread_mutex_unlock(&u->mu);
	fs_log_set_hold(fs_db_log(db), st->txid); /* U5 */
	log_debug("backup: database %s: uploaded %s (%zu records, %" PRIu64
		  " bytes)", st->name, key, b->records, b->len);
	return 1;
}

/* U1..U4 for one database, one try: the records after the store's
 * position up to TXID upto (UINT64_MAX: the database's position). */
static int upload_records(bk_uploader *u, fs_db *db, struct db_state *st,
			  uint64_t epoch, uint64_t upto)
{
	struct built b = {.fd = -1};
	char err[1024] = "";
	ltx_pos pos = fs_db_pos(db);
	int rc = 0;

	pthread_mutex_lock(&u->mu);
	st->node_txid = pos.txid;
	pthread_mutex_unlock(&u->mu);
	if (upto > pos.txid)
		upto = pos.txid;
	if (!st->known) {
		fs_log_set_hold(fs_db_log(db), st->txid); /* U5 */
		rc = read_position(u, st, err, sizeof(err));
		if (rc < 0)
			goto fail;
	}
	if (st->epoch > epoch)
		return mark_stale(u, db, st, st->epoch, epoch);
	fs_log_set_hold(fs_db_log(db), st->txid);
	st->stale = false;
	if (pos.txid == 0 || (pos.txid == st->txid && pos.checksum == st->post)) {
		pthread_mutex_lock(&u->mu);
		st->pending_ms = 0;
		pthread_mutex_unlock(&u->mu);
		return 0;
	}
	b.fd = bk_up_tmpfile(u);
	if (b.fd < 0) {
		rc = b.fd;
		snprintf(err, sizeof(err), "backup: cannot create a temporary "
			 "file in %s: %s", u->data_dir, strerror(-rc));
		goto fail;
	}
	b.o.epoch = epoch;
	if (upto > st->txid)
		rc = bk_up_build_from_log(db, st, upto, &b);
	else if (pos.txid > st->txid)
		goto out; /* the rest after upto: later */
	else
		rc = -ESTALE;
	if (rc == -ESTALE) {
		b.len = 0;
		b.records = 0;
		if (lib_io_ftruncate(b.fd, 0) == 0)
			rc = bk_up_build_snapshot(u, db, &b);
		if (rc == 0)
			log_info("backup: database %s: snapshot at TXID "
				 "%016" PRIx64 " (the store's position "
				 "%016" PRIx64 " does not continue in the "
				 "log)", st->name, b.o.max_txid, st->txid);
	}
	if (rc < 0) {
		snprintf(err, sizeof(err), "backup: database %s: cannot read "
			 "its log after TXID %016" PRIx64 ": %s", st->name,
			 st->txid, strerror(-rc));
		goto fail;
	}
	if (b.records == 0)
		goto out;
	pthread_mutex_lock(&u->mu);
	if (!st->pending_ms || b.first_ms < st->pending_ms)
		st->pending_ms = b.first_ms;
	pthread_mutex_unlock(&u->mu);
	rc = put_built(u, db, st, epoch, &b, err, sizeof(err));
	if (rc < 0)
		goto fail;
	if (rc > 0)
		note_success(u);
out:
	if (b.fd >= 0)
		close(b.fd);
	return 0;
fail:
	note_failure(u, st, rc, err);
	if (b.fd >= 0)
		close(b.fd);
	return rc;
}

/* U6: a snapshot of db when the interval has passed since the chain's
 * start and the database changed since. The records up to the
 * snapshot's TXID go first, so the chain before it reaches it and every
 * point in between stays restorable. */
static int scheduled_snapshot(bk_uploader *u, fs_db *db, struct db_state *st,
			      uint64_t epoch)
{
	struct built b = {.fd = -1};
	char err[1024] = "";
	int rc;

	if (!u->o.snapshot_interval_ms || st->txid == st->snap_txid ||
	    lib_clock_wall_ms() - st->snap_ms < u->o.snapshot_interval_ms)
		return 0;
	b.fd = bk_up_tmpfile(u);
	b.o.epoch = epoch;
	rc = b.fd < 0 ? b.fd : bk_up_build_snapshot(u, db, &b);
	if (rc < 0) {
		snprintf(err, sizeof(err), "backup: database %s: cannot take "
			 "a snapshot: %s", st->name, strerror(-rc));
		goto fail;
	}
	/* Each pass moves the store's position or gives up (a failure, a
	 * stale node, or a snapshot of U3's own); bounded all the same. */
	for (int i = 0; i < 64 && st->txid < b.o.max_txid; i++) {
		uint64_t before = st->txid;
		rc = upload_records(u, db, st, epoch, b.o.max_txid);
		if (rc < 0)
			goto out; /* upload_records noted it */
		if (st->stale || st->txid == before)
			break;
	}
	if (st->stale || st->snap_txid >= b.o.max_txid)
		goto out;
	rc = put_built(u, db, st, epoch, &b, err, sizeof(err));
	if (rc < 0)
		goto fail;
	if (rc > 0) {
		pthread_mutex_lock(&u->mu);
		st->snapshots++;
		pthread_mutex_unlock(&u->mu);
		log_info("backup: database %s: snapshot at TXID %016" PRIx64
			 " (%" PRIu64 " bytes; every %" PRId64 " s)", st->name,
			 b.o.max_txid, b.len,
			 u->o.snapshot_interval_ms / 1000);
	}
	rc = 0;
out:
	close(b.fd);
	return rc;
fail:
	note_failure(u, st, rc, err);
	if (b.fd >= 0)
		close(b.fd);
	return rc;
}

/* U7: a retention pass (retain.h), at most once per
 * min(snapshot interval, BK_RETAIN_EVERY_MS). A failure is counted and
 * logged; it does not hold the uploads back. */
static void retention(bk_uploader *u, fs_db *db, struct db_state *st,
		      uint64_t epoch)
{
	bk_retain_result res;
	char err[1024] = "";
	int64_t now = mono_ms(), every = BK_RETAIN_EVERY_MS;
	uint64_t newer = 0;
	int rc;

	if (!u->o.retention_ms || now < st->retain_at_ms)
		return;
	if (u->o.snapshot_interval_ms && u->o.snapshot_interval_ms < every)
		every = u->o.snapshot_interval_ms;
	st->retain_at_ms = now + every;
	if (!rep_node_is_primary(u->node) || rep_node_epoch(u->node) != epoch)
		return;
	rc = bk_obj_newer_epoch(u->store, u->prefix, st->name, epoch, &newer,
				err, sizeof(err));
	if (rc == 0 && newer > epoch) {
		mark_stale(u, db, st, newer, epoch);
		return;
	}
	if (rc == 0)
		rc = bk_retain_run(u->store, u->prefix, st->name,
				   lib_clock_wall_ms() - u->o.retention_ms,
				   epoch, &res, err, sizeof(err));
	pthread_mutex_lock(&u->mu);
	if (rc < 0) {
		st->errors++;
		u->errors_total++;
	} else {
		st->deleted += res.deleted;
	}
	pthread_mutex_unlock(&u->mu);
	if (rc < 0)
		log_warn("backup: database %s: retention pass failed (tried "
			 "again later): %s", st->name, err);
	else if (res.deleted)
		log_info("backup: database %s: retention: deleted %" PRIu64
			 " objects that no restore after the snapshot at TXID "
			 "%016" PRIx64 " needs", st->name, res.deleted,
			 res.anchor_txid);
}

/* One database, one pass (U1..U7). */
static int upload_db(bk_uploader *u, fs_db *db, struct db_state *st,
		     uint64_t epoch)
{
	int rc;

	if (!fs_db_log(db))
		return 0;
	rc = upload_records(u, db, st, epoch, UINT64_MAX);
	if (rc == 0 && st->known && !st->stale)
		rc = scheduled_snapshot(u, db, st, epoch);
	if (rc == 0 && st->known && !st->stale)
		retention(u, db, st, epoch);
	return rc;
}

/* U8: a compaction of db when its time has come. */
static void compact_db(bk_uploader *u, struct db_state *st, uint64_t epoch)
{
	bk_compact_result res;
	char err[1024] = "";
	int64_t now = mono_ms();
	int rc;

	if (!st->compact_at_ms)
		st->compact_at_ms = now + u->o.compaction_interval_ms;
	if (now < st->compact_at_ms || !st->known || st->stale ||
	    !rep_node_is_primary(u->node) || rep_node_epoch(u->node) != epoch)
		return;
	st->compact_at_ms = now + u->o.compaction_interval_ms;
	rc = bk_compact_db(u->store, u->prefix, st->name, epoch, u->data_dir,
			   BK_COMPACT_BUDGET_MS, u->o.compaction_interval_ms,
			   &res, err, sizeof(err));
	if (rc == 0 && res.more)
		st->compact_at_ms = now; /* the rest at the next pass */
	pthread_mutex_lock(&u->mu);
	if (rc < 0) {
		st->errors++;
		u->errors_total++;
	}
	st->compactions += res.l1_objects;
	st->compacted_bytes += res.bytes;
	pthread_mutex_unlock(&u->mu);
	if (rc < 0)
		log_warn("%s (compaction: tried again in %" PRId64 " ms)", err,
			 u->o.compaction_interval_ms);
	else if (res.l1_objects)
		log_info("backup: database %s: compacted %" PRIu64 " objects "
			 "into %" PRIu64 " L1 (%" PRIu64 " bytes)", st->name,
			 res.l0_objects, res.l1_objects, res.bytes);
}

struct pass {
	bk_uploader *u;
	uint64_t epoch;
	bool failed;
};

static void pass_one(void *ctx, fs_db *db)
{
	struct pass *p = ctx;
	struct db_state *st;

	if (p->failed)
		return; /* the store fails: wait for the backoff */
	pthread_mutex_lock(&p->u->mu);
	st = state_of(p->u, fs_db_name(db));
	pthread_mutex_unlock(&p->u->mu);
	if (st && upload_db(p->u, db, st, p->epoch) < 0)
		p->failed = true;
	else if (st && fs_db_log(db) && p->u->o.compaction_interval_ms > 0)
		compact_db(p->u, st, p->epoch);
}

static void hold_none(void *ctx, fs_db *db)
{
	(void)ctx;
	if (fs_db_log(db))
		fs_log_set_hold(fs_db_log(db), FS_LOG_NO_HOLD);
}

static void hold_all(void *ctx, fs_db *db)
{
	(void)ctx;
	if (fs_db_log(db))
		fs_log_set_hold(fs_db_log(db), 0);
}

static void *uploader_main(void *arg)
{
	bk_uploader *u = arg;

	pthread_mutex_lock(&u->mu);
	while (!u->stop) {
		struct timespec ts;
		struct pass p = {u, 0, false};
		int64_t wait = u->o.interval_ms, now = mono_ms();
		if (u->failing && u->retry_at_ms > now + wait)
			wait = u->retry_at_ms - now;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait / 1000;
		ts.tv_nsec += (wait % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&u->cond, &u->mu, &ts);
		if (u->stop)
			break;
		if (!rep_node_is_primary(u->node)) {
			pthread_mutex_unlock(&u->mu);
			fs_mount_foreach(u->m, hold_none, NULL); /* U5 */
			pthread_mutex_lock(&u->mu);
			continue;
		}
		p.epoch = rep_node_epoch(u->node);
		if (p.epoch != u->seen_epoch) {
			for (size_t i = 0; i < u->ndbs; i++)
				u->dbs[i].known = false;
			u->seen_epoch = p.epoch;
		}
		pthread_mutex_unlock(&u->mu);
		fs_mount_foreach(u->m, pass_one, &p);
		pthread_mutex_lock(&u->mu);
	}
	pthread_mutex_unlock(&u->mu);
	return NULL;
}

int bk_uploader_new(const bk_uploader_opts *o, rep_node *n,
		    bk_uploader **out)
{
	bk_uploader *u;
	bk_keys keys = {0};
	char err[1024] = "";
	int rc;

	*out = NULL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->o = *o;
	u->prefix = strdup(o->prefix ? o->prefix : "");
	u->data_dir = strdup(o->data_dir);
	u->node = n;
	pthread_mutex_init(&u->mu, NULL);
	pthread_cond_init(&u->cond, NULL);
	if (!u->prefix || !u->data_dir) {
		bk_uploader_free(u);
		return -ENOMEM;
	}
	rc = bk_store_open(&o->store, &u->store, err, sizeof(err));
	if (rc == 0) {
		/* Refused credentials fail the start; an unreachable store
		 * does not (the thread retries). */
		char dir[1024];
		snprintf(dir, sizeof(dir), "%s%s", u->prefix,
			 u->prefix[0] ? "/" : "");
		rc = bk_store_list(u->store, dir, &keys, err, sizeof(err));
		bk_keys_free(&keys);
		if (rc < 0 && rc != -EACCES) {
			log_warn("%s (the uploads will retry)", err);
			rc = 0;
		}
	}
	if (rc == 0) {
		rep_node_ext e = {"backup", u, bk_uploader_metrics,
				   bk_uploader_info};
		rc = rep_node_ext_add(n, &e);
		if (rc < 0)
			snprintf(err, sizeof(err), "backup: cannot register "
				 "with the node: %s", strerror(-rc));
	}
	if (rc < 0) {
		log_error("%s", err);
		bk_uploader_free(u);
		return rc;
	}
	log_info("backup: to %s, prefix \"%s\", every %" PRId64 " ms, "
		 "snapshots every %" PRId64 " s, retention %" PRId64 " s "
		 "(uploads while this node is the primary)",
		 bk_store_desc(u->store), u->prefix, o->interval_ms,
		 o->snapshot_interval_ms / 1000, o->retention_ms / 1000);
	*out = u;
	return 0;
}

int bk_uploader_start(bk_uploader *u, fs_mount *m)
{
	int rc;

	u->m = m;
	fs_mount_foreach(m, hold_all, NULL); /* U5 */
	rc = pthread_create(&u->thread, NULL, uploader_main, u);
	if (rc != 0) {
		log_error("backup: cannot start the uploader: %s",
			  strerror(rc));
		return -rc;
	}
	u->started = true;
	return 0;
}

void bk_uploader_stop(bk_uploader *u)
{
	if (!u || !u->started)
		return;
	pthread_mutex_lock(&u->mu);
	u->stop = true;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->mu);
	pthread_join(u->thread, NULL);
	u->started = false;
}

void bk_uploader_free(bk_uploader *u)
{
	if (!u)
		return;
	bk_uploader_stop(u);
	bk_store_free(u->store);
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->cond);
	free(u->dbs);
	free(u->prefix);
	free(u->data_dir);
	free(u);
}
