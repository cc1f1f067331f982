/* Retention of backups by age: see retain.h. */
#include "retain.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Marks every object on start's chain (to the newest point) as kept, and
 * every L1 object that stands for a run of it (rule O6). */
static int keep_chain(const bk_obj *objs, size_t n, const bk_obj *start,
		      bool *keep)
{
	const bk_obj **chain = NULL;
	size_t nchain = 0;
	int rc = bk_obj_chain(objs, n, start, UINT64_MAX, &chain, &nchain);

	for (size_t i = 0; rc == 0 && i < nchain; i++)
		keep[chain[i] - objs] = true;
	if (rc == 0)
		bk_obj_mark_l1(objs, n, chain, nchain, keep);
	free(chain);
	return rc;
}

int bk_retain_plan(const bk_obj *objs, size_t n, const bk_obj *anchor,
		   uint64_t epoch, bool *del, size_t *ndel)
{
	const bk_obj **starts = NULL;
	bool *keep;
	size_t ns = 0, first = SIZE_MAX;
	int rc;

	*ndel = 0;
	memset(del, 0, n * sizeof(*del));
	if (!anchor)
		return 0;
	keep = calloc(n ? n : 1, sizeof(*keep));
	if (!keep)
		return -ENOMEM;
	rc = bk_obj_starts(objs, n, &starts, &ns);
	for (size_t i = 0; rc == 0 && i < ns; i++)
		if (starts[i] == anchor)
			first = i;
	if (rc == 0 && first == SIZE_MAX)
		rc = -EINVAL; /* the anchor must be one of objs' starts */
	for (size_t i = first; rc == 0 && i < ns; i++) /* R2 */
		rc = keep_chain(objs, n, starts[i], keep);
	for (size_t i = 0; rc == 0 && i < n; i++) /* R3 */
		if (!keep[i] && objs[i].epoch <= epoch) {
			del[i] = true;
			(*ndel)++;
		}
	if (rc < 0) {
		memset(del, 0, n * sizeof(*del));
		*ndel = 0;
	}
	free(starts);
	free(keep);
	return rc;
}

/* R1: the highest start whose snapshot time is at or before cutoff_ms
 * (NULL: none), looking at the starts from the highest down. */
static int find_anchor(bk_store *s, const bk_obj *objs, size_t n,
		       int64_t cutoff_ms, const bk_obj **out, int64_t *out_ms,
		       char *err, size_t errlen)
{
	const bk_obj **starts = NULL;
	size_t ns = 0;
	int rc = bk_obj_starts(objs, n, &starts, &ns);

	*out = NULL;
	for (size_t i = ns; rc == 0 && i-- > 0;) {
		ltx_header hdr;
		rc = bk_obj_first_header(s, starts[i]->key, &hdr, err, errlen);
		if (rc == 0 && hdr.timestamp <= cutoff_ms) {
			*out = starts[i];
			*out_ms = hdr.timestamp;
			break;
		}
	}
	free(starts);
	return rc;
}

int bk_retain_run(bk_store *s, const char *prefix, const char *db,
		  int64_t cutoff_ms, uint64_t epoch, bk_retain_result *res,
		  char *err, size_t errlen)
{
	bk_keys keys = {0};
	bk_obj *objs = NULL;
	const bk_obj *anchor = NULL;
	bool *del = NULL;
	size_t n = 0, ndel = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	rc = bk_obj_list(s, prefix, db, &keys, &objs, &n, err, errlen);
	if (rc == 0)
		rc = find_anchor(s, objs, n, cutoff_ms, &anchor,
				 &res->anchor_ms, err, errlen);
	if (rc == 0 && anchor) {
		res->anchor_txid = anchor->max_txid;
		del = calloc(n, sizeof(*del));
		rc = del ? bk_retain_plan(objs, n, anchor, epoch, del, &ndel) :
			   -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && del && i < n; i++) { /* R4 */
		if (!del[i])
			continue;
		rc = bk_store_delete(s, objs[i].key, err, errlen);
		if (rc == -ENOENT)
			rc = 0; /* already gone */
		if (rc == 0)
			res->deleted++;
	}
	free(del);
	free(objs);
	bk_keys_free(&keys);
	return rc;
}
