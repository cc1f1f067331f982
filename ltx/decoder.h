/*
 * Streaming LTX decoder: header, then page by page, then trailer, checking
 * every rule in ltx.h and the file checksum. Memory is bounded (an input
 * buffer and zstd's stream context), whatever the file's size.
 *
 *   ltx_decoder_new(read_fn, ctx, "name", &dec);
 *   ltx_decoder_read_header(dec, &hdr);
 *   while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) ...;
 *   ltx_decoder_finish(dec, &trailer);    // checksums, end of input
 *
 * Every failure leaves a message in ltx_decoder_err(dec) naming the file,
 * the byte offset, the field, what was expected and what was found; the
 * decoder is then unusable. It never asserts on input.
 */
#ifndef LTX_DECODER_H
#define LTX_DECODER_H

#include <stddef.h>
#include <stdint.h>

#include "ltx.h"

/* Reads up to n bytes; *out_got < n only at end of input. 0 or -errno. */
typedef int (*ltx_read_fn)(void *ctx, void *buf, size_t n, size_t *out_got);

/* A read callback for a file descriptor: ctx points to the int fd. */
int ltx_read_from_fd(void *ctx, void *buf, size_t n, size_t *out_got);

/* A read callback over memory: ctx points to an ltx_mem_reader. */
typedef struct ltx_mem_reader {
	const uint8_t *data;
	size_t len;
	size_t pos;
} ltx_mem_reader;
int ltx_read_from_mem(void *ctx, void *buf, size_t n, size_t *out_got);

typedef struct ltx_decoder ltx_decoder;

/* name (copied) prefixes error messages: a path, or "stream". */
int ltx_decoder_new(ltx_read_fn fn, void *ctx, const char *name,
		    ltx_decoder **out);
void ltx_decoder_free(ltx_decoder *dec);
/* Starts the decoder afresh on another input (any state, a failed one
 * too), keeping its input buffer and zstd context, so a stream of
 * records costs no allocation per record. name NULL keeps the name. */
int ltx_decoder_reset(ltx_decoder *dec, ltx_read_fn fn, void *ctx,
		      const char *name);

int ltx_decoder_read_header(ltx_decoder *dec, ltx_header *out);
/* Returns 1 with a page in *out_pgno/buf (page_size bytes), 0 at the end
 * of the page block, or a negative errno. */
int ltx_decoder_next_page(ltx_decoder *dec, uint32_t *out_pgno, void *buf);
/* After next_page returned 0: reads and checks the trailer (rules T1..T4). */
int ltx_decoder_finish(ltx_decoder *dec, ltx_trailer *out);

/* The error of the last failure; kind LTX_OK when there was none. */
const ltx_err *ltx_decoder_err(const ltx_decoder *dec);
/* Database checksum of the pages decoded so far (meaningful for a
 * snapshot, where it is checked against the post-apply checksum). */
uint64_t ltx_decoder_page_checksum(const ltx_decoder *dec);
/* Bytes consumed from the source so far. */
uint64_t ltx_decoder_bytes_read(const ltx_decoder *dec);

/* Decodes a whole file and verifies it, pages discarded. hdr and trailer
 * may be NULL; *out_pages (may be NULL) gets the page count. */
int ltx_decoder_verify(ltx_decoder *dec, ltx_header *hdr, ltx_trailer *tr,
		       uint64_t *out_pages);

#endif
