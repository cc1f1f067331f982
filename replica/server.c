/*
 * The HTTP API (docs/PROTOCOL.md): libmicrohttpd, one thread per
 * connection, so a /stream response may block waiting for commits.
 *
 *   GET  /healthz          no authentication
 *   GET  /info             JSON
 *   GET  /metrics          Prometheus text
 *   GET  /stream           replication stream (stream_srv.c)
 *   GET  /export?db=NAME   a consistent copy of the database file
 *   POST /import?db=NAME   a database file in; on the primary it becomes
 *                          the next transaction and replicates
 *
 * With http.token set, every request but /healthz needs
 * "Authorization: Bearer <token>"; otherwise 401 and a log line naming the
 * peer. Errors are answered with a one-line text body saying why.
 *
 * libmicrohttpd calls handler() first once the headers are in, before
 * any byte of a body: the token, and whatever else can refuse a request
 * without its body (refuse_early), are checked then, so a refused upload
 * is answered at once and never read (the connection closes after the
 * answer). Only POST /import takes a body.
 */
#include "node_i.h"

#include "dbcopy.h"
#include "lease.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs/superjournal.h"
#include "lib/io.h"
#include "lib/log.h"

/* An export or import copy (replica/dbcopy.h) is stopped after
 * COPY_BASE_MS (SQLite waits up to 30 s for locks) plus COPY_MS_PER_MIB
 * for each MiB of the database: 1 MiB/s, far below what a disk does. */
#define COPY_BASE_MS 60000
#define COPY_MS_PER_MIB 1000
/*
 * What a peer can hold before it has shown the token (docs/PROTOCOL.md,
 * "Connection limits"). A connection that has not yet sent its request
 * headers, or sent them without the token, is closed after
 * PREAUTH_TIMEOUT_S without traffic; one that showed the token gets
 * AUTHED_TIMEOUT_S. At most CONN_LIMIT connections, CONN_PER_IP_LIMIT
 * from one address; more are closed as soon as they are accepted. Each
 * holds at most CONN_MEMORY_LIMIT of request line and headers, resident
 * only as far as the peer sent them.
 */
#define CONN_MEMORY_LIMIT (4u << 20)
#define CONN_LIMIT 256u
#define CONN_PER_IP_LIMIT 64u
#define PREAUTH_TIMEOUT_S 10u
#define AUTHED_TIMEOUT_S 120u

struct req {
	int fd;                  /* POST body, or -1 */
	uint64_t size;           /* body bytes received */
	bool failed;             /* answered already (refused early) */
	/* The upload failed while it arrived (the data directory full,
	 * http.max-import-size passed): its file is gone, the rest of the
	 * body is read and dropped, and this is the answer at its end. */
	unsigned status;
	char why[300];
};

void rep_peer_text(const struct sockaddr *sa, char *buf, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in = (const void *)sa;
		inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof(host));
		port = ntohs(in->sin6_port);
	}
	snprintf(buf, n, "%s:%u", host, port);
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
				  const char *ctype, const char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
		strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", ctype);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_err(struct MHD_Connection *c, unsigned status,
				 const char *msg)
{
	char buf[1200];

	snprintf(buf, sizeof(buf), "%s\n", msg);
	return reply_text(c, status, "text/plain; charset=utf-8", buf);
}

/* Compares a presented token with ours in time that depends only on the
 * lengths, so a remote caller cannot learn the token byte by byte. */
static bool token_equal(const char *got, const char *want)
{
	size_t gl = strlen(got), wl = strlen(want);
	unsigned char diff = gl != wl;

	for (size_t i = 0; i < wl; i++)
		diff |= (unsigned char)(want[i] ^ (i < gl ? got[i] : 0));
	return diff == 0;
}

static bool authorized(rep_node *n, struct MHD_Connection *c)
{
	const char *h;

	if (n->o.token[0] == '\0')
		return true;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	return h && strncmp(h, "Bearer ", 7) == 0 &&
	       token_equal(h + 7, n->o.token);
}

static bool valid_db_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > REP_NAME_MAX || s[0] == '.')
		return false;
	if (strchr(s, '/') || fs_sj_parse_name(s, NULL, 0, NULL))
		return false; /* a super-journal's name: not a database */
	return !(n > 8 && strcmp(s + n - 8, "-journal") == 0) &&
	       !(n > 4 && (strcmp(s + n - 4, "-wal") == 0 ||
			   strcmp(s + n - 4, "-shm") == 0 ||
			   strcmp(s + n - 4, "-pos") == 0));
}

static bool node_stopping(void *ctx, const char **why)
{
	rep_node *n = ctx;
	bool stopping;

	pthread_mutex_lock(&n->mu);
	stopping = n->stopping;
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

	if (!valid_db_name(db))
		return reply_err(c, MHD_HTTP_BAD_REQUEST, "db must name a "
				 "database (no '/', not starting with '.')");
	if (!fs_mount_db(n->mount, db) || !fs_db_has(fs_mount_db(n->mount, db),
						     FS_KIND_DB))
		return reply_err(c, MHD_HTTP_NOT_FOUND, "no such database");
	snprintf(src, sizeof(src), "%s/%s", n->o.mountpoint, db);
	snprintf(dst, sizeof(dst), "%s/.export-%d-%p", n->o.data_dir,
		 (int)getpid(), (void *)c);
	unlink(dst);
	rc = run_copy(n, c, src, dst, stored_size(n, db), err, sizeof(err));
	if (rc < 0) {
		unlink(dst);
		unlink_companions(dst);
		log_warn("export of db=%s failed: %s", db, err);
		return reply_err(c, copy_fail_status(n, rc), err);
	}
	fd = open(dst, O_RDONLY | O_CLOEXEC);
	unlink(dst);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return reply_err(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
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
static void fail_upload(struct req *q, unsigned status, const char *fmt, ...)
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
static void store_upload(rep_node *n, struct req *q, const char *db,
			 const char *data, size_t len)
{
	uint64_t off = q->size;
	int rc;

	q->size += len;
	if (q->status)
		return; /* failed: dropped */
	if (n->o.max_import_size > 0 &&
	    q->size > (uint64_t)n->o.max_import_size) {
		log_warn("import into db=%s refused: the upload passed "
			 "http.max-import-size (%" PRId64 " bytes) (413)",
			 db ? db : "?", n->o.max_import_size);
		fail_upload(q, MHD_HTTP_CONTENT_TOO_LARGE, "the upload is "
			    "larger than http.max-import-size (%" PRId64
			    " bytes)", n->o.max_import_size);
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
				 const char *db, struct req *q)
{
	char src[PATH_MAX], dst[PATH_MAX], err[300], body[600];
	uint8_t magic[16];
	fs_db *d;
	ltx_pos p;
	bool existed;
	int rc;

	if (!valid_db_name(db))
		return reply_err(c, MHD_HTTP_BAD_REQUEST, "db must name a "
				 "database (no '/', not starting with '.')");
	if (!rep_node_is_primary(n)) {
		snprintf(body, sizeof(body), "this node is a replica; import "
			 "on the primary, %s", rep_node_primary_desc(n));
		return reply_err(c, MHD_HTTP_CONFLICT, body);
	}
	if (q->status)
		return reply_err(c, q->status, q->why);
	if (q->fd < 0)
		return reply_err(c, MHD_HTTP_BAD_REQUEST, "the body is not a "
				 "SQLite database file");
	if (q->size < 512 || lib_io_pread_full(q->fd, magic, 16, 0, NULL) < 0 ||
	    memcmp(magic, "SQLite format 3", 16) != 0)
		return reply_err(c, MHD_HTTP_BAD_REQUEST, "the body is not a "
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
		return reply_err(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
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
		return reply_err(c, rc == -ENOSPC ?
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
	return reply_text(c, MHD_HTTP_OK, "application/json", body);
}

/* POST /handoff[?to=NODE] (primary), POST /promote (replica): the etcd
 * lease moves (replica/lease.h). */
static enum MHD_Result do_lease_move(rep_node *n, struct MHD_Connection *c,
				     const char *url)
{
	const char *to = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
						     "to");
	uint64_t node = 0;
	char msg[600], *end;
	unsigned st;

	if (strcmp(url, "/handoff") == 0) {
		if (to) {
			errno = 0;
			node = strtoull(to, &end, 16);
			if (strlen(to) != 16 || errno || *end || node == 0)
				return reply_err(c, MHD_HTTP_BAD_REQUEST,
						 "to must be a node ID, 16 hex "
						 "digits");
		}
		st = rep_lease_handoff(n->lease, node, msg, sizeof(msg));
	} else {
		st = rep_lease_promote(n->lease, msg, sizeof(msg));
	}
	if (st == MHD_HTTP_OK)
		return reply_text(c, st, "text/plain; charset=utf-8", msg);
	return reply_err(c, st, msg);
}

/* 0 when some endpoint answers this path and method, else the status
 * that says why not (404, 405). */
static unsigned route_status(const char *url, bool get, bool post)
{
	static const struct {
		const char *path;
		bool get, post;
	} routes[] = {
		{"/healthz", true, false}, {"/info", true, false},
		{"/metrics", true, false}, {"/stream", true, false},
		{"/export", true, false},  {"/import", false, true},
		{"/handoff", false, true}, {"/promote", false, true},
	};

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(url, routes[i].path) != 0)
			continue;
		if ((get && routes[i].get) || (post && routes[i].post))
			return 0;
		return MHD_HTTP_METHOD_NOT_ALLOWED;
	}
	return MHD_HTTP_NOT_FOUND;
}

static enum MHD_Result reply_route(struct MHD_Connection *c, unsigned st)
{
	return reply_err(c, st, st == MHD_HTTP_NOT_FOUND ? "no such endpoint"
							 : "method not allowed");
}

/* Whether the request announces a body (any length but 0). */
static bool has_body(struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						     "Content-Length");

	if (MHD_lookup_connection_value(c, MHD_HEADER_KIND,
					"Transfer-Encoding"))
		return true;
	return cl && strspn(cl, "0 \t") != strlen(cl);
}

/* An import whose Content-Length says it is over http.max-import-size
 * (413) or larger than the data directory's free space (507) is refused
 * before its body. A chunked one is checked as it arrives. */
static enum MHD_Result refuse_import_size(rep_node *n,
					  struct MHD_Connection *c,
					  const char *db, struct req *q)
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
	if (n->o.max_import_size > 0 && len > (uint64_t)n->o.max_import_size) {
		q->failed = true;
		log_warn("import into db=%s refused: %llu bytes are more than "
			 "http.max-import-size (%" PRId64 " bytes) (413)", db,
			 len, n->o.max_import_size);
		snprintf(body, sizeof(body), "the upload (%llu bytes) is larger "
			 "than http.max-import-size (%" PRId64 " bytes)", len,
			 n->o.max_import_size);
		return reply_err(c, MHD_HTTP_CONTENT_TOO_LARGE, body);
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
		return reply_err(c, MHD_HTTP_INSUFFICIENT_STORAGE, body);
	}
	return MHD_YES;
}

/*
 * The first call, headers in and no byte of a body read yet (token
 * already checked): everything that can refuse the request without its
 * body does, so a refused upload is never read. do_import checks the
 * name and the role again once the body is in (the role may change).
 */
static enum MHD_Result refuse_early(rep_node *n, struct MHD_Connection *c,
				    const char *url, bool get, bool post,
				    struct req *q)
{
	bool import = post && strcmp(url, "/import") == 0;
	const char *db;
	char body[600];
	unsigned st;

	if (!import) {
		if (!has_body(c))
			return MHD_YES;
		q->failed = true;
		st = route_status(url, get, post);
		if (st)
			return reply_route(c, st);
		return reply_err(c, MHD_HTTP_CONTENT_TOO_LARGE,
				 "this endpoint takes no request body");
	}
	db = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "db");
	if (!valid_db_name(db)) {
		q->failed = true;
		return reply_err(c, MHD_HTTP_BAD_REQUEST, "db must name a "
				 "database (no '/', not starting with '.')");
	}
	if (!rep_node_is_primary(n)) {
		q->failed = true;
		snprintf(body, sizeof(body), "this node is a replica; import "
			 "on the primary, %s", rep_node_primary_desc(n));
		return reply_err(c, MHD_HTTP_CONFLICT, body);
	}
	return refuse_import_size(n, c, db, q);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c,
			       const char *url, const char *method,
			       const char *version, const char *upload,
			       size_t *upload_size, void **con_cls)
{
	rep_node *n = cls;
	struct req *q = *con_cls;
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	bool post = strcmp(method, "POST") == 0;
	unsigned st;

	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		q->fd = -1;
		*con_cls = q;
		if (strcmp(url, "/healthz") != 0 && !authorized(n, c)) {
			const union MHD_ConnectionInfo *ci =
				MHD_get_connection_info(
					c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
			char peer[64] = "?";
			if (ci && ci->client_addr)
				rep_peer_text(ci->client_addr, peer,
					      sizeof(peer));
			atomic_fetch_add(&n->m.unauthorized, 1);
			log_warn("refused %s %s from %s: missing or wrong "
				 "bearer token (401)", method, url, peer);
			q->failed = true;
			return reply_err(c, MHD_HTTP_UNAUTHORIZED,
					 "missing or wrong bearer token");
		}
		if (strcmp(url, "/healthz") != 0)
			MHD_set_connection_option(c,
						  MHD_CONNECTION_OPTION_TIMEOUT,
						  AUTHED_TIMEOUT_S);
		return refuse_early(n, c, url, get, post, q);
	}
	if (q->failed && *upload_size) {
		*upload_size = 0; /* already answered (401) */
		return MHD_YES;
	}
	if (post && *upload_size) {
		store_upload(n, q, MHD_lookup_connection_value(
					   c, MHD_GET_ARGUMENT_KIND, "db"),
			     upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	if (q->failed)
		return MHD_YES; /* answered already */
	if (strcmp(url, "/healthz") == 0 && get)
		return reply_text(c, MHD_HTTP_OK, "text/plain", "ok\n");
	if (strcmp(url, "/info") == 0 && get) {
		char *j = rep_info_json(n);
		enum MHD_Result r = j ? reply_text(c, MHD_HTTP_OK,
						   "application/json", j)
				      : MHD_NO;
		free(j);
		return r;
	}
	if (strcmp(url, "/metrics") == 0 && get) {
		char *t = rep_metrics_text(n);
		enum MHD_Result r = t ? reply_text(c, MHD_HTTP_OK,
						   "text/plain; version=0.0.4",
						   t)
				      : MHD_NO;
		free(t);
		return r;
	}
	if (strcmp(url, "/stream") == 0 && get) {
		struct MHD_Response *r = NULL;
		/* rep_stream_response sets status and err on every failure
		 * it reports; these defaults cover one that does not. */
		unsigned status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		char err[400] = "cannot open the stream";
		enum MHD_Result ret;
		if (rep_stream_response(n, c, &r, &status, err, sizeof(err)) <
		    0)
			return r ? MHD_NO : reply_err(c, status, err);
		MHD_add_response_header(r, "Content-Type",
					"application/x-ltxfs-stream");
		ret = MHD_queue_response(c, status, r);
		MHD_destroy_response(r);
		return ret;
	}
	if (strcmp(url, "/export") == 0 && get)
		return do_export(n, c, MHD_lookup_connection_value(
					       c, MHD_GET_ARGUMENT_KIND, "db"));
	if (strcmp(url, "/import") == 0 && post) {
		enum MHD_Result r = do_import(
			n, c, MHD_lookup_connection_value(
				      c, MHD_GET_ARGUMENT_KIND, "db"), q);
		/* The answer goes out once this returns: the upload's space
		 * is free by then, not only when the connection ends. */
		if (q->fd >= 0)
			close(q->fd);
		q->fd = -1;
		return r;
	}
	if ((strcmp(url, "/handoff") == 0 || strcmp(url, "/promote") == 0) &&
	    post)
		return do_lease_move(n, c, url);
	st = route_status(url, get, post);
	return reply_route(c, st ? st : MHD_HTTP_NOT_FOUND);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct req *q = *con_cls;

	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	free(q);
	*con_cls = NULL;
}

/* Parses "[host]:port", "host:port" or ":port". */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	char host[256] = "", port[16];
	const char *colon;
	struct addrinfo hints = {0}, *res = NULL;
	int rc;

	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr + 1, (size_t)(end - addr - 1));
		host[end - addr - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || (size_t)(colon - addr) >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
	}
	snprintf(port, sizeof(port), "%s", colon + 1);
	if (!port[0])
		return -EINVAL;
	hints.ai_family = host[0] ? AF_UNSPEC : AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc != 0 || !res)
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int rep_server_start(rep_node *n)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (parse_addr(n->o.http_addr, &ss, &len) < 0) {
		log_error("http.addr \"%s\" is not [host]:port", n->o.http_addr);
		return -EINVAL;
	}
	n->mhd = MHD_start_daemon(
		/* poll(), not select(): with many databases open, the
		 * server's descriptors are past FD_SETSIZE and select()
		 * refuses them ("file descriptor for inter-thread
		 * communication channel exceeds maximum value"). */
		MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			MHD_USE_POLL | MHD_USE_ERROR_LOG |
			(ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
		0, NULL, NULL, handler, n, MHD_OPTION_SOCK_ADDR, &ss,
		MHD_OPTION_NOTIFY_COMPLETED, completed, n,
		MHD_OPTION_CONNECTION_TIMEOUT, PREAUTH_TIMEOUT_S,
		MHD_OPTION_CONNECTION_LIMIT, CONN_LIMIT,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, CONN_PER_IP_LIMIT,
		/* A replica's /stream URL names every database's position
		 * (up to MAX_SUB_DBS of about 640 bytes each): the 32 KiB
		 * default answered 414 from about 700 databases on. */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
		MHD_OPTION_END);
	if (!n->mhd) {
		log_error("cannot listen on %s (http.addr): in use or not a "
			  "local address", n->o.http_addr);
		return -EADDRINUSE;
	}
	log_info("HTTP API on %s", n->o.http_addr);
	return 0;
}

void rep_server_stop(rep_node *n)
{
	if (n->mhd) {
		MHD_stop_daemon(n->mhd);
		n->mhd = NULL;
	}
}
