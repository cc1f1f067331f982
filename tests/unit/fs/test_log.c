/*
 * Tests for fs/log.c retention: pruning by size and by age with explicit
 * clocks (record timestamps and the 'now' given to fs_log_prune), the
 * segment holding the last record always kept, iterators across a prune,
 * reopening a pruned log, and a crash between two unlinks of a prune;
 * appends that meet a full disk (ENOSPC injected through lib/io's
 * table): the partial record is cut off, the next append succeeds and
 * the log reopens cleanly.
 * Damage: what open says of a corrupt record (segment, offset, rule), the
 * whole-log check (fs_log_check_all) and moving a log aside.
 * Taking back the last record (fs_log_unappend): durably, in or at the
 * start of a segment, and what iterators that read it then see.
 * The base (fs/logbase.h): what a prune removes is replayed onto it; a
 * record that does not replay stops it; a reset removes it; a crash
 * between the new base and the unlinks leaves records it has, skipped.
 *
 * Records are real LTX files on real files in a temporary directory:
 * one 4 KiB page each, uncompressed (about 4.2 KB a record), chained by
 * their checksums as the capture path chains them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fs/log.h"
#include "fs/logbase.h"
#include "lib/io.h"
#include "ltx/checksum.h"

#define PS 4096
#define T0 INT64_C(1700000000000)

typedef struct env {
	char dir[256];
	fs_log *log;
	uint64_t txid;      /* last appended */
	uint64_t post;      /* its post-apply checksum */
	int fail_next;      /* make the next fill fail */
	bool bad_post_next; /* the next record does not replay */
} env;

struct fill_ctx {
	uint64_t txid;
	bool snapshot;
	bool fail;
	bool bad_post;      /* a post-apply checksum its page does not give */
};

/* TXID txid's page 1. */
static void fill_page(uint8_t *page, uint64_t txid)
{
	for (size_t i = 0; i < PS; i++)
		page[i] = (uint8_t)(txid * 131 + i * 7 + (i >> 5));
}

/* The post-apply checksum of TXID txid: a database of that one page. */
static uint64_t post_of(uint64_t txid)
{
	uint8_t page[PS];

	fill_page(page, txid);
	return ltx_checksum_xor(LTX_CHECKSUM_EMPTY,
				ltx_checksum_page(1, page, PS));
}

static int fill(void *ctx, ltx_encoder *enc, uint64_t *out_post,
		ltx_err *err)
{
	struct fill_ctx *f = ctx;
	uint8_t page[PS];
	int rc;

	if (f->fail)
		return ltx_err_set(err, LTX_ERR_IO, 0, "injected failure");
	fill_page(page, f->txid);
	rc = ltx_encoder_add_page(enc, 1, page, err);
	/* A one-page database: the record replays (retention replays what
	 * it removes onto the log's base). A snapshot's is computed by the
	 * encoder. */
	*out_post = f->snapshot ? 0 : f->bad_post ? (UINT64_C(1) << 63) | 977 :
		    post_of(f->txid);
	return rc;
}

/* Appends TXID e->txid + 1 with timestamp ts; returns fs_log_append's rc. */
static int append(env *e, int64_t ts)
{
	struct fill_ctx f = {e->txid + 1, e->txid == 0, e->fail_next != 0,
			     e->bad_post_next};
	ltx_header h = {0};
	ltx_trailer t;
	int rc;

	h.page_size = PS;
	h.commit = 1;
	h.min_txid = h.max_txid = e->txid + 1;
	h.timestamp = ts;
	h.pre_apply_checksum = e->txid == 0 ? 0 : e->post;
	e->fail_next = 0;
	e->bad_post_next = false;
	rc = fs_log_append(e->log, &h, 0, fill, &f, &t);
	if (rc == 0) {
		e->txid++;
		e->post = t.post_apply_checksum;
	}
	return rc;
}

static int setup(void **state)
{
	env *e = calloc(1, sizeof(*e));
	char tmpl[] = "/tmp/ltxfs-test-log-XXXXXX";

	assert_non_null(e);
	assert_non_null(mkdtemp(tmpl));
	snprintf(e->dir, sizeof(e->dir), "%s/log", tmpl);
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	env *e = *state;
	char cmd[600];

	fs_log_close(e->log);
	/* e->dir is <tmp>/log: remove <tmp>. */
	snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'",
		 (int)(strrchr(e->dir, '/') - e->dir), e->dir);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

static void reopen(env *e)
{
	fs_log_close(e->log);
	e->log = NULL;
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
}

/* Segment files in the directory and their total size. */
static size_t count_files(const env *e, uint64_t *out_bytes,
			  uint64_t *out_first)
{
	DIR *d = opendir(e->dir);
	struct dirent *de;
	size_t n = 0;
	uint64_t bytes = 0, first = UINT64_MAX;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char path[600];
		struct stat st;
		if (strstr(de->d_name, ".seg") == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", e->dir, de->d_name);
		assert_int_equal(stat(path, &st), 0);
		bytes += (uint64_t)st.st_size;
		if (strtoull(de->d_name, NULL, 16) < first)
			first = strtoull(de->d_name, NULL, 16);
		n++;
	}
	closedir(d);
	if (out_bytes)
		*out_bytes = bytes;
	if (out_first)
		*out_first = first;
	return n;
}

/* Iterates after 'after' to the end: every record contiguous, the last
 * one e->txid. Returns the number of records. */
static uint64_t check_iter(env *e, uint64_t after)
{
	fs_log_iter *it = NULL;
	uint64_t n = 0, want = after + 1;
	int fd, rc;
	uint64_t off, len;
	ltx_header h;

	assert_int_equal(fs_log_iter_open(e->log, after, &it), 0);
	while ((rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1) {
		assert_int_equal(h.min_txid, want);
		want = h.max_txid + 1;
		n++;
		assert_true(n <= e->txid);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(want - 1, e->txid);
	fs_log_iter_free(it);
	return n;
}

static int iter_first_rc(env *e, uint64_t after)
{
	fs_log_iter *it = NULL;
	int fd, rc;
	uint64_t off, len;
	ltx_header h;

	assert_int_equal(fs_log_iter_open(e->log, after, &it), 0);
	rc = fs_log_iter_next(it, &fd, &off, &len, &h);
	fs_log_iter_free(it);
	return rc;
}

/* ---- tests ------------------------------------------------------------- */

static void test_no_policy_keeps_everything(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_log_stats st;

	for (int i = 0; i < 40; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0 + (INT64_C(1) << 40), &r), 0);
	assert_int_equal(r.segments, 0);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.segments, 1);
	assert_int_equal(st.first_txid, 1);
	assert_int_equal(check_iter(e, 0), 40);
}

static void test_prune_by_size(void **state)
{
	env *e = *state;
	const uint64_t cap = 64 * 1024;
	fs_log_prune_result r;
	fs_log_stats st;
	uint64_t bytes, first;
	size_t files;

	/* No age limit: only the byte cap. */
	fs_log_set_retention(e->log, -1, cap);
	for (int i = 0; i < 60; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_get_stats(e->log, &st);
	/* Rolls over at cap / 4: 4 records a segment. */
	assert_true(st.segments >= 14);
	assert_true(st.bytes > 3 * cap);
	files = count_files(e, &bytes, NULL);
	assert_int_equal(files, st.segments);
	assert_int_equal(bytes, st.bytes);

	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.segments > 0);
	assert_int_equal(r.by_age, 0);
	assert_int_equal(r.from_txid, 1);
	assert_true(r.log_bytes <= cap);
	/* Removing one segment fewer would have left it over the cap. */
	assert_true(r.log_bytes + cap / 4 > cap);
	assert_true(r.first_txid > 1);

	files = count_files(e, &bytes, &first);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(files, st.segments);
	assert_int_equal(bytes, st.bytes);
	assert_int_equal(bytes, r.log_bytes);
	assert_int_equal(first, r.first_txid);
	assert_int_equal(st.first_txid, r.first_txid);
	assert_int_equal(st.pruned_segments, r.segments);

	/* What is kept iterates from its first record to the last. */
	assert_int_equal(check_iter(e, r.first_txid - 1),
			 e->txid - r.first_txid + 1);
	/* Positions before it: -ENOENT (the stream sends a snapshot). */
	assert_int_equal(iter_first_rc(e, 0), -ENOENT);
	assert_int_equal(iter_first_rc(e, r.first_txid - 2), -ENOENT);
	assert_int_equal(iter_first_rc(e, e->txid), 0);

	/* A second pass has nothing to do. */
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_int_equal(r.segments, 0);

	/* Reopen: the log starts later, its tail is unchanged, appends go
	 * on. */
	first = st.first_txid;
	reopen(e);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, e->txid);
	assert_int_equal(fs_log_get_tail(e->log).pos.checksum, e->post);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.first_txid, first);
	assert_int_equal(st.bytes, bytes);
	assert_int_equal(iter_first_rc(e, 0), -ENOENT);
	for (int i = 0; i < 10; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(check_iter(e, first - 1), e->txid - first + 1);
}

static void test_prune_by_age(void **state)
{
	env *e = *state;
	const int64_t keep = 10000;
	fs_log_prune_result r;
	fs_log_stats st;

	/* No size cap: segments roll when the active one's first record is
	 * 10 s older than the record appended. One record a second. */
	fs_log_set_retention(e->log, keep, 0);
	for (int i = 0; i < 30; i++)
		assert_int_equal(append(e, T0 + i * 1000), 0);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.segments, 3); /* 1-10, 11-20, 21-30 */
	assert_int_equal(count_files(e, NULL, NULL), 3);

	/* Segment 1-10's newest record is at most as old as record 11 (T0 +
	 * 10 s): removable from T0 + 20 s on, not a millisecond before. */
	assert_int_equal(fs_log_prune(e->log, T0 + 20000 - 1, &r), 0);
	assert_int_equal(r.segments, 0);
	assert_int_equal(fs_log_prune(e->log, T0 + 20000, &r), 0);
	assert_int_equal(r.segments, 1);
	assert_int_equal(r.by_age, 1);
	assert_int_equal(r.first_txid, 11);
	assert_int_equal(check_iter(e, 10), 20);

	/* Much later: everything but the segment with the last record. */
	assert_int_equal(fs_log_prune(e->log, T0 + 1000000, &r), 0);
	assert_int_equal(r.segments, 1);
	assert_int_equal(r.first_txid, 21);
	assert_int_equal(count_files(e, NULL, NULL), 1);
	assert_int_equal(check_iter(e, 20), 10);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 30);

	/* A clock behind the records (skew) prunes nothing by age. */
	for (int i = 0; i < 15; i++)
		assert_int_equal(append(e, T0 + 40000 + i * 1000), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_int_equal(r.segments, 0);

	reopen(e);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.first_txid, 21);
	/* Timestamps are read back from the segments on open. */
	assert_int_equal(fs_log_prune(e->log, T0 + 1000000, &r), 0);
	assert_int_equal(r.segments, 0); /* no policy after reopen */
	fs_log_set_retention(e->log, keep, 0);
	assert_int_equal(fs_log_prune(e->log, T0 + 1000000, &r), 0);
	assert_true(r.segments >= 1);
	assert_int_equal(check_iter(e, r.first_txid - 1),
			 e->txid - r.first_txid + 1);
}

/* fs_log_set_hold: age keeps the records after the hold, the byte cap
 * does not; released, age prunes again. */
static void test_prune_hold(void **state)
{
	env *e = *state;
	fs_log_prune_result r;

	fs_log_set_retention(e->log, 10000, 0);
	for (int i = 0; i < 30; i++)
		assert_int_equal(append(e, T0 + i * 1000), 0);
	/* 1-10, 11-20, 21-30; a reader needs everything after TXID 5. */
	fs_log_set_hold(e->log, 5);
	assert_int_equal(fs_log_prune(e->log, T0 + 1000000, &r), 0);
	assert_int_equal(r.segments, 0);
	/* After TXID 10: segment 1-10 may go, 11-20 stays. */
	fs_log_set_hold(e->log, 10);
	assert_int_equal(fs_log_prune(e->log, T0 + 1000000, &r), 0);
	assert_int_equal(r.segments, 1);
	assert_int_equal(r.first_txid, 11);
	/* The byte cap wins over a hold. */
	fs_log_set_hold(e->log, 0);
	fs_log_set_retention(e->log, 10000, 1);
	assert_int_equal(fs_log_prune(e->log, T0 + 1000000, &r), 0);
	assert_int_equal(r.segments, 1);
	assert_int_equal(r.first_txid, 21);
	/* Released: nothing holds (only the last segment is left). */
	fs_log_set_hold(e->log, FS_LOG_NO_HOLD);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 30);
}

static void test_keep_last_record(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_log_stats st;
	uint64_t last_first;

	/* Age 0 and a 1-byte cap: as little as can be kept. */
	fs_log_set_retention(e->log, 0, 1);
	for (int i = 0; i < 9; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.segments, 9); /* rolls at 4 KiB: one each */
	assert_int_equal(fs_log_prune(e->log, T0 + 1000, &r), 0);
	assert_int_equal(r.segments, 8);
	assert_int_equal(r.first_txid, 9);
	assert_true(r.log_bytes > 1); /* over the cap, but the tail stays */
	assert_int_equal(iter_first_rc(e, 7), -ENOENT);
	assert_int_equal(check_iter(e, 8), 1);

	/* A failed append at a roll-over leaves an empty last segment: the
	 * one before still holds the last record and is kept. */
	e->fail_next = 1;
	assert_true(append(e, T0) < 0);
	assert_int_equal(count_files(e, NULL, NULL), 2);
	assert_int_equal(fs_log_prune(e->log, T0 + 1000, &r), 0);
	assert_int_equal(r.segments, 0);
	assert_int_equal(count_files(e, NULL, NULL), 2);
	assert_int_equal(check_iter(e, 8), 1);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 9);

	/* Reopen drops the empty segment and finds the tail. */
	reopen(e);
	assert_int_equal(count_files(e, NULL, NULL), 1);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 9);
	assert_int_equal(fs_log_get_tail(e->log).pos.checksum, e->post);
	fs_log_set_retention(e->log, 0, 1);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0 + 1000, &r), 0);
	assert_int_equal(r.segments, 2);
	fs_log_get_stats(e->log, &st);
	last_first = st.first_txid;
	assert_int_equal(last_first, 11);
	assert_int_equal(check_iter(e, 10), 1);

	/* A snapshot cannot start a segment sorting before a kept one. */
	{
		uint64_t txid = e->txid;
		e->txid = 0;
		assert_int_equal(append(e, T0), -EEXIST);
		e->txid = txid;
	}
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 11);
}

static void test_iterators_across_prune(void **state)
{
	env *e = *state;
	fs_log_iter *a = NULL, *b = NULL;
	fs_log_prune_result r;
	int fd, rc;
	uint64_t off, len, n = 0;
	ltx_header h;
	uint8_t buf[LTX_HEADER_SIZE];

	fs_log_set_retention(e->log, -1, 64 * 1024);
	for (int i = 0; i < 40; i++)
		assert_int_equal(append(e, T0), 0);
	/* a: reading the first segment when it is pruned. */
	assert_int_equal(fs_log_iter_open(e->log, 0, &a), 0);
	assert_int_equal(fs_log_iter_next(a, &fd, &off, &len, &h), 1);
	assert_int_equal(h.max_txid, 1);
	/* b: positioned at the record before the last. */
	assert_int_equal(fs_log_iter_open(e->log, e->txid - 2, &b), 0);
	assert_int_equal(fs_log_iter_next(b, &fd, &off, &len, &h), 1);

	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.first_txid > 5);

	/* a reads on from its open fd to the end of its (removed) segment,
	 * then says the records that follow are gone. */
	while ((rc = fs_log_iter_next(a, &fd, &off, &len, &h)) == 1) {
		/* The fd still reads the removed segment's bytes. */
		assert_int_equal(lib_io_pread_full(fd, buf, sizeof(buf),
						   (off_t)off, NULL), 0);
		assert_memory_equal(buf, "LTX1", 4);
		n++;
		assert_true(n < 40);
	}
	assert_int_equal(rc, -ENOENT);
	assert_int_equal(n, 3); /* records 2-4 of segment 1-4 */
	/* b: unaffected. */
	assert_int_equal(fs_log_iter_next(b, &fd, &off, &len, &h), 1);
	assert_int_equal(h.max_txid, e->txid);
	assert_int_equal(fs_log_iter_next(b, &fd, &off, &len, &h), 0);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_iter_next(b, &fd, &off, &len, &h), 1);
	assert_int_equal(h.max_txid, e->txid);
	fs_log_iter_free(a);
	fs_log_iter_free(b);
}

static void test_crash_mid_prune(void **state)
{
	env *e = *state;
	char path[600];
	fs_log_stats st;
	fs_log_prune_result r;

	fs_log_set_retention(e->log, -1, 16 * 1024); /* 4 KiB segments */
	for (int i = 0; i < 6; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_close(e->log);
	e->log = NULL;
	/* A prune that unlinked the oldest segment and crashed before the
	 * next one: the log starts at TXID 2. */
	snprintf(path, sizeof(path), "%s/%016x.seg", e->dir, 1);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.first_txid, 2);
	assert_int_equal(st.segments, 5);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 6);
	assert_int_equal(check_iter(e, 1), 5);
	assert_int_equal(iter_first_rc(e, 0), -ENOENT);
	/* The next prune finishes the job; the read-only opener (ltxfs
	 * verify) never prunes. */
	{
		fs_log *ro = NULL;
		assert_int_equal(fs_log_open_readonly(e->dir, "t", &ro), 0);
		fs_log_set_retention(ro, 0, 1);
		assert_int_equal(fs_log_prune(ro, T0 + 1000, &r), 0);
		assert_int_equal(r.segments, 0);
		fs_log_close(ro);
	}
	fs_log_set_retention(e->log, -1, 16 * 1024);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_int_equal(r.from_txid, 2);
	assert_true(r.log_bytes <= 16 * 1024);
	assert_int_equal(check_iter(e, r.first_txid - 1),
			 e->txid - r.first_txid + 1);
}

static void test_policy_after_first_record(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_log_stats st;

	/* A database created and written at once: the policy arrives after
	 * its first record (rep_retention_on_commit) and applies from the
	 * second on. */
	assert_int_equal(append(e, T0), 0);
	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 7; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.segments, 8); /* 4 KiB segments: one each */
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.segments >= 4);
	assert_true(r.log_bytes <= 16 * 1024);
	/* A read-only opener (ltxfs verify) never prunes. */
	{
		fs_log *ro = NULL;
		assert_int_equal(fs_log_open_readonly(e->dir, "t", &ro), 0);
		fs_log_set_retention(ro, 0, 1);
		assert_int_equal(fs_log_prune(ro, T0 + 1000, &r), 0);
		assert_int_equal(r.segments, 0);
		fs_log_close(ro);
	}
}

/* One appender, one pruner, one reader at once (run under ASan/UBSan in
 * CI): the reader only ever sees contiguous, readable records, and when
 * its records are pruned (it waits for that after each record, reading on
 * from the removed segment's fd) it is told so (-ENOENT) and starts again
 * from the first record kept, as a stream would after sending a
 * snapshot. */
struct race {
	env *e;
	atomic_int done;
	uint64_t restarts, records;
	int fail;
};

static void pause_us(long us)
{
	struct timespec ts = {0, us * 1000};

	nanosleep(&ts, NULL);
}

/* Both threads stop when the appender is done, or after 60 s. */
static void *race_pruner(void *arg)
{
	struct race *ra = arg;

	for (unsigned i = 0; !atomic_load(&ra->done) && i < 60000; i++) {
		if (fs_log_prune(ra->e->log, T0, NULL) < 0)
			ra->fail = 1;
		pause_us(1000);
	}
	return NULL;
}

static void *race_reader(void *arg)
{
	struct race *ra = arg;
	uint64_t after = 0;
	unsigned rounds = 0;

	while (!atomic_load(&ra->done) && rounds < 3000) {
		fs_log_iter *it = NULL;
		int fd, rc;
		uint64_t off, len;
		ltx_header h;
		rounds++;
		if (fs_log_iter_open(ra->e->log, after, &it) < 0) {
			ra->fail = 2;
			break;
		}
		while ((rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1) {
			uint8_t magic[4];
			if (h.min_txid != after + 1 ||
			    lib_io_pread_full(fd, magic, 4, (off_t)off,
					      NULL) < 0 ||
			    memcmp(magic, "LTX1", 4) != 0)
				ra->fail = 3;
			after = h.max_txid;
			ra->records++;
			/* Fall behind: wait (up to 5 s) until the next
			 * record is pruned, then read on. */
			for (int w = 0; w < 5000 && !atomic_load(&ra->done);
			     w++) {
				fs_log_stats st;
				fs_log_get_stats(ra->e->log, &st);
				if (st.first_txid > after + 1)
					break;
				pause_us(1000);
			}
			if (atomic_load(&ra->done))
				break;
		}
		fs_log_iter_free(it);
		if (rc == -ENOENT) {
			fs_log_stats st;
			fs_log_get_stats(ra->e->log, &st);
			if (st.first_txid <= after + 1)
				ra->fail = 4; /* it was there after all */
			after = st.first_txid - 1;
			ra->restarts++;
		} else if (rc < 0) {
			ra->fail = 5;
		}
		if (ra->fail)
			break;
	}
	return NULL;
}

static void test_concurrent_prune(void **state)
{
	env *e = *state;
	struct race ra = {.e = e};
	pthread_t pr, rd;

	atomic_init(&ra.done, 0);
	fs_log_set_retention(e->log, -1, 16 * 1024);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(pthread_create(&pr, NULL, race_pruner, &ra), 0);
	assert_int_equal(pthread_create(&rd, NULL, race_reader, &ra), 0);
	for (int i = 0; i < 400 && !ra.fail; i++)
		assert_int_equal(append(e, T0), 0);
	atomic_store(&ra.done, 1);
	pthread_join(pr, NULL);
	pthread_join(rd, NULL);
	assert_int_equal(ra.fail, 0);
	assert_true(ra.records > 0);
	assert_true(ra.restarts > 0);
	fs_log_prune(e->log, T0, NULL);
	assert_int_equal(check_iter(e, fs_log_get_tail(e->log).pos.txid - 1),
			 1);
	printf("concurrent prune: reader saw %" PRIu64 " records, restarted "
	       "%" PRIu64 " times after a prune\n", ra.records, ra.restarts);
}


/* ---- damage ------------------------------------------------------------ */

/* Byte offset of record n (1-based) of segment file name in e->dir. */
static uint64_t record_off(const env *e, const char *name, int n)
{
	char path[600];
	uint8_t pfx[4];
	uint64_t off = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", e->dir, name);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	for (int i = 1; i < n; i++) {
		assert_int_equal(pread(fd, pfx, 4, (off_t)off), 4);
		off += 4 + ((uint64_t)pfx[0] << 24 | (uint64_t)pfx[1] << 16 |
			    (uint64_t)pfx[2] << 8 | pfx[3]);
	}
	close(fd);
	return off;
}

/* Flips a byte in the middle of record n of segment file name. */
static uint64_t flip(const env *e, const char *name, int n)
{
	char path[600];
	uint64_t off = record_off(e, name, n);
	uint8_t b;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", e->dir, name);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)(off + 2000)), 1);
	b ^= 0xFF;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + 2000)), 1);
	close(fd);
	return off;
}

static void test_corrupt_why(void **state)
{
	env *e = *state;
	char why[FS_LOG_WHY_MAX], want[200];
	fs_log_check c;
	fs_log *log = NULL;
	uint64_t off;

	for (int i = 0; i < 10; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_close(e->log);
	e->log = NULL;
	off = flip(e, "0000000000000001.seg", 5);
	assert_int_equal(fs_log_open(e->dir, "t", &log, why, sizeof(why)),
			 -EBADMSG);
	assert_null(log);
	snprintf(want, sizeof(want), "LTX log segment 0000000000000001.seg is "
		 "corrupt at byte %" PRIu64 " (rule R1): record 5: ", off);
	assert_true(strncmp(why, want, strlen(want)) == 0);
	/* The whole-log check finds the same, and every other record. */
	assert_int_equal(fs_log_check_all(e->dir, "t", &c), 0);
	assert_true(c.damaged);
	assert_true(strncmp(c.why, want, strlen(want)) == 0);
	assert_int_equal(c.records, 9);
	assert_int_equal(c.max_txid, 10);
	assert_int_equal(c.last.txid, 10);
	assert_int_equal(c.last.checksum, e->post);
	/* Nothing was changed: the byte back, the log opens. */
	flip(e, "0000000000000001.seg", 5);
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, why, sizeof(why)),
			 0);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 10);
}

static void test_check_all(void **state)
{
	env *e = *state;
	char path[600];
	fs_log_check c;
	uint8_t junk[100] = {0, 0, 1, 0};
	int fd;

	/* Segments of about 4 records: damage in the first is not seen by
	 * open (it checks the last), but by the whole-log check. */
	fs_log_set_retention(e->log, -1, 16 * FS_LOG_SEGMENT_MIN_BYTES);
	for (int i = 0; i < 12; i++)
		assert_int_equal(append(e, T0), 0);
	assert_true(count_files(e, NULL, NULL) >= 3);
	assert_int_equal(fs_log_check_all(e->dir, "t", &c), 0);
	assert_false(c.damaged);
	assert_int_equal(c.records, 12);
	assert_int_equal(c.max_txid, 12);
	/* A torn tail (a record running past the end) is not damage. */
	fs_log_close(e->log);
	e->log = NULL;
	{
		uint64_t last = 0;
		DIR *d = opendir(e->dir);
		struct dirent *de;
		while ((de = readdir(d)) != NULL)
			if (strstr(de->d_name, ".seg") &&
			    strtoull(de->d_name, NULL, 16) > last)
				last = strtoull(de->d_name, NULL, 16);
		closedir(d);
		snprintf(path, sizeof(path), "%s/%016" PRIx64 ".seg", e->dir,
			 last);
	}
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(fs_log_check_all(e->dir, "t", &c), 0);
	assert_false(c.damaged);
	assert_int_equal(c.records, 12);
	flip(e, "0000000000000001.seg", 2);
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
	fs_log_close(e->log);
	e->log = NULL;
	assert_int_equal(fs_log_check_all(e->dir, "t", &c), 0);
	assert_true(c.damaged);
	assert_non_null(strstr(c.why, "segment 0000000000000001.seg"));
	assert_non_null(strstr(c.why, "(rule R1): record 2:"));
	assert_int_equal(c.records, 11);
	assert_int_equal(c.max_txid, 12);
	reopen(e);
}

/* A corrupt record of an older segment (not checked by open) is found
 * by an iterator that reads it; records of the last one are not
 * re-verified; a headers-only iterator does not check. */
static void test_iter_verifies_old(void **state)
{
	env *e = *state;
	fs_log_iter *it = NULL;
	uint64_t off, len, n = 0;
	ltx_header h;
	int fd, rc;

	fs_log_set_retention(e->log, -1, 16 * FS_LOG_SEGMENT_MIN_BYTES);
	for (int i = 0; i < 12; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_close(e->log);
	e->log = NULL;
	flip(e, "0000000000000001.seg", 3);
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
	assert_int_equal(fs_log_iter_open(e->log, 0, &it), 0);
	while ((rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1)
		n++;
	assert_int_equal(rc, -EBADMSG);
	assert_int_equal(n, 2);
	fs_log_iter_free(it);
	assert_int_equal(check_iter(e, 3), 9);
	assert_int_equal(fs_log_iter_open(e->log, 0, &it), 0);
	fs_log_iter_headers_only(it);
	for (n = 0; (rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1;)
		n++;
	assert_int_equal(rc, 0);
	assert_int_equal(n, 12);
	fs_log_iter_free(it);
}

static void test_set_aside(void **state)
{
	env *e = *state;
	char first[700], second[700], path[800];
	struct stat st;

	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0), 0);
	fs_log_close(e->log);
	e->log = NULL;
	assert_int_equal(fs_log_set_aside(e->dir, e->dir, first,
					  sizeof(first)), 0);
	assert_int_equal(stat(e->dir, &st), -1);
	snprintf(path, sizeof(path), "%s/0000000000000001.seg", first);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(strncmp(first, e->dir, strlen(e->dir)), 0);
	assert_int_equal(strncmp(first + strlen(e->dir), ".damaged-", 9), 0);
	/* A new log there, damaged again a second later: only the latest
	 * damaged copy is kept. */
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
	e->txid = 0;
	assert_int_equal(append(e, T0), 0);
	fs_log_close(e->log);
	e->log = NULL;
	sleep(1);
	assert_int_equal(fs_log_set_aside(e->dir, e->dir, second,
					  sizeof(second)), 0);
	assert_string_not_equal(first, second);
	assert_int_equal(stat(first, &st), -1);
	assert_int_equal(stat(second, &st), 0);
	assert_int_equal(fs_log_open(e->dir, "t", &e->log, NULL, 0), 0);
}

/* ---- a full disk (lib/io fault table) ---------------------------------- */

/* pwrite on the log: the first `budget` bytes are written (a write
 * crossing the budget is short), then ENOSPC; budget < 0: no limit.
 * ftruncate fails with ENOSPC while trunc_fail > 0 (counted down). */
static struct {
	long long budget;
	int trunc_fail;
	int truncs;
} disk;

static ssize_t full_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (disk.budget >= 0 && (long long)n > disk.budget)
		n = (size_t)disk.budget;
	if (n == 0) {
		errno = ENOSPC;
		return -1;
	}
	if (disk.budget >= 0)
		disk.budget -= (long long)n;
	return pwrite(fd, buf, n, off);
}

static int full_ftruncate(int fd, off_t len)
{
	disk.truncs++;
	if (disk.trunc_fail > 0) {
		disk.trunc_fail--;
		errno = ENOSPC;
		return -1;
	}
	return ftruncate(fd, len);
}

static void disk_full(long long budget, int trunc_fail)
{
	disk.budget = budget;
	disk.trunc_fail = trunc_fail;
	disk.truncs = 0;
	lib_io.pwrite = full_pwrite;
	lib_io.ftruncate = full_ftruncate;
}

/* The single segment's size. */
static uint64_t seg_bytes(const env *e)
{
	uint64_t bytes = 0;

	assert_int_equal(count_files(e, &bytes, NULL), 1);
	return bytes;
}

/* ENOSPC at every point of an append (the length prefix, the header,
 * the middle of the page, the trailer, the final length): the call says
 * ENOSPC, the segment is cut back to its last whole record, the tail is
 * unchanged, and once there is space the next append succeeds, every
 * record reads back and the log reopens with the right tail. */
static void test_append_enospc(void **state)
{
	env *e = *state;
	uint64_t good, rec = 0;
	long long budgets[] = {0, 2, 4, 60, 100, 2000, 4100, -2};

	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0), 0);
	good = seg_bytes(e);
	for (size_t b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
		long long budget = budgets[b];
		if (budget == -2) {
			/* Everything but the final 4-byte length. */
			assert_int_equal(append(e, T0), 0);
			rec = seg_bytes(e) - good;
			good += rec;
			budget = (long long)rec - 1;
		}
		disk_full(budget, 0);
		assert_int_equal(append(e, T0), -ENOSPC);
		lib_io_reset();
		assert_int_equal(seg_bytes(e), good);
		assert_int_equal(fs_log_get_tail(e->log).pos.txid, e->txid);
		assert_int_equal(append(e, T0), 0);
		good = seg_bytes(e);
		assert_int_equal(check_iter(e, 0), e->txid);
	}
	reopen(e);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, e->txid);
	assert_int_equal(fs_log_get_tail(e->log).pos.checksum, e->post);
	assert_int_equal(seg_bytes(e), good);
	assert_int_equal(check_iter(e, 0), e->txid);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(check_iter(e, 0), e->txid);
}

/* The cut itself fails (a filesystem that needs space to truncate): the
 * half-written bytes stay past the end until the next append cuts them
 * first; an append that cannot cut them fails rather than write a
 * record in front of garbage; the log reopens cleanly. */
static void test_append_enospc_cut_fails(void **state)
{
	env *e = *state;
	uint64_t good;

	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0), 0);
	good = seg_bytes(e);
	disk_full(3000, 2);
	assert_int_equal(append(e, T0), -ENOSPC);
	assert_true(seg_bytes(e) > good); /* the cut failed */
	/* Space is back for writes, not yet for the cut. */
	disk.budget = -1;
	assert_int_equal(append(e, T0), -ENOSPC);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, e->txid);
	assert_int_equal(append(e, T0), 0);
	lib_io_reset();
	assert_int_equal(seg_bytes(e) > good, true);
	assert_int_equal(check_iter(e, 0), e->txid);
	good = seg_bytes(e);
	reopen(e);
	assert_int_equal(seg_bytes(e), good);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, e->txid);
	assert_int_equal(check_iter(e, 0), e->txid);
}

/* A first record (a new segment) that meets a full disk leaves at most
 * an empty segment, which the next append reuses. */
static void test_first_append_enospc(void **state)
{
	env *e = *state;

	disk_full(10, 0);
	assert_int_equal(append(e, T0), -ENOSPC);
	lib_io_reset();
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 0);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(append(e, T0), 0);
	assert_int_equal(count_files(e, NULL, NULL), 1);
	reopen(e);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 2);
	assert_int_equal(check_iter(e, 0), 2);
}


/* ---- the log's base (fs/logbase.h) ------------------------------------- */

/* The log's base file, loaded and checked: 0 with *out, or its rc. */
static int load_base(const env *e, fs_logbase_info *out)
{
	char path[600], why[300];
	fs_logbase *b = NULL;
	int fd = memfd_create("base", MFD_CLOEXEC), rc;

	assert_true(fd >= 0);
	assert_int_equal(fs_logbase_new(fd, &b), 0);
	snprintf(path, sizeof(path), "%s/%s", e->dir, FS_LOGBASE_NAME);
	rc = fs_logbase_load(b, path, why, sizeof(why));
	if (rc == 0)
		*out = *fs_logbase_get_info(b);
	fs_logbase_free(b);
	return rc;
}

static void assert_base_at(const env *e, uint64_t txid)
{
	fs_logbase_info in;

	assert_int_equal(load_base(e, &in), 0);
	assert_int_equal(in.txid, txid);
	assert_int_equal(in.checksum, post_of(txid));
	assert_int_equal(in.commit, 1);
	assert_int_equal(in.page_size, PS);
	assert_int_equal(in.since, 1);
	assert_int_equal(in.stopped, 0);
}

static void test_prune_keeps_base(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_logbase_info in;

	/* 16 KiB cap: 4 KiB segments, a record each. */
	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 12; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(load_base(e, &in), -ENOENT); /* starts at TXID 1 */
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.first_txid > 2);
	/* The base is the database just before the log's first record:
	 * the records removed, replayed from the snapshot at TXID 1. */
	assert_base_at(e, r.first_txid - 1);
	for (int i = 0; i < 6; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.segments > 0);
	assert_base_at(e, r.first_txid - 1);
	/* Reopened, the next prune goes on from it. */
	reopen(e);
	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 6; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_base_at(e, r.first_txid - 1);
}

static void test_prune_base_stops(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_logbase_info in;

	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0), 0);
	/* TXID 4 passes its own checksums and chains on, but its page does
	 * not give its post-apply checksum. */
	e->bad_post_next = true;
	assert_int_equal(append(e, T0), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.first_txid > 5);
	/* Removed all the same; the base stops before it and says why. */
	assert_int_equal(load_base(e, &in), 0);
	assert_int_equal(in.txid, 3);
	assert_int_equal(in.checksum, post_of(3));
	assert_int_equal(in.stopped, 4);
	assert_non_null(strstr(in.why, "TXID 0000000000000004 does not "
				       "replay"));
	/* Later prunes leave it so. */
	for (int i = 0; i < 6; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.segments > 0);
	assert_int_equal(load_base(e, &in), 0);
	assert_int_equal(in.txid, 3);
	assert_int_equal(in.stopped, 4);
}

static void test_reset_removes_base(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_logbase_info in;

	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 8; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_int_equal(load_base(e, &in), 0);
	assert_int_equal(fs_log_reset(e->log), 0);
	assert_int_equal(load_base(e, &in), -ENOENT);
}

/* Reads segment first of the log into *out (malloc'd). */
static size_t read_seg(const env *e, uint64_t first, uint8_t **out)
{
	char path[600];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%016" PRIx64 ".seg", e->dir, first);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	*out = malloc((size_t)st.st_size);
	assert_non_null(*out);
	assert_int_equal(pread(fd, *out, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	return (size_t)st.st_size;
}

static void write_seg(const env *e, uint64_t first, const uint8_t *data,
		      size_t n)
{
	char path[600];
	int fd;

	snprintf(path, sizeof(path), "%s/%016" PRIx64 ".seg", e->dir, first);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, n, 0), (ssize_t)n);
	close(fd);
}

static void test_prune_crash_after_base(void **state)
{
	env *e = *state;
	fs_log_prune_result r;
	fs_log_stats st;
	uint8_t *saved[64];
	size_t sizes[64];
	uint64_t from, to;

	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 8; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(append(e, T0), 0);
	/* Keep what the next prune removes, one record a segment. */
	fs_log_get_stats(e->log, &st);
	from = st.first_txid;
	for (uint64_t t = from; t < from + 8 && t - from < 64; t++)
		sizes[t - from] = read_seg(e, t, &saved[t - from]);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	to = r.first_txid;
	assert_true(to > from + 1 && to <= from + 8);
	assert_base_at(e, to - 1);
	/* A crash after the new base replaced the old one, before the
	 * segments went: they are back, the base is ahead of them. */
	for (uint64_t t = from; t < to; t++)
		write_seg(e, t, saved[t - from], sizes[t - from]);
	for (uint64_t t = from; t < from + 8; t++)
		free(saved[t - from]);
	reopen(e);
	fs_log_get_stats(e->log, &st);
	assert_int_equal(st.first_txid, from);
	/* The next prune skips the records the base has and goes on. */
	fs_log_set_retention(e->log, -1, 16 * 1024);
	for (int i = 0; i < 4; i++)
		assert_int_equal(append(e, T0), 0);
	assert_int_equal(fs_log_prune(e->log, T0, &r), 0);
	assert_true(r.first_txid > to);
	assert_base_at(e, r.first_txid - 1);
}

/* ---- fs_log_unappend ------------------------------------------------- */

/* Takes back TXID e->txid; on success the env follows the log. */
static int unappend(env *e)
{
	int rc = fs_log_unappend(e->log, e->txid);

	if (rc == 0) {
		e->txid--;
		e->post = e->txid == 0 ? 0 : post_of(e->txid);
	}
	return rc;
}

/* The timestamp of the record with max TXID txid, read by a fresh
 * iterator (-1 when it is not there). */
static int64_t ts_of(env *e, uint64_t txid)
{
	fs_log_iter *it = NULL;
	int64_t ts = -1;
	int fd;
	uint64_t off, len;
	ltx_header h;

	assert_int_equal(fs_log_iter_open(e->log, txid - 1, &it), 0);
	if (fs_log_iter_next(it, &fd, &off, &len, &h) == 1 &&
	    h.max_txid == txid)
		ts = h.timestamp;
	fs_log_iter_free(it);
	return ts;
}

/* The last record goes, durably: the tail, the bytes, iteration and a
 * reopen agree; the same TXID is appended again in its place; only the
 * last record, once, can be taken back. */
static void test_unappend(void **state)
{
	env *e = *state;
	uint64_t two, three;

	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0 + i), 0);
	three = seg_bytes(e);
	assert_int_equal(fs_log_unappend(e->log, 2), -ESTALE);
	assert_int_equal(unappend(e), 0);
	two = seg_bytes(e);
	assert_true(two < three);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 2);
	assert_int_equal(fs_log_get_tail(e->log).pos.checksum, post_of(2));
	assert_int_equal(check_iter(e, 0), 2);
	assert_int_equal(fs_log_unappend(e->log, 2), -ESTALE); /* once */
	reopen(e); /* a crash after the call: the record stays gone */
	assert_int_equal(seg_bytes(e), two);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 2);
	assert_int_equal(fs_log_unappend(e->log, 2), -ESTALE); /* not ours */
	assert_int_equal(append(e, T0 + 10), 0);
	assert_int_equal(ts_of(e, 3), T0 + 10);
	assert_int_equal(seg_bytes(e), three);
	assert_int_equal(check_iter(e, 0), 3);
	reopen(e);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 3);
	assert_int_equal(check_iter(e, 0), 3);
}

/* A record that began its segment: the segment stays, empty, is reused
 * by the next append, and a reopen in between drops it. The first
 * record of all (a snapshot) leaves an empty log. */
static void test_unappend_segment_start(void **state)
{
	env *e = *state;
	uint64_t first = 0;

	assert_int_equal(append(e, T0), 0);
	assert_int_equal(unappend(e), 0);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 0);
	assert_int_equal(iter_first_rc(e, 0), 0);
	assert_int_equal(append(e, T0), 0);
	/* Roll over before every record (4 KiB segments). */
	fs_log_set_retention(e->log, -1, 4 * FS_LOG_SEGMENT_MIN_BYTES);
	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0 + 1 + i), 0);
	assert_int_equal(count_files(e, NULL, NULL), 4);
	assert_int_equal(unappend(e), 0);
	assert_int_equal(count_files(e, NULL, &first), 4);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 3);
	assert_int_equal(check_iter(e, 0), 3);
	assert_int_equal(append(e, T0 + 20), 0);
	assert_int_equal(count_files(e, NULL, NULL), 4);
	assert_int_equal(ts_of(e, 4), T0 + 20);
	assert_int_equal(unappend(e), 0);
	reopen(e);
	assert_int_equal(count_files(e, NULL, NULL), 3);
	assert_int_equal(fs_log_get_tail(e->log).pos.txid, 3);
	assert_int_equal(fs_log_get_tail(e->log).pos.checksum, post_of(3));
	fs_log_set_retention(e->log, -1, 4 * FS_LOG_SEGMENT_MIN_BYTES);
	assert_int_equal(append(e, T0 + 30), 0);
	assert_int_equal(check_iter(e, 0), 4);
	assert_int_equal(ts_of(e, 4), T0 + 30);
}

static int iter_step(fs_log_iter *it, uint64_t *out_txid, int64_t *out_ts)
{
	int fd, rc;
	uint64_t off, len;
	ltx_header h;

	rc = fs_log_iter_next(it, &fd, &off, &len, &h);
	if (rc == 1) {
		*out_txid = h.max_txid;
		*out_ts = h.timestamp;
	}
	return rc;
}

/* An iterator that returned the record taken back says -ESTALE; one that
 * had not reached it goes on and returns the record appended in its
 * place; one that missed two take-backs says -ESTALE to be safe. */
static void test_unappend_iterators(void **state)
{
	env *e = *state;
	fs_log_iter *past = NULL, *before = NULL, *idle = NULL;
	uint64_t txid = 0;
	int64_t ts = 0;

	for (int i = 0; i < 3; i++)
		assert_int_equal(append(e, T0 + i), 0);
	assert_int_equal(fs_log_iter_open(e->log, 0, &past), 0);
	assert_int_equal(fs_log_iter_open(e->log, 0, &before), 0);
	assert_int_equal(fs_log_iter_open(e->log, 0, &idle), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(iter_step(past, &txid, &ts), 1);
	assert_int_equal(txid, 3);
	for (int i = 0; i < 2; i++)
		assert_int_equal(iter_step(before, &txid, &ts), 1);
	assert_int_equal(iter_step(idle, &txid, &ts), 1);
	assert_int_equal(txid, 1);
	assert_int_equal(unappend(e), 0);
	assert_int_equal(iter_step(past, &txid, &ts), -ESTALE);
	assert_int_equal(iter_step(before, &txid, &ts), 0);
	assert_int_equal(append(e, T0 + 10), 0);
	assert_int_equal(iter_step(before, &txid, &ts), 1);
	assert_int_equal(txid, 3);
	assert_int_equal(ts, T0 + 10);
	assert_int_equal(unappend(e), 0);
	assert_int_equal(append(e, T0 + 11), 0);
	assert_int_equal(iter_step(idle, &txid, &ts), -ESTALE);
	fs_log_iter_free(past);
	fs_log_iter_free(before);
	fs_log_iter_free(idle);
	assert_int_equal(check_iter(e, 0), 3);
	assert_int_equal(ts_of(e, 3), T0 + 11);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_policy_keeps_everything,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_by_size, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_prune_by_age, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_prune_hold, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_keep_last_record, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_iterators_across_prune,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_mid_prune, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_policy_after_first_record,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_prune, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_why, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_check_all, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_iter_verifies_old, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_set_aside, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append_enospc, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append_enospc_cut_fails,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_append_enospc, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_prune_keeps_base, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_prune_base_stops, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_reset_removes_base, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_prune_crash_after_base,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_unappend, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unappend_segment_start,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_unappend_iterators, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
