#include "dbfile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checksum.h"
#include "lib/bytes.h"
#include "lib/io.h"

#define SCAN_CHUNK (1024 * 1024)

static const char sqlite_magic[16] = "SQLite format 3";

int ltx_dbfile_page_size(int fd, uint32_t *out_page_size, ltx_err *err)
{
	uint8_t hdr[100];
	uint32_t ps;
	size_t got = 0;
	int rc = lib_io_pread_full(fd, hdr, sizeof(hdr), 0, &got);

	if (rc == -ENODATA)
		return ltx_err_set(err, LTX_ERR_TRUNCATED, (int64_t)got,
				   "database header is %zu bytes: expected "
				   "100", got);
	if (rc < 0)
		return ltx_err_set(err, LTX_ERR_IO, 0, "reading header: %s",
				   strerror(-rc));
	if (memcmp(hdr, sqlite_magic, 16) != 0)
		return ltx_err_set(err, LTX_ERR_MAGIC, 0,
				   "not a SQLite database (no \"SQLite "
				   "format 3\" header)");
	ps = get_be16(hdr + 16);
	if (ps == 1)
		ps = 65536;
	if (ps < 512 || ps > 65536 || (ps & (ps - 1)))
		return ltx_err_set(err, LTX_ERR_PAGE_SIZE, 16,
				   "database page size %" PRIu32, ps);
	*out_page_size = ps;
	return 0;
}

int ltx_dbfile_checksum(int fd, uint32_t page_size, uint32_t *out_pages,
			uint64_t *out_checksum, ltx_err *err)
{
	struct stat st;
	uint8_t *buf = NULL;
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	uint32_t lock = ltx_lock_pgno(page_size);
	uint64_t pages, pgno = 1;
	size_t chunk = SCAN_CHUNK < page_size ? page_size : SCAN_CHUNK;
	int rc = 0;

	if (fstat(fd, &st) < 0)
		return ltx_err_set(err, LTX_ERR_IO, 0, "fstat: %s",
				   strerror(errno));
	if ((uint64_t)st.st_size % page_size)
		return ltx_err_set(err, LTX_ERR_TRUNCATED, st.st_size,
				   "database size %jd is not a multiple of "
				   "page size %" PRIu32, (intmax_t)st.st_size,
				   page_size);
	pages = (uint64_t)st.st_size / page_size;
	if (pages > UINT32_MAX)
		return ltx_err_set(err, LTX_ERR_COMMIT, 0, "%" PRIu64
				   " pages", pages);
	buf = malloc(chunk);
	if (!buf)
		return ltx_err_set(err, LTX_ERR_NOMEM, 0, "scan buffer");
	while (pgno <= pages) {
		uint64_t n = (pages - pgno + 1) * page_size;
		size_t want = n < chunk ? (size_t)n : chunk;
		off_t off = (off_t)((pgno - 1) * page_size);
		rc = lib_io_pread_full(fd, buf, want, off, NULL);
		if (rc < 0) {
			rc = ltx_err_set(err, LTX_ERR_IO, off, "reading: %s",
					 strerror(-rc));
			goto out;
		}
		for (size_t i = 0; i < want; i += page_size, pgno++) {
			if (pgno == lock)
				continue;
			sum = ltx_checksum_xor(
				sum, ltx_checksum_page((uint32_t)pgno, buf + i,
						       page_size));
		}
	}
	*out_pages = (uint32_t)pages;
	*out_checksum = sum;
out:
	free(buf);
	return rc;
}

int ltx_dbfile_encode(int fd, const ltx_header *tmpl, int zstd_level,
		      ltx_write_fn fn, void *ctx, ltx_trailer *out,
		      ltx_err *err)
{
	ltx_header h = *tmpl;
	ltx_encoder *enc = NULL;
	uint8_t *buf = NULL;
	struct stat st;
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	uint32_t lock;
	int rc;

	if (fstat(fd, &st) < 0)
		return ltx_err_set(err, LTX_ERR_IO, 0, "fstat: %s",
				   strerror(errno));
	if ((uint64_t)st.st_size % h.page_size)
		return ltx_err_set(err, LTX_ERR_TRUNCATED, st.st_size,
				   "database size %jd is not a multiple of "
				   "page size %" PRIu32, (intmax_t)st.st_size,
				   h.page_size);
	h.commit = (uint32_t)((uint64_t)st.st_size / h.page_size);
	lock = ltx_lock_pgno(h.page_size);
	rc = ltx_encoder_new(&h, zstd_level, fn, ctx, &enc, err);
	if (rc < 0)
		return rc;
	buf = malloc(h.page_size);
	if (!buf) {
		rc = ltx_err_set(err, LTX_ERR_NOMEM, 0, "page buffer");
		goto out;
	}
	for (uint32_t pgno = 1; pgno <= h.commit; pgno++) {
		off_t off = (off_t)(pgno - 1) * h.page_size;
		if (pgno == lock)
			continue;
		rc = lib_io_pread_full(fd, buf, h.page_size, off, NULL);
		if (rc < 0) {
			rc = ltx_err_set(err, LTX_ERR_IO, off, "reading page %"
					 PRIu32 ": %s", pgno, strerror(-rc));
			goto out;
		}
		sum = ltx_checksum_xor(sum, ltx_checksum_page(pgno, buf,
							      h.page_size));
		rc = ltx_encoder_add_page(enc, pgno, buf, err);
		if (rc < 0)
			goto out;
	}
	rc = ltx_encoder_finish(enc, sum, out, err);
out:
	free(buf);
	ltx_encoder_free(enc);
	return rc;
}

/* XORs out the checksums of pages [from, to] currently in the file. */
static int xor_out_range(int fd, uint32_t page_size, uint64_t from,
			 uint64_t to, uint8_t *buf, uint64_t *sum,
			 ltx_err *err)
{
	uint32_t lock = ltx_lock_pgno(page_size);

	for (uint64_t pgno = from; pgno <= to; pgno++) {
		off_t off = (off_t)((pgno - 1) * page_size);
		int rc;
		if (pgno == lock)
			continue;
		rc = lib_io_pread_full(fd, buf, page_size, off, NULL);
		if (rc < 0)
			return ltx_err_set(err, LTX_ERR_IO, off,
					   "reading page %" PRIu64 ": %s",
					   pgno, strerror(-rc));
		*sum = ltx_checksum_xor(
			*sum, ltx_checksum_page((uint32_t)pgno, buf,
						page_size));
	}
	return 0;
}

/* XORs in pages [from, to] that a growing commit adds without a frame:
 * they read as zeros, and count in the checksum like any other page. */
static void xor_in_zero_range(uint32_t page_size, uint64_t from, uint64_t to,
			      uint8_t *zero, uint64_t *sum)
{
	uint32_t lock = ltx_lock_pgno(page_size);

	memset(zero, 0, page_size);
	for (uint64_t pgno = from; pgno <= to; pgno++) {
		if (pgno == lock)
			continue;
		*sum = ltx_checksum_xor(
			*sum, ltx_checksum_page((uint32_t)pgno, zero,
						page_size));
	}
}

int ltx_dbfile_apply(int fd, ltx_decoder *dec, uint64_t *io_checksum,
		     ltx_header *out_hdr, ltx_err *err)
{
	ltx_header h;
	ltx_trailer t;
	uint8_t *page = NULL, *old = NULL;
	uint64_t sum = *io_checksum, db_pages, grown;
	uint32_t pgno, old_ps = 0;
	bool whole = false;
	struct stat st;
	int rc;

	rc = ltx_decoder_read_header(dec, &h);
	if (rc < 0)
		goto out_dec;
	if (!ltx_header_is_snapshot(&h) && h.pre_apply_checksum != sum)
		return ltx_err_set(err, LTX_ERR_PRE_APPLY, 40,
				   "pre-apply checksum %016" PRIx64
				   " does not match the database's %016"
				   PRIx64, h.pre_apply_checksum, sum);
	if (fstat(fd, &st) < 0)
		return ltx_err_set(err, LTX_ERR_IO, 0, "fstat: %s",
				   strerror(errno));
	db_pages = (uint64_t)st.st_size / h.page_size;
	page = malloc(h.page_size);
	old = malloc(h.page_size);
	if (!page || !old) {
		rc = ltx_err_set(err, LTX_ERR_NOMEM, 0, "page buffers");
		goto out;
	}
	if (!ltx_header_is_snapshot(&h) && st.st_size >= 100 &&
	    ltx_dbfile_page_size(fd, &old_ps, NULL) == 0 &&
	    old_ps != h.page_size)
		whole = true; /* every page, the old ones all replaced */
	if (ltx_header_is_snapshot(&h) || whole)
		sum = LTX_CHECKSUM_EMPTY;
	/* Pages past the old end up to `grown` are accounted for. */
	grown = db_pages;
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
		off_t off = (off_t)(pgno - 1) * h.page_size;
		if (!ltx_header_is_snapshot(&h) && !whole && pgno <= db_pages) {
			rc = xor_out_range(fd, h.page_size, pgno, pgno, old,
					   &sum, err);
			if (rc < 0)
				goto out;
		}
		if (!ltx_header_is_snapshot(&h) && !whole && pgno > grown + 1)
			xor_in_zero_range(h.page_size, grown + 1, pgno - 1,
					  old, &sum);
		if (pgno > grown)
			grown = pgno;
		rc = lib_io_pwrite_full(fd, page, h.page_size, off);
		if (rc < 0) {
			/* rc stays the errno: ENOSPC is not EIO. */
			ltx_err_set(err, LTX_ERR_IO, off, "writing page %"
				    PRIu32 ": %s", pgno, strerror(-rc));
			goto out;
		}
		sum = ltx_checksum_xor(sum, ltx_checksum_page(pgno, page,
							      h.page_size));
	}
	if (rc < 0)
		goto out_dec;
	rc = ltx_decoder_finish(dec, &t);
	if (rc < 0)
		goto out_dec;
	if (!ltx_header_is_snapshot(&h) && !whole && db_pages > h.commit) {
		rc = xor_out_range(fd, h.page_size, (uint64_t)h.commit + 1,
				   db_pages, old, &sum, err);
		if (rc < 0)
			goto out;
	}
	if (!ltx_header_is_snapshot(&h) && !whole && h.commit > grown)
		xor_in_zero_range(h.page_size, grown + 1, h.commit, old, &sum);
	rc = lib_io_ftruncate(fd, (off_t)h.commit * h.page_size);
	if (rc < 0) {
		ltx_err_set(err, LTX_ERR_IO, 0, "truncating to %" PRIu32
			    " pages: %s", h.commit, strerror(-rc));
		goto out;
	}
	if (sum != t.post_apply_checksum) {
		rc = ltx_err_set(err, LTX_ERR_POST_APPLY, 0,
				 "database checksum after apply %016" PRIx64
				 ": the file says %016" PRIx64, sum,
				 t.post_apply_checksum);
		goto out;
	}
	*io_checksum = sum;
	if (out_hdr)
		*out_hdr = h;
	goto out;
out_dec:
	if (err)
		*err = *ltx_decoder_err(dec);
out:
	free(page);
	free(old);
	return rc;
}
