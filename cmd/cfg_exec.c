/* Configuration of `exec`: the application ltxfs runs under its
 * supervision (cmd/exec.c, docs/CONFIG.md). */
#include "cfg_i.h"

static const struct cfg_key keys[] = {
	{.name = "exec", .type = T_EXEC, .off = CFG_OFF(exec), .def = NULL,
	 .help = "Commands run in order once the node is ready, each a\n"
		 "shell command line: a string, or {cmd: \"...\",\n"
		 "if-candidate: true} for one that runs only on a node that\n"
		 "can become primary, once it is (migrations). Each but the\n"
		 "last must exit 0; the last is the application, supervised:\n"
		 "when it exits, ltxfs stops with its exit code."},
	{.name = "exec-grace-period", .type = T_DURATION,
	 .off = CFG_OFF(exec_grace_ms), .def = "10s", .min = 0,
	 .max = INT64_MAX,
	 .help = "When ltxfs stops (SIGINT, SIGTERM), how long the\n"
		 "application has to exit after the signal before it is\n"
		 "killed (SIGKILL) and the mount goes."},
};

/* Top-level keys, not a mapping: no name. */
const struct cfg_section cfg_exec_section = {
	.name = NULL,
	.help = NULL,
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
};
