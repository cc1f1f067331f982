/*
 * FUSE adapter (libfuse 3 low-level API). Handlers are thin: decode the
 * request, call one fs_db_* function, send exactly one reply.
 *
 * Inodes: 1 is the root; database slot s (0-based, never reused while
 * mounted) owns inodes FS_INO_BASE + s*8 + kind (enum fs_kind).
 *
 * Caching: every change to a file on this node passes through this
 * kernel, so entries, attributes and pages are cached for long
 * (keep_cache, long timeouts) and reads are served by the page cache.
 * That includes absence: SQLite looks for a hot -journal at every read
 * transaction and a cached ENOENT answers it with no round trip. POSIX
 * locks are left to the kernel (no getlk/setlk handlers), which costs no
 * round trip; the daemon takes SQLite's locks through the mount when it
 * needs them.
 *
 * What changes behind a name's own operations is invalidated, without
 * ever waiting for the directory's lock from a handler:
 *   - <name>-pos exists exactly while <name> does, but is created and
 *     removed by operations on <name>. Its absence is never cached
 *     (op_lookup): invalidating a cached absence needs
 *     fuse_lowlevel_notify_inval_entry, which takes the directory's lock
 *     in the kernel; from op_create (the kernel holds that lock until
 *     the reply) it would deadlock, and after the reply (or from another
 *     thread) it would come after the caller's open() had returned, so a
 *     stat at once would still see the absence. SQLite never looks
 *     <name>-pos up; a program that polls a -pos before its database
 *     exists pays a round trip per look. When <name> is unlinked,
 *     op_unlink invalidates the -pos inode's attributes before it
 *     replies (notify_inval_inode with offset -1 takes no lock in the
 *     kernel: it bumps the attribute version and touches no page), so
 *     the still-cached entry answers stat with a getattr (ENOENT) and
 *     open with an open (ENOENT), until the database is created again.
 *   - On a replica every file changes behind the kernel's back: the
 *     apply path (a stream thread, never a FUSE handler, holding none of
 *     the locks handlers take) invalidates each entry it creates or
 *     deletes, and a database's -pos with it (mount_inval).
 * On a primary the -journal, -wal and -shm are created and removed by
 * SQLite through this kernel, which updates their entries itself.
 *
 * A database that cannot be opened for damage (fs_db_open: -EBADMSG) is
 * out of service: kept in dmg with the reason, its names answer EBADMSG,
 * the others are served. See struct damaged.
 *
 * Super-journals (fs/superjournal.h), <main>-mjXXXXXX9XX, have their own
 * inodes and handlers: fs/mount_sj.c.
 */
#define FUSE_USE_VERSION 312

#include "mount.h"
#include "mount_i.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "log.h"
#include "superjournal.h"

#define FS_INO_BASE 16
#define FS_INO_PRIMARY 2
#define FS_PRIMARY_NAME ".primary"
#define FS_HEAL_LOG_NS (10LL * 1000 * 1000 * 1000)

typedef struct slot {
	char *name;
	fs_db *db;
	int opens[FS_KIND_COUNT];
} slot;

/* A database this node does not serve: opening it found damage (its LTX
 * log is corrupt, or the database does not match it). Its name and
 * companions answer EBADMSG. A replica heals it when the primary sends
 * it a record (fs_mount_open_db); a primary keeps it out of service
 * until `ltxfs repair` (docs/STORAGE.md). */
typedef struct damaged {
	char *name;
	char reason[FS_LOG_WHY_MAX + 200];
	int64_t logged_ns;      /* last failed heal logged (monotonic) */
	bool discarded;         /* healing: its log is aside already, only
				 * opening the new copy failed */
} damaged;

struct fs_mount {
	fs_mount_opts opts;
	char *mountpoint;
	char *data_dir;
	struct fuse_session *se;
	bool mounted;
	pthread_mutex_t mu;     /* guards slots, nslots, opens, role, dmg */
	slot *slots;
	size_t nslots, cap;
	damaged *dmg;           /* databases out of service */
	size_t ndmg, capdmg;
	bool readonly;
	char *primary;          /* content of /.primary without "\n" */
};

static void mount_inval(void *ctx, fs_db *db, enum fs_kind kind, int64_t off,
			int64_t len);
static int mount_store(void *ctx, fs_db *db, enum fs_kind kind, uint64_t off,
		       const void *buf, size_t len);

static fs_mount *req_mount(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Splits a mount entry name into database name and kind. */
/* The names of SQLite's temporary files (os_unix.c, unixGetTempname:
 * SQLITE_TEMP_FILE_PREFIX, then random characters). */
#define SQLITE_TEMP_PREFIX "etilqs_"

static int parse_name(const char *name, char *base, enum fs_kind *out_kind)
{
	size_t len = strlen(name);

	*out_kind = FS_KIND_DB;
	for (int k = FS_KIND_JOURNAL; k < FS_KIND_COUNT; k++) {
		size_t sl = strlen(fs_kind_suffix[k]);
		if (len > sl && strcmp(name + len - sl, fs_kind_suffix[k]) == 0) {
			*out_kind = (enum fs_kind)k;
			len -= sl;
			break;
		}
	}
	if (len == 0 || len > FS_NAME_MAX || name[0] == '.')
		return -EINVAL;
	memcpy(base, name, len);
	base[len] = '\0';
	return 0;
}

static fuse_ino_t make_ino(size_t s, enum fs_kind k)
{
	return FS_INO_BASE + (fuse_ino_t)s * 8 + (fuse_ino_t)k;
}

static int split_ino(fs_mount *m, fuse_ino_t ino, fs_db **db, size_t *s,
		     enum fs_kind *k)
{
	size_t idx;

	if (ino < FS_INO_BASE)
		return -ENOENT;
	idx = (size_t)((ino - FS_INO_BASE) / 8);
	*k = (enum fs_kind)((ino - FS_INO_BASE) % 8);
	if (*k >= FS_KIND_COUNT)
		return -ENOENT;
	pthread_mutex_lock(&m->mu);
	*db = idx < m->nslots ? m->slots[idx].db : NULL;
	pthread_mutex_unlock(&m->mu);
	if (s)
		*s = idx;
	return *db ? 0 : -ENOENT;
}

/* Finds a slot by database name (mu held); -1 when absent. */
static ssize_t find_slot(fs_mount *m, const char *name)
{
	for (size_t i = 0; i < m->nslots; i++)
		if (strcmp(m->slots[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/* Finds a damaged database by name (mu held); -1 when absent. */
static ssize_t find_damaged(fs_mount *m, const char *name)
{
	for (size_t i = 0; i < m->ndmg; i++)
		if (strcmp(m->dmg[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

int fs_mount_slot_of(fs_mount *m, const char *name, size_t *out)
{
	ssize_t s;

	pthread_mutex_lock(&m->mu);
	s = find_slot(m, name);
	pthread_mutex_unlock(&m->mu);
	if (s < 0)
		return -ENOENT;
	*out = (size_t)s;
	return 0;
}

int fs_mount_slot_name(fs_mount *m, size_t s, char *buf, size_t n)
{
	int rc = 0;

	pthread_mutex_lock(&m->mu);
	if (s < m->nslots)
		snprintf(buf, n, "%s", m->slots[s].name);
	else
		rc = -ENOENT;
	pthread_mutex_unlock(&m->mu);
	return rc;
}

bool fs_mount_is_replica(fs_mount *m)
{
	bool ro;

	pthread_mutex_lock(&m->mu);
	ro = m->readonly;
	pthread_mutex_unlock(&m->mu);
	return ro;
}

const char *fs_mount_data_dir(const fs_mount *m)
{
	return m->data_dir;
}

/* Says, once per database and role, what happens to a database out of
 * service and what to do (mu held). */
static void explain_damaged(fs_mount *m, const damaged *d)
{
	if (m->readonly)
		log_error("db=%s: out of service: %s. The other databases are "
			  "served; opening this one fails with EBADMSG until "
			  "this replica has moved the damaged log aside and "
			  "taken a fresh snapshot from the primary, as soon as "
			  "the primary sends it", d->name, d->reason);
	else
		log_error("db=%s: out of service on this primary: %s. The other "
			  "databases are served; opening this one fails with "
			  "EBADMSG. To repair it: stop this node, run `ltxfs "
			  "repair [-c ltxfs.yml] %s` (it checks the database, "
			  "moves the damaged log aside and starts a new one; "
			  "docs/STORAGE.md), start the node again", d->name,
			  d->reason, d->name);
}

/* Records name as out of service, or updates its reason (mu held). */
static int add_damaged(fs_mount *m, const char *name, const char *reason)
{
	ssize_t i = find_damaged(m, name);
	damaged *d;

	if (i >= 0) {
		snprintf(m->dmg[i].reason, sizeof(m->dmg[i].reason), "%s",
			 reason);
		return 0;
	}
	if (m->ndmg == m->capdmg) {
		size_t cap = m->capdmg ? m->capdmg * 2 : 4;
		damaged *p = realloc(m->dmg, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		m->dmg = p;
		m->capdmg = cap;
	}
	d = &m->dmg[m->ndmg];
	memset(d, 0, sizeof(*d));
	d->name = strdup(name);
	if (!d->name)
		return -ENOMEM;
	snprintf(d->reason, sizeof(d->reason), "%s", reason);
	m->ndmg++;
	explain_damaged(m, d);
	return 0;
}

static void drop_damaged(fs_mount *m, size_t i)
{
	free(m->dmg[i].name);
	m->dmg[i] = m->dmg[--m->ndmg];
}

static int add_slot(fs_mount *m, const char *name, size_t *out)
{
	fs_db_opts o = {
		.zstd_level = m->opts.zstd_level,
		.node_id = m->opts.node_id,
		.on_commit = m->opts.on_commit,
		.commit_ctx = m->opts.commit_ctx,
		.readonly = m->readonly,
		.mountpoint = m->mountpoint,
		.on_inval = mount_inval,
		.on_store = mount_store,
		.inval_ctx = m,
		.apply_timeout_ms = m->opts.apply_timeout_ms,
		.write_deadline_ns = m->opts.write_deadline_ns,
		.sync_wait = m->opts.sync_wait,
		.sync_ctx = m->opts.sync_ctx,
	};
	char why[FS_LOG_WHY_MAX];
	slot *s;
	ssize_t i;
	int rc;

	if (m->nslots == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		slot *p = realloc(m->slots, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		m->slots = p;
		m->cap = cap;
	}
	s = &m->slots[m->nslots];
	memset(s, 0, sizeof(*s));
	s->name = strdup(name);
	if (!s->name)
		return -ENOMEM;
	rc = fs_db_open(m->data_dir, name, &o, &s->db, why, sizeof(why));
	if (rc < 0) {
		free(s->name);
		/* Damage takes this database alone out of service. */
		if (rc == -EBADMSG && add_damaged(m, name, why) < 0)
			return -ENOMEM;
		return rc;
	}
	if (m->readonly)
		fs_db_set_readonly(s->db, true, m->primary);
	*out = m->nslots++;
	if ((i = find_damaged(m, name)) >= 0)
		drop_damaged(m, (size_t)i);
	return 0;
}

/* A replica's damaged copy, not open: moves its log aside and removes
 * its files (fs_db_discard), so the primary's next record for it starts
 * a new copy. Failures are logged here at most every 10 s. */
static int heal(fs_mount *m, const char *name)
{
	char aside[PATH_MAX], reason[sizeof(((damaged *)0)->reason)] = "";
	bool done = false;
	ssize_t i;
	int rc;

	pthread_mutex_lock(&m->mu);
	i = find_damaged(m, name);
	if (i >= 0) {
		snprintf(reason, sizeof(reason), "%s", m->dmg[i].reason);
		done = m->dmg[i].discarded;
	}
	pthread_mutex_unlock(&m->mu);
	if (done)
		return 0; /* do not replace the damaged copy kept aside */
	rc = fs_db_discard(m->data_dir, name, aside, sizeof(aside));
	pthread_mutex_lock(&m->mu);
	i = find_damaged(m, name);
	if (rc == 0) {
		if (i >= 0)
			m->dmg[i].discarded = true;
		pthread_mutex_unlock(&m->mu);
		log_warn("db=%s: healing a damaged copy (%s): its LTX log is "
			 "moved aside to %s for inspection, its files are "
			 "removed, and it is re-snapshotted from the primary",
			 name, reason, aside[0] ? aside : "(none)");
		return 0;
	}
	if (i >= 0 && lib_clock_monotonic_ns() - m->dmg[i].logged_ns >=
			      FS_HEAL_LOG_NS) {
		m->dmg[i].logged_ns = lib_clock_monotonic_ns();
		log_error("db=%s: cannot heal the damaged copy (%s): moving its "
			  "LTX log aside failed: %s; still out of service, tried "
			  "again at the primary's next record for it", name,
			  reason, strerror(-rc));
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

int fs_mount_open_db(fs_mount *m, const char *name, fs_db **out)
{
	char base[FS_NAME_MAX + 1];
	enum fs_kind k;
	ssize_t s;
	size_t idx;
	bool is_damaged, readonly;
	int rc = 0;

	*out = NULL;
	if (parse_name(name, base, &k) < 0 || k != FS_KIND_DB ||
	    strcmp(base, name) != 0 || fs_sj_parse_name(name, NULL, 0, NULL))
		return -EINVAL;
	pthread_mutex_lock(&m->mu);
	s = find_slot(m, name);
	is_damaged = s < 0 && find_damaged(m, name) >= 0;
	readonly = m->readonly;
	pthread_mutex_unlock(&m->mu);
	if (is_damaged && !readonly)
		return -EBADMSG; /* a primary's: `ltxfs repair` */
	if (is_damaged) {
		/* Outside mu: removing files must not hold up lookups. Only
		 * the stream thread opens databases by name here. */
		rc = heal(m, name);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&m->mu);
	s = find_slot(m, name);
	if (s < 0) {
		rc = add_slot(m, name, &idx);
		s = (ssize_t)idx;
	}
	if (rc == 0)
		*out = m->slots[s].db;
	pthread_mutex_unlock(&m->mu);
	return rc;
}

void fs_mount_foreach_out_of_service(fs_mount *m, fs_mount_oos_fn fn,
				     void *ctx)
{
	damaged *copy;
	size_t n;

	pthread_mutex_lock(&m->mu);
	n = m->ndmg;
	copy = malloc((n ? n : 1) * sizeof(*copy));
	for (size_t i = 0; copy && i < n; i++) {
		copy[i] = m->dmg[i];
		copy[i].name = strdup(m->dmg[i].name);
	}
	pthread_mutex_unlock(&m->mu);
	if (!copy)
		return;
	for (size_t i = 0; i < n; i++) {
		if (copy[i].name)
			fn(ctx, copy[i].name, copy[i].reason);
		free(copy[i].name);
	}
	free(copy);
}

void fs_mount_foreach(fs_mount *m, fs_mount_each_fn fn, void *ctx)
{
	fs_db **dbs;
	size_t n;

	pthread_mutex_lock(&m->mu);
	n = m->nslots;
	dbs = malloc((n ? n : 1) * sizeof(*dbs));
	for (size_t i = 0; dbs && i < n; i++)
		dbs[i] = m->slots[i].db;
	pthread_mutex_unlock(&m->mu);
	if (!dbs)
		return;
	for (size_t i = 0; i < n; i++)
		fn(ctx, dbs[i]);
	free(dbs);
}

void fs_mount_set_role(fs_mount *m, bool readonly, const char *primary)
{
	char *p = strdup(primary ? primary : "");
	bool changed;

	pthread_mutex_lock(&m->mu);
	changed = m->readonly != readonly;
	m->readonly = readonly;
	if (p) {
		free(m->primary);
		m->primary = p;
	}
	for (size_t i = 0; i < m->nslots; i++)
		fs_db_set_readonly(m->slots[i].db, readonly, m->primary);
	for (size_t i = 0; changed && i < m->ndmg; i++)
		explain_damaged(m, &m->dmg[i]); /* what to do changed */
	pthread_mutex_unlock(&m->mu);
	if (m->mounted) {
		fuse_lowlevel_notify_inval_entry(m->se, FUSE_ROOT_ID,
						 FS_PRIMARY_NAME,
						 strlen(FS_PRIMARY_NAME));
		fuse_lowlevel_notify_inval_inode(m->se, FS_INO_PRIMARY, 0, 0);
	}
}

static void release_one(void *ctx, fs_db *db)
{
	fs_db_release_apply(db);
}

void fs_mount_release_apply(fs_mount *m)
{
	fs_mount_foreach(m, release_one, NULL);
}

static void mount_inval(void *ctx, fs_db *db, enum fs_kind kind, int64_t off,
			int64_t len)
{
	fs_mount *m = ctx;
	char name[FS_NAME_MAX + 16];
	ssize_t s = -1;

	if (!m->mounted)
		return;
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < m->nslots; i++)
		if (m->slots[i].db == db)
			s = (ssize_t)i;
	pthread_mutex_unlock(&m->mu);
	if (s < 0)
		return;
	if (off < 0) {
		snprintf(name, sizeof(name), "%s%s", fs_db_name(db),
			 fs_kind_suffix[kind]);
		fuse_lowlevel_notify_inval_entry(m->se, FUSE_ROOT_ID, name,
						 strlen(name));
		if (kind == FS_KIND_DB) {
			/* Its -pos appears with it: drop a cached absence. */
			snprintf(name, sizeof(name), "%s%s", fs_db_name(db),
				 fs_kind_suffix[FS_KIND_POS]);
			fuse_lowlevel_notify_inval_entry(m->se, FUSE_ROOT_ID,
							 name, strlen(name));
			fuse_lowlevel_notify_inval_inode(
				m->se, make_ino((size_t)s, FS_KIND_POS), -1, 0);
		}
		fuse_lowlevel_notify_inval_inode(m->se, make_ino((size_t)s, kind),
						 -1, 0);
		return;
	}
	fuse_lowlevel_notify_inval_inode(m->se, make_ino((size_t)s, kind), off,
					 len);
}

static int mount_store(void *ctx, fs_db *db, enum fs_kind kind, uint64_t off,
		       const void *buf, size_t len)
{
	fs_mount *m = ctx;
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
	ssize_t s = -1;
	int rc;

	if (!m->mounted)
		return -ENOTCONN;
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < m->nslots; i++)
		if (m->slots[i].db == db)
			s = (ssize_t)i;
	pthread_mutex_unlock(&m->mu);
	if (s < 0)
		return -ENOENT;
	bv.buf[0].mem = (void *)buf;
	rc = fuse_lowlevel_notify_store(m->se, make_ino((size_t)s, kind),
					(off_t)off, &bv, 0);
	if (rc < 0)
		log_error("db=%s: storing %zu bytes at %" PRIu64 " of %s%s "
			  "into the page cache: %s", fs_db_name(db), len, off,
			  fs_db_name(db), fs_kind_suffix[kind], strerror(-rc));
	return rc;
}

/* The text of /.primary, or -ENOENT when this node is not a replica. */
static int primary_text(fs_mount *m, char *buf, size_t n, size_t *out_len)
{
	int rc = 0;

	pthread_mutex_lock(&m->mu);
	if (!m->readonly || !m->primary || !m->primary[0])
		rc = -ENOENT;
	else
		*out_len = (size_t)snprintf(buf, n, "%s\n", m->primary);
	pthread_mutex_unlock(&m->mu);
	if (rc == 0 && *out_len >= n)
		*out_len = n - 1;
	return rc;
}

static int primary_attr(fs_mount *m, struct stat *st)
{
	char buf[512];
	size_t len = 0;
	int rc = primary_text(m, buf, sizeof(buf), &len);

	memset(st, 0, sizeof(*st));
	st->st_ino = FS_INO_PRIMARY;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)len;
	return rc;
}

fs_db *fs_mount_db(fs_mount *m, const char *name)
{
	fs_db *db = NULL;
	ssize_t i;

	pthread_mutex_lock(&m->mu);
	i = find_slot(m, name);
	if (i >= 0)
		db = m->slots[i].db;
	pthread_mutex_unlock(&m->mu);
	return db;
}

static void root_attr(struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = FUSE_ROOT_ID;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
}

static int entry_for(fs_db *db, size_t s, enum fs_kind k,
		     struct fuse_entry_param *e)
{
	int rc;

	memset(e, 0, sizeof(*e));
	rc = fs_db_stat(db, k, &e->attr);
	if (rc < 0)
		return rc;
	e->ino = make_ino(s, k);
	e->attr.st_ino = e->ino;
	e->attr.st_nlink = 1;
	e->attr_timeout = FS_CACHE_SECONDS;
	e->entry_timeout = FS_CACHE_SECONDS;
	return 0;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Our own writes change the backing files' mtimes; they must not
	 * make the kernel drop cached pages. Writes come to us when they are
	 * made (no writeback cache): capture relies on it. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_mount *m = req_mount(req);
	struct fuse_entry_param e;
	char base[FS_NAME_MAX + 1];
	enum fs_kind k;
	ssize_t s;
	fs_db *db = NULL;
	bool bad = false;
	int rc;

	if (parent == FUSE_ROOT_ID && strcmp(name, FS_PRIMARY_NAME) == 0) {
		memset(&e, 0, sizeof(e));
		if (primary_attr(m, &e.attr) == 0) {
			e.ino = FS_INO_PRIMARY;
			e.attr_timeout = FS_CACHE_SECONDS;
		}
		e.entry_timeout = FS_CACHE_SECONDS; /* invalidated on change */
		fuse_reply_entry(req, &e);
		return;
	}
	if (parent == FUSE_ROOT_ID && fs_sj_parse_name(name, NULL, 0, NULL)) {
		fs_mount_sj_lookup(req, m, name);
		return;
	}
	if (parent != FUSE_ROOT_ID || parse_name(name, base, &k) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	pthread_mutex_lock(&m->mu);
	s = find_slot(m, base);
	if (s >= 0)
		db = m->slots[s].db;
	else if (find_damaged(m, base) >= 0)
		bad = true; /* out of service: not cached, unlike absence */
	pthread_mutex_unlock(&m->mu);
	if (bad) {
		fuse_reply_err(req, EBADMSG);
		return;
	}
	rc = db ? entry_for(db, (size_t)s, k, &e) : -ENOENT;
	if (rc == -ENOENT) {
		/* Cache the absence (see the top of this file), but not a
		 * -pos's: it appears with its database. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = k == FS_KIND_POS ? 0 : FS_CACHE_SECONDS;
		fuse_reply_entry(req, &e);
		return;
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

/* Answers with the file's attributes, or with rc when it is an error. */
static void reply_attr(fuse_req_t req, fs_db *db, enum fs_kind k,
		       fuse_ino_t ino, int rc)
{
	struct stat st;

	if (rc == 0)
		rc = fs_db_stat(db, k, &st);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	st.st_ino = ino;
	st.st_nlink = 1;
	fuse_reply_attr(req, &st, FS_CACHE_SECONDS);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	struct stat st;
	enum fs_kind k;
	fs_db *db;
	int rc;

	if (ino == FUSE_ROOT_ID) {
		root_attr(&st);
		fuse_reply_attr(req, &st, FS_CACHE_SECONDS);
		return;
	}
	if (ino == FS_INO_PRIMARY) {
		rc = primary_attr(m, &st);
		if (rc < 0)
			fuse_reply_err(req, -rc);
		else
			fuse_reply_attr(req, &st, FS_CACHE_SECONDS);
		return;
	}
	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_getattr(req, m, ino);
		return;
	}
	rc = split_ino(m, ino, &db, NULL, &k);
	reply_attr(req, db, k, ino, rc);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	fs_db *db;
	int rc;

	if (ino == FUSE_ROOT_ID || ino == FS_INO_PRIMARY) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_setattr(req, m, ino, attr, to_set, fi);
		return;
	}
	rc = split_ino(m, ino, &db, NULL, &k);
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE))
		rc = fs_db_truncate(db, k, attr->st_size);
	/* Modes, owners and times are accepted and not kept: the mount
	 * decides permissions for every database alike. */
	reply_attr(req, db, k, ino, rc);
}

static void count_open(fs_mount *m, size_t s, enum fs_kind k, int delta,
		       bool *out_last)
{
	pthread_mutex_lock(&m->mu);
	m->slots[s].opens[k] += delta;
	*out_last = m->slots[s].opens[k] == 0;
	pthread_mutex_unlock(&m->mu);
}

/* Does the request come from this daemon (its apply path)? The kernel
 * names the calling thread; its thread group is the process. */
static bool from_self(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char path[64], line[128];
	bool self = false;
	FILE *f;

	if (ctx->pid == getpid())
		return true;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		int tgid;
		if (sscanf(line, "Tgid: %d", &tgid) == 1) {
			self = tgid == getpid();
			break;
		}
	}
	fclose(f);
	return self;
}

/*
 * Whether close(2) of this handle must reach the daemon (FLUSH): it may
 * write a first load (a database copied in), which is recorded, or found
 * incomplete, at each close. Other handles skip the round trip (op_flush
 * has nothing to do for them), which also lets a killed daemon exit:
 * closing the files it opened on its own mount (locks, a replica's WAL
 * index) would wait for a FLUSH answer no thread is left to give, so the
 * daemon's own opens never flush.
 */
static bool may_load(fuse_req_t req, fs_db *db, enum fs_kind k,
		     const struct fuse_file_info *fi)
{
	return k == FS_KIND_DB && (fi->flags & O_ACCMODE) != O_RDONLY &&
	       fs_db_loadable(db) && !from_self(req);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	size_t s;
	fs_db *db;
	bool last;
	int rc;

	if (ino == FS_INO_PRIMARY) {
		struct stat st;
		rc = primary_attr(m, &st);
		if (rc == 0 && (fi->flags & O_ACCMODE) != O_RDONLY)
			rc = -EACCES;
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		fi->direct_io = 1;
		fuse_reply_open(req, fi);
		return;
	}
	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_open(req, m, ino, fi);
		return;
	}
	rc = split_ino(m, ino, &db, &s, &k);
	if (rc == 0 && !fs_db_has(db, k))
		rc = -ENOENT;
	if (rc == 0 && k == FS_KIND_DB && (fi->flags & O_ACCMODE) != O_RDONLY &&
	    fs_db_readonly(db) && !from_self(req)) {
		/* SQLite then opens the database read-only, and a write
		 * fails with "attempt to write a readonly database". */
		rc = fs_db_refuse_ro_open(db);
	}
	if (rc == 0 && k == FS_KIND_POS && (fi->flags & O_ACCMODE) != O_RDONLY)
		rc = -EACCES;
	if (rc == 0 && (fi->flags & O_TRUNC))
		rc = fs_db_open_truncate(db, k); /* atomic_o_trunc: ours */
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* Every file, -shm included, goes through the page cache and keeps
	 * it across opens: local readers map a replica's -shm, and its WAL
	 * index writer (fs/walidx.c, ACCESS) reads these same pages with
	 * pread and stores into them (mount_store), so -shm must never be
	 * direct_io (its reads and writes would bypass those pages). */
	fi->keep_cache = 1;
	fi->noflush = !may_load(req, db, k, fi);
	if (k == FS_KIND_POS || (k == FS_KIND_WAL && fs_db_readonly(db))) {
		/* A replica's -wal grows behind the kernel's back (walidx):
		 * a cached size made stale by a getattr racing an
		 * invalidation would end a frame read early (SQLite:
		 * SQLITE_IOERR_SHORT_READ), so its reads go to the daemon. */
		fi->direct_io = 1;
		fi->keep_cache = 0;
	}
	count_open(m, s, k, 1, &last);
	if (fuse_reply_open(req, fi) != 0)
		count_open(m, s, k, -1, &last);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	struct fuse_entry_param e;
	char base[FS_NAME_MAX + 1];
	enum fs_kind k;
	ssize_t s;
	size_t idx = 0;
	fs_db *db = NULL;
	bool last, existed;
	int rc = 0;

	if (parent == FUSE_ROOT_ID && S_ISREG(mode) &&
	    fs_sj_parse_name(name, NULL, 0, NULL)) {
		fs_mount_sj_create(req, m, name, mode, fi);
		return;
	}
	if (parent != FUSE_ROOT_ID || parse_name(name, base, &k) < 0 ||
	    k == FS_KIND_POS || !S_ISREG(mode)) {
		log_warn("refusing to create \"%s\": only SQLite databases and "
			 "their -journal, -wal, -shm and super-journal files may "
			 "be created", name);
		fuse_reply_err(req, EPERM);
		return;
	}
	if (strncmp(name, SQLITE_TEMP_PREFIX, strlen(SQLITE_TEMP_PREFIX)) == 0) {
		/* SQLite opens, unlinks and then uses its temporary files,
		 * which a name of the mount cannot do: SQLite would fail
		 * later, with "disk I/O error". */
		log_warn("refusing to create \"%s\" (EPERM): a SQLite temporary "
			 "file, which SQLite puts in SQLITE_TMPDIR, TMPDIR, "
			 "/var/tmp, /usr/tmp or /tmp (the first that is writable), "
			 "else the current directory; point SQLITE_TMPDIR at a "
			 "local directory", name);
		fuse_reply_err(req, EPERM);
		return;
	}
	pthread_mutex_lock(&m->mu);
	s = find_slot(m, base);
	if (s < 0) {
		ssize_t d = find_damaged(m, base);
		if (d >= 0) {
			log_warn("refusing to create \"%s\" (EBADMSG): database "
				 "%s is out of service: %s", name, base,
				 m->dmg[d].reason);
			rc = -EBADMSG;
		} else if (k != FS_KIND_DB)
			rc = -ENOENT;
		else if (m->readonly) {
			log_warn("refusing to create database \"%s\" (EROFS): "
				 "this node is a read-only replica; create it "
				 "on the primary, %s", base,
				 m->primary && m->primary[0] ? m->primary
							     : "(not known yet)");
			rc = -EROFS;
		} else
			rc = add_slot(m, base, &idx);
		s = (ssize_t)idx;
	}
	db = rc == 0 ? m->slots[s].db : NULL; /* slots may move once unlocked */
	pthread_mutex_unlock(&m->mu);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	existed = fs_db_has(db, k);
	rc = fs_db_create(db, k, mode);
	if (rc == 0 && existed && (fi->flags & O_TRUNC))
		rc = fs_db_open_truncate(db, k);
	if (rc == 0)
		rc = entry_for(db, (size_t)s, k, &e);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = !may_load(req, db, k, fi); /* see op_open */
	if (k == FS_KIND_WAL && fs_db_readonly(db)) {
		fi->direct_io = 1; /* see op_open */
		fi->keep_cache = 0;
	}
	count_open(m, (size_t)s, k, 1, &last);
	if (fuse_reply_create(req, &e, fi) != 0)
		count_open(m, (size_t)s, k, -1, &last);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	fs_db *db;
	size_t got = 0;
	char *buf;
	int rc;

	if (ino == FS_INO_PRIMARY) {
		char text[512];
		size_t len = 0;
		rc = primary_text(m, text, sizeof(text), &len);
		if (rc < 0)
			fuse_reply_err(req, -rc);
		else if ((size_t)off >= len)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_buf(req, text + off,
				       len - (size_t)off < size ? len - (size_t)off
								: size);
		return;
	}
	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_read(req, size, off, fi);
		return;
	}
	rc = split_ino(m, ino, &db, NULL, &k);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = fs_db_read(db, k, buf, size, off, &got);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	fs_db *db = NULL;
	int rc;

	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_write(req, buf, size, off, fi);
		return;
	}
	rc = split_ino(m, ino, &db, NULL, &k);
	if (rc == 0)
		rc = fs_db_write(db, k, buf, size, off);
	if (db && k == FS_KIND_WAL && fs_db_sync_on(db)) {
		/* Synchronous: the commit is answered once replicas have it
		 * (the reply waits, with no lock held). */
		int src = fs_db_wal_sync_commit(db);
		if (rc == 0 && src < 0) {
			fuse_reply_err(req, -src);
			/* Its commit frame was made invalid in the backing
			 * file: no page cached before may show it valid. */
			fuse_lowlevel_notify_inval_inode(m->se, ino, 0, 0);
			return;
		}
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_write(req, size);
	/* The commit is answered; record it now, off the caller's path. */
	if (k == FS_KIND_WAL)
		fs_db_capture_pending(db);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	fs_db *db;
	int rc;

	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_fsync(req, m, datasync != 0, fi);
		return;
	}
	rc = split_ino(m, ino, &db, NULL, &k);
	if (rc == 0)
		rc = fs_db_fsync(db, k, datasync != 0);
	fuse_reply_err(req, -rc);
}

/* Only handles that may write a first load flush (may_load). */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	fs_db *db;
	int rc;

	rc = split_ino(m, ino, &db, NULL, &k) == 0 ? fs_db_flush(db, k) : 0;
	fuse_reply_err(req, -rc);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	enum fs_kind k;
	size_t s;
	fs_db *db;
	bool last = false;

	if (fs_mount_sj_ino(ino)) {
		fs_mount_sj_release(req, fi);
		return;
	}
	if (split_ino(m, ino, &db, &s, &k) == 0) {
		count_open(m, s, k, -1, &last);
		if (last)
			fs_db_release(db, k);
	}
	fuse_reply_err(req, 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_mount *m = req_mount(req);
	char base[FS_NAME_MAX + 1];
	enum fs_kind k;
	ssize_t s;
	fs_db *db;
	int rc;

	if (parent == FUSE_ROOT_ID && fs_sj_parse_name(name, NULL, 0, NULL)) {
		fs_mount_sj_unlink(req, m, name);
		return;
	}
	if (parent != FUSE_ROOT_ID || parse_name(name, base, &k) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (k == FS_KIND_POS) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pthread_mutex_lock(&m->mu);
	s = find_slot(m, base);
	db = s >= 0 ? m->slots[s].db : NULL;
	pthread_mutex_unlock(&m->mu);
	rc = db ? fs_db_unlink(db, k) : -ENOENT;
	if (rc == 0 && k == FS_KIND_DB && m->mounted) {
		/* Its -pos is gone too: before the reply, so a stat right
		 * after unlink() returns asks again (safe here: see the top
		 * of this file). */
		fuse_lowlevel_notify_inval_inode(
			m->se, make_ino((size_t)s, FS_KIND_POS), -1, 0);
	}
	fuse_reply_err(req, -rc);
}

static void refuse(fuse_req_t req, const char *what, const char *name)
{
	log_warn("refusing %s \"%s\": the mount holds only SQLite databases "
		 "and their companion files", what, name);
	fuse_reply_err(req, EPERM);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	refuse(req, "mkdir", name);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct fuse_file_info fi = {0};

	if (S_ISREG(mode)) {
		/* Without create support the kernel would use mknod; keep
		 * one path. */
		refuse(req, "mknod", name);
		return;
	}
	(void)fi;
	refuse(req, "mknod", name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	refuse(req, "symlink", name);
}

/* A second name for a database would be a second database with one
 * file and two logs. docs/STORAGE.md, "Supported and refused
 * operations". */
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
		    const char *name)
{
	log_warn("refusing a hard link \"%s\" (EPERM): each name in the mount "
		 "is a database replicated under that name; copy a database "
		 "with VACUUM INTO or the backup API (sqlite3's .backup)",
		 name);
	fuse_reply_err(req, EPERM);
}

/* A database is replicated under its name, with its companions; moving
 * it (or one of them) under its open connections cannot be recorded. Not
 * EXDEV: mv(1) would then copy the database file alone (without the
 * WAL's frames) and remove it. */
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	log_warn("refusing to rename \"%s\" to \"%s\" (EPERM): a database "
		 "and its -journal, -wal and -shm are replicated under their "
		 "names; copy it under the new name (VACUUM INTO, or the backup "
		 "API: sqlite3's .backup), then remove the old one", name,
		 newname);
	fuse_reply_err(req, EPERM);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, ENOENT);
}

struct dirbuf {
	char *p;
	size_t size, cap;
};

static int dir_add(fuse_req_t req, struct dirbuf *b, const char *name,
		   fuse_ino_t ino, mode_t mode)
{
	struct stat st = {.st_ino = ino, .st_mode = mode};
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);

	if (b->size + need > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		char *p;
		while (cap < b->size + need)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	fuse_add_direntry(req, b->p + b->size, need, name, &st,
			  (off_t)(b->size + need));
	b->size += need;
	return 0;
}

struct sj_list {
	fuse_req_t req;
	struct dirbuf *b;
};

static int sj_list_one(void *ctx, const char *name, fuse_ino_t ino)
{
	struct sj_list *l = ctx;

	return dir_add(l->req, l->b, name, ino, S_IFREG);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	fs_mount *m = req_mount(req);
	struct dirbuf b = {0};
	int rc = 0;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	rc = dir_add(req, &b, ".", FUSE_ROOT_ID, S_IFDIR);
	if (rc == 0)
		rc = dir_add(req, &b, "..", FUSE_ROOT_ID, S_IFDIR);
	{
		struct stat pst;
		if (rc == 0 && primary_attr(m, &pst) == 0)
			rc = dir_add(req, &b, FS_PRIMARY_NAME, FS_INO_PRIMARY,
				     S_IFREG);
	}
	pthread_mutex_lock(&m->mu);
	for (size_t s = 0; s < m->nslots && rc == 0; s++) {
		for (int k = 0; k < FS_KIND_COUNT && rc == 0; k++) {
			char name[FS_NAME_MAX + 16];
			if (!fs_db_has(m->slots[s].db, (enum fs_kind)k))
				continue;
			snprintf(name, sizeof(name), "%s%s", m->slots[s].name,
				 fs_kind_suffix[k]);
			rc = dir_add(req, &b, name, make_ino(s, (enum fs_kind)k),
				     S_IFREG);
		}
	}
	pthread_mutex_unlock(&m->mu);
	if (rc == 0) {
		struct sj_list l = {req, &b};
		rc = fs_mount_sj_list(m, sj_list_one, &l);
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if ((size_t)off < b.size)
		fuse_reply_buf(req, b.p + off,
			       b.size - (size_t)off < size ? b.size - (size_t)off
							   : size);
	else
		fuse_reply_buf(req, NULL, 0);
	free(b.p);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	fs_mount *m = req_mount(req);
	struct statvfs st;

	if (statvfs(m->data_dir, &st) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.fsync = op_fsync,
	.flush = op_flush,
	.release = op_release,
	.unlink = op_unlink,
	.mkdir = op_mkdir,
	.mknod = op_mknod,
	.symlink = op_symlink,
	.link = op_link,
	.rename = op_rename,
	.rmdir = op_rmdir,
	.readdir = op_readdir,
	.statfs = op_statfs,
};

static int open_existing(fs_mount *m)
{
	char path[4096];
	DIR *d;
	struct dirent *de;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/dbs", m->data_dir);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("data directory %s is unusable: %s", m->data_dir,
			  strerror(-rc));
		return rc;
	}
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL && rc == 0) {
		char base[FS_NAME_MAX + 1];
		enum fs_kind k;
		size_t idx;
		if (de->d_name[0] == '.' || parse_name(de->d_name, base, &k) < 0
		    || k != FS_KIND_DB)
			continue;
		if (fs_sj_parse_name(de->d_name, NULL, 0, NULL)) {
			/* An older ltxfs took a super-journal for a
			 * database, refused its content and kept its
			 * empty directory. */
			log_warn("%s/%s is not a database (the name is a "
				 "super-journal's, left by an older ltxfs); "
				 "ignored: remove it", path, de->d_name);
			continue;
		}
		rc = add_slot(m, de->d_name, &idx);
		if (rc == -EBADMSG)
			rc = 0; /* out of service alone (add_slot) */
	}
	closedir(d);
	return rc;
}

int fs_mount_new(const fs_mount_opts *opts, fs_mount **out)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char optstr[256];
	fs_mount *m = calloc(1, sizeof(*m));
	int rc;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->mu, NULL);
	m->opts = *opts;
	m->readonly = opts->readonly;
	m->primary = strdup(opts->primary ? opts->primary : "");
	m->mountpoint = strdup(opts->mountpoint);
	m->data_dir = strdup(opts->data_dir);
	if (!m->mountpoint || !m->data_dir || !m->primary) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = open_existing(m);
	if (rc == 0)
		rc = fs_sj_sweep(m->data_dir, m->mountpoint);
	if (rc < 0)
		goto fail;
	snprintf(optstr, sizeof(optstr), "fsname=ltxfs,subtype=ltxfs%s",
		 opts->allow_other ? ",allow_other" : "");
	if (fuse_opt_add_arg(&args, "ltxfs") || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, optstr) ||
	    (opts->debug && fuse_opt_add_arg(&args, "-d"))) {
		rc = -ENOMEM;
		goto fail;
	}
	m->se = fuse_session_new(&args, &ops, sizeof(ops), m);
	fuse_opt_free_args(&args);
	if (!m->se) {
		log_error("cannot create the FUSE session");
		rc = -EIO;
		goto fail;
	}
	if (!opts->own_signals && fuse_set_signal_handlers(m->se) != 0) {
		rc = -EIO;
		goto fail;
	}
	if (fuse_session_mount(m->se, m->mountpoint) != 0) {
		log_error("cannot mount on %s (see the message above)",
			  m->mountpoint);
		rc = -EIO;
		goto fail;
	}
	m->mounted = true;
	*out = m;
	return 0;
fail:
	fs_mount_free(m);
	return rc;
}

int fs_mount_run(fs_mount *m)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int rc;

	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_idle_threads(cfg, 8);
	fuse_loop_cfg_set_max_threads(cfg, 64);
	rc = fuse_session_loop_mt(m->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc < 0 ? rc : 0;
}

void fs_mount_stop(fs_mount *m)
{
	struct statvfs st;

	fuse_session_exit(m->se);
	/* A worker notices the exit only after its next request: statfs is
	 * never answered from the kernel's caches. */
	if (m->mounted)
		statvfs(m->mountpoint, &st);
}

void fs_mount_free(fs_mount *m)
{
	if (!m)
		return;
	if (m->se) {
		if (m->mounted)
			fuse_session_unmount(m->se);
		if (!m->opts.own_signals)
			fuse_remove_signal_handlers(m->se);
		fuse_session_destroy(m->se);
	}
	for (size_t i = 0; i < m->nslots; i++) {
		fs_db_close(m->slots[i].db);
		free(m->slots[i].name);
	}
	for (size_t i = 0; i < m->ndmg; i++)
		free(m->dmg[i].name);
	free(m->dmg);
	pthread_mutex_destroy(&m->mu);
	free(m->primary);
	free(m->slots);
	free(m->mountpoint);
	free(m->data_dir);
	free(m);
}
