#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ltx/checksum.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"

static void buf_reserve(tu_buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 256;

	if (b->len + more <= b->cap)
		return;
	while (cap < b->len + more)
		cap *= 2;
	b->data = realloc(b->data, cap);
	assert_non_null(b->data);
	b->cap = cap;
}

void tu_buf_append(tu_buf *b, const void *buf, size_t n)
{
	if (n == 0)
		return;
	buf_reserve(b, n);
	memcpy(b->data + b->len, buf, n);
	b->len += n;
}

void tu_buf_append_be32(tu_buf *b, uint32_t v)
{
	uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 8), (uint8_t)v};

	tu_buf_append(b, be, sizeof(be));
}

void tu_buf_append_be64(tu_buf *b, uint64_t v)
{
	tu_buf_append_be32(b, (uint32_t)(v >> 32));
	tu_buf_append_be32(b, (uint32_t)v);
}

int tu_buf_write(void *ctx, const void *buf, size_t n)
{
	tu_buf *b = ctx;

	if (b->fail_after >= 0 && b->writes >= b->fail_after)
		return -b->fail_errno;
	b->writes++;
	if (n > b->max_write)
		b->max_write = n;
	tu_buf_append(b, buf, n);
	return 0;
}

void tu_buf_free(tu_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

uint64_t tu_crc64_bitwise(uint64_t crc, const void *buf, size_t n)
{
	const uint64_t poly = UINT64_C(0xD800000000000000); /* reflected */
	const uint8_t *p = buf;

	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = (crc & 1) ? (crc >> 1) ^ poly : crc >> 1;
	}
	return ~crc;
}

uint64_t tu_page_checksum_ref(uint32_t pgno, const void *page, size_t ps)
{
	uint8_t be[4] = {(uint8_t)(pgno >> 24), (uint8_t)(pgno >> 16),
			 (uint8_t)(pgno >> 8), (uint8_t)pgno};
	uint64_t crc = tu_crc64_bitwise(0, be, 4);

	return tu_crc64_bitwise(crc, page, ps) | (UINT64_C(1) << 63);
}

void tu_fill_page(uint8_t *page, size_t ps, uint32_t pgno, uint32_t seed)
{
	uint32_t x = pgno * UINT32_C(0x9E3779B9) ^ seed ^ UINT32_C(0x5bd1e995);

	if (x == 0)
		x = 1;
	for (size_t i = 0; i < ps; i++) {
		if (i < ps / 4) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			page[i] = (uint8_t)x;
		} else {
			page[i] = (uint8_t)(pgno + seed + (i % 7));
		}
	}
}

ltx_header tu_header(uint32_t flags, uint32_t ps, uint32_t commit,
		     uint64_t txid, uint64_t pre_apply)
{
	ltx_header h;

	memset(&h, 0, sizeof(h));
	h.flags = flags;
	h.page_size = ps;
	h.commit = commit;
	h.min_txid = txid;
	h.max_txid = txid;
	h.timestamp = INT64_C(1700000000123);
	h.pre_apply_checksum =
		txid == 1 ? 0 : pre_apply | LTX_CHECKSUM_FLAG;
	h.node_id = UINT64_C(0x0102030405060708);
	return h;
}

int tu_encode(const ltx_header *h, int level, const uint32_t *pgnos,
	      size_t n, uint32_t seed, uint64_t post_apply, tu_buf *out,
	      ltx_trailer *tr, ltx_err *err)
{
	ltx_encoder *enc = NULL;
	uint8_t *page = malloc(h->page_size);
	int rc;

	assert_non_null(page);
	rc = ltx_encoder_new(h, level, tu_buf_write, out, &enc, err);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		tu_fill_page(page, h->page_size, pgnos[i], seed);
		rc = ltx_encoder_add_page(enc, pgnos[i], page, err);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, post_apply, tr, err);
	if (rc == 0)
		assert_int_equal(ltx_encoder_bytes_written(enc), out->len);
	ltx_encoder_free(enc);
	free(page);
	return rc;
}

int tu_decode(const void *data, size_t len, tu_decoded *out)
{
	ltx_mem_reader m = {data, len, 0};
	ltx_decoder *dec = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = ltx_decoder_new(ltx_read_from_mem, &m, "mem", &dec);
	assert_int_equal(rc, 0);
	rc = ltx_decoder_verify(dec, &out->hdr, &out->tr, &out->pages);
	out->err = *ltx_decoder_err(dec);
	if (rc == 0) {
		assert_int_equal(out->err.kind, LTX_OK);
		assert_int_equal(ltx_decoder_bytes_read(dec), len);
	} else {
		/* Every failure leaves its kind and a message behind. */
		assert_int_not_equal(out->err.kind, LTX_OK);
		assert_true(out->err.msg[0] != '\0');
	}
	ltx_decoder_free(dec);
	return rc;
}

void tu_block_page(tu_buf *block, uint32_t pgno, const void *data, size_t ps)
{
	tu_buf_append_be32(block, pgno);
	tu_buf_append(block, data, ps);
}

void tu_raw_file(const ltx_header *h, const tu_buf *block,
		 uint64_t post_apply, bool compress, tu_buf *out)
{
	uint8_t hdr[LTX_HEADER_SIZE];
	uint8_t be[8];
	uint64_t crc;

	ltx_header_encode(h, hdr);
	tu_buf_append(out, hdr, sizeof(hdr));
	crc = tu_crc64_bitwise(0, hdr, sizeof(hdr));
	crc = tu_crc64_bitwise(crc, block->data, block->len);
	if (compress) {
		size_t cap = ZSTD_compressBound(block->len);
		void *z = malloc(cap);
		size_t zn;
		assert_non_null(z);
		zn = ZSTD_compress(z, cap, block->data, block->len, 1);
		assert_false(ZSTD_isError(zn));
		tu_buf_append(out, z, zn);
		free(z);
	} else {
		tu_buf_append(out, block->data, block->len);
	}
	for (int i = 0; i < 8; i++)
		be[i] = (uint8_t)(post_apply >> (56 - 8 * i));
	crc = tu_crc64_bitwise(crc, be, 8);
	tu_buf_append_be64(out, post_apply);
	tu_buf_append_be64(out, crc | LTX_CHECKSUM_FLAG);
}

int tu_memfd(void)
{
	int fd = memfd_create("ltxfs-test", MFD_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

void tu_write_db(int fd, uint32_t ps, uint32_t npages, uint32_t seed,
		 bool sqlite_header)
{
	uint8_t *page = malloc(ps);

	assert_non_null(page);
	assert_int_equal(ftruncate(fd, 0), 0);
	for (uint32_t pgno = 1; pgno <= npages; pgno++) {
		tu_fill_page(page, ps, pgno, seed);
		if (pgno == 1 && sqlite_header) {
			memcpy(page, "SQLite format 3", 16);
			page[16] = (uint8_t)(ps == 65536 ? 0 : ps >> 8);
			page[17] = (uint8_t)(ps == 65536 ? 1 : ps);
		}
		assert_int_equal(pwrite(fd, page, ps,
					(off_t)(pgno - 1) * ps),
				 (ssize_t)ps);
	}
	free(page);
}

uint64_t tu_db_checksum_ref(int fd, uint32_t ps)
{
	struct stat st;
	uint8_t *page = malloc(ps);
	uint64_t sum = LTX_CHECKSUM_FLAG;
	uint32_t lock = (uint32_t)(UINT64_C(0x40000000) / ps + 1);

	assert_non_null(page);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size % ps, 0);
	for (uint32_t pgno = 1; pgno <= st.st_size / ps; pgno++) {
		if (pgno == lock)
			continue;
		assert_int_equal(pread(fd, page, ps, (off_t)(pgno - 1) * ps),
				 (ssize_t)ps);
		sum ^= tu_page_checksum_ref(pgno, page, ps);
	}
	free(page);
	return sum | LTX_CHECKSUM_FLAG;
}

void tu_read_fd(int fd, tu_buf *out)
{
	struct stat st;
	uint8_t chunk[65536];
	off_t off = 0;

	assert_int_equal(fstat(fd, &st), 0);
	while (off < st.st_size) {
		ssize_t r = pread(fd, chunk, sizeof(chunk), off);
		assert_true(r > 0);
		tu_buf_append(out, chunk, (size_t)r);
		off += r;
	}
}

const char *tu_peer_dir(void)
{
	const char *dir = getenv("LTXFS_PEER_DIR");
	struct stat st;

	if (!dir || !*dir || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return NULL;
	return dir;
}

void tu_read_file(const char *dir, const char *name, tu_buf *out)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	tu_read_fd(fd, out);
	close(fd);
}
