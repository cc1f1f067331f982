/*
 * The LTX change-file format (shared/LTX.md): header, trailer, validity
 * rules, and the error kinds every LTX reader reports.
 *
 * File:
 *   header      100 bytes, never compressed
 *   page block  frames (u32 pgno, page) then a u32 zero terminator;
 *               one zstd frame when flag 0x4 is set
 *   trailer     16 bytes, never compressed
 *
 * Header (big-endian):
 *   off size field
 *     0    4 magic "LTX1"
 *     4    4 flags
 *     8    4 page size
 *    12    4 commit (database size in pages after applying; 0 = deleted)
 *    16    8 min TXID
 *    24    8 max TXID
 *    32    8 timestamp (ms since the Unix epoch, signed)
 *    40    8 pre-apply checksum
 *    48    8 WAL offset
 *    56    8 WAL size
 *    64    4 WAL salt 1
 *    68    4 WAL salt 2
 *    72    8 node ID
 *    80   20 reserved, zero
 *
 * Trailer: post-apply checksum (8), file checksum (8).
 *
 * Header rules, each with its own error kind:
 *   H1 magic is "LTX1"                                  LTX_ERR_MAGIC
 *   H2 flags: only 0x1 and 0x4 known, not both;
 *      0x1 (LZ4) is known but unsupported              LTX_ERR_FLAGS,
 *                                                       LTX_ERR_UNSUPPORTED
 *   H3 page size a power of two in 512..65536          LTX_ERR_PAGE_SIZE
 *   H4 min TXID > 0                                     LTX_ERR_MIN_TXID
 *   H5 max TXID >= min TXID                             LTX_ERR_MAX_TXID
 *   H6 snapshot (min TXID 1): pre-apply checksum 0;
 *      otherwise bit 63 set                             LTX_ERR_PRE_APPLY
 *   H7 WAL offset and size both set or both zero        LTX_ERR_WAL_RANGE
 *   H8 WAL salts zero unless WAL offset/size set        LTX_ERR_WAL_SALT
 *   H9 reserved bytes zero                              LTX_ERR_RESERVED
 *  H10 commit does not exceed the pages a 32-bit
 *      page count can address at this page size
 *      (the database stays under 2^47 bytes)           LTX_ERR_COMMIT
 *
 * Page rules:
 *   P1 page number > 0 and <= commit                    LTX_ERR_PGNO
 *   P2 never the lock page                              LTX_ERR_LOCK_PAGE
 *   P3 strictly ascending; a snapshot holds exactly
 *      1..commit (lock page skipped)                    LTX_ERR_PAGE_ORDER,
 *                                                       LTX_ERR_SNAPSHOT
 * Trailer rules:
 *   T1 post-apply checksum has bit 63 set               LTX_ERR_POST_APPLY
 *   T2 snapshot: post-apply = checksum of its pages     LTX_ERR_POST_APPLY
 *   T3 file checksum has bit 63 set and equals crc64(header || page block
 *      || post-apply checksum) | 1<<63                  LTX_ERR_FILE_CHECKSUM
 *   T4 nothing follows the trailer                      LTX_ERR_TRAILING
 */
#ifndef LTX_LTX_H
#define LTX_LTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LTX_MAGIC "LTX1"
#define LTX_HEADER_SIZE 100
#define LTX_TRAILER_SIZE 16
#define LTX_PAGE_HEADER_SIZE 4
#define LTX_MIN_PAGE_SIZE 512
#define LTX_MAX_PAGE_SIZE 65536

#define LTX_FLAG_COMPRESS_LZ4 UINT32_C(0x1)
#define LTX_FLAG_COMPRESS_ZSTD UINT32_C(0x4)
#define LTX_FLAGS_KNOWN (LTX_FLAG_COMPRESS_LZ4 | LTX_FLAG_COMPRESS_ZSTD)

typedef struct ltx_header {
	uint32_t flags;
	uint32_t page_size;
	uint32_t commit;
	uint64_t min_txid;
	uint64_t max_txid;
	int64_t timestamp;
	uint64_t pre_apply_checksum;
	uint64_t wal_offset;
	uint64_t wal_size;
	uint32_t wal_salt1;
	uint32_t wal_salt2;
	uint64_t node_id;
} ltx_header;

typedef struct ltx_trailer {
	uint64_t post_apply_checksum;
	uint64_t file_checksum;
} ltx_trailer;

enum ltx_err_kind {
	LTX_OK = 0,
	LTX_ERR_IO,          /* the source or sink failed */
	LTX_ERR_NOMEM,
	LTX_ERR_TRUNCATED,   /* the file ends early */
	LTX_ERR_MAGIC,
	LTX_ERR_FLAGS,
	LTX_ERR_UNSUPPORTED, /* LZ4 compression */
	LTX_ERR_PAGE_SIZE,
	LTX_ERR_MIN_TXID,
	LTX_ERR_MAX_TXID,
	LTX_ERR_PRE_APPLY,
	LTX_ERR_WAL_RANGE,
	LTX_ERR_WAL_SALT,
	LTX_ERR_RESERVED,
	LTX_ERR_COMMIT,
	LTX_ERR_PGNO,
	LTX_ERR_LOCK_PAGE,
	LTX_ERR_PAGE_ORDER,
	LTX_ERR_SNAPSHOT,
	LTX_ERR_COMPRESSED,  /* the zstd frame is corrupt */
	LTX_ERR_POST_APPLY,
	LTX_ERR_FILE_CHECKSUM,
	LTX_ERR_TRAILING,
	LTX_ERR_USAGE,       /* the caller broke the API's contract */
	LTX_ERR_KIND_COUNT,
};

/* What went wrong, where: kind, byte offset in the (logical) file, and a
 * message naming the field with expected and found values. */
typedef struct ltx_err {
	int kind;
	int64_t offset;
	char msg[256];
} ltx_err;

const char *ltx_err_kind_name(int kind);
/* Sets err (when not NULL) and returns the errno that goes with kind:
 * -EBADMSG for corrupt input, -ENOTSUP for unsupported, -EIO, -ENOMEM,
 * -EINVAL for usage. */
int ltx_err_set(ltx_err *err, int kind, int64_t offset, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static inline bool ltx_header_is_snapshot(const ltx_header *h)
{
	return h->min_txid == 1;
}

/* Writes the 100-byte header. */
void ltx_header_encode(const ltx_header *h, uint8_t *out);
/* Parses and validates (rules H1..H10) 100 bytes. */
int ltx_header_decode(const uint8_t *buf, ltx_header *out, ltx_err *err);
/* Rules H2..H8, H10 on a header in memory (the encoder checks these). */
int ltx_header_validate(const ltx_header *h, ltx_err *err);

void ltx_trailer_encode(const ltx_trailer *t, uint8_t *out);
void ltx_trailer_decode(const uint8_t *buf, ltx_trailer *out);

#endif
