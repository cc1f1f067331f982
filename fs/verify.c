/* `ltxfs verify`: see verify.h. */
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

#include "lib/io.h"
#include "livedb.h"
#include "log.h"
#include "logbase.h"
#include "ltx/checksum.h"

/* A replay: the log, the page checksums as replayed (from the base or
 * from nothing) and the pages the replayed records wrote. */
struct replay {
	const char *name;
	fs_log *log;
	fs_logbase *tab;
	int scratch;            /* pages as written; zeros elsewhere */
	uint64_t first;         /* the log's first TXID; 0: empty */
	uint64_t from;          /* the replay starts after this TXID */
	bool from_base;         /* ... onto the base at `from` */
	uint64_t since;         /* the snapshot the base comes from */
	uint64_t first_replayed, last;
};

static int scratch_page(void *ctx, uint32_t pgno, const uint8_t *data,
			uint32_t page_size)
{
	struct replay *r = ctx;

	return lib_io_pwrite_full(r->scratch, data, page_size,
				  (off_t)(pgno - 1) * page_size);
}

static int scratch_resize(void *ctx, uint32_t commit, uint32_t page_size,
			  bool reset)
{
	struct replay *r = ctx;
	int rc = reset ? lib_io_ftruncate(r->scratch, 0) : 0;

	if (rc == 0)
		rc = lib_io_ftruncate(r->scratch, (off_t)commit * page_size);
	return rc;
}

/* A scratch file in dir, already unlinked; -errno with msg. */
static int scratch_file(const char *dir, char *msg, size_t msglen)
{
	char path[PATH_MAX];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/verify.XXXXXX", dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(msg, msglen, "cannot create a scratch file in %s: %s",
			 dir, strerror(-rc));
		return rc;
	}
	unlink(path);
	return fd;
}

/* Where the replay starts. 0: from nothing (the log's first record is a
 * snapshot, or the log is empty) or from the base; 1: the log cannot be
 * replayed (msg says why, to follow "not proved: ... after retention");
 * -EBADMSG: the base stopped at a record that does not replay. */
static int choose_start(struct replay *r, const char *dir, char *msg,
			size_t msglen)
{
	char path[PATH_MAX], why[FS_LOGBASE_WHY + 64] = "";
	const fs_logbase_info *in = fs_logbase_get_info(r->tab);
	fs_log_stats st;
	int rc;

	fs_log_get_stats(r->log, &st);
	r->first = st.first_txid;
	if (r->first <= 1)
		return 0;
	snprintf(path, sizeof(path), "%s/log/%s", dir, FS_LOGBASE_NAME);
	rc = fs_logbase_load(r->tab, path, why, sizeof(why));
	if (rc == -ENOENT) {
		snprintf(msg, msglen, "has no base (log/%s) to replay it from",
			 FS_LOGBASE_NAME);
		return 1;
	}
	if (rc < 0) {
		snprintf(msg, msglen, "its base (log/%s) is unusable: %s",
			 FS_LOGBASE_NAME, why);
		return rc == -EBADMSG ? 1 : rc;
	}
	if (in->stopped != 0) {
		snprintf(msg, msglen, "retention could not replay TXID %016"
			 PRIx64 " onto the log's base (at TXID %016" PRIx64
			 ") as it removed it: %s", in->stopped, in->txid,
			 in->why);
		return -EBADMSG;
	}
	if (in->txid + 1 < r->first) {
		snprintf(msg, msglen, "its base is at TXID %016" PRIx64 ": "
			 "retention removed TXIDs %016" PRIx64 "..%016" PRIx64
			 " without replaying them onto it", in->txid,
			 in->txid + 1, r->first - 1);
		return 1;
	}
	r->from = in->txid;
	r->from_base = true;
	r->since = in->since;
	return 0;
}

/* Applies every record after r->from to r->tab (and r->scratch). */
static int replay(struct replay *r, char *msg, size_t msglen)
{
	fs_logbase_hooks hk = {r, scratch_page, scratch_resize};
	char why[320] = "";
	fs_log_iter *it = NULL;
	ltx_decoder *dec = NULL;
	int rc = fs_log_iter_open(r->log, r->from, &it);

	if (rc < 0)
		return rc;
	fs_log_iter_headers_only(it); /* the apply checks each record */
	for (;;) {
		int fd;
		uint64_t off, len, at = r->last ? r->last : r->from;
		ltx_header h;
		fs_range_reader rr;
		rc = fs_log_iter_next(it, &fd, &off, &len, &h);
		if (rc == -ENOENT)
			snprintf(msg, msglen, "the log's records after TXID "
				 "%016" PRIx64 " went away while they were read "
				 "(is a node pruning it?)", at);
		else if (rc < 0)
			snprintf(msg, msglen, "reading the log after TXID %016"
				 PRIx64 ": %s", at, rc == -EBADMSG ?
				 "a corrupt record (see above)" : strerror(-rc));
		if (rc <= 0)
			break;
		rr.fd = fd;
		rr.off = off;
		rr.end = off + len;
		rc = dec ? ltx_decoder_reset(dec, fs_range_read, &rr, NULL)
			 : ltx_decoder_new(fs_range_read, &rr, r->name, &dec);
		if (rc < 0)
			snprintf(why, sizeof(why), "%s", strerror(-rc));
		else
			rc = fs_logbase_apply(r->tab, dec, &hk, NULL, why,
					      sizeof(why));
		if (rc < 0) {
			snprintf(msg, msglen, "replaying the log: %s", why);
			break;
		}
		if (r->first_replayed == 0)
			r->first_replayed = h.min_txid;
		r->last = h.max_txid;
	}
	ltx_decoder_free(dec);
	fs_log_iter_free(it);
	return rc;
}

/* Page pgno of the scratch file (zeros past its end). */
static int scratch_read(int fd, uint32_t pgno, uint32_t page_size,
			uint8_t *buf)
{
	size_t got = 0;
	int rc = lib_io_pread_full(fd, buf, page_size,
				   (off_t)(pgno - 1) * page_size, &got);

	if (rc == -ENODATA) {
		memset(buf + got, 0, page_size - got);
		rc = 0;
	}
	return rc;
}

/* The live database against the replay: its size, and every page by
 * checksum; a page the replay has the bytes of (its scratch copy has the
 * replayed checksum) byte for byte. *out_bytes counts those. */
static int compare(struct replay *r, fs_live_db *l, uint32_t *out_bytes,
		   char *msg, size_t msglen)
{
	const fs_logbase_info *in = fs_logbase_get_info(r->tab);
	uint8_t *a = NULL, *b = NULL;
	uint64_t live_sum = LTX_CHECKSUM_EMPTY;
	uint32_t lock;
	int rc = 0;

	*out_bytes = 0;
	if (in->commit != l->pages) {
		snprintf(msg, msglen, "the log replays to %" PRIu32 " pages, "
			 "the live database has %" PRIu32, in->commit,
			 l->pages);
		return -EBADMSG;
	}
	if (in->commit > 0 && in->page_size != l->page_size) {
		snprintf(msg, msglen, "the log replays to pages of %" PRIu32
			 " bytes, the live database's are %" PRIu32,
			 in->page_size, l->page_size);
		return -EBADMSG;
	}
	a = malloc(l->page_size ? l->page_size : 1);
	b = malloc(l->page_size ? l->page_size : 1);
	if (!a || !b) {
		rc = -ENOMEM;
		goto out;
	}
	lock = l->page_size ? ltx_lock_pgno(l->page_size) : 0;
	for (uint32_t p = 1; p <= l->pages; p++) {
		uint64_t want, got;
		if (p == lock)
			continue;
		rc = fs_live_read(l, p, a);
		if (rc == 0)
			rc = fs_logbase_get(r->tab, p, &want);
		if (rc == 0)
			rc = scratch_read(r->scratch, p, l->page_size, b);
		if (rc < 0) {
			snprintf(msg, msglen, "reading page %" PRIu32 ": %s", p,
				 strerror(-rc));
			goto out;
		}
		got = ltx_checksum_page(p, a, l->page_size);
		if (got != want ||
		    (ltx_checksum_page(p, b, l->page_size) == want &&
		     memcmp(a, b, l->page_size) != 0)) {
			snprintf(msg, msglen, "page %" PRIu32 " differs from the "
				 "log's replay at TXID %016" PRIx64 " (page "
				 "checksums %016" PRIx64 ", replayed %016" PRIx64
				 ")", p, in->txid, got, want);
			rc = -EBADMSG;
			goto out;
		}
		if (ltx_checksum_page(p, b, l->page_size) == want)
			(*out_bytes)++;
		live_sum = ltx_checksum_xor(live_sum, got);
	}
	if (live_sum != in->checksum) {
		snprintf(msg, msglen, "the database's checksum is %016" PRIx64
			 ", the log's replay gives %016" PRIx64, live_sum,
			 in->checksum);
		rc = -EBADMSG;
	}
out:
	free(a);
	free(b);
	return rc;
}

/* What a full replay proved, for the "ok" line. */
static void say_proved(const struct replay *r, const fs_live_db *l,
		       uint32_t bytes, char *msg, size_t msglen)
{
	const fs_logbase_info *in = fs_logbase_get_info(r->tab);
	uint32_t lock = l->page_size ? ltx_lock_pgno(l->page_size) : 0;
	uint32_t pages = l->pages - (lock && lock <= l->pages ? 1 : 0);
	int n;

	n = snprintf(msg, msglen, "ok: TXID %016" PRIx64 ", %" PRIu32
		     " pages, checksum %016" PRIx64 ": ", in->txid, l->pages,
		     in->checksum);
	if (n < 0 || (size_t)n >= msglen)
		return;
	msg += n;
	msglen -= (size_t)n;
	if (r->first == 0)
		n = snprintf(msg, msglen, "the log is empty");
	else if (r->from_base)
		n = snprintf(msg, msglen, "replayed TXIDs %016" PRIx64 "..%016"
			     PRIx64 " onto the base at TXID %016" PRIx64 " (the "
			     "page checksums retention replayed from the "
			     "snapshot at TXID %016" PRIx64 " as it removed "
			     "records)", r->first_replayed, r->last, r->from,
			     r->since);
	else
		n = snprintf(msg, msglen, "replayed TXIDs %016" PRIx64 "..%016"
			     PRIx64 " from the log's first record (a snapshot "
			     "at TXID %016" PRIx64 ")", r->first_replayed,
			     r->last, r->since);
	if (n < 0 || (size_t)n >= msglen)
		return;
	snprintf(msg + n, msglen - (size_t)n, " and matched the database: %"
		 PRIu32 " pages byte for byte, %" PRIu32 " by page checksum",
		 bytes, pages - bytes);
}

/* A log that cannot be replayed: every record kept is verified (file
 * checksum, and each one following the one before); the last one's
 * position and page count are what the live database must match. */
static int check_chain(fs_log *log, const char *name, uint64_t first,
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

/* The weaker checks of a log that cannot be replayed; why says why not.
 * 0 with a "not proved" msg when they pass. */
static int not_proved(struct replay *r, fs_live_db *l, const char *why,
		      char *msg, size_t msglen)
{
	uint64_t txid = 0, sum = 0, live_sum = LTX_CHECKSUM_EMPTY;
	uint32_t commit = 0, lock;
	uint8_t *a = NULL;
	int rc;

	rc = check_chain(r->log, r->name, r->first, &txid, &sum, &commit, msg,
			 msglen);
	if (rc < 0)
		return rc;
	if (commit != l->pages) {
		snprintf(msg, msglen, "the log's last record (TXID %016" PRIx64
			 ") has %" PRIu32 " pages, the live database %" PRIu32,
			 txid, commit, l->pages);
		return -EBADMSG;
	}
	a = malloc(l->page_size ? l->page_size : 1);
	if (!a)
		return -ENOMEM;
	lock = l->page_size ? ltx_lock_pgno(l->page_size) : 0;
	for (uint32_t p = 1; p <= l->pages && rc == 0; p++) {
		if (p == lock)
			continue;
		rc = fs_live_read(l, p, a);
		if (rc == 0)
			live_sum = ltx_checksum_xor(
				live_sum, ltx_checksum_page(p, a, l->page_size));
	}
	free(a);
	if (rc < 0) {
		snprintf(msg, msglen, "reading the database: %s", strerror(-rc));
		return rc;
	}
	if (live_sum != sum) {
		snprintf(msg, msglen, "the database's checksum is %016" PRIx64
			 ", the log's last record (TXID %016" PRIx64 ") says "
			 "%016" PRIx64, live_sum, txid, sum);
		return -EBADMSG;
	}
	snprintf(msg, msglen, "not proved: TXID %016" PRIx64 ", %" PRIu32
		 " pages, checksum %016" PRIx64 ": the log starts at TXID %016"
		 PRIx64 " after retention and %s, so it was not replayed; "
		 "checked only: each record's checksums, each record following "
		 "the one before, and the database's checksum and size against "
		 "the last record", txid, l->pages, sum, r->first, why);
	return 0;
}

int fs_verify_db(const char *data_dir, const char *name, bool *out_proved,
		 char *msg, size_t msglen)
{
	char dir[PATH_MAX - 32], path[PATH_MAX], why[FS_LOGBASE_WHY + 200];
	struct replay r = {.name = name, .scratch = -1};
	fs_live_db l = {.db_fd = -1, .wal_fd = -1};
	uint32_t bytes = 0;
	int fd, lrc, rc;

	*out_proved = false;
	if ((size_t)snprintf(dir, sizeof(dir), "%s/dbs/%s", data_dir, name) >=
	    sizeof(dir)) {
		snprintf(msg, msglen, "data directory path too long");
		return -ENAMETOOLONG;
	}
	r.scratch = scratch_file(dir, msg, msglen);
	if (r.scratch < 0)
		return r.scratch;
	fd = scratch_file(dir, msg, msglen);
	rc = fd < 0 ? fd : fs_logbase_new(fd, &r.tab);
	if (rc < 0) {
		if (fd >= 0)
			snprintf(msg, msglen, "a scratch checksum table: %s",
				 strerror(-rc));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/log", dir);
	rc = fs_log_open_readonly(path, name, &r.log);
	if (rc < 0) {
		snprintf(msg, msglen, "cannot open its LTX log: %s",
			 strerror(-rc));
		goto out;
	}
	rc = choose_start(&r, dir, why, sizeof(why));
	if (rc < 0) {
		snprintf(msg, msglen, "%s", why);
		goto out;
	}
	if (rc == 0)
		rc = replay(&r, msg, msglen);
	else
		rc = 1; /* not proved: why says why */
	if (rc == 0 && !r.from_base)
		r.since = fs_logbase_get_info(r.tab)->since;
	if (rc < 0)
		goto out;
	lrc = fs_live_open(dir, false, &l, msg, msglen);
	if (lrc < 0) {
		rc = lrc;
		goto out;
	}
	if (rc == 1) {
		rc = not_proved(&r, &l, why, msg, msglen);
		goto out;
	}
	rc = compare(&r, &l, &bytes, msg, msglen);
	if (rc < 0)
		goto out;
	say_proved(&r, &l, bytes, msg, msglen);
	*out_proved = true;
out:
	fs_live_close(&l);
	fs_log_close(r.log);
	fs_logbase_free(r.tab);
	close(r.scratch);
	return rc;
}
