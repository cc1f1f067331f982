/* Configuration section `backup`: continuous backup of every database to
 * a directory or an S3-compatible store (backup/uploader.h,
 * docs/BACKUP.md, docs/CONFIG.md). */
#include "cfg_i.h"

#include <string.h>

/* In the order of enum bk_store_type (backup/store.h). */
static const char *const type_names[] = {"none", "file", "s3", NULL};

static const struct cfg_key keys[] = {
	{.name = "backup.type", .type = T_ENUM, .off = CFG_OFF(backup.type),
	 .def = "none", .names = type_names,
	 .help = "none: no backup; file: to backup.dir; s3: to an\n"
		 "S3-compatible store (backup.endpoint, backup.bucket)."},
	{.name = "backup.dir", .type = T_STR, .off = CFG_OFF(backup.dir),
	 .def = "",
	 .help = "type file: the directory that holds the objects."},
	{.name = "backup.endpoint", .type = T_STR,
	 .off = CFG_OFF(backup.endpoint), .def = "", .flags = F_URL,
	 .help = "type s3: the store's URL, http(s)://HOST[:PORT]."},
	{.name = "backup.bucket", .type = T_STR,
	 .off = CFG_OFF(backup.bucket), .def = "",
	 .help = "type s3: the bucket (it must exist)."},
	{.name = "backup.prefix", .type = T_STR,
	 .off = CFG_OFF(backup.prefix), .def = "",
	 .help = "Keys start with PREFIX/ (\"\": none), then DB/l0/\n"
		 "(and DB/l1/)."},
	{.name = "backup.region", .type = T_STR,
	 .off = CFG_OFF(backup.region), .def = "us-east-1",
	 .help = "type s3: the region requests are signed for."},
	{.name = "backup.access-key-id", .type = T_STR,
	 .off = CFG_OFF(backup.access_key_id), .def = "",
	 .help = "type s3: \"\": the environment's AWS_ACCESS_KEY_ID."},
	{.name = "backup.secret-access-key", .type = T_STR,
	 .off = CFG_OFF(backup.secret_access_key), .def = "",
	 .flags = F_SECRET,
	 .help = "type s3: \"\": the environment's\n"
		 "AWS_SECRET_ACCESS_KEY."},
	{.name = "backup.force-path-style", .type = T_BOOL,
	 .off = CFG_OFF(backup.force_path_style), .def = "false",
	 .help = "type s3: ENDPOINT/BUCKET/KEY URLs instead of\n"
		 "BUCKET.HOST/KEY (most self-hosted servers need it)."},
	{.name = "backup.interval", .type = T_DURATION,
	 .off = CFG_OFF(backup.interval_ms), .def = "1s", .min = 10,
	 .max = 86400000,
	 .help = "At most one object per database per interval: the\n"
		 "transactions committed since the last one."},
	{.name = "backup.snapshot-interval", .type = T_DURATION,
	 .off = CFG_OFF(backup.snapshot_interval_ms), .def = "24h", .min = 0,
	 .max = 30LL * 86400000,
	 .help = "A snapshot of each changed database this often (0:\n"
		 "never): it starts a new chain, so a restore reads at\n"
		 "most this much history after it."},
	{.name = "backup.retention", .type = T_DURATION,
	 .off = CFG_OFF(backup.retention_ms), .def = "168h", .min = 0,
	 .max = 3650LL * 86400000,
	 .help = "Objects no restore to a point this recent needs are\n"
		 "deleted (0: keep everything); the store keeps up to\n"
		 "retention + snapshot-interval of history."},
	{.name = "backup.compaction-interval", .type = T_DURATION,
	 .off = CFG_OFF(backup.compaction_interval_ms), .def = "10m",
	 .min = 1000, .max = 86400000,
	 .help = "At most once per interval per database, the primary\n"
		 "merges the newest L0 objects into an L1 object, so\n"
		 "that a restore reads few objects."},
	{.name = "backup.restore-on-empty", .type = T_BOOL,
	 .off = CFG_OFF(backup.restore_on_empty), .def = "false",
	 .help = "A candidate whose data directory holds no database\n"
		 "restores every database of the store (its newest\n"
		 "point) before it mounts; a store it cannot read\n"
		 "stops the start."},
};

static int finish(struct cfg_loader *ld)
{
	const ltxfs_cfg *c = cfg_loader_cfg(ld);

	if (c->backup.type == 1 && !c->backup.dir[0])
		return cfg_loader_error(ld, cfg_loader_line(ld, "backup.type"),
					"backup.dir is required with "
					"backup.type: file");
	if (c->backup.type == 2 &&
	    (!c->backup.endpoint[0] || !c->backup.bucket[0]))
		return cfg_loader_error(ld, cfg_loader_line(ld, "backup.type"),
					"backup.endpoint and backup.bucket are "
					"required with backup.type: s3");
	if (c->backup.retention_ms > 0 && c->backup.snapshot_interval_ms == 0)
		return cfg_loader_error(ld, cfg_loader_line(ld,
					"backup.retention") ?: cfg_loader_line(
					ld, "backup.snapshot-interval"),
					"backup.retention needs "
					"backup.snapshot-interval (a newer "
					"snapshot is what lets older objects "
					"go); set backup.retention: 0 to keep "
					"everything");
	if (strstr(c->backup.prefix, "..") || c->backup.prefix[0] == '/')
		return cfg_loader_error(ld, cfg_loader_line(ld,
							    "backup.prefix"),
					"backup.prefix: \"%s\" must be relative "
					"without ..", c->backup.prefix);
	return 0;
}

const struct cfg_section cfg_backup_section = {
	.name = "backup",
	.help = "Continuous backup of every database (docs/BACKUP.md).",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
	.finish = finish,
};
