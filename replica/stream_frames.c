/*
 * The replica's stream client (stream_cli.c): what each frame of the
 * stream does (docs/PROTOCOL.md, "GET /stream"; frame.h for the bytes).
 */
#include "stream_cli_i.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "fs/log.h"
#include "lib/clock.h"
#include "lib/log.h"

static int on_hello(struct rep_cli *c, const rep_frame *f)
{
	rep_node *n = c->n;
	uint64_t cluster, node, mine;
	rep_hello h;

	if (rep_frame_read_hello(f, &h) < 0) {
		rep_cli_why(c, "malformed HELLO frame (rule F4)");
		return -EPROTO;
	}
	cluster = h.cluster;
	node = h.node;
	if (rep_node_see_epoch(n, f->epoch) < 0) {
		rep_cli_why(c, "the primary's epoch %" PRIu64 " is older than "
			    "the %" PRIu64 " this node has seen; refusing it",
			    f->epoch, n->epoch);
		c->refused = true;
		return -ESTALE;
	}
	c->hello_epoch = f->epoch;
	if (c->sync)
		rep_ack_target(c->ack, c->url, f->epoch); /* ack_cli.c, A1 */
	pthread_mutex_lock(&n->mu);
	mine = n->cluster_id;
	rep_cascade_hello_locked(n, node, h.hops);
	node = h.primary; /* the same as node unless through a replica */
	if (n->follow.primary_node != node) {
		/* What another primary had says nothing of this one. */
		for (size_t i = 0; i < n->follow.nremotes; i++) {
			n->follow.remotes[i].pos = (ltx_pos){0, 0};
			n->follow.remotes[i].behind_since_ms = 0;
		}
	}
	n->follow.primary_node = node;
	pthread_mutex_unlock(&n->mu);
	if (mine && cluster != mine) {
		rep_cli_why(c, "the primary belongs to cluster %016" PRIx64
			    " but this node belongs to cluster %016" PRIx64
			    "; refusing it (wrong lease.primary-url, or a data "
			    "directory from another cluster)", cluster, mine);
		c->refused = true;
		return -EPROTO;
	}
	if (!mine && cluster && rep_node_set_cluster(n, cluster) < 0)
		return -EIO;
	if (h.hops)
		log_info("streaming from replica %016" PRIx64 " (%s), which "
			 "follows primary %016" PRIx64 ", epoch %" PRIu64,
			 h.node, h.url, node, f->epoch);
	else
		log_info("streaming from primary %016" PRIx64 " (%s), epoch %"
			 PRIu64, node, h.url, f->epoch);
	pthread_mutex_lock(&n->mu);
	n->follow.connected = true;
	pthread_mutex_unlock(&n->mu);
	return 0;
}

/* What this replica learned of the primary's position of a database
 * (lag_txids, lag_ms): a heartbeat says where it is; a record received
 * (at_least), applied or not, that it is at least at its last TXID. */
static void note_remote(rep_node *n, const char *name, ltx_pos pos,
			ltx_pos local, bool at_least)
{
	rep_remote *r;

	pthread_mutex_lock(&n->mu);
	r = rep_remote_get(n, name);
	if (r) {
		if (!at_least || pos.txid > r->pos.txid)
			r->pos = pos;
		pos = r->pos;
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
static void log_discard(struct rep_cli *c, ltx_pos local, uint64_t snap_txid)
{
	fs_log_iter *it = NULL;
	uint64_t own_from = 0, off, len;
	ltx_header h;
	int fd, rc;

	rc = fs_log_iter_open(fs_db_log(c->db), 0, &it);
	if (rc == 0)
		fs_log_iter_headers_only(it);
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
static int ensure_scratch(struct rep_cli *c)
{
	int fd, rc;

	if (c->sc)
		return 0;
	fd = rep_tmpfile(c->n);
	if (fd < 0) {
		rep_cli_why(c, "no temporary file: %s", strerror(-fd));
		return fd;
	}
	rc = rep_scratch_new(fd, c->scratch_keep, &c->sc);
	if (rc < 0) {
		close(fd);
		rep_cli_why(c, "out of memory");
	}
	return rc;
}

static int on_begin(struct rep_cli *c, const rep_frame *f)
{
	uint64_t minx, maxx, len;
	rep_begin b;
	int rc = 0;

	if (c->in_record) {
		rep_cli_why(c, "BEGIN inside a record");
		return -EPROTO;
	}
	if (rep_frame_read_begin(f, &b) < 0) {
		rep_cli_why(c, "malformed BEGIN frame (rule F4)");
		return -EPROTO;
	}
	memcpy(c->name, b.name, sizeof(c->name));
	len = b.len;
	minx = b.min_txid;
	maxx = b.max_txid;
	c->kind = b.kind;
	rc = fs_mount_open_db(c->n->mount, c->name, &c->db);
	if (rc < 0) {
		/* That database alone is out of service here (damaged and
		 * not healed yet, or it cannot be created): its records are
		 * read and dropped, the others go on. The next connection
		 * asks for it from the start again. */
		if (strcmp(c->skipped, c->name) != 0)
			log_error("db=%s: cannot open it here (%s): the records "
				  "the primary sends for it are dropped; the "
				  "other databases go on", c->name,
				  strerror(-rc));
		memcpy(c->skipped, c->name, sizeof(c->name));
		c->db = NULL;
		c->skip = true;
		c->in_record = true;
		c->skip_got = 0;
		c->skip_len = len;
		return 0;
	}
	if (minx != 1 && fs_db_pos(c->db).txid == 0 &&
	    !rep_cli_has_queued(c, c->db)) {
		/* A new copy (a healed one too) starts with a snapshot: ask
		 * again without a position for it. */
		rep_cli_why(c, "db=%s: this node has no copy yet and the "
			    "primary sent TXIDs %016" PRIx64 "-%016" PRIx64
			    "; reconnecting to receive it from the start",
			    c->name, minx, maxx);
		return -ESTALE;
	}
	if (rep_cli_queued(c) > 0 &&
	    (c->kind == 1 || rep_cli_queued(c) >= FLUSH_RECORDS ||
	     rep_scratch_queued_bytes(c->sc) >= FLUSH_BYTES))
		rc = rep_cli_apply(c, false);
	if (rc == 0 && rep_cli_queued(c) > 0 &&
	    (rep_cli_queued(c) >= QUEUE_RECORDS ||
	     rep_scratch_queued_bytes(c->sc) >= QUEUE_BYTES))
		rc = rep_cli_apply(c, true);
	if (rc == 0)
		rc = ensure_scratch(c);
	if (rc < 0)
		return rc;
	rep_scratch_begin(c->sc, len);
	c->ts = 0;
	c->in_record = true;
	{
		ltx_pos local = fs_db_pos(c->db);
		ltx_pos remote = {maxx, 0};
		note_remote(c->n, c->name, remote, local, true);
		if (c->kind == 1 && local.txid > 0)
			log_discard(c, local, maxx);
	}
	return 0;
}

static int on_data(struct rep_cli *c, const rep_frame *f)
{
	uint64_t len, got;
	int rc;

	if (!c->in_record) {
		rep_cli_why(c, "DATA outside a record or past its length");
		return -EPROTO;
	}
	if (c->skip) {
		if (c->skip_got + f->len > c->skip_len) {
			rep_cli_why(c, "DATA outside a record or past its "
				    "length");
			return -EPROTO;
		}
		c->skip_got += f->len;
		atomic_fetch_add(&c->n->m.bytes_received, f->len);
		return 0;
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
		rep_cli_why(c, "DATA outside a record or past its length");
		return rc;
	}
	if (rc < 0) {
		rep_cli_why(c, "storing a record: %s", strerror(-rc));
		return rc;
	}
	atomic_fetch_add(&c->n->m.bytes_received, f->len);
	return 0;
}

static int on_end(struct rep_cli *c, const rep_frame *f)
{
	uint64_t len = 0, want = 0, got = 0;
	bool bad = rep_frame_read_end(f, &len) < 0;
	int rc;

	if (c->in_record && c->skip) {
		if (bad || len != c->skip_len ||
		    c->skip_got != len) {
			rep_cli_why(c, "END does not match the record (%" PRIu64
				    " of %" PRIu64 " bytes)", c->skip_got,
				    c->skip_len);
			return -EPROTO;
		}
		c->in_record = false;
		c->skip = false;
		return 0;
	}
	if (c->in_record)
		rep_scratch_receiving(c->sc, &want, &got);
	if (!c->in_record || bad || len != want || got != want) {
		rep_cli_why(c, "END does not match the record (%" PRIu64 " of %"
			PRIu64 " bytes)", got, want);
		return -EPROTO;
	}
	rc = rep_scratch_end(c->sc, c->db, c->kind, c->ts);
	if (rc < 0) {
		rep_cli_why(c, "queueing a record: %s", strerror(-rc));
		return rc;
	}
	c->in_record = false;
	c->db = NULL;
	/* A snapshot replaces the database: applied at once. */
	return c->kind == 1 ? rep_cli_apply(c, false) : 0;
}

static int on_heartbeat(struct rep_cli *c, const rep_frame *f)
{
	char name[REP_NAME_MAX + 1];
	rep_heartbeat hb;
	ltx_pos p;
	int rc = rep_frame_read_heartbeat(f, &hb);

	while (rc == 0 && (rc = rep_frame_heartbeat_next(&hb, name, &p.txid,
							 &p.checksum)) == 1) {
		fs_db *db = fs_mount_db(c->n->mount, name);
		rc = 0;
		note_remote(c->n, name, p,
			    db ? fs_db_pos(db) : (ltx_pos){0, 0}, false);
		/* Idle: checkpoint what a reader that has ended held back. */
		if (db)
			fs_db_apply_checkpoint(db);
	}
	if (rc < 0) {
		rep_cli_why(c, "malformed HEARTBEAT frame (rule F4)");
		return -EPROTO;
	}
	return 0;
}

int rep_cli_on_frame(struct rep_cli *c, const rep_frame *f)
{
	rep_node *n = c->n;

	if (f->type != REP_FRAME_HELLO) {
		uint64_t epoch;
		bool moved;
		pthread_mutex_lock(&n->mu);
		epoch = n->epoch;
		moved = n->role.gen != c->role_gen;
		if (moved && rep_cli_finishing_locked(c, f))
			moved = false, epoch = f->epoch;
		pthread_mutex_unlock(&n->mu);
		if (moved) {
			rep_cli_why(c, "the primary changed");
			return -ESTALE;
		}
		if (f->epoch < epoch) {
			rep_cli_why(c, "frame from epoch %" PRIu64 " after "
				    "epoch %" PRIu64 " was seen; refusing it",
				    f->epoch, epoch);
			return -ESTALE;
		}
	}
	pthread_mutex_lock(&n->mu);
	n->follow.last_frame_ms = lib_clock_wall_ms();
	pthread_mutex_unlock(&n->mu);
	/* Records received are applied before any news about them (as
	 * far as local readers let them). */
	if (f->type != REP_FRAME_BEGIN && f->type != REP_FRAME_DATA &&
	    f->type != REP_FRAME_END) {
		int rc = rep_cli_apply(c, false);
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
		c->got_ready = true;
		rep_cli_tell_ready(c);
		return 0;
	default:
		return -EPROTO;
	}
}
