/*
 * Readiness (GET /readyz, ltxfs_ready, and what `exec` waits for before
 * it starts the application): whether this node can serve an
 * application now, and if not, why, in one line.
 *
 *   primary (PRIMARY)   ready once the mount serves
 *   DRAINING, STOPPED   not ready: stopping
 *   PROMOTING           not ready: becoming the primary
 *   replica             ready when all of:
 *     - a primary is known;
 *     - it has caught up with the primary once (READY received and
 *       applied) since the node started;
 *     - it has heard from the primary (any frame; heartbeats come every
 *       second) within http.ready-max-lag;
 *     - no database is behind the primary for longer than that
 *       (lag_ms of /info).
 * So a replica that loses its primary stays ready for ready-max-lag (a
 * restart of the primary does not take every replica out of service),
 * and one that joins or falls behind is not ready until it has caught
 * up.
 *
 * A cascaded replica (cascade.h) has the same rules with its upstream in
 * the primary's place for "caught up" and "heard from"; the positions
 * it lags behind are still the primary's, which its upstream relays in
 * heartbeats. So it is ready when it has caught up with its upstream and
 * neither it nor its upstream is more than ready-max-lag behind the
 * primary.
 */
#include "node_i.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/clock.h"

static int64_t max_lag_ms(const rep_node *n)
{
	return n->o.http.ready_max_lag_ms > 0 ? n->o.http.ready_max_lag_ms
					      : REP_READY_MAX_LAG_MS;
}

/* The database furthest behind (mu held): its name and lag, in ms and
 * in transactions; false when none is behind. */
static bool furthest_behind_locked(rep_node *n, int64_t now, char *name,
				   size_t len, int64_t *ms, uint64_t *txids)
{
	bool any = false;

	*ms = 0;
	*txids = 0;
	for (size_t i = 0; i < n->follow.nremotes; i++) {
		const rep_remote *r = &n->follow.remotes[i];
		fs_db *db = n->mount ? fs_mount_db(n->mount, r->name) : NULL;
		uint64_t local = db ? fs_db_pos(db).txid : 0;
		int64_t behind;
		if (r->pos.txid <= local)
			continue;
		behind = r->behind_since_ms ? now - r->behind_since_ms : 0;
		if (!any || behind > *ms ||
		    (behind == *ms && r->pos.txid - local > *txids)) {
			*ms = behind;
			*txids = r->pos.txid - local;
			snprintf(name, len, "%s", r->name);
		}
		any = true;
	}
	return any;
}

static bool replica_ready_locked(rep_node *n, char *why, size_t len)
{
	int64_t now = lib_clock_wall_ms(), limit = max_lag_ms(n), ms;
	char name[REP_NAME_MAX + 1] = "";
	uint64_t txids;
	bool behind;
	const char *who = "primary", *url = n->role.primary_url;

	if (!n->role.primary_url || !n->role.primary_url[0]) {
		snprintf(why, len, "no primary known");
		return false;
	}
	behind = furthest_behind_locked(n, now, name, sizeof(name), &ms,
					&txids);
	if (!n->cascade.to_primary && n->cascade.url[0])
		who = "upstream", url = n->cascade.url;
	if (!n->follow.caught_up_once) {
		if (!n->follow.connected)
			snprintf(why, len, "catching up: not connected to the "
				 "%s %s", who, url);
		else if (behind)
			snprintf(why, len, "catching up with the primary: "
				 "db=%s %" PRIu64 " transaction%s behind", name,
				 txids, txids == 1 ? "" : "s");
		else
			snprintf(why, len, "catching up with the primary");
		return false;
	}
	if (now - n->follow.last_frame_ms > limit) {
		snprintf(why, len, "no word from the %s %s for %.1f s "
			 "(http.ready-max-lag %.1f s)", who, url,
			 (double)(now - n->follow.last_frame_ms) / 1000.0,
			 (double)limit / 1000.0);
		return false;
	}
	if (behind && ms > limit) {
		snprintf(why, len, "db=%s is %.1f s (%" PRIu64
			 " transaction%s) behind the primary "
			 "(http.ready-max-lag %.1f s)", name,
			 (double)ms / 1000.0, txids, txids == 1 ? "" : "s",
			 (double)limit / 1000.0);
		return false;
	}
	return true;
}

bool rep_node_ready(rep_node *n, char *why, size_t len)
{
	bool ok = false;

	if (len)
		why[0] = '\0';
	pthread_mutex_lock(&n->mu);
	if (!n->mount)
		snprintf(why, len, "not serving: the mount is not ready");
	else if (n->role.state == REP_ROLE_PRIMARY)
		ok = true;
	else if (n->role.state == REP_ROLE_PROMOTING)
		snprintf(why, len, "becoming the primary");
	else if (n->role.state == REP_ROLE_REPLICA)
		ok = replica_ready_locked(n, why, len);
	else
		snprintf(why, len, "stopping");
	pthread_mutex_unlock(&n->mu);
	return ok;
}

int64_t rep_node_lag_ms(rep_node *n, const char *db)
{
	int64_t now = lib_clock_wall_ms(), ms = 0;
	fs_db *d = n->mount ? fs_mount_db(n->mount, db) : NULL;
	uint64_t local = d ? fs_db_pos(d).txid : 0;

	pthread_mutex_lock(&n->mu);
	if (n->role.state == REP_ROLE_REPLICA) {
		rep_remote *r = NULL;
		for (size_t i = 0; i < n->follow.nremotes; i++)
			if (strcmp(n->follow.remotes[i].name, db) == 0)
				r = &n->follow.remotes[i];
		if (r && r->pos.txid > local && r->behind_since_ms)
			ms = now - r->behind_since_ms;
	}
	pthread_mutex_unlock(&n->mu);
	return ms;
}
