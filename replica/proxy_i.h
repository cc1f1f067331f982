/*
 * Internals of the proxy, shared by proxy.c (life cycle, listener,
 * connections, the primary's proxy URL, metrics) and proxy_serve.c (one
 * client connection: each request's route and its exchange).
 *
 * Lock order: rep_proxy.mu and px_pool.mu are leaves (nothing is called
 * with either held).
 */
#ifndef REPLICA_PROXY_I_H
#define REPLICA_PROXY_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy.h"
#include "proxy_http.h"
#include "proxy_pool.h"

/* How a request was served (ltxfs_proxy_requests_total{kind}). */
enum px_kind {
	PX_LOCAL_READ = 0,       /* read, local application */
	PX_WAITED_READ,          /* read that waited for its cookie */
	PX_FORWARDED_READ,       /* read sent to the primary */
	PX_FORWARDED_WRITE,      /* write sent to the primary */
	PX_LOCAL_WRITE,          /* write on the primary (cookie set) */
	PX_PASSTHROUGH,          /* proxy.passthrough */
	PX_UPGRADE,              /* WebSocket and other upgrades */
	PX_REFUSED,              /* answered by the proxy: 4xx, 5xx */
	PX_KIND_COUNT
};

#define PX_LAT_BUCKETS 14
extern const double px_lat_bounds_ms[PX_LAT_BUCKETS];

typedef struct px_hist {
	atomic_uint_fast64_t count, sum_us, bucket[PX_LAT_BUCKETS + 1];
} px_hist;

typedef struct px_metrics {
	atomic_uint_fast64_t requests[PX_KIND_COUNT];
	atomic_uint_fast64_t read_waits, read_wait_timeouts;
	atomic_uint_fast64_t status_400, status_401, status_502, status_503;
	atomic_uint_fast64_t conns_refused;  /* over proxy.max-connections */
	atomic_uint_fast64_t conns_accepted; /* client connections */
	/* Connections forwarded requests went on: opened for them, taken
	 * from the pool, the client connection's own kept one. */
	atomic_uint_fast64_t fwd_new, fwd_pooled, fwd_kept;
	atomic_int conns;
	px_hist forward;                     /* forwarded: to the head */
	px_hist wait;                        /* cookie waits */
} px_metrics;

/* A connection's sockets, for rep_proxy_stop to shut down. */
enum { PX_FD_CLIENT = 0, PX_FD_LOCAL = 1, PX_FD_FWD = 2, PX_NFDS = 3 };
typedef struct px_slot {
	bool used;
	int fd[PX_NFDS];
} px_slot;

struct rep_proxy {
	rep_proxy_opts o;        /* strings owned */
	rep_node *node;
	fs_mount *mount;         /* set by start */
	int lfd;
	char url[300];           /* advertised (/info "proxy".url) */
	char thost[256], tport[16]; /* proxy.target */
	pthread_t acceptor;
	bool started;
	pthread_attr_t attr;     /* connection threads: detached, small */
	px_pool *pool;           /* to other nodes' proxies */

	pthread_mutex_t mu;      /* guards below */
	pthread_cond_t cond;     /* nconns reached 0 */
	bool stopping;
	int nconns;
	px_slot *slots;          /* max_conns */
	char primary_node[512];  /* the node URL the cache is for */
	char primary_proxy[512]; /* its proxy's URL ("" unknown) */

	px_metrics m;            /* atomics */
};

/* proxy.c */
bool rep_proxy_stopping(rep_proxy *p);
/* Records fd as socket i of slot (-1: none) for rep_proxy_stop. */
void rep_proxy_slot_fd(rep_proxy *p, int slot, int i, int fd);
/* The primary's proxy URL into buf: 0; -ENOENT no primary known,
 * -EHOSTUNREACH its /info could not be reached (a primary stopped),
 * -EPROTO /info answered but not 200 (e.g. 401: a token mismatch),
 * -ENXIO it runs no proxy (why: one line). */
int rep_proxy_primary(rep_proxy *p, char *buf, size_t len, char *why,
		      size_t whylen);
/* Forgets the primary's proxy URL (it could not be reached). */
void rep_proxy_primary_forget(rep_proxy *p);
void px_hist_observe(px_hist *h, double ms);
/* Connects to host:port within proxy.connect-timeout: fd or -errno. */
int rep_proxy_connect(rep_proxy *p, const char *host, const char *port);

/* proxy_serve.c: serves client connection fd (slot's) until it ends;
 * closes it. peer: the client's address. */
void rep_proxy_serve(rep_proxy *p, int slot, int fd, const char *peer);

#endif
