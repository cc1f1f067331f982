/* Tests for ltx/format.c: header and trailer layout, rules H1..H10 with
 * one error kind each, and error reporting. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/checksum.h"
#include "ltx/ltx.h"
#include "tests/unit/testutil.h"

static ltx_header full_header(void)
{
	ltx_header h;

	memset(&h, 0, sizeof(h));
	h.flags = LTX_FLAG_COMPRESS_ZSTD;
	h.page_size = 4096;
	h.commit = 0x01020304;
	h.min_txid = UINT64_C(0x1112131415161718);
	h.max_txid = UINT64_C(0x2122232425262728);
	h.timestamp = -INT64_C(0x0102030405060708);
	h.pre_apply_checksum = UINT64_C(0x8132333435363738);
	h.wal_offset = UINT64_C(0x4142434445464748);
	h.wal_size = UINT64_C(0x5152535455565758);
	h.wal_salt1 = 0x61626364;
	h.wal_salt2 = 0x71727374;
	h.node_id = UINT64_C(0x8182838485868788);
	return h;
}

static void expect_be(const uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		assert_int_equal(p[i], (uint8_t)(v >> (8 * (n - 1 - i))));
}

/* Every field lands at its LTX.md offset, big-endian. */
static void test_header_layout(void **state)
{
	ltx_header h = full_header();
	uint8_t buf[LTX_HEADER_SIZE + 1];

	(void)state;
	memset(buf, 0xEE, sizeof(buf));
	ltx_header_encode(&h, buf);
	assert_memory_equal(buf, "LTX1", 4);
	expect_be(buf + 4, h.flags, 4);
	expect_be(buf + 8, h.page_size, 4);
	expect_be(buf + 12, h.commit, 4);
	expect_be(buf + 16, h.min_txid, 8);
	expect_be(buf + 24, h.max_txid, 8);
	expect_be(buf + 32, (uint64_t)h.timestamp, 8);
	expect_be(buf + 40, h.pre_apply_checksum, 8);
	expect_be(buf + 48, h.wal_offset, 8);
	expect_be(buf + 56, h.wal_size, 8);
	expect_be(buf + 64, h.wal_salt1, 4);
	expect_be(buf + 68, h.wal_salt2, 4);
	expect_be(buf + 72, h.node_id, 8);
	for (int i = 80; i < LTX_HEADER_SIZE; i++)
		assert_int_equal(buf[i], 0);
	/* Nothing written past the header. */
	assert_int_equal(buf[LTX_HEADER_SIZE], 0xEE);
}

static void test_header_roundtrip(void **state)
{
	ltx_header h = full_header();
	ltx_header out;
	ltx_err err = {0};
	uint8_t buf[LTX_HEADER_SIZE];

	(void)state;
	ltx_header_encode(&h, buf);
	memset(&out, 0xAB, sizeof(out));
	assert_int_equal(ltx_header_decode(buf, &out, &err), 0);
	assert_int_equal(out.flags, h.flags);
	assert_int_equal(out.page_size, h.page_size);
	assert_int_equal(out.commit, h.commit);
	assert_int_equal(out.min_txid, h.min_txid);
	assert_int_equal(out.max_txid, h.max_txid);
	assert_true(out.timestamp == h.timestamp);
	assert_int_equal(out.pre_apply_checksum, h.pre_apply_checksum);
	assert_int_equal(out.wal_offset, h.wal_offset);
	assert_int_equal(out.wal_size, h.wal_size);
	assert_int_equal(out.wal_salt1, h.wal_salt1);
	assert_int_equal(out.wal_salt2, h.wal_salt2);
	assert_int_equal(out.node_id, h.node_id);
}

static void test_header_valid_variants(void **state)
{
	ltx_err err = {0};
	uint8_t buf[LTX_HEADER_SIZE];

	(void)state;
	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		for (int snap = 0; snap < 2; snap++) {
			ltx_header h = tu_header(snap ? 0 : 0x4, ps, 3,
						 snap ? 1 : 9, 0x1234);
			ltx_header out;
			ltx_header_encode(&h, buf);
			assert_int_equal(ltx_header_validate(&h, &err), 0);
			assert_int_equal(ltx_header_decode(buf, &out, &err), 0);
			assert_int_equal(out.page_size, ps);
		}
	}
	/* commit 0 (database deleted) and the largest commit allowed. */
	{
		ltx_header h = tu_header(0, 65536, 0, 5, 1);
		assert_int_equal(ltx_header_validate(&h, &err), 0);
		h.commit = UINT32_C(0x80000000);
		assert_int_equal(ltx_header_validate(&h, &err), 0);
		h.page_size = 32768;
		h.commit = UINT32_MAX;
		assert_int_equal(ltx_header_validate(&h, &err), 0);
	}
	/* WAL fields with both offset and size, salts allowed. */
	{
		ltx_header h = tu_header(0, 4096, 3, 5, 1);
		h.wal_offset = 32;
		h.wal_size = 4096 + 24;
		h.wal_salt1 = 1;
		h.wal_salt2 = 2;
		assert_int_equal(ltx_header_validate(&h, &err), 0);
	}
}

/* One violation per row: the header starts valid, mutate() breaks one
 * rule, and decode must report exactly that kind, at that offset, with
 * a message naming the field. */
struct violation {
	const char *rule;
	void (*mutate)(uint8_t *buf);
	int kind;
	int rc;
	int64_t offset;
	const char *field;
};

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static void m_magic(uint8_t *b) { b[3] = '2'; }
static void m_magic_case(uint8_t *b) { b[0] = 'l'; }
static void m_flags_unknown(uint8_t *b) { put32(b + 4, 0x2); }
static void m_flags_high(uint8_t *b) { put32(b + 4, 0x80000004); }
static void m_flags_lz4(uint8_t *b) { put32(b + 4, 0x1); }
static void m_flags_both(uint8_t *b) { put32(b + 4, 0x5); }
static void m_ps_zero(uint8_t *b) { put32(b + 8, 0); }
static void m_ps_256(uint8_t *b) { put32(b + 8, 256); }
static void m_ps_odd(uint8_t *b) { put32(b + 8, 1000); }
static void m_ps_1536(uint8_t *b) { put32(b + 8, 1536); }
static void m_ps_big(uint8_t *b) { put32(b + 8, 131072); }
static void m_ps_max(uint8_t *b) { put32(b + 8, UINT32_MAX); }
static void m_min_zero(uint8_t *b)
{
	put64(b + 16, 0);
	put64(b + 24, 0);
}
static void m_max_lt_min(uint8_t *b)
{
	put64(b + 16, 10);
	put64(b + 24, 9);
}
static void m_snap_pre(uint8_t *b)
{
	put64(b + 16, 1);
	put64(b + 24, 1);
	put64(b + 40, UINT64_C(0x8000000000000001));
}
static void m_pre_nobit(uint8_t *b) { put64(b + 40, 0x1234); }
static void m_pre_zero(uint8_t *b) { put64(b + 40, 0); }
static void m_wal_off_only(uint8_t *b) { put64(b + 48, 32); }
static void m_wal_size_only(uint8_t *b) { put64(b + 56, 4096); }
static void m_salt1(uint8_t *b) { put32(b + 64, 1); }
static void m_salt2(uint8_t *b) { put32(b + 68, 0x80000000); }
static void m_reserved80(uint8_t *b) { b[80] = 1; }
static void m_reserved99(uint8_t *b) { b[99] = 0x80; }
static void m_commit(uint8_t *b)
{
	put32(b + 8, 65536);
	put32(b + 12, 0x80000001);
}

static const struct violation violations[] = {
	{"H1", m_magic, LTX_ERR_MAGIC, -EBADMSG, 0, "magic"},
	{"H1", m_magic_case, LTX_ERR_MAGIC, -EBADMSG, 0, "magic"},
	{"H2", m_flags_unknown, LTX_ERR_FLAGS, -EBADMSG, 4, "flags"},
	{"H2", m_flags_high, LTX_ERR_FLAGS, -EBADMSG, 4, "flags"},
	{"H2", m_flags_lz4, LTX_ERR_UNSUPPORTED, -ENOTSUP, 4, "LZ4"},
	{"H2", m_flags_both, LTX_ERR_UNSUPPORTED, -ENOTSUP, 4, "LZ4"},
	{"H3", m_ps_zero, LTX_ERR_PAGE_SIZE, -EBADMSG, 8, "page size"},
	{"H3", m_ps_256, LTX_ERR_PAGE_SIZE, -EBADMSG, 8, "page size"},
	{"H3", m_ps_odd, LTX_ERR_PAGE_SIZE, -EBADMSG, 8, "page size"},
	{"H3", m_ps_1536, LTX_ERR_PAGE_SIZE, -EBADMSG, 8, "page size"},
	{"H3", m_ps_big, LTX_ERR_PAGE_SIZE, -EBADMSG, 8, "page size"},
	{"H3", m_ps_max, LTX_ERR_PAGE_SIZE, -EBADMSG, 8, "page size"},
	{"H4", m_min_zero, LTX_ERR_MIN_TXID, -EBADMSG, 16, "min TXID"},
	{"H5", m_max_lt_min, LTX_ERR_MAX_TXID, -EBADMSG, 24, "max TXID"},
	{"H6", m_snap_pre, LTX_ERR_PRE_APPLY, -EBADMSG, 40, "pre-apply"},
	{"H6", m_pre_nobit, LTX_ERR_PRE_APPLY, -EBADMSG, 40, "pre-apply"},
	{"H6", m_pre_zero, LTX_ERR_PRE_APPLY, -EBADMSG, 40, "pre-apply"},
	{"H7", m_wal_off_only, LTX_ERR_WAL_RANGE, -EBADMSG, 48, "WAL offset"},
	{"H7", m_wal_size_only, LTX_ERR_WAL_RANGE, -EBADMSG, 48, "WAL offset"},
	{"H8", m_salt1, LTX_ERR_WAL_SALT, -EBADMSG, 64, "WAL salt"},
	{"H8", m_salt2, LTX_ERR_WAL_SALT, -EBADMSG, 64, "WAL salt"},
	{"H9", m_reserved80, LTX_ERR_RESERVED, -EBADMSG, 80, "reserved"},
	{"H9", m_reserved99, LTX_ERR_RESERVED, -EBADMSG, 99, "reserved"},
	{"H10", m_commit, LTX_ERR_COMMIT, -EBADMSG, 12, "commit"},
};

#define N_VIOLATIONS (sizeof(violations) / sizeof(violations[0]))

static void check_violation(const struct violation *v)
{
	ltx_header h = tu_header(0, 4096, 3, 7, 0x55);
	ltx_header out;
	ltx_err err;
	uint8_t buf[LTX_HEADER_SIZE];
	char at[32];
	int rc;

	ltx_header_encode(&h, buf);
	v->mutate(buf);
	memset(&err, 0, sizeof(err));
	rc = ltx_header_decode(buf, &out, &err);
	if (rc != v->rc || err.kind != v->kind || err.offset != v->offset)
		fail_msg("%s (%s): rc %d kind %d (%s) offset %lld: expected "
			 "rc %d kind %d (%s) offset %lld; message \"%s\"",
			 v->rule, v->field, rc, err.kind,
			 ltx_err_kind_name(err.kind), (long long)err.offset,
			 v->rc, v->kind, ltx_err_kind_name(v->kind),
			 (long long)v->offset, err.msg);
	if (!strstr(err.msg, v->field))
		fail_msg("%s: message \"%s\" does not name \"%s\"", v->rule,
			 err.msg, v->field);
	snprintf(at, sizeof(at), "at byte %lld", (long long)v->offset);
	if (!strstr(err.msg, at))
		fail_msg("%s: message \"%s\" does not give \"%s\"", v->rule,
			 err.msg, at);
	/* The kind's name leads the message. */
	assert_ptr_equal(strstr(err.msg, ltx_err_kind_name(v->kind)), err.msg);
}

static void test_header_violations(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_VIOLATIONS; i++)
		check_violation(&violations[i]);
}

/* H3 exhaustively: every power of two is checked, and every other value
 * around them. */
static void test_page_size_rule(void **state)
{
	ltx_err err;

	(void)state;
	for (int shift = 0; shift < 32; shift++) {
		uint32_t ps = UINT32_C(1) << shift;
		ltx_header h = tu_header(0, ps, 3, 7, 1);
		int want = ps >= 512 && ps <= 65536 ? 0 : -EBADMSG;
		assert_int_equal(ltx_header_validate(&h, &err), want);
		if (want)
			assert_int_equal(err.kind, LTX_ERR_PAGE_SIZE);
		h.page_size = ps + 1;
		if (h.page_size > 2) {
			assert_int_equal(ltx_header_validate(&h, &err),
					 -EBADMSG);
			assert_int_equal(err.kind, LTX_ERR_PAGE_SIZE);
		}
	}
}

/* H2: each unknown bit alone is LTX_ERR_FLAGS; 0x1 is unsupported. */
static void test_flag_bits(void **state)
{
	ltx_err err;

	(void)state;
	for (int bit = 0; bit < 32; bit++) {
		ltx_header h = tu_header(UINT32_C(1) << bit, 4096, 3, 7, 1);
		int rc = ltx_header_validate(&h, &err);
		if (bit == 2) {
			assert_int_equal(rc, 0);
		} else if (bit == 0) {
			assert_int_equal(rc, -ENOTSUP);
			assert_int_equal(err.kind, LTX_ERR_UNSUPPORTED);
			assert_non_null(strstr(err.msg, "unsupported"));
		} else {
			assert_int_equal(rc, -EBADMSG);
			assert_int_equal(err.kind, LTX_ERR_FLAGS);
			assert_non_null(strstr(err.msg, "unknown flags"));
		}
	}
}

/* Each rule H1..H10 has a kind of its own. */
static void test_kinds_distinct_per_rule(void **state)
{
	static const char *const rules[] = {"H1", "H2", "H3", "H4", "H5",
					    "H6", "H7", "H8", "H9", "H10"};
	int kinds[10];

	(void)state;
	for (size_t r = 0; r < 10; r++) {
		kinds[r] = -1;
		for (size_t i = 0; i < N_VIOLATIONS; i++) {
			if (strcmp(violations[i].rule, rules[r]) != 0 ||
			    violations[i].kind == LTX_ERR_UNSUPPORTED)
				continue;
			if (kinds[r] == -1)
				kinds[r] = violations[i].kind;
			assert_int_equal(violations[i].kind, kinds[r]);
		}
		assert_int_not_equal(kinds[r], -1);
		for (size_t q = 0; q < r; q++)
			assert_int_not_equal(kinds[q], kinds[r]);
		assert_int_not_equal(kinds[r], LTX_ERR_UNSUPPORTED);
	}
}

static void test_kind_names(void **state)
{
	(void)state;
	for (int k = 0; k < LTX_ERR_KIND_COUNT; k++) {
		const char *name = ltx_err_kind_name(k);
		assert_non_null(name);
		assert_string_not_equal(name, "unknown error");
		for (int j = 0; j < k; j++)
			assert_string_not_equal(name, ltx_err_kind_name(j));
	}
	assert_string_equal(ltx_err_kind_name(-1), "unknown error");
	assert_string_equal(ltx_err_kind_name(LTX_ERR_KIND_COUNT),
			    "unknown error");
	assert_non_null(strstr(ltx_err_kind_name(LTX_ERR_UNSUPPORTED),
			       "unsupported"));
	assert_non_null(strstr(ltx_err_kind_name(LTX_ERR_FLAGS),
			       "unknown flags"));
}

static void test_err_set(void **state)
{
	ltx_err err;
	char longarg[600];

	(void)state;
	assert_int_equal(ltx_err_set(NULL, LTX_OK, 0, "x"), 0);
	assert_int_equal(ltx_err_set(NULL, LTX_ERR_IO, 0, "x"), -EIO);
	assert_int_equal(ltx_err_set(NULL, LTX_ERR_NOMEM, 0, "x"), -ENOMEM);
	assert_int_equal(ltx_err_set(NULL, LTX_ERR_UNSUPPORTED, 0, "x"),
			 -ENOTSUP);
	assert_int_equal(ltx_err_set(NULL, LTX_ERR_USAGE, 0, "x"), -EINVAL);
	for (int k = LTX_ERR_TRUNCATED; k < LTX_ERR_KIND_COUNT; k++) {
		if (k == LTX_ERR_UNSUPPORTED || k == LTX_ERR_USAGE)
			continue;
		assert_int_equal(ltx_err_set(&err, k, 12345, "field %d", k),
				 -EBADMSG);
		assert_int_equal(err.kind, k);
		assert_int_equal(err.offset, 12345);
		assert_non_null(strstr(err.msg, "at byte 12345"));
	}
	/* An overlong message is cut, and stays a string. */
	memset(longarg, 'x', sizeof(longarg) - 1);
	longarg[sizeof(longarg) - 1] = '\0';
	ltx_err_set(&err, LTX_ERR_MAGIC, 7, "%s", longarg);
	assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
	assert_memory_equal(err.msg, "bad magic at byte 7: xxx", 24);
}

static void test_trailer(void **state)
{
	ltx_trailer t = {UINT64_C(0x8102030405060708),
			 UINT64_C(0x9112131415161718)};
	ltx_trailer out;
	uint8_t buf[LTX_TRAILER_SIZE];

	(void)state;
	ltx_trailer_encode(&t, buf);
	expect_be(buf, t.post_apply_checksum, 8);
	expect_be(buf + 8, t.file_checksum, 8);
	ltx_trailer_decode(buf, &out);
	assert_int_equal(out.post_apply_checksum, t.post_apply_checksum);
	assert_int_equal(out.file_checksum, t.file_checksum);
}

static void test_is_snapshot(void **state)
{
	ltx_header h = tu_header(0, 4096, 1, 1, 0);

	(void)state;
	assert_true(ltx_header_is_snapshot(&h));
	h.min_txid = 2;
	assert_false(ltx_header_is_snapshot(&h));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_layout),
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_header_valid_variants),
		cmocka_unit_test(test_header_violations),
		cmocka_unit_test(test_page_size_rule),
		cmocka_unit_test(test_flag_bits),
		cmocka_unit_test(test_kinds_distinct_per_rule),
		cmocka_unit_test(test_kind_names),
		cmocka_unit_test(test_err_set),
		cmocka_unit_test(test_trailer),
		cmocka_unit_test(test_is_snapshot),
	};

	return cmocka_run_group_tests_name("ltx/format", tests, NULL, NULL);
}
