/*
 * HTTP/1.1 for the proxy (proxy.c): reading a message head from a
 * socket, looking at its headers, and relaying a body from one socket
 * to another as its framing says, in pieces (never the whole body in
 * memory). A leaf: it knows nothing of nodes or cookies.
 *
 * Rules (RFC 9112, the subset a proxy needs):
 *   H1. A head is the start line and the header lines up to the empty
 *       line; at most PX_HEAD_MAX bytes and PX_HEADERS_MAX headers,
 *       else -E2BIG (the caller answers 431). Lines end in CRLF or LF.
 *   H2. A header line without a colon, a name with white space, or a
 *       start line that is not three parts is -EPROTO (400).
 *   H3. Request framing: Transfer-Encoding whose last coding is chunked
 *       means chunked; any other Transfer-Encoding is -EPROTO; else
 *       Content-Length (digits only; several must agree) is the length;
 *       else no body. Transfer-Encoding and Content-Length together are
 *       -EPROTO (request smuggling).
 *   H4. Response framing: a response to HEAD, 1xx, 204 and 304 have no
 *       body; else chunked, else Content-Length, else until the
 *       connection closes.
 *   H5. A chunked body is relayed byte for byte (chunk lines, data,
 *       trailers), so its end is seen without re-encoding it; a chunk
 *       line longer than 1 KiB or a size that is not hex is -EPROTO.
 */
#ifndef REPLICA_PROXY_HTTP_H
#define REPLICA_PROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PX_HEAD_MAX 32768
#define PX_HEADERS_MAX 128
#define PX_BUF 65536

/* A buffered reader over a socket. timeout_ms >= 0: px_conn_init sets
 * it as the socket's SO_RCVTIMEO; < 0: wait for ever (the proxy stops
 * it with shutdown()). */
typedef struct px_conn {
	int fd;
	int timeout_ms;
	size_t off, len;
	char buf[PX_BUF];
} px_conn;

typedef struct px_header {
	char *name, *value;     /* NUL-terminated, inside px_head.raw */
} px_header;

/* A parsed head. Request: a = method, b = target, c = version;
 * response: a = version, b = status code, c = reason. */
typedef struct px_head {
	char raw[PX_HEAD_MAX];
	size_t rawlen;
	char *a, *b, *c;
	px_header h[PX_HEADERS_MAX];
	size_t nh;
} px_head;

enum px_framing {
	PX_BODY_NONE = 0,
	PX_BODY_LENGTH = 1,
	PX_BODY_CHUNKED = 2,
	PX_BODY_CLOSE = 3,       /* until the connection closes */
};

void px_conn_init(px_conn *c, int fd, int timeout_ms);
/* Bytes already read and not yet consumed. */
static inline size_t px_conn_pending(const px_conn *c)
{
	return c->len - c->off;
}

/* Reads the next head (H1, H2). 0; -ENODATA: the connection closed
 * before any byte of it; -ETIMEDOUT; -E2BIG; -EPROTO; -EIO/-errno. */
int px_read_head(px_conn *c, px_head *h);
/* The first header named name (any case), or NULL. */
const char *px_head_get(const px_head *h, const char *name);
/* Whether a comma-separated header (every one named name) lists tok,
 * any case. */
bool px_head_has_token(const px_head *h, const char *name, const char *tok);
/* H3 (a request), H4 (a response; head_req: it answers a HEAD). 0 with
 * *kind (enum px_framing) and *len; -EPROTO. */
int px_request_framing(const px_head *h, int *kind, uint64_t *len);
int px_response_framing(const px_head *h, bool head_req, int *kind,
			uint64_t *len);

/* Writes all of buf (MSG_NOSIGNAL). 0 or -errno. */
int px_send(int fd, const void *buf, size_t len);
/* Relays a body of kind (len for PX_BODY_LENGTH) from src to dst, each
 * piece as it arrives (a stream's events are not held back). 0;
 * -EPIPE: dst failed; other < 0: src failed or broke H5. *out_bytes
 * (may be NULL) counts the body bytes relayed. */
int px_relay_body(px_conn *src, int dst, int kind, uint64_t len,
		  uint64_t *out_bytes);
/* After a 101: copies both ways (what src has buffered first) until
 * either side closes. */
void px_splice(px_conn *a, px_conn *b);

/* A growing buffer for a head being written; oom is sticky. */
typedef struct px_out {
	char *p;
	size_t len, cap;
	bool oom;
} px_out;

void px_out_add(px_out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Appends len raw bytes. */
void px_out_bytes(px_out *o, const void *p, size_t len);
/* Moves the start of a PX_BODY_LENGTH body (*left bytes) that c has
 * buffered already into o, so that head and body go in one send. */
void px_out_take_body(px_out *o, px_conn *c, uint64_t *left);
void px_out_free(px_out *o);

#endif
