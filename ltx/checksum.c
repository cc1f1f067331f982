/*
 * CRC-64/ISO (shared/LTX.md, "Checksums"): polynomial
 *   P(x) = x^64 + x^4 + x^3 + x + 1   (0x1B; reflected 0xD800000000000000),
 * init all ones, reflected input and output, xorout all ones.
 *
 * Two implementations give bit-identical results; ltx_crc64 picks one once,
 * at the first call:
 *
 * 1. Portable: table-driven, slicing by 16. Sixteen 256-entry tables let
 *    the loop consume 16 bytes per iteration with independent lookups
 *    (about 2 GB/s on one x86-64 core). Table 0 is the classic byte table
 *    for the reflected polynomial; table k maps a byte to the contribution
 *    it makes k bytes further on:
 *      T[k][i] = (T[k-1][i] >> 8) ^ T[0][T[k-1][i] & 0xff]
 *
 * 2. x86-64 with PCLMULQDQ (checked at run time): carry-less multiplication
 *    folding, after Intel's "Fast CRC Computation for Generic Polynomials
 *    Using PCLMULQDQ" (2009), reflected variant; 10+ GB/s
 *    (tests/bench/bench_crc64).
 *
 * Folding. The raw CRC (no init, no xorout) of a message M is
 * M(x)·x^64 mod P; the init value is XORed into the message's first eight
 * bytes. A 128-bit chunk A = H·x^64 + L that is followed by T more message
 * bits contributes the same remainder as
 *   H·(x^(T+64) mod P) + L·(x^T mod P)
 * placed on top of the chunk T bits later: each product is below x^127, so
 * the fold stays 128 bits wide. In the reflected layout a 16-byte
 * little-endian load puts H (bit-reversed) in the low quadword and L in the
 * high one, and a carry-less product of two bit-reversed 64-bit values is
 * the bit-reversed product times x, so the constants are
 *   K(T) = rev64(x^(T-1) mod P),  K(T+64) = rev64(x^(T+63) mod P).
 * Four accumulators fold 64 bytes per step (T = 512); they are then folded
 * into one (T = 384, 256, 128), the rest 16 bytes at a time (T = 128).
 * The last 128-bit value is reduced by one slicing-by-16 step over its 16
 * bytes (it is a message with a zero CRC state), and any tail shorter than
 * 16 bytes by the byte table. The constants are computed at start-up from
 * P by repeated multiplication by x, so no magic numbers need trusting;
 * the bench aborts if the two implementations ever disagree.
 */
#include "checksum.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "lib/bytes.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC_HAVE_CLMUL 1
#include <immintrin.h>
#else
#define CRC_HAVE_CLMUL 0
#endif

#define POLY UINT64_C(0x1B) /* P(x) - x^64, bit i = coefficient of x^i */
#define POLY_REFLECTED UINT64_C(0xD800000000000000)
#define SLICES 16
/* Below this the table is as fast as setting up the folding. */
#define CLMUL_MIN_LEN 128

static uint64_t crc_table[SLICES][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
/* Written once under crc_once, read-only afterwards. */
static bool crc_use_clmul;

#if CRC_HAVE_CLMUL
/* Fold constants: k[i] = { K(T+64), K(T) } for T = 512, 384, 256, 128. */
static uint64_t crc_fold_k[4][2];

/* x^n mod P, bit i = coefficient of x^i. */
static uint64_t xpow_mod(unsigned n)
{
	uint64_t r = 1;

	while (n--)
		r = (r & (UINT64_C(1) << 63)) ? (r << 1) ^ POLY : r << 1;
	return r;
}

static uint64_t rev64(uint64_t v)
{
	uint64_t r = 0;

	for (int i = 0; i < 64; i++, v >>= 1)
		r = (r << 1) | (v & 1);
	return r;
}
#endif

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
#if CRC_HAVE_CLMUL
	for (int i = 0; i < 4; i++) {
		unsigned t = 512 - 128 * (unsigned)i;
		crc_fold_k[i][0] = rev64(xpow_mod(t + 63));
		crc_fold_k[i][1] = rev64(xpow_mod(t - 1));
	}
	__builtin_cpu_init();
	crc_use_clmul = __builtin_cpu_supports("pclmul");
#endif
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

/* Raw (not inverted) CRC state over n bytes, slicing by 16. */
static uint64_t crc_update_table(uint64_t crc, const uint8_t *p, size_t n)
{
	const uint64_t(*t)[256] = crc_table;

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
	return crc;
}

#if CRC_HAVE_CLMUL
__attribute__((target("pclmul"))) static inline __m128i
fold(__m128i acc, __m128i k, __m128i next)
{
	__m128i lo = _mm_clmulepi64_si128(acc, k, 0x00);
	__m128i hi = _mm_clmulepi64_si128(acc, k, 0x11);

	return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

/* Raw CRC state over n >= 64 bytes by folding. */
__attribute__((target("pclmul"))) static uint64_t
crc_update_clmul(uint64_t crc, const uint8_t *p, size_t n)
{
	const __m128i k512 = _mm_set_epi64x((long long)crc_fold_k[0][1],
					    (long long)crc_fold_k[0][0]);
	const __m128i k384 = _mm_set_epi64x((long long)crc_fold_k[1][1],
					    (long long)crc_fold_k[1][0]);
	const __m128i k256 = _mm_set_epi64x((long long)crc_fold_k[2][1],
					    (long long)crc_fold_k[2][0]);
	const __m128i k128 = _mm_set_epi64x((long long)crc_fold_k[3][1],
					    (long long)crc_fold_k[3][0]);
	__m128i x0, x1, x2, x3;
	uint8_t last[16];

	x0 = _mm_loadu_si128((const __m128i *)p);
	x1 = _mm_loadu_si128((const __m128i *)(p + 16));
	x2 = _mm_loadu_si128((const __m128i *)(p + 32));
	x3 = _mm_loadu_si128((const __m128i *)(p + 48));
	x0 = _mm_xor_si128(x0, _mm_cvtsi64_si128((long long)crc));
	p += 64;
	n -= 64;
	while (n >= 64) {
		x0 = fold(x0, k512, _mm_loadu_si128((const __m128i *)p));
		x1 = fold(x1, k512,
			  _mm_loadu_si128((const __m128i *)(p + 16)));
		x2 = fold(x2, k512,
			  _mm_loadu_si128((const __m128i *)(p + 32)));
		x3 = fold(x3, k512,
			  _mm_loadu_si128((const __m128i *)(p + 48)));
		p += 64;
		n -= 64;
	}
	x3 = fold(x0, k384, x3);
	x3 = fold(x1, k256, x3);
	x3 = fold(x2, k128, x3);
	while (n >= 16) {
		x3 = fold(x3, k128, _mm_loadu_si128((const __m128i *)p));
		p += 16;
		n -= 16;
	}
	_mm_storeu_si128((__m128i *)last, x3);
	crc = crc_update_table(0, last, sizeof(last));
	return crc_update_table(crc, p, n);
}
#endif

uint64_t ltx_crc64_portable(uint64_t crc, const void *buf, size_t n)
{
	pthread_once(&crc_once, crc_table_init);
	return ~crc_update_table(~crc, buf, n);
}

uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n)
{
	pthread_once(&crc_once, crc_table_init);
#if CRC_HAVE_CLMUL
	if (crc_use_clmul && n >= CLMUL_MIN_LEN)
		return ~crc_update_clmul(~crc, buf, n);
#endif
	return ~crc_update_table(~crc, buf, n);
}

const char *ltx_crc64_impl(void)
{
	pthread_once(&crc_once, crc_table_init);
	return crc_use_clmul ? "pclmulqdq" : "slice16";
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
