/*
 * One client connection of the proxy: its requests in turn (HTTP/1.1
 * keep-alive), each routed and exchanged with the local application or
 * the primary's proxy. The rules (docs/PROTOCOL.md, "The proxy"):
 *
 *   R1. A path that matches proxy.passthrough goes to the local
 *       application untouched: no cookie, no forwarding.
 *   R2. A request marked Ltxfs-Forwarded comes from another node's
 *       proxy: with http.token set it must carry
 *       "Ltxfs-Authorization: Bearer <token>" (401 otherwise); a node
 *       that is not the primary answers it 503 (it is never forwarded
 *       again: no loops); the primary serves it locally.
 *   R3. An upgrade (Connection: Upgrade; WebSocket) goes to the local
 *       application, then bytes are copied both ways.
 *   R4. Reads (GET, HEAD) on a replica go to the primary when the path
 *       matches proxy.always-forward, or when proxy.max-lag is set and
 *       proxy.db is further behind than that; else, when they carry the
 *       cookie with a TXID the local database has not reached, they
 *       wait for it up to proxy.read-timeout, then go to the primary.
 *       Everything else is served by the local application. A cookie
 *       whose value is not 16 hex digits is ignored.
 *   R5. Writes (every other method) on a replica go to the primary's
 *       proxy; on the primary to the local application, and the answer
 *       gets the cookie: the TXID of proxy.db once the application's
 *       answer head arrived (everything committed before it is in).
 *   R6. The proxy answers itself, one text line: 400 a malformed
 *       request, 401 (R2), 431 a head too large, 502 the application
 *       unreachable, no answer from the application or the primary's
 *       proxy, or the primary's /info refused (not 200); 503 no
 *       primary known, the primary or its proxy unreachable (a primary
 *       stopped), the primary runs no proxy, or R2's loop guard.
 *       After an answer of its own to a request with a body, the
 *       connection is closed.
 *   R7. Requests sent on (R3-R5) carry X-Forwarded-For (the client's
 *       address appended), X-Forwarded-Proto and X-Forwarded-Host (kept
 *       when present); hop-by-hop headers (Connection, Keep-Alive,
 *       Proxy-Connection, Expect) are not passed on; Expect:
 *       100-continue is answered by the proxy; Ltxfs-Authorization
 *       never reaches the application.
 *   R8. Requests to the primary's proxy go over kept connections: the
 *       client connection's own, else one from the proxy's pool, else
 *       a new one; a client connection that ends gives its connection
 *       to the primary's proxy to the pool (proxy_pool.h, K1-K4).
 */
#include "proxy_i.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs/db.h"
#include "lib/clock.h"
#include "lib/log.h"

enum px_dest { DEST_LOCAL = 0, DEST_PRIMARY = 1 };

enum px_flags {
	X_VERBATIM = 1 << 0,     /* R1: headers as they came */
	X_COOKIE = 1 << 1,       /* R5: set the cookie */
	X_MARK = 1 << 2,         /* to the primary: marker and token */
	X_UPGRADE = 1 << 3,      /* R3 */
	X_MARKED = 1 << 4,       /* came marked (R2): forwarding headers
				  * kept as they are */
};

struct session {
	rep_proxy *p;
	int slot;
	const char *peer;
	px_conn *client;
	px_conn *up[2];          /* local, primary's proxy (NULL: none) */
	char fwd_url[512];       /* what up[DEST_PRIMARY] is connected to */
	bool clean[2];           /* up[] at a message boundary, kept
				  * alive by the other side (K3) */
	px_head *req, *resp;
	int req_kind;            /* framing of the request body */
	uint64_t req_len;
};

static const int slot_fd_index[2] = {PX_FD_LOCAL, PX_FD_FWD};

static void close_up(struct session *s, int dest)
{
	if (!s->up[dest] || s->up[dest]->fd < 0)
		return;
	rep_proxy_slot_fd(s->p, s->slot, slot_fd_index[dest], -1);
	close(s->up[dest]->fd);
	s->up[dest]->fd = -1;
}

static const char *reason_of(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 431: return "Request Header Fields Too Large";
	case 502: return "Bad Gateway";
	default: return "Service Unavailable";
	}
}

/* R6: the proxy's own answer. Returns whether the connection stays. */
static bool reply(struct session *s, int status, const char *msg)
{
	px_metrics *m = &s->p->m;
	bool keep = s->req_kind == PX_BODY_NONE && status != 400 &&
		    status != 431;
	px_out o = {0};

	atomic_fetch_add(&m->requests[PX_REFUSED], 1);
	atomic_fetch_add(status == 400 || status == 431 ? &m->status_400
			 : status == 401 ? &m->status_401
			 : status == 502 ? &m->status_502 : &m->status_503, 1);
	px_out_add(&o, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; "
		   "charset=utf-8\r\nContent-Length: %zu\r\n%s%s\r\n"
		   "ltxfs proxy: %s\n", status, reason_of(status),
		   strlen(msg) + 14, status == 401 ?
		   "WWW-Authenticate: Bearer realm=\"ltxfs\"\r\n" : "",
		   keep ? "" : "Connection: close\r\n", msg);
	if (!o.oom)
		px_send(s->client->fd, o.p, o.len);
	px_out_free(&o);
	return keep;
}

static bool is_hop(const char *name, bool upgrade)
{
	static const char *const hop[] = {"Connection", "Keep-Alive",
		"Proxy-Connection", "Expect", "Upgrade", "TE", NULL};

	for (int i = 0; hop[i]; i++)
		if (strcasecmp(name, hop[i]) == 0)
			return !(upgrade && i == 4);
	return false;
}

static bool is_forwarding(const char *name)
{
	return strcasecmp(name, "X-Forwarded-For") == 0 ||
	       strcasecmp(name, "X-Forwarded-Proto") == 0 ||
	       strcasecmp(name, "X-Forwarded-Host") == 0 ||
	       strcasecmp(name, REP_PROXY_H_FORWARDED) == 0;
}

/* R7: the head sent on. */
static void request_head(struct session *s, unsigned flags, px_out *o)
{
	const px_head *h = s->req;
	const rep_proxy_opts *po = &s->p->o;
	bool upgrade = flags & X_UPGRADE, keep_fwd = flags & X_MARKED;

	px_out_add(o, "%s %s %s\r\n", h->a, h->b, h->c);
	for (size_t i = 0; i < h->nh; i++) {
		const char *n = h->h[i].name;
		if (!(flags & X_VERBATIM) &&
		    (is_hop(n, upgrade) ||
		     strcasecmp(n, REP_PROXY_H_AUTH) == 0 ||
		     (!keep_fwd && is_forwarding(n))))
			continue;
		if ((flags & X_VERBATIM) && strcasecmp(n, "Expect") == 0)
			continue;
		px_out_add(o, "%s: %s\r\n", n, h->h[i].value);
	}
	if (flags & X_VERBATIM)
		goto end;
	if (!keep_fwd) {
		const char *xff = px_head_get(h, "X-Forwarded-For");
		const char *xfp = px_head_get(h, "X-Forwarded-Proto");
		const char *xfh = px_head_get(h, "X-Forwarded-Host");
		const char *host = px_head_get(h, "Host");
		px_out_add(o, "X-Forwarded-For: %s%s%s\r\n", xff ? xff : "",
			   xff ? ", " : "", s->peer);
		px_out_add(o, "X-Forwarded-Proto: %s\r\n", xfp ? xfp : "http");
		if (xfh || host)
			px_out_add(o, "X-Forwarded-Host: %s\r\n",
				   xfh ? xfh : host);
	}
	if (flags & X_MARK) {
		px_out_add(o, "%s: %016" PRIx64 "\r\n", REP_PROXY_H_FORWARDED,
			   po->node_id);
		if (po->token[0])
			px_out_add(o, "%s: Bearer %s\r\n", REP_PROXY_H_AUTH,
				   po->token);
	}
	if (upgrade)
		px_out_add(o, "Connection: Upgrade\r\n");
end:
	px_out_add(o, "\r\n");
}

/* Whether the client wants the connection closed after this one. */
static bool client_closes(const px_head *h)
{
	if (px_head_has_token(h, "Connection", "close"))
		return true;
	return strcasecmp(h->c, "HTTP/1.1") != 0 &&
	       !px_head_has_token(h, "Connection", "keep-alive");
}

/* The upstream connection stays after this response. */
static bool upstream_keeps(const px_head *r, int kind)
{
	if (kind == PX_BODY_CLOSE ||
	    px_head_has_token(r, "Connection", "close"))
		return false;
	return strcasecmp(r->a, "HTTP/1.1") == 0 ||
	       px_head_has_token(r, "Connection", "keep-alive");
}

/* proxy.db's TXID now, every committed transaction in (0: none). */
static uint64_t local_txid(rep_proxy *p, bool drain)
{
	fs_db *db = p->mount ? fs_mount_db(p->mount, p->o.db) : NULL;

	if (!db)
		return 0;
	if (drain)
		fs_db_drain(db);
	return fs_db_pos(db).txid;
}

/* The response head sent to the client. */
static void response_head(struct session *s, unsigned flags, bool close,
			  px_out *o)
{
	const px_head *r = s->resp;
	bool upgraded = atoi(r->b) == 101;

	px_out_add(o, "%s %s%s%s\r\n", r->a, r->b, r->c[0] ? " " : "", r->c);
	for (size_t i = 0; i < r->nh; i++) {
		const char *n = r->h[i].name;
		if (!(flags & X_VERBATIM) && !upgraded &&
		    (strcasecmp(n, "Connection") == 0 ||
		     strcasecmp(n, "Keep-Alive") == 0 ||
		     strcasecmp(n, "Proxy-Connection") == 0))
			continue;
		px_out_add(o, "%s: %s\r\n", n, r->h[i].value);
	}
	if (flags & X_COOKIE) {
		uint64_t txid = local_txid(s->p, true);
		if (txid)
			px_out_add(o, "Set-Cookie: %s=%016" PRIx64 "; Path=/; "
				   "Max-Age=300; HttpOnly; SameSite=Lax\r\n",
				   REP_PROXY_COOKIE, txid);
	}
	if (close && !upgraded)
		px_out_add(o, "Connection: close\r\n");
	px_out_add(o, "\r\n");
}

/* Parses "http://host:port" (no path). */
static int split_url(const char *url, char *host, size_t hl, char *port,
		     size_t pl)
{
	const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : NULL;
	const char *colon, *end;

	if (!p)
		return -EINVAL;
	end = p + strcspn(p, "/");
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (!rb || rb[1] != ':')
			return -EINVAL;
		colon = rb + 1;
		p++;
		if ((size_t)(rb - p) >= hl)
			return -EINVAL;
		memcpy(host, p, (size_t)(rb - p));
		host[rb - p] = '\0';
	} else {
		colon = memchr(p, ':', (size_t)(end - p));
		if (!colon || (size_t)(colon - p) >= hl)
			return -EINVAL;
		memcpy(host, p, (size_t)(colon - p));
		host[colon - p] = '\0';
	}
	if ((size_t)(end - colon - 1) >= pl || end == colon + 1)
		return -EINVAL;
	memcpy(port, colon + 1, (size_t)(end - colon - 1));
	port[end - colon - 1] = '\0';
	return 0;
}

/* An idle keep-alive connection the other side closed (or that has
 * bytes nobody asked for) is not used again. */
static bool still_open(px_conn *c)
{
	struct pollfd pf = {.fd = c->fd, .events = POLLIN};

	return c->fd >= 0 && poll(&pf, 1, 0) == 0 && px_conn_pending(c) == 0;
}

/* Takes a kept connection to url from the pool (R8): whether one came. */
static bool from_pool(struct session *s, int dest, const char *url)
{
	int fd = px_pool_take(s->p->pool, url);

	if (fd < 0)
		return false;
	px_conn_init(s->up[dest], fd, -1);
	rep_proxy_slot_fd(s->p, s->slot, slot_fd_index[dest], fd);
	snprintf(s->fwd_url, sizeof(s->fwd_url), "%s", url);
	return true;
}

/* The connection to dest, opened when needed (fresh: a new one, K4).
 * NULL with the status to answer (502, 503) and why. *reused: it
 * served a request before. */
static px_conn *upstream(struct session *s, int dest, bool body_left,
			 bool fresh, bool *reused, int *status, char *why,
			 size_t wl)
{
	rep_proxy *p = s->p;
	char url[512], host[256], port[16];
	const char *h = p->thost, *pt = p->tport;
	int fd, rc;

	if (!s->up[dest]) {
		s->up[dest] = malloc(sizeof(px_conn));
		if (!s->up[dest]) {
			*status = 503;
			snprintf(why, wl, "out of memory");
			return NULL;
		}
		px_conn_init(s->up[dest], -1, -1);
	}
	if (dest == DEST_PRIMARY) {
		rc = rep_proxy_primary(p, url, sizeof(url), why, wl);
		if (rc < 0) {
			*status = rc == -EPROTO ? 502 : 503;
			return NULL;
		}
		if (strcmp(url, s->fwd_url) != 0)
			close_up(s, dest);
		if (split_url(url, host, sizeof(host), port, sizeof(port))) {
			*status = 502;
			snprintf(why, wl, "the primary's proxy URL %s is not "
				 "http://host:port", url);
			return NULL;
		}
		h = host;
		pt = port;
	}
	/* A request that can be sent again (no body left to stream) finds
	 * out by its answer that a kept connection was closed (exchange
	 * retries once); one with a body to stream is checked first. */
	*reused = !fresh && s->up[dest]->fd >= 0 &&
		  px_conn_pending(s->up[dest]) == 0 &&
		  (!body_left || still_open(s->up[dest]));
	if (*reused) {
		if (dest == DEST_PRIMARY)
			atomic_fetch_add(&p->m.fwd_kept, 1);
		return s->up[dest];
	}
	close_up(s, dest);
	if (dest == DEST_PRIMARY && !fresh && from_pool(s, dest, url)) {
		atomic_fetch_add(&p->m.fwd_pooled, 1);
		*reused = true;
		return s->up[dest];
	}
	fd = rep_proxy_connect(p, h, pt);
	if (fd < 0) {
		/* The application down: 502; the primary's proxy: as
		 * good as no primary (R6). */
		*status = dest == DEST_LOCAL ? 502 : 503;
		if (dest == DEST_PRIMARY)
			rep_proxy_primary_forget(p);
		snprintf(why, wl, "%s %s:%s cannot be reached: %s",
			 dest == DEST_LOCAL ? "the application (proxy.target)"
					    : "the primary's proxy", h, pt,
			 strerror(-fd));
		return NULL;
	}
	px_conn_init(s->up[dest], fd, -1);
	rep_proxy_slot_fd(p, s->slot, slot_fd_index[dest], fd);
	if (dest == DEST_PRIMARY) {
		atomic_fetch_add(&p->m.fwd_new, 1);
		snprintf(s->fwd_url, sizeof(s->fwd_url), "%s", url);
	}
	return s->up[dest];
}

/* Whether the request has body bytes not in its head buffer. */
static bool body_left(const struct session *s)
{
	return s->req_kind == PX_BODY_CHUNKED ||
	       (s->req_kind == PX_BODY_LENGTH && s->req_len > 0);
}

/* Sends the head and the body; reads the answer's head (1xx but 101
 * relayed). 0; < 0 with *status and why set (502), or -ECONNABORTED
 * when the client's side failed (nothing to answer). */
static int send_and_head(struct session *s, px_conn *up, unsigned flags,
			 const px_out *head, bool reused, int *status,
			 char *why, size_t wl)
{
	int rc = px_send(up->fd, head->p, head->len);
	bool body_sent = false; /* a body all in head can be sent again */

	if (rc == 0 && body_left(s)) {
		rc = px_relay_body(s->client, up->fd, s->req_kind, s->req_len,
				   NULL);
		body_sent = true;
		if (rc < 0 && rc != -EPIPE)
			return -ECONNABORTED;
	}
	/* Even when the body could not be sent all: the application may
	 * have answered early (413). */
	for (;;) {
		rc = px_read_head(up, s->resp);
		if (rc < 0) {
			*status = 502;
			snprintf(why, wl, "%s", rc == -EPROTO || rc == -E2BIG
				 ? "the upstream's answer is not HTTP/1.1"
				 : "the upstream closed without an answer");
			return reused && !body_sent ? -EAGAIN : -EIO;
		}
		if (atoi(s->resp->b) >= 200 || atoi(s->resp->b) == 101 ||
		    atoi(s->resp->b) < 100)
			return 0;
		/* An interim answer (100 Continue, 103): passed on. */
		{
			px_out o = {0};
			response_head(s, flags & X_VERBATIM, false, &o);
			rc = o.oom ? -ENOMEM : px_send(s->client->fd, o.p, o.len);
			px_out_free(&o);
			if (rc < 0)
				return -ECONNABORTED;
		}
	}
}

/* One exchange with dest. Returns whether the client's connection
 * stays. */
static bool exchange(struct session *s, int dest, unsigned flags, int kind)
{
	bool reused = false, closing, head_req;
	int status = 502, rc, rkind;
	uint64_t rlen;
	char why[700];
	int64_t t0 = lib_clock_monotonic_ns();
	px_out head = {0}, out = {0};
	px_conn *up;

	s->clean[dest] = false;
	request_head(s, flags, &head);
	if (s->req_kind == PX_BODY_LENGTH)
		px_out_take_body(&head, s->client, &s->req_len);
	if (head.oom) {
		px_out_free(&head);
		return reply(s, 503, "out of memory");
	}
	if (px_head_has_token(s->req, "Expect", "100-continue") &&
	    s->req_kind != PX_BODY_NONE &&
	    px_send(s->client->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
		goto fail_client;
	for (int attempt = 0;; attempt++) {
		up = upstream(s, dest, body_left(s), attempt > 0, &reused,
			      &status, why, sizeof(why));
		if (!up) {
			px_out_free(&head);
			return reply(s, status, why);
		}
		rc = send_and_head(s, up, flags, &head, reused, &status, why,
				   sizeof(why));
		if (rc == -EAGAIN && attempt == 0) {
			close_up(s, dest); /* a stale keep-alive: once more */
			continue;
		}
		break;
	}
	px_out_free(&head);
	if (rc == -ECONNABORTED)
		goto fail_client;
	if (rc < 0) {
		close_up(s, dest);
		if (dest == DEST_PRIMARY)
			rep_proxy_primary_forget(s->p);
		return reply(s, 502, why);
	}
	if (dest == DEST_PRIMARY)
		px_hist_observe(&s->p->m.forward,
				(double)(lib_clock_monotonic_ns() - t0) / 1e6);
	atomic_fetch_add(&s->p->m.requests[kind], 1);
	head_req = strcmp(s->req->a, "HEAD") == 0;
	if (px_response_framing(s->resp, head_req, &rkind, &rlen) < 0) {
		close_up(s, dest);
		return reply(s, 502, "the upstream's answer has a bad "
			     "Content-Length");
	}
	closing = client_closes(s->req) || rkind == PX_BODY_CLOSE;
	response_head(s, flags, closing, &out);
	if (rkind == PX_BODY_LENGTH)
		px_out_take_body(&out, up, &rlen);
	rc = out.oom ? -ENOMEM : px_send(s->client->fd, out.p, out.len);
	px_out_free(&out);
	if (rc < 0)
		goto fail_both;
	if (atoi(s->resp->b) == 101) {
		px_splice(s->client, up);
		goto fail_both;
	}
	if (px_relay_body(up, s->client->fd, rkind, rlen, NULL) < 0)
		goto fail_both;
	if (!upstream_keeps(s->resp, rkind))
		close_up(s, dest);
	else
		s->clean[dest] = true;
	return !closing;
fail_both:
	close_up(s, dest);
fail_client:
	px_out_free(&head);
	return false;
}

static bool matches(char *const *pats, size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(pats[i], path, 0) == 0)
			return true;
	return false;
}

/* The cookie's TXID: 0 when absent or malformed (R4). */
static uint64_t cookie_txid(const px_head *h)
{
	size_t nl = strlen(REP_PROXY_COOKIE);

	for (size_t i = 0; i < h->nh; i++) {
		const char *v = h->h[i].value;
		if (strcasecmp(h->h[i].name, "Cookie") != 0)
			continue;
		while (*v) {
			uint64_t t = 0;
			int k;
			while (*v == ' ' || *v == ';')
				v++;
			if (strncmp(v, REP_PROXY_COOKIE, nl) != 0 ||
			    v[nl] != '=') {
				v += strcspn(v, ";");
				continue;
			}
			v += nl + 1;
			for (k = 0; k < 16; k++) {
				char c = v[k];
				int d = c >= '0' && c <= '9' ? c - '0'
					: c >= 'a' && c <= 'f' ? c - 'a' + 10
					: c >= 'A' && c <= 'F' ? c - 'A' + 10
							       : -1;
				if (d < 0)
					break;
				t = t << 4 | (uint64_t)d;
			}
			if (k == 16 && (v[16] == '\0' || v[16] == ';' ||
					v[16] == ' '))
				return t;
			v += strcspn(v, ";");
		}
	}
	return 0;
}

/* R4: waits for txid; false on timeout (or stop). */
static bool wait_cookie(struct session *s, uint64_t txid)
{
	rep_proxy *p = s->p;
	int64_t t0 = lib_clock_monotonic_ns();
	int64_t deadline = t0 + p->o.read_timeout_ms * 1000000;
	int rc = -ETIMEDOUT;

	atomic_fetch_add(&p->m.read_waits, 1);
	/* In slices, so that rep_proxy_stop is not held up. */
	while (!rep_proxy_stopping(p)) {
		int64_t now = lib_clock_monotonic_ns(), until = now + 200000000;
		if (now >= deadline)
			break;
		rc = rep_node_wait_txid(p->node, p->o.db, txid,
					until < deadline ? until : deadline);
		if (rc != -ETIMEDOUT)
			break;
	}
	px_hist_observe(&p->m.wait,
			(double)(lib_clock_monotonic_ns() - t0) / 1e6);
	if (rc == 0)
		return true;
	atomic_fetch_add(&p->m.read_wait_timeouts, 1);
	log_debug("proxy: a read waited %" PRId64 " ms for db=%s TXID %016"
		  PRIx64 " in vain; sent to the primary", p->o.read_timeout_ms,
		  p->o.db, txid);
	return false;
}

/* R2. */
static bool token_ok(rep_proxy *p, const px_head *h)
{
	const char *v = px_head_get(h, REP_PROXY_H_AUTH);
	const char *tok = p->o.token;
	size_t tl = strlen(tok), vl;
	unsigned diff = 0;

	if (!tok[0])
		return true;
	if (!v || strncmp(v, "Bearer ", 7) != 0)
		return false;
	v += 7;
	vl = strlen(v);
	for (size_t i = 0; i < tl; i++)
		diff |= (unsigned char)tok[i] ^ (unsigned char)(i < vl ? v[i]
								      : 0);
	return diff == 0 && vl == tl;
}

static bool is_read(const px_head *h)
{
	return strcmp(h->a, "GET") == 0 || strcmp(h->a, "HEAD") == 0;
}

static bool route_read(struct session *s, char *path)
{
	rep_proxy *p = s->p;
	uint64_t txid;

	if (rep_node_is_primary(p->node))
		return exchange(s, DEST_LOCAL, 0, PX_LOCAL_READ);
	if (matches(p->o.always_forward, p->o.nalways_forward, path) ||
	    (p->o.max_lag_ms > 0 &&
	     rep_node_lag_ms(p->node, p->o.db) > p->o.max_lag_ms))
		return exchange(s, DEST_PRIMARY, X_MARK, PX_FORWARDED_READ);
	txid = cookie_txid(s->req);
	if (txid == 0 || local_txid(p, false) >= txid)
		return exchange(s, DEST_LOCAL, 0, PX_LOCAL_READ);
	if (wait_cookie(s, txid))
		return exchange(s, DEST_LOCAL, 0, PX_WAITED_READ);
	return exchange(s, DEST_PRIMARY, X_MARK, PX_FORWARDED_READ);
}

/* One request (its head read). Returns whether the connection stays. */
static bool route(struct session *s)
{
	rep_proxy *p = s->p;
	px_head *h = s->req;
	char path[2048];
	bool primary;

	if (px_request_framing(h, &s->req_kind, &s->req_len) < 0) {
		s->req_kind = PX_BODY_CLOSE; /* closes after the answer */
		return reply(s, 400, "bad Content-Length or "
			     "Transfer-Encoding");
	}
	snprintf(path, sizeof(path), "%.*s", (int)strcspn(h->b, "?#"),
		 h->b);
	if (matches(p->o.passthrough, p->o.npassthrough, path))
		return exchange(s, DEST_LOCAL, X_VERBATIM, PX_PASSTHROUGH);
	primary = rep_node_is_primary(p->node);
	if (px_head_get(h, REP_PROXY_H_FORWARDED)) {
		if (!token_ok(p, h))
			return reply(s, 401, "a forwarded request needs the "
				     "cluster token (Ltxfs-Authorization)");
		if (!primary)
			return reply(s, 503, "this node is not the primary; "
				     "a forwarded request is not forwarded "
				     "again");
		return is_read(h)
			? exchange(s, DEST_LOCAL, X_MARKED, PX_LOCAL_READ)
			: exchange(s, DEST_LOCAL, X_MARKED | X_COOKIE,
				   PX_LOCAL_WRITE);
	}
	if (px_head_get(h, "Upgrade") &&
	    px_head_has_token(h, "Connection", "upgrade"))
		return exchange(s, DEST_LOCAL, X_UPGRADE, PX_UPGRADE);
	if (is_read(h))
		return route_read(s, path);
	if (primary)
		return exchange(s, DEST_LOCAL, X_COOKIE, PX_LOCAL_WRITE);
	return exchange(s, DEST_PRIMARY, X_MARK, PX_FORWARDED_WRITE);
}

void rep_proxy_serve(rep_proxy *p, int slot, int fd, const char *peer)
{
	struct session s = {.p = p, .slot = slot, .peer = peer};
	int rc;

	s.client = malloc(sizeof(*s.client));
	s.req = malloc(sizeof(*s.req));
	s.resp = malloc(sizeof(*s.resp));
	if (!s.client || !s.req || !s.resp)
		goto out;
	px_conn_init(s.client, fd, (int)p->o.idle_timeout_ms);
	while (!rep_proxy_stopping(p)) {
		s.req_kind = PX_BODY_NONE;
		rc = px_read_head(s.client, s.req);
		if (rc == -E2BIG) {
			reply(&s, 431, "the request's head is too large");
			break;
		}
		if (rc == -EPROTO) {
			reply(&s, 400, "malformed request head");
			break;
		}
		if (rc < 0 || !route(&s))
			break;
	}
out:
	/* R8, K3: the connection to the primary's proxy, to the pool. */
	if (s.up[DEST_PRIMARY] && s.up[DEST_PRIMARY]->fd >= 0 &&
	    s.clean[DEST_PRIMARY] && px_conn_pending(s.up[DEST_PRIMARY]) == 0 &&
	    !rep_proxy_stopping(p)) {
		rep_proxy_slot_fd(p, slot, PX_FD_FWD, -1);
		px_pool_give(p->pool, s.fwd_url, s.up[DEST_PRIMARY]->fd);
		s.up[DEST_PRIMARY]->fd = -1;
	}
	for (int d = 0; d < 2; d++) {
		close_up(&s, d);
		free(s.up[d]);
	}
	rep_proxy_slot_fd(p, slot, PX_FD_CLIENT, -1);
	close(fd);
	free(s.client);
	free(s.req);
	free(s.resp);
}
