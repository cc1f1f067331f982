/* The uploader's part of /metrics and /info (docs/BACKUP.md, "Metrics
 * and /info"), read under the uploader's lock. */
#include "uploader_i.h"

#include <inttypes.h>
#include <stdio.h>

#include <jansson.h>

#include "lib/clock.h"

void bk_uploader_metrics(void *ctx, FILE *f)
{
	bk_uploader *u = ctx;

	pthread_mutex_lock(&u->mu);
	fprintf(f, "# HELP ltxfs_backup_up Whether the last backup upload "
		"worked (1) or the store fails (0).\n"
		"# TYPE ltxfs_backup_up gauge\nltxfs_backup_up %d\n",
		u->failing ? 0 : 1);
	fprintf(f, "# HELP ltxfs_backup_txid The TXID the backup store holds "
		"up to.\n# TYPE ltxfs_backup_txid gauge\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_txid{db=\"%s\"} %" PRIu64 "\n",
			u->dbs[i].name, u->dbs[i].txid);
	fprintf(f, "# HELP ltxfs_backup_lag_txids Transactions committed "
		"but not yet in the backup store.\n"
		"# TYPE ltxfs_backup_lag_txids gauge\n");
	for (size_t i = 0; i < u->ndbs; i++) {
		const struct db_state *s = &u->dbs[i];
		fprintf(f, "ltxfs_backup_lag_txids{db=\"%s\"} %" PRIu64 "\n",
			s->name, s->node_txid > s->txid ?
			s->node_txid - s->txid : 0);
	}
	fprintf(f, "# HELP ltxfs_backup_lag_seconds How long the oldest "
		"transaction not yet in the backup store has been committed "
		"(0: none).\n# TYPE ltxfs_backup_lag_seconds gauge\n");
	for (size_t i = 0; i < u->ndbs; i++) {
		const struct db_state *s = &u->dbs[i];
		int64_t now = lib_clock_wall_ms();
		fprintf(f, "ltxfs_backup_lag_seconds{db=\"%s\"} %.3f\n",
			s->name, s->pending_ms && now > s->pending_ms ?
			(double)(now - s->pending_ms) / 1000.0 : 0.0);
	}
	fprintf(f, "# HELP ltxfs_backup_bytes_total Bytes uploaded to the "
		"backup store.\n# TYPE ltxfs_backup_bytes_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_bytes_total{db=\"%s\"} %" PRIu64 "\n",
			u->dbs[i].name, u->dbs[i].bytes);
	fprintf(f, "# HELP ltxfs_backup_objects_total Objects uploaded to "
		"the backup store.\n"
		"# TYPE ltxfs_backup_objects_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_objects_total{db=\"%s\"} %" PRIu64
			"\n", u->dbs[i].name, u->dbs[i].objects);
	fprintf(f, "# HELP ltxfs_backup_snapshots_total Scheduled snapshots "
		"uploaded (backup.snapshot-interval).\n"
		"# TYPE ltxfs_backup_snapshots_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_snapshots_total{db=\"%s\"} %" PRIu64
			"\n", u->dbs[i].name, u->dbs[i].snapshots);
	fprintf(f, "# HELP ltxfs_backup_deleted_total Objects deleted from "
		"the backup store by retention (backup.retention).\n"
		"# TYPE ltxfs_backup_deleted_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_deleted_total{db=\"%s\"} %" PRIu64
			"\n", u->dbs[i].name, u->dbs[i].deleted);
	fprintf(f, "# HELP ltxfs_backup_compactions_total L1 objects put by "
		"compaction.\n"
		"# TYPE ltxfs_backup_compactions_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_compactions_total{db=\"%s\"} %" PRIu64
			"\n", u->dbs[i].name, u->dbs[i].compactions);
	fprintf(f, "# HELP ltxfs_backup_compacted_bytes_total Bytes of L1 "
		"objects put by compaction.\n"
		"# TYPE ltxfs_backup_compacted_bytes_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_compacted_bytes_total{db=\"%s\"} %"
			PRIu64 "\n", u->dbs[i].name,
			u->dbs[i].compacted_bytes);
	fprintf(f, "# HELP ltxfs_backup_errors_total Failed backup "
		"uploads, listings and retention passes.\n"
		"# TYPE ltxfs_backup_errors_total counter\n");
	for (size_t i = 0; i < u->ndbs; i++)
		fprintf(f, "ltxfs_backup_errors_total{db=\"%s\"} %" PRIu64
			"\n", u->dbs[i].name, u->dbs[i].errors);
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
