/*
 * The write-forwarding HTTP proxy (docs/PROTOCOL.md, "The proxy";
 * docs/CONFIG.md, `proxy:`): a listener of its own in front of the
 * application. Reads are served by the local application, after waiting
 * for the client's last write (the consistency cookie); writes on a
 * replica go to the primary's proxy; writes on the primary go to the
 * local application and get the cookie.
 *
 * Life cycle (cmd/mount_cmd.c):
 *   rep_proxy_new(&opts, node, &p);  // checks, binds, adds its part
 *                                    // of /metrics and /info
 *   rep_node_start(node, mount);
 *   rep_proxy_start(p, mount);       // accepts
 *   ...
 *   rep_proxy_stop(p);               // before rep_node_stop
 *   rep_node_stop(node); ... rep_node_free(node);
 *   rep_proxy_free(p);               // after the node's server is gone
 */
#ifndef REPLICA_PROXY_H
#define REPLICA_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "fs/mount.h"
#include "http_client.h"
#include "node.h"

/* The consistency cookie's name and the headers of a forwarded request
 * (docs/PROTOCOL.md). */
#define REP_PROXY_COOKIE "__ltxfs_txid"
#define REP_PROXY_H_FORWARDED "Ltxfs-Forwarded"
#define REP_PROXY_H_AUTH "Ltxfs-Authorization"

typedef struct rep_proxy rep_proxy;

typedef struct rep_proxy_opts {
	const char *addr;            /* listen, [host]:port */
	const char *target;          /* the application, host:port */
	const char *db;              /* the database of the cookie */
	const char *advertise;       /* http://host:port others reach this
				      * proxy at; "": node_url's host with
				      * addr's port */
	const char *node_url;        /* lease.advertise-url ("" unset) */
	const char *hostname;        /* when neither says a host */
	const char *token;           /* http.token ("" none) */
	rep_http_tls tls;            /* reaching other nodes' /info */
	uint64_t node_id;
	int64_t max_lag_ms;          /* 0: reads never forwarded for lag */
	int64_t read_timeout_ms;     /* the cookie's wait */
	int64_t connect_timeout_ms;
	int64_t idle_timeout_ms;     /* a client's keep-alive connection */
	int max_conns;
	char *const *passthrough;    /* fnmatch patterns of paths */
	size_t npassthrough;
	char *const *always_forward;
	size_t nalways_forward;
} rep_proxy_opts;

/* Checks o, binds o->addr and registers with the node (rep_node_ext_add:
 * before rep_node_start). 0, or -errno with the reason logged. */
int rep_proxy_new(const rep_proxy_opts *o, rep_node *n, rep_proxy **out);
/* Serves (m: the mount, for the cookie's database). */
int rep_proxy_start(rep_proxy *p, fs_mount *m);
/* Closes the listener and every connection; returns when no request
 * is being served. */
void rep_proxy_stop(rep_proxy *p);
void rep_proxy_free(rep_proxy *p);

#endif
