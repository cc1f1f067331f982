/*
 * LTX checksums (shared/LTX.md, "Checksums").
 *
 * CRC-64/ISO: polynomial 0x1B, reflected (0xD800000000000000), init all
 * ones, reflected input and output, xorout all ones; check value of
 * "123456789" is 0xB90956C775A41001.
 *
 *   page checksum      crc64(be32(pgno) || page) | 1<<63
 *   database checksum  (XOR of page checksums of pages 1..commit, lock page
 *                       excluded) | 1<<63; empty database: 1<<63
 *
 * The XOR makes the database checksum incremental: a transaction XORs out
 * each old page's checksum and XORs in the new one, in O(pages changed).
 */
#ifndef LTX_CHECKSUM_H
#define LTX_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#define LTX_CHECKSUM_FLAG (UINT64_C(1) << 63)
#define LTX_CHECKSUM_EMPTY LTX_CHECKSUM_FLAG
/* Byte offset whose page SQLite never uses (PENDING_BYTE). */
#define LTX_PENDING_BYTE UINT64_C(0x40000000)

/* Continues a CRC-64/ISO: pass 0 to start, then the previous result. */
uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n);
/* The same CRC by the portable table code alone, whatever the CPU; for
 * tests and benchmarks that compare the two implementations. */
uint64_t ltx_crc64_portable(uint64_t crc, const void *buf, size_t n);
/* The implementation ltx_crc64 uses on this CPU: "pclmulqdq" or
 * "slice16". */
const char *ltx_crc64_impl(void);

uint64_t ltx_checksum_page(uint32_t pgno, const void *data, size_t page_size);

/* The lock page's number for page_size (always > 1). */
static inline uint32_t ltx_lock_pgno(uint32_t page_size)
{
	return (uint32_t)(LTX_PENDING_BYTE / page_size + 1);
}

/* XORs a page checksum into (or out of) a database checksum accumulator.
 * The accumulator keeps bit 63 set throughout: since every page checksum
 * has it set too, XOR alone would flip it, so it is forced back on. */
static inline uint64_t ltx_checksum_xor(uint64_t db, uint64_t page)
{
	return (db ^ page) | LTX_CHECKSUM_FLAG;
}

#endif
