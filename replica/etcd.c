/*
 * etcd v3 JSON gateway client (etcd.h). Requests used:
 *
 *   POST /v3/auth/authenticate {"name", "password"}      -> {"token"}
 *   POST /v3/lease/grant       {"TTL": "s"}             -> {"ID", "TTL"}
 *   POST /v3/lease/keepalive   {"ID"}        -> {"result": {"ID", "TTL"}}
 *                                               (no TTL: the lease is gone)
 *   POST /v3/lease/revoke      {"ID"}
 *   POST /v3/kv/range          {"key"}       -> {"header", "kvs": [...]}
 *   POST /v3/kv/txn            {"compare", "success", "failure"}
 *                                            -> {"succeeded", "responses"}
 *   POST /v3/watch             {"create_request": {"key",
 *                               "start_revision"}}  -> a stream of
 *                               {"result": {"created" | "events" |
 *                               "canceled", "compact_revision"}}
 *
 * A key-value: {"key", "value" (base64; absent when empty),
 * "create_revision", "mod_revision", "lease"} (decimal strings; absent
 * when zero).
 */
#include "etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_client.h"
#include "lib/clock.h"
#include "lib/log.h"

#define TLS_WARN_EVERY_MS 10000
#define ANSWER_MAX (4u << 20)    /* a bigger answer is refused */
#define GRPC_NOT_FOUND 5
#define GRPC_UNAUTHENTICATED 16
#define GRPC_INVALID_ARGUMENT 3

struct rep_etcd {
	char **urls;
	size_t nurls;
	char *user, *password;
	char *ca, *cert, *key;   /* TLS files, NULL unset; fixed once set */
	atomic_uint_fast64_t errors; /* failed requests, rep_etcd_errors */
	pthread_mutex_t mu;      /* guards cur, token, tls_warned_ms */
	size_t cur;
	char *token;             /* NULL until authenticated */
	int64_t tls_warned_ms;   /* last TLS failure logged, CLOCK_MONOTONIC */
};

/* --- base64 --- */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void rep_base64_encode(const uint8_t *in, size_t n, char *out)
{
	size_t i = 0, o = 0;

	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
			     in[i + 2];
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = b64[v >> 6 & 63];
		out[o++] = b64[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
}

static int b64_val(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;

	return p ? (int)(p - b64) : -1;
}

int64_t rep_base64_decode(const char *in, uint8_t *out)
{
	size_t n = strlen(in), o = 0;

	if (n % 4)
		return -EBADMSG;
	for (size_t i = 0; i < n; i += 4) {
		int a = b64_val(in[i]), b = b64_val(in[i + 1]);
		int c = in[i + 2] == '=' ? -2 : b64_val(in[i + 2]);
		int d = in[i + 3] == '=' ? -2 : b64_val(in[i + 3]);
		uint32_t v;
		bool pad = c == -2 || d == -2;
		if (a < 0 || b < 0 || c == -1 || d == -1 ||
		    (c == -2 && d != -2) || (pad && i + 4 != n))
			return -EBADMSG;
		v = (uint32_t)a << 18 | (uint32_t)b << 12 |
		    (uint32_t)(c < 0 ? 0 : c) << 6 | (uint32_t)(d < 0 ? 0 : d);
		out[o++] = (uint8_t)(v >> 16);
		if (c >= 0)
			out[o++] = (uint8_t)(v >> 8);
		if (d >= 0)
			out[o++] = (uint8_t)v;
	}
	out[o] = 0;
	return (int64_t)o;
}

static char *b64_dup(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(4 * ((n + 2) / 3) + 1);

	if (out)
		rep_base64_encode((const uint8_t *)s, n, out);
	return out;
}

/* --- JSON helpers --- */

/* A gateway int64: a decimal string, or (tolerated) a JSON integer;
 * absent means 0. Returns false when present but malformed. */
static bool get_i64(json_t *obj, const char *name, int64_t *out)
{
	json_t *v = obj ? json_object_get(obj, name) : NULL;
	const char *s;
	char *end;

	*out = 0;
	if (!v)
		return true;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return true;
	}
	if (!json_is_string(v))
		return false;
	s = json_string_value(v);
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}

static json_t *i64_str(int64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return json_string(buf);
}

void rep_etcd_kv_clear(rep_etcd_kv *kv)
{
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

static int parse_kv(json_t *j, rep_etcd_kv *kv)
{
	json_t *v = json_object_get(j, "value");
	const char *s = json_is_string(v) ? json_string_value(v) : "";

	rep_etcd_kv_clear(kv);
	if (!json_is_object(j) || (v && !json_is_string(v)) ||
	    !get_i64(j, "create_revision", &kv->create_rev) ||
	    !get_i64(j, "mod_revision", &kv->mod_rev) ||
	    !get_i64(j, "lease", &kv->lease))
		return -EPROTO;
	kv->value = malloc(3 * (strlen(s) / 4) + 1);
	if (!kv->value)
		return -ENOMEM;
	{
		int64_t n = rep_base64_decode(s, (uint8_t *)kv->value);
		if (n < 0) {
			rep_etcd_kv_clear(kv);
			return -EPROTO;
		}
		kv->len = (size_t)n;
	}
	kv->found = true;
	return 0;
}

/* --- HTTP --- */

int rep_etcd_new(char *const *endpoints, size_t n, const char *user,
		 const char *password, rep_etcd **out)
{
	rep_etcd *e = calloc(1, sizeof(*e));

	*out = NULL;
	if (!e)
		return -ENOMEM;
	pthread_mutex_init(&e->mu, NULL);
	e->urls = calloc(n ? n : 1, sizeof(char *));
	e->user = strdup(user ? user : "");
	e->password = strdup(password ? password : "");
	if (!e->urls || !e->user || !e->password)
		goto oom;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(endpoints[i]);
		e->urls[i] = strdup(endpoints[i]);
		if (!e->urls[i])
			goto oom;
		e->nurls++;
		while (l > 0 && e->urls[i][l - 1] == '/')
			e->urls[i][--l] = '\0';
	}
	if (e->nurls == 0) {
		rep_etcd_free(e);
		return -EINVAL;
	}
	*out = e;
	return 0;
oom:
	rep_etcd_free(e);
	return -ENOMEM;
}

void rep_etcd_free(rep_etcd *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->nurls; i++)
		free(e->urls[i]);
	free(e->urls);
	free(e->user);
	free(e->password);
	free(e->token);
	free(e->ca);
	free(e->cert);
	free(e->key);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

static int dup_path(const char *in, char **out)
{
	*out = NULL;
	if (!in || !in[0])
		return 0;
	*out = strdup(in);
	return *out ? 0 : -ENOMEM;
}

int rep_etcd_set_tls(rep_etcd *e, const char *ca, const char *cert,
		     const char *key)
{
	bool has_cert = cert && cert[0], has_key = key && key[0];

	if (has_cert != has_key)
		return -EINVAL;
	free(e->ca);
	free(e->cert);
	free(e->key);
	if (dup_path(ca, &e->ca) < 0 || dup_path(cert, &e->cert) < 0 ||
	    dup_path(key, &e->key) < 0)
		return -ENOMEM;
	return 0;
}

uint64_t rep_etcd_errors(rep_etcd *e)
{
	return (uint64_t)atomic_load(&e->errors);
}

static bool tls_failure(CURLcode cc)
{
	switch (cc) {
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_USE_SSL_FAILED:
		return true;
	default:
		return false;
	}
}

static const char *tls_hint(rep_etcd *e, CURLcode cc)
{
	switch (cc) {
	case CURLE_PEER_FAILED_VERIFICATION:
		return e->ca ? "lease.etcd.tls-ca-file must hold the CA that "
			       "signed etcd's certificate, and the certificate "
			       "must name the endpoint's host"
			     : "the system's CA store does not vouch for "
			       "etcd's certificate: set lease.etcd.tls-ca-file "
			       "to etcd's CA";
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
		return "check lease.etcd.tls-ca-file, tls-cert-file and "
		       "tls-key-file: PEM files, the key matching the "
		       "certificate";
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
		return e->cert ? "etcd closed the connection at the handshake: "
				 "does it trust the CA of lease.etcd."
				 "tls-cert-file?"
			       : "etcd closed the connection at the handshake: "
				 "does it want a client certificate "
				 "(lease.etcd.tls-cert-file, tls-key-file)?";
	default:
		return "lease.etcd.tls-ca-file, tls-cert-file, tls-key-file";
	}
}

/* A TLS failure at warn level, at most every TLS_WARN_EVERY_MS. Anything
 * else stays at debug: an etcd that is down says so by the lease's
 * behaviour, every 250 ms. */
static void log_transport(rep_etcd *e, size_t idx, const char *path,
			  CURLcode cc, const char *detail)
{
	bool https = strncasecmp(e->urls[idx], "https://", 8) == 0;
	bool warn = tls_failure(cc) ||
		    (https && (cc == CURLE_RECV_ERROR ||
			       cc == CURLE_SEND_ERROR));
	int64_t now = lib_clock_monotonic_ns() / 1000000;
	const char *what = curl_easy_strerror(cc);

	if (warn) {
		pthread_mutex_lock(&e->mu);
		if (e->tls_warned_ms &&
		    now - e->tls_warned_ms < TLS_WARN_EVERY_MS)
			warn = false;
		else
			e->tls_warned_ms = now;
		pthread_mutex_unlock(&e->mu);
	}
	if (warn)
		log_warn("etcd %s%s: TLS failed: %s%s%s (%s)", e->urls[idx],
			 path, what, detail[0] ? ": " : "", detail,
			 tls_hint(e, cc));
	else
		log_debug("etcd %s%s: %s%s%s", e->urls[idx], path, what,
			  detail[0] ? ": " : "", detail);
}

/* A streaming request's state (watch): bytes are split into lines, each
 * parsed and handed to on_line; on_line returns <0 to fail, 1 to end. */
struct stream {
	rep_http_body line;      /* the line being read */
	int (*on_line)(void *ctx, json_t *j);
	void *ctx;
	int rc;                  /* on_line's result that ended it */
	const atomic_bool *cancel;
};

static size_t stream_write(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct stream *s = ctx;
	size_t n = size * nmemb;

	for (size_t i = 0; i < n; i++) {
		json_t *j;
		json_error_t je;
		if (data[i] != '\n') {
			if (rep_http_collect(&data[i], 1, 1, &s->line) != 1)
				return 0;
			continue;
		}
		if (s->line.len == 0)
			continue;
		j = json_loadb(s->line.p, s->line.len, 0, &je);
		s->line.len = 0;
		if (!j) {
			s->rc = -EPROTO;
			return 0;
		}
		s->rc = s->on_line(s->ctx, j);
		json_decref(j);
		if (s->rc != 0)
			return 0;
	}
	return n;
}

static int stream_progress(void *ctx, curl_off_t dt, curl_off_t dn,
			   curl_off_t ut, curl_off_t un)
{
	struct stream *s = ctx;

	return s->cancel && atomic_load(s->cancel) ? 1 : 0;
}

/* One attempt at one endpoint. Returns 0 with the HTTP status and body,
 * or a negative errno for transport failures. */
static int attempt(rep_etcd *e, size_t idx, const char *path,
		   const char *body, int64_t timeout_ms, const char *token,
		   struct stream *st, long *status, rep_http_body *ans)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	char url[1024], auth[1024], detail[CURL_ERROR_SIZE] = "";
	CURLcode cc;
	int rc = 0;

	if (!c)
		return -ENOMEM;
	snprintf(url, sizeof(url), "%s%s", e->urls[idx], path);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(timeout_ms < 2000 ? timeout_ms : 2000));
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	/* A lookup past the timeout is abandoned, not joined at cleanup: a
	 * DNS server that does not answer must not hold a lease renewal
	 * past its deadline. */
	curl_easy_setopt(c, CURLOPT_QUICK_EXIT, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail);
	/* libcurl's defaults, stated: the certificate and the name are
	 * always checked. */
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (e->ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, e->ca);
	if (e->cert) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, e->key);
	}
	if (st) {
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, st);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	} else {
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rep_http_collect);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, ans);
	}
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (cc == CURLE_OPERATION_TIMEDOUT)
		rc = st && *status == 200 ? 0 : -ETIMEDOUT;
	else if (cc == CURLE_WRITE_ERROR || cc == CURLE_ABORTED_BY_CALLBACK)
		rc = st ? 0 : -EPROTO; /* the stream ended it */
	else if (cc != CURLE_OK) {
		log_transport(e, idx, path, cc, detail);
		rc = -ECONNREFUSED;
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	return rc;
}

static int authenticate(rep_etcd *e, size_t idx, int64_t timeout_ms)
{
	json_t *req = json_pack("{ssss}", "name", e->user, "password",
				e->password), *ans = NULL;
	rep_http_body b = REP_HTTP_BODY_INIT(ANSWER_MAX, true);
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	long status = 0;
	int rc;

	json_decref(req);
	if (!body)
		return -ENOMEM;
	rc = attempt(e, idx, "/v3/auth/authenticate", body, timeout_ms, NULL,
		     NULL, &status, &b);
	free(body);
	if (rc == 0) {
		json_t *t;
		ans = b.p ? json_loads(b.p, 0, NULL) : NULL;
		t = ans ? json_object_get(ans, "token") : NULL;
		if (status == 200 && json_is_string(t)) {
			char *tok = strdup(json_string_value(t));
			pthread_mutex_lock(&e->mu);
			free(e->token);
			e->token = tok;
			pthread_mutex_unlock(&e->mu);
			rc = tok ? 0 : -ENOMEM;
		} else {
			json_t *m = ans ? json_object_get(ans, "message")
					: NULL;
			log_error("etcd %s refused user \"%s\": %s",
				  e->urls[idx], e->user,
				  json_is_string(m) ? json_string_value(m)
						    : "(no message)");
			rc = -EACCES;
		}
	}
	json_decref(ans);
	rep_http_body_free(&b);
	return rc;
}

/*
 * A request over the endpoints. Non-streaming (st NULL): *out is the
 * parsed answer. An etcd error answer becomes -ENOENT (NotFound), -EACCES
 * (after one re-authentication), or -EIO (logged with its message).
 */
static int request(rep_etcd *e, const char *path, json_t *reqj,
		   int64_t timeout_ms, struct stream *st, json_t **out)
{
	char *body = json_dumps(reqj, JSON_COMPACT);
	int rc = -ECONNREFUSED;
	size_t start;
	bool reauthed = false;

	if (out)
		*out = NULL;
	if (!body)
		return -ENOMEM;
	pthread_mutex_lock(&e->mu);
	start = e->cur;
	pthread_mutex_unlock(&e->mu);
	for (size_t k = 0; k < e->nurls; k++) {
		size_t idx = (start + k) % e->nurls;
		rep_http_body b = REP_HTTP_BODY_INIT(ANSWER_MAX, true);
		long status = 0;
		char *token = NULL;
		json_t *ans = NULL;
		int64_t code = 0;

		if (e->user[0]) {
			pthread_mutex_lock(&e->mu);
			token = e->token ? strdup(e->token) : NULL;
			pthread_mutex_unlock(&e->mu);
			if (!token) {
				rc = authenticate(e, idx, timeout_ms);
				if (rc == -EACCES)
					break;
				if (rc < 0)
					continue;
				pthread_mutex_lock(&e->mu);
				token = e->token ? strdup(e->token) : NULL;
				pthread_mutex_unlock(&e->mu);
			}
		}
		if (st)
			st->rc = 0;
		rc = attempt(e, idx, path, body, timeout_ms, token, st, &status,
			     &b);
		free(token);
		if (rc < 0) {
			rep_http_body_free(&b);
			continue; /* the next endpoint */
		}
		if (st && status == 200) {
			rc = st->rc < 0 ? st->rc : 0;
		} else {
			ans = b.p ? json_loads(b.p, 0, NULL) : NULL;
			if (!st && status == 200 && json_is_object(ans) &&
			    !json_object_get(ans, "error")) {
				*out = ans;
				ans = NULL;
				rc = 0;
			} else if (json_is_object(ans) &&
				   json_object_get(ans, "code") &&
				   get_i64(ans, "code", &code)) {
				json_t *m = json_object_get(ans, "message");
				const char *msg = json_is_string(m)
							  ? json_string_value(m)
							  : "(no message)";
				if (code == GRPC_NOT_FOUND)
					rc = -ENOENT;
				else if (code == GRPC_UNAUTHENTICATED ||
					 (code == GRPC_INVALID_ARGUMENT &&
					  strstr(msg, "token"))) {
					rc = -EACCES;
				} else {
					log_warn("etcd %s%s: %s (code %" PRId64
						 ")", e->urls[idx], path, msg,
						 code);
					rc = -EIO;
				}
			} else if (status >= 500 || status == 0) {
				rc = -ECONNREFUSED;
			} else {
				log_warn("etcd %s%s: HTTP %ld, an answer that "
					 "is not etcd's: %.200s", e->urls[idx],
					 path, status, b.p ? b.p : "");
				rc = -EPROTO;
			}
		}
		json_decref(ans);
		rep_http_body_free(&b);
		if (rc == -EACCES && e->user[0] && !reauthed) {
			reauthed = true;
			pthread_mutex_lock(&e->mu);
			free(e->token);
			e->token = NULL;
			pthread_mutex_unlock(&e->mu);
			k--; /* the same endpoint again, once */
			continue;
		}
		if (rc == -ECONNREFUSED)
			continue;
		pthread_mutex_lock(&e->mu);
		e->cur = idx;
		pthread_mutex_unlock(&e->mu);
		break;
	}
	free(body);
	if (rc < 0 && rc != -ENOENT && rc != -ESTALE)
		atomic_fetch_add(&e->errors, 1);
	return rc;
}

/* request() with a body built by json_pack; takes the reference. */
static int call(rep_etcd *e, const char *path, json_t *reqj,
		int64_t timeout_ms, json_t **out)
{
	int rc;

	if (!reqj)
		return -ENOMEM;
	rc = request(e, path, reqj, timeout_ms, NULL, out);
	json_decref(reqj);
	return rc;
}

/* --- leases --- */

int rep_etcd_grant(rep_etcd *e, int64_t ttl_s, int64_t timeout_ms,
		   int64_t *id, int64_t *ttl)
{
	json_t *ans = NULL;
	int rc = call(e, "/v3/lease/grant", json_pack("{so}", "TTL",
						      i64_str(ttl_s)),
		      timeout_ms, &ans);

	*id = *ttl = 0;
	if (rc < 0)
		return rc;
	if (!get_i64(ans, "ID", id) || !get_i64(ans, "TTL", ttl) || *id == 0 ||
	    *ttl <= 0) {
		log_warn("etcd: lease grant answer without an ID or TTL");
		rc = -EPROTO;
	}
	json_decref(ans);
	return rc;
}

int rep_etcd_keepalive(rep_etcd *e, int64_t id, int64_t timeout_ms,
		       int64_t *ttl)
{
	json_t *ans = NULL, *res;
	int rc = call(e, "/v3/lease/keepalive", json_pack("{so}", "ID",
							  i64_str(id)),
		      timeout_ms, &ans);

	*ttl = 0;
	if (rc < 0)
		return rc;
	res = json_object_get(ans, "result");
	if (!json_is_object(res) || !get_i64(res, "TTL", ttl))
		rc = -EPROTO;
	else if (*ttl <= 0)
		rc = -ENOENT;
	json_decref(ans);
	return rc;
}

int rep_etcd_revoke(rep_etcd *e, int64_t id, int64_t timeout_ms)
{
	json_t *ans = NULL;
	int rc = call(e, "/v3/lease/revoke", json_pack("{so}", "ID",
						       i64_str(id)),
		      timeout_ms, &ans);

	json_decref(ans);
	return rc;
}

/* --- keys --- */

static int first_kv(json_t *range, rep_etcd_kv *kv)
{
	json_t *kvs = json_object_get(range, "kvs");

	rep_etcd_kv_clear(kv);
	if (!kvs || json_array_size(kvs) == 0)
		return 0;
	return parse_kv(json_array_get(kvs, 0), kv);
}

int rep_etcd_get(rep_etcd *e, const char *key, int64_t timeout_ms,
		 rep_etcd_kv *kv, int64_t *rev)
{
	char *k = b64_dup(key);
	json_t *ans = NULL;
	int rc;

	rep_etcd_kv_clear(kv);
	if (!k)
		return -ENOMEM;
	rc = call(e, "/v3/kv/range", json_pack("{ss}", "key", k), timeout_ms,
		  &ans);
	free(k);
	if (rc < 0)
		return rc;
	rc = first_kv(ans, kv);
	if (rc == 0 && rev &&
	    !get_i64(json_object_get(ans, "header"), "revision", rev))
		rc = -EPROTO;
	json_decref(ans);
	return rc;
}

int rep_etcd_put(rep_etcd *e, const char *key, const char *value,
		 int64_t lease, int64_t timeout_ms)
{
	char *k = b64_dup(key), *v = b64_dup(value);
	json_t *req = NULL, *ans = NULL;
	int rc = -ENOMEM;

	if (k && v)
		req = json_pack("{ssss}", "key", k, "value", v);
	if (req && lease)
		json_object_set_new(req, "lease", i64_str(lease));
	if (req)
		rc = call(e, "/v3/kv/put", req, timeout_ms, &ans);
	json_decref(ans);
	free(k);
	free(v);
	return rc;
}

int rep_etcd_range(rep_etcd *e, const char *prefix, int64_t timeout_ms,
		   rep_etcd_kv **out, size_t *n)
{
	size_t len = strlen(prefix);
	char *end = len ? strdup(prefix) : NULL, *k = NULL, *ke = NULL;
	json_t *ans = NULL, *kvs;
	rep_etcd_kv *v = NULL;
	int rc = -ENOMEM;

	*out = NULL;
	*n = 0;
	if (!len)
		return -EINVAL;
	if (!end)
		return -ENOMEM;
	end[len - 1]++; /* the first key after every key with the prefix */
	k = b64_dup(prefix);
	ke = b64_dup(end);
	if (k && ke)
		rc = call(e, "/v3/kv/range", json_pack("{ssss}", "key", k,
						      "range_end", ke),
			  timeout_ms, &ans);
	if (rc < 0)
		goto out;
	kvs = json_object_get(ans, "kvs");
	if (kvs && json_array_size(kvs) > 0) {
		v = calloc(json_array_size(kvs), sizeof(*v));
		if (!v) {
			rc = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < json_array_size(kvs) && rc == 0; i++)
			rc = parse_kv(json_array_get(kvs, i), &v[(*n)++]);
	}
	if (rc < 0) {
		for (size_t i = 0; i < *n; i++)
			rep_etcd_kv_clear(&v[i]);
		free(v);
		v = NULL;
		*n = 0;
	}
	*out = v;
out:
	json_decref(ans);
	free(end);
	free(k);
	free(ke);
	return rc;
}

int rep_etcd_create(rep_etcd *e, const char *key, const char *value,
		    int64_t lease, int64_t timeout_ms, bool *created,
		    rep_etcd_kv *kv)
{
	char *k = b64_dup(key), *v = b64_dup(value);
	json_t *put, *req = NULL, *ans = NULL, *s;
	int64_t rev = 0;
	int rc = -ENOMEM;

	*created = false;
	rep_etcd_kv_clear(kv);
	if (!k || !v)
		goto out;
	put = json_pack("{ssss}", "key", k, "value", v);
	if (!put)
		goto out;
	if (lease)
		json_object_set_new(put, "lease", i64_str(lease));
	/* "o" takes put's reference. */
	req = json_pack("{s[{ssssssss}]s[{so}]s[{s{ss}}]}",
			"compare", "key", k, "target", "CREATE", "result",
			"EQUAL", "create_revision", "0",
			"success", "request_put", put,
			"failure", "request_range", "key", k);
	rc = call(e, "/v3/kv/txn", req, timeout_ms, &ans);
	if (rc < 0)
		goto out;
	s = json_object_get(ans, "succeeded");
	if (json_is_true(s)) {
		if (!get_i64(json_object_get(ans, "header"), "revision",
			     &rev) || rev <= 0) {
			rc = -EPROTO;
			goto out;
		}
		*created = true;
		kv->found = true;
		kv->create_rev = kv->mod_rev = rev;
		kv->lease = lease;
		kv->value = strdup(value);
		kv->len = strlen(value);
		rc = kv->value ? 0 : -ENOMEM;
	} else {
		json_t *rs = json_object_get(ans, "responses");
		json_t *r = json_array_get(rs, 0);
		rc = first_kv(json_object_get(r, "response_range"), kv);
		/* found == false: deleted between compare and range; the
		 * caller tries again. */
	}
out:
	json_decref(ans);
	free(k);
	free(v);
	return rc;
}

int rep_etcd_delete_if(rep_etcd *e, const char *key, int64_t create_rev,
		       int64_t timeout_ms, bool *deleted)
{
	char *k = b64_dup(key);
	json_t *req, *ans = NULL;
	int rc;

	*deleted = false;
	if (!k)
		return -ENOMEM;
	req = json_pack("{s[{ssssssso}]s[{s{ss}}]}", "compare", "key", k,
			"target", "CREATE", "result", "EQUAL",
			"create_revision", i64_str(create_rev), "success",
			"request_delete_range", "key", k);
	rc = call(e, "/v3/kv/txn", req, timeout_ms, &ans);
	free(k);
	if (rc == 0)
		*deleted = json_is_true(json_object_get(ans, "succeeded"));
	json_decref(ans);
	return rc;
}

/* --- watch --- */

struct watch_ctx {
	rep_etcd_watch_fn fn;
	void *ctx;
	bool created;
};

static int watch_line(void *ctx, json_t *j)
{
	struct watch_ctx *w = ctx;
	json_t *res = json_object_get(j, "result"), *evs;
	int64_t rev = 0, compact = 0;

	if (!json_is_object(res)) {
		if (json_object_get(j, "error"))
			return -EIO;
		return -EPROTO;
	}
	if (json_is_true(json_object_get(res, "created")))
		w->created = true;
	if (!get_i64(res, "compact_revision", &compact))
		return -EPROTO;
	if (compact > 0)
		return -ESTALE;
	if (json_is_true(json_object_get(res, "canceled")))
		return -ESTALE;
	get_i64(json_object_get(res, "header"), "revision", &rev);
	evs = json_object_get(res, "events");
	for (size_t i = 0; i < json_array_size(evs); i++) {
		json_t *ev = json_array_get(evs, i);
		json_t *t = json_object_get(ev, "type");
		rep_etcd_kv kv = {0};
		int type = REP_ETCD_PUT;
		if (json_is_string(t) &&
		    strcmp(json_string_value(t), "DELETE") == 0)
			type = REP_ETCD_DELETE;
		bool stop;
		if (parse_kv(json_object_get(ev, "kv"), &kv) < 0)
			return -EPROTO;
		stop = w->fn(w->ctx, type, &kv, kv.mod_rev ? kv.mod_rev : rev);
		rep_etcd_kv_clear(&kv);
		if (stop)
			return 1;
	}
	return 0;
}

int rep_etcd_watch(rep_etcd *e, const char *key, int64_t start_rev,
		   int64_t max_ms, rep_etcd_watch_fn fn, void *ctx,
		   const atomic_bool *cancel)
{
	struct watch_ctx w = {fn, ctx, false};
	struct stream st = {REP_HTTP_BODY_INIT(ANSWER_MAX, true), watch_line,
			    &w, 0, cancel};
	char *k = b64_dup(key);
	json_t *req;
	int rc;

	if (!k)
		return -ENOMEM;
	req = json_pack("{s{ssso}}", "create_request", "key", k,
			"start_revision", i64_str(start_rev));
	free(k);
	if (!req)
		return -ENOMEM;
	rc = request(e, "/v3/watch", req, max_ms, &st, NULL);
	json_decref(req);
	rep_http_body_free(&st.line);
	return rc;
}
