/*
 * `ltxfs mount` and `ltxfs verify` (and what `ltxfs repair` shares with
 * them: cmd.h).
 *
 * mount: loads the config, checks that it can work (a one-line reason
 * otherwise), mounts and serves in the foreground until SIGINT/SIGTERM
 * (SIGHUP re-reads the TLS certificates and goes to the application),
 * then unmounts and closes every database cleanly.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>

#include "cfg.h"
#include "cmd.h"
#include "exec.h"
#include "fs/mount.h"
#include "fs/verify.h"
#include "lib/log.h"
#include "node_id.h"
#include "owner.h"
#include "procfs.h"
#include "restore_empty.h"
#include "replica/node.h"
#include "replica/proxy.h"
#include "backup/uploader.h"
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
		else if (strcmp(argv[i], "--") == 0) {
			i++; /* the end of the options */
			break;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "usage: ltxfs %s [-c ltxfs.yml]%s\n",
				cmd, strcmp(cmd, "verify") == 0 ? " [DB...]" :
				strcmp(cmd, "repair") == 0 ? " DB" :
				strcmp(cmd, "mount") == 0 ? " [-- CMD [ARG...]]"
							  : "");
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
	bool has_admin;
	int fd;

	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		fprintf(stderr, "ltxfs mount: /dev/fuse is missing or not "
			"accessible (%s); load the fuse module or run the "
			"container with --device /dev/fuse\n", strerror(errno));
		return -1;
	}
	if (cmd_procfs_cap_bounding(CAP_SYS_ADMIN, &has_admin) == 0 &&
	    !has_admin) {
		fprintf(stderr, "ltxfs mount: the capability CAP_SYS_ADMIN, "
			"needed to mount FUSE, is not in this process's "
			"bounding set; run the container with --cap-add "
			"SYS_ADMIN (Kubernetes: securityContext.capabilities"
			".add: [SYS_ADMIN])\n");
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
	if (check_readable("http.tls-ca-file", cfg->http.tls_ca_file) < 0)
		return -1;
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
		.metrics_token = cfg->http.metrics_token,
		.metrics_open = cfg->http.metrics_auth == CFG_METRICS_AUTH_NONE,
		.tls_cert_file = cfg->http.tls_cert_file,
		.tls_key_file = cfg->http.tls_key_file,
		.tls_client_ca_file = cfg->http.tls_client_ca_file,
		.tls_ca_file = cfg->http.tls_ca_file,
		.tls_client_cert_file = cfg->http.tls_client_cert_file,
		.tls_client_key_file = cfg->http.tls_client_key_file,
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
		.upstream_url = cfg->lease.upstream_url,
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
		.region = cfg->region,
		.http = http_opts(cfg),
		.lease = lease_opts(cfg, host),
		.retention = retention_opts(cfg),
		.sync = {cfg->sync.min_replicas, cfg->sync.timeout_ms,
			 cfg->sync.on_timeout == 1},
	};
}

/* The proxy (proxy.addr set), before the node starts: it registers its
 * part of /metrics and /info. 0 (*out NULL: no proxy) or -1. */
static int proxy_new(const ltxfs_cfg *cfg, rep_node *node, uint64_t node_id,
		     const char *host, rep_proxy **out)
{
	rep_proxy_opts po = {
		.addr = cfg->proxy.addr,
		.target = cfg->proxy.target,
		.db = cfg->proxy.db,
		.advertise = cfg->proxy.advertise,
		.node_url = cfg->lease.advertise_url,
		.hostname = cfg->lease.hostname[0] ? cfg->lease.hostname : host,
		.token = cfg->http.token,
		.tls = {cfg->http.tls_ca_file, cfg->http.tls_client_cert_file,
			cfg->http.tls_client_key_file},
		.node_id = node_id,
		.max_lag_ms = cfg->proxy.max_lag_ms,
		.read_timeout_ms = cfg->proxy.read_timeout_ms,
		.connect_timeout_ms = cfg->proxy.connect_timeout_ms,
		.idle_timeout_ms = cfg->proxy.idle_timeout_ms,
		.max_conns = cfg->proxy.max_conns,
		.passthrough = cfg->proxy.passthrough.items,
		.npassthrough = cfg->proxy.passthrough.count,
		.always_forward = cfg->proxy.always_forward.items,
		.nalways_forward = cfg->proxy.always_forward.count,
	};

	*out = NULL;
	if (!cfg->proxy.addr[0])
		return 0;
	return rep_proxy_new(&po, node, out) < 0 ? -1 : 0;
}

/* The backup uploader (backup.type set), before the node starts: it
 * registers its part of /metrics and /info. 0 (*out NULL: no backup) or
 * -1 (refused credentials, a bad store: logged). */
static int backup_new(const ltxfs_cfg *cfg, rep_node *node,
		      bk_uploader **out)
{
	bk_uploader_opts bo = {
		.store = cmd_backup_store_opts(cfg),
		.prefix = cfg->backup.prefix,
		.interval_ms = cfg->backup.interval_ms,
		.snapshot_interval_ms = cfg->backup.snapshot_interval_ms,
		.retention_ms = cfg->backup.retention_ms,
		.compaction_interval_ms = cfg->backup.compaction_interval_ms,
		.data_dir = cfg->data.dir,
	};

	*out = NULL;
	if (cfg->backup.type == BK_STORE_NONE)
		return 0;
	return bk_uploader_new(&bo, node, out) < 0 ? -1 : 0;
}

/* What stops ltxfs: a signal (the stopper thread) or the end of the
 * application (exec.c's on_done). */
struct stopper {
	sigset_t set;
	fs_mount *m;
	rep_node *node;
	rep_proxy *proxy;        /* NULL: none */
	bk_uploader *backup;     /* NULL: none */
	pthread_mutex_t mu;      /* guards below */
	pthread_cond_t cond;     /* busy went false */
	cmd_exec *exec;          /* NULL: no application */
	bool stopping;           /* stop_all has begun */
	bool busy;               /* the stopper thread is using exec */
};

/* Stops in order while the mount still serves: replication (a primary
 * drains its replicas first), the daemon's own handles in the mount,
 * then the FUSE loop. Once. */
static void stop_all(struct stopper *st)
{
	pthread_mutex_lock(&st->mu);
	if (st->stopping) {
		pthread_mutex_unlock(&st->mu);
		return;
	}
	st->stopping = true;
	pthread_mutex_unlock(&st->mu);
	rep_proxy_stop(st->proxy);
	bk_uploader_stop(st->backup);
	rep_node_stop(st->node);
	fs_mount_release_apply(st->m);
	fs_mount_stop(st->m);
}

static void on_exec_done(void *ctx)
{
	stop_all(ctx);
}

/* SIGHUP never stops ltxfs: the TLS certificates are re-read when
 * configured, the signal goes to the application when one runs, and
 * when neither, a line says so. */
static void on_hup(struct stopper *st, cmd_exec *ex)
{
	int rc = rep_node_reload_tls(st->node);
	bool passed = ex && cmd_exec_hup(ex);

	if (rc == -ENOENT && !passed)
		log_info("SIGHUP: nothing to reload (no http.tls-cert-file, "
			 "no application running)");
	else if (rc == 0)
		log_info("SIGHUP: TLS certificate and key re-read");
}

/* Waits for SIGINT/SIGTERM/SIGHUP. SIGHUP: on_hup. With an application
 * (exec), SIGINT/SIGTERM go to it first (exec.c: they stop it within
 * exec-grace-period); then ltxfs stops. */
static void *stopper_main(void *arg)
{
	struct stopper *st = arg;
	int sig;

	for (;;) {
		bool stop = true;
		cmd_exec *ex;
		if (sigwait(&st->set, &sig) != 0)
			return NULL;
		pthread_mutex_lock(&st->mu);
		ex = st->stopping ? NULL : st->exec;
		st->busy = ex != NULL;
		pthread_mutex_unlock(&st->mu);
		if (sig == SIGHUP) {
			on_hup(st, ex);
			stop = false;
		} else if (ex) {
			stop = cmd_exec_signal(ex, sig);
		}
		pthread_mutex_lock(&st->mu);
		st->busy = false;
		pthread_cond_broadcast(&st->cond);
		pthread_mutex_unlock(&st->mu);
		if (!stop)
			continue;
		log_info("signal %d: stopping", sig);
		stop_all(st);
	}
}

/* The application's object, once the stopper thread no longer uses it:
 * main frees it after that. */
static cmd_exec *take_exec(struct stopper *st)
{
	cmd_exec *ex;

	pthread_mutex_lock(&st->mu);
	st->stopping = true;
	while (st->busy)
		pthread_cond_wait(&st->cond, &st->mu);
	ex = st->exec;
	st->exec = NULL;
	pthread_mutex_unlock(&st->mu);
	return ex;
}

int cmd_mount(int argc, char **argv)
{
	ltxfs_cfg cfg = {0};
	fs_mount *m = NULL;
	fs_mount_opts o = {0};
	rep_node_opts ro = {0};
	rep_node *node = NULL;
	rep_proxy *proxy = NULL;
	bk_uploader *backup = NULL;
	struct stopper st = {0};
	cmd_exec_opts eo = {0};
	cmd_exec *ex = NULL;
	char **app_argv = NULL;
	pthread_t stopper;
	char host[256] = "", real_mnt[PATH_MAX], what[PATH_MAX + 8];
	uint64_t node_id = 0;
	int next, rc, wd = -1, data_lock = -1, mnt_lock[2] = {-1, -1};

	pthread_mutex_init(&st.mu, NULL);
	pthread_cond_init(&st.cond, NULL);
	rc = cmd_load_cfg(argc, argv, &cfg, &next, "mount");
	if (rc != 0)
		goto out;
	if (next > 1 && strcmp(argv[next - 1], "--") == 0 && next < argc) {
		app_argv = argv + next; /* overrides exec */
	} else if (next != argc) {
		fprintf(stderr, "usage: ltxfs mount [-c ltxfs.yml] "
			"[-- CMD [ARG...]]\n");
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
	/* Before the node opens the data directory (restore_empty.h). */
	if (cmd_restore_on_empty(&cfg) < 0) {
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
	if (proxy_new(&cfg, node, node_id, host, &proxy) < 0) {
		fprintf(stderr, "ltxfs mount: cannot start the proxy (see the "
			"log above)\n");
		rc = 1;
		goto out;
	}
	if (backup_new(&cfg, node, &backup) < 0) {
		fprintf(stderr, "ltxfs mount: cannot start the backup (see the "
			"log above)\n");
		rc = 1;
		goto out;
	}
	o.mountpoint = real_mnt;
	o.data_dir = cfg.data.dir;
	o.allow_other = cfg.fuse.allow_other;
	o.debug = cfg.fuse.debug;
	o.zstd_level = cfg.data.compress ? cfg.data.zstd_level : 0;
	o.apply_timeout_ms = (int)cfg.data.apply_timeout_ms;
	o.node_id = node_id;
	o.on_commit = rep_node_on_commit;
	o.commit_ctx = node;
	o.readonly = !rep_node_is_primary(node);
	o.primary = rep_node_primary_desc(node);
	o.own_signals = true;
	o.write_deadline_ns = rep_node_write_deadline(node);
	if (cfg.sync.min_replicas > 0) {
		o.sync_wait = rep_node_sync_wait;
		o.sync_ctx = node;
	}
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
	/* The uploader first: it holds the logs' records for the backup
	 * before the node's first retention pass (backup/uploader.h). */
	if ((backup && bk_uploader_start(backup, m) < 0) ||
	    rep_node_start(node, m) < 0) {
		fprintf(stderr, "ltxfs mount: cannot start (see the log above)\n");
		bk_uploader_stop(backup);
		fs_mount_free(m);
		rc = 1;
		goto out;
	}
	if (proxy && rep_proxy_start(proxy, m) < 0) {
		bk_uploader_stop(backup);
		rep_node_stop(node);
		fs_mount_free(m);
		rc = 1;
		goto out;
	}
	st.m = m;
	st.node = node;
	st.proxy = proxy;
	st.backup = backup;
	eo = (cmd_exec_opts){
		.list = &cfg.exec,
		.argv = app_argv,
		.grace_ms = cfg.exec_grace_ms,
		.candidate = cfg.lease.candidate,
		.mountpoint = real_mnt,
		.node = node,
		.on_done = on_exec_done,
		.ctx = &st,
	};
	if (cmd_exec_start(&eo, &ex) < 0) {
		rep_proxy_stop(proxy);
		bk_uploader_stop(backup);
		rep_node_stop(node);
		fs_mount_free(m);
		rc = 1;
		goto out;
	}
	st.exec = ex;
	if (pthread_create(&stopper, NULL, stopper_main, &st) != 0) {
		cmd_exec_free(take_exec(&st));
		rep_proxy_stop(proxy);
		bk_uploader_stop(backup);
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
	/* The application first (the FUSE loop ended under it otherwise),
	 * then replication, then the mount. */
	ex = take_exec(&st);
	if (ex) {
		int code;
		cmd_exec_signal(ex, SIGTERM); /* returns at once when done */
		code = cmd_exec_exit_code(ex);
		if (code >= 0)
			rc = code; /* the application's, or a command's */
	}
	rep_proxy_stop(proxy);
	bk_uploader_stop(backup);
	rep_node_stop(node);
	fs_mount_release_apply(m);
	log_info("stopping: unmounting %s", cfg.fuse.dir);
	fs_mount_free(m);
	/* Joined only now: the thread that stopped the mount may wait in
	 * fs_mount_stop's statfs until the unmount. */
	cmd_exec_free(ex);
	log_info("stopped");
out:
	if (wd >= 0)
		close(wd); /* the watchdog sees EOF and ends */
	rep_node_free(node);
	rep_proxy_free(proxy); /* after the node's server (its /metrics) */
	bk_uploader_free(backup);
	cfg_free(&cfg);
	/* Last: the mount point and the data directory are free now. */
	for (int i = 0; i < 2; i++)
		if (mnt_lock[i] >= 0)
			close(mnt_lock[i]);
	if (data_lock >= 0)
		close(data_lock);
	pthread_cond_destroy(&st.cond);
	pthread_mutex_destroy(&st.mu);
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
