/*
 * The node: role, cluster ID, epoch, and the start and stop of the HTTP
 * server and stream client. Layout of the files it keeps:
 *
 *   <data.dir>/cluster.id   "%016x\n": the cluster this node belongs to,
 *                           created by the first primary, adopted by a
 *                           replica from the primary's HELLO
 *   <data.dir>/epoch        "%llu\n": the highest lease epoch seen
 *
 * Role state machine (static lease: set once at start):
 *
 *   (new) --candidate--> PRIMARY     accepts writes, serves /stream
 *   (new) --otherwise--> REPLICA     read-only mount, stream client runs
 *
 * etcd lease (lease_etcd.c moves it, any number of times):
 *
 *   (new) --> REPLICA (primary unknown) <--lease lost / deadline--+
 *               --lease acquired--> PRIMARY -----------------------+
 * The stream client thread runs all along; it idles while this node is
 * primary or the primary is unknown.
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
#include "retention.h"
#include "lease.h"

#define NS_PER_MS 1000000LL
/* How long a replica that became primary goes on applying the former
 * primary's stream (finish_stream_locked). */
#define FINISH_STREAM_MS 500

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
	for (size_t i = 0; i < n->nremotes; i++)
		if (strcmp(n->remotes[i].name, name) == 0)
			return &n->remotes[i];
	if (n->nremotes == n->capremotes) {
		size_t cap = n->capremotes ? n->capremotes * 2 : 8;
		rep_remote *p = realloc(n->remotes, cap * sizeof(*p));
		if (!p)
			return NULL;
		n->remotes = p;
		n->capremotes = cap;
	}
	memset(&n->remotes[n->nremotes], 0, sizeof(rep_remote));
	snprintf(n->remotes[n->nremotes].name, sizeof(n->remotes[0].name),
		 "%s", name);
	return &n->remotes[n->nremotes++];
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

/* A replica becoming primary (n->mu held): what the former primary sent
 * before it let the lease go (a handoff or a clean stop sends everything,
 * then closes the stream) is applied before this node takes writes, or
 * its replicas, ahead of it, would be overwritten by its snapshot. The
 * stream client goes on until the stream ends or FINISH_STREAM_MS pass
 * (a former primary that is stopped or cut off sends nothing more), and
 * takes nothing new after that (stream_apply.c, rep_cli_enter); records
 * it has received are applied first (rep_node.in_cb). */
static void finish_stream_locked(rep_node *n)
{
	int64_t t0 = lib_clock_monotonic_ns();
	bool waited = n->in_stream;

	while (n->in_stream &&
	       (lib_clock_monotonic_ns() < n->finish_until_ns || n->in_cb)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * NS_PER_MS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&n->cond, &n->mu, &ts);
	}
	if (waited)
		log_info("%s the former primary's stream before taking writes "
			 "(%" PRId64 " ms)",
			 n->in_stream ? "stopped reading" : "finished",
			 (int64_t)((lib_clock_monotonic_ns() - t0) / NS_PER_MS));
}

void rep_node_set_role(rep_node *n, int role, uint64_t epoch,
		       const char *primary_url)
{
	char *url = dup_or_empty(primary_url);
	char *desc = dup_or_empty(primary_url);

	pthread_mutex_lock(&n->mu);
	if (role == REP_ROLE_PRIMARY && n->role != REP_ROLE_PRIMARY) {
		/* Not primary (for /info, /promote, writes) until done. */
		n->finish_until_ns = lib_clock_monotonic_ns() +
				     FINISH_STREAM_MS * NS_PER_MS;
		n->promoting = true;
		n->role_gen++;
		pthread_cond_broadcast(&n->cond);
		finish_stream_locked(n);
		n->promoting = false;
	}
	n->role = role;
	if (epoch > n->epoch)
		n->epoch = epoch;
	free(n->primary_url);
	free(n->primary_desc);
	n->primary_url = url;
	n->primary_desc = desc;
	n->role_gen++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
	if (n->mount && role == REP_ROLE_PRIMARY)
		/* The daemon's own handles in its mount (a replica's WAL
		 * index and locks) would stand in the writers' way. */
		fs_mount_release_apply(n->mount);
	if (n->mount)
		fs_mount_set_role(n->mount, role != REP_ROLE_PRIMARY, desc);
	log_info("role: %s (epoch %" PRIu64 "%s%s)",
		 role == REP_ROLE_PRIMARY ? "primary" : "replica", n->epoch,
		 role == REP_ROLE_PRIMARY ? "" : ", primary ",
		 role == REP_ROLE_PRIMARY ? "" : url);
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
	pthread_cond_init(&n->cond, NULL);
	n->o = *opts;
	n->o.data_dir = strdup(opts->data_dir);
	n->o.mountpoint = strdup(opts->mountpoint);
	n->o.http_addr = dup_or_empty(opts->http_addr);
	n->o.token = dup_or_empty(opts->token);
	n->o.advertise_url = dup_or_empty(opts->advertise_url);
	n->o.primary_url = dup_or_empty(opts->primary_url);
	n->o.hostname = dup_or_empty(opts->hostname);
	n->advertise = dup_or_empty(opts->advertise_url);
	if (!n->o.data_dir || !n->o.mountpoint || !n->advertise) {
		rc = -ENOMEM;
		goto fail;
	}
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
	if (opts->etcd_nendpoints > 0) {
		rc = rep_lease_new(n, &n->lease);
		if (rc < 0)
			goto fail;
		rep_node_set_role(n, REP_ROLE_REPLICA, 0, "");
		*out = n;
		return 0;
	}
	if (!opts->candidate && !n->o.primary_url[0]) {
		log_error("lease.static: this node is not the primary "
			  "(lease.candidate is false) but lease.primary-url is "
			  "empty; set it to the primary's advertise URL");
		rc = -EINVAL;
		goto fail;
	}
	if (opts->candidate) {
		if (n->cluster_id == 0) {
			uint64_t id = 0;
			while (id == 0)
				if (getrandom(&id, sizeof(id), 0) !=
				    (ssize_t)sizeof(id))
					id = (uint64_t)lib_clock_wall_ms() *
					     2654435761u;
			rc = rep_node_set_cluster(n, id);
			if (rc < 0)
				goto fail;
		}
		if (n->epoch < 1)
			rep_node_see_epoch(n, 1);
		rep_node_set_role(n, REP_ROLE_PRIMARY, 1, "");
	} else {
		rep_node_set_role(n, REP_ROLE_REPLICA, 0, n->o.primary_url);
	}
	*out = n;
	return 0;
fail:
	rep_node_free(n);
	return rc;
}

bool rep_node_is_primary(rep_node *n)
{
	bool p;

	pthread_mutex_lock(&n->mu);
	p = n->role == REP_ROLE_PRIMARY;
	pthread_mutex_unlock(&n->mu);
	return p;
}

const _Atomic int64_t *rep_node_write_deadline(rep_node *n)
{
	return &n->write_deadline_ns;
}

const char *rep_node_primary_desc(rep_node *n)
{
	return n->primary_desc ? n->primary_desc : "";
}

void rep_node_on_commit(void *ctx, fs_db *db, ltx_pos pos)
{
	rep_node *n = ctx;

	rep_retention_on_commit(n, db);
	pthread_mutex_lock(&n->mu);
	n->gen++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
}

int rep_node_start(rep_node *n, fs_mount *m)
{
	int rc;

	n->mount = m;
	rc = rep_retention_start(n);
	if (rc < 0)
		return rc;
	rc = rep_server_start(n);
	if (rc < 0) {
		rep_retention_stop(n); /* the caller frees the mount next */
		return rc;
	}
	if (!rep_node_is_primary(n) || n->lease) {
		rc = pthread_create(&n->client, NULL, rep_client_main, n);
		if (rc != 0) {
			rep_server_stop(n);
			rep_retention_stop(n);
			return -rc;
		}
		n->client_started = true;
	}
	if (n->lease && (rc = rep_lease_start(n->lease)) < 0) {
		rep_node_stop(n);
		return rc;
	}
	return 0;
}

void rep_node_stop(rep_node *n)
{
	if (!n)
		return;
	rep_lease_stop(n->lease); /* a primary gives its lease back first */
	pthread_mutex_lock(&n->mu);
	n->stopping = true;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
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
	rep_lease_free(n->lease);
	free((char *)n->o.data_dir);
	free((char *)n->o.mountpoint);
	free((char *)n->o.http_addr);
	free((char *)n->o.token);
	free((char *)n->o.advertise_url);
	free((char *)n->o.primary_url);
	free((char *)n->o.hostname);
	free(n->advertise);
	free(n->primary_url);
	free(n->primary_desc);
	free(n->remotes);
	pthread_mutex_destroy(&n->mu);
	pthread_cond_destroy(&n->cond);
	free(n);
}
