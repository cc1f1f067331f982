/* Configuration section `replication.sync`: synchronous replication, a
 * commit answered once replicas have it (replica/sync.h, docs/SYNC.md,
 * docs/CONFIG.md). */
#include "cfg_i.h"

static const char *const on_timeout_names[] = {"fail", "degrade", NULL};

static const struct cfg_key keys[] = {
	{.name = "replication.sync.min-replicas", .type = T_INT,
	 .off = CFG_OFF(sync.min_replicas), .def = "0", .min = 0, .max = 16,
	 .help = "Replicas that must have a transaction durably before\n"
		 "its commit returns (0: asynchronous). The same on\n"
		 "every node."},
	{.name = "replication.sync.timeout", .type = T_DURATION,
	 .off = CFG_OFF(sync.timeout_ms), .def = "5s", .min = 10,
	 .max = 3600000,
	 .help = "How long a commit waits for them."},
	{.name = "replication.sync.on-timeout", .type = T_ENUM,
	 .off = CFG_OFF(sync.on_timeout), .def = "fail",
	 .names = on_timeout_names,
	 .help = "fail: the commit fails (EIO) and is taken back;\n"
		 "degrade: it succeeds, and commits stop waiting until\n"
		 "enough replicas catch up."},
};

/* The parent of replication.sync: no key of its own. */
const struct cfg_section cfg_replication_section = {
	.name = "replication",
	.help = "Replication between the nodes.",
	.keys = NULL,
	.nkeys = 0,
};

const struct cfg_section cfg_replication_sync_section = {
	.name = "replication.sync",
	.help = "Synchronous replication (docs/SYNC.md).",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
};
