/*
 * The node: cluster ID, epoch, the start and stop of the HTTP server,
 * the stream client, the lease and retention, and the public queries
 * (primary lookup, position waits). Layout of the files it keeps:
 *
 *   <data.dir>/cluster.id   "%016x\n": the cluster this node belongs to,
 *                           created by the first primary, adopted by a
 *                           replica from the primary's HELLO
 *   <data.dir>/epoch        "%llu\n": the highest lease epoch seen
 *
 * The role state machine is role.c's; the lease (lease.h) moves it; the
 * drain and handoff are handoff.c's; commit subscribers are commit.c's.
 */
#include "node_i.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lease.h"
#include "retention.h"
#include "tls.h"

#define NS_PER_MS 1000000LL
/* rep_node_wait_txid looks again at least this often (a database that
 * appears by a snapshot is announced by a commit too; this bounds a
 * wake-up missed between the check and the wait). */
#define WAIT_POLL_MS 100

const double rep_lat_bounds_ms[REP_LAT_BUCKETS] = {
	0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

static int read_u64_file(const char *dir, const char *name, int base,
			 uint64_t *out)
{
	char path[PATH_MAX], buf[64], *end;
	ssize_t n;
	int fd;

	*out = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EBADMSG;
	buf[n] = '\0';
	errno = 0;
	*out = strtoull(buf, &end, base);
	if (errno || end == buf || (*end != '\n' && *end != '\0')) {
		log_error("%s is not a valid number: \"%.*s\"", path, (int)n,
			  buf);
		return -EBADMSG;
	}
	return 0;
}

static int write_u64_file(const char *dir, const char *name, bool hex,
			  uint64_t v)
{
	char buf[64];
	int len = hex ? snprintf(buf, sizeof(buf), "%016" PRIx64 "\n", v)
		      : snprintf(buf, sizeof(buf), "%" PRIu64 "\n", v);

	return lib_io_write_file_atomic(dir, name, buf, (size_t)len);
}

int rep_node_set_cluster(rep_node *n, uint64_t id)
{
	int rc = write_u64_file(n->o.data_dir, "cluster.id", true, id);

	if (rc < 0) {
		log_error("cannot write %s/cluster.id: %s", n->o.data_dir,
			  strerror(-rc));
		return rc;
	}
	pthread_mutex_lock(&n->mu);
	n->cluster_id = id;
	pthread_mutex_unlock(&n->mu);
	log_info("joined cluster %016" PRIx64, id);
	return 0;
}

int rep_node_see_epoch(rep_node *n, uint64_t epoch)
{
	int rc = 0;

	pthread_mutex_lock(&n->mu);
	if (epoch < n->epoch)
		rc = -ESTALE;
	else if (epoch > n->epoch) {
		rc = write_u64_file(n->o.data_dir, "epoch", false, epoch);
		if (rc == 0)
			n->epoch = epoch;
	}
	pthread_mutex_unlock(&n->mu);
	return rc;
}

rep_remote *rep_remote_get(rep_node *n, const char *name)
{
	for (size_t i = 0; i < n->follow.nremotes; i++)
		if (strcmp(n->follow.remotes[i].name, name) == 0)
			return &n->follow.remotes[i];
	if (n->follow.nremotes == n->follow.capremotes) {
		size_t cap = n->follow.capremotes ? n->follow.capremotes * 2
						  : 8;
		rep_remote *p = realloc(n->follow.remotes, cap * sizeof(*p));
		if (!p)
			return NULL;
		n->follow.remotes = p;
		n->follow.capremotes = cap;
	}
	memset(&n->follow.remotes[n->follow.nremotes], 0, sizeof(rep_remote));
	snprintf(n->follow.remotes[n->follow.nremotes].name,
		 sizeof(n->follow.remotes[0].name), "%s", name);
	return &n->follow.remotes[n->follow.nremotes++];
}

void rep_metrics_observe_latency(rep_metrics *m, double ms)
{
	size_t i = 0;

	if (ms < 0)
		ms = 0;
	while (i < REP_LAT_BUCKETS && ms > rep_lat_bounds_ms[i])
		i++;
	atomic_fetch_add(&m->lat_bucket[i], 1);
	atomic_fetch_add(&m->lat_count, 1);
	atomic_fetch_add(&m->lat_sum_us, (uint64_t)(ms * 1000.0));
}

int rep_tmpfile(rep_node *n)
{
	int fd = open(n->o.data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0) {
		int rc = -errno;
		log_error("cannot create a temporary file in %s: %s",
			  n->o.data_dir, strerror(-rc));
		return rc;
	}
	return fd;
}


static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

/* The strings of o that the node keeps, duplicated (NULL: ""); the etcd
 * options are used during rep_node_new only and not kept. */
/* The strings of rep_http_opts, by offset, for opts_dup and free. */
static const size_t http_strs[] = {
	offsetof(rep_http_opts, addr),
	offsetof(rep_http_opts, token),
	offsetof(rep_http_opts, metrics_token),
	offsetof(rep_http_opts, tls_cert_file),
	offsetof(rep_http_opts, tls_key_file),
	offsetof(rep_http_opts, tls_client_ca_file),
	offsetof(rep_http_opts, tls_ca_file),
	offsetof(rep_http_opts, tls_client_cert_file),
	offsetof(rep_http_opts, tls_client_key_file),
};
#define N_HTTP_STRS (sizeof(http_strs) / sizeof(http_strs[0]))

static const char **http_str(rep_http_opts *o, size_t i)
{
	return (const char **)((char *)o + http_strs[i]);
}

static int opts_dup(rep_node_opts *dst, const rep_node_opts *src)
{
	bool oom = false;

	*dst = *src;
	for (size_t i = 0; i < N_HTTP_STRS; i++) {
		const char **p = http_str(&dst->http, i);
		*p = dup_or_empty(*p); /* every one replaced: opts_free */
		oom |= !*p;
	}
	memset(&dst->lease.etcd, 0, sizeof(dst->lease.etcd));
	dst->data_dir = dup_or_empty(src->data_dir);
	dst->mountpoint = dup_or_empty(src->mountpoint);
	dst->lease.advertise_url = dup_or_empty(src->lease.advertise_url);
	dst->lease.primary_url = dup_or_empty(src->lease.primary_url);
	dst->lease.hostname = dup_or_empty(src->lease.hostname);
	dst->lease.upstream_url = dup_or_empty(src->lease.upstream_url);
	dst->region = dup_or_empty(src->region);
	if (oom || !dst->data_dir || !dst->mountpoint ||
	    !dst->lease.advertise_url || !dst->lease.upstream_url ||
	    !dst->region ||
	    !dst->lease.primary_url || !dst->lease.hostname)
		return -ENOMEM;
	return 0;
}

static void opts_free(rep_node_opts *o)
{
	free((char *)o->data_dir);
	free((char *)o->mountpoint);
	for (size_t i = 0; i < N_HTTP_STRS; i++)
		free((char *)*http_str(&o->http, i));
	free((char *)o->lease.advertise_url);
	free((char *)o->lease.primary_url);
	free((char *)o->lease.hostname);
	free((char *)o->lease.upstream_url);
	free((char *)o->region);
	memset(o, 0, sizeof(*o));
}

int rep_lease_new(rep_node *n, rep_lease **out)
{
	if (n->o.lease.type == REP_LEASE_ETCD)
		return rep_lease_etcd_new(n, out);
	return rep_lease_static_new(n, out);
}

/* The TLS files of the configuration, checked (tls.h, rule T1): the
 * client side's pair, and the server's credentials. */
static int tls_setup(rep_node *n)
{
	const rep_http_opts *h = &n->o.http;
	rep_tls_files f = {h->tls_cert_file, h->tls_key_file,
			   h->tls_client_ca_file};
	int rc;

	if (h->tls_client_cert_file[0]) {
		rc = rep_tls_check_pair(h->tls_client_cert_file,
					"http.tls-client-cert-file",
					h->tls_client_key_file,
					"http.tls-client-key-file");
		if (rc < 0)
			return rc;
	}
	if (!h->tls_cert_file[0])
		return 0;
	return rep_tls_new(&f, &n->tls);
}

rep_http_tls rep_node_client_tls(rep_node *n)
{
	const rep_http_opts *h = &n->o.http;

	return (rep_http_tls){h->tls_ca_file, h->tls_client_cert_file,
			      h->tls_client_key_file};
}

int rep_node_reload_tls(rep_node *n)
{
	if (!n->tls)
		return -ENOENT;
	return rep_tls_reload(n->tls, true) < 0 ? -EINVAL : 0;
}

static void sync_metrics(void *ctx, FILE *f)
{
	rep_sync_metrics(ctx, f);
}

static char *sync_info(void *ctx)
{
	return rep_sync_info(ctx);
}

/* Synchronous replication (sync.h): its state, and its /metrics and
 * /info when it is on. */
static int sync_setup(rep_node *n)
{
	rep_node_ext e = {"sync", NULL, sync_metrics, sync_info};
	int rc = rep_sync_new(&n->o.sync, n, &n->sync);

	if (rc < 0 || !rep_sync_on(n->sync))
		return rc;
	e.ctx = n->sync;
	return rep_node_ext_add(n, &e);
}

int rep_node_new(const rep_node_opts *opts, rep_node **out)
{
	rep_node *n = calloc(1, sizeof(*n));
	const char *flip = getenv("LTXFS_TEST_FLIP_RECORD");
	uint64_t v;
	int rc;

	*out = NULL;
	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->mu, NULL);
	pthread_mutex_init(&n->handoff_mu, NULL);
	pthread_mutex_init(&n->mhd_log.mu, NULL);
	pthread_cond_init(&n->cond, NULL);
	rc = opts_dup(&n->o, opts);
	if (rc == 0)
		rc = tls_setup(n);
	if (rc < 0)
		goto fail;
	n->o.lease.etcd = opts->lease.etcd; /* for rep_lease_new only */
	n->flip_record = flip ? atoi(flip) : 0;
	if (n->flip_record)
		log_warn("test fault switch: record %d sent will have a byte "
			 "flipped (LTXFS_TEST_FLIP_RECORD)", n->flip_record);
	rc = read_u64_file(n->o.data_dir, "cluster.id", 16, &v);
	if (rc < 0)
		goto fail;
	n->cluster_id = v;
	rc = read_u64_file(n->o.data_dir, "epoch", 10, &v);
	if (rc < 0)
		goto fail;
	n->epoch = v;
	rc = rep_commit_add_builtin(n);
	if (rc == 0)
		rc = sync_setup(n);
	if (rc == 0)
		rc = rep_lease_new(n, &n->lease);
	memset(&n->o.lease.etcd, 0, sizeof(n->o.lease.etcd));
	if (rc < 0)
		goto fail;
	*out = n;
	return 0;
fail:
	rep_node_free(n);
	return rc;
}

int rep_node_role(rep_node *n)
{
	int r;

	pthread_mutex_lock(&n->mu);
	r = n->role.state;
	pthread_mutex_unlock(&n->mu);
	return r;
}

bool rep_node_is_primary(rep_node *n)
{
	return rep_role_leads(rep_node_role(n));
}

const _Atomic int64_t *rep_node_write_deadline(rep_node *n)
{
	return &n->write_deadline_ns;
}

void rep_node_set_write_deadline(rep_node *n, int64_t deadline_ns)
{
	atomic_store(&n->write_deadline_ns, deadline_ns);
}

const char *rep_node_primary_desc(rep_node *n)
{
	return n->role.primary_desc ? n->role.primary_desc : "";
}

int rep_node_primary_url(rep_node *n, char *buf, size_t len)
{
	const char *url;
	int rc = 0;

	pthread_mutex_lock(&n->mu);
	url = rep_role_leads(n->role.state) ? n->o.lease.advertise_url
	      : n->role.state == REP_ROLE_REPLICA && n->role.primary_url
		      ? n->role.primary_url
		      : "";
	if (!url[0])
		rc = -ENOENT;
	else if ((size_t)snprintf(buf, len, "%s", url) >= len)
		rc = -ENAMETOOLONG;
	pthread_mutex_unlock(&n->mu);
	if (rc < 0 && len)
		buf[0] = '\0';
	return rc;
}

bool rep_node_caught_up(rep_node *n)
{
	bool ok;

	pthread_mutex_lock(&n->mu);
	ok = rep_role_leads(n->role.state) ||
	     (n->role.state == REP_ROLE_REPLICA && n->follow.connected &&
	      n->follow.ready);
	pthread_mutex_unlock(&n->mu);
	return ok;
}

const rep_node_opts *rep_node_options(rep_node *n)
{
	return &n->o;
}

uint64_t rep_node_epoch(rep_node *n)
{
	uint64_t e;

	pthread_mutex_lock(&n->mu);
	e = n->epoch;
	pthread_mutex_unlock(&n->mu);
	return e;
}

uint64_t rep_node_cluster(rep_node *n)
{
	uint64_t c;

	pthread_mutex_lock(&n->mu);
	c = n->cluster_id;
	pthread_mutex_unlock(&n->mu);
	return c;
}

/* Whether db has reached txid (mu held; fs locks after it). */
static bool reached_locked(rep_node *n, const char *db, uint64_t txid)
{
	fs_db *d = n->mount ? fs_mount_db(n->mount, db) : NULL;

	return d && fs_db_pos(d).txid >= txid;
}

int rep_node_wait_txid(rep_node *n, const char *db, uint64_t txid,
		       int64_t deadline_ns)
{
	int rc;

	atomic_fetch_add(&n->waiters, 1);
	pthread_mutex_lock(&n->mu);
	for (;;) {
		int64_t left = deadline_ns - lib_clock_monotonic_ns();
		struct timespec ts;
		if (n->role.state == REP_ROLE_STOPPED) {
			rc = -ESHUTDOWN;
			break;
		}
		if (reached_locked(n, db, txid)) {
			rc = 0;
			break;
		}
		if (left <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
		if (left > WAIT_POLL_MS * NS_PER_MS)
			left = WAIT_POLL_MS * NS_PER_MS;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)left;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&n->cond, &n->mu, &ts);
	}
	pthread_mutex_unlock(&n->mu);
	atomic_fetch_sub(&n->waiters, 1);
	return rc;
}

int rep_node_start(rep_node *n, fs_mount *m)
{
	int rc;

	n->mount = m;
	rep_commit_fix(n);
	if (n->tls && !n->tls_watching) {
		rc = rep_tls_watch_start(n->tls);
		if (rc < 0)
			return rc;
		n->tls_watching = true;
	}
	rc = rep_retention_start(n);
	if (rc < 0)
		return rc;
	rc = rep_server_start(n);
	if (rc < 0) {
		rep_retention_stop(n); /* the caller frees the mount next */
		return rc;
	}
	/* A static primary never follows anyone. */
	if (!n->lease->ops->fixed || !rep_node_is_primary(n)) {
		rc = pthread_create(&n->client, NULL, rep_client_main, n);
		if (rc != 0) {
			rep_server_stop(n);
			rep_retention_stop(n);
			return -rc;
		}
		n->client_started = true;
	}
	rc = n->lease->ops->start(n->lease);
	if (rc < 0) {
		rep_node_stop(n);
		return rc;
	}
	return 0;
}

void rep_node_stop(rep_node *n)
{
	if (!n)
		return;
	if (n->lease)
		rep_handoff_stop(n); /* a primary gives its lease back first */
	rep_role_stop(n);
	if (n->client_started) {
		pthread_join(n->client, NULL);
		n->client_started = false;
	}
	rep_server_stop(n);
	rep_retention_stop(n);
}

void rep_node_free(rep_node *n)
{
	if (!n)
		return;
	rep_node_stop(n);
	if (n->lease)
		n->lease->ops->free(n->lease);
	rep_tls_free(n->tls); /* the server stopped: no handshake left */
	rep_sync_free(n->sync);
	opts_free(&n->o);
	rep_role_free(&n->role);
	free(n->follow.remotes);
	pthread_mutex_destroy(&n->mu);
	pthread_mutex_destroy(&n->handoff_mu);
	pthread_mutex_destroy(&n->mhd_log.mu);
	pthread_cond_destroy(&n->cond);
	free(n);
}
