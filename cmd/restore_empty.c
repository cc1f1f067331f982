/* backup.restore-on-empty: see restore_empty.h. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "restore_empty.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/object.h"
#include "backup/restore.h"
#include "fs/log.h"
#include "lib/log.h"

/* Rule E1: whether some dbs/NAME/database exists. */
static bool holds_databases(const char *data_dir)
{
	char path[4200];
	struct dirent *e;
	struct stat st;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "%s/dbs", data_dir);
	d = opendir(path);
	while (d && !found && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/dbs/%s/database", data_dir,
			 e->d_name);
		found = stat(path, &st) == 0;
	}
	if (d)
		closedir(d);
	return found;
}

/* The database names of keys [PREFIX/]NAME/l0/OBJECT (rule E2), each
 * once, into names. */
static int db_names(const bk_keys *keys, const char *prefix, bk_keys *names)
{
	size_t plen = prefix[0] ? strlen(prefix) + 1 : 0;

	for (size_t i = 0; i < keys->n; i++) {
		const char *name = keys->v[i] + plen, *slash;
		bk_obj o;
		char buf[1024];
		int rc;
		slash = strchr(name, '/');
		if (strlen(keys->v[i]) < plen || !slash ||
		    strncmp(slash, "/l0/", 4) != 0 ||
		    !bk_obj_parse(keys->v[i], &o) ||
		    (size_t)(slash - name) >= sizeof(buf))
			continue;
		snprintf(buf, sizeof(buf), "%.*s", (int)(slash - name), name);
		if (names->n && strcmp(names->v[names->n - 1], buf) == 0)
			continue; /* keys are sorted: a name's keys are together */
		rc = bk_keys_push(names, buf);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int append_record(void *arg, int fd, uint64_t off, uint64_t len,
			 const ltx_header *hdr, const ltx_trailer *tr,
			 char *err, size_t errlen)
{
	int rc = fs_log_append_raw(arg, fd, off, len, hdr, tr);

	if (rc < 0)
		snprintf(err, errlen, "backup: appending TXID %016" PRIx64
			 " to the new LTX log: %s", hdr->max_txid,
			 strerror(-rc));
	return rc;
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Rule E3: what a failed restore leaves goes. */
static void remove_db(const char *data_dir, const char *name)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/dbs/%s", data_dir, name);
	nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Rule E2 for one database. */
static int restore_one(const ltxfs_cfg *cfg, bk_store *s, const char *name,
		       char *err, size_t errlen)
{
	char dir[4200], out[4300], why[FS_LOG_WHY_MAX] = "";
	bk_restore_result res;
	fs_log *log = NULL;
	int rc = 0;

	snprintf(dir, sizeof(dir), "%s/dbs", cfg->data.dir);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		rc = -errno;
	snprintf(dir, sizeof(dir), "%s/dbs/%s", cfg->data.dir, name);
	if (rc == 0 && mkdir(dir, 0755) < 0 && errno != EEXIST)
		rc = -errno;
	snprintf(out, sizeof(out), "%s/log", dir);
	if (rc == 0)
		rc = fs_log_open(out, name, &log, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %.1024s: %.512s", dir,
			 why[0] ? why : strerror(-rc));
		return rc;
	}
	snprintf(out, sizeof(out), "%s/database", dir);
	rc = bk_restore(&(bk_restore_opts){.store = s,
					   .prefix = cfg->backup.prefix,
					   .db = name, .out = out,
					   .on_record = append_record,
					   .record_arg = log},
			&res, err, errlen);
	if (rc == 0)
		rc = fs_log_sync(log);
	fs_log_close(log);
	if (rc == 0)
		log_info("db=%s: restored from %s at TXID %016" PRIx64
			 " checksum %016" PRIx64 ": %" PRIu64 " objects, %"
			 PRIu64 " records, %" PRIu64 " bytes", name,
			 bk_store_desc(s), res.txid, res.checksum, res.objects,
			 res.records, res.bytes);
	else if (!err[0])
		snprintf(err, errlen, "db=%s: %s", name, strerror(-rc));
	return rc;
}

int cmd_restore_on_empty(const ltxfs_cfg *cfg)
{
	bk_store_opts so = cmd_backup_store_opts(cfg);
	bk_store *s = NULL;
	bk_keys keys = {0}, names = {0};
	char err[2048] = "", prefix[1100];
	size_t done = 0;
	int rc;

	if (!cfg->backup.restore_on_empty || cfg->backup.type == BK_STORE_NONE)
		return 0;
	if (!cfg->lease.candidate) {
		log_info("backup.restore-on-empty: not a candidate: the "
			 "databases come from the primary");
		return 0;
	}
	if (holds_databases(cfg->data.dir)) {
		log_info("backup.restore-on-empty: %s holds databases: "
			 "nothing restored", cfg->data.dir);
		return 0;
	}
	snprintf(prefix, sizeof(prefix), "%s%s", cfg->backup.prefix,
		 cfg->backup.prefix[0] ? "/" : "");
	rc = bk_store_open(&so, &s, err, sizeof(err));
	if (rc == 0)
		rc = bk_store_list(s, prefix, &keys, err, sizeof(err));
	if (rc == 0)
		rc = db_names(&keys, cfg->backup.prefix, &names);
	if (rc == 0 && names.n == 0)
		log_warn("backup.restore-on-empty: %s holds no database: "
			 "starting empty", bk_store_desc(s));
	for (; rc == 0 && done < names.n; done++)
		rc = restore_one(cfg, s, names.v[done], err, sizeof(err));
	if (rc < 0) {
		for (size_t i = 0; i <= done && i < names.n; i++)
			remove_db(cfg->data.dir, names.v[i]);
		fprintf(stderr, "ltxfs mount: backup.restore-on-empty: %s%s; "
			"not starting without the databases (the data "
			"directory is left empty)\n", err[0] ? err :
			strerror(-rc), "");
	}
	bk_keys_free(&names);
	bk_keys_free(&keys);
	bk_store_free(s);
	return rc;
}
