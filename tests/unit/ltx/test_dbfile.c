/* Tests for ltx/dbfile.c: a database file's page size and checksum,
 * snapshots of it, and applying LTX files to it. The peer (LiteFS) vectors
 * are in test_peer.c. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "tests/unit/testutil.h"

#define FLAG63 (UINT64_C(1) << 63)

static off_t fd_size(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_size;
}

static void assert_same_file(int a, int b)
{
	tu_buf x = TU_BUF_INIT, y = TU_BUF_INIT;

	tu_read_fd(a, &x);
	tu_read_fd(b, &y);
	assert_int_equal(x.len, y.len);
	if (x.len)
		assert_memory_equal(x.data, y.data, x.len);
	tu_buf_free(&x);
	tu_buf_free(&y);
}

static void copy_fd(int from, int to)
{
	tu_buf x = TU_BUF_INIT;

	tu_read_fd(from, &x);
	assert_int_equal(ftruncate(to, 0), 0);
	if (x.len)
		assert_int_equal(pwrite(to, x.data, x.len, 0), (ssize_t)x.len);
	tu_buf_free(&x);
}

static void test_page_size(void **state)
{
	ltx_err err;

	(void)state;
	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		int fd = tu_memfd();
		uint32_t got = 0;
		tu_write_db(fd, ps, 1, 0, true);
		assert_int_equal(ltx_dbfile_page_size(fd, &got, &err), 0);
		assert_int_equal(got, ps);
		close(fd);
	}
}

static void test_page_size_errors(void **state)
{
	static const uint8_t bad_sizes[][2] = {
		{0, 0}, {0x01, 0x00}, {0x03, 0xE8}, {0x06, 0x00}, {0x80, 0x01},
	};
	uint8_t page[512];
	uint32_t got = 7;
	ltx_err err;
	int fd;

	(void)state;
	/* Empty and short files. */
	fd = tu_memfd();
	assert_int_equal(ltx_dbfile_page_size(fd, &got, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_TRUNCATED);
	assert_int_equal(err.offset, 0);
	assert_int_equal(write(fd, "SQLite format 3", 16), 16);
	assert_int_equal(ltx_dbfile_page_size(fd, &got, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_TRUNCATED);
	assert_int_equal(err.offset, 16);
	close(fd);
	/* Not SQLite. */
	fd = tu_memfd();
	tu_write_db(fd, 512, 1, 0, false);
	assert_int_equal(ltx_dbfile_page_size(fd, &got, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_MAGIC);
	/* Page sizes SQLite never writes. */
	tu_write_db(fd, 512, 1, 0, true);
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		assert_int_equal(pread(fd, page, 512, 0), 512);
		page[16] = bad_sizes[i][0];
		page[17] = bad_sizes[i][1];
		assert_int_equal(pwrite(fd, page, 512, 0), 512);
		assert_int_equal(ltx_dbfile_page_size(fd, &got, &err),
				 -EBADMSG);
		assert_int_equal(err.kind, LTX_ERR_PAGE_SIZE);
	}
	assert_int_equal(got, 7);
	close(fd);
}

static void check_checksum(uint32_t ps, uint32_t npages)
{
	int fd = tu_memfd();
	uint32_t pages = 0;
	uint64_t sum = 0;
	ltx_err err = {0};

	tu_write_db(fd, ps, npages, ps ^ npages, true);
	assert_int_equal(ltx_dbfile_checksum(fd, ps, &pages, &sum, &err), 0);
	assert_int_equal(pages, npages);
	assert_int_equal(sum, tu_db_checksum_ref(fd, ps));
	close(fd);
}

static void test_checksum(void **state)
{
	(void)state;
	for (uint32_t ps = 512; ps <= 65536; ps *= 2)
		check_checksum(ps, 3);
	/* Across the 1 MiB scan chunk. */
	check_checksum(512, 2100);
	check_checksum(65536, 20);
}

static void test_checksum_empty_and_ragged(void **state)
{
	int fd = tu_memfd();
	uint32_t pages = 9;
	uint64_t sum = 0;
	ltx_err err;

	(void)state;
	assert_int_equal(ltx_dbfile_checksum(fd, 4096, &pages, &sum, &err), 0);
	assert_int_equal(pages, 0);
	assert_int_equal(sum, LTX_CHECKSUM_EMPTY);
	tu_write_db(fd, 4096, 2, 0, true);
	assert_int_equal(ftruncate(fd, 4096 * 2 + 100), 0);
	assert_int_equal(ltx_dbfile_checksum(fd, 4096, &pages, &sum, &err),
			 -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_TRUNCATED);
	close(fd);
}

/* The checksum changes with any page, and only by that page's XOR. */
static void test_checksum_incremental(void **state)
{
	int fd = tu_memfd();
	uint8_t old[1024], page[1024];
	uint32_t pages;
	uint64_t before, after;
	ltx_err err;

	(void)state;
	tu_write_db(fd, 1024, 5, 3, true);
	assert_int_equal(ltx_dbfile_checksum(fd, 1024, &pages, &before, &err),
			 0);
	assert_int_equal(pread(fd, old, 1024, 3 * 1024), 1024);
	memcpy(page, old, 1024);
	page[500] ^= 0x40;
	assert_int_equal(pwrite(fd, page, 1024, 3 * 1024), 1024);
	assert_int_equal(ltx_dbfile_checksum(fd, 1024, &pages, &after, &err),
			 0);
	assert_int_not_equal(before, after);
	assert_int_equal(after,
			 ltx_checksum_xor(ltx_checksum_xor(
						  before,
						  ltx_checksum_page(4, old,
								    1024)),
					  ltx_checksum_page(4, page, 1024)));
	close(fd);
}

/* ltx_dbfile_encode: a snapshot holds the file's pages exactly. */
static void check_encode(uint32_t ps, uint32_t npages, uint32_t flags,
			 uint64_t txid)
{
	int fd = tu_memfd(), out = tu_memfd();
	ltx_header tmpl = tu_header(flags, ps, 999, txid, 0x31);
	tu_buf f = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err = {0};
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;
	ltx_header h;
	uint8_t *page = malloc(ps), *want = malloc(ps);
	uint32_t pgno, next = 1;
	int rc;

	assert_non_null(page);
	assert_non_null(want);
	tu_write_db(fd, ps, npages, 4, true);
	/* An increment applies to a database of its pre-apply checksum. */
	if (txid != 1) {
		tu_write_db(out, ps, npages, 77, true);
		tmpl.pre_apply_checksum = tu_db_checksum_ref(out, ps);
	}
	rc = ltx_dbfile_encode(fd, &tmpl, 0, tu_buf_write, &f, &tr, &err);
	if (rc)
		fail_msg("%s", err.msg);
	assert_int_equal(tr.post_apply_checksum, tu_db_checksum_ref(fd, ps));
	m = (ltx_mem_reader){f.data, f.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "e", &dec), 0);
	assert_int_equal(ltx_decoder_read_header(dec, &h), 0);
	assert_int_equal(h.commit, npages);
	assert_int_equal(h.flags, flags);
	assert_int_equal(h.min_txid, txid);
	assert_int_equal(h.pre_apply_checksum, tmpl.pre_apply_checksum);
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
		assert_int_equal(pgno, next);
		assert_int_equal(pread(fd, want, ps, (off_t)(pgno - 1) * ps),
				 (ssize_t)ps);
		assert_memory_equal(page, want, ps);
		next++;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(next, npages + 1);
	assert_int_equal(ltx_decoder_finish(dec, NULL), 0);
	ltx_decoder_free(dec);
	/* Applying it (to an empty file, or for an increment to the file
	 * it increments) gives the same file back. */
	{
		uint64_t sum = LTX_CHECKSUM_EMPTY;
		if (txid != 1)
			sum = tmpl.pre_apply_checksum;
		m = (ltx_mem_reader){f.data, f.len, 0};
		assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "e",
						 &dec), 0);
		rc = ltx_dbfile_apply(out, dec, &sum, NULL, &err);
		if (rc)
			fail_msg("%s", err.msg);
		assert_int_equal(sum, tr.post_apply_checksum);
		assert_same_file(fd, out);
		ltx_decoder_free(dec);
	}
	tu_buf_free(&f);
	free(page);
	free(want);
	close(fd);
	close(out);
}

static void test_encode(void **state)
{
	(void)state;
	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		check_encode(ps, 3, 0, 1);
		check_encode(ps, 3, LTX_FLAG_COMPRESS_ZSTD, 1);
	}
	/* A full-page increment rather than a snapshot. */
	check_encode(4096, 4, 0, 6);
	check_encode(512, 2100, LTX_FLAG_COMPRESS_ZSTD, 1);
}

static void test_encode_errors(void **state)
{
	int fd = tu_memfd();
	ltx_header tmpl = tu_header(0, 4096, 0, 1, 0);
	tu_buf f = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err;

	(void)state;
	/* An empty database is a snapshot with no pages. */
	assert_int_equal(ltx_dbfile_encode(fd, &tmpl, 0, tu_buf_write, &f, &tr,
					   &err), 0);
	assert_int_equal(tr.post_apply_checksum, LTX_CHECKSUM_EMPTY);
	assert_int_equal(f.len, 100 + 4 + 16);
	tu_buf_free(&f);
	/* A ragged file. */
	assert_int_equal(ftruncate(fd, 4097), 0);
	assert_int_equal(ltx_dbfile_encode(fd, &tmpl, 0, tu_buf_write, &f, &tr,
					   &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_TRUNCATED);
	assert_int_equal(f.len, 0);
	/* A bad template. */
	assert_int_equal(ftruncate(fd, 4096), 0);
	tmpl.flags = LTX_FLAG_COMPRESS_LZ4;
	assert_int_equal(ltx_dbfile_encode(fd, &tmpl, 0, tu_buf_write, &f, &tr,
					   &err), -ENOTSUP);
	assert_int_equal(err.kind, LTX_ERR_UNSUPPORTED);
	close(fd);
}

/* Builds an increment turning base into a new file: pgnos rewritten with
 * tu_fill_page(seed), the file cut or grown to commit pages (grown pages
 * that no frame covers read as zeros). want gets the expected result. */
static void make_increment(int base, uint32_t ps, uint32_t commit,
			   const uint32_t *pgnos, size_t n, uint32_t seed,
			   uint32_t flags, uint64_t txid, tu_buf *ltx, int want)
{
	uint8_t *page = malloc(ps);
	ltx_header h;
	ltx_err err = {0};
	uint64_t pre = tu_db_checksum_ref(base, ps);

	assert_non_null(page);
	copy_fd(base, want);
	for (size_t i = 0; i < n; i++) {
		tu_fill_page(page, ps, pgnos[i], seed);
		assert_int_equal(pwrite(want, page, ps,
					(off_t)(pgnos[i] - 1) * ps),
				 (ssize_t)ps);
	}
	assert_int_equal(ftruncate(want, (off_t)commit * ps), 0);
	h = tu_header(flags, ps, commit, txid, pre);
	assert_int_equal(h.pre_apply_checksum, pre);
	assert_int_equal(tu_encode(&h, 0, pgnos, n, seed,
				   tu_db_checksum_ref(want, ps), ltx, NULL,
				   &err), 0);
	free(page);
}

static int apply_buf(int fd, const tu_buf *ltx, uint64_t *sum,
		     ltx_header *hdr, ltx_err *err)
{
	ltx_mem_reader m = {ltx->data, ltx->len, 0};
	ltx_decoder *dec = NULL;
	int rc;

	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "apply", &dec),
			 0);
	memset(err, 0, sizeof(*err));
	rc = ltx_dbfile_apply(fd, dec, sum, hdr, err);
	ltx_decoder_free(dec);
	return rc;
}

/* Applies an increment and checks the file and the checksum both ways:
 * against the expected file, and recomputed from the file itself. */
static void check_increment(uint32_t base_pages, uint32_t commit,
			    const uint32_t *pgnos, size_t n, uint32_t flags)
{
	const uint32_t ps = 1024;
	int db = tu_memfd(), want = tu_memfd();
	tu_buf ltx = TU_BUF_INIT;
	uint64_t sum;
	uint32_t pages;
	uint64_t again;
	ltx_header h;
	ltx_err err;
	int rc;

	tu_write_db(db, ps, base_pages, 1, true);
	make_increment(db, ps, commit, pgnos, n, 9, flags, 2, &ltx, want);
	sum = tu_db_checksum_ref(db, ps);
	rc = apply_buf(db, &ltx, &sum, &h, &err);
	if (rc)
		fail_msg("base %u pages, commit %u: %s", base_pages, commit,
			 err.msg);
	assert_int_equal(h.commit, commit);
	assert_int_equal(fd_size(db), (off_t)commit * ps);
	assert_same_file(db, want);
	assert_int_equal(sum, tu_db_checksum_ref(want, ps));
	assert_int_equal(ltx_dbfile_checksum(db, ps, &pages, &again, &err), 0);
	assert_int_equal(again, sum);
	tu_buf_free(&ltx);
	close(db);
	close(want);
}

static void test_apply_increments(void **state)
{
	static const uint32_t some[] = {2, 4};
	static const uint32_t grow[] = {5, 6};
	static const uint32_t first[] = {1};
	static const uint32_t all[] = {1, 2, 3, 4};

	(void)state;
	for (uint32_t flags = 0; flags <= LTX_FLAG_COMPRESS_ZSTD; flags += 4) {
		check_increment(4, 4, some, 2, flags);     /* rewrite */
		check_increment(4, 6, grow, 2, flags);     /* grow */
		check_increment(4, 2, first, 1, flags);    /* shrink */
		check_increment(4, 0, NULL, 0, flags);     /* delete */
		check_increment(0, 4, all, 4, flags);      /* from nothing */
		check_increment(4, 4, NULL, 0, flags);     /* no pages */
	}
}

/* A database that grows by more than the pages a file carries: the pages
 * in between read as zeros and count in the checksum like any other. */
static void test_apply_grow_with_gap(void **state)
{
	static const uint32_t last[] = {6};

	(void)state;
	check_increment(2, 6, last, 1, 0);
	check_increment(2, 6, last, 1, LTX_FLAG_COMPRESS_ZSTD);
	check_increment(0, 6, last, 1, 0);
}

static void test_apply_snapshot(void **state)
{
	int src = tu_memfd(), db = tu_memfd();
	ltx_header tmpl = tu_header(LTX_FLAG_COMPRESS_ZSTD, 2048, 0, 1, 0);
	tu_buf ltx = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err;
	ltx_header h;
	uint64_t sum;

	(void)state;
	tu_write_db(src, 2048, 5, 8, true);
	assert_int_equal(ltx_dbfile_encode(src, &tmpl, 0, tu_buf_write, &ltx,
					   &tr, &err), 0);
	/* Over a larger, different database: whatever its checksum. */
	tu_write_db(db, 2048, 9, 2, true);
	sum = UINT64_C(0x8000000000001234);
	assert_int_equal(apply_buf(db, &ltx, &sum, &h, &err), 0);
	assert_true(ltx_header_is_snapshot(&h));
	assert_int_equal(sum, tr.post_apply_checksum);
	assert_same_file(db, src);
	tu_buf_free(&ltx);
	close(src);
	close(db);
}

/* A transaction that changes the page size (VACUUM after PRAGMA
 * page_size) holds every page; applied over the old file, its checksum
 * is its pages' alone (the old pages are all gone), as on a replica. */
static void check_page_size_change(uint32_t old_ps, uint32_t old_pages,
				   uint32_t new_ps, uint32_t new_pages)
{
	int db = tu_memfd(), want = tu_memfd();
	ltx_header tmpl;
	tu_buf ltx = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err;
	ltx_header h;
	uint64_t sum;
	int rc;

	tu_write_db(db, old_ps, old_pages, 3, true);
	tu_write_db(want, new_ps, new_pages, 4, true);
	sum = tu_db_checksum_ref(db, old_ps);
	tmpl = tu_header(0, new_ps, 0, 7, sum);
	assert_int_equal(ltx_dbfile_encode(want, &tmpl, 0, tu_buf_write, &ltx,
					   &tr, &err), 0);
	rc = apply_buf(db, &ltx, &sum, &h, &err);
	if (rc)
		fail_msg("%u x %u -> %u x %u: %s", old_pages, old_ps, new_pages,
			 new_ps, err.msg);
	assert_false(ltx_header_is_snapshot(&h));
	assert_int_equal(sum, tr.post_apply_checksum);
	assert_int_equal(sum, tu_db_checksum_ref(want, new_ps));
	assert_same_file(db, want);
	tu_buf_free(&ltx);
	close(db);
	close(want);
}

static void test_apply_page_size_change(void **state)
{
	(void)state;
	check_page_size_change(4096, 14, 1024, 52);  /* smaller, shorter */
	check_page_size_change(4096, 3, 1024, 20);   /* smaller, longer */
	check_page_size_change(1024, 52, 8192, 7);   /* larger */
	check_page_size_change(512, 3, 65536, 2);
}

/* A chain: snapshot, then increments, each from the one before. */
static void test_apply_chain(void **state)
{
	static const uint32_t a[] = {1, 3};
	static const uint32_t b[] = {2, 5, 7};
	int src = tu_memfd(), db = tu_memfd(), want = tu_memfd();
	ltx_header tmpl = tu_header(0, 512, 0, 1, 0);
	tu_buf l1 = TU_BUF_INIT, l2 = TU_BUF_INIT, l3 = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err;
	uint64_t sum = LTX_CHECKSUM_EMPTY;

	(void)state;
	tu_write_db(src, 512, 4, 1, true);
	assert_int_equal(ltx_dbfile_encode(src, &tmpl, 0, tu_buf_write, &l1,
					   &tr, &err), 0);
	make_increment(src, 512, 4, a, 2, 2, 0, 2, &l2, want);
	copy_fd(want, src);
	make_increment(src, 512, 7, b, 3, 3, LTX_FLAG_COMPRESS_ZSTD, 3, &l3,
		       want);
	assert_int_equal(apply_buf(db, &l1, &sum, NULL, &err), 0);
	assert_int_equal(apply_buf(db, &l2, &sum, NULL, &err), 0);
	assert_int_equal(apply_buf(db, &l3, &sum, NULL, &err), 0);
	assert_same_file(db, want);
	assert_int_equal(sum, tu_db_checksum_ref(want, 512));
	/* Applying the last one again: its pre-apply no longer matches. */
	assert_int_equal(apply_buf(db, &l3, &sum, NULL, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_PRE_APPLY);
	tu_buf_free(&l1);
	tu_buf_free(&l2);
	tu_buf_free(&l3);
	close(src);
	close(db);
	close(want);
}

/* A mismatched pre-apply checksum is refused before anything is
 * written. */
static void test_apply_refuses_pre_apply_mismatch(void **state)
{
	static const uint32_t pg[] = {2};
	int db = tu_memfd(), want = tu_memfd(), before = tu_memfd();
	tu_buf ltx = TU_BUF_INIT;
	ltx_err err;
	uint64_t sum, orig;

	(void)state;
	tu_write_db(db, 1024, 3, 1, true);
	copy_fd(db, before);
	make_increment(db, 1024, 3, pg, 1, 5, 0, 2, &ltx, want);
	orig = sum = tu_db_checksum_ref(db, 1024) ^ 0x10;
	assert_int_equal(apply_buf(db, &ltx, &sum, NULL, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_PRE_APPLY);
	assert_int_equal(err.offset, 40);
	assert_non_null(strstr(err.msg, "pre-apply"));
	assert_int_equal(sum, orig);
	assert_same_file(db, before);
	tu_buf_free(&ltx);
	close(db);
	close(want);
	close(before);
}

/* A well-formed file whose post-apply checksum does not describe the
 * result: the mismatch is reported, not ignored. */
static void test_apply_reports_post_apply_mismatch(void **state)
{
	static const uint32_t pg[] = {2};
	int db = tu_memfd();
	ltx_header h;
	tu_buf ltx = TU_BUF_INIT;
	ltx_err err = {0};
	uint64_t sum, orig;

	(void)state;
	tu_write_db(db, 1024, 3, 1, true);
	orig = sum = tu_db_checksum_ref(db, 1024);
	h = tu_header(0, 1024, 3, 2, sum);
	assert_int_equal(tu_encode(&h, 0, pg, 1, 5, FLAG63 | 77, &ltx, NULL,
				   &err), 0);
	assert_int_equal(apply_buf(db, &ltx, &sum, NULL, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_POST_APPLY);
	assert_non_null(strstr(err.msg, "post-apply"));
	assert_int_equal(sum, orig);
	tu_buf_free(&ltx);
	close(db);
}

/* Decoder errors come out of apply with their kind and message. */
static void test_apply_corrupt_file(void **state)
{
	static const uint32_t pg[] = {2, 3};
	int db = tu_memfd(), want = tu_memfd();
	tu_buf ltx = TU_BUF_INIT;
	ltx_err err;
	uint64_t sum, orig;

	(void)state;
	tu_write_db(db, 1024, 3, 1, true);
	make_increment(db, 1024, 3, pg, 2, 5, 0, 2, &ltx, want);
	orig = tu_db_checksum_ref(db, 1024);
	/* A page byte: caught by the file checksum at the end. */
	ltx.data[100 + 4 + 10] ^= 1;
	sum = orig;
	assert_int_equal(apply_buf(db, &ltx, &sum, NULL, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_FILE_CHECKSUM);
	assert_non_null(strstr(err.msg, "apply: "));
	assert_int_equal(sum, orig);
	ltx.data[100 + 4 + 10] ^= 1;
	/* The header. */
	ltx.data[0] = 'X';
	assert_int_equal(apply_buf(db, &ltx, &sum, NULL, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_MAGIC);
	ltx.data[0] = 'L';
	/* Truncated. */
	ltx.len -= 3;
	assert_int_equal(apply_buf(db, &ltx, &sum, NULL, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_TRUNCATED);
	assert_int_equal(sum, orig);
	tu_buf_free(&ltx);
	close(db);
	close(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page_size),
		cmocka_unit_test(test_page_size_errors),
		cmocka_unit_test(test_checksum),
		cmocka_unit_test(test_checksum_empty_and_ragged),
		cmocka_unit_test(test_checksum_incremental),
		cmocka_unit_test(test_encode),
		cmocka_unit_test(test_encode_errors),
		cmocka_unit_test(test_apply_increments),
		cmocka_unit_test(test_apply_grow_with_gap),
		cmocka_unit_test(test_apply_snapshot),
		cmocka_unit_test(test_apply_page_size_change),
		cmocka_unit_test(test_apply_chain),
		cmocka_unit_test(test_apply_refuses_pre_apply_mismatch),
		cmocka_unit_test(test_apply_reports_post_apply_mismatch),
		cmocka_unit_test(test_apply_corrupt_file),
	};

	return cmocka_run_group_tests_name("ltx/dbfile", tests, NULL, NULL);
}
