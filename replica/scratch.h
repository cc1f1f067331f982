/*
 * The replica's scratch file (replica/scratch.c): the records received
 * from the primary and not applied yet, in one unlinked temporary file
 * that the stream thread keeps for its life (stream_cli.c). One thread
 * owns a rep_scratch; nothing here is thread-safe.
 */
#ifndef REPLICA_SCRATCH_H
#define REPLICA_SCRATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs/db.h"

/* Past this size the file is truncated once nothing is queued (the
 * default of rep_scratch_new's keep). */
#define REP_SCRATCH_KEEP (4u << 20)
/* A record being received when the queue empties moves to the file's
 * start when it has no more than this many bytes yet. */
#define REP_SCRATCH_MOVE_MAX (1u << 20)

/* A complete record, queued in arrival order. */
typedef struct rep_scratch_rec {
	fs_db *db;               /* its database (never dereferenced here) */
	uint64_t off, len;       /* its bytes in the file */
	int64_t ts;              /* its LTX timestamp (ms), 0 unknown */
	uint8_t kind;            /* BEGIN's kind: 0 record, 1 snapshot */
	bool done;               /* applied: removed by rep_scratch_settle */
} rep_scratch_rec;

typedef struct rep_scratch rep_scratch;

/* Takes fd (an empty read-write file; closed by rep_scratch_free); the
 * file is truncated once nothing is queued when it is past keep bytes. */
int rep_scratch_new(int fd, uint64_t keep, rep_scratch **out);
void rep_scratch_free(rep_scratch *s);
int rep_scratch_fd(const rep_scratch *s);

/* A record of len bytes starts; it goes after every byte still needed.
 * -EPROTO while another is being received. */
int rep_scratch_begin(rep_scratch *s, uint64_t len);
/* The next n bytes of the record being received; -EPROTO past its
 * length or outside a record. */
int rep_scratch_write(rep_scratch *s, const void *p, size_t n);
/* Whether a record is being received; its length and bytes so far. */
bool rep_scratch_receiving(const rep_scratch *s, uint64_t *len,
			   uint64_t *got);
/* The record being received is complete: queued. -EPROTO when not all
 * of its bytes came. */
int rep_scratch_end(rep_scratch *s, fs_db *db, uint8_t kind, int64_t ts);

/* The queue: records i < count, oldest first (mark them done once
 * applied). */
size_t rep_scratch_count(const rep_scratch *s);
rep_scratch_rec *rep_scratch_rec_at(rep_scratch *s, size_t i);
/* Bytes of the queued records. */
uint64_t rep_scratch_queued_bytes(const rep_scratch *s);

/* Drops the records marked done. Once none is queued the file is reused
 * from its start: the record being received, if any, is moved there
 * (unless it is past REP_SCRATCH_MOVE_MAX already or would overlap
 * itself), and a file grown past keep is truncated to what that record
 * has. A failed move or truncation returns <0 and loses no
 * byte still needed. */
int rep_scratch_settle(rep_scratch *s);
/* Forgets every record, queued or being received (the stream ended). */
void rep_scratch_clear(rep_scratch *s);

/* The file's size as this module left it (tests). */
uint64_t rep_scratch_size(const rep_scratch *s);

#endif
