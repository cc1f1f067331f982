/*
 * The replica's scratch file: records received from the primary and not
 * applied yet (scratch.h). Layout, byte offsets in the file:
 *
 *   0 ......... queued records, oldest first ......... end
 *   end ....... the record being received (off = end, len from BEGIN)
 *
 * Each record is placed at `end`, just past every byte still needed, and
 * `end` moves past it at rep_scratch_end. Records that are done (applied)
 * keep their place until rep_scratch_settle drops them.
 *
 * Invariants:
 *   S1 no byte of a queued record, or of the record being received, is
 *      overwritten or truncated away before it is done or forgotten;
 *   S2 once nothing is queued, the file is reused from its start: the
 *      record being received moves to offset 0 first (a copy of what it
 *      has, at most REP_SCRATCH_MOVE_MAX bytes, never overlapping);
 *      larger, it stays and the next records follow it;
 *   S3 a file grown past keep (REP_SCRATCH_KEEP) is truncated once
 *      nothing is queued, to the end of what the record being received
 *      has, so big batches do not leave their pages to be written back.
 *
 * (Truncating to 0 while a record was half received broke S1: its first
 * bytes read back as zeros, "bad magic at byte 0".)
 */
#include "scratch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/io.h"
#include "lib/log.h"

#define MOVE_CHUNK (64u * 1024)

struct rep_scratch {
	int fd;
	uint64_t keep;           /* truncated past this */
	uint64_t size;           /* the file's size as written/truncated */
	uint64_t end;            /* where the next record goes */
	rep_scratch_rec *q;      /* queued records, oldest first */
	size_t nq, capq;
	uint64_t qbytes;         /* sum of their lengths */
	bool receiving;          /* a record at [off, off + len) */
	uint64_t off, len, got;
};

int rep_scratch_new(int fd, uint64_t keep, rep_scratch **out)
{
	rep_scratch *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->fd = fd;
	s->keep = keep;
	*out = s;
	return 0;
}

void rep_scratch_free(rep_scratch *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->q);
	free(s);
}

int rep_scratch_fd(const rep_scratch *s)
{
	return s->fd;
}

int rep_scratch_begin(rep_scratch *s, uint64_t len)
{
	if (s->receiving)
		return -EPROTO;
	s->receiving = true;
	s->off = s->end;
	s->len = len;
	s->got = 0;
	return 0;
}

int rep_scratch_write(rep_scratch *s, const void *p, size_t n)
{
	int rc;

	if (!s->receiving || n > s->len - s->got)
		return -EPROTO;
	rc = lib_io_pwrite_full(s->fd, p, n, (off_t)(s->off + s->got));
	if (rc < 0)
		return rc;
	s->got += n;
	if (s->off + s->got > s->size)
		s->size = s->off + s->got;
	return 0;
}

bool rep_scratch_receiving(const rep_scratch *s, uint64_t *len,
			   uint64_t *got)
{
	*len = s->receiving ? s->len : 0;
	*got = s->receiving ? s->got : 0;
	return s->receiving;
}

int rep_scratch_end(rep_scratch *s, fs_db *db, uint8_t kind, int64_t ts)
{
	if (!s->receiving || s->got != s->len)
		return -EPROTO;
	if (s->nq == s->capq) {
		size_t cap = s->capq ? s->capq * 2 : 64;
		rep_scratch_rec *q = realloc(s->q, cap * sizeof(*q));
		if (!q)
			return -ENOMEM;
		s->q = q;
		s->capq = cap;
	}
	s->q[s->nq++] = (rep_scratch_rec){db, s->off, s->len, ts, kind, false};
	s->qbytes += s->len;
	s->end = s->off + s->len;
	s->receiving = false;
	return 0;
}

size_t rep_scratch_count(const rep_scratch *s)
{
	return s->nq;
}

rep_scratch_rec *rep_scratch_rec_at(rep_scratch *s, size_t i)
{
	return &s->q[i];
}

uint64_t rep_scratch_queued_bytes(const rep_scratch *s)
{
	return s->qbytes;
}

/* Copies what the record being received has to offset 0 (S2). */
static int move_to_start(rep_scratch *s)
{
	uint8_t *buf;
	uint64_t done = 0;
	int rc = 0;

	if (s->got == 0) {
		s->off = 0;
		return 0;
	}
	buf = malloc(MOVE_CHUNK);
	if (!buf)
		return -ENOMEM;
	while (rc == 0 && done < s->got) {
		size_t n = s->got - done < MOVE_CHUNK ? (size_t)(s->got - done)
						      : MOVE_CHUNK;
		rc = lib_io_pread_full(s->fd, buf, n, (off_t)(s->off + done),
				       NULL);
		if (rc == 0)
			rc = lib_io_pwrite_full(s->fd, buf, n, (off_t)done);
		done += n;
	}
	free(buf);
	if (rc < 0) {
		log_error("scratch file: moving a record being received: %s",
			  strerror(-rc));
		return rc;
	}
	s->off = 0;
	return 0;
}

int rep_scratch_settle(rep_scratch *s)
{
	size_t k = 0;
	uint64_t keep;
	int rc;

	for (size_t i = 0; i < s->nq; i++) {
		if (s->q[i].done)
			s->qbytes -= s->q[i].len;
		else
			s->q[k++] = s->q[i];
	}
	s->nq = k;
	if (s->nq > 0)
		return 0;
	if (s->receiving && s->off > 0 && s->got <= REP_SCRATCH_MOVE_MAX &&
	    s->got <= s->off) {
		rc = move_to_start(s);
		if (rc < 0)
			return rc;
	}
	s->end = s->receiving ? s->off + s->len : 0;
	s->qbytes = 0;
	keep = s->receiving ? s->off + s->got : 0;
	if (s->size > s->keep && keep < s->size) {
		rc = lib_io_ftruncate(s->fd, (off_t)keep);
		if (rc < 0) {
			log_error("scratch file: truncating it to %llu bytes: "
				  "%s", (unsigned long long)keep,
				  strerror(-rc));
			return rc;
		}
		s->size = keep;
	}
	return 0;
}

void rep_scratch_clear(rep_scratch *s)
{
	s->nq = 0;
	s->qbytes = 0;
	s->receiving = false;
	s->end = 0;
	if (s->size > s->keep && lib_io_ftruncate(s->fd, 0) == 0)
		s->size = 0;
}

uint64_t rep_scratch_size(const rep_scratch *s)
{
	return s->size;
}
