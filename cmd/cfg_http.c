/* Configuration section `http`: the replication and admin server
 * (docs/CONFIG.md). */
#include "cfg_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
};

/* http.token from $LTXFS_TOKEN when the file has no such key. */
static int finish(struct cfg_loader *ld)
{
	ltxfs_cfg *cfg = cfg_loader_cfg(ld);
	const char *tok = getenv(CFG_TOKEN_ENV);
	char *dup;

	if (cfg_loader_line(ld, "http.token") || !tok)
		return 0;
	dup = strdup(tok);
	if (!dup)
		return -ENOMEM;
	free(cfg->http.token);
	cfg->http.token = dup;
	return 0;
}

const struct cfg_section cfg_http_section = {
	.name = "http",
	.help = "The replication and admin HTTP server.",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
	.finish = finish,
};
