/*
 * Internals of the db core, shared by fs/db.c (files, rollback-journal
 * capture, lifecycle), fs/db_wal.c (WAL capture) and fs/db_capture.c
 * (turning a committed transaction into an LTX record).
 *
 * Lock order (fs/): fs_db.capture_mu, then fs_db.mu, then the log's mu.
 * The commit callback is called with no lock held.
 */
#ifndef FS_DB_I_H
#define FS_DB_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "log.h"
#include "wal.h"

/* A page of a committed transaction: where its new content is. */
typedef struct fs_page_src {
	uint32_t pgno;
	int fd;                 /* backing file holding the page */
	uint64_t off;           /* byte offset of the page in fd */
} fs_page_src;

/* A committed WAL transaction waiting for capture. */
typedef struct fs_wal_txn {
	struct fs_wal_txn *next;
	uint32_t commit;
	uint32_t page_size;
	uint64_t wal_off, wal_size;
	uint32_t salt1, salt2;
	size_t n;
	fs_page_src pages[];    /* ascending pgno, last frame wins */
} fs_wal_txn;

typedef struct fs_frame {
	uint32_t pgno;
	uint32_t s0, s1;        /* running WAL checksum after this frame */
} fs_frame;

struct fs_db {
	char *name;
	char *dir;              /* <data.dir>/dbs/<name> */
	char *data_dir;         /* <data.dir> (super-journals) */
	fs_db_opts opts;
	fs_log *log;

	/* capture_mu guards: cksums, ncksums, pos, commit, page_size,
	 * and serialises every capture (rollback and WAL). */
	pthread_mutex_t capture_mu;
	uint64_t *cksums;       /* page checksums, index pgno; 0 unknown */
	uint32_t ncksums;
	ltx_pos pos;            /* also read under mu for -pos */
	uint32_t commit;        /* database size in pages at pos */
	uint32_t page_size;     /* 0 until known */
	void *zstd_cctx;        /* ZSTD_CCtx reused by every capture */

	/* mu guards everything below. */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int fds[FS_KIND_SHM + 1];
	ltx_pos pub_pos;        /* pos as published to readers */

	/* Rollback-journal tracker. The dirty set counts in pages of the
	 * committed page size; a database with no committed pages keeps
	 * none (its first transaction records every page) but txn_dirty. */
	bool journal_live;      /* a journal with a header exists */
	bool txn_synced;        /* SQLite synced the database file during
				 * the open journal transaction: its end
				 * syncs the log (capture_mu and mu) */
	uint32_t *dirty;        /* pages written since it appeared */
	size_t ndirty, capdirty;
	uint8_t *dirty_bits;
	size_t ndirty_bits;     /* bytes */
	bool txn_dirty;         /* the open transaction wrote the database */
	uint32_t txn_ps;        /* page size in a header it wrote; 0: none */

	/* A first load (db_load.c; capture_mu and mu): bytes written with
	 * no journal into a database with no committed pages, recorded
	 * once the file is a complete database. load_final: its last
	 * handle was closed while a full disk kept it out of the log. */
	bool loading;
	bool load_final;

	/* WAL tracker. */
	bool wal_hdr_ok;
	fs_wal_hdr wal_hdr;
	uint64_t wal_size;      /* backing size as written */
	uint64_t wal_valid;     /* end of checked frames */
	uint64_t wal_txn_start; /* first frame of the open transaction */
	uint32_t wal_s0, wal_s1;/* running checksum at wal_valid */
	fs_frame *frames;       /* frames of the open transaction */
	size_t nframes, capframes;
	uint8_t *frame_buf;     /* one frame */
	uint8_t *wal_pages;     /* a bit per page the committed frames of
				 * this WAL generation wrote */
	size_t wal_pages_len;   /* bytes */
	uint32_t wal_pages_max; /* highest page set; 0: none */
	uint8_t last_hdr[FS_WAL_FRAME_HDR_SIZE]; /* the last 24-byte write */
	uint64_t last_hdr_off;  /* its offset; UINT64_MAX: none */

	/* Capture queue (WAL). */
	fs_wal_txn *q_head, *q_tail;
	bool capturing;         /* a thread is capturing the queue */
	/* A WAL transaction taken back (fs_db_wal_sync_commit): its frames
	 * [wal_void_from, wal_void_to) (0/0: none). SQLite's retry of the
	 * rest of a write the kernel split, inside them, is refused: only
	 * a new transaction at wal_void_from (or a new header) goes on. */
	uint64_t wal_void_from, wal_void_to;
	/* Synchronous mode: the log sync the waiting commit owes (SQLite
	 * synced for it), done while the replicas work
	 * (fs_db_sync_log_due); only the committing thread touches it. In
	 * WAL mode it is owed when SQLite synced the WAL after the last
	 * commit (synchronous=FULL): wal_commit_synced (mu), set by that
	 * sync when wal_commit_unsynced says a commit came since. */
	bool sync_log_due;
	bool wal_commit_synced, wal_commit_unsynced;
	bool sync_pending;      /* synchronous mode: the queue's last
				 * transaction is its committing writer's,
				 * captured by fs_db_wal_sync_commit only */
	bool opened;            /* recovery done; close writes the marker */
	int capture_err;        /* sticky: capture failed (not for a full
				 * disk), writes refused until restart or
				 * the database's deletion */

	/* A full disk (mu; docs/STORAGE.md, "A full disk"). wal_full: the
	 * queue's head could not go into the log; it stays queued and is
	 * retried, and until it is in, WAL writes, checkpoints and WAL
	 * restarts fail with ENOSPC. journal_full: a rollback-journal
	 * transaction could not be recorded (its journal operation failed,
	 * so SQLite rolls it back) and none has ended cleanly since. */
	bool wal_full;
	bool journal_full;
	int64_t full_try_ns;    /* last failed attempt, CLOCK_MONOTONIC */
	uint64_t full_fails;    /* failed attempts of this episode */
	uint64_t full_total;    /* captures refused for a full disk, ever */

	/* Replica (guarded by mu). */
	bool readonly;
	/* walidx writes -shm's storage itself (fs/walidx.h, shm_store): a
	 * write through the mount (a reader's page written back) keeps only
	 * the bytes readers own. */
	bool shm_owned;
	char *primary;          /* named in EROFS log lines */
	uint64_t ro_logged_ms;  /* last EROFS log line (rate limit) */
	/* Snapshot freeze (guarded by mu): while > 0, nothing may start a
	 * transaction, checkpoint or restart the WAL. */
	int freeze;
	int holds;              /* of freeze: handoff holds (mu) */
	bool hold_commit_seen;  /* mu: a WAL transaction committed during
				 * the hold; the next one is a new one */
	uint64_t cap_wal_end;   /* capture_mu: end of the last captured WAL
				 * transaction in the current WAL, 0: none */

	/* Apply (db_apply.c): apply_mu serialises applies and guards these;
	 * it is taken before capture_mu and never inside a FUSE handler. */
	pthread_mutex_t apply_mu;
	int lock_fd;            /* the database opened through the mount */
	struct fs_walidx *walidx;
	uint32_t wal_pending;   /* walidx's pending frames when apply_mu was
				 * last let go (__atomic: read without it) */
	int64_t wait_since_ns;  /* a rollback-style apply waits for local
				 * readers (SQLite's PENDING lock held)
				 * since then, CLOCK_MONOTONIC; 0: none */
	int64_t wait_log_ms;    /* next "apply waits" log line at this wait */
	bool need_snapshot;     /* a record failed to apply: ask for one */
	bool apply_unclean;     /* the WAL kept frames at close */

	/* Handoff (fs_db_hold_txns; one caller at a time, no lock): the
	 * -shm opened through the mount, and whether it holds SQLite's WAL
	 * write lock, which keeps new WAL write transactions out. */
	int hold_fd;
	bool hold_locked;
	bool hold_waited;       /* said in the log that it waits */

	/* Recovery (db_open.c): the next capture records every page (a
	 * database the log cannot describe as a change of its last state). */
	bool capture_full;

	/* Synchronous replication (capture_mu): what the last capture
	 * changed, to take it back (db_undo.c); NULL until the first. */
	struct fs_undo *undo;
};

/* db_capture.c */
int fs_db_cksum_get(fs_db *db, uint32_t pgno, uint64_t *out);
int fs_db_cksum_set(fs_db *db, uint32_t pgno, uint64_t sum);
int fs_db_capture(fs_db *db, const fs_page_src *pages, size_t n,
		  uint32_t commit, uint32_t page_size, uint64_t wal_off,
		  uint64_t wal_size, uint32_t salt1, uint32_t salt2);
/* Records the database's deletion; capture_mu and mu held. It also ends
 * a failed capture's refusal of writes (capture_err). */
int fs_db_capture_delete(fs_db *db);
/* db_undo.c: taking back the last capture (its module comment, rules
 * D1-D3); capture_mu held. prepare, before the append: changes is how
 * many checksum entries an incremental record may change. note, before
 * an entry changes; keep, once the capture is done. fs_db_undo_locked:
 * 0 or -ESTALE (nothing to take back: nothing changed) or the log's cut
 * error (memory is put back all the same). */
int fs_db_undo_prepare(fs_db *db, bool full, size_t changes);
void fs_db_undo_note(fs_db *db, uint32_t pgno);
void fs_db_undo_keep(fs_db *db, uint64_t txid);
void fs_db_undo_forget(fs_db *db);
int fs_db_undo_locked(fs_db *db);
void fs_db_undo_free(fs_db *db);
/* Makes pos visible to readers of -pos and fs_db_pos; mu held. */
void fs_db_publish_locked(fs_db *db);
/* A full disk: whether rc says so (ENOSPC, EDQUOT). */
bool fs_db_rc_full(int rc);
/* A capture of TXID txid failed for a full disk: counts it and, at the
 * first failure of an episode, logs "capture blocked: disk full" (what
 * says what was being captured); mu held. wal: the WAL queue's (retried)
 * rather than a rollback-journal transaction's. */
void fs_db_full_locked(fs_db *db, bool wal, uint64_t txid, const char *what);
/* A capture went into the log (or, for the journal, a rollback left
 * nothing to record): ends the episode with "capture resumed"; mu held. */
void fs_db_unfull_locked(fs_db *db, bool wal, const char *how);
/* Whether a capture a full disk blocked may be tried again now (at most
 * every FS_DB_FULL_RETRY_MS); mu held. */
bool fs_db_full_retry_due_locked(fs_db *db);
#define FS_DB_FULL_RETRY_MS 100
int fs_db_scan_checksum(fs_db *db, uint64_t *out);

/* db_load.c: a first load (a database copied in; docs/STORAGE.md, "A
 * copy into the mount"). capture_mu and mu held by all but check. */
enum fs_load_end {
	FS_LOAD_SYNC,           /* fsync, a retry: recorded if complete */
	FS_LOAD_CLOSE,          /* a handle closed: the same */
	FS_LOAD_SETTLE,         /* a journal or WAL starts: the same */
	FS_LOAD_FINAL,          /* the last handle closed: recorded or
				 * emptied */
};
/* Whether the database file in fd is a complete SQLite database: 0 with
 * its page size and size in pages, or -EINVAL with why filled in. Not
 * final: -EINPROGRESS for a header page count that is not valid (SQLite
 * before 3.7.0): only the last close can say such a file is complete. */
int fs_db_load_check(int fd, bool final, uint32_t *out_ps,
		     uint32_t *out_commit, char *why, size_t whylen);
/* A write while there is no journal and no committed page. */
int fs_db_load_write(fs_db *db, const uint8_t *buf, size_t n, off_t off);
/* Ends a first load if one is open: 0 when none was, or it is recorded
 * (or the file is empty); -EAGAIN with why filled in when it is not
 * complete and how is not final (nothing changes), -EINPROGRESS when
 * that cannot be told before the last close; -EINVAL when it was
 * emptied (final; *out_emptied set: the caller invalidates the kernel's
 * cache once unlocked); -ENOSPC while a full disk keeps it out of the
 * log (it stays open and is tried again). */
int fs_db_load_end(fs_db *db, enum fs_load_end how, char *why,
		   size_t whylen, bool *out_emptied);
/* A rollback journal or WAL is about to start on a database being
 * loaded: the load is recorded first when complete, else -EBUSY with a
 * log line (what names the operation). */
int fs_db_load_settle(fs_db *db, const char *what);
/* The node is a replica now: a first load still open cannot be recorded
 * and is emptied (true: the caller invalidates the kernel's cache). */
bool fs_db_load_abandon(fs_db *db);
/* Start-up of a primary: a database file with no committed page in its
 * log is recorded if it is a complete database, else emptied. */
int fs_db_load_recover(fs_db *db);

/* db_apply.c */
/* EROFS (with a rate-limited log line) when the node is a replica; mu
 * held. */
int fs_db_refuse_ro_locked(fs_db *db, enum fs_kind kind);
/* Waits while a snapshot freeze or a handoff hold is on and no
 * transaction is open; mu held. For what may start a rollback-journal
 * transaction. */
void fs_db_wait_unfrozen_locked(fs_db *db, bool txn_open);
/* The same for a snapshot freeze only (db_snapshot.c): for checkpoints
 * and WAL restarts, which a handoff must not hold back (the WAL writer it
 * waits for may be the one doing them). */
void fs_db_wait_snapshot_locked(fs_db *db, bool txn_open);
/* A WAL write at off while a handoff holds (db_snapshot.c; mu held):
 * the first write of a new WAL transaction, once the one open when the
 * hold began has committed, waits for the hold to end. */
void fs_db_wait_hold_wal_locked(fs_db *db, uint64_t off);
/* Replica start-up: brings the database file to the log's position from
 * the log itself, or resets both (a snapshot follows). */
int fs_db_replica_recover(fs_db *db, bool clean);

/* db_wal.c */
int fs_db_wal_write(fs_db *db, const void *buf, size_t n, off_t off);
int fs_db_wal_reset(fs_db *db, off_t new_size);
int fs_db_wal_recover(fs_db *db, bool trusted);
/* Captures the WAL queue (waiting for a thread already capturing it);
 * mu held. 0 once it is empty (or capture_err stopped it); -ENOSPC
 * while its head waits for disk space (tried again first when due). */
int fs_db_drain_locked(fs_db *db);
/* fs_db_capture_retry's WAL part. */
void fs_db_wal_retry(fs_db *db);
/* Before the WAL is removed, truncated to new_size or given another
 * header: -EBUSY (logged; what says which) when that would lose committed
 * frames whose pages the database file does not hold yet (no checkpoint
 * copied them). SQLite does any of these only after a complete
 * checkpoint. mu held and no capture running (the queue drained): every
 * other writer of the page checksums holds mu. */
int fs_db_wal_check_drop_locked(fs_db *db, uint64_t new_size,
				const char *what);
/* Promotion: the WAL that walidx wrote while this node was a replica
 * (frames applied from the log, published up to max_frames) becomes the
 * capture's: its committed transactions count as captured, and SQLite's
 * next frames, which continue its checksum chain, are checked and
 * captured. mu held, the queue empty. */
int fs_db_wal_adopt_locked(fs_db *db, uint32_t max_frames);
/* The database is deleted after a failed capture: its queued WAL
 * transactions are dropped and the WAL's frames are no longer tracked
 * (a new header starts again); mu held. */
void fs_db_wal_forget_locked(fs_db *db);

#endif
