/*
 * LTX against a plain SQLite database file: its page size, its database
 * checksum, snapshots of it, and applying an LTX file to it. Used by the
 * `ltxfs ltx` tool, `ltxfs verify` and the db core. All of it streams in
 * bounded memory.
 */
#ifndef LTX_DBFILE_H
#define LTX_DBFILE_H

#include <stdint.h>

#include "decoder.h"
#include "encoder.h"
#include "ltx.h"

/* Reads the page size from a database's header (offset 16; 1 = 65536).
 * -EBADMSG (with err) when the file is not a SQLite database. */
int ltx_dbfile_page_size(int fd, uint32_t *out_page_size, ltx_err *err);

/* The database checksum of the file's pages 1..size/page_size, and the
 * page count. The file size must be a whole number of pages. */
int ltx_dbfile_checksum(int fd, uint32_t page_size, uint32_t *out_pages,
			uint64_t *out_checksum, ltx_err *err);

/* Writes a snapshot of the whole file (min = max = txid; txid 1 makes a
 * true snapshot, anything else a full-page increment with the given
 * pre-apply checksum). flags as in ltx_header. */
int ltx_dbfile_encode(int fd, const ltx_header *tmpl, int zstd_level,
		      ltx_write_fn fn, void *ctx, ltx_trailer *out,
		      ltx_err *err);

/* Applies the LTX read by dec (header not yet read) to the database in
 * fd. *io_checksum is the database's current checksum; the header's
 * pre-apply checksum must match unless the file is a snapshot. A file
 * whose page size differs from the database header's (a VACUUM after
 * PRAGMA page_size) holds every page, and its post-apply checksum counts
 * only them, as a snapshot's does. On success
 * *io_checksum is the post-apply checksum, verified against the pages
 * written. The LTX should be verified first (ltx_decoder_verify) by a
 * caller that needs the database untouched when the file is corrupt. */
int ltx_dbfile_apply(int fd, ltx_decoder *dec, uint64_t *io_checksum,
		     ltx_header *out_hdr, ltx_err *err);

#endif
