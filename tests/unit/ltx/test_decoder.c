/* Tests for ltx/decoder.c: every single-byte corruption, truncation and
 * trailing data is caught; each page and trailer rule has its kind;
 * unsupported and unknown flags; misuse and read failures. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/checksum.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"
#include "tests/unit/testutil.h"

#define FLAG63 (UINT64_C(1) << 63)

/* A small valid file: page size 512, an increment of pages 2 and 4 of 4,
 * or a snapshot of 2 pages. */
static void small_file(int compress, int snap, tu_buf *out)
{
	static const uint32_t inc[] = {2, 4};
	static const uint32_t all[] = {1, 2};
	ltx_header h = tu_header(compress ? LTX_FLAG_COMPRESS_ZSTD : 0, 512,
				 snap ? 2 : 4, snap ? 1 : 17, 0x4242);
	ltx_err err = {0};

	assert_int_equal(tu_encode(&h, 0, snap ? all : inc, 2, 5,
				   snap ? 0 : FLAG63 | 0x99, out, NULL, &err),
			 0);
}

static int decode_kind(const uint8_t *data, size_t len, int *kind)
{
	tu_decoded d;
	int rc = tu_decode(data, len, &d);

	*kind = d.err.kind;
	return rc;
}

static void test_valid_small_files(void **state)
{
	(void)state;
	for (int compress = 0; compress < 2; compress++) {
		for (int snap = 0; snap < 2; snap++) {
			tu_buf f = TU_BUF_INIT;
			tu_decoded d;
			small_file(compress, snap, &f);
			assert_int_equal(tu_decode(f.data, f.len, &d), 0);
			assert_int_equal(d.pages, 2);
			assert_int_equal(d.hdr.page_size, 512);
			if (!compress)
				assert_int_equal(f.len, 100 + 2 * 516 + 4 + 16);
			tu_buf_free(&f);
		}
	}
}

/* Decodes a whole file into its logical bytes (header, frames,
 * terminator, trailer): what an uncompressed copy of it would hold.
 * Returns the decoder's rc. */
static int decode_logical(const uint8_t *data, size_t len, tu_buf *out)
{
	ltx_mem_reader m = {data, len, 0};
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_trailer t;
	uint8_t hdr[LTX_HEADER_SIZE];
	uint8_t page[512];
	uint32_t pgno;
	int rc;

	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "l", &dec), 0);
	rc = ltx_decoder_read_header(dec, &h);
	if (rc == 0) {
		assert_int_equal(h.page_size, 512);
		h.flags = 0;
		ltx_header_encode(&h, hdr);
		tu_buf_append(out, hdr, sizeof(hdr));
		while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1)
			tu_block_page(out, pgno, page, sizeof(page));
	}
	if (rc == 0) {
		tu_buf_append_be32(out, 0);
		rc = ltx_decoder_finish(dec, &t);
	}
	if (rc == 0) {
		tu_buf_append_be64(out, t.post_apply_checksum);
		tu_buf_append_be64(out, t.file_checksum);
	}
	ltx_decoder_free(dec);
	return rc;
}

/* Every byte XOR 0x01, 0x80 and 0xFF, in every small file.
 *
 * Uncompressed: every change is detected. Compressed: the file checksum
 * covers the logical (uncompressed) bytes, as LTX.md defines it, and a
 * few bits of a zstd frame do not change what it inflates to (the frame
 * header's unused bit and window size, reserved bits of a block's
 * sequence section); a change there cannot be detected without a checksum
 * over the compressed bytes, which the format does not have. For those
 * the test asserts the decoded file is exactly the original, header,
 * pages and trailer: no change ever yields different content unnoticed.
 * The header, the trailer and the zstd frame's magic and block contents
 * are covered, so anything outside those few bits is detected. */
static void test_every_byte_corruption(void **state)
{
	static const uint8_t masks[] = {0x01, 0xFF, 0x80};

	(void)state;
	for (int compress = 0; compress < 2; compress++) {
		for (int snap = 0; snap < 2; snap++) {
			tu_buf f = TU_BUF_INIT, orig = TU_BUF_INIT;
			uint8_t *copy;
			size_t benign = 0, detected = 0;
			small_file(compress, snap, &f);
			assert_int_equal(decode_logical(f.data, f.len, &orig),
					 0);
			copy = malloc(f.len);
			assert_non_null(copy);
			for (size_t i = 0; i < f.len; i++) {
				for (size_t m = 0; m < sizeof(masks); m++) {
					tu_buf got = TU_BUF_INIT;
					int kind;
					memcpy(copy, f.data, f.len);
					copy[i] ^= masks[m];
					if (decode_kind(copy, f.len, &kind)) {
						detected++;
						continue;
					}
					if (!compress || i < LTX_HEADER_SIZE ||
					    i >= f.len - LTX_TRAILER_SIZE)
						fail_msg("%s %s file of %zu "
							 "bytes: byte %zu ^ "
							 "0x%02x not detected",
							 compress ? "compressed"
								  : "plain",
							 snap ? "snapshot"
							      : "increment",
							 f.len, i, masks[m]);
					assert_int_equal(decode_logical(
						copy, f.len, &got), 0);
					assert_int_equal(got.len, orig.len);
					assert_memory_equal(got.data, orig.data,
							    orig.len);
					tu_buf_free(&got);
					benign++;
				}
			}
			/* Nearly everything is caught outright. */
			assert_true(benign * 50 < detected);
			if (compress)
				print_message("compressed %s, %zu bytes: %zu "
					      "changes detected, %zu inflate "
					      "to the same content\n",
					      snap ? "snapshot" : "increment",
					      f.len, detected, benign);
			free(copy);
			tu_buf_free(&f);
			tu_buf_free(&orig);
		}
	}
}

/* Every truncation length 0..len-1 is refused as truncated. */
static void test_every_truncation(void **state)
{
	(void)state;
	for (int compress = 0; compress < 2; compress++) {
		for (int snap = 0; snap < 2; snap++) {
			tu_buf f = TU_BUF_INIT;
			small_file(compress, snap, &f);
			for (size_t len = 0; len < f.len; len++) {
				int kind;
				uint8_t *copy = malloc(len + 1);
				assert_non_null(copy);
				memcpy(copy, f.data, len);
				if (decode_kind(copy, len, &kind) == 0)
					fail_msg("truncation to %zu of %zu "
						 "accepted", len, f.len);
				if (kind != LTX_ERR_TRUNCATED)
					fail_msg("truncation to %zu of %zu "
						 "(compressed %d): kind %s",
						 len, f.len, compress,
						 ltx_err_kind_name(kind));
				free(copy);
			}
			tu_buf_free(&f);
		}
	}
}

static void test_trailing_bytes(void **state)
{
	static const size_t extra[] = {1, 2, 3, 8, 16, 17, 1000};

	(void)state;
	for (int compress = 0; compress < 2; compress++) {
		tu_buf f = TU_BUF_INIT;
		small_file(compress, 0, &f);
		for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
			for (int fill = 0; fill < 2; fill++) {
				uint8_t *copy = malloc(f.len + extra[i]);
				tu_decoded d;
				assert_non_null(copy);
				memcpy(copy, f.data, f.len);
				memset(copy + f.len, fill ? 0xFF : 0, extra[i]);
				assert_int_equal(tu_decode(copy,
							   f.len + extra[i],
							   &d), -EBADMSG);
				assert_int_equal(d.err.kind, LTX_ERR_TRAILING);
				assert_int_equal(d.err.offset, f.len);
				free(copy);
			}
		}
		/* Two files back to back. */
		{
			tu_buf two = TU_BUF_INIT;
			tu_decoded d;
			tu_buf_append(&two, f.data, f.len);
			tu_buf_append(&two, f.data, f.len);
			assert_int_equal(tu_decode(two.data, two.len, &d),
					 -EBADMSG);
			assert_int_equal(d.err.kind, LTX_ERR_TRAILING);
			tu_buf_free(&two);
		}
		tu_buf_free(&f);
	}
}

/* Builds a raw file and expects one decode error. */
static void expect_raw(const ltx_header *h, const tu_buf *block,
		       uint64_t post, bool compress, int rc, int kind,
		       const char *needle)
{
	tu_buf f = TU_BUF_INIT;
	tu_decoded d;
	int got;

	tu_raw_file(h, block, post, compress, &f);
	got = tu_decode(f.data, f.len, &d);
	if (got != rc || d.err.kind != kind)
		fail_msg("rc %d kind %s (%s): expected rc %d kind %s", got,
			 ltx_err_kind_name(d.err.kind), d.err.msg, rc,
			 ltx_err_kind_name(kind));
	if (needle && !strstr(d.err.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", d.err.msg, needle);
	/* The decoder's name leads its messages. */
	if (rc)
		assert_non_null(strstr(d.err.msg, "mem: "));
	tu_buf_free(&f);
}

static void add_pages(tu_buf *block, uint32_t ps, const uint32_t *pgnos,
		      size_t n, bool terminate)
{
	uint8_t *page = malloc(ps);

	assert_non_null(page);
	for (size_t i = 0; i < n; i++) {
		tu_fill_page(page, ps, pgnos[i], 1);
		tu_block_page(block, pgnos[i], page, ps);
	}
	if (terminate)
		tu_buf_append_be32(block, 0);
	free(page);
}

static uint64_t pages_checksum(uint32_t ps, const uint32_t *pgnos, size_t n)
{
	uint8_t *page = malloc(ps);
	uint64_t sum = FLAG63;

	assert_non_null(page);
	for (size_t i = 0; i < n; i++) {
		tu_fill_page(page, ps, pgnos[i], 1);
		sum = ltx_checksum_xor(sum, tu_page_checksum_ref(pgnos[i], page,
								 ps));
	}
	free(page);
	return sum;
}

/* The raw builder is sound: a well-formed file decodes. */
static void test_raw_builder_valid(void **state)
{
	static const uint32_t pg[] = {1, 2, 3};
	ltx_header h = tu_header(0, 512, 3, 1, 0);
	tu_buf b = TU_BUF_INIT;

	(void)state;
	add_pages(&b, 512, pg, 3, true);
	expect_raw(&h, &b, pages_checksum(512, pg, 3), false, 0, LTX_OK, NULL);
	h.flags = LTX_FLAG_COMPRESS_ZSTD;
	expect_raw(&h, &b, pages_checksum(512, pg, 3), true, 0, LTX_OK, NULL);
	tu_buf_free(&b);
}

static void test_page_rules(void **state)
{
	(void)state;
	for (int z = 0; z < 2; z++) {
		uint32_t flags = z ? LTX_FLAG_COMPRESS_ZSTD : 0;
		ltx_header inc = tu_header(flags, 512, 3, 9, 1);
		ltx_header snap = tu_header(flags, 512, 3, 1, 0);
		uint64_t post = FLAG63 | 3;
		/* P1: beyond commit. */
		{
			static const uint32_t pg[] = {4};
			tu_buf b = TU_BUF_INIT;
			add_pages(&b, 512, pg, 1, true);
			expect_raw(&inc, &b, post, z, -EBADMSG, LTX_ERR_PGNO,
				   "page number 4");
			tu_buf_free(&b);
		}
		/* P3: descending, repeated. */
		{
			static const uint32_t pg[] = {3, 2};
			static const uint32_t rep[] = {2, 2};
			tu_buf b = TU_BUF_INIT;
			add_pages(&b, 512, pg, 2, true);
			expect_raw(&inc, &b, post, z, -EBADMSG,
				   LTX_ERR_PAGE_ORDER, "page 2 after page 3");
			tu_buf_free(&b);
			add_pages(&b, 512, rep, 2, true);
			expect_raw(&inc, &b, post, z, -EBADMSG,
				   LTX_ERR_PAGE_ORDER, "page 2 after page 2");
			tu_buf_free(&b);
		}
		/* P3: a snapshot with a gap, a late start, too few pages,
		 * one too many. */
		{
			static const uint32_t gap[] = {1, 3};
			static const uint32_t late[] = {2, 3};
			static const uint32_t few[] = {1, 2};
			static const uint32_t many[] = {1, 2, 3, 4};
			tu_buf b = TU_BUF_INIT;
			add_pages(&b, 512, gap, 2, true);
			expect_raw(&snap, &b, post, z, -EBADMSG,
				   LTX_ERR_SNAPSHOT, "expected page 2");
			tu_buf_free(&b);
			add_pages(&b, 512, late, 2, true);
			expect_raw(&snap, &b, post, z, -EBADMSG,
				   LTX_ERR_SNAPSHOT, "expected page 1");
			tu_buf_free(&b);
			add_pages(&b, 512, few, 2, true);
			expect_raw(&snap, &b, pages_checksum(512, few, 2), z,
				   -EBADMSG, LTX_ERR_SNAPSHOT, "commit 3");
			tu_buf_free(&b);
			add_pages(&b, 512, many, 4, true);
			expect_raw(&snap, &b, pages_checksum(512, many, 4), z,
				   -EBADMSG, LTX_ERR_PGNO, "page number 4");
			tu_buf_free(&b);
		}
		/* T1, T2: post-apply checksum. */
		{
			static const uint32_t all[] = {1, 2, 3};
			uint64_t good = pages_checksum(512, all, 3);
			tu_buf b = TU_BUF_INIT;
			add_pages(&b, 512, all, 3, true);
			expect_raw(&snap, &b, good, z, 0, LTX_OK, NULL);
			expect_raw(&snap, &b, good ^ 1, z, -EBADMSG,
				   LTX_ERR_POST_APPLY, "its pages give");
			expect_raw(&inc, &b, 0x1234, z, -EBADMSG,
				   LTX_ERR_POST_APPLY, "bit 63");
			expect_raw(&inc, &b, 0, z, -EBADMSG,
				   LTX_ERR_POST_APPLY, "bit 63");
			tu_buf_free(&b);
		}
	}
}

/* P2 with 64 KiB pages: the lock page is page 16385. */
static void test_lock_page_rejected(void **state)
{
	static const uint32_t pg[] = {16384, 16385};
	ltx_header h = tu_header(0, 65536, 16390, 3, 1);
	tu_buf b = TU_BUF_INIT;

	(void)state;
	add_pages(&b, 65536, pg, 2, true);
	expect_raw(&h, &b, FLAG63, false, -EBADMSG, LTX_ERR_LOCK_PAGE,
		   "lock page");
	h.flags = LTX_FLAG_COMPRESS_ZSTD;
	expect_raw(&h, &b, FLAG63, true, -EBADMSG, LTX_ERR_LOCK_PAGE,
		   "lock page");
	tu_buf_free(&b);
	/* Either side of it is fine. */
	{
		static const uint32_t ok[] = {16384, 16386};
		h.flags = 0;
		add_pages(&b, 65536, ok, 2, true);
		expect_raw(&h, &b, FLAG63, false, 0, LTX_OK, NULL);
		tu_buf_free(&b);
	}
}

/* T3: the file checksum must have bit 63 and match. */
static void test_file_checksum_rule(void **state)
{
	static const uint32_t pg[] = {2};
	ltx_header h = tu_header(0, 512, 3, 9, 1);
	tu_buf b = TU_BUF_INIT, f = TU_BUF_INIT;
	tu_decoded d;

	(void)state;
	add_pages(&b, 512, pg, 1, true);
	tu_raw_file(&h, &b, FLAG63, false, &f);
	f.data[f.len - 8] &= 0x7F; /* same CRC, bit 63 cleared */
	assert_int_equal(tu_decode(f.data, f.len, &d), -EBADMSG);
	assert_int_equal(d.err.kind, LTX_ERR_FILE_CHECKSUM);
	assert_int_equal(d.err.offset, f.len - 8);
	assert_non_null(strstr(d.err.msg, "file checksum"));
	tu_buf_free(&f);
	tu_buf_free(&b);
}

/* Compressed blocks: not zstd at all, a frame that stops before the
 * terminator, a frame that goes on after it, a second frame. */
static void test_compressed_block_rules(void **state)
{
	static const uint32_t pg[] = {1, 2};
	ltx_header h = tu_header(LTX_FLAG_COMPRESS_ZSTD, 512, 2, 1, 0);
	uint64_t post = pages_checksum(512, pg, 2);
	tu_buf b = TU_BUF_INIT;

	(void)state;
	add_pages(&b, 512, pg, 2, false);
	/* No terminator inside the frame. */
	expect_raw(&h, &b, post, true, -EBADMSG, LTX_ERR_COMPRESSED,
		   "frame ends inside");
	/* Data after the terminator inside the frame. */
	tu_buf_append_be32(&b, 0);
	tu_buf_append_be32(&b, 7);
	expect_raw(&h, &b, post, true, -EBADMSG, LTX_ERR_COMPRESSED,
		   "after the page block terminator");
	tu_buf_free(&b);
	/* Uncompressed bytes where a zstd frame should be. */
	add_pages(&b, 512, pg, 2, true);
	expect_raw(&h, &b, post, false, -EBADMSG, LTX_ERR_COMPRESSED,
		   "zstd");
	tu_buf_free(&b);
	/* Two frames: the page block must be one. */
	{
		tu_buf f = TU_BUF_INIT, b1 = TU_BUF_INIT, b2 = TU_BUF_INIT;
		tu_buf z = TU_BUF_INIT, tmp = TU_BUF_INIT;
		uint8_t hdr[LTX_HEADER_SIZE];
		uint64_t crc;
		tu_decoded d;
		static const uint32_t p1[] = {1};
		static const uint32_t p2[] = {2};
		add_pages(&b1, 512, p1, 1, false);
		add_pages(&b2, 512, p2, 1, true);
		/* Compress each half on its own, glue them. */
		tu_raw_file(&h, &b1, post, true, &tmp);
		tu_buf_append(&z, tmp.data + 100, tmp.len - 116);
		tu_buf_free(&tmp);
		tu_raw_file(&h, &b2, post, true, &tmp);
		tu_buf_append(&z, tmp.data + 100, tmp.len - 116);
		tu_buf_free(&tmp);
		ltx_header_encode(&h, hdr);
		tu_buf_append(&f, hdr, sizeof(hdr));
		tu_buf_append(&f, z.data, z.len);
		crc = tu_crc64_bitwise(0, hdr, sizeof(hdr));
		crc = tu_crc64_bitwise(crc, b1.data, b1.len);
		crc = tu_crc64_bitwise(crc, b2.data, b2.len);
		tu_buf_append_be64(&f, post);
		crc = tu_crc64_bitwise(crc, f.data + f.len - 8, 8);
		tu_buf_append_be64(&f, crc | FLAG63);
		assert_int_equal(tu_decode(f.data, f.len, &d), -EBADMSG);
		assert_int_equal(d.err.kind, LTX_ERR_COMPRESSED);
		tu_buf_free(&f);
		tu_buf_free(&b1);
		tu_buf_free(&b2);
		tu_buf_free(&z);
	}
}

/* Flag 0x1 (LZ4) is unsupported, other unknown bits are unknown flags;
 * garbage after the header changes nothing, and nothing crashes. */
static void test_flags(void **state)
{
	(void)state;
	for (int bit = 0; bit < 32; bit++) {
		uint32_t flags = UINT32_C(1) << bit;
		ltx_header h = tu_header(0, 4096, 2, 1, 0);
		uint8_t raw[LTX_HEADER_SIZE + 64];
		tu_decoded d;
		int rc;
		if (flags == LTX_FLAG_COMPRESS_ZSTD)
			continue;
		h.flags = flags;
		ltx_header_encode(&h, raw);
		memset(raw + LTX_HEADER_SIZE, 0x5A, 64);
		rc = tu_decode(raw, sizeof(raw), &d);
		if (flags == LTX_FLAG_COMPRESS_LZ4) {
			assert_int_equal(rc, -ENOTSUP);
			assert_int_equal(d.err.kind, LTX_ERR_UNSUPPORTED);
			assert_non_null(strstr(d.err.msg, "unsupported"));
			assert_non_null(strstr(d.err.msg, "LZ4"));
		} else {
			assert_int_equal(rc, -EBADMSG);
			assert_int_equal(d.err.kind, LTX_ERR_FLAGS);
			assert_non_null(strstr(d.err.msg, "unknown flags"));
		}
		assert_int_equal(d.err.offset, 4);
		/* Only the header: the same answers. */
		rc = tu_decode(raw, LTX_HEADER_SIZE, &d);
		assert_int_equal(rc, flags == 1 ? -ENOTSUP : -EBADMSG);
	}
}

/* Header rules come through the decoder with their kind and its name. */
static void test_header_rules_through_decoder(void **state)
{
	static const struct {
		size_t off;
		uint8_t val;
		int kind;
	} cases[] = {
		{0, 'X', LTX_ERR_MAGIC},     {9, 0x11, LTX_ERR_PAGE_SIZE},
		{23, 0, LTX_ERR_MIN_TXID},   {31, 0, LTX_ERR_MAX_TXID},
		{40, 0, LTX_ERR_PRE_APPLY},  {55, 1, LTX_ERR_WAL_RANGE},
		{67, 1, LTX_ERR_WAL_SALT},   {90, 1, LTX_ERR_RESERVED},
		{5, 0x10, LTX_ERR_FLAGS},    {7, 0x01, LTX_ERR_UNSUPPORTED},
	};
	tu_buf f = TU_BUF_INIT;

	(void)state;
	small_file(0, 0, &f);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *copy = malloc(f.len);
		tu_decoded d;
		assert_non_null(copy);
		memcpy(copy, f.data, f.len);
		copy[cases[i].off] = cases[i].val;
		assert_true(tu_decode(copy, f.len, &d) < 0);
		if (d.err.kind != cases[i].kind)
			fail_msg("byte %zu = 0x%02x: kind %s (%s)",
				 cases[i].off, cases[i].val,
				 ltx_err_kind_name(d.err.kind), d.err.msg);
		assert_non_null(strstr(d.err.msg, "mem: "));
		free(copy);
	}
	tu_buf_free(&f);
}

static void test_misuse(void **state)
{
	tu_buf f = TU_BUF_INIT;
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_trailer t;
	uint8_t page[512];
	uint32_t pgno;

	(void)state;
	small_file(0, 0, &f);
	/* next_page and finish before the header. */
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, NULL, &dec), 0);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_OK);
	assert_int_equal(ltx_decoder_next_page(dec, &pgno, page), -EINVAL);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_ERR_USAGE);
	/* Failed is final, and keeps its kind. */
	assert_int_equal(ltx_decoder_read_header(dec, &h), -EINVAL);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_ERR_USAGE);
	ltx_decoder_free(dec);

	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "x", &dec), 0);
	assert_int_equal(ltx_decoder_read_header(dec, &h), 0);
	assert_int_equal(ltx_decoder_finish(dec, &t), -EINVAL);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_ERR_USAGE);
	ltx_decoder_free(dec);

	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "x", &dec), 0);
	assert_int_equal(ltx_decoder_read_header(dec, NULL), 0);
	assert_int_equal(ltx_decoder_read_header(dec, &h), -EINVAL);
	ltx_decoder_free(dec);

	/* After the end, next_page is misuse; so is a second finish. */
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "x", &dec), 0);
	assert_int_equal(ltx_decoder_read_header(dec, &h), 0);
	assert_int_equal(ltx_decoder_next_page(dec, &pgno, page), 1);
	assert_int_equal(pgno, 2);
	assert_int_equal(ltx_decoder_next_page(dec, &pgno, page), 1);
	assert_int_equal(pgno, 4);
	assert_int_equal(ltx_decoder_next_page(dec, &pgno, page), 0);
	assert_int_equal(ltx_decoder_next_page(dec, &pgno, page), -EINVAL);
	ltx_decoder_free(dec);

	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "x", &dec), 0);
	assert_int_equal(ltx_decoder_verify(dec, NULL, NULL, NULL), 0);
	assert_int_equal(ltx_decoder_finish(dec, &t), -EINVAL);
	ltx_decoder_free(dec);

	/* A corrupt file: later calls repeat the failure's errno. */
	f.data[200] ^= 1;
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "x", &dec), 0);
	assert_int_equal(ltx_decoder_verify(dec, NULL, NULL, NULL), -EBADMSG);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_ERR_FILE_CHECKSUM);
	assert_int_equal(ltx_decoder_finish(dec, &t), -EBADMSG);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_ERR_FILE_CHECKSUM);
	ltx_decoder_free(dec);
	ltx_decoder_free(NULL);
	tu_buf_free(&f);
}

/* A source that fails after `ok` calls. */
struct failing_reader {
	ltx_mem_reader mem;
	int ok;
	int eno;
};

static int failing_read(void *ctx, void *buf, size_t n, size_t *out_got)
{
	struct failing_reader *r = ctx;

	if (r->ok-- <= 0)
		return -r->eno;
	return ltx_read_from_mem(&r->mem, buf, n, out_got);
}

static void test_read_failure(void **state)
{
	static const uint32_t pgnos[] = {1, 2, 3, 4};
	ltx_header h = tu_header(0, 65536, 4, 1, 0);
	tu_buf f = TU_BUF_INIT;
	ltx_err err = {0};

	(void)state;
	assert_int_equal(tu_encode(&h, 0, pgnos, 4, 0, 0, &f, NULL, &err), 0);
	for (int ok = 0; ok < 3; ok++) {
		struct failing_reader r = {{f.data, f.len, 0}, ok, EIO};
		ltx_decoder *dec = NULL;
		int rc;
		assert_int_equal(ltx_decoder_new(failing_read, &r, "src", &dec),
				 0);
		rc = ltx_decoder_verify(dec, NULL, NULL, NULL);
		assert_int_equal(rc, -EIO);
		assert_int_equal(ltx_decoder_err(dec)->kind, LTX_ERR_IO);
		assert_non_null(strstr(ltx_decoder_err(dec)->msg, "src: "));
		ltx_decoder_free(dec);
	}
	tu_buf_free(&f);
}

/* Files larger than the decoder's input buffer: valid from a file
 * descriptor, and truncated anywhere (on both sides of buffer
 * boundaries) refused. */
static void test_large_files(void **state)
{
	uint32_t pgnos[12];

	(void)state;
	for (uint32_t i = 0; i < 12; i++)
		pgnos[i] = i + 1;
	for (int z = 0; z < 2; z++) {
		ltx_header h = tu_header(z ? LTX_FLAG_COMPRESS_ZSTD : 0, 65536,
					 12, 1, 0);
		tu_buf f = TU_BUF_INIT;
		ltx_trailer tr;
		ltx_err err = {0};
		ltx_decoder *dec = NULL;
		uint64_t pages = 0;
		int fd = tu_memfd();
		assert_int_equal(tu_encode(&h, 0, pgnos, 12, 0, 0, &f, &tr,
					   &err), 0);
		assert_true(f.len > 128 * 1024);
		assert_int_equal(write(fd, f.data, f.len), (ssize_t)f.len);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		assert_int_equal(ltx_decoder_new(ltx_read_from_fd, &fd, "fd",
						 &dec), 0);
		assert_int_equal(ltx_decoder_verify(dec, NULL, NULL, &pages),
				 0);
		assert_int_equal(pages, 12);
		assert_int_equal(ltx_decoder_bytes_read(dec), f.len);
		assert_int_equal(ltx_decoder_page_checksum(dec),
				 tr.post_apply_checksum);
		ltx_decoder_free(dec);
		close(fd);
		for (size_t len = 0; len < f.len;
		     len += (len % 2 ? 4093 : 1)) {
			int kind;
			assert_true(decode_kind(f.data, len, &kind) < 0);
			assert_int_equal(kind, LTX_ERR_TRUNCATED);
		}
		for (size_t len = 131072 - 8; len < 131072 + 8; len++) {
			int kind;
			assert_true(decode_kind(f.data, len, &kind) < 0);
			assert_int_equal(kind, LTX_ERR_TRUNCATED);
		}
		for (size_t len = f.len - 40; len < f.len; len++) {
			int kind;
			assert_true(decode_kind(f.data, len, &kind) < 0);
			assert_int_equal(kind, LTX_ERR_TRUNCATED);
		}
		tu_buf_free(&f);
	}
}

static void test_truncation_offsets(void **state)
{
	tu_buf f = TU_BUF_INIT;
	tu_decoded d;

	(void)state;
	small_file(0, 0, &f);
	assert_int_equal(tu_decode(f.data, 57, &d), -EBADMSG);
	assert_int_equal(d.err.offset, 57);
	assert_non_null(strstr(d.err.msg, "header"));
	assert_int_equal(tu_decode(f.data, f.len - 5, &d), -EBADMSG);
	assert_int_equal(d.err.offset, f.len - 5);
	assert_non_null(strstr(d.err.msg, "trailer"));
	assert_int_equal(tu_decode(f.data, 300, &d), -EBADMSG);
	assert_non_null(strstr(d.err.msg, "page data"));
	tu_buf_free(&f);
}

/* ltx_decoder_reset: one decoder decodes file after file, compressed or
 * not, whatever state the last one left it in (done, half-read, failed),
 * with the same results as a fresh decoder. */
static void decode_with(ltx_decoder *dec, const tu_buf *f, int want_rc,
			uint64_t *out_sum)
{
	ltx_mem_reader m = {f->data, f->len, 0};
	ltx_header h;
	ltx_trailer t;
	uint64_t pages = 0;
	int rc;

	assert_int_equal(ltx_decoder_reset(dec, ltx_read_from_mem, &m, NULL),
			 0);
	assert_int_equal(ltx_decoder_err(dec)->kind, LTX_OK);
	assert_int_equal(ltx_decoder_bytes_read(dec), 0);
	rc = ltx_decoder_verify(dec, &h, &t, &pages);
	if (want_rc == 0) {
		assert_int_equal(rc, 0);
		assert_int_equal(pages, 2);
		assert_int_equal(ltx_decoder_bytes_read(dec), f->len);
		*out_sum = t.post_apply_checksum;
	} else {
		assert_true(rc < 0);
		assert_int_not_equal(ltx_decoder_err(dec)->kind, LTX_OK);
	}
}

static void test_reset(void **state)
{
	tu_buf f[4] = {TU_BUF_INIT, TU_BUF_INIT, TU_BUF_INIT, TU_BUF_INIT};
	tu_buf bad = TU_BUF_INIT;
	ltx_mem_reader m0;
	ltx_decoder *dec = NULL;
	ltx_header h;
	uint8_t page[512];
	uint32_t pgno;
	uint64_t sum[4], again;

	(void)state;
	for (int i = 0; i < 4; i++) {
		tu_decoded d;
		small_file(i & 1, i >> 1, &f[i]);
		assert_int_equal(tu_decode(f[i].data, f[i].len, &d), 0);
		sum[i] = d.tr.post_apply_checksum;
	}
	m0 = (ltx_mem_reader){f[1].data, f[1].len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m0, "r", &dec),
			 0);
	/* Stopped half-way through a compressed file. */
	assert_int_equal(ltx_decoder_read_header(dec, &h), 0);
	assert_int_equal(ltx_decoder_next_page(dec, &pgno, page), 1);
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 4; i++) {
			decode_with(dec, &f[i], 0, &again);
			assert_true(again == sum[i]);
		}
	/* After a failure (a flipped byte in the compressed block), the
	 * next file decodes. */
	tu_buf_append(&bad, f[1].data, f[1].len);
	bad.data[LTX_HEADER_SIZE + 8] ^= 0x10;
	decode_with(dec, &bad, -1, NULL);
	decode_with(dec, &f[1], 0, &again);
	assert_true(again == sum[1]);
	decode_with(dec, &bad, -1, NULL);
	decode_with(dec, &f[0], 0, &again);
	assert_true(again == sum[0]);
	ltx_decoder_free(dec);
	tu_buf_free(&bad);
	for (int i = 0; i < 4; i++)
		tu_buf_free(&f[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_small_files),
		cmocka_unit_test(test_every_byte_corruption),
		cmocka_unit_test(test_every_truncation),
		cmocka_unit_test(test_trailing_bytes),
		cmocka_unit_test(test_raw_builder_valid),
		cmocka_unit_test(test_page_rules),
		cmocka_unit_test(test_lock_page_rejected),
		cmocka_unit_test(test_file_checksum_rule),
		cmocka_unit_test(test_compressed_block_rules),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_header_rules_through_decoder),
		cmocka_unit_test(test_misuse),
		cmocka_unit_test(test_read_failure),
		cmocka_unit_test(test_large_files),
		cmocka_unit_test(test_truncation_offsets),
		cmocka_unit_test(test_reset),
	};

	return cmocka_run_group_tests_name("ltx/decoder", tests, NULL, NULL);
}
