/*
 * Writes the seed corpus of the decoder fuzz target: small valid LTX
 * files with 512-byte pages, snapshots and increments against the seed
 * database of fuzz.h, plain and zstd-compressed. Run once and commit the
 * output; it is deterministic (fixed timestamps) for a given libzstd.
 *
 *   fuzz_gen_corpus tests/fuzz/corpus/decoder
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "ltx/checksum.h"
#include "ltx/encoder.h"
#include "ltx/ltx.h"

#define PS FUZZ_SEED_PAGE_SIZE
#define MAX_PAGES 16

/* A database in memory: pages 1..n. */
struct mem_db {
	uint8_t page[MAX_PAGES + 1][PS];
	uint32_t n;
};

static void seed_db(struct mem_db *db)
{
	db->n = FUZZ_SEED_PAGES;
	for (uint32_t p = 1; p <= db->n; p++)
		fuzz_seed_page(p, db->page[p]);
}

static uint64_t db_checksum(const struct mem_db *db)
{
	uint64_t sum = LTX_CHECKSUM_EMPTY;

	for (uint32_t p = 1; p <= db->n; p++)
		sum = ltx_checksum_xor(sum, ltx_checksum_page(p, db->page[p],
							      PS));
	return sum;
}

static void fill(uint8_t *page, uint32_t pgno, uint32_t seed)
{
	for (size_t i = 0; i < PS; i++)
		page[i] = (uint8_t)(i < 64 ? (pgno ^ seed) * 131 + i * 7
					   : seed + i % 11);
}

/* Writes one file: pgnos[] (filled with seed) applied to *db, which is
 * updated to the result; pre-apply is db's checksum unless snapshot. */
static int write_ltx(const char *dir, const char *name, uint32_t flags,
		     uint64_t min_txid, uint64_t max_txid, uint32_t commit,
		     const uint32_t *pgnos, size_t n, uint32_t seed,
		     struct mem_db *db)
{
	char path[4096];
	ltx_header h = {0};
	ltx_encoder *enc = NULL;
	ltx_err err = {0};
	int fd, rc;

	h.flags = flags;
	h.page_size = PS;
	h.commit = commit;
	h.min_txid = min_txid;
	h.max_txid = max_txid;
	h.timestamp = INT64_C(1700000000000) + (int64_t)min_txid;
	h.pre_apply_checksum = min_txid == 1 ? 0 : db_checksum(db);
	h.node_id = 7;
	if (min_txid == 1)
		db->n = 0;
	for (size_t i = 0; i < n; i++)
		fill(db->page[pgnos[i]], pgnos[i], seed);
	/* Growing without frames: zero pages. */
	for (uint32_t p = db->n + 1; p <= commit; p++) {
		bool framed = false;
		for (size_t i = 0; i < n; i++)
			framed |= pgnos[i] == p;
		if (!framed)
			memset(db->page[p], 0, PS);
	}
	db->n = commit;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	rc = ltx_encoder_new(&h, 3, ltx_write_to_fd, &fd, &enc, &err);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = ltx_encoder_add_page(enc, pgnos[i], db->page[pgnos[i]],
					  &err);
	if (rc == 0)
		rc = ltx_encoder_finish(enc, db_checksum(db), NULL, &err);
	ltx_encoder_free(enc);
	close(fd);
	if (rc < 0)
		fprintf(stderr, "%s: %s\n", path, err.msg);
	else
		printf("%s\n", path);
	return rc;
}

int main(int argc, char **argv)
{
	static const uint32_t all3[] = {1, 2, 3};
	static const uint32_t all4[] = {1, 2, 3, 4};
	static const uint32_t some[] = {2, 4};
	static const uint32_t grow[] = {5, 7};
	static const uint32_t first[] = {1};
	struct mem_db *db = calloc(1, sizeof(*db));
	const char *dir;
	int bad = 0;

	if (argc != 2 || !db) {
		fprintf(stderr, "usage: fuzz_gen_corpus DIR\n");
		return 2;
	}
	dir = argv[1];
	seed_db(db);
	bad |= write_ltx(dir, "snapshot-plain.ltx", 0, 1, 1, 3, all3, 3, 1, db);
	seed_db(db);
	bad |= write_ltx(dir, "snapshot-zstd.ltx", LTX_FLAG_COMPRESS_ZSTD, 1,
			 1, 4, all4, 4, 2, db);
	seed_db(db);
	bad |= write_ltx(dir, "snapshot-empty.ltx", 0, 1, 1, 0, NULL, 0, 0, db);
	seed_db(db);
	bad |= write_ltx(dir, "increment-plain.ltx", 0, 2, 5, 4, some, 2, 3,
			 db);
	seed_db(db);
	bad |= write_ltx(dir, "increment-zstd.ltx", LTX_FLAG_COMPRESS_ZSTD, 9,
			 9, 4, some, 2, 4, db);
	seed_db(db);
	bad |= write_ltx(dir, "increment-grow-gap.ltx", 0, 3, 3, 8, grow, 2, 5,
			 db);
	seed_db(db);
	bad |= write_ltx(dir, "increment-grow-gap-zstd.ltx",
			 LTX_FLAG_COMPRESS_ZSTD, 3, 3, 8, grow, 2, 6, db);
	seed_db(db);
	bad |= write_ltx(dir, "increment-shrink.ltx", 0, 4, 4, 2, first, 1, 7,
			 db);
	seed_db(db);
	bad |= write_ltx(dir, "increment-delete.ltx", 0, 5, 5, 0, NULL, 0, 0,
			 db);
	free(db);
	return bad ? 1 : 0;
}
