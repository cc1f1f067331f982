/*
 * Kept connections from the proxy to other nodes' proxies (in practice
 * the primary's): a forwarded request takes one instead of connecting,
 * which saves a round trip (the TCP handshake) across regions, even
 * when each client opens a new connection per request. A leaf: it
 * holds file descriptors, nothing of HTTP.
 *
 * Rules (proxy_serve.c keeps K3 and K4):
 *   K1. At most PX_POOL_MAX idle connections, each with the URL it is
 *       connected to and the time it went idle; giving one to a full
 *       pool closes the oldest.
 *   K2. An idle connection older than the pool's idle limit (half of
 *       proxy.idle-timeout, so that the other side, which closes idle
 *       clients after its own proxy.idle-timeout, has not closed it)
 *       is closed, not taken; so is one that is readable when taken
 *       (the other side closed it, or sent bytes nobody asked for).
 *       Old ones are closed whenever the pool is used.
 *   K3. Only connections at a message boundary are given back: the
 *       last answer read whole, and kept alive by the other side.
 *   K4. A request sent on a kept connection (taken from the pool, or
 *       the client connection's own) that fails before any byte of the
 *       answer arrived is sent again on a new connection, once, only
 *       when it can be sent again whole: its body was all in the
 *       proxy's buffer, none of it streamed from the client. Else the
 *       client gets 502.
 *
 * Lock: px_pool.mu, a leaf.
 */
#ifndef REPLICA_PROXY_POOL_H
#define REPLICA_PROXY_POOL_H

#include <stdint.h>

#define PX_POOL_MAX 16

typedef struct px_pool px_pool;

/* idle_ms: K2's limit (> 0). 0 or -ENOMEM. */
int px_pool_new(int64_t idle_ms, px_pool **out);
/* A kept connection to url (K2): its fd, the caller's now; or -1. */
int px_pool_take(px_pool *pl, const char *url);
/* Keeps fd (connected to url, at a message boundary: K3); the pool
 * owns it from now on. */
void px_pool_give(px_pool *pl, const char *url, int fd);
/* Closes every kept connection. */
void px_pool_clear(px_pool *pl);
/* Clears and frees; NULL is a no-op. */
void px_pool_free(px_pool *pl);

#endif
