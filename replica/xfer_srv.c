/*
 * GET /export?db=NAME and POST /import?db=NAME (docs/PROTOCOL.md): the
 * handlers of server.c's routes. The copy itself runs in a child process
 * (dbcopy.h); an import's body is stored in an unlinked temporary file
 * as it arrives (rep_import_upload), after rep_import_early refused what
 * it could before any byte of it.
 */
#include "server_i.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dbcopy.h"
#include "lib/io.h"
#include "lib/log.h"

/* An export or import copy (replica/dbcopy.h) is stopped after
 * COPY_BASE_MS (SQLite waits up to 30 s for locks) plus COPY_MS_PER_MIB
 * for each MiB of the database: 1 MiB/s, far below what a disk does. */
#define COPY_BASE_MS 60000
#define COPY_MS_PER_MIB 1000

static bool node_stopping(void *ctx, const char **why)
{
	rep_node *n = ctx;
	bool stopping;

	pthread_mutex_lock(&n->mu);
	stopping = n->role.state == REP_ROLE_STOPPED;
	pthread_mutex_unlock(&n->mu);
	if (stopping)
		*why = "the node is stopping";
	return stopping;
}

/* Copies src into dst in a child process (replica/dbcopy.h: no SQLite
 * connection on the mount runs in the daemon), killed after
 * COPY_BASE_MS plus COPY_MS_PER_MIB for each MiB of size, when the client
 * of c hangs up, or when the node stops. rep_dbcopy_run's returns. */
static int run_copy(rep_node *n, struct MHD_Connection *c, const char *src,
		    const char *dst, uint64_t size, char *err, size_t errlen)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		c, MHD_CONNECTION_INFO_CONNECTION_FD);
	rep_dbcopy dc = {
		.src = src,
		.dst = dst,
		.timeout_ms = COPY_BASE_MS + (int64_t)(size >> 20) *
						     COPY_MS_PER_MIB,
		.client_fd = ci ? ci->connect_fd : -1,
		.cancel = node_stopping,
		.ctx = n,
	};

	return rep_dbcopy_run(&dc, err, errlen);
}

/* The status of a copy that failed with rc, when no more specific one
 * applies: 503 when the node stopping ended it, else 500. */
static unsigned copy_fail_status(rep_node *n, int rc)
{
	const char *why;

	return rc == -ECANCELED && node_stopping(n, &why) ?
		       MHD_HTTP_SERVICE_UNAVAILABLE :
		       MHD_HTTP_INTERNAL_SERVER_ERROR;
}

/* Removes path's SQLite companions (-journal, -wal, -shm). */
static void unlink_companions(const char *path)
{
	static const char *const sfx[] = {"-journal", "-wal", "-shm"};
	char p[PATH_MAX + 16];

	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
}

/* Bytes of database name as stored (main file and WAL), for the bound of
 * its export. */
static uint64_t stored_size(rep_node *n, const char *name)
{
	static const char *const files[] = {"database", "wal"};
	char path[PATH_MAX];
	uint64_t size = 0;
	struct stat st;

	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/dbs/%s/%s", n->o.data_dir,
			 name, files[i]);
		if (stat(path, &st) == 0)
			size += (uint64_t)st.st_size;
	}
	return size;
}

static enum MHD_Result do_export(rep_node *n, struct MHD_Connection *c,
				 const char *db)
{
	char src[PATH_MAX], dst[PATH_MAX], err[300];
	struct MHD_Response *r;
	struct stat st;
	enum MHD_Result ret;
	int fd, rc;

	if (!rep_valid_db_name(db))
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "db must name a "
				 "database (no '/', not starting with '.')");
	if (!fs_mount_db(n->mount, db) || !fs_db_has(fs_mount_db(n->mount, db),
						     FS_KIND_DB))
		return rep_reply_err(c, MHD_HTTP_NOT_FOUND, "no such database");
	snprintf(src, sizeof(src), "%s/%s", n->o.mountpoint, db);
	snprintf(dst, sizeof(dst), "%s/.export-%d-%p", n->o.data_dir,
		 (int)getpid(), (void *)c);
	unlink(dst);
	rc = run_copy(n, c, src, dst, stored_size(n, db), err, sizeof(err));
	if (rc < 0) {
		unlink(dst);
		unlink_companions(dst);
		log_warn("export of db=%s failed: %s", db, err);
		return rep_reply_err(c, copy_fail_status(n, rc), err);
	}
	fd = open(dst, O_RDONLY | O_CLOEXEC);
	unlink(dst);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return rep_reply_err(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				 "reading the copy failed");
	}
	r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
	if (!r) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/vnd.sqlite3");
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* The upload of q fails with status: its file is closed at once (the
 * space it took is free again), the rest of the body is dropped. */
__attribute__((format(printf, 3, 4)))
static void fail_upload(rep_req *q, unsigned status, const char *fmt, ...)
{
	va_list ap;

	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	q->status = status;
	va_start(ap, fmt);
	vsnprintf(q->why, sizeof(q->why), fmt, ap);
	va_end(ap);
}

/* One piece of a POST /import body. */
static void store_upload(rep_node *n, rep_req *q, const char *db,
			 const char *data, size_t len)
{
	uint64_t off = q->size;
	int rc;

	q->size += len;
	if (q->status)
		return; /* failed: dropped */
	if (n->o.http.max_import_size > 0 &&
	    q->size > (uint64_t)n->o.http.max_import_size) {
		log_warn("import into db=%s refused: the upload passed "
			 "http.max-import-size (%" PRId64 " bytes) (413)",
			 db ? db : "?", n->o.http.max_import_size);
		fail_upload(q, MHD_HTTP_CONTENT_TOO_LARGE, "the upload is "
			    "larger than http.max-import-size (%" PRId64
			    " bytes)", n->o.http.max_import_size);
		return;
	}
	if (q->fd < 0) {
		q->fd = rep_tmpfile(n);
		if (q->fd < 0) {
			rc = q->fd;
			fail_upload(q, rc == -ENOSPC || rc == -EDQUOT ?
					       MHD_HTTP_INSUFFICIENT_STORAGE :
					       MHD_HTTP_INTERNAL_SERVER_ERROR,
				    "storing the upload failed: %s",
				    strerror(-rc));
			return;
		}
	}
	rc = lib_io_pwrite_full(q->fd, data, len, (off_t)off);
	if (rc == -ENOSPC || rc == -EDQUOT) {
		log_warn("import into db=%s failed: the data directory %s is "
			 "full after %" PRIu64 " bytes of the upload; its "
			 "space is released, the rest of the body dropped "
			 "(507)", db ? db : "?", n->o.data_dir, off);
		fail_upload(q, MHD_HTTP_INSUFFICIENT_STORAGE, "the data "
			    "directory has no space left for the upload (full "
			    "after %" PRIu64 " bytes)", off);
	} else if (rc < 0) {
		log_warn("import into db=%s failed: storing the upload in %s: "
			 "%s (500)", db ? db : "?", n->o.data_dir,
			 strerror(-rc));
		fail_upload(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "storing the "
			    "upload failed: %s", strerror(-rc));
	}
}

static enum MHD_Result do_import(rep_node *n, struct MHD_Connection *c,
				 const char *db, rep_req *q)
{
	char src[PATH_MAX], dst[PATH_MAX], err[300], body[600];
	uint8_t magic[16];
	fs_db *d;
	ltx_pos p;
	bool existed;
	int rc;

	if (!rep_valid_db_name(db))
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "db must name a "
				 "database (no '/', not starting with '.')");
	if (!rep_node_is_primary(n)) {
		snprintf(body, sizeof(body), "this node is a replica; import "
			 "on the primary, %s", rep_node_primary_desc(n));
		return rep_reply_err(c, MHD_HTTP_CONFLICT, body);
	}
	if (q->status)
		return rep_reply_err(c, q->status, q->why);
	if (q->fd < 0)
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "the body is not a "
				 "SQLite database file");
	if (q->size < 512 || lib_io_pread_full(q->fd, magic, 16, 0, NULL) < 0 ||
	    memcmp(magic, "SQLite format 3", 16) != 0)
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "the body is not a "
				 "SQLite database file");
	/* SQLite resolves symlinks, so /proc/self/fd/N of the unlinked
	 * upload would name "... (deleted)": give the upload a name. */
	snprintf(dst, sizeof(dst), "/proc/self/fd/%d", q->fd);
	snprintf(src, sizeof(src), "%s/.import-%d-%p", n->o.data_dir,
		 (int)getpid(), (void *)c);
	unlink(src);
	if (linkat(AT_FDCWD, dst, AT_FDCWD, src, AT_SYMLINK_FOLLOW) < 0) {
		log_warn("import into db=%s failed: naming the upload %s: %s",
			 db, src, strerror(errno));
		return rep_reply_err(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				 "storing the upload failed");
	}
	snprintf(dst, sizeof(dst), "%s/%s", n->o.mountpoint, db);
	d = fs_mount_db(n->mount, db);
	existed = d && fs_db_has(d, FS_KIND_DB);
	rc = run_copy(n, c, src, dst, q->size, err, sizeof(err));
	unlink(src);
	/* A WAL-mode upload leaves the -wal and -shm of its reader. */
	unlink_companions(src);
	if (rc < 0 && !existed) {
		/* Not created after all. A new database is written in
		 * rollback mode: a killed copy may have left its journal,
		 * which must not meet a later database of the same name. */
		char jrnl[PATH_MAX + 16];
		snprintf(jrnl, sizeof(jrnl), "%s-journal", dst);
		unlink(dst);
		unlink(jrnl);
	}
	if (rc < 0) {
		log_warn("import into db=%s failed: %s", db, err);
		snprintf(body, sizeof(body), "import failed: %s", err);
		return rep_reply_err(c, rc == -ENOSPC ?
					    MHD_HTTP_INSUFFICIENT_STORAGE :
				    rc == -EIO ? MHD_HTTP_CONFLICT :
						 copy_fail_status(n, rc), body);
	}
	d = fs_mount_db(n->mount, db);
	p = d ? fs_db_pos(d) : (ltx_pos){0, 0};
	log_info("db=%s: imported %" PRIu64 " bytes as TXID %016" PRIx64, db,
		 q->size, p.txid);
	snprintf(body, sizeof(body), "{\"db\":\"%s\",\"txid\":\"%016" PRIx64
		 "\",\"checksum\":\"%016" PRIx64 "\"}\n", db, p.txid,
		 p.checksum);
	return rep_reply_text(c, MHD_HTTP_OK, "application/json", body);
}

/* An import whose Content-Length says it is over http.max-import-size
 * (413) or larger than the data directory's free space (507) is refused
 * before its body. A chunked one is checked as it arrives. */
static enum MHD_Result refuse_import_size(rep_node *n,
					  struct MHD_Connection *c,
					  const char *db, rep_req *q)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						     "Content-Length");
	unsigned long long len;
	struct statvfs vfs;
	uint64_t avail;
	char body[300], *end;

	if (!cl || MHD_lookup_connection_value(c, MHD_HEADER_KIND,
					       "Transfer-Encoding"))
		return MHD_YES;
	errno = 0;
	len = strtoull(cl, &end, 10);
	if (errno || end == cl)
		return MHD_YES; /* libmicrohttpd answers a bad one */
	if (n->o.http.max_import_size > 0 &&
	    len > (uint64_t)n->o.http.max_import_size) {
		q->failed = true;
		log_warn("import into db=%s refused: %llu bytes are more than "
			 "http.max-import-size (%" PRId64 " bytes) (413)", db,
			 len, n->o.http.max_import_size);
		snprintf(body, sizeof(body), "the upload (%llu bytes) is larger "
			 "than http.max-import-size (%" PRId64 " bytes)", len,
			 n->o.http.max_import_size);
		return rep_reply_err(c, MHD_HTTP_CONTENT_TOO_LARGE, body);
	}
	if (statvfs(n->o.data_dir, &vfs) < 0)
		return MHD_YES;
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (len > avail) {
		q->failed = true;
		log_warn("import into db=%s refused: %llu bytes do not fit in "
			 "the free space of %s (%" PRIu64 " bytes) (507)", db,
			 len, n->o.data_dir, avail);
		snprintf(body, sizeof(body), "the upload (%llu bytes) does not "
			 "fit in the data directory's free space (%" PRIu64
			 " bytes)", len, avail);
		return rep_reply_err(c, MHD_HTTP_INSUFFICIENT_STORAGE, body);
	}
	return MHD_YES;
}

enum MHD_Result rep_export_handler(rep_node *n, struct MHD_Connection *c,
				   rep_req *q)
{
	(void)q;
	return do_export(n, c, rep_arg(c, "db"));
}

enum MHD_Result rep_import_handler(rep_node *n, struct MHD_Connection *c,
				   rep_req *q)
{
	enum MHD_Result r = do_import(n, c, rep_arg(c, "db"), q);

	/* The answer goes out once this returns: the upload's space is free
	 * by then, not only when the connection ends. */
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	return r;
}

/*
 * Headers in and no byte of the body read yet (token already checked):
 * everything that can refuse the import without its body does, so a
 * refused upload is never read. do_import checks the name and the role
 * again once the body is in (the role may change).
 */
enum MHD_Result rep_import_early(rep_node *n, struct MHD_Connection *c,
				 rep_req *q)
{
	const char *db = rep_arg(c, "db");
	char body[600];

	if (!rep_valid_db_name(db)) {
		q->failed = true;
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "db must name a "
				     "database (no '/', not starting with "
				     "'.')");
	}
	if (!rep_node_is_primary(n)) {
		q->failed = true;
		snprintf(body, sizeof(body), "this node is a replica; import "
			 "on the primary, %s", rep_node_primary_desc(n));
		return rep_reply_err(c, MHD_HTTP_CONFLICT, body);
	}
	return refuse_import_size(n, c, db, q);
}

void rep_import_upload(rep_node *n, struct MHD_Connection *c, rep_req *q,
		       const char *data, size_t len)
{
	store_upload(n, q, rep_arg(c, "db"), data, len);
}
