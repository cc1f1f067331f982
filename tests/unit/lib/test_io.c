/* Tests for lib/io.c, and fault injection through its lib_io table into
 * the ltx library's I/O paths: EIO, ENOSPC, EINTR, short transfers, zero
 * returns, fsync failures. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"
#include "tests/unit/testutil.h"

/* One fault plan, shared by every wrapper: call number fail_at (0-based,
 * counted per plan) and the fail_count - 1 after it fail with fail_errno;
 * with zero set they return 0 instead; every transfer moves at most
 * max_chunk bytes (0: no limit). */
static struct fault {
	int calls;
	int fail_at;
	int fail_count;
	int fail_errno;
	bool zero;
	size_t max_chunk;
} fault;

static void plan(int fail_at, int fail_count, int eno, size_t max_chunk)
{
	fault = (struct fault){0, fail_at, fail_count, eno, false, max_chunk};
}

/* Returns true (errno set) when this call must fail. */
static bool inject(void)
{
	int n = fault.calls++;

	if (fault.fail_at >= 0 && n >= fault.fail_at &&
	    n < fault.fail_at + fault.fail_count) {
		errno = fault.fail_errno;
		return true;
	}
	return false;
}

static size_t clamp(size_t n)
{
	return fault.max_chunk && n > fault.max_chunk ? fault.max_chunk : n;
}

static ssize_t f_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (inject())
		return fault.zero ? 0 : -1;
	return pwrite(fd, buf, clamp(n), off);
}

static ssize_t f_write(int fd, const void *buf, size_t n)
{
	if (inject())
		return fault.zero ? 0 : -1;
	return write(fd, buf, clamp(n));
}

static ssize_t f_pread(int fd, void *buf, size_t n, off_t off)
{
	if (inject())
		return -1;
	return pread(fd, buf, clamp(n), off);
}

static ssize_t f_read(int fd, void *buf, size_t n)
{
	if (inject())
		return -1;
	return read(fd, buf, clamp(n));
}

static int f_fsync(int fd)
{
	return inject() ? -1 : fsync(fd);
}

static int f_fdatasync(int fd)
{
	return inject() ? -1 : fdatasync(fd);
}

static int f_ftruncate(int fd, off_t len)
{
	return inject() ? -1 : ftruncate(fd, len);
}

static int f_rename(const char *from, const char *to)
{
	return inject() ? -1 : rename(from, to);
}

static int setup(void **state)
{
	(void)state;
	lib_io_reset();
	plan(-1, 0, 0, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	lib_io_reset();
	return 0;
}

static void test_reset_restores(void **state)
{
	(void)state;
	lib_io.pwrite = f_pwrite;
	lib_io.fsync = f_fsync;
	lib_io_reset();
	assert_true(lib_io.pwrite == pwrite);
	assert_true(lib_io.fsync == fsync);
	assert_true(lib_io.pread == pread);
	assert_true(lib_io.write == write);
	assert_true(lib_io.read == read);
	assert_true(lib_io.ftruncate == ftruncate);
	assert_true(lib_io.rename == rename);
}

static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + 7);
}

static void test_pwrite_full(void **state)
{
	uint8_t buf[1000], back[1000];
	int fd = tu_memfd();

	(void)state;
	fill(buf, sizeof(buf));
	lib_io.pwrite = f_pwrite;
	/* Short writes are carried on to the end. */
	plan(-1, 0, 0, 7);
	assert_int_equal(lib_io_pwrite_full(fd, buf, sizeof(buf), 10), 0);
	assert_int_equal(fault.calls, (1000 + 6) / 7);
	assert_int_equal(pread(fd, back, sizeof(back), 10), 1000);
	assert_memory_equal(back, buf, sizeof(buf));
	/* EINTR is retried. */
	plan(0, 3, EINTR, 0);
	assert_int_equal(lib_io_pwrite_full(fd, buf, sizeof(buf), 0), 0);
	assert_int_equal(fault.calls, 4);
	/* Errors come back as -errno, also after part was written. */
	plan(0, 1, EIO, 0);
	assert_int_equal(lib_io_pwrite_full(fd, buf, sizeof(buf), 0), -EIO);
	plan(2, 1, ENOSPC, 100);
	assert_int_equal(lib_io_pwrite_full(fd, buf, sizeof(buf), 0), -ENOSPC);
	assert_int_equal(fault.calls, 3);
	/* A write of nothing is an error, not a loop. */
	plan(1, 1000, 0, 10);
	fault.zero = true;
	assert_int_equal(lib_io_pwrite_full(fd, buf, sizeof(buf), 0), -EIO);
	assert_int_equal(fault.calls, 2);
	close(fd);
}

static void test_write_full(void **state)
{
	uint8_t buf[1000], back[1000];
	int fd = tu_memfd();

	(void)state;
	fill(buf, sizeof(buf));
	lib_io.write = f_write;
	plan(3, 2, EINTR, 33);
	assert_int_equal(lib_io_write_full(fd, buf, sizeof(buf)), 0);
	assert_int_equal(pread(fd, back, sizeof(back), 0), 1000);
	assert_memory_equal(back, buf, sizeof(buf));
	plan(1, 1, ENOSPC, 100);
	assert_int_equal(lib_io_write_full(fd, buf, sizeof(buf)), -ENOSPC);
	plan(0, 1, EIO, 0);
	assert_int_equal(lib_io_write_full(fd, buf, sizeof(buf)), -EIO);
	plan(0, 1000, 0, 0);
	fault.zero = true;
	assert_int_equal(lib_io_write_full(fd, buf, sizeof(buf)), -EIO);
	assert_int_equal(fault.calls, 1);
	close(fd);
}

static void test_pread_full(void **state)
{
	uint8_t buf[1000], back[1000];
	size_t got = 99;
	int fd = tu_memfd();

	(void)state;
	fill(buf, sizeof(buf));
	assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), 1000);
	lib_io.pread = f_pread;
	plan(1, 2, EINTR, 9);
	assert_int_equal(lib_io_pread_full(fd, back, 1000, 0, &got), 0);
	assert_int_equal(got, 1000);
	assert_memory_equal(back, buf, sizeof(buf));
	/* End of file first: -ENODATA and what was read. */
	plan(-1, 0, 0, 64);
	assert_int_equal(lib_io_pread_full(fd, back, 500, 700, &got), -ENODATA);
	assert_int_equal(got, 300);
	assert_int_equal(lib_io_pread_full(fd, back, 500, 700, NULL), -ENODATA);
	plan(2, 1, EIO, 64);
	assert_int_equal(lib_io_pread_full(fd, back, 1000, 0, &got), -EIO);
	assert_int_equal(got, 128);
	close(fd);
}

static void test_read_full(void **state)
{
	uint8_t buf[1000], back[1000];
	size_t got = 99;
	int fd = tu_memfd();

	(void)state;
	fill(buf, sizeof(buf));
	assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), 1000);
	lib_io.read = f_read;
	plan(0, 1, EINTR, 13);
	assert_int_equal(lib_io_read_full(fd, back, 600, &got), 0);
	assert_int_equal(got, 600);
	assert_memory_equal(back, buf, 600);
	/* Short at end of file, not an error. */
	assert_int_equal(lib_io_read_full(fd, back, 600, &got), 0);
	assert_int_equal(got, 400);
	assert_memory_equal(back, buf + 600, 400);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	plan(3, 1, EIO, 10);
	assert_int_equal(lib_io_read_full(fd, back, 600, &got), -EIO);
	assert_int_equal(got, 30);
	close(fd);
}

static void test_sync_truncate_rename(void **state)
{
	char dir[] = "/tmp/ltxfs-test-io-XXXXXX";
	char a[64], b[64];
	int fd = tu_memfd();
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	lib_io.fsync = f_fsync;
	lib_io.fdatasync = f_fdatasync;
	lib_io.ftruncate = f_ftruncate;
	lib_io.rename = f_rename;
	plan(0, 1, EIO, 0);
	assert_int_equal(lib_io_fsync(fd), -EIO);
	assert_int_equal(lib_io_fsync(fd), 0);
	plan(0, 1, ENOSPC, 0);
	assert_int_equal(lib_io_fdatasync(fd), -ENOSPC);
	assert_int_equal(lib_io_fdatasync(fd), 0);
	plan(0, 2, EINTR, 0);
	assert_int_equal(lib_io_ftruncate(fd, 4096), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 4096);
	plan(0, 1, EIO, 0);
	assert_int_equal(lib_io_ftruncate(fd, 0), -EIO);
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	close(open(a, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	plan(0, 1, EXDEV, 0);
	assert_int_equal(lib_io_rename(a, b), -EXDEV);
	assert_int_equal(access(a, F_OK), 0);
	assert_int_equal(lib_io_rename(a, b), 0);
	assert_int_equal(access(b, F_OK), 0);
	/* The directory's fsync goes through the table too. */
	plan(0, 1, EIO, 0);
	assert_int_equal(lib_io_fsync_dir(dir), -EIO);
	assert_int_equal(lib_io_fsync_dir(dir), 0);
	assert_int_equal(lib_io_fsync_dir("/nonexistent/ltxfs"), -ENOENT);
	unlink(b);
	rmdir(dir);
	close(fd);
}

static void expect_file(const char *dir, const char *name, const char *want)
{
	char path[128], got[16] = {0};
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, got, sizeof(got) - 1), (ssize_t)strlen(want));
	close(fd);
	assert_string_equal(got, want);
	snprintf(path, sizeof(path), "%s/%s.tmp", dir, name);
	assert_int_equal(access(path, F_OK), -1);
}

/* A failed replacement leaves the old file whole and no temporary. */
static void test_write_file_atomic(void **state)
{
	char dir[] = "/tmp/ltxfs-test-io-XXXXXX";
	char path[128];

	(void)state;
	assert_non_null(mkdtemp(dir));
	lib_io.write = f_write;
	lib_io.fsync = f_fsync;
	lib_io.rename = f_rename;
	assert_int_equal(lib_io_write_file_atomic(dir, "f", "one", 3), 0);
	expect_file(dir, "f", "one");
	plan(0, 1, ENOSPC, 0);
	assert_int_equal(lib_io_write_file_atomic(dir, "f", "two", 3), -ENOSPC);
	expect_file(dir, "f", "one");
	plan(0, 1, EIO, 0);
	lib_io.write = write;
	assert_int_equal(lib_io_write_file_atomic(dir, "f", "two", 3), -EIO);
	expect_file(dir, "f", "one");
	assert_int_equal(lib_io_write_file_atomic(dir, "f", "two", 3), 0);
	expect_file(dir, "f", "two");
	snprintf(path, sizeof(path), "%s/f", dir);
	unlink(path);
	rmdir(dir);
}

/* ---- faults in ltx_dbfile_apply ---- */

/* A database of 6 pages and an increment rewriting 2..5 and growing to 8;
 * want holds the expected result. */
struct apply_case {
	int db;
	int want;
	tu_buf ltx;
	uint64_t sum;
};

static void apply_case_init(struct apply_case *c)
{
	static const uint32_t pg[] = {2, 3, 4, 5, 8};
	uint8_t page[1024];
	ltx_header h;
	ltx_err err = {0};

	c->db = tu_memfd();
	c->want = tu_memfd();
	c->ltx = (tu_buf)TU_BUF_INIT;
	tu_write_db(c->db, 1024, 6, 1, true);
	tu_write_db(c->want, 1024, 6, 1, true);
	for (size_t i = 0; i < 5; i++) {
		tu_fill_page(page, 1024, pg[i], 2);
		assert_int_equal(pwrite(c->want, page, 1024,
					(off_t)(pg[i] - 1) * 1024), 1024);
	}
	assert_int_equal(ftruncate(c->want, 8 * 1024), 0);
	c->sum = tu_db_checksum_ref(c->db, 1024);
	h = tu_header(0, 1024, 8, 2, c->sum);
	assert_int_equal(tu_encode(&h, 0, pg, 5, 2,
				   tu_db_checksum_ref(c->want, 1024), &c->ltx,
				   NULL, &err), 0);
}

static void apply_case_free(struct apply_case *c)
{
	close(c->db);
	close(c->want);
	tu_buf_free(&c->ltx);
}

static int apply_case_run(struct apply_case *c, uint64_t *sum, ltx_err *err)
{
	ltx_mem_reader m = {c->ltx.data, c->ltx.len, 0};
	ltx_decoder *dec = NULL;
	int rc;

	assert_int_equal(ltx_decoder_new(ltx_read_from_mem, &m, "f", &dec), 0);
	memset(err, 0, sizeof(*err));
	*sum = c->sum;
	rc = ltx_dbfile_apply(c->db, dec, sum, NULL, err);
	ltx_decoder_free(dec);
	return rc;
}

static void assert_files_equal(int a, int b)
{
	tu_buf x = TU_BUF_INIT, y = TU_BUF_INIT;

	tu_read_fd(a, &x);
	tu_read_fd(b, &y);
	assert_int_equal(x.len, y.len);
	assert_memory_equal(x.data, y.data, x.len);
	tu_buf_free(&x);
	tu_buf_free(&y);
}

/* Short writes still apply the file exactly. */
static void test_apply_short_writes(void **state)
{
	struct apply_case c;
	uint64_t sum;
	ltx_err err;

	(void)state;
	apply_case_init(&c);
	lib_io.pwrite = f_pwrite;
	plan(-1, 0, 0, 100);
	assert_int_equal(apply_case_run(&c, &sum, &err), 0);
	assert_true(fault.calls >= 5 * 11);
	assert_files_equal(c.db, c.want);
	assert_int_equal(sum, tu_db_checksum_ref(c.want, 1024));
	apply_case_free(&c);
}

/* pwrite failing at each of its calls, with EIO and with ENOSPC: apply
 * fails with that errno, kind IO, a message naming the page, and leaves
 * the caller's checksum alone. */
static void test_apply_pwrite_fails(void **state)
{
	static const int errs[] = {EIO, ENOSPC};

	(void)state;
	for (size_t e = 0; e < 2; e++) {
		for (int at = 0; at < 5; at++) {
			struct apply_case c;
			uint64_t sum;
			ltx_err err;
			int rc;
			apply_case_init(&c);
			lib_io.pwrite = f_pwrite;
			plan(at, 1, errs[e], 0);
			rc = apply_case_run(&c, &sum, &err);
			if (rc != -errs[e])
				fail_msg("pwrite %d fails with %s: rc %d (%s)",
					 at, strerror(errs[e]), rc, err.msg);
			assert_int_equal(err.kind, LTX_ERR_IO);
			assert_non_null(strstr(err.msg, "writing page"));
			assert_non_null(strstr(err.msg, strerror(errs[e])));
			assert_int_equal(sum, c.sum);
			lib_io_reset();
			apply_case_free(&c);
		}
	}
}

static void test_apply_pwrite_returns_zero(void **state)
{
	struct apply_case c;
	uint64_t sum;
	ltx_err err;

	(void)state;
	apply_case_init(&c);
	lib_io.pwrite = f_pwrite;
	plan(1, 1000, 0, 0);
	fault.zero = true;
	assert_int_equal(apply_case_run(&c, &sum, &err), -EIO);
	assert_int_equal(err.kind, LTX_ERR_IO);
	assert_int_equal(fault.calls, 2);
	apply_case_free(&c);
}

static void test_apply_ftruncate_fails(void **state)
{
	static const int errs[] = {EIO, ENOSPC};

	(void)state;
	for (size_t e = 0; e < 2; e++) {
		struct apply_case c;
		uint64_t sum;
		ltx_err err;
		apply_case_init(&c);
		lib_io.ftruncate = f_ftruncate;
		plan(0, 1, errs[e], 0);
		assert_int_equal(apply_case_run(&c, &sum, &err), -errs[e]);
		assert_int_equal(err.kind, LTX_ERR_IO);
		assert_non_null(strstr(err.msg, "truncating"));
		assert_int_equal(sum, c.sum);
		apply_case_free(&c);
	}
}

/* Reading the old pages (to XOR them out) fails. */
static void test_apply_pread_fails(void **state)
{
	struct apply_case c;
	uint64_t sum;
	ltx_err err;

	(void)state;
	apply_case_init(&c);
	lib_io.pread = f_pread;
	plan(2, 1, EIO, 0);
	assert_int_equal(apply_case_run(&c, &sum, &err), -EIO);
	assert_int_equal(err.kind, LTX_ERR_IO);
	assert_non_null(strstr(err.msg, "reading page"));
	assert_int_equal(sum, c.sum);
	apply_case_free(&c);
}

/* ---- faults in checksum, encode and the fd callbacks ---- */

static void test_dbfile_checksum_faults(void **state)
{
	int fd = tu_memfd();
	uint32_t pages;
	uint64_t sum, want;
	ltx_err err;

	(void)state;
	tu_write_db(fd, 512, 40, 3, true);
	want = tu_db_checksum_ref(fd, 512);
	lib_io.pread = f_pread;
	plan(-1, 0, 0, 333);
	assert_int_equal(ltx_dbfile_checksum(fd, 512, &pages, &sum, &err), 0);
	assert_int_equal(sum, want);
	plan(0, 1, EIO, 0);
	assert_int_equal(ltx_dbfile_checksum(fd, 512, &pages, &sum, &err),
			 -EIO);
	assert_int_equal(err.kind, LTX_ERR_IO);
	plan(0, 1, EIO, 0);
	assert_int_equal(ltx_dbfile_page_size(fd, &pages, &err), -EIO);
	assert_int_equal(err.kind, LTX_ERR_IO);
	close(fd);
}

/* The encoder writing to a file descriptor: short writes make the same
 * file, and a failing write at any point is reported. */
static void test_encode_to_fd_faults(void **state)
{
	int db = tu_memfd();
	ltx_header tmpl = tu_header(0, 65536, 0, 1, 0);
	tu_buf mem = TU_BUF_INIT;
	ltx_trailer tr;
	ltx_err err;

	(void)state;
	tu_write_db(db, 65536, 5, 4, true);
	assert_int_equal(ltx_dbfile_encode(db, &tmpl, 0, tu_buf_write, &mem,
					   &tr, &err), 0);
	lib_io.write = f_write;
	/* Short writes and EINTR. */
	{
		int out = tu_memfd();
		tu_buf file = TU_BUF_INIT;
		plan(2, 3, EINTR, 1000);
		assert_int_equal(ltx_dbfile_encode(db, &tmpl, 0,
						   ltx_write_to_fd, &out, &tr,
						   &err), 0);
		tu_read_fd(out, &file);
		assert_int_equal(file.len, mem.len);
		assert_memory_equal(file.data, mem.data, mem.len);
		tu_buf_free(&file);
		close(out);
	}
	/* Each of the (3) writes failing in turn. */
	for (int at = 0; at < 3; at++) {
		for (int e = 0; e < 2; e++) {
			int eno = e ? ENOSPC : EIO;
			int out = tu_memfd();
			plan(at, 1, eno, 0);
			memset(&err, 0, sizeof(err));
			assert_int_equal(ltx_dbfile_encode(db, &tmpl, 0,
							   ltx_write_to_fd,
							   &out, &tr, &err),
					 -eno);
			assert_int_equal(err.kind, LTX_ERR_IO);
			assert_non_null(strstr(err.msg, strerror(eno)));
			close(out);
		}
	}
	/* Reading the database fails. */
	lib_io_reset();
	lib_io.pread = f_pread;
	{
		tu_buf sink = TU_BUF_INIT;
		plan(3, 1, EIO, 0);
		assert_int_equal(ltx_dbfile_encode(db, &tmpl, 0, tu_buf_write,
						   &sink, &tr, &err), -EIO);
		assert_int_equal(err.kind, LTX_ERR_IO);
		assert_non_null(strstr(err.msg, "reading page 4"));
		tu_buf_free(&sink);
	}
	tu_buf_free(&mem);
	close(db);
}

/* The decoder reading a file descriptor: short reads and EINTR are
 * invisible, EIO is an IO error. */
static void test_decode_from_fd_faults(void **state)
{
	static const uint32_t pg[] = {1, 2, 3};
	ltx_header h = tu_header(LTX_FLAG_COMPRESS_ZSTD, 65536, 3, 1, 0);
	tu_buf f = TU_BUF_INIT;
	ltx_err err = {0};
	int fd = tu_memfd();

	(void)state;
	assert_int_equal(tu_encode(&h, 0, pg, 3, 1, 0, &f, NULL, &err), 0);
	assert_int_equal(write(fd, f.data, f.len), (ssize_t)f.len);
	lib_io.read = f_read;
	for (int pass = 0; pass < 2; pass++) {
		ltx_decoder *dec = NULL;
		uint64_t pages = 0;
		int rc;
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		if (pass == 0)
			plan(1, 2, EINTR, 777);
		else
			plan(5, 1, EIO, 777);
		assert_int_equal(ltx_decoder_new(ltx_read_from_fd, &fd, "fd",
						 &dec), 0);
		rc = ltx_decoder_verify(dec, NULL, NULL, &pages);
		if (pass == 0) {
			assert_int_equal(rc, 0);
			assert_int_equal(pages, 3);
		} else {
			assert_int_equal(rc, -EIO);
			assert_int_equal(ltx_decoder_err(dec)->kind,
					 LTX_ERR_IO);
		}
		ltx_decoder_free(dec);
	}
	tu_buf_free(&f);
	close(fd);
}

/* Every test starts and ends with the real syscalls in the table. */
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_reset_restores),
		T(test_pwrite_full),
		T(test_write_full),
		T(test_pread_full),
		T(test_read_full),
		T(test_sync_truncate_rename),
		T(test_write_file_atomic),
		T(test_apply_short_writes),
		T(test_apply_pwrite_fails),
		T(test_apply_pwrite_returns_zero),
		T(test_apply_ftruncate_fails),
		T(test_apply_pread_fails),
		T(test_dbfile_checksum_faults),
		T(test_encode_to_fd_faults),
		T(test_decode_from_fd_faults),
	};

	return cmocka_run_group_tests_name("lib/io", tests, NULL, NULL);
}
