/*
 * Helpers shared by the unit tests (tests/unit/): a memory sink for the
 * encoder, deterministic page contents, a bitwise CRC-64/ISO written from
 * shared/LTX.md alone (the reference the library is checked against), a
 * raw LTX builder for crafting files that break exactly one rule, and
 * database files in memfds.
 *
 * Helpers use cmocka asserts, so they may only run inside a test.
 */
#ifndef TESTS_UNIT_TESTUTIL_H
#define TESTS_UNIT_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

/* A growable byte buffer; also an ltx_write_fn sink (tu_buf_write).
 * fail_after >= 0 makes the (fail_after+1)-th write fail with
 * -fail_errno. Zero-initialise, then tu_buf_free. */
typedef struct tu_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	int writes;
	int fail_after;
	int fail_errno;
	size_t max_write; /* largest single write seen */
} tu_buf;

#define TU_BUF_INIT {NULL, 0, 0, 0, -1, 0, 0}

int tu_buf_write(void *ctx, const void *buf, size_t n);
void tu_buf_append(tu_buf *b, const void *buf, size_t n);
void tu_buf_append_be32(tu_buf *b, uint32_t v);
void tu_buf_append_be64(tu_buf *b, uint64_t v);
void tu_buf_free(tu_buf *b);

/* CRC-64/ISO bit by bit, same continuation convention as ltx_crc64. */
uint64_t tu_crc64_bitwise(uint64_t crc, const void *buf, size_t n);
/* Page checksum from the bitwise CRC: crc(be32(pgno) || page) | 1<<63. */
uint64_t tu_page_checksum_ref(uint32_t pgno, const void *page, size_t ps);

/* Deterministic contents for page pgno: a random quarter, the rest a
 * compressible pattern; different seeds give different pages. */
void tu_fill_page(uint8_t *page, size_t ps, uint32_t pgno, uint32_t seed);

/* A valid header: page size ps, commit, min = max = txid; pre-apply 0
 * for a snapshot (txid 1), else pre_apply | 1<<63. */
ltx_header tu_header(uint32_t flags, uint32_t ps, uint32_t commit,
		     uint64_t txid, uint64_t pre_apply);

/* Encodes the pages pgnos[0..n) filled by tu_fill_page(seed) into out.
 * Returns the encoder's rc; err gets its error. */
int tu_encode(const ltx_header *h, int level, const uint32_t *pgnos,
	      size_t n, uint32_t seed, uint64_t post_apply, tu_buf *out,
	      ltx_trailer *tr, ltx_err *err);

/* Decodes a whole file from memory, pages discarded. */
typedef struct tu_decoded {
	ltx_header hdr;
	ltx_trailer tr;
	uint64_t pages;
	ltx_err err;
} tu_decoded;
int tu_decode(const void *data, size_t len, tu_decoded *out);

/* Raw files: a page block built by hand (frames and terminator are up to
 * the caller), wrapped in header and trailer with a correct file checksum
 * (computed with the bitwise CRC), the block zstd-compressed when
 * compress. */
void tu_block_page(tu_buf *block, uint32_t pgno, const void *data,
		   size_t ps);
void tu_raw_file(const ltx_header *h, const tu_buf *block,
		 uint64_t post_apply, bool compress, tu_buf *out);

/* An anonymous memory file; closed by the caller. */
int tu_memfd(void);
/* Writes npages pages of tu_fill_page(seed) to fd from page 1; when
 * sqlite_header, page 1 starts with a SQLite header naming ps. */
void tu_write_db(int fd, uint32_t ps, uint32_t npages, uint32_t seed,
		 bool sqlite_header);
/* The database checksum of fd's pages computed with the bitwise CRC. */
uint64_t tu_db_checksum_ref(int fd, uint32_t ps);
/* Reads the whole of fd. */
void tu_read_fd(int fd, tu_buf *out);

/* $LTXFS_PEER_DIR when set and a directory; NULL otherwise. */
const char *tu_peer_dir(void);
/* Reads dir/name whole into out; asserts on failure. */
void tu_read_file(const char *dir, const char *name, tu_buf *out);

#endif
