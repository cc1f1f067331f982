/* Configuration section `fuse`: the mount (docs/CONFIG.md). */
#include "cfg_i.h"

static const struct cfg_key keys[] = {
	{.name = "fuse.dir", .type = T_STR, .off = CFG_OFF(fuse.dir),
	 .def = "/litefs", .flags = F_NONEMPTY,
	 .help = "Mount point; databases appear as files directly in it."},
	{.name = "fuse.allow-other", .type = T_BOOL,
	 .off = CFG_OFF(fuse.allow_other), .def = "false",
	 .help = "Let users other than the mounting one access the mount\n"
		 "(needs user_allow_other in /etc/fuse.conf when not root)."},
	{.name = "fuse.debug", .type = T_BOOL, .off = CFG_OFF(fuse.debug),
	 .def = "false", .help = "Print every FUSE request (very verbose)."},
};

const struct cfg_section cfg_fuse_section = {
	.name = "fuse",
	.help = "The FUSE mount that applications open databases in.",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
};
