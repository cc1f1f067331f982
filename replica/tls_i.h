/*
 * Inside replica/tls: one loaded set of credentials (tls_creds.c), which
 * the holder (tls.c) swaps.
 */
#ifndef REPLICA_TLS_I_H
#define REPLICA_TLS_I_H

#include <stdint.h>

#include <gnutls/x509.h>

#include "tls.h"

/* One loaded set: the chain and key handed to GnuTLS, the client CA. */
struct rep_tls_creds {
	gnutls_pcert_st *pcert;
	unsigned npcert;
	gnutls_privkey_t key;
	gnutls_x509_trust_list_t ca; /* NULL: not mutual */
	char fpr[65];
	int64_t retired_ns;          /* CLOCK_MONOTONIC, 0: current */
};

/* Loads and checks cert (named ckey in messages), key (kkey) and, when
 * set, client_ca (T1; each failure logged in one line naming the key).
 * 0, or -errno and *out NULL. Freed with rep_tls_creds_free (NULL: a
 * no-op). */
int rep_tls_creds_load(const char *cert, const char *ckey, const char *key,
		       const char *kkey, const char *client_ca,
		       struct rep_tls_creds **out);
void rep_tls_creds_free(struct rep_tls_creds *c);

#endif
