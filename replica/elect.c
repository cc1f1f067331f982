/*
 * Failover with synchronous replication (docs/SYNC.md): before an etcd
 * candidate takes a free lease, the candidates compare what their LTX
 * logs hold, so that the one with every acknowledged commit wins.
 *
 * Rules:
 *   E1 a candidate publishes <prefix>/candidate/<node> = {"node": "<16
 *      hex>", "epoch": E, "dbs": {"NAME": "TXID/CHECKSUM", ...}} on an
 *      etcd lease of one TTL: E the highest epoch it has seen (that of
 *      the primary its records came from), each database's LTX log
 *      position (what a replica acknowledges: its log).
 *   E2 it waits REP_ELECT_WAIT_MS (at most half the TTL) for the others
 *      to publish, then reads every candidate's key.
 *   E3 D is ahead of C when D's epoch is higher, or the epochs are equal
 *      and D's TXID is at least C's for every database either names and
 *      higher for one. A candidate takes the lease only when no other is
 *      ahead of it; of candidates none of which is ahead of the other
 *      (equal, or each ahead on another database), the lowest node ID
 *      (incomparable positions are logged).
 *   E4 a handoff target does not compare (lease_etcd.c: the drain made it
 *      current); with min-replicas 0 nothing here runs.
 *
 * Why no acknowledged commit is lost when the primary and at most N-1 of
 * the replicas fail (N = min-replicas): a commit returned once N replicas
 * of its epoch had its record in their logs (sync.h, Y2); within an
 * epoch every replica's log is a prefix of the primary's, so a higher
 * TXID includes a lower one. One of those N survives and publishes; the
 * winner is at least as far as it (E3), so it holds the record, and it
 * finishes applying its log before it takes writes (role PROMOTING).
 * Candidates that are not reachable, or publish nothing within the wait,
 * do not take part; one that is ahead but never acquires (it died) is
 * compared again once its key has expired (one TTL).
 */
#include "elect.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/db.h"
#include "fs/log.h"
#include "fs/mount.h"
#include "lib/log.h"
#include "node_i.h"

struct cand {
	uint64_t node, epoch;
	json_t *dbs;             /* {"NAME": "TXID/CHECKSUM"} */
};

static void add_db(void *ctx, fs_db *db)
{
	json_t *dbs = ctx;
	char pos[LTX_POS_STRLEN + 1];

	if (!fs_db_log(db))
		return;
	ltx_pos_format(fs_log_get_tail(fs_db_log(db)).pos, pos);
	json_object_set_new(dbs, fs_db_name(db), json_string(pos));
}

/* E1: this node's value (malloc'd). */
static char *own_value(rep_node *n, uint64_t node)
{
	json_t *dbs = json_object(), *root;
	char id[17];
	char *s;

	if (!dbs)
		return NULL;
	snprintf(id, sizeof(id), "%016" PRIx64, node);
	fs_mount_foreach(n->mount, add_db, dbs);
	root = json_pack("{s:s, s:I, s:o}", "node", id, "epoch",
			 (json_int_t)rep_node_epoch(n), "dbs", dbs);
	s = root ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(root);
	return s;
}

static bool parse_cand(const rep_etcd_kv *kv, struct cand *c)
{
	json_t *j = json_loadb(kv->value, kv->len, 0, NULL);
	json_t *nd = json_object_get(j, "node"), *ep = json_object_get(j,
								       "epoch");
	char *end;
	bool ok;

	c->dbs = NULL;
	if (!json_is_string(nd) || !json_is_integer(ep) ||
	    !json_is_object(json_object_get(j, "dbs"))) {
		json_decref(j);
		return false;
	}
	c->node = strtoull(json_string_value(nd), &end, 16);
	ok = *end == '\0' && c->node != 0;
	c->epoch = (uint64_t)json_integer_value(ep);
	c->dbs = json_incref(json_object_get(j, "dbs"));
	json_decref(j); /* nd and ep were j's */
	return ok;
}

/* The TXID c names for db (0 when it names none or it is malformed). */
static uint64_t txid_of(const struct cand *c, const char *db)
{
	json_t *v = json_object_get(c->dbs, db);
	ltx_pos pos;

	if (!json_is_string(v) || ltx_pos_parse(json_string_value(v), &pos) < 0)
		return 0;
	return pos.txid;
}

/* E3: 1 when d is ahead of c, -1 when c is ahead of d, 0 when neither
 * (*incomparable: each ahead on another database). */
static int compare(const struct cand *d, const struct cand *c,
		   bool *incomparable)
{
	bool d_more = false, c_more = false;
	const char *name;
	json_t *v;

	*incomparable = false;
	if (d->epoch != c->epoch)
		return d->epoch > c->epoch ? 1 : -1;
	json_object_foreach(d->dbs, name, v) {
		uint64_t a = txid_of(d, name), b = txid_of(c, name);
		d_more |= a > b;
		c_more |= b > a;
	}
	json_object_foreach(c->dbs, name, v) {
		uint64_t a = txid_of(d, name), b = txid_of(c, name);
		d_more |= a > b;
		c_more |= b > a;
	}
	(void)v;
	if (d_more && c_more) {
		*incomparable = true;
		return 0;
	}
	return d_more ? 1 : c_more ? -1 : 0;
}

/* E3 over every candidate read: whether me wins. */
static bool wins(const struct cand *me, const struct cand *all, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		bool inc;
		int r;
		if (all[i].node == me->node)
			continue;
		r = compare(&all[i], me, &inc);
		if (inc)
			log_warn("sync: candidate %016" PRIx64 " and this node "
				 "%016" PRIx64 " are each ahead on another "
				 "database; the lower node ID takes the lease",
				 all[i].node, me->node);
		if (r > 0 || (r == 0 && all[i].node < me->node)) {
			log_info("sync: candidate %016" PRIx64 " is %s; not "
				 "taking the lease", all[i].node,
				 r > 0 ? "further ahead" : "as far, with a "
							   "lower node ID");
			return false;
		}
	}
	return true;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

bool rep_elect_may_acquire(rep_node *n, rep_etcd *e, const char *prefix,
			   uint64_t node, int64_t ttl_s)
{
	char key[1100], dir[1024];
	rep_etcd_kv *kvs = NULL;
	struct cand me = {0}, *all = NULL;
	size_t nkv = 0, nall = 0;
	int64_t lease = 0, ttl = 0, wait_ms;
	char *val = own_value(n, node);
	bool ok = false;

	snprintf(dir, sizeof(dir), "%s/candidate/", prefix);
	snprintf(key, sizeof(key), "%s%016" PRIx64, dir, node);
	if (!val || rep_etcd_grant(e, ttl_s, 2000, &lease, &ttl) < 0 ||
	    rep_etcd_put(e, key, val, lease, 2000) < 0)
		goto out;
	wait_ms = ttl_s * 1000 / 2 < REP_ELECT_WAIT_MS ? ttl_s * 1000 / 2
						       : REP_ELECT_WAIT_MS;
	sleep_ms(wait_ms); /* E2 */
	if (rep_etcd_range(e, dir, 2000, &kvs, &nkv) < 0)
		goto out;
	all = calloc(nkv ? nkv : 1, sizeof(*all));
	if (!all)
		goto out;
	for (size_t i = 0; i < nkv; i++)
		if (parse_cand(&kvs[i], &all[nall]))
			nall++;
	me.node = node;
	{
		rep_etcd_kv mine = {.value = val, .len = strlen(val)};
		if (!parse_cand(&mine, &me))
			goto out;
	}
	ok = wins(&me, all, nall);
	if (ok)
		log_info("sync: %zu candidate(s) compared; this node is the "
			 "furthest: taking the lease", nall);
out:
	for (size_t i = 0; i < nall; i++)
		json_decref(all[i].dbs);
	free(all);
	for (size_t i = 0; i < nkv; i++)
		rep_etcd_kv_clear(&kvs[i]);
	free(kvs);
	json_decref(me.dbs);
	/* A loser's key stays, for the others' comparison, until its TTL. */
	if (lease && ok)
		rep_etcd_revoke(e, lease, 2000);
	free(val);
	return ok;
}
