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
#include "log.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "wal.h"

/* The live database: the file, with the WAL's committed frames on top. */
typedef struct live_db {
	int db_fd, wal_fd;
	uint32_t page_size;
	uint32_t pages;
	uint64_t *frame_off;    /* per page: WAL offset of its page, or 0 */
	uint32_t nframe_off;
} live_db;

static int live_scan_wal(live_db *l)
{
	uint8_t hdr[FS_WAL_HDR_SIZE];
	fs_wal_hdr h;
	uint8_t *frame = NULL;
	uint64_t *pending = NULL;
	uint32_t *pending_pg = NULL;
	size_t npending = 0, cap = 0;
	struct stat st;
	uint32_t s0, s1;
	int rc;

	if (l->wal_fd < 0 || fstat(l->wal_fd, &st) < 0 ||
	    st.st_size < FS_WAL_HDR_SIZE)
		return 0;
	rc = lib_io_pread_full(l->wal_fd, hdr, sizeof(hdr), 0, NULL);
	if (rc < 0 || fs_wal_hdr_parse(hdr, &h) < 0)
		return rc;
	if (l->page_size && h.page_size != l->page_size)
		return 0;
	l->page_size = h.page_size;
	frame = malloc(FS_WAL_FRAME_HDR_SIZE + h.page_size);
	if (!frame)
		return -ENOMEM;
	s0 = h.cksum1;
	s1 = h.cksum2;
	for (uint64_t i = 0;; i++) {
		uint64_t off = fs_wal_frame_offset(h.page_size, i);
		uint32_t pgno, commit;
		if (off + FS_WAL_FRAME_HDR_SIZE + h.page_size >
		    (uint64_t)st.st_size)
			break;
		rc = lib_io_pread_full(l->wal_fd, frame,
				       FS_WAL_FRAME_HDR_SIZE + h.page_size,
				       (off_t)off, NULL);
		if (rc < 0)
			goto out;
		if (!fs_wal_frame_check(&h, frame, frame + FS_WAL_FRAME_HDR_SIZE,
					&s0, &s1, &pgno, &commit))
			break;
		if (npending == cap) {
			size_t c = cap ? cap * 2 : 64;
			uint64_t *a = realloc(pending, c * sizeof(*a));
			uint32_t *b = a ? realloc(pending_pg, c * sizeof(*b))
					: NULL;
			if (a)
				pending = a;
			if (!a || !b) {
				rc = -ENOMEM;
				goto out;
			}
			pending_pg = b;
			cap = c;
		}
		pending[npending] = off + FS_WAL_FRAME_HDR_SIZE;
		pending_pg[npending++] = pgno;
		if (commit == 0)
			continue;
		for (size_t j = 0; j < npending; j++) {
			uint32_t p = pending_pg[j];
			if (p >= l->nframe_off) {
				uint32_t n = l->nframe_off ? l->nframe_off : 64;
				uint64_t *a;
				while (n <= p)
					n *= 2;
				a = realloc(l->frame_off, n * sizeof(*a));
				if (!a) {
					rc = -ENOMEM;
					goto out;
				}
				memset(a + l->nframe_off, 0,
				       (n - l->nframe_off) * sizeof(*a));
				l->frame_off = a;
				l->nframe_off = n;
			}
			l->frame_off[p] = pending[j];
		}
		npending = 0;
		l->pages = commit;
	}
	rc = 0;
out:
	free(frame);
	free(pending);
	free(pending_pg);
	return rc;
}

static int live_read(live_db *l, uint32_t pgno, uint8_t *buf)
{
	if (pgno < l->nframe_off && l->frame_off[pgno])
		return lib_io_pread_full(l->wal_fd, buf, l->page_size,
					 (off_t)l->frame_off[pgno], NULL);
	return lib_io_pread_full(l->db_fd, buf, l->page_size,
				 (off_t)(pgno - 1) * l->page_size, NULL);
}

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
	live_db l = {.db_fd = -1, .wal_fd = -1};
	uint8_t *a = NULL, *b = NULL;
	uint64_t txid = 0, sum = 0, live_sum = LTX_CHECKSUM_EMPTY, first = 0;
	uint32_t replay_pages = 0, lock, commit = 0;
	struct stat st;
	int scratch = -1, rc;
	ltx_err err = {0};

	if ((size_t)snprintf(dir, sizeof(dir), "%s/dbs/%s", data_dir, name) >=
	    sizeof(dir)) {
		snprintf(msg, msglen, "data directory path too long");
		return -ENAMETOOLONG;
	}
	snprintf(path, sizeof(path), "%s/verify.XXXXXX", dir);
	scratch = mkstemp(path);
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
	snprintf(path, sizeof(path), "%s/database", dir);
	l.db_fd = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/wal", dir);
	l.wal_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (l.db_fd >= 0 && fstat(l.db_fd, &st) == 0 && st.st_size >= 100 &&
	    ltx_dbfile_page_size(l.db_fd, &l.page_size, &err) < 0) {
		snprintf(msg, msglen, "live database: %s", err.msg);
		rc = -EBADMSG;
		goto out;
	}
	if (l.db_fd >= 0 && l.page_size) {
		uint8_t h[100];
		l.pages = (uint32_t)((uint64_t)st.st_size / l.page_size);
		/* SQLite cuts a shrunk file only after the commit; pages past
		 * the header's valid page count are not the database's. */
		if (lib_io_pread_full(l.db_fd, h, sizeof(h), 0, NULL) == 0 &&
		    get_be32(h + 92) == get_be32(h + 24) &&
		    get_be32(h + 28) != 0 && get_be32(h + 28) < l.pages)
			l.pages = get_be32(h + 28);
	}
	rc = live_scan_wal(&l);
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
		rc = live_read(&l, p, a);
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
	free(l.frame_off);
	if (l.db_fd >= 0)
		close(l.db_fd);
	if (l.wal_fd >= 0)
		close(l.wal_fd);
	close(scratch);
	return rc;
}
