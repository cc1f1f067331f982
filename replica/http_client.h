/*
 * The HTTP client side of ltxfs, over libcurl: what every caller of
 * another node or of etcd needs, written once. The stream client
 * (stream_cli.c), the etcd client (etcd.c), the node's /promote
 * (handoff.c) and the command-line tools (cmd/promote_cmd.c,
 * cmd/xfer_cmd.c) use it.
 *
 *   rep_http_body b = REP_HTTP_BODY_INIT(1024, false);
 *   curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rep_http_collect);
 *   curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
 *   ...
 *   rep_http_body_free(&b);
 *
 * or, for a request whose answer is a short text, rep_http_call.
 *
 * Thread safety: none needed; each value belongs to one caller.
 */
#ifndef REPLICA_HTTP_CLIENT_H
#define REPLICA_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

/* A response body being collected. p is NUL-terminated (NULL until the
 * first byte), owned: rep_http_body_free. */
typedef struct rep_http_body {
	char *p;
	size_t len, cap;
	size_t max;              /* bytes kept at most */
	bool strict;             /* past max: the transfer fails (an answer
				  * that size is refused); else the rest is
				  * read and dropped */
	bool too_big;            /* max was passed */
} rep_http_body;

#define REP_HTTP_BODY_INIT(max_, strict_) \
	{ NULL, 0, 0, (max_), (strict_), false }

/* CURLOPT_WRITEFUNCTION with a rep_http_body as CURLOPT_WRITEDATA (or
 * called directly with size 1). Returns nmemb * size, or 0 to fail the
 * transfer (out of memory; max passed when strict). */
size_t rep_http_collect(char *data, size_t size, size_t nmemb, void *ctx);
/* Empties the body (keeps its memory for the next response). */
void rep_http_body_reset(rep_http_body *b);
void rep_http_body_free(rep_http_body *b);
/* The body as text: "" when nothing came. */
const char *rep_http_body_text(const rep_http_body *b);

/* Appends "Authorization: Bearer <token>" to *hdrs when token is not
 * empty. 0 or -ENOMEM (*hdrs unchanged). */
int rep_http_bearer(struct curl_slist **hdrs, const char *token);

/*
 * TLS of https:// URLs (docs/PROTOCOL.md, "TLS"): the server's
 * certificate is always verified, against ca_file or else the system
 * store (there is no way to turn that off); cert_file and key_file, when
 * set, are this side's client certificate (mutual TLS). NULL or "":
 * unset. The files are read at each new connection, so a rotated client
 * certificate is used from the next one on.
 */
typedef struct rep_http_tls {
	const char *ca_file, *cert_file, *key_file;
} rep_http_tls;

/* Sets t (NULL: the defaults) on c. */
void rep_http_tls_apply(CURL *c, const rep_http_tls *t);
/* A hint for a failed transfer to url, "" when none: a plain-HTTP URL
 * to a node that speaks HTTPS, or the other way round, or a
 * certificate that was not verified. */
const char *rep_http_hint(const char *url, CURLcode cc);

/*
 * One request whose answer is a short text: method "GET" or "POST" (an
 * empty body), the bearer token ("" none), TLS as rep_http_tls_apply,
 * at most timeout_ms. Returns 0
 * with the HTTP status in *status and the answer in body (collected as
 * body->max and strict say; the caller frees it), or -EIO when no answer
 * came, with libcurl's reason in err. Signals are not used (NOSIGNAL):
 * safe in a threaded daemon.
 */
int rep_http_call(const char *method, const char *url, const char *token,
		  const rep_http_tls *tls, long timeout_ms,
		  long *status /* out */,
		  rep_http_body *body /* out */, char *err, size_t errlen);

#endif
