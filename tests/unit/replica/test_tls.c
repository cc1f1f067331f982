/*
 * replica/tls.c: the server's credentials holder, on certificates made
 * by openssl in a temporary directory: T1 (a missing file, a key that
 * is not the certificate's, refused at rep_tls_new and at a reload), the
 * reload's "once per change of the files" (unchanged: 1; changed: 0;
 * a bad change refused once, the old set staying), T2 (many reloads in
 * a row: retired sets bounded and freed, ASan sees no leak or reuse),
 * and T3 without a session (no client certificate).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/log.h"
#include "replica/tls.h"

static char dir[64];
static char live_crt[128], live_key[128];

static void path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

/* cp src dst by a rename, as a Secret volume swaps its files. */
static void install(const char *src, const char *dst)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "cp '%s/%s' '%s.tmp' && mv '%s.tmp' '%s'",
		 dir, src, dst, dst, dst);
	assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
	char cmd[2048];

	(void)state;
	lib_log_configure(LIB_LOG_ERROR, LIB_LOG_TEXT, stderr);
	snprintf(dir, sizeof(dir), "/tmp/ltxfs-test-tls-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && EC='-newkey ec -pkeyopt "
		 "ec_paramgen_curve:prime256v1 -nodes' && "
		 "openssl req -x509 $EC -keyout ca.key -out ca.crt -days 2 "
		 "-subj /CN=ca 2>/dev/null && "
		 "for n in a b; do openssl req $EC -keyout $n.key -out $n.csr "
		 "-subj /CN=$n 2>/dev/null && openssl x509 -req -in $n.csr "
		 "-CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
		 "-out $n.crt 2>/dev/null || exit 1; done", dir);
	if (system(cmd) != 0)
		return -1;
	path(live_crt, sizeof(live_crt), "live.crt");
	path(live_key, sizeof(live_key), "live.key");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static rep_tls *new_live(const char *crt, const char *key, const char *ca)
{
	rep_tls_files f = {live_crt, live_key, ca};
	rep_tls *t = NULL;

	install(crt, live_crt);
	install(key, live_key);
	assert_int_equal(rep_tls_new(&f, &t), 0);
	return t;
}

static void test_refused(void **state)
{
	char a_crt[128], b_key[128], none[128];
	rep_tls_files f = {a_crt, b_key, NULL};
	rep_tls *t = (rep_tls *)&f; /* must be set to NULL */

	(void)state;
	path(a_crt, sizeof(a_crt), "a.crt");
	path(b_key, sizeof(b_key), "b.key");
	path(none, sizeof(none), "none.pem");
	assert_int_equal(rep_tls_new(&f, &t), -EINVAL);
	assert_null(t);
	f.key = none;
	assert_int_equal(rep_tls_new(&f, &t), -ENOENT);
	f.cert = b_key; /* a key is no certificate */
	f.key = b_key;
	assert_int_equal(rep_tls_new(&f, &t), -EINVAL);
	assert_int_equal(rep_tls_check_pair(a_crt, "c", b_key, "k"), -EINVAL);
}

static void test_reload(void **state)
{
	rep_tls *t = new_live("a.crt", "a.key", NULL);

	(void)state;
	assert_false(rep_tls_mutual(t));
	assert_null(rep_tls_client_ca_pem(t));
	assert_int_equal(rep_tls_reload(t, false), 1);
	install("b.key", live_key);
	install("b.crt", live_crt);
	assert_int_equal(rep_tls_reload(t, false), 0);
	assert_int_equal(rep_tls_reload(t, false), 1);
	/* A key that is not the certificate's: refused once, then not
	 * tried again until the files change; forced, refused again. */
	install("a.key", live_key);
	assert_true(rep_tls_reload(t, false) < 0);
	assert_int_equal(rep_tls_reload(t, false), 1);
	assert_true(rep_tls_reload(t, true) < 0);
	install("a.crt", live_crt);
	assert_int_equal(rep_tls_reload(t, false), 0);
	rep_tls_free(t);
}

/* More reloads than RETIRED_MAX within RETIRE_S: the oldest retired
 * sets are freed, every one at rep_tls_free (ASan and LSan check). */
static void test_many_reloads(void **state)
{
	char ca[128];
	rep_tls *t;

	(void)state;
	path(ca, sizeof(ca), "ca.crt");
	t = new_live("a.crt", "a.key", ca);
	assert_true(rep_tls_mutual(t));
	assert_non_null(strstr(rep_tls_client_ca_pem(t), "BEGIN CERT"));
	for (int i = 0; i < 20; i++)
		assert_int_equal(rep_tls_reload(t, true), 0);
	rep_tls_free(t);
}

static void test_watcher(void **state)
{
	rep_tls *t = new_live("a.crt", "a.key", NULL);

	(void)state;
	assert_int_equal(rep_tls_watch_start(t), 0);
	rep_tls_free(t); /* joins the watcher */
}

static void test_verify_without_session(void **state)
{
	char ca[128], why[200] = "";
	rep_tls *t;

	(void)state;
	path(ca, sizeof(ca), "ca.crt");
	t = new_live("a.crt", "a.key", ca);
	assert_int_equal(rep_tls_verify_peer(t, NULL, why, sizeof(why)),
			 -EACCES);
	assert_string_equal(why, "no client certificate");
	rep_tls_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_many_reloads),
		cmocka_unit_test(test_watcher),
		cmocka_unit_test(test_verify_without_session),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
