/* Tests for ltx/pos.c: positions "%016x/%016x" and file names
 * "%016x-%016x.ltx", formatted and parsed strictly. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/pos.h"

static void test_pos_format(void **state)
{
	char buf[LTX_POS_STRLEN + 8];

	(void)state;
	memset(buf, 'Z', sizeof(buf));
	ltx_pos_format((ltx_pos){1, UINT64_C(0xfe3831a381c602b9)}, buf);
	assert_string_equal(buf, "0000000000000001/fe3831a381c602b9");
	assert_int_equal(strlen(buf), LTX_POS_STRLEN);
	/* Nothing written beyond the terminator. */
	assert_int_equal(buf[LTX_POS_STRLEN + 1], 'Z');
	ltx_pos_format((ltx_pos){0, 0}, buf);
	assert_string_equal(buf, "0000000000000000/0000000000000000");
	ltx_pos_format((ltx_pos){UINT64_MAX, UINT64_C(0xABCDEF0123456789)},
		       buf);
	assert_string_equal(buf, "ffffffffffffffff/abcdef0123456789");
}

static void test_pos_roundtrip(void **state)
{
	static const uint64_t vals[] = {0, 1, 0xd, UINT64_C(0x8000000000000000),
					UINT64_C(0x0123456789abcdef),
					UINT64_MAX};
	char buf[LTX_POS_STRLEN + 1];

	(void)state;
	for (size_t i = 0; i < 6; i++) {
		for (size_t j = 0; j < 6; j++) {
			ltx_pos p = {vals[i], vals[j]}, q = {7, 7};
			ltx_pos_format(p, buf);
			assert_int_equal(ltx_pos_parse(buf, &q), 0);
			assert_int_equal(q.txid, p.txid);
			assert_int_equal(q.checksum, p.checksum);
		}
	}
}

static void test_pos_parse_upper_case(void **state)
{
	ltx_pos p;

	(void)state;
	assert_int_equal(ltx_pos_parse("00000000000000AB/FE3831A381C602B9",
				       &p), 0);
	assert_int_equal(p.txid, 0xab);
	assert_int_equal(p.checksum, UINT64_C(0xfe3831a381c602b9));
}

static void test_pos_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"0",
		"0000000000000001",
		"0000000000000001/",
		"0000000000000001/fe3831a381c602b",    /* 15 digits */
		"0000000000000001/fe3831a381c602b90",  /* 17 digits */
		"000000000000001/fe3831a381c602b90",   /* 15 then 17 */
		"0000000000000001-fe3831a381c602b9",   /* wrong separator */
		"0000000000000001 fe3831a381c602b9",
		"0000000000000001/fe3831a381c602bg",   /* not hex */
		"000000000000000x/fe3831a381c602b9",
		"0x00000000000001/fe3831a381c602b9",
		" 000000000000001/fe3831a381c602b9",
		"+000000000000001/fe3831a381c602b9",
		"-000000000000001/fe3831a381c602b9",
		"0000000000000001/fe3831a381c602b9\n",
		"0000000000000001/fe3831a381c602b9/",
		"0000000000000001//e3831a381c602b9",
	};
	ltx_pos p = {5, 6};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ltx_pos_parse(bad[i], &p) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
		/* Untouched on failure. */
		assert_int_equal(p.txid, 5);
		assert_int_equal(p.checksum, 6);
	}
}

static void test_filename_format(void **state)
{
	char buf[LTX_FILENAME_STRLEN + 8];

	(void)state;
	memset(buf, 'Z', sizeof(buf));
	ltx_filename_format(0xd, 0xd, buf);
	assert_string_equal(buf, "000000000000000d-000000000000000d.ltx");
	assert_int_equal(strlen(buf), LTX_FILENAME_STRLEN);
	assert_int_equal(buf[LTX_FILENAME_STRLEN + 1], 'Z');
	ltx_filename_format(1, UINT64_MAX, buf);
	assert_string_equal(buf, "0000000000000001-ffffffffffffffff.ltx");
}

static void test_filename_roundtrip(void **state)
{
	char buf[LTX_FILENAME_STRLEN + 1];
	uint64_t lo = 0, hi = 0;

	(void)state;
	for (uint64_t v = 1; v != 0; v <<= 3) {
		ltx_filename_format(v, v * 2 + 1, buf);
		assert_int_equal(ltx_filename_parse(buf, &lo, &hi), 0);
		assert_int_equal(lo, v);
		assert_int_equal(hi, v * 2 + 1);
	}
	/* The LiteFS peer file's name, without its "litefs-" prefix. */
	{
		static const char peer[] =
			"litefs-000000000000000d-000000000000000d.ltx";
		assert_int_equal(ltx_filename_parse(&peer[7], &lo, &hi), 0);
	}
	assert_int_equal(lo, 0xd);
	assert_int_equal(hi, 0xd);
}

static void test_filename_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		".ltx",
		"000000000000000d-000000000000000d",
		"000000000000000d-000000000000000d.lt",
		"000000000000000d-000000000000000d.ltxx",
		"000000000000000d-000000000000000d.LTX",
		"000000000000000d-000000000000000d.tmp",
		"000000000000000d_000000000000000d.ltx",
		"000000000000000d/000000000000000d.ltx",
		"00000000000000d-0000000000000000d.ltx",
		"000000000000000g-000000000000000d.ltx",
		"000000000000000d-00000000000000 d.ltx",
		"0000000000000001-0000000000000002.ltx.tmp",
		"x000000000000001-0000000000000002.ltx",
	};
	uint64_t lo = 5, hi = 6;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ltx_filename_parse(bad[i], &lo, &hi) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_int_equal(lo, 5);
		assert_int_equal(hi, 6);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pos_format),
		cmocka_unit_test(test_pos_roundtrip),
		cmocka_unit_test(test_pos_parse_upper_case),
		cmocka_unit_test(test_pos_parse_rejects),
		cmocka_unit_test(test_filename_format),
		cmocka_unit_test(test_filename_roundtrip),
		cmocka_unit_test(test_filename_parse_rejects),
	};

	return cmocka_run_group_tests_name("ltx/pos", tests, NULL, NULL);
}
