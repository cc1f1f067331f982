/*
 * `ltxfs export` and `ltxfs import`: a whole database out of, or into, a
 * running node through its HTTP API (docs/PROTOCOL.md).
 *
 *   ltxfs export [-c ltxfs.yml | --url URL] DB OUT    GET  /export?db=DB
 *   ltxfs import [-c ltxfs.yml | --url URL] DB IN     POST /import?db=DB
 *
 * Where the node is: --url when given; otherwise http.addr of the
 * configuration (-c FILE, else ./ltxfs.yml, else /etc/ltxfs.yml, else the
 * default :20202), with an empty or wildcard host meaning this machine.
 * The bearer token is http.token of that configuration (which itself falls
 * back to $LTXFS_TOKEN); with --url and no -c, $LTXFS_TOKEN.
 *
 * OUT "-" is stdout; any other OUT is written to a temporary file beside it
 * and renamed over it only once the whole copy has arrived, so a failed
 * export leaves OUT as it was. IN "-" is stdin (sent chunked).
 *
 * Every failure is one line on stderr naming the URL, the HTTP status and
 * the server's reason; exit code 1 (2 for usage errors).
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "cmd.h"
#include "node_url.h"
#include "replica/http_client.h"

#define XFER_CONNECT_TIMEOUT_S 10L
#define XFER_STALL_S 300L        /* no byte either way for this long */
#define XFER_ERRBODY_MAX 600

struct xfer {
	const char *cmd;         /* "export" or "import" */
	char base[1024];         /* http://host:port, no trailing '/' */
	char *token;             /* owned; "" = none */
	ltxfs_cfg cfg;           /* owned; zeroed without a config */
	rep_http_tls tls;        /* cfg's http.tls-* (NULL: the defaults) */
	const char *db;
	const char *file;        /* OUT or IN; "-" = stdout/stdin */
};

/* The response being received. */
struct resp {
	CURL *curl;
	long status;
	FILE *out;               /* 200 body goes here (export), or NULL */
	bool write_failed;
	int write_errno;
	uint64_t bytes;
	rep_http_body body;      /* any other body (or import's JSON) */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct resp *r = ctx;
	size_t n = size * nmemb;

	if (r->status == 0)
		curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->status == 200 && r->out) {
		if (fwrite(data, 1, n, r->out) != n) {
			r->write_errno = errno;
			r->write_failed = true;
			return 0;
		}
		r->bytes += n;
		return n;
	}
	return rep_http_collect(data, 1, n, &r->body);
}

/* The server's reason: the first line of its body, printable, or a
 * placeholder. */
static const char *reason(struct resp *r)
{
	char *p = r->body.p;
	size_t n;

	if (!p)
		return "(no reason given)";
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	n = strcspn(p, "\r\n");
	p[n] = '\0';
	for (char *q = p; *q; q++)
		if ((unsigned char)*q < 0x20)
			*q = ' ';
	return *p ? p : "(no reason given)";
}

static int usage(const char *cmd)
{
	fprintf(stderr, "usage: ltxfs %s [-c ltxfs.yml | --url http://HOST:"
		"PORT] DB %s\n", cmd, strcmp(cmd, "export") == 0 ?
		"OUT   (OUT - is stdout)" : "IN   (IN - is stdin)");
	return 2;
}

/* Parses the arguments and finds the node; 0, or the exit code. */
static int parse(struct xfer *x, int argc, char **argv)
{
	const char *cfg_path = NULL, *url = NULL, *pos[2];
	int npos = 0;
	ltxfs_cfg *cfg = &x->cfg;
	char err[512];
	bool want_cfg;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) &&
		    i + 1 < argc)
			cfg_path = argv[++i];
		else if (strcmp(a, "--url") == 0 && i + 1 < argc)
			url = argv[++i];
		else if (strncmp(a, "--url=", 6) == 0)
			url = a + 6;
		else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			return usage(x->cmd);
		else if (a[0] == '-' && a[1] != '\0')
			return usage(x->cmd);
		else if (npos < 2)
			pos[npos++] = a;
		else
			return usage(x->cmd);
	}
	if (npos != 2)
		return usage(x->cmd);
	x->db = pos[0];
	x->file = pos[1];
	want_cfg = cfg_path != NULL || url == NULL;
	if (want_cfg) {
		if (cfg_load(cfg, cfg_path, NULL, err, sizeof(err)) < 0) {
			fprintf(stderr, "ltxfs %s: %s\n", x->cmd, err);
			return 1;
		}
		x->token = strdup(cfg->http.token);
		x->tls = (rep_http_tls){cfg->http.tls_ca_file,
					cfg->http.tls_client_cert_file,
					cfg->http.tls_client_key_file};
		if (!url && cmd_node_url_from_addr(cfg->http.addr,
						  cfg->http.tls_cert_file[0],
						  x->base,
						  sizeof(x->base)) < 0) {
			fprintf(stderr, "ltxfs %s: http.addr \"%s\" is not "
				"[HOST]:PORT\n", x->cmd, cfg->http.addr);
			return 1;
		}
	} else {
		const char *t = getenv(CFG_TOKEN_ENV);
		x->token = strdup(t ? t : "");
	}
	if (!x->token) {
		fprintf(stderr, "ltxfs %s: out of memory\n", x->cmd);
		return 1;
	}
	if (url) {
		size_t n = strlen(url);
		if (strncmp(url, "http://", 7) != 0 &&
		    strncmp(url, "https://", 8) != 0) {
			fprintf(stderr, "ltxfs %s: --url \"%s\" must start with "
				"http:// or https://\n", x->cmd, url);
			return 2;
		}
		while (n > 0 && url[n - 1] == '/')
			n--;
		if (n >= sizeof(x->base)) {
			fprintf(stderr, "ltxfs %s: --url is too long\n",
				x->cmd);
			return 2;
		}
		memcpy(x->base, url, n);
		x->base[n] = '\0';
	}
	if (!x->db[0]) {
		fprintf(stderr, "ltxfs %s: DB is empty\n", x->cmd);
		return 2;
	}
	return 0;
}

/* A curl handle for endpoint ("export"/"import") of x's database. */
static CURL *open_request(struct xfer *x, struct curl_slist **hdrs,
			  char *url, size_t urlcap, struct resp *r)
{
	CURL *c = curl_easy_init();
	char *esc;

	if (!c)
		return NULL;
	esc = curl_easy_escape(c, x->db, 0);
	if (!esc) {
		curl_easy_cleanup(c);
		return NULL;
	}
	snprintf(url, urlcap, "%s/%s?db=%s", x->base, x->cmd, esc);
	curl_free(esc);
	if (rep_http_bearer(hdrs, x->token) < 0) {
		curl_easy_cleanup(c);
		return NULL;
	}
	r->curl = c;
	r->body = (rep_http_body)REP_HTTP_BODY_INIT(XFER_ERRBODY_MAX, false);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, XFER_CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, XFER_STALL_S);
	rep_http_tls_apply(c, &x->tls);
	return c;
}

/* Reports a failed request; returns the exit code (1). */
static int report(struct xfer *x, const char *url, CURLcode cc,
		  struct resp *r, const char *curl_err)
{
	if (r->write_failed) {
		fprintf(stderr, "ltxfs %s: writing %s: %s\n", x->cmd,
			strcmp(x->file, "-") == 0 ? "stdout" : x->file,
			strerror(r->write_errno));
	} else if (r->status != 0 && r->status != 200) {
		fprintf(stderr, "ltxfs %s: %s: HTTP %ld: %s\n", x->cmd, url,
			r->status, reason(r));
	} else {
		fprintf(stderr, "ltxfs %s: %s: %s%s\n", x->cmd, url,
			curl_err[0] ? curl_err : curl_easy_strerror(cc),
			rep_http_hint(url, cc));
	}
	return 1;
}

static int do_export(struct xfer *x)
{
	struct resp r = {0};
	struct curl_slist *hdrs = NULL;
	char url[2048], tmp[PATH_MAX] = "", cerr[CURL_ERROR_SIZE] = "";
	bool to_stdout = strcmp(x->file, "-") == 0;
	CURL *c = NULL;
	CURLcode cc;
	int rc = 1, fd;

	if (to_stdout) {
		if (isatty(STDOUT_FILENO)) {
			fprintf(stderr, "ltxfs export: refusing to write a "
				"database to a terminal; redirect stdout or "
				"name a file\n");
			return 2;
		}
		r.out = stdout;
	} else {
		if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", x->file) >=
		    sizeof(tmp)) {
			fprintf(stderr, "ltxfs export: %s: name too long\n",
				x->file);
			return 1;
		}
		fd = mkstemp(tmp);
		if (fd < 0) {
			fprintf(stderr, "ltxfs export: cannot create %s: %s\n",
				tmp, strerror(errno));
			return 1;
		}
		{
			mode_t um = umask(0);
			umask(um);
			fchmod(fd, 0666 & ~um);
		}
		r.out = fdopen(fd, "wb");
		if (!r.out) {
			close(fd);
			unlink(tmp);
			fprintf(stderr, "ltxfs export: out of memory\n");
			return 1;
		}
	}
	c = open_request(x, &hdrs, url, sizeof(url), &r);
	if (!c) {
		fprintf(stderr, "ltxfs export: out of memory\n");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	if (cc != CURLE_OK || r.status != 200) {
		rc = report(x, url, cc, &r, cerr);
		goto out;
	}
	if (fflush(r.out) != 0 || (!to_stdout && fsync(fileno(r.out)) != 0)) {
		r.write_errno = errno;
		r.write_failed = true;
		rc = report(x, url, cc, &r, cerr);
		goto out;
	}
	if (!to_stdout) {
		int err = fclose(r.out);
		r.out = NULL;
		if (err != 0 || rename(tmp, x->file) != 0) {
			fprintf(stderr, "ltxfs export: writing %s: %s\n",
				x->file, strerror(errno));
			goto out;
		}
		tmp[0] = '\0';
		fprintf(stderr, "ltxfs export: %s: %llu bytes written to %s\n",
			x->db, (unsigned long long)r.bytes, x->file);
	}
	rc = 0;
out:
	if (!to_stdout && r.out)
		fclose(r.out);
	if (tmp[0])
		unlink(tmp);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	rep_http_body_free(&r.body);
	return rc;
}

static int do_import(struct xfer *x)
{
	struct resp r = {0};
	struct curl_slist *hdrs = NULL;
	char url[2048], cerr[CURL_ERROR_SIZE] = "";
	bool from_stdin = strcmp(x->file, "-") == 0;
	FILE *in = NULL;
	CURL *c = NULL;
	CURLcode cc;
	struct stat st;
	json_t *j = NULL;
	int rc = 1;

	if (from_stdin) {
		in = stdin;
	} else {
		in = fopen(x->file, "rb");
		if (!in || fstat(fileno(in), &st) != 0) {
			fprintf(stderr, "ltxfs import: cannot read %s: %s\n",
				x->file, strerror(errno));
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, "ltxfs import: %s is not a regular "
				"file\n", x->file);
			goto out;
		}
	}
	c = open_request(x, &hdrs, url, sizeof(url), &r);
	if (!c) {
		fprintf(stderr, "ltxfs import: out of memory\n");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/"
				 "vnd.sqlite3");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_READDATA, in);
	if (!from_stdin)
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)st.st_size);
	/* stdin: no size, so libcurl sends it chunked. */
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	if (cc != CURLE_OK || r.status != 200) {
		rc = report(x, url, cc, &r, cerr);
		goto out;
	}
	j = json_loads(rep_http_body_text(&r.body), 0, NULL);
	if (j && json_is_string(json_object_get(j, "txid")))
		printf("%s: imported %s as TXID %s\n", x->db,
		       from_stdin ? "stdin" : x->file,
		       json_string_value(json_object_get(j, "txid")));
	else
		printf("%s: imported %s\n", x->db,
		       from_stdin ? "stdin" : x->file);
	rc = fflush(stdout) == 0 ? 0 : 1;
out:
	json_decref(j);
	if (in && !from_stdin)
		fclose(in);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	rep_http_body_free(&r.body);
	return rc;
}

static int run(const char *cmd, int argc, char **argv)
{
	struct xfer x = {.cmd = cmd};
	int rc = parse(&x, argc, argv);

	if (rc == 0) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			fprintf(stderr, "ltxfs %s: libcurl failed to "
				"initialise\n", cmd);
			rc = 1;
		} else {
			rc = strcmp(cmd, "export") == 0 ? do_export(&x)
							: do_import(&x);
			curl_global_cleanup();
		}
	}
	free(x.token);
	cfg_free(&x.cfg);
	return rc;
}

int cmd_export(int argc, char **argv)
{
	return run("export", argc, argv);
}

int cmd_import(int argc, char **argv)
{
	return run("import", argc, argv);
}
