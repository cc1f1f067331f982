/*
 * `exec`: the application ltxfs runs under its supervision
 * (docs/CONFIG.md, "exec"). The commands of the configuration (or the
 * one command after `ltxfs mount ... --`) run in order once the node is
 * ready; each but the last must exit 0; the last is the application.
 *
 *   cmd_exec_start(&opts, &e);   // after rep_node_start: a thread waits
 *                                // for readiness, then runs them
 *   cmd_exec_signal(e, sig);     // from the signal thread
 *   ... opts.on_done(ctx)        // the thread has ended: ltxfs stops
 *   cmd_exec_exit_code(e);       // what ltxfs exits with
 *   cmd_exec_free(e);
 */
#ifndef CMD_EXEC_H
#define CMD_EXEC_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "replica/node.h"

typedef struct cmd_exec cmd_exec;

typedef struct cmd_exec_opts {
	const cfg_execlist *list;    /* the configuration's exec */
	char *const *argv;           /* NULL-terminated: the application
				      * instead of list (no shell); NULL */
	int64_t grace_ms;            /* exec-grace-period */
	bool candidate;              /* lease.candidate */
	const char *mountpoint;      /* LTXFS_MOUNT */
	rep_node *node;
	/* Called once, from the supervision thread, when it has ended (the
	 * application exited, a command failed, or a stop was asked):
	 * ltxfs stops. Not called when the last command was skipped here
	 * (if-candidate): ltxfs goes on. */
	void (*on_done)(void *ctx);
	void *ctx;
} cmd_exec_opts;

/* Starts the supervision thread; opts (and what it points to) must live
 * until cmd_exec_free. 0 or -errno. Nothing to run: 0 and *out NULL. */
int cmd_exec_start(const cmd_exec_opts *opts, cmd_exec **out);

/*
 * A signal ltxfs received (SIGINT, SIGTERM): ltxfs stops. Whatever runs
 * gets sig (its process group), up to grace_ms to exit, then SIGKILL;
 * returns true once it has exited (the thread has ended). SIGHUP never
 * stops ltxfs: it is cmd_exec_hup's, and this returns false.
 */
bool cmd_exec_signal(cmd_exec *e, int sig);

/* SIGHUP: passed to the application's process group when it runs
 * (true), else nothing (false). */
bool cmd_exec_hup(cmd_exec *e);

/* Once the thread has ended: the exit code for ltxfs (the application's,
 * 128 + the signal that killed it, or a failed command's), or -1 when
 * none (nothing ran to its end: a stop was asked first). */
int cmd_exec_exit_code(cmd_exec *e);

/* Stops what still runs (as cmd_exec_signal(SIGTERM)), joins, frees.
 * NULL is a no-op. */
void cmd_exec_free(cmd_exec *e);

#endif
