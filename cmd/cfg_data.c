/* Configuration section `data`: the data directory (docs/CONFIG.md). */
#include "cfg_i.h"

#include <string.h>

static const struct cfg_key keys[] = {
	{.name = "data.dir", .type = T_STR, .off = CFG_OFF(data.dir),
	 .def = "/var/lib/ltxfs", .flags = F_NONEMPTY,
	 .help = "Data directory: node identity, databases, LTX logs.\n"
		 "Must not be inside fuse.dir."},
	{.name = "data.retention", .type = T_DURATION,
	 .off = CFG_OFF(data.retention_ms), .def = "10m", .min = 0,
	 .max = INT64_MAX,
	 .help = "Keep LTX records at least this long, so replicas that\n"
		 "fall behind catch up without a snapshot (500ms, 10s, 2m, "
		 "1h)."},
	{.name = "data.retention-bytes", .type = T_I64,
	 .off = CFG_OFF(data.retention_bytes), .def = "1073741824", .min = 0,
	 .max = INT64_MAX,
	 .help = "Upper bound in bytes on each database's LTX log.\n"
		 "0: no cap."},
	{.name = "data.compress", .type = T_BOOL,
	 .off = CFG_OFF(data.compress), .def = "true",
	 .help = "Compress LTX records with zstd."},
	{.name = "data.zstd-level", .type = T_INT,
	 .off = CFG_OFF(data.zstd_level), .def = "1", .min = 1, .max = 19,
	 .help = "zstd compression level, 1 (fastest) to 19."},
	{.name = "data.apply-timeout", .type = T_DURATION,
	 .off = CFG_OFF(data.apply_timeout_ms), .def = "30s", .min = 100,
	 .max = 3600000,
	 .help = "Replica, rollback journal modes: the longest a transaction\n"
		 "from the primary waits for local readers to finish before\n"
		 "it is put back and retried (100ms to 1h)."},
};

/* True when path b is a or lies under it, compared as written. */
static bool path_within(const char *a, const char *b)
{
	size_t n = strlen(a);

	while (n > 1 && a[n - 1] == '/')
		n--;
	if (strncmp(a, b, n) != 0)
		return false;
	return b[n] == '\0' || b[n] == '/' || (n == 1 && a[0] == '/');
}

/* data.dir must not be fuse.dir or inside it. */
static int finish(struct cfg_loader *ld)
{
	const ltxfs_cfg *cfg = cfg_loader_cfg(ld);
	size_t data_line = cfg_loader_line(ld, "data.dir");
	size_t fuse_line = cfg_loader_line(ld, "fuse.dir");

	if (path_within(cfg->fuse.dir, cfg->data.dir))
		return cfg_loader_error(ld, data_line ? data_line : fuse_line,
					"data.dir \"%s\" is inside fuse.dir "
					"\"%s\"", cfg->data.dir,
					cfg->fuse.dir);
	return 0;
}

const struct cfg_section cfg_data_section = {
	.name = "data",
	.help = "Where this node keeps databases and their LTX logs.",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
	.finish = finish,
};
