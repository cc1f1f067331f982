/* Compaction of L0 objects into L1 objects: see compact.h. */
#include "compact.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/log.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "ltx/checksum.h"
#include "ltx/decoder.h"
#include "ltx/encoder.h"

struct bk_merge {
	int pages;                /* page file: page P at (P-1)*page_size */
	uint8_t *bits;            /* pages written since the last shrink
				   * below them */
	uint64_t nbits;           /* capacity of bits, in pages */
	uint64_t hi;              /* no bit above it is set */
	uint64_t set;             /* bits set */
	size_t objects;
	uint64_t records;
	uint8_t *page;            /* one page */
	ltx_decoder *dec;
	/* The merged record so far (valid once objects > 0). */
	uint32_t flags, page_size, commit, min_commit;
	uint64_t min_txid, pre, max_txid, post, node_id;
	int64_t ts_ms, first_ms;
	int64_t window_ms;        /* 0: none (bk_merge_set_window) */
};

static int tmp_fd(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	return fd < 0 ? -errno : fd;
}

int bk_merge_new(const char *dir, bk_merge **out)
{
	bk_merge *m = calloc(1, sizeof(*m));
	int rc;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->pages = tmp_fd(dir);
	if (m->pages < 0) {
		rc = m->pages;
		free(m);
		return rc;
	}
	rc = ltx_decoder_new(fs_range_read, NULL, "merge", &m->dec);
	if (rc < 0) {
		bk_merge_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void bk_merge_free(bk_merge *m)
{
	if (!m)
		return;
	if (m->pages >= 0)
		close(m->pages);
	ltx_decoder_free(m->dec);
	free(m->bits);
	free(m->page);
	free(m);
}

size_t bk_merge_objects(const bk_merge *m)
{
	return m->objects;
}

uint64_t bk_merge_page_bytes(const bk_merge *m)
{
	return m->set * m->page_size;
}

static bool bit_get(const bk_merge *m, uint64_t pgno)
{
	return pgno < m->nbits && (m->bits[pgno / 8] >> (pgno % 8) & 1);
}

static int bit_set(bk_merge *m, uint64_t pgno)
{
	if (pgno >= m->nbits) {
		uint64_t n = m->nbits ? m->nbits : 1024;
		uint8_t *v;
		while (n <= pgno)
			n *= 2;
		v = realloc(m->bits, n / 8);
		if (!v)
			return -ENOMEM;
		memset(v + m->nbits / 8, 0, (n - m->nbits) / 8);
		m->bits = v;
		m->nbits = n;
	}
	if (!bit_get(m, pgno)) {
		m->bits[pgno / 8] |= (uint8_t)(1u << (pgno % 8));
		m->set++;
	}
	if (pgno > m->hi)
		m->hi = pgno;
	return 0;
}

/* Clears every bit above commit. */
static void bits_drop_above(bk_merge *m, uint64_t commit)
{
	for (uint64_t p = commit + 1; p <= m->hi; p++)
		if (bit_get(m, p)) {
			m->bits[p / 8] &= (uint8_t)~(1u << (p % 8));
			m->set--;
		}
	if (m->hi > commit)
		m->hi = commit;
}

/* The record at *off of the body [0, len) of fd: its LTX file at
 * [*rec, *rec + *rlen), its header and post-apply checksum; *off moves
 * past it. */
static int next_record(int fd, uint64_t len, uint64_t *off, uint64_t *rec,
		       uint64_t *rlen, ltx_header *h, uint64_t *post,
		       char *err, size_t errlen)
{
	uint8_t pfx[4], hb[LTX_HEADER_SIZE], pb[8];
	ltx_err le = {0};
	uint32_t n;
	int rc;

	if (len - *off < 4 || lib_io_pread_full(fd, pfx, 4, (off_t)*off,
						NULL) < 0)
		goto bad;
	n = get_be32(pfx);
	if (n > len - *off - 4 || n < LTX_HEADER_SIZE + LTX_TRAILER_SIZE)
		goto bad;
	rc = lib_io_pread_full(fd, hb, sizeof(hb), (off_t)(*off + 4), NULL);
	if (rc == 0)
		rc = lib_io_pread_full(fd, pb, 8, (off_t)(*off + 4 + n -
							  LTX_TRAILER_SIZE),
				       NULL);
	if (rc < 0) {
		snprintf(err, errlen, "reading at offset %" PRIu64 ": %s", *off,
			 strerror(-rc));
		return rc;
	}
	rc = ltx_header_decode(hb, h, &le);
	if (rc < 0) {
		snprintf(err, errlen, "offset %" PRIu64 ": corrupt record: %s",
			 *off + 4, le.msg);
		return -EBADMSG;
	}
	*post = get_be64(pb);
	*rec = *off + 4;
	*rlen = n;
	*off += 4 + (uint64_t)n;
	return 0;
bad:
	snprintf(err, errlen, "offset %" PRIu64 ": truncated record", *off);
	return -EBADMSG;
}

int bk_merge_check(const bk_merge *m, int fd, uint64_t len, char *err,
		   size_t errlen)
{
	bk_merge s = *m;          /* the merged record's state, simulated */
	uint64_t off = 0;

	if (len == 0) {
		snprintf(err, errlen, "an empty object");
		return -EBADMSG;
	}
	if (m->objects >= BK_COMPACT_MAX_OBJECTS ||
	    (m->objects && bk_merge_page_bytes(m) >= BK_COMPACT_MAX_PAGE_BYTES))
		return -EXDEV;
	while (off < len) {
		uint64_t rec, rlen, post;
		ltx_header h;
		int rc = next_record(fd, len, &off, &rec, &rlen, &h, &post,
				     err, errlen);
		if (rc < 0)
			return rc;
		if (ltx_header_is_snapshot(&h))
			return -EXDEV;
		if (s.objects > 0 &&
		    (h.page_size != s.page_size || h.flags != s.flags ||
		     h.min_txid != s.max_txid + 1 ||
		     h.pre_apply_checksum != s.post || h.timestamp < s.ts_ms))
			return -EXDEV;
		if (m->records > 0 && m->window_ms > 0 &&
		    h.timestamp - m->first_ms >= m->window_ms)
			return -EXDEV;
		s.objects = 1;
		s.page_size = h.page_size;
		s.flags = h.flags;
		s.max_txid = h.max_txid;
		s.post = post;
		s.ts_ms = h.timestamp;
	}
	return 0;
}

/* Adds the record at [rec, rec + rlen) of fd with header h. */
static int add_record(bk_merge *m, int fd, uint64_t rec, uint64_t rlen,
		      const ltx_header *h, char *err, size_t errlen)
{
	fs_range_reader rr = {fd, rec, rec + rlen};
	ltx_header dh;
	ltx_trailer tr;
	uint32_t pgno;
	int rc;

	if (!m->page) {
		m->page = malloc(h->page_size);
		if (!m->page)
			return -ENOMEM;
	}
	/* As applying it would: the database is commit pages afterwards,
	 * pages past a shrink gone (zeros should it grow again). */
	rc = lib_io_ftruncate(m->pages, (off_t)h->commit * h->page_size);
	if (rc < 0) {
		snprintf(err, errlen, "truncating the page file: %s",
			 strerror(-rc));
		return rc;
	}
	bits_drop_above(m, h->commit);
	rc = ltx_decoder_reset(m->dec, fs_range_read, &rr, NULL);
	if (rc == 0)
		rc = ltx_decoder_read_header(m->dec, &dh);
	while (rc == 0 && (rc = ltx_decoder_next_page(m->dec, &pgno,
						      m->page)) == 1) {
		rc = lib_io_pwrite_full(m->pages, m->page, h->page_size,
					(off_t)(pgno - 1) * h->page_size);
		if (rc < 0) {
			snprintf(err, errlen, "writing the page file: %s",
				 strerror(-rc));
			return rc;
		}
		rc = bit_set(m, pgno);
		if (rc < 0)
			return rc;
	}
	if (rc == 0)
		rc = ltx_decoder_finish(m->dec, &tr);
	if (rc < 0) {
		const ltx_err *e = ltx_decoder_err(m->dec);
		if (e->msg[0])
			snprintf(err, errlen, "offset %" PRIu64 ": corrupt "
				 "record, TXID %016" PRIx64 ": %s", rec +
				 (uint64_t)(e->offset > 0 ? e->offset : 0),
				 h->max_txid, e->msg);
		return rc;
	}
	if (m->records++ == 0) {
		m->min_txid = h->min_txid;
		m->pre = h->pre_apply_checksum;
		m->page_size = h->page_size;
		m->flags = h->flags;
		m->min_commit = h->commit;
		m->first_ms = h->timestamp;
	}
	if (h->commit < m->min_commit)
		m->min_commit = h->commit;
	m->commit = h->commit;
	m->max_txid = h->max_txid;
	m->post = tr.post_apply_checksum;
	m->node_id = h->node_id;
	m->ts_ms = h->timestamp;
	return 0;
}

void bk_merge_set_window(bk_merge *m, int64_t window_ms)
{
	m->window_ms = window_ms;
}

int bk_merge_add(bk_merge *m, int fd, uint64_t len, char *err,
		 size_t errlen)
{
	uint64_t off = 0;
	int rc = 0;

	while (off < len) {
		uint64_t rec, rlen, post;
		ltx_header h;
		rc = next_record(fd, len, &off, &rec, &rlen, &h, &post, err,
				 errlen);
		if (rc == 0)
			rc = add_record(m, fd, rec, rlen, &h, err, errlen);
		if (rc < 0)
			return rc;
	}
	m->objects++;
	return 0;
}

int bk_merge_finish(bk_merge *m, int out, int zstd_level, uint64_t *len,
		    bk_obj *o, char *err, size_t errlen)
{
	ltx_header h = {0};
	ltx_encoder *enc = NULL;
	ltx_err le = {0};
	uint8_t pfx[4];
	uint32_t lock;
	uint64_t n = 0;
	int rc;

	if (m->objects == 0) {
		snprintf(err, errlen, "nothing to merge");
		return -EINVAL;
	}
	h.flags = m->flags;
	h.page_size = m->page_size;
	h.commit = m->commit;
	h.min_txid = m->min_txid;
	h.max_txid = m->max_txid;
	h.timestamp = m->ts_ms;
	h.pre_apply_checksum = m->pre;
	h.node_id = m->node_id;
	lock = ltx_lock_pgno(m->page_size);
	rc = lib_io_ftruncate(out, 0);
	if (rc == 0 && lseek(out, 4, SEEK_SET) < 0)
		rc = -errno;
	if (rc == 0)
		rc = ltx_encoder_new(&h, zstd_level, ltx_write_to_fd, &out,
				     &enc, &le);
	for (uint64_t p = 1; rc == 0 && p <= m->commit; p++) {
		if (p == lock || (!bit_get(m, p) && p <= m->min_commit))
			continue;
		rc = lib_io_pread_full(m->pages, m->page, m->page_size,
				       (off_t)((p - 1) * m->page_size), NULL);
		if (rc < 0)
			ltx_err_set(&le, LTX_ERR_IO, 0, "reading page %" PRIu64
				    " of the page file: %s", p,
				    strerror(-rc));
		else
			rc = ltx_encoder_add_page(enc, (uint32_t)p, m->page,
						  &le);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, m->post, NULL, &le);
	if (rc == 0) {
		n = ltx_encoder_bytes_written(enc);
		put_be32(pfx, (uint32_t)n);
		rc = n > UINT32_MAX ? -EFBIG :
		     lib_io_pwrite_full(out, pfx, 4, 0);
	}
	ltx_encoder_free(enc);
	if (rc < 0) {
		snprintf(err, errlen, "encoding the merged record %016" PRIx64
			 "-%016" PRIx64 ": %s", m->min_txid, m->max_txid,
			 le.msg[0] ? le.msg : strerror(-rc));
		return rc;
	}
	*len = 4 + n;
	o->level = 1;
	o->min_txid = m->min_txid;
	o->max_txid = m->max_txid;
	o->post = m->post;
	o->ts_ms = m->ts_ms;
	return 0;
}

/* ---- the compactor ------------------------------------------------------ */

/* Fetches object key whole into fd (emptied first); *len its size. */
static int fetch(bk_store *s, const char *key, int fd, uint64_t *len,
		 char *err, size_t errlen)
{
	int rc = lib_io_ftruncate(fd, 0);

	*len = 0;
	if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0)
		rc = -errno;
	if (rc == 0)
		rc = bk_store_get(s, key, 0, 0, fd, len, err, errlen);
	return rc;
}

/* Now, for the budget (ms, monotonic). */
static int64_t now_ms(void)
{
	return lib_clock_monotonic_ns() / 1000000;
}

/* Merges chain[from..] as far as it goes (or until deadline, 0: none),
 * into one L1 put unless fewer than 2 objects join; *next the first
 * element not merged. */
static int compact_run(bk_store *s, const char *prefix, const char *db,
		       uint64_t epoch, const char *tmpdir,
		       const bk_obj **chain, size_t from, size_t n,
		       int64_t deadline, int64_t window_ms, size_t *next,
		       int body, int out, bk_compact_result *res, char *err,
		       size_t errlen)
{
	bk_merge *m = NULL;
	char key[1024], why[512] = "";
	bk_obj o = {0};
	uint64_t len = 0, newer = 0;
	size_t j = from;
	int rc = bk_merge_new(tmpdir, &m);

	if (rc < 0) {
		snprintf(err, errlen, "backup: database %s: cannot make a "
			 "temporary file in %s: %s", db, tmpdir, strerror(-rc));
		return rc;
	}
	bk_merge_set_window(m, window_ms);
	for (; j < n; j++) {
		rc = fetch(s, chain[j]->key, body, &len, err, errlen);
		if (rc < 0)
			goto out; /* err says what the store answered */
		rc = bk_merge_check(m, body, len, why, sizeof(why));
		if (rc == -EXDEV) {
			rc = 0;
			break;
		}
		if (rc == 0)
			rc = bk_merge_add(m, body, len, why, sizeof(why));
		if (rc == 0 && (m->max_txid != chain[j]->max_txid ||
				m->post != chain[j]->post)) {
			snprintf(why, sizeof(why), "ends at %016" PRIx64 "/%016"
				 PRIx64 ", not where its name says",
				 m->max_txid, m->post);
			rc = -EBADMSG;
		}
		if (rc < 0)
			goto fail;
		if (deadline && now_ms() >= deadline) {
			j++;
			break;
		}
	}
	/* An object that cannot start a merge is passed over. */
	*next = j == from ? from + 1 : j;
	if (bk_merge_objects(m) < 2)
		goto out;
	rc = bk_merge_finish(m, out, 0, &len, &o, why, sizeof(why));
	o.epoch = epoch;
	if (rc == 0)
		rc = bk_obj_key(key, sizeof(key), prefix, db, &o);
	if (rc < 0) {
		snprintf(err, errlen, "backup: database %s: the L1 object of "
			 "%016" PRIx64 "-%016" PRIx64 ": %s", db, m->min_txid,
			 m->max_txid, why[0] ? why : strerror(-rc));
		goto out;
	}
	/* Rule O4 just before the put. */
	rc = bk_obj_newer_epoch(s, prefix, db, epoch, &newer, err, errlen);
	if (rc < 0)
		goto out;
	if (newer > epoch) {
		res->newer_epoch = newer;
		*next = n;
		goto out;
	}
	rc = bk_store_put(s, key, out, len, err, errlen);
	if (rc < 0)
		goto out;
	res->l1_objects++;
	res->l0_objects += bk_merge_objects(m);
	res->bytes += len;
	log_debug("backup: database %s: compacted %zu objects into %s (%"
		  PRIu64 " bytes)", db, bk_merge_objects(m), key, len);
	goto out;
fail:
	snprintf(err, errlen, "backup: database %s: compacting object %s: %s",
		 db, chain[j < n ? j : n - 1]->key, why);
out:
	bk_merge_free(m);
	return rc;
}

int bk_compact_db(bk_store *s, const char *prefix, const char *db,
		  uint64_t epoch, const char *tmpdir, int64_t budget_ms,
		  int64_t window_ms, bk_compact_result *res, char *err,
		  size_t errlen)
{
	int64_t deadline = budget_ms > 0 ? now_ms() + budget_ms : 0;
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	const bk_obj **chain = NULL, **sub = NULL;
	size_t n = 0, nchain = 0, nsub = 0, from = 1;
	int rc, body = -1, out = -1;

	memset(res, 0, sizeof(*res));
	err[0] = '\0';
	rc = bk_obj_list(s, prefix, db, &keys, &objs, &n, err, errlen);
	if (rc == 0)
		rc = bk_obj_chain(objs, n, NULL, UINT64_MAX, &chain, &nchain);
	if (rc == 0)
		rc = bk_obj_substitute(objs, n, chain, nchain, UINT64_MAX,
				       false, 0, &sub, &nsub);
	if (rc < 0)
		goto out;
	/* The L0 objects after the start object and the last L1. */
	for (size_t i = 1; i < nsub; i++)
		if (sub[i]->level == 1)
			from = i + 1;
	if (nsub < from + 2)
		goto out;
	body = tmp_fd(tmpdir);
	out = body < 0 ? -1 : tmp_fd(tmpdir);
	if (body < 0 || out < 0) {
		rc = body < 0 ? body : out;
		snprintf(err, errlen, "backup: database %s: cannot make a "
			 "temporary file in %s: %s", db, tmpdir, strerror(-rc));
		goto out;
	}
	while (rc == 0 && from + 2 <= nsub && !res->newer_epoch &&
	       (!deadline || now_ms() < deadline))
		rc = compact_run(s, prefix, db, epoch, tmpdir, sub, from, nsub,
				 deadline, window_ms, &from, body, out, res,
				 err, errlen);
	res->more = rc == 0 && !res->newer_epoch && from + 2 <= nsub;
out:
	if (body >= 0)
		close(body);
	if (out >= 0)
		close(out);
	free(sub);
	free(chain);
	free(objs);
	bk_keys_free(&keys);
	return rc;
}
