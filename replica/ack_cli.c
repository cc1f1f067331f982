/*
 * A replica's acknowledgements (sync.h, docs/SYNC.md): once the stream
 * client has made records durable in a database's LTX log (fsynced),
 * it notes the log's position here; one thread sends every position
 * noted since its last request in one POST /ack to the primary, on one
 * kept-alive connection. This is the replica's half of group commit:
 * one fsync per log per batch applied, one request for every database.
 *
 * Rules:
 *   A1 a position is noted only after the log's fsync, and only for a
 *      stream whose primary asked (REP_HDR_SYNC); it carries that
 *      stream's epoch (the primary refuses another, 409).
 *   A2 a failed request keeps the positions (the next one carries them
 *      or newer ones) and is retried after ACK_RETRY_MS; 409 drops them
 *      (a new primary asks anew). The log says so once per change.
 *   A3 rep_ack_target(NULL) (the stream ended) drops what is pending.
 */
#include "ack_cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "lib/log.h"
#include "node_i.h"

#define ACK_RETRY_MS 20
#define ACK_TIMEOUT_MS 5000L
#define ACK_DBS_MAX 256

struct pending {
	char db[REP_NAME_MAX + 1];
	ltx_pos pos;
	bool dirty;
};

struct rep_ack_cli {
	rep_node *n;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;      /* guards everything below */
	pthread_cond_t cond;
	bool stop;
	char url[REP_URL_MAX + 1]; /* "" none (A3) */
	uint64_t epoch;
	struct pending dbs[ACK_DBS_MAX];
	size_t ndbs;
	bool failing;            /* A2: said in the log */
};

int rep_ack_cli_new(rep_node *n, rep_ack_cli **out)
{
	rep_ack_cli *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (!a)
		return -ENOMEM;
	a->n = n;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cond, NULL);
	*out = a;
	return 0;
}

void rep_ack_target(rep_ack_cli *a, const char *url, uint64_t epoch)
{
	pthread_mutex_lock(&a->mu);
	snprintf(a->url, sizeof(a->url), "%s", url ? url : "");
	a->epoch = epoch;
	a->ndbs = 0;
	pthread_mutex_unlock(&a->mu);
}

static void *ack_main(void *arg);

void rep_ack_note(rep_ack_cli *a, const char *db, ltx_pos pos)
{
	size_t i;

	pthread_mutex_lock(&a->mu);
	if (!a->url[0]) {
		pthread_mutex_unlock(&a->mu);
		return;
	}
	if (!a->started && pthread_create(&a->thread, NULL, ack_main, a) == 0)
		a->started = true;
	for (i = 0; i < a->ndbs; i++)
		if (strcmp(a->dbs[i].db, db) == 0)
			break;
	if (i == a->ndbs && a->ndbs < ACK_DBS_MAX) {
		snprintf(a->dbs[i].db, sizeof(a->dbs[i].db), "%s", db);
		a->ndbs++;
	}
	if (i < a->ndbs) {
		a->dbs[i].pos = pos;
		a->dbs[i].dirty = true;
		pthread_cond_signal(&a->cond);
	}
	pthread_mutex_unlock(&a->mu);
}

/* mu held: the request's URL for every dirty position (cleared), or
 * NULL when none is dirty. */
static char *build_url_locked(rep_ack_cli *a, CURL *c)
{
	size_t cap = strlen(a->url) + 128, len;
	char *u = malloc(cap), *p;
	bool any = false;

	if (!u)
		return NULL;
	len = (size_t)snprintf(u, cap, "%s/ack?node=%016" PRIx64 "&epoch=%"
			       PRIu64, a->url, a->n->o.node_id, a->epoch);
	for (size_t i = 0; i < a->ndbs; i++) {
		char pos[LTX_POS_STRLEN + 1], *name;
		size_t need;
		if (!a->dbs[i].dirty)
			continue;
		name = curl_easy_escape(c, a->dbs[i].db, 0);
		if (!name)
			continue;
		ltx_pos_format(a->dbs[i].pos, pos);
		need = len + strlen(name) + sizeof(pos) + 16;
		if (need > cap) {
			cap = need * 2;
			p = realloc(u, cap);
			if (!p) {
				curl_free(name);
				break;
			}
			u = p;
		}
		/* NAME/TXID/CHECKSUM, the slashes left as they are. */
		len += (size_t)snprintf(u + len, cap - len, "&pos=%s/%s", name,
					pos);
		curl_free(name);
		a->dbs[i].dirty = false;
		any = true;
	}
	if (!any) {
		free(u);
		return NULL;
	}
	return u;
}

/* mu held: the positions of a failed request are sent again (A2). */
static void redirty_locked(rep_ack_cli *a)
{
	for (size_t i = 0; i < a->ndbs; i++)
		a->dbs[i].dirty = true;
}

static long post(rep_ack_cli *a, CURL *c, const char *url, char *err,
		 size_t errlen)
{
	rep_http_tls tls = rep_node_client_tls(a->n);
	struct curl_slist *hdrs = NULL;
	rep_http_body body = REP_HTTP_BODY_INIT(512, false);
	char cerr[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURLcode cc;

	if (rep_http_bearer(&hdrs, a->n->o.http.token) < 0) {
		snprintf(err, errlen, "out of memory");
		return 0;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ACK_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_QUICK_EXIT, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rep_http_collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	rep_http_tls_apply(c, &tls);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	else
		snprintf(err, errlen, "%s", cerr[0] ? cerr
						    : curl_easy_strerror(cc));
	if (cc == CURLE_OK && status != 204)
		snprintf(err, errlen, "HTTP %ld: %s", status,
			 rep_http_body_text(&body));
	curl_slist_free_all(hdrs);
	rep_http_body_free(&body);
	return status;
}

static void *ack_main(void *arg)
{
	rep_ack_cli *a = arg;
	CURL *c = curl_easy_init();

	pthread_mutex_lock(&a->mu);
	while (!a->stop) {
		char *url = c ? build_url_locked(a, c) : NULL;
		char err[600] = "", to[REP_URL_MAX + 1];
		long status;
		if (!url) {
			pthread_cond_wait(&a->cond, &a->mu);
			continue;
		}
		snprintf(to, sizeof(to), "%s", a->url);
		pthread_mutex_unlock(&a->mu);
		status = post(a, c, url, err, sizeof(err));
		free(url);
		pthread_mutex_lock(&a->mu);
		if (status == 204) {
			if (a->failing)
				log_info("sync: acknowledgements reach the "
					 "primary again");
			a->failing = false;
			continue;
		}
		if (!a->failing)
			log_warn("sync: acknowledging to %s failed: %s%s", to,
				 err, status == 409 ? " (dropped)"
						    : "; retrying");
		a->failing = true;
		if (status == 409) {
			a->ndbs = 0; /* A2 */
			continue;
		}
		redirty_locked(a);
		{
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += ACK_RETRY_MS * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			if (!a->stop)
				pthread_cond_timedwait(&a->cond, &a->mu, &ts);
		}
	}
	pthread_mutex_unlock(&a->mu);
	curl_easy_cleanup(c);
	return NULL;
}

void rep_ack_cli_free(rep_ack_cli *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->mu);
	if (a->started)
		pthread_join(a->thread, NULL);
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->mu);
	free(a);
}
