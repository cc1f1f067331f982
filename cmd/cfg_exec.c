/* Configuration key `exec`: the application ltxfs runs (docs/CONFIG.md). */
#include "cfg_i.h"

static const struct cfg_key keys[] = {
	{.name = "exec", .type = T_LIST, .off = CFG_OFF(exec), .def = NULL,
	 .help = "Shell commands (a list, or one string) run under\n"
		 "supervision once the node is ready."},
};

/* Top-level keys, not a mapping: no name. */
const struct cfg_section cfg_exec_section = {
	.name = NULL,
	.help = NULL,
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
};
