/*
 * bench_encode: snapshot encoding and decoding of a real SQLite database,
 * against the zstd command-line tool on the same file in the same run.
 *
 * The database (LTXFS_BENCH_DB_MB, default 100 MB) is built with libsqlite3
 * from a seeded PRNG: a "people" table of names, e-mail and postal
 * addresses, ages, balances, timestamps, a short bio drawn from a word
 * list and a small random avatar blob (the incompressible part), an
 * "events" table of JSON-ish payloads, and two secondary indexes. It lives
 * in the scratch directory (LTXFS_BENCH_DIR, default a mkdtemp under
 * /var/tmp), on a real disk; every file is read once before timing so
 * both sides start from the page cache.
 *
 * Each run, interleaved, median of LTXFS_BENCH_RUNS (default 5):
 *   encode zstd-1     ltx_dbfile_encode, level 1, to a file
 *     vs  zstd -1 -q -c --single-thread --no-asyncio DB > FILE
 *         (one thread for everything, as ltx_dbfile_encode: the
 *         like-for-like reference)
 *     vs  zstd -1 -q -c -T1 DB > FILE
 *         (zstd 1.5's -T1 is one compression worker *plus* the main
 *         thread and, with the default --asyncio, I/O threads: more than
 *         one core; reported beside the other)
 *   encode raw        ltx_dbfile_encode uncompressed vs a read/write copy
 *   verify raw        ltx_decoder_verify of the uncompressed snapshot vs
 *                     reading that file
 *   verify zstd       ltx_decoder_verify of the compressed snapshot vs
 *                     zstd -d -q -c --no-asyncio FILE > /dev/null
 *   apply zstd        ltx_dbfile_apply of the compressed snapshot into a
 *                     new file vs the copy
 * Rates are MB/s (1e6 bytes) of database bytes. Targets: encode zstd-1
 * ltxfs/zstd >= 0.8; verify raw >= 1000 MB/s.
 *
 * Self-checks (exit 1): the snapshots' post-apply checksum equals
 * ltx_dbfile_checksum of the database, and the applied copy is byte-equal
 * to the database.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"

#define TARGET_ENC_RATIO 0.8
#define TARGET_VERIFY_MBPS 1000.0
#define COPY_CHUNK (128 * 1024)

static const char *const first_names[] = {
	"James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael",
	"Linda", "David", "Elizabeth", "William", "Barbara", "Richard",
	"Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "Karen",
	"Wei", "Aiko", "Olga", "Mohammed", "Fatima", "Ivan", "Sofia", "Lucas",
	"Emma", "Noah", "Chloe", "Mateo", "Amara", "Kenji", "Priya", "Lars",
};
static const char *const last_names[] = {
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller",
	"Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez",
	"Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
	"Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark",
	"Nakamura", "Kowalski", "Novak", "Schmidt", "Rossi", "Dubois",
};
static const char *const streets[] = {
	"Main St", "Oak Avenue", "Pine Road", "Maple Drive", "Cedar Lane",
	"Elm Street", "Washington Blvd", "Lake View Terrace", "Hillcrest Way",
	"Sunset Boulevard", "Park Place", "River Road", "Church Street",
	"Mill Lane", "Station Approach", "High Street", "Bahnhofstrasse",
};
static const char *const cities[] = {
	"Springfield", "Riverside", "Franklin", "Greenville", "Bristol",
	"Clinton", "Fairview", "Salem", "Madison", "Georgetown", "Arlington",
	"Ashland", "Dover", "Oxford", "Jackson", "Burlington", "Manchester",
	"Milton", "Newport", "Auburn", "Dayton", "Lexington", "Kyoto", "Lyon",
};
static const char *const domains[] = {
	"example.com", "mail.example.org", "corp.example.net", "inbox.test",
	"users.example.io",
};
static const char *const words[] = {
	"the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he",
	"was", "for", "on", "are", "as", "with", "his", "they", "at", "be",
	"this", "have", "from", "or", "one", "had", "by", "word", "but",
	"not", "what", "all", "were", "we", "when", "your", "can", "said",
	"there", "use", "an", "each", "which", "she", "do", "how", "their",
	"if", "will", "up", "other", "about", "out", "many", "then", "them",
	"these", "so", "some", "her", "would", "make", "like", "him", "into",
	"time", "has", "look", "two", "more", "write", "go", "see", "number",
	"no", "way", "could", "people", "my", "than", "first", "water",
	"been", "call", "who", "oil", "its", "now", "find", "long", "down",
	"day", "did", "get", "come", "made", "may", "part", "database",
	"replica", "transaction", "checksum", "garden", "coffee", "music",
};
static const char *const event_kinds[] = {
	"login", "logout", "purchase", "refund", "page_view", "search",
	"password_reset", "profile_update", "subscription_renewed",
};

#define PICK(arr, st) ((arr)[bench_rand(st) % (sizeof(arr) / sizeof(*(arr)))])

static void sql_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		bench_fail("sqlite: %s: %s", sql, msg ? msg : "?");
}

static void sql_step(sqlite3 *db, sqlite3_stmt *st)
{
	if (sqlite3_step(st) != SQLITE_DONE)
		bench_fail("sqlite insert: %s", sqlite3_errmsg(db));
	sqlite3_reset(st);
}

static void make_bio(char *buf, size_t n, uint64_t *st)
{
	size_t len = 0;
	int nwords = 5 + (int)(bench_rand(st) % 30);

	buf[0] = '\0';
	for (int i = 0; i < nwords && len + 32 < n; i++)
		len += (size_t)snprintf(buf + len, n - len, "%s%s",
					i ? " " : "", PICK(words, st));
	if (len + 2 < n)
		snprintf(buf + len, n - len, ".");
}

/* Builds a database of at least target bytes at path. */
static void make_database(const char *path, uint64_t target)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *ins_p = NULL, *ins_e = NULL;
	uint64_t st = 0x5EED0123456789AB;
	int64_t person = 0, event = 0;
	int64_t t0 = 1700000000000;

	unlink(path);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		bench_fail("sqlite3_open %s: %s", path, sqlite3_errmsg(db));
	sql_exec(db, "PRAGMA page_size=4096; PRAGMA journal_mode=OFF;"
		     "PRAGMA synchronous=OFF;"
		     "CREATE TABLE people(id INTEGER PRIMARY KEY, first TEXT,"
		     " last TEXT, email TEXT, street TEXT, city TEXT, zip TEXT,"
		     " age INTEGER, balance REAL, created INTEGER, bio TEXT,"
		     " avatar BLOB);"
		     "CREATE TABLE events(id INTEGER PRIMARY KEY,"
		     " person INTEGER, kind TEXT, at INTEGER, payload TEXT);"
		     "CREATE INDEX people_email ON people(email);"
		     "CREATE INDEX people_name ON people(last, first);");
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO people VALUES(?,?,?,?,?,?,?,?,?,?,"
			       "?,?)", -1, &ins_p, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO events VALUES(?,?,?,?,?)", -1,
			       &ins_e, NULL) != SQLITE_OK)
		bench_fail("sqlite prepare: %s", sqlite3_errmsg(db));
	while (bench_file_size(path) < target) {
		sql_exec(db, "BEGIN");
		for (int i = 0; i < 5000; i++) {
			const char *fn = PICK(first_names, &st);
			const char *ln = PICK(last_names, &st);
			char email[128], street[96], zip[8], bio[512];
			uint8_t avatar[64];
			int alen = (int)(bench_rand(&st) % 65);

			person++;
			snprintf(email, sizeof(email), "%s.%s%u@%s", fn, ln,
				 (unsigned)(bench_rand(&st) % 1000),
				 PICK(domains, &st));
			snprintf(street, sizeof(street), "%u %s",
				 (unsigned)(1 + bench_rand(&st) % 9999),
				 PICK(streets, &st));
			snprintf(zip, sizeof(zip), "%05u",
				 (unsigned)(bench_rand(&st) % 100000));
			make_bio(bio, sizeof(bio), &st);
			bench_fill_random(avatar, sizeof(avatar),
					  bench_rand(&st));
			sqlite3_bind_int64(ins_p, 1, person);
			sqlite3_bind_text(ins_p, 2, fn, -1, SQLITE_STATIC);
			sqlite3_bind_text(ins_p, 3, ln, -1, SQLITE_STATIC);
			sqlite3_bind_text(ins_p, 4, email, -1,
					  SQLITE_TRANSIENT);
			sqlite3_bind_text(ins_p, 5, street, -1,
					  SQLITE_TRANSIENT);
			sqlite3_bind_text(ins_p, 6, PICK(cities, &st), -1,
					  SQLITE_STATIC);
			sqlite3_bind_text(ins_p, 7, zip, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int(ins_p, 8,
					 18 + (int)(bench_rand(&st) % 70));
			sqlite3_bind_double(ins_p, 9,
					    (double)(bench_rand(&st) % 10000000)
						    / 100.0);
			sqlite3_bind_int64(ins_p, 10,
					   t0 + (int64_t)(bench_rand(&st) %
							  100000000000));
			sqlite3_bind_text(ins_p, 11, bio, -1,
					  SQLITE_TRANSIENT);
			if (alen < 16)
				sqlite3_bind_null(ins_p, 12);
			else
				sqlite3_bind_blob(ins_p, 12, avatar, alen,
						  SQLITE_TRANSIENT);
			sql_step(db, ins_p);

			for (int e = 0; e < 2; e++) {
				char payload[256];
				event++;
				snprintf(payload, sizeof(payload),
					 "{\"ip\":\"10.%u.%u.%u\",\"agent\":"
					 "\"Mozilla/5.0\",\"amount\":%u.%02u,"
					 "\"ok\":%s}",
					 (unsigned)(bench_rand(&st) % 256),
					 (unsigned)(bench_rand(&st) % 256),
					 (unsigned)(bench_rand(&st) % 256),
					 (unsigned)(bench_rand(&st) % 500),
					 (unsigned)(bench_rand(&st) % 100),
					 bench_rand(&st) % 8 ? "true"
							     : "false");
				sqlite3_bind_int64(ins_e, 1, event);
				sqlite3_bind_int64(ins_e, 2, person);
				sqlite3_bind_text(ins_e, 3,
						  PICK(event_kinds, &st), -1,
						  SQLITE_STATIC);
				sqlite3_bind_int64(
					ins_e, 4,
					t0 + (int64_t)(bench_rand(&st) %
						       100000000000));
				sqlite3_bind_text(ins_e, 5, payload, -1,
						  SQLITE_TRANSIENT);
				sql_step(db, ins_e);
			}
		}
		sql_exec(db, "COMMIT");
	}
	sqlite3_finalize(ins_p);
	sqlite3_finalize(ins_e);
	if (sqlite3_close(db) != SQLITE_OK)
		bench_fail("sqlite3_close: %s", sqlite3_errmsg(db));
	printf("database: %" PRId64 " people, %" PRId64 " events\n", person,
	       event);
}

/* read/write copy in COPY_CHUNK pieces: the native reference. */
static double copy_file(const char *from, const char *to)
{
	static uint8_t buf[COPY_CHUNK];
	double t0 = bench_now();
	int in = bench_open(from, O_RDONLY);
	int out = bench_open(to, O_WRONLY | O_CREAT | O_TRUNC);
	size_t got;

	do {
		int rc = lib_io_read_full(in, buf, sizeof(buf), &got);
		if (rc < 0)
			bench_fail("read %s: %s", from, strerror(-rc));
		rc = lib_io_write_full(out, buf, got);
		if (rc < 0)
			bench_fail("write %s: %s", to, strerror(-rc));
	} while (got == sizeof(buf));
	close(in);
	if (close(out) < 0)
		bench_fail("close %s: %s", to, strerror(errno));
	return bench_now() - t0;
}

static void compare_files(const char *a, const char *b)
{
	static uint8_t x[COPY_CHUNK], y[COPY_CHUNK];
	int fa = bench_open(a, O_RDONLY), fb = bench_open(b, O_RDONLY);
	size_t ga, gb;
	uint64_t off = 0;

	do {
		if (lib_io_read_full(fa, x, sizeof(x), &ga) < 0 ||
		    lib_io_read_full(fb, y, sizeof(y), &gb) < 0)
			bench_fail("reading %s or %s", a, b);
		if (ga != gb || memcmp(x, y, ga) != 0)
			bench_fail("%s differs from %s near byte %" PRIu64, b,
				   a, off);
		off += ga;
	} while (ga == sizeof(x));
	close(fa);
	close(fb);
}

static double run_zstd(char *const argv[], const char *out,
		       bench_cmd_result *res)
{
	bench_run_cmd(argv, out, res);
	if (res->status != 0)
		bench_fail("%s %s ... exited with status %d", argv[0], argv[1],
			   res->status);
	return res->wall_s;
}

static double mbps(double bytes, const double *t, int runs)
{
	return bytes / 1e6 / bench_median(t, runs);
}

int main(void)
{
	const char *mb_env = getenv("LTXFS_BENCH_DB_MB");
	uint64_t target = (uint64_t)(mb_env && *mb_env ? atoi(mb_env) : 100) *
			  1000000;
	int runs = bench_runs();
	char *db = bench_path("bench.db");
	char *out_z = bench_path("snap.ltx.zst");
	char *out_r = bench_path("snap.ltx");
	char *cli_st = bench_path("cli-st.zst");
	char *cli_t1 = bench_path("cli-t1.zst");
	char *copy = bench_path("copy.db");
	char *restored = bench_path("restored.db");
	bool have_zstd = bench_have_tool("zstd");
	char *argv_st[] = {"zstd", "-1", "-q", "-c", "--single-thread",
			   "--no-asyncio", db, NULL};
	char *argv_t1[] = {"zstd", "-1", "-q", "-c", "-T1", db, NULL};
	char *argv_d[] = {"zstd", "-d", "-q", "-c", "--no-asyncio", cli_st,
			  NULL};
	enum { ENC_Z, CLI_ST, CLI_T1, ENC_R, COPY, VER_R, READ_R, VER_Z,
	       CLI_D, APPLY, N_SERIES };
	double *t[N_SERIES], *cpu[N_SERIES];
	double t_make, dbbytes, v[N_SERIES];
	uint64_t sz_z, sz_r, sz_st, sz_t1, sum;
	uint32_t page_size, pages;
	ltx_trailer tr_z, tr_r, tr_v;
	ltx_err err = {0};
	int dbfd;

	for (int i = 0; i < N_SERIES; i++) {
		t[i] = calloc((size_t)runs, sizeof(double));
		cpu[i] = calloc((size_t)runs, sizeof(double));
		if (!t[i] || !cpu[i])
			bench_fail("out of memory");
	}
	bench_header("bench_encode");
	printf("scratch directory: %s (LTXFS_BENCH_DIR)\n", bench_dir());
	if (!have_zstd)
		printf("zstd command-line tool not found: the references "
		       "that use it are skipped\n");

	t_make = bench_now();
	make_database(db, target);
	t_make = bench_now() - t_make;
	dbbytes = (double)bench_file_size(db);
	dbfd = bench_open(db, O_RDONLY);
	if (ltx_dbfile_page_size(dbfd, &page_size, &err) < 0)
		bench_fail("%s: %s", db, err.msg);
	if (ltx_dbfile_checksum(dbfd, page_size, &pages, &sum, &err) < 0)
		bench_fail("%s: %s", db, err.msg);
	printf("database: %.1f MB, %" PRIu32 " pages of %" PRIu32
	       " bytes, built in %.1f s, checksum %016" PRIx64 "\n",
	       dbbytes / 1e6, pages, page_size, t_make, sum);

	/* Warm-up (untimed): page cache, output files, self-checks. */
	bench_read_file(db);
	bench_ltx_encode(dbfd, page_size, true, out_z, &tr_z);
	bench_ltx_encode(dbfd, page_size, false, out_r, &tr_r);
	if (tr_z.post_apply_checksum != sum || tr_r.post_apply_checksum != sum)
		bench_fail("snapshot post-apply checksum %016" PRIx64 "/%016"
			   PRIx64 " != database checksum %016" PRIx64,
			   tr_z.post_apply_checksum, tr_r.post_apply_checksum,
			   sum);
	bench_ltx_verify(out_z, &tr_v);
	if (tr_v.file_checksum != tr_z.file_checksum)
		bench_fail("verify: file checksum differs from encoder's");
	bench_ltx_apply(out_z, restored, &sum);
	if (sum != tr_z.post_apply_checksum)
		bench_fail("apply: checksum %016" PRIx64 " != %016" PRIx64,
			   sum, tr_z.post_apply_checksum);
	compare_files(db, restored);
	printf("self-check: snapshot checksums match the database; the "
	       "applied copy is byte-equal: ok\n");
	if (have_zstd) {
		bench_cmd_result res;
		run_zstd(argv_st, cli_st, &res);
		run_zstd(argv_t1, cli_t1, &res);
	}
	fflush(stdout);

	for (int r = 0; r < runs; r++) {
		bench_cmd_result res;

		double c0 = bench_cpu_self();

		t[ENC_Z][r] = bench_ltx_encode(dbfd, page_size, true, out_z, &tr_z);
		cpu[ENC_Z][r] = bench_cpu_self() - c0;
		if (have_zstd) {
			t[CLI_ST][r] = run_zstd(argv_st, cli_st, &res);
			cpu[CLI_ST][r] = res.cpu_s;
			t[CLI_T1][r] = run_zstd(argv_t1, cli_t1, &res);
			cpu[CLI_T1][r] = res.cpu_s;
		}
		t[ENC_R][r] = bench_ltx_encode(dbfd, page_size, false, out_r, &tr_r);
		t[COPY][r] = copy_file(db, copy);
		t[VER_R][r] = bench_ltx_verify(out_r, &tr_v);
		t[READ_R][r] = bench_read_file(out_r);
		t[VER_Z][r] = bench_ltx_verify(out_z, &tr_v);
		if (have_zstd) {
			t[CLI_D][r] = run_zstd(argv_d, "/dev/null", &res);
			cpu[CLI_D][r] = res.cpu_s;
		}
		t[APPLY][r] = bench_ltx_apply(out_z, restored, &sum);
		if (sum != tr_z.post_apply_checksum)
			bench_fail("run %d: apply checksum changed", r);
	}
	close(dbfd);

	for (int i = 0; i < N_SERIES; i++)
		v[i] = mbps(dbbytes, t[i], runs);
	sz_z = bench_file_size(out_z);
	sz_r = bench_file_size(out_r);
	printf("\nrates in MB/s of database bytes (%.1f MB), medians of %d "
	       "runs\n", dbbytes / 1e6, runs);
	printf("%-50s %8.0f MB/s  size %.1f MB (ratio %.2f), %.0f%% CPU\n",
	       "encode zstd-1  ltx_dbfile_encode", v[ENC_Z], (double)sz_z / 1e6,
	       dbbytes / (double)sz_z,
	       100 * bench_median(cpu[ENC_Z], runs) /
		       bench_median(t[ENC_Z], runs));
	if (have_zstd) {
		sz_st = bench_file_size(cli_st);
		sz_t1 = bench_file_size(cli_t1);
		printf("%-50s %8.0f MB/s  size %.1f MB (ratio %.2f), "
		       "%.0f%% CPU\n",
		       "               zstd -1 --single-thread --no-asyncio",
		       v[CLI_ST],
		       (double)sz_st / 1e6, dbbytes / (double)sz_st,
		       100 * bench_median(cpu[CLI_ST], runs) /
			       bench_median(t[CLI_ST], runs));
		printf("%-50s %8.0f MB/s  size %.1f MB (ratio %.2f), "
		       "%.0f%% CPU\n",
		       "               zstd -1 -T1", v[CLI_T1],
		       (double)sz_t1 / 1e6, dbbytes / (double)sz_t1,
		       100 * bench_median(cpu[CLI_T1], runs) /
			       bench_median(t[CLI_T1], runs));
	}
	printf("%-50s %8.0f MB/s  size %.1f MB\n",
	       "encode raw     ltx_dbfile_encode", v[ENC_R],
	       (double)sz_r / 1e6);
	printf("%-50s %8.0f MB/s\n", "               read/write copy",
	       v[COPY]);
	printf("%-50s %8.0f MB/s\n", "verify raw     ltx_decoder_verify",
	       v[VER_R]);
	printf("%-50s %8.0f MB/s\n", "               read the file", v[READ_R]);
	printf("%-50s %8.0f MB/s\n", "verify zstd    ltx_decoder_verify",
	       v[VER_Z]);
	if (have_zstd)
		printf("%-50s %8.0f MB/s, %.0f%% CPU\n",
		       "               zstd -d --no-asyncio >/dev/null",
		       v[CLI_D],
		       100 * bench_median(cpu[CLI_D], runs) /
			       bench_median(t[CLI_D], runs));
	printf("%-50s %8.0f MB/s\n", "apply zstd     ltx_dbfile_apply",
	       v[APPLY]);

	if (have_zstd) {
		printf("summary: bench_encode: encode zstd-1 = %.0f MB/s; "
		       "zstd -1 --single-thread --no-asyncio %.0f MB/s; "
		       "ltxfs/zstd = %.2f; "
		       "target >= %.1f: %s\n",
		       v[ENC_Z], v[CLI_ST], v[ENC_Z] / v[CLI_ST],
		       TARGET_ENC_RATIO,
		       bench_verdict(v[ENC_Z] / v[CLI_ST] >= TARGET_ENC_RATIO));
		printf("summary: bench_encode: encode zstd-1 vs zstd -1 -T1 "
		       "(worker and I/O threads, %.0f%% CPU) %.0f MB/s: "
		       "ltxfs/zstd = %.2f; target >= %.1f: %s\n",
		       100 * bench_median(cpu[CLI_T1], runs) /
			       bench_median(t[CLI_T1], runs),
		       v[CLI_T1], v[ENC_Z] / v[CLI_T1], TARGET_ENC_RATIO,
		       bench_verdict(v[ENC_Z] / v[CLI_T1] >= TARGET_ENC_RATIO));
		printf("summary: bench_encode: compressed size ltxfs %.1f MB, "
		       "zstd %.1f MB (ltxfs/zstd = %.3f)\n",
		       (double)sz_z / 1e6, (double)sz_st / 1e6,
		       (double)sz_z / (double)sz_st);
	} else {
		printf("summary: bench_encode: encode zstd-1 = %.0f MB/s; no "
		       "zstd tool to compare against\n", v[ENC_Z]);
	}
	printf("summary: bench_encode: verify uncompressed = %.0f MB/s; "
	       "reading the file %.0f MB/s (x%.2f); target >= %.0f MB/s: "
	       "%s\n",
	       v[VER_R], v[READ_R], v[VER_R] / v[READ_R], TARGET_VERIFY_MBPS,
	       bench_verdict(v[VER_R] >= TARGET_VERIFY_MBPS));
	if (have_zstd)
		printf("summary: bench_encode: verify zstd = %.0f MB/s; "
		       "zstd -d %.0f MB/s; ltxfs/zstd = %.2f\n",
		       v[VER_Z], v[CLI_D], v[VER_Z] / v[CLI_D]);
	printf("summary: bench_encode: encode uncompressed = %.0f MB/s "
	       "(x%.2f of a read/write copy); apply zstd = %.0f MB/s "
	       "(x%.2f of the copy)\n",
	       v[ENC_R], v[ENC_R] / v[COPY], v[APPLY], v[APPLY] / v[COPY]);
	for (int i = 0; i < N_SERIES; i++) {
		free(t[i]);
		free(cpu[i]);
	}
	return 0;
}
