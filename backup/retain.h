/*
 * Retention of backups by age (docs/BACKUP.md, "Retention"): which of a
 * database's objects (object.h) the store no longer needs, and their
 * deletion. The primary's uploader runs it; nothing else deletes.
 *
 * Given a cutoff time (now - backup.retention) and the uploader's epoch:
 *
 *   R1 the anchor is the start object (rule O2) that a restore to the
 *      cutoff would start from: among the starts whose snapshot (the
 *      LTX timestamp of its record) is at or before the cutoff, the
 *      highest in rule O3's order (X, then epoch). No such start: nothing
 *      is deleted (the store is younger than the retention).
 *   R2 kept: the anchor and every start after it in that order, every
 *      object on the chain (rule O3, to the newest point) of each of them,
 *      and every L1 object that stands for a run of one of those chains
 *      (rule O6; bk_obj_mark_l1).
 *      A restore to a time at or after the cutoff, or to a TXID at or
 *      after the anchor's X, starts at one of these starts (each picks
 *      the highest start at or before its target, and the anchor
 *      qualifies), and a chain to a target is a prefix of the chain to
 *      the newest point; so it reads only kept objects.
 *   R3 deleted: every object not kept whose epoch is at most the
 *      uploader's (a newer primary's objects are never touched): the
 *      chains of older starts, and objects no kept chain reaches (a stale
 *      primary's late uploads, an abandoned history).
 *   R4 deletion goes in key order and stops at the first failure; a
 *      partial pass leaves only unneeded objects behind, which the next
 *      pass deletes.
 */
#ifndef BACKUP_RETAIN_H
#define BACKUP_RETAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "object.h"
#include "store.h"

/* Rules R2 and R3 over objs[0..n): del[i] is set for each object to
 * delete, given the anchor (a pointer into objs; NULL: none is deleted).
 * *ndel is their count. */
int bk_retain_plan(const bk_obj *objs, size_t n, const bk_obj *anchor,
		   uint64_t epoch, bool *del, size_t *ndel);

/* What a pass did. */
typedef struct bk_retain_result {
	uint64_t deleted;        /* objects */
	uint64_t anchor_txid;    /* 0: no anchor (nothing deleted) */
	int64_t anchor_ms;
} bk_retain_result;

/* One pass over db's objects in the store (R1..R4): lists them, reads
 * the snapshot times of the starts newer than the anchor (a 104-byte
 * ranged GET each), deletes. 0 or a negative errno with err set. */
int bk_retain_run(bk_store *s, const char *prefix, const char *db,
		  int64_t cutoff_ms, uint64_t epoch, bk_retain_result *res,
		  char *err, size_t errlen);

#endif
