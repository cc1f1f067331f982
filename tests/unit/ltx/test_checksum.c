/* Tests for ltx/checksum.c: CRC-64/ISO and page/database checksums, each
 * implementation checked against a bitwise CRC written from LTX.md. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/checksum.h"
#include "tests/unit/testutil.h"

static void fill_random(uint8_t *p, size_t n, uint64_t *state)
{
	for (size_t i = 0; i < n; i++) {
		*state ^= *state << 13;
		*state ^= *state >> 7;
		*state ^= *state << 17;
		p[i] = (uint8_t)(*state >> 24);
	}
}

static void test_check_value(void **state)
{
	(void)state;
	assert_int_equal(ltx_crc64(0, "123456789", 9),
			 UINT64_C(0xB90956C775A41001));
	/* The reference implementation agrees, so it can be trusted below. */
	assert_int_equal(tu_crc64_bitwise(0, "123456789", 9),
			 UINT64_C(0xB90956C775A41001));
	assert_int_equal(ltx_crc64_portable(0, "123456789", 9),
			 UINT64_C(0xB90956C775A41001));
}

static void test_impl_name(void **state)
{
	const char *impl = ltx_crc64_impl();

	(void)state;
	assert_non_null(impl);
	assert_true(strcmp(impl, "pclmulqdq") == 0 ||
		    strcmp(impl, "slice16") == 0);
}

static void test_empty_input(void **state)
{
	(void)state;
	assert_int_equal(ltx_crc64(0, "", 0), 0);
	assert_int_equal(ltx_crc64(UINT64_C(0x1234), NULL, 0),
			 UINT64_C(0x1234));
}

/* Both implementations (slicing by 16, and PCLMULQDQ folding where the
 * CPU has it) against the bitwise reference, for every length up to 600
 * (each remainder of the 16- and 64-byte loops many times over, on both
 * sides of the folding threshold) and every alignment of the start in a
 * 16-byte window. */
static void test_slicing_matches_bitwise(void **state)
{
	enum { MAXLEN = 600, ALIGN = 16 };
	uint8_t *buf = malloc(MAXLEN + ALIGN);
	uint64_t rng = UINT64_C(0x9E3779B97F4A7C15);

	(void)state;
	assert_non_null(buf);
	fill_random(buf, MAXLEN + ALIGN, &rng);
	for (size_t align = 0; align < ALIGN; align++) {
		for (size_t len = 0; len <= MAXLEN; len++) {
			const uint8_t *p = buf + align;
			uint64_t want = tu_crc64_bitwise(0, p, len);
			uint64_t got = ltx_crc64(0, p, len);
			uint64_t port = ltx_crc64_portable(0, p, len);
			if (got != want || port != want)
				fail_msg("len %zu align %zu: %016llx (%s), "
					 "%016llx (portable) != %016llx",
					 len, align, (unsigned long long)got,
					 ltx_crc64_impl(),
					 (unsigned long long)port,
					 (unsigned long long)want);
		}
	}
	free(buf);
}

static void test_slicing_large_buffers(void **state)
{
	static const size_t lens[] = {4096, 4100, 65536, 65536 + 4 + 13,
				      131072 + 7, 1 << 20};
	uint64_t rng = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint8_t *buf = malloc(lens[i] + 3);
		assert_non_null(buf);
		fill_random(buf, lens[i] + 3, &rng);
		assert_int_equal(ltx_crc64(0, buf + 3, lens[i]),
				 tu_crc64_bitwise(0, buf + 3, lens[i]));
		assert_int_equal(ltx_crc64_portable(0, buf + 3, lens[i]),
				 tu_crc64_bitwise(0, buf + 3, lens[i]));
		assert_int_equal(ltx_crc64(UINT64_C(0xdeadbeef), buf, lens[i]),
				 tu_crc64_bitwise(UINT64_C(0xdeadbeef), buf,
						  lens[i]));
		free(buf);
	}
}

/* crc(a || b) == crc(crc(a), b) for every split point. */
static void test_continuation(void **state)
{
	enum { LEN = 400 };
	uint8_t buf[LEN];
	uint64_t rng = 7;
	uint64_t whole;

	(void)state;
	fill_random(buf, LEN, &rng);
	whole = ltx_crc64(0, buf, LEN);
	for (size_t split = 0; split <= LEN; split++) {
		uint64_t c = ltx_crc64(0, buf, split);
		assert_int_equal(ltx_crc64(c, buf + split, LEN - split), whole);
	}
	/* Three pieces, byte by byte. */
	{
		uint64_t c = 0;
		for (size_t i = 0; i < LEN; i++)
			c = ltx_crc64(c, buf + i, 1);
		assert_int_equal(c, whole);
	}
}

/* A single flipped bit anywhere changes the CRC. */
static void test_detects_single_bit_flips(void **state)
{
	enum { LEN = 64 };
	uint8_t buf[LEN];
	uint64_t rng = 99;
	uint64_t base;

	(void)state;
	fill_random(buf, LEN, &rng);
	base = ltx_crc64(0, buf, LEN);
	for (size_t i = 0; i < LEN * 8; i++) {
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_not_equal(ltx_crc64(0, buf, LEN), base);
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
}

static void test_page_checksum(void **state)
{
	static const uint32_t sizes[] = {512, 1024, 4096, 65536};
	static const uint32_t pgnos[] = {1, 2, 255, 256, 65536, 0xFFFFFFFF};
	uint64_t rng = 3;

	(void)state;
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		uint8_t *page = malloc(sizes[s]);
		assert_non_null(page);
		fill_random(page, sizes[s], &rng);
		for (size_t i = 0; i < sizeof(pgnos) / sizeof(pgnos[0]); i++) {
			uint64_t c = ltx_checksum_page(pgnos[i], page,
						       sizes[s]);
			assert_int_equal(c, tu_page_checksum_ref(pgnos[i], page,
								 sizes[s]));
			assert_true(c & LTX_CHECKSUM_FLAG);
		}
		/* The page number is part of the checksum. */
		assert_int_not_equal(ltx_checksum_page(1, page, sizes[s]),
				     ltx_checksum_page(2, page, sizes[s]));
		free(page);
	}
}

/* The page number goes in big-endian, before the data. */
static void test_page_checksum_byte_order(void **state)
{
	uint8_t page[512];
	uint8_t joined[4 + 512];

	(void)state;
	memset(page, 0xA5, sizeof(page));
	joined[0] = 0x01;
	joined[1] = 0x02;
	joined[2] = 0x03;
	joined[3] = 0x04;
	memcpy(joined + 4, page, sizeof(page));
	assert_int_equal(ltx_checksum_page(0x01020304, page, sizeof(page)),
			 tu_crc64_bitwise(0, joined, sizeof(joined)) |
				 (UINT64_C(1) << 63));
}

static void test_lock_pgno(void **state)
{
	(void)state;
	assert_int_equal(ltx_lock_pgno(512), 2097153);
	assert_int_equal(ltx_lock_pgno(1024), 1048577);
	assert_int_equal(ltx_lock_pgno(4096), 262145);
	assert_int_equal(ltx_lock_pgno(65536), 16385);
	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		uint64_t first = (uint64_t)(ltx_lock_pgno(ps) - 1) * ps;
		/* The lock page is the page holding byte 0x40000000. */
		assert_true(first <= LTX_PENDING_BYTE);
		assert_true(LTX_PENDING_BYTE < first + ps);
	}
}

static void test_checksum_xor(void **state)
{
	uint64_t a = UINT64_C(0x8123456789abcdef);
	uint64_t b = UINT64_C(0xfedcba9876543210);
	uint64_t db = LTX_CHECKSUM_EMPTY;

	(void)state;
	assert_int_equal(LTX_CHECKSUM_EMPTY, UINT64_C(0x8000000000000000));
	db = ltx_checksum_xor(db, a);
	assert_true(db & LTX_CHECKSUM_FLAG);
	db = ltx_checksum_xor(db, b);
	assert_true(db & LTX_CHECKSUM_FLAG);
	/* Order does not matter. */
	assert_int_equal(db, ltx_checksum_xor(ltx_checksum_xor(
				     LTX_CHECKSUM_EMPTY, b), a));
	/* XORing a page out again restores the previous value. */
	assert_int_equal(ltx_checksum_xor(db, b),
			 ltx_checksum_xor(LTX_CHECKSUM_EMPTY, a));
	assert_int_equal(ltx_checksum_xor(ltx_checksum_xor(db, b), a),
			 LTX_CHECKSUM_EMPTY);
	/* The low 63 bits are the plain XOR. */
	assert_int_equal(db & ~LTX_CHECKSUM_FLAG, (a ^ b) & ~LTX_CHECKSUM_FLAG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_value),
		cmocka_unit_test(test_impl_name),
		cmocka_unit_test(test_empty_input),
		cmocka_unit_test(test_slicing_matches_bitwise),
		cmocka_unit_test(test_slicing_large_buffers),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_detects_single_bit_flips),
		cmocka_unit_test(test_page_checksum),
		cmocka_unit_test(test_page_checksum_byte_order),
		cmocka_unit_test(test_lock_pgno),
		cmocka_unit_test(test_checksum_xor),
	};

	return cmocka_run_group_tests_name("ltx/checksum", tests, NULL, NULL);
}
