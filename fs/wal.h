/*
 * SQLite WAL format (shared/SQLITE.md, "WAL"), as the capture path needs it.
 *
 * WAL header, 32 bytes, big-endian:
 *   off size field
 *     0    4 magic 0x377f0682 (checksums little-endian) or 0x377f0683 (big)
 *     4    4 format version 3007000
 *     8    4 page size: a power of two, 512..65536 (65536 as is)
 *    12    4 checkpoint sequence
 *    16    4 salt-1
 *    20    4 salt-2
 *    24    4 checksum-1 } over bytes 0..23
 *    28    4 checksum-2 }
 *
 * Frame header, 24 bytes, then page-size bytes of page:
 *     0    4 page number
 *     4    4 commit: database size in pages after commit for the last frame
 *              of a transaction, 0 otherwise
 *     8    4 salt-1 }  must equal the header's
 *    12    4 salt-2 }
 *    16    4 checksum-1 } cumulative: over the WAL header's first 24 bytes,
 *    20    4 checksum-2 } then each frame's first 8 bytes and page so far
 *
 * Validity: a frame is valid when its salts match and its checksum equals
 * the running checksum; the WAL's committed content is every frame up to
 * the last valid commit frame before the first invalid frame.
 */
#ifndef FS_WAL_H
#define FS_WAL_H

#include <stdbool.h>
#include <stdint.h>

#define FS_WAL_HDR_SIZE 32
#define FS_WAL_FRAME_HDR_SIZE 24
#define FS_WAL_MAGIC_LE UINT32_C(0x377f0682)
#define FS_WAL_MAGIC_BE UINT32_C(0x377f0683)
#define FS_WAL_VERSION UINT32_C(3007000)

typedef struct fs_wal_hdr {
	bool big_endian_cksum;
	uint32_t page_size;
	uint32_t ckpt_seq;
	uint32_t salt1, salt2;
	uint32_t cksum1, cksum2;
} fs_wal_hdr;

/* Parses and checks a 32-byte WAL header (magic, version, page size,
 * header checksum). -EBADMSG when invalid. */
int fs_wal_hdr_parse(const uint8_t *buf, fs_wal_hdr *out);

/* Continues SQLite's WAL checksum over n bytes (n a multiple of 8). */
void fs_wal_checksum(bool big_endian, const uint8_t *buf, uint32_t n,
		     uint32_t *s0, uint32_t *s1);

/* Checks a frame (24-byte header + page) against the running checksum
 * (s0, s1), which it advances when the frame is valid. Returns true when
 * valid; *out_pgno and *out_commit get the header's fields. */
bool fs_wal_frame_check(const fs_wal_hdr *h, const uint8_t *fhdr,
			const uint8_t *page, uint32_t *s0, uint32_t *s1,
			uint32_t *out_pgno, uint32_t *out_commit);

static inline uint64_t fs_wal_frame_offset(uint32_t page_size, uint64_t i)
{
	return FS_WAL_HDR_SIZE + i * (FS_WAL_FRAME_HDR_SIZE + page_size);
}

#endif
