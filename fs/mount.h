/*
 * The FUSE mount: a flat directory with one entry per database and its
 * companions (<name>-journal, -wal, -shm) and a read-only <name>-pos,
 * each backed by the db core (fs/db.h), and SQLite's super-journals
 * (<name>-mjXXXXXX9XX, local files: fs/superjournal.h). Anything else is
 * refused.
 */
#ifndef FS_MOUNT_H
#define FS_MOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"

typedef struct fs_mount_opts {
	const char *mountpoint;
	const char *data_dir;
	bool allow_other;
	bool debug;
	int zstd_level;         /* 0: uncompressed LTX */
	uint64_t node_id;
	fs_commit_fn on_commit;
	void *commit_ctx;
	bool readonly;          /* start as a replica */
	const char *primary;    /* replica: names the primary ("" unknown) */
	int apply_timeout_ms;   /* longest wait for local readers' locks */
	bool own_signals;       /* the caller handles SIGINT/SIGTERM and
				 * calls fs_mount_stop */
	const _Atomic int64_t *write_deadline_ns; /* see fs_db_opts */
	fs_sync_fn sync_wait;   /* see fs_db_opts; NULL: asynchronous */
	void *sync_ctx;
} fs_mount_opts;

typedef struct fs_mount fs_mount;

/* Opens every database under <data_dir>/dbs (recovering each), removes
 * the super-journals no journal needs any more, and mounts. Fails with a
 * logged one-line reason. */
int fs_mount_new(const fs_mount_opts *opts, fs_mount **out);
/* Serves until SIGINT/SIGTERM/SIGHUP or fs_mount_stop. */
int fs_mount_run(fs_mount *m);
void fs_mount_stop(fs_mount *m);
/* Unmounts, then closes every database cleanly. */
void fs_mount_free(fs_mount *m);

/* Database lookup for the node (replica/): NULL when absent. */
fs_db *fs_mount_db(fs_mount *m, const char *name);
/* The database named name, opened (and created empty) when absent: a
 * replica's copy of a database the primary has. A replica's copy that is
 * out of service (damaged) is healed first: its log moved aside, its
 * files removed, so it opens empty for the primary to fill. -EBADMSG for
 * a database out of service on a primary; other -errno. */
int fs_mount_open_db(fs_mount *m, const char *name, fs_db **out);
/* Databases out of service (their LTX log is damaged, or the database
 * does not match it; their names answer EBADMSG): fn gets each name and
 * a one-line reason, without locks held. */
typedef void (*fs_mount_oos_fn)(void *ctx, const char *name,
				const char *reason);
void fs_mount_foreach_out_of_service(fs_mount *m, fs_mount_oos_fn fn,
				     void *ctx);
/* Calls fn for every database, in creation order, without locks held. */
typedef void (*fs_mount_each_fn)(void *ctx, fs_db *db);
void fs_mount_foreach(fs_mount *m, fs_mount_each_fn fn, void *ctx);
/* Switches every database to read-only (a replica; primary names the
 * primary, shown in /.primary and in EROFS log lines) or back. */
void fs_mount_set_role(fs_mount *m, bool readonly, const char *primary);
/* Before fs_mount_stop: lets go of everything the daemon holds open in
 * its own mount (replica WAL index, lock handles), while requests are
 * still served. */
void fs_mount_release_apply(fs_mount *m);

#endif
