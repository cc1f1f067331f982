/*
 * Compaction of L0 backup objects into L1 objects (object.h rules O5,
 * O6; docs/BACKUP.md "Compaction"), so that a restore reads few objects.
 *
 * The merge: the records of consecutive L0 objects become one LTX record
 *   header    min TXID, pre-apply checksum of the first record; max TXID,
 *             commit, timestamp, node ID of the last; its page size and
 *             compression flag
 *   pages     for each page number <= the last commit, the last version
 *             any merged record wrote, and every page in (m, commit]
 *             where m is the smallest commit of any merged record (a
 *             shrink then a growth: applying the records one by one
 *             leaves zeros where no later record wrote, and so does the
 *             merged record); ascending, the lock page never
 *   trailer   post-apply checksum of the last record
 * Page data goes to an unlinked temporary file at (pgno-1)*page_size,
 * truncated to commit pages after every record (so dropped pages read as
 * zeros), with a bitmap of the pages written: memory does not grow with
 * the pages.
 *
 * A record that cannot join the merge ends it before the object that
 * holds it (bk_merge_check returns -EXDEV): a snapshot (min TXID 1),
 * another page size than the merge's, one that does not follow (TXID and
 * checksum), a timestamp earlier than one already merged, or one the
 * window (bk_merge_set_window) or the limits below end the merge at.
 *
 *   bk_merge_new(dir, &m);
 *   for each object body (records back to back) in fd:
 *     if (bk_merge_check(m, fd, len, ...) == -EXDEV) break;
 *     bk_merge_add(m, fd, len, ...);
 *   bk_merge_finish(m, out_fd, &len, &obj, ...);   // one record
 *   bk_merge_free(m);
 */
#ifndef BACKUP_COMPACT_H
#define BACKUP_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "object.h"
#include "store.h"

/* An L1 holds at most this many L0 objects, and the merge stops adding
 * objects once its page file holds this many bytes of pages. */
#define BK_COMPACT_MAX_OBJECTS 4096
#define BK_COMPACT_MAX_PAGE_BYTES (UINT64_C(1) << 30)
/* The uploader's time budget for one bk_compact_db call: its uploads
 * wait while it runs. */
#define BK_COMPACT_BUDGET_MS 5000

typedef struct bk_merge bk_merge;

/* A merge whose page file is made in dir (O_TMPFILE). */
int bk_merge_new(const char *dir, bk_merge **out);
void bk_merge_free(bk_merge *m);

/* Whether the object body [0, len) of fd (records back to back, object.h)
 * can join the merge: 0 yes, -EXDEV no (see above), -EBADMSG a corrupt
 * body (err says where). Reads only the records' headers and trailers. */
int bk_merge_check(const bk_merge *m, int fd, uint64_t len, char *err,
		   size_t errlen);
/* Ends the merge (bk_merge_check: -EXDEV) before a record committed
 * window_ms or more after its first record (0: no window). */
void bk_merge_set_window(bk_merge *m, int64_t window_ms);
/* Adds the body's records (bk_merge_check said 0), decoding and checking
 * each one (its file checksum). */
int bk_merge_add(bk_merge *m, int fd, uint64_t len, char *err,
		 size_t errlen);
/* Objects added, and the bytes of pages the page file holds. */
size_t bk_merge_objects(const bk_merge *m);
uint64_t bk_merge_page_bytes(const bk_merge *m);

/* Writes the merged record (4-byte length, LTX file) to out from offset
 * 0; *len its size, *o its min, max, post and ts_ms (level 1; the caller
 * sets the epoch). zstd_level as ltx_encoder_new's. */
int bk_merge_finish(bk_merge *m, int out, int zstd_level, uint64_t *len,
		    bk_obj *o, char *err, size_t errlen);

/* What one compaction of a database did. */
typedef struct bk_compact_result {
	uint64_t l1_objects;      /* L1 objects put */
	uint64_t l0_objects;      /* L0 objects merged into them */
	uint64_t bytes;           /* bytes put */
	uint64_t newer_epoch;     /* rule O4: a newer epoch seen, nothing put */
	bool more;                /* stopped by the budget with more to do */
} bk_compact_result;

/* One compaction of db, by an uploader of epoch epoch: lists both
 * levels, computes the chain to the newest point with its L1s (O3, O6),
 * and merges the L0 objects after the start object and after the chain's
 * last L1, when there are at least 2 of them, into L1 objects (each up to
 * the limits above), each put after rule O4's check. After budget_ms (0:
 * none) it adds no more objects: it puts what it merged (2 objects or
 * more) and sets res->more when objects are left for the next call.
 * window_ms (0: none): an L1 spans less than that much commit time
 * (bk_merge_set_window), so a point in time reads at most about one
 * window of L0 objects after the last L1 before it.
 * Temporary files go in tmpdir. 0 or -errno with err. */
int bk_compact_db(bk_store *s, const char *prefix, const char *db,
		  uint64_t epoch, const char *tmpdir, int64_t budget_ms,
		  int64_t window_ms, bk_compact_result *res, char *err,
		  size_t errlen);

#endif
