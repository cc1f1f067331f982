/* Restore from the backup store: see restore.h. */
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "fs/log.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "ltx/checksum.h"
#include "ltx/dbfile.h"
#include "ltx/decoder.h"
#include "fetch.h"
#include "object.h"

/* The state of a restore in progress. */
struct rs {
	const bk_restore_opts *o;
	bk_restore_result *res;
	char *err;
	size_t errlen;
	int out;                  /* the database being built */
	int obj;                  /* the current object's bytes (fetch's) */
	ltx_decoder *dec;
	uint64_t txid, checksum;  /* position of out */
	bool done;                /* past the target */
	bk_progress prog;         /* what o->progress is told */
	uint64_t before;          /* bytes of the objects applied */
	uint64_t next_report;     /* offset in the object */
	bk_fetch *fetch;          /* the chain's objects, ahead */
	size_t cur;               /* the current object's index in it */
};

/* Progress is reported every this many bytes applied of an object. */
#define RS_REPORT_BYTES (4u << 20)

static void report(struct rs *r)
{
	if (r->o->progress)
		r->o->progress(&r->prog, r->o->progress_arg);
}

/* The apply pass's reader: fs_range_read, reporting progress. */
struct counted {
	fs_range_reader rr;
	struct rs *r;
};

/* Waits until the first need bytes of the current object are fetched
 * or it is whole; *have the bytes there. A failed fetch returns its
 * error (r->err says it). */
static int fetch_wait(struct rs *r, uint64_t need, uint64_t *have)
{
	bool done;

	return bk_fetch_wait(r->fetch, r->cur, need, &r->obj, have, &done,
			     r->err, r->errlen);
}

static int counted_read(void *ctx, void *buf, size_t n, size_t *out_got)
{
	struct counted *c = ctx;
	struct rs *r = c->r;
	uint64_t left = c->rr.end - c->rr.off, have = 0;
	int rc = fetch_wait(r, c->rr.off + (n < left ? n : left), &have);

	if (rc < 0)
		return rc;
	r->prog.obj_size = have;
	rc = fs_range_read(&c->rr, buf, n, out_got);
	if (c->rr.off >= r->next_report) {
		r->prog.obj_bytes = c->rr.off;
		r->prog.bytes = r->before + c->rr.off;
		r->next_report = c->rr.off + RS_REPORT_BYTES;
		report(r);
	}
	return rc;
}

static int tmp_in(const char *path)
{
	char buf[4096], *dir;
	int fd;

	snprintf(buf, sizeof(buf), "%s", path);
	dir = dirname(buf);
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

/* The header of the record at [off, off+len) of the current object,
 * read directly (the apply checks it again with the rest). */
static int read_header(struct rs *r, const char *key, uint64_t off,
		       uint64_t len, ltx_header *hdr)
{
	uint8_t h[LTX_HEADER_SIZE];
	ltx_err le = {0};
	uint64_t have = 0;
	int rc = len >= LTX_HEADER_SIZE + LTX_TRAILER_SIZE ? 0 : -EBADMSG;

	if (rc == 0)
		rc = fetch_wait(r, off + sizeof(h), &have);
	if (rc < 0 && rc != -EBADMSG)
		return rc;
	if (rc == 0)
		rc = lib_io_pread_full(r->obj, h, sizeof(h), (off_t)off, NULL);
	if (rc == 0)
		rc = ltx_header_decode(h, hdr, &le);
	if (rc < 0) {
		snprintf(r->err, r->errlen, "backup: object %s offset %" PRIu64
			 ": corrupt record: %s", key, off, le.msg[0] ? le.msg :
			 "shorter than an LTX header and trailer");
		return -EBADMSG;
	}
	return 0;
}

/* The trailer of the record at [off, off+len), once it is applied. */
static int read_trailer(struct rs *r, uint64_t off, uint64_t len,
			ltx_trailer *tr)
{
	uint8_t t[LTX_TRAILER_SIZE];
	int rc = lib_io_pread_full(r->obj, t, sizeof(t),
				   (off_t)(off + len - sizeof(t)), NULL);

	if (rc == 0)
		ltx_trailer_decode(t, tr);
	return rc;
}

/* One record at [off, off+len) of the current object, applied unless
 * past the target (r->done). One pass: ltx_dbfile_apply checks every
 * page, the file checksum and the post-apply checksum as it goes; a
 * corrupt record leaves the database being built half-applied, but that
 * file is a temporary one and the restore fails. */
static int apply_record(struct rs *r, const char *key, uint64_t off,
			uint64_t len)
{
	struct counted cr = {{r->obj, off, off + len}, r};
	ltx_header hdr;
	ltx_trailer tr;
	ltx_err le = {0};
	uint64_t sum;
	int rc;

	rc = read_header(r, key, off, len, &hdr);
	if (rc < 0)
		return rc;
	if ((r->o->txid && hdr.max_txid > r->o->txid) ||
	    (r->o->by_time && hdr.timestamp > r->o->ts_ms)) {
		r->done = true;
		return 0;
	}
	if (hdr.min_txid != 1 && (hdr.min_txid != r->txid + 1 ||
				  hdr.pre_apply_checksum != r->checksum)) {
		snprintf(r->err, r->errlen, "backup: object %s offset %" PRIu64
			 ": record %016" PRIx64 "-%016" PRIx64 " does not "
			 "follow position %016" PRIx64 "/%016" PRIx64, key,
			 off - 4, hdr.min_txid, hdr.max_txid, r->txid,
			 r->checksum);
		return -EBADMSG;
	}
	if (hdr.min_txid == 1) {
		rc = lib_io_ftruncate(r->out, 0);
		if (rc < 0)
			return rc;
		r->checksum = LTX_CHECKSUM_EMPTY;
	}
	sum = r->checksum;
	rc = ltx_decoder_reset(r->dec, counted_read, &cr, key);
	if (rc == 0)
		rc = ltx_dbfile_apply(r->out, r->dec, &sum, &hdr, &le);
	if (rc < 0) {
		const ltx_err *e = le.msg[0] ? &le : ltx_decoder_err(r->dec);
		snprintf(r->err, r->errlen, "backup: object %s offset %" PRIu64
			 ": %s TXID %016" PRIx64 ": %s", key,
			 off + (uint64_t)(e->offset > 0 ? e->offset : 0),
			 rc == -EBADMSG ? "corrupt record," : "applying",
			 hdr.max_txid, e->msg[0] ? e->msg : strerror(-rc));
		return rc == -EBADMSG ? -EBADMSG : rc;
	}
	if (r->o->on_record) {
		rc = read_trailer(r, off, len, &tr);
		if (rc == 0)
			rc = r->o->on_record(r->o->record_arg, r->obj, off,
					     len, &hdr, &tr, r->err,
					     r->errlen);
		if (rc < 0)
			return rc;
	}
	r->txid = hdr.max_txid;
	r->checksum = sum;
	r->res->records++;
	r->prog.records++;
	r->res->timestamp_ms = hdr.timestamp;
	return 0;
}

/* The records of object o in order, applied as the fetch brings them. */
static int apply_records(struct rs *r, const bk_obj *o)
{
	uint64_t off = 0, have = 0;
	uint8_t pfx[4];
	int rc = 0;

	while (!r->done) {
		uint32_t len;
		rc = fetch_wait(r, off + 4, &have);
		if (rc < 0 || have == off)
			break; /* have == off: the fetch ended here */
		if (have < off + 4 ||
		    lib_io_pread_full(r->obj, pfx, 4, (off_t)off, NULL) < 0) {
			snprintf(r->err, r->errlen, "backup: object %s offset "
				 "%" PRIu64 ": truncated record length",
				 o->key, off);
			return -EBADMSG;
		}
		len = get_be32(pfx);
		rc = apply_record(r, o->key, off + 4, len);
		if (rc < 0 && fetch_wait(r, UINT64_MAX, &have) == 0 &&
		    len > have - off - 4) {
			snprintf(r->err, r->errlen, "backup: object %s offset "
				 "%" PRIu64 ": record length %u past the "
				 "object's end (%" PRIu64 " bytes)", o->key,
				 off, len, have);
			return -EBADMSG;
		}
		if (rc < 0)
			return rc;
		off += 4 + (uint64_t)len;
	}
	return rc;
}

/* Applies object r->cur of the chain, o, as the fetch thread brings
 * it. */
static int apply_object(struct rs *r, const bk_obj *o)
{
	uint64_t got = 0;
	int rc;

	r->prog.objects++;
	r->prog.obj_size = 0;
	r->prog.obj_bytes = 0;
	r->prog.bytes = r->before;
	r->next_report = RS_REPORT_BYTES;
	report(r);
	rc = apply_records(r, o);
	/* The whole object, also past the target (r->done): its size. */
	if (rc == 0)
		rc = fetch_wait(r, UINT64_MAX, &got);
	if (rc < 0)
		return rc;
	r->res->objects++;
	r->res->bytes += got;
	r->prog.obj_size = got;
	r->before += got;
	if (!r->done && (r->txid != o->max_txid || r->checksum != o->post)) {
		snprintf(r->err, r->errlen, "backup: object %s: ends at "
			 "%016" PRIx64 "/%016" PRIx64 ", its name says %016"
			 PRIx64 "/%016" PRIx64, o->key, r->txid, r->checksum,
			 o->max_txid, o->post);
		return -EBADMSG;
	}
	return 0;
}

/* The start object for a restore by time: the newest start whose first
 * transaction is at or before ts_ms. */
static int start_by_time(const bk_restore_opts *o, const bk_obj *objs,
			 size_t n, const bk_obj **out, char *err,
			 size_t errlen)
{
	const bk_obj **starts = NULL;
	size_t ns = 0;
	int rc = bk_obj_starts(objs, n, &starts, &ns);

	*out = NULL;
	for (size_t i = ns; rc == 0 && i-- > 0;) {
		ltx_header hdr;
		rc = bk_obj_first_header(o->store, starts[i]->key, &hdr, err,
					 errlen);
		if (rc == 0 && hdr.timestamp <= o->ts_ms) {
			*out = starts[i];
			break;
		}
	}
	free(starts);
	return rc;
}

static int check_integrity(const char *path, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char side[4400];
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
	const char *res = "";

	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st,
					NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		res = (const char *)sqlite3_column_text(st, 0);
	if (rc != SQLITE_OK || !res || strcmp(res, "ok") != 0) {
		snprintf(err, errlen, "backup: the restored database fails "
			 "PRAGMA integrity_check: %s", rc != SQLITE_OK ?
			 sqlite3_errmsg(db) : res ? res : "no answer");
		rc = -EBADMSG;
	} else {
		rc = 0;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	snprintf(side, sizeof(side), "%s-wal", path);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", path);
	unlink(side);
	return rc;
}

/* Verifies the whole file's checksum, fsyncs, integrity_check, renames. */
static int finish(struct rs *r)
{
	char tmp[4200], dir[4200];
	uint32_t ps = 0, pages = 0;
	uint64_t sum = 0;
	ltx_err le = {0};
	int rc;

	rc = ltx_dbfile_page_size(r->out, &ps, &le);
	if (rc == 0)
		rc = ltx_dbfile_checksum(r->out, ps, &pages, &sum, &le);
	if (rc == 0 && sum != r->checksum) {
		snprintf(r->err, r->errlen, "backup: the restored database's "
			 "checksum %016" PRIx64 " is not the record's %016"
			 PRIx64, sum, r->checksum);
		return -EBADMSG;
	}
	if (rc < 0) {
		snprintf(r->err, r->errlen, "backup: the restored database: %s",
			 le.msg);
		return rc;
	}
	rc = lib_io_fsync(r->out);
	snprintf(tmp, sizeof(tmp), "%s.tmp-%d", r->o->out, (int)getpid());
	unlink(tmp);
	if (rc == 0) {
		char fdpath[64];
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", r->out);
		if (linkat(AT_FDCWD, fdpath, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) <
		    0)
			rc = -errno;
	}
	if (rc < 0) {
		snprintf(r->err, r->errlen, "backup: cannot write %s: %s", tmp,
			 strerror(-rc));
		return rc;
	}
	rc = check_integrity(tmp, r->err, r->errlen);
	if (rc == 0 && r->o->dry_run) {
		unlink(tmp);
		return 0;
	}
	if (rc == 0)
		rc = lib_io_rename(tmp, r->o->out);
	if (rc < 0) {
		if (!r->err[0])
			snprintf(r->err, r->errlen, "backup: cannot rename "
				 "onto %s: %s", r->o->out, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	snprintf(dir, sizeof(dir), "%s", r->o->out);
	return lib_io_fsync_dir(dirname(dir));
}

int bk_restore(const bk_restore_opts *o, bk_restore_result *res, char *err,
	       size_t errlen)
{
	struct rs r = {.o = o, .res = res, .err = err, .errlen = errlen,
		       .out = -1, .obj = -1};
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	const bk_obj **chain = NULL, **l0 = NULL, *start = NULL;
	const char **keyv = NULL;
	size_t n = 0, nchain = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	err[0] = '\0';
	rc = bk_obj_list(o->store, o->prefix, o->db, &keys, &objs, &n, err,
			 errlen);
	if (rc == 0 && n == 0) {
		snprintf(err, errlen, "backup: %s holds no backup of database "
			 "%s", bk_store_desc(o->store), o->db);
		rc = -ENOENT;
	}
	if (rc == 0 && o->by_time) {
		rc = start_by_time(o, objs, n, &start, err, errlen);
		if (rc == 0 && !start) {
			snprintf(err, errlen, "backup: %s is before the first "
				 "restorable point of database %s (see `ltxfs "
				 "backup ls`)", "the timestamp", o->db);
			rc = -ENOENT;
		}
	}
	if (rc == 0)
		rc = bk_obj_chain(objs, n, start, o->txid ? o->txid :
				  UINT64_MAX, &l0, &nchain);
	/* Rule O6: runs of L0 objects replaced by the L1s that hold them. */
	if (rc == 0)
		rc = bk_obj_substitute(objs, n, l0, nchain, o->txid ? o->txid :
				       UINT64_MAX, o->by_time, o->ts_ms,
				       &chain, &nchain);
	if (rc == 0 && nchain == 0) {
		snprintf(err, errlen, "backup: TXID %016" PRIx64 " is before "
			 "the first restorable point of database %s (see "
			 "`ltxfs backup ls`)", o->txid, o->db);
		rc = -ENOENT;
	}
	if (rc == 0) {
		r.out = tmp_in(o->out);
		if (r.out < 0) {
			rc = r.out;
			snprintf(err, errlen, "backup: cannot create a "
				 "temporary file beside %s: %s", o->out,
				 strerror(-rc));
		}
	}
	if (rc == 0) {
		keyv = calloc(nchain, sizeof(*keyv));
		rc = keyv ? 0 : -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < nchain; i++)
		keyv[i] = chain[i]->key;
	if (rc == 0) {
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s", o->out);
		rc = bk_fetch_start(o->store, keyv, nchain, dirname(dir),
				    &r.fetch, err, errlen);
	}
	if (rc == 0)
		rc = ltx_decoder_new(fs_range_read, NULL, o->db, &r.dec);
	r.prog.objects_total = nchain;
	for (size_t i = 0; rc == 0 && i < nchain && !r.done; i++) {
		r.cur = i;
		rc = apply_object(&r, chain[i]);
		bk_fetch_release(r.fetch, i);
	}
	bk_fetch_free(r.fetch); /* before the keys it reads go */
	r.fetch = NULL;
	if (rc == 0 && o->txid && r.txid != o->txid) {
		snprintf(err, errlen, "backup: TXID %016" PRIx64 " is not a "
			 "restorable point of database %s (the chain reaches "
			 "%016" PRIx64 ")", o->txid, o->db, r.txid);
		rc = -ENOENT;
	}
	if (rc == 0 && r.txid == 0) {
		snprintf(err, errlen, "backup: nothing to restore of database "
			 "%s at that point", o->db);
		rc = -ENOENT;
	}
	if (rc == 0)
		rc = finish(&r);
	if (rc == 0) {
		res->txid = r.txid;
		res->checksum = r.checksum;
		r.prog.bytes = r.before;
		r.prog.obj_bytes = r.prog.obj_size;
		r.prog.done = true;
		report(&r);
	}
	ltx_decoder_free(r.dec);
	if (r.out >= 0)
		close(r.out);
	free(keyv);
	free(chain);
	free(l0);
	free(objs);
	bk_keys_free(&keys);
	return rc;
}

int bk_restore_ranges(bk_store *s, const char *prefix, const char *db,
		      bk_range **out, size_t *n, char *err, size_t errlen)
{
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	const bk_obj **starts = NULL;
	size_t nobj = 0, ns = 0;
	bk_range *v = NULL;
	int rc;

	*out = NULL;
	*n = 0;
	err[0] = '\0';
	rc = bk_obj_list(s, prefix, db, &keys, &objs, &nobj, err, errlen);
	if (rc == 0)
		rc = bk_obj_starts(objs, nobj, &starts, &ns);
	if (rc == 0) {
		v = calloc(ns ? ns : 1, sizeof(*v));
		if (!v)
			rc = -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < ns; i++) {
		const bk_obj **chain = NULL;
		size_t nc = 0;
		ltx_header first, last;
		rc = bk_obj_chain(objs, nobj, starts[i], UINT64_MAX, &chain,
				  &nc);
		if (rc == 0)
			rc = bk_obj_first_header(s, starts[i]->key, &first,
						 err, errlen);
		if (rc == 0)
			rc = bk_obj_first_header(s, chain[nc - 1]->key, &last,
						 err, errlen);
		if (rc == 0) {
			v[i].first_txid = starts[i]->max_txid;
			v[i].last_txid = chain[nc - 1]->max_txid;
			v[i].first_ms = first.timestamp;
			v[i].last_ms = last.timestamp;
			v[i].objects = nc;
		}
		free(chain);
	}
	free(starts);
	free(objs);
	bk_keys_free(&keys);
	if (rc < 0) {
		free(v);
		return rc;
	}
	*out = v;
	*n = ns;
	return 0;
}
