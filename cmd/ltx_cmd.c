/*
 * `ltxfs ltx`: tools for LTX files and database files, for debugging and
 * for scripts. Exit codes: 0 success, 1 invalid input or failed check,
 * 2 usage error.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"
#include "ltx/ltx.h"
#include "ltx/pos.h"

static int open_or_complain(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC, 0644);

	if (fd < 0)
		fprintf(stderr, "ltxfs ltx: %s: %s\n", path, strerror(errno));
	return fd;
}

static void print_header(const ltx_header *h)
{
	char ts[64] = "";
	time_t secs = (time_t)(h->timestamp / 1000);
	struct tm tm;

	if (gmtime_r(&secs, &tm))
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("flags:         0x%08" PRIx32 "%s\n", h->flags,
	       h->flags & LTX_FLAG_COMPRESS_ZSTD ? " (zstd)" : "");
	printf("page size:     %" PRIu32 "\n", h->page_size);
	printf("commit:        %" PRIu32 "\n", h->commit);
	printf("min TXID:      %016" PRIx64 " (%" PRIu64 ")\n", h->min_txid,
	       h->min_txid);
	printf("max TXID:      %016" PRIx64 " (%" PRIu64 ")\n", h->max_txid,
	       h->max_txid);
	printf("timestamp:     %" PRId64 " (%s.%03dZ)\n", h->timestamp, ts,
	       (int)(h->timestamp % 1000 + 1000) % 1000);
	printf("pre-apply:     %016" PRIx64 "%s\n", h->pre_apply_checksum,
	       ltx_header_is_snapshot(h) ? " (snapshot)" : "");
	printf("WAL offset:    %" PRIu64 "\n", h->wal_offset);
	printf("WAL size:      %" PRIu64 "\n", h->wal_size);
	printf("WAL salts:     %08" PRIx32 " %08" PRIx32 "\n", h->wal_salt1,
	       h->wal_salt2);
	printf("node ID:       %016" PRIx64 "\n", h->node_id);
}

static int cmd_dump(const char *path)
{
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_trailer t;
	uint8_t *page = NULL;
	uint32_t pgno;
	uint64_t n = 0;
	int fd, rc;

	fd = open_or_complain(path, O_RDONLY);
	if (fd < 0)
		return 1;
	rc = ltx_decoder_new(ltx_read_from_fd, &fd, path, &dec);
	if (rc < 0)
		goto out;
	rc = ltx_decoder_read_header(dec, &h);
	if (rc < 0)
		goto out;
	print_header(&h);
	page = malloc(h.page_size);
	if (!page) {
		rc = -ENOMEM;
		goto out;
	}
	printf("pages:\n");
	while ((rc = ltx_decoder_next_page(dec, &pgno, page)) == 1) {
		printf("  %10" PRIu32 "  checksum %016" PRIx64 "\n", pgno,
		       ltx_checksum_page(pgno, page, h.page_size));
		n++;
	}
	if (rc < 0)
		goto out;
	rc = ltx_decoder_finish(dec, &t);
	if (rc < 0)
		goto out;
	printf("page count:    %" PRIu64 "\n", n);
	printf("post-apply:    %016" PRIx64 "\n", t.post_apply_checksum);
	printf("file checksum: %016" PRIx64 " (ok)\n", t.file_checksum);
	printf("size:          %" PRIu64 " bytes\n",
	       ltx_decoder_bytes_read(dec));
out:
	if (rc < 0 && dec && ltx_decoder_err(dec)->kind != LTX_OK)
		fprintf(stderr, "ltxfs ltx dump: %s\n",
			ltx_decoder_err(dec)->msg);
	else if (rc < 0)
		fprintf(stderr, "ltxfs ltx dump: %s: %s\n", path,
			strerror(-rc));
	free(page);
	ltx_decoder_free(dec);
	close(fd);
	return rc < 0 ? 1 : 0;
}

static int verify_one(const char *path)
{
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_trailer t;
	uint64_t pages = 0;
	int fd, rc;

	fd = open_or_complain(path, O_RDONLY);
	if (fd < 0)
		return -1;
	rc = ltx_decoder_new(ltx_read_from_fd, &fd, path, &dec);
	if (rc == 0)
		rc = ltx_decoder_verify(dec, &h, &t, &pages);
	if (rc == 0)
		printf("%s: ok: TXID %016" PRIx64 "-%016" PRIx64 ", %" PRIu64
		       " pages, post-apply %016" PRIx64 "\n", path,
		       h.min_txid, h.max_txid, pages, t.post_apply_checksum);
	else if (dec)
		fprintf(stderr, "%s\n", ltx_decoder_err(dec)->msg);
	else
		fprintf(stderr, "%s: %s\n", path, strerror(-rc));
	ltx_decoder_free(dec);
	close(fd);
	return rc;
}

static int ltx_verify_files(int n, char **paths)
{
	int bad = 0;

	for (int i = 0; i < n; i++)
		if (verify_one(paths[i]) < 0)
			bad++;
	return bad ? 1 : 0;
}

static int cmd_checksum(const char *path)
{
	ltx_err err = {0};
	uint32_t ps, pages;
	uint64_t sum;
	int fd, rc;

	fd = open_or_complain(path, O_RDONLY);
	if (fd < 0)
		return 1;
	rc = ltx_dbfile_page_size(fd, &ps, &err);
	if (rc == 0)
		rc = ltx_dbfile_checksum(fd, ps, &pages, &sum, &err);
	close(fd);
	if (rc < 0) {
		fprintf(stderr, "ltxfs ltx checksum: %s: %s\n", path, err.msg);
		return 1;
	}
	printf("%016" PRIx64 "\n", sum);
	return 0;
}

/* Verifies one LTX file whole, then applies it. */
static int apply_one(int dbfd, const char *dbpath, const char *path,
		     uint64_t *sum)
{
	ltx_decoder *dec = NULL;
	ltx_header h;
	ltx_err err = {0};
	int fd, rc;

	rc = verify_one(path);
	if (rc < 0)
		return rc;
	fd = open_or_complain(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	rc = ltx_decoder_new(ltx_read_from_fd, &fd, path, &dec);
	if (rc == 0)
		rc = ltx_dbfile_apply(dbfd, dec, sum, &h, &err);
	if (rc < 0)
		fprintf(stderr, "ltxfs ltx apply: %s to %s: %s\n", path,
			dbpath, err.msg[0] ? err.msg : strerror(-rc));
	ltx_decoder_free(dec);
	close(fd);
	return rc;
}

/* --step: after each file, the database is synced and one line
 * "applied FILE CHECKSUM" is printed; the next file waits for a line on
 * stdin ("q" or end of input stops with exit 0, the files left unapplied).
 * A script inspects the database between records with this, in one
 * process. */
static bool step_wait(const char *path, uint64_t sum)
{
	char line[16];

	printf("applied %s %016" PRIx64 "\n", path, sum);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return false;
	return line[0] != 'q';
}

static int cmd_apply(const char *dbpath, int n, char **paths, bool step)
{
	ltx_err err = {0};
	uint32_t ps, pages;
	uint64_t sum = LTX_CHECKSUM_EMPTY;
	int fd, rc = 0;

	fd = open_or_complain(dbpath, O_RDWR | O_CREAT);
	if (fd < 0)
		return 1;
	if (lseek(fd, 0, SEEK_END) > 0) {
		rc = ltx_dbfile_page_size(fd, &ps, &err);
		if (rc == 0)
			rc = ltx_dbfile_checksum(fd, ps, &pages, &sum, &err);
		if (rc < 0) {
			fprintf(stderr, "ltxfs ltx apply: %s: %s\n", dbpath,
				err.msg);
			goto out;
		}
	}
	for (int i = 0; i < n && rc == 0; i++) {
		rc = apply_one(fd, dbpath, paths[i], &sum);
		if (rc == 0 && step && i + 1 < n) {
			rc = lib_io_fsync(fd);
			if (rc == 0 && !step_wait(paths[i], sum))
				break;
		}
	}
	if (rc == 0)
		rc = lib_io_fsync(fd);
	if (rc == 0)
		printf("%016" PRIx64 "\n", sum);
out:
	close(fd);
	return rc < 0 ? 1 : 0;
}

static int cmd_encode_db(const char *dbpath, const char *outpath,
			 const char *level_arg)
{
	ltx_header h = {0};
	ltx_trailer t;
	ltx_err err = {0};
	int in, out, rc;
	int level = level_arg ? atoi(level_arg) : LTX_ZSTD_LEVEL_DEFAULT;

	in = open_or_complain(dbpath, O_RDONLY);
	if (in < 0)
		return 1;
	rc = ltx_dbfile_page_size(in, &h.page_size, &err);
	if (rc < 0) {
		fprintf(stderr, "ltxfs ltx encode-db: %s: %s\n", dbpath,
			err.msg);
		close(in);
		return 1;
	}
	out = open_or_complain(outpath, O_WRONLY | O_CREAT | O_TRUNC);
	if (out < 0) {
		close(in);
		return 1;
	}
	h.flags = level > 0 ? LTX_FLAG_COMPRESS_ZSTD : 0;
	h.min_txid = h.max_txid = 1;
	h.timestamp = lib_clock_wall_ms();
	rc = ltx_dbfile_encode(in, &h, level, ltx_write_to_fd, &out, &t, &err);
	if (rc == 0)
		rc = lib_io_fsync(out);
	if (rc < 0)
		fprintf(stderr, "ltxfs ltx encode-db: %s: %s\n", dbpath,
			err.msg[0] ? err.msg : strerror(-rc));
	else
		printf("%016" PRIx64 "\n", t.post_apply_checksum);
	close(in);
	close(out);
	return rc < 0 ? 1 : 0;
}

static void ltx_usage(void)
{
	fprintf(stderr,
		"usage: ltxfs ltx dump FILE\n"
		"       ltxfs ltx verify FILE...\n"
		"       ltxfs ltx checksum DBFILE\n"
		"       ltxfs ltx apply [--step] DBFILE LTXFILE...\n"
		"       ltxfs ltx encode-db DBFILE OUT.ltx [ZSTD_LEVEL]"
		"   (level 0: uncompressed; default 1)\n");
}

int cmd_ltx(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";

	if (strcmp(sub, "dump") == 0 && argc == 3)
		return cmd_dump(argv[2]);
	if (strcmp(sub, "verify") == 0 && argc >= 3)
		return ltx_verify_files(argc - 2, argv + 2);
	if (strcmp(sub, "checksum") == 0 && argc == 3)
		return cmd_checksum(argv[2]);
	if (strcmp(sub, "apply") == 0 && argc >= 5 &&
	    strcmp(argv[2], "--step") == 0)
		return cmd_apply(argv[3], argc - 4, argv + 4, true);
	if (strcmp(sub, "apply") == 0 && argc >= 4)
		return cmd_apply(argv[2], argc - 3, argv + 3, false);
	if (strcmp(sub, "encode-db") == 0 && (argc == 4 || argc == 5))
		return cmd_encode_db(argv[2], argv[3],
				     argc == 5 ? argv[4] : NULL);
	ltx_usage();
	return 2;
}
