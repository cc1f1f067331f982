/*
 * Writes the seed corpus of the frame fuzz target (fuzz_frame.c): short
 * streams of whole, well-formed frames of every kind, as a primary sends
 * them, each file a seed byte for the piece sizes and then the stream.
 * Run once and commit the output; it is deterministic.
 *
 *   fuzz_gen_frame_corpus tests/fuzz/corpus/frame
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replica/frame.h"

#define EPOCH 3

struct out {
	uint8_t buf[8192];
	size_t len;
};

static void frame(struct out *o, uint8_t type, const rep_writer *w)
{
	rep_frame_put_header(o->buf + o->len, type, (uint32_t)w->len, EPOCH);
	memcpy(o->buf + o->len + REP_FRAME_HEADER_SIZE, w->p, w->len);
	o->len += REP_FRAME_HEADER_SIZE + w->len;
}

#define W(name) \
	uint8_t name##_b[2048]; \
	rep_writer name = {name##_b, 0, sizeof(name##_b), false}

static void hello(struct out *o)
{
	W(w);
	rep_put_u64(&w, 0x1c2d3e4f5a6b7c8dULL);
	rep_put_u64(&w, 0x0123456789abcdefULL);
	rep_put_str(&w, "http://node0:20202");
	frame(o, REP_FRAME_HELLO, &w);
}

static void ready(struct out *o)
{
	W(w);
	frame(o, REP_FRAME_READY, &w);
}

static void record(struct out *o, const char *db, uint64_t lo, uint64_t hi,
		   uint8_t kind, size_t len)
{
	W(w);
	rep_put_str(&w, db);
	rep_put_u64(&w, len);
	rep_put_u64(&w, lo);
	rep_put_u64(&w, hi);
	rep_put_u8(&w, kind);
	frame(o, REP_FRAME_BEGIN, &w);
	for (size_t done = 0; done < len;) {
		size_t n = len - done > 700 ? 700 : len - done;
		W(d);
		for (size_t i = 0; i < n; i++)
			rep_put_u8(&d, (uint8_t)(done + i));
		frame(o, REP_FRAME_DATA, &d);
		done += n;
	}
	{
		W(e);
		rep_put_u64(&e, len);
		frame(o, REP_FRAME_END, &e);
	}
}

static void heartbeat(struct out *o, unsigned ndbs)
{
	W(w);
	rep_put_u64(&w, 1700000000000ULL);
	rep_put_u32(&w, ndbs);
	for (unsigned i = 0; i < ndbs; i++) {
		char name[32];
		snprintf(name, sizeof(name), "db%u.db", i);
		rep_put_str(&w, name);
		rep_put_u64(&w, i + 1);
		rep_put_u64(&w, 0x9e3779b97f4a7c15ULL * (i + 1));
	}
	frame(o, REP_FRAME_HEARTBEAT, &w);
}

static int save(const char *dir, const char *name, uint8_t seed,
		const struct out *o)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(&seed, 1, 1, f) != 1 ||
	    fwrite(o->buf, 1, o->len, f) != o->len || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct out o;
	int bad = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	o.len = 0;
	hello(&o);
	ready(&o);
	bad |= save(argv[1], "hello-ready", 1, &o);

	o.len = 0;
	hello(&o);
	record(&o, "app.db", 5, 5, 0, 1500);
	record(&o, "app.db", 6, 7, 0, 120);
	ready(&o);
	heartbeat(&o, 1);
	bad |= save(argv[1], "records", 7, &o);

	o.len = 0;
	hello(&o);
	record(&o, "big.db", 1, 42, 1, 2000);
	bad |= save(argv[1], "snapshot", 42, &o);

	o.len = 0;
	heartbeat(&o, 0);
	heartbeat(&o, 5);
	bad |= save(argv[1], "heartbeats", 200, &o);
	return bad;
}
