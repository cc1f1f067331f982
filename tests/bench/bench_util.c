#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "ltx/dbfile.h"
#include "ltx/checksum.h"

extern char **environ;

#define MAX_CLEANUP 64

/* The bench's scratch state; a bench is one single-threaded process. */
static char *dir_path;
static bool dir_created;
static char *cleanup[MAX_CLEANUP];
static int n_cleanup;

double bench_now(void)
{
	return (double)lib_clock_monotonic_ns() / 1e9;
}

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

double bench_cpu_self(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double bench_median(const double *v, int n)
{
	double *s = malloc((size_t)n * sizeof(*s));
	double m;

	if (!s)
		bench_fail("out of memory");
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	free(s);
	return m;
}

int bench_runs(void)
{
	const char *s = getenv("LTXFS_BENCH_RUNS");
	long n;

	if (!s || !*s)
		return 5;
	n = strtol(s, NULL, 10);
	return n < 1 ? 1 : n > 1000 ? 1000 : (int)n;
}

uint64_t bench_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * UINT64_C(0x2545F4914F6CDD1D);
}

void bench_fill_random(void *buf, size_t n, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t st = seed ? seed : 1;

	while (n >= 8) {
		uint64_t v = bench_rand(&st);
		memcpy(p, &v, 8);
		p += 8;
		n -= 8;
	}
	while (n--)
		*p++ = (uint8_t)bench_rand(&st);
}

static void cpu_model(char *buf, size_t n)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(buf, n, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) != 0 || !colon)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(buf, n, "%s", colon);
		break;
	}
	fclose(f);
}

void bench_header(const char *name)
{
	char model[256], date[64];
	time_t now = time(NULL);
	struct tm tm;

	cpu_model(model, sizeof(model));
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("== %s ==\n", name);
	printf("machine: nproc %ld, CPU %s\n", sysconf(_SC_NPROCESSORS_ONLN),
	       model);
	printf("date: %s; runs per measurement: %d (medians)\n", date,
	       bench_runs());
	printf("crc64 implementation: %s\n", ltx_crc64_impl());
	fflush(stdout);
}

static void cleanup_at_exit(void)
{
	for (int i = n_cleanup - 1; i >= 0; i--) {
		unlink(cleanup[i]);
		free(cleanup[i]);
	}
	n_cleanup = 0;
	if (dir_created && dir_path)
		rmdir(dir_path);
	free(dir_path);
	dir_path = NULL;
}

const char *bench_dir(void)
{
	const char *env = getenv("LTXFS_BENCH_DIR");
	struct stat st;

	if (dir_path)
		return dir_path;
	if (env && *env) {
		if (stat(env, &st) < 0 || !S_ISDIR(st.st_mode))
			bench_fail("LTXFS_BENCH_DIR=%s is not a directory",
				   env);
		dir_path = strdup(env);
	} else {
		char tmpl[] = "/var/tmp/ltxfs-bench.XXXXXX";
		if (!mkdtemp(tmpl))
			bench_fail("mkdtemp %s: %s", tmpl, strerror(errno));
		dir_path = strdup(tmpl);
		dir_created = true;
	}
	if (!dir_path)
		bench_fail("out of memory");
	atexit(cleanup_at_exit);
	return dir_path;
}

char *bench_path(const char *name)
{
	const char *d = bench_dir();
	size_t n = strlen(d) + strlen(name) + 2;
	char *p = malloc(n);

	if (!p)
		bench_fail("out of memory");
	snprintf(p, n, "%s/%s", d, name);
	bench_cleanup_add(p);
	free(p);
	return cleanup[n_cleanup - 1];
}

void bench_cleanup_add(const char *path)
{
	if (n_cleanup == MAX_CLEANUP)
		bench_fail("too many scratch files");
	cleanup[n_cleanup] = strdup(path);
	if (!cleanup[n_cleanup])
		bench_fail("out of memory");
	n_cleanup++;
}

void bench_fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "bench: FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

const char *bench_verdict(bool met)
{
	return met ? "ok" : "BELOW TARGET";
}

void bench_run_cmd(char *const argv[], const char *out_path,
		   bench_cmd_result *out)
{
	posix_spawn_file_actions_t fa;
	struct rusage ru;
	double t0;
	pid_t pid;
	int st, rc;

	memset(out, 0, sizeof(*out));
	out->status = -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, out_path,
					 O_WRONLY | O_CREAT | O_TRUNC, 0644);
	t0 = bench_now();
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return;
	while (wait4(pid, &st, 0, &ru) < 0) {
		if (errno != EINTR)
			bench_fail("wait4 %s: %s", argv[0], strerror(errno));
	}
	out->wall_s = bench_now() - t0;
	out->cpu_s = tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
	out->maxrss_kib = ru.ru_maxrss;
	out->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool bench_have_tool(const char *name)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL;
	bool found = false;

	if (!path)
		path = "/usr/bin:/bin";
	copy = strdup(path);
	if (!copy)
		bench_fail("out of memory");
	for (char *d = strtok_r(copy, ":", &save); d && !found;
	     d = strtok_r(NULL, ":", &save)) {
		char full[4096];
		snprintf(full, sizeof(full), "%s/%s", d, name);
		found = access(full, X_OK) == 0;
	}
	free(copy);
	return found;
}

uint64_t bench_file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		bench_fail("stat %s: %s", path, strerror(errno));
	return (uint64_t)st.st_size;
}

double bench_read_file(const char *path)
{
	static char buf[1 << 20];
	double t0 = bench_now();
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		bench_fail("open %s: %s", path, strerror(errno));
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	if (n < 0)
		bench_fail("read %s: %s", path, strerror(errno));
	close(fd);
	return bench_now() - t0;
}

int bench_open(const char *path, int flags)
{
	int fd = open(path, flags, 0644);

	if (fd < 0)
		bench_fail("open %s: %s", path, strerror(errno));
	return fd;
}

/* Encodes a snapshot of the database in dbfd to out; returns seconds. */
double bench_ltx_encode(int dbfd, uint32_t page_size, bool zstd,
			const char *out, ltx_trailer *tr)
{
	ltx_header h = {
		.flags = zstd ? LTX_FLAG_COMPRESS_ZSTD : 0,
		.page_size = page_size,
		.min_txid = 1,
		.max_txid = 1,
		.timestamp = lib_clock_wall_ms(),
	};
	ltx_err err = {0};
	double t0 = bench_now();
	int fd = bench_open(out, O_WRONLY | O_CREAT | O_TRUNC);
	int rc = ltx_dbfile_encode(dbfd, &h, 1, ltx_write_to_fd, &fd, tr,
				   &err);

	if (rc < 0)
		bench_fail("ltx_dbfile_encode %s: %s", out, err.msg);
	if (close(fd) < 0)
		bench_fail("close %s: %s", out, strerror(errno));
	return bench_now() - t0;
}

/* Decodes and verifies the LTX file at path; returns seconds. */
double bench_ltx_verify(const char *path, ltx_trailer *tr)
{
	ltx_decoder *dec = NULL;
	double t0 = bench_now();
	int fd = bench_open(path, O_RDONLY);
	int rc;

	if (ltx_decoder_new(ltx_read_from_fd, &fd, path, &dec) < 0)
		bench_fail("ltx_decoder_new: out of memory");
	rc = ltx_decoder_verify(dec, NULL, tr, NULL);
	if (rc < 0)
		bench_fail("verify: %s", ltx_decoder_err(dec)->msg);
	ltx_decoder_free(dec);
	close(fd);
	return bench_now() - t0;
}

/* Applies the LTX snapshot at path to a fresh database file at db. */
double bench_ltx_apply(const char *path, const char *db, uint64_t *sum)
{
	ltx_decoder *dec = NULL;
	ltx_err err = {0};
	double t0 = bench_now();
	int fd = bench_open(path, O_RDONLY);
	int dbfd = bench_open(db, O_RDWR | O_CREAT | O_TRUNC);

	*sum = LTX_CHECKSUM_EMPTY;
	if (ltx_decoder_new(ltx_read_from_fd, &fd, path, &dec) < 0)
		bench_fail("ltx_decoder_new: out of memory");
	if (ltx_dbfile_apply(dbfd, dec, sum, NULL, &err) < 0)
		bench_fail("apply %s: %s", path, err.msg);
	ltx_decoder_free(dec);
	close(fd);
	if (close(dbfd) < 0)
		bench_fail("close %s: %s", db, strerror(errno));
	return bench_now() - t0;
}
