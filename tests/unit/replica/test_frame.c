/*
 * replica/frame.c: the frames of the replication stream (frame.h). Each
 * kind is written with the payload writer, parsed back (whole, byte by
 * byte, several in one buffer) and read with the payload cursor; a
 * frame cut short yields nothing until its last byte; each rule of the
 * header (F1 type, F2 flags, F3 length) fails with -EPROTO and says which;
 * the payload readers (rule F4) take each kind's payload whole and refuse
 * a short, long or out-of-range one; the cursor marks a short or
 * malformed payload bad instead of reading past it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/bytes.h"
#include "replica/frame.h"

#define EPOCH 0x0102030405060708ULL

/* A frame of type with payload p[len] into out; returns its size. */
static size_t put_frame(uint8_t *out, uint8_t type, const uint8_t *p,
			uint32_t len)
{
	rep_frame_put_header(out, type, len, EPOCH);
	if (len)
		memcpy(out + REP_FRAME_HEADER_SIZE, p, len);
	return REP_FRAME_HEADER_SIZE + len;
}

/* Feeds buf[n] in pieces of step bytes; returns the frame (and checks
 * that it came with the last byte). */
static rep_frame feed_in_steps(rep_parser *ps, const uint8_t *buf, size_t n,
			       size_t step)
{
	rep_frame f = {0};
	size_t off = 0;

	while (off < n) {
		size_t take = n - off < step ? n - off : step, used = 0;
		int rc = rep_parser_feed(ps, buf + off, take, &used, &f);
		assert_true(rc == 0 || rc == 1);
		off += used;
		if (rc == 1) {
			assert_int_equal(off, n);
			return f;
		}
		assert_int_equal(used, take);
	}
	fail_msg("no frame after %zu bytes", n);
	return f;
}

static void check_hello(const rep_frame *f)
{
	rep_cursor k = {f->payload, f->len, false};
	char url[64];

	assert_int_equal(f->type, REP_FRAME_HELLO);
	assert_true(f->epoch == EPOCH);
	assert_true(rep_get_u64(&k) == 0xc1);
	assert_true(rep_get_u64(&k) == 0xa7);
	rep_get_str(&k, url, sizeof(url));
	assert_string_equal(url, "http://node0:20202");
	assert_false(k.bad);
	assert_int_equal(k.left, 0);
}

static void test_every_kind(void **state)
{
	uint8_t payload[512], buf[1024], data[300];
	rep_writer w = {payload, 0, sizeof(payload), false};
	rep_parser ps;
	rep_frame f;
	rep_cursor k;
	char name[REP_NAME_MAX + 1];
	size_t n;

	(void)state;
	assert_int_equal(rep_parser_init(&ps), 0);

	/* HELLO: cluster, node, URL. */
	rep_put_u64(&w, 0xc1);
	rep_put_u64(&w, 0xa7);
	rep_put_str(&w, "http://node0:20202");
	n = put_frame(buf, REP_FRAME_HELLO, payload, (uint32_t)w.len);
	f = feed_in_steps(&ps, buf, n, n);
	check_hello(&f);

	/* BEGIN: name, length, min, max, kind. */
	w = (rep_writer){payload, 0, sizeof(payload), false};
	rep_put_str(&w, "app.db");
	rep_put_u64(&w, 4096);
	rep_put_u64(&w, 7);
	rep_put_u64(&w, 9);
	rep_put_u8(&w, 1);
	n = put_frame(buf, REP_FRAME_BEGIN, payload, (uint32_t)w.len);
	f = feed_in_steps(&ps, buf, n, 1);
	assert_int_equal(f.type, REP_FRAME_BEGIN);
	k = (rep_cursor){f.payload, f.len, false};
	rep_get_str(&k, name, sizeof(name));
	assert_string_equal(name, "app.db");
	assert_true(rep_get_u64(&k) == 4096);
	assert_true(rep_get_u64(&k) == 7);
	assert_true(rep_get_u64(&k) == 9);
	assert_int_equal(rep_get_u8(&k), 1);
	assert_false(k.bad);
	assert_int_equal(k.left, 0);

	/* DATA: bytes as they are. */
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	n = put_frame(buf, REP_FRAME_DATA, data, sizeof(data));
	f = feed_in_steps(&ps, buf, n, 7);
	assert_int_equal(f.type, REP_FRAME_DATA);
	assert_int_equal(f.len, sizeof(data));
	assert_memory_equal(f.payload, data, sizeof(data));

	/* END: the length again. */
	w = (rep_writer){payload, 0, sizeof(payload), false};
	rep_put_u64(&w, 4096);
	n = put_frame(buf, REP_FRAME_END, payload, (uint32_t)w.len);
	f = feed_in_steps(&ps, buf, n, 3);
	assert_int_equal(f.type, REP_FRAME_END);
	k = (rep_cursor){f.payload, f.len, false};
	assert_true(rep_get_u64(&k) == 4096);

	/* HEARTBEAT: clock, count, (name, TXID, checksum)... */
	w = (rep_writer){payload, 0, sizeof(payload), false};
	rep_put_u64(&w, 1700000000000ULL);
	rep_put_u32(&w, 2);
	rep_put_str(&w, "a.db");
	rep_put_u64(&w, 1);
	rep_put_u64(&w, 0xaa);
	rep_put_str(&w, "b.db");
	rep_put_u64(&w, 2);
	rep_put_u64(&w, 0xbb);
	n = put_frame(buf, REP_FRAME_HEARTBEAT, payload, (uint32_t)w.len);
	f = feed_in_steps(&ps, buf, n, 16);
	assert_int_equal(f.type, REP_FRAME_HEARTBEAT);
	k = (rep_cursor){f.payload, f.len, false};
	assert_true(rep_get_u64(&k) == 1700000000000ULL);
	assert_int_equal(rep_get_u32(&k), 2);
	rep_get_str(&k, name, sizeof(name));
	assert_string_equal(name, "a.db");
	assert_true(rep_get_u64(&k) == 1 && rep_get_u64(&k) == 0xaa);
	rep_get_str(&k, name, sizeof(name));
	assert_string_equal(name, "b.db");
	assert_true(rep_get_u64(&k) == 2 && rep_get_u64(&k) == 0xbb);
	assert_false(k.bad);
	assert_int_equal(k.left, 0);

	/* READY: empty. */
	n = put_frame(buf, REP_FRAME_READY, NULL, 0);
	f = feed_in_steps(&ps, buf, n, 5);
	assert_int_equal(f.type, REP_FRAME_READY);
	assert_int_equal(f.len, 0);
	rep_parser_free(&ps);
}

/* Several frames in one buffer come out one by one. */
static void test_back_to_back(void **state)
{
	uint8_t buf[256];
	rep_parser ps;
	rep_frame f;
	size_t n = 0, off = 0, used;
	uint8_t types[] = {REP_FRAME_READY, REP_FRAME_DATA, REP_FRAME_READY};

	(void)state;
	assert_int_equal(rep_parser_init(&ps), 0);
	n += put_frame(buf + n, REP_FRAME_READY, NULL, 0);
	n += put_frame(buf + n, REP_FRAME_DATA, (const uint8_t *)"xyz", 3);
	n += put_frame(buf + n, REP_FRAME_READY, NULL, 0);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(rep_parser_feed(&ps, buf + off, n - off, &used,
						 &f), 1);
		assert_int_equal(f.type, types[i]);
		off += used;
	}
	assert_int_equal(off, n);
	assert_int_equal(rep_parser_feed(&ps, buf + off, 0, &used, &f), 0);
	rep_parser_free(&ps);
}

/* A frame cut short (header or payload) gives nothing; its rest does. */
static void test_truncated(void **state)
{
	uint8_t buf[64];
	rep_parser ps;
	rep_frame f;
	size_t n, used;

	(void)state;
	assert_int_equal(rep_parser_init(&ps), 0);
	n = put_frame(buf, REP_FRAME_END, (const uint8_t *)"12345678", 8);
	assert_int_equal(rep_parser_feed(&ps, buf, 10, &used, &f), 0);
	assert_int_equal(used, 10);
	assert_int_equal(rep_parser_feed(&ps, buf + 10, n - 11, &used, &f), 0);
	assert_int_equal(rep_parser_feed(&ps, buf + n - 1, 1, &used, &f), 1);
	assert_int_equal(f.type, REP_FRAME_END);
	assert_memory_equal(f.payload, "12345678", 8);
	rep_parser_free(&ps);
}

static void expect_rule(uint8_t *hdr, const char *rule)
{
	rep_parser ps;
	rep_frame f;
	size_t used;

	assert_int_equal(rep_parser_init(&ps), 0);
	assert_int_equal(rep_parser_feed(&ps, hdr, REP_FRAME_HEADER_SIZE,
					 &used, &f), -EPROTO);
	assert_non_null(strstr(ps.err, rule));
	rep_parser_free(&ps);
}

/* Header rules: F1 a known type, F2 flags and reserved zero, F3 the
 * length within its limit (oversized frames are refused from their
 * header, before any payload is taken). */
static void test_header_rules(void **state)
{
	uint8_t h[REP_FRAME_HEADER_SIZE];

	(void)state;
	rep_frame_put_header(h, 0, 0, EPOCH);
	expect_rule(h, "(rule F1)");
	rep_frame_put_header(h, REP_FRAME_READY + 1, 0, EPOCH);
	expect_rule(h, "(rule F1)");
	rep_frame_put_header(h, REP_FRAME_READY, 0, EPOCH);
	h[1] = 1;
	expect_rule(h, "(rule F2)");
	rep_frame_put_header(h, REP_FRAME_READY, 0, EPOCH);
	put_be16(h + 2, 1);
	expect_rule(h, "(rule F2)");
	rep_frame_put_header(h, REP_FRAME_HEARTBEAT, REP_FRAME_MAX_PAYLOAD + 1,
			     EPOCH);
	expect_rule(h, "(rule F3)");
	rep_frame_put_header(h, REP_FRAME_DATA, REP_FRAME_DATA_MAX + 1, EPOCH);
	expect_rule(h, "(rule F3)");
	rep_frame_put_header(h, REP_FRAME_HELLO, 0xffffffffu, EPOCH);
	expect_rule(h, "(rule F3)");
}

/* The largest frames allowed pass. */
static void test_largest(void **state)
{
	uint8_t *buf = calloc(1, REP_FRAME_HEADER_SIZE + REP_FRAME_MAX_PAYLOAD);
	rep_parser ps;
	rep_frame f;

	(void)state;
	assert_non_null(buf);
	assert_int_equal(rep_parser_init(&ps), 0);
	rep_frame_put_header(buf, REP_FRAME_HEARTBEAT, REP_FRAME_MAX_PAYLOAD,
			     EPOCH);
	f = feed_in_steps(&ps, buf, REP_FRAME_HEADER_SIZE +
				    REP_FRAME_MAX_PAYLOAD, 65536);
	assert_int_equal(f.len, REP_FRAME_MAX_PAYLOAD);
	rep_frame_put_header(buf, REP_FRAME_DATA, REP_FRAME_DATA_MAX, EPOCH);
	f = feed_in_steps(&ps, buf, REP_FRAME_HEADER_SIZE + REP_FRAME_DATA_MAX,
			  100000);
	assert_int_equal(f.len, REP_FRAME_DATA_MAX);
	rep_parser_free(&ps);
	free(buf);
}

/* Payload readers never read past the payload. */
static void test_cursor(void **state)
{
	uint8_t p[16];
	rep_cursor k;
	char s[8];

	(void)state;
	memset(p, 0xab, sizeof(p));
	k = (rep_cursor){p, 3, false};
	assert_true(rep_get_u64(&k) == 0);
	assert_true(k.bad);
	assert_int_equal(rep_get_u8(&k), 0); /* stays bad */

	/* A string longer than the room for it. */
	put_be16(p, 8);
	memcpy(p + 2, "abcdefgh", 8);
	k = (rep_cursor){p, 10, false};
	rep_get_str(&k, s, sizeof(s));
	assert_true(k.bad);
	assert_string_equal(s, "");
	/* One that claims more bytes than there are. */
	put_be16(p, 12);
	k = (rep_cursor){p, 10, false};
	rep_get_str(&k, s, sizeof(s));
	assert_true(k.bad);
	/* One with a NUL inside. */
	put_be16(p, 3);
	memcpy(p + 2, "a\0b", 3);
	k = (rep_cursor){p, 5, false};
	rep_get_str(&k, s, sizeof(s));
	assert_true(k.bad);
	/* The empty string. */
	put_be16(p, 0);
	k = (rep_cursor){p, 2, false};
	rep_get_str(&k, s, sizeof(s));
	assert_false(k.bad);
	assert_string_equal(s, "");
}

/* The writer stops at its capacity and says so. */
static void test_writer_full(void **state)
{
	uint8_t p[10];
	rep_writer w = {p, 0, sizeof(p), false};

	(void)state;
	rep_put_u64(&w, 1);
	assert_false(w.full);
	rep_put_u32(&w, 2);
	assert_true(w.full);
	assert_int_equal(w.len, 8);
	w = (rep_writer){p, 0, sizeof(p), false};
	rep_put_str(&w, "0123456789");
	assert_true(w.full);
}

static rep_frame frame_of(uint8_t type, const rep_writer *w)
{
	return (rep_frame){type, EPOCH, w->p, (uint32_t)w->len};
}

static void test_payload_readers(void **state)
{
	uint8_t p[2048];
	rep_writer w = {p, 0, sizeof(p), false};
	rep_frame f;
	rep_hello hello;
	rep_begin b;
	rep_heartbeat hb;
	char name[REP_NAME_MAX + 1], big[REP_URL_MAX + 2];
	uint64_t txid, ck, len;

	(void)state;
	rep_put_u64(&w, 1);
	rep_put_u64(&w, 2);
	rep_put_str(&w, "http://x");
	f = frame_of(REP_FRAME_HELLO, &w);
	assert_int_equal(rep_frame_read_hello(&f, &hello), 0);
	assert_string_equal(hello.url, "http://x");
	f.len--; /* short */
	assert_int_equal(rep_frame_read_hello(&f, &hello), -EPROTO);
	assert_int_equal(hello.hops, 0);
	assert_true(hello.primary == 2);
	rep_put_u8(&w, 0); /* one byte left over */
	f = frame_of(REP_FRAME_HELLO, &w);
	assert_int_equal(rep_frame_read_hello(&f, &hello), -EPROTO);
	/* A replica's HELLO (cascade.h): hops 1 and the primary's ID. */
	w.len--;
	rep_put_u8(&w, 1);
	rep_put_u64(&w, 7);
	f = frame_of(REP_FRAME_HELLO, &w);
	assert_int_equal(rep_frame_read_hello(&f, &hello), 0);
	assert_int_equal(hello.hops, 1);
	assert_true(hello.primary == 7 && hello.node == 2);
	rep_put_u8(&w, 0); /* one byte left over */
	f = frame_of(REP_FRAME_HELLO, &w);
	assert_int_equal(rep_frame_read_hello(&f, &hello), -EPROTO);
	w.len -= 10;
	rep_put_u8(&w, 2); /* two hops: never served (rule C1) */
	rep_put_u64(&w, 7);
	f = frame_of(REP_FRAME_HELLO, &w);
	assert_int_equal(rep_frame_read_hello(&f, &hello), -EPROTO);
	/* A URL of 1024 bytes is too long. */
	w = (rep_writer){p, 0, sizeof(p), false};
	memset(big, 'u', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	rep_put_u64(&w, 1);
	rep_put_u64(&w, 2);
	rep_put_str(&w, big);
	f = frame_of(REP_FRAME_HELLO, &w);
	assert_int_equal(rep_frame_read_hello(&f, &hello), -EPROTO);

	/* BEGIN: each limit. */
	struct {
		const char *name;
		uint64_t len, lo, hi;
		uint8_t kind;
		int rc;
	} cases[] = {
		{"a.db", 100, 1, 1, 0, 0},
		{"a.db", 4096, 1, 5, 1, 0},
		{"", 100, 1, 1, 0, -EPROTO},
		{".a", 100, 1, 1, 0, -EPROTO},
		{"a/b", 100, 1, 1, 0, -EPROTO},
		{"a.db", 99, 1, 1, 0, -EPROTO},
		{"a.db", 100, 0, 1, 0, -EPROTO},
		{"a.db", 100, 3, 2, 0, -EPROTO},
		{"a.db", 100, 1, 1, 2, -EPROTO},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		w = (rep_writer){p, 0, sizeof(p), false};
		rep_put_str(&w, cases[i].name);
		rep_put_u64(&w, cases[i].len);
		rep_put_u64(&w, cases[i].lo);
		rep_put_u64(&w, cases[i].hi);
		rep_put_u8(&w, cases[i].kind);
		f = frame_of(REP_FRAME_BEGIN, &w);
		if (rep_frame_read_begin(&f, &b) != cases[i].rc)
			fail_msg("BEGIN case %zu", i);
	}
	/* A name of 201 bytes. */
	w = (rep_writer){p, 0, sizeof(p), false};
	memset(big, 'n', REP_NAME_MAX + 1);
	big[REP_NAME_MAX + 1] = '\0';
	rep_put_str(&w, big);
	rep_put_u64(&w, 100);
	rep_put_u64(&w, 1);
	rep_put_u64(&w, 1);
	rep_put_u8(&w, 0);
	f = frame_of(REP_FRAME_BEGIN, &w);
	assert_int_equal(rep_frame_read_begin(&f, &b), -EPROTO);

	/* END. */
	w = (rep_writer){p, 0, sizeof(p), false};
	rep_put_u64(&w, 777);
	f = frame_of(REP_FRAME_END, &w);
	assert_int_equal(rep_frame_read_end(&f, &len), 0);
	assert_true(len == 777);
	f.len = 7;
	assert_int_equal(rep_frame_read_end(&f, &len), -EPROTO);

	/* HEARTBEAT: a count that does not fit, bytes left over. */
	w = (rep_writer){p, 0, sizeof(p), false};
	rep_put_u64(&w, 5);
	rep_put_u32(&w, 2);
	rep_put_str(&w, "a.db");
	rep_put_u64(&w, 1);
	rep_put_u64(&w, 2);
	f = frame_of(REP_FRAME_HEARTBEAT, &w);
	assert_int_equal(rep_frame_read_heartbeat(&f, &hb), 0);
	assert_int_equal(hb.wall_ms, 5);
	assert_int_equal(rep_frame_heartbeat_next(&hb, name, &txid, &ck), 1);
	assert_string_equal(name, "a.db");
	assert_int_equal(rep_frame_heartbeat_next(&hb, name, &txid, &ck),
			 -EPROTO);
	w = (rep_writer){p, 0, sizeof(p), false};
	rep_put_u64(&w, 5);
	rep_put_u32(&w, 0);
	rep_put_u8(&w, 9);
	f = frame_of(REP_FRAME_HEARTBEAT, &w);
	assert_int_equal(rep_frame_read_heartbeat(&f, &hb), 0);
	assert_int_equal(rep_frame_heartbeat_next(&hb, name, &txid, &ck),
			 -EPROTO);
	f.len = 11; /* no room for the count */
	assert_int_equal(rep_frame_read_heartbeat(&f, &hb), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_kind),
		cmocka_unit_test(test_back_to_back),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_header_rules),
		cmocka_unit_test(test_largest),
		cmocka_unit_test(test_cursor),
		cmocka_unit_test(test_writer_full),
		cmocka_unit_test(test_payload_readers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
