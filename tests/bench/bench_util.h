/*
 * Helpers shared by the LTX benchmarks: clocks, medians, a seeded PRNG, the
 * scratch directory, running reference tools, and the report format.
 *
 * Report lines: free text for people, plus one line per headline number
 *   summary: <bench>: <what> = <value> <unit> [ratio ...] [ok|BELOW TARGET]
 * that tests/bench/run-ltx-bench collects. A bench exits non-zero only when
 * it crashes or a self-check fails (bench_fail), never for a missed target.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

/* Seconds on CLOCK_MONOTONIC. */
double bench_now(void);

/* User + system CPU seconds of this process so far. */
double bench_cpu_self(void);

/* Median of n values (n >= 1); v is not modified. */
double bench_median(const double *v, int n);

/* Timed runs per measurement: LTXFS_BENCH_RUNS, default (and at least) 5
 * unless the variable says otherwise (>= 1, for quick trials). */
int bench_runs(void);

/* xorshift64* PRNG; *state must not be 0. */
uint64_t bench_rand(uint64_t *state);
void bench_fill_random(void *buf, size_t n, uint64_t seed);

/* Prints the bench's name, the machine (nproc, CPU model), the date and
 * the CRC implementation in use. */
void bench_header(const char *name);

/* The scratch directory: $LTXFS_BENCH_DIR (must exist) or a fresh
 * mkdtemp under /var/tmp, removed at exit. Files registered with
 * bench_cleanup_add are unlinked at exit, also after bench_fail. */
const char *bench_dir(void);
/* Returns "<bench_dir()>/<name>", registered for cleanup; the string
 * belongs to bench_util and lives until exit. */
char *bench_path(const char *name);
void bench_cleanup_add(const char *path);

/* A self-check failed or the bench cannot go on: message, exit 1. */
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

/* Whether "summary" lines should call the value good: prints the target
 * verdict, "ok" or "BELOW TARGET". */
const char *bench_verdict(bool met);

/* Result of running a command to completion. */
typedef struct bench_cmd_result {
	int status;      /* exit status, or 128 + signal, or -1 (not run) */
	double wall_s;   /* wall-clock seconds, spawn to reap */
	double cpu_s;    /* user + system seconds of the child */
	long maxrss_kib; /* ru_maxrss of the child */
} bench_cmd_result;

/* Runs argv[0] (searched in PATH) with stdout to out_path (truncated;
 * "/dev/null" allowed) and stdin from /dev/null. */
void bench_run_cmd(char *const argv[], const char *out_path,
		   bench_cmd_result *out);

/* Whether an executable named name is on PATH. */
bool bench_have_tool(const char *name);

/* Size of a file in bytes; bench_fail when it cannot be stat'ed. */
uint64_t bench_file_size(const char *path);

/* Reads a whole file once so that it sits in the page cache; returns the
 * seconds it took. */
double bench_read_file(const char *path);

/* open(2) with mode 0644, or bench_fail. */
int bench_open(const char *path, int flags);

/* LTX helpers timed from open to close (no fsync); each bench_fails on any
 * error. bench_ltx_encode writes a snapshot (TXID 1) of the database in
 * dbfd to out, zstd level 1 or uncompressed. */
double bench_ltx_encode(int dbfd, uint32_t page_size, bool zstd,
			const char *out, ltx_trailer *tr);
/* Decodes and verifies the whole LTX file at path. */
double bench_ltx_verify(const char *path, ltx_trailer *tr);
/* Applies the snapshot at path to a new database file db; *sum gets the
 * database checksum after applying. */
double bench_ltx_apply(const char *path, const char *db, uint64_t *sum);

#endif
