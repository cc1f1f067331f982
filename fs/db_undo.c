/*
 * Taking back the last capture (synchronous replication's failed commit,
 * docs/SYNC.md): what fs_db_capture changed in memory is kept, so that
 * the record can be removed from the log (fs_log_unappend) and the
 * database's position, size, page size and page checksums put back as
 * they were before it.
 *
 * Rules:
 *   D1 only the last capture can be taken back, and only when it was
 *      prepared (fs_db_undo_prepare before its append) and kept
 *      (fs_db_undo_keep after it); any other capture forgets it.
 *   D2 a full record (TXID 1, a new page size, a capture after
 *      recovery) keeps a copy of the whole checksum array; an
 *      incremental one keeps the old entry of each page it changes
 *      (the pages it wrote and the pages a shrinking commit cut off).
 *      Entries cached by fs_db_cksum_get while the record was built are
 *      committed content and stay.
 *   D3 the log goes first: when fs_log_unappend refuses (-ESTALE: the
 *      record is not the log's last), nothing in memory changes; when
 *      its cut fails after the record stopped being served, memory is
 *      put back all the same and the error returned (a crash may then
 *      bring the record back; the caller says the outcome is unknown).
 *
 * capture_mu is held by every function here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db_i.h"

struct fs_undo {
	bool valid;             /* a kept capture can be taken back (D1) */
	uint64_t txid;          /* its TXID */
	ltx_pos pos;            /* the state before it */
	uint32_t commit, page_size;
	bool capture_full;
	uint64_t cap_wal_end;
	uint64_t *all;          /* D2, full: cksums[0..nall) before */
	uint32_t nall;
	uint32_t *pgno;         /* D2, incremental: entries before */
	uint64_t *old;
	size_t n, cap;
};

static void forget(struct fs_undo *u)
{
	free(u->all);
	u->all = NULL;
	u->nall = 0;
	u->n = 0;
	u->valid = false;
}

void fs_db_undo_free(fs_db *db)
{
	if (!db->undo)
		return;
	forget(db->undo);
	free(db->undo->pgno);
	free(db->undo->old);
	free(db->undo);
	db->undo = NULL;
}

static int reserve(struct fs_undo *u, size_t n)
{
	uint32_t *p;
	uint64_t *o;

	if (n <= u->cap)
		return 0;
	p = realloc(u->pgno, n * sizeof(*p));
	if (p)
		u->pgno = p;
	o = p ? realloc(u->old, n * sizeof(*o)) : NULL;
	if (!o)
		return -ENOMEM;
	u->old = o;
	u->cap = n;
	return 0;
}

int fs_db_undo_prepare(fs_db *db, bool full, size_t changes)
{
	struct fs_undo *u = db->undo;

	if (!u) {
		u = calloc(1, sizeof(*u));
		if (!u)
			return -ENOMEM;
		db->undo = u;
	}
	forget(u);
	if (full && db->ncksums > 0) {
		u->all = malloc((size_t)db->ncksums * sizeof(uint64_t));
		if (!u->all)
			return -ENOMEM;
		memcpy(u->all, db->cksums, (size_t)db->ncksums *
						   sizeof(uint64_t));
		u->nall = db->ncksums;
	} else if (!full && reserve(u, changes) < 0) {
		return -ENOMEM;
	}
	u->pos = db->pos;
	u->commit = db->commit;
	u->page_size = db->page_size;
	u->capture_full = db->capture_full;
	u->cap_wal_end = db->cap_wal_end;
	return 0;
}

void fs_db_undo_note(fs_db *db, uint32_t pgno)
{
	struct fs_undo *u = db->undo;

	/* prepare reserved one entry per change; a full record keeps the
	 * whole array instead. */
	if (!u || u->all || u->n >= u->cap)
		return;
	u->pgno[u->n] = pgno;
	u->old[u->n++] = pgno < db->ncksums ? db->cksums[pgno] : 0;
}

void fs_db_undo_keep(fs_db *db, uint64_t txid)
{
	if (!db->undo)
		return;
	db->undo->valid = true;
	db->undo->txid = txid;
}

void fs_db_undo_forget(fs_db *db)
{
	if (db->undo)
		forget(db->undo);
}

/* Puts the checksum array back (D2). */
static void restore_cksums(fs_db *db, struct fs_undo *u)
{
	if (u->all) {
		memset(db->cksums, 0, (size_t)db->ncksums * sizeof(uint64_t));
		memcpy(db->cksums, u->all, (size_t)u->nall * sizeof(uint64_t));
		return;
	}
	/* Newest first, so a page noted twice gets its oldest entry. */
	for (size_t i = u->n; i-- > 0;)
		if (u->pgno[i] < db->ncksums)
			db->cksums[u->pgno[i]] = u->old[i];
}

int fs_db_undo_locked(fs_db *db)
{
	struct fs_undo *u = db->undo;
	int rc;

	if (!u || !u->valid)
		return -ESTALE;
	rc = fs_log_unappend(db->log, u->txid);
	if (rc == -ESTALE)
		return rc; /* D3 */
	restore_cksums(db, u);
	db->pos = u->pos;
	db->commit = u->commit;
	db->page_size = u->page_size;
	db->capture_full = u->capture_full;
	db->cap_wal_end = u->cap_wal_end;
	forget(u);
	return rc;
}
