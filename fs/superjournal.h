/*
 * Super-journals: SQLite's record of a write transaction across two or
 * more attached databases in rollback-journal modes ("master journals"
 * before SQLite 3.33). docs/STORAGE.md, "Transactions across attached
 * databases", says what they mean for a node and its replicas.
 *
 * SQLite names one <main>-mjXXXXXX9XX beside the main database (<main> is
 * its file name, X random upper-case hex), and
 * commits a transaction that writes several databases (DELETE, TRUNCATE
 * or PERSIST mode, synchronous not OFF, the main database a file) so:
 *   1. create it (O_CREAT|O_EXCL), write the full path of every child
 *      journal into it, fsync it and its directory;
 *   2. for each database: write the super-journal's path at the end of
 *      its journal (fs/journal.h), sync the journal, write and sync the
 *      database file;
 *   3. delete the super-journal, and sync the directory: THE COMMIT;
 *   4. finalise each child journal (delete, truncate or zero it) as a
 *      single-database commit would; errors here are ignored.
 * A hot journal that points to a super-journal is rolled back only while
 * that super-journal exists (a regular file of 0 bytes counts as absent,
 * as SQLite's access() says): once it is gone the transaction committed
 * and the journal is merely finalised. After a rollback SQLite deletes
 * the super-journal once no child journal points to it any more.
 *
 * Content (SQLite writes it, ltxfs only reads it):
 *   the child journals' full path names, each followed by one NUL byte.
 *
 * ltxfs keeps them as local files of this node, never in any LTX log, in
 * <data.dir>/superjournals/<name> (FS_SJ_DIR), shown in the mount under
 * their own name while <main> is a database there. Their creation,
 * fsync and deletion make the directory durable (SQLite's directory
 * fsync through FUSE reaches no one).
 *
 * Paths: SQLite names files by their full path as the application sees
 * it. A path whose directory is this node's mount point is looked up in
 * the store; a super-journal of another name pattern or directory (the
 * main database outside the mount) is looked up at its path, as SQLite
 * would: the daemon must see that path as the application does.
 */
#ifndef FS_SUPERJOURNAL_H
#define FS_SUPERJOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define FS_SJ_DIR "superjournals"

/* Whether name is "<main>-mjXXXXXX9XX" or "<main>-mjXXXXXXXX" (X
 * upper-case hex; the first is SQLite's since 3.6.0, the second older)
 * with a non-empty <main>: main (may be NULL) gets <main> when it fits in
 * mainlen, *out_key (may be NULL) a number below 2^33 that tells the
 * names of one <main> apart. */
bool fs_sj_parse_name(const char *name, char *main, size_t mainlen,
		      uint64_t *out_key);
/* The name of main's super-journal key (the reverse). */
void fs_sj_format_name(const char *main, uint64_t key, char *buf, size_t n);

/* The last component of path (path itself when it has no '/'). */
const char *fs_sj_basename(const char *path);

/* --- the store (<data_dir>/superjournals) --- */

/* Opens name with open(2) flags (O_CREAT creates the store first);
 * *out_fd is the caller's to close. */
int fs_sj_open(const char *data_dir, const char *name, int flags,
	       mode_t mode, int *out_fd);
int fs_sj_stat(const char *data_dir, const char *name, struct stat *out);
int fs_sj_truncate(const char *data_dir, const char *name, off_t size);
/* fsync (fdatasync) of fd, then of the store's directory. */
int fs_sj_fsync(const char *data_dir, int fd, bool datasync);
/* Removes name and syncs the store's directory. */
int fs_sj_unlink(const char *data_dir, const char *name);

/* fn for every super-journal in the store; a non-zero return stops and
 * is returned. 0 when the store does not exist. */
typedef int (*fs_sj_each_fn)(void *ctx, const char *name);
int fs_sj_foreach(const char *data_dir, fs_sj_each_fn fn, void *ctx);

/* fn for every child journal path the super-journal name lists, in its
 * order; a non-zero return stops and is returned. */
typedef int (*fs_sj_child_fn)(void *ctx, const char *path);
int fs_sj_foreach_child(const char *data_dir, const char *name,
			fs_sj_child_fn fn, void *ctx);

/* --- SQLite's rules --- */

enum fs_sj_fate {
	FS_SJ_NONE = 0,       /* the journal names no super-journal */
	FS_SJ_ROLL_BACK = 1,  /* it does, and that one exists: roll back */
	FS_SJ_COMMITTED = 2,  /* it does, and that one is gone: committed */
};

/* What SQLite makes of the hot journal in jfd (of a database of this
 * node; mountpoint may be NULL): *out, and in sj (n >=
 * FS_JOURNAL_SUPER_MAX) the super-journal's path or "". */
int fs_sj_journal_fate(int jfd, const char *data_dir, const char *mountpoint,
		       enum fs_sj_fate *out, char *sj, size_t n);

/* At start, once every database has been recovered: removes each
 * super-journal of the store that no child journal points to any more
 * (SQLite would leave one whose transaction broke off before step 2 for
 * ever), with an info line. One that a journal of a database out of
 * service, or of a file outside the mount, may still need is kept. */
int fs_sj_sweep(const char *data_dir, const char *mountpoint);

#endif
