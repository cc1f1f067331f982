/* Configuration section `log` (docs/CONFIG.md). */
#include "cfg_i.h"

#include "lib/log.h"

static const char *const level_names[] = {"debug", "info", "warn", "error",
					  NULL};
static const char *const format_names[] = {"text", "json", NULL};

static const struct cfg_key keys[] = {
	{.name = "log.level", .type = T_ENUM, .off = CFG_OFF(log.level),
	 .def = "info", .names = level_names, .parse = lib_log_parse_level,
	 .help = "debug, info, warn or error."},
	{.name = "log.format", .type = T_ENUM, .off = CFG_OFF(log.format),
	 .def = "text", .names = format_names, .parse = lib_log_parse_format,
	 .help = "text or json (one object a line)."},
};

const struct cfg_section cfg_log_section = {
	.name = "log",
	.help = "Logging to stderr.",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
};
