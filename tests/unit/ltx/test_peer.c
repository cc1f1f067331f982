/* The LiteFS peer vectors (shared/testdata/peer/README.md) through
 * ltx/decoder.c, ltx/encoder.c and ltx/dbfile.c: outside evidence that
 * ltxfs reads and writes the same format.
 *
 * The directory comes from $LTXFS_PEER_DIR. When it is missing the test
 * exits 77 (skipped), unless LTXFS_REQUIRE_PEER=1, when that is a
 * failure. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"
#include "tests/unit/testutil.h"

#define PEER_LTX "litefs-000000000000000d-000000000000000d.ltx"
#define PEER_DB "litefs-open-and-write-snapshot.db"

#define PEER_SIZE 12420
#define PEER_PAGE_SIZE 4096
#define PEER_COMMIT 10
#define PEER_TXID 0xd
#define PEER_PRE_APPLY UINT64_C(0x9c74a15b4e4f246c)
#define PEER_POST_APPLY UINT64_C(0xfe3831a381c602b9)
#define PEER_FILE_CHECKSUM UINT64_C(0x9496a29358326fb5)

static const uint32_t peer_pgnos[] = {1, 7, 8};

static const char *peer_dir;

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* The README's facts, page by page through the decoder. */
static void test_ltx_decodes_with_readme_facts(void **state)
{
	tu_buf f = TU_BUF_INIT;
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_trailer t;
	uint8_t page[PEER_PAGE_SIZE];
	uint32_t pgno;
	size_t n = 0;
	int rc;

	(void)state;
	tu_read_file(peer_dir, PEER_LTX, &f);
	assert_int_equal(f.len, PEER_SIZE);
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, PEER_LTX,
					 &dec), 0);
	rc = ltx_decoder_read_header(dec, &h);
	if (rc)
		fail_msg("%s", ltx_decoder_err(dec)->msg);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.page_size, PEER_PAGE_SIZE);
	assert_int_equal(h.commit, PEER_COMMIT);
	assert_int_equal(h.min_txid, PEER_TXID);
	assert_int_equal(h.max_txid, PEER_TXID);
	assert_int_equal(h.pre_apply_checksum, PEER_PRE_APPLY);
	assert_false(ltx_header_is_snapshot(&h));
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
		assert_true(n < 3);
		assert_int_equal(pgno, peer_pgnos[n]);
		n++;
	}
	if (rc)
		fail_msg("%s", ltx_decoder_err(dec)->msg);
	assert_int_equal(n, 3);
	rc = ltx_decoder_finish(dec, &t);
	if (rc)
		fail_msg("%s", ltx_decoder_err(dec)->msg);
	assert_int_equal(t.post_apply_checksum, PEER_POST_APPLY);
	assert_int_equal(t.file_checksum, PEER_FILE_CHECKSUM);
	assert_int_equal(ltx_decoder_bytes_read(dec), PEER_SIZE);
	ltx_decoder_free(dec);
	tu_buf_free(&f);
}

/* The same from a file descriptor, through ltx_decoder_verify. */
static void test_ltx_verifies_from_fd(void **state)
{
	tu_buf f = TU_BUF_INIT;
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_trailer t;
	uint64_t pages = 0;
	int fd = tu_memfd();

	(void)state;
	tu_read_file(peer_dir, PEER_LTX, &f);
	assert_int_equal(write(fd, f.data, f.len), (ssize_t)f.len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(ltx_decoder_new(ltx_read_from_fd, &fd, PEER_LTX, &dec),
			 0);
	assert_int_equal(ltx_decoder_verify(dec, &h, &t, &pages), 0);
	assert_int_equal(pages, 3);
	assert_int_equal(h.commit, PEER_COMMIT);
	assert_int_equal(t.file_checksum, PEER_FILE_CHECKSUM);
	ltx_decoder_free(dec);
	close(fd);
	tu_buf_free(&f);
}

/* LTX.md's layout, read straight off the bytes, and the file checksum
 * recomputed with the bitwise CRC. */
static void test_ltx_layout(void **state)
{
	tu_buf f = TU_BUF_INIT;
	const uint8_t *p;

	(void)state;
	tu_read_file(peer_dir, PEER_LTX, &f);
	p = f.data;
	assert_int_equal(f.len, 100 + 3 * (4 + PEER_PAGE_SIZE) + 4 + 16);
	assert_memory_equal(p, "LTX1", 4);
	assert_int_equal(be64(p + 16), PEER_TXID);
	assert_int_equal(be64(p + 40), PEER_PRE_APPLY);
	assert_int_equal(be64(p + 4) >> 32, 0);                /* flags */
	assert_int_equal(be64(p + 4) & 0xffffffff, PEER_PAGE_SIZE);
	assert_int_equal(be64(p + 12) >> 32, PEER_COMMIT);
	for (int i = 80; i < 100; i++)
		assert_int_equal(p[i], 0);
	for (int i = 0; i < 3; i++) {
		const uint8_t *fr = p + 100 + i * (4 + PEER_PAGE_SIZE);
		assert_int_equal(be64(fr) >> 32, peer_pgnos[i]);
	}
	assert_int_equal(be64(p + f.len - 24) & 0xffffffff, 0); /* terminator */
	assert_int_equal(be64(p + f.len - 16), PEER_POST_APPLY);
	assert_int_equal(be64(p + f.len - 8), PEER_FILE_CHECKSUM);
	assert_int_equal(tu_crc64_bitwise(0, p, f.len - 8) |
				 (UINT64_C(1) << 63),
			 PEER_FILE_CHECKSUM);
	tu_buf_free(&f);
}

/* Re-encoding the peer file's header and pages with ltxfs's encoder gives
 * the LiteFS file back byte for byte. */
static void test_ltx_reencodes_identically(void **state)
{
	tu_buf f = TU_BUF_INIT, out = TU_BUF_INIT;
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;
	ltx_encoder *enc = NULL;
	ltx_header h;
	ltx_trailer t, t2;
	ltx_err err = {0};
	uint8_t page[PEER_PAGE_SIZE];
	uint32_t pgno;
	int rc;

	(void)state;
	tu_read_file(peer_dir, PEER_LTX, &f);
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "p", &dec), 0);
	assert_int_equal(ltx_decoder_read_header(dec, &h), 0);
	assert_int_equal(ltx_encoder_new(&h, 0, tu_buf_write, &out, &enc, &err),
			 0);
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1)
		assert_int_equal(ltx_encoder_add_page(enc, pgno, page, &err),
				 0);
	assert_int_equal(rc, 0);
	assert_int_equal(ltx_decoder_finish(dec, &t), 0);
	assert_int_equal(ltx_encoder_finish(enc, t.post_apply_checksum, &t2,
					    &err), 0);
	assert_int_equal(t2.file_checksum, PEER_FILE_CHECKSUM);
	assert_int_equal(out.len, f.len);
	assert_memory_equal(out.data, f.data, f.len);
	ltx_encoder_free(enc);
	ltx_decoder_free(dec);
	tu_buf_free(&f);
	tu_buf_free(&out);
}

/* Every single-byte change to the LiteFS file is detected. */
static void test_ltx_corruption_detected(void **state)
{
	static const uint8_t masks[] = {0x01, 0xFF};
	tu_buf f = TU_BUF_INIT;

	(void)state;
	tu_read_file(peer_dir, PEER_LTX, &f);
	for (size_t i = 0; i < f.len; i++) {
		for (size_t k = 0; k < 2; k++) {
			tu_decoded d;
			f.data[i] ^= masks[k];
			if (tu_decode(f.data, f.len, &d) == 0)
				fail_msg("byte %zu ^ 0x%02x not detected", i,
					 masks[k]);
			f.data[i] ^= masks[k];
		}
	}
	tu_buf_free(&f);
}

static int peer_db_memfd(void)
{
	tu_buf db = TU_BUF_INIT;
	int fd = tu_memfd();

	tu_read_file(peer_dir, PEER_DB, &db);
	assert_int_equal(db.len, PEER_COMMIT * PEER_PAGE_SIZE);
	assert_int_equal(pwrite(fd, db.data, db.len, 0), (ssize_t)db.len);
	tu_buf_free(&db);
	return fd;
}

static void test_db_checksum(void **state)
{
	int fd = peer_db_memfd();
	uint32_t ps = 0, pages = 0;
	uint64_t sum = 0;
	ltx_err err = {0};

	(void)state;
	assert_int_equal(ltx_dbfile_page_size(fd, &ps, &err), 0);
	assert_int_equal(ps, PEER_PAGE_SIZE);
	assert_int_equal(ltx_dbfile_checksum(fd, ps, &pages, &sum, &err), 0);
	assert_int_equal(pages, PEER_COMMIT);
	assert_int_equal(sum, PEER_POST_APPLY);
	assert_int_equal(tu_db_checksum_ref(fd, ps), PEER_POST_APPLY);
	close(fd);
}

/* The database is the result of the LTX file: its pages 1, 7, 8 are the
 * file's. */
static void test_db_holds_ltx_pages(void **state)
{
	tu_buf f = TU_BUF_INIT;
	int fd = peer_db_memfd();
	uint8_t page[PEER_PAGE_SIZE];

	(void)state;
	tu_read_file(peer_dir, PEER_LTX, &f);
	for (int i = 0; i < 3; i++) {
		const uint8_t *fr = f.data + 100 + i * (4 + PEER_PAGE_SIZE);
		assert_int_equal(pread(fd, page, PEER_PAGE_SIZE,
				       (off_t)(peer_pgnos[i] - 1) *
					       PEER_PAGE_SIZE),
				 PEER_PAGE_SIZE);
		assert_memory_equal(page, fr + 4, PEER_PAGE_SIZE);
	}
	tu_buf_free(&f);
	close(fd);
}

static int apply_peer(int fd, uint64_t *sum, ltx_err *err)
{
	tu_buf f = TU_BUF_INIT;
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;
	int rc;

	tu_read_file(peer_dir, PEER_LTX, &f);
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "p", &dec), 0);
	memset(err, 0, sizeof(*err));
	rc = ltx_dbfile_apply(fd, dec, sum, NULL, err);
	ltx_decoder_free(dec);
	tu_buf_free(&f);
	return rc;
}

/* We lack the base the LiteFS file applies to; a database with any other
 * checksum is refused before anything is written. */
static void test_apply_refuses_mismatched_pre_apply(void **state)
{
	int fd = peer_db_memfd();
	tu_buf before = TU_BUF_INIT, after = TU_BUF_INIT;
	uint64_t sum = PEER_POST_APPLY;
	ltx_err err;

	(void)state;
	tu_read_fd(fd, &before);
	assert_int_equal(apply_peer(fd, &sum, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_PRE_APPLY);
	assert_non_null(strstr(err.msg, "9c74a15b4e4f246c"));
	assert_int_equal(sum, PEER_POST_APPLY);
	tu_read_fd(fd, &after);
	assert_int_equal(after.len, before.len);
	assert_memory_equal(after.data, before.data, before.len);
	tu_buf_free(&before);
	tu_buf_free(&after);
	close(fd);
}

/* Claiming the pre-apply checksum for a database that is not the base is
 * caught after applying: the result's checksum is not the post-apply
 * one. */
static void test_apply_detects_wrong_base(void **state)
{
	int fd = peer_db_memfd();
	uint64_t sum = PEER_PRE_APPLY;
	ltx_err err;

	(void)state;
	assert_int_equal(apply_peer(fd, &sum, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_POST_APPLY);
	assert_int_equal(sum, PEER_PRE_APPLY);
	close(fd);
}

/* A snapshot of the peer database made by ltxfs carries its checksum. */
static void test_db_snapshot(void **state)
{
	int fd = peer_db_memfd(), out = tu_memfd();
	ltx_header tmpl = tu_header(LTX_FLAG_COMPRESS_ZSTD, PEER_PAGE_SIZE, 0,
				    1, 0);
	tu_buf f = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err = {0};
	tu_decoded d;
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;

	(void)state;
	assert_int_equal(ltx_dbfile_encode(fd, &tmpl, 0, tu_buf_write, &f, &tr,
					   &err), 0);
	assert_int_equal(tr.post_apply_checksum, PEER_POST_APPLY);
	assert_int_equal(tu_decode(f.data, f.len, &d), 0);
	assert_int_equal(d.pages, PEER_COMMIT);
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "s", &dec), 0);
	assert_int_equal(ltx_dbfile_apply(out, dec, &sum, NULL, &err), 0);
	assert_int_equal(sum, PEER_POST_APPLY);
	ltx_decoder_free(dec);
	tu_buf_free(&f);
	close(fd);
	close(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ltx_decodes_with_readme_facts),
		cmocka_unit_test(test_ltx_verifies_from_fd),
		cmocka_unit_test(test_ltx_layout),
		cmocka_unit_test(test_ltx_reencodes_identically),
		cmocka_unit_test(test_ltx_corruption_detected),
		cmocka_unit_test(test_db_checksum),
		cmocka_unit_test(test_db_holds_ltx_pages),
		cmocka_unit_test(test_apply_refuses_mismatched_pre_apply),
		cmocka_unit_test(test_apply_detects_wrong_base),
		cmocka_unit_test(test_db_snapshot),
	};
	const char *require = getenv("LTXFS_REQUIRE_PEER");

	peer_dir = tu_peer_dir();
	if (!peer_dir) {
		const char *env = getenv("LTXFS_PEER_DIR");
		fprintf(stderr, "ltx/peer: LiteFS peer vectors not found "
			"(LTXFS_PEER_DIR=%s is not a directory; meson option "
			"peer_dir)\n", env ? env : "(unset)");
		if (require && strcmp(require, "1") == 0) {
			fprintf(stderr, "ltx/peer: LTXFS_REQUIRE_PEER=1: "
				"failing\n");
			return 1;
		}
		return 77;
	}
	return cmocka_run_group_tests_name("ltx/peer", tests, NULL, NULL);
}
