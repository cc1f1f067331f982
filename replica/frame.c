/* Replication stream frames: layout and rules in frame.h. */
#include "frame.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bytes.h"
#include "ltx/ltx.h"

void rep_frame_put_header(uint8_t *out, uint8_t type, uint32_t len,
			  uint64_t epoch)
{
	out[0] = type;
	out[1] = 0;
	put_be16(out + 2, 0);
	put_be32(out + 4, len);
	put_be64(out + 8, epoch);
}

int rep_parser_init(rep_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->buf = malloc(REP_FRAME_MAX_PAYLOAD);
	return p->buf ? 0 : -ENOMEM;
}

void rep_parser_free(rep_parser *p)
{
	free(p->buf);
	p->buf = NULL;
}

static int check_header(rep_parser *p)
{
	const uint8_t *h = p->hdr;
	uint32_t len = get_be32(h + 4);

	if (h[0] < REP_FRAME_HELLO || h[0] > REP_FRAME_READY) {
		snprintf(p->err, sizeof(p->err), "frame type %u is unknown "
			 "(rule F1)", h[0]);
		return -EPROTO;
	}
	if (h[1] != 0 || get_be16(h + 2) != 0) {
		snprintf(p->err, sizeof(p->err), "frame flags/reserved are "
			 "%02x/%04x, expected zero (rule F2)", h[1],
			 get_be16(h + 2));
		return -EPROTO;
	}
	if (len > REP_FRAME_MAX_PAYLOAD ||
	    (h[0] == REP_FRAME_DATA && len > REP_FRAME_DATA_MAX)) {
		snprintf(p->err, sizeof(p->err), "frame of type %u has a "
			 "payload of %u bytes, over the limit (rule F3)", h[0],
			 len);
		return -EPROTO;
	}
	p->type = h[0];
	p->need = len;
	p->have = 0;
	p->epoch = get_be64(h + 8);
	return 0;
}

int rep_parser_feed(rep_parser *p, const uint8_t *data, size_t n,
		    size_t *used, rep_frame *out)
{
	size_t i = 0;
	int rc;

	while (i < n || (p->nhdr == REP_FRAME_HEADER_SIZE &&
			 p->have == p->need)) {
		if (p->nhdr < REP_FRAME_HEADER_SIZE) {
			size_t take = REP_FRAME_HEADER_SIZE - p->nhdr;
			if (take > n - i)
				take = n - i;
			memcpy(p->hdr + p->nhdr, data + i, take);
			p->nhdr += take;
			i += take;
			if (p->nhdr < REP_FRAME_HEADER_SIZE)
				break;
			rc = check_header(p);
			if (rc < 0) {
				*used = i;
				return rc;
			}
		}
		if (p->have < p->need) {
			size_t take = p->need - p->have;
			if (take > n - i)
				take = n - i;
			memcpy(p->buf + p->have, data + i, take);
			p->have += (uint32_t)take;
			i += take;
		}
		if (p->have == p->need) {
			out->type = p->type;
			out->epoch = p->epoch;
			out->payload = p->buf;
			out->len = p->need;
			p->nhdr = 0;
			p->need = p->have = 0;
			*used = i;
			return 1;
		}
	}
	*used = i;
	return 0;
}

static const uint8_t *take(rep_cursor *c, size_t n)
{
	const uint8_t *p = c->p;

	if (c->bad || c->left < n) {
		c->bad = true;
		return NULL;
	}
	c->p += n;
	c->left -= n;
	return p;
}

uint8_t rep_get_u8(rep_cursor *c)
{
	const uint8_t *p = take(c, 1);

	return p ? p[0] : 0;
}

uint16_t rep_get_u16(rep_cursor *c)
{
	const uint8_t *p = take(c, 2);

	return p ? get_be16(p) : 0;
}

uint32_t rep_get_u32(rep_cursor *c)
{
	const uint8_t *p = take(c, 4);

	return p ? get_be32(p) : 0;
}

uint64_t rep_get_u64(rep_cursor *c)
{
	const uint8_t *p = take(c, 8);

	return p ? get_be64(p) : 0;
}

void rep_get_str(rep_cursor *c, char *buf, size_t cap)
{
	uint16_t n = rep_get_u16(c);
	const uint8_t *p;

	buf[0] = '\0';
	if (c->bad)
		return;
	if ((size_t)n + 1 > cap) {
		c->bad = true;
		return;
	}
	p = take(c, n);
	if (!p)
		return;
	if (memchr(p, '\0', n)) {
		c->bad = true;
		return;
	}
	memcpy(buf, p, n);
	buf[n] = '\0';
}

/* Whether the cursor is good and used up: the end of a payload. */
static bool whole(const rep_cursor *k)
{
	return !k->bad && k->left == 0;
}

int rep_frame_read_hello(const rep_frame *f, rep_hello *out)
{
	rep_cursor k = {f->payload, f->len, false};

	out->cluster = rep_get_u64(&k);
	out->node = rep_get_u64(&k);
	rep_get_str(&k, out->url, sizeof(out->url));
	out->hops = 0;
	out->primary = out->node;
	if (!k.bad && k.left > 0) {
		/* A replica that serves the stream (cascade.h). */
		out->hops = rep_get_u8(&k);
		out->primary = rep_get_u64(&k);
		if (out->hops != 1)
			return -EPROTO;
	}
	return whole(&k) ? 0 : -EPROTO;
}

static bool valid_name(const char *s)
{
	return s[0] && s[0] != '.' && !strchr(s, '/');
}

int rep_frame_read_begin(const rep_frame *f, rep_begin *out)
{
	rep_cursor k = {f->payload, f->len, false};

	rep_get_str(&k, out->name, sizeof(out->name));
	out->len = rep_get_u64(&k);
	out->min_txid = rep_get_u64(&k);
	out->max_txid = rep_get_u64(&k);
	out->kind = rep_get_u8(&k);
	if (!whole(&k) || !valid_name(out->name) ||
	    out->len < LTX_HEADER_SIZE || out->min_txid == 0 ||
	    out->max_txid < out->min_txid || out->kind > 1)
		return -EPROTO;
	return 0;
}

int rep_frame_read_end(const rep_frame *f, uint64_t *len)
{
	rep_cursor k = {f->payload, f->len, false};

	*len = rep_get_u64(&k);
	return whole(&k) ? 0 : -EPROTO;
}

int rep_frame_read_heartbeat(const rep_frame *f, rep_heartbeat *out)
{
	out->k = (rep_cursor){f->payload, f->len, false};
	out->wall_ms = (int64_t)rep_get_u64(&out->k);
	out->count = rep_get_u32(&out->k);
	out->seen = 0;
	return out->k.bad ? -EPROTO : 0;
}

int rep_frame_heartbeat_next(rep_heartbeat *h, char *name, uint64_t *txid,
			     uint64_t *checksum)
{
	if (h->seen == h->count)
		return whole(&h->k) ? 0 : -EPROTO;
	rep_get_str(&h->k, name, REP_NAME_MAX + 1);
	*txid = rep_get_u64(&h->k);
	*checksum = rep_get_u64(&h->k);
	if (h->k.bad)
		return -EPROTO;
	h->seen++;
	return 1;
}

static uint8_t *room(rep_writer *w, size_t n)
{
	uint8_t *p;

	if (w->full || w->cap - w->len < n) {
		w->full = true;
		return NULL;
	}
	p = w->p + w->len;
	w->len += n;
	return p;
}

void rep_put_u8(rep_writer *w, uint8_t v)
{
	uint8_t *p = room(w, 1);

	if (p)
		p[0] = v;
}

void rep_put_u16(rep_writer *w, uint16_t v)
{
	uint8_t *p = room(w, 2);

	if (p)
		put_be16(p, v);
}

void rep_put_u32(rep_writer *w, uint32_t v)
{
	uint8_t *p = room(w, 4);

	if (p)
		put_be32(p, v);
}

void rep_put_u64(rep_writer *w, uint64_t v)
{
	uint8_t *p = room(w, 8);

	if (p)
		put_be64(p, v);
}

void rep_put_str(rep_writer *w, const char *s)
{
	size_t n = strlen(s);
	uint8_t *p;

	if (n > UINT16_MAX) {
		w->full = true;
		return;
	}
	rep_put_u16(w, (uint16_t)n);
	p = room(w, n);
	if (p)
		memcpy(p, s, n);
}
