/*
 * Applying records on a replica several at a time (fs/db_apply.c).
 *
 * fs_db_apply_batch applies records stored in one file, in order, as
 * fs_db_apply_ltx would one by one (every record verified whole, its
 * position checked, appended to the local log, its post-apply checksum
 * proved), but a run of ordinary records of a database in WAL mode here
 * shares one WAL transaction: SQLite's WRITE lock is taken once, the
 * wal-index header is published once (local readers see the state before
 * the run or after it, each a committed transaction's state), the -pos
 * file is published once, and the WAL is checkpointed only once it holds
 * FS_APPLY_CKPT_FRAMES frames (or when the stream is idle, through
 * fs_db_apply_checkpoint). Snapshots, deletes, page size changes and
 * databases in rollback mode go one by one.
 */
#ifndef FS_DB_APPLY_H
#define FS_DB_APPLY_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "ltx/decoder.h"

/* Records per WAL transaction at most. */
#define FS_APPLY_RUN_MAX 256
/* WAL frames pending before a run is followed by a checkpoint. */
#define FS_APPLY_CKPT_FRAMES 1000

typedef struct fs_apply_rec {
	uint64_t off, len;     /* the record's bytes in the file */
} fs_apply_rec;

/* fs_db_apply_batch flags. NOWAIT: a record applied rollback style that
 * would wait for local readers (SQLite's EXCLUSIVE lock) is not waited
 * for: -EAGAIN, nothing of it written, and SQLite's PENDING lock kept (no
 * new reader starts) until a later call goes on with the same wait (the
 * apply timeout counts from its first try: -EBUSY past it, PENDING let
 * go) or fs_db_apply_cancel_wait. Records applied WAL style never wait
 * for readers. */
#define FS_APPLY_NOWAIT 1u

/* Synchronous replication (docs/SYNC.md): told, once records are in the
 * log and it is synced, of the position the log then holds durably,
 * before the records are applied to the database (apply_mu held: it
 * must not block). */
typedef struct fs_durable {
	void (*fn)(void *ctx, fs_db *db, ltx_pos pos);
	void *ctx;
} fs_durable;

/* Applies recs[0..n) of fd in order. cache (may be NULL): a decoder kept
 * by the caller across calls (created here when *cache is NULL; the
 * caller frees it with ltx_decoder_free), so records cost no zstd context
 * each. *out_done: how many were applied (all of them when 0 is
 * returned); on failure errbuf says why the next one was not, as
 * fs_db_apply_ltx would (-EAGAIN: see FS_APPLY_NOWAIT). durable (may be
 * NULL): see fs_durable. */
int fs_db_apply_batch(fs_db *db, int fd, const fs_apply_rec *recs, size_t n,
		      unsigned flags, const fs_durable *durable,
		      ltx_decoder **cache, size_t *out_done, char *errbuf,
		      size_t errlen);

/* Ends the wait of a NOWAIT apply that got -EAGAIN (lets SQLite's PENDING
 * lock go); nothing when there is none. */
void fs_db_apply_cancel_wait(fs_db *db);

#endif
