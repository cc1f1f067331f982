/*
 * The backup uploader (docs/BACKUP.md): a thread that, on the primary
 * only, ships every database's new LTX records to the backup store,
 * at most one object per database per interval (object.h has the
 * names and the body), uploads a snapshot of each changed database
 * every snapshot interval, and deletes what retention no longer needs
 * (retain.h).
 *
 * Life cycle (cmd/mount_cmd.c):
 *   bk_uploader_new(&opts, node, &u);  // opens the store, lists it once
 *                                      // (refused credentials: fails),
 *                                      // adds its /metrics and /info
 *   bk_uploader_start(u, mount);       // holds every log's records
 *   rep_node_start(node, mount);       // (its first retention pass)
 *   ...
 *   bk_uploader_stop(u);               // before rep_node_stop
 *   rep_node_free(node);
 *   bk_uploader_free(u);               // after the node's server
 */
#ifndef BACKUP_UPLOADER_H
#define BACKUP_UPLOADER_H

#include <stdint.h>

#include "fs/mount.h"
#include "replica/node.h"
#include "store.h"

typedef struct bk_uploader bk_uploader;

typedef struct bk_uploader_opts {
	bk_store_opts store;
	const char *prefix;        /* "" none */
	int64_t interval_ms;
	int64_t snapshot_interval_ms; /* 0: no scheduled snapshots */
	int64_t retention_ms;      /* 0: keep every object */
	int64_t compaction_interval_ms; /* backup/compact.h */
	const char *data_dir;      /* for temporary files */
} bk_uploader_opts;

/* Largest object built from log records (a snapshot may be larger). */
#define BK_OBJECT_MAX_BYTES (64u * 1024 * 1024)
/* A retention pass runs at most this often per database (and at most
 * once per snapshot interval). */
#define BK_RETAIN_EVERY_MS (3600 * 1000)
/* Retry delays while the store fails: doubling, up to the max. */
#define BK_BACKOFF_MIN_MS 500
#define BK_BACKOFF_MAX_MS 30000

int bk_uploader_new(const bk_uploader_opts *o, rep_node *n,
		    bk_uploader **out);
/* Holds every database's log (fs_log_set_hold after TXID 0) until the
 * thread knows the store's position, then starts the thread. */
int bk_uploader_start(bk_uploader *u, fs_mount *m);
void bk_uploader_stop(bk_uploader *u);
void bk_uploader_free(bk_uploader *u);

#endif
