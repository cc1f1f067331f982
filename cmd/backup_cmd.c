/* `ltxfs restore`, `ltxfs backup ls` and `ltxfs backup compact`: the
 * backup store from the command line (backup/restore.h, compact.h,
 * docs/BACKUP.md). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/compact.h"
#include "backup/object.h"
#include "backup/restore.h"
#include "backup/store.h"
#include "cfg.h"
#include "cmd.h"
#include "restore_empty.h"

bk_store_opts cmd_backup_store_opts(const ltxfs_cfg *c)
{
	return (bk_store_opts){
		.type = c->backup.type,
		.dir = c->backup.dir,
		.endpoint = c->backup.endpoint,
		.bucket = c->backup.bucket,
		.region = c->backup.region,
		.access_key_id = c->backup.access_key_id,
		.secret_access_key = c->backup.secret_access_key,
		.force_path_style = c->backup.force_path_style,
	};
}

static int open_store(const char *cmd, const ltxfs_cfg *c, bk_store **s)
{
	bk_store_opts o = cmd_backup_store_opts(c);
	char err[1024] = "";

	if (bk_store_open(&o, s, err, sizeof(err)) < 0) {
		fprintf(stderr, "ltxfs %s: %s\n", cmd, err);
		return 1;
	}
	return 0;
}

/* 16 hex digits (as -pos and /info show TXIDs); 0 on success. */
static int parse_txid(const char *s, uint64_t *out)
{
	char *end;

	if (strlen(s) == 0 || strlen(s) > 16)
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 16);
	return errno || *end || *out == 0 ? -EINVAL : 0;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM) -> ms. */
static int parse_time(const char *s, int64_t *out)
{
	struct tm tm = {0};
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	int64_t ms = 0, off = 0;

	if (!p)
		return -EINVAL;
	if (*p == '.') {
		int64_t scale = 100;
		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			ms += (*p - '0') * scale;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;
		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
			return -EINVAL;
		off = (hh * 60 + mm) * 60 * (*p == '+' ? 1 : -1);
		p += 6;
	} else {
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	*out = ((int64_t)timegm(&tm) - off) * 1000 + ms;
	return 0;
}

static void fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", base, (int)(ms % 1000));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mb_per_s(uint64_t bytes, double secs)
{
	return secs > 0 ? (double)bytes / 1e6 / secs : 0;
}

/* Progress on a terminal: one line on stderr, rewritten at most every
 * PROGRESS_EVERY_S seconds, and once more at the end. */
#define PROGRESS_EVERY_S 0.25

struct progress {
	double t0, last;
};

static void show_progress(const bk_progress *p, void *arg)
{
	struct progress *pr = arg;
	double now = now_s();

	if (!p->done && now - pr->last < PROGRESS_EVERY_S)
		return;
	pr->last = now;
	fprintf(stderr, "\rrestore: object %" PRIu64 "/%" PRIu64 " (%.1f of "
		"%.1f MiB), %.1f MiB, %" PRIu64 " records, %.1f MB/s\033[K%s",
		p->objects, p->objects_total, (double)p->obj_bytes / 1048576.0,
		(double)p->obj_size / 1048576.0, (double)p->bytes / 1048576.0,
		p->records, mb_per_s(p->bytes, now - pr->t0),
		p->done ? "\n" : "");
	fflush(stderr);
}

static const char restore_usage[] =
	"usage: ltxfs restore [-c ltxfs.yml] DB OUT [--txid HEX | "
	"--timestamp RFC3339] [--dry-run]\n";

int cmd_restore(int argc, char **argv)
{
	ltxfs_cfg cfg = {0};
	bk_restore_opts o = {0};
	bk_restore_result r;
	bk_store *s = NULL;
	const char *pos[2] = {NULL, NULL};
	char err[2048] = "", when[40];
	size_t npos = 0;
	double t0 = now_s(), secs;
	struct progress pr = {t0, 0};
	int next, rc;

	rc = cmd_load_cfg(argc, argv, &cfg, &next, "restore");
	if (rc != 0)
		return rc;
	for (int i = next; i < argc; i++) {
		if (strcmp(argv[i], "--txid") == 0 && i + 1 < argc) {
			if (parse_txid(argv[++i], &o.txid) < 0) {
				fprintf(stderr, "ltxfs restore: --txid \"%s\" "
					"is not a TXID (hex, as -pos "
					"shows)\n", argv[i]);
				rc = 2;
			}
		} else if (strcmp(argv[i], "--timestamp") == 0 &&
			   i + 1 < argc) {
			o.by_time = true;
			if (parse_time(argv[++i], &o.ts_ms) < 0) {
				fprintf(stderr, "ltxfs restore: --timestamp "
					"\"%s\" is not RFC 3339 (e.g. "
					"2026-01-02T03:04:05Z)\n", argv[i]);
				rc = 2;
			}
		} else if (strcmp(argv[i], "--dry-run") == 0) {
			o.dry_run = true;
		} else if (argv[i][0] != '-' && npos < 2) {
			pos[npos++] = argv[i];
		} else {
			rc = 2;
		}
	}
	if (rc == 0 && (npos != 2 || (o.txid && o.by_time)))
		rc = 2;
	if (rc == 2)
		fputs(restore_usage, stderr);
	if (rc == 0)
		rc = open_store("restore", &cfg, &s);
	if (rc == 0) {
		o.store = s;
		o.prefix = cfg.backup.prefix;
		o.db = pos[0];
		o.out = pos[1];
		if (isatty(STDERR_FILENO)) {
			o.progress = show_progress;
			o.progress_arg = &pr;
		}
		if (bk_restore(&o, &r, err, sizeof(err)) < 0) {
			fprintf(stderr, "%sltxfs restore: %s\n",
				pr.last > 0 ? "\n" : "", err);
			rc = 1;
		}
	}
	if (rc == 0) {
		fmt_time(r.timestamp_ms, when, sizeof(when));
		secs = now_s() - t0;
		printf("restore: %s%s TXID %016" PRIx64 " checksum %016" PRIx64
		       " (committed %s): %" PRIu64 " objects, %" PRIu64
		       " records, %" PRIu64 " bytes, %.2f s, %.1f MB/s%s\n",
		       o.db, o.dry_run ? "" : " ->", r.txid, r.checksum, when,
		       r.objects, r.records, r.bytes, secs,
		       mb_per_s(r.bytes, secs),
		       o.dry_run ? " (dry run: nothing written)" : "");
		if (!o.dry_run)
			printf("restore: wrote %s\n", o.out);
	}
	bk_store_free(s);
	cfg_free(&cfg);
	return rc;
}

/* `ltxfs backup compact DB`: one compaction (compact.h) with no time
 * budget, as the primary's uploader would do it, in the epoch of the
 * store's newest L0 object (rule O4 then holds: no newer one exists). */
static int backup_compact(int argc, char **argv)
{
	static const char usage[] = "usage: ltxfs backup compact "
				    "[-c ltxfs.yml] DB\n";
	ltxfs_cfg cfg = {0};
	bk_store *s = NULL;
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	bk_compact_result res = {0};
	const char *tmp = getenv("TMPDIR");
	char err[2048] = "";
	uint64_t epoch = 0;
	size_t n = 0;
	int next, rc;

	rc = cmd_load_cfg(argc, argv, &cfg, &next, "backup compact");
	if (rc != 0)
		return rc;
	if (next + 1 != argc) {
		fputs(usage, stderr);
		rc = 2;
	}
	if (rc == 0)
		rc = open_store("backup compact", &cfg, &s);
	if (rc == 0 && bk_obj_list(s, cfg.backup.prefix, argv[next], &keys,
				   &objs, &n, err, sizeof(err)) < 0)
		rc = 1;
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (objs[i].level == 0 && objs[i].epoch > epoch)
			epoch = objs[i].epoch;
	if (rc == 0 && bk_compact_db(s, cfg.backup.prefix, argv[next], epoch,
				     tmp && tmp[0] ? tmp : "/tmp", 0,
				     cfg.backup.compaction_interval_ms, &res,
				     err, sizeof(err)) < 0)
		rc = 1;
	if (rc == 1 && err[0])
		fprintf(stderr, "ltxfs backup compact: %s\n", err);
	if (rc == 0)
		printf("%s: %" PRIu64 " objects merged into %" PRIu64 " L1 "
		       "objects (%" PRIu64 " bytes)\n", argv[next],
		       res.l0_objects, res.l1_objects, res.bytes);
	free(objs);
	bk_keys_free(&keys);
	bk_store_free(s);
	cfg_free(&cfg);
	return rc;
}

int cmd_backup(int argc, char **argv)
{
	ltxfs_cfg cfg = {0};
	bk_store *s = NULL;
	bk_range *v = NULL;
	char err[2048] = "", a[40], b[40];
	size_t n = 0;
	int next, rc;

	if (argc >= 2 && strcmp(argv[1], "compact") == 0)
		return backup_compact(argc - 1, argv + 1);
	if (argc < 2 || strcmp(argv[1], "ls") != 0) {
		fputs("usage: ltxfs backup ls|compact [-c ltxfs.yml] DB\n",
		      stderr);
		return 2;
	}
	rc = cmd_load_cfg(argc - 1, argv + 1, &cfg, &next, "backup ls");
	if (rc != 0)
		return rc;
	if (next + 1 != argc - 1) {
		fputs("usage: ltxfs backup ls [-c ltxfs.yml] DB\n", stderr);
		rc = 2;
	}
	if (rc == 0)
		rc = open_store("backup ls", &cfg, &s);
	if (rc == 0 && bk_restore_ranges(s, cfg.backup.prefix, argv[next + 1],
					 &v, &n, err, sizeof(err)) < 0) {
		fprintf(stderr, "ltxfs backup ls: %s\n", err);
		rc = 1;
	}
	if (rc == 0 && n == 0)
		printf("%s: no backup in %s\n", argv[next + 1],
		       bk_store_desc(s));
	for (size_t i = 0; rc == 0 && i < n; i++) {
		fmt_time(v[i].first_ms, a, sizeof(a));
		fmt_time(v[i].last_ms, b, sizeof(b));
		printf("%016" PRIx64 " %016" PRIx64 " %s %s %" PRIu64
		       " objects\n", v[i].first_txid, v[i].last_txid, a, b,
		       v[i].objects);
	}
	free(v);
	bk_store_free(s);
	cfg_free(&cfg);
	return rc;
}
