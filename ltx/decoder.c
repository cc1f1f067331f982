/*
 * Streaming LTX decoder (layout and rules in ltx.h).
 *
 * States, in order; any error moves to FAILED and stays there:
 *
 *   NEW --read_header--> PAGES --next_page()==0--> BLOCK_DONE
 *       --finish--> DONE
 *
 * Raw input passes through a fixed buffer. With zstd, the page block is
 * one zstd frame; ZSTD_decompressStream consumes exactly up to the frame's
 * end, so whatever is left in the input buffer after it is the trailer.
 * Offsets in messages are source offsets for the header and trailer, and
 * logical (uncompressed) offsets inside a compressed block.
 */
#include "decoder.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "checksum.h"
#include "lib/bytes.h"
#include "lib/io.h"

#define IN_BUF_SIZE (128 * 1024)

enum dec_state { DEC_NEW, DEC_PAGES, DEC_BLOCK_DONE, DEC_DONE, DEC_FAILED };

struct ltx_decoder {
	ltx_read_fn read_fn;
	void *ctx;
	char *name;
	enum dec_state state;
	ltx_header hdr;
	ltx_err err;
	ZSTD_DCtx *zd;          /* NULL when uncompressed */
	ZSTD_DCtx *zd_keep;     /* the context, kept across resets */
	bool frame_done;        /* zstd reported the end of its frame */
	uint8_t *in;            /* IN_BUF_SIZE bytes */
	size_t in_pos, in_len;
	bool src_eof;
	uint64_t src_read;      /* bytes taken from the source */
	uint64_t logical;       /* logical offset (header + block bytes) */
	uint64_t file_crc;
	uint64_t db_checksum;
	uint32_t last_pgno;
	uint32_t lock_pgno;
};

int ltx_read_from_fd(void *ctx, void *buf, size_t n, size_t *out_got)
{
	return lib_io_read_full(*(const int *)ctx, buf, n, out_got);
}

int ltx_read_from_mem(void *ctx, void *buf, size_t n, size_t *out_got)
{
	ltx_mem_reader *m = ctx;
	size_t left = m->len - m->pos;
	size_t k = n < left ? n : left;

	memcpy(buf, m->data + m->pos, k);
	m->pos += k;
	*out_got = k;
	return 0;
}

/* Records an error, prefixed with the decoder's name, and fails it. */
__attribute__((format(printf, 4, 5))) static int
fail(ltx_decoder *dec, int kind, int64_t offset, const char *fmt, ...)
{
	char msg[sizeof(dec->err.msg)];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rc = ltx_err_set(&dec->err, kind, offset, "%s: %s", dec->name, msg);
	dec->state = DEC_FAILED;
	return rc;
}

/* Re-prefixes an error reported by format.c with the decoder's name. */
static int fail_with(ltx_decoder *dec, const ltx_err *e)
{
	int kind = e->kind;
	int64_t off = e->offset;
	char msg[sizeof(e->msg)];
	const char *colon = strstr(e->msg, ": ");

	snprintf(msg, sizeof(msg), "%s", colon ? colon + 2 : e->msg);
	return fail(dec, kind, off, "%s", msg);
}

static int fill_input(ltx_decoder *dec)
{
	size_t got = 0;
	int rc;

	if (dec->in_pos < dec->in_len || dec->src_eof)
		return 0;
	rc = dec->read_fn(dec->ctx, dec->in, IN_BUF_SIZE, &got);
	if (rc < 0)
		return fail(dec, LTX_ERR_IO, (int64_t)dec->src_read,
			    "reading: %s", strerror(-rc));
	dec->in_pos = 0;
	dec->in_len = got;
	dec->src_read += got;
	if (got < IN_BUF_SIZE)
		dec->src_eof = true; /* the read contract: short means EOF */
	return 0;
}

/* Takes n raw bytes from the source; *out_got < n means end of input. */
static int read_raw(ltx_decoder *dec, uint8_t *buf, size_t n, size_t *out_got)
{
	size_t got = 0;

	while (got < n) {
		size_t avail, k;
		int rc = fill_input(dec);
		if (rc < 0)
			return rc;
		avail = dec->in_len - dec->in_pos;
		if (avail == 0)
			break;
		k = n - got < avail ? n - got : avail;
		memcpy(buf + got, dec->in + dec->in_pos, k);
		dec->in_pos += k;
		got += k;
	}
	*out_got = got;
	return 0;
}

static uint64_t raw_offset(const ltx_decoder *dec)
{
	return dec->src_read - (dec->in_len - dec->in_pos);
}

/* Takes exactly n logical bytes of the page block. */
static int read_block(ltx_decoder *dec, uint8_t *buf, size_t n,
		      const char *what)
{
	size_t got = 0;
	int rc;

	if (!dec->zd) {
		rc = read_raw(dec, buf, n, &got);
		if (rc < 0)
			return rc;
		if (got < n)
			return fail(dec, LTX_ERR_TRUNCATED,
				    (int64_t)raw_offset(dec),
				    "file ends inside %s (%zu of %zu bytes)",
				    what, got, n);
	} else {
		ZSTD_outBuffer ob = {buf, n, 0};
		while (ob.pos < ob.size) {
			ZSTD_inBuffer ib;
			size_t r;
			if (dec->frame_done)
				return fail(dec, LTX_ERR_COMPRESSED,
					    (int64_t)(dec->logical + ob.pos),
					    "zstd frame ends inside %s", what);
			rc = fill_input(dec);
			if (rc < 0)
				return rc;
			ib.src = dec->in + dec->in_pos;
			ib.size = dec->in_len - dec->in_pos;
			ib.pos = 0;
			if (ib.size == 0)
				return fail(dec, LTX_ERR_TRUNCATED,
					    (int64_t)(dec->logical + ob.pos),
					    "file ends inside compressed %s",
					    what);
			r = ZSTD_decompressStream(dec->zd, &ob, &ib);
			dec->in_pos += ib.pos;
			if (ZSTD_isError(r))
				return fail(dec, LTX_ERR_COMPRESSED,
					    (int64_t)(dec->logical + ob.pos),
					    "zstd: %s while reading %s",
					    ZSTD_getErrorName(r), what);
			if (r == 0)
				dec->frame_done = true;
		}
	}
	dec->file_crc = ltx_crc64(dec->file_crc, buf, n);
	dec->logical += n;
	return 0;
}

int ltx_decoder_new(ltx_read_fn fn, void *ctx, const char *name,
		    ltx_decoder **out)
{
	ltx_decoder *dec = calloc(1, sizeof(*dec));

	*out = NULL;
	if (!dec)
		return -ENOMEM;
	dec->name = strdup(name ? name : "ltx");
	dec->in = malloc(IN_BUF_SIZE);
	if (!dec->name || !dec->in) {
		ltx_decoder_free(dec);
		return -ENOMEM;
	}
	dec->read_fn = fn;
	dec->ctx = ctx;
	dec->db_checksum = LTX_CHECKSUM_EMPTY;
	*out = dec;
	return 0;
}

int ltx_decoder_reset(ltx_decoder *dec, ltx_read_fn fn, void *ctx,
		      const char *name)
{
	if (name && strcmp(name, dec->name) != 0) {
		char *n = strdup(name);
		if (!n)
			return -ENOMEM;
		free(dec->name);
		dec->name = n;
	}
	dec->read_fn = fn;
	dec->ctx = ctx;
	dec->state = DEC_NEW;
	memset(&dec->hdr, 0, sizeof(dec->hdr));
	memset(&dec->err, 0, sizeof(dec->err));
	dec->zd = NULL;
	dec->frame_done = false;
	dec->in_pos = dec->in_len = 0;
	dec->src_eof = false;
	dec->src_read = 0;
	dec->logical = 0;
	dec->file_crc = 0;
	dec->db_checksum = LTX_CHECKSUM_EMPTY;
	dec->last_pgno = 0;
	dec->lock_pgno = 0;
	return 0;
}

void ltx_decoder_free(ltx_decoder *dec)
{
	if (!dec)
		return;
	ZSTD_freeDCtx(dec->zd_keep);
	free(dec->in);
	free(dec->name);
	free(dec);
}

const ltx_err *ltx_decoder_err(const ltx_decoder *dec)
{
	return &dec->err;
}

uint64_t ltx_decoder_page_checksum(const ltx_decoder *dec)
{
	return dec->db_checksum;
}

uint64_t ltx_decoder_bytes_read(const ltx_decoder *dec)
{
	return raw_offset(dec);
}

static int check_state(ltx_decoder *dec, enum dec_state want,
		       const char *call)
{
	if (dec->state == want)
		return 0;
	if (dec->state == DEC_FAILED)
		return ltx_err_set(NULL, dec->err.kind, 0, "%s", call);
	return fail(dec, LTX_ERR_USAGE, (int64_t)raw_offset(dec),
		    "%s called out of order", call);
}

int ltx_decoder_read_header(ltx_decoder *dec, ltx_header *out)
{
	uint8_t buf[LTX_HEADER_SIZE];
	ltx_err e = {0};
	size_t got = 0;
	int rc;

	rc = check_state(dec, DEC_NEW, "read_header");
	if (rc < 0)
		return rc;
	rc = read_raw(dec, buf, sizeof(buf), &got);
	if (rc < 0)
		return rc;
	if (got < sizeof(buf))
		return fail(dec, LTX_ERR_TRUNCATED, (int64_t)got,
			    "file ends inside the header (%zu of %d bytes)",
			    got, LTX_HEADER_SIZE);
	rc = ltx_header_decode(buf, &dec->hdr, &e);
	if (rc < 0)
		return fail_with(dec, &e);
	dec->file_crc = ltx_crc64(0, buf, sizeof(buf));
	dec->logical = LTX_HEADER_SIZE;
	dec->lock_pgno = ltx_lock_pgno(dec->hdr.page_size);
	if (dec->hdr.flags & LTX_FLAG_COMPRESS_ZSTD) {
		if (!dec->zd_keep)
			dec->zd_keep = ZSTD_createDCtx();
		else if (ZSTD_isError(ZSTD_DCtx_reset(dec->zd_keep,
						      ZSTD_reset_session_only)))
			return fail(dec, LTX_ERR_COMPRESSED, LTX_HEADER_SIZE,
				    "resetting the zstd context");
		if (!dec->zd_keep)
			return fail(dec, LTX_ERR_NOMEM, LTX_HEADER_SIZE,
				    "zstd context");
		dec->zd = dec->zd_keep;
	}
	dec->state = DEC_PAGES;
	if (out)
		*out = dec->hdr;
	return 0;
}

/* Checks that the zstd frame ends right after the terminator. */
static int finish_frame(ltx_decoder *dec)
{
	uint8_t extra;

	while (!dec->frame_done) {
		ZSTD_outBuffer ob = {&extra, 1, 0};
		ZSTD_inBuffer ib;
		size_t r;
		int rc = fill_input(dec);
		if (rc < 0)
			return rc;
		ib.src = dec->in + dec->in_pos;
		ib.size = dec->in_len - dec->in_pos;
		ib.pos = 0;
		r = ZSTD_decompressStream(dec->zd, &ob, &ib);
		dec->in_pos += ib.pos;
		if (ZSTD_isError(r))
			return fail(dec, LTX_ERR_COMPRESSED,
				    (int64_t)dec->logical,
				    "zstd: %s at the end of the page block",
				    ZSTD_getErrorName(r));
		if (ob.pos > 0)
			return fail(dec, LTX_ERR_COMPRESSED,
				    (int64_t)dec->logical,
				    "data after the page block terminator");
		if (r == 0)
			dec->frame_done = true;
		else if (ib.size == 0)
			return fail(dec, LTX_ERR_TRUNCATED,
				    (int64_t)raw_offset(dec),
				    "file ends inside the zstd frame");
	}
	return 0;
}

int ltx_decoder_next_page(ltx_decoder *dec, uint32_t *out_pgno, void *buf)
{
	const ltx_header *h = &dec->hdr;
	uint8_t be[LTX_PAGE_HEADER_SIZE];
	int64_t at = (int64_t)dec->logical;
	uint32_t pgno;
	int rc;

	rc = check_state(dec, DEC_PAGES, "next_page");
	if (rc < 0)
		return rc;
	rc = read_block(dec, be, sizeof(be), "a page number");
	if (rc < 0)
		return rc;
	pgno = get_be32(be);
	if (pgno == 0) {
		if (ltx_header_is_snapshot(h)) {
			uint32_t next = dec->last_pgno + 1;
			if (next == dec->lock_pgno)
				next++;
			if (next <= h->commit)
				return fail(dec, LTX_ERR_SNAPSHOT, at,
					    "snapshot ends after page %" PRIu32
					    ": expected pages up to commit %"
					    PRIu32, dec->last_pgno, h->commit);
		}
		if (dec->zd) {
			rc = finish_frame(dec);
			if (rc < 0)
				return rc;
		}
		dec->state = DEC_BLOCK_DONE;
		return 0;
	}
	if (pgno > h->commit)
		return fail(dec, LTX_ERR_PGNO, at,
			    "page number %" PRIu32 ": expected 1..commit %"
			    PRIu32, pgno, h->commit);
	if (pgno == dec->lock_pgno)
		return fail(dec, LTX_ERR_LOCK_PAGE, at,
			    "page %" PRIu32 " is the lock page for page size %"
			    PRIu32, pgno, h->page_size);
	if (ltx_header_is_snapshot(h)) {
		uint32_t want = dec->last_pgno + 1;
		if (want == dec->lock_pgno)
			want++;
		if (pgno != want)
			return fail(dec, LTX_ERR_SNAPSHOT, at,
				    "snapshot page %" PRIu32
				    ": expected page %" PRIu32, pgno, want);
	} else if (pgno <= dec->last_pgno) {
		return fail(dec, LTX_ERR_PAGE_ORDER, at,
			    "page %" PRIu32 " after page %" PRIu32
			    ": expected strictly ascending", pgno,
			    dec->last_pgno);
	}
	rc = read_block(dec, buf, h->page_size, "page data");
	if (rc < 0)
		return rc;
	if (ltx_header_is_snapshot(h))
		dec->db_checksum = ltx_checksum_xor(
			dec->db_checksum,
			ltx_checksum_page(pgno, buf, h->page_size));
	dec->last_pgno = pgno;
	*out_pgno = pgno;
	return 1;
}

int ltx_decoder_finish(ltx_decoder *dec, ltx_trailer *out)
{
	uint8_t buf[LTX_TRAILER_SIZE];
	int64_t at;
	ltx_trailer t;
	uint64_t want;
	size_t got = 0;
	int rc;

	rc = check_state(dec, DEC_BLOCK_DONE, "finish");
	if (rc < 0)
		return rc;
	at = (int64_t)raw_offset(dec);
	rc = read_raw(dec, buf, sizeof(buf), &got);
	if (rc < 0)
		return rc;
	if (got < sizeof(buf))
		return fail(dec, LTX_ERR_TRUNCATED, at + (int64_t)got,
			    "file ends inside the trailer (%zu of %d bytes)",
			    got, LTX_TRAILER_SIZE);
	ltx_trailer_decode(buf, &t);
	if (!(t.post_apply_checksum & LTX_CHECKSUM_FLAG))
		return fail(dec, LTX_ERR_POST_APPLY, at,
			    "post-apply checksum %016" PRIx64
			    ": expected bit 63 set", t.post_apply_checksum);
	want = ltx_crc64(dec->file_crc, buf, 8) | LTX_CHECKSUM_FLAG;
	if (t.file_checksum != want)
		return fail(dec, LTX_ERR_FILE_CHECKSUM, at + 8,
			    "file checksum %016" PRIx64 ": computed %016"
			    PRIx64, t.file_checksum, want);
	if (ltx_header_is_snapshot(&dec->hdr) &&
	    t.post_apply_checksum != dec->db_checksum)
		return fail(dec, LTX_ERR_POST_APPLY, at,
			    "snapshot post-apply checksum %016" PRIx64
			    ": its pages give %016" PRIx64,
			    t.post_apply_checksum, dec->db_checksum);
	rc = read_raw(dec, buf, 1, &got);
	if (rc < 0)
		return rc;
	if (got != 0)
		return fail(dec, LTX_ERR_TRAILING, at + LTX_TRAILER_SIZE,
			    "data after the trailer");
	dec->state = DEC_DONE;
	if (out)
		*out = t;
	return 0;
}

int ltx_decoder_verify(ltx_decoder *dec, ltx_header *hdr, ltx_trailer *tr,
		       uint64_t *out_pages)
{
	ltx_header h;
	uint8_t *page = NULL;
	uint64_t pages = 0;
	uint32_t pgno;
	int rc;

	rc = ltx_decoder_read_header(dec, &h);
	if (rc < 0)
		return rc;
	page = malloc(h.page_size);
	if (!page)
		return fail(dec, LTX_ERR_NOMEM, 0, "page buffer");
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1)
		pages++;
	free(page);
	if (rc < 0)
		return rc;
	rc = ltx_decoder_finish(dec, tr);
	if (rc < 0)
		return rc;
	if (hdr)
		*hdr = h;
	if (out_pages)
		*out_pages = pages;
	return 0;
}
