/*
 * `ltxfs repair [-c ltxfs.yml] DB`: brings back a database that a node
 * keeps out of service because its LTX log is damaged (docs/STORAGE.md,
 * "A damaged LTX log"). Run while the node is stopped. Steps (fs/repair.h):
 *
 *   refuse unless: no daemon holds the data directory (cmd/owner.h),
 *   DB exists, its log breaks a rule (R1-R3; fs/log.h) somewhere;
 *   settle the database file (hot journal played back, WAL checkpointed);
 *   refuse unless SQLite's PRAGMA integrity_check says ok (opened
 *   read-only, immutable: nothing else is touched);
 *   write a new log: one snapshot of the database at TXID = the highest
 *   TXID the damaged log names + 1; the damaged log goes to
 *   dbs/DB/log.damaged-<time>/ (the latest only is kept).
 *
 * Exit 0 when repaired; 1 with a one-line reason on stderr otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cfg.h"
#include "cmd.h"
#include "fs/log.h"
#include "fs/repair.h"
#include "node_id.h"
#include "owner.h"

#define CHECK_LINES 3 /* integrity_check messages quoted */

/* path as a SQLite URI file name: '%', '?' and '#' escaped. */
static void uri_path(const char *path, char *out, size_t n)
{
	size_t o = 0;

	for (; *path && o + 4 < n; path++) {
		if (*path == '%' || *path == '?' || *path == '#')
			o += (size_t)snprintf(out + o, n - o, "%%%02x",
					      (unsigned char)*path);
		else
			out[o++] = *path;
	}
	out[o] = '\0';
}

/* PRAGMA integrity_check on the database file alone (immutable: no
 * journal, WAL or lock is looked for or created). 0 when "ok". */
static int integrity_ok(const char *path, char *msg, size_t msglen)
{
	char uri[PATH_MAX * 3 + 32], esc[PATH_MAX * 3];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	size_t used = 0;
	int lines = 0, rc, bad = 0;

	uri_path(path, esc, sizeof(esc));
	snprintf(uri, sizeof(uri), "file:%s?immutable=1", esc);
	rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
			     NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st,
					NULL);
	msg[0] = '\0';
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);
		rc = SQLITE_OK;
		if (t && strcmp(t, "ok") == 0)
			continue;
		bad++;
		if (lines++ < CHECK_LINES && used < msglen)
			used += (size_t)snprintf(msg + used, msglen - used,
						 "%s%s", used ? "; " : "",
						 t ? t : "?");
	}
	if (rc != SQLITE_DONE) {
		snprintf(msg, msglen, "SQLite: %s", db ? sqlite3_errmsg(db)
							: "out of memory");
		bad = 1;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return bad ? -EBADMSG : 0;
}

static int repair(const ltxfs_cfg *cfg, const char *name)
{
	char dir[PATH_MAX], logdir[PATH_MAX + 8], path[PATH_MAX + 16];
	char mnt[PATH_MAX];
	char msg[1024], aside[PATH_MAX + 64], what[NAME_MAX + 16];
	fs_log_check chk;
	int lock_fd = -1;
	uint64_t node_id = 0;
	uint32_t pages = 0;
	ltx_pos pos = {0};
	struct stat st;
	int rc;

	if (!name[0] || name[0] == '.' || strchr(name, '/')) {
		fprintf(stderr, "ltxfs repair: \"%s\" is not a database name\n",
			name);
		return 1;
	}
	/* The node must be stopped: the repair holds the data directory
	 * as a daemon does (cmd/owner.h), for the rest of the process. */
	snprintf(what, sizeof(what), "repair %s", name);
	if (cmd_owner_lock_data("ltxfs repair", cfg->data.dir, what,
				&lock_fd) < 0)
		return 1;
	snprintf(dir, sizeof(dir), "%s/dbs/%s", cfg->data.dir, name);
	snprintf(logdir, sizeof(logdir), "%s/log", dir);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "ltxfs repair: no database %s in %s/dbs\n", name,
			cfg->data.dir);
		return 1;
	}
	rc = fs_log_check_all(logdir, name, &chk);
	if (rc < 0) {
		fprintf(stderr, "ltxfs repair: %s: reading its LTX log %s: %s\n",
			name, logdir, strerror(-rc));
		return 1;
	}
	if (!chk.damaged) {
		fprintf(stderr, "ltxfs repair: %s: its LTX log is not damaged "
			"(%" PRIu64 " records, the last at %016" PRIx64 "/%016"
			PRIx64 "); nothing to repair (a database that does "
			"not match its log is not repaired: see "
			"docs/STORAGE.md)\n", name, chk.records, chk.last.txid,
			chk.last.checksum);
		return 1;
	}
	printf("%s: %s\n", name, chk.why);
	/* SQLite names a super-journal by the resolved path it sees. */
	if (!realpath(cfg->fuse.dir, mnt))
		snprintf(mnt, sizeof(mnt), "%s", cfg->fuse.dir);
	rc = fs_repair_settle(dir, cfg->data.dir, mnt, name, &pages, msg,
			      sizeof(msg));
	if (rc == 0 && pages == 0) {
		snprintf(msg, sizeof(msg), "the database has no pages");
		rc = -ENOENT;
	}
	if (rc < 0) {
		fprintf(stderr, "ltxfs repair: %s: %s\n", name, msg);
		return 1;
	}
	printf("%s: database file settled: %s\n", name, msg);
	snprintf(path, sizeof(path), "%s/database", dir);
	if (integrity_ok(path, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "ltxfs repair: %s: the database file fails "
			"PRAGMA integrity_check (%s): it cannot start a new log; "
			"restore it from a replica (docs/STORAGE.md)\n", name,
			msg);
		return 1;
	}
	printf("%s: PRAGMA integrity_check: ok\n", name);
	if (cmd_node_id_load(cfg->data.dir, &node_id) < 0) {
		fprintf(stderr, "ltxfs repair: cannot read %s/node.id\n",
			cfg->data.dir);
		return 1;
	}
	rc = fs_repair_relog(dir, name, chk.max_txid + 1, node_id,
			     cfg->data.compress ? cfg->data.zstd_level : 0, &pos,
			     aside, sizeof(aside), msg, sizeof(msg));
	if (rc < 0) {
		fprintf(stderr, "ltxfs repair: %s: %s\n", name, msg);
		return 1;
	}
	printf("%s: repaired: a new LTX log starts with a snapshot of the "
	       "database at %016" PRIx64 "/%016" PRIx64 " (%" PRIu32 " pages; "
	       "the damaged log named TXIDs up to %016" PRIx64 "); the damaged "
	       "log is in %s; replicas take a snapshot when the node is "
	       "started\n", name, pos.txid, pos.checksum, pages, chk.max_txid,
	       aside[0] ? aside : "(none)");
	return 0;
}

int cmd_repair(int argc, char **argv)
{
	ltxfs_cfg cfg = {0};
	int next, rc;

	rc = cmd_load_cfg(argc, argv, &cfg, &next, "repair");
	if (rc != 0)
		goto out;
	if (next + 1 != argc) {
		fprintf(stderr, "usage: ltxfs repair [-c ltxfs.yml] DB\n");
		rc = 2;
		goto out;
	}
	rc = repair(&cfg, argv[next]);
out:
	cfg_free(&cfg);
	return rc;
}
