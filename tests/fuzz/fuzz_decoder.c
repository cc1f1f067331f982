/*
 * Fuzz target for ltx/decoder.c and ltx_dbfile_apply (ltx/dbfile.c).
 *
 * Each input is
 *   1. decoded whole (header, every page, trailer) from memory, and at
 *      the same time re-encoded with ltx/encoder.c from what was decoded;
 *   2. applied with ltx_dbfile_apply to a memfd holding the seed
 *      database of fuzz.h;
 * and then the same again with its file checksum fixed up (fixup()), since
 * a mutated file otherwise never gets past the checksum to the rules
 * checked after it, or to apply.
 * Beyond "no crash, no sanitizer report", it aborts when an invariant
 * breaks:
 *   - a failure has an error kind whose errno is the rc, and a message;
 *   - a file that decodes was read to its last byte; re-encoded it gives
 *     the same file checksum, and, uncompressed, the same bytes;
 *     a snapshot's pages give its post-apply checksum;
 *   - apply succeeds only on a file that decodes; then the database is
 *     commit pages long and its checksum, recomputed from the file, is the
 *     post-apply checksum apply returned; on failure the caller's
 *     checksum is untouched;
 *   - a valid snapshot always applies.
 * Work per input is bounded: decoding stops after MAX_LOGICAL bytes of
 * pages (a small zstd frame can inflate to gigabytes), and files whose
 * commit makes a database over MAX_APPLY_BYTES are not applied.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "fuzz.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"
#include "ltx/ltx.h"

#define MAX_LOGICAL (32u << 20)
#define MAX_APPLY_BYTES (16u << 20)
#define MAX_FIXUP (4u << 20)

/* The rc of the last input's full decode (0: a valid file) and of its
 * apply to the seed database (0: applied; 1: not attempted). */
static int fuzz_decoder_last_rc;
static int fuzz_decoder_last_apply_rc;

int fuzz_last_invalid(char *why, size_t len)
{
	if (fuzz_decoder_last_rc != 0) {
		snprintf(why, len, "a seed that does not decode (rc %d)",
			 fuzz_decoder_last_rc);
		return -1;
	}
	if (fuzz_decoder_last_apply_rc != 0) {
		snprintf(why, len, "a seed that does not apply to the seed "
			 "database (rc %d)", fuzz_decoder_last_apply_rc);
		return -1;
	}
	return 0;
}

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_decoder: invariant broken: %s\n", what);
		abort();
	}
}

/* The failure's kind maps to the rc it came with. */
static void check_err(int rc, const ltx_err *e)
{
	check(e->kind > LTX_OK && e->kind < LTX_ERR_KIND_COUNT,
	      "failure without an error kind");
	check(ltx_err_set(NULL, e->kind, 0, "-") == rc,
	      "rc does not match the error kind");
	check(e->msg[0] != '\0', "failure without a message");
	check(memchr(e->msg, '\0', sizeof(e->msg)) != NULL,
	      "unterminated message");
}

/* Re-encoding sink: compares against the input when uncompressed. */
struct cmp_sink {
	const uint8_t *data;
	size_t size;
	size_t pos;
	bool compare;
	bool differs;
};

static int cmp_write(void *ctx, const void *buf, size_t n)
{
	struct cmp_sink *s = ctx;

	if (s->compare &&
	    (s->pos + n > s->size || memcmp(s->data + s->pos, buf, n) != 0))
		s->differs = true;
	s->pos += n;
	return 0;
}

/* Step 1. Returns the decode rc; 1 when it stopped at MAX_LOGICAL. */
static int decode(const uint8_t *data, size_t size, ltx_header *h,
		  ltx_trailer *t)
{
	ltx_mem_reader m = {data, size, 0};
	struct cmp_sink sink = {data, size, 0, false, false};
	ltx_decoder *dec = NULL;
	ltx_encoder *enc = NULL;
	ltx_err eerr = {0};
	uint8_t *page = NULL;
	uint64_t logical = 0;
	uint32_t pgno;
	bool reencode;
	int rc;

	if (ltx_decoder_new(ltx_read_from_mem, &m, "fuzz", &dec) < 0)
		abort();
	rc = ltx_decoder_read_header(dec, h);
	if (rc < 0)
		goto out;
	page = malloc(h->page_size);
	if (!page)
		abort();
	sink.compare = !(h->flags & LTX_FLAG_COMPRESS_ZSTD);
	/* Everything the decoder accepts the encoder must accept. */
	reencode = ltx_encoder_new(h, 1, cmp_write, &sink, &enc, &eerr) == 0;
	check(reencode, "encoder refuses a header the decoder accepted");
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
		check(pgno >= 1 && pgno <= h->commit, "page beyond commit");
		check(pgno != ltx_lock_pgno(h->page_size), "lock page");
		check(ltx_encoder_add_page(enc, pgno, page, &eerr) == 0,
		      "encoder refuses a page the decoder accepted");
		logical += h->page_size;
		if (logical > MAX_LOGICAL) {
			rc = 1;
			goto out;
		}
	}
	if (rc < 0)
		goto out;
	rc = ltx_decoder_finish(dec, t);
	if (rc < 0)
		goto out;
	check(ltx_decoder_bytes_read(dec) == size, "bytes left unread");
	if (ltx_header_is_snapshot(h))
		check(ltx_decoder_page_checksum(dec) == t->post_apply_checksum,
		      "snapshot pages do not give the post-apply checksum");
	{
		ltx_trailer t2;
		check(ltx_encoder_finish(enc, t->post_apply_checksum, &t2,
					 &eerr) == 0,
		      "encoder refuses a trailer the decoder accepted");
		check(t2.file_checksum == t->file_checksum,
		      "re-encoded file checksum differs");
		check(t2.post_apply_checksum == t->post_apply_checksum,
		      "re-encoded post-apply checksum differs");
		if (sink.compare)
			check(!sink.differs && sink.pos == size,
			      "re-encoded uncompressed file differs");
	}
out:
	if (rc < 0)
		check_err(rc, ltx_decoder_err(dec));
	ltx_encoder_free(enc);
	ltx_decoder_free(dec);
	free(page);
	return rc;
}

static int seed_fd = -1;
static uint64_t seed_checksum;

/* (Re)writes the seed database into the memfd. */
static void seed_reset(void)
{
	uint8_t page[FUZZ_SEED_PAGE_SIZE];
	uint32_t pages;
	ltx_err err;

	if (seed_fd < 0) {
		seed_fd = memfd_create("fuzz-seed-db", MFD_CLOEXEC);
		if (seed_fd < 0)
			abort();
	}
	if (ftruncate(seed_fd, 0) < 0)
		abort();
	for (uint32_t p = 1; p <= FUZZ_SEED_PAGES; p++) {
		fuzz_seed_page(p, page);
		if (pwrite(seed_fd, page, sizeof(page),
			   (off_t)(p - 1) * FUZZ_SEED_PAGE_SIZE) !=
		    (ssize_t)sizeof(page))
			abort();
	}
	if (ltx_dbfile_checksum(seed_fd, FUZZ_SEED_PAGE_SIZE, &pages,
				&seed_checksum, &err) < 0)
		abort();
}

/* Step 2. Returns apply's rc. */
static int apply(const uint8_t *data, size_t size, int decode_rc,
		  const ltx_header *h, const ltx_trailer *t)
{
	ltx_mem_reader m = {data, size, 0};
	ltx_decoder *dec = NULL;
	ltx_header ah;
	ltx_err err = {0};
	uint64_t sum, before;
	int rc;

	seed_reset();
	before = sum = seed_checksum;
	if (ltx_decoder_new(ltx_read_from_mem, &m, "fuzz", &dec) < 0)
		abort();
	rc = ltx_dbfile_apply(seed_fd, dec, &sum, &ah, &err);
	ltx_decoder_free(dec);
	if (rc < 0) {
		check_err(rc, &err);
		check(sum == before, "failed apply changed the checksum");
		check(decode_rc != 0 || !ltx_header_is_snapshot(h),
		      "a valid snapshot did not apply");
		return rc;
	}
	check(decode_rc == 0, "apply accepted a file that does not decode");
	check(sum == t->post_apply_checksum, "apply returned another checksum");
	check(ah.commit == h->commit, "apply returned another header");
	{
		struct stat st;
		uint32_t pages = 0;
		uint64_t again = 0;
		ltx_err e2;
		check(fstat(seed_fd, &st) == 0 &&
			      (uint64_t)st.st_size ==
				      (uint64_t)h->commit * h->page_size,
		      "database is not commit pages long");
		check(ltx_dbfile_checksum(seed_fd, h->page_size, &pages,
					  &again, &e2) == 0,
		      "checksum of the applied database failed");
		check(again == sum,
		      "applied database's checksum is not the one returned");
	}
	return 0;
}

/* A copy of the input with its file checksum made right, so that the
 * fuzzer gets past rule T3 to the page and trailer rules and to apply.
 * NULL when the input is too short, its block does not inflate within
 * MAX_FIXUP bytes, or the checksum was right already. */
static uint8_t *fixup(const uint8_t *data, size_t size)
{
	const size_t body = LTX_HEADER_SIZE + LTX_TRAILER_SIZE;
	uint8_t *copy;
	uint64_t crc;

	if (size < body)
		return NULL;
	if (get_be32(data + 4) & LTX_FLAG_COMPRESS_ZSTD) {
		uint8_t *raw = malloc(MAX_FIXUP);
		size_t n;
		if (!raw)
			abort();
		n = ZSTD_decompress(raw, MAX_FIXUP, data + LTX_HEADER_SIZE,
				    size - body);
		if (ZSTD_isError(n)) {
			free(raw);
			return NULL;
		}
		crc = ltx_crc64(0, data, LTX_HEADER_SIZE);
		crc = ltx_crc64(crc, raw, n);
		crc = ltx_crc64(crc, data + size - LTX_TRAILER_SIZE, 8);
		free(raw);
	} else {
		crc = ltx_crc64(0, data, size - 8);
	}
	crc |= LTX_CHECKSUM_FLAG;
	if (get_be64(data + size - 8) == crc)
		return NULL;
	copy = malloc(size);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	put_be64(copy + size - 8, crc);
	return copy;
}

static void run(const uint8_t *data, size_t size, bool record)
{
	ltx_header h;
	ltx_trailer t;
	int rc;

	/* h stays zero unless the header decodes: then commit is 0 and
	 * apply, which fails on the header before any I/O, still runs. */
	memset(&h, 0, sizeof(h));
	memset(&t, 0, sizeof(t));
	rc = decode(data, size, &h, &t);
	if (record) {
		fuzz_decoder_last_rc = rc;
		fuzz_decoder_last_apply_rc = 1;
	}
	if (rc != 1 && (uint64_t)h.commit * h.page_size <= MAX_APPLY_BYTES) {
		int arc = apply(data, size, rc, &h, &t);
		if (record)
			fuzz_decoder_last_apply_rc = arc;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	run(data, size, true);
	fixed = fixup(data, size);
	if (fixed) {
		run(fixed, size, false);
		free(fixed);
	}
	return 0;
}
