/* The lock page (LTX.md: the page holding byte 0x40000000, never in a
 * file, never in a checksum) with 512-byte pages, where it is page
 * 0x40000000 / 512 + 1 = 2097153, across ltx/dbfile.c, ltx/encoder.c and
 * ltx/decoder.c. The databases are sparse memfds a little over 1 GiB
 * long; each test scans them whole, so this runs in suite 'slow'. */
#include <errno.h>
#include <stdint.h>
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

#define PS 512
#define LOCK UINT32_C(2097153)
#define COMMIT (LOCK + 2)

static void put_page(int fd, uint32_t pgno, uint32_t seed)
{
	uint8_t page[PS];

	tu_fill_page(page, PS, pgno, seed);
	assert_int_equal(pwrite(fd, page, PS, (off_t)(pgno - 1) * PS), PS);
}

/* A sparse database of `commit` pages: a SQLite page 1, distinct pages
 * around the lock page, and garbage in the lock page itself. */
static int sparse_db(uint32_t commit)
{
	int fd = tu_memfd();

	tu_write_db(fd, PS, 1, 1, true);
	assert_int_equal(ftruncate(fd, (off_t)commit * PS), 0);
	for (uint32_t p = LOCK - 3; p <= commit && p <= LOCK + 2; p++)
		put_page(fd, p, 1);
	return fd;
}

/* The checksum of every page, the lock page included or not, computed
 * here page by page. */
static uint64_t scan_checksum(int fd, uint32_t commit, int with_lock)
{
	enum { CHUNK = 2048 };
	uint8_t *buf = malloc((size_t)CHUNK * PS);
	uint64_t sum = LTX_CHECKSUM_EMPTY;

	assert_non_null(buf);
	for (uint32_t first = 1; first <= commit; first += CHUNK) {
		uint32_t n = commit - first + 1 < CHUNK ? commit - first + 1
							: CHUNK;
		assert_int_equal(pread(fd, buf, (size_t)n * PS,
				       (off_t)(first - 1) * PS),
				 (ssize_t)n * PS);
		for (uint32_t i = 0; i < n; i++) {
			if (first + i == LOCK && !with_lock)
				continue;
			sum ^= ltx_checksum_page(first + i, buf + i * PS, PS);
		}
	}
	free(buf);
	return sum | LTX_CHECKSUM_FLAG;
}

static uint64_t db_checksum(int fd)
{
	uint32_t pages = 0;
	uint64_t sum = 0;
	ltx_err err = {0};

	assert_int_equal(ltx_dbfile_checksum(fd, PS, &pages, &sum, &err), 0);
	return sum;
}

static void test_lock_pgno(void **state)
{
	(void)state;
	assert_int_equal(ltx_lock_pgno(PS), LOCK);
	assert_int_equal((uint64_t)(LOCK - 1) * PS, LTX_PENDING_BYTE);
}

/* The database checksum skips the lock page, whatever it holds. */
static void test_checksum_skips_lock_page(void **state)
{
	int fd = sparse_db(COMMIT);
	uint64_t sum = db_checksum(fd);
	uint8_t junk[PS];

	(void)state;
	assert_int_equal(sum, scan_checksum(fd, COMMIT, 0));
	assert_int_not_equal(sum, scan_checksum(fd, COMMIT, 1));
	/* Rewriting the lock page changes nothing... */
	memset(junk, 0x5C, sizeof(junk));
	assert_int_equal(pwrite(fd, junk, PS, (off_t)(LOCK - 1) * PS), PS);
	assert_int_equal(db_checksum(fd), sum);
	/* ...rewriting its neighbours does. */
	assert_int_equal(pwrite(fd, junk, PS, (off_t)LOCK * PS), PS);
	assert_int_not_equal(db_checksum(fd), sum);
	close(fd);
}

/* A sink that checks an uncompressed file on the fly: it counts bytes
 * and page frames, and records whether the lock page went by. */
struct scan_sink {
	uint64_t bytes;
	uint64_t frames;
	uint32_t last;
	int saw_lock;
	uint8_t carry[4 + PS];
	size_t carry_len;
	int done; /* past the terminator */
};

static int scan_write(void *ctx, const void *buf, size_t n)
{
	struct scan_sink *s = ctx;
	const uint8_t *p = buf;

	if (s->done) {
		s->bytes += n;
		return 0;
	}
	for (size_t i = 0; i < n; i++, s->bytes++) {
		/* Frames start after the header, every 4 + PS bytes. */
		if (s->bytes < LTX_HEADER_SIZE)
			continue;
		s->carry[s->carry_len++] = p[i];
		if (s->carry_len == 4) {
			uint32_t pgno = (uint32_t)s->carry[0] << 24 |
					(uint32_t)s->carry[1] << 16 |
					(uint32_t)s->carry[2] << 8 |
					s->carry[3];
			if (pgno == 0) {
				s->done = 1;
				s->bytes += n - i;
				return 0; /* the terminator; trailer follows */
			}
			if (pgno == LOCK)
				s->saw_lock = 1;
			if (pgno <= s->last)
				return -EPROTO;
			s->last = pgno;
			s->frames++;
		}
		if (s->carry_len == sizeof(s->carry))
			s->carry_len = 0;
	}
	return 0;
}

/* A snapshot across the lock page leaves it out: uncompressed, frame by
 * frame, and compressed, through the decoder. */
static void test_snapshot_skips_lock_page(void **state)
{
	int fd = sparse_db(COMMIT);
	ltx_header tmpl = tu_header(0, PS, 0, 1, 0);
	struct scan_sink *sink = calloc(1, sizeof(*sink));
	tu_buf z = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err = {0};
	uint64_t sum = db_checksum(fd);

	(void)state;
	assert_non_null(sink);
	assert_int_equal(ltx_dbfile_encode(fd, &tmpl, 0, scan_write, sink, &tr,
					   &err), 0);
	assert_false(sink->saw_lock);
	assert_int_equal(sink->frames, COMMIT - 1);
	assert_int_equal(sink->last, COMMIT);
	assert_int_equal(sink->bytes, LTX_HEADER_SIZE + 4 + LTX_TRAILER_SIZE +
					      (uint64_t)(COMMIT - 1) * (4 + PS));
	assert_int_equal(tr.post_apply_checksum, sum);
	free(sink);

	tmpl.flags = LTX_FLAG_COMPRESS_ZSTD;
	assert_int_equal(ltx_dbfile_encode(fd, &tmpl, 0, tu_buf_write, &z, &tr,
					   &err), 0);
	assert_int_equal(tr.post_apply_checksum, sum);
	{
		ltx_mem_reader m = {z.data, z.len, 0};
		ltx_decoder *dec = NULL;
		uint8_t page[PS];
		uint32_t pgno, want = 1;
		uint64_t n = 0;
		int rc;
		assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "z",
						 &dec), 0);
		assert_int_equal(ltx_decoder_read_header(dec, NULL), 0);
		while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
			if (want == LOCK)
				want++;
			if (pgno != want)
				fail_msg("page %u: expected %u", pgno, want);
			want++;
			n++;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(n, COMMIT - 1);
		assert_int_equal(ltx_decoder_finish(dec, NULL), 0);
		assert_int_equal(ltx_decoder_page_checksum(dec), sum);
		ltx_decoder_free(dec);
	}
	tu_buf_free(&z);
	close(fd);
}

/* The encoder and decoder refuse the lock page in an increment. */
static void test_increment_lock_page_refused(void **state)
{
	ltx_header h = tu_header(0, PS, COMMIT, 5, 1);
	static const uint32_t pg[] = {LOCK - 1, LOCK};
	uint8_t page[PS];
	tu_buf out = TU_BUF_INIT, block = TU_BUF_INIT, raw = TU_BUF_INIT;
	ltx_encoder *enc = NULL;
	ltx_err err = {0};
	tu_decoded d;

	(void)state;
	memset(page, 1, sizeof(page));
	assert_int_equal(ltx_encoder_new(&h, 0, tu_buf_write, &out, &enc, &err),
			 0);
	assert_int_equal(ltx_encoder_add_page(enc, LOCK - 1, page, &err), 0);
	assert_int_equal(ltx_encoder_add_page(enc, LOCK, page, &err), -EBADMSG);
	assert_int_equal(err.kind, LTX_ERR_LOCK_PAGE);
	assert_int_equal(ltx_encoder_add_page(enc, LOCK + 1, page, &err), 0);
	ltx_encoder_free(enc);
	tu_buf_free(&out);

	for (size_t i = 0; i < 2; i++)
		tu_block_page(&block, pg[i], page, PS);
	tu_buf_append_be32(&block, 0);
	tu_raw_file(&h, &block, LTX_CHECKSUM_FLAG, false, &raw);
	assert_int_equal(tu_decode(raw.data, raw.len, &d), -EBADMSG);
	assert_int_equal(d.err.kind, LTX_ERR_LOCK_PAGE);
	assert_int_equal(d.err.offset, LTX_HEADER_SIZE + 4 + PS);
	tu_buf_free(&block);
	tu_buf_free(&raw);
}

/* Builds an increment from sparse_db(base) to base + pgnos (seed 9) cut
 * or grown to commit, applies it, and checks the checksum it returns is
 * the database's, computed here. */
static void apply_increment(uint32_t base, uint32_t commit,
			    const uint32_t *pgnos, size_t n)
{
	int db = sparse_db(base), want = sparse_db(base);
	uint64_t pre = db_checksum(db), post, sum;
	ltx_header h = tu_header(0, PS, commit, 9, pre);
	tu_buf ltx = TU_BUF_INIT;
	ltx_mem_reader m;
	ltx_decoder *dec = NULL;
	ltx_err err = {0};
	uint8_t lock_before[PS], lock_after[PS];
	int rc;

	for (size_t i = 0; i < n; i++)
		put_page(want, pgnos[i], 9);
	assert_int_equal(ftruncate(want, (off_t)commit * PS), 0);
	post = scan_checksum(want, commit, 0);
	assert_int_equal(tu_encode(&h, 0, pgnos, n, 9, post, &ltx, NULL, &err),
			 0);
	memset(lock_before, 0, PS);
	if (base >= LOCK)
		assert_int_equal(pread(db, lock_before, PS,
				       (off_t)(LOCK - 1) * PS), PS);

	m = (ltx_mem_reader){ltx.data, ltx.len, 0};
	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "i", &dec), 0);
	sum = pre;
	rc = ltx_dbfile_apply(db, dec, &sum, NULL, &err);
	if (rc)
		fail_msg("%s", err.msg);
	assert_int_equal(sum, post);
	assert_int_equal(db_checksum(db), post);
	/* The lock page is left as it was (a hole when the file grew). */
	if (commit >= LOCK) {
		assert_int_equal(pread(db, lock_after, PS,
				       (off_t)(LOCK - 1) * PS), PS);
		assert_memory_equal(lock_after, lock_before, PS);
	}
	ltx_decoder_free(dec);
	tu_buf_free(&ltx);
	close(db);
	close(want);
}

static void test_apply_across_lock_page(void **state)
{
	static const uint32_t around[] = {LOCK - 1, LOCK + 1};
	static const uint32_t grow[] = {LOCK - 2, LOCK - 1, LOCK + 1, LOCK + 2};
	static const uint32_t jump[] = {LOCK + 2};

	(void)state;
	/* Rewrite the neighbours of the lock page. */
	apply_increment(COMMIT, COMMIT, around, 2);
	/* Grow across it, every page present. */
	apply_increment(LOCK - 3, COMMIT, grow, 4);
	/* Grow across it with only the last page: the pages between are
	 * zeros and count, the lock page does not. */
	apply_increment(LOCK - 3, COMMIT, jump, 1);
	/* Shrink back below it. */
	apply_increment(COMMIT, LOCK - 2, NULL, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lock_pgno),
		cmocka_unit_test(test_checksum_skips_lock_page),
		cmocka_unit_test(test_snapshot_skips_lock_page),
		cmocka_unit_test(test_increment_lock_page_refused),
		cmocka_unit_test(test_apply_across_lock_page),
	};

	return cmocka_run_group_tests_name("ltx/lock_page", tests, NULL, NULL);
}
