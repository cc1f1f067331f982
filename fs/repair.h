/*
 * `ltxfs repair`: a database whose LTX log is damaged gets a new log that
 * starts with a snapshot of the database, on a stopped node. In order:
 *
 *   1. fs_log_check_all (log.h) reads the whole log: repair goes on only
 *      when a record breaks R1-R3 (a torn tail is not damage); it gives
 *      the highest TXID the log names;
 *   2. fs_repair_settle brings the database file to what SQLite reads: a
 *      hot rollback journal is played back (the transaction was never
 *      acknowledged: its journal was still there; but one that points to
 *      a super-journal that is gone had committed, and is only removed),
 *      the WAL's committed
 *      frames are written into the file (a checkpoint), and the journal,
 *      WAL and -shm backing files go;
 *   3. the caller checks the file (`PRAGMA integrity_check`, cmd/);
 *   4. fs_repair_relog writes the new log in log.new/ (one snapshot record:
 *      min TXID 1, max TXID = that highest TXID + 1, so no node has that
 *      position and every replica re-snapshots), swaps it with log/
 *      (renameat2 RENAME_EXCHANGE: at every moment log/ is one whole log),
 *      moves the damaged one to log.damaged-<time>/ (fs_log_set_aside) and
 *      removes the clean marker (the next start checksums the database
 *      against the new log).
 * A crash at any point leaves either the damaged log (repair again) or the
 * new one in log/.
 */
#ifndef FS_REPAIR_H
#define FS_REPAIR_H

#include <stddef.h>
#include <stdint.h>

#include "ltx/pos.h"

/* Step 2; dir is <data.dir>/dbs/<name>; mountpoint (may be NULL) where
 * the node mounts, for a journal that points to a super-journal
 * (fs/superjournal.h). *out_pages gets the database's size in pages (0:
 * it has none). msg says what was done, or why not. */
int fs_repair_settle(const char *dir, const char *data_dir,
		     const char *mountpoint, const char *name,
		     uint32_t *out_pages, char *msg, size_t msglen);

/* Step 4: the new log with one snapshot at TXID txid, written by node_id,
 * zstd-compressed at zstd_level (0: not). *out gets its position; aside
 * where the damaged log went. */
int fs_repair_relog(const char *dir, const char *name, uint64_t txid,
		    uint64_t node_id, int zstd_level, ltx_pos *out,
		    char *aside, size_t asidelen, char *msg, size_t msglen);

#endif
