/*
 * The replica's side of GET /stream: one thread that keeps a stream open
 * to the primary, applies what arrives, and reconnects after any failure
 * from its own positions (so it resumes where it stopped, after a
 * restart too, without a snapshot while the primary keeps the records).
 * The stream may come from another replica instead (its upstream,
 * chosen before each connection: rules C4-C6 in cascade.h); what is
 * said here of the primary then holds of that upstream.
 *
 * States:  CONNECTING --200--> STREAMING --(error, EOF, bad record)-->
 *          BACKOFF (100 ms doubling to 2 s; reset once READY arrives)
 *          --> CONNECTING.   A 401 or 409 (wrong token, other cluster)
 *          backs off 5 s and says so in the log each time. Each
 *          CONNECTING resolves the primary's host name anew (no DNS
 *          cache): a restarted primary may have a new address; a lookup
 *          counts against the connect timeout, and one that outlives it
 *          is left to finish on its own.
 *
 * Each record arrives as BEGIN, DATA..., END; its bytes go to the scratch
 * file (scratch.c: one unlinked temporary file for the thread's life,
 * bounded memory for any size). Complete records are queued there and
 * applied when the bytes libcurl handed over are used up, before any
 * other frame, before a snapshot's BEGIN, or once FLUSH_RECORDS /
 * FLUSH_BYTES wait: fs_db_apply_batch verifies every one and applies
 * consecutive WAL records of a database in one lock cycle and one
 * published WAL transaction. The more records wait (the busier the
 * CPUs), the fewer lock cycles per record.
 *
 * An apply never blocks the stream while it waits for a local reader (a
 * database in rollback mode, whose reader holds SQLite's SHARED lock):
 * the database's records stay queued (FS_APPLY_NOWAIT keeps SQLite's
 * PENDING lock, so no new reader starts), the stream goes on being read
 * (other databases applied, positions learned from BEGIN and HEARTBEAT,
 * so lag_txids counts what arrived), and the apply is tried again every
 * RETRY_MS, up to the apply timeout. Past QUEUE_RECORDS / QUEUE_BYTES
 * queued, the stream waits for the reader too. A rejected record (bad
 * file checksum, wrong position, readers past the timeout) closes the
 * stream: the next connection starts from the position the replica
 * really has. Records completely received when a stream ends otherwise
 * are applied first (waiting for readers), unless the node stops or
 * follows another primary.
 *
 * A database out of service here (its LTX log is damaged) is healed when
 * the primary's first record for it arrives (fs_mount_open_db); while it
 * cannot be opened, its records are read and dropped and the other
 * databases go on (a BEGIN of it does not end the stream).
 */
#include "stream_cli_i.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/clock.h"
#include "lib/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define REFUSED_BACKOFF_MS 5000
#define STALL_SECONDS 5         /* no byte for this long: reconnect */

void rep_cli_why(struct rep_cli *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
}

static size_t take_data(struct rep_cli *c, char *data, size_t n)
{
	size_t off = 0;

	if (c->status != 200)
		return rep_http_collect(data, 1, n, &c->errbody);
	while (off < n) {
		rep_frame f;
		size_t used = 0;
		int rc = rep_parser_feed(&c->parser, (const uint8_t *)data + off,
					 n - off, &used, &f);
		off += used;
		if (rc < 0) {
			rep_cli_why(c, "%s", c->parser.err);
			return 0;
		}
		if (rc == 1 && rep_cli_on_frame(c, &f) < 0)
			return 0;
	}
	/* Everything curl had is parsed: apply what is complete. */
	if (rep_cli_apply(c, false) < 0)
		return 0;
	return n;
}

/* Data from the primary. Once this node has become primary and the time
 * to finish the stream is over, nothing more is taken: checked on entry
 * under n->mu, and rep_role_lead (PROMOTING) waits for a call under way
 * and for the records it queued (in_cb). */
static size_t write_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct rep_cli *c = ctx;
	size_t got;

	if (!rep_cli_enter(c, true)) {
		rep_cli_why(c, "the primary changed");
		return 0;
	}
	got = take_data(c, data, size * nmemb);
	rep_cli_leave(c);
	return got;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct rep_cli *c = ctx;
	size_t n = size * nmemb;
	int code;

	if (n > 9 && strncmp(data, "HTTP/", 5) == 0 &&
	    sscanf(data, "HTTP/%*s %d", &code) == 1)
		c->status = code;
	if (n > sizeof(REP_HDR_SYNC) &&
	    strncasecmp(data, REP_HDR_SYNC ":", sizeof(REP_HDR_SYNC)) == 0)
		c->sync = atoi(data + sizeof(REP_HDR_SYNC)) == 1;
	return n;
}

static int progress_cb(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut,
		       curl_off_t un)
{
	struct rep_cli *c = ctx;
	bool stop;

	pthread_mutex_lock(&c->n->mu);
	stop = c->n->role.state == REP_ROLE_STOPPED ||
	       (c->n->role.gen != c->role_gen &&
		!rep_cli_finishing_locked(c, NULL));
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

/* How long to wait for the socket: until a waiting apply is due. */
static int poll_ms(const struct rep_cli *c)
{
	int64_t left;

	if (!c->nwaiting)
		return 1000;
	left = (c->retry_ns - lib_clock_monotonic_ns()) / NS_PER_MS;
	return left < 1 ? 1 : left > RETRY_MS ? RETRY_MS : (int)left;
}

/* Runs the transfer, trying waiting applies again between reads. */
static CURLcode perform(struct rep_cli *c, CURL *curl)
{
	CURLcode cc = CURLE_OK;
	CURLMcode mc;
	CURLMsg *msg;
	int running = 1, left;

	mc = curl_multi_add_handle(c->multi, curl);
	while (mc == CURLM_OK && running) {
		mc = curl_multi_perform(c->multi, &running);
		if (mc != CURLM_OK || !running)
			break;
		if (rep_cli_retry(c) < 0)
			break;
		if (rep_cascade_recheck(c->n, c->why, sizeof(c->why)) == 1) {
			c->moving = true;
			break;
		}
		mc = curl_multi_poll(c->multi, NULL, 0, poll_ms(c), NULL);
	}
	if (mc != CURLM_OK && !c->why[0])
		rep_cli_why(c, "%s", curl_multi_strerror(mc));
	while ((msg = curl_multi_info_read(c->multi, &left)))
		if (msg->msg == CURLMSG_DONE)
			cc = msg->data.result;
	curl_multi_remove_handle(c->multi, curl);
	return cc;
}

/* The headers that name this node to its upstream (cascade.h). 0 or
 * -ENOMEM. */
static int add_identity(struct curl_slist **hdrs, rep_node *n)
{
	char h[REP_URL_MAX + 64];
	struct curl_slist *l;

	if (n->o.region[0]) {
		snprintf(h, sizeof(h), REP_HDR_REGION ": %s", n->o.region);
		if (!(l = curl_slist_append(*hdrs, h)))
			return -ENOMEM;
		*hdrs = l;
	}
	if (n->o.lease.advertise_url[0]) {
		snprintf(h, sizeof(h), REP_HDR_ADVERTISE ": %s",
			 n->o.lease.advertise_url);
		if (!(l = curl_slist_append(*hdrs, h)))
			return -ENOMEM;
		*hdrs = l;
	}
	return 0;
}

/* One connection to url (the primary or an upstream); returns when it
 * ends. */
static void stream_once(rep_node *n, struct rep_cli *c, CURL *curl,
			const char *url)
{
	struct url_ctx u = {NULL, 0, 0, false, curl};
	struct curl_slist *hdrs = NULL;
	rep_http_tls tls = rep_node_client_tls(n);
	const char *who;
	char tmp[128], cerr[CURL_ERROR_SIZE];
	uint64_t cluster;
	CURLcode cc;

	pthread_mutex_lock(&n->mu);
	cluster = n->cluster_id;
	pthread_mutex_unlock(&n->mu);
	url_add(&u, url);
	snprintf(tmp, sizeof(tmp), "/stream?node=%016" PRIx64, n->o.node_id);
	url_add(&u, tmp);
	if (cluster) {
		snprintf(tmp, sizeof(tmp), "&cluster=%016" PRIx64, cluster);
		url_add(&u, tmp);
	}
	fs_mount_foreach(n->mount, url_db, &u);
	if (u.oom) {
		free(u.buf);
		rep_cli_why(c, "out of memory");
		return;
	}
	if (rep_http_bearer(&hdrs, n->o.http.token) < 0 ||
	    add_identity(&hdrs, n) < 0) {
		free(u.buf);
		curl_slist_free_all(hdrs);
		rep_cli_why(c, "out of memory");
		return;
	}
	curl_easy_reset(curl);
	cerr[0] = '\0';
	c->sync = false;
	snprintf(c->url, sizeof(c->url), "%s", url);
	curl_easy_setopt(curl, CURLOPT_URL, u.buf);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
	rep_http_tls_apply(curl, &tls);
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
	/* The primary's name is resolved anew at each connection: a
	 * restarted container or rescheduled pod keeps its name, not its
	 * address (the multi handle's DNS cache kept the old one 60 s). */
	curl_easy_setopt(curl, CURLOPT_DNS_CACHE_TIMEOUT, 0L);
	/* A lookup past the connect timeout is abandoned, not waited for
	 * (libcurl joined its resolver thread: a DNS server that did not
	 * answer held the stream, and the replica, for over a minute). */
	curl_easy_setopt(curl, CURLOPT_QUICK_EXIT, 1L);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)STALL_SECONDS);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 256L * 1024);
	cc = perform(c, curl);
	pthread_mutex_lock(&n->mu);
	n->follow.connected = false;
	n->follow.ready = false;
	who = n->cascade.to_primary ? "primary" : "upstream";
	pthread_mutex_unlock(&n->mu);
	if (c->status == 401 || c->status == 403 || c->status == 409 ||
	    c->status == 421) {
		c->refused = true;
		rep_cli_why(c, "the %s answered %ld: %s", who, c->status,
			c->errbody.len ? rep_http_body_text(&c->errbody)
				       : "(no reason given)");
		size_t l = strlen(c->why);
		if (l && c->why[l - 1] == '\n')
			c->why[l - 1] = '\0';
	} else if (c->status && c->status != 200) {
		rep_cli_why(c, "the %s answered %ld: %s", who, c->status,
			rep_http_body_text(&c->errbody));
	} else if (!c->why[0]) {
		if (cc == CURLE_OK)
			rep_cli_why(c, "the %s closed the stream", who);
		else
			rep_cli_why(c, "%s%s", cerr[0] ? cerr
						       : curl_easy_strerror(cc),
				    rep_http_hint(u.buf, cc));
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
	struct rep_cli c;
	CURL *curl = curl_easy_init();
	int backoff = BACKOFF_MIN_MS;
	bool first = true;

	memset(&c, 0, sizeof(c));
	c.n = n;
	c.scratch_keep = scratch_keep();
	c.errbody = (rep_http_body)REP_HTTP_BODY_INIT(ERRBODY_MAX, false);
	c.multi = curl_multi_init();
	if (!curl || !c.multi || rep_ack_cli_new(n, &c.ack) < 0 ||
	    rep_parser_init(&c.parser) < 0) {
		log_error("stream client: out of memory; not replicating");
		rep_ack_cli_free(c.ack);
		curl_multi_cleanup(c.multi);
		curl_easy_cleanup(curl);
		return NULL;
	}
	fs_mount_foreach(n->mount, prepare_one, NULL);
	for (;;) {
		char *primary, up[REP_URL_MAX + 1] = "";
		bool to_primary = true, recheck = false, avoid;
		pthread_mutex_lock(&n->mu);
		if (n->role.state == REP_ROLE_STOPPED) {
			pthread_mutex_unlock(&n->mu);
			break;
		}
		if (n->role.state != REP_ROLE_REPLICA ||
		    !n->role.primary_url || !n->role.primary_url[0]) {
			/* Primary, or the primary is not known (etcd lease):
			 * nothing to follow now. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&n->cond, &n->mu, &ts);
			pthread_mutex_unlock(&n->mu);
			continue;
		}
		primary = strdup(n->role.primary_url);
		c.role_gen = n->role.gen;
		pthread_mutex_unlock(&n->mu);
		if (!first)
			atomic_fetch_add(&n->m.reconnects, 1);
		first = false;
		c.status = 0;
		rep_http_body_reset(&c.errbody);
		c.why[0] = '\0';
		c.refused = false;
		c.got_ready = false;
		c.skipped[0] = '\0';
		c.told_ready = false;
		c.failed = false;
		c.parser.nhdr = 0;
		c.parser.need = c.parser.have = 0;
		fs_mount_foreach(n->mount, abandon_one, NULL);
		c.hello_epoch = 0;
		c.moving = false;
		if (primary && primary[0]) {
			rep_cascade_choose(n, primary, up, sizeof(up),
					   &to_primary, &recheck);
			rep_cascade_connecting(n, up, to_primary, recheck);
		}
		pthread_mutex_lock(&n->mu);
		n->follow.in_stream = true;
		pthread_mutex_unlock(&n->mu);
		if (up[0])
			stream_once(n, &c, curl, up);
		else
			rep_cli_why(&c, "the primary is not known yet");
		rep_cli_finish(&c);
		rep_cli_drop(&c);
		rep_ack_target(c.ack, NULL, 0); /* ack_cli.c, A3 */
		pthread_mutex_lock(&n->mu);
		n->follow.in_stream = false;
		pthread_cond_broadcast(&n->cond);
		avoid = !to_primary && !c.moving &&
			n->role.state != REP_ROLE_STOPPED &&
			n->role.gen == c.role_gen;
		pthread_mutex_unlock(&n->mu);
		rep_cascade_ended(n, avoid);
		pthread_mutex_lock(&n->mu);
		if (n->role.state != REP_ROLE_STOPPED)
			log_warn("stream from %s ended: %s; reconnecting",
				 up[0] ? up : "?", c.why);
		pthread_mutex_unlock(&n->mu);
		free(primary);
		if (c.got_ready || avoid || c.moving)
			backoff = BACKOFF_MIN_MS;
		{
			/* Another upstream is tried at once (C5). */
			int wait = avoid || c.moving ? BACKOFF_MIN_MS
				   : c.refused	     ? REFUSED_BACKOFF_MS
						     : backoff;
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += wait / 1000;
			ts.tv_nsec += (long)(wait % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_mutex_lock(&n->mu);
			if (n->role.state != REP_ROLE_STOPPED)
				pthread_cond_timedwait(&n->cond, &n->mu, &ts);
			pthread_mutex_unlock(&n->mu);
		}
		if (!c.got_ready && backoff < BACKOFF_MAX_MS)
			backoff *= 2;
	}
	rep_parser_free(&c.parser);
	rep_http_body_free(&c.errbody);
	ltx_decoder_free(c.dec);
	rep_scratch_free(c.sc);
	rep_ack_cli_free(c.ack);
	curl_multi_cleanup(c.multi);
	curl_easy_cleanup(curl);
	return NULL;
}
