/*
 * replica/etcd.c without an etcd: base64 (keys and values travel as
 * base64 in the JSON gateway), endpoint lists, and what a request to
 * endpoints that do not answer returns (real sockets on 127.0.0.1).
 * The client against a real etcd is tested by tests/integration/
 * test_etcd.py (suite etcd).
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "replica/etcd.h"

static void test_base64_vectors(void **state)
{
	/* RFC 4648, section 10. */
	static const char *const plain[] = {"", "f", "fo", "foo", "foob",
					    "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v",
					  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	char out[32];
	uint8_t back[32];

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		rep_base64_encode((const uint8_t *)plain[i], strlen(plain[i]),
				  out);
		assert_string_equal(out, enc[i]);
		assert_int_equal(rep_base64_decode(enc[i], back),
				 (int64_t)strlen(plain[i]));
		assert_memory_equal(back, plain[i], strlen(plain[i]));
	}
}

static void test_base64_binary_roundtrip(void **state)
{
	uint8_t in[256], back[256 + 4];
	char enc[4 * ((256 + 2) / 3) + 1];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(255 - i);
	for (size_t n = 0; n <= sizeof(in); n += 7) {
		rep_base64_encode(in, n, enc);
		assert_int_equal(strlen(enc), 4 * ((n + 2) / 3));
		assert_int_equal(rep_base64_decode(enc, back), (int64_t)n);
		assert_memory_equal(back, in, n);
	}
}

static void test_base64_rejects_malformed(void **state)
{
	static const char *const bad[] = {
		"Z", "Zg=", "Zg=a", "Z===", "Zm9v!A==", "Zg==Zg==", "=Zm9",
		"Zm9v\n",
	};
	uint8_t out[16];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(rep_base64_decode(bad[i], out), -EBADMSG);
}

static void test_new_needs_endpoints(void **state)
{
	rep_etcd *e = NULL;

	assert_int_equal(rep_etcd_new(NULL, 0, "", "", &e), -EINVAL);
	assert_null(e);
	rep_etcd_free(NULL);
}

/* A loopback port nobody listens on (bound, then closed). */
static int closed_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void test_no_endpoint_answers(void **state)
{
	char u1[64], u2[64];
	char *urls[2] = {u1, u2};
	rep_etcd *e = NULL;
	rep_etcd_kv kv = {0};
	int64_t id = 1, ttl = 1;
	bool created = true;

	snprintf(u1, sizeof(u1), "http://127.0.0.1:%d/", closed_port());
	snprintf(u2, sizeof(u2), "http://127.0.0.1:%d", closed_port());
	assert_int_equal(rep_etcd_new(urls, 2, NULL, NULL, &e), 0);
	assert_int_equal(rep_etcd_grant(e, 2, 500, &id, &ttl),
			 -ECONNREFUSED);
	assert_int_equal(id, 0);
	assert_int_equal(rep_etcd_keepalive(e, 1, 500, &ttl), -ECONNREFUSED);
	assert_int_equal(rep_etcd_get(e, "/k", 500, &kv, NULL), -ECONNREFUSED);
	assert_false(kv.found);
	assert_int_equal(rep_etcd_create(e, "/k", "v", 0, 500, &created, &kv),
			 -ECONNREFUSED);
	assert_false(created);
	rep_etcd_kv_clear(&kv);
	rep_etcd_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_binary_roundtrip),
		cmocka_unit_test(test_base64_rejects_malformed),
		cmocka_unit_test(test_new_needs_endpoints),
		cmocka_unit_test(test_no_endpoint_answers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
