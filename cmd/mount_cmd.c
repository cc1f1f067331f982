/*
 * `ltxfs mount` and `ltxfs verify` (and what `ltxfs repair` shares with
 * them: cmd.h).
 *
 * mount: loads the config, checks that it can work (a one-line reason
 * otherwise), mounts and serves in the foreground until SIGINT/SIGTERM,
 * then unmounts and closes every database cleanly.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>

#include "cfg.h"
#include "cmd.h"
#include "fs/mount.h"
#include "fs/verify.h"
#include "lib/log.h"
#include "node_id.h"
#include "owner.h"
#include "replica/node.h"
#include "watchdog.h"

int cmd_load_cfg(int argc, char **argv, ltxfs_cfg *cfg, int *out_next,
		 const char *cmd)
{
	const char *path = NULL, *used = NULL;
	char err[512];
	int i = 1, rc;

	for (; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 ||
		     strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			path = argv[++i];
		else if (argv[i][0] == '-') {
			fprintf(stderr, "usage: ltxfs %s [-c ltxfs.yml]%s\n",
				cmd, strcmp(cmd, "verify") == 0 ? " [DB...]" :
				strcmp(cmd, "repair") == 0 ? " DB" : "");
			return 2;
		} else
			break;
	}
	rc = cfg_load(cfg, path, &used, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "ltxfs %s: %s\n", cmd, err);
		return 1;
	}
	lib_log_configure(cfg->log.level, cfg->log.format, NULL);
	*out_next = i;
	return 0;
}

/* A file the configuration names under key ("" = unset) must be a
 * readable regular file now, not at the first etcd request. */
static int check_readable(const char *key, const char *path)
{
	struct stat st;
	int fd, saverr;

	if (!path[0])
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		saverr = errno;
		fprintf(stderr, "ltxfs mount: %s %s cannot be read: %s\n", key,
			path, strerror(saverr));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "ltxfs mount: %s %s is not a regular file\n",
			key, path);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int preflight(const ltxfs_cfg *cfg)
{
	char probe[PATH_MAX];
	int fd;

	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		fprintf(stderr, "ltxfs mount: /dev/fuse is missing or not "
			"accessible (%s); load the fuse module or run the "
			"container with --device /dev/fuse\n", strerror(errno));
		return -1;
	}
	if (mkdir(cfg->data.dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "ltxfs mount: data directory %s is unusable: "
			"%s\n", cfg->data.dir, strerror(errno));
		return -1;
	}
	snprintf(probe, sizeof(probe), "%s/.probe", cfg->data.dir);
	fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "ltxfs mount: data directory %s is unusable: "
			"%s\n", cfg->data.dir, strerror(errno));
		return -1;
	}
	close(fd);
	unlink(probe);
	if (cfg->lease.type == CFG_LEASE_ETCD &&
	    (check_readable("lease.etcd.tls-ca-file",
			    cfg->lease.etcd.tls_ca_file) < 0 ||
	     check_readable("lease.etcd.tls-cert-file",
			    cfg->lease.etcd.tls_cert_file) < 0 ||
	     check_readable("lease.etcd.tls-key-file",
			    cfg->lease.etcd.tls_key_file) < 0))
		return -1;
	return 0;
}

/* The node's options from the configuration, one concern at a time. The
 * strings are cfg's (and host's): they outlive rep_node_new, which keeps
 * copies. */
static rep_http_opts http_opts(const ltxfs_cfg *cfg)
{
	return (rep_http_opts){
		.addr = cfg->http.addr,
		.token = cfg->http.token,
		.max_import_size = cfg->http.max_import_size,
		.ready_max_lag_ms = cfg->http.ready_max_lag_ms,
	};
}

static rep_etcd_opts etcd_opts(const ltxfs_cfg *cfg)
{
	return (rep_etcd_opts){
		.endpoints = cfg->lease.etcd.endpoints.items,
		.nendpoints = cfg->lease.etcd.endpoints.count,
		.prefix = cfg->lease.etcd.prefix,
		.ttl_ms = cfg->lease.etcd.ttl_ms,
		.username = cfg->lease.etcd.username,
		.password = cfg->lease.etcd.password,
		.tls_ca_file = cfg->lease.etcd.tls_ca_file,
		.tls_cert_file = cfg->lease.etcd.tls_cert_file,
		.tls_key_file = cfg->lease.etcd.tls_key_file,
	};
}

static rep_lease_opts lease_opts(const ltxfs_cfg *cfg, const char *host)
{
	return (rep_lease_opts){
		.type = cfg->lease.type == CFG_LEASE_ETCD ? REP_LEASE_ETCD
							   : REP_LEASE_STATIC,
		.candidate = cfg->lease.candidate,
		.advertise_url = cfg->lease.advertise_url,
		.primary_url = cfg->lease.primary_url,
		.hostname = cfg->lease.hostname[0] ? cfg->lease.hostname : host,
		.etcd = etcd_opts(cfg),
	};
}

static rep_retention_opts retention_opts(const ltxfs_cfg *cfg)
{
	return (rep_retention_opts){
		.ms = cfg->data.retention_ms,
		.bytes = cfg->data.retention_bytes,
	};
}

static void node_opts(const ltxfs_cfg *cfg, uint64_t node_id,
		      const char *host, rep_node_opts *out)
{
	*out = (rep_node_opts){
		.data_dir = cfg->data.dir,
		.mountpoint = cfg->fuse.dir,
		.node_id = node_id,
		.http = http_opts(cfg),
		.lease = lease_opts(cfg, host),
		.retention = retention_opts(cfg),
	};
}

struct stopper {
	sigset_t set;
	fs_mount *m;
	rep_node *node;
	int sig;
};

/* Waits for SIGINT/SIGTERM/SIGHUP, then stops in order while the mount
 * still serves: replication, the daemon's own handles in the mount, then
 * the FUSE loop. */
static void *stopper_main(void *arg)
{
	struct stopper *st = arg;

	if (sigwait(&st->set, &st->sig) != 0)
		return NULL;
	log_info("signal %d: stopping", st->sig);
	rep_node_stop(st->node);
	fs_mount_release_apply(st->m);
	fs_mount_stop(st->m);
	return NULL;
}

int cmd_mount(int argc, char **argv)
{
	ltxfs_cfg cfg = {0};
	fs_mount *m = NULL;
	fs_mount_opts o = {0};
	rep_node_opts ro = {0};
	rep_node *node = NULL;
	struct stopper st = {0};
	pthread_t stopper;
	char host[256] = "", real_mnt[PATH_MAX], what[PATH_MAX + 8];
	uint64_t node_id = 0;
	int next, rc, wd = -1, data_lock = -1, mnt_lock[2] = {-1, -1};

	rc = cmd_load_cfg(argc, argv, &cfg, &next, "mount");
	if (rc != 0)
		goto out;
	if (next != argc) {
		fprintf(stderr, "usage: ltxfs mount [-c ltxfs.yml]\n");
		rc = 2;
		goto out;
	}
	if (preflight(&cfg) < 0) {
		rc = 1;
		goto out;
	}
	/* Before anything is opened: the watchdog must hold nothing. */
	wd = cmd_watchdog_start();
	snprintf(what, sizeof(what), "mount %s", cfg.fuse.dir);
	if (cmd_owner_lock_data("ltxfs mount", cfg.data.dir, what,
				&data_lock) < 0 ||
	    cmd_owner_claim_mount("ltxfs mount", cfg.fuse.dir, real_mnt,
				  mnt_lock) < 0) {
		rc = 1;
		goto out;
	}
	if (cmd_node_id_load(cfg.data.dir, &node_id) < 0) {
		fprintf(stderr, "ltxfs mount: cannot read or create %s/node.id\n",
			cfg.data.dir);
		rc = 1;
		goto out;
	}
	gethostname(host, sizeof(host) - 1);
	node_opts(&cfg, node_id, host, &ro);
	if (rep_node_new(&ro, &node) < 0) {
		fprintf(stderr, "ltxfs mount: cannot start (see the log above)\n");
		rc = 1;
		goto out;
	}
	o.mountpoint = real_mnt;
	o.data_dir = cfg.data.dir;
	o.allow_other = cfg.fuse.allow_other;
	o.debug = cfg.fuse.debug;
	o.zstd_level = cfg.data.compress ? cfg.data.zstd_level : 0;
	o.node_id = node_id;
	o.on_commit = rep_node_on_commit;
	o.commit_ctx = node;
	o.readonly = !rep_node_is_primary(node);
	o.primary = rep_node_primary_desc(node);
	o.own_signals = true;
	o.write_deadline_ns = rep_node_write_deadline(node);
	sigemptyset(&st.set);
	sigaddset(&st.set, SIGINT);
	sigaddset(&st.set, SIGTERM);
	sigaddset(&st.set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &st.set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (fs_mount_new(&o, &m) < 0) {
		fprintf(stderr, "ltxfs mount: cannot start (see the log above)\n");
		rc = 1;
		goto out;
	}
	if (wd >= 0) {
		cmd_watchdog_arm(wd, real_mnt);
		wd = -1;
	}
	if (rep_node_start(node, m) < 0) {
		fprintf(stderr, "ltxfs mount: cannot start (see the log above)\n");
		fs_mount_free(m);
		rc = 1;
		goto out;
	}
	st.m = m;
	st.node = node;
	if (pthread_create(&stopper, NULL, stopper_main, &st) != 0) {
		rep_node_stop(node);
		fs_mount_free(m);
		rc = 1;
		goto out;
	}
	pthread_detach(stopper);
	log_info("ltxfs %016" PRIx64 " serving %s (data in %s) as %s", node_id,
		 cfg.fuse.dir, cfg.data.dir,
		 rep_node_is_primary(node) ? "primary" : "replica");
	rc = fs_mount_run(m) < 0 ? 1 : 0;
	rep_node_stop(node);
	fs_mount_release_apply(m);
	log_info("stopping: unmounting %s", cfg.fuse.dir);
	fs_mount_free(m);
	log_info("stopped");
out:
	if (wd >= 0)
		close(wd); /* the watchdog sees EOF and ends */
	rep_node_free(node);
	cfg_free(&cfg);
	/* Last: the mount point and the data directory are free now. */
	for (int i = 0; i < 2; i++)
		if (mnt_lock[i] >= 0)
			close(mnt_lock[i]);
	if (data_lock >= 0)
		close(data_lock);
	return rc;
}

/* 0 proved, 1 not proved (a pruned log without its base), -errno failed. */
static int verify_one(const char *data_dir, const char *name)
{
	char msg[1024];
	bool proved = false;
	int rc = fs_verify_db(data_dir, name, &proved, msg, sizeof(msg));

	printf("%s: %s%s\n", name, rc == 0 ? "" : "FAIL: ", msg);
	return rc < 0 ? rc : proved ? 0 : 1;
}

int cmd_verify(int argc, char **argv)
{
	ltxfs_cfg cfg = {0};
	char path[PATH_MAX];
	int next, rc, bad = 0, unproved = 0, n = 0, one;

	rc = cmd_load_cfg(argc, argv, &cfg, &next, "verify");
	if (rc != 0)
		goto out;
	if (next < argc) {
		for (int i = next; i < argc; i++, n++) {
			one = verify_one(cfg.data.dir, argv[i]);
			bad += one < 0;
			unproved += one == 1;
		}
	} else {
		DIR *d;
		struct dirent *de;
		snprintf(path, sizeof(path), "%s/dbs", cfg.data.dir);
		d = opendir(path);
		if (!d) {
			fprintf(stderr, "ltxfs verify: %s: %s\n", path,
				strerror(errno));
			rc = 1;
			goto out;
		}
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			n++;
			one = verify_one(cfg.data.dir, de->d_name);
			bad += one < 0;
			unproved += one == 1;
		}
		closedir(d);
	}
	/* 1: something failed; 2: nothing failed, something not proved. */
	rc = bad ? 1 : unproved ? 2 : 0;
out:
	cfg_free(&cfg);
	return rc;
}
