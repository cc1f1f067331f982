/* The LTX log: layout and rules in log.h. */
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/io.h"
#include "lib/log.h"

struct fs_log {
	char *dir;
	char *name;
	pthread_mutex_t mu;    /* guards everything below */
	uint64_t *segs;        /* first TXID of each segment, ascending */
	size_t nsegs, cap;
	int fd;                /* last segment, -1 when none */
	uint64_t end;          /* published end of the last segment */
	bool readonly;         /* opened by a reader (ltxfs verify) */
	fs_log_tail tail;
};

struct fs_log_iter {
	fs_log *log;
	uint64_t after;
	int fd;
	size_t seg;            /* index into log->segs */
	uint64_t off;
	bool started;
};

static int fs_log_open_mode(const char *dir, const char *name, bool readonly,
			    fs_log **out);

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

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int seg_push(fs_log *log, uint64_t first)
{
	if (log->nsegs == log->cap) {
		size_t cap = log->cap ? log->cap * 2 : 16;
		uint64_t *p = realloc(log->segs, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		log->segs = p;
		log->cap = cap;
	}
	log->segs[log->nsegs++] = first;
	return 0;
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
		rc = seg_push(log, first);
		if (rc < 0)
			break;
	}
	closedir(d);
	if (log->nsegs > 1)
		qsort(log->segs, log->nsegs, sizeof(uint64_t), cmp_u64);
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

/* Walks and verifies the whole segment, cutting a torn tail. */
static int recover_segment(fs_log *log, size_t idx, int fd)
{
	char path[PATH_MAX], err[300];
	struct stat st;
	uint64_t off = 0, size, prev_txid = 0, prev_sum = 0;
	uint64_t records = 0;
	int rc = 0;

	seg_path(log, log->segs[idx], path, sizeof(path));
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
		if (rc < 0) {
			log_error("db=%s: LTX log %s is corrupt at byte %" PRIu64
				  " (rule R1, record %" PRIu64 "): %s; refusing "
				  "to serve this database", log->name, path, off,
				  records + 1, rc == -EBADMSG ? err :
				  strerror(-rc));
			return rc == -EBADMSG ? -EBADMSG : rc;
		}
		if (records == 0 && h.min_txid != log->segs[idx]) {
			log_error("db=%s: LTX log %s: first record has TXID "
				  "%016" PRIx64 " but the segment is named for "
				  "%016" PRIx64 " (rule R3)", log->name, path,
				  h.min_txid, log->segs[idx]);
			return -EBADMSG;
		}
		if (records > 0 && !ltx_header_is_snapshot(&h) &&
		    (h.min_txid != prev_txid + 1 ||
		     h.pre_apply_checksum != prev_sum)) {
			log_error("db=%s: LTX log %s: record at byte %" PRIu64
				  " starts at %016" PRIx64 "/%016" PRIx64
				  " but the previous one ends at %016" PRIx64
				  "/%016" PRIx64 " (rule R2)", log->name, path,
				  off, h.min_txid - 1, h.pre_apply_checksum,
				  prev_txid, prev_sum);
			return -EBADMSG;
		}
		prev_txid = h.max_txid;
		prev_sum = t.post_apply_checksum;
		set_tail(log, &h, &t);
		records++;
		off += FS_LOG_RECORD_PREFIX + len;
	}
	log->end = size;
	return 0;
}

static int open_last(fs_log *log)
{
	char path[PATH_MAX];
	int rc;

	while (log->nsegs > 0) {
		seg_path(log, log->segs[log->nsegs - 1], path, sizeof(path));
		log->fd = open(path, (log->readonly ? O_RDONLY : O_RDWR) |
					     O_CLOEXEC);
		if (log->fd < 0)
			return -errno;
		memset(&log->tail, 0, sizeof(log->tail));
		rc = recover_segment(log, log->nsegs - 1, log->fd);
		if (rc < 0)
			return rc;
		if (log->end > 0)
			return 0;
		/* Nothing valid in it: drop the segment, use the one before. */
		close(log->fd);
		log->fd = -1;
		if (!log->readonly && unlink(path) < 0)
			return -errno;
		log->nsegs--;
	}
	return 0;
}

int fs_log_open(const char *dir, const char *name, fs_log **out)
{
	return fs_log_open_mode(dir, name, false, out);
}

int fs_log_open_readonly(const char *dir, const char *name, fs_log **out)
{
	return fs_log_open_mode(dir, name, true, out);
}

static int fs_log_open_mode(const char *dir, const char *name, bool readonly,
			    fs_log **out)
{
	fs_log *log = calloc(1, sizeof(*log));
	int rc;

	*out = NULL;
	if (!log)
		return -ENOMEM;
	log->fd = -1;
	log->readonly = readonly;
	pthread_mutex_init(&log->mu, NULL);
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
	*out = log;
	return 0;
fail:
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

static int start_segment(fs_log *log, uint64_t first)
{
	char path[PATH_MAX];
	int fd, rc;

	seg_path(log, first, path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		log_error("db=%s: cannot create LTX segment %s: %s", log->name,
			  path, strerror(-rc));
		return rc;
	}
	rc = seg_push(log, first);
	if (rc < 0) {
		close(fd);
		unlink(path);
		return rc;
	}
	if (log->fd >= 0)
		close(log->fd);
	log->fd = fd;
	log->end = 0;
	return lib_io_fsync_dir(log->dir);
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
	if (log->fd < 0 || log->end >= FS_LOG_SEGMENT_BYTES ||
	    ltx_header_is_snapshot(hdr)) {
		rc = start_segment(log, hdr->min_txid);
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
	log->end = a.off;
	set_tail(log, hdr, &t);
	pthread_mutex_unlock(&log->mu);
	if (out_trailer)
		*out_trailer = t;
	return 0;
fail:
	log_error("db=%s: appending TXID %016" PRIx64 " to the LTX log: %s",
		  log->name, hdr->max_txid, err.msg);
	/* Cut the partial record so nothing half-written remains. */
	if (lib_io_ftruncate(log->fd, (off_t)start) < 0)
		log_error("db=%s: cutting a failed append at byte %" PRIu64
			  " failed too; the next start will cut it", log->name,
			  start);
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
	if (log->fd < 0 || log->end >= FS_LOG_SEGMENT_BYTES ||
	    ltx_header_is_snapshot(hdr)) {
		rc = start_segment(log, hdr->min_txid);
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
		if (lib_io_ftruncate(log->fd, (off_t)start) < 0)
			log_error("db=%s: cutting a failed append failed too",
				  log->name);
		return rc;
	}
	pthread_mutex_lock(&log->mu);
	log->end = start + FS_LOG_RECORD_PREFIX + len;
	set_tail(log, hdr, tr);
	pthread_mutex_unlock(&log->mu);
	return 0;
}

int fs_log_sync(fs_log *log)
{
	int fd = log->fd;

	return fd < 0 ? 0 : lib_io_fdatasync(fd);
}

int fs_log_reset(fs_log *log)
{
	char path[PATH_MAX];
	int rc = 0;

	pthread_mutex_lock(&log->mu);
	if (log->fd >= 0)
		close(log->fd);
	log->fd = -1;
	for (size_t i = 0; i < log->nsegs; i++) {
		seg_path(log, log->segs[i], path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT)
			rc = -errno;
	}
	log->nsegs = 0;
	log->end = 0;
	memset(&log->tail, 0, sizeof(log->tail));
	pthread_mutex_unlock(&log->mu);
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

void fs_log_iter_free(fs_log_iter *it)
{
	if (!it)
		return;
	if (it->fd >= 0)
		close(it->fd);
	free(it);
}

static int iter_open_seg(fs_log_iter *it, size_t idx)
{
	char path[PATH_MAX];

	if (it->fd >= 0)
		close(it->fd);
	seg_path(it->log, it->log->segs[idx], path, sizeof(path));
	it->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (it->fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	it->seg = idx;
	it->off = 0;
	return 0;
}

int fs_log_iter_next(fs_log_iter *it, int *out_fd, uint64_t *out_off,
		     uint64_t *out_len, ltx_header *out_hdr)
{
	fs_log *log = it->log;
	uint8_t buf[FS_LOG_RECORD_PREFIX + LTX_HEADER_SIZE];
	int rc;

	pthread_mutex_lock(&log->mu);
	if (!it->started) {
		size_t idx = 0;
		if (log->nsegs == 0 || log->segs[0] > it->after + 1) {
			bool empty = log->nsegs == 0;
			pthread_mutex_unlock(&log->mu);
			return empty && it->after == log->tail.pos.txid ? 0
									: -ENOENT;
		}
		for (size_t i = 0; i < log->nsegs; i++)
			if (log->segs[i] <= it->after + 1)
				idx = i;
		rc = iter_open_seg(it, idx);
		if (rc < 0) {
			pthread_mutex_unlock(&log->mu);
			return rc;
		}
		it->started = true;
	}
	for (;;) {
		bool last = it->seg + 1 >= log->nsegs;
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
			if (last) {
				rc = 0;
				break;
			}
			rc = iter_open_seg(it, it->seg + 1);
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
					  log->name, log->segs[it->seg],
					  it->off);
				rc = -EBADMSG;
				break;
			}
			*out_fd = it->fd;
			*out_off = it->off + FS_LOG_RECORD_PREFIX;
			*out_len = len;
			it->off += FS_LOG_RECORD_PREFIX + len;
			if (h.max_txid <= it->after)
				continue;
			if (out_hdr)
				*out_hdr = h;
			it->after = h.max_txid;
			rc = 1;
			break;
		}
	}
	pthread_mutex_unlock(&log->mu);
	return rc;
}
