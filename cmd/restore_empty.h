/*
 * backup.restore-on-empty (docs/BACKUP.md, "Starting from a backup"): a
 * new node starts from the backup store instead of from nothing.
 *
 * Rules:
 *   E1 Only with backup.restore-on-empty: true and a backup.type, only on
 *      a node with lease.candidate: true (a replica gets its databases
 *      from the primary), and only when the data directory holds no
 *      database (no dbs/NAME/database file): a node that has data
 *      never has it replaced.
 *   E2 Every database with an object in the store (keys
 *      [PREFIX/]NAME/l0/OBJECT, object.h) is restored to its newest
 *      point by bk_restore (every record verified, the final checksum,
 *      integrity_check), written to dbs/NAME/database, while each
 *      record is appended to a new LTX log dbs/NAME/log as a replica
 *      appends the primary's: the node starts at the store's TXID and
 *      checksum, and the backup continues from there.
 *   E3 A store that cannot be listed or read, or a restore that fails,
 *      stops the start (exit 1, one line naming the store and the
 *      error) after removing what it restored: the next start tries
 *      again on an empty directory. A store that holds nothing starts
 *      the node empty (logged).
 */
#ifndef CMD_RESTORE_EMPTY_H
#define CMD_RESTORE_EMPTY_H

#include <stdint.h>

#include "backup/store.h"
#include "cfg.h"

/* The backup: section's store (backup_cmd.c). */
bk_store_opts cmd_backup_store_opts(const ltxfs_cfg *c);

/* Rules E1-E3, before the node mounts; 0, or -errno after a line on
 * stderr. */
int cmd_restore_on_empty(const ltxfs_cfg *cfg);

#endif
