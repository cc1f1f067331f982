/* Tests for ltx/encoder.c: round trips at every page size, compressed and
 * not, the byte layout of LTX.md checked field by field, rules P1..P3 and
 * the trailer, and write failures. */
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

/* Big-endian reads written here, not taken from lib/, so the layout
 * check does not lean on the code under test. */
static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* Decodes buf page by page and checks it holds exactly pgnos[] filled by
 * tu_fill_page(seed), under header h, with trailer tr. */
static void decode_and_compare(const tu_buf *buf, const ltx_header *h,
			       const uint32_t *pgnos, size_t n, uint32_t seed,
			       const ltx_trailer *tr)
{
	ltx_mem_reader m = {buf->data, buf->len, 0};
	ltx_decoder *dec = NULL;
	ltx_header got;
	ltx_trailer t;
	uint8_t *page = malloc(h->page_size);
	uint8_t *want = malloc(h->page_size);
	uint32_t pgno;
	size_t i = 0;
	int rc;

	assert_non_null(page);
	assert_non_null(want);
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "rt", &dec), 0);
	rc = ltx_decoder_read_header(dec, &got);
	if (rc)
		fail_msg("%s", ltx_decoder_err(dec)->msg);
	assert_memory_equal(&got, h, sizeof(got));
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
		assert_true(i < n);
		assert_int_equal(pgno, pgnos[i]);
		tu_fill_page(want, h->page_size, pgno, seed);
		assert_memory_equal(page, want, h->page_size);
		i++;
	}
	if (rc)
		fail_msg("%s", ltx_decoder_err(dec)->msg);
	assert_int_equal(i, n);
	rc = ltx_decoder_finish(dec, &t);
	if (rc)
		fail_msg("%s", ltx_decoder_err(dec)->msg);
	assert_int_equal(t.post_apply_checksum, tr->post_apply_checksum);
	assert_int_equal(t.file_checksum, tr->file_checksum);
	assert_int_equal(ltx_decoder_bytes_read(dec), buf->len);
	ltx_decoder_free(dec);
	free(page);
	free(want);
}

/* The uncompressed page block for pgnos[] (frames and terminator). */
static void expected_block(uint32_t ps, const uint32_t *pgnos, size_t n,
			   uint32_t seed, tu_buf *out)
{
	uint8_t *page = malloc(ps);

	assert_non_null(page);
	for (size_t i = 0; i < n; i++) {
		tu_fill_page(page, ps, pgnos[i], seed);
		tu_block_page(out, pgnos[i], page, ps);
	}
	tu_buf_append_be32(out, 0);
	free(page);
}

static uint64_t snapshot_checksum_ref(uint32_t ps, uint32_t commit,
				      uint32_t seed)
{
	uint8_t *page = malloc(ps);
	uint64_t sum = FLAG63;

	assert_non_null(page);
	for (uint32_t pgno = 1; pgno <= commit; pgno++) {
		tu_fill_page(page, ps, pgno, seed);
		sum ^= tu_page_checksum_ref(pgno, page, ps);
	}
	free(page);
	return sum | FLAG63;
}

/* Every page size, compressed and not, snapshot and increment: the
 * decoder gives back exactly what went in; an uncompressed file has the
 * exact size LTX.md gives; a compressed one's block is one zstd frame that
 * plain libzstd inflates to the uncompressed block, and its file checksum
 * covers the uncompressed bytes. */
static void test_roundtrip_all_page_sizes(void **state)
{
	static const uint32_t snap_pgnos[] = {1, 2, 3, 4, 5};
	static const uint32_t inc_pgnos[] = {2, 5, 9};

	(void)state;
	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		for (int compress = 0; compress < 2; compress++) {
			for (int snap = 0; snap < 2; snap++) {
				const uint32_t *pgnos =
					snap ? snap_pgnos : inc_pgnos;
				size_t n = snap ? 5 : 3;
				uint32_t flags =
					compress ? LTX_FLAG_COMPRESS_ZSTD : 0;
				ltx_header h = tu_header(flags, ps,
							 snap ? 5 : 9,
							 snap ? 1 : 42, 0x77);
				uint64_t post = snap ? 0 : FLAG63 | 0xabc;
				tu_buf out = TU_BUF_INIT, block = TU_BUF_INIT;
				ltx_trailer tr;
				ltx_err err = {0};
				uint64_t crc;
				uint8_t be8[8];
				int rc;

				if (!snap)
					h.max_txid = 45;
				rc = tu_encode(&h, 0, pgnos, n, ps, post, &out,
					       &tr, &err);
				if (rc)
					fail_msg("ps %u: %s", ps, err.msg);
				if (snap)
					assert_int_equal(
						tr.post_apply_checksum,
						snapshot_checksum_ref(ps, 5,
								      ps));
				else
					assert_int_equal(tr.post_apply_checksum,
							 post);
				decode_and_compare(&out, &h, pgnos, n, ps, &tr);

				expected_block(ps, pgnos, n, ps, &block);
				if (!compress) {
					assert_int_equal(out.len,
							 100 + block.len + 16);
					assert_memory_equal(out.data + 100,
							    block.data,
							    block.len);
				} else {
					size_t zlen = out.len - 100 - 16;
					uint8_t *raw = malloc(block.len + 1);
					size_t r;
					assert_non_null(raw);
					assert_true(out.len <
						    100 + block.len + 16);
					r = ZSTD_decompress(raw, block.len + 1,
							    out.data + 100,
							    zlen);
					assert_false(ZSTD_isError(r));
					assert_int_equal(r, block.len);
					assert_memory_equal(raw, block.data,
							    block.len);
					free(raw);
				}
				/* File checksum over the logical bytes. */
				crc = tu_crc64_bitwise(0, out.data, 100);
				crc = tu_crc64_bitwise(crc, block.data,
						       block.len);
				for (int i = 0; i < 8; i++)
					be8[i] = (uint8_t)(
						tr.post_apply_checksum >>
						(56 - 8 * i));
				crc = tu_crc64_bitwise(crc, be8, 8);
				assert_int_equal(tr.file_checksum,
						 crc | FLAG63);
				assert_int_equal(be(out.data + out.len - 8, 8),
						 tr.file_checksum);
				tu_buf_free(&out);
				tu_buf_free(&block);
			}
		}
	}
}

/* An uncompressed file, byte by byte against LTX.md. */
static void check_layout(uint32_t ps, int snap)
{
	static const uint32_t snap_pgnos[] = {1, 2, 3};
	static const uint32_t inc_pgnos[] = {3, 4, 7};
	const uint32_t *pgnos = snap ? snap_pgnos : inc_pgnos;
	ltx_header h = tu_header(0, ps, snap ? 3 : 8, snap ? 1 : 5, 0x99);
	uint64_t post = FLAG63 | UINT64_C(0x0123456789abcdef);
	tu_buf out = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err = {0};
	uint8_t *page = malloc(ps);
	const uint8_t *p;
	size_t off;

	assert_non_null(page);
	h.max_txid = snap ? 1 : 6;
	h.wal_offset = 32;
	h.wal_size = 8192;
	h.wal_salt1 = 0xa1b2c3d4;
	h.wal_salt2 = 0x01020304;
	h.timestamp = -2;
	if (snap)
		post = snapshot_checksum_ref(ps, 3, 11);
	assert_int_equal(tu_encode(&h, 0, pgnos, 3, 11, post, &out, &tr, &err),
			 0);
	p = out.data;
	assert_int_equal(out.len, 100 + 3 * (4 + ps) + 4 + 16);
	/* Header. */
	assert_memory_equal(p, "LTX1", 4);
	assert_int_equal(be(p + 4, 4), 0);
	assert_int_equal(be(p + 8, 4), ps);
	assert_int_equal(be(p + 12, 4), snap ? 3 : 8);
	assert_int_equal(be(p + 16, 8), snap ? 1 : 5);
	assert_int_equal(be(p + 24, 8), snap ? 1 : 6);
	assert_int_equal(be(p + 32, 8), UINT64_C(0xfffffffffffffffe));
	assert_int_equal(be(p + 40, 8), snap ? 0 : FLAG63 | 0x99);
	assert_int_equal(be(p + 48, 8), 32);
	assert_int_equal(be(p + 56, 8), 8192);
	assert_int_equal(be(p + 64, 4), 0xa1b2c3d4);
	assert_int_equal(be(p + 68, 4), 0x01020304);
	assert_int_equal(be(p + 72, 8), UINT64_C(0x0102030405060708));
	for (int i = 80; i < 100; i++)
		assert_int_equal(p[i], 0);
	/* Page frames. */
	off = 100;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(be(p + off, 4), pgnos[i]);
		tu_fill_page(page, ps, pgnos[i], 11);
		assert_memory_equal(p + off + 4, page, ps);
		off += 4 + ps;
	}
	/* Terminator, then the trailer. */
	assert_int_equal(be(p + off, 4), 0);
	off += 4;
	assert_int_equal(off, out.len - 16);
	assert_int_equal(be(p + off, 8), post);
	assert_int_equal(be(p + off + 8, 8),
			 tu_crc64_bitwise(0, p, out.len - 8) | FLAG63);
	assert_true(be(p + off, 8) & FLAG63);
	assert_true(be(p + off + 8, 8) & FLAG63);
	assert_int_equal(tr.post_apply_checksum, post);
	assert_int_equal(tr.file_checksum, be(p + off + 8, 8));
	tu_buf_free(&out);
	free(page);
}

static void test_uncompressed_layout(void **state)
{
	(void)state;
	check_layout(512, 1);
	check_layout(512, 0);
	check_layout(4096, 1);
	check_layout(65536, 0);
}

static void test_empty_files(void **state)
{
	tu_buf out = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err = {0};
	tu_decoded d;

	(void)state;
	/* A snapshot of an empty database. */
	{
		ltx_header h = tu_header(0, 4096, 0, 1, 0);
		assert_int_equal(tu_encode(&h, 0, NULL, 0, 0, 0, &out, &tr,
					   &err), 0);
		assert_int_equal(out.len, 100 + 4 + 16);
		assert_int_equal(tr.post_apply_checksum, LTX_CHECKSUM_EMPTY);
		assert_int_equal(tu_decode(out.data, out.len, &d), 0);
		assert_int_equal(d.pages, 0);
		tu_buf_free(&out);
	}
	/* A database deleted: commit 0, no pages. */
	for (int compress = 0; compress < 2; compress++) {
		ltx_header h = tu_header(compress ? 4 : 0, 512, 0, 9, 5);
		assert_int_equal(tu_encode(&h, 0, NULL, 0, 0,
					   LTX_CHECKSUM_EMPTY, &out, &tr,
					   &err), 0);
		assert_int_equal(tu_decode(out.data, out.len, &d), 0);
		assert_int_equal(d.hdr.commit, 0);
		assert_int_equal(d.tr.post_apply_checksum, LTX_CHECKSUM_EMPTY);
		tu_buf_free(&out);
	}
}

/* Level 0 means the default (1); every level decodes to the same file
 * checksum, since it covers the uncompressed bytes. */
static void test_compression_levels(void **state)
{
	static const int levels[] = {0, 1, 3, 9, 19, -5};
	static const uint32_t pgnos[] = {1, 2, 3, 4, 5, 6, 7, 8};
	tu_buf first = TU_BUF_INIT;
	uint64_t file_checksum = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		ltx_header h = tu_header(4, 4096, 8, 1, 0);
		tu_buf out = TU_BUF_INIT;
		ltx_trailer tr;
		ltx_err err = {0};
		tu_decoded d;
		assert_int_equal(tu_encode(&h, levels[i], pgnos, 8, 3, 0, &out,
					   &tr, &err), 0);
		assert_int_equal(tu_decode(out.data, out.len, &d), 0);
		assert_int_equal(d.pages, 8);
		if (i == 0) {
			file_checksum = tr.file_checksum;
			first = out;
			continue;
		}
		assert_int_equal(tr.file_checksum, file_checksum);
		if (levels[i] == LTX_ZSTD_LEVEL_DEFAULT) {
			assert_int_equal(out.len, first.len);
			assert_memory_equal(out.data, first.data, out.len);
		}
		tu_buf_free(&out);
	}
	tu_buf_free(&first);
}

static void test_invalid_header_writes_nothing(void **state)
{
	static const struct {
		uint32_t flags, ps;
		uint64_t min, max;
		int kind, rc;
	} cases[] = {
		{0, 1000, 2, 2, LTX_ERR_PAGE_SIZE, -EBADMSG},
		{0, 4096, 0, 0, LTX_ERR_MIN_TXID, -EBADMSG},
		{0, 4096, 5, 4, LTX_ERR_MAX_TXID, -EBADMSG},
		{0x1, 4096, 2, 2, LTX_ERR_UNSUPPORTED, -ENOTSUP},
		{0x8, 4096, 2, 2, LTX_ERR_FLAGS, -EBADMSG},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ltx_header h = tu_header(cases[i].flags, cases[i].ps, 3, 2, 1);
		tu_buf out = TU_BUF_INIT;
		ltx_encoder *enc = (ltx_encoder *)&out;
		ltx_err err = {0};
		h.min_txid = cases[i].min;
		h.max_txid = cases[i].max;
		assert_int_equal(ltx_encoder_new(&h, 0, tu_buf_write, &out,
						 &enc, &err), cases[i].rc);
		assert_null(enc);
		assert_int_equal(err.kind, cases[i].kind);
		assert_int_equal(out.len, 0);
		assert_int_equal(out.writes, 0);
	}
	/* The pre-apply rule, both ways. */
	{
		ltx_header h = tu_header(0, 4096, 3, 1, 0);
		ltx_encoder *enc = NULL;
		ltx_err err = {0};
		h.pre_apply_checksum = FLAG63;
		assert_int_equal(ltx_encoder_new(&h, 0, tu_buf_write, NULL,
						 &enc, &err), -EBADMSG);
		assert_int_equal(err.kind, LTX_ERR_PRE_APPLY);
		h.min_txid = h.max_txid = 2;
		h.pre_apply_checksum = 5;
		assert_int_equal(ltx_encoder_new(&h, 0, tu_buf_write, NULL,
						 &enc, &err), -EBADMSG);
		assert_int_equal(err.kind, LTX_ERR_PRE_APPLY);
	}
	ltx_encoder_free(NULL);
}

static ltx_encoder *new_enc(const ltx_header *h, tu_buf *out)
{
	ltx_encoder *enc = NULL;
	ltx_err err = {0};

	assert_int_equal(ltx_encoder_new(h, 0, tu_buf_write, out, &enc, &err),
			 0);
	assert_non_null(enc);
	assert_int_equal(ltx_encoder_bytes_written(enc), 100);
	return enc;
}

static void expect_add(ltx_encoder *enc, uint32_t pgno, const uint8_t *page,
		       int rc, int kind)
{
	ltx_err err;

	memset(&err, 0, sizeof(err));
	assert_int_equal(ltx_encoder_add_page(enc, pgno, page, &err), rc);
	if (rc)
		assert_int_equal(err.kind, kind);
}

/* P1..P3: bad pages are refused with their own kind, and since nothing
 * was written the encoder goes on and makes a valid file without them. */
static void test_page_rules_increment(void **state)
{
	ltx_header h = tu_header(0, 65536, 16390, 7, 1);
	static const uint32_t kept[] = {3, 16384, 16386, 16390};
	uint8_t *page = malloc(65536);
	tu_buf out = TU_BUF_INIT;
	ltx_encoder *enc;
	ltx_trailer tr;
	ltx_err err = {0};
	tu_decoded d;

	(void)state;
	assert_non_null(page);
	enc = new_enc(&h, &out);
	expect_add(enc, 0, page, -EBADMSG, LTX_ERR_PGNO);
	expect_add(enc, 16391, page, -EBADMSG, LTX_ERR_PGNO);
	for (size_t i = 0; i < 4; i++) {
		tu_fill_page(page, 65536, kept[i], 1);
		expect_add(enc, kept[i], page, 0, 0);
		assert_int_equal(ltx_encoder_bytes_written(enc),
				 100 + (i + 1) * (4 + 65536));
		/* Repeats and going back are refused. */
		expect_add(enc, kept[i], page, -EBADMSG, LTX_ERR_PAGE_ORDER);
		expect_add(enc, 1, page, -EBADMSG, LTX_ERR_PAGE_ORDER);
		if (i == 1) /* the lock page for 64 KiB pages */
			expect_add(enc, 16385, page, -EBADMSG,
				   LTX_ERR_LOCK_PAGE);
	}
	assert_int_equal(ltx_encoder_finish(enc, 5, &tr, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_POST_APPLY);
	assert_int_equal(ltx_encoder_finish(enc, 0, &tr, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_POST_APPLY);
	assert_int_equal(ltx_encoder_finish(enc, FLAG63 | 5, &tr, &err), 0);
	assert_int_equal(ltx_encoder_bytes_written(enc), out.len);
	decode_and_compare(&out, &h, kept, 4, 1, &tr);
	/* A finished encoder takes nothing more. */
	expect_add(enc, 16390, page, -EINVAL, LTX_ERR_USAGE);
	assert_int_equal(ltx_encoder_finish(enc, FLAG63, &tr, &err), -EINVAL);
	assert_int_equal(err.kind, LTX_ERR_USAGE);
	ltx_encoder_free(enc);
	assert_int_equal(tu_decode(out.data, out.len, &d), 0);
	tu_buf_free(&out);
	free(page);
}

static void test_page_rules_snapshot(void **state)
{
	ltx_header h = tu_header(0, 512, 3, 1, 0);
	static const uint32_t all[] = {1, 2, 3};
	uint8_t page[512];
	tu_buf out = TU_BUF_INIT;
	ltx_encoder *enc;
	ltx_trailer tr;
	ltx_err err = {0};
	uint64_t want = snapshot_checksum_ref(512, 3, 2);

	(void)state;
	enc = new_enc(&h, &out);
	expect_add(enc, 2, page, -EBADMSG, LTX_ERR_SNAPSHOT);
	tu_fill_page(page, 512, 1, 2);
	expect_add(enc, 1, page, 0, 0);
	/* Ends too early. */
	assert_int_equal(ltx_encoder_finish(enc, 0, &tr, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_SNAPSHOT);
	expect_add(enc, 3, page, -EBADMSG, LTX_ERR_SNAPSHOT);
	expect_add(enc, 1, page, -EBADMSG, LTX_ERR_SNAPSHOT);
	tu_fill_page(page, 512, 2, 2);
	expect_add(enc, 2, page, 0, 0);
	tu_fill_page(page, 512, 3, 2);
	expect_add(enc, 3, page, 0, 0);
	expect_add(enc, 4, page, -EBADMSG, LTX_ERR_PGNO);
	/* The post-apply checksum must be the pages' checksum. */
	assert_int_equal(ltx_encoder_finish(enc, want ^ 2, &tr, &err),
			 -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_POST_APPLY);
	assert_int_equal(ltx_encoder_finish(enc, want, &tr, &err), 0);
	assert_int_equal(tr.post_apply_checksum, want);
	decode_and_compare(&out, &h, all, 3, 2, &tr);
	ltx_encoder_free(enc);
	tu_buf_free(&out);
}

/* A sink that fails: the error comes back with its errno, kind IO, and
 * the encoder is failed for good. */
static void check_write_failure(uint32_t flags, uint32_t npages,
				int fail_after, int eno, int fail_in_add)
{
	ltx_header h = tu_header(flags, 65536, npages, 1, 0);
	uint8_t *page = malloc(65536);
	tu_buf out = TU_BUF_INIT;
	ltx_encoder *enc;
	ltx_err err = {0};
	int rc = 0;
	uint32_t pgno;

	assert_non_null(page);
	out.fail_after = fail_after;
	out.fail_errno = eno;
	enc = new_enc(&h, &out);
	for (pgno = 1; pgno <= npages && rc == 0; pgno++) {
		tu_fill_page(page, 65536, pgno, 0);
		rc = ltx_encoder_add_page(enc, pgno, page, &err);
	}
	if (fail_in_add) {
		assert_int_equal(rc, -eno);
		assert_int_equal(err.kind, LTX_ERR_IO);
		assert_true(pgno <= npages + 1);
		rc = ltx_encoder_add_page(enc, pgno, page, &err);
		assert_int_equal(rc, -EINVAL);
		assert_int_equal(err.kind, LTX_ERR_USAGE);
		assert_non_null(strstr(err.msg, "failed"));
	} else {
		assert_int_equal(rc, 0);
	}
	rc = ltx_encoder_finish(enc, 0, NULL, &err);
	assert_int_equal(rc, fail_in_add ? -EINVAL : -eno);
	assert_int_equal(err.kind, fail_in_add ? LTX_ERR_USAGE : LTX_ERR_IO);
	assert_int_equal(out.writes, fail_after);
	ltx_encoder_free(enc);
	tu_buf_free(&out);
	free(page);
}

static void test_write_failures(void **state)
{
	(void)state;
	/* Small files are written whole at finish. */
	check_write_failure(0, 1, 0, EIO, 0);
	check_write_failure(0, 1, 0, ENOSPC, 0);
	check_write_failure(4, 1, 0, EIO, 0);
	/* Large ones flush while pages go in. */
	check_write_failure(0, 4, 0, EIO, 1);
	check_write_failure(0, 6, 1, ENOSPC, 1);
	check_write_failure(0, 4, 2, EIO, 0); /* the last write */
}

/* Output goes out in bounded chunks, whatever the file's size. */
static void test_bounded_chunks(void **state)
{
	uint32_t pgnos[12];
	ltx_header h = tu_header(0, 65536, 12, 1, 0);
	tu_buf out = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err = {0};

	(void)state;
	for (uint32_t i = 0; i < 12; i++)
		pgnos[i] = i + 1;
	assert_int_equal(tu_encode(&h, 0, pgnos, 12, 0, 0, &out, &tr, &err),
			 0);
	/* 12 * 64 KiB in at most 256 KiB per write. */
	assert_true(out.max_write <= 256 * 1024);
	assert_true(out.writes >= (int)(out.len / (256 * 1024)));
	decode_and_compare(&out, &h, pgnos, 12, 0, &tr);
	tu_buf_free(&out);
}

static void test_write_to_fd(void **state)
{
	static const uint32_t pgnos[] = {1, 2, 3, 4};
	ltx_header h = tu_header(4, 4096, 4, 1, 0);
	tu_buf mem = TU_BUF_INIT, file = TU_BUF_INIT;
	ltx_encoder *enc = NULL;
	ltx_trailer tr;
	ltx_err err = {0};
	uint8_t page[4096];
	int fd = tu_memfd();

	(void)state;
	assert_int_equal(tu_encode(&h, 0, pgnos, 4, 8, 0, &mem, &tr, &err), 0);
	assert_int_equal(ltx_encoder_new(&h, 0, ltx_write_to_fd, &fd, &enc,
					 &err), 0);
	for (int i = 0; i < 4; i++) {
		tu_fill_page(page, 4096, pgnos[i], 8);
		assert_int_equal(ltx_encoder_add_page(enc, pgnos[i], page,
						      &err), 0);
	}
	assert_int_equal(ltx_encoder_finish(enc, 0, NULL, &err), 0);
	ltx_encoder_free(enc);
	tu_read_fd(fd, &file);
	assert_int_equal(file.len, mem.len);
	assert_memory_equal(file.data, mem.data, mem.len);
	close(fd);
	tu_buf_free(&mem);
	tu_buf_free(&file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_all_page_sizes),
		cmocka_unit_test(test_uncompressed_layout),
		cmocka_unit_test(test_empty_files),
		cmocka_unit_test(test_compression_levels),
		cmocka_unit_test(test_invalid_header_writes_nothing),
		cmocka_unit_test(test_page_rules_increment),
		cmocka_unit_test(test_page_rules_snapshot),
		cmocka_unit_test(test_write_failures),
		cmocka_unit_test(test_bounded_chunks),
		cmocka_unit_test(test_write_to_fd),
	};

	return cmocka_run_group_tests_name("ltx/encoder", tests, NULL, NULL);
}
