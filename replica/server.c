/*
 * The HTTP API (docs/PROTOCOL.md): libmicrohttpd, one thread per
 * connection, so a /stream response may block waiting for commits.
 *
 * Every endpoint is one row of routes[] below: path, methods, whether it
 * needs the token, whether it takes a body, and its handler. The rules
 * that follow from the table, in one place (handler()):
 *   - an unknown path gets 404 "no such endpoint", a known path with
 *     another method 405 "method not allowed" and an Allow header;
 *   - with http.token set, every request to a route that needs it (all
 *     but the health checks /healthz and /readyz, and any unknown path)
 *     must carry "Authorization: Bearer <token>"; /metrics and /info
 *     also take http.metrics-token, or nothing with http.metrics-auth:
 *     none; otherwise 401 and a log line naming the peer;
 *   - with mutual TLS, a route whose peer column is set (all but the
 *     probes, /info and /metrics; any unknown path) needs a client
 *     certificate the client CA vouches for: otherwise 403 and a log
 *     line naming the peer and why (server_tls.c, S2);
 *   - a request that announces a body to a route that takes none gets
 *     413 (or the 404/405 of a wrong path or method).
 * Errors are answered with a one-line text body saying why.
 *
 * libmicrohttpd calls handler() first once the headers are in, before
 * any byte of a body: the token, and whatever else can refuse a request
 * without its body (the route's early check), are checked then, so a
 * refused upload is answered at once and never read (the connection
 * closes after the answer).
 */
#include "server_i.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs/superjournal.h"
#include "lib/log.h"
#include "tls.h"

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

enum MHD_Result rep_reply_text(struct MHD_Connection *c, unsigned status,
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

enum MHD_Result rep_reply_err(struct MHD_Connection *c, unsigned status,
			      const char *msg)
{
	char buf[1200];

	snprintf(buf, sizeof(buf), "%s\n", msg);
	return rep_reply_text(c, status, "text/plain; charset=utf-8", buf);
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

/* Whether the request carries the token that auth asks for (enum
 * rep_auth). */
static bool authorized(rep_node *n, struct MHD_Connection *c, int auth)
{
	const rep_http_opts *o = &n->o.http;
	const char *h, *got;

	if (auth == REP_AUTH_NONE || o->token[0] == '\0')
		return true;
	if (auth == REP_AUTH_METRICS && o->metrics_open)
		return true;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (!h || strncmp(h, "Bearer ", 7) != 0)
		return false;
	got = h + 7;
	if (auth == REP_AUTH_METRICS && o->metrics_token[0] &&
	    token_equal(got, o->metrics_token))
		return true;
	return token_equal(got, o->token);
}

bool rep_valid_db_name(const char *s)
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

const char *rep_arg(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* --- the handlers of the small routes --- */

static enum MHD_Result do_healthz(rep_node *n, struct MHD_Connection *c,
				  rep_req *q)
{
	(void)n;
	(void)q;
	return rep_reply_text(c, MHD_HTTP_OK, "text/plain", "ok\n");
}

static enum MHD_Result do_info(rep_node *n, struct MHD_Connection *c,
			       rep_req *q)
{
	char *j = rep_info_json(n);
	enum MHD_Result r = j ? rep_reply_text(c, MHD_HTTP_OK,
					       "application/json", j)
			      : MHD_NO;

	(void)q;
	free(j);
	return r;
}

static enum MHD_Result do_metrics(rep_node *n, struct MHD_Connection *c,
				  rep_req *q)
{
	char *t = rep_metrics_text(n);
	enum MHD_Result r = t ? rep_reply_text(c, MHD_HTTP_OK,
					       "text/plain; version=0.0.4", t)
			      : MHD_NO;

	(void)q;
	free(t);
	return r;
}

static enum MHD_Result do_stream(rep_node *n, struct MHD_Connection *c,
				 rep_req *q)
{
	struct MHD_Response *r = NULL;
	/* rep_stream_response sets status and err on every failure it
	 * reports; these defaults cover one that does not. */
	unsigned status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	char err[400] = "cannot open the stream";
	enum MHD_Result ret;

	(void)q;
	if (rep_stream_response(n, c, &r, &status, err, sizeof(err)) < 0)
		return r ? MHD_NO : rep_reply_err(c, status, err);
	MHD_add_response_header(r, "Content-Type",
				"application/x-ltxfs-stream");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* GET /readyz (ready.c): 200 "ready", or 503 and why. */
static enum MHD_Result do_readyz(rep_node *n, struct MHD_Connection *c,
				 rep_req *q)
{
	char why[400];

	(void)q;
	if (rep_node_ready(n, why, sizeof(why)))
		return rep_reply_text(c, MHD_HTTP_OK, "text/plain",
				      "ready\n");
	return rep_reply_err(c, MHD_HTTP_SERVICE_UNAVAILABLE, why);
}

static enum MHD_Result reply_status(struct MHD_Connection *c, unsigned st,
				    const char *msg)
{
	if (st == MHD_HTTP_OK)
		return rep_reply_text(c, st, "text/plain; charset=utf-8", msg);
	return rep_reply_err(c, st, msg);
}

/* POST /handoff[?to=NODE] on the primary (handoff.c). */
static enum MHD_Result do_handoff(rep_node *n, struct MHD_Connection *c,
				  rep_req *q)
{
	const char *to = rep_arg(c, "to");
	uint64_t node = 0;
	char msg[600], *end;

	(void)q;
	if (to) {
		errno = 0;
		node = strtoull(to, &end, 16);
		if (strlen(to) != 16 || errno || *end || node == 0)
			return rep_reply_err(c, MHD_HTTP_BAD_REQUEST,
					     "to must be a node ID, 16 hex "
					     "digits");
	}
	return reply_status(c, rep_handoff(n, node, msg, sizeof(msg)), msg);
}

/* POST /promote on a replica (handoff.c). */
static enum MHD_Result do_promote(rep_node *n, struct MHD_Connection *c,
				  rep_req *q)
{
	char msg[600];

	(void)q;
	return reply_status(c, rep_promote(n, msg, sizeof(msg)), msg);
}

/* --- the routes --- */

#define GET_HEAD (REP_M_GET | REP_M_HEAD)

#define NONE REP_AUTH_NONE
#define MTRC REP_AUTH_METRICS
#define CLST REP_AUTH_CLUSTER

static const rep_route routes[] = {
	/* path      methods    auth  peer   body   handler */
	{"/healthz", GET_HEAD, NONE, false, false, do_healthz, NULL, NULL},
	{"/readyz", GET_HEAD, NONE, false, false, do_readyz, NULL, NULL},
	{"/info", GET_HEAD, MTRC, false, false, do_info, NULL, NULL},
	{"/metrics", GET_HEAD, MTRC, false, false, do_metrics, NULL, NULL},
	{"/stream", GET_HEAD, CLST, true, false, do_stream, NULL, NULL},
	{"/export", GET_HEAD, CLST, true, false, rep_export_handler, NULL,
	 NULL},
	{"/import", REP_M_POST, CLST, true, true, rep_import_handler,
	 rep_import_early, rep_import_upload},
	{"/handoff", REP_M_POST, CLST, true, false, do_handoff, NULL, NULL},
	{"/promote", REP_M_POST, CLST, true, false, do_promote, NULL, NULL},
	{"/ack", REP_M_POST, CLST, true, false, rep_sync_ack_handler, NULL,
	 NULL},
};

static unsigned method_bit(const char *method)
{
	if (strcmp(method, "GET") == 0)
		return REP_M_GET;
	if (strcmp(method, "HEAD") == 0)
		return REP_M_HEAD;
	if (strcmp(method, "POST") == 0)
		return REP_M_POST;
	return 0;
}

unsigned rep_route_match(const char *method, const char *path,
			 const rep_route **out)
{
	*out = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(path, routes[i].path) != 0)
			continue;
		*out = &routes[i];
		return routes[i].methods & method_bit(method)
			       ? 0
			       : MHD_HTTP_METHOD_NOT_ALLOWED;
	}
	return MHD_HTTP_NOT_FOUND;
}

/* 404, or 405 with the methods the route takes in Allow. */
static enum MHD_Result reply_route(struct MHD_Connection *c, unsigned st,
				   const rep_route *r)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{REP_M_GET, "GET"}, {REP_M_HEAD, "HEAD"},
		     {REP_M_POST, "POST"}};
	struct MHD_Response *resp;
	char allow[32] = "";
	enum MHD_Result ret;
	const char *text = "method not allowed\n";

	if (st == MHD_HTTP_NOT_FOUND || !r)
		return rep_reply_err(c, st, "no such endpoint");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (r->methods & names[i].bit)
			snprintf(allow + strlen(allow),
				 sizeof(allow) - strlen(allow), "%s%s",
				 allow[0] ? ", " : "", names[i].name);
	resp = MHD_create_response_from_buffer(strlen(text), (void *)text,
					       MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type",
				"text/plain; charset=utf-8");
	MHD_add_response_header(resp, "Allow", allow);
	ret = MHD_queue_response(c, st, resp);
	MHD_destroy_response(resp);
	return ret;
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

/* 401 for a request without the token its route needs (an unknown path
 * needs it too, so that a peer without it learns nothing). */
static enum MHD_Result refuse_token(rep_node *n, struct MHD_Connection *c,
				    const char *method, const char *url,
				    rep_req *q)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
		c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char peer[64] = "?";

	if (ci && ci->client_addr)
		rep_peer_text(ci->client_addr, peer, sizeof(peer));
	atomic_fetch_add(&n->m.unauthorized, 1);
	log_warn("refused %s %s from %s: missing or wrong bearer token (401)",
		 method, url, peer);
	q->failed = true;
	return rep_reply_err(c, MHD_HTTP_UNAUTHORIZED,
			     "missing or wrong bearer token");
}

/* The first call, headers in: the token, then whatever refuses the
 * request without its body. */
static enum MHD_Result first_call(rep_node *n, struct MHD_Connection *c,
				  const char *method, const char *url,
				  rep_req *q)
{
	unsigned st = rep_route_match(method, url, &q->route);
	int auth = q->route ? q->route->auth : REP_AUTH_CLUSTER;
	bool peer = !q->route || q->route->peer;

	if (peer && !rep_server_peer_ok(n, c, method, url)) {
		q->failed = true;
		return rep_reply_err(c, MHD_HTTP_FORBIDDEN,
				     "this endpoint needs a client "
				     "certificate signed by the cluster's "
				     "CA (mutual TLS)");
	}
	if (!authorized(n, c, auth))
		return refuse_token(n, c, method, url, q);
	if (auth != REP_AUTH_NONE)
		MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
					  AUTHED_TIMEOUT_S);
	if (st == 0 && q->route->body)
		return q->route->early ? q->route->early(n, c, q) : MHD_YES;
	if (!has_body(c))
		return MHD_YES;
	q->failed = true;
	if (st)
		return reply_route(c, st, q->route);
	return rep_reply_err(c, MHD_HTTP_CONTENT_TOO_LARGE,
			     "this endpoint takes no request body");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c,
			       const char *url, const char *method,
			       const char *version, const char *upload,
			       size_t *upload_size, void **con_cls)
{
	rep_node *n = cls;
	rep_req *q = *con_cls;
	unsigned st;

	(void)version;
	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		q->fd = -1;
		*con_cls = q;
		return first_call(n, c, method, url, q);
	}
	if (q->failed && *upload_size) {
		*upload_size = 0; /* already answered */
		return MHD_YES;
	}
	if (*upload_size) {
		/* Only a route that takes a body gets this far with one. */
		if (q->route && q->route->upload)
			q->route->upload(n, c, q, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	if (q->failed)
		return MHD_YES; /* answered already */
	st = rep_route_match(method, url, &q->route);
	if (st)
		return reply_route(c, st, q->route);
	return q->route->handler(n, c, q);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	rep_req *q = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
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
		if (!end || end[1] != ':' ||
		    (size_t)(end - addr - 1) >= sizeof(host))
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
	struct MHD_OptionItem tls[8];
	/* poll(), not select(): with many databases open, the server's
	 * descriptors are past FD_SETSIZE and select() refuses them
	 * ("file descriptor for inter-thread communication channel
	 * exceeds maximum value"). */
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			 MHD_USE_ERROR_LOG;
	socklen_t len;
	int rc;

	if (parse_addr(n->o.http.addr, &ss, &len) < 0) {
		log_error("http.addr \"%s\" is not [host]:port", n->o.http.addr);
		return -EINVAL;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	rc = rep_server_tls_options(n, tls, sizeof(tls) / sizeof(tls[0]),
				    &flags);
	if (rc < 0)
		return rc;
	n->mhd = MHD_start_daemon(
		flags, 0, NULL, NULL, handler, n,
		/* first, so that every message of the daemon comes here */
		MHD_OPTION_EXTERNAL_LOGGER, rep_server_mhd_log, n,
		MHD_OPTION_SOCK_ADDR, &ss,
		MHD_OPTION_NOTIFY_COMPLETED, completed, n,
		MHD_OPTION_CONNECTION_TIMEOUT, PREAUTH_TIMEOUT_S,
		MHD_OPTION_CONNECTION_LIMIT, CONN_LIMIT,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, CONN_PER_IP_LIMIT,
		/* A replica's /stream URL names every database's position
		 * (up to MAX_SUB_DBS of about 640 bytes each): the 32 KiB
		 * default answered 414 from about 700 databases on. */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
		MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
	if (!n->mhd) {
		log_error("cannot listen on %s (http.addr): in use or not a "
			  "local address", n->o.http.addr);
		return -EADDRINUSE;
	}
	log_info("HTTP API on %s%s", n->o.http.addr,
		 !n->tls ? ""
		 : rep_tls_mutual(n->tls) ? " (HTTPS, client certificates "
					    "checked)"
					  : " (HTTPS)");
	return 0;
}

void rep_server_stop(rep_node *n)
{
	if (n->mhd) {
		MHD_stop_daemon(n->mhd);
		n->mhd = NULL;
	}
}
