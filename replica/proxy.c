/*
 * The proxy's life cycle, listener and connections (proxy.h); each
 * connection is served by proxy_serve.c on a thread of its own, at most
 * proxy.max-connections at once (more are answered 503 and closed).
 *
 * The primary's proxy URL (docs/PROTOCOL.md, "The proxy"):
 *   P1. Every node with a proxy shows its URL in GET /info as
 *       "proxy": {"url": ..., "db": ..., "target": ...}: proxy.advertise,
 *       else http://HOST:PORT with HOST the host of lease.advertise-url
 *       (else of proxy.addr when it names one, else the node's name)
 *       and PORT proxy.addr's.
 *   P2. A replica reads the primary's /info (with the cluster token)
 *       when the primary's node URL (rep_node_primary_url) is not the
 *       one it read last, and keeps the answer; a connection that
 *       fails forgets it, so the next request reads /info again.
 */
#include "proxy_i.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"

const double px_lat_bounds_ms[PX_LAT_BUCKETS] = {
	0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

static const char *const kind_names[PX_KIND_COUNT] = {
	"local_read", "waited_read", "forwarded_read", "forwarded_write",
	"local_write", "passthrough", "upgrade", "refused"};

void px_hist_observe(px_hist *h, double ms)
{
	int i = 0;

	while (i < PX_LAT_BUCKETS && ms > px_lat_bounds_ms[i])
		i++;
	atomic_fetch_add(&h->bucket[i], 1);
	atomic_fetch_add(&h->count, 1);
	atomic_fetch_add(&h->sum_us, (uint64_t)(ms * 1000.0));
}

/* "[host]:port", "host:port", ":port" into host ("" none) and port. */
static int split_addr(const char *addr, char *host, size_t hl, char *port,
		      size_t pl)
{
	const char *colon = strrchr(addr, ':'), *h = addr;
	size_t n;

	if (!colon || !colon[1] || strlen(colon + 1) >= pl)
		return -EINVAL;
	n = (size_t)(colon - addr);
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		h = addr + 1;
		n -= 2;
	}
	if (n >= hl)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(port, pl, "%s", colon + 1);
	return 0;
}

/* The host of an http(s) URL, [brackets] kept for IPv6. */
static int url_host(const char *url, char *host, size_t hl)
{
	const char *p = strstr(url, "://"), *end;

	if (!p)
		return -EINVAL;
	p += 3;
	if (*p == '[')
		end = strchr(p, ']') ? strchr(p, ']') + 1 : NULL;
	else
		end = p + strcspn(p, ":/");
	if (!end || end == p || (size_t)(end - p) >= hl)
		return -EINVAL;
	memcpy(host, p, (size_t)(end - p));
	host[end - p] = '\0';
	return 0;
}

static bool wildcard(const char *host)
{
	return !host[0] || strcmp(host, "0.0.0.0") == 0 ||
	       strcmp(host, "::") == 0 || strcmp(host, "*") == 0;
}

/* P1. */
static int advertised_url(rep_proxy *p)
{
	char host[256], lhost[256], port[16];

	if (p->o.advertise[0]) {
		snprintf(p->url, sizeof(p->url), "%s", p->o.advertise);
		return 0;
	}
	if (split_addr(p->o.addr, lhost, sizeof(lhost), port, sizeof(port)))
		return -EINVAL;
	if (p->o.node_url[0] && url_host(p->o.node_url, host, sizeof(host)))
		return -EINVAL;
	if (!p->o.node_url[0])
		snprintf(host, sizeof(host), "%s",
			 !wildcard(lhost) ? lhost : p->o.hostname);
	snprintf(p->url, sizeof(p->url), "http://%s%s%s:%s",
		 strchr(host, ':') && host[0] != '[' ? "[" : "", host,
		 strchr(host, ':') && host[0] != '[' ? "]" : "", port);
	return 0;
}

static int set_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int listen_on(rep_proxy *p)
{
	struct addrinfo hints = {0}, *res = NULL;
	char host[256], port[16];
	int fd, one = 1, rc, saverr;

	if (split_addr(p->o.addr, host, sizeof(host), port, sizeof(port))) {
		log_error("proxy.addr \"%s\" is not [host]:port", p->o.addr);
		return -EINVAL;
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(wildcard(host) ? NULL : host, port, &hints, &res);
	if (rc != 0) {
		log_error("proxy.addr \"%s\": %s", p->o.addr, gai_strerror(rc));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
		saverr = errno;
		log_error("cannot listen on %s (proxy.addr): %s", p->o.addr,
			  strerror(saverr));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -saverr;
	}
	freeaddrinfo(res);
	p->lfd = fd;
	return 0;
}

/* Waits for a non-blocking connect within the timeout. */
static int connect_wait(int fd, int64_t timeout_ms)
{
	struct pollfd pf = {.fd = fd, .events = POLLOUT};
	int err = 0, r;
	socklen_t el = sizeof(err);

	do
		r = poll(&pf, 1, (int)timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		return -errno;
	return -err;
}

int rep_proxy_connect(rep_proxy *p, const char *host, const char *port)
{
	struct addrinfo hints = {0}, *res = NULL, *ai;
	int rc = -EHOSTUNREACH, fd = -1;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
			    SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		rc = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : -errno;
		if (rc == -EINPROGRESS)
			rc = connect_wait(fd, p->o.connect_timeout_ms);
		if (rc == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return rc;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	set_nodelay(fd);
	return fd;
}

bool rep_proxy_stopping(rep_proxy *p)
{
	bool s;

	pthread_mutex_lock(&p->mu);
	s = p->stopping;
	pthread_mutex_unlock(&p->mu);
	return s;
}

void rep_proxy_slot_fd(rep_proxy *p, int slot, int i, int fd)
{
	pthread_mutex_lock(&p->mu);
	p->slots[slot].fd[i] = fd;
	if (p->stopping && fd >= 0)
		shutdown(fd, SHUT_RDWR); /* opened while stopping */
	pthread_mutex_unlock(&p->mu);
}

/* ---- the primary's proxy (P2) ------------------------------------------ */

/* The "proxy".url of an /info answer. */
static int info_proxy_url(const char *text, char *buf, size_t len)
{
	json_t *root = json_loads(text, 0, NULL);
	const char *url = NULL;
	int rc = -ENXIO;

	if (!root)
		return -EPROTO;
	if (json_unpack(root, "{s:{s:s}}", "proxy", "url", &url) == 0 &&
	    url[0] && strlen(url) < len) {
		snprintf(buf, len, "%s", url);
		rc = 0;
	}
	json_decref(root);
	return rc;
}

int rep_proxy_primary(rep_proxy *p, char *buf, size_t len, char *why,
		      size_t whylen)
{
	char node[512], info[600], err[256];
	rep_http_body body = REP_HTTP_BODY_INIT(1 << 20, true);
	long status = 0;
	int rc;

	if (rep_node_primary_url(p->node, node, sizeof(node)) < 0 ||
	    !node[0]) {
		snprintf(why, whylen, "no primary is known now; try again");
		return -ENOENT;
	}
	pthread_mutex_lock(&p->mu);
	rc = strcmp(p->primary_node, node) == 0 && p->primary_proxy[0] &&
	     strlen(p->primary_proxy) < len;
	if (rc)
		snprintf(buf, len, "%s", p->primary_proxy);
	pthread_mutex_unlock(&p->mu);
	if (rc)
		return 0;
	snprintf(info, sizeof(info), "%s/info", node);
	rc = rep_http_call("GET", info, p->o.token, &p->o.tls,
			   (long)p->o.connect_timeout_ms + 5000, &status,
			   &body, err, sizeof(err));
	if (rc < 0 || status != 200) {
		snprintf(why, whylen, "the primary %s cannot be reached "
			 "(GET /info: %s)", node,
			 rc < 0 ? err : status == 401 ? "401, check http.token"
						      : "not 200");
		rep_http_body_free(&body);
		return rc < 0 ? -EHOSTUNREACH : -EPROTO;
	}
	rc = info_proxy_url(rep_http_body_text(&body), buf, len);
	rep_http_body_free(&body);
	if (rc < 0) {
		snprintf(why, whylen, "the primary %s runs no proxy "
			 "(proxy.addr is not set there)", node);
		return -ENXIO;
	}
	pthread_mutex_lock(&p->mu);
	snprintf(p->primary_node, sizeof(p->primary_node), "%s", node);
	snprintf(p->primary_proxy, sizeof(p->primary_proxy), "%s", buf);
	pthread_mutex_unlock(&p->mu);
	log_info("proxy: the primary %s has its proxy at %s", node, buf);
	return 0;
}

void rep_proxy_primary_forget(rep_proxy *p)
{
	pthread_mutex_lock(&p->mu);
	p->primary_proxy[0] = '\0';
	pthread_mutex_unlock(&p->mu);
}

/* ---- /info and /metrics (node.h, extensions) ---------------------------- */

static char *info_json(void *ctx)
{
	rep_proxy *p = ctx;
	json_t *o = json_pack("{s:s, s:s, s:s}", "url", p->url, "db",
			      p->o.db, "target", p->o.target);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

static void hist_text(FILE *f, const char *name, const char *help,
		      px_hist *h)
{
	uint64_t cum = 0;

	fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int i = 0; i <= PX_LAT_BUCKETS; i++) {
		cum += atomic_load(&h->bucket[i]);
		if (i < PX_LAT_BUCKETS)
			fprintf(f, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
				px_lat_bounds_ms[i] / 1000.0, cum);
		else
			fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n",
				name, cum);
	}
	fprintf(f, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
		(double)atomic_load(&h->sum_us) / 1e6, name,
		(uint64_t)atomic_load(&h->count));
}

static void counter(FILE *f, const char *name, const char *help,
		    atomic_uint_fast64_t *v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name,
		help, name, name, (uint64_t)atomic_load(v));
}

static void metrics_text(void *ctx, FILE *f)
{
	rep_proxy *p = ctx;
	px_metrics *m = &p->m;

	fprintf(f, "# HELP ltxfs_proxy_requests_total Requests the proxy "
		"served, by how\n# TYPE ltxfs_proxy_requests_total counter\n");
	for (int i = 0; i < PX_KIND_COUNT; i++)
		fprintf(f, "ltxfs_proxy_requests_total{kind=\"%s\"} %" PRIu64
			"\n", kind_names[i],
			(uint64_t)atomic_load(&m->requests[i]));
	fprintf(f, "# HELP ltxfs_proxy_responses_total Answers the proxy "
		"gave itself, by status\n# TYPE ltxfs_proxy_responses_total "
		"counter\n");
	fprintf(f, "ltxfs_proxy_responses_total{status=\"400\"} %" PRIu64
		"\nltxfs_proxy_responses_total{status=\"401\"} %" PRIu64
		"\nltxfs_proxy_responses_total{status=\"502\"} %" PRIu64
		"\nltxfs_proxy_responses_total{status=\"503\"} %" PRIu64 "\n",
		(uint64_t)atomic_load(&m->status_400),
		(uint64_t)atomic_load(&m->status_401),
		(uint64_t)atomic_load(&m->status_502),
		(uint64_t)atomic_load(&m->status_503));
	counter(f, "ltxfs_proxy_read_waits_total",
		"Reads that waited for their cookie's TXID", &m->read_waits);
	counter(f, "ltxfs_proxy_read_wait_timeouts_total",
		"Cookie waits that reached proxy.read-timeout (the read "
		"went to the primary)", &m->read_wait_timeouts);
	counter(f, "ltxfs_proxy_connections_accepted_total",
		"Client connections accepted (forwarded ones included)",
		&m->conns_accepted);
	fprintf(f, "# HELP ltxfs_proxy_forward_connections_total "
		"Connections to the primary's proxy forwarded requests went "
		"on: opened for the request, taken from the pool of kept "
		"ones, or the client connection's own\n# TYPE "
		"ltxfs_proxy_forward_connections_total counter\n"
		"ltxfs_proxy_forward_connections_total{how=\"new\"} %" PRIu64
		"\nltxfs_proxy_forward_connections_total{how=\"pooled\"} %"
		PRIu64 "\nltxfs_proxy_forward_connections_total{how=\"kept\"} "
		"%" PRIu64 "\n", (uint64_t)atomic_load(&m->fwd_new),
		(uint64_t)atomic_load(&m->fwd_pooled),
		(uint64_t)atomic_load(&m->fwd_kept));
	counter(f, "ltxfs_proxy_connections_refused_total",
		"Client connections over proxy.max-connections (503)",
		&m->conns_refused);
	fprintf(f, "# HELP ltxfs_proxy_connections Client connections open "
		"now\n# TYPE ltxfs_proxy_connections gauge\n"
		"ltxfs_proxy_connections %d\n", atomic_load(&m->conns));
	hist_text(f, "ltxfs_proxy_forward_latency_seconds",
		  "From a forwarded request's start to the primary's "
		  "response head", &m->forward);
	hist_text(f, "ltxfs_proxy_read_wait_seconds",
		  "Time reads waited for their cookie's TXID", &m->wait);
}

/* ---- connections -------------------------------------------------------- */

static void give_slot(rep_proxy *p, int slot);

struct conn_arg {
	rep_proxy *p;
	int slot, fd;
	char peer[64];
};

static void *conn_main(void *arg)
{
	struct conn_arg *a = arg;
	rep_proxy *p = a->p;
	int slot = a->slot;

	rep_proxy_serve(p, slot, a->fd, a->peer);
	free(a);
	give_slot(p, slot);
	return NULL;
}

static void refuse_conn(rep_proxy *p, int fd)
{
	static const char msg[] =
		"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain"
		"\r\nContent-Length: 58\r\nConnection: close\r\n\r\n"
		"ltxfs proxy: too many connections (proxy.max-connections)\n";
	_Static_assert(sizeof("ltxfs proxy: too many connections "
			      "(proxy.max-connections)\n") - 1 == 58,
		       "Content-Length");

	atomic_fetch_add(&p->m.conns_refused, 1);
	(void)!send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static void peer_text(const struct sockaddr_storage *ss, char *buf,
		      size_t n)
{
	buf[0] = '\0';
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr,
			  buf, (socklen_t)n);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6,
			  &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
			  (socklen_t)n);
}

/* Takes a slot for fd: its index, or -1 (full or stopping). */
static int take_slot(rep_proxy *p, int fd)
{
	int slot = -1;

	pthread_mutex_lock(&p->mu);
	if (!p->stopping && p->nconns < p->o.max_conns) {
		for (int i = 0; i < p->o.max_conns; i++) {
			if (!p->slots[i].used) {
				slot = i;
				break;
			}
		}
	}
	if (slot >= 0) {
		p->slots[slot] = (px_slot){true, {fd, -1, -1}};
		p->nconns++;
		atomic_fetch_add(&p->m.conns, 1);
	}
	pthread_mutex_unlock(&p->mu);
	return slot;
}

static void give_slot(rep_proxy *p, int slot)
{
	pthread_mutex_lock(&p->mu);
	p->slots[slot] = (px_slot){false, {-1, -1, -1}};
	p->nconns--;
	atomic_fetch_sub(&p->m.conns, 1);
	if (p->nconns == 0)
		pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
}

static void *accept_main(void *arg)
{
	rep_proxy *p = arg;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct conn_arg *a;
		pthread_t t;
		int fd = accept4(p->lfd, (struct sockaddr *)&ss, &sl,
				 SOCK_CLOEXEC), slot;
		if (fd < 0) {
			if (rep_proxy_stopping(p))
				return NULL;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				poll(NULL, 0, 50);
			continue;
		}
		set_nodelay(fd);
		atomic_fetch_add(&p->m.conns_accepted, 1);
		slot = take_slot(p, fd);
		if (slot < 0) {
			refuse_conn(p, fd);
			continue;
		}
		a = calloc(1, sizeof(*a));
		if (!a) {
			give_slot(p, slot);
			close(fd);
			continue;
		}
		*a = (struct conn_arg){p, slot, fd, ""};
		peer_text(&ss, a->peer, sizeof(a->peer));
		if (pthread_create(&t, &p->attr, conn_main, a) != 0) {
			free(a);
			give_slot(p, slot);
			refuse_conn(p, fd);
		}
	}
}

/* ---- life cycle --------------------------------------------------------- */

static char **dup_list(char *const *items, size_t n)
{
	char **l = calloc(n + 1, sizeof(*l));

	for (size_t i = 0; l && i < n; i++) {
		l[i] = strdup(items[i]);
		if (!l[i]) {
			for (size_t j = 0; j < i; j++)
				free(l[j]);
			free(l);
			return NULL;
		}
	}
	return l;
}

static void free_list(char *const *l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free((void *)l);
}

static int copy_opts(rep_proxy *p, const rep_proxy_opts *o)
{
	p->o = *o;
	p->o.addr = strdup(o->addr);
	p->o.target = strdup(o->target);
	p->o.db = strdup(o->db);
	p->o.advertise = strdup(o->advertise ? o->advertise : "");
	p->o.node_url = strdup(o->node_url ? o->node_url : "");
	p->o.hostname = strdup(o->hostname ? o->hostname : "localhost");
	p->o.token = strdup(o->token ? o->token : "");
	p->o.tls.ca_file = o->tls.ca_file ? strdup(o->tls.ca_file) : NULL;
	p->o.tls.cert_file = o->tls.cert_file ? strdup(o->tls.cert_file)
					      : NULL;
	p->o.tls.key_file = o->tls.key_file ? strdup(o->tls.key_file) : NULL;
	p->o.passthrough = dup_list(o->passthrough, o->npassthrough);
	p->o.always_forward = dup_list(o->always_forward, o->nalways_forward);
	if (!p->o.addr || !p->o.target || !p->o.db || !p->o.advertise ||
	    !p->o.node_url || !p->o.hostname || !p->o.token ||
	    !p->o.passthrough || !p->o.always_forward ||
	    (o->tls.ca_file && !p->o.tls.ca_file) ||
	    (o->tls.cert_file && !p->o.tls.cert_file) ||
	    (o->tls.key_file && !p->o.tls.key_file))
		return -ENOMEM;
	return 0;
}

int rep_proxy_new(const rep_proxy_opts *o, rep_node *n, rep_proxy **out)
{
	rep_proxy *p = calloc(1, sizeof(*p));
	rep_node_ext ext = {"proxy", NULL, metrics_text, info_json};
	int rc;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->lfd = -1;
	p->node = n;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cond, NULL);
	pthread_attr_init(&p->attr);
	pthread_attr_setdetachstate(&p->attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&p->attr, 256 * 1024);
	rc = copy_opts(p, o);
	if (rc == 0)
		rc = px_pool_new(o->idle_timeout_ms / 2 > 0
				 ? o->idle_timeout_ms / 2 : 1, &p->pool);
	if (rc == 0 && (o->max_conns < 1 ||
			!(p->slots = calloc((size_t)o->max_conns,
					    sizeof(*p->slots)))))
		rc = -ENOMEM;
	if (rc == 0 && split_addr(p->o.target, p->thost, sizeof(p->thost),
				  p->tport, sizeof(p->tport)) < 0) {
		log_error("proxy.target \"%s\" is not host:port", o->target);
		rc = -EINVAL;
	}
	if (rc == 0 && advertised_url(p) < 0) {
		log_error("proxy: cannot tell this proxy's URL from "
			  "lease.advertise-url \"%s\"; set proxy.advertise",
			  p->o.node_url);
		rc = -EINVAL;
	}
	if (rc == 0)
		rc = listen_on(p);
	ext.ctx = p;
	if (rc == 0)
		rc = rep_node_ext_add(n, &ext);
	if (rc < 0) {
		rep_proxy_free(p);
		return rc;
	}
	if (!p->thost[0])
		snprintf(p->thost, sizeof(p->thost), "127.0.0.1");
	*out = p;
	return 0;
}

int rep_proxy_start(rep_proxy *p, fs_mount *m)
{
	p->mount = m;
	if (pthread_create(&p->acceptor, NULL, accept_main, p) != 0) {
		log_error("proxy: cannot start its thread");
		return -EAGAIN;
	}
	p->started = true;
	log_info("proxy on %s (advertised %s) for %s, db=%s", p->o.addr,
		 p->url, p->o.target, p->o.db);
	return 0;
}

void rep_proxy_stop(rep_proxy *p)
{
	bool join;

	if (!p || !p->slots)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	join = p->started;
	p->started = false;
	pthread_mutex_unlock(&p->mu);
	if (p->lfd >= 0)
		shutdown(p->lfd, SHUT_RDWR);
	if (join)
		pthread_join(p->acceptor, NULL); /* once: the joiner */
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < p->o.max_conns; i++)
		for (int k = 0; p->slots[i].used && k < PX_NFDS; k++)
			if (p->slots[i].fd[k] >= 0)
				shutdown(p->slots[i].fd[k], SHUT_RDWR);
	while (p->nconns > 0)
		pthread_cond_wait(&p->cond, &p->mu);
	pthread_mutex_unlock(&p->mu);
	if (p->pool)
		px_pool_clear(p->pool); /* no connection gives any back now */
}

void rep_proxy_free(rep_proxy *p)
{
	if (!p)
		return;
	rep_proxy_stop(p);
	if (p->lfd >= 0)
		close(p->lfd);
	free((void *)p->o.addr);
	free((void *)p->o.target);
	free((void *)p->o.db);
	free((void *)p->o.advertise);
	free((void *)p->o.node_url);
	free((void *)p->o.hostname);
	free((void *)p->o.token);
	free((void *)p->o.tls.ca_file);
	free((void *)p->o.tls.cert_file);
	free((void *)p->o.tls.key_file);
	free_list(p->o.passthrough, p->o.npassthrough);
	free_list(p->o.always_forward, p->o.nalways_forward);
	free(p->slots);
	px_pool_free(p->pool);
	pthread_attr_destroy(&p->attr);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
