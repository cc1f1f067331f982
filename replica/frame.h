/*
 * Frames of the replication stream (docs/PROTOCOL.md, "GET /stream").
 *
 * Every frame, big-endian:
 *   off size field
 *     0    1 type (enum rep_frame_type)
 *     1    1 flags, zero
 *     2    2 reserved, zero
 *     4    4 payload length L (<= REP_FRAME_MAX_PAYLOAD)
 *     8    8 epoch of the primary that sent it
 *    16    L payload
 *
 * Payloads:
 *   HELLO      u64 cluster ID, u64 sender's node ID, u16 n, n bytes of
 *              the sender's advertise URL; then, only from a replica
 *              that serves the stream (cascade.h): u8 hops (1: it follows
 *              the primary directly), u64 the primary's node ID
 *   BEGIN      u16 n, n bytes of database name, u64 record length,
 *              u64 min TXID, u64 max TXID, u8 kind (0 log record,
 *              1 snapshot sent instead of records)
 *   DATA       the next bytes of the record (<= REP_FRAME_DATA_MAX)
 *   END        u64 record length again (a check)
 *   HEARTBEAT  i64 primary wall clock (ms), u32 count, then per database:
 *              u16 n, n bytes of name, u64 TXID, u64 checksum
 *   READY      empty: every database has been brought up to date once
 *
 * Rules: F1 known type; F2 flags and reserved zero; F3 length within the
 * limit (the parser's errors); F4 payload well-formed for its type (the
 * payload readers' rep_frame_read_*: every field present, names 1..200
 * bytes without '/' and not starting with '.', a URL below 1024 bytes,
 * a BEGIN's record at least an LTX header long with 1 <= min TXID <= max
 * TXID and kind 0 or 1, a HELLO's hops 1 when present, counts that fit
 * the payload, nothing left over).
 */
#ifndef REPLICA_FRAME_H
#define REPLICA_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REP_FRAME_HEADER_SIZE 16
#define REP_FRAME_MAX_PAYLOAD (1u << 20)
#define REP_FRAME_DATA_MAX (256u * 1024)
#define REP_NAME_MAX 200
#define REP_URL_MAX 1023

enum rep_frame_type {
	REP_FRAME_HELLO = 1,
	REP_FRAME_BEGIN = 2,
	REP_FRAME_DATA = 3,
	REP_FRAME_END = 4,
	REP_FRAME_HEARTBEAT = 5,
	REP_FRAME_READY = 6,
};

typedef struct rep_frame {
	uint8_t type;
	uint64_t epoch;
	const uint8_t *payload;
	uint32_t len;
} rep_frame;

/* Writes a frame header for a payload of len bytes into out (16 bytes). */
void rep_frame_put_header(uint8_t *out, uint8_t type, uint32_t len,
			  uint64_t epoch);

/* Incremental parser: bytes in, whole frames out (bounded memory). */
typedef struct rep_parser {
	uint8_t hdr[REP_FRAME_HEADER_SIZE];
	size_t nhdr;
	uint8_t *buf;           /* payload, REP_FRAME_MAX_PAYLOAD bytes */
	uint32_t need, have;
	uint8_t type;
	uint64_t epoch;
	char err[160];
} rep_parser;

int rep_parser_init(rep_parser *p);
void rep_parser_free(rep_parser *p);
/* Consumes up to n bytes of data; returns 1 with a frame in *out when one
 * is complete (*used says how many bytes were taken), 0 when all n were
 * taken and no frame is complete, -EPROTO (message in p->err) when the
 * bytes break a rule. */
int rep_parser_feed(rep_parser *p, const uint8_t *data, size_t n,
		    size_t *used, rep_frame *out);

/* Payload readers: a cursor over a frame's payload. */
typedef struct rep_cursor {
	const uint8_t *p;
	size_t left;
	bool bad;
} rep_cursor;

uint8_t rep_get_u8(rep_cursor *c);
uint16_t rep_get_u16(rep_cursor *c);
uint32_t rep_get_u32(rep_cursor *c);
uint64_t rep_get_u64(rep_cursor *c);
/* A length-prefixed string (u16) copied NUL-terminated into buf (cap
 * bytes); marks the cursor bad when it does not fit or holds a NUL. */
void rep_get_str(rep_cursor *c, char *buf, size_t cap);

/* The payloads, read whole: 0, or -EPROTO when rule F4 is broken. */
typedef struct rep_hello {
	uint64_t cluster, node;
	char url[REP_URL_MAX + 1];
	uint8_t hops;            /* 0: the sender is the primary */
	uint64_t primary;        /* the primary's node ID (node when 0 hops) */
} rep_hello;

typedef struct rep_begin {
	char name[REP_NAME_MAX + 1];
	uint64_t len, min_txid, max_txid;
	uint8_t kind;            /* 0 log record, 1 snapshot */
} rep_begin;

/* A HEARTBEAT: the clock and the count, then each database in turn. */
typedef struct rep_heartbeat {
	int64_t wall_ms;
	uint32_t count, seen;
	rep_cursor k;
} rep_heartbeat;

int rep_frame_read_hello(const rep_frame *f, rep_hello *out);
int rep_frame_read_begin(const rep_frame *f, rep_begin *out);
int rep_frame_read_end(const rep_frame *f, uint64_t *len /* out */);
int rep_frame_read_heartbeat(const rep_frame *f, rep_heartbeat *out);
/* 1 with the next database's name (REP_NAME_MAX + 1 bytes) and position,
 * 0 after the last one (and nothing left over), -EPROTO. */
int rep_frame_heartbeat_next(rep_heartbeat *h, char *name,
			     uint64_t *txid /* out */,
			     uint64_t *checksum /* out */);

/* Payload writer into a caller's buffer. */
typedef struct rep_writer {
	uint8_t *p;
	size_t len, cap;
	bool full;
} rep_writer;

void rep_put_u8(rep_writer *w, uint8_t v);
void rep_put_u16(rep_writer *w, uint16_t v);
void rep_put_u32(rep_writer *w, uint32_t v);
void rep_put_u64(rep_writer *w, uint64_t v);
void rep_put_str(rep_writer *w, const char *s);

#endif
