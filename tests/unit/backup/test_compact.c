/* tests/unit/backup/test_compact.c: the merge of backup/compact.c.
 *
 * A real database is changed by sqlite3 step by step (updates, growth,
 * a DELETE + VACUUM that shrinks it, regrowth, and a growth without
 * frames: pages past the old end that read as zeros); each step's
 * changes are encoded as one LTX record (the pages that differ). The
 * records merged into one must give, applied to the starting database,
 * the same bytes and checksum as the records applied one by one. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "backup/compact.h"
#include "fs/log.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"

#define PS 1024
#define STEPS 8

struct image {
	uint8_t *b;
	size_t len;
};

static struct image read_image(const char *path)
{
	struct image im = {0};
	struct stat st;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	im.len = (size_t)st.st_size;
	im.b = malloc(im.len ? im.len : 1);
	assert_non_null(im.b);
	assert_int_equal(lib_io_pread_full(fd, im.b, im.len, 0, NULL), 0);
	close(fd);
	return im;
}

static uint64_t image_checksum(const struct image *im)
{
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	uint32_t lock = ltx_lock_pgno(PS);

	for (size_t p = 1; p <= im->len / PS; p++)
		if (p != lock)
			sum = ltx_checksum_xor(sum, ltx_checksum_page(
				(uint32_t)p, im->b + (p - 1) * PS, PS));
	return sum;
}

static bool all_zero(const uint8_t *b)
{
	for (size_t i = 0; i < PS; i++)
		if (b[i])
			return false;
	return true;
}

/* A body (one record: length, LTX) of the changes from a to b, appended
 * to fd: the pages of b that differ from a's, and past a's end the pages
 * that are not all zeros (applying it zero-fills the others). */
static void encode_step(const struct image *a, const struct image *b,
			uint64_t txid, uint32_t flags, int fd)
{
	ltx_header h = {.flags = flags, .page_size = PS,
			.commit = (uint32_t)(b->len / PS), .min_txid = txid,
			.max_txid = txid, .timestamp = 1700000000000 +
			(int64_t)txid * 1000, .pre_apply_checksum =
			image_checksum(a), .node_id = 7};
	ltx_encoder *enc = NULL;
	ltx_err le = {0};
	uint8_t pfx[4];
	off_t start = lseek(fd, 0, SEEK_END);

	assert_true(start >= 0);
	assert_true(lseek(fd, start + 4, SEEK_SET) == start + 4);
	assert_int_equal(ltx_encoder_new(&h, 0, ltx_write_to_fd, &fd, &enc,
					 &le), 0);
	for (uint32_t p = 1; p <= h.commit; p++) {
		const uint8_t *pg = b->b + (size_t)(p - 1) * PS;
		if (p == ltx_lock_pgno(PS))
			continue;
		if ((size_t)p * PS <= a->len ? memcmp(pg, a->b + (size_t)(p -
				1) * PS, PS) == 0 : all_zero(pg))
			continue;
		assert_int_equal(ltx_encoder_add_page(enc, p, pg, &le), 0);
	}
	assert_int_equal(ltx_encoder_finish(enc, image_checksum(b), NULL, &le),
			 0);
	put_be32(pfx, (uint32_t)ltx_encoder_bytes_written(enc));
	assert_int_equal(lib_io_pwrite_full(fd, pfx, 4, start), 0);
	ltx_encoder_free(enc);
}

static void exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

/* The database's images: [0] the start, [1..STEPS] after each step. */
static void make_images(const char *dir, struct image *im)
{
	char path[256];
	sqlite3 *db = NULL;
	int fd;

	snprintf(path, sizeof(path), "%s/db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=DELETE;"
		 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"
		 "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
		 "WHERE i < 300) INSERT INTO t SELECT i, randomblob(400) "
		 "FROM c;");
	im[0] = read_image(path);
	/* 1: updates in place. */
	exec(db, "UPDATE t SET v = randomblob(400) WHERE id % 7 = 0;");
	im[1] = read_image(path);
	/* 2: growth. */
	exec(db, "WITH RECURSIVE c(i) AS (SELECT 301 UNION ALL SELECT i+1 "
		 "FROM c WHERE i < 400) INSERT INTO t SELECT i, "
		 "randomblob(400) FROM c;");
	im[2] = read_image(path);
	/* 3: a shrink. */
	exec(db, "DELETE FROM t WHERE id > 20;");
	exec(db, "VACUUM;");
	im[3] = read_image(path);
	/* 4: regrowth, short of the start's size. */
	exec(db, "WITH RECURSIVE c(i) AS (SELECT 21 UNION ALL SELECT i+1 "
		 "FROM c WHERE i < 80) INSERT INTO t SELECT i, "
		 "randomblob(400) FROM c;");
	im[4] = read_image(path);
	/* 5: updates and deletes. */
	exec(db, "UPDATE t SET v = randomblob(300) WHERE id % 3 = 0;"
		 "DELETE FROM t WHERE id % 5 = 0;");
	im[5] = read_image(path);
	/* 6: inserts. */
	exec(db, "INSERT INTO t VALUES (1000, randomblob(900));");
	im[6] = read_image(path);
	sqlite3_close(db);
	/* 7: a growth that writes no page (pages past the old end read as
	 * zeros), past the start's size: where the start had data. */
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(im[0].len + 20 * PS)), 0);
	close(fd);
	im[7] = read_image(path);
	/* 8: a small update. */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	exec(db, "UPDATE t SET v = randomblob(10) WHERE id = 1;");
	sqlite3_close(db);
	im[8] = read_image(path);
	assert_true(im[3].len < im[0].len / 4);   /* it did shrink */
	assert_true(im[4].len < im[0].len);
	assert_true(im[8].len > im[0].len);
}

/* Applies the records of body [0, len) of fd, in order, to a file that
 * starts as start; returns that file (its checksum in *sum). */
static int apply_body(const struct image *start, int body, uint64_t len,
		      uint64_t *sum, size_t *records)
{
	ltx_decoder *dec = NULL;
	uint64_t off = 0;
	int out = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	assert_true(out >= 0);
	assert_int_equal(lib_io_pwrite_full(out, start->b, start->len, 0), 0);
	*sum = image_checksum(start);
	*records = 0;
	assert_int_equal(ltx_decoder_new(fs_range_read, NULL, "t", &dec), 0);
	while (off < len) {
		uint8_t pfx[4];
		ltx_err le = {0};
		fs_range_reader rr;
		assert_int_equal(lib_io_pread_full(body, pfx, 4, (off_t)off,
						   NULL), 0);
		rr = (fs_range_reader){body, off + 4, off + 4 + get_be32(pfx)};
		assert_int_equal(ltx_decoder_reset(dec, fs_range_read, &rr,
						   NULL), 0);
		if (ltx_dbfile_apply(out, dec, sum, NULL, &le) != 0)
			fail_msg("apply: %s", le.msg[0] ? le.msg :
				 ltx_decoder_err(dec)->msg);
		off = rr.end;
		(*records)++;
	}
	ltx_decoder_free(dec);
	return out;
}

static void assert_same_file(int a, int b)
{
	struct stat sa, sb;
	uint8_t x[PS], y[PS];

	assert_int_equal(fstat(a, &sa), 0);
	assert_int_equal(fstat(b, &sb), 0);
	assert_int_equal(sa.st_size, sb.st_size);
	for (off_t off = 0; off < sa.st_size; off += PS) {
		assert_int_equal(lib_io_pread_full(a, x, PS, off, NULL), 0);
		assert_int_equal(lib_io_pread_full(b, y, PS, off, NULL), 0);
		if (memcmp(x, y, PS) != 0)
			fail_msg("page %jd differs", (intmax_t)(off / PS + 1));
	}
}

static void run_merge(uint32_t flags)
{
	char dir[64] = "/tmp/ltxfs-compact-XXXXXX", cmd[128], err[512] = "";
	struct image im[STEPS + 1];
	int steps[STEPS], all, merged;
	uint64_t len[STEPS], all_len = 0, mlen = 0, sum1, sum2;
	size_t r1, r2;
	bk_merge *m = NULL;
	bk_obj o = {0};
	int a, b;

	assert_non_null(mkdtemp(dir));
	make_images(dir, im);
	all = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	merged = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	assert_true(all >= 0 && merged >= 0);
	/* One object per step (one record each), and all in one body. */
	for (int i = 0; i < STEPS; i++) {
		struct stat st;
		steps[i] = open("/tmp", O_TMPFILE | O_RDWR, 0600);
		assert_true(steps[i] >= 0);
		encode_step(&im[i], &im[i + 1], (uint64_t)i + 2, flags,
			    steps[i]);
		encode_step(&im[i], &im[i + 1], (uint64_t)i + 2, flags, all);
		assert_int_equal(fstat(steps[i], &st), 0);
		len[i] = (uint64_t)st.st_size;
		all_len += len[i];
	}
	assert_int_equal(bk_merge_new("/tmp", &m), 0);
	for (int i = 0; i < STEPS; i++) {
		assert_int_equal(bk_merge_check(m, steps[i], len[i], err,
						sizeof(err)), 0);
		assert_int_equal(bk_merge_add(m, steps[i], len[i], err,
					      sizeof(err)), 0);
	}
	assert_int_equal(bk_merge_objects(m), STEPS);
	assert_int_equal(bk_merge_finish(m, merged, 0, &mlen, &o, err,
					 sizeof(err)), 0);
	bk_merge_free(m);
	assert_int_equal(o.level, 1);
	assert_int_equal(o.min_txid, 2);
	assert_int_equal(o.max_txid, STEPS + 1);
	assert_int_equal(o.post, image_checksum(&im[STEPS]));
	assert_int_equal(o.ts_ms, 1700000000000 + (STEPS + 1) * 1000);

	/* One by one, and merged: the same bytes, the same checksum. */
	a = apply_body(&im[0], all, all_len, &sum1, &r1);
	b = apply_body(&im[0], merged, mlen, &sum2, &r2);
	assert_int_equal(r1, STEPS);
	assert_int_equal(r2, 1);
	assert_int_equal(sum1, image_checksum(&im[STEPS]));
	assert_int_equal(sum2, sum1);
	assert_same_file(a, b);
	{
		ltx_decoder *dec = NULL;
		ltx_header h;
		fs_range_reader rr = {merged, 4, mlen};
		assert_int_equal(ltx_decoder_new(fs_range_read, &rr, "m", &dec),
				 0);
		assert_int_equal(ltx_decoder_verify(dec, &h, NULL, NULL), 0);
		assert_int_equal(h.flags, flags);
		assert_int_equal(h.commit, im[STEPS].len / PS);
		assert_int_equal(h.pre_apply_checksum, image_checksum(&im[0]));
		assert_int_equal(h.node_id, 7);
		ltx_decoder_free(dec);
	}
	close(a);
	close(b);
	for (int i = 0; i < STEPS; i++)
		close(steps[i]);
	for (int i = 0; i <= STEPS; i++)
		free(im[i].b);
	close(all);
	close(merged);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_merge_plain(void **state)
{
	(void)state;
	run_merge(0);
}

static void test_merge_zstd(void **state)
{
	(void)state;
	run_merge(LTX_FLAG_COMPRESS_ZSTD);
}

/* A one-record body of a synthetic record: page size ps, TXID txid,
 * pre-apply checksum pre, one page of byte fill. */
static int synthetic(uint32_t ps, uint64_t txid, uint64_t pre, int64_t ts,
		     uint64_t *len)
{
	ltx_header h = {.page_size = ps, .commit = 2, .min_txid = txid,
			.max_txid = txid, .timestamp = ts,
			.pre_apply_checksum = txid == 1 ? 0 : pre};
	uint8_t page[4096] = {0};
	ltx_encoder *enc = NULL;
	ltx_err le = {0};
	uint8_t pfx[4];
	struct stat st;
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	assert_true(fd >= 0);
	assert_true(lseek(fd, 4, SEEK_SET) == 4);
	assert_int_equal(ltx_encoder_new(&h, 0, ltx_write_to_fd, &fd, &enc,
					 &le), 0);
	memset(page, (int)txid, ps);
	assert_int_equal(ltx_encoder_add_page(enc, 1, page, &le), 0);
	if (txid == 1)
		assert_int_equal(ltx_encoder_add_page(enc, 2, page, &le), 0);
	assert_int_equal(ltx_encoder_finish(enc, txid == 1 ? 0 :
					    pre ^ txid, NULL, &le), 0);
	put_be32(pfx, (uint32_t)ltx_encoder_bytes_written(enc));
	assert_int_equal(lib_io_pwrite_full(fd, pfx, 4, 0), 0);
	ltx_encoder_free(enc);
	assert_int_equal(fstat(fd, &st), 0);
	*len = (uint64_t)st.st_size;
	return fd;
}

/* Records that cannot join: -EXDEV, and the merge is unchanged. */
static void test_merge_refuses(void **state)
{
	const uint64_t pre = LTX_CHECKSUM_FLAG | 0x100;
	char err[512] = "";
	bk_merge *m = NULL;
	uint64_t l1, l2, l3, l4, l5, l6;
	int first = synthetic(1024, 5, pre, 1000, &l1);
	int snap = synthetic(1024, 1, 0, 2000, &l2);
	int other_ps = synthetic(4096, 6, pre ^ 5, 2000, &l3);
	int gap = synthetic(1024, 7, pre ^ 5, 2000, &l4);
	int earlier = synthetic(1024, 6, pre ^ 5, 999, &l5);
	int next = synthetic(1024, 6, pre ^ 5, 1000, &l6);

	(void)state;
	assert_int_equal(bk_merge_new("/tmp", &m), 0);
	assert_int_equal(bk_merge_check(m, snap, l2, err, sizeof(err)),
			 -EXDEV);
	assert_int_equal(bk_merge_check(m, first, l1, err, sizeof(err)), 0);
	assert_int_equal(bk_merge_add(m, first, l1, err, sizeof(err)), 0);
	assert_int_equal(bk_merge_check(m, snap, l2, err, sizeof(err)),
			 -EXDEV);
	assert_int_equal(bk_merge_check(m, other_ps, l3, err, sizeof(err)),
			 -EXDEV);
	assert_int_equal(bk_merge_check(m, gap, l4, err, sizeof(err)),
			 -EXDEV);
	assert_int_equal(bk_merge_check(m, earlier, l5, err, sizeof(err)),
			 -EXDEV);
	assert_int_equal(bk_merge_check(m, next, l6, err, sizeof(err)), 0);
	/* A body cut short is corrupt. */
	assert_int_equal(bk_merge_check(m, next, l6 - 20, err, sizeof(err)),
			 -EBADMSG);
	assert_int_equal(bk_merge_objects(m), 1);
	bk_merge_free(m);
	close(first);
	close(snap);
	close(other_ps);
	close(gap);
	close(earlier);
	close(next);
}

/* The post-apply checksum in the trailer of a one-record body. */
static uint64_t body_post(int fd, uint64_t len)
{
	uint8_t b[8];

	assert_int_equal(lib_io_pread_full(fd, b, 8, (off_t)(len - 16), NULL),
			 0);
	return get_be64(b);
}

/* bk_compact_db on a file store: a start object and five L0 objects, the
 * third of another page size (a VACUUM after PRAGMA page_size): L1s of
 * the 1st-2nd and 4th-5th objects, the 3rd left as it is; a second run
 * has nothing to do; the chain a restore reads has 4 objects. */
static void test_compact_db(void **state)
{
	bk_store_opts so = {.type = BK_STORE_FILE};
	char dir[64] = "/tmp/ltxfs-compactdb-XXXXXX", key[256], err[512] = "";
	char cmd[128];
	bk_store *s = NULL;
	bk_compact_result res;
	uint64_t len, post;
	bk_keys keys = {0};
	bk_obj *objs = NULL, o = {0};
	const bk_obj **c = NULL, **sub = NULL;
	size_t n = 0, nc = 0, ns = 0;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	so.dir = dir;
	assert_int_equal(bk_store_open(&so, &s, err, sizeof(err)), 0);
	fd = synthetic(1024, 1, 0, 1000, &len);
	post = body_post(fd, len);
	o = (bk_obj){NULL, 4, 1, 1, post, 0, 0};
	assert_int_equal(bk_obj_key(key, sizeof(key), "p", "a.db", &o), 0);
	assert_int_equal(bk_store_put(s, key, fd, len, err, sizeof(err)), 0);
	close(fd);
	for (uint64_t t = 2; t <= 6; t++) {
		fd = synthetic(t == 4 ? 4096 : 1024, t, post, 1000 * (int64_t)t,
			       &len);
		post = body_post(fd, len);
		o = (bk_obj){NULL, 4, t, t, post, 0, 0};
		assert_int_equal(bk_obj_key(key, sizeof(key), "p", "a.db", &o),
				 0);
		assert_int_equal(bk_store_put(s, key, fd, len, err,
					      sizeof(err)), 0);
		close(fd);
	}
	assert_int_equal(bk_compact_db(s, "p", "a.db", 4, "/tmp", 0, 0, &res,
				       err, sizeof(err)), 0);
	assert_int_equal(res.l1_objects, 2);
	assert_int_equal(res.l0_objects, 4);
	assert_int_equal(bk_compact_db(s, "p", "a.db", 4, "/tmp", 0, 0, &res,
				       err, sizeof(err)), 0);
	assert_int_equal(res.l1_objects, 0);
	assert_int_equal(bk_obj_list(s, "p", "a.db", &keys, &objs, &n, err,
				     sizeof(err)), 0);
	assert_int_equal(n, 8);
	assert_int_equal(bk_obj_chain(objs, n, NULL, UINT64_MAX, &c, &nc), 0);
	assert_int_equal(nc, 6);
	assert_int_equal(bk_obj_substitute(objs, n, c, nc, UINT64_MAX, false,
					   0, &sub, &ns), 0);
	assert_int_equal(ns, 4);
	assert_int_equal(sub[1]->level, 1);
	assert_int_equal(sub[1]->min_txid, 2);
	assert_int_equal(sub[1]->max_txid, 3);
	assert_int_equal(sub[1]->ts_ms, 3000);
	assert_int_equal(sub[2]->level, 0);
	assert_int_equal(sub[3]->level, 1);
	assert_int_equal(sub[3]->min_txid, 5);
	assert_int_equal(sub[3]->max_txid, 6);
	assert_int_equal(sub[3]->epoch, 4);
	free(sub);
	free(c);
	free(objs);
	bk_keys_free(&keys);
	/* An uploader of an older epoch puts nothing (rule O4). */
	fd = synthetic(1024, 7, post, 7000, &len);
	o = (bk_obj){NULL, 4, 7, 7, body_post(fd, len), 0, 0};
	assert_int_equal(bk_obj_key(key, sizeof(key), "p", "a.db", &o), 0);
	assert_int_equal(bk_store_put(s, key, fd, len, err, sizeof(err)), 0);
	close(fd);
	fd = synthetic(1024, 8, o.post, 8000, &len);
	o = (bk_obj){NULL, 4, 8, 8, body_post(fd, len), 0, 0};
	assert_int_equal(bk_obj_key(key, sizeof(key), "p", "a.db", &o), 0);
	assert_int_equal(bk_store_put(s, key, fd, len, err, sizeof(err)), 0);
	close(fd);
	assert_int_equal(bk_compact_db(s, "p", "a.db", 3, "/tmp", 0, 0, &res,
				       err, sizeof(err)), 0);
	assert_int_equal(res.l1_objects, 0);
	assert_int_equal(res.newer_epoch, 4);
	assert_int_equal(bk_compact_db(s, "p", "a.db", 4, "/tmp", 0, 0, &res,
				       err, sizeof(err)), 0);
	assert_int_equal(res.l1_objects, 1);
	bk_store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* The window: six L0 objects committed 1 s apart after a start object,
 * compacted with a 2.5 s window, make two L1 objects of three (each
 * spans less than the window); without it, one of six. */
static void test_compact_window(void **state)
{
	bk_store_opts so = {.type = BK_STORE_FILE};
	char dir[64] = "/tmp/ltxfs-compactwin-XXXXXX", key[256], err[512] = "";
	char cmd[128];
	bk_store *s = NULL;
	bk_compact_result res;
	uint64_t len, post;
	bk_obj o;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	so.dir = dir;
	assert_int_equal(bk_store_open(&so, &s, err, sizeof(err)), 0);
	fd = synthetic(1024, 1, 0, 1000, &len);
	post = body_post(fd, len);
	o = (bk_obj){NULL, 1, 1, 1, post, 0, 0};
	assert_int_equal(bk_obj_key(key, sizeof(key), "", "w.db", &o), 0);
	assert_int_equal(bk_store_put(s, key, fd, len, err, sizeof(err)), 0);
	close(fd);
	for (uint64_t t = 2; t <= 7; t++) {
		fd = synthetic(1024, t, post, 1000 * (int64_t)t, &len);
		post = body_post(fd, len);
		o = (bk_obj){NULL, 1, t, t, post, 0, 0};
		assert_int_equal(bk_obj_key(key, sizeof(key), "", "w.db", &o),
				 0);
		assert_int_equal(bk_store_put(s, key, fd, len, err,
					      sizeof(err)), 0);
		close(fd);
	}
	assert_int_equal(bk_compact_db(s, "", "w.db", 1, "/tmp", 0, 2500, &res,
				       err, sizeof(err)), 0);
	assert_int_equal(res.l1_objects, 2);
	assert_int_equal(res.l0_objects, 6);
	snprintf(cmd, sizeof(cmd), "rm -rf %s/w.db/l1", dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(bk_compact_db(s, "", "w.db", 1, "/tmp", 0, 0, &res,
				       err, sizeof(err)), 0);
	assert_int_equal(res.l1_objects, 1);
	assert_int_equal(res.l0_objects, 6);
	bk_store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_plain),
		cmocka_unit_test(test_merge_zstd),
		cmocka_unit_test(test_merge_refuses),
		cmocka_unit_test(test_compact_db),
		cmocka_unit_test(test_compact_window),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
