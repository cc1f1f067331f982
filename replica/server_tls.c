/*
 * The HTTP server's TLS (docs/PROTOCOL.md, "TLS"), and libmicrohttpd's
 * own messages.
 *
 * Rules:
 *   S1. With http.tls-cert-file the server speaks only HTTPS
 *       (libmicrohttpd over GnuTLS); each handshake takes the
 *       certificate in use at that moment (tls.h, T2): a connection
 *       gets its session tied to the node's credentials as it is
 *       accepted, before the handshake.
 *   S2. With http.tls-client-ca-file the server asks every client for
 *       a certificate; a route that needs a verified peer (the route
 *       table's peer column: all but /healthz, /readyz, /info and
 *       /metrics) refuses a client without one the CA vouches for with
 *       403 and a log line naming the peer and the reason, from the
 *       headers, before any byte of a database is read or sent.
 *   S3. libmicrohttpd's messages (failed handshakes among them) go to
 *       the log at warn level, at most LOG_PER_S lines a second; the
 *       number dropped is logged with the next line that passes.
 *   S4. TLS 1.2 and 1.3 with GnuTLS's default algorithms, AES-128-GCM
 *       preferred by the server (PRIORITIES).
 */
#include "server_i.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "tls.h"

#define LOG_PER_S 10u
/* GnuTLS's defaults, but AES-128-GCM first, chosen by the server: a
 * client (OpenSSL's libcurl) asks for AES-256-GCM first, which cost the
 * primary about a third more CPU per byte streamed (docs/BENCHMARKS.md,
 * "TLS"); AES-128 is a sound cipher for this. */
#define PRIORITIES                                                     \
	"NORMAL:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:" \
	"+AES-128-CCM:+AES-256-CCM:%SERVER_PRECEDENCE"

/* S3 */
void rep_server_mhd_log(void *cls, const char *fmt, va_list ap)
{
	rep_node *n = cls;
	int64_t now = lib_clock_monotonic_ns();
	unsigned dropped = 0;
	char line[600];
	size_t len;

	pthread_mutex_lock(&n->mhd_log.mu);
	if (now - n->mhd_log.window_ns >= 1000000000) {
		n->mhd_log.window_ns = now;
		n->mhd_log.count = 0;
	}
	if (n->mhd_log.count >= LOG_PER_S) {
		n->mhd_log.dropped++;
		pthread_mutex_unlock(&n->mhd_log.mu);
		return;
	}
	n->mhd_log.count++;
	dropped = n->mhd_log.dropped;
	n->mhd_log.dropped = 0;
	pthread_mutex_unlock(&n->mhd_log.mu);
	vsnprintf(line, sizeof(line), fmt, ap);
	len = strlen(line);
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == ' '))
		line[--len] = '\0';
	if (dropped)
		log_warn("libmicrohttpd: %s (%u more messages dropped before "
			 "this one)", line, dropped);
	else
		log_warn("libmicrohttpd: %s", line);
}

/* S1: the session of a new connection gets the node's credentials. */
static void on_connection(void *cls, struct MHD_Connection *c,
			  void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	rep_node *n = cls;
	const union MHD_ConnectionInfo *ci;

	(void)socket_context;
	if (code != MHD_CONNECTION_NOTIFY_STARTED || !n->tls)
		return;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (ci && ci->tls_session)
		rep_tls_attach(n->tls, ci->tls_session);
}

int rep_server_tls_options(rep_node *n, struct MHD_OptionItem *o,
			   size_t max, unsigned *flags)
{
	size_t i = 0;

	if (max < 5)
		return -EINVAL;
	if (n->tls) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
		    MHD_is_feature_supported(
			    MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES) {
			log_error("http.tls-cert-file is set but this "
				  "libmicrohttpd was built without TLS "
				  "(GnuTLS) or its certificate callback");
			return -ENOTSUP;
		}
		*flags |= MHD_USE_TLS;
		o[i++] = (struct MHD_OptionItem){
			MHD_OPTION_HTTPS_CERT_CALLBACK, 0,
			(void *)rep_tls_retrieve};
		o[i++] = (struct MHD_OptionItem){
			MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection,
			n};
		o[i++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES,
						 0, (void *)PRIORITIES};
		if (rep_tls_mutual(n->tls))
			o[i++] = (struct MHD_OptionItem){
				MHD_OPTION_HTTPS_MEM_TRUST, 0,
				(void *)rep_tls_client_ca_pem(n->tls)};
	}
	o[i] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	return 0;
}

bool rep_server_peer_ok(rep_node *n, struct MHD_Connection *c,
			const char *method, const char *url)
{
	const union MHD_ConnectionInfo *ci;
	char why[300], peer[64] = "?";

	if (!rep_tls_mutual(n->tls))
		return true;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (rep_tls_verify_peer(n->tls, ci ? ci->tls_session : NULL, why,
				sizeof(why)) == 0)
		return true;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr)
		rep_peer_text(ci->client_addr, peer, sizeof(peer));
	atomic_fetch_add(&n->m.unauthorized, 1);
	log_warn("refused %s %s from %s: %s (403; http.tls-client-ca-file)",
		 method, url, peer, why);
	return false;
}
