/* HTTP/1.1 heads, framing and relaying for the proxy: see proxy_http.h
 * (rules H1-H5). */
#include "proxy_http.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

void px_conn_init(px_conn *c, int fd, int timeout_ms)
{
	c->fd = fd;
	c->timeout_ms = timeout_ms;
	c->off = c->len = 0;
	if (fd >= 0 && timeout_ms >= 0) {
		/* A timeout on the socket, not a poll before each read. */
		struct timeval tv = {timeout_ms / 1000,
				     (timeout_ms % 1000) * 1000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
}

/* Reads more into c->buf (compacting first). 0; -ENODATA at EOF;
 * -ETIMEDOUT; -E2BIG when the buffer is full; -errno. */
static int fill(px_conn *c)
{
	ssize_t n;

	if (c->off > 0 && c->off == c->len)
		c->off = c->len = 0;
	if (c->len == sizeof(c->buf)) {
		if (c->off == 0)
			return -E2BIG;
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	do
		n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT
							       : -errno;
	if (n == 0)
		return -ENODATA;
	c->len += (size_t)n;
	return 0;
}

/* The end of the head in c->buf from c->off (just past the empty
 * line), or NULL. */
static const char *head_end(const px_conn *c)
{
	const char *p = c->buf + c->off, *end = c->buf + c->len;

	for (; p < end; p++) {
		if (*p != '\n')
			continue;
		if (p + 1 < end && p[1] == '\n')
			return p + 2;
		if (p + 2 < end && p[1] == '\r' && p[2] == '\n')
			return p + 3;
	}
	return NULL;
}

/* Cuts the next line out of *p (NUL-terminated, CR dropped). */
static char *next_line(char **p)
{
	char *s = *p, *nl = strchr(s, '\n');

	if (!nl)
		return NULL;
	*nl = '\0';
	if (nl > s && nl[-1] == '\r')
		nl[-1] = '\0';
	*p = nl + 1;
	return s;
}

static char *trim(char *s)
{
	size_t n;

	while (*s == ' ' || *s == '\t')
		s++;
	n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

/* H2: the start line's three parts (the third may hold spaces: a
 * reason phrase). */
static int parse_start(px_head *h, char *line)
{
	char *sp1 = strchr(line, ' '), *sp2;

	if (!sp1)
		return -EPROTO;
	*sp1 = '\0';
	sp2 = strchr(sp1 + 1, ' ');
	h->a = line;
	h->b = sp1 + 1;
	if (sp2) {
		*sp2 = '\0';
		h->c = sp2 + 1;
	} else {
		h->c = sp1 + 1 + strlen(sp1 + 1); /* "" (no reason) */
	}
	return *h->a && *h->b ? 0 : -EPROTO;
}

static int parse_head(px_head *h)
{
	char *p = h->raw, *line = next_line(&p);

	h->nh = 0;
	if (!line || parse_start(h, line) < 0)
		return -EPROTO;
	while ((line = next_line(&p)) != NULL && *line) {
		char *colon = strchr(line, ':'), *ws = strpbrk(line, " \t");
		if (!colon || colon == line || (ws && ws < colon))
			return -EPROTO;
		if (h->nh == PX_HEADERS_MAX)
			return -E2BIG;
		*colon = '\0';
		h->h[h->nh].name = line;
		h->h[h->nh].value = trim(colon + 1);
		h->nh++;
	}
	return 0;
}

int px_read_head(px_conn *c, px_head *h)
{
	const char *end;
	size_t n;
	int rc;

	/* Empty lines before a request are allowed (RFC 9112 2.2). */
	for (;;) {
		while (c->off < c->len &&
		       (c->buf[c->off] == '\r' || c->buf[c->off] == '\n'))
			c->off++;
		end = c->off < c->len ? head_end(c) : NULL;
		if (end)
			break;
		if (c->len - c->off >= PX_HEAD_MAX)
			return -E2BIG;
		rc = fill(c);
		if (rc == -ENODATA && c->off < c->len)
			return -EPROTO;
		if (rc < 0)
			return rc;
	}
	n = (size_t)(end - (c->buf + c->off));
	if (n >= PX_HEAD_MAX)
		return -E2BIG;
	memcpy(h->raw, c->buf + c->off, n);
	h->raw[n] = '\0';
	h->rawlen = n;
	c->off += n;
	if (memchr(h->raw, '\0', n))
		return -EPROTO;
	return parse_head(h);
}

const char *px_head_get(const px_head *h, const char *name)
{
	for (size_t i = 0; i < h->nh; i++)
		if (strcasecmp(h->h[i].name, name) == 0)
			return h->h[i].value;
	return NULL;
}

/* Whether the comma list v holds tok. */
static bool list_has(const char *v, const char *tok)
{
	size_t tl = strlen(tok);

	while (*v) {
		const char *end;
		size_t n;
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		end = v + strcspn(v, ",");
		n = (size_t)(end - v);
		while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			n--;
		if (n == tl && strncasecmp(v, tok, tl) == 0)
			return true;
		v = end;
	}
	return false;
}

bool px_head_has_token(const px_head *h, const char *name, const char *tok)
{
	for (size_t i = 0; i < h->nh; i++)
		if (strcasecmp(h->h[i].name, name) == 0 &&
		    list_has(h->h[i].value, tok))
			return true;
	return false;
}

/* The last coding of a Transfer-Encoding value is chunked. */
static bool ends_chunked(const char *v)
{
	const char *last = strrchr(v, ',');
	char tok[16];

	last = last ? last + 1 : v;
	while (*last == ' ' || *last == '\t')
		last++;
	snprintf(tok, sizeof(tok), "%.*s", (int)strcspn(last, " \t;"), last);
	return strcasecmp(tok, "chunked") == 0;
}

/* Content-Length: digits only, every one the same. 0, 1 (none),
 * -EPROTO. */
static int content_length(const px_head *h, uint64_t *len)
{
	bool seen = false;

	for (size_t i = 0; i < h->nh; i++) {
		const char *v = h->h[i].value;
		uint64_t n = 0;
		if (strcasecmp(h->h[i].name, "Content-Length") != 0)
			continue;
		if (!*v)
			return -EPROTO;
		for (; *v; v++) {
			if (*v < '0' || *v > '9' || n > UINT64_MAX / 10 - 10)
				return -EPROTO;
			n = n * 10 + (uint64_t)(*v - '0');
		}
		if (seen && n != *len)
			return -EPROTO;
		*len = n;
		seen = true;
	}
	return seen ? 0 : 1;
}

int px_request_framing(const px_head *h, int *kind, uint64_t *len)
{
	const char *te = px_head_get(h, "Transfer-Encoding");
	int rc = content_length(h, len);

	if (rc < 0)
		return rc;
	if (te) {
		if (rc == 0 || !ends_chunked(te))
			return -EPROTO;
		*kind = PX_BODY_CHUNKED;
		return 0;
	}
	*kind = rc == 0 && *len > 0 ? PX_BODY_LENGTH : PX_BODY_NONE;
	return 0;
}

int px_response_framing(const px_head *h, bool head_req, int *kind,
			uint64_t *len)
{
	int status = atoi(h->b), rc;
	const char *te = px_head_get(h, "Transfer-Encoding");

	*len = 0;
	if (head_req || (status >= 100 && status < 200) || status == 204 ||
	    status == 304) {
		*kind = PX_BODY_NONE;
		return 0;
	}
	if (te) {
		*kind = ends_chunked(te) ? PX_BODY_CHUNKED : PX_BODY_CLOSE;
		return 0;
	}
	rc = content_length(h, len);
	if (rc < 0)
		return rc;
	*kind = rc == 0 ? (*len ? PX_BODY_LENGTH : PX_BODY_NONE)
			: PX_BODY_CLOSE;
	return 0;
}

int px_send(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Relays up to want bytes (all of them unless until_eof) from src to
 * dst. */
static int relay_bytes(px_conn *src, int dst, uint64_t want,
		       bool until_eof, uint64_t *count)
{
	while (until_eof || want > 0) {
		size_t have = px_conn_pending(src), take;
		int rc;
		if (have == 0) {
			rc = fill(src);
			if (rc == -ENODATA && until_eof)
				return 0;
			if (rc < 0)
				return rc == -ENODATA ? -EIO : rc;
			continue;
		}
		take = until_eof || have < want ? have : (size_t)want;
		if (px_send(dst, src->buf + src->off, take) < 0)
			return -EPIPE;
		src->off += take;
		want -= until_eof ? 0 : take;
		if (count)
			*count += take;
	}
	return 0;
}

/* Reads one line (up to LF) and relays it; its text (CR LF cut) into
 * line. */
static int relay_line(px_conn *src, int dst, char *line, size_t cap)
{
	for (;;) {
		char *s = src->buf + src->off;
		char *nl = memchr(s, '\n', px_conn_pending(src));
		int rc;
		if (nl) {
			size_t n = (size_t)(nl - s) + 1, k = n - 1;
			if (k > 0 && s[k - 1] == '\r')
				k--;
			if (k >= cap)
				return -EPROTO;
			memcpy(line, s, k);
			line[k] = '\0';
			if (px_send(dst, s, n) < 0)
				return -EPIPE;
			src->off += n;
			return 0;
		}
		if (px_conn_pending(src) >= cap)
			return -EPROTO;
		rc = fill(src);
		if (rc < 0)
			return rc == -ENODATA ? -EIO : rc;
	}
}

/* H5. */
static int relay_chunked(px_conn *src, int dst, uint64_t *count)
{
	char line[1024];

	for (;;) {
		uint64_t size = 0;
		const char *p;
		int rc = relay_line(src, dst, line, sizeof(line));
		if (rc < 0)
			return rc;
		for (p = line; *p && *p != ';' && *p != ' ' && *p != '\t';
		     p++) {
			int d = *p >= '0' && *p <= '9' ? *p - '0'
				: *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
				: *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
							 : -1;
			if (d < 0 || size >> 60)
				return -EPROTO;
			size = size * 16 + (uint64_t)d;
		}
		if (p == line)
			return -EPROTO;
		if (size == 0)
			break;
		rc = relay_bytes(src, dst, size, false, count);
		if (rc == 0)
			rc = relay_line(src, dst, line, sizeof(line));
		if (rc < 0)
			return rc;
		if (line[0])
			return -EPROTO;
	}
	/* Trailers up to the empty line. */
	for (;;) {
		int rc = relay_line(src, dst, line, sizeof(line));
		if (rc < 0)
			return rc;
		if (!line[0])
			return 0;
	}
}

int px_relay_body(px_conn *src, int dst, int kind, uint64_t len,
		  uint64_t *out_bytes)
{
	uint64_t dummy = 0, *count = out_bytes ? out_bytes : &dummy;

	switch (kind) {
	case PX_BODY_LENGTH:
		return relay_bytes(src, dst, len, false, count);
	case PX_BODY_CHUNKED:
		return relay_chunked(src, dst, count);
	case PX_BODY_CLOSE:
		return relay_bytes(src, dst, 0, true, count);
	default:
		return 0;
	}
}

/* Moves what a has to b's socket: false when a closed or either
 * failed. */
static bool pump(px_conn *a, px_conn *b)
{
	if (px_conn_pending(a) == 0 && fill(a) < 0)
		return false;
	if (px_send(b->fd, a->buf + a->off, px_conn_pending(a)) < 0)
		return false;
	a->off = a->len = 0;
	return true;
}

void px_splice(px_conn *a, px_conn *b)
{
	struct pollfd pf[2] = {{.fd = a->fd, .events = POLLIN},
			       {.fd = b->fd, .events = POLLIN}};
	int ta = a->timeout_ms, tb = b->timeout_ms;

	a->timeout_ms = b->timeout_ms = -1;
	if ((px_conn_pending(a) && !pump(a, b)) ||
	    (px_conn_pending(b) && !pump(b, a)))
		goto out;
	for (;;) {
		int r = poll(pf, 2, -1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		if ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    !pump(a, b))
			break;
		if ((pf[1].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    !pump(b, a))
			break;
	}
out:
	a->timeout_ms = ta;
	b->timeout_ms = tb;
}

void px_out_add(px_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->p ? o->p + o->len : NULL,
			      o->p ? o->cap - o->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->oom = true;
			return;
		}
		if (o->p && (size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		{
			size_t cap = o->cap * 2 + (size_t)n + 256;
			char *p = realloc(o->p, cap);
			if (!p) {
				o->oom = true;
				return;
			}
			o->p = p;
			o->cap = cap;
		}
	}
}

void px_out_bytes(px_out *o, const void *p, size_t len)
{
	if (o->oom)
		return;
	if (o->cap - o->len < len) {
		size_t cap = o->cap * 2 + len;
		char *q = realloc(o->p, cap);
		if (!q) {
			o->oom = true;
			return;
		}
		o->p = q;
		o->cap = cap;
	}
	memcpy(o->p + o->len, p, len);
	o->len += len;
}

void px_out_take_body(px_out *o, px_conn *c, uint64_t *left)
{
	size_t take = px_conn_pending(c);

	if (take > *left)
		take = (size_t)*left;
	if (take == 0)
		return;
	px_out_bytes(o, c->buf + c->off, take);
	if (o->oom)
		return;
	c->off += take;
	*left -= take;
}

void px_out_free(px_out *o)
{
	free(o->p);
	*o = (px_out){0};
}
