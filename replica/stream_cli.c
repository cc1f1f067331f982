/*
 * The replica's side of GET /stream: one thread that keeps a stream open
 * to the primary, applies what arrives, and reconnects after any failure
 * from its own positions (so it resumes where it stopped, after a
 * restart too, without a snapshot while the primary keeps the records).
 *
 * States:  CONNECTING --200--> STREAMING --(error, EOF, bad record)-->
 *          BACKOFF (100 ms doubling to 2 s; reset once READY arrives)
 *          --> CONNECTING.   A 401 or 409 (wrong token, other cluster)
 *          backs off 5 s and says so in the log each time.
 *
 * Each record arrives as BEGIN, DATA..., END; its bytes go to the scratch
 * file (scratch.c: one unlinked temporary file kept for the thread's
 * life, bounded memory for any size; records one after the other, the
 * file reused from its start once they are applied, the record being
 * received kept whole). Complete records are queued there and applied
 * when the bytes curl handed over are used up, or before any
 * other frame, a record of another database, a snapshot, or BATCH_MAX
 * records / BATCH_BYTES bytes: fs_db_apply_batch verifies every one and
 * applies consecutive WAL records in one lock cycle and one published
 * WAL transaction. The more records wait (the busier the CPUs), the
 * fewer lock cycles per record. A rejected record (bad file checksum,
 * wrong position) closes the stream: the next connection starts from
 * the position the replica really has.
 */
#include "node_i.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/db_apply.h"
#include "scratch.h"
#include "fs/log.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/io.h"
#include "lib/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define REFUSED_BACKOFF_MS 5000
#define STALL_SECONDS 5         /* no byte for this long: reconnect */
#define ERRBODY_MAX 512
#define BATCH_MAX FS_APPLY_RUN_MAX
#define BATCH_BYTES (16u << 20)        /* apply once this much waits */

struct cli {
	rep_node *n;
	rep_parser parser;
	long status;
	char errbody[ERRBODY_MAX + 1];
	size_t nerr;
	char why[400];           /* why the stream ended, when we ended it */
	bool refused;            /* 401/409: back off longer */
	bool got_ready;
	uint64_t role_gen;       /* rep_node.role_gen when connecting: a
				  * role or primary change ends the stream */
	uint64_t hello_epoch;    /* the epoch this stream's HELLO carried */
	/* The record being received (its bytes: sc). */
	bool in_record;
	char name[REP_NAME_MAX + 1];
	fs_db *db;
	int64_t ts;              /* its LTX timestamp (ms), 0 unknown */
	uint8_t kind;
	/* Complete records not applied yet, all of one database. */
	rep_scratch *sc;         /* NULL until the first record */
	uint64_t scratch_keep;   /* REP_SCRATCH_KEEP, or for tests
				  * $LTXFS_TEST_SCRATCH_KEEP */
	ltx_decoder *dec;        /* reused by every apply */
};

static void set_why(struct cli *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_why(struct cli *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
}

static size_t queued(const struct cli *c)
{
	return c->sc ? rep_scratch_count(c->sc) : 0;
}

/* Forgets the record being received and those not applied yet (the
 * next connection asks from the position the replica has). */
static void drop_record(struct cli *c)
{
	c->in_record = false;
	c->db = NULL;
	if (c->sc)
		rep_scratch_clear(c->sc);
}

/* Records 0..done of the queue (all of db) were applied: counted, and
 * the primary's position known to be reached when it is. */
static void applied(struct cli *c, fs_db *db, size_t done)
{
	rep_node *n = c->n;
	int64_t now = lib_clock_wall_ms();
	ltx_pos local;
	rep_remote *r;

	for (size_t i = 0; i < done; i++) {
		rep_scratch_rec *q = rep_scratch_rec_at(c->sc, i);
		q->done = true;
		if (q->ts)
			rep_metrics_observe_latency(&n->m,
						    (double)(now - q->ts));
		if (q->kind == 1)
			atomic_fetch_add(&n->m.snapshots_applied, 1);
	}
	atomic_fetch_add(&n->m.records_applied, done);
	local = fs_db_pos(db);
	pthread_mutex_lock(&n->mu);
	r = rep_remote_get(n, fs_db_name(db));
	if (r && r->pos.txid <= local.txid) {
		r->pos = local;
		r->behind_since_ms = 0;
	}
	pthread_mutex_unlock(&n->mu);
}

/* Applies the complete records waiting; 0, or <0 with c->why set. */
static int flush(struct cli *c)
{
	size_t n = queued(c), done = 0;
	fs_apply_rec recs[BATCH_MAX];
	char err[400];
	fs_db *db;
	int rc;

	if (n == 0)
		return 0;
	db = rep_scratch_rec_at(c->sc, 0)->db;
	for (size_t i = 0; i < n; i++) {
		rep_scratch_rec *q = rep_scratch_rec_at(c->sc, i);
		recs[i] = (fs_apply_rec){q->off, q->len};
	}
	rc = fs_db_apply_batch(db, rep_scratch_fd(c->sc), recs, n, &c->dec,
			       &done, err, sizeof(err));
	if (done > 0)
		applied(c, db, done);
	if (rc < 0) {
		atomic_fetch_add(&c->n->m.apply_errors, 1);
		set_why(c, "db=%s: record rejected: %s", fs_db_name(db), err);
		return rc;
	}
	rc = rep_scratch_settle(c->sc);
	if (rc < 0)
		set_why(c, "scratch file: %s", strerror(-rc));
	return rc;
}

static int on_hello(struct cli *c, const rep_frame *f)
{
	rep_node *n = c->n;
	rep_cursor k = {f->payload, f->len, false};
	uint64_t cluster = rep_get_u64(&k), node = rep_get_u64(&k), mine;
	char url[1024];

	rep_get_str(&k, url, sizeof(url));
	if (k.bad || k.left) {
		set_why(c, "malformed HELLO frame (rule F4)");
		return -EPROTO;
	}
	if (rep_node_see_epoch(n, f->epoch) < 0) {
		set_why(c, "the primary's epoch %" PRIu64 " is older than the "
			"%" PRIu64 " this node has seen; refusing it", f->epoch,
			n->epoch);
		c->refused = true;
		return -ESTALE;
	}
	c->hello_epoch = f->epoch;
	pthread_mutex_lock(&n->mu);
	mine = n->cluster_id;
	n->primary_node = node;
	pthread_mutex_unlock(&n->mu);
	if (mine && cluster != mine) {
		set_why(c, "the primary belongs to cluster %016" PRIx64 " but "
			"this node belongs to cluster %016" PRIx64 "; refusing "
			"it (wrong lease.primary-url, or a data directory "
			"from another cluster)", cluster, mine);
		c->refused = true;
		return -EPROTO;
	}
	if (!mine && cluster && rep_node_set_cluster(n, cluster) < 0)
		return -EIO;
	log_info("streaming from primary %016" PRIx64 " (%s), epoch %" PRIu64,
		 node, url, f->epoch);
	pthread_mutex_lock(&n->mu);
	n->connected = true;
	pthread_mutex_unlock(&n->mu);
	return 0;
}

static void note_remote(rep_node *n, const char *name, ltx_pos pos,
			ltx_pos local)
{
	rep_remote *r;

	pthread_mutex_lock(&n->mu);
	r = rep_remote_get(n, name);
	if (r) {
		r->pos = pos;
		if (pos.txid > local.txid) {
			if (!r->behind_since_ms)
				r->behind_since_ms = lib_clock_wall_ms();
		} else {
			r->behind_since_ms = 0;
		}
	}
	pthread_mutex_unlock(&n->mu);
}

/* A snapshot is about to replace this node's copy at local: says plainly
 * which of its own transactions (the trailing run of records this node
 * wrote as primary) go, since replication is asynchronous. */
static void log_discard(struct cli *c, ltx_pos local, uint64_t snap_txid)
{
	fs_log_iter *it = NULL;
	uint64_t own_from = 0, off, len;
	ltx_header h;
	int fd, rc;

	rc = fs_log_iter_open(fs_db_log(c->db), 0, &it);
	while (rc == 0 && (rc = fs_log_iter_next(it, &fd, &off, &len, &h)) == 1)
		if (h.node_id != c->n->o.node_id)
			own_from = 0;
		else if (!own_from)
			own_from = h.min_txid;
	fs_log_iter_free(it);
	if (own_from)
		log_warn("db=%s: the primary replaces this node's copy (TXID %016"
			 PRIx64 "/%016" PRIx64 ") with a snapshot at TXID %016"
			 PRIx64 "; TXIDs %016" PRIx64 "..%016" PRIx64 " were "
			 "committed here as primary and those the primary lacks "
			 "are discarded (replication is asynchronous)", c->name,
			 local.txid, local.checksum, snap_txid, own_from,
			 local.txid);
	else
		log_info("db=%s: the primary replaces this node's copy (TXID "
			 "%016" PRIx64 ") with a snapshot at TXID %016" PRIx64
			 "; none of its last transactions were committed here",
			 c->name, local.txid, snap_txid);
}

/* The scratch file, made at the first record. */
static int ensure_scratch(struct cli *c)
{
	int fd, rc;

	if (c->sc)
		return 0;
	fd = rep_tmpfile(c->n);
	if (fd < 0) {
		set_why(c, "no temporary file: %s", strerror(-fd));
		return fd;
	}
	rc = rep_scratch_new(fd, c->scratch_keep, &c->sc);
	if (rc < 0) {
		close(fd);
		set_why(c, "out of memory");
	}
	return rc;
}

static int on_begin(struct cli *c, const rep_frame *f)
{
	rep_cursor k = {f->payload, f->len, false};
	uint64_t minx, maxx, len;
	int rc;

	if (c->in_record) {
		set_why(c, "BEGIN inside a record");
		return -EPROTO;
	}
	rep_get_str(&k, c->name, sizeof(c->name));
	len = rep_get_u64(&k);
	minx = rep_get_u64(&k);
	maxx = rep_get_u64(&k);
	c->kind = rep_get_u8(&k);
	if (k.bad || k.left || !c->name[0] || c->name[0] == '.' ||
	    strchr(c->name, '/') || len < LTX_HEADER_SIZE ||
	    minx == 0 || maxx < minx || c->kind > 1) {
		set_why(c, "malformed BEGIN frame (rule F4)");
		return -EPROTO;
	}
	rc = fs_mount_open_db(c->n->mount, c->name, &c->db);
	if (rc < 0) {
		set_why(c, "db=%s: cannot open it here: %s", c->name,
			strerror(-rc));
		return rc;
	}
	if (queued(c) > 0 &&
	    (c->db != rep_scratch_rec_at(c->sc, 0)->db || c->kind == 1 ||
	     queued(c) >= BATCH_MAX ||
	     rep_scratch_queued_bytes(c->sc) >= BATCH_BYTES) &&
	    (rc = flush(c)) < 0)
		return rc;
	rc = ensure_scratch(c);
	if (rc < 0)
		return rc;
	rep_scratch_begin(c->sc, len);
	c->ts = 0;
	c->in_record = true;
	{
		ltx_pos local = fs_db_pos(c->db);
		ltx_pos remote = {maxx, 0};
		note_remote(c->n, c->name, remote, local);
		if (c->kind == 1 && local.txid > 0)
			log_discard(c, local, maxx);
	}
	return 0;
}

static int on_data(struct cli *c, const rep_frame *f)
{
	uint64_t len, got;
	int rc;

	if (!c->in_record) {
		set_why(c, "DATA outside a record or past its length");
		return -EPROTO;
	}
	rep_scratch_receiving(c->sc, &len, &got);
	if (got == 0 && f->len >= LTX_HEADER_SIZE) {
		ltx_header h;
		ltx_err e;
		if (ltx_header_decode(f->payload, &h, &e) == 0)
			c->ts = h.timestamp;
	}
	rc = rep_scratch_write(c->sc, f->payload, f->len);
	if (rc == -EPROTO) {
		set_why(c, "DATA outside a record or past its length");
		return rc;
	}
	if (rc < 0) {
		set_why(c, "storing a record: %s", strerror(-rc));
		return rc;
	}
	atomic_fetch_add(&c->n->m.bytes_received, f->len);
	return 0;
}

static int on_end(struct cli *c, const rep_frame *f)
{
	rep_cursor k = {f->payload, f->len, false};
	uint64_t len = rep_get_u64(&k), want = 0, got = 0;
	int rc;

	if (c->in_record)
		rep_scratch_receiving(c->sc, &want, &got);
	if (!c->in_record || k.bad || k.left || len != want || got != want) {
		set_why(c, "END does not match the record (%" PRIu64 " of %"
			PRIu64 " bytes)", got, want);
		return -EPROTO;
	}
	rc = rep_scratch_end(c->sc, c->db, c->kind, c->ts);
	if (rc < 0) {
		set_why(c, "queueing a record: %s", strerror(-rc));
		return rc;
	}
	c->in_record = false;
	c->db = NULL;
	/* A snapshot replaces the database: applied at once, alone. */
	return c->kind == 1 ? flush(c) : 0;
}

static int on_heartbeat(struct cli *c, const rep_frame *f)
{
	rep_cursor k = {f->payload, f->len, false};
	uint32_t count;

	(void)rep_get_u64(&k);
	count = rep_get_u32(&k);
	for (uint32_t i = 0; i < count && !k.bad; i++) {
		char name[REP_NAME_MAX + 1];
		ltx_pos p;
		fs_db *db;
		rep_get_str(&k, name, sizeof(name));
		p.txid = rep_get_u64(&k);
		p.checksum = rep_get_u64(&k);
		if (k.bad)
			break;
		db = fs_mount_db(c->n->mount, name);
		note_remote(c->n, name, p,
			    db ? fs_db_pos(db) : (ltx_pos){0, 0});
		/* Idle: checkpoint what a reader that has ended held back. */
		if (db)
			fs_db_apply_checkpoint(db);
	}
	if (k.bad || k.left) {
		set_why(c, "malformed HEARTBEAT frame (rule F4)");
		return -EPROTO;
	}
	return 0;
}

/* Whether this node became primary while reading the stream and may
 * still finish it (n->mu held): what the former primary sent before it
 * let the lease go is committed history older than this node's epoch. */
static bool finishing_locked(const struct cli *c, const rep_frame *f)
{
	const rep_node *n = c->n;

	return n->promoting && c->hello_epoch &&
	       (!f || f->epoch == c->hello_epoch) &&
	       lib_clock_monotonic_ns() < n->finish_until_ns;
}

static int on_frame(struct cli *c, const rep_frame *f)
{
	rep_node *n = c->n;

	if (f->type != REP_FRAME_HELLO) {
		uint64_t epoch;
		bool moved;
		pthread_mutex_lock(&n->mu);
		epoch = n->epoch;
		moved = n->role_gen != c->role_gen;
		if (moved && finishing_locked(c, f))
			moved = false, epoch = f->epoch;
		pthread_mutex_unlock(&n->mu);
		if (moved) {
			set_why(c, "the primary changed");
			return -ESTALE;
		}
		if (f->epoch < epoch) {
			set_why(c, "frame from epoch %" PRIu64 " after epoch %"
				PRIu64 " was seen; refusing it", f->epoch,
				epoch);
			return -ESTALE;
		}
	}
	pthread_mutex_lock(&n->mu);
	n->last_frame_ms = lib_clock_wall_ms();
	pthread_mutex_unlock(&n->mu);
	/* Records received are applied before any news about them. */
	if (f->type != REP_FRAME_BEGIN && f->type != REP_FRAME_DATA &&
	    f->type != REP_FRAME_END) {
		int rc = flush(c);
		if (rc < 0)
			return rc;
	}
	switch (f->type) {
	case REP_FRAME_HELLO:
		return on_hello(c, f);
	case REP_FRAME_BEGIN:
		return on_begin(c, f);
	case REP_FRAME_DATA:
		return on_data(c, f);
	case REP_FRAME_END:
		return on_end(c, f);
	case REP_FRAME_HEARTBEAT:
		return on_heartbeat(c, f);
	case REP_FRAME_READY:
		if (!c->got_ready)
			log_info("caught up with the primary");
		c->got_ready = true;
		pthread_mutex_lock(&n->mu);
		n->ready = true;
		pthread_mutex_unlock(&n->mu);
		return 0;
	default:
		return -EPROTO;
	}
}

static size_t take_data(struct cli *c, char *data, size_t n);

/* Data from the primary. Once this node has become primary and the time
 * to finish the stream is over, nothing more is applied: checked on entry
 * under n->mu, and rep_node_set_role waits for a call under way (in_cb). */
static size_t write_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct cli *c = ctx;
	rep_node *n = c->n;
	size_t got;

	pthread_mutex_lock(&n->mu);
	if (n->role_gen != c->role_gen && !finishing_locked(c, NULL)) {
		pthread_mutex_unlock(&n->mu);
		set_why(c, "the primary changed");
		return 0;
	}
	n->in_cb = true;
	pthread_mutex_unlock(&n->mu);
	got = take_data(c, data, size * nmemb);
	pthread_mutex_lock(&n->mu);
	n->in_cb = false;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->mu);
	return got;
}

static size_t take_data(struct cli *c, char *data, size_t n)
{
	size_t off = 0;

	if (c->status != 200) {
		size_t take = ERRBODY_MAX - c->nerr;
		if (take > n)
			take = n;
		memcpy(c->errbody + c->nerr, data, take);
		c->nerr += take;
		c->errbody[c->nerr] = '\0';
		return n;
	}
	while (off < n) {
		rep_frame f;
		size_t used = 0;
		int rc = rep_parser_feed(&c->parser, (const uint8_t *)data + off,
					 n - off, &used, &f);
		off += used;
		if (rc < 0) {
			set_why(c, "%s", c->parser.err);
			return 0;
		}
		if (rc == 1 && on_frame(c, &f) < 0)
			return 0;
	}
	/* Everything curl had is parsed: apply what is complete. */
	if (flush(c) < 0)
		return 0;
	return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct cli *c = ctx;
	size_t n = size * nmemb;
	int code;

	if (n > 9 && strncmp(data, "HTTP/", 5) == 0 &&
	    sscanf(data, "HTTP/%*s %d", &code) == 1)
		c->status = code;
	return n;
}

static int progress_cb(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut,
		       curl_off_t un)
{
	struct cli *c = ctx;
	bool stop;

	pthread_mutex_lock(&c->n->mu);
	stop = c->n->stopping || (c->n->role_gen != c->role_gen &&
				  !finishing_locked(c, NULL));
	pthread_mutex_unlock(&c->n->mu);
	return stop ? 1 : 0;
}

struct url_ctx {
	char *buf;
	size_t len, cap;
	bool oom;
	CURL *curl;
};

static void url_add(struct url_ctx *u, const char *s)
{
	size_t n = strlen(s);

	if (u->oom)
		return;
	if (u->len + n + 1 > u->cap) {
		size_t cap = (u->cap + n + 1) * 2;
		char *p = realloc(u->buf, cap);
		if (!p) {
			u->oom = true;
			return;
		}
		u->buf = p;
		u->cap = cap;
	}
	memcpy(u->buf + u->len, s, n + 1);
	u->len += n;
}

static void url_db(void *ctx, fs_db *db)
{
	struct url_ctx *u = ctx;
	ltx_pos p = fs_db_pos(db);
	char pos[LTX_POS_STRLEN + 1], *esc;

	if (p.txid == 0)
		return;
	ltx_pos_format(p, pos);
	pos[LTX_POS_STRLEN] = '\0';
	esc = curl_easy_escape(u->curl, fs_db_name(db), 0);
	if (!esc) {
		u->oom = true;
		return;
	}
	url_add(u, "&db=");
	url_add(u, esc);
	url_add(u, ":");
	url_add(u, pos);
	curl_free(esc);
}

/* One connection; returns when it ends. */
static void stream_once(rep_node *n, struct cli *c, CURL *curl,
			const char *primary)
{
	struct url_ctx u = {NULL, 0, 0, false, curl};
	struct curl_slist *hdrs = NULL;
	char tmp[128], auth[600];
	uint64_t cluster;
	CURLcode cc;

	pthread_mutex_lock(&n->mu);
	cluster = n->cluster_id;
	pthread_mutex_unlock(&n->mu);
	url_add(&u, primary);
	snprintf(tmp, sizeof(tmp), "/stream?node=%016" PRIx64, n->o.node_id);
	url_add(&u, tmp);
	if (cluster) {
		snprintf(tmp, sizeof(tmp), "&cluster=%016" PRIx64, cluster);
		url_add(&u, tmp);
	}
	fs_mount_foreach(n->mount, url_db, &u);
	if (u.oom) {
		free(u.buf);
		set_why(c, "out of memory");
		return;
	}
	if (n->o.token[0]) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
			 n->o.token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, u.buf);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, c);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)STALL_SECONDS);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 256L * 1024);
	cc = curl_easy_perform(curl);
	pthread_mutex_lock(&n->mu);
	n->connected = false;
	n->ready = false;
	pthread_mutex_unlock(&n->mu);
	if (c->status == 401 || c->status == 409 || c->status == 421) {
		c->refused = true;
		set_why(c, "the primary answered %ld: %s", c->status,
			c->errbody[0] ? c->errbody : "(no reason given)");
		size_t l = strlen(c->why);
		if (l && c->why[l - 1] == '\n')
			c->why[l - 1] = '\0';
	} else if (c->status && c->status != 200) {
		set_why(c, "the primary answered %ld: %s", c->status,
			c->errbody);
	} else if (!c->why[0]) {
		set_why(c, "%s", cc == CURLE_OK ? "the primary closed the stream"
						: curl_easy_strerror(cc));
	}
	curl_slist_free_all(hdrs);
	free(u.buf);
}

static void prepare_one(void *ctx, fs_db *db)
{
	fs_db_apply_prepare(db);
}

/* A former primary: its last transaction, refused half-way, is rolled
 * back before anything is applied on top. */
static void abandon_one(void *ctx, fs_db *db)
{
	fs_db_abandon_txn(db);
}

/* REP_SCRATCH_KEEP; a test may make it smaller, down to 0 (the space is
 * given back after every batch). */
static uint64_t scratch_keep(void)
{
	const char *e = getenv("LTXFS_TEST_SCRATCH_KEEP");
	char *end;
	unsigned long long v;

	if (!e || !*e)
		return REP_SCRATCH_KEEP;
	errno = 0;
	v = strtoull(e, &end, 10);
	if (errno || *end || v > REP_SCRATCH_KEEP) {
		log_warn("LTXFS_TEST_SCRATCH_KEEP=\"%s\" is not a size up to "
			 "%u bytes; ignored", e, REP_SCRATCH_KEEP);
		return REP_SCRATCH_KEEP;
	}
	return v;
}

void *rep_client_main(void *arg)
{
	rep_node *n = arg;
	struct cli c;
	CURL *curl = curl_easy_init();
	int backoff = BACKOFF_MIN_MS;
	bool first = true;

	memset(&c, 0, sizeof(c));
	c.n = n;
	c.scratch_keep = scratch_keep();
	if (!curl || rep_parser_init(&c.parser) < 0) {
		log_error("stream client: out of memory; not replicating");
		curl_easy_cleanup(curl);
		return NULL;
	}
	fs_mount_foreach(n->mount, prepare_one, NULL);
	for (;;) {
		char *primary;
		pthread_mutex_lock(&n->mu);
		if (n->stopping) {
			pthread_mutex_unlock(&n->mu);
			break;
		}
		if (n->lease && (n->role == REP_ROLE_PRIMARY ||
				 !n->primary_url || !n->primary_url[0])) {
			/* etcd lease: nothing to follow now. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&n->cond, &n->mu, &ts);
			pthread_mutex_unlock(&n->mu);
			continue;
		}
		primary = strdup(n->primary_url ? n->primary_url : "");
		c.role_gen = n->role_gen;
		pthread_mutex_unlock(&n->mu);
		if (!first)
			atomic_fetch_add(&n->m.reconnects, 1);
		first = false;
		c.status = 0;
		c.nerr = 0;
		c.errbody[0] = '\0';
		c.why[0] = '\0';
		c.refused = false;
		c.got_ready = false;
		c.parser.nhdr = 0;
		c.parser.need = c.parser.have = 0;
		fs_mount_foreach(n->mount, abandon_one, NULL);
		c.hello_epoch = 0;
		pthread_mutex_lock(&n->mu);
		n->in_stream = true;
		pthread_mutex_unlock(&n->mu);
		if (primary && primary[0])
			stream_once(n, &c, curl, primary);
		else
			set_why(&c, "the primary is not known yet");
		drop_record(&c);
		pthread_mutex_lock(&n->mu);
		n->in_stream = false;
		pthread_cond_broadcast(&n->cond);
		pthread_mutex_unlock(&n->mu);
		pthread_mutex_lock(&n->mu);
		if (!n->stopping)
			log_warn("stream from %s ended: %s; reconnecting",
				 primary ? primary : "?", c.why);
		pthread_mutex_unlock(&n->mu);
		free(primary);
		if (c.got_ready)
			backoff = BACKOFF_MIN_MS;
		{
			int wait = c.refused ? REFUSED_BACKOFF_MS : backoff;
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += wait / 1000;
			ts.tv_nsec += (long)(wait % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_mutex_lock(&n->mu);
			if (!n->stopping)
				pthread_cond_timedwait(&n->cond, &n->mu, &ts);
			pthread_mutex_unlock(&n->mu);
		}
		if (!c.got_ready && backoff < BACKOFF_MAX_MS)
			backoff *= 2;
	}
	rep_parser_free(&c.parser);
	ltx_decoder_free(c.dec);
	rep_scratch_free(c.sc);
	curl_easy_cleanup(curl);
	return NULL;
}
