/*
 * Streaming LTX encoder (layout and rules in ltx.h).
 *
 * The file checksum is a running CRC-64 over every logical byte: the
 * header, the uncompressed page block with its terminator, and the
 * post-apply checksum. Uncompressed output is gathered in a fixed buffer
 * and flushed when full; compressed output streams through one zstd frame
 * whose output buffer is flushed the same way.
 */
#include "encoder.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "checksum.h"
#include "lib/bytes.h"
#include "lib/io.h"

#define OUT_BUF_SIZE (128 * 1024)

struct ltx_encoder {
	ltx_header hdr;
	ltx_write_fn write_fn;
	void *ctx;
	ZSTD_CCtx *zc;          /* NULL when uncompressed */
	bool own_zc;            /* zc is freed with the encoder */
	uint8_t *out;           /* OUT_BUF_SIZE bytes */
	size_t out_len;
	uint64_t written;       /* bytes handed to write_fn */
	uint64_t file_crc;      /* running CRC over logical bytes */
	uint64_t db_checksum;   /* snapshot: XOR of page checksums */
	uint32_t last_pgno;
	uint32_t lock_pgno;
	bool finished;
	bool failed;
};

int ltx_write_to_fd(void *ctx, const void *buf, size_t n)
{
	return lib_io_write_full(*(const int *)ctx, buf, n);
}

static int flush_out(ltx_encoder *enc, ltx_err *err)
{
	int rc;

	if (enc->out_len == 0)
		return 0;
	rc = enc->write_fn(enc->ctx, enc->out, enc->out_len);
	if (rc < 0) {
		enc->failed = true;
		ltx_err_set(err, LTX_ERR_IO, (int64_t)enc->written,
			    "writing %zu bytes: %s", enc->out_len,
			    strerror(-rc));
		return rc;
	}
	enc->written += enc->out_len;
	enc->out_len = 0;
	return 0;
}

/* Appends raw (never compressed) bytes: the header and the trailer. */
static int emit_raw(ltx_encoder *enc, const void *buf, size_t n, ltx_err *err)
{
	const uint8_t *p = buf;

	while (n > 0) {
		size_t room = OUT_BUF_SIZE - enc->out_len;
		size_t k = n < room ? n : room;
		memcpy(enc->out + enc->out_len, p, k);
		enc->out_len += k;
		p += k;
		n -= k;
		if (enc->out_len == OUT_BUF_SIZE) {
			int rc = flush_out(enc, err);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* Appends bytes of the page block, compressing when configured. */
static int emit_block(ltx_encoder *enc, const void *buf, size_t n,
		      ZSTD_EndDirective mode, ltx_err *err)
{
	ZSTD_inBuffer in = {buf, n, 0};

	enc->file_crc = ltx_crc64(enc->file_crc, buf, n);
	if (!enc->zc)
		return emit_raw(enc, buf, n, err);
	for (;;) {
		ZSTD_outBuffer ob = {enc->out, OUT_BUF_SIZE, enc->out_len};
		size_t left = ZSTD_compressStream2(enc->zc, &ob, &in, mode);
		if (ZSTD_isError(left)) {
			enc->failed = true;
			return ltx_err_set(err, LTX_ERR_IO,
					   (int64_t)enc->written,
					   "zstd compression: %s",
					   ZSTD_getErrorName(left));
		}
		enc->out_len = ob.pos;
		if (enc->out_len == OUT_BUF_SIZE) {
			int rc = flush_out(enc, err);
			if (rc < 0)
				return rc;
		}
		if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size)
			return 0;
	}
}

int ltx_encoder_new(const ltx_header *hdr, int zstd_level, ltx_write_fn fn,
		    void *ctx, ltx_encoder **out, ltx_err *err)
{
	return ltx_encoder_new_cctx(hdr, zstd_level, fn, ctx, NULL, out, err);
}

int ltx_encoder_new_cctx(const ltx_header *hdr, int zstd_level,
			 ltx_write_fn fn, void *ctx, void *zstd_cctx,
			 ltx_encoder **out, ltx_err *err)
{
	uint8_t buf[LTX_HEADER_SIZE];
	ltx_encoder *enc = NULL;
	int rc;

	*out = NULL;
	rc = ltx_header_validate(hdr, err);
	if (rc < 0)
		return rc;
	enc = calloc(1, sizeof(*enc));
	if (!enc)
		return ltx_err_set(err, LTX_ERR_NOMEM, 0, "encoder");
	enc->out = malloc(OUT_BUF_SIZE);
	if (!enc->out) {
		rc = ltx_err_set(err, LTX_ERR_NOMEM, 0, "encoder buffer");
		goto out_free;
	}
	enc->hdr = *hdr;
	enc->write_fn = fn;
	enc->ctx = ctx;
	enc->db_checksum = LTX_CHECKSUM_EMPTY;
	enc->lock_pgno = ltx_lock_pgno(hdr->page_size);
	if (hdr->flags & LTX_FLAG_COMPRESS_ZSTD) {
		if (zstd_cctx) {
			enc->zc = zstd_cctx;
			ZSTD_CCtx_reset(enc->zc, ZSTD_reset_session_and_parameters);
		} else {
			enc->zc = ZSTD_createCCtx();
			enc->own_zc = true;
		}
		if (!enc->zc) {
			rc = ltx_err_set(err, LTX_ERR_NOMEM, 0, "zstd context");
			goto out_free;
		}
		if (zstd_level == 0)
			zstd_level = LTX_ZSTD_LEVEL_DEFAULT;
		ZSTD_CCtx_setParameter(enc->zc, ZSTD_c_compressionLevel,
				       zstd_level);
	}
	ltx_header_encode(hdr, buf);
	enc->file_crc = ltx_crc64(0, buf, sizeof(buf));
	rc = emit_raw(enc, buf, sizeof(buf), err);
	if (rc < 0)
		goto out_free;
	*out = enc;
	return 0;

out_free:
	ltx_encoder_free(enc);
	return rc;
}

int ltx_encoder_add_page(ltx_encoder *enc, uint32_t pgno, const void *data,
			 ltx_err *err)
{
	const ltx_header *h = &enc->hdr;
	uint8_t be[LTX_PAGE_HEADER_SIZE];
	int rc;

	if (enc->finished || enc->failed)
		return ltx_err_set(err, LTX_ERR_USAGE, (int64_t)enc->written,
				   "page %" PRIu32 " added to a %s encoder",
				   pgno, enc->failed ? "failed" : "finished");
	if (pgno == 0 || pgno > h->commit)
		return ltx_err_set(err, LTX_ERR_PGNO, (int64_t)enc->written,
				   "page %" PRIu32 ": expected 1..commit "
				   "%" PRIu32, pgno, h->commit);
	if (pgno == enc->lock_pgno)
		return ltx_err_set(err, LTX_ERR_LOCK_PAGE,
				   (int64_t)enc->written,
				   "page %" PRIu32 " is the lock page", pgno);
	if (ltx_header_is_snapshot(h)) {
		uint32_t want = enc->last_pgno + 1;
		if (want == enc->lock_pgno)
			want++;
		if (pgno != want)
			return ltx_err_set(err, LTX_ERR_SNAPSHOT,
					   (int64_t)enc->written,
					   "snapshot page %" PRIu32
					   ": expected page %" PRIu32,
					   pgno, want);
		enc->db_checksum = ltx_checksum_xor(
			enc->db_checksum,
			ltx_checksum_page(pgno, data, h->page_size));
	} else if (pgno <= enc->last_pgno) {
		return ltx_err_set(err, LTX_ERR_PAGE_ORDER,
				   (int64_t)enc->written,
				   "page %" PRIu32 " after page %" PRIu32
				   ": expected ascending", pgno,
				   enc->last_pgno);
	}
	put_be32(be, pgno);
	rc = emit_block(enc, be, sizeof(be), ZSTD_e_continue, err);
	if (rc == 0)
		rc = emit_block(enc, data, h->page_size, ZSTD_e_continue, err);
	if (rc < 0)
		return rc;
	enc->last_pgno = pgno;
	return 0;
}

int ltx_encoder_finish(ltx_encoder *enc, uint64_t post_apply_checksum,
		       ltx_trailer *out, ltx_err *err)
{
	const ltx_header *h = &enc->hdr;
	uint8_t zero[LTX_PAGE_HEADER_SIZE] = {0};
	uint8_t buf[LTX_TRAILER_SIZE];
	ltx_trailer t;
	int rc;

	if (enc->finished || enc->failed)
		return ltx_err_set(err, LTX_ERR_USAGE, (int64_t)enc->written,
				   "finish on a %s encoder",
				   enc->failed ? "failed" : "finished");
	if (ltx_header_is_snapshot(h)) {
		uint32_t next = enc->last_pgno + 1;
		if (next == enc->lock_pgno)
			next++;
		if (next <= h->commit)
			return ltx_err_set(err, LTX_ERR_SNAPSHOT,
					   (int64_t)enc->written,
					   "snapshot ends at page %" PRIu32
					   ": expected pages up to commit %"
					   PRIu32, enc->last_pgno, h->commit);
		if (post_apply_checksum == 0)
			post_apply_checksum = enc->db_checksum;
		if (post_apply_checksum != enc->db_checksum)
			return ltx_err_set(err, LTX_ERR_POST_APPLY,
					   (int64_t)enc->written,
					   "snapshot post-apply checksum "
					   "%016" PRIx64 ": its pages give %016"
					   PRIx64, post_apply_checksum,
					   enc->db_checksum);
	}
	if (!(post_apply_checksum & LTX_CHECKSUM_FLAG))
		return ltx_err_set(err, LTX_ERR_POST_APPLY,
				   (int64_t)enc->written,
				   "post-apply checksum %016" PRIx64
				   ": expected bit 63 set",
				   post_apply_checksum);
	rc = emit_block(enc, zero, sizeof(zero), ZSTD_e_end, err);
	if (rc < 0)
		return rc;
	t.post_apply_checksum = post_apply_checksum;
	put_be64(buf, post_apply_checksum);
	t.file_checksum = ltx_crc64(enc->file_crc, buf, 8) | LTX_CHECKSUM_FLAG;
	ltx_trailer_encode(&t, buf);
	rc = emit_raw(enc, buf, sizeof(buf), err);
	if (rc == 0)
		rc = flush_out(enc, err);
	if (rc < 0)
		return rc;
	enc->finished = true;
	if (out)
		*out = t;
	return 0;
}

uint64_t ltx_encoder_bytes_written(const ltx_encoder *enc)
{
	return enc->written + enc->out_len;
}

void ltx_encoder_free(ltx_encoder *enc)
{
	if (!enc)
		return;
	if (enc->own_zc)
		ZSTD_freeCCtx(enc->zc);
	free(enc->out);
	free(enc);
}
