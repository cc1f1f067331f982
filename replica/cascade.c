/*
 * Cascading replicas: the choice of a replica's upstream and the rules
 * a node serves /stream to followers by (the rules C1-C6 are in
 * cascade.h).
 */
#include "node_i.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"

#define NS_PER_MS_ 1000000LL
#define INFO_TIMEOUT_MS 2000L
#define INFO_MAX (1u << 20)

/* REP_CASCADE_AVOID_MS and REP_CASCADE_RECHECK_MS, or both
 * $LTXFS_TEST_CASCADE_MS (tests: 100 ms to 30 s). */
static int64_t period_ms;
static pthread_once_t period_once = PTHREAD_ONCE_INIT;

static void period_init(void)
{
	const char *e = getenv("LTXFS_TEST_CASCADE_MS");
	long long v = e && *e ? atoll(e) : 0;

	period_ms = v >= 100 && v <= 30000 ? v : 0;
}

static int64_t period_ns(int64_t def_ms)
{
	pthread_once(&period_once, period_init);
	return (period_ms ? period_ms : def_ms) * NS_PER_MS_;
}

bool rep_region_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > REP_REGION_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-'))
			return false;
	}
	return true;
}

static bool avoided_locked(rep_node *n, const char *url, int64_t now)
{
	const rep_cascade *c = &n->cascade;

	for (int i = 0; i < REP_CASCADE_AVOID_MAX; i++)
		if (c->avoid[i].until_ns > now &&
		    strcmp(c->avoid[i].url, url) == 0)
			return true;
	return false;
}

static bool avoided(rep_node *n, const char *url)
{
	int64_t now = lib_clock_monotonic_ns();
	bool a;

	pthread_mutex_lock(&n->mu);
	a = avoided_locked(n, url, now);
	pthread_mutex_unlock(&n->mu);
	return a;
}

static bool parse_node(const char *s, uint64_t *out)
{
	char *end;

	if (!s || strlen(s) != 16)
		return false;
	errno = 0;
	*out = strtoull(s, &end, 16);
	return errno == 0 && *end == '\0';
}

/* C4 b: the lowest-ID direct follower of the primary in this node's
 * region below this node's own ID, not avoided. 0 with its URL; -ENOENT
 * none (*skipped: one was passed over as avoided); other < 0: the
 * primary's /info could not be read. */
static int pick_in_region(rep_node *n, const char *primary, char *url,
			  size_t len, bool *skipped)
{
	rep_http_body body = REP_HTTP_BODY_INIT(INFO_MAX, true);
	rep_http_tls tls = rep_node_client_tls(n);
	char *u = NULL, err[CURL_ERROR_SIZE];
	uint64_t best = UINT64_MAX;
	json_t *root = NULL, *arr;
	size_t i;
	json_t *f;
	long status = 0;
	int rc;

	*skipped = false;
	url[0] = '\0';
	if (asprintf(&u, "%s/info", primary) < 0)
		return -ENOMEM;
	rc = rep_http_call("GET", u, n->o.http.token, &tls, INFO_TIMEOUT_MS,
			   &status, &body, err, sizeof(err));
	if (rc == 0 && status != 200)
		rc = -EPROTO;
	if (rc == 0 && !(root = json_loads(rep_http_body_text(&body), 0, NULL)))
		rc = -EBADMSG;
	if (rc < 0) {
		log_warn("choosing an upstream in region %s: GET %s: %s; "
			 "following the primary", n->o.region, u,
			 rc == -EIO ? err : rc == -EPROTO ? "not 200"
							  : "not JSON");
		goto out;
	}
	arr = json_object_get(root, "followers");
	json_array_foreach(arr, i, f) {
		const char *reg = json_string_value(json_object_get(f, "region"));
		const char *fu = json_string_value(json_object_get(f, "url"));
		uint64_t id;
		if (!reg || !fu || !fu[0] || strcmp(reg, n->o.region) != 0 ||
		    !parse_node(json_string_value(json_object_get(f, "node")),
				&id) ||
		    id >= n->o.node_id || id >= best || strlen(fu) >= len)
			continue;
		if (avoided(n, fu)) {
			*skipped = true;
			continue;
		}
		best = id;
		snprintf(url, len, "%s", fu);
	}
	rc = url[0] ? 0 : -ENOENT;
out:
	json_decref(root);
	rep_http_body_free(&body);
	free(u);
	return rc;
}

void rep_cascade_choose(rep_node *n, const char *primary, char *url,
			size_t len, bool *to_primary, bool *recheck)
{
	const char *up = n->o.lease.upstream_url;
	bool skipped = false;

	*recheck = false;
	if (up[0]) {
		if (!avoided(n, up)) {
			snprintf(url, len, "%s", up);
			*to_primary = strcmp(up, primary) == 0;
			return;
		}
		*recheck = true; /* a fallback */
	}
	if (n->o.region[0]) {
		int rc = pick_in_region(n, primary, url, len, &skipped);
		if (rc == 0) {
			*to_primary = false;
			*recheck |= skipped;
			return;
		}
		*recheck = true; /* no candidate now: look again later */
	}
	snprintf(url, len, "%s", primary);
	*to_primary = true;
}

void rep_cascade_connecting(rep_node *n, const char *url, bool to_primary,
			    bool recheck)
{
	rep_cascade *c = &n->cascade;

	pthread_mutex_lock(&n->mu);
	snprintf(c->url, sizeof(c->url), "%s", url);
	c->to_primary = to_primary;
	c->recheck = recheck;
	c->recheck_ns = lib_clock_monotonic_ns() +
			period_ns(REP_CASCADE_RECHECK_MS);
	c->node = 0;
	c->depth = 0;
	pthread_mutex_unlock(&n->mu);
}

void rep_cascade_hello_locked(rep_node *n, uint64_t node, int hops)
{
	n->cascade.node = node;
	n->cascade.depth = hops + 1;
}

void rep_cascade_ended(rep_node *n, bool avoid)
{
	rep_cascade *c = &n->cascade;
	int64_t now = lib_clock_monotonic_ns();
	int slot = 0;

	pthread_mutex_lock(&n->mu);
	c->depth = 0;
	if (avoid && !c->to_primary && c->url[0]) {
		for (int i = 0; i < REP_CASCADE_AVOID_MAX; i++) {
			if (strcmp(c->avoid[i].url, c->url) == 0 ||
			    c->avoid[i].until_ns <= now) {
				slot = i;
				break;
			}
			if (c->avoid[i].until_ns < c->avoid[slot].until_ns)
				slot = i;
		}
		snprintf(c->avoid[slot].url, sizeof(c->avoid[slot].url), "%s",
			 c->url);
		c->avoid[slot].until_ns = now + period_ns(REP_CASCADE_AVOID_MS);
		atomic_fetch_add(&n->m.upstream_fallbacks, 1);
		log_warn("upstream %s avoided for %.1f s: falling back to the "
			 "next choice", c->url,
			 (double)period_ns(REP_CASCADE_AVOID_MS) / 1e9);
	}
	pthread_mutex_unlock(&n->mu);
}

int rep_cascade_recheck(rep_node *n, char *why, size_t len)
{
	rep_cascade *c = &n->cascade;
	int64_t now = lib_clock_monotonic_ns();
	char *primary = NULL, url[REP_URL_MAX + 1];
	bool to_primary, recheck, moved;

	pthread_mutex_lock(&n->mu);
	if (c->recheck && now >= c->recheck_ns) {
		c->recheck_ns = now + period_ns(REP_CASCADE_RECHECK_MS);
		primary = strdup(n->role.primary_url ? n->role.primary_url
						     : "");
	}
	pthread_mutex_unlock(&n->mu);
	if (!primary || !primary[0]) {
		free(primary);
		return 0;
	}
	rep_cascade_choose(n, primary, url, sizeof(url), &to_primary,
			   &recheck);
	free(primary);
	pthread_mutex_lock(&n->mu);
	moved = strcmp(url, c->url) != 0;
	pthread_mutex_unlock(&n->mu);
	if (moved)
		snprintf(why, len, "moving to upstream %s (docs/REGIONS.md)",
			 url);
	return moved ? 1 : 0;
}

unsigned rep_cascade_may_serve_locked(rep_node *n, uint64_t node, char *err,
				      size_t len)
{
	const rep_cascade *c = &n->cascade;
	const char *primary = n->role.primary_url && n->role.primary_url[0]
				      ? n->role.primary_url : "not known";

	if (node == n->o.node_id) {
		snprintf(err, len, "node %016" PRIx64 " is this node: a node "
			 "cannot stream from itself (check lease.upstream-url)",
			 node);
		return 409;
	}
	if (rep_role_leads(n->role.state))
		return 0;
	if (n->role.state != REP_ROLE_REPLICA) {
		snprintf(err, len, "this node is not the primary; the primary "
			 "is %s", primary);
		return 421;
	}
	if (node && node == c->node) {
		snprintf(err, len, "node %016" PRIx64 " is this replica's "
			 "upstream: streaming to it would form a cycle (check "
			 "lease.upstream-url)", node);
		return 409;
	}
	if (c->depth != 1 || !n->follow.ready) {
		snprintf(err, len, "this replica serves /stream only while it "
			 "follows the primary directly and has caught up "
			 "(docs/REGIONS.md); it does not now; the primary is %s",
			 primary);
		return 421;
	}
	return 0;
}

bool rep_cascade_serving_locked(rep_node *n, uint64_t gen)
{
	return n->role.state == REP_ROLE_REPLICA && n->role.gen == gen &&
	       n->cascade.depth != 2;
}

void rep_cascade_follower_add_locked(rep_node *n, rep_follower *f)
{
	f->next = n->cascade.followers;
	n->cascade.followers = f;
	n->cascade.nfollowers++;
}

void rep_cascade_follower_remove_locked(rep_node *n, rep_follower *f)
{
	for (rep_follower **p = &n->cascade.followers; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			n->cascade.nfollowers--;
			return;
		}
}
