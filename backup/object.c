/* Backup objects' names and chains: see object.h. */
#include "object.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/io.h"

/* "PREFIX/DB/lLEVEL/" into buf. */
static int level_dir(char *buf, size_t len, const char *prefix,
		     const char *db, int level)
{
	int n = snprintf(buf, len, "%s%s%s/l%d/", prefix,
			 prefix[0] ? "/" : "", db, level);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int bk_obj_dir(char *buf, size_t len, const char *prefix, const char *db)
{
	return level_dir(buf, len, prefix, db, 0);
}

int bk_obj_key(char *buf, size_t len, const char *prefix, const char *db,
	       const bk_obj *o)
{
	size_t used;
	int rc = level_dir(buf, len, prefix, db, o->level), n;

	if (rc < 0)
		return rc;
	if (o->level != 0 && o->level != 1)
		return -EINVAL;
	used = strlen(buf);
	n = snprintf(buf + used, len - used,
		     "%016" PRIx64 "-%016" PRIx64 "-%016" PRIx64 "-%016" PRIx64,
		     o->epoch, o->min_txid, o->max_txid, o->post);
	if (n >= 0 && (size_t)n < len - used) {
		used += (size_t)n;
		if (o->level == 1)
			n = snprintf(buf + used, len - used, "-%016" PRIx64
				     ".ltx", (uint64_t)o->ts_ms);
		else
			n = snprintf(buf + used, len - used, ".ltx");
	}
	return n < 0 || (size_t)n >= len - used ? -ENAMETOOLONG : 0;
}

static bool hex16(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		char c = s[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return false;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return true;
}

bool bk_obj_parse(const char *key, bk_obj *out)
{
	const char *base = strrchr(key, '/');
	size_t len, fields;
	uint64_t ts = 0;

	base = base ? base + 1 : key;
	len = strlen(base);
	if (len == 4 * 16 + 3 + 4)
		fields = 4;
	else if (len == 5 * 16 + 4 + 4)
		fields = 5;
	else
		return false;
	if (strcmp(base + len - 4, ".ltx") != 0)
		return false;
	for (size_t i = 1; i < fields; i++)
		if (base[i * 17 - 1] != '-')
			return false;
	/* Rule O5: an L0 name only in l0/, an L1 name only in l1/. */
	if (base != key && (base - key < 3 || base[-3] != 'l' ||
			    base[-2] != (fields == 4 ? '0' : '1') ||
			    (base - key > 3 && base[-4] != '/')))
		return false;
	out->key = key;
	out->level = fields == 4 ? 0 : 1;
	if (fields == 5 && (!hex16(base + 68, &ts) || ts > INT64_MAX))
		return false;
	out->ts_ms = (int64_t)ts;
	return hex16(base, &out->epoch) && hex16(base + 17, &out->min_txid) &&
	       hex16(base + 34, &out->max_txid) &&
	       hex16(base + 51, &out->post) && out->min_txid > 0 &&
	       out->max_txid >= out->min_txid;
}

int bk_obj_list(bk_store *s, const char *prefix, const char *db,
		bk_keys *keys, bk_obj **out, size_t *n, char *err,
		size_t errlen)
{
	char dir[1024];
	bk_obj *v;
	int rc;

	*out = NULL;
	*n = 0;
	/* Both levels in one listing: "PREFIX/DB/". */
	rc = snprintf(dir, sizeof(dir), "%s%s%s/", prefix,
		      prefix[0] ? "/" : "", db) >= (int)sizeof(dir) ?
	     -ENAMETOOLONG : 0;
	if (rc == 0)
		rc = bk_store_list(s, dir, keys, err, errlen);
	if (rc < 0)
		return rc;
	v = calloc(keys->n ? keys->n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < keys->n; i++) {
		const char *rest = keys->v[i] + strlen(dir);
		/* Only DIR/l0/NAME and DIR/l1/NAME, not deeper. */
		if (strncmp(keys->v[i], dir, strlen(dir)) == 0 &&
		    strlen(rest) > 3 && rest[0] == 'l' && rest[2] == '/' &&
		    !strchr(rest + 3, '/') && bk_obj_parse(keys->v[i], &v[*n]))
			(*n)++;
	}
	*out = v;
	return 0;
}

int bk_obj_newer_epoch(bk_store *s, const char *prefix, const char *db,
		       uint64_t epoch, uint64_t *out, char *err,
		       size_t errlen)
{
	char dir[1024], after[1100];
	bk_keys keys = {0};
	bk_obj o;
	int rc;

	*out = 0;
	rc = bk_obj_dir(dir, sizeof(dir), prefix, db);
	if (rc < 0)
		return rc;
	snprintf(after, sizeof(after), "%s%016" PRIx64 "-~", dir, epoch);
	rc = bk_store_list_after(s, dir, after, 1, &keys, err, errlen);
	if (rc == 0 && keys.n == 1 && (!bk_obj_parse(keys.v[0], &o) ||
				       o.level != 0)) {
		/* Something else sorts first: look at every key. */
		bk_keys_free(&keys);
		rc = bk_store_list_after(s, dir, after, 0, &keys, err,
					 errlen);
	}
	for (size_t i = 0; rc == 0 && i < keys.n; i++)
		if (bk_obj_parse(keys.v[i], &o) && o.level == 0 &&
		    o.epoch > *out &&
		    o.epoch > epoch)
			*out = o.epoch;
	bk_keys_free(&keys);
	return rc;
}

/* Rule O3's order of start objects: epoch, then X. */
static int start_order(const bk_obj *a, const bk_obj *b)
{
	if (a->epoch != b->epoch)
		return a->epoch < b->epoch ? -1 : 1;
	if (a->max_txid != b->max_txid)
		return a->max_txid < b->max_txid ? -1 : 1;
	return 0;
}

static bool better_start(const bk_obj *a, const bk_obj *b)
{
	return !b || start_order(a, b) > 0;
}

/* Sorts object pointers by min TXID (then anything: ties are settled by
 * the caller). */
static int cmp_min(const void *a, const void *b)
{
	const bk_obj *x = *(const bk_obj *const *)a;
	const bk_obj *y = *(const bk_obj *const *)b;

	return x->min_txid < y->min_txid ? -1 : x->min_txid > y->min_txid;
}

/* The first of v[0..n) (sorted by min TXID) whose min TXID >= txid. */
static size_t lower_bound(const bk_obj **v, size_t n, uint64_t txid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid]->min_txid < txid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Rule O3 in O(n log n): the objects are sorted by min TXID once, and
 * each step looks only at those whose min TXID is P+1. */
int bk_obj_chain(const bk_obj *objs, size_t n, const bk_obj *start,
		 uint64_t target, const bk_obj ***out, size_t *nout)
{
	const bk_obj *cur = start, **v = NULL, **by_min = NULL;
	size_t k = 0, m = 0;

	*out = NULL;
	*nout = 0;
	for (size_t i = 0; i < n && !start; i++)
		if (objs[i].level == 0 && objs[i].min_txid == 1 &&
		    objs[i].max_txid <= target && better_start(&objs[i], cur))
			cur = &objs[i];
	v = calloc(n ? n : 1, sizeof(*v));
	by_min = calloc(n ? n : 1, sizeof(*by_min));
	if (!v || !by_min) {
		free(v);
		free(by_min);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		if (objs[i].level == 0)
			by_min[m++] = &objs[i];
	qsort(by_min, m, sizeof(*by_min), cmp_min);
	while (cur && k < n) {
		const bk_obj *next = NULL;
		uint64_t want = cur->max_txid + 1;
		v[k++] = cur;
		if (want > target || want == 0)
			break;
		for (size_t i = lower_bound(by_min, m, want);
		     i < m && by_min[i]->min_txid == want; i++) {
			const bk_obj *o = by_min[i];
			if (o->epoch < cur->epoch)
				continue;
			if (!next || o->epoch > next->epoch ||
			    (o->epoch == next->epoch &&
			     o->max_txid > next->max_txid))
				next = o;
		}
		cur = next;
	}
	free(by_min);
	*out = v;
	*nout = k;
	return 0;
}

static int cmp_start(const void *a, const void *b)
{
	return start_order(*(const bk_obj *const *)a,
			   *(const bk_obj *const *)b);
}

int bk_obj_starts(const bk_obj *objs, size_t n, const bk_obj ***out,
		  size_t *nout)
{
	const bk_obj **v = calloc(n ? n : 1, sizeof(*v));
	size_t k = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (objs[i].level == 0 && objs[i].min_txid == 1)
			v[k++] = &objs[i];
	qsort(v, k, sizeof(*v), cmp_start);
	*out = v;
	*nout = k;
	return 0;
}

/* Sorts L1 pointers by min TXID, then by max TXID descending. */
static int cmp_l1(const void *a, const void *b)
{
	const bk_obj *x = *(const bk_obj *const *)a;
	const bk_obj *y = *(const bk_obj *const *)b;

	if (x->min_txid != y->min_txid)
		return x->min_txid < y->min_txid ? -1 : 1;
	return x->max_txid > y->max_txid ? -1 : x->max_txid < y->max_txid;
}

/* The index j >= from of the chain element whose max TXID is txid (max
 * TXIDs rise strictly along a chain), or SIZE_MAX. */
static size_t chain_find(const bk_obj **chain, size_t from, size_t n,
			 uint64_t txid)
{
	size_t lo = from, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (chain[mid]->max_txid < txid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && chain[lo]->max_txid == txid ? lo : SIZE_MAX;
}

void bk_obj_mark_l1(const bk_obj *objs, size_t n, const bk_obj **chain,
		    size_t nchain, bool *keep)
{
	for (size_t c = 0; c < n; c++) {
		const bk_obj *o = &objs[c];
		size_t lo = 1, hi = nchain, i, j;
		if (o->level != 1)
			continue;
		while (lo < hi) { /* the element whose min TXID is o's */
			size_t mid = lo + (hi - lo) / 2;
			if (chain[mid]->min_txid < o->min_txid)
				lo = mid + 1;
			else
				hi = mid;
		}
		i = lo;
		if (i >= nchain || chain[i]->min_txid != o->min_txid)
			continue;
		j = chain_find(chain, i, nchain, o->max_txid);
		if (j != SIZE_MAX && chain[j]->post == o->post)
			keep[c] = true;
	}
}

int bk_obj_substitute(const bk_obj *objs, size_t n, const bk_obj **chain,
		      size_t nchain, uint64_t target, bool by_time,
		      int64_t ts_ms, const bk_obj ***out, size_t *nout)
{
	const bk_obj **l1 = NULL, **v = NULL;
	size_t m = 0, k = 0;

	*out = NULL;
	*nout = 0;
	l1 = calloc(n ? n : 1, sizeof(*l1));
	v = calloc(nchain ? nchain : 1, sizeof(*v));
	if (!l1 || !v) {
		free(l1);
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		if (objs[i].level == 1 && objs[i].max_txid <= target &&
		    (!by_time || objs[i].ts_ms <= ts_ms))
			l1[m++] = &objs[i];
	qsort(l1, m, sizeof(*l1), cmp_l1);
	if (nchain)
		v[k++] = chain[0];
	for (size_t i = 1; i < nchain;) {
		const bk_obj *best = NULL;
		size_t best_j = 0;
		for (size_t c = lower_bound(l1, m, chain[i]->min_txid);
		     c < m && l1[c]->min_txid == chain[i]->min_txid; c++) {
			size_t j = chain_find(chain, i, nchain,
					      l1[c]->max_txid);
			if (j != SIZE_MAX && chain[j]->post == l1[c]->post &&
			    (!best || j > best_j)) {
				best = l1[c];
				best_j = j;
			}
		}
		if (best) {
			v[k++] = best;
			i = best_j + 1;
		} else {
			v[k++] = chain[i++];
		}
	}
	free(l1);
	*out = v;
	*nout = k;
	return 0;
}

int bk_obj_first_header(bk_store *s, const char *key, ltx_header *hdr,
			char *err, size_t errlen)
{
	uint8_t b[4 + LTX_HEADER_SIZE];
	ltx_err le = {0};
	uint64_t got = 0;
	int rc, fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	rc = bk_store_get(s, key, 0, sizeof(b), fd, &got, err, errlen);
	if (rc == 0 && got < sizeof(b))
		rc = -ENODATA;
	if (rc == 0)
		rc = lib_io_pread_full(fd, b, sizeof(b), 0, NULL);
	if (rc == 0)
		rc = ltx_header_decode(b + 4, hdr, &le);
	if (rc < 0 && !err[0])
		snprintf(err, errlen, "backup: object %s offset 4: %s", key,
			 le.msg[0] ? le.msg : strerror(-rc));
	close(fd);
	return rc;
}
