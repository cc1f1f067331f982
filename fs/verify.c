#include "verify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/io.h"
#include "livedb.h"
#include "log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "wal.h"

/* A log that retention has pruned (it starts after TXID 1) cannot be
 * replayed: every record kept is verified (file checksum, and each one
 * following the one before) and the last one's position and page count
 * are what the live database must match. */
static int check_pruned(fs_log *log, const char *name, uint64_t first,
			uint64_t *out_txid, uint64_t *out_sum,
			uint32_t *out_commit, char *msg, size_t msglen)
{
	fs_log_iter *it = NULL;
	uint64_t txid = 0, sum = 0;
	int rc = fs_log_iter_open(log, first - 1, &it);

	while (rc >= 0) {
		int fd;
		uint64_t off, len;
		ltx_header h;
		ltx_trailer t;
		ltx_decoder *dec = NULL;
		fs_range_reader rr;
		rc = fs_log_iter_next(it, &fd, &off, &len, &h);
		if (rc <= 0)
			break;
		if (txid != 0 && !ltx_header_is_snapshot(&h) &&
		    (h.min_txid != txid + 1 || h.pre_apply_checksum != sum)) {
			snprintf(msg, msglen, "log jumps from %016" PRIx64
				 "/%016" PRIx64 " to a record starting at %016"
				 PRIx64 "/%016" PRIx64, txid, sum, h.min_txid,
				 h.pre_apply_checksum);
			rc = -EBADMSG;
			break;
		}
		rr.fd = fd;
		rr.off = off;
		rr.end = off + len;
		rc = ltx_decoder_new(fs_range_read, &rr, name, &dec);
		if (rc == 0)
			rc = ltx_decoder_verify(dec, NULL, &t, NULL);
		if (rc < 0)
			snprintf(msg, msglen, "TXID %016" PRIx64 ": %s",
				 h.max_txid, dec ? ltx_decoder_err(dec)->msg
						 : strerror(-rc));
		ltx_decoder_free(dec);
		if (rc < 0)
			break;
		txid = h.max_txid;
		sum = t.post_apply_checksum;
		*out_commit = h.commit;
	}
	fs_log_iter_free(it);
	if (rc == -ENOENT)
		snprintf(msg, msglen, "the log's first segment %016" PRIx64
			 " went away while it was read", first);
	*out_txid = txid;
	*out_sum = sum;
	return rc < 0 ? rc : 0;
}

/* Replays the log into scratch_fd; *out_sum gets the last post-apply.
 * A pruned log is checked by check_pruned instead: *out_first gets its
 * first TXID and *out_commit the page count after its last record. */
static int replay(const char *dir, const char *name, int scratch_fd,
		  uint64_t *out_txid, uint64_t *out_sum, uint64_t *out_first,
		  uint32_t *out_commit, char *msg, size_t msglen)
{
	fs_log *log = NULL;
	fs_log_iter *it = NULL;
	uint64_t sum = LTX_CHECKSUM_EMPTY, txid = 0;
	char path[PATH_MAX + 8];
	int rc;

	snprintf(path, sizeof(path), "%s/log", dir);
	rc = fs_log_open_readonly(path, name, &log);
	if (rc < 0) {
		snprintf(msg, msglen, "cannot open its LTX log: %s",
			 strerror(-rc));
		return rc;
	}
	rc = fs_log_iter_open(log, 0, &it);
	while (rc >= 0) {
		int fd;
		uint64_t off, len;
		ltx_header h;
		ltx_decoder *dec = NULL;
		ltx_err err = {0};
		fs_range_reader rr;
		rc = fs_log_iter_next(it, &fd, &off, &len, &h);
		if (rc <= 0)
			break;
		if (h.min_txid != txid + 1 && !ltx_header_is_snapshot(&h)) {
			snprintf(msg, msglen, "log jumps from TXID %016" PRIx64
				 " to %016" PRIx64, txid, h.min_txid);
			rc = -EBADMSG;
			break;
		}
		rr.fd = fd;
		rr.off = off;
		rr.end = off + len;
		rc = ltx_decoder_new(fs_range_read, &rr, name, &dec);
		if (rc == 0)
			rc = ltx_dbfile_apply(scratch_fd, dec, &sum, NULL, &err);
		ltx_decoder_free(dec);
		if (rc < 0) {
			snprintf(msg, msglen, "replaying TXID %016" PRIx64
				 ": %s", h.max_txid, err.msg);
			break;
		}
		txid = h.max_txid;
	}
	if (rc == -ENOENT && txid == 0) {
		fs_log_stats st;
		fs_log_get_stats(log, &st);
		if (st.first_txid > 1) {
			*out_first = st.first_txid;
			rc = check_pruned(log, name, st.first_txid, &txid, &sum,
					  out_commit, msg, msglen);
		} else {
			snprintf(msg, msglen, "the log does not start at TXID "
				 "1");
		}
	}
	fs_log_iter_free(it);
	fs_log_close(log);
	*out_txid = txid;
	*out_sum = sum;
	return rc < 0 ? rc : 0;
}

int fs_verify_db(const char *data_dir, const char *name, char *msg,
		 size_t msglen)
{
	char dir[PATH_MAX - 32], path[PATH_MAX];
	fs_live_db l = {.db_fd = -1, .wal_fd = -1};
	uint8_t *a = NULL, *b = NULL;
	uint64_t txid = 0, sum = 0, live_sum = LTX_CHECKSUM_EMPTY, first = 0;
	uint32_t replay_pages = 0, lock, commit = 0;
	struct stat st;
	int scratch = -1, rc;

	if ((size_t)snprintf(dir, sizeof(dir), "%s/dbs/%s", data_dir, name) >=
	    sizeof(dir)) {
		snprintf(msg, msglen, "data directory path too long");
		return -ENAMETOOLONG;
	}
	snprintf(path, sizeof(path), "%s/verify.XXXXXX", dir);
	scratch = mkostemp(path, O_CLOEXEC);
	if (scratch < 0) {
		rc = -errno;
		snprintf(msg, msglen, "cannot create a scratch file in %s: %s",
			 dir, strerror(-rc));
		return rc;
	}
	unlink(path);
	rc = replay(dir, name, scratch, &txid, &sum, &first, &commit, msg,
		    msglen);
	if (rc < 0)
		goto out;
	rc = fs_live_open(dir, false, &l, msg, msglen);
	if (rc < 0)
		goto out;
	if (fstat(scratch, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (l.page_size)
		replay_pages = (uint32_t)((uint64_t)st.st_size / l.page_size);
	if (first > 1)
		replay_pages = commit; /* pruned: nothing was replayed */
	if (replay_pages != l.pages) {
		snprintf(msg, msglen, "the log replays to %" PRIu32 " pages, "
			 "the live database has %" PRIu32, replay_pages,
			 l.pages);
		rc = -EBADMSG;
		goto out;
	}
	a = malloc(l.page_size ? l.page_size : 1);
	b = malloc(l.page_size ? l.page_size : 1);
	if (!a || !b) {
		rc = -ENOMEM;
		goto out;
	}
	lock = l.page_size ? ltx_lock_pgno(l.page_size) : 0;
	for (uint32_t p = 1; p <= l.pages; p++) {
		if (p == lock)
			continue;
		rc = fs_live_read(&l, p, a);
		if (rc == 0 && first > 1) {
			live_sum = ltx_checksum_xor(
				live_sum, ltx_checksum_page(p, a, l.page_size));
			continue;
		}
		if (rc == 0)
			rc = lib_io_pread_full(scratch, b, l.page_size,
					       (off_t)(p - 1) * l.page_size,
					       NULL);
		if (rc < 0)
			goto out;
		if (memcmp(a, b, l.page_size) != 0) {
			snprintf(msg, msglen, "page %" PRIu32 " differs from "
				 "the log's replay at TXID %016" PRIx64, p,
				 txid);
			rc = -EBADMSG;
			goto out;
		}
		live_sum = ltx_checksum_xor(live_sum,
					    ltx_checksum_page(p, a,
							      l.page_size));
	}
	if (live_sum != sum) {
		snprintf(msg, msglen, "checksum %016" PRIx64 " but the log "
			 "says %016" PRIx64, live_sum, sum);
		rc = -EBADMSG;
		goto out;
	}
	if (first > 1)
		snprintf(msg, msglen, "ok: TXID %016" PRIx64 ", %" PRIu32
			 " pages, checksum %016" PRIx64 " (the log starts at "
			 "TXID %016" PRIx64 " after retention: its records and "
			 "the database's checksum checked, no replay)", txid,
			 l.pages, sum, first);
	else
		snprintf(msg, msglen, "ok: TXID %016" PRIx64 ", %" PRIu32
			 " pages, checksum %016" PRIx64, txid, l.pages, sum);
	rc = 0;
out:
	free(a);
	free(b);
	fs_live_close(&l);
	close(scratch);
	return rc;
}
