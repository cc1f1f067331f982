/*
 * Synchronous replication, the primary's side: acknowledgements counted,
 * commits waiting for them. Rules Y1-Y4 in sync.h; docs/SYNC.md.
 *
 * Locks: rep_sync.mu is a leaf (taken after rep_node.mu, never before
 * it): a waiter lets it go to look at the node's role.
 */
#include "sync.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/db.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "node_i.h"
#include "server_i.h"

#define SLICE_NS (10 * 1000000LL) /* a waiter looks at the role this often */
#define RECENT_NS (3 * 1000000000LL) /* "connected": acked this recently */

struct ack {
	char db[REP_NAME_MAX + 1];
	ltx_pos pos;
};

struct peer {
	uint64_t node, epoch;
	int64_t at_ns;           /* last ack, CLOCK_MONOTONIC */
	struct ack *acks;
	size_t n, cap;
};

struct rep_sync {
	rep_sync_opts o;
	rep_node *node;
	pthread_mutex_t mu;      /* guards everything below */
	pthread_cond_t cond;     /* CLOCK_MONOTONIC; broadcast on ack */
	struct peer peers[REP_SYNC_PEERS_MAX];
	size_t npeers;
	int waiting;
	bool degraded;
	int64_t degraded_since_ns;
	uint64_t degraded_ns;    /* ended episodes */
	uint64_t acked, failed_timeout, failed_lease, degraded_commits;
	uint64_t wait_bucket[REP_LAT_BUCKETS + 1];
	uint64_t wait_count;
	double wait_sum_s;
};

int rep_sync_new(const rep_sync_opts *o, rep_node *n, rep_sync **out)
{
	rep_sync *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->node = n;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = s;
	return 0;
}

void rep_sync_free(rep_sync *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->npeers; i++)
		free(s->peers[i].acks);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

bool rep_sync_on(const rep_sync *s)
{
	return s && s->o.min_replicas > 0;
}

/* mu held: the peer node, added when absent (NULL: no room). */
static struct peer *peer_get(rep_sync *s, uint64_t node)
{
	for (size_t i = 0; i < s->npeers; i++)
		if (s->peers[i].node == node)
			return &s->peers[i];
	if (s->npeers == REP_SYNC_PEERS_MAX)
		return NULL;
	s->peers[s->npeers] = (struct peer){.node = node};
	return &s->peers[s->npeers++];
}

/* mu held: the peer's ack entry for db, added when absent. */
static struct ack *ack_get(struct peer *p, const char *db)
{
	struct ack *a;

	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->acks[i].db, db) == 0)
			return &p->acks[i];
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4;
		a = realloc(p->acks, cap * sizeof(*a));
		if (!a)
			return NULL;
		p->acks = a;
		p->cap = cap;
	}
	a = &p->acks[p->n++];
	memset(a, 0, sizeof(*a));
	snprintf(a->db, sizeof(a->db), "%s", db);
	return a;
}

int rep_sync_ack(rep_sync *s, uint64_t node, uint64_t epoch,
		 const char *db, ltx_pos pos)
{
	struct peer *p;
	struct ack *a;
	int rc = 0;

	if (!rep_node_is_primary(s->node) ||
	    epoch != rep_node_epoch(s->node))
		return -ESTALE; /* Y1 */
	pthread_mutex_lock(&s->mu);
	p = peer_get(s, node);
	if (!p) {
		rc = -ENOSPC;
		goto out;
	}
	if (p->epoch != epoch) {
		p->n = 0; /* a new epoch: what it acked before is void */
		p->epoch = epoch;
	}
	p->at_ns = lib_clock_monotonic_ns();
	a = ack_get(p, db);
	if (!a) {
		rc = -ENOMEM;
		goto out;
	}
	a->pos = pos;
	pthread_cond_broadcast(&s->cond); /* Y4 */
out:
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void rep_sync_kick(rep_sync *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

/* mu held: replicas of epoch whose ack for db covers pos (Y2); with
 * any_sum, the TXID is enough. */
static int count_acked(rep_sync *s, uint64_t epoch, const char *db,
		       ltx_pos pos, bool any_sum)
{
	int n = 0;

	for (size_t i = 0; i < s->npeers; i++) {
		const struct peer *p = &s->peers[i];
		if (p->epoch != epoch)
			continue;
		for (size_t j = 0; j < p->n; j++) {
			const struct ack *a = &p->acks[j];
			if (strcmp(a->db, db) != 0)
				continue;
			if (a->pos.txid > pos.txid ||
			    (a->pos.txid == pos.txid &&
			     (any_sum || a->pos.checksum == pos.checksum)))
				n++;
			break;
		}
	}
	return n;
}

/* Whether this node may still confirm a commit (Y3). */
static bool still_leads(rep_node *n, uint64_t epoch)
{
	int64_t wd = atomic_load(rep_node_write_deadline(n));

	if (wd && lib_clock_boottime_ns() >= wd)
		return false;
	return rep_node_is_primary(n) && rep_node_epoch(n) == epoch;
}

static void observe(rep_sync *s, int64_t ns)
{
	double ms = (double)ns / 1e6;
	size_t i = 0;

	while (i < REP_LAT_BUCKETS && ms > rep_lat_bounds_ms[i])
		i++;
	s->wait_bucket[i]++;
	s->wait_count++;
	s->wait_sum_s += ms / 1000.0;
}

/* mu held, degraded: whether the replicas have caught up (Y3). */
static bool resume_locked(rep_sync *s, uint64_t epoch, const char *db,
			  ltx_pos pos)
{
	ltx_pos before = {pos.txid ? pos.txid - 1 : 0, 0};
	int64_t now = lib_clock_monotonic_ns();

	if (count_acked(s, epoch, db, before, true) < s->o.min_replicas)
		return false;
	s->degraded = false;
	s->degraded_ns += (uint64_t)(now - s->degraded_since_ns);
	log_info("sync: resumed: %d replica(s) acknowledge %s again; commits "
		 "wait for them", s->o.min_replicas, db);
	return true;
}

static int wait_locked(rep_sync *s, uint64_t epoch, const char *db,
		       ltx_pos pos, int64_t t0)
{
	int64_t deadline = t0 + s->o.timeout_ms * 1000000LL;

	for (;;) {
		int64_t now, until;
		struct timespec ts;
		if (count_acked(s, epoch, db, pos, false) >= s->o.min_replicas)
			return 0;
		pthread_mutex_unlock(&s->mu);
		bool leads = still_leads(s->node, epoch);
		pthread_mutex_lock(&s->mu);
		if (!leads)
			return -EROFS;
		now = lib_clock_monotonic_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		until = now + SLICE_NS < deadline ? now + SLICE_NS : deadline;
		ts.tv_sec = until / 1000000000LL;
		ts.tv_nsec = until % 1000000000LL;
		pthread_cond_timedwait(&s->cond, &s->mu, &ts);
	}
}

int rep_node_sync_wait(void *ctx, fs_db *db, ltx_pos pos)
{
	rep_node *n = ctx;
	rep_sync *s = n->sync;
	const char *name = fs_db_name(db);
	int64_t t0 = lib_clock_monotonic_ns();
	uint64_t epoch = rep_node_epoch(n);
	int rc;

	if (!rep_sync_on(s))
		return 0;
	if (!still_leads(n, epoch))
		return -EROFS;
	rep_stream_on_commit(n, db, pos); /* the streams send the record */
	rc = fs_db_sync_log_due(db);     /* meanwhile, our own log */
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&s->mu);
	if (s->degraded && !resume_locked(s, epoch, name, pos)) {
		s->degraded_commits++;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	s->waiting++;
	rc = wait_locked(s, epoch, name, pos, t0);
	s->waiting--;
	observe(s, lib_clock_monotonic_ns() - t0);
	if (rc == 0) {
		s->acked++;
	} else if (rc == -EROFS) {
		s->failed_lease++;
	} else if (s->o.degrade) {
		log_warn("sync: degraded: fewer than %d replica(s) acknowledged "
			 "%s TXID %016" PRIx64 " within %" PRId64 " ms; commits "
			 "are asynchronous until they catch up", s->o.min_replicas,
			 name, pos.txid, s->o.timeout_ms);
		s->degraded = true;
		s->degraded_since_ns = lib_clock_monotonic_ns();
		s->degraded_commits++;
		rc = 0;
	} else {
		s->failed_timeout++;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* mu held: replicas of epoch that acked within RECENT_NS. */
static int recent_locked(rep_sync *s, uint64_t epoch)
{
	int64_t now = lib_clock_monotonic_ns();
	int n = 0;

	for (size_t i = 0; i < s->npeers; i++)
		if (s->peers[i].epoch == epoch &&
		    now - s->peers[i].at_ns < RECENT_NS)
			n++;
	return n;
}

void rep_sync_metrics(rep_sync *s, FILE *f)
{
	uint64_t epoch = rep_node_epoch(s->node), cum = 0, dns;
	int64_t now = lib_clock_monotonic_ns();

	pthread_mutex_lock(&s->mu);
	dns = s->degraded_ns + (s->degraded ? (uint64_t)(now -
					s->degraded_since_ns) : 0);
	fprintf(f, "# TYPE ltxfs_sync_min_replicas gauge\n"
		   "ltxfs_sync_min_replicas %d\n"
		   "# TYPE ltxfs_sync_replicas_connected gauge\n"
		   "ltxfs_sync_replicas_connected %d\n"
		   "# TYPE ltxfs_sync_waiting_commits gauge\n"
		   "ltxfs_sync_waiting_commits %d\n"
		   "# TYPE ltxfs_sync_degraded gauge\n"
		   "ltxfs_sync_degraded %d\n"
		   "# TYPE ltxfs_sync_degraded_seconds_total counter\n"
		   "ltxfs_sync_degraded_seconds_total %.3f\n"
		   "# TYPE ltxfs_sync_commits_total counter\n"
		   "ltxfs_sync_commits_total{result=\"acknowledged\"} %" PRIu64
		   "\n"
		   "ltxfs_sync_commits_total{result=\"timeout\"} %" PRIu64 "\n"
		   "ltxfs_sync_commits_total{result=\"lease\"} %" PRIu64 "\n"
		   "ltxfs_sync_commits_total{result=\"degraded\"} %" PRIu64 "\n"
		   "# TYPE ltxfs_sync_commit_wait_seconds histogram\n",
		s->o.min_replicas, recent_locked(s, epoch), s->waiting,
		s->degraded ? 1 : 0, (double)dns / 1e9, s->acked,
		s->failed_timeout, s->failed_lease, s->degraded_commits);
	for (size_t i = 0; i <= REP_LAT_BUCKETS; i++) {
		cum += s->wait_bucket[i];
		if (i < REP_LAT_BUCKETS)
			fprintf(f, "ltxfs_sync_commit_wait_seconds_bucket{le="
				   "\"%g\"} %" PRIu64 "\n",
				rep_lat_bounds_ms[i] / 1000.0, cum);
		else
			fprintf(f, "ltxfs_sync_commit_wait_seconds_bucket{le="
				   "\"+Inf\"} %" PRIu64 "\n", cum);
	}
	fprintf(f, "ltxfs_sync_commit_wait_seconds_sum %.6f\n"
		   "ltxfs_sync_commit_wait_seconds_count %" PRIu64 "\n",
		s->wait_sum_s, s->wait_count);
	pthread_mutex_unlock(&s->mu);
}

char *rep_sync_info(rep_sync *s)
{
	uint64_t epoch = rep_node_epoch(s->node);
	char *out = NULL;
	int rc;

	pthread_mutex_lock(&s->mu);
	rc = asprintf(&out, "{\"min_replicas\":%d,\"timeout_ms\":%" PRId64
		      ",\"on_timeout\":\"%s\",\"replicas_connected\":%d,"
		      "\"degraded\":%s,\"waiting\":%d}", s->o.min_replicas,
		      s->o.timeout_ms, s->o.degrade ? "degrade" : "fail",
		      recent_locked(s, epoch), s->degraded ? "true" : "false",
		      s->waiting);
	pthread_mutex_unlock(&s->mu);
	return rc < 0 ? NULL : out;
}

/* --- POST /ack --------------------------------------------------------- */

struct ack_args {
	rep_sync *s;
	uint64_t node, epoch;
	int rc;
	unsigned bad;            /* malformed pos arguments */
};

/* One pos=NAME/TXID/CHECKSUM argument (NAME has no '/'). */
static enum MHD_Result one_pos(void *cls, enum MHD_ValueKind kind,
			       const char *key, const char *value)
{
	struct ack_args *a = cls;
	char name[REP_NAME_MAX + 1];
	const char *slash;
	ltx_pos pos;
	int rc;

	(void)kind;
	if (strcmp(key, "pos") != 0 || !value || a->rc < 0)
		return MHD_YES;
	slash = strchr(value, '/');
	if (!slash || (size_t)(slash - value) > REP_NAME_MAX ||
	    ltx_pos_parse(slash + 1, &pos) < 0) {
		a->bad++;
		return MHD_YES;
	}
	memcpy(name, value, (size_t)(slash - value));
	name[slash - value] = '\0';
	if (!rep_valid_db_name(name)) {
		a->bad++;
		return MHD_YES;
	}
	rc = rep_sync_ack(a->s, a->node, a->epoch, name, pos);
	if (rc < 0)
		a->rc = rc;
	return MHD_YES;
}

enum MHD_Result rep_sync_ack_handler(rep_node *n, struct MHD_Connection *c,
				     rep_req *q)
{
	const char *node = rep_arg(c, "node"), *epoch = rep_arg(c, "epoch");
	struct ack_args a = {n->sync, 0, 0, 0, 0};
	char *end;

	(void)q;
	if (!rep_sync_on(n->sync))
		return rep_reply_err(c, MHD_HTTP_CONFLICT, "this node does not "
				     "replicate synchronously");
	errno = 0;
	a.node = node ? strtoull(node, &end, 16) : 0;
	if (!node || strlen(node) != 16 || errno || *end || a.node == 0)
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "node must be a "
				     "node ID, 16 hex digits");
	a.epoch = epoch ? strtoull(epoch, &end, 10) : 0;
	if (!epoch || !*epoch || errno || *end || a.epoch == 0)
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "epoch must be a "
				     "decimal number above 0");
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, one_pos, &a);
	if (a.bad)
		return rep_reply_err(c, MHD_HTTP_BAD_REQUEST, "pos must be "
				     "NAME/TXID/CHECKSUM (16 hex digits "
				     "each)");
	if (a.rc == -ESTALE)
		return rep_reply_err(c, MHD_HTTP_CONFLICT, "not the primary "
				     "of that epoch");
	if (a.rc < 0)
		return rep_reply_err(c, MHD_HTTP_SERVICE_UNAVAILABLE,
				     "cannot keep more acknowledgements");
	return rep_reply_text(c, MHD_HTTP_NO_CONTENT, "text/plain", "");
}
