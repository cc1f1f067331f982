/*
 * Internals of the replica's stream client, shared by stream_cli.c (the
 * thread, the connection, libcurl), stream_frames.c (what each frame
 * does) and stream_apply.c (applying the records queued). The overview
 * is at the top of stream_cli.c.
 *
 * The client runs on one thread: nothing in struct rep_cli is shared,
 * except through rep_node (its mu guards what it says).
 */
#ifndef REPLICA_STREAM_CLI_I_H
#define REPLICA_STREAM_CLI_I_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ack_cli.h"
#include "fs/db_apply.h"
#include "http_client.h"
#include "ltx/decoder.h"
#include "node_i.h"
#include "scratch.h"

#define ERRBODY_MAX 512
#define BATCH_MAX FS_APPLY_RUN_MAX     /* records per fs_db_apply_batch */
#define FLUSH_RECORDS BATCH_MAX        /* apply once this many wait */
#define FLUSH_BYTES (16u << 20)        /* ... or this many bytes */
/* Kept while applies wait for local readers; past either, the stream
 * waits for them too. */
#define QUEUE_RECORDS 4096
#define QUEUE_BYTES (64u << 20)
#define RETRY_MS 2               /* a waiting apply is tried this often */
#define WAIT_MAX 64              /* waiting databases remembered */
#define NS_PER_MS 1000000LL

struct rep_cli {
	rep_node *n;
	rep_parser parser;
	CURLM *multi;
	long status;
	rep_http_body errbody;   /* a refusal's reason (ERRBODY_MAX kept) */
	char why[400];           /* why the stream ended, when we ended it */
	bool refused;            /* 401/409: back off longer */
	bool got_ready;          /* READY arrived on this stream */
	bool told_ready;         /* ... and rep_follow.ready is set: nothing
				  * was queued any more */
	bool failed;             /* an apply failed: none until reconnected */
	bool moving;             /* ended to move to another upstream (C6) */
	uint64_t role_gen;       /* rep_role_sm.gen when connecting: a
				  * role or primary change ends the stream */
	uint64_t hello_epoch;    /* the epoch this stream's HELLO carried */
	/* Synchronous replication (ack_cli.h): the primary asked for
	 * acknowledgements (REP_HDR_SYNC) on this stream from url. */
	bool sync;
	char url[REP_URL_MAX + 1];
	rep_ack_cli *ack;
	/* The record being received (its bytes: sc). */
	bool in_record;
	bool skip;               /* ... of a database that cannot be opened
				  * here (out of service): read, dropped */
	char skipped[REP_NAME_MAX + 1]; /* the last one said in the log */
	uint64_t skip_len, skip_got; /* the skipped record's bytes */
	char name[REP_NAME_MAX + 1];
	fs_db *db;
	int64_t ts;              /* its LTX timestamp (ms), 0 unknown */
	uint8_t kind;
	rep_scratch *sc;         /* records received, not applied; NULL
				  * until the first record */
	uint64_t scratch_keep;   /* REP_SCRATCH_KEEP, or for tests
				  * $LTXFS_TEST_SCRATCH_KEEP */
	ltx_decoder *dec;        /* reused by every apply */
	/* Databases whose apply waits for local readers: tried again once
	 * retry_ns (CLOCK_MONOTONIC) has come. */
	fs_db *waiting[WAIT_MAX];
	size_t nwaiting;
	int64_t retry_ns;
};

/* stream_cli.c: why the stream ends (c->why), for the log. */
void rep_cli_why(struct rep_cli *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* stream_frames.c: handles one frame; 0, or <0 with c->why set (the
 * stream ends). */
int rep_cli_on_frame(struct rep_cli *c, const rep_frame *f);

/* stream_apply.c */
/* Records received completely and not applied (done or not). */
size_t rep_cli_queued(const struct rep_cli *c);
/* Whether a record of db is queued and not applied yet. */
bool rep_cli_has_queued(const struct rep_cli *c, const fs_db *db);
/* Whether this node, becoming primary, may still finish the stream (f:
 * a frame of it, or NULL); n->mu held. */
bool rep_cli_finishing_locked(const struct rep_cli *c, const rep_frame *f);
/* Around the handling of received data: rep_follow.in_cb is set from
 * rep_cli_enter (false: nothing may be applied any more; new_data: bytes
 * libcurl hands over) until rep_cli_leave finds nothing queued. */
bool rep_cli_enter(struct rep_cli *c, bool new_data);
void rep_cli_leave(struct rep_cli *c);
/* Applies what is queued (wait: for local readers too); 0, or <0 with
 * c->why set. */
int rep_cli_apply(struct rep_cli *c, bool wait);
/* rep_follow.ready once READY came and nothing is queued. */
void rep_cli_tell_ready(struct rep_cli *c);
/* Tries a waiting apply again when it is due (outside libcurl's
 * callbacks); 0, or <0 with c->why set. */
int rep_cli_retry(struct rep_cli *c);
/* The stream ended: applies what it brought completely, when allowed. */
void rep_cli_finish(struct rep_cli *c);
/* Forgets every record received and not applied. */
void rep_cli_drop(struct rep_cli *c);

#endif
