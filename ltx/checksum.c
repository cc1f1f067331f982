/*
 * CRC-64/ISO, table-driven, slicing by 16: sixteen 256-entry tables let the
 * loop consume 16 bytes per iteration with independent lookups, which runs
 * at several GB/s on one x86-64 core (tests/bench/bench_crc64).
 *
 * Table 0 is the classic byte-at-a-time table for the reflected polynomial;
 * table k maps a byte to the CRC contribution it makes k bytes further on:
 *   T[k][i] = (T[k-1][i] >> 8) ^ T[0][T[k-1][i] & 0xff]
 */
#include "checksum.h"

#include <pthread.h>
#include <string.h>

#include "lib/bytes.h"

#define POLY_REFLECTED UINT64_C(0xD800000000000000)
#define SLICES 16

static uint64_t crc_table[SLICES][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
	for (unsigned i = 0; i < 256; i++) {
		uint64_t c = i;
		for (int b = 0; b < 8; b++)
			c = (c & 1) ? (c >> 1) ^ POLY_REFLECTED : c >> 1;
		crc_table[0][i] = c;
	}
	for (int k = 1; k < SLICES; k++) {
		for (unsigned i = 0; i < 256; i++) {
			uint64_t prev = crc_table[k - 1][i];
			crc_table[k][i] =
				(prev >> 8) ^ crc_table[0][prev & 0xff];
		}
	}
}

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	const uint64_t(*t)[256] = crc_table;

	pthread_once(&crc_once, crc_table_init);
	crc = ~crc;
	while (n >= 16) {
		uint64_t a = load_le64(p) ^ crc;
		uint64_t b = load_le64(p + 8);
		crc = t[15][a & 0xff] ^ t[14][(a >> 8) & 0xff] ^
		      t[13][(a >> 16) & 0xff] ^ t[12][(a >> 24) & 0xff] ^
		      t[11][(a >> 32) & 0xff] ^ t[10][(a >> 40) & 0xff] ^
		      t[9][(a >> 48) & 0xff] ^ t[8][a >> 56] ^
		      t[7][b & 0xff] ^ t[6][(b >> 8) & 0xff] ^
		      t[5][(b >> 16) & 0xff] ^ t[4][(b >> 24) & 0xff] ^
		      t[3][(b >> 32) & 0xff] ^ t[2][(b >> 40) & 0xff] ^
		      t[1][(b >> 48) & 0xff] ^ t[0][b >> 56];
		p += 16;
		n -= 16;
	}
	while (n--)
		crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint64_t ltx_checksum_page(uint32_t pgno, const void *data, size_t page_size)
{
	uint8_t be[4];
	uint64_t crc;

	put_be32(be, pgno);
	crc = ltx_crc64(0, be, sizeof(be));
	crc = ltx_crc64(crc, data, page_size);
	return crc | LTX_CHECKSUM_FLAG;
}
