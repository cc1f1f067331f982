/*
 * The base of a pruned LTX log: the database as page checksums at TXID
 * B, the TXID just before the log's first record, so that a log whose
 * first records retention removed can still be replayed in full (`ltxfs
 * verify`). fs_log_prune replays every record it removes onto the base
 * before it removes it; a log that starts with a snapshot needs no base.
 *
 *   <data.dir>/dbs/<name>/log/base
 *
 *   off    size       field (big-endian)
 *     0       8       magic "LTXBASE1"
 *     8       4       page size (0 while commit is 0)
 *    12       4       commit: the database's size in pages at B
 *    16       8       B: the TXID the checksums are at
 *    24       8       the database checksum at B (B's post-apply)
 *    32       8       since: the max TXID of the snapshot record the
 *                     checksums were replayed from
 *    40       8       stopped: 0, or the TXID of a record that could not
 *                     be replayed onto the base (it stays at the TXID
 *                     before; retention removed that record anyway)
 *    48     200       why it stopped: text, NUL-padded
 *   248  8*commit     page checksums of pages 1..commit (ltx/checksum.h),
 *                     the lock page's 0
 *   end       8       file checksum: crc64 of every byte before it, with
 *                     bit 63 set
 *
 * Rules, checked by fs_logbase_load:
 *   B1 the magic;
 *   B2 the size is 256 + 8 * commit;
 *   B3 the file checksum;
 *   B4 the page size is a power of two in 512..65536, or 0 with commit 0;
 *   B5 every entry has bit 63 set, except the lock page's, which is 0;
 *   B6 the entries XORed (bit 63 set) are the database checksum;
 *   B7 0 < since <= B, and stopped is 0 or after B.
 *
 * Applying a record (fs_logbase_apply) is LTX's apply (shared/LTX.md,
 * ltx_dbfile_apply) on checksums instead of pages: each page's old
 * checksum is XORed out and its new one in, pages a growing commit adds
 * without a frame count as zero pages, pages a shrinking commit cuts are
 * XORed out, and the result must be the record's post-apply checksum. A
 * snapshot starts afresh; so does a record with another page size (its
 * pre-apply checksum must still match: it is a full record). Memory is
 * bounded: the table lives in the object's file, read and written an
 * entry at a time.
 */
#ifndef FS_LOGBASE_H
#define FS_LOGBASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/decoder.h"
#include "ltx/ltx.h"

#define FS_LOGBASE_NAME "base"
#define FS_LOGBASE_WHY 200

typedef struct fs_logbase_info {
	uint32_t page_size;
	uint32_t commit;
	uint64_t txid;          /* 0: nothing applied yet */
	uint64_t checksum;
	uint64_t since;
	uint64_t stopped;
	char why[FS_LOGBASE_WHY];
} fs_logbase_info;

/* A table of page checksums in a file (a base being built, or verify's
 * scratch copy). */
typedef struct fs_logbase fs_logbase;

/* What a replay tells its caller, record by record (all may be NULL). */
typedef struct fs_logbase_hooks {
	void *ctx;
	/* A page of the record being applied, as written. */
	int (*page)(void *ctx, uint32_t pgno, const uint8_t *data,
		    uint32_t page_size);
	/* After each record: the database has commit pages of page_size;
	 * reset: it was emptied first (a snapshot, a new page size). */
	int (*resize)(void *ctx, uint32_t commit, uint32_t page_size,
		      bool reset);
} fs_logbase_hooks;

/* An empty table (nothing applied) in fd, which it truncates and owns
 * (fs_logbase_free closes it). */
int fs_logbase_new(int fd, fs_logbase **out);
void fs_logbase_free(fs_logbase *b);

/* Copies the base file at path into b (empty), checking rules B1-B7.
 * -ENOENT when there is none; -EBADMSG with why when it breaks a rule;
 * other -errno. */
int fs_logbase_load(fs_logbase *b, const char *path, char *why,
		    size_t whylen);

/* Applies the record dec reads (a fresh decoder). A non-snapshot must
 * follow b's TXID and checksum. -EBADMSG with why (naming the TXID) when
 * it does not follow, is corrupt or does not replay to its post-apply
 * checksum; then b is left half-applied and must be started again.
 * out_hdr may be NULL. */
int fs_logbase_apply(fs_logbase *b, ltx_decoder *dec,
		     const fs_logbase_hooks *hk, ltx_header *out_hdr,
		     char *why, size_t whylen);

/* Page pgno's checksum (0 past the end or for the lock page). */
int fs_logbase_get(fs_logbase *b, uint32_t pgno, uint64_t *out);

/* Records that the record at txid could not be replayed onto b. */
void fs_logbase_stop(fs_logbase *b, uint64_t txid, const char *why);

/* Writes b's header and file checksum into its file and syncs it: the
 * file is then a base that fs_logbase_load accepts. */
int fs_logbase_write(fs_logbase *b);

const fs_logbase_info *fs_logbase_get_info(const fs_logbase *b);

#endif
