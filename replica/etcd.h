/*
 * A small etcd v3 client over the JSON gateway (HTTP/1.1, libcurl,
 * jansson): leases, create-if-absent transactions, reads and watches of
 * single keys. Just what the etcd lease (lease_etcd.c) needs.
 *
 * The gateway's conventions: POST /v3/<service>/<method> with a JSON
 * body; keys and values are base64; 64-bit integers travel as decimal
 * strings (lease IDs exceed 2^53, so they are never parsed as doubles);
 * an error is {"error", "code" (gRPC code), "message"}. Streaming calls
 * (watch, keepalive) answer with newline-separated {"result": ...}
 * objects.
 *
 * Several endpoints: a request that cannot reach one (connection error,
 * timeout, HTTP 5xx that is not an etcd error) moves on to the next, each
 * endpoint tried once per request; the one that answered is kept for the
 * next request. With a user name, /v3/auth/authenticate gives a token
 * sent in the Authorization header; an answer saying the token is invalid
 * re-authenticates once.
 *
 * https endpoints are verified against lease.etcd.tls-ca-file (or the
 * system store) and may present a client certificate (rep_etcd_set_tls).
 *
 * Thread safety: one rep_etcd may be used from several threads (each
 * request has its own curl handle; the endpoint index and token are
 * guarded by a mutex; the TLS settings are fixed before the first
 * request).
 */
#ifndef REPLICA_ETCD_H
#define REPLICA_ETCD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rep_etcd rep_etcd;

/* One key's state. value is NUL-terminated and owned (free with
 * rep_etcd_kv_clear). */
typedef struct rep_etcd_kv {
	bool found;
	int64_t create_rev;
	int64_t mod_rev;
	int64_t lease;
	char *value;
	size_t len;
} rep_etcd_kv;

void rep_etcd_kv_clear(rep_etcd_kv *kv);

/* endpoints: n base URLs ("http://host:port"). user "" or NULL: no
 * authentication. */
int rep_etcd_new(char *const *endpoints, size_t n, const char *user,
		 const char *password, rep_etcd **out);
void rep_etcd_free(rep_etcd *e);

/* TLS for https endpoints, before the first request. ca: PEM file of the
 * CA(s) the server's certificate must chain to (NULL or "": the system
 * store); cert and key: a client certificate and its key (both or
 * neither). The server's certificate and its name are always verified;
 * nothing turns that off. A request that fails in TLS is logged at warn
 * level with libcurl's reason (at most every 10 s). Returns 0, -EINVAL
 * (cert without key) or -ENOMEM. */
int rep_etcd_set_tls(rep_etcd *e, const char *ca, const char *cert,
		     const char *key);

/* Requests that failed (no endpoint answered, refused credentials, an
 * etcd error or an answer not understood; not -ENOENT or -ESTALE) since
 * rep_etcd_new. */
uint64_t rep_etcd_errors(rep_etcd *e);

/* Every call below returns 0, -ENOENT where said, -EACCES (refused
 * credentials), -ETIMEDOUT or -ECONNREFUSED (no endpoint answered),
 * -EPROTO (an answer it cannot understand) or -EIO (another etcd error,
 * logged). timeout_ms bounds each endpoint's attempt. */

/* Grants a lease of ttl_s seconds: *id, and the TTL etcd granted. */
int rep_etcd_grant(rep_etcd *e, int64_t ttl_s, int64_t timeout_ms,
		   int64_t *id /* out */, int64_t *ttl /* out */);
/* Renews a lease once; -ENOENT when the lease is gone (an answer without
 * a TTL). */
int rep_etcd_keepalive(rep_etcd *e, int64_t id, int64_t timeout_ms,
		       int64_t *ttl /* out */);
/* Revokes a lease (its keys are deleted); -ENOENT when already gone. */
int rep_etcd_revoke(rep_etcd *e, int64_t id, int64_t timeout_ms);

/* Creates key = value (attached to lease unless 0) only if the key does
 * not exist (compare create_revision == 0). *created says which; *kv is
 * the key as it now is (ours, create_rev = the transaction's revision,
 * or the existing one). */
int rep_etcd_create(rep_etcd *e, const char *key, const char *value,
		    int64_t lease, int64_t timeout_ms, bool *created /* out */,
		    rep_etcd_kv *kv /* out */);
/* Deletes key only if its create_revision is create_rev; *deleted says
 * whether it did. */
int rep_etcd_delete_if(rep_etcd *e, const char *key, int64_t create_rev,
		       int64_t timeout_ms, bool *deleted /* out */);
/* Reads key: kv->found false when absent. *rev (may be NULL): the store
 * revision of the answer. */
int rep_etcd_get(rep_etcd *e, const char *key, int64_t timeout_ms,
		 rep_etcd_kv *kv /* out */, int64_t *rev /* out */);

/* Puts key = value (attached to lease unless 0), whatever was there. */
int rep_etcd_put(rep_etcd *e, const char *key, const char *value,
		 int64_t lease, int64_t timeout_ms);
/* Every key that starts with prefix (not empty), in key order: *out
 * (malloc'd, each cleared with rep_etcd_kv_clear, then freed) and *n. */
int rep_etcd_range(rep_etcd *e, const char *prefix, int64_t timeout_ms,
		   rep_etcd_kv **out, size_t *n);

enum rep_etcd_event { REP_ETCD_PUT = 0, REP_ETCD_DELETE = 1 };

/* Called for each event; returns true to end the watch. kv is valid only
 * during the call. */
typedef bool (*rep_etcd_watch_fn)(void *ctx, int type, const rep_etcd_kv *kv,
				  int64_t rev);

/* Watches key from start_rev (the revision after the one last seen) for
 * at most max_ms, or until fn returns true or *cancel becomes true.
 * Returns 0 then; -ESTALE when start_rev was compacted (read the key
 * again); errors as above. */
int rep_etcd_watch(rep_etcd *e, const char *key, int64_t start_rev,
		   int64_t max_ms, rep_etcd_watch_fn fn, void *ctx,
		   const atomic_bool *cancel);

/* Base64 (RFC 4648, padded), exposed for the unit tests. encode: out has
 * room for 4 * ((n + 2) / 3) + 1 bytes. decode: returns the length, or
 * -EBADMSG; out has room for 3 * (strlen(in) / 4) + 1 bytes. */
void rep_base64_encode(const uint8_t *in, size_t n, char *out);
int64_t rep_base64_decode(const char *in, uint8_t *out);

#endif
