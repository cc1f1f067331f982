/*
 * Tests for fs/wal.c: a WAL header is valid exactly when SQLite's
 * walIndexRecover takes it (magic, version, a page size that is a power
 * of two from 512 to 65536 written as is, the header checksum); a frame
 * is valid only with the header's salts, a page number and the running
 * checksum.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fs/wal.h"
#include "lib/bytes.h"

/* A header with page size ps, its checksum computed. */
static void make_hdr(uint8_t *h, uint32_t magic, uint32_t ps)
{
	uint32_t s0 = 0, s1 = 0;

	memset(h, 0, FS_WAL_HDR_SIZE);
	put_be32(h, magic);
	put_be32(h + 4, FS_WAL_VERSION);
	put_be32(h + 8, ps);
	put_be32(h + 12, 7);
	put_be32(h + 16, 0x11111111);
	put_be32(h + 20, 0x22222222);
	fs_wal_checksum(magic == FS_WAL_MAGIC_BE, h, 24, &s0, &s1);
	put_be32(h + 24, s0);
	put_be32(h + 28, s1);
}

static void test_hdr_page_sizes(void **state)
{
	uint8_t h[FS_WAL_HDR_SIZE];
	fs_wal_hdr w;
	static const uint32_t ok[] = {512, 1024, 4096, 32768, 65536};
	static const uint32_t bad[] = {0, 1, 256, 511, 513, 3000, 131072};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		make_hdr(h, FS_WAL_MAGIC_LE, ok[i]);
		assert_int_equal(fs_wal_hdr_parse(h, &w), 0);
		assert_int_equal(w.page_size, ok[i]);
		assert_int_equal(w.salt1, 0x11111111);
		assert_int_equal(w.ckpt_seq, 7);
	}
	/* 1 means 65536 in a database header, never in a WAL's: SQLite
	 * takes such a WAL as empty. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_hdr(h, FS_WAL_MAGIC_LE, bad[i]);
		assert_int_equal(fs_wal_hdr_parse(h, &w), -EBADMSG);
	}
}

static void test_hdr_fields(void **state)
{
	uint8_t h[FS_WAL_HDR_SIZE];
	fs_wal_hdr w;

	(void)state;
	make_hdr(h, FS_WAL_MAGIC_BE, 4096);
	assert_int_equal(fs_wal_hdr_parse(h, &w), 0);
	assert_true(w.big_endian_cksum);
	make_hdr(h, 0x377f0684, 4096);
	assert_int_equal(fs_wal_hdr_parse(h, &w), -EBADMSG);
	make_hdr(h, FS_WAL_MAGIC_LE, 4096);
	put_be32(h + 4, FS_WAL_VERSION + 1);
	assert_int_equal(fs_wal_hdr_parse(h, &w), -EBADMSG);
	make_hdr(h, FS_WAL_MAGIC_LE, 4096);
	h[29] ^= 1; /* checksum */
	assert_int_equal(fs_wal_hdr_parse(h, &w), -EBADMSG);
}

static void test_frame_check(void **state)
{
	uint8_t h[FS_WAL_HDR_SIZE], fh[FS_WAL_FRAME_HDR_SIZE], page[512];
	uint32_t s0, s1, a, b, pgno, commit;
	fs_wal_hdr w;

	(void)state;
	make_hdr(h, FS_WAL_MAGIC_LE, 512);
	assert_int_equal(fs_wal_hdr_parse(h, &w), 0);
	memset(page, 0xab, sizeof(page));
	memset(fh, 0, sizeof(fh));
	put_be32(fh, 3);
	put_be32(fh + 4, 5);
	put_be32(fh + 8, w.salt1);
	put_be32(fh + 12, w.salt2);
	s0 = w.cksum1;
	s1 = w.cksum2;
	fs_wal_checksum(false, fh, 8, &s0, &s1);
	fs_wal_checksum(false, page, sizeof(page), &s0, &s1);
	put_be32(fh + 16, s0);
	put_be32(fh + 20, s1);
	a = w.cksum1;
	b = w.cksum2;
	assert_true(fs_wal_frame_check(&w, fh, page, &a, &b, &pgno, &commit));
	assert_int_equal(pgno, 3);
	assert_int_equal(commit, 5);
	assert_int_equal(a, s0);
	assert_int_equal(b, s1);
	/* Another generation's salt, or page 0: not a frame. */
	a = w.cksum1;
	b = w.cksum2;
	put_be32(fh + 12, w.salt2 + 1);
	assert_false(fs_wal_frame_check(&w, fh, page, &a, &b, &pgno,
					&commit));
	put_be32(fh + 12, w.salt2);
	put_be32(fh, 0);
	assert_false(fs_wal_frame_check(&w, fh, page, &a, &b, &pgno,
					&commit));
	assert_int_equal(a, w.cksum1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_page_sizes),
		cmocka_unit_test(test_hdr_fields),
		cmocka_unit_test(test_frame_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
