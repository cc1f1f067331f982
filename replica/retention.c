/* The retention thread: see retention.h. */
#include "retention.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/log.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "node_i.h"

struct rep_retention {
	rep_node *n;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;     /* signalled on stop */
	bool stop;
};

static void set_policy(rep_node *n, fs_log *log)
{
	fs_log_set_retention(log, n->o.retention.ms,
			     n->o.retention.bytes > 0 ?
				     (uint64_t)n->o.retention.bytes : 0);
}

void rep_retention_on_commit(void *ctx, fs_db *db, ltx_pos pos)
{
	rep_node *n = ctx;
	fs_log *log = fs_db_log(db);

	(void)pos;
	if (log)
		set_policy(n, log);
}

static void prune_one(void *ctx, fs_db *db)
{
	rep_node *n = ctx;
	fs_log *log = fs_db_log(db);
	int rc;

	if (!log)
		return;
	set_policy(n, log);
	rc = fs_log_prune(log, lib_clock_wall_ms(), NULL);
	if (rc < 0)
		log_warn("db=%s: retention pass failed: %s (retried in %d ms)",
			 fs_db_name(db), strerror(-rc),
			 REP_RETENTION_INTERVAL_MS);
}

static void retry_one(void *ctx, fs_db *db)
{
	(void)ctx;
	fs_db_capture_retry(db);
}

static void pass(rep_node *n)
{
	fs_mount_foreach(n->mount, retry_one, n);
	fs_mount_foreach(n->mount, prune_one, n);
}

static void *retention_main(void *arg)
{
	struct rep_retention *r = arg;

	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += REP_RETENTION_INTERVAL_MS / 1000;
		ts.tv_nsec += (long)(REP_RETENTION_INTERVAL_MS % 1000) *
			      1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!r->stop &&
		       pthread_cond_timedwait(&r->cond, &r->mu, &ts) == 0)
			;
		if (r->stop)
			break;
		pthread_mutex_unlock(&r->mu);
		pass(r->n);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

int rep_retention_start(rep_node *n)
{
	struct rep_retention *r;
	pthread_condattr_t ca;
	int rc;

	if (n->retention || !n->mount)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->n = n;
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	log_info("retention: LTX records kept %" PRId64 " ms, each log capped "
		 "at %" PRId64 " bytes (0: no cap), checked every %d ms",
		 n->o.retention.ms, n->o.retention.bytes,
		 REP_RETENTION_INTERVAL_MS);
	pass(n);
	rc = pthread_create(&r->thread, NULL, retention_main, r);
	if (rc != 0) {
		pthread_cond_destroy(&r->cond);
		pthread_mutex_destroy(&r->mu);
		free(r);
		log_error("retention: cannot start its thread: %s",
			  strerror(rc));
		return -rc;
	}
	n->retention = r;
	return 0;
}

void rep_retention_stop(rep_node *n)
{
	struct rep_retention *r = n->retention;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
	n->retention = NULL;
}
