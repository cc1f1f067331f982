/*
 * The S3 store (store.h): an S3-compatible server over libcurl. Requests
 * are signed by libcurl itself (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3",
 * the payload unsigned: this file sends x-amz-content-sha256:
 * UNSIGNED-PAYLOAD, which libcurl then signs), so no other library is
 * needed.
 *
 * Rules:
 *   S1 URLs: path style ENDPOINT/BUCKET/KEY with force-path-style, else
 *      virtual-hosted SCHEME://BUCKET.HOST/KEY; every part of a key
 *      between '/' is percent-encoded.
 *   S2 put: PUT with the object's bytes; get: GET with a Range header
 *      for a part; delete: DELETE; list: ListObjectsV2 (GET
 *      ?list-type=2&prefix=P), following NextContinuationToken while
 *      IsTruncated is true (at most BK_S3_MAX_PAGES pages); list after
 *      a key with a limit adds start-after=K&max-keys=N and stops once
 *      it has N keys.
 *   S3 answers: 2xx success; 403 -EACCES ("access denied ... check
 *      credentials"); 404 -ENOENT; anything else, and no answer, -EIO
 *      with the status and the S3 error code.
 *   S4 credentials: backup.access-key-id / secret-access-key, else the
 *      environment's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; neither
 *      is an error at open.
 */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lib/io.h"
#include "replica/http_client.h"

#define BK_S3_MAX_PAGES 100000
#define BK_S3_ERR_BODY (64 * 1024)

typedef struct s3_store {
	bk_store base;
	CURL *c;
	char endpoint[1024];  /* scheme://host[:port], no trailing '/' */
	char bucket[256];
	char sigv4[300];
	char userpwd[1024];
	bool path_style;
	long timeout_ms;
} s3_store;

/* Where a GET's body goes: fd when the status is 2xx, else err. */
struct sink {
	CURL *c;
	int fd;
	uint64_t n;
	int io_rc;
	rep_http_body err;
};

static size_t sink_write(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct sink *k = ctx;
	long status = 0;
	size_t n = size * nmemb;

	curl_easy_getinfo(k->c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300 || k->fd < 0)
		return rep_http_collect(data, size, nmemb, &k->err);
	k->io_rc = lib_io_write_full(k->fd, data, n);
	if (k->io_rc < 0)
		return 0;
	k->n += n;
	return n;
}

struct source {
	int fd;
	uint64_t off, len;
};

static size_t source_read(char *buf, size_t size, size_t nmemb, void *ctx)
{
	struct source *src = ctx;
	size_t want = size * nmemb, got = 0;
	int rc;

	if (src->off >= src->len)
		return 0;
	if (want > src->len - src->off)
		want = (size_t)(src->len - src->off);
	rc = lib_io_pread_full(src->fd, buf, want, (off_t)src->off, &got);
	if (rc < 0 && !(rc == -ENODATA && got > 0))
		return CURL_READFUNC_ABORT;
	src->off += got;
	return got;
}

/* Appends the percent-encoded key (each part between '/') to buf. */
static int append_key(s3_store *s, char *buf, size_t len, const char *key)
{
	size_t used = strlen(buf);
	const char *p = key;

	while (*p) {
		const char *slash = strchr(p, '/');
		size_t plen = slash ? (size_t)(slash - p) : strlen(p);
		char *enc = curl_easy_escape(s->c, p, (int)plen);
		int n;
		if (!enc)
			return -ENOMEM;
		n = snprintf(buf + used, len - used, "%s%s", enc,
			     slash ? "/" : "");
		curl_free(enc);
		if (n < 0 || (size_t)n >= len - used)
			return -ENAMETOOLONG;
		used += (size_t)n;
		p = slash ? slash + 1 : p + plen;
	}
	return 0;
}

/* The URL of key ("" : the bucket itself) into buf (rule S1). */
static int make_url(s3_store *s, const char *key, char *buf, size_t len)
{
	const char *sep = strstr(s->endpoint, "://");

	if (s->path_style)
		snprintf(buf, len, "%s/%s/", s->endpoint, s->bucket);
	else
		snprintf(buf, len, "%.*s%s.%s/", (int)(sep + 3 - s->endpoint),
			 s->endpoint, s->bucket, sep + 3);
	return append_key(s, buf, len, key);
}

/* The <Code> of an S3 error body, "" when none. */
static void s3_code(const char *body, char *out, size_t len)
{
	const char *a = strstr(body, "<Code>"), *b;

	out[0] = '\0';
	if (!a)
		return;
	a += 6;
	b = strstr(a, "</Code>");
	if (b)
		snprintf(out, len, "%.*s", (int)(b - a), a);
}

/* Performs the prepared request; maps the answer (rule S3). */
static int perform(s3_store *s, const char *what, const char *key,
		   struct sink *k, char *err, size_t errlen)
{
	char cerr[CURL_ERROR_SIZE] = "", code[128];
	struct curl_slist *hdrs = NULL, *h;
	long status = 0;
	CURLcode cc;

	/* libcurl 7.88 (Debian 12) does not add it for "s3" itself; servers
	 * require it, and libcurl signs it and uses its value as the
	 * payload hash. */
	h = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
	if (!h)
		return -ENOMEM;
	hdrs = h;
	curl_easy_setopt(s->c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(s->c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(s->c, CURLOPT_AWS_SIGV4, s->sigv4);
	curl_easy_setopt(s->c, CURLOPT_USERPWD, s->userpwd);
	curl_easy_setopt(s->c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->c, CURLOPT_TIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(s->c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(s->c, CURLOPT_WRITEFUNCTION, sink_write);
	curl_easy_setopt(s->c, CURLOPT_WRITEDATA, k);
	cc = curl_easy_perform(s->c);
	curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_setopt(s->c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	if (k->io_rc < 0) {
		snprintf(err, errlen, "backup: %s %s: local write: %s", what,
			 key, strerror(-k->io_rc));
		return k->io_rc;
	}
	if (cc != CURLE_OK && status == 0) {
		snprintf(err, errlen, "backup: %s cannot be reached (%s %s): "
			 "%s", s->base.desc, what, key,
			 cerr[0] ? cerr : curl_easy_strerror(cc));
		return -EIO;
	}
	if (status >= 200 && status < 300 && cc == CURLE_OK)
		return 0;
	s3_code(rep_http_body_text(&k->err), code, sizeof(code));
	if (status == 403) {
		snprintf(err, errlen, "backup: access denied by %s (check "
			 "credentials): %s %s: %s", s->base.desc, what, key,
			 code[0] ? code : "403");
		return -EACCES;
	}
	if (status == 404 && strcmp(code, "NoSuchBucket") != 0) {
		snprintf(err, errlen, "backup: %s: %s %s: not found",
			 s->base.desc, what, key);
		return -ENOENT;
	}
	snprintf(err, errlen, "backup: %s: %s %s: HTTP %ld %s%s",
		 s->base.desc, what, key, status, code,
		 cc != CURLE_OK ? curl_easy_strerror(cc) : "");
	return -EIO;
}

static int s3_put(bk_store *bs, const char *key, int fd, uint64_t len,
		  char *err, size_t errlen)
{
	s3_store *s = (s3_store *)bs;
	struct source src = {fd, 0, len};
	struct sink k = {s->c, -1, 0, 0, REP_HTTP_BODY_INIT(BK_S3_ERR_BODY,
							    false)};
	char url[4096];
	int rc;

	curl_easy_reset(s->c);
	rc = make_url(s, key, url, sizeof(url));
	if (rc < 0)
		return rc;
	curl_easy_setopt(s->c, CURLOPT_URL, url);
	curl_easy_setopt(s->c, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(s->c, CURLOPT_READFUNCTION, source_read);
	curl_easy_setopt(s->c, CURLOPT_READDATA, &src);
	curl_easy_setopt(s->c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
	rc = perform(s, "PUT", key, &k, err, errlen);
	rep_http_body_free(&k.err);
	return rc;
}

static int s3_get(bk_store *bs, const char *key, uint64_t off, uint64_t len,
		  int fd, uint64_t *out_len, char *err, size_t errlen)
{
	s3_store *s = (s3_store *)bs;
	struct sink k = {s->c, fd, 0, 0, REP_HTTP_BODY_INIT(BK_S3_ERR_BODY,
							   false)};
	char url[4096], range[64];
	int rc;

	curl_easy_reset(s->c);
	rc = make_url(s, key, url, sizeof(url));
	if (rc < 0)
		return rc;
	curl_easy_setopt(s->c, CURLOPT_URL, url);
	if (off > 0 || len > 0) {
		if (len > 0)
			snprintf(range, sizeof(range), "%llu-%llu",
				 (unsigned long long)off,
				 (unsigned long long)(off + len - 1));
		else
			snprintf(range, sizeof(range), "%llu-",
				 (unsigned long long)off);
		curl_easy_setopt(s->c, CURLOPT_RANGE, range);
	}
	rc = perform(s, "GET", key, &k, err, errlen);
	rep_http_body_free(&k.err);
	*out_len = k.n;
	return rc;
}

/* The text between <tag> and </tag> from *p on, with &amp; &lt; &gt;
 * &quot; &apos; decoded, into out; *p moves past it. false: none. */
static bool xml_next(const char **p, const char *tag, char *out, size_t len)
{
	char open[64], close[64];
	const char *a, *b;
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	a = strstr(*p, open);
	if (!a)
		return false;
	a += strlen(open);
	b = strstr(a, close);
	if (!b)
		return false;
	static const char *const ent[][2] = {{"&amp;", "&"}, {"&lt;", "<"},
		{"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}};
	while (a < b && o + 1 < len) {
		bool done = false;
		for (size_t i = 0; i < 5 && !done; i++) {
			size_t el = strlen(ent[i][0]);
			if (strncmp(a, ent[i][0], el) == 0) {
				out[o++] = ent[i][1][0];
				a += el;
				done = true;
			}
		}
		if (!done)
			out[o++] = *a++;
	}
	out[o] = '\0';
	*p = b + strlen(close);
	return true;
}

static int s3_list(bk_store *bs, const char *prefix, const char *after,
		   size_t max, bk_keys *out, char *err, size_t errlen)
{
	s3_store *s = (s3_store *)bs;
	char token[2048] = "", url[8192], key[2048], trunc[16];
	size_t from = out->n;
	int rc = 0;

	for (int page = 0; page < BK_S3_MAX_PAGES; page++) {
		struct sink k = {s->c, -1, 0, 0,
				 REP_HTTP_BODY_INIT(64 * 1024 * 1024, true)};
		char *ep = curl_easy_escape(s->c, prefix, 0);
		char *et = curl_easy_escape(s->c, token, 0);
		const char *p;
		bool more;
		if (!ep || !et) {
			curl_free(ep);
			curl_free(et);
			return -ENOMEM;
		}
		curl_easy_reset(s->c);
		make_url(s, "", url, sizeof(url));
		snprintf(url + strlen(url), sizeof(url) - strlen(url),
			 "?list-type=2&prefix=%s%s%s", ep,
			 token[0] ? "&continuation-token=" : "", et);
		curl_free(ep);
		curl_free(et);
		if (after) {
			char *ea = curl_easy_escape(s->c, after, 0);
			if (!ea)
				return -ENOMEM;
			snprintf(url + strlen(url), sizeof(url) - strlen(url),
				 "&start-after=%s", ea);
			curl_free(ea);
		}
		if (max > 0)
			snprintf(url + strlen(url), sizeof(url) - strlen(url),
				 "&max-keys=%zu", max < 1000 ? max : 1000);
		curl_easy_setopt(s->c, CURLOPT_URL, url);
		/* The body comes to k.err as the sink has no fd. */
		rc = perform(s, "LIST", prefix, &k, err, errlen);
		p = rep_http_body_text(&k.err);
		while (rc == 0 && xml_next(&p, "Key", key, sizeof(key)))
			rc = bk_keys_push(out, key);
		p = rep_http_body_text(&k.err);
		more = rc == 0 && xml_next(&p, "IsTruncated", trunc,
					   sizeof(trunc)) &&
		       strcmp(trunc, "true") == 0;
		p = rep_http_body_text(&k.err);
		if (more && !xml_next(&p, "NextContinuationToken", token,
				      sizeof(token))) {
			snprintf(err, errlen, "backup: %s: LIST %s: truncated "
				 "answer without a continuation token",
				 s->base.desc, prefix);
			rc = -EIO;
		}
		rep_http_body_free(&k.err);
		if (rc < 0 || !more || (max > 0 && out->n - from >= max))
			return rc;
	}
	snprintf(err, errlen, "backup: %s: LIST %s: too many pages",
		 s->base.desc, prefix);
	return -EIO;
}

static int s3_del(bk_store *bs, const char *key, char *err, size_t errlen)
{
	s3_store *s = (s3_store *)bs;
	struct sink k = {s->c, -1, 0, 0, REP_HTTP_BODY_INIT(BK_S3_ERR_BODY,
							    false)};
	char url[4096];
	int rc;

	curl_easy_reset(s->c);
	rc = make_url(s, key, url, sizeof(url));
	if (rc < 0)
		return rc;
	curl_easy_setopt(s->c, CURLOPT_URL, url);
	curl_easy_setopt(s->c, CURLOPT_CUSTOMREQUEST, "DELETE");
	rc = perform(s, "DELETE", key, &k, err, errlen);
	rep_http_body_free(&k.err);
	return rc == -ENOENT ? 0 : rc;
}

static void s3_free(bk_store *bs)
{
	s3_store *s = (s3_store *)bs;

	if (!s)
		return;
	curl_easy_cleanup(s->c);
	explicit_bzero(s->userpwd, sizeof(s->userpwd));
	free(s);
}

static const struct bk_store_ops s3_ops = {
	.put = s3_put,
	.get = s3_get,
	.list = s3_list,
	.del = s3_del,
	.free = s3_free,
};

static const char *pick(const char *cfg, const char *env)
{
	const char *e;

	if (cfg && cfg[0])
		return cfg;
	e = getenv(env);
	return e ? e : "";
}

int bk_store_s3_open(const bk_store_opts *o, bk_store **out, char *err,
		     size_t errlen)
{
	const char *id = pick(o->access_key_id, "AWS_ACCESS_KEY_ID");
	const char *secret = pick(o->secret_access_key,
				  "AWS_SECRET_ACCESS_KEY");
	size_t elen;
	s3_store *s;

	if (!o->endpoint || !strstr(o->endpoint, "://")) {
		snprintf(err, errlen, "backup: backup.endpoint \"%s\" is not "
			 "an http(s):// URL", o->endpoint ? o->endpoint : "");
		return -EINVAL;
	}
	if (!o->bucket || !o->bucket[0]) {
		snprintf(err, errlen, "backup: backup.bucket is required with "
			 "backup.type: s3");
		return -EINVAL;
	}
	if (!id[0] || !secret[0]) {
		snprintf(err, errlen, "backup: no S3 credentials (set "
			 "backup.access-key-id and backup.secret-access-key, "
			 "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->c = curl_easy_init();
	if (!s->c) {
		free(s);
		return -ENOMEM;
	}
	s->base.ops = &s3_ops;
	snprintf(s->endpoint, sizeof(s->endpoint), "%s", o->endpoint);
	elen = strlen(s->endpoint);
	while (elen > 0 && s->endpoint[elen - 1] == '/')
		s->endpoint[--elen] = '\0';
	snprintf(s->bucket, sizeof(s->bucket), "%s", o->bucket);
	snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3",
		 o->region && o->region[0] ? o->region : "us-east-1");
	snprintf(s->userpwd, sizeof(s->userpwd), "%s:%s", id, secret);
	s->path_style = o->force_path_style;
	s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
	snprintf(s->base.desc, sizeof(s->base.desc), "s3:%s/%s", s->endpoint,
		 s->bucket);
	*out = &s->base;
	return 0;
}
