/* The LTX log: layout and rules in log.h. */
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/io.h"
#include "lib/log.h"
#include "logbase.h"

#define TS_UNKNOWN INT64_MIN

typedef struct fs_seg {
	uint64_t first;        /* first record's min TXID: the name */
	uint64_t bytes;        /* size once sealed; the last one's is end */
	int64_t ts;            /* first record's LTX timestamp, or TS_UNKNOWN */
} fs_seg;

struct fs_log {
	char *dir;
	char *name;
	pthread_mutex_t prune_mu; /* serialises fs_log_prune (which replays
				   * what it removes onto the base outside
				   * mu) and fs_log_reset; taken before mu */
	bool base_warned;      /* prune_mu: said once that the base cannot
				* follow */
	pthread_mutex_t mu;    /* guards everything below but the atomics */
	fs_seg *segs;          /* ascending by first TXID */
	size_t nsegs, cap;
	int fd;                /* last segment, -1 when none */
	uint64_t end;          /* published end of the last segment */
	uint64_t synced_end;   /* end at the last fs_log_sync of fd (the
				* appender's; under mu) */
	int64_t active_ts;     /* segs[last].ts, kept by the appender */
	bool readonly;         /* opened by a reader (ltxfs verify) */
	bool cut_pending;      /* appender: a failed append's bytes past end
				* could not be cut off yet */
	fs_log_tail tail;
	char why[FS_LOG_WHY_MAX]; /* what open found corrupt, "" if nothing */
	uint64_t trusted_from;  /* records from this TXID on were verified at
				 * open or appended here; older ones are
				 * verified when an iterator reads them */
	/* Retention (fs_log_set_retention); read by the appender. */
	_Atomic int64_t keep_ms;       /* < 0: no age limit */
	_Atomic uint64_t keep_bytes;   /* 0: no size cap */
	_Atomic uint64_t hold_after;   /* age keeps records after it;
					* FS_LOG_NO_HOLD none */
	_Atomic uint64_t roll_bytes;   /* start a segment past this size */
	_Atomic int64_t roll_ms;       /* ... or this much younger than the
					* active segment's first record */
	uint64_t pruned_segments, pruned_bytes;
	/* The last record appended through this fs_log (fs_log_unappend):
	 * where it starts in the last segment, its TXID and the tail before
	 * it. Under mu. */
	bool last_known;
	uint64_t last_start, last_txid;
	fs_log_tail last_prev;
	uint64_t cut_gen;      /* fs_log_unappend calls */
	uint64_t cut_txid;     /* the TXID the latest one took back */
};

struct fs_log_iter {
	fs_log *log;
	uint64_t after;
	int fd;
	uint64_t seg_first;    /* the open segment's name (its index moves
				* when older segments are pruned) */
	uint64_t off;
	bool started;
	bool headers_only;     /* fs_log_iter_headers_only: no verify_old */
	uint64_t cut_gen;      /* the log's cut_gen when last checked */
};

static int fs_log_open_mode(const char *dir, const char *name, bool readonly,
			    fs_log **out, char *why, size_t whylen);

int fs_range_read(void *ctx, void *buf, size_t n, size_t *out_got)
{
	fs_range_reader *r = ctx;
	uint64_t left = r->end - r->off;
	size_t want = n < left ? n : (size_t)left;
	size_t got = 0;
	int rc = 0;

	if (want > 0) {
		rc = lib_io_pread_full(r->fd, buf, want, (off_t)r->off, &got);
		if (rc == -ENODATA)
			rc = 0;
	}
	r->off += got;
	*out_got = got;
	return rc;
}

static void seg_path(const fs_log *log, uint64_t first, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%016" PRIx64 ".seg", log->dir, first);
}

static int cmp_seg(const void *a, const void *b)
{
	uint64_t x = ((const fs_seg *)a)->first, y = ((const fs_seg *)b)->first;

	return x < y ? -1 : x > y;
}

/* mu held, or the log not yet shared. */
static int seg_push(fs_log *log, uint64_t first, uint64_t bytes, int64_t ts)
{
	if (log->nsegs == log->cap) {
		size_t cap = log->cap ? log->cap * 2 : 16;
		fs_seg *p = realloc(log->segs, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		log->segs = p;
		log->cap = cap;
	}
	log->segs[log->nsegs].first = first;
	log->segs[log->nsegs].bytes = bytes;
	log->segs[log->nsegs].ts = ts;
	log->nsegs++;
	return 0;
}

/* Index of the segment named first, or -1 (mu held). */
static ssize_t seg_index(const fs_log *log, uint64_t first)
{
	size_t lo = 0, hi = log->nsegs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (log->segs[mid].first < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < log->nsegs && log->segs[lo].first == first ? (ssize_t)lo
								: -1;
}

/* Index of the first segment named after first; nsegs when none. */
static size_t seg_after(const fs_log *log, uint64_t first)
{
	size_t lo = 0, hi = log->nsegs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (log->segs[mid].first <= first)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Size and first record's timestamp of a segment file (no verification:
 * only the last segment is verified on open). */
static void seg_probe(const fs_log *log, fs_seg *sg)
{
	char path[PATH_MAX];
	uint8_t buf[FS_LOG_RECORD_PREFIX + LTX_HEADER_SIZE];
	struct stat st;
	ltx_header h;
	ltx_err e;
	int fd;

	sg->bytes = 0;
	sg->ts = TS_UNKNOWN;
	seg_path(log, sg->first, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0)
		sg->bytes = (uint64_t)st.st_size;
	if (lib_io_pread_full(fd, buf, sizeof(buf), 0, NULL) == 0 &&
	    ltx_header_decode(buf + FS_LOG_RECORD_PREFIX, &h, &e) == 0)
		sg->ts = h.timestamp;
	close(fd);
}

static int list_segments(fs_log *log)
{
	DIR *d = opendir(log->dir);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		uint64_t first;
		char *end;
		size_t len = strlen(de->d_name);
		if (len != 20 || strcmp(de->d_name + 16, ".seg") != 0)
			continue;
		first = strtoull(de->d_name, &end, 16);
		if (end != de->d_name + 16)
			continue;
		rc = seg_push(log, first, 0, TS_UNKNOWN);
		if (rc < 0)
			break;
	}
	closedir(d);
	if (log->nsegs > 1)
		qsort(log->segs, log->nsegs, sizeof(fs_seg), cmp_seg);
	for (size_t i = 0; rc == 0 && i < log->nsegs; i++)
		seg_probe(log, &log->segs[i]);
	return rc;
}

/* Verifies one record at off; fills hdr/trailer. -EBADMSG with a message in
 * err when invalid; *out_torn when it runs to or past the end of the
 * file (a crash while appending). */
static int check_record(int fd, uint64_t off, uint64_t size, uint64_t *out_len,
			ltx_header *hdr, ltx_trailer *tr, bool *out_torn,
			char *err, size_t errlen)
{
	uint8_t pfx[FS_LOG_RECORD_PREFIX];
	fs_range_reader rr;
	ltx_decoder *dec = NULL;
	uint64_t len;
	int rc;

	*out_torn = false;
	if (off + FS_LOG_RECORD_PREFIX > size) {
		*out_torn = true;
		snprintf(err, errlen, "partial length prefix");
		return -EBADMSG;
	}
	rc = lib_io_pread_full(fd, pfx, sizeof(pfx), (off_t)off, NULL);
	if (rc < 0)
		return rc;
	len = get_be32(pfx);
	if (len == 0) {
		/* The length is written last: a zero is an append that did
		 * not finish. */
		*out_torn = true;
		snprintf(err, errlen, "unfinished record");
		return -EBADMSG;
	}
	if (off + FS_LOG_RECORD_PREFIX + len > size) {
		*out_torn = true;
		snprintf(err, errlen, "record of %" PRIu64 " bytes runs past "
			 "the end of the segment", len);
		return -EBADMSG;
	}
	rr.fd = fd;
	rr.off = off + FS_LOG_RECORD_PREFIX;
	rr.end = rr.off + len;
	rc = ltx_decoder_new(fs_range_read, &rr, "record", &dec);
	if (rc < 0)
		return rc;
	rc = ltx_decoder_verify(dec, hdr, tr, NULL);
	if (rc < 0) {
		snprintf(err, errlen, "%s", ltx_decoder_err(dec)->msg);
		*out_torn = off + FS_LOG_RECORD_PREFIX + len == size;
	}
	ltx_decoder_free(dec);
	*out_len = len;
	return rc;
}

static void set_tail(fs_log *log, const ltx_header *h, const ltx_trailer *t)
{
	log->tail.pos.txid = h->max_txid;
	log->tail.pos.checksum = t->post_apply_checksum;
	log->tail.commit = h->commit;
	log->tail.page_size = h->page_size;
	log->tail.wal_offset = h->wal_offset;
	log->tail.wal_size = h->wal_size;
	log->tail.wal_salt1 = h->wal_salt1;
	log->tail.wal_salt2 = h->wal_salt2;
}

/* Records what is corrupt (log->why): segment, byte offset, rule, and
 * the detail. */
static void set_why(fs_log *log, size_t idx, uint64_t off, const char *rule,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_why(fs_log *log, size_t idx, uint64_t off, const char *rule,
		    const char *fmt, ...)
{
	char detail[FS_LOG_WHY_MAX - 112];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	snprintf(log->why, sizeof(log->why), "LTX log segment %016" PRIx64
		 ".seg is corrupt at byte %" PRIu64 " (rule %s): %s",
		 log->segs[idx].first, off, rule, detail);
}

/* Walks and verifies the whole segment, cutting a torn tail. */
static int recover_segment(fs_log *log, size_t idx, int fd)
{
	char path[PATH_MAX], err[300];
	struct stat st;
	uint64_t off = 0, size, prev_txid = 0, prev_sum = 0;
	uint64_t records = 0;
	int rc = 0;

	seg_path(log, log->segs[idx].first, path, sizeof(path));
	if (fstat(fd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size;
	while (off < size) {
		ltx_header h;
		ltx_trailer t;
		uint64_t len = 0;
		bool torn;
		rc = check_record(fd, off, size, &len, &h, &t, &torn, err,
				  sizeof(err));
		if (rc == -EBADMSG && torn && log->readonly) {
			size = off;
			rc = 0;
			break;
		}
		if (rc == -EBADMSG && torn) {
			log_warn("db=%s: LTX log %s: torn tail at byte %" PRIu64
				 " (%s): cutting %" PRIu64 " bytes left by an "
				 "interrupted append", log->name, path, off, err,
				 size - off);
			rc = lib_io_ftruncate(fd, (off_t)off);
			if (rc == 0)
				rc = lib_io_fsync(fd);
			size = off;
			break;
		}
		if (rc < 0 && rc != -EBADMSG) {
			log_error("db=%s: LTX log %s: reading the record at byte "
				  "%" PRIu64 ": %s", log->name, path, off,
				  strerror(-rc));
			return rc;
		}
		if (rc < 0) {
			set_why(log, idx, off, "R1", "record %" PRIu64 ": %s",
				records + 1, err);
			break;
		}
		if (records == 0 && h.min_txid != log->segs[idx].first) {
			rc = -EBADMSG;
			set_why(log, idx, off, "R3", "its first record has TXID "
				"%016" PRIx64 " but the segment is named for %016"
				PRIx64, h.min_txid, log->segs[idx].first);
			break;
		}
		if (records > 0 && !ltx_header_is_snapshot(&h) &&
		    (h.min_txid != prev_txid + 1 ||
		     h.pre_apply_checksum != prev_sum)) {
			rc = -EBADMSG;
			set_why(log, idx, off, "R2", "record %" PRIu64 " starts "
				"at %016" PRIx64 "/%016" PRIx64 " but the one "
				"before ends at %016" PRIx64 "/%016" PRIx64,
				records + 1, h.min_txid - 1,
				h.pre_apply_checksum, prev_txid, prev_sum);
			break;
		}
		prev_txid = h.max_txid;
		prev_sum = t.post_apply_checksum;
		set_tail(log, &h, &t);
		records++;
		off += FS_LOG_RECORD_PREFIX + len;
	}
	if (rc == -EBADMSG) {
		log_error("db=%s: %s (in %s); refusing to serve this database",
			  log->name, log->why, log->dir);
		return rc;
	}
	log->end = size;
	return 0;
}

static int open_last(fs_log *log)
{
	char path[PATH_MAX];
	int rc;

	while (log->nsegs > 0) {
		seg_path(log, log->segs[log->nsegs - 1].first, path,
			 sizeof(path));
		log->fd = open(path, (log->readonly ? O_RDONLY : O_RDWR) |
					     O_CLOEXEC);
		if (log->fd < 0)
			return -errno;
		memset(&log->tail, 0, sizeof(log->tail));
		rc = recover_segment(log, log->nsegs - 1, log->fd);
		if (rc < 0)
			return rc;
		if (log->end > 0) {
			log->segs[log->nsegs - 1].bytes = log->end;
			log->active_ts = log->segs[log->nsegs - 1].ts;
			/* ltxfs verify checks every record itself. */
			log->trusted_from = log->readonly ? 0 :
					    log->segs[log->nsegs - 1].first;
			return 0;
		}
		/* Nothing valid in it: drop the segment, use the one before. */
		close(log->fd);
		log->fd = -1;
		if (!log->readonly && unlink(path) < 0)
			return -errno;
		log->nsegs--;
	}
	return 0;
}

int fs_log_open(const char *dir, const char *name, fs_log **out, char *why,
		size_t whylen)
{
	return fs_log_open_mode(dir, name, false, out, why, whylen);
}

int fs_log_open_readonly(const char *dir, const char *name, fs_log **out)
{
	return fs_log_open_mode(dir, name, true, out, NULL, 0);
}

static int fs_log_open_mode(const char *dir, const char *name, bool readonly,
			    fs_log **out, char *why, size_t whylen)
{
	fs_log *log = calloc(1, sizeof(*log));
	int rc;

	*out = NULL;
	if (!log)
		return -ENOMEM;
	log->fd = -1;
	log->readonly = readonly;
	atomic_init(&log->keep_ms, -1);
	atomic_init(&log->keep_bytes, 0);
	atomic_init(&log->hold_after, FS_LOG_NO_HOLD);
	atomic_init(&log->roll_bytes, FS_LOG_SEGMENT_BYTES);
	atomic_init(&log->roll_ms, 0);
	pthread_mutex_init(&log->mu, NULL);
	pthread_mutex_init(&log->prune_mu, NULL);
	log->dir = strdup(dir);
	log->name = strdup(name);
	if (!log->dir || !log->name) {
		rc = -ENOMEM;
		goto fail;
	}
	if (!readonly && mkdir(dir, 0755) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("db=%s: cannot create LTX log directory %s: %s", name,
			  dir, strerror(-rc));
		goto fail;
	}
	rc = list_segments(log);
	if (rc == 0)
		rc = open_last(log);
	if (rc < 0)
		goto fail;
	if (!readonly) {
		/* A prune interrupted while it wrote the next base. */
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s.new", dir, FS_LOGBASE_NAME);
		unlink(path);
	}
	*out = log;
	return 0;
fail:
	if (why && whylen)
		snprintf(why, whylen, "%s", log->why[0] ? log->why
					    : strerror(-rc));
	fs_log_close(log);
	return rc;
}

void fs_log_close(fs_log *log)
{
	if (!log)
		return;
	if (log->fd >= 0)
		close(log->fd);
	pthread_mutex_destroy(&log->mu);
	pthread_mutex_destroy(&log->prune_mu);
	free(log->segs);
	free(log->dir);
	free(log->name);
	free(log);
}

fs_log_tail fs_log_get_tail(fs_log *log)
{
	fs_log_tail t;

	pthread_mutex_lock(&log->mu);
	t = log->tail;
	pthread_mutex_unlock(&log->mu);
	return t;
}

struct append_ctx {
	int fd;
	uint64_t off;
};

static int append_write(void *ctx, const void *buf, size_t n)
{
	struct append_ctx *a = ctx;
	int rc = lib_io_pwrite_full(a->fd, buf, n, (off_t)a->off);

	if (rc == 0)
		a->off += n;
	return rc;
}

/* A failed append whose cut failed too left bytes past end: cut them
 * before anything is written after them (or the segment sealed with
 * them), so a segment never holds garbage between records. */
static int cut_leftover(fs_log *log, const ltx_header *hdr)
{
	int rc;

	if (!log->cut_pending || log->fd < 0)
		return 0;
	rc = lib_io_ftruncate(log->fd, (off_t)log->end);
	if (rc < 0) {
		log_error("db=%s: cannot append TXID %016" PRIx64 ": the bytes "
			  "of a failed append past byte %" PRIu64 " still "
			  "cannot be cut off: %s", log->name, hdr->max_txid,
			  log->end, strerror(-rc));
		return rc;
	}
	log->cut_pending = false;
	return 0;
}

/* Cuts a failed append back to start (the published end). */
static void cut_failed(fs_log *log, uint64_t start)
{
	int rc = lib_io_ftruncate(log->fd, (off_t)start);

	if (rc < 0) {
		log->cut_pending = true;
		log_error("db=%s: cutting a failed append at byte %" PRIu64
			  " failed too (%s); the next append cuts it first",
			  log->name, start, strerror(-rc));
	}
}

/* Whether the next record (hdr) starts a new segment. The appending
 * thread alone changes fd, end and active_ts. */
static bool need_segment(const fs_log *log, const ltx_header *hdr)
{
	int64_t roll_ms = atomic_load_explicit(&log->roll_ms,
					       memory_order_relaxed);

	if (log->fd < 0 || ltx_header_is_snapshot(hdr))
		return true;
	if (log->end == 0)
		return false; /* an empty segment (a failed append): reuse */
	if (log->end >= atomic_load_explicit(&log->roll_bytes,
					     memory_order_relaxed))
		return true;
	return roll_ms > 0 && log->active_ts != TS_UNKNOWN &&
	       hdr->timestamp > log->active_ts &&
	       (uint64_t)hdr->timestamp - (uint64_t)log->active_ts >=
		       (uint64_t)roll_ms;
}

static int start_segment(fs_log *log, const ltx_header *hdr)
{
	char path[PATH_MAX];
	uint64_t first = hdr->min_txid;
	int fd, rc;

	pthread_mutex_lock(&log->mu);
	if (log->nsegs > 0 && log->fd >= 0 && log->end == 0) {
		/* The last segment is empty (a failed append): replace it,
		 * so only the last segment is ever empty. */
		seg_path(log, log->segs[log->nsegs - 1].first, path,
			 sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT) {
			rc = -errno;
			pthread_mutex_unlock(&log->mu);
			log_error("db=%s: cannot remove the empty LTX segment "
				  "%s: %s", log->name, path, strerror(-rc));
			return rc;
		}
		close(log->fd);
		log->fd = -1;
		log->nsegs--;
	}
	if (log->nsegs > 0 && first <= log->segs[log->nsegs - 1].first) {
		/* Would truncate or sort before a segment that is kept. */
		uint64_t last = log->segs[log->nsegs - 1].first;
		pthread_mutex_unlock(&log->mu);
		log_error("db=%s: a record starting at TXID %016" PRIx64
			  " cannot start a segment after %016" PRIx64 ".seg "
			  "(a snapshot needs the log reset first)", log->name,
			  first, last);
		return -EEXIST;
	}
	seg_path(log, first, path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		pthread_mutex_unlock(&log->mu);
		log_error("db=%s: cannot create LTX segment %s: %s", log->name,
			  path, strerror(-rc));
		return rc;
	}
	if (log->nsegs > 0)
		log->segs[log->nsegs - 1].bytes = log->end; /* sealed */
	if (log->fd >= 0 && log->synced_end != log->end &&
	    (rc = lib_io_fdatasync(log->fd)) < 0) {
		/* A sealed segment is as durable as the active one was
		 * asked to be: its records may already be synced to. */
		pthread_mutex_unlock(&log->mu);
		close(fd);
		unlink(path);
		log_error("db=%s: syncing the LTX segment before %s: %s",
			  log->name, path, strerror(-rc));
		return rc;
	}
	rc = seg_push(log, first, 0, hdr->timestamp);
	if (rc < 0) {
		pthread_mutex_unlock(&log->mu);
		close(fd);
		unlink(path);
		return rc;
	}
	if (log->fd >= 0)
		close(log->fd);
	log->fd = fd;
	log->last_known = false; /* its record is in a sealed segment */
	log->end = 0;
	log->synced_end = 0;
	log->active_ts = hdr->timestamp;
	pthread_mutex_unlock(&log->mu);
	return lib_io_fsync_dir(log->dir);
}

/* mu held, before the tail moves to hdr's record (at start). */
static void note_last(fs_log *log, uint64_t start, const ltx_header *hdr)
{
	log->last_known = true;
	log->last_start = start;
	log->last_txid = hdr->max_txid;
	log->last_prev = log->tail;
}

int fs_log_append(fs_log *log, const ltx_header *hdr, int zstd_level,
		  fs_log_fill_fn fill, void *ctx, ltx_trailer *out_trailer)
{
	return fs_log_append_cctx(log, hdr, zstd_level, NULL, fill, ctx,
				  out_trailer);
}

int fs_log_append_cctx(fs_log *log, const ltx_header *hdr, int zstd_level,
		       void *zstd_cctx, fs_log_fill_fn fill, void *ctx,
		       ltx_trailer *out_trailer)
{
	struct append_ctx a;
	ltx_encoder *enc = NULL;
	ltx_trailer t;
	ltx_err err = {0};
	uint8_t pfx[FS_LOG_RECORD_PREFIX] = {0};
	uint64_t start, len, post = 0;
	int rc;

	/* Only the appending thread changes fd/end, so they are read without
	 * the lock here and published under it at the end. */
	rc = cut_leftover(log, hdr);
	if (rc < 0)
		return rc;
	if (need_segment(log, hdr)) {
		rc = start_segment(log, hdr);
		if (rc < 0)
			return rc;
	}
	start = log->end;
	a.fd = log->fd;
	a.off = start + FS_LOG_RECORD_PREFIX;
	rc = lib_io_pwrite_full(log->fd, pfx, sizeof(pfx), (off_t)start);
	if (rc < 0) {
		snprintf(err.msg, sizeof(err.msg), "writing: %s",
			 strerror(-rc));
		goto fail;
	}
	rc = ltx_encoder_new_cctx(hdr, zstd_level, append_write, &a, zstd_cctx,
				  &enc, &err);
	if (rc == 0)
		rc = fill(ctx, enc, &post, &err);
	if (rc == 0)
		rc = ltx_encoder_finish(enc, post, &t, &err);
	ltx_encoder_free(enc);
	enc = NULL;
	if (rc < 0)
		goto fail;
	len = a.off - start - FS_LOG_RECORD_PREFIX;
	if (len > UINT32_MAX) {
		rc = -EFBIG;
		snprintf(err.msg, sizeof(err.msg), "record of %" PRIu64
			 " bytes is over the 4 GiB record limit", len);
		goto fail;
	}
	put_be32(pfx, (uint32_t)len);
	rc = lib_io_pwrite_full(log->fd, pfx, sizeof(pfx), (off_t)start);
	if (rc < 0) {
		snprintf(err.msg, sizeof(err.msg), "writing length: %s",
			 strerror(-rc));
		goto fail;
	}
	pthread_mutex_lock(&log->mu);
	note_last(log, start, hdr);
	log->end = a.off;
	log->segs[log->nsegs - 1].bytes = log->end;
	set_tail(log, hdr, &t);
	pthread_mutex_unlock(&log->mu);
	if (out_trailer)
		*out_trailer = t;
	return 0;
fail:
	/* A full disk is the caller's to report (once, not at each retry:
	 * fs/db_capture.c, "capture blocked: disk full"). */
	if (rc == -ENOSPC || rc == -EDQUOT)
		log_debug("db=%s: appending TXID %016" PRIx64 " to the LTX "
			  "log: %s", log->name, hdr->max_txid, err.msg);
	else
		log_error("db=%s: appending TXID %016" PRIx64 " to the LTX "
			  "log: %s", log->name, hdr->max_txid, err.msg);
	/* Cut the partial record so nothing half-written remains. */
	cut_failed(log, start);
	return rc;
}

int fs_log_append_raw(fs_log *log, int fd, uint64_t off, uint64_t len,
		      const ltx_header *hdr, const ltx_trailer *tr)
{
	uint8_t pfx[FS_LOG_RECORD_PREFIX] = {0};
	uint64_t start, done = 0;
	fs_log_tail tail = fs_log_get_tail(log);
	int rc;

	if (len > UINT32_MAX || len < LTX_HEADER_SIZE + LTX_TRAILER_SIZE)
		return -EFBIG;
	if (!ltx_header_is_snapshot(hdr) &&
	    (hdr->min_txid != tail.pos.txid + 1 ||
	     hdr->pre_apply_checksum != tail.pos.checksum)) {
		log_error("db=%s: record %016" PRIx64 "-%016" PRIx64 " does "
			  "not follow the log's last position %016" PRIx64
			  "/%016" PRIx64, log->name, hdr->min_txid,
			  hdr->max_txid, tail.pos.txid, tail.pos.checksum);
		return -EPROTO;
	}
	rc = cut_leftover(log, hdr);
	if (rc < 0)
		return rc;
	if (need_segment(log, hdr)) {
		rc = start_segment(log, hdr);
		if (rc < 0)
			return rc;
	}
	start = log->end;
	rc = lib_io_pwrite_full(log->fd, pfx, sizeof(pfx), (off_t)start);
	while (rc == 0 && done < len) {
		loff_t in = (loff_t)(off + done);
		loff_t out = (loff_t)(start + FS_LOG_RECORD_PREFIX + done);
		ssize_t n = copy_file_range(fd, &in, log->fd, &out,
					    (size_t)(len - done), 0);
		if (n < 0 && (errno == EXDEV || errno == ENOSYS ||
			      errno == EINVAL || errno == EOPNOTSUPP)) {
			uint8_t buf[65536];
			size_t want = len - done < sizeof(buf) ?
					      (size_t)(len - done) : sizeof(buf);
			rc = lib_io_pread_full(fd, buf, want, (off_t)(off + done),
					       NULL);
			if (rc == 0)
				rc = lib_io_pwrite_full(
					log->fd, buf, want,
					(off_t)(start + FS_LOG_RECORD_PREFIX +
						done));
			done += want;
			continue;
		}
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		done += (uint64_t)n;
	}
	if (rc == 0) {
		put_be32(pfx, (uint32_t)len);
		rc = lib_io_pwrite_full(log->fd, pfx, sizeof(pfx),
					(off_t)start);
	}
	if (rc < 0) {
		log_error("db=%s: appending TXID %016" PRIx64 " to the LTX "
			  "log: %s", log->name, hdr->max_txid, strerror(-rc));
		cut_failed(log, start);
		return rc;
	}
	pthread_mutex_lock(&log->mu);
	note_last(log, start, hdr);
	log->end = start + FS_LOG_RECORD_PREFIX + len;
	log->segs[log->nsegs - 1].bytes = log->end;
	set_tail(log, hdr, tr);
	pthread_mutex_unlock(&log->mu);
	return 0;
}

int fs_log_unappend(fs_log *log, uint64_t txid)
{
	uint64_t start;
	int rc;

	pthread_mutex_lock(&log->prune_mu);
	pthread_mutex_lock(&log->mu);
	if (!log->last_known || log->last_txid != txid || log->fd < 0 ||
	    log->readonly) {
		pthread_mutex_unlock(&log->mu);
		pthread_mutex_unlock(&log->prune_mu);
		return -ESTALE;
	}
	/* Readers stop at the new end at once; the appender (the caller)
	 * is the only one that writes past it. */
	start = log->last_start;
	log->end = start;
	log->segs[log->nsegs - 1].bytes = start;
	if (log->synced_end > start)
		log->synced_end = start;
	log->tail = log->last_prev;
	log->last_known = false;
	log->cut_gen++;
	log->cut_txid = txid;
	pthread_mutex_unlock(&log->mu);
	pthread_mutex_unlock(&log->prune_mu);
	rc = lib_io_ftruncate(log->fd, (off_t)start);
	if (rc == 0)
		rc = lib_io_fdatasync(log->fd);
	if (rc < 0) {
		log->cut_pending = true;
		log_error("db=%s: taking back TXID %016" PRIx64 ": cutting "
			  "the LTX log at byte %" PRIu64 " failed (%s); the "
			  "record is no longer served, and the next append "
			  "cuts it first", log->name, txid, start,
			  strerror(-rc));
	}
	return rc;
}

int fs_log_sync(fs_log *log)
{
	uint64_t end;
	int fd, rc;

	pthread_mutex_lock(&log->mu);
	fd = log->fd;
	end = log->end;
	rc = fd < 0 || end == log->synced_end;
	pthread_mutex_unlock(&log->mu);
	if (rc)
		return 0;
	rc = lib_io_fdatasync(fd);
	if (rc == 0) {
		pthread_mutex_lock(&log->mu);
		if (log->fd == fd)
			log->synced_end = end;
		pthread_mutex_unlock(&log->mu);
	}
	return rc;
}

int fs_log_reset(fs_log *log)
{
	char path[PATH_MAX];
	int rc = 0;

	pthread_mutex_lock(&log->prune_mu);
	pthread_mutex_lock(&log->mu);
	if (log->fd >= 0)
		close(log->fd);
	log->fd = -1;
	/* The base first: a crash in between leaves segments without one,
	 * which is what a log that starts later is anyway. */
	snprintf(path, sizeof(path), "%s/%s", log->dir, FS_LOGBASE_NAME);
	if (unlink(path) < 0 && errno != ENOENT)
		rc = -errno;
	for (size_t i = 0; i < log->nsegs; i++) {
		seg_path(log, log->segs[i].first, path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT)
			rc = -errno;
	}
	log->nsegs = 0;
	log->end = 0;
	log->cut_pending = false;
	log->active_ts = TS_UNKNOWN;
	log->trusted_from = 0;
	memset(&log->tail, 0, sizeof(log->tail));
	log->last_known = false;
	log->base_warned = false;
	pthread_mutex_unlock(&log->mu);
	pthread_mutex_unlock(&log->prune_mu);
	if (rc == 0)
		rc = lib_io_fsync_dir(log->dir);
	return rc;
}

int fs_log_iter_open(fs_log *log, uint64_t after_txid, fs_log_iter **out)
{
	fs_log_iter *it = calloc(1, sizeof(*it));

	*out = NULL;
	if (!it)
		return -ENOMEM;
	it->log = log;
	it->after = after_txid;
	it->fd = -1;
	*out = it;
	return 0;
}

void fs_log_iter_headers_only(fs_log_iter *it)
{
	it->headers_only = true;
}

void fs_log_iter_free(fs_log_iter *it)
{
	if (!it)
		return;
	if (it->fd >= 0)
		close(it->fd);
	free(it);
}

/* mu held. */
static int iter_open_seg(fs_log_iter *it, size_t idx)
{
	char path[PATH_MAX];

	if (it->fd >= 0)
		close(it->fd);
	seg_path(it->log, it->log->segs[idx].first, path, sizeof(path));
	it->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (it->fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	it->seg_first = it->log->segs[idx].first;
	it->off = 0;
	return 0;
}

/* A record of a segment older than the one verified at open, read whole
 * for the first time by this iterator (without the log's lock: the fd is
 * the iterator's): 1, or -EBADMSG logged with segment, offset and rule. */
static int verify_old(fs_log_iter *it, uint64_t off)
{
	fs_log *log = it->log;
	char err[300];
	ltx_header h;
	ltx_trailer t;
	uint64_t len;
	struct stat st;
	bool torn;
	int rc;

	if (fstat(it->fd, &st) < 0)
		return -errno;
	rc = check_record(it->fd, off, (uint64_t)st.st_size, &len, &h, &t,
			  &torn, err, sizeof(err));
	if (rc == -EBADMSG)
		log_error("db=%s: LTX log segment %016" PRIx64 ".seg is corrupt "
			  "at byte %" PRIu64 " (rule R1): %s (in %s; found "
			  "reading it, ltxfs verify reports it)", log->name,
			  it->seg_first, off, err, log->dir);
	return rc < 0 ? rc : 1;
}

int fs_log_iter_next(fs_log_iter *it, int *out_fd, uint64_t *out_off,
		     uint64_t *out_len, ltx_header *out_hdr)
{
	fs_log *log = it->log;
	uint8_t buf[FS_LOG_RECORD_PREFIX + LTX_HEADER_SIZE];
	uint64_t rec_off = 0;
	bool unverified = false;
	int rc;

	pthread_mutex_lock(&log->mu);
	if (!it->started) {
		size_t idx = 0;
		if (log->nsegs == 0 || log->segs[0].first > it->after + 1) {
			bool empty = log->nsegs == 0;
			pthread_mutex_unlock(&log->mu);
			return empty && it->after == log->tail.pos.txid ? 0
									: -ENOENT;
		}
		for (size_t i = 0; i < log->nsegs; i++)
			if (log->segs[i].first <= it->after + 1)
				idx = i;
		rc = iter_open_seg(it, idx);
		if (rc < 0) {
			pthread_mutex_unlock(&log->mu);
			return rc;
		}
		it->started = true;
		it->cut_gen = log->cut_gen;
	}
	if (it->cut_gen != log->cut_gen) {
		/* A record was taken back: stale if this iterator returned
		 * it (or may have: more than one taken back since). */
		if (log->cut_gen - it->cut_gen > 1 ||
		    it->after >= log->cut_txid) {
			pthread_mutex_unlock(&log->mu);
			return -ESTALE;
		}
		it->cut_gen = log->cut_gen;
	}
	for (;;) {
		/* The open segment may have been pruned since (its fd still
		 * reads); then it is not the last one. */
		ssize_t cur = seg_index(log, it->seg_first);
		bool last = cur >= 0 && (size_t)cur + 1 == log->nsegs;
		uint64_t end;
		struct stat st;
		if (last) {
			end = log->end;
		} else {
			if (fstat(it->fd, &st) < 0) {
				rc = -errno;
				break;
			}
			end = (uint64_t)st.st_size;
		}
		if (it->off >= end) {
			size_t next;
			if (last) {
				rc = 0;
				break;
			}
			next = seg_after(log, it->seg_first);
			if (next >= log->nsegs ||
			    log->segs[next].first > it->after + 1) {
				/* The records that follow were pruned (or the
				 * log was reset). */
				rc = -ENOENT;
				break;
			}
			rc = iter_open_seg(it, next);
			if (rc < 0)
				break;
			continue;
		}
		rc = lib_io_pread_full(it->fd, buf, sizeof(buf),
				       (off_t)it->off, NULL);
		if (rc < 0)
			break;
		{
			uint64_t len = get_be32(buf);
			ltx_header h;
			ltx_err e;
			if (len < LTX_HEADER_SIZE ||
			    ltx_header_decode(buf + FS_LOG_RECORD_PREFIX, &h,
					      &e) < 0) {
				log_error("db=%s: LTX log segment %016" PRIx64
					  " is corrupt at byte %" PRIu64,
					  log->name, it->seg_first, it->off);
				rc = -EBADMSG;
				break;
			}
			*out_fd = it->fd;
			*out_off = it->off + FS_LOG_RECORD_PREFIX;
			*out_len = len;
			rec_off = it->off;
			it->off += FS_LOG_RECORD_PREFIX + len;
			if (h.max_txid <= it->after)
				continue;
			if (out_hdr)
				*out_hdr = h;
			it->after = h.max_txid;
			unverified = h.min_txid < log->trusted_from;
			rc = 1;
			break;
		}
	}
	pthread_mutex_unlock(&log->mu);
	if (rc == 1 && unverified && !it->headers_only)
		rc = verify_old(it, rec_off);
	return rc;
}

void fs_log_set_retention(fs_log *log, int64_t max_age_ms, uint64_t max_bytes)
{
	uint64_t roll = FS_LOG_SEGMENT_BYTES;

	if (max_bytes > 0 && max_bytes / 4 < roll)
		roll = max_bytes / 4 < FS_LOG_SEGMENT_MIN_BYTES
			       ? FS_LOG_SEGMENT_MIN_BYTES : max_bytes / 4;
	atomic_store(&log->keep_ms, max_age_ms < 0 ? -1 : max_age_ms);
	atomic_store(&log->keep_bytes, max_bytes);
	atomic_store(&log->roll_bytes, roll);
	atomic_store(&log->roll_ms, max_age_ms < 0 ? 0 :
			    max_age_ms < FS_LOG_SEGMENT_MIN_MS ?
			    FS_LOG_SEGMENT_MIN_MS : max_age_ms);
}

void fs_log_set_hold(fs_log *log, uint64_t txid)
{
	atomic_store(&log->hold_after, txid);
}

/* mu held: bytes in all segments. */
static uint64_t total_bytes(const fs_log *log)
{
	uint64_t t = 0;

	for (size_t i = 0; i < log->nsegs; i++)
		t += i + 1 == log->nsegs ? log->end : log->segs[i].bytes;
	return t;
}

/* How many of the oldest segments the policy removes now (mu held);
 * r gets their count by age, bytes and first TXID, and the log's size
 * after. */
static size_t prune_count(const fs_log *log, int64_t now_ms,
			  fs_log_prune_result *r)
{
	int64_t keep_ms = atomic_load(&log->keep_ms);
	uint64_t keep_bytes = atomic_load(&log->keep_bytes);
	uint64_t hold = atomic_load(&log->hold_after);
	uint64_t total = total_bytes(log);
	size_t keep_from, drop = 0;

	/* The segment holding the last record stays: it proves the tail.
	 * Only the last segment can be empty (a failed append); then the
	 * one before holds it. */
	keep_from = log->nsegs;
	if (keep_from > 0)
		keep_from--;
	if (keep_from > 0 && log->end == 0)
		keep_from--;
	while (drop < keep_from) {
		/* Every record of segment i is at least as old as the first
		 * record of segment i+1. */
		int64_t ts = log->segs[drop + 1].ts;
		bool old = keep_ms >= 0 && ts != TS_UNKNOWN && now_ms >= ts &&
			   (uint64_t)now_ms - (uint64_t)ts >= (uint64_t)keep_ms;
		/* Segment i holds TXIDs up to segment i+1's first - 1: a
		 * hold keeps it from age (not from the byte cap). */
		if (hold != FS_LOG_NO_HOLD &&
		    log->segs[drop + 1].first > hold + 1)
			old = false;
		bool big = keep_bytes > 0 && total > keep_bytes;
		if (!old && !big)
			break;
		if (drop == 0)
			r->from_txid = log->segs[0].first;
		r->bytes += log->segs[drop].bytes;
		total -= log->segs[drop].bytes;
		if (old)
			r->by_age++;
		drop++;
	}
	r->log_bytes = total;
	return drop;
}

/* Replays the records of segment `first` (sealed: nothing appends to
 * it) onto b, those after b's TXID and before TXID limit (0: all).
 * 1 when limit is reached; -EBADMSG with why, and *out_bad its TXID, for
 * a record that does not replay (or is corrupt); other -errno. */
static int fold_segment(fs_log *log, uint64_t first, fs_logbase *b,
			uint64_t limit, uint64_t *out_bad, char *why,
			size_t whylen)
{
	char path[PATH_MAX];
	uint8_t buf[FS_LOG_RECORD_PREFIX + LTX_HEADER_SIZE];
	ltx_decoder *dec = NULL;
	struct stat st;
	uint64_t off = 0;
	int fd, rc = 0;

	seg_path(log, first, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(why, whylen, "reading segment %016" PRIx64 ".seg: %s",
			 first, strerror(-rc));
		goto out;
	}
	while (rc == 0 && off < (uint64_t)st.st_size) {
		fs_range_reader rr;
		uint64_t len;
		ltx_header h;
		ltx_err e;
		rc = lib_io_pread_full(fd, buf, sizeof(buf), (off_t)off, NULL);
		len = rc == 0 ? get_be32(buf) : 0;
		if (rc == -ENODATA || (rc == 0 &&
		    (len < LTX_HEADER_SIZE ||
		     off + FS_LOG_RECORD_PREFIX + len > (uint64_t)st.st_size ||
		     ltx_header_decode(buf + FS_LOG_RECORD_PREFIX, &h, &e) < 0))) {
			*out_bad = first;
			snprintf(why, whylen, "segment %016" PRIx64 ".seg: no "
				 "valid record at byte %" PRIu64, first, off);
			rc = -EBADMSG;
		}
		if (rc < 0) {
			if (rc != -EBADMSG)
				snprintf(why, whylen, "reading segment %016"
					 PRIx64 ".seg: %s", first,
					 strerror(-rc));
			break;
		}
		rr.fd = fd;
		rr.off = off + FS_LOG_RECORD_PREFIX;
		rr.end = rr.off + len;
		off = rr.end;
		if (h.max_txid <= fs_logbase_get_info(b)->txid)
			continue; /* replayed by a prune a crash interrupted */
		if (limit != 0 && h.max_txid >= limit)
			rc = 1;
		else if (dec)
			rc = ltx_decoder_reset(dec, fs_range_read, &rr, NULL);
		else
			rc = ltx_decoder_new(fs_range_read, &rr, log->name,
					     &dec);
		if (rc == 0)
			rc = fs_logbase_apply(b, dec, NULL, NULL, why, whylen);
		if (rc == -EBADMSG)
			*out_bad = h.max_txid;
	}
out:
	ltx_decoder_free(dec);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Whether the base at path can follow a prune that removes segments
 * from `first` on: it must be intact, not stopped, and at TXID
 * first - 1 or later. Says why not, once per log (prune_mu held). */
static bool base_follows(fs_log *log, fs_logbase *b, const char *path,
			 uint64_t first)
{
	char why[FS_LOGBASE_WHY + 64] = "";
	const fs_logbase_info *in = fs_logbase_get_info(b);
	int rc = fs_logbase_load(b, path, why, sizeof(why));

	if (rc == 0 && in->stopped == 0 && in->txid + 1 >= first)
		return true;
	if (rc == 0 && in->stopped != 0)
		return false; /* said when it stopped */
	if (rc == 0)
		snprintf(why, sizeof(why), "is at TXID %016" PRIx64, in->txid);
	else if (rc == -ENOENT)
		snprintf(why, sizeof(why), "is missing");
	if (!log->base_warned)
		log_warn("db=%s: retention: the LTX log starts at TXID %016"
			 PRIx64 " and its base (%s) %s; records are removed by "
			 "the policy all the same, and `ltxfs verify` cannot "
			 "replay this log in full (it says \"not proved\")",
			 log->name, first, path, why);
	log->base_warned = true;
	return false;
}

/* One try at bringing the base to the end of segments firsts[0..n):
 * replays their records onto it (onto nothing when the first is the
 * log's first snapshot, segment 1), in a new file that replaces the base
 * once synced. A record that does not replay stops the base before it
 * (limit is then that TXID: the caller tries again with it). */
static int fold_try(fs_log *log, const uint64_t *firsts, size_t n,
		    uint64_t limit, uint64_t *out_bad, char *why, size_t whylen)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	fs_logbase *b = NULL;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", log->dir, FS_LOGBASE_NAME);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		rc = -errno;
	if (rc == 0)
		rc = fs_logbase_new(fd, &b);
	if (rc < 0) {
		snprintf(why, whylen, "creating %s.new: %s", FS_LOGBASE_NAME,
			 strerror(-rc));
		goto out;
	}
	if (firsts[0] != 1 && !base_follows(log, b, path, firsts[0])) {
		rc = -ENOENT; /* nothing to do */
		goto out;
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = fold_segment(log, firsts[i], b, limit, out_bad, why,
				  whylen);
	if (rc < 0)
		goto out;
	if (fs_logbase_get_info(b)->txid == 0) {
		snprintf(why, whylen, "%s", "its first record, a snapshot, "
			 "does not replay");
		rc = -EBADMSG;
		goto out;
	}
	if (limit != 0)
		fs_logbase_stop(b, limit, why);
	rc = fs_logbase_write(b);
	if (rc == 0)
		rc = lib_io_rename(tmp, path);
	if (rc == 0)
		rc = lib_io_fsync_dir(log->dir);
	if (rc < 0)
		snprintf(why, whylen, "writing the new base: %s",
			 strerror(-rc));
out:
	fs_logbase_free(b);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

/* Before segments firsts[0..n) are removed: replays their records onto
 * the log's base (fs/logbase.h), so the log can still be replayed in full
 * from it. Failures are logged here; the segments are removed anyway (the
 * policy bounds the disk), which leaves the base behind the log: `ltxfs
 * verify` then says what it could not prove. prune_mu held. */
static void fold(fs_log *log, const uint64_t *firsts, size_t n)
{
	char why[FS_LOGBASE_WHY + 64] = "", why2[FS_LOGBASE_WHY + 64] = "";
	uint64_t bad = 0, bad2 = 0;
	int rc = fold_try(log, firsts, n, 0, &bad, why, sizeof(why));

	if (rc == -EBADMSG && bad != 0) {
		/* Again, up to the record before the one that fails. */
		log_error("db=%s: retention: %s; the log's base stops at the "
			  "TXID before it and `ltxfs verify` reports it; the "
			  "record is removed by the policy all the same",
			  log->name, why);
		snprintf(why2, sizeof(why2), "%s", why);
		rc = fold_try(log, firsts, n, bad, &bad2, why2, sizeof(why2));
		if (rc < 0)
			snprintf(why, sizeof(why), "%s", why2);
	}
	if (rc < 0 && rc != -ENOENT)
		log_error("db=%s: retention: the LTX log's base cannot follow "
			  "the records it removes (%s); `ltxfs verify` cannot "
			  "replay this log in full any more (it says \"not "
			  "proved\")", log->name, why);
}

int fs_log_prune(fs_log *log, int64_t now_ms, fs_log_prune_result *out)
{
	fs_log_prune_result r = {0};
	char path[PATH_MAX];
	uint64_t *firsts = NULL, bytes = 0;
	size_t drop, removed = 0;
	int rc = 0;

	if (out)
		*out = r;
	if (log->readonly)
		return 0;
	pthread_mutex_lock(&log->prune_mu);
	pthread_mutex_lock(&log->mu);
	drop = prune_count(log, now_ms, &r);
	firsts = drop ? malloc(drop * sizeof(*firsts)) : NULL;
	for (size_t i = 0; firsts && i < drop; i++)
		firsts[i] = log->segs[i].first;
	pthread_mutex_unlock(&log->mu);
	if (drop > 0 && !firsts) {
		pthread_mutex_unlock(&log->prune_mu);
		return -ENOMEM;
	}
	/* Outside mu: appends and streams go on meanwhile. Only prune and
	 * reset (both under prune_mu) remove segments. */
	if (drop > 0)
		fold(log, firsts, drop);
	pthread_mutex_lock(&log->mu);
	for (; removed < drop; removed++) {
		/* Oldest first: a crash leaves a log that starts later. */
		seg_path(log, log->segs[removed].first, path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT) {
			rc = -errno;
			log_error("db=%s: retention: cannot remove LTX segment "
				  "%s: %s", log->name, path, strerror(-rc));
			break;
		}
		bytes += log->segs[removed].bytes;
	}
	/* A failed unlink: what was not removed stays counted (segments
	 * old enough come first). */
	r.log_bytes += r.bytes - bytes;
	r.bytes = bytes;
	r.segments = removed;
	if (r.by_age > removed)
		r.by_age = removed;
	if (removed == 0)
		r.from_txid = 0;
	if (removed > 0) {
		memmove(log->segs, log->segs + removed,
			(log->nsegs - removed) * sizeof(fs_seg));
		log->nsegs -= removed;
		log->pruned_segments += r.segments;
		log->pruned_bytes += r.bytes;
	}
	r.first_txid = log->nsegs > 0 ? log->segs[0].first : 0;
	pthread_mutex_unlock(&log->mu);
	pthread_mutex_unlock(&log->prune_mu);
	free(firsts);
	if (removed > 0) {
		int src = lib_io_fsync_dir(log->dir);
		log_info("db=%s: retention removed %zu LTX segment%s (%" PRIu64
			 " bytes, %zu by age); the log now starts at TXID %016"
			 PRIx64 " and holds %" PRIu64 " bytes", log->name,
			 r.segments, r.segments == 1 ? "" : "s", r.bytes,
			 r.by_age, r.first_txid, r.log_bytes);
		if (rc == 0)
			rc = src;
	}
	if (out)
		*out = r;
	return rc;
}

void fs_log_get_stats(fs_log *log, fs_log_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&log->mu);
	out->bytes = total_bytes(log);
	out->segments = log->nsegs;
	if (log->nsegs > 0 && (log->nsegs > 1 || log->end > 0))
		out->first_txid = log->segs[0].first;
	out->pruned_segments = log->pruned_segments;
	out->pruned_bytes = log->pruned_bytes;
	pthread_mutex_unlock(&log->mu);
}

/* Removes a directory of plain files (an older damaged log). */
static int remove_flat_dir(const char *path)
{
	struct dirent *de;
	DIR *d = opendir(path);
	int rc = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && rc == 0)
			rc = -errno;
	}
	closedir(d);
	if (rmdir(path) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

int fs_log_set_aside(const char *dir, const char *as, char *out,
		     size_t outlen)
{
	char parent[PATH_MAX], path[PATH_MAX + 256], to[PATH_MAX + 32];
	char stamp[32];
	const char *base;
	struct dirent *de;
	struct tm tm;
	time_t now = time(NULL);
	size_t blen;
	DIR *d;
	int rc;

	snprintf(parent, sizeof(parent), "%s", as);
	base = strrchr(parent, '/');
	if (!base || base == parent)
		return -EINVAL;
	parent[base - parent] = '\0';
	base = as + (base - parent) + 1;
	blen = strlen(base);
	d = opendir(parent);
	if (!d)
		return -errno;
	/* Only the latest damaged copy is kept. */
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, base, blen) != 0 ||
		    strncmp(de->d_name + blen, ".damaged-", 9) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", parent, de->d_name);
		rc = remove_flat_dir(path);
		if (rc < 0)
			log_warn("cannot remove the older damaged LTX log %s: "
				 "%s", path, strerror(-rc));
	}
	closedir(d);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(to, sizeof(to), "%s.damaged-%s", as, stamp);
	if (rename(dir, to) < 0)
		return -errno; /* the caller logs it (rate-limited) */
	if (out && outlen)
		snprintf(out, outlen, "%s", to);
	return lib_io_fsync_dir(parent);
}

int fs_log_check_all(const char *dir, const char *name, fs_log_check *out)
{
	fs_log *log = calloc(1, sizeof(*log));
	uint64_t prev_txid = 0, prev_sum = 0;
	bool prev_known = false;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!log)
		return -ENOMEM;
	log->fd = -1;
	log->readonly = true;
	pthread_mutex_init(&log->mu, NULL);
	pthread_mutex_init(&log->prune_mu, NULL);
	log->dir = strdup(dir);
	log->name = strdup(name);
	rc = log->dir && log->name ? list_segments(log) : -ENOMEM;
	for (size_t i = 0; rc == 0 && i < log->nsegs; i++) {
		char path[PATH_MAX], err[300];
		uint64_t off = 0, size, n = 0;
		struct stat st;
		int fd;
		if (log->segs[i].first > out->max_txid)
			out->max_txid = log->segs[i].first;
		seg_path(log, log->segs[i].first, path, sizeof(path));
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = -errno;
			if (fd >= 0)
				close(fd);
			break;
		}
		size = (uint64_t)st.st_size;
		while (off < size) {
			ltx_header h;
			ltx_trailer t;
			uint64_t len = 0;
			bool torn, bad = false;
			rc = check_record(fd, off, size, &len, &h, &t, &torn, err,
					  sizeof(err));
			if (rc == -EBADMSG && torn && i + 1 == log->nsegs) {
				rc = 0; /* an unfinished append: opening cuts it */
				break;
			}
			if (rc < 0 && rc != -EBADMSG)
				break;
			if (rc == -EBADMSG) {
				bad = true;
				if (!log->why[0])
					set_why(log, i, off, "R1", "record %" PRIu64
						": %s", n + 1, err);
			} else if (n == 0 && h.min_txid != log->segs[i].first) {
				bad = true;
				if (!log->why[0])
					set_why(log, i, off, "R3", "its first "
						"record has TXID %016" PRIx64,
						h.min_txid);
			} else if (prev_known && !ltx_header_is_snapshot(&h) &&
				   (h.min_txid != prev_txid + 1 ||
				    h.pre_apply_checksum != prev_sum)) {
				bad = true;
				if (!log->why[0])
					set_why(log, i, off, "R2", "record %"
						PRIu64 " does not follow %016"
						PRIx64 "/%016" PRIx64, n + 1,
						prev_txid, prev_sum);
			}
			rc = 0;
			n++;
			if (bad && torn)
				break; /* no record boundary after it */
			off += FS_LOG_RECORD_PREFIX + len;
			prev_known = !bad;
			if (bad)
				continue;
			out->records++;
			prev_txid = h.max_txid;
			prev_sum = t.post_apply_checksum;
			out->last.txid = h.max_txid;
			out->last.checksum = t.post_apply_checksum;
			if (h.max_txid > out->max_txid)
				out->max_txid = h.max_txid;
		}
		close(fd);
	}
	out->damaged = log->why[0] != '\0';
	snprintf(out->why, sizeof(out->why), "%s", log->why);
	fs_log_close(log);
	return rc;
}
