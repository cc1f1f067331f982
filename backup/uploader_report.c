/* The uploader's part of /metrics and /info (docs/BACKUP.md, "Metrics
 * and /info"), read under the uploader's lock. */
#include "uploader_i.h"

#include <inttypes.h>
#include <stdio.h>

#include <jansson.h>

#include "lib/clock.h"

static double lag_txids(const struct db_state *s, int64_t now)
{
	(void)now;
	return s->node_txid > s->txid ? (double)(s->node_txid - s->txid) : 0;
}

static double lag_seconds(const struct db_state *s, int64_t now)
{
	return s->pending_ms && now > s->pending_ms ?
	       (double)(now - s->pending_ms) / 1000.0 : 0.0;
}

#define FIELD(f)                                                          \
	static double get_##f(const struct db_state *s, int64_t now)      \
	{                                                                 \
		(void)now;                                                \
		return (double)s->f;                                      \
	}
FIELD(txid)
FIELD(bytes)
FIELD(objects)
FIELD(snapshots)
FIELD(deleted)
FIELD(compactions)
FIELD(compacted_bytes)
FIELD(errors)
#undef FIELD

/* The per-database metrics, in the order /metrics shows them. */
static const struct per_db {
	const char *name, *type, *help;
	double (*get)(const struct db_state *s, int64_t now_ms);
} per_db[] = {
	{"ltxfs_backup_txid", "gauge",
	 "The TXID the backup store holds up to.", get_txid},
	{"ltxfs_backup_lag_txids", "gauge",
	 "Transactions committed but not yet in the backup store.",
	 lag_txids},
	{"ltxfs_backup_lag_seconds", "gauge",
	 "How long the oldest transaction not yet in the backup store has "
	 "been committed (0: none).", lag_seconds},
	{"ltxfs_backup_bytes_total", "counter",
	 "Bytes uploaded to the backup store.", get_bytes},
	{"ltxfs_backup_objects_total", "counter",
	 "Objects uploaded to the backup store.", get_objects},
	{"ltxfs_backup_snapshots_total", "counter",
	 "Scheduled snapshots uploaded (backup.snapshot-interval).",
	 get_snapshots},
	{"ltxfs_backup_deleted_total", "counter",
	 "Objects deleted from the backup store by retention "
	 "(backup.retention).", get_deleted},
	{"ltxfs_backup_compactions_total", "counter",
	 "L1 objects put by compaction.", get_compactions},
	{"ltxfs_backup_compacted_bytes_total", "counter",
	 "Bytes of L1 objects put by compaction.", get_compacted_bytes},
	{"ltxfs_backup_errors_total", "counter",
	 "Failed backup uploads, listings, retention passes and "
	 "compactions.", get_errors},
};

void bk_uploader_metrics(void *ctx, FILE *f)
{
	bk_uploader *u = ctx;
	int64_t now = lib_clock_wall_ms();

	pthread_mutex_lock(&u->mu);
	fprintf(f, "# HELP ltxfs_backup_up Whether the last backup upload "
		"worked (1) or the store fails (0).\n"
		"# TYPE ltxfs_backup_up gauge\nltxfs_backup_up %d\n",
		u->failing ? 0 : 1);
	for (size_t m = 0; m < sizeof(per_db) / sizeof(per_db[0]); m++) {
		const struct per_db *p = &per_db[m];
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", p->name, p->help,
			p->name, p->type);
		for (size_t i = 0; i < u->ndbs; i++)
			fprintf(f, "%s{db=\"%s\"} %.15g\n", p->name,
				u->dbs[i].name, p->get(&u->dbs[i], now));
	}
	pthread_mutex_unlock(&u->mu);
}

char *bk_uploader_info(void *ctx)
{
	bk_uploader *u = ctx;
	json_t *o = json_object(), *dbs = json_object();
	char *text, hex[17];

	pthread_mutex_lock(&u->mu);
	json_object_set_new(o, "store", json_string(bk_store_desc(u->store)));
	json_object_set_new(o, "state", json_string(u->failing ? "failing" :
						     "ok"));
	if (u->failing)
		json_object_set_new(o, "error", json_string(u->last_err));
	json_object_set_new(o, "errors", json_integer((json_int_t)
							u->errors_total));
	for (size_t i = 0; i < u->ndbs; i++) {
		const struct db_state *s = &u->dbs[i];
		char snap[17];
		snprintf(hex, sizeof(hex), "%016" PRIx64, s->txid);
		snprintf(snap, sizeof(snap), "%016" PRIx64, s->snap_txid);
		json_object_set_new(dbs, s->name, json_pack(
			"{s:s,s:I,s:s,s:I}", "txid", hex, "lag_txids",
			(json_int_t)(s->node_txid > s->txid ?
				     s->node_txid - s->txid : 0),
			"snapshot_txid", snap, "snapshot_ms",
			(json_int_t)s->snap_ms));
	}
	pthread_mutex_unlock(&u->mu);
	json_object_set_new(o, "dbs", dbs);
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}
