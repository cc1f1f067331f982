/*
 * Restore (docs/BACKUP.md): rebuilds a database as of a TXID or a time
 * from the backup store's objects (object.h: the L0 chain with its L1
 * objects, rule O6), each fetched by a second thread while its records
 * are applied, verifying every record
 * as it is applied to a temporary file (its place in the chain, its
 * file checksum, the database checksum after it), then the whole file's database checksum and
 * PRAGMA integrity_check, and writes the result atomically (a
 * temporary file beside OUT, fsync, rename, fsync of the directory).
 */
#ifndef BACKUP_RESTORE_H
#define BACKUP_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "ltx/ltx.h"
#include "store.h"

/* Progress of a restore, passed to bk_restore_opts.progress: when each
 * object's fetch begins, every 4 MiB applied, and once at the end
 * (done). Bytes are object bytes; an object is applied as its fetch
 * brings it. The store's listing carries no sizes, so the total is in
 * objects only. */
typedef struct bk_progress {
	uint64_t objects, objects_total; /* begun, of the chain */
	uint64_t bytes;           /* of the objects before the current one,
				   * plus what is applied of it */
	uint64_t obj_bytes;       /* applied of the current object */
	uint64_t obj_size;        /* fetched of it so far (all, once done) */
	uint64_t records;         /* applied */
	bool done;
} bk_progress;

/* Called on the restoring thread; it must not fail the restore. */
typedef void (*bk_progress_fn)(const bk_progress *p, void *arg);

/* Called with each record once it is verified and applied to the
 * database being built: its LTX file is [off, off+len) of fd, hdr and tr
 * its header and trailer. A negative return stops the restore with it,
 * err (errlen bytes) saying why. */
typedef int (*bk_record_fn)(void *arg, int fd, uint64_t off, uint64_t len,
			    const ltx_header *hdr, const ltx_trailer *tr,
			    char *err, size_t errlen);

typedef struct bk_restore_opts {
	bk_store *store;
	const char *prefix, *db;
	const char *out;          /* the file to write */
	uint64_t txid;            /* 0: the newest (or as of ts_ms) */
	bool by_time;             /* the last transaction at or before ts_ms */
	int64_t ts_ms;
	bool dry_run;             /* everything but writing out */
	bk_progress_fn progress;  /* NULL: none */
	void *progress_arg;
	bk_record_fn on_record;   /* NULL: none */
	void *record_arg;
} bk_restore_opts;

typedef struct bk_restore_result {
	uint64_t objects, bytes, records;
	uint64_t txid, checksum;
	int64_t timestamp_ms;     /* of the last transaction applied */
} bk_restore_result;

/* 0, or -errno with one line in err: -ENOENT nothing restorable (no
 * object, or the target is before the store's first point), -EBADMSG a
 * corrupt object (its key and byte offset), -EIO the store. */
int bk_restore(const bk_restore_opts *o, bk_restore_result *res, char *err,
	       size_t errlen);

/* One restorable range: a chain from a start object to its end. */
typedef struct bk_range {
	uint64_t first_txid, last_txid;
	int64_t first_ms, last_ms;
	uint64_t objects, bytes;
} bk_range;

/* The restorable ranges of db (one per chain start, oldest first) into
 * *out (malloc'd). */
int bk_restore_ranges(bk_store *s, const char *prefix, const char *db,
		      bk_range **out, size_t *n, char *err, size_t errlen);

#endif
