/*
 * Internals of the HTTP server (server.c: the route table and the
 * dispatch) shared with the files that hold handlers of its routes
 * (xfer_srv.c: /export and /import; stream_srv.c: /stream).
 */
#ifndef REPLICA_SERVER_I_H
#define REPLICA_SERVER_I_H

#include <microhttpd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "node_i.h"

/* One request's state, from its headers to its completion. */
typedef struct rep_req {
	const struct rep_route *route; /* NULL: no such path */
	int fd;                  /* POST body, or -1 */
	uint64_t size;           /* body bytes received */
	bool failed;             /* answered already (refused early) */
	/* The upload failed while it arrived (the data directory full,
	 * http.max-import-size passed): its file is gone, the rest of the
	 * body is read and dropped, and this is the answer at its end. */
	unsigned status;
	char why[300];
} rep_req;

/* A route's handler: answers the request (exactly one response queued,
 * or MHD_NO to close the connection). */
typedef enum MHD_Result (*rep_route_fn)(rep_node *n, struct MHD_Connection *c,
					rep_req *q);

enum rep_method {
	REP_M_GET = 1 << 0,
	REP_M_HEAD = 1 << 1,
	REP_M_POST = 1 << 2,
};

/* Which bearer token a route needs (when http.token is set). */
enum rep_auth {
	REP_AUTH_NONE = 0,       /* probes: none */
	REP_AUTH_METRICS = 1,    /* the cluster token or http.metrics-token;
				  * none with http.metrics-auth: none */
	REP_AUTH_CLUSTER = 2,    /* the cluster token only */
};

typedef struct rep_route {
	const char *path;
	unsigned methods;        /* enum rep_method */
	int auth;                /* enum rep_auth */
	bool peer;               /* mutual TLS: needs a verified client
				  * certificate (server_tls.c, S2) */
	bool body;               /* takes a request body: early refuses
				  * it before it is read, upload stores
				  * each piece */
	rep_route_fn handler;
	rep_route_fn early;
	void (*upload)(rep_node *n, struct MHD_Connection *c, rep_req *q,
		       const char *data, size_t len);
} rep_route;

/* The route of path (NULL: none), and whether method may call it: 0,
 * 404 (no such path) or 405 (another method). */
unsigned rep_route_match(const char *method, const char *path,
			 const rep_route **out);

enum MHD_Result rep_reply_text(struct MHD_Connection *c, unsigned status,
			       const char *ctype, const char *text);
/* A one-line text/plain error, "\n" added. */
enum MHD_Result rep_reply_err(struct MHD_Connection *c, unsigned status,
			      const char *msg);
/* A database name as the API takes it (docs/PROTOCOL.md, "Database
 * names"). */
bool rep_valid_db_name(const char *s);
/* A query argument, or NULL. */
const char *rep_arg(struct MHD_Connection *c, const char *name);

/* server_tls.c: the daemon's options for TLS and its log (into o, up
 * to max items, MHD_OPTION_END last; *flags gets MHD_USE_TLS), and the
 * check of rule S2 (false: refused and logged; the caller answers). */
int rep_server_tls_options(rep_node *n, struct MHD_OptionItem *o,
			   size_t max, unsigned *flags);
bool rep_server_peer_ok(rep_node *n, struct MHD_Connection *c,
			const char *method, const char *url);
/* MHD_OPTION_EXTERNAL_LOGGER with the node as cls (rule S3). */
void rep_server_mhd_log(void *cls, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* sync.c: POST /ack (sync.h, Y1). */
enum MHD_Result rep_sync_ack_handler(rep_node *n, struct MHD_Connection *c,
				     rep_req *q);

/* xfer_srv.c */
enum MHD_Result rep_export_handler(rep_node *n, struct MHD_Connection *c,
				   rep_req *q);
enum MHD_Result rep_import_handler(rep_node *n, struct MHD_Connection *c,
				   rep_req *q);
enum MHD_Result rep_import_early(rep_node *n, struct MHD_Connection *c,
				 rep_req *q);
void rep_import_upload(rep_node *n, struct MHD_Connection *c, rep_req *q,
		       const char *data, size_t len);

#endif
