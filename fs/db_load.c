/*
 * A first load: a database file written with no rollback journal while
 * the database holds no committed page. That is a database copied in
 * (cp, dd, install, shutil.copy, any block size, in any order, with holes
 * and a final ftruncate), VACUUM INTO, or a first transaction in
 * journal_mode=OFF. docs/STORAGE.md, "A copy into the mount".
 *
 *            write, or ftruncate to more than 0
 *   NONE ------------------------------------------> LOADING
 *    ^  ^                                              |  |
 *    |  |  complete: recorded as TXID+1, a snapshot    |  | the last handle
 *    |  +----------------------------------------------+  | closed, not a
 *    |     (fsync, a handle's close, a journal or WAL      | database: the
 *    |      starting, the last close, a retry)             | file emptied
 *    +-----------------------------------------------------+
 *
 * LOADING takes any bytes at any offset and size, except that what a
 * write puts in bytes 0..17 must be SQLite's magic and a valid page size
 * (a file that is not SQLite fails at its first write, as before). Bytes
 * go to the backing file as they come: nothing is buffered, so memory
 * does not grow with the file. Nothing is recorded before the whole file
 * passes fs_db_load_check:
 *
 *   C1. at least the 100-byte header; the magic "SQLite format 3\0";
 *   C2. a page size (offset 16, u16 BE; 1 means 65536) that is a power
 *       of two in 512..65536; file format versions (offsets 18, 19) of 1
 *       or 2; payload fractions (offsets 21..23) of 64, 32, 32, as SQLite
 *       requires;
 *   C3. a size that is a whole number of pages;
 *   C4. the header's page count (offset 28, valid when the version-valid-
 *       for number at 92 equals the change counter at 24, and not 0) is
 *       no more than the pages in the file: it is the database's size (as
 *       SQLite, pages past it are not the database's). A header whose
 *       count is not valid (last written by SQLite before 3.7.0) cannot
 *       say the copy is complete: the file's size counts, and only at the
 *       last close (before it, the check answers -EINPROGRESS).
 *
 * Readers meanwhile see the file as it is written, as on any file
 * system; -pos stays where it was, and replicas see nothing until the
 * record. A rollback journal or WAL cannot start on an incomplete load
 * (EBUSY): it would make SQLite's writes part of a half-copied file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "db_i.h"
#include "lib/bytes.h"
#include "lib/io.h"
#include "lib/log.h"

#define LOAD_HDR 100
#define LOAD_HDR_CHECKED 18     /* magic and page size: checked per write */

static const uint8_t sqlite_magic[16] = "SQLite format 3";

static bool page_size_ok(uint32_t ps)
{
	return ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0;
}

/* The page size field (offset 16) as a number of bytes. */
static uint32_t page_size_field(const uint8_t *p)
{
	uint32_t ps = get_be16(p);

	return ps == 1 ? 65536 : ps;
}

int fs_db_load_check(int fd, bool final, uint32_t *out_ps,
		     uint32_t *out_commit, char *why, size_t whylen)
{
	uint8_t h[LOAD_HDR];
	struct stat st;
	uint64_t size, pages;
	uint32_t ps, count;
	int rc;

	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(why, whylen, "fstat: %s", strerror(-rc));
		return rc;
	}
	size = (uint64_t)st.st_size;
	rc = lib_io_pread_full(fd, h, sizeof(h), 0, NULL);
	if (rc == -ENODATA) {
		snprintf(why, whylen, "it holds %" PRIu64 " bytes, less than "
			 "a database header", size);
		return -EINVAL;
	}
	if (rc < 0) {
		snprintf(why, whylen, "reading its header: %s", strerror(-rc));
		return rc;
	}
	if (memcmp(h, sqlite_magic, sizeof(sqlite_magic)) != 0) {
		snprintf(why, whylen, "its first bytes are not SQLite's header");
		return -EINVAL;
	}
	ps = page_size_field(h + 16);
	if (!page_size_ok(ps) || h[18] < 1 || h[18] > 2 || h[19] < 1 ||
	    h[19] > 2 || h[21] != 64 || h[22] != 32 || h[23] != 32) {
		snprintf(why, whylen, "its header is not valid (page size %"
			 PRIu32 ", format %u/%u, payload fractions %u/%u/%u)",
			 ps, h[18], h[19], h[21], h[22], h[23]);
		return -EINVAL;
	}
	pages = size / ps;
	if (size % ps || pages > UINT32_MAX) {
		snprintf(why, whylen, "its %" PRIu64 " bytes are not a whole "
			 "number of %" PRIu32 "-byte pages", size, ps);
		return -EINVAL;
	}
	count = get_be32(h + 28);
	if (get_be32(h + 92) != get_be32(h + 24) || count == 0) {
		if (!final) {
			snprintf(why, whylen, "its header's page count is not "
				 "valid (written by SQLite before 3.7.0), so "
				 "only its last close says it is complete");
			return -EINPROGRESS;
		}
		count = (uint32_t)pages;
	}
	if (count > pages) {
		snprintf(why, whylen, "its header says %" PRIu32 " pages, the "
			 "file holds %" PRIu64, count, pages);
		return -EINVAL;
	}
	*out_ps = ps;
	*out_commit = count;
	return 0;
}

int fs_db_load_write(fs_db *db, const uint8_t *buf, size_t n, off_t off)
{
	uint64_t from = (uint64_t)off, end = from + n;
	bool bad = false;
	int rc;

	/* Only the header bytes this write brings are checked: writes may
	 * come in any order and size. */
	if (from < sizeof(sqlite_magic) && n > 0)
		bad = memcmp(buf, sqlite_magic + from,
			     (end < sizeof(sqlite_magic) ? end
							 : sizeof(sqlite_magic)) -
				     from) != 0;
	if (!bad && from <= 16 && end >= LOAD_HDR_CHECKED)
		bad = !page_size_ok(page_size_field(buf + (16 - from)));
	if (bad) {
		log_error("db=%s: write of %zu bytes at offset %jd is not a "
			  "SQLite database header; only SQLite databases may "
			  "be stored here", db->name, n, (intmax_t)off);
		return -EINVAL;
	}
	rc = lib_io_pwrite_full(db->fds[FS_KIND_DB], buf, n, off);
	if (rc == 0 && n > 0)
		db->loading = true;
	return rc;
}

/* Records the complete file as the next TXID (every page). */
static int load_record(fs_db *db, uint32_t ps, uint32_t commit,
		       const char *how)
{
	int rc = fs_db_capture(db, NULL, 0, commit, ps, 0, 0, 0, 0);

	if (rc == 0) {
		db->loading = false;
		db->load_final = false;
		db->cap_wal_end = 0;
		fs_db_publish_locked(db);
		fs_db_unfull_locked(db, false, "a first load is in the LTX log");
		log_info("db=%s: %s: a complete database of %" PRIu32 " pages "
			 "of %" PRIu32 " bytes, recorded as TXID %016" PRIx64,
			 db->name, how, commit, ps, db->pos.txid);
		return 0;
	}
	if (fs_db_rc_full(rc)) {
		fs_db_full_locked(db, false, db->pos.txid + 1, how);
		return -ENOSPC;
	}
	if (!db->capture_err) {
		log_error("db=%s: recording a first load failed (%s); refusing "
			  "further writes until restart", db->name,
			  strerror(-rc));
		db->capture_err = rc;
	}
	return rc;
}

/* Empties a file that is not a complete database (the last close). */
static int load_refuse(fs_db *db, const char *why)
{
	struct stat st;
	intmax_t size = fstat(db->fds[FS_KIND_DB], &st) == 0 ? st.st_size : -1;
	int rc;

	log_error("db=%s: the file written into %s (%jd bytes, with no "
		  "journal) is not a complete SQLite database: %s. Nothing is "
		  "recorded and the file is emptied (0 bytes); copy it again "
		  "from a complete database (one no process is writing: "
		  "sqlite3 SRC \".backup COPY\" or VACUUM INTO makes one)",
		  db->name, db->name, size, why);
	rc = lib_io_ftruncate(db->fds[FS_KIND_DB], 0);
	if (rc < 0)
		log_error("db=%s: emptying it: %s", db->name, strerror(-rc));
	db->loading = false;
	db->load_final = false;
	fs_db_unfull_locked(db, false, "a first load was refused");
	return rc < 0 ? rc : -EINVAL;
}

static const char *const load_how[] = {
	[FS_LOAD_SYNC] = "first load synced",
	[FS_LOAD_CLOSE] = "first load closed",
	[FS_LOAD_SETTLE] = "first load ended by SQLite",
	[FS_LOAD_FINAL] = "first load closed",
};

int fs_db_load_end(fs_db *db, enum fs_load_end how, char *why,
		   size_t whylen, bool *out_emptied)
{
	uint32_t ps = 0, commit = 0;
	bool final = how == FS_LOAD_FINAL || db->load_final;
	struct stat st;
	int rc;

	*out_emptied = false;
	if (!db->loading || db->fds[FS_KIND_DB] < 0 || db->readonly)
		return 0; /* a replica's is emptied at its last close */
	if (fstat(db->fds[FS_KIND_DB], &st) == 0 && st.st_size == 0) {
		db->loading = false; /* nothing left to record */
		db->load_final = false;
		return 0;
	}
	rc = fs_db_load_check(db->fds[FS_KIND_DB], final, &ps, &commit, why,
			      whylen);
	if (rc == -EINPROGRESS)
		return rc;
	if (rc == -EINVAL && !final)
		return -EAGAIN;
	if (rc == -EINVAL) {
		*out_emptied = true;
		return load_refuse(db, why);
	}
	if (rc < 0) {
		log_error("db=%s: %s: %s", db->name, load_how[how], why);
		return rc;
	}
	rc = load_record(db, ps, commit, load_how[how]);
	if (rc == -ENOSPC && how == FS_LOAD_FINAL)
		db->load_final = true;
	return rc;
}

int fs_db_load_settle(fs_db *db, const char *what)
{
	char why[256];
	bool emptied;
	int rc = fs_db_load_end(db, FS_LOAD_SETTLE, why, sizeof(why),
				&emptied);

	if (rc != -EAGAIN && rc != -EINPROGRESS)
		return rc;
	log_error("db=%s: refusing to %s (EBUSY): a file is being written "
		  "into %s with no journal (a copy) and is not a complete "
		  "database yet (%s); open it with SQLite once the copy is "
		  "finished and closed", db->name, what, db->name, why);
	return -EBUSY;
}

bool fs_db_load_abandon(fs_db *db)
{
	int rc;

	if (!db->loading || db->fds[FS_KIND_DB] < 0)
		return false;
	log_warn("db=%s: a file was being written into %s (a first load) "
		 "when this node stopped being the primary: it cannot be "
		 "recorded here; emptying it (copy it again on the primary)",
		 db->name, db->name);
	rc = lib_io_ftruncate(db->fds[FS_KIND_DB], 0);
	if (rc < 0)
		log_error("db=%s: emptying it: %s", db->name, strerror(-rc));
	db->loading = false;
	db->load_final = false;
	return true;
}

int fs_db_load_recover(fs_db *db)
{
	char why[256];
	uint32_t ps = 0, commit = 0;
	struct stat st;
	int rc;

	if (db->commit != 0 || db->fds[FS_KIND_DB] < 0 ||
	    fstat(db->fds[FS_KIND_DB], &st) < 0 || st.st_size == 0)
		return 0;
	rc = fs_db_load_check(db->fds[FS_KIND_DB], true, &ps, &commit, why,
			      sizeof(why));
	if (rc == -EINVAL) {
		log_warn("db=%s: its database file (%jd bytes) has no committed "
			 "page in its LTX log and is not a complete SQLite "
			 "database (%s): a copy into it was interrupted (the "
			 "daemon stopped before it was closed); emptying it",
			 db->name, (intmax_t)st.st_size, why);
		return lib_io_ftruncate(db->fds[FS_KIND_DB], 0);
	}
	if (rc < 0) {
		log_error("db=%s: %s", db->name, why);
		return rc;
	}
	log_info("db=%s: its database file has no committed page in its LTX "
		 "log yet (a first load the daemon stopped before recording "
		 "it, or a file put in the data directory): recording its %"
		 PRIu32 " pages as TXID %016" PRIx64, db->name, commit,
		 db->pos.txid + 1);
	return fs_db_capture(db, NULL, 0, commit, ps, 0, 0, 0, 0);
}
