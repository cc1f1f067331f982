/* The server side's TLS credentials: the holder, its reloads and the
 * check of a client's certificate; see tls.h (rules T1-T3). Loading and
 * checking one set of files is tls_creds.c's. */
#include "tls_i.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gnutls/x509.h>

#include "lib/clock.h"
#include "lib/log.h"

#define RETIRE_S 60             /* T2: a swapped-out set lives this long */
#define RETIRED_MAX 8           /* more swaps than this within RETIRE_S
				 * free the oldest early (reloads are
				 * rare) */
#define WATCH_MS 1000

/* What a file looked like at the last attempt (rule T1's "once per
 * change"). */
struct sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct rep_tls {
	char *cert, *key, *client_ca; /* paths; client_ca "" or set */
	char *ca_pem;                 /* client CA text; NULL: none */
	pthread_mutex_t mu;           /* guards cur, retired, sigs */
	struct rep_tls_creds *cur;
	struct rep_tls_creds *retired[RETIRED_MAX];
	struct sig sigs[3];
	pthread_t watcher;
	bool watching, stop;          /* stop: guarded by mu */
	pthread_cond_t cond;
};

static void sig_of(const char *path, struct sig *s)
{
	struct stat st;

	memset(s, 0, sizeof(*s));
	if (path[0] && stat(path, &st) == 0) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
		s->size = st.st_size;
		s->mtime = st.st_mtim;
	}
}

static bool sig_same(const struct sig *a, const struct sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static void free_tls(rep_tls *t)
{
	rep_tls_creds_free(t->cur);
	for (int i = 0; i < RETIRED_MAX; i++)
		rep_tls_creds_free(t->retired[i]);
	free(t->cert);
	free(t->key);
	free(t->client_ca);
	free(t->ca_pem);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cond);
	free(t);
}

static char *read_text(const char *path)
{
	gnutls_datum_t d = {NULL, 0};
	char *s;

	if (gnutls_load_file(path, &d) < 0)
		return NULL;
	s = malloc(d.size + 1);
	if (s) {
		memcpy(s, d.data, d.size);
		s[d.size] = '\0';
	}
	gnutls_free(d.data);
	return s;
}

int rep_tls_new(const rep_tls_files *f, rep_tls **out)
{
	rep_tls *t = calloc(1, sizeof(*t));
	const char *ca = f->client_ca ? f->client_ca : "";
	int rc;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->cert = strdup(f->cert);
	t->key = strdup(f->key);
	t->client_ca = strdup(ca);
	if (!t->cert || !t->key || !t->client_ca) {
		free_tls(t);
		return -ENOMEM;
	}
	sig_of(t->cert, &t->sigs[0]);
	sig_of(t->key, &t->sigs[1]);
	sig_of(t->client_ca, &t->sigs[2]);
	rc = rep_tls_creds_load(t->cert, "http.tls-cert-file", t->key,
				"http.tls-key-file", t->client_ca, &t->cur);
	if (rc == 0 && ca[0] && !(t->ca_pem = read_text(ca)))
		rc = -ENOMEM;
	if (rc < 0) {
		free_tls(t);
		return rc;
	}
	*out = t;
	return 0;
}

void rep_tls_free(rep_tls *t)
{
	if (!t)
		return;
	if (t->watching) {
		pthread_mutex_lock(&t->mu);
		t->stop = true;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->mu);
		pthread_join(t->watcher, NULL);
	}
	free_tls(t);
}

bool rep_tls_mutual(const rep_tls *t)
{
	return t && t->client_ca[0];
}

const char *rep_tls_client_ca_pem(const rep_tls *t)
{
	return rep_tls_mutual(t) ? t->ca_pem : NULL;
}

/* T2: c joins the retired sets; those past RETIRE_S are freed. Under
 * mu. */
static void retire_locked(rep_tls *t, struct rep_tls_creds *c, int64_t now)
{
	int oldest = 0;

	for (int i = 0; i < RETIRED_MAX; i++) {
		struct rep_tls_creds *r = t->retired[i];
		if (r && now - r->retired_ns > (int64_t)RETIRE_S * 1000000000)
		{
			rep_tls_creds_free(r);
			t->retired[i] = NULL;
		}
	}
	c->retired_ns = now;
	for (int i = 0; i < RETIRED_MAX; i++) {
		if (!t->retired[i]) {
			t->retired[i] = c;
			return;
		}
		if (t->retired[i]->retired_ns < t->retired[oldest]->retired_ns)
			oldest = i;
	}
	/* Full: the newest retired sets are the ones a handshake may still
	 * hold; the oldest goes. */
	rep_tls_creds_free(t->retired[oldest]);
	t->retired[oldest] = c;
}

int rep_tls_reload(rep_tls *t, bool force)
{
	struct sig now[3];
	struct rep_tls_creds *c = NULL;
	char fpr[65];
	int rc;

	sig_of(t->cert, &now[0]);
	sig_of(t->key, &now[1]);
	sig_of(t->client_ca, &now[2]);
	pthread_mutex_lock(&t->mu);
	if (!force && sig_same(&now[0], &t->sigs[0]) &&
	    sig_same(&now[1], &t->sigs[1]) && sig_same(&now[2], &t->sigs[2])) {
		pthread_mutex_unlock(&t->mu);
		return 1;
	}
	memcpy(t->sigs, now, sizeof(now));
	pthread_mutex_unlock(&t->mu);
	rc = rep_tls_creds_load(t->cert, "http.tls-cert-file", t->key,
				"http.tls-key-file", t->client_ca, &c);
	if (rc < 0) {
		log_warn("TLS reload refused: the certificate in use stays "
			 "(the reason is in the line before)");
		return rc;
	}
	snprintf(fpr, sizeof(fpr), "%s", c->fpr);
	pthread_mutex_lock(&t->mu);
	retire_locked(t, t->cur, lib_clock_monotonic_ns());
	t->cur = c;
	pthread_mutex_unlock(&t->mu);
	log_info("TLS reloaded: %s (SHA-256 %s) for new connections",
		 t->cert, fpr);
	return 0;
}

static void *watch_main(void *arg)
{
	rep_tls *t = arg;
	struct timespec ts;

	pthread_mutex_lock(&t->mu);
	while (!t->stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += WATCH_MS / 1000;
		pthread_cond_timedwait(&t->cond, &t->mu, &ts);
		if (t->stop)
			break;
		pthread_mutex_unlock(&t->mu);
		rep_tls_reload(t, false);
		pthread_mutex_lock(&t->mu);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

int rep_tls_watch_start(rep_tls *t)
{
	int rc = pthread_create(&t->watcher, NULL, watch_main, t);

	if (rc != 0) {
		log_error("cannot start the TLS file watcher: %s",
			  strerror(rc));
		return -rc;
	}
	t->watching = true;
	return 0;
}

void rep_tls_attach(rep_tls *t, gnutls_session_t s)
{
	gnutls_session_set_ptr(s, t);
}

int rep_tls_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca,
		     int nreqs, const gnutls_pk_algorithm_t *pk, int npk,
		     gnutls_pcert_st **pcert, unsigned int *npcert,
		     gnutls_privkey_t *key)
{
	rep_tls *t = gnutls_session_get_ptr(s);

	(void)req_ca;
	(void)nreqs;
	(void)pk;
	(void)npk;
	if (!t)
		return -1;
	pthread_mutex_lock(&t->mu);
	*pcert = t->cur->pcert;
	*npcert = t->cur->npcert;
	*key = t->cur->key;
	pthread_mutex_unlock(&t->mu);
	return 0;
}

/* The peer's chain as certificates (DER from the handshake). */
static int peer_chain(gnutls_session_t s, gnutls_x509_crt_t *crts,
		      unsigned *n, unsigned max)
{
	unsigned got = 0;
	const gnutls_datum_t *d = gnutls_certificate_get_peers(s, &got);

	*n = 0;
	if (!d || got == 0)
		return -ENOENT;
	for (unsigned i = 0; i < got && i < max; i++) {
		if (gnutls_x509_crt_init(&crts[i]) < 0)
			return -ENOMEM;
		(*n)++;
		if (gnutls_x509_crt_import(crts[i], &d[i],
					   GNUTLS_X509_FMT_DER) < 0)
			return -EINVAL;
	}
	return 0;
}

int rep_tls_verify_peer(rep_tls *t, gnutls_session_t s, char *why,
			size_t len)
{
	gnutls_x509_crt_t crts[16];
	gnutls_typed_vdata_st purpose = {
		.type = GNUTLS_DT_KEY_PURPOSE_OID,
		.data = (void *)GNUTLS_KP_TLS_WWW_CLIENT,
	};
	gnutls_datum_t text = {NULL, 0};
	unsigned n = 0, status = 0;
	int rc = s ? peer_chain(s, crts, &n, 16) : -ENOENT;

	if (rc == -ENOENT) {
		snprintf(why, len, "no client certificate");
		goto out;
	}
	if (rc < 0) {
		snprintf(why, len, "a client certificate that cannot be "
			 "read");
		goto out;
	}
	pthread_mutex_lock(&t->mu);
	rc = gnutls_x509_trust_list_verify_crt2(t->cur->ca, crts, n,
						&purpose, 1, 0, &status, NULL);
	pthread_mutex_unlock(&t->mu);
	if (rc < 0 || status != 0) {
		if (rc == 0 && gnutls_certificate_verification_status_print(
				       status, GNUTLS_CRT_X509, &text, 0) == 0)
			snprintf(why, len, "client certificate: %s",
				 (char *)text.data);
		else
			snprintf(why, len, "client certificate not verified");
		for (size_t l = strlen(why); l > 0 && why[l - 1] == ' ';)
			why[--l] = '\0';
		gnutls_free(text.data);
		rc = -EACCES;
		goto out;
	}
	rc = 0;
out:
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	return rc == 0 ? 0 : -EACCES;
}
