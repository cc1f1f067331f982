/* Subcommands of the ltxfs binary; each returns the process exit code. */
#ifndef CMD_CMD_H
#define CMD_CMD_H

int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_ltx(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_verify(int argc, char **argv);

#endif
