/*
 * Backup objects: their names and the chain a restore follows
 * (docs/BACKUP.md).
 *
 * Keys:  L0 [PREFIX/]DB/l0/EEEEEEEEEEEEEEEE-MMMMMMMMMMMMMMMM-XXXXXXXXXXXXXXXX-CCCCCCCCCCCCCCCC.ltx
 *        L1 [PREFIX/]DB/l1/EEEEEEEEEEEEEEEE-MMMMMMMMMMMMMMMM-XXXXXXXXXXXXXXXX-CCCCCCCCCCCCCCCC-TTTTTTTTTTTTTTTT.ltx
 *        E epoch of the primary that uploaded it, M its first record's
 *        min TXID, X its last record's max TXID, C the database checksum
 *        after its last record (post-apply), T (L1 only) the LTX
 *        timestamp (ms) of its last transaction; 16 lower-case hex
 *        digits each.
 *
 * Body:  records back to back, each as in the node's LTX log
 *        (fs/log.h, docs/STORAGE.md):
 *          off size field
 *            0    4 length L of the LTX file that follows (big-endian)
 *            4    L LTX file (shared/LTX.md)
 *
 * Rules:
 *   O1 records in an object are contiguous (min TXID = previous max TXID
 *      + 1, pre-apply checksum = previous post-apply) or restart with a
 *      snapshot (min TXID 1); the first record's min is M, the last's max
 *      X and its post-apply C.
 *   O2 an object whose M is 1 starts a chain: it holds exactly one
 *      record, a snapshot of the whole database at X (the uploader
 *      closes an object before a snapshot record and after one), so it
 *      can start a restore to any TXID >= X.
 *   O3 the chain to a target TXID T starts at the highest start object
 *      with X <= T in the order (epoch, X): the newest primary's history
 *      first (a new primary that found the store ahead of its own
 *      history starts a chain below the old primary's last snapshot; a
 *      stale primary's late snapshot never wins), and goes on, from
 *      position P in epoch E, with the object of min TXID P+1 of the
 *      highest epoch >= E, while its M <= T. Objects of a lower epoch
 *      than the one followed are never used after it (a stale primary's
 *      late uploads lose to the newer primary's).
 *   O4 an uploader of epoch E puts an object only after the store
 *      answered that db holds no object of an epoch above E
 *      (bk_obj_newer_epoch; the uploader's rule U2 has the race that
 *      remains). Only L0 objects count.
 *   O5 an L1 object (compact.h) holds exactly one record: the merge of
 *      the records of consecutive L0 objects of one chain, none of them
 *      a start object; its header's min TXID is M, pre-apply checksum
 *      the first merged record's, max TXID X, commit, post-apply C and
 *      timestamp T the last one's; all its records had one page size
 *      and non-decreasing timestamps (so T is the newest). Applying it
 *      gives the same database, byte for byte, as applying them one by
 *      one. An L1 name is valid only in l1/, an L0 name only in l0/.
 *   O6 a restore computes the L0 chain (O3), then substitutes: walking
 *      it after its start object, at element i it takes the L1 object
 *      whose M is element i's min TXID and whose (X, C) are (max TXID,
 *      post-apply) of that or a later element j >= i, with X <= the
 *      target TXID and, for a restore by time, T <= the target time; the
 *      largest j wins and replaces elements i..j. The match is by
 *      position and checksum, so an L1 of another history (another
 *      checksum at its X) is never used; the restore still verifies
 *      every record (an L1 whose pre-apply checksum does not follow
 *      fails it).
 */
#ifndef BACKUP_OBJECT_H
#define BACKUP_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"
#include "store.h"

typedef struct bk_obj {
	const char *key;         /* points into the bk_keys it came from */
	uint64_t epoch, min_txid, max_txid, post;
	int level;               /* 0: L0, 1: L1 (rule O5) */
	int64_t ts_ms;           /* L1: T, its last transaction's time */
} bk_obj;

/* The key prefix of db's L0 objects: "PREFIX/DB/l0/" ("DB/l0/" when
 * prefix is ""). -ENAMETOOLONG when it does not fit. */
int bk_obj_dir(char *buf, size_t len, const char *prefix, const char *db);
/* The key of an object (of its level: o->level, o->ts_ms for L1). */
int bk_obj_key(char *buf, size_t len, const char *prefix, const char *db,
	       const bk_obj *o);
/* Parses key's last part; false when it is not an object's name. */
bool bk_obj_parse(const char *key, bk_obj *out);

/* db's objects of both levels in the store (one listing of
 * "PREFIX/DB/"), parsed (others ignored), in key order: L0s, then L1s.
 * The keys are kept in *keys (bk_keys_free after *out is freed). */
int bk_obj_list(bk_store *s, const char *prefix, const char *db,
		bk_keys *keys, bk_obj **out, size_t *n, char *err,
		size_t errlen);

/* Rule O4: the highest epoch above epoch of any of db's objects into
 * *out (0: none). Keys sort by epoch first, so this asks the store for
 * the first key after "DIR/EEEEEEEEEEEEEEEE-~" ('~' sorts after every
 * hex digit): one key; only when that key is not an object's name does
 * it list the whole directory. */
int bk_obj_newer_epoch(bk_store *s, const char *prefix, const char *db,
		       uint64_t epoch, uint64_t *out, char *err,
		       size_t errlen);

/* Rule O3: the L0 objects (pointers into objs; L1s are ignored) of the
 * chain to target (UINT64_MAX: the newest) into *out (malloc'd), *nout
 * of them; 0 objects when no start object has X <= target. start (NULL:
 * rule O3's) is the start object to follow from. O(n log n). */
int bk_obj_chain(const bk_obj *objs, size_t n, const bk_obj *start,
		 uint64_t target, const bk_obj ***out, size_t *nout);
/* The LTX header of object key's first record (its first 4 + 100 bytes,
 * one ranged GET): for a start object, its snapshot's time. */
int bk_obj_first_header(bk_store *s, const char *key, ltx_header *hdr,
			char *err, size_t errlen);

/* Every start object (rule O2; L0 only), in rule O3's order (epoch, then
 * X), lowest first. */
int bk_obj_starts(const bk_obj *objs, size_t n, const bk_obj ***out,
		  size_t *nout);

/* Sets keep[i] (keep indexed like objs) for every L1 object objs[i] that
 * stands for a run of chain (rule O6, whatever the target): its M is the
 * min TXID of an element after the start, its (X, C) those of that or a
 * later element. O(n log nchain). */
void bk_obj_mark_l1(const bk_obj *objs, size_t n, const bk_obj **chain,
		    size_t nchain, bool *keep);

/* Rule O6: chain (bk_obj_chain's) with runs of its L0 objects replaced
 * by the L1 objects of objs that stand for them, L1 X <= target and, when
 * by_time, T <= ts_ms, into *out (malloc'd; pointers into chain's objects
 * and objs), *nout of them. O(n log n). */
int bk_obj_substitute(const bk_obj *objs, size_t n, const bk_obj **chain,
		      size_t nchain, uint64_t target, bool by_time,
		      int64_t ts_ms, const bk_obj ***out, size_t *nout);

#endif
