/*
 * replica/server.c: the route table and the rules that follow from it,
 * over real HTTP (the node's libmicrohttpd server on a loopback port,
 * libcurl as the client; a static-lease node without a mount, so only
 * routes that need no database are answered): an unknown path is 404, a
 * known path with another method 405 with an Allow header, the token
 * is needed everywhere but /healthz and /readyz (an unknown path too),
 * a body where none is taken is 413.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <microhttpd.h>

#include "lib/log.h"
#include "replica/node_i.h"
#include "replica/server_i.h"

#define TOKEN "s3cret"

static char dir[64];
static rep_node *node;
static unsigned port;

struct answer {
	long status;
	char body[512];
	size_t len;
	char allow[64];
};

static size_t on_body(char *d, size_t size, size_t nmemb, void *ctx)
{
	struct answer *a = ctx;
	size_t n = size * nmemb, take = sizeof(a->body) - 1 - a->len;

	if (take > n)
		take = n;
	memcpy(a->body + a->len, d, take);
	a->len += take;
	a->body[a->len] = '\0';
	return n;
}

static size_t on_header(char *d, size_t size, size_t nmemb, void *ctx)
{
	struct answer *a = ctx;
	size_t n = size * nmemb;

	if (n > 6 && strncasecmp(d, "Allow:", 6) == 0) {
		size_t l = n - 6;
		const char *v = d + 6;
		while (l && (*v == ' '))
			v++, l--;
		while (l && (v[l - 1] == '\r' || v[l - 1] == '\n'))
			l--;
		snprintf(a->allow, sizeof(a->allow), "%.*s", (int)l, v);
	}
	return n;
}

/* One request; auth is the whole Authorization value (NULL: none). */
static struct answer req(const char *method, const char *path,
			 const char *auth, const char *body)
{
	struct answer a = {0};
	struct curl_slist *h = NULL;
	char url[128], hdr[128];
	CURL *c = curl_easy_init();

	assert_non_null(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	if (auth) {
		snprintf(hdr, sizeof(hdr), "Authorization: %s", auth);
		h = curl_slist_append(h, hdr);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return a;
}

static int setup(void **state)
{
	rep_node_opts o = {
		.mountpoint = "/nonexistent",
		.node_id = 0x77,
		.http = {.addr = "127.0.0.1:0", .token = TOKEN},
		.lease = {.type = REP_LEASE_STATIC, .candidate = true,
			  .advertise_url = "http://127.0.0.1:2"},
	};
	const union MHD_DaemonInfo *di;

	(void)state;
	lib_log_configure(LIB_LOG_ERROR, LIB_LOG_TEXT, NULL);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(dir, sizeof(dir), "/tmp/ltxfs-test-server-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	o.data_dir = dir;
	if (rep_node_new(&o, &node) < 0 || rep_server_start(node) < 0)
		return -1;
	di = MHD_get_daemon_info(node->mhd, MHD_DAEMON_INFO_BIND_PORT);
	port = di ? di->port : 0;
	return port ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	rep_server_stop(node);
	rep_node_free(node);
	curl_global_cleanup();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_table_lookup(void **state)
{
	const rep_route *r;

	(void)state;
	assert_int_equal(rep_route_match("GET", "/info", &r), 0);
	assert_string_equal(r->path, "/info");
	assert_int_equal(r->auth, REP_AUTH_METRICS);
	assert_false(r->peer);
	assert_false(r->body);
	assert_int_equal(rep_route_match("GET", "/stream", &r), 0);
	assert_int_equal(r->auth, REP_AUTH_CLUSTER);
	assert_true(r->peer);
	assert_int_equal(rep_route_match("HEAD", "/metrics", &r), 0);
	assert_int_equal(rep_route_match("POST", "/import", &r), 0);
	assert_true(r->body);
	assert_int_equal(rep_route_match("PUT", "/import", &r), 405);
	assert_non_null(r);
	assert_int_equal(rep_route_match("GET", "/healthz", &r), 0);
	assert_int_equal(r->auth, REP_AUTH_NONE);
	assert_false(r->peer);
	assert_int_equal(rep_route_match("GET", "/nope", &r), 404);
	assert_null(r);
	assert_int_equal(rep_route_match("GET", "/info/", &r), 404);
}

static void test_unknown_path(void **state)
{
	struct answer a;

	(void)state;
	a = req("GET", "/nope", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 404);
	assert_string_equal(a.body, "no such endpoint\n");
	/* Without the token a peer learns nothing, not even that. */
	a = req("GET", "/nope", NULL, NULL);
	assert_int_equal(a.status, 401);
}

static void test_wrong_method(void **state)
{
	struct answer a;

	(void)state;
	a = req("POST", "/info", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 405);
	assert_string_equal(a.body, "method not allowed\n");
	assert_string_equal(a.allow, "GET, HEAD");
	a = req("GET", "/import?db=x", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 405);
	assert_string_equal(a.allow, "POST");
	a = req("DELETE", "/handoff", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 405);
	assert_string_equal(a.allow, "POST");
	/* /healthz needs no token, whatever the method. */
	a = req("POST", "/healthz", NULL, NULL);
	assert_int_equal(a.status, 405);
	assert_string_equal(a.allow, "GET, HEAD");
}

static void test_token_rules(void **state)
{
	uint64_t before = atomic_load(&node->m.unauthorized);
	struct answer a;

	(void)state;
	a = req("GET", "/healthz", NULL, NULL);
	assert_int_equal(a.status, 200);
	assert_string_equal(a.body, "ok\n");
	a = req("HEAD", "/healthz", NULL, NULL);
	assert_int_equal(a.status, 200);
	a = req("POST", "/handoff", NULL, NULL);
	assert_int_equal(a.status, 401);
	assert_string_equal(a.body, "missing or wrong bearer token\n");
	a = req("POST", "/handoff", "Bearer wrong", NULL);
	assert_int_equal(a.status, 401);
	a = req("POST", "/handoff", "bearer " TOKEN, NULL);
	assert_int_equal(a.status, 401);
	a = req("POST", "/handoff", "Bearer " TOKEN "x", NULL);
	assert_int_equal(a.status, 401);
	assert_true(atomic_load(&node->m.unauthorized) == before + 4);
	/* With the token: the handler answers (the static lease cannot
	 * hand off). */
	a = req("POST", "/handoff", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 409);
	assert_string_equal(a.body, "handoff needs lease.type etcd\n");
	a = req("POST", "/promote", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 409);
	a = req("POST", "/handoff?to=xyz", "Bearer " TOKEN, NULL);
	assert_int_equal(a.status, 400);
}

/* /readyz needs no token either; a node that is not serving (no mount
 * yet) is not ready and says why in one line. */
static void test_readyz(void **state)
{
	const rep_route *r;
	struct answer a;

	(void)state;
	assert_int_equal(rep_route_match("GET", "/readyz", &r), 0);
	assert_int_equal(r->auth, REP_AUTH_NONE);
	assert_false(r->peer);
	a = req("GET", "/readyz", NULL, NULL);
	assert_int_equal(a.status, 503);
	assert_string_equal(a.body, "not serving: the mount is not ready\n");
	a = req("POST", "/readyz", NULL, NULL);
	assert_int_equal(a.status, 405);
}

static void test_body_refused(void **state)
{
	struct answer a;

	(void)state;
	a = req("POST", "/handoff", "Bearer " TOKEN, "hello");
	assert_int_equal(a.status, 413);
	assert_string_equal(a.body, "this endpoint takes no request body\n");
	a = req("POST", "/info", "Bearer " TOKEN, "hello");
	assert_int_equal(a.status, 405);
	a = req("POST", "/nope", "Bearer " TOKEN, "hello");
	assert_int_equal(a.status, 404);
	/* The route that takes one refuses a bad name before reading it. */
	a = req("POST", "/import?db=.x", "Bearer " TOKEN, "hello");
	assert_int_equal(a.status, 400);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_lookup),
		cmocka_unit_test(test_unknown_path),
		cmocka_unit_test(test_wrong_method),
		cmocka_unit_test(test_token_rules),
		cmocka_unit_test(test_readyz),
		cmocka_unit_test(test_body_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
