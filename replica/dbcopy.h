/*
 * The copy behind GET /export and POST /import (docs/PROTOCOL.md), run in
 * a child process so that no SQLite connection on the mount lives in the
 * daemon (docs/STORAGE.md, "The daemon's own mappings").
 *
 * Daemon side: rep_dbcopy_run spawns the daemon's own binary
 * (/proc/self/exe) as `ltxfs __copy-db SRC DST`, with stdin /dev/null,
 * stdout a pipe it reads, stderr the daemon's, and no other descriptor,
 * then waits for it within a bound. Child side: rep_dbcopy_main is that
 * subcommand (cmd/main.c dispatches to it); it copies SRC into DST with
 * SQLite's backup API (one read transaction, one write transaction).
 */
#ifndef REPLICA_DBCOPY_H
#define REPLICA_DBCOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The subcommand of the ltxfs binary that is the child side. */
#define REP_DBCOPY_CMD "__copy-db"

typedef struct rep_dbcopy {
	const char *src;             /* opened read-only */
	const char *dst;             /* created when missing */
	int64_t timeout_ms;          /* the child is killed after this */
	int client_fd;               /* killed when this peer hangs up; -1 */
	/* Polled every REP_DBCOPY_TICK_MS: true kills the child (why says
	 * why, for err). NULL: never. */
	bool (*cancel)(void *ctx, const char **why);
	void *ctx;
} rep_dbcopy;

#define REP_DBCOPY_TICK_MS 100

/* Runs one copy in a child process and waits for it. 0 when copied;
 * -ENOSPC the disk filled (DST rolled back by the child); -EIO SQLite
 * could not copy (err has its message); -ETIMEDOUT killed after
 * timeout_ms; -ECANCELED killed because the client hung up or cancel
 * said so; -ECHILD the child could not be started or died otherwise.
 * err (never empty on failure) says why; logged here for the last three. */
int rep_dbcopy_run(const rep_dbcopy *c, char *err, size_t errlen);

/* `ltxfs __copy-db SRC DST` (argv[0] is the subcommand): the child.
 * Exit 0 copied, 1 failed, 3 the disk is full (DST rolled back), 2
 * usage; on failure one line on stdout says why. */
int rep_dbcopy_main(int argc, char **argv);

#endif
