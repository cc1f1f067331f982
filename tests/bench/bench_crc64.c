/*
 * bench_crc64: CRC-64/ISO throughput of ltx_crc64 on a 256 MiB buffer, on
 * one core, median of LTXFS_BENCH_RUNS (>= 5 by default) interleaved runs.
 *
 * Measured side by side in the same run:
 *   ltx_crc64            the dispatching entry point (PCLMULQDQ folding on
 *                        CPUs that have it, else slicing by 16)
 *   ltx_crc64_portable   the table code alone (slicing by 16)
 *   ltx_checksum_page    ltx_crc64 called page by page (4 KiB), as the
 *                        encoder and decoder use it
 *   memory read          a plain 64-bit XOR over the buffer: the ceiling
 *                        any checksum can reach here
 * Target: ltx_crc64 >= 2 GB/s (GB = 1e9 bytes).
 *
 * Self-check first (exit 1 on any mismatch): the check value of
 * "123456789", and ltx_crc64 against ltx_crc64_portable and an independent
 * bit-at-a-time reference on random lengths, alignments and seeds, and on
 * the whole buffer in every run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "ltx/checksum.h"

#define BUF_SIZE ((size_t)256 << 20)
#define PAGE 4096
#define TARGET_GBPS 2.0
#define CHECK_VALUE UINT64_C(0xB90956C775A41001)

/* Bit at a time straight from the definition: nothing shared with
 * ltx/checksum.c. */
static uint64_t crc64_bitwise(uint64_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int b = 0; b < 8; b++)
			crc = (crc & 1) ? (crc >> 1) ^ UINT64_C(0xD800000000000000)
					: crc >> 1;
	}
	return ~crc;
}

static void self_check(const uint8_t *buf)
{
	uint64_t st = 0x9E3779B97F4A7C15;
	const char *cv = "123456789";

	if (ltx_crc64(0, cv, 9) != CHECK_VALUE ||
	    ltx_crc64_portable(0, cv, 9) != CHECK_VALUE ||
	    crc64_bitwise(0, (const uint8_t *)cv, 9) != CHECK_VALUE)
		bench_fail("check value of \"123456789\" is not %016" PRIx64,
			   CHECK_VALUE);
	for (int i = 0; i < 20000; i++) {
		size_t len = (size_t)(bench_rand(&st) % 9000);
		size_t off = (size_t)(bench_rand(&st) % 64);
		uint64_t seed = bench_rand(&st);
		uint64_t fast, port, ref, chained;
		size_t split;

		if (i % 4 == 0)
			len = (size_t)(bench_rand(&st) % 300);
		split = len ? (size_t)(bench_rand(&st) % (len + 1)) : 0;
		fast = ltx_crc64(seed, buf + off, len);
		port = ltx_crc64_portable(seed, buf + off, len);
		chained = ltx_crc64(ltx_crc64(seed, buf + off, split),
				    buf + off + split, len - split);
		if (fast != port || fast != chained)
			bench_fail("crc64 mismatch: len %zu off %zu seed %016"
				   PRIx64 ": ltx_crc64 %016" PRIx64
				   ", portable %016" PRIx64 ", chained %016"
				   PRIx64, len, off, seed, fast, port,
				   chained);
		if (i % 16 == 0) {
			ref = crc64_bitwise(seed, buf + off, len);
			if (fast != ref)
				bench_fail("crc64 mismatch against bitwise: "
					   "len %zu off %zu: %016" PRIx64
					   " != %016" PRIx64, len, off, fast,
					   ref);
		}
	}
	printf("self-check: ltx_crc64 == portable == bitwise on 20000 random "
	       "inputs: ok\n");
}

static uint64_t crc_by_pages(const uint8_t *buf, size_t n)
{
	uint64_t sum = LTX_CHECKSUM_EMPTY;

	for (size_t off = 0; off + PAGE <= n; off += PAGE)
		sum = ltx_checksum_xor(
			sum, ltx_checksum_page((uint32_t)(off / PAGE + 1),
					       buf + off, PAGE));
	return sum;
}

static uint64_t xor_read(const uint8_t *buf, size_t n)
{
	uint64_t acc[4] = {0, 0, 0, 0};

	for (size_t i = 0; i + 32 <= n; i += 32) {
		for (int k = 0; k < 4; k++) {
			uint64_t v;
			memcpy(&v, buf + i + 8 * (size_t)k, 8);
			acc[k] ^= v;
		}
	}
	return acc[0] ^ acc[1] ^ acc[2] ^ acc[3];
}

int main(void)
{
	int runs = bench_runs();
	uint8_t *buf = malloc(BUF_SIZE);
	double *t_fast = calloc((size_t)runs, sizeof(double));
	double *t_port = calloc((size_t)runs, sizeof(double));
	double *t_page = calloc((size_t)runs, sizeof(double));
	double *t_read = calloc((size_t)runs, sizeof(double));
	double gb = (double)BUF_SIZE / 1e9;
	double fast, port, page, rd;
	uint64_t want = 0, pages_want = 0;
	volatile uint64_t sink = 0;

	if (!buf || !t_fast || !t_port || !t_page || !t_read)
		bench_fail("out of memory");
	bench_header("bench_crc64");
	bench_fill_random(buf, BUF_SIZE, 42);
	self_check(buf);

	for (int r = 0; r < runs; r++) {
		double t0;
		uint64_t a, b, c;

		t0 = bench_now();
		a = ltx_crc64(0, buf, BUF_SIZE);
		t_fast[r] = bench_now() - t0;

		t0 = bench_now();
		b = ltx_crc64_portable(0, buf, BUF_SIZE);
		t_port[r] = bench_now() - t0;

		t0 = bench_now();
		c = crc_by_pages(buf, BUF_SIZE);
		t_page[r] = bench_now() - t0;

		t0 = bench_now();
		sink ^= xor_read(buf, BUF_SIZE);
		t_read[r] = bench_now() - t0;

		if (a != b)
			bench_fail("run %d: ltx_crc64 %016" PRIx64
				   " != portable %016" PRIx64 " on 256 MiB",
				   r, a, b);
		if (r == 0) {
			want = a;
			pages_want = c;
		} else if (a != want || c != pages_want) {
			bench_fail("run %d: result changed between runs", r);
		}
	}
	(void)sink;

	fast = gb / bench_median(t_fast, runs);
	port = gb / bench_median(t_port, runs);
	page = gb / bench_median(t_page, runs);
	rd = gb / bench_median(t_read, runs);
	printf("buffer 256 MiB, crc %016" PRIx64 "\n", want);
	printf("%-34s %7.2f GB/s\n", "ltx_crc64 (dispatch)", fast);
	printf("%-34s %7.2f GB/s\n", "ltx_crc64_portable (slice16)", port);
	printf("%-34s %7.2f GB/s\n", "ltx_checksum_page, 4 KiB pages", page);
	printf("%-34s %7.2f GB/s\n", "memory read (64-bit XOR, ceiling)", rd);
	printf("summary: bench_crc64: ltx_crc64 [%s] = %.2f GB/s; "
	       "x%.2f vs slice16 %.2f GB/s; %.0f%% of memory read %.2f GB/s; "
	       "target >= %.1f GB/s: %s\n",
	       ltx_crc64_impl(), fast, fast / port, port, 100 * fast / rd, rd,
	       TARGET_GBPS, bench_verdict(fast >= TARGET_GBPS));
	printf("summary: bench_crc64: ltx_checksum_page (4 KiB) = %.2f GB/s "
	       "(x%.2f of one-buffer ltx_crc64)\n",
	       page, page / fast);
	free(buf);
	free(t_fast);
	free(t_port);
	free(t_page);
	free(t_read);
	return 0;
}
