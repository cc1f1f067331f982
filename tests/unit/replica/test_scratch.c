/*
 * replica/scratch.c: where records received from the primary are kept
 * until applied, in a real file (a memfd). The invariant every case
 * checks: no byte of a queued record, or of the record being received,
 * is lost before it is applied (S1 in scratch.c), whatever is applied,
 * moved or truncated meanwhile.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/io.h"
#include "replica/scratch.h"

/* Databases are only compared, never dereferenced. */
static int db_a_, db_b_;
#define DB_A ((fs_db *)&db_a_)
#define DB_B ((fs_db *)&db_b_)

static rep_scratch *new_scratch(uint64_t keep)
{
	int fd = memfd_create("scratch-test", MFD_CLOEXEC);
	rep_scratch *s = NULL;

	assert_true(fd >= 0);
	assert_int_equal(rep_scratch_new(fd, keep, &s), 0);
	return s;
}

/* The i-th byte of the record seeded seed. */
static uint8_t byte_of(uint32_t seed, uint64_t i)
{
	return (uint8_t)((i * 131u + seed * 7919u + (i >> 9)) & 0xff);
}

/* Writes bytes [from, to) of record seed in pieces of up to step. */
static void feed(rep_scratch *s, uint32_t seed, uint64_t from, uint64_t to,
		 size_t step)
{
	uint8_t *buf = malloc(step);

	assert_non_null(buf);
	while (from < to) {
		size_t n = to - from < step ? (size_t)(to - from) : step;
		for (size_t i = 0; i < n; i++)
			buf[i] = byte_of(seed, from + i);
		assert_int_equal(rep_scratch_write(s, buf, n), 0);
		from += n;
	}
	free(buf);
}

/* A whole record of len bytes, queued. */
static void record(rep_scratch *s, fs_db *db, uint32_t seed, uint64_t len)
{
	assert_int_equal(rep_scratch_begin(s, len), 0);
	feed(s, seed, 0, len, 4096);
	assert_int_equal(rep_scratch_end(s, db, 0, seed), 0);
}

/* The file holds record seed's first n bytes at off. */
static void check_bytes(rep_scratch *s, uint32_t seed, uint64_t off,
			uint64_t n)
{
	uint8_t *buf = malloc(n ? n : 1);

	assert_non_null(buf);
	assert_int_equal(lib_io_pread_full(rep_scratch_fd(s), buf, n,
					   (off_t)off, NULL),
			 0);
	for (uint64_t i = 0; i < n; i++)
		if (buf[i] != byte_of(seed, i))
			fail_msg("record %u: byte %llu at offset %llu is %u, "
				 "not %u", seed, (unsigned long long)i,
				 (unsigned long long)(off + i), buf[i],
				 byte_of(seed, i));
	free(buf);
}

static uint64_t file_size(rep_scratch *s)
{
	struct stat st;

	assert_int_equal(fstat(rep_scratch_fd(s), &st), 0);
	return (uint64_t)st.st_size;
}

static void test_records_follow_each_other(void **state)
{
	rep_scratch *s = new_scratch(REP_SCRATCH_KEEP);

	record(s, DB_A, 1, 1000);
	record(s, DB_B, 2, 300);
	record(s, DB_A, 3, 5000);
	assert_int_equal(rep_scratch_count(s), 3);
	assert_int_equal(rep_scratch_queued_bytes(s), 6300);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 0);
	assert_int_equal(rep_scratch_rec_at(s, 1)->off, 1000);
	assert_int_equal(rep_scratch_rec_at(s, 2)->off, 1300);
	assert_true(rep_scratch_rec_at(s, 1)->db == DB_B);
	assert_int_equal(rep_scratch_rec_at(s, 2)->ts, 3);
	check_bytes(s, 1, 0, 1000);
	check_bytes(s, 2, 1000, 300);
	check_bytes(s, 3, 1300, 5000);
	/* All applied: the next record reuses the file from its start. */
	for (size_t i = 0; i < 3; i++)
		rep_scratch_rec_at(s, i)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	assert_int_equal(rep_scratch_count(s), 0);
	assert_int_equal(rep_scratch_queued_bytes(s), 0);
	record(s, DB_B, 4, 700);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 0);
	check_bytes(s, 4, 0, 700);
	rep_scratch_free(s);
}

/* The bug of 796ed89: a batch past the keep size is applied (the bytes
 * libcurl handed over ended) while the next record has its DATA but not
 * its END; the truncation took that record's bytes ("bad magic at byte
 * 0" once its END came). */
static void check_half_received_survives(uint64_t keep, uint64_t first)
{
	rep_scratch *s = new_scratch(keep);
	uint64_t len, got;

	record(s, DB_A, 1, first);
	assert_int_equal(rep_scratch_begin(s, 500), 0);
	feed(s, 2, 0, 300, 300);
	rep_scratch_rec_at(s, 0)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	/* Moved to the start, the file cut to what it has. */
	assert_true(rep_scratch_receiving(s, &len, &got));
	assert_int_equal(len, 500);
	assert_int_equal(got, 300);
	check_bytes(s, 2, 0, 300);
	assert_int_equal(file_size(s), 300);
	assert_int_equal(rep_scratch_size(s), 300);
	feed(s, 2, 300, 500, 200);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), 0);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 0);
	assert_int_equal(rep_scratch_rec_at(s, 0)->len, 500);
	check_bytes(s, 2, 0, 500);
	/* The next one follows it. */
	record(s, DB_A, 3, 100);
	assert_int_equal(rep_scratch_rec_at(s, 1)->off, 500);
	check_bytes(s, 3, 500, 100);
	rep_scratch_free(s);
}

static void test_half_received_survives_past_keep(void **state)
{
	check_half_received_survives(REP_SCRATCH_KEEP, REP_SCRATCH_KEEP + 1);
}

static void test_half_received_survives_keep_0(void **state)
{
	check_half_received_survives(0, 1000);
}

/* A database waits for local readers: its records stay where they are
 * while others are applied and more arrive. */
static void test_waiting_records_stay(void **state)
{
	rep_scratch *s = new_scratch(0);
	uint64_t len, got;

	record(s, DB_A, 1, 2000);      /* waits */
	record(s, DB_B, 2, 3000);      /* applied */
	assert_int_equal(rep_scratch_begin(s, 800), 0);
	feed(s, 3, 0, 500, 500);
	rep_scratch_rec_at(s, 1)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	assert_int_equal(rep_scratch_count(s), 1);
	assert_int_equal(rep_scratch_queued_bytes(s), 2000);
	assert_true(rep_scratch_rec_at(s, 0)->db == DB_A);
	check_bytes(s, 1, 0, 2000);
	/* Not moved, not truncated: something is queued. */
	assert_true(rep_scratch_receiving(s, &len, &got));
	check_bytes(s, 3, 5000, 500);
	assert_int_equal(file_size(s), 5500);
	feed(s, 3, 500, 800, 300);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), 0);
	assert_int_equal(rep_scratch_rec_at(s, 1)->off, 5000);
	record(s, DB_B, 4, 100);
	assert_int_equal(rep_scratch_rec_at(s, 2)->off, 5800);
	check_bytes(s, 1, 0, 2000);
	check_bytes(s, 3, 5000, 800);
	check_bytes(s, 4, 5800, 100);
	/* The reader ends: all applied, the file given back. */
	for (size_t i = 0; i < 3; i++)
		rep_scratch_rec_at(s, i)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	assert_int_equal(file_size(s), 0);
	record(s, DB_A, 5, 10);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 0);
	rep_scratch_free(s);
}

/* A record being received that has more than REP_SCRATCH_MOVE_MAX, or
 * would overlap its new place, is not moved: the next records follow. */
static void test_unmovable_record_stays(void **state)
{
	const uint64_t big = REP_SCRATCH_MOVE_MAX + 4096;
	rep_scratch *s = new_scratch(0);
	uint64_t len, got;

	/* Too much received already. */
	record(s, DB_A, 1, 2 * big);
	assert_int_equal(rep_scratch_begin(s, big + 10), 0);
	feed(s, 2, 0, big, 65536);
	rep_scratch_rec_at(s, 0)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	assert_true(rep_scratch_receiving(s, &len, &got));
	check_bytes(s, 2, 2 * big, big);
	assert_int_equal(file_size(s), 3 * big);
	feed(s, 2, big, big + 10, 10);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), 0);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 2 * big);
	check_bytes(s, 2, 2 * big, big + 10);
	record(s, DB_A, 3, 50);
	assert_int_equal(rep_scratch_rec_at(s, 1)->off, 3 * big + 10);
	rep_scratch_rec_at(s, 0)->done = true;
	rep_scratch_rec_at(s, 1)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	/* Would overlap itself: 100 bytes queued before 300 received. */
	record(s, DB_A, 4, 100);
	assert_int_equal(rep_scratch_begin(s, 400), 0);
	feed(s, 5, 0, 300, 300);
	rep_scratch_rec_at(s, 0)->done = true;
	assert_int_equal(rep_scratch_settle(s), 0);
	check_bytes(s, 5, 100, 300);
	feed(s, 5, 300, 400, 100);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), 0);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 100);
	check_bytes(s, 5, 100, 400);
	rep_scratch_free(s);
}

static void test_protocol_errors(void **state)
{
	rep_scratch *s = new_scratch(REP_SCRATCH_KEEP);
	uint8_t b[8] = {0};

	assert_int_equal(rep_scratch_write(s, b, 1), -EPROTO);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), -EPROTO);
	assert_int_equal(rep_scratch_begin(s, 8), 0);
	assert_int_equal(rep_scratch_begin(s, 8), -EPROTO);
	assert_int_equal(rep_scratch_write(s, b, 5), 0);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), -EPROTO);
	assert_int_equal(rep_scratch_write(s, b, 4), -EPROTO);
	assert_int_equal(rep_scratch_write(s, b, 3), 0);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), 0);
	assert_int_equal(rep_scratch_count(s), 1);
	rep_scratch_free(s);
}

/* The stream ended: everything is forgotten, the space given back. */
static void test_clear(void **state)
{
	rep_scratch *s = new_scratch(1000);
	uint64_t len, got;

	record(s, DB_A, 1, 3000);
	assert_int_equal(rep_scratch_begin(s, 100), 0);
	feed(s, 2, 0, 50, 50);
	rep_scratch_clear(s);
	assert_int_equal(rep_scratch_count(s), 0);
	assert_false(rep_scratch_receiving(s, &len, &got));
	assert_int_equal(file_size(s), 0);
	record(s, DB_B, 3, 10);
	assert_int_equal(rep_scratch_rec_at(s, 0)->off, 0);
	rep_scratch_free(s);
}

static int fail_calls;

static int fail_ftruncate(int fd, off_t len)
{
	fail_calls++;
	errno = EIO;
	return -1;
}

static ssize_t fail_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	fail_calls++;
	errno = ENOSPC;
	return -1;
}

/* I/O errors are returned and lose nothing already there. */
static void test_io_errors(void **state)
{
	rep_scratch *s = new_scratch(0);
	uint64_t len, got;

	record(s, DB_A, 1, 1000);
	assert_int_equal(rep_scratch_begin(s, 500), 0);
	feed(s, 2, 0, 200, 200);
	lib_io.pwrite = fail_pwrite;
	assert_int_equal(rep_scratch_write(s, "x", 1), -ENOSPC);
	lib_io_reset();
	assert_true(rep_scratch_receiving(s, &len, &got));
	assert_int_equal(got, 200);
	rep_scratch_rec_at(s, 0)->done = true;
	lib_io.ftruncate = fail_ftruncate;
	fail_calls = 0;
	assert_int_equal(rep_scratch_settle(s), -EIO);
	lib_io_reset();
	assert_true(fail_calls > 0);
	check_bytes(s, 2, 0, 200);
	feed(s, 2, 200, 500, 300);
	assert_int_equal(rep_scratch_end(s, DB_A, 0, 0), 0);
	check_bytes(s, 2, rep_scratch_rec_at(s, 0)->off, 500);
	rep_scratch_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_records_follow_each_other),
		cmocka_unit_test(test_half_received_survives_past_keep),
		cmocka_unit_test(test_half_received_survives_keep_0),
		cmocka_unit_test(test_waiting_records_stay),
		cmocka_unit_test(test_unmovable_record_stays),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_clear),
		cmocka_unit_test(test_io_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
