/*
 * Streaming LTX encoder. Pages go in one at a time in the order the format
 * requires; output goes to a write callback in bounded chunks, so memory
 * does not grow with the file (about 200 KiB uncompressed, plus zstd's
 * context with flag LTX_FLAG_COMPRESS_ZSTD).
 *
 *   ltx_encoder_new(&hdr, level, write_fn, ctx, &enc, &err);
 *   for each page: ltx_encoder_add_page(enc, pgno, data, &err);
 *   ltx_encoder_finish(enc, post_apply_checksum, &trailer, &err);
 *   ltx_encoder_free(enc);
 */
#ifndef LTX_ENCODER_H
#define LTX_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "ltx.h"

/* Writes all n bytes or returns a negative errno. */
typedef int (*ltx_write_fn)(void *ctx, const void *buf, size_t n);

/* A write callback for a file descriptor: ctx points to the int fd. */
int ltx_write_to_fd(void *ctx, const void *buf, size_t n);

typedef struct ltx_encoder ltx_encoder;

#define LTX_ZSTD_LEVEL_DEFAULT 1

/* Validates hdr (rules H2..H10) and writes the header. zstd_level applies
 * when hdr->flags has LTX_FLAG_COMPRESS_ZSTD (0 means the default, 1).
 * *out is freed with ltx_encoder_free. */
int ltx_encoder_new(const ltx_header *hdr, int zstd_level, ltx_write_fn fn,
		    void *ctx, ltx_encoder **out, ltx_err *err);

/* As ltx_encoder_new, with a zstd compression context (ZSTD_CCtx *) that
 * the caller owns and reuses across records (creating one costs more than
 * compressing a small transaction). NULL: the encoder makes its own. */
int ltx_encoder_new_cctx(const ltx_header *hdr, int zstd_level,
			 ltx_write_fn fn, void *ctx, void *zstd_cctx,
			 ltx_encoder **out, ltx_err *err);

/* Adds one page of hdr->page_size bytes. Enforces rules P1..P3. */
int ltx_encoder_add_page(ltx_encoder *enc, uint32_t pgno, const void *data,
			 ltx_err *err);

/* Ends the page block and writes the trailer. For a snapshot the database
 * checksum of its pages is computed; post_apply_checksum 0 means "use it",
 * anything else must equal it. *out (may be NULL) gets the trailer. */
int ltx_encoder_finish(ltx_encoder *enc, uint64_t post_apply_checksum,
		       ltx_trailer *out, ltx_err *err);

/* Bytes written so far (header, compressed block, trailer). */
uint64_t ltx_encoder_bytes_written(const ltx_encoder *enc);

void ltx_encoder_free(ltx_encoder *enc);

#endif
