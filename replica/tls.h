/*
 * TLS of the node API's server side (http.tls-cert-file, tls-key-file,
 * tls-client-ca-file; docs/CONFIG.md, docs/PROTOCOL.md "TLS"): the
 * certificate, its key and the client CA, loaded and checked with
 * GnuTLS (as libmicrohttpd uses it), held where they can be swapped.
 *
 *   rep_tls_new(&files, &t);        // checks, one line naming the key
 *   MHD: MHD_OPTION_HTTPS_CERT_CALLBACK rep_tls_retrieve, and for each
 *        connection rep_tls_attach(t, session) before its handshake
 *   rep_tls_watch_start(t);         // files checked once a second
 *   rep_tls_reload(t, true);        // SIGHUP
 *   rep_tls_verify_peer(t, s, ...); // a route that needs a client cert
 *   rep_tls_free(t);                // after the server stopped
 *
 * Rules:
 *   T1. A file missing or unreadable, a key that is not the
 *       certificate's, a certificate outside its validity dates: refused
 *       with one line naming the config key, the file and (dates) both
 *       dates. At start-up that stops the node; at a reload the
 *       credentials in use stay (the failure is logged once per change
 *       of the files).
 *   T2. A reload swaps the credentials for new handshakes only; a
 *       connection already set up keeps its session. A set swapped out
 *       is freed RETIRE_S later (a handshake under way may hold it), or
 *       at rep_tls_free.
 *   T3. rep_tls_verify_peer accepts a client only with a certificate
 *       chain that the client CA signed, valid now, for client
 *       authentication (or no key purpose at all); otherwise why says
 *       what was wrong.
 *
 * Thread safety: every function but _new/_free may be called from any
 * thread; mu guards the current set and the retired ones.
 */
#ifndef REPLICA_TLS_H
#define REPLICA_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

typedef struct rep_tls rep_tls;

/* The files; "" or NULL unset. cert and key go together. */
typedef struct rep_tls_files {
	const char *cert, *key;   /* http.tls-cert-file, tls-key-file */
	const char *client_ca;    /* http.tls-client-ca-file */
} rep_tls_files;

/* Loads and checks f (T1). 0; -EINVAL, -ENOENT, -EACCES or -ENOMEM
 * with the reason logged. */
int rep_tls_new(const rep_tls_files *f, rep_tls **out);
void rep_tls_free(rep_tls *t);

/* Whether client certificates are asked for (tls-client-ca-file set). */
bool rep_tls_mutual(const rep_tls *t);
/* The client CA file's PEM text (for MHD_OPTION_HTTPS_MEM_TRUST, which
 * makes libmicrohttpd ask for client certificates), owned by t; NULL
 * when not mutual. */
const char *rep_tls_client_ca_pem(const rep_tls *t);

/* Re-reads the files when they changed since the last attempt (size,
 * time, inode), or always with force. 0: swapped; 1: unchanged; < 0:
 * refused (T1), the old credentials stay. */
int rep_tls_reload(rep_tls *t, bool force);
/* A thread that calls rep_tls_reload(t, false) once a second until
 * rep_tls_free. 0 or -errno. */
int rep_tls_watch_start(rep_tls *t);

/* Ties a session to t before its handshake (gnutls_session_set_ptr). */
void rep_tls_attach(rep_tls *t, gnutls_session_t s);
/* gnutls_certificate_retrieve_function2: the current certificate of
 * the t the session was attached to. */
int rep_tls_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca,
		     int nreqs, const gnutls_pk_algorithm_t *pk, int npk,
		     gnutls_pcert_st **pcert, unsigned int *npcert,
		     gnutls_privkey_t *key);

/* T3: 0 when the session's client presented a certificate the client
 * CA vouches for; -EACCES with the reason in why otherwise. */
int rep_tls_verify_peer(rep_tls *t, gnutls_session_t s, char *why,
			size_t len);

/* T1 for a certificate and key pair of the client side
 * (http.tls-client-cert-file, -key-file): names are the config keys. */
int rep_tls_check_pair(const char *cert, const char *cert_key,
		       const char *key, const char *key_key);

#endif
