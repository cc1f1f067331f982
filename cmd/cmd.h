/* Subcommands of the ltxfs binary; each returns the process exit code. */
#ifndef CMD_CMD_H
#define CMD_CMD_H

#include <stdbool.h>

struct ltxfs_cfg;

int cmd_backup(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_ltx(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_restore(int argc, char **argv);

/* mount_cmd.c: loads the configuration named by -c (or the default) from
 * argv, sets up logging; *out_next is the first other argument. 0, or the
 * exit code after a message on stderr. */
int cmd_load_cfg(int argc, char **argv, struct ltxfs_cfg *cfg, int *out_next,
		 const char *cmd);

#endif
