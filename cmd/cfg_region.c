/* Configuration of `region`: where this node runs (docs/CONFIG.md,
 * docs/REGIONS.md). A top-level key: it names the node, not one of its
 * parts. */
#include "cfg_i.h"

#include <ctype.h>
#include <string.h>

static const struct cfg_key keys[] = {
	{.name = "region", .type = T_STR, .off = CFG_OFF(region), .def = "",
	 .help = "Name of the region (or zone) this node runs in, shown in\n"
		 "/info and /metrics. A replica with a region and no\n"
		 "lease.upstream-url streams from a replica of its own region\n"
		 "that follows the primary (docs/REGIONS.md). Empty: none."},
};

/* A region is a label in /metrics and /info: 1..63 bytes of
 * [A-Za-z0-9._-] (replica/cascade.h checks the same on the wire). */
static int finish_region(struct cfg_loader *ld)
{
	const char *r = cfg_loader_cfg(ld)->region;
	size_t n = strlen(r);
	bool ok = n <= 63;

	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char)r[i]) || r[i] == '.' ||
		     r[i] == '_' || r[i] == '-';
	if (!ok)
		return cfg_loader_error(ld, cfg_loader_line(ld, "region"),
					"region \"%s\" must be up to 63 bytes "
					"of A-Z a-z 0-9 . _ -", r);
	return 0;
}

/* Top-level keys, not a mapping: no name. */
const struct cfg_section cfg_region_section = {
	.name = NULL,
	.help = NULL,
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
	.finish = finish_region,
};
