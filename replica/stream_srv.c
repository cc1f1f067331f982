/*
 * The primary's side of GET /stream: one response per replica, produced
 * by libmicrohttpd's content reader in the connection's own thread
 * (thread-per-connection), so it may block waiting for commits.
 *
 * Per-replica state machine:
 *
 *   HELLO --> SCAN --(a database is behind)--> RECORD --(END sent)--> SCAN
 *               |  \--(none behind, first time)--> READY frame --> SCAN
 *               \--(none behind)--> wait for a commit or 1 s
 *                                     --(timeout)--> HEARTBEAT --> SCAN
 *
 * SCAN compares, database by database, the replica's position (from the
 * request, then advanced by every record sent) with the database's:
 *   equal                          nothing to send;
 *   replica behind, and its position is a record of our log with the same
 *   post-apply checksum (or, that record pruned by retention, the next
 *   one's pre-apply checksum)      the next log record (raw bytes);
 *   replica at 0 and the log starts at TXID 1: the first record;
 *   otherwise (too far behind for retention, ahead, or diverged: same
 *   TXID, other checksum; or a record it needs is corrupt in an older
 *   segment of our log)            a snapshot, with a log line naming
 *                                  both positions when it is a divergence.
 * A record is sent as BEGIN, DATA frames of up to 256 KiB read from the
 * log segment (or the snapshot's temporary file), and END: memory stays
 * bounded whatever the record's size.
 *
 * A replica serves /stream too, as an intermediate of a cascade (rules
 * C1-C3 in cascade.h): the same frames from its own LTX log, stamped with
 * the epoch it has seen, its HELLO extended with hops and the primary's
 * node ID, its heartbeats relaying the primary's positions it knows.
 *
 * Each call of the content reader fills libmicrohttpd's buffer with as
 * many frames as are ready (it waits for a commit only when it has
 * nothing to hand over), so records committed while the previous ones
 * were being sent leave in one write.
 */
#include "node_i.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/log.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"

#define MAX_SUB_DBS 4096
/* A commit that comes less than this after the previous wake-up for one
 * is sent at that wake-up + BATCH_WINDOW_NS, with whatever else was
 * committed meanwhile: at most one wake-up (and one write, one apply
 * cycle on the replica) per window while commits come faster; no delay
 * when they come slower. */
#define BATCH_WINDOW_NS (1000 * 1000)
/* Why a snapshot replaces records an iterator found corrupt (fs/log.h). */
#define DAMAGED "a record it needs is damaged in this primary's LTX log " \
	"(logged above)"

struct sub_db {
	char name[REP_NAME_MAX + 1];
	ltx_pos pos;             /* what the replica has */
	fs_log_iter *it;         /* positioned after pos.txid, or NULL */
};

struct sub {
	rep_node *n;
	uint64_t node;           /* the replica's node ID */
	char peer[64];
	struct sub_db *dbs;
	size_t ndbs, capdbs;
	/* Output not yet handed to libmicrohttpd. */
	uint8_t *out;
	size_t out_len, out_pos;
	bool hello_sent, ready_sent;
	/* The record being sent. */
	bool in_record;
	struct sub_db *cur;
	int fd;
	bool own_fd;             /* a snapshot's temporary file */
	uint64_t off, left, len;
	ltx_pos next;            /* the replica's position after it */
	int flip_at;             /* byte of this record to corrupt, or -1 */
	uint64_t gen;            /* commit generation last scanned */
	uint64_t epoch;
	bool drained;            /* counted in rep_node.drain */
	size_t rr_next;          /* SCAN starts at this slot (round robin) */
	bool post_known;         /* next.checksum read from the record */
	int err;                 /* an error to report on the next call */
	int64_t woke_ns;         /* last wake-up for a commit (monotonic) */
	bool relay;              /* served by a replica (cascade.h) */
	uint64_t role_gen;       /* ... under this rep_role_sm.gen */
	rep_follower *fol;       /* in rep_cascade.followers */
};

void rep_stream_on_commit(void *ctx, fs_db *db, ltx_pos pos)
{
	rep_node *n = ctx;

	(void)db;
	(void)pos;
	pthread_mutex_lock(&n->mu);
	n->gen++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
}

static struct sub_db *sub_db_get(struct sub *s, const char *name)
{
	for (size_t i = 0; i < s->ndbs; i++)
		if (strcmp(s->dbs[i].name, name) == 0)
			return &s->dbs[i];
	if (s->ndbs >= MAX_SUB_DBS)
		return NULL;
	if (s->ndbs == s->capdbs) {
		size_t cap = s->capdbs ? s->capdbs * 2 : 16;
		struct sub_db *p = realloc(s->dbs, cap * sizeof(*p));
		if (!p)
			return NULL;
		s->dbs = p;
		s->capdbs = cap;
	}
	memset(&s->dbs[s->ndbs], 0, sizeof(struct sub_db));
	snprintf(s->dbs[s->ndbs].name, sizeof(s->dbs[0].name), "%s", name);
	return &s->dbs[s->ndbs++];
}

static void end_record(struct sub *s)
{
	if (s->own_fd && s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->own_fd = false;
	s->in_record = false;
	s->cur = NULL;
}

static void sub_free(void *cls)
{
	struct sub *s = cls;

	if (s->drained) {
		pthread_mutex_lock(&s->n->mu);
		rep_drain_stream_gone_locked(s->n);
		pthread_mutex_unlock(&s->n->mu);
	}
	end_record(s);
	for (size_t i = 0; i < s->ndbs; i++)
		fs_log_iter_free(s->dbs[i].it);
	pthread_mutex_lock(&s->n->mu);
	rep_cascade_follower_remove_locked(s->n, s->fol);
	pthread_mutex_unlock(&s->n->mu);
	free(s->fol);
	atomic_fetch_sub(&s->n->m.replicas, 1);
	log_info("stream to replica %016" PRIx64 " (%s) closed", s->node,
		 s->peer);
	free(s->dbs);
	free(s->out);
	free(s);
}

/* Puts one frame into the output buffer (empty before). */
static void emit(struct sub *s, uint8_t type, const uint8_t *payload,
		 uint32_t len)
{
	rep_frame_put_header(s->out, type, len, s->epoch);
	if (len)
		memcpy(s->out + REP_FRAME_HEADER_SIZE, payload, len);
	s->out_len = REP_FRAME_HEADER_SIZE + len;
	s->out_pos = 0;
}

static void emit_hello(struct sub *s)
{
	uint8_t buf[1024];
	rep_writer w = {buf, 0, sizeof(buf), false};
	rep_node *n = s->n;
	uint64_t primary;

	pthread_mutex_lock(&n->mu);
	rep_put_u64(&w, n->cluster_id);
	primary = n->follow.primary_node;
	pthread_mutex_unlock(&n->mu);
	rep_put_u64(&w, n->o.node_id);
	rep_put_str(&w, n->o.lease.advertise_url);
	if (s->relay) {
		rep_put_u8(&w, 1);
		rep_put_u64(&w, primary);
	}
	emit(s, REP_FRAME_HELLO, buf, (uint32_t)w.len);
	s->hello_sent = true;
}

struct hb_ctx {
	rep_writer *w;
	uint32_t count;
	rep_node *relay;         /* a replica's stream: n, else NULL */
};

/* An intermediate relays the primary's position when it knows one ahead
 * of its own (rule C3), so its followers' lag is the primary's. */
static ltx_pos relayed(rep_node *n, const char *name, ltx_pos p)
{
	pthread_mutex_lock(&n->mu);
	for (size_t i = 0; i < n->follow.nremotes; i++) {
		const rep_remote *r = &n->follow.remotes[i];
		if (strcmp(r->name, name) == 0 && r->pos.txid > p.txid)
			p = r->pos;
	}
	pthread_mutex_unlock(&n->mu);
	return p;
}

static void hb_one(void *ctx, fs_db *db)
{
	struct hb_ctx *h = ctx;
	ltx_pos p = fs_db_pos(db);

	if (p.txid == 0)
		return;
	if (h->relay)
		p = relayed(h->relay, fs_db_name(db), p);
	rep_put_str(h->w, fs_db_name(db));
	rep_put_u64(h->w, p.txid);
	rep_put_u64(h->w, p.checksum);
	h->count++;
}

static void emit_heartbeat(struct sub *s)
{
	rep_writer w = {s->out + REP_FRAME_HEADER_SIZE, 0,
			REP_FRAME_MAX_PAYLOAD, false};
	struct hb_ctx h = {&w, 0, s->relay ? s->n : NULL};

	rep_put_u64(&w, (uint64_t)lib_clock_wall_ms());
	rep_put_u32(&w, 0); /* count, filled below */
	fs_mount_foreach(s->n->mount, hb_one, &h);
	if (w.full) {
		/* Too many databases for one frame: send the count only. */
		w.len = 12;
		h.count = 0;
	}
	put_be32(s->out + REP_FRAME_HEADER_SIZE + 8, h.count);
	rep_frame_put_header(s->out, REP_FRAME_HEARTBEAT, (uint32_t)w.len,
			     s->epoch);
	s->out_len = REP_FRAME_HEADER_SIZE + w.len;
	s->out_pos = 0;
}

static void emit_begin(struct sub *s, uint8_t kind, const ltx_header *h)
{
	uint8_t buf[512];
	rep_writer w = {buf, 0, sizeof(buf), false};

	rep_put_str(&w, s->cur->name);
	rep_put_u64(&w, s->len);
	rep_put_u64(&w, h->min_txid);
	rep_put_u64(&w, h->max_txid);
	rep_put_u8(&w, kind);
	emit(s, REP_FRAME_BEGIN, buf, (uint32_t)w.len);
}

static void start(struct sub *s, struct sub_db *d, int fd, bool own,
		  uint64_t off, uint64_t len, const ltx_header *h,
		  ltx_pos next, uint8_t kind)
{
	int nth = atomic_fetch_add(&s->n->records_out, 1) + 1;

	s->in_record = true;
	s->cur = d;
	s->fd = fd;
	s->own_fd = own;
	s->off = off;
	s->left = s->len = len;
	s->next = next;
	s->post_known = kind == 1;
	s->flip_at = -1;
	if (s->n->flip_record && nth == s->n->flip_record) {
		s->flip_at = (int)(len / 2);
		log_warn("test fault switch: flipping byte %d of record %d "
			 "(db=%s TXID %016" PRIx64 ")", s->flip_at, nth,
			 d->name, h->max_txid);
	}
	emit_begin(s, kind, h);
	if (kind == 1)
		atomic_fetch_add(&s->n->m.snapshots_sent, 1);
}

static int read_post(int fd, uint64_t off, uint64_t len, uint64_t *out)
{
	uint8_t b[8];
	int rc = lib_io_pread_full(fd, b, 8, (off_t)(off + len - 16), NULL);

	if (rc == 0)
		*out = get_be64(b);
	return rc;
}

static int send_snapshot(struct sub *s, struct sub_db *d, fs_db *db,
			 const char *why)
{
	ltx_header h;
	uint64_t len = 0;
	ltx_trailer t;
	int fd = rep_tmpfile(s->n), rc;
	uint8_t b[16];

	if (fd < 0)
		return fd;
	rc = fs_db_snapshot_ltx(db, fd, &h, &len);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	rc = lib_io_pread_full(fd, b, 16, (off_t)(len - 16), NULL);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	t.post_apply_checksum = get_be64(b);
	log_info("db=%s: sending replica %016" PRIx64 " a snapshot at TXID "
		 "%016" PRIx64 " (%" PRIu64 " bytes): %s", d->name, s->node,
		 h.max_txid, len, why);
	fs_log_iter_free(d->it);
	d->it = NULL;
	start(s, d, fd, true, 0, len, &h,
	      (ltx_pos){h.max_txid, t.post_apply_checksum}, 1);
	return 0;
}

/* Retention may have removed the record that ends at the replica's
 * position while keeping the next one: that one's pre-apply checksum
 * proves the position as well. -ENOENT when it is not kept either. */
static int next_pre_apply(fs_log *log, uint64_t txid, uint64_t *out)
{
	fs_log_iter *it = NULL;
	ltx_header h;
	uint64_t off, len;
	int fd, rc = fs_log_iter_open(log, txid, &it);

	if (rc == 0)
		rc = fs_log_iter_next(it, &fd, &off, &len, &h);
	fs_log_iter_free(it);
	if (rc < 0)
		return rc;
	if (rc == 0 || h.min_txid != txid + 1 || ltx_header_is_snapshot(&h))
		return -ENOENT;
	*out = h.pre_apply_checksum;
	return 0;
}

/* Decides what to send this database's replica copy; 1 when a record was
 * started, 0 when it is up to date, <0 on error. */
static int scan_db(struct sub *s, fs_db *db)
{
	const char *name = fs_db_name(db);
	struct sub_db *d = sub_db_get(s, name);
	fs_log *log = fs_db_log(db);
	/* A synchronous commit is sent before it is published: what the
	 * log holds (sync.h). */
	ltx_pos p = rep_sync_on(s->n->sync) ? fs_log_get_tail(log).pos
					    : fs_db_pos(db);
	ltx_header h;
	uint64_t off, len, post = 0;
	int fd, rc;

	if (!d)
		return 0;
	if (d->pos.txid == p.txid && d->pos.checksum == p.checksum)
		return 0;
	if (p.txid == 0)
		return 0; /* nothing here yet */
	if (d->pos.txid > p.txid) {
		char why[160];
		snprintf(why, sizeof(why), "the replica is ahead (%016" PRIx64
			 " > %016" PRIx64 ")", d->pos.txid, p.txid);
		return send_snapshot(s, d, db, why) < 0 ? -EIO : 1;
	}
	if (!d->it) {
		/* Prove the replica's position against our log first. */
		if (d->pos.txid > 0) {
			fs_log_iter *probe = NULL;
			rc = fs_log_iter_open(log, d->pos.txid - 1, &probe);
			if (rc == 0)
				rc = fs_log_iter_next(probe, &fd, &off, &len,
						      &h);
			if (rc == 1 && h.max_txid == d->pos.txid)
				rc = read_post(fd, off, len, &post);
			else if (rc >= 0)
				rc = -ENOENT;
			fs_log_iter_free(probe);
			if (rc == -ENOENT)
				rc = next_pre_apply(log, d->pos.txid, &post);
			if (rc == -ENOENT)
				return send_snapshot(s, d, db, "its position "
						     "is older than the records "
						     "kept") < 0 ? -EIO : 1;
			if (rc == -EBADMSG)
				return send_snapshot(s, d, db, DAMAGED) < 0
					       ? -EIO : 1;
			if (rc < 0)
				return rc;
			if (post != d->pos.checksum) {
				log_warn("db=%s: replica %016" PRIx64 " diverged: "
					 "it is at %016" PRIx64 "/%016" PRIx64
					 ", this primary has %016" PRIx64 "/%016"
					 PRIx64 " at that TXID", name, s->node,
					 d->pos.txid, d->pos.checksum,
					 d->pos.txid, post);
				return send_snapshot(s, d, db, "diverged") < 0
					       ? -EIO : 1;
			}
		}
		rc = fs_log_iter_open(log, d->pos.txid, &d->it);
		if (rc < 0)
			return rc;
	}
	rc = fs_log_iter_next(d->it, &fd, &off, &len, &h);
	if (rc == 1) {
		/* The post-apply checksum comes with the record's last
		 * bytes (produce). */
		start(s, d, fd, false, off, len, &h, (ltx_pos){h.max_txid, 0},
		      0);
		return 1;
	}
	fs_log_iter_free(d->it);
	d->it = NULL;
	if (rc == -ENOENT)
		return send_snapshot(s, d, db, "its position is older than the "
				     "records kept") < 0 ? -EIO : 1;
	if (rc == -EBADMSG)
		return send_snapshot(s, d, db, DAMAGED) < 0 ? -EIO : 1;
	if (rc == -ESTALE)
		return send_snapshot(s, d, db, "a record it was sent was taken "
				     "back (a synchronous commit failed)") < 0
			       ? -EIO : 1;
	return rc; /* 0: the log has nothing newer yet */
}

/* One SCAN: databases from slot s->rr_next to the end, then from the
 * start, so a database whose writer outpaces the stream cannot starve the
 * others; the next SCAN starts after the one that got a record. */
struct scan_ctx {
	struct sub *s;
	int rc;
	size_t idx;              /* slot of the database at hand */
	size_t lo, hi;           /* this pass takes slots lo <= idx < hi */
};

static void scan_one(void *ctx, fs_db *db)
{
	struct scan_ctx *c = ctx;
	size_t i = c->idx++;

	if (c->rc != 0 || i < c->lo || i >= c->hi)
		return;
	c->rc = scan_db(c->s, db);
	if (c->rc == 1)
		c->s->rr_next = i + 1;
}

static int scan(struct sub *s)
{
	struct scan_ctx c = {s, 0, 0, s->rr_next, SIZE_MAX};

	fs_mount_foreach(s->n->mount, scan_one, &c);
	if (c.rc != 0 || s->rr_next == 0)
		return c.rc;
	c = (struct scan_ctx){s, 0, 0, 0, s->rr_next};
	fs_mount_foreach(s->n->mount, scan_one, &c);
	return c.rc;
}

/* BATCH_WINDOW_NS, or $LTXFS_STREAM_WINDOW_US (a diagnostic for
 * benchmarks; 0 sends every commit at once). */
static int64_t window;
static pthread_once_t window_once = PTHREAD_ONCE_INIT;

static void window_init(void)
{
	const char *e = getenv("LTXFS_STREAM_WINDOW_US");

	window = e && *e ? atoll(e) * 1000 : BATCH_WINDOW_NS;
	if (window < 0)
		window = 0;
	if (window > 100 * 1000 * 1000)
		window = 100 * 1000 * 1000; /* 100 ms at most */
}

static int64_t window_ns(void)
{
	pthread_once(&window_once, window_init);
	return window;
}

/* Woken by a commit: waits out the rest of the window since the last
 * such wake-up (BATCH_WINDOW_NS). */
static void coalesce(struct sub *s)
{
	int64_t now = lib_clock_monotonic_ns(), due = s->woke_ns + window_ns();

	if (s->woke_ns && now < due) {
		struct timespec ts = {0, (long)(due - now)};
		nanosleep(&ts, NULL);
		now = due;
	}
	s->woke_ns = now;
}

/* Produces the next frame into s->out; returns 0, <0 to end, or -EAGAIN
 * when it would have to wait for a commit and may not (may_wait false). */
static int produce(struct sub *s, bool may_wait)
{
	rep_node *n = s->n;

	if (!s->hello_sent) {
		emit_hello(s);
		return 0;
	}
	if (s->in_record) {
		if (s->left > 0) {
			size_t want = s->left < REP_FRAME_DATA_MAX ?
					      (size_t)s->left : REP_FRAME_DATA_MAX;
			uint8_t *p = s->out + REP_FRAME_HEADER_SIZE;
			int rc = lib_io_pread_full(s->fd, p, want,
						   (off_t)s->off, NULL);
			if (rc < 0) {
				log_error("stream: reading db=%s record: %s",
					  s->cur->name, strerror(-rc));
				return rc;
			}
			if (!s->post_known && want == s->left && want >= 16) {
				/* The trailer's post-apply checksum, before
				 * any test fault touches the bytes. */
				s->next.checksum = get_be64(p + want - 16);
				s->post_known = true;
			}
			if (s->flip_at >= 0) {
				uint64_t done = s->len - s->left;
				if ((uint64_t)s->flip_at >= done &&
				    (uint64_t)s->flip_at < done + want)
					p[(uint64_t)s->flip_at - done] ^= 0x20;
			}
			rep_frame_put_header(s->out, REP_FRAME_DATA,
					     (uint32_t)want, s->epoch);
			s->out_len = REP_FRAME_HEADER_SIZE + want;
			s->out_pos = 0;
			s->off += want;
			s->left -= want;
			atomic_fetch_add(&n->m.bytes_sent, want);
			atomic_fetch_add(&s->fol->bytes, want);
			return 0;
		}
		if (!s->post_known) {
			/* The last DATA frame held less than the trailer. */
			int rc = read_post(s->fd, s->off - s->len, s->len,
					   &s->next.checksum);
			if (rc < 0) {
				log_error("stream: reading db=%s record: %s",
					  s->cur->name, strerror(-rc));
				return rc;
			}
			s->post_known = true;
		}
		{
			uint8_t b[8];
			put_be64(b, s->len);
			emit(s, REP_FRAME_END, b, 8);
		}
		s->cur->pos = s->next;
		atomic_fetch_add(&n->m.records_sent, 1);
		atomic_fetch_add(&s->fol->records, 1);
		end_record(s);
		return 0;
	}
	for (int round = 0;; round++) {
		uint64_t gen;
		int rc;
		pthread_mutex_lock(&n->mu);
		if (s->relay ? !rep_cascade_serving_locked(n, s->role_gen)
			     : !rep_role_leads(n->role.state)) {
			pthread_mutex_unlock(&n->mu);
			return -ESHUTDOWN;
		}
		gen = n->gen;
		pthread_mutex_unlock(&n->mu);
		rc = scan(s);
		if (rc < 0)
			return rc;
		if (rc == 1)
			return 0;
		/* Nothing to send since commit generation gen: a drain
		 * (handoff.c) counts this replica as having everything. */
		pthread_mutex_lock(&n->mu);
		rep_drain_stream_idle_locked(n, gen, &s->drained);
		pthread_mutex_unlock(&n->mu);
		if (!s->ready_sent) {
			emit(s, REP_FRAME_READY, NULL, 0);
			s->ready_sent = true;
			return 0;
		}
		if (!may_wait)
			return -EAGAIN;
		if (round > 0) {
			emit_heartbeat(s);
			return 0;
		}
		/* Up to date: wait for a commit or the heartbeat interval. */
		pthread_mutex_lock(&n->mu);
		if (n->gen == gen && n->role.state != REP_ROLE_STOPPED) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += REP_HEARTBEAT_MS / 1000;
			pthread_cond_timedwait(&n->cond, &n->mu, &ts);
		}
		gen = n->gen != gen;
		pthread_mutex_unlock(&n->mu);
		if (gen) {
			round = -1; /* a commit: scan again, no heartbeat */
			/* A synchronous commit waits for this stream: no
			 * batching window. */
			if (!rep_sync_on(n->sync))
				coalesce(s);
		}
	}
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sub *s = cls;
	size_t done = 0;

	while (done < max) {
		size_t n;
		if (s->out_pos >= s->out_len) {
			int rc = s->err ? s->err : produce(s, done == 0);
			if (rc == -EAGAIN)
				break;
			if (rc < 0 && done > 0) {
				s->err = rc; /* after what is ready */
				break;
			}
			if (rc == -ESHUTDOWN)
				return MHD_CONTENT_READER_END_OF_STREAM;
			if (rc < 0)
				return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		n = s->out_len - s->out_pos;
		if (n > max - done)
			n = max - done;
		memcpy(buf + done, s->out + s->out_pos, n);
		s->out_pos += n;
		done += n;
	}
	return (ssize_t)done;
}

struct parse_ctx {
	struct sub *s;
	char *err;
	size_t errlen;
	bool have_node;
	uint64_t cluster;
	bool bad;
};

static bool valid_name(const char *s, size_t n)
{
	if (n == 0 || n > REP_NAME_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || s[i] == '\0')
			return false;
	return true;
}

static bool parse_hex64(const char *v, uint64_t *out)
{
	char *end;

	if (!v || strlen(v) != 16)
		return false;
	errno = 0;
	*out = strtoull(v, &end, 16);
	return errno == 0 && *end == '\0';
}

static enum MHD_Result arg(void *cls, enum MHD_ValueKind kind,
			   const char *key, const char *value)
{
	struct parse_ctx *c = cls;

	if (c->bad)
		return MHD_NO;
	if (strcmp(key, "node") == 0) {
		if (!parse_hex64(value, &c->s->node)) {
			snprintf(c->err, c->errlen, "node must be 16 hex "
				 "digits, got \"%s\"", value ? value : "");
			c->bad = true;
		}
		c->have_node = true;
	} else if (strcmp(key, "cluster") == 0) {
		if (!parse_hex64(value, &c->cluster)) {
			snprintf(c->err, c->errlen, "cluster must be 16 hex "
				 "digits, got \"%s\"", value ? value : "");
			c->bad = true;
		}
	} else if (strcmp(key, "db") == 0) {
		const char *colon = value ? strrchr(value, ':') : NULL;
		ltx_pos p;
		struct sub_db *d;
		if (!colon || !valid_name(value, (size_t)(colon - value)) ||
		    ltx_pos_parse(colon + 1, &p) < 0) {
			snprintf(c->err, c->errlen, "db must be NAME:TXID/"
				 "CHECKSUM (16 hex digits each), got \"%.*s\"",
				 100, value ? value : "");
			c->bad = true;
			return MHD_NO;
		}
		{
			char name[REP_NAME_MAX + 1];
			memcpy(name, value, (size_t)(colon - value));
			name[colon - value] = '\0';
			d = sub_db_get(c->s, name);
		}
		if (!d) {
			snprintf(c->err, c->errlen, "too many databases");
			c->bad = true;
			return MHD_NO;
		}
		d->pos = p;
	} else {
		snprintf(c->err, c->errlen, "unknown parameter \"%.40s\"", key);
		c->bad = true;
	}
	return c->bad ? MHD_NO : MHD_YES;
}

/* The follower's entry (cascade.h) from the request: its node ID, and
 * the headers naming its region and advertise URL. 0, -ENOMEM, or
 * -EINVAL with the reason in err. */
static int follower_new(struct sub *s, struct MHD_Connection *conn,
			char *err, size_t errlen)
{
	const char *region = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							 REP_HDR_REGION);
	const char *url = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						      REP_HDR_ADVERTISE);
	rep_follower *f = calloc(1, sizeof(*f));

	if (!f) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->fol = f;
	f->node = s->node;
	f->since_ms = lib_clock_wall_ms();
	snprintf(f->peer, sizeof(f->peer), "%s", s->peer);
	if (region && region[0] && !rep_region_valid(region)) {
		snprintf(err, errlen, REP_HDR_REGION " must be 1 to %d bytes "
			 "of A-Z a-z 0-9 . _ -", REP_REGION_MAX);
		return -EINVAL;
	}
	if (url && (strlen(url) > REP_URL_MAX ||
		    (url[0] && strncmp(url, "http://", 7) != 0 &&
		     strncmp(url, "https://", 8) != 0))) {
		snprintf(err, errlen, REP_HDR_ADVERTISE " must be an http:// "
			 "or https:// URL below %d bytes", REP_URL_MAX + 1);
		return -EINVAL;
	}
	snprintf(f->region, sizeof(f->region), "%s", region ? region : "");
	snprintf(f->url, sizeof(f->url), "%s", url ? url : "");
	return 0;
}

int rep_stream_response(rep_node *n, struct MHD_Connection *conn,
			struct MHD_Response **out, unsigned *out_status,
			char *err, size_t errlen)
{
	struct sub *s = calloc(1, sizeof(*s));
	struct parse_ctx c = {s, err, errlen, false, 0, false};
	const union MHD_ConnectionInfo *ci;
	uint64_t cluster;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->n = n;
	s->fd = -1;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr)
		rep_peer_text(ci->client_addr, s->peer, sizeof(s->peer));
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, arg, &c);
	if (!c.bad && !c.have_node) {
		snprintf(err, errlen, "the node parameter is required");
		c.bad = true;
	}
	if (c.bad) {
		*out_status = MHD_HTTP_BAD_REQUEST;
		goto fail;
	}
	if (follower_new(s, conn, err, errlen) < 0) {
		*out_status = MHD_HTTP_BAD_REQUEST;
		goto fail;
	}
	pthread_mutex_lock(&n->mu);
	cluster = n->cluster_id;
	s->epoch = n->epoch;
	s->relay = !rep_role_leads(n->role.state);
	s->role_gen = n->role.gen;
	*out_status = rep_cascade_may_serve_locked(n, s->node, err, errlen);
	pthread_mutex_unlock(&n->mu);
	if (*out_status) {
		if (*out_status == MHD_HTTP_CONFLICT)
			log_warn("refusing stream from %s: %s", s->peer, err);
		goto fail;
	}
	if (c.cluster && c.cluster != cluster) {
		snprintf(err, errlen, "replica %016" PRIx64 " belongs to cluster "
			 "%016" PRIx64 " but this primary's cluster is %016"
			 PRIx64, s->node, c.cluster, cluster);
		log_warn("refusing stream from %s: %s", s->peer, err);
		*out_status = MHD_HTTP_CONFLICT;
		goto fail;
	}
	s->out = malloc(REP_FRAME_HEADER_SIZE + REP_FRAME_MAX_PAYLOAD);
	if (!s->out) {
		free(s->fol);
		free(s->dbs);
		free(s);
		return -ENOMEM;
	}
	*out = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
						 reader, s, sub_free);
	if (!*out) {
		free(s->out);
		free(s->fol);
		free(s->dbs);
		free(s);
		return -ENOMEM;
	}
	/* Synchronous replication: the primary's own replicas acknowledge
	 * (sync.h, Y2). */
	if (!s->relay && rep_sync_on(n->sync))
		MHD_add_response_header(*out, REP_HDR_SYNC, "1");
	atomic_fetch_add(&n->m.replicas, 1);
	pthread_mutex_lock(&n->mu);
	rep_cascade_follower_add_locked(n, s->fol);
	pthread_mutex_unlock(&n->mu);
	*out_status = MHD_HTTP_OK;
	log_info("stream to replica %016" PRIx64 " (%s%s%s) opened with %zu "
		 "database positions%s", s->node, s->peer,
		 s->fol->region[0] ? ", region " : "", s->fol->region, s->ndbs,
		 s->relay ? ", relayed from the primary (cascade)" : "");
	return 0;
fail:
	free(s->fol);
	for (size_t i = 0; i < s->ndbs; i++)
		fs_log_iter_free(s->dbs[i].it);
	free(s->dbs);
	free(s);
	return -EINVAL;
}
