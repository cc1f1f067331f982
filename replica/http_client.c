/* The HTTP client helpers: see http_client.h. */
#include "http_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t rep_http_collect(char *data, size_t size, size_t nmemb, void *ctx)
{
	rep_http_body *b = ctx;
	size_t n = size * nmemb, take = n;

	if (b->len + n > b->max) {
		b->too_big = true;
		if (b->strict)
			return 0;
		take = b->max - b->len;
	}
	if (b->len + take + 1 > b->cap) {
		size_t cap = (b->len + take + 1) * 2;
		char *p;
		if (cap > b->max + 1)
			cap = b->max + 1;
		p = realloc(b->p, cap);
		if (!p)
			return 0;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, take);
	b->len += take;
	b->p[b->len] = '\0';
	return n;
}

void rep_http_body_reset(rep_http_body *b)
{
	b->len = 0;
	b->too_big = false;
	if (b->p)
		b->p[0] = '\0';
}

void rep_http_body_free(rep_http_body *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->too_big = false;
}

const char *rep_http_body_text(const rep_http_body *b)
{
	return b->p ? b->p : "";
}

int rep_http_bearer(struct curl_slist **hdrs, const char *token)
{
	struct curl_slist *l;
	size_t n;
	char *h;

	if (!token || !token[0])
		return 0;
	n = strlen(token) + sizeof("Authorization: Bearer ");
	h = malloc(n);
	if (!h)
		return -ENOMEM;
	snprintf(h, n, "Authorization: Bearer %s", token);
	l = curl_slist_append(*hdrs, h);
	free(h);
	if (!l)
		return -ENOMEM;
	*hdrs = l;
	return 0;
}

static bool set(const char *s)
{
	return s && s[0];
}

void rep_http_tls_apply(CURL *c, const rep_http_tls *t)
{
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (!t)
		return;
	if (set(t->ca_file))
		curl_easy_setopt(c, CURLOPT_CAINFO, t->ca_file);
	if (set(t->cert_file) && set(t->key_file)) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, t->cert_file);
		curl_easy_setopt(c, CURLOPT_SSLKEY, t->key_file);
	}
}

const char *rep_http_hint(const char *url, CURLcode cc)
{
	bool https = strncasecmp(url, "https://", 8) == 0;

	if (!https && (cc == CURLE_GOT_NOTHING || cc == CURLE_RECV_ERROR ||
		       cc == CURLE_WEIRD_SERVER_REPLY))
		return " (does the node serve HTTPS? then use an https:// "
		       "URL)";
	if (https && cc == CURLE_SSL_CONNECT_ERROR)
		return " (the TLS handshake failed: does the node serve "
		       "plain HTTP, or want a client certificate, "
		       "http.tls-client-cert-file?)";
	if (https && cc == CURLE_PEER_FAILED_VERIFICATION)
		return " (the node's certificate is not signed by "
		       "http.tls-ca-file or the system store, or does not "
		       "name the URL's host)";
	if (https && (cc == CURLE_SSL_CERTPROBLEM ||
		      cc == CURLE_SSL_CACERT_BADFILE))
		return " (check http.tls-ca-file, tls-client-cert-file and "
		       "tls-client-key-file)";
	return "";
}

int rep_http_call(const char *method, const char *url, const char *token,
		  const rep_http_tls *tls, long timeout_ms, long *status,
		  rep_http_body *body, char *err, size_t errlen)
{
	struct curl_slist *hdrs = NULL;
	char cerr[CURL_ERROR_SIZE] = "";
	CURL *c = curl_easy_init();
	CURLcode cc;

	*status = 0;
	if (!c || rep_http_bearer(&hdrs, token) < 0) {
		curl_easy_cleanup(c);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	/* Past the timeout a DNS lookup is abandoned, not waited for. */
	curl_easy_setopt(c, CURLOPT_QUICK_EXIT, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rep_http_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	rep_http_tls_apply(c, tls);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	else
		snprintf(err, errlen, "%s%s",
			 cerr[0] ? cerr : curl_easy_strerror(cc),
			 rep_http_hint(url, cc));
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	return cc == CURLE_OK ? 0 : -EIO;
}
