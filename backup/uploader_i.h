/*
 * Inside the backup uploader (uploader.c): its state, shared with the
 * files that build its objects (uploader_build.c) and report it
 * (uploader_report.c).
 */
#ifndef BACKUP_UPLOADER_I_H
#define BACKUP_UPLOADER_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fs/db.h"
#include "object.h"
#include "uploader.h"

#define BK_MAX_DBS 1024

struct db_state {
	char name[256];
	bool known;              /* position read from the store (U1) */
	uint64_t epoch, txid, post; /* the store's chain end */
	uint64_t node_txid;      /* the database's TXID when last seen */
	int64_t pending_ms;      /* LTX time of the first record not in the
				  * store yet (0: none): the lag in seconds */
	uint64_t bytes, objects, errors;
	bool stale;              /* U2 */
	int64_t snap_ms;         /* LTX time of the chain's start (U6) */
	uint64_t snap_txid;      /* its TXID (0: unknown) */
	uint64_t snapshots, deleted; /* U6, U7 */
	int64_t retain_at_ms;    /* CLOCK_MONOTONIC: the next pass (U7) */
	int64_t compact_at_ms;   /* U8: the next compaction (monotonic) */
	uint64_t compactions, compacted_bytes;
};

struct bk_uploader {
	bk_uploader_opts o;
	char *prefix, *data_dir;
	bk_store *store;
	rep_node *node;
	fs_mount *m;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;      /* guards everything below */
	pthread_cond_t cond;
	bool stop;
	struct db_state *dbs;
	size_t ndbs;
	uint64_t seen_epoch;
	bool failing;            /* the last try of some database failed */
	char last_err[512];
	int backoff_ms;
	int64_t retry_at_ms;     /* CLOCK_MONOTONIC */
	uint64_t errors_total;
};

/* What one object holds. */
struct built {
	int fd;
	uint64_t len;
	bk_obj o;
	size_t records;
	int64_t first_ms;        /* the first record's LTX timestamp */
};

/* An unlinked temporary file in the data directory, or -errno. */
int bk_up_tmpfile(const bk_uploader *u);
/* Rule U3: the log records after st->txid, up to TXID upto (the
 * published position: with synchronous replication the log's last
 * record may still be taken back, docs/SYNC.md), into b; -ESTALE when
 * they do not follow the store's position (a snapshot is needed), 0 with
 * b->records 0 when there is nothing new. */
int bk_up_build_from_log(fs_db *db, const struct db_state *st,
			 uint64_t upto, struct built *b);
/* Rule U3: a snapshot of db as one object into b. */
int bk_up_build_snapshot(bk_uploader *u, fs_db *db, struct built *b);

/* The rep_node_ext callbacks (ctx: the uploader). */
void bk_uploader_metrics(void *ctx, FILE *f);
char *bk_uploader_info(void *ctx);

#endif
