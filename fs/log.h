/*
 * A database's LTX log: append-only segments of length-prefixed LTX
 * records, one record per committed transaction.
 *
 *   <data.dir>/dbs/<name>/log/<first TXID %016x>.seg
 *
 * Record:
 *   off size field
 *     0    4 length L of the LTX file that follows (big-endian)
 *     4    L LTX file (shared/LTX.md), zstd-compressed page block or not
 *
 * Rules checked on open (the last segment), by iterators reading an older
 * segment, and by fs_log_check_all (every segment):
 *   R1 every record is a valid LTX file (its file checksum proves it);
 *   R2 records are contiguous: min TXID = previous max TXID + 1 and
 *      pre-apply checksum = previous post-apply checksum (a snapshot
 *      record restarts the chain);
 *   R3 a segment's name is its first record's min TXID.
 * A record that fails R1 and reaches the end of the last segment is a torn
 * tail from a crash: it is cut off, with a log line. Any other failure is
 * corruption: open fails (-EBADMSG) with a message naming segment, offset
 * and rule, and the node takes that database out of service (fs/mount.c;
 * a replica heals it, a primary waits for `ltxfs repair`).
 *
 * Segments roll over when they pass FS_LOG_SEGMENT_BYTES, so a bulk load
 * makes a few large files, not one file per transaction; with a retention
 * policy (fs_log_set_retention) also past a quarter of the byte cap and
 * once the active segment's first record is older than the age limit, so
 * whole segments can be pruned at a useful granularity.
 *
 * Retention (fs_log_prune) removes whole segments, oldest first, never
 * the one holding the last record, so the log may start at any TXID: an
 * iterator asked for records it no longer has says -ENOENT. It replays
 * what it removes onto the log's base first (<dir>/base, fs/logbase.h),
 * so a log that no longer starts with a snapshot can still be replayed
 * in full (`ltxfs verify`); fs_log_reset removes the base with the
 * records.
 *
 * Thread safety: appends (and fs_log_reset) come from one thread at a
 * time (the database's capture or apply path holds the database lock);
 * readers may iterate concurrently and see records up to the last
 * completed append; fs_log_prune, fs_log_set_retention and
 * fs_log_get_stats may run from any thread. `mu` guards the segment list
 * (names, sizes, first timestamps) and the published end; segments are
 * created and unlinked under it. `prune_mu` (taken before `mu`)
 * serialises fs_log_prune and fs_log_reset: a prune replays the segments
 * it will remove onto the base without `mu`, so appends and readers go
 * on meanwhile.
 */
#ifndef FS_LOG_H
#define FS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/decoder.h"
#include "ltx/encoder.h"
#include "ltx/ltx.h"
#include "ltx/pos.h"

#define FS_LOG_SEGMENT_BYTES (64u * 1024 * 1024)
#define FS_LOG_SEGMENT_MIN_BYTES 4096u  /* smallest roll-over size */
#define FS_LOG_SEGMENT_MIN_MS 1000      /* shortest roll-over age */
#define FS_LOG_RECORD_PREFIX 4
#define FS_LOG_WHY_MAX 512               /* fs_log_open's reason */

typedef struct fs_log fs_log;

/* What the log knows of its last record. */
typedef struct fs_log_tail {
	ltx_pos pos;          /* max TXID and post-apply checksum; 0/0 empty */
	uint32_t commit;      /* database size in pages after it */
	uint32_t page_size;
	uint64_t wal_offset;  /* the WAL range it was captured from */
	uint64_t wal_size;
	uint32_t wal_salt1, wal_salt2;
} fs_log_tail;

/* Opens (creating) the log in dir, recovers a torn tail, verifies the last
 * segment. name is used in messages. On failure why (may be NULL) gets
 * one line: for a corrupt log (-EBADMSG) the segment, the byte offset of
 * the record and the rule it breaks. */
int fs_log_open(const char *dir, const char *name, fs_log **out, char *why,
		size_t whylen);
/* Opens for reading only (another process may be appending): a torn or
 * growing tail is not cut, only not read. */
int fs_log_open_readonly(const char *dir, const char *name, fs_log **out);
void fs_log_close(fs_log *log);

/* Moves the log directory dir (closed) aside, to <as>.damaged-<UTC time,
 * %Y%m%dT%H%M%SZ> (as: dir itself, or the log dir whose damaged copy dir
 * now is), so that a new log can start there; any older
 * <as>.damaged-* is removed first (only the latest damaged copy is kept,
 * for inspection). out (may be NULL) gets the new path. Logs nothing. */
int fs_log_set_aside(const char *dir, const char *as, char *out,
		     size_t outlen);

/* What fs_log_check_all found. */
typedef struct fs_log_check {
	bool damaged;            /* a record breaks R1-R3 (not a torn tail) */
	char why[FS_LOG_WHY_MAX]; /* the first: segment, byte offset, rule */
	uint64_t records;        /* records that follow the rules */
	ltx_pos last;            /* the last of them: max TXID, post-apply */
	uint64_t max_txid;       /* highest TXID of those and of the segment
				  * names: no node can be past it */
} fs_log_check;
/* Reads every record of every segment of the log in dir (not opened,
 * nothing changed) and checks rules R1-R3; a torn tail of the last
 * segment is not damage (opening cuts it). A bad record is skipped by its
 * length when that stays inside the segment. 0 with out filled. */
int fs_log_check_all(const char *dir, const char *name, fs_log_check *out);

fs_log_tail fs_log_get_tail(fs_log *log);

/* Appends one record: the encoder is created with hdr and handed to
 * fill(), which adds the pages and says the post-apply checksum. On
 * failure (-ENOSPC on a full disk) the segment is cut back to its last
 * whole record, so nothing half-written remains and the same record can
 * be appended again; should the cut fail too, the next append cuts
 * first and fails (with the cut's error) while it cannot. */
typedef int (*fs_log_fill_fn)(void *ctx, ltx_encoder *enc,
			      uint64_t *out_post_apply, ltx_err *err);
int fs_log_append(fs_log *log, const ltx_header *hdr, int zstd_level,
		  fs_log_fill_fn fill, void *ctx, ltx_trailer *out_trailer);
/* As fs_log_append, reusing the caller's ZSTD_CCtx (may be NULL). */
int fs_log_append_cctx(fs_log *log, const ltx_header *hdr, int zstd_level,
		       void *zstd_cctx, fs_log_fill_fn fill, void *ctx,
		       ltx_trailer *out_trailer);

/* Appends a record received whole (a replica's copy of the primary's):
 * the LTX bytes at [off, off+len) of fd, already verified by the caller,
 * whose header and trailer are hdr and tr. Rule R2 is checked against the
 * tail (a snapshot restarts the chain; the caller resets the log first when
 * a snapshot's TXID would reuse a segment name). -EPROTO when it does not
 * follow the tail. */
int fs_log_append_raw(fs_log *log, int fd, uint64_t off, uint64_t len,
		      const ltx_header *hdr, const ltx_trailer *tr);

/* Takes back the last record, which must be TXID txid's and appended
 * through this fs_log since it was opened (synchronous replication's
 * failed commit): the log's end and tail go back to what they were
 * before that append (a segment the record began stays, empty, and the
 * next append reuses it), then the segment is cut there and synced, so
 * a crash never brings the record back. Only one record can be taken
 * back: the one before it no longer can, nor one whose segment a failed
 * append sealed (-ESTALE). Waits for a prune in progress.
 * Iterators that already returned the record get -ESTALE (as do, to be
 * safe, iterators that missed more than one of these calls).
 * -ESTALE when the last record is not txid's or was not appended here;
 * other -errno when the cut or its sync fails: the record is then no
 * longer read, but may come back after a crash (the next append cuts
 * it first). */
int fs_log_unappend(fs_log *log, uint64_t txid);

/* Makes every appended record durable (fdatasync; nothing when nothing
 * was appended since the last call). Called by the appender's side (no
 * append runs meanwhile): a segment sealed by a roll-over was synced then.
 */
int fs_log_sync(fs_log *log);

/* Removes every record (used before writing a snapshot that restarts the
 * log, e.g. on a replica). */
int fs_log_reset(fs_log *log);

/* Retention policy: records older than max_age_ms (< 0: no age limit) and
 * the oldest records while the log is over max_bytes (0: no cap) may be
 * pruned. Also sets when segments roll over: past max_bytes / 4 (at least
 * FS_LOG_SEGMENT_MIN_BYTES, at most FS_LOG_SEGMENT_BYTES) and when the
 * active segment's first record is max_age_ms (at least
 * FS_LOG_SEGMENT_MIN_MS) older than the record being appended. May be
 * called from any thread, any time. */
void fs_log_set_retention(fs_log *log, int64_t max_age_ms, uint64_t max_bytes);

/* A reader that still needs every record after TXID txid (the backup
 * uploader, backup/uploader.h): age (max_age_ms) no longer prunes a
 * segment holding any of them; the byte cap (max_bytes) still does, so
 * a disk is never filled for it. FS_LOG_NO_HOLD (the default): none.
 * Any thread, any time. */
#define FS_LOG_NO_HOLD UINT64_MAX
void fs_log_set_hold(fs_log *log, uint64_t txid);

typedef struct fs_log_prune_result {
	size_t segments;        /* segments removed by this call */
	size_t by_age;          /* of which old enough (the rest: size) */
	uint64_t bytes;         /* their bytes */
	uint64_t from_txid;     /* first TXID removed (0: none) */
	uint64_t first_txid;    /* the log's first segment now (0: empty) */
	uint64_t log_bytes;     /* the log's size now */
} fs_log_prune_result;

/* Applies the retention policy at wall-clock time now_ms: removes whole
 * segments, oldest first, while the oldest is entirely older than the age
 * limit (its successor's first record's LTX timestamp is at least
 * max_age_ms before now_ms) or the log is over the byte cap. Never removes
 * the segment holding the last record. First replays their records onto
 * the base and replaces it (written aside, synced, renamed); a base that
 * cannot follow (a record that does not replay, a write error) is logged
 * and the segments are removed all the same. Unlinks under the log's
 * lock, so iterators never open a removed segment; an iterator already
 * reading one keeps its fd. Crash-safe: a crash leaves the log starting
 * later, with a base at or past the TXID before its first record. A
 * read-only log is never pruned. out may be NULL. */
int fs_log_prune(fs_log *log, int64_t now_ms, fs_log_prune_result *out);

typedef struct fs_log_stats {
	uint64_t bytes;           /* all segments */
	uint64_t first_txid;      /* first segment's name; 0 when empty */
	size_t segments;
	uint64_t pruned_segments; /* removed by retention since open */
	uint64_t pruned_bytes;
} fs_log_stats;
void fs_log_get_stats(fs_log *log, fs_log_stats *out);

/* Iteration: records with max TXID > after_txid, in order, up to the last
 * completed append at the time of each call. */
typedef struct fs_log_iter fs_log_iter;
int fs_log_iter_open(fs_log *log, uint64_t after_txid, fs_log_iter **out);
/* 1 with the next record's LTX bytes at (*out_fd, *out_off, *out_len) and
 * its header in *out_hdr; 0 at the end; -ENOENT when the records after
 * after_txid are no longer kept (the log starts later, or retention
 * removed the segment that would come next while iterating); -EBADMSG
 * (logged: segment, offset, rule) for a corrupt record of a segment
 * older than the one open verified (a record from that segment on was
 * verified at open or appended since; older ones are verified here,
 * outside the log's lock, as they are read); -ESTALE when a record it
 * returned was taken back (fs_log_unappend; open a new iterator from a
 * position the log still has); other -errno. The fd stays
 * valid until the next call or fs_log_iter_free. */
int fs_log_iter_next(fs_log_iter *it, int *out_fd, uint64_t *out_off,
		     uint64_t *out_len, ltx_header *out_hdr);
/* For a caller that reads only the headers: records of older segments
 * are not verified (no -EBADMSG; the bytes may be corrupt). */
void fs_log_iter_headers_only(fs_log_iter *it);
void fs_log_iter_free(fs_log_iter *it);

/* A read callback over a byte range of a file (for ltx_decoder). */
typedef struct fs_range_reader {
	int fd;
	uint64_t off;
	uint64_t end;
} fs_range_reader;
int fs_range_read(void *ctx, void *buf, size_t n, size_t *out_got);

#endif
