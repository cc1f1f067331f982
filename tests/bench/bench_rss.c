/*
 * bench_rss: peak memory of encoding and decoding a 1 GiB database.
 *
 * The database is 1 GiB + 1 MiB (so the lock page at byte 2^30 lies
 * inside and is skipped), made quickly: a SQLite header on page 1, one
 * MiB of half-compressible data every 8 MiB, holes elsewhere. It lives in
 * the scratch directory (LTXFS_BENCH_DIR, default a mkdtemp under
 * /var/tmp), so on a real disk; every file is removed at exit.
 *
 * Each operation runs in a fresh process (this program re-executed with
 * --child) that does only that work, then reports its VmHWM from
 * /proc/self/status: the peak resident set of that process image alone.
 * ru_maxrss from wait4 is printed beside it for every command, including
 * the zstd tool used as reference; on Linux it may also include the
 * spawning parent's few MiB, which the "idle" child shows.
 *
 *   idle          the child doing nothing (the floor)
 *   encode zstd   ltx_dbfile_encode, zstd level 1, to a file
 *   encode raw    ltx_dbfile_encode, uncompressed, to a file
 *   verify zstd   ltx_decoder_verify of the compressed snapshot
 *   verify raw    ltx_decoder_verify of the uncompressed snapshot
 *   apply zstd    ltx_dbfile_apply of the compressed snapshot to a new file
 *   checksum      ltx_dbfile_checksum of the database
 *   zstd -1 --single-thread --no-asyncio DB > FILE, and zstd -d of it
 *
 * Medians of LTXFS_BENCH_RUNS (default 5) interleaved runs. Target: peak
 * RSS < 64 MiB for every LTX operation. Self-checks (exit 1): every child
 * succeeds, the encoders', the applier's and the scan's database
 * checksums agree, and the applied file is byte-equal to the database.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"

#define DB_SIZE (((uint64_t)1 << 30) + ((uint64_t)1 << 20))
#define PAGE_SIZE 4096
#define CHUNK ((size_t)1 << 20)
#define FILL_EVERY 8
#define TARGET_KIB (64 * 1024)

/* ---- child side ---- */

static long vmhwm_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* argv: --child OP RESULT-FILE [ARGS...]; writes "VmHWM-KiB checksum"
 * to RESULT-FILE. */
static int child_main(int argc, char **argv)
{
	const char *op = argv[2], *result = argv[3];
	uint64_t sum = 0;
	ltx_trailer tr;
	ltx_err err = {0};
	FILE *f;

	if (strcmp(op, "idle") == 0) {
		/* nothing */
	} else if (argc == 6 && strcmp(op, "encode") == 0) {
		int fd = bench_open(argv[4], O_RDONLY);
		bool zstd = strstr(argv[5], ".zst") != NULL;
		bench_ltx_encode(fd, PAGE_SIZE, zstd, argv[5], &tr);
		sum = tr.post_apply_checksum;
		close(fd);
	} else if (argc == 5 && strcmp(op, "verify") == 0) {
		bench_ltx_verify(argv[4], &tr);
		sum = tr.post_apply_checksum;
	} else if (argc == 6 && strcmp(op, "apply") == 0) {
		bench_ltx_apply(argv[4], argv[5], &sum);
	} else if (argc == 5 && strcmp(op, "checksum") == 0) {
		int fd = bench_open(argv[4], O_RDONLY);
		uint32_t pages;
		if (ltx_dbfile_checksum(fd, PAGE_SIZE, &pages, &sum, &err) < 0)
			bench_fail("checksum %s: %s", argv[4], err.msg);
		close(fd);
	} else {
		bench_fail("bad child arguments");
	}
	f = fopen(result, "w");
	if (!f || fprintf(f, "%ld %016" PRIx64 "\n", vmhwm_kib(), sum) < 0 ||
	    fclose(f) != 0)
		bench_fail("writing %s", result);
	return 0;
}

/* ---- parent side ---- */

static void make_database(const char *path)
{
	uint8_t *buf = malloc(CHUNK);
	uint64_t st = 0xC0FFEE;
	int fd = bench_open(path, O_RDWR | O_CREAT | O_TRUNC);
	int rc;

	if (!buf)
		bench_fail("out of memory");
	if (ftruncate(fd, (off_t)DB_SIZE) < 0)
		bench_fail("ftruncate %s: %s", path, strerror(errno));
	for (uint64_t off = 0; off < DB_SIZE; off += CHUNK * FILL_EVERY) {
		/* half random, half a repeating text: compresses about 2:1 */
		for (size_t i = 0; i < CHUNK; i += 64) {
			bench_fill_random(buf + i, 32, bench_rand(&st));
			memcpy(buf + i + 32, "ltxfs replicates SQLite pages..",
			       32);
		}
		if (off == 0) {
			memset(buf, 0, 100);
			memcpy(buf, "SQLite format 3", 16);
			put_be16(buf + 16, PAGE_SIZE);
			buf[18] = buf[19] = 1;
			put_be32(buf + 28, (uint32_t)(DB_SIZE / PAGE_SIZE));
		}
		if (off <= LTX_PENDING_BYTE && LTX_PENDING_BYTE < off + CHUNK)
			/* SQLite never writes the lock page; LTX skips it */
			memset(buf + (LTX_PENDING_BYTE - off), 0, PAGE_SIZE);
		rc = lib_io_pwrite_full(fd, buf, CHUNK, (off_t)off);
		if (rc < 0)
			bench_fail("write %s: %s", path, strerror(-rc));
	}
	if (close(fd) < 0)
		bench_fail("close %s: %s", path, strerror(errno));
	free(buf);
}

struct op {
	const char *name;
	const char *args[3];  /* after --child OP RESULT, NULL-terminated */
	const char *child_op; /* NULL: a zstd command */
	bool ltx;             /* held to the target */
	long *hwm, *maxrss;   /* per run, KiB */
	double *wall;
	uint64_t sum;
};

static void run_op(const char *self, const char *result, struct op *op,
		   int r)
{
	bench_cmd_result res;
	char *argv[8];
	uint64_t sum;
	FILE *f;
	int n = 0;

	argv[n++] = (char *)self;
	argv[n++] = "--child";
	argv[n++] = (char *)op->child_op;
	argv[n++] = (char *)result;
	for (int i = 0; i < 3 && op->args[i]; i++)
		argv[n++] = (char *)op->args[i];
	argv[n] = NULL;
	bench_run_cmd(argv, "/dev/null", &res);
	if (res.status != 0)
		bench_fail("%s: exited with status %d", op->name, res.status);
	op->wall[r] = res.wall_s;
	op->maxrss[r] = res.maxrss_kib;
	f = fopen(result, "r");
	if (!f || fscanf(f, "%ld %" SCNx64, &op->hwm[r], &sum) != 2)
		bench_fail("%s: no result from the child", op->name);
	fclose(f);
	if (r > 0 && sum != op->sum)
		bench_fail("%s: checksum changed between runs", op->name);
	op->sum = sum;
}

static double median_l(const long *v, int n)
{
	double *d = calloc((size_t)n, sizeof(*d));
	double m;

	if (!d)
		bench_fail("out of memory");
	for (int i = 0; i < n; i++)
		d[i] = (double)v[i];
	m = bench_median(d, n);
	free(d);
	return m;
}

static void compare_files(const char *a, const char *b)
{
	uint8_t *x = malloc(CHUNK), *y = malloc(CHUNK);
	int fa = bench_open(a, O_RDONLY), fb = bench_open(b, O_RDONLY);
	size_t ga, gb;
	uint64_t off = 0;

	if (!x || !y)
		bench_fail("out of memory");
	do {
		if (lib_io_read_full(fa, x, CHUNK, &ga) < 0 ||
		    lib_io_read_full(fb, y, CHUNK, &gb) < 0)
			bench_fail("reading %s or %s", a, b);
		if (ga != gb || memcmp(x, y, ga) != 0)
			bench_fail("%s differs from %s near byte %" PRIu64, b,
				   a, off);
		off += ga;
	} while (ga == CHUNK);
	close(fa);
	close(fb);
	free(x);
	free(y);
}

int main(int argc, char **argv)
{
	char self[4096];
	ssize_t len;
	int runs;
	char *db, *ltx_z, *ltx_r, *restored, *cli_z, *result;
	double t;
	bool have_zstd;

	if (argc >= 4 && strcmp(argv[1], "--child") == 0)
		return child_main(argc, argv);
	runs = bench_runs();
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len < 0)
		bench_fail("readlink /proc/self/exe: %s", strerror(errno));
	self[len] = '\0';
	bench_header("bench_rss");
	printf("scratch directory: %s (LTXFS_BENCH_DIR)\n", bench_dir());
	db = bench_path("rss.db");
	ltx_z = bench_path("rss.ltx.zst");
	ltx_r = bench_path("rss.ltx");
	restored = bench_path("rss-restored.db");
	cli_z = bench_path("rss-cli.zst");
	result = bench_path("rss-result");
	have_zstd = bench_have_tool("zstd");

	t = bench_now();
	make_database(db);
	printf("database: %.0f MiB (1 GiB + 1 MiB: the lock page is inside), "
	       "1 MiB of data every %d MiB, holes between; made in %.1f s\n",
	       (double)DB_SIZE / (1 << 20), FILL_EVERY, bench_now() - t);

	struct op ops[] = {
		{"idle (floor)", {NULL}, "idle", false, NULL, NULL, NULL, 0},
		{"encode zstd-1", {db, ltx_z, NULL}, "encode", true, NULL,
		 NULL, NULL, 0},
		{"encode raw", {db, ltx_r, NULL}, "encode", true, NULL, NULL,
		 NULL, 0},
		{"verify zstd", {ltx_z, NULL}, "verify", true, NULL, NULL,
		 NULL, 0},
		{"verify raw", {ltx_r, NULL}, "verify", true, NULL, NULL, NULL,
		 0},
		{"apply zstd", {ltx_z, restored, NULL}, "apply", true, NULL,
		 NULL, NULL, 0},
		{"checksum (scan)", {db, NULL}, "checksum", true, NULL, NULL,
		 NULL, 0},
		/* the zstd tool: command lines zc and zd below */
		{"zstd -1 --single-thread --no-asyncio", {NULL}, NULL, false,
		 NULL, NULL, NULL, 0},
		{"zstd -d --no-asyncio", {NULL}, NULL, false, NULL, NULL,
		 NULL, 0},
	};
	int n_ops = (int)(sizeof(ops) / sizeof(*ops));
	char *zc[] = {"zstd", "-1", "-q", "-c", "--single-thread",
		      "--no-asyncio", db, NULL};
	char *zd[] = {"zstd", "-d", "-q", "-c", "--no-asyncio", cli_z, NULL};

	for (int i = 0; i < n_ops; i++) {
		ops[i].hwm = calloc((size_t)runs, sizeof(long));
		ops[i].maxrss = calloc((size_t)runs, sizeof(long));
		ops[i].wall = calloc((size_t)runs, sizeof(double));
		if (!ops[i].hwm || !ops[i].maxrss || !ops[i].wall)
			bench_fail("out of memory");
	}
	bench_read_file(db);
	fflush(stdout);

	for (int r = 0; r < runs; r++) {
		for (int i = 0; i < n_ops; i++) {
			struct op *op = &ops[i];
			bench_cmd_result res;
			if (op->child_op) {
				run_op(self, result, op, r);
				continue;
			}
			if (!have_zstd)
				continue;
			if (op == &ops[n_ops - 2])
				bench_run_cmd(zc, cli_z, &res);
			else
				bench_run_cmd(zd, "/dev/null", &res);
			if (res.status != 0)
				bench_fail("%s: exited with status %d",
					   op->name, res.status);
			op->wall[r] = res.wall_s;
			op->maxrss[r] = res.maxrss_kib;
			op->hwm[r] = -1;
		}
	}

	/* Self-checks: every LTX path agrees on the database checksum. */
	for (int i = 2; i < n_ops && ops[i].child_op; i++)
		if (ops[i].sum != ops[1].sum)
			bench_fail("%s: database checksum %016" PRIx64
				   " != encode's %016" PRIx64, ops[i].name,
				   ops[i].sum, ops[1].sum);
	compare_files(db, restored);
	printf("self-check: encode, verify, apply and scan agree on database "
	       "checksum %016" PRIx64 "; the applied copy is byte-equal: "
	       "ok\n", ops[1].sum);

	printf("\npeak RSS in MiB, medians of %d runs\n", runs);
	printf("%-38s %9s %12s %9s\n", "operation", "VmHWM", "ru_maxrss",
	       "seconds");
	for (int i = 0; i < n_ops; i++) {
		struct op *op = &ops[i];
		if (!op->child_op && !have_zstd)
			continue;
		if (op->child_op)
			printf("%-38s %9.1f %12.1f %9.2f\n", op->name,
			       median_l(op->hwm, runs) / 1024,
			       median_l(op->maxrss, runs) / 1024,
			       bench_median(op->wall, runs));
		else
			printf("%-38s %9s %12.1f %9.2f\n", op->name, "-",
			       median_l(op->maxrss, runs) / 1024,
			       bench_median(op->wall, runs));
	}
	for (int i = 1; i < n_ops; i++) {
		struct op *op = &ops[i];
		double hwm, rss, ref;
		if (!op->ltx)
			continue;
		hwm = median_l(op->hwm, runs);
		rss = median_l(op->maxrss, runs);
		ref = !have_zstd ? 0
		      : strstr(op->name, "encode")
			      ? median_l(ops[n_ops - 2].maxrss, runs)
			      : median_l(ops[n_ops - 1].maxrss, runs);
		printf("summary: bench_rss: %s peak RSS = %.1f MiB (VmHWM; "
		       "ru_maxrss %.1f MiB",
		       op->name, hwm / 1024, rss / 1024);
		if (ref > 0)
			printf(", x%.2f of zstd %s's %.1f MiB",
			       rss / ref,
			       strstr(op->name, "encode") ? "-1" : "-d",
			       ref / 1024);
		printf("); target < %d MiB: %s\n", TARGET_KIB / 1024,
		       bench_verdict(hwm < TARGET_KIB && rss < TARGET_KIB));
	}
	for (int i = 0; i < n_ops; i++) {
		free(ops[i].hwm);
		free(ops[i].maxrss);
		free(ops[i].wall);
	}
	return 0;
}
