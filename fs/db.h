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

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ltx/ltx.h"
#include "ltx/pos.h"

struct fs_log;

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

/* Called when bytes of a file changed behind the kernel's back (a replica
 * applying a transaction): off/len of kind's content (len 0: to the end),
 * or, with off < 0, only its existence or attributes. Never called with a
 * database lock held. */
typedef void (*fs_inval_fn)(void *ctx, fs_db *db, enum fs_kind kind,
			    int64_t off, int64_t len);

/* Puts len bytes at off of kind's content into the kernel's page cache of
 * the file (the pages local readers map), as if written through the
 * mount, without a request to the daemon; the caller has written them to
 * the backing file first. 0 or -errno. Never called with a database lock
 * held. */
typedef int (*fs_store_fn)(void *ctx, fs_db *db, enum fs_kind kind,
			   uint64_t off, const void *buf, size_t len);

/* Synchronous replication (docs/SYNC.md): called after a transaction's
 * record is in the log (not published yet: the commit callback is told
 * once it is), before the operation that ends the transaction is
 * answered; never with a database lock held; it may block. 0: the
 * commit goes ahead (it is published); < 0: it fails, the record is
 * taken back (fs_log_unappend) and the application gets EIO. */
typedef int (*fs_sync_fn)(void *ctx, fs_db *db, ltx_pos pos);

typedef struct fs_db_opts {
	int zstd_level;      /* 0: uncompressed LTX */
	uint64_t node_id;
	fs_commit_fn on_commit;
	void *commit_ctx;
	bool readonly;       /* opened on a replica (recovery differs) */
	const char *mountpoint; /* where local readers see it; NULL: none */
	fs_inval_fn on_inval;
	fs_store_fn on_store;
	void *inval_ctx;     /* for on_inval and on_store */
	int apply_timeout_ms;   /* longest wait for local readers' locks */
	/* A primary's lease deadline (CLOCK_BOOTTIME ns; 0: none): writes
	 * at or after it fail with EROFS even before the node has switched
	 * the database read-only. NULL: none. */
	const _Atomic int64_t *write_deadline_ns;
	fs_sync_fn sync_wait;   /* NULL: asynchronous */
	void *sync_ctx;
} fs_db_opts;

/* Opens (and recovers) the database <data_dir>/dbs/<name>. Creates the
 * directory when absent. On failure why (may be NULL) gets one line;
 * -EBADMSG means damage (its LTX log is corrupt: segment, byte offset
 * and rule; or the database does not match its log). */
int fs_db_open(const char *data_dir, const char *name, const fs_db_opts *opts,
	       fs_db **out, char *why, size_t whylen);
/* A replica's copy that cannot be trusted (its log is damaged), not open:
 * moves its LTX log aside (fs_log_set_aside; aside gets where) and
 * removes its files, so the name opens as a new, empty database that the
 * primary fills from the start. */
int fs_db_discard(const char *data_dir, const char *name, char *aside,
		  size_t asidelen);
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
/* The last open file handle of kind was closed: a first load (a file
 * copied in) is recorded when it is a complete database, else emptied. */
void fs_db_release(fs_db *db, enum fs_kind kind);
/* A handle of kind that may have written a first load was closed
 * (close(2)): the load is recorded when it is a complete database;
 * -EINVAL (with a log line) while it is not. */
int fs_db_flush(fs_db *db, enum fs_kind kind);
/* Whether a write now would be a first load: the database holds no
 * committed page (and this node is the primary). */
bool fs_db_loadable(fs_db *db);
/* An open with O_TRUNC: -EPERM (with a log line saying what to do
 * instead) for a database file with committed pages; anything else is
 * truncated to 0 as fs_db_truncate does. */
int fs_db_open_truncate(fs_db *db, enum fs_kind kind);
/* The super-journal sj_name (fs/superjournal.h; its file name) is about
 * to be deleted: when this database's journal points to it, that
 * deletion commits a transaction across attached databases, and this
 * database's part is recorded now (*out_child set), before it is done.
 * 0, or the -errno that the deletion must fail with (SQLite then rolls
 * the whole transaction back). */
int fs_db_capture_super(fs_db *db, const char *sj_name, bool *out_child);
/* Captures WAL transactions queued by fs_db_write; called by the FUSE
 * adapter after it has answered the write. */
void fs_db_capture_pending(fs_db *db);
/* Synchronous mode (fs_db_opts.sync_wait), after a WAL write, before
 * its reply: when the write committed a transaction, records it, waits
 * for its acknowledgements and publishes it (0); or takes it back and
 * makes its commit frame invalid (-EIO; -ENOSPC when the log has no
 * room), so SQLite rolls it back. 0 at once for any other write. */
int fs_db_wal_sync_commit(fs_db *db);
/* Synchronous mode, called by fs_sync_fn once the record is on its way:
 * the log sync the commit owes (SQLite synced for it), so that it
 * overlaps the replicas' work; 0 when none is owed. */
int fs_db_sync_log_due(fs_db *db);
/* Whether fs_db_opts.sync_wait is set. */
bool fs_db_sync_on(const fs_db *db);
/* Waits until every committed transaction is in the log: 0, or -ENOSPC
 * while a full disk keeps a WAL transaction out of it. */
int fs_db_drain(fs_db *db);

/* --- A full disk (docs/STORAGE.md, "A full disk") --- */

/* Tries again a WAL capture that a full disk blocked (at most every
 * 100 ms; writes try too). The node calls it once a second. */
void fs_db_capture_retry(fs_db *db);
/* Whether capture is blocked by a full disk: a committed WAL transaction
 * waits for space in the log, or a rollback-journal transaction could
 * not be recorded and none has ended since. reason (may be NULL) gets
 * "capture blocked: disk full". */
bool fs_db_capture_blocked(fs_db *db, char *reason, size_t n);
/* Capture attempts refused for a full disk since the database opened. */
uint64_t fs_db_capture_full_total(fs_db *db);

/* --- Replication (fs/db_apply.c) --- */

/* The database's LTX log, for streaming its records. */
struct fs_log *fs_db_log(fs_db *db);

/* Replica mode: every write by an application fails with EROFS and a log
 * line naming primary (copied). Off on the primary. */
void fs_db_set_readonly(fs_db *db, bool readonly, const char *primary);
bool fs_db_readonly(fs_db *db);
/* Replica mode: an application opens the database for writing. Logs that
 * (at most every 10 s per database), naming the primary; -EROFS. */
int fs_db_refuse_ro_open(fs_db *db);

/*
 * Applies one LTX record received from the primary: the bytes at
 * [off, off+len) of fd. The record is verified whole first (-EBADMSG),
 * must follow this database's position unless it is a snapshot (-ESTALE),
 * is appended to the log, then applied atomically with respect to local
 * readers (SQLite's own locks, taken through the mount) and the kernel's
 * caches are invalidated. The resulting database checksum must equal the
 * record's post-apply checksum (-EBADMSG otherwise, and the database is
 * marked for a snapshot). errbuf gets a one-line reason on failure.
 */
int fs_db_apply_ltx(fs_db *db, int fd, uint64_t off, uint64_t len,
		    char *errbuf, size_t errlen);

/* A graceful stop of writes (a primary handing off). hold=true holds
 * back every new transaction while the open one finishes: a new rollback
 * journal waits, as under a snapshot's freeze; in WAL mode, the daemon
 * takes SQLite's WAL write lock through the mount once the open
 * transaction lets it go (new writers wait in their busy handler), and a
 * writer that got the lock first is a new transaction: its first write
 * waits. hold=false captures what committed meanwhile and lets the held
 * writes go, to fail with EROFS once the database is read-only. Pair
 * them; one holder at a time. */
void fs_db_hold_txns(fs_db *db, bool hold);
/* Whether a transaction is still open. While held, each call also tries
 * again for the WAL write lock: false once it is ours. */
bool fs_db_txn_open(fs_db *db);

/*
 * Writes an LTX snapshot of the database as of its current position to
 * out_fd (from offset 0), consistent even while applications write: new
 * transactions are held back only while a rollback transaction is open at
 * the start and while the pages are read. *out_hdr / *out_len describe it.
 * -ENOENT when the database holds no pages.
 */
int fs_db_snapshot_ltx(fs_db *db, int out_fd, ltx_header *out_hdr,
		       uint64_t *out_len);

/* On a replica, makes a WAL-mode database readable by read-only SQLite
 * connections (its -wal and index set up) before any record arrives. */
void fs_db_apply_prepare(fs_db *db);

/* On a node that stopped being primary: rolls back, under SQLite's
 * EXCLUSIVE lock (waiting for the writer to give up), a rollback-journal
 * transaction that its writes being refused left unfinished (a hot
 * journal read-only readers could not roll back). 0 when there was none
 * or it is done; a database that does not match its position afterwards
 * is reset to ask the primary for a snapshot. */
int fs_db_abandon_txn(fs_db *db);

/* Lets go of the replica's WAL index and lock handles on the mount
 * (checkpointing what readers allow); reopened by the next apply. */
void fs_db_release_apply(fs_db *db);

/* A passive checkpoint of the replica's WAL, for frames that a local
 * reader held back and has since let go of (called when idle). */
void fs_db_apply_checkpoint(fs_db *db);

/* Frames the replica's WAL holds beyond the database file (metrics). */
uint32_t fs_db_wal_pending(fs_db *db);

#endif
