/*
 * Shared by the fuzz targets (fuzz_decoder.c, fuzz_frame.c), their replay
 * driver and the corpus generators.
 *
 * The decoder target applies every input to a small database, the same
 * each time: FUZZ_SEED_PAGES pages of FUZZ_SEED_PAGE_SIZE bytes given by
 * fuzz_seed_page(). The corpus generator builds increments against it
 * (pre-apply checksum = its checksum), so the fuzzer starts with inputs
 * that apply.
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FUZZ_SEED_PAGE_SIZE 512
#define FUZZ_SEED_PAGES 4

/* libFuzzer's entry point; always returns 0, aborts on a broken
 * invariant. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* For the replay driver's --valid check: 0 when the last input was a
 * valid one for the target (a seed must be), else -1 with the reason in
 * why. */
int fuzz_last_invalid(char *why, size_t len);

static inline void fuzz_seed_page(uint32_t pgno, uint8_t *page)
{
	for (size_t i = 0; i < FUZZ_SEED_PAGE_SIZE; i++)
		page[i] = (uint8_t)(pgno * 37 + i * 13 + (i >> 5));
	if (pgno == 1) {
		memcpy(page, "SQLite format 3", 16);
		page[16] = FUZZ_SEED_PAGE_SIZE >> 8;
		page[17] = FUZZ_SEED_PAGE_SIZE & 0xff;
	}
}

#endif
