/*
 * SQLite rollback journal (shared/SQLITE.md, "Rollback journal"): hot
 * journal detection and playback, used when a node starts after a crash.
 *
 * Journal header (sector-sized, the rest zero), big-endian:
 *   off size field
 *     0    8 magic d9 d5 05 f9 20 a1 63 d7
 *     8    4 nRec: records that follow (0xFFFFFFFF: to end of file)
 *    12    4 checksum initialiser
 *    16    4 database size in pages before the transaction
 *    20    4 sector size
 *    24    4 page size
 * Record: u32 pgno, the page's original content, u32 checksum, where the
 * checksum is the initialiser plus every 200th byte of the page counted
 * back from page_size - 200. A journal may hold several header+records
 * segments, each header at a sector boundary.
 *
 * Playback writes each record's page back (the first bad record ends the
 * playback, as in SQLite) and truncates the database to the first
 * header's size.
 */
#ifndef FS_JOURNAL_H
#define FS_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#define FS_JOURNAL_HDR_MIN 28

extern const uint8_t fs_journal_magic[8];

/* True when the first 8 bytes are the journal magic. */
bool fs_journal_has_magic(const uint8_t *buf, uint64_t len);

/* Rolls the database in db_fd back from the journal in jfd. *out_pages
 * gets the number of pages restored. 0 or -errno. */
int fs_journal_rollback(int jfd, int db_fd, uint32_t *out_pages);

#endif
