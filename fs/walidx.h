/*
 * ltxfs as the one SQLite WAL writer and checkpointer for local readers of
 * a replica (fs/walidx.c has the wal-index layout and the lock protocol).
 *
 * Transactions received from the primary become frames in the replica's
 * own -wal; a new wal-index header in -shm publishes each one atomically,
 * exactly as SQLite's own writer does, so readers using the ordinary
 * SQLite library (unix VFS) never see a torn state and are never waited
 * for. Checkpoints copy frames back into the database only as far as
 * readers allow; a fully backfilled WAL restarts from its start when no
 * reader uses it.
 *
 * One object per database. Its functions must not run concurrently on the
 * same object (the caller serialises them); different objects are
 * independent. Transaction states: IDLE -begin-> TXN -commit/abort-> IDLE;
 * checkpoint and close run in IDLE (close aborts an open transaction).
 */
#ifndef FS_WALIDX_H
#define FS_WALIDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fs_walidx fs_walidx;

typedef struct fs_walidx_files {
	/* The database as readers see it: opened only to take fcntl
	 * locks. */
	const char *db_path;
	/* <db>-shm as readers see it: opened O_RDWR|O_CREAT, locked, read
	 * with pread, written through shm_store (or pwrite), never mapped
	 * (fs/walidx.c, ACCESS). */
	const char *shm_path;
	/* The -wal file's storage, written with pwrite (caller owns the
	 * fd). */
	int wal_fd;
	/* The database file's storage, written by checkpoints (caller
	 * owns). */
	int db_fd;
	/* Called after the writer changed bytes of the db (which=0) or wal
	 * (which=1) storage behind readers' backs (the caller uses it to
	 * drop kernel page caches), always before readers can be told to
	 * look at those bytes; may be NULL. */
	void (*invalidate)(void *ctx, int which, uint64_t off, uint64_t len);
	/* Writes n bytes at off of -shm to its storage, then into the pages
	 * readers map, without a request through the mount (fs/walidx.c,
	 * ACCESS); 0 or -errno. Then, from before fs_walidx_open until
	 * fs_walidx_close returns, the caller must apply writes through the
	 * mount (readers' pages written back) to the storage only within
	 * FS_WALIDX_READER_OFF/LEN: the rest of such a page may be older than
	 * what walidx stored. NULL: walidx pwrites through shm_path. */
	int (*shm_store)(void *ctx, uint64_t off, const void *buf, size_t n);
	void *ctx;
} fs_walidx_files;

/* The only bytes of -shm that local readers write while walidx is the
 * writer: aReadMark[1..4]. */
#define FS_WALIDX_READER_OFF 104
#define FS_WALIDX_READER_LEN 16

/* Counters, for metrics and tests. */
typedef struct fs_walidx_stats {
	uint64_t commits;          /* transactions published */
	uint64_t aborts;           /* transactions abandoned */
	uint64_t frames;           /* frames written to the WAL */
	uint64_t restarts;         /* WAL restarts (new salts, frame 1) */
	uint64_t checkpoints;      /* checkpoints that backfilled frames */
	uint64_t checkpoints_done; /* ... and left the WAL fully backfilled */
	uint64_t backfilled;       /* pages written into the database */
} fs_walidx_stats;

/* How long fs_walidx_open waits for each lock it needs (PENDING and
 * SHARED on the database, DMS, WRITE, and READ1..4 when it must restart
 * an adopted WAL). */
#define FS_WALIDX_OPEN_TIMEOUT_MS 5000

/* Starts being the WAL writer for a database whose storage holds exactly
 * db_pages pages of page_size bytes and whose WAL is empty (the caller
 * guarantees: nothing un-checkpointed; walidx truncates wal_fd to 0).
 * Takes a SHARED lock on db_path (via a brief read lock on PENDING, like
 * SQLite) and holds it until close, so the last closing reader can never
 * checkpoint/delete the WAL itself; takes DMS: if it gets DMS exclusively
 * it is the first user and (re)initialises -shm (truncate, fresh valid
 * header with mxFrame 0, nPage db_pages, read marks) before downgrading to
 * shared; otherwise, holding WRITE, it adopts the existing valid header
 * (restarting it when it still counts frames of an older WAL, which needs
 * CKPT and READ1..4 exclusively; when it counts none, only writing our
 * szPage and nPage db_pages into it, salts kept) or, if the header is
 * invalid, writes a fresh one holding every lock SQLite's recovery takes
 * (CKPT, RECOVER, READ0..4). The WAL storage is emptied before WRITE (or
 * the exclusive DMS) is released. Holds DMS shared until close.
 * All locks are OFD locks (F_OFD_SETLK), so they belong to this object,
 * not the process. Still, POSIX drops every classic lock a process holds
 * on a file when it closes any descriptor of it, and fs_walidx_close (and
 * a failing open) close descriptors of db_path and shm_path: an SQLite
 * connection to the same database in the same process loses its SHARED,
 * DMS and READ locks then (SQLite protects itself only from its own
 * closes). page_size: a power of two, 512..65536.
 * Returns 0, -EINVAL, -EBUSY (a lock not had within
 * FS_WALIDX_OPEN_TIMEOUT_MS), -errno. *out is freed by fs_walidx_close. */
int fs_walidx_open(const fs_walidx_files *files, uint32_t page_size,
		   uint32_t db_pages, fs_walidx **out);

/* Starts a transaction: takes WRITE (120) exclusive, polling with
 * F_OFD_SETLK up to timeout_ms (returns -EBUSY after that); restarts the
 * WAL first when it is fully backfilled and READ1..4 can be taken
 * exclusively at once (otherwise keeps appending). */
int fs_walidx_begin(fs_walidx *w, int timeout_ms);

/* Adds one page to the open transaction. Pages may come in any order; a
 * page may repeat (the last copy wins). Memory stays bounded: one pending
 * frame is held, the others are written with pwrite as they come. After
 * an error the transaction can only be aborted (commit returns the same
 * error). */
int fs_walidx_page(fs_walidx *w, uint32_t pgno, const void *data);

/* Commits: the last frame carries commit_pages (the database size after
 * the transaction, which may be smaller or larger than before); the hash
 * tables then the header (new mxFrame, nPage, iChange+1, aFrameCksum) are
 * published; WRITE is released. sync: fdatasync the WAL storage before
 * publishing. A transaction with zero pages but a size change writes page
 * 1's current content as the commit frame; with zero pages and no size
 * change nothing is published. On error the transaction is abandoned as
 * by fs_walidx_abort. */
int fs_walidx_commit(fs_walidx *w, uint32_t commit_pages, bool sync);

/* Abandons the open transaction: frames written are never published (they
 * lie beyond mxFrame and are overwritten later); WRITE released. No-op
 * outside a transaction. */
void fs_walidx_abort(fs_walidx *w);

/* Passive checkpoint: CKPT exclusive (non-blocking; busy -> return 0 with
 * *out_done=false), backfill frames up to the safe frame (READ0 exclusive
 * during backfill, non-blocking), pwrite the pages into db_fd, ftruncate
 * db_fd to nPage*page_size when complete, fdatasync the WAL before and
 * db_fd after backfilling when sync, call invalidate for the db ranges
 * written, update nBackfill. *out_done: everything is backfilled. Never
 * waits for readers. -EINVAL inside a transaction. */
int fs_walidx_checkpoint(fs_walidx *w, bool sync, bool *out_done);

/* Frames not yet backfilled (mxFrame - nBackfill) as of the last begin,
 * commit or checkpoint (no I/O), for metrics and tests. */
uint32_t fs_walidx_pending(fs_walidx *w);

void fs_walidx_get_stats(fs_walidx *w, fs_walidx_stats *out);

/* The last frame published to readers (mxFrame of the last header walidx
 * wrote; 0: none), no I/O. Frames past it are an abandoned transaction's. */
uint32_t fs_walidx_published(fs_walidx *w);

/* Tries a final checkpoint (synced), waits for readers' pages of -shm in
 * flight to its storage (with shm_store: see there), releases every lock,
 * closes its own fds (never the caller's). NULL is a no-op. */
void fs_walidx_close(fs_walidx *w);

#endif
