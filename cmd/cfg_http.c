/* Configuration section `http`: the replication and admin server
 * (docs/CONFIG.md). */
#include "cfg_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const metrics_auth_names[] = {"token", "none", NULL};

static const struct cfg_key keys[] = {
	{.name = "http.addr", .type = T_STR, .off = CFG_OFF(http.addr),
	 .def = ":20202", .flags = F_NONEMPTY | F_ADDR,
	 .help = "Listen address, [HOST]:PORT; no host means all."},
	{.name = "http.token", .type = T_STR, .off = CFG_OFF(http.token),
	 .def = "", .flags = F_SECRET,
	 .help = "Cluster token; requests must carry \"Authorization: Bearer\n"
		 "TOKEN\". Empty: no authentication. When this key is absent\n"
		 "the token is taken from $LTXFS_TOKEN."},
	{.name = "http.max-import-size", .type = T_I64,
	 .off = CFG_OFF(http.max_import_size), .def = "0", .min = 0,
	 .max = INT64_MAX,
	 .help = "Largest database POST /import (ltxfs import) takes, in\n"
		 "bytes; larger ones get 413. 0: no cap but the data\n"
		 "directory's free space."},
	{.name = "http.ready-max-lag", .type = T_DURATION,
	 .off = CFG_OFF(http.ready_max_lag_ms), .def = "10s", .min = 1,
	 .max = INT64_MAX,
	 .help = "GET /readyz: a replica is not ready while it has not\n"
		 "caught up with the primary, or has heard nothing from it,\n"
		 "or is behind it, for longer than this."},
	{.name = "http.metrics-token", .type = T_STR,
	 .off = CFG_OFF(http.metrics_token), .def = "", .flags = F_SECRET,
	 .help = "A second token that reads GET /metrics and /info only\n"
		 "(a scraper's); every other endpoint refuses it (401).\n"
		 "Needs http.token."},
	{.name = "http.metrics-auth", .type = T_ENUM,
	 .off = CFG_OFF(http.metrics_auth), .def = "token",
	 .names = metrics_auth_names,
	 .help = "token: /metrics and /info need http.token or\n"
		 "http.metrics-token; none: they need no token."},
	{.name = "http.tls-cert-file", .type = T_STR,
	 .off = CFG_OFF(http.tls_cert_file), .def = "",
	 .help = "PEM certificate (chain) of this node: the API speaks\n"
		 "HTTPS only. Re-read on SIGHUP and when it changes.\n"
		 "Needs http.tls-key-file."},
	{.name = "http.tls-key-file", .type = T_STR,
	 .off = CFG_OFF(http.tls_key_file), .def = "",
	 .help = "PEM private key of http.tls-cert-file."},
	{.name = "http.tls-client-ca-file", .type = T_STR,
	 .off = CFG_OFF(http.tls_client_ca_file), .def = "",
	 .help = "PEM CA(s): mutual TLS. Every endpoint but /healthz,\n"
		 "/readyz, /metrics and /info needs a client certificate\n"
		 "it signed (403 otherwise). Needs http.tls-cert-file."},
	{.name = "http.tls-ca-file", .type = T_STR,
	 .off = CFG_OFF(http.tls_ca_file), .def = "",
	 .help = "PEM CA(s) that https:// URLs of other nodes are\n"
		 "verified against. Empty: the system store. The\n"
		 "verification cannot be turned off."},
	{.name = "http.tls-client-cert-file", .type = T_STR,
	 .off = CFG_OFF(http.tls_client_cert_file), .def = "",
	 .help = "PEM client certificate this node (and its commands)\n"
		 "present to other nodes. Needs\n"
		 "http.tls-client-key-file."},
	{.name = "http.tls-client-key-file", .type = T_STR,
	 .off = CFG_OFF(http.tls_client_key_file), .def = "",
	 .help = "PEM private key of http.tls-client-cert-file."},
};

/* Keys that go together: a (set) needs b (set). */
static int needs(struct cfg_loader *ld, const char *a, const char *va,
		 const char *b, const char *vb)
{
	if (!va[0] || vb[0])
		return 0;
	return cfg_loader_error(ld, cfg_loader_line(ld, a),
				"%s is set but %s is empty: it needs it", a,
				b);
}

static int check_tls(struct cfg_loader *ld)
{
	const ltxfs_cfg *c = cfg_loader_cfg(ld);
	int rc;

	rc = needs(ld, "http.tls-cert-file", c->http.tls_cert_file,
		   "http.tls-key-file", c->http.tls_key_file);
	if (rc == 0)
		rc = needs(ld, "http.tls-key-file", c->http.tls_key_file,
			   "http.tls-cert-file", c->http.tls_cert_file);
	if (rc == 0)
		rc = needs(ld, "http.tls-client-ca-file",
			   c->http.tls_client_ca_file, "http.tls-cert-file",
			   c->http.tls_cert_file);
	if (rc == 0)
		rc = needs(ld, "http.tls-client-cert-file",
			   c->http.tls_client_cert_file,
			   "http.tls-client-key-file",
			   c->http.tls_client_key_file);
	if (rc == 0)
		rc = needs(ld, "http.tls-client-key-file",
			   c->http.tls_client_key_file,
			   "http.tls-client-cert-file",
			   c->http.tls_client_cert_file);
	if (rc == 0)
		rc = needs(ld, "http.metrics-token", c->http.metrics_token,
			   "http.token", c->http.token);
	return rc;
}

/* http.token from $LTXFS_TOKEN when the file has no such key. */
static int finish(struct cfg_loader *ld)
{
	ltxfs_cfg *cfg = cfg_loader_cfg(ld);
	const char *tok = getenv(CFG_TOKEN_ENV);
	char *dup;

	if (cfg_loader_line(ld, "http.token") || !tok)
		return check_tls(ld);
	dup = strdup(tok);
	if (!dup)
		return -ENOMEM;
	free(cfg->http.token);
	cfg->http.token = dup;
	return check_tls(ld);
}

const struct cfg_section cfg_http_section = {
	.name = "http",
	.help = "The replication and admin HTTP server.",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
	.finish = finish,
};
