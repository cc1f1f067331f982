/*
 * Fuzz target for replica/frame.c: the parser of the replication stream
 * (rep_parser_feed) and the payload readers of each frame kind
 * (rep_frame_read_*), which a replica runs on every byte a primary (or
 * anyone who has the token) sends it.
 *
 * Each input is
 *   byte 0     a seed for the sizes of the pieces the stream is fed in
 *   bytes 1..  the stream
 * The stream is parsed twice, whole and in pieces, and every frame is
 * read with its kind's payload reader. Beyond "no crash, no sanitizer
 * report", it aborts when an invariant breaks:
 *   - both parses give the same frames (type, epoch, length, payload) and
 *     stop at the same byte with the same error: how the bytes arrive
 *     never matters;
 *   - a frame's type is known and its length within its limit; the
 *     parser takes no more bytes than it is given;
 *   - an error says which rule (F1..F3) it is;
 *   - a payload the reader accepts is written back byte for byte by the
 *     payload writer (rep_put_*): nothing is skipped or read twice.
 * A valid input (fuzz_last_invalid, for the seed corpus) is a stream of
 * whole frames, at least one, each with a payload its reader accepts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "replica/frame.h"

#define MAX_FRAMES 1024

struct parsed {
	uint8_t type[MAX_FRAMES];
	uint64_t epoch[MAX_FRAMES];
	uint32_t len[MAX_FRAMES];
	uint64_t sum[MAX_FRAMES];     /* of the payload */
	size_t n;
	size_t stop;                  /* bytes taken when it ended */
	int rc;                       /* 0 or the parser's error */
	char err[160];
	bool partial;                 /* a frame was cut short at the end */
};

static bool last_valid;

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_frame: invariant broken: %s\n", what);
		abort();
	}
}

static uint64_t sum(const uint8_t *p, uint32_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (uint32_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

/* The payload written back by rep_put_* equals the one read: 0 when the
 * reader refused it, 1 when it took it. */
static int reread(const rep_frame *f)
{
	static uint8_t out[REP_FRAME_MAX_PAYLOAD];
	rep_writer w = {out, 0, sizeof(out), false};
	char name[REP_NAME_MAX + 1];
	uint64_t a, b, len;
	rep_heartbeat hb;
	rep_hello h;
	rep_begin bg;
	int rc;

	switch (f->type) {
	case REP_FRAME_HELLO:
		if (rep_frame_read_hello(f, &h) < 0)
			return 0;
		rep_put_u64(&w, h.cluster);
		rep_put_u64(&w, h.node);
		rep_put_str(&w, h.url);
		if (h.hops) {
			/* A cascading replica's HELLO (replica/frame.h). */
			rep_put_u8(&w, h.hops);
			rep_put_u64(&w, h.primary);
		}
		break;
	case REP_FRAME_BEGIN:
		if (rep_frame_read_begin(f, &bg) < 0)
			return 0;
		check(bg.len >= 100 && bg.min_txid >= 1 &&
		      bg.max_txid >= bg.min_txid && bg.kind <= 1 &&
		      bg.name[0] && bg.name[0] != '.' && !strchr(bg.name, '/'),
		      "BEGIN taken outside its limits");
		rep_put_str(&w, bg.name);
		rep_put_u64(&w, bg.len);
		rep_put_u64(&w, bg.min_txid);
		rep_put_u64(&w, bg.max_txid);
		rep_put_u8(&w, bg.kind);
		break;
	case REP_FRAME_END:
		if (rep_frame_read_end(f, &len) < 0)
			return 0;
		rep_put_u64(&w, len);
		break;
	case REP_FRAME_HEARTBEAT:
		if (rep_frame_read_heartbeat(f, &hb) < 0)
			return 0;
		rep_put_u64(&w, (uint64_t)hb.wall_ms);
		rep_put_u32(&w, hb.count);
		while ((rc = rep_frame_heartbeat_next(&hb, name, &a, &b)) == 1) {
			rep_put_str(&w, name);
			rep_put_u64(&w, a);
			rep_put_u64(&w, b);
		}
		if (rc < 0)
			return 0;
		break;
	case REP_FRAME_DATA:
		return f->len > 0;
	case REP_FRAME_READY:
		return f->len == 0;
	default:
		check(false, "a frame of an unknown type");
	}
	check(!w.full && w.len == f->len &&
	      memcmp(out, f->payload, f->len) == 0,
	      "a payload taken is not what it reads as");
	return 1;
}

/* Parses data[size] in pieces: of step bytes when step > 0, else of
 * sizes drawn from seed. */
static void parse(const uint8_t *data, size_t size, size_t step,
		  uint8_t seed, struct parsed *out, bool read_payloads,
		  bool *payloads_ok)
{
	static rep_parser ps;    /* its 1 MiB buffer made once */
	size_t off = 0, piece_end = 0;
	uint32_t x = seed * 2654435761u + 1;

	out->n = out->stop = 0;
	out->rc = 0;
	out->err[0] = '\0';
	out->partial = false;
	if (!ps.buf)
		check(rep_parser_init(&ps) == 0, "out of memory");
	ps.nhdr = 0;
	ps.need = ps.have = 0;
	while (off < size) {
		rep_frame f;
		size_t used = 0, n;
		int rc;
		if (off == piece_end) {
			if (step) {
				n = step;
			} else {
				x = x * 1103515245u + 12345u;
				n = 1 + (x >> 16) % 97;
			}
			piece_end = off + n > size ? size : off + n;
		}
		n = piece_end - off;
		rc = rep_parser_feed(&ps, data + off, n, &used, &f);
		check(used <= n, "the parser took more than it was given");
		off += used;
		if (rc < 0) {
			check(rc == -EPROTO, "an error other than -EPROTO");
			check(strstr(ps.err, "(rule F") != NULL,
			      "an error that names no rule");
			out->rc = rc;
			snprintf(out->err, sizeof(out->err), "%s", ps.err);
			break;
		}
		if (rc == 0) {
			check(used == n, "no frame, yet bytes left over");
			continue;
		}
		check(f.type >= REP_FRAME_HELLO && f.type <= REP_FRAME_READY,
		      "a frame of an unknown type");
		check(f.len <= REP_FRAME_MAX_PAYLOAD &&
		      (f.type != REP_FRAME_DATA || f.len <= REP_FRAME_DATA_MAX),
		      "a frame over its limit");
		if (out->n < MAX_FRAMES) {
			out->type[out->n] = f.type;
			out->epoch[out->n] = f.epoch;
			out->len[out->n] = f.len;
			out->sum[out->n] = sum(f.payload, f.len);
		}
		out->n++;
		if (read_payloads && !reread(&f))
			*payloads_ok = false;
	}
	out->stop = off;
	out->partial = out->rc == 0 && (ps.nhdr > 0 || ps.need > 0);
}

int fuzz_last_invalid(char *why, size_t len)
{
	if (last_valid)
		return 0;
	snprintf(why, len, "not a stream of whole, well-formed frames");
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct parsed whole, pieces;
	bool ok = true, unused = true;
	size_t n;

	last_valid = false;
	if (size < 1)
		return 0;
	parse(data + 1, size - 1, size - 1 ? size - 1 : 1, 0, &whole, true,
	      &ok);
	parse(data + 1, size - 1, 0, data[0], &pieces, false, &unused);
	check(whole.n == pieces.n && whole.stop == pieces.stop &&
	      whole.rc == pieces.rc && strcmp(whole.err, pieces.err) == 0 &&
	      whole.partial == pieces.partial,
	      "the same bytes parse differently in other pieces");
	n = whole.n < MAX_FRAMES ? whole.n : MAX_FRAMES;
	check(memcmp(whole.type, pieces.type, n) == 0 &&
	      memcmp(whole.epoch, pieces.epoch, n * sizeof(uint64_t)) == 0 &&
	      memcmp(whole.len, pieces.len, n * sizeof(uint32_t)) == 0 &&
	      memcmp(whole.sum, pieces.sum, n * sizeof(uint64_t)) == 0,
	      "frames differ when the bytes come in other pieces");
	last_valid = ok && whole.rc == 0 && !whole.partial && whole.n > 0;
	return 0;
}
