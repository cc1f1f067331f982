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
 *
 * Super-journal pointer: a journal that is part of a multi-database
 * transaction (fs/superjournal.h) ends with the super-journal's full path
 * name, written by SQLite when the transaction commits (after the records,
 * at a sector boundary when synchronous=FULL; the file is cut right after
 * it). Counted back from the end of the file (size S):
 *   off          size field
 *   S-20-len     4    the lock page's number (not checked)
 *   S-16-len     len  the super-journal's path name, no NUL
 *   S-16         4    len
 *   S-12         4    checksum: the sum of the name's bytes, each taken as
 *                     a C char (signed on x86-64, unsigned on arm64, as
 *                     SQLite computes it on that machine), mod 2^32
 *   S-8          8    the journal magic
 * Rules (SQLite's readSuperJournal): no pointer unless S >= 16, the magic
 * is there, 0 < len <= S-16 and len < FS_JOURNAL_SUPER_MAX; a pointer
 * whose checksum does not add up is no pointer.
 */
#ifndef FS_JOURNAL_H
#define FS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FS_JOURNAL_HDR_MIN 28
/* SQLite's limit on a path name (unix VFS mxPathname 512), plus the NUL. */
#define FS_JOURNAL_SUPER_MAX 513

extern const uint8_t fs_journal_magic[8];

/* True when the first 8 bytes are the journal magic. */
bool fs_journal_has_magic(const uint8_t *buf, uint64_t len);

/* Rolls the database in db_fd back from the journal in jfd. *out_pages
 * gets the number of pages restored. 0 or -errno. */
int fs_journal_rollback(int jfd, int db_fd, uint32_t *out_pages);

/* The super-journal pointer at the end of the journal in jfd (above), as
 * a NUL-terminated path in out (n >= FS_JOURNAL_SUPER_MAX), or "" when
 * there is none. 0 or -errno (a read error). */
int fs_journal_read_super(int jfd, char *out, size_t n);

#endif
