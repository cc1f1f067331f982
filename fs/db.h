/*
 * The db core: one replicated SQLite database and its companions, backed by
 * files in <data.dir>/dbs/<name>/, with the capture of every committed
 * transaction into the database's LTX log (fs/log.h).
 *
 * The FUSE adapter (fs/fuse.c) calls these functions for every operation
 * on a database's files; replica/ reaches a database only through this
 * header (open, position, apply, read-only switch, commit callback).
 */
#ifndef FS_DB_H
#define FS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ltx/pos.h"

enum fs_kind {
	FS_KIND_DB = 0,
	FS_KIND_JOURNAL = 1,
	FS_KIND_WAL = 2,
	FS_KIND_SHM = 3,
	FS_KIND_POS = 4,
	FS_KIND_COUNT = 5,
};

/* Backing file names inside dbs/<name>/, by kind (pos has none). */
extern const char *const fs_kind_backing[FS_KIND_COUNT];
/* Suffix of each kind in the mount ("" for the database). */
extern const char *const fs_kind_suffix[FS_KIND_COUNT];

typedef struct fs_db fs_db;

/* Called after each transaction is in the log, from the capturing thread,
 * without the database's locks held. */
typedef void (*fs_commit_fn)(void *ctx, fs_db *db, ltx_pos pos);

typedef struct fs_db_opts {
	int zstd_level;      /* 0: uncompressed LTX */
	uint64_t node_id;
	fs_commit_fn on_commit;
	void *commit_ctx;
} fs_db_opts;

/* Opens (and recovers) the database <data_dir>/dbs/<name>. Creates the
 * directory when absent. */
int fs_db_open(const char *data_dir, const char *name, const fs_db_opts *opts,
	       fs_db **out);
/* Drains pending captures, makes everything durable and, when clean,
 * records that the state on disk can be trusted at the next start. */
void fs_db_close(fs_db *db);

const char *fs_db_name(const fs_db *db);
ltx_pos fs_db_pos(fs_db *db);
/* Writes "%016x/%016x\n" (34 bytes + NUL) into buf. */
void fs_db_pos_text(fs_db *db, char *buf);

/* True when the backing file of kind exists (pos: when the db exists). */
bool fs_db_has(fs_db *db, enum fs_kind kind);
int fs_db_stat(fs_db *db, enum fs_kind kind, struct stat *out);
int fs_db_create(fs_db *db, enum fs_kind kind, mode_t mode);
int fs_db_read(fs_db *db, enum fs_kind kind, void *buf, size_t n, off_t off,
	       size_t *out_got);
int fs_db_write(fs_db *db, enum fs_kind kind, const void *buf, size_t n,
		off_t off);
int fs_db_truncate(fs_db *db, enum fs_kind kind, off_t size);
int fs_db_fsync(fs_db *db, enum fs_kind kind, bool datasync);
int fs_db_unlink(fs_db *db, enum fs_kind kind);
/* The last open file handle of kind was closed. */
void fs_db_release(fs_db *db, enum fs_kind kind);
/* Captures WAL transactions queued by fs_db_write; called by the FUSE
 * adapter after it has answered the write. */
void fs_db_capture_pending(fs_db *db);
/* Waits until every committed transaction is in the log. */
void fs_db_drain(fs_db *db);

#endif
