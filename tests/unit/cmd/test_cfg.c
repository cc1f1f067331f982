/* Tests of cmd/cfg*.c: defaults, every key, ${VAR} expansion, errors that
 * name the key and line, and the round trip of `ltxfs config --defaults`. */
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

#include "cmd/cfg.h"
#include "lib/log.h"

static char err[512];

static int setup(void **state)
{
	unsetenv(CFG_TOKEN_ENV);
	unsetenv("LTXFS_TEST_UNSET");
	unsetenv("LTXFS_TEST_EPS");
	err[0] = '\0';
	return 0;
}

/* cfg_print into a malloc'd string. */
static char *print_to_string(const ltxfs_cfg *cfg, bool comments)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	cfg_print(cfg, f, comments);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static void assert_same_cfg(const ltxfs_cfg *a, const ltxfs_cfg *b)
{
	char *pa = print_to_string(a, false);
	char *pb = print_to_string(b, false);

	assert_string_equal(pa, pb);
	/* The print redacts secrets; compare them directly. */
	assert_string_equal(a->http.token, b->http.token);
	assert_string_equal(a->lease.etcd.password, b->lease.etcd.password);
	free(pa);
	free(pb);
}

static int load(ltxfs_cfg *cfg, const char *yaml)
{
	return cfg_load_string(cfg, yaml, "t.yml", err, sizeof(err));
}

/* Loads yaml, expects -EINVAL and an error equal to want. */
static void expect_error(const char *yaml, const char *want)
{
	ltxfs_cfg cfg;
	int rc = load(&cfg, yaml);

	if (rc != -EINVAL || strcmp(err, want) != 0)
		fail_msg("yaml:\n%s\nrc %d, error \"%s\"\nwanted \"%s\"", yaml,
			 rc, err, want);
	/* On error the struct holds the defaults. */
	assert_string_equal(cfg.fuse.dir, "/litefs");
	assert_int_equal(cfg.data.zstd_level, 1);
	cfg_free(&cfg);
}

static void check_defaults(const ltxfs_cfg *c)
{
	assert_string_equal(c->fuse.dir, "/litefs");
	assert_false(c->fuse.allow_other);
	assert_false(c->fuse.debug);
	assert_string_equal(c->data.dir, "/var/lib/ltxfs");
	assert_int_equal(c->data.retention_ms, 10 * 60 * 1000);
	assert_int_equal(c->data.retention_bytes, 1073741824);
	assert_true(c->data.compress);
	assert_int_equal(c->data.zstd_level, 1);
	assert_string_equal(c->http.addr, ":20202");
	assert_string_equal(c->http.token, "");
	assert_int_equal(c->http.max_import_size, 0);
	assert_int_equal(c->lease.type, CFG_LEASE_STATIC);
	assert_true(c->lease.candidate);
	assert_string_equal(c->lease.advertise_url, "");
	assert_string_equal(c->lease.primary_url, "");
	assert_string_equal(c->lease.hostname, "");
	assert_string_equal(c->lease.upstream_url, "");
	assert_string_equal(c->region, "");
	assert_int_equal(c->lease.etcd.endpoints.count, 0);
	assert_string_equal(c->lease.etcd.prefix, "/ltxfs");
	assert_int_equal(c->lease.etcd.ttl_ms, 10000);
	assert_string_equal(c->lease.etcd.username, "");
	assert_string_equal(c->lease.etcd.password, "");
	assert_int_equal(c->exec.count, 0);
	assert_int_equal(c->exec_grace_ms, 10000);
	assert_int_equal(c->http.ready_max_lag_ms, 10000);
	assert_int_equal(c->log.level, LIB_LOG_INFO);
	assert_int_equal(c->log.format, LIB_LOG_TEXT);
}

static void test_defaults(void **state)
{
	ltxfs_cfg cfg;

	assert_int_equal(cfg_init_defaults(&cfg), 0);
	check_defaults(&cfg);
	cfg_free(&cfg);
	/* cfg_free zeroes, and a zeroed struct frees again. */
	assert_null(cfg.fuse.dir);
	cfg_free(&cfg);
	cfg_free(NULL);
}

static const char full_yaml[] =
	"fuse:\n"
	"  dir: /mnt/db\n"
	"  allow-other: true\n"
	"  debug: yes\n"
	"data:\n"
	"  dir: '/srv/ltxfs'\n"
	"  retention: 1h\n"
	"  retention-bytes: 5000\n"
	"  compress: false\n"
	"  zstd-level: 19\n"
	"http:\n"
	"  addr: \"127.0.0.1:8080\"\n"
	"  token: s3cret\n"
	"  max-import-size: 1073741824\n"
	"lease:\n"
	"  type: etcd\n"
	"  candidate: false\n"
	"  advertise-url: http://node1:20202\n"
	"  primary-url: https://node0:20202\n"
	"  upstream-url: http://node2:20202\n"
	"  hostname: node1\n"
	"  etcd:\n"
	"    endpoints:\n"
	"      - http://etcd0:2379\n"
	"      - http://etcd1:2379\n"
	"    prefix: /apps/x\n"
	"    ttl: 1m30s\n"
	"    username: root\n"
	"    password: \"p\\\"w\"\n"
	"region: eu-west.1_b\n"
	"exec:\n"
	"  - ./app --port 8080\n"
	"  - \"echo 'two words' \\\"$$HOME\\\"\"\n"
	"log:\n"
	"  level: debug\n"
	"  format: json\n";

static void check_full(const ltxfs_cfg *c)
{
	assert_string_equal(c->fuse.dir, "/mnt/db");
	assert_true(c->fuse.allow_other);
	assert_true(c->fuse.debug);
	assert_string_equal(c->data.dir, "/srv/ltxfs");
	assert_int_equal(c->data.retention_ms, 3600 * 1000);
	assert_int_equal(c->data.retention_bytes, 5000);
	assert_false(c->data.compress);
	assert_int_equal(c->data.zstd_level, 19);
	assert_string_equal(c->http.addr, "127.0.0.1:8080");
	assert_string_equal(c->http.token, "s3cret");
	assert_int_equal(c->http.max_import_size, 1073741824);
	assert_int_equal(c->lease.type, CFG_LEASE_ETCD);
	assert_false(c->lease.candidate);
	assert_string_equal(c->lease.advertise_url, "http://node1:20202");
	assert_string_equal(c->lease.primary_url, "https://node0:20202");
	assert_string_equal(c->lease.hostname, "node1");
	assert_string_equal(c->lease.upstream_url, "http://node2:20202");
	assert_string_equal(c->region, "eu-west.1_b");
	assert_int_equal(c->lease.etcd.endpoints.count, 2);
	assert_string_equal(c->lease.etcd.endpoints.items[0],
			    "http://etcd0:2379");
	assert_string_equal(c->lease.etcd.endpoints.items[1],
			    "http://etcd1:2379");
	assert_string_equal(c->lease.etcd.prefix, "/apps/x");
	assert_int_equal(c->lease.etcd.ttl_ms, 90000);
	assert_string_equal(c->lease.etcd.username, "root");
	assert_string_equal(c->lease.etcd.password, "p\"w");
	assert_int_equal(c->exec.count, 2);
	assert_string_equal(c->exec.items[0].cmd, "./app --port 8080");
	/* A lone $ is not special. */
	assert_string_equal(c->exec.items[1].cmd, "echo 'two words' \"$$HOME\"");
	assert_int_equal(c->log.level, LIB_LOG_DEBUG);
	assert_int_equal(c->log.format, LIB_LOG_JSON);
}

static void test_every_key(void **state)
{
	ltxfs_cfg cfg;

	assert_int_equal(load(&cfg, full_yaml), 0);
	check_full(&cfg);
	cfg_free(&cfg);
}

static void test_partial_keeps_defaults(void **state)
{
	ltxfs_cfg cfg;

	assert_int_equal(load(&cfg, "data:\n  zstd-level: 3\n"), 0);
	assert_int_equal(cfg.data.zstd_level, 3);
	cfg.data.zstd_level = 1;
	check_defaults(&cfg);
	cfg_free(&cfg);
}

static void test_single_string_lists(void **state)
{
	ltxfs_cfg cfg;

	assert_int_equal(load(&cfg, "exec: ./run.sh\n"
				    "lease:\n"
				    "  type: etcd\n"
				    "  etcd:\n"
				    "    endpoints: http://etcd:2379\n"),
			 0);
	assert_int_equal(cfg.exec.count, 1);
	assert_string_equal(cfg.exec.items[0].cmd, "./run.sh");
	assert_int_equal(cfg.lease.etcd.endpoints.count, 1);
	assert_string_equal(cfg.lease.etcd.endpoints.items[0],
			    "http://etcd:2379");
	cfg_free(&cfg);

	/* Flow style, and null meaning empty. */
	assert_int_equal(load(&cfg, "exec: [a, 'b c']\n"), 0);
	assert_int_equal(cfg.exec.count, 2);
	assert_string_equal(cfg.exec.items[1].cmd, "b c");
	cfg_free(&cfg);
	assert_int_equal(load(&cfg, "exec:\n"), 0);
	assert_int_equal(cfg.exec.count, 0);
	cfg_free(&cfg);
}

static void test_env_expansion(void **state)
{
	ltxfs_cfg cfg;

	setenv("LTXFS_TEST_DIR", "/mnt/x", 1);
	setenv("LTXFS_TEST_LEVEL", "7", 1);
	setenv("LTXFS_TEST_EMPTY", "", 1);
	setenv("LTXFS_TEST_HOST", "node-3", 1);
	assert_int_equal(
		load(&cfg,
		     "fuse:\n"
		     "  dir: ${LTXFS_TEST_DIR}/db\n"
		     "data:\n"
		     "  dir: \"${LTXFS_TEST_UNSET:-/d}/${LTXFS_TEST_EMPTY:-e}\"\n"
		     "  zstd-level: ${LTXFS_TEST_LEVEL}\n"
		     "  retention: ${LTXFS_TEST_UNSET:-90}s\n"
		     "lease:\n"
		     "  hostname: ${LTXFS_TEST_EMPTY}\n"
		     "  advertise-url: http://${LTXFS_TEST_HOST}:20202\n"
		     "exec:\n"
		     "  - echo $${HOME} $$${LTXFS_TEST_HOST} $HOME\n"),
		0);
	assert_string_equal(cfg.fuse.dir, "/mnt/x/db");
	assert_string_equal(cfg.data.dir, "/d/e");
	assert_int_equal(cfg.data.zstd_level, 7);
	assert_int_equal(cfg.data.retention_ms, 90000);
	assert_string_equal(cfg.lease.hostname, "");
	assert_string_equal(cfg.lease.advertise_url, "http://node-3:20202");
	assert_string_equal(cfg.exec.items[0].cmd, "echo ${HOME} $node-3 $HOME");
	cfg_free(&cfg);

	expect_error("fuse:\n  debug: false\n  dir: /a/${LTXFS_TEST_UNSET}\n",
		     "t.yml:3: environment variable \"LTXFS_TEST_UNSET\" is "
		     "not set (in fuse.dir)");
	expect_error("fuse:\n  dir: ${LTXFS_TEST_DIR\n",
		     "t.yml:2: fuse.dir: bad variable reference "
		     "\"${LTXFS_TEST_DIR\" (use ${NAME} or ${NAME:-default}; "
		     "$${ for a literal ${)");
	expect_error("fuse:\n  dir: ${}\n",
		     "t.yml:2: fuse.dir: bad variable reference \"${}\" (use "
		     "${NAME} or ${NAME:-default}; $${ for a literal ${)");
	/* Expansion happens before conversion. */
	setenv("LTXFS_TEST_LEVEL", "fast", 1);
	expect_error("data:\n  zstd-level: ${LTXFS_TEST_LEVEL}\n",
		     "t.yml:2: data.zstd-level: \"fast\" is not an integer");
	unsetenv("LTXFS_TEST_DIR");
	unsetenv("LTXFS_TEST_LEVEL");
	unsetenv("LTXFS_TEST_EMPTY");
	unsetenv("LTXFS_TEST_HOST");
}

/* A list given as one string from the environment (a container's or a
 * pod's): empty after expansion is the empty list, and commas separate
 * items, so lease.etcd.endpoints can come from one variable. */
static void test_env_list(void **state)
{
	const char *y = "lease:\n  etcd:\n"
			"    endpoints: ${LTXFS_TEST_EPS:-}\n";
	ltxfs_cfg cfg;

	assert_int_equal(load(&cfg, y), 0);
	assert_int_equal(cfg.lease.etcd.endpoints.count, 0);
	cfg_free(&cfg);

	setenv("LTXFS_TEST_EPS", "http://e1:2379,http://e2:2379", 1);
	assert_int_equal(load(&cfg, y), 0);
	assert_int_equal(cfg.lease.etcd.endpoints.count, 2);
	assert_string_equal(cfg.lease.etcd.endpoints.items[0],
			    "http://e1:2379");
	assert_string_equal(cfg.lease.etcd.endpoints.items[1],
			    "http://e2:2379");
	cfg_free(&cfg);

	/* An empty item between commas is still refused. */
	setenv("LTXFS_TEST_EPS", "http://e1:2379,,http://e2:2379", 1);
	expect_error(y, "t.yml:3: lease.etcd.endpoints: empty item");
	unsetenv("LTXFS_TEST_EPS");
}

static void test_token_env(void **state)
{
	ltxfs_cfg cfg;
	char *out;

	setenv(CFG_TOKEN_ENV, "from-env", 1);
	assert_int_equal(load(&cfg, ""), 0);
	assert_string_equal(cfg.http.token, "from-env");
	out = print_to_string(&cfg, false);
	assert_null(strstr(out, "from-env"));
	assert_non_null(strstr(out, "  token: \"<redacted>\"\n"));
	free(out);
	cfg_free(&cfg);

	/* The key, even empty, wins over the environment. */
	assert_int_equal(load(&cfg, "http:\n  token: \"\"\n"), 0);
	assert_string_equal(cfg.http.token, "");
	cfg_free(&cfg);
	assert_int_equal(load(&cfg, "http:\n  token: abc\n"), 0);
	assert_string_equal(cfg.http.token, "abc");
	cfg_free(&cfg);
	unsetenv(CFG_TOKEN_ENV);

	/* Defaults alone do not read the environment. */
	setenv(CFG_TOKEN_ENV, "x", 1);
	assert_int_equal(cfg_init_defaults(&cfg), 0);
	assert_string_equal(cfg.http.token, "");
	cfg_free(&cfg);
	unsetenv(CFG_TOKEN_ENV);
}

static void test_unknown_keys(void **state)
{
	expect_error("fuse:\n  dir: /x\n\n# c\n\n\n  dirr: /y\n",
		     "t.yml:7: unknown key \"fuse.dirr\"");
	expect_error("fusee:\n  dir: /x\n", "t.yml:1: unknown key \"fusee\"");
	expect_error("lease:\n  etcd:\n    endpoint: http://e\n",
		     "t.yml:3: unknown key \"lease.etcd.endpoint\"");
	expect_error("log:\n  level: info\n  colour: true\n",
		     "t.yml:3: unknown key \"log.colour\"");
	expect_error("dir: /x\n", "t.yml:1: unknown key \"dir\"");
	expect_error("fuse:\n  dir:\n    sub: 1\n",
		     "t.yml:3: fuse.dir: expected a single value, not a "
		     "mapping");
	expect_error("fuse: /x\n",
		     "t.yml:1: fuse: expected a mapping of keys, not a scalar");
	expect_error("fuse:\n  dir: /a\nfuse:\n  debug: true\n",
		     "t.yml:3: duplicate key \"fuse\" (first on line 1)");
	expect_error("fuse:\n  dir: /a\n  dir: /b\n",
		     "t.yml:3: duplicate key \"fuse.dir\" (first on line 2)");
}

static void test_bad_values(void **state)
{
	expect_error("data:\n  zstd-level: 1.5\n",
		     "t.yml:2: data.zstd-level: \"1.5\" is not an integer");
	expect_error("data:\n  zstd-level: 20\n",
		     "t.yml:2: data.zstd-level: 20 is out of range 1..19");
	expect_error("data:\n  zstd-level: 0\n",
		     "t.yml:2: data.zstd-level: 0 is out of range 1..19");
	expect_error("data:\n  zstd-level: 99999999999999999999\n",
		     "t.yml:2: data.zstd-level: \"99999999999999999999\" is "
		     "not an integer");
	expect_error("data:\n  retention-bytes: -1\n",
		     "t.yml:2: data.retention-bytes: -1 is less than 0");
	expect_error("data:\n  retention-bytes: 1G\n",
		     "t.yml:2: data.retention-bytes: \"1G\" is not an "
		     "integer");
	expect_error("data:\n  zstd-level:\n",
		     "t.yml:2: data.zstd-level: no value");
	expect_error("fuse:\n  debug: maybe\n",
		     "t.yml:2: fuse.debug: \"maybe\" is not a boolean (true "
		     "or false)");
	expect_error("fuse:\n  debug: 1\n",
		     "t.yml:2: fuse.debug: \"1\" is not a boolean (true or "
		     "false)");
	expect_error("data:\n  retention: 10x\n",
		     "t.yml:2: data.retention: \"10x\" is not a duration "
		     "(e.g. 500ms, 10s, 2m, 1h, 7d, or plain seconds)");
	expect_error("data:\n  retention: -5s\n",
		     "t.yml:2: data.retention: \"-5s\" is not a duration "
		     "(e.g. 500ms, 10s, 2m, 1h, 7d, or plain seconds)");
	expect_error("lease:\n  etcd:\n    ttl: 500ms\n",
		     "t.yml:3: lease.etcd.ttl: 500ms is less than 1s");
	expect_error("lease:\n  etcd:\n    ttl: 0\n",
		     "t.yml:3: lease.etcd.ttl: 0s is less than 1s");
	expect_error("lease:\n  type: consul\n",
		     "t.yml:2: lease.type: \"consul\" is not one of static, "
		     "etcd");
	expect_error("log:\n  level: verbose\n",
		     "t.yml:2: log.level: \"verbose\" is not one of debug, "
		     "info, warn, error");
	expect_error("log:\n  format: xml\n",
		     "t.yml:2: log.format: \"xml\" is not one of text, json");
	expect_error("lease:\n  type: etcd\n",
		     "t.yml:2: lease.type is etcd but lease.etcd.endpoints "
		     "is empty");
	expect_error("lease:\n  etcd:\n    endpoints: [etcd:2379]\n",
		     "t.yml:3: lease.etcd.endpoints: \"etcd:2379\" is not an "
		     "http:// or https:// URL");
	expect_error("lease:\n  primary-url: node0:20202\n",
		     "t.yml:2: lease.primary-url: \"node0:20202\" is not an "
		     "http:// or https:// URL");
	expect_error("http:\n  addr: 20202\n",
		     "t.yml:2: http.addr: \"20202\" is not [HOST]:PORT (e.g. "
		     ":20202, 0.0.0.0:20202)");
	expect_error("http:\n  addr: \":70000\"\n",
		     "t.yml:2: http.addr: \":70000\" is not [HOST]:PORT (e.g. "
		     ":20202, 0.0.0.0:20202)");
	expect_error("fuse:\n  dir: \"\"\n", "t.yml:2: fuse.dir: must not be "
					     "empty");
	expect_error("fuse:\n  dir:\n", "t.yml:2: fuse.dir: must not be empty");
	expect_error("fuse:\n  dir: [a, b]\n",
		     "t.yml:2: fuse.dir: expected a single value, not a list");
	expect_error("exec:\n  - a\n  - [b]\n",
		     "t.yml:3: exec: expected a string or a mapping (cmd, "
		     "if-candidate), not a list");
	expect_error("exec:\n  - a\n  - ''\n", "t.yml:3: exec: empty item");
	expect_error("fuse:\n  dir: /mnt\ndata:\n  dir: /mnt/data\n",
		     "t.yml:4: data.dir \"/mnt/data\" is inside fuse.dir "
		     "\"/mnt\"");
	expect_error("fuse:\n  dir: /var/lib/ltxfs/\n",
		     "t.yml:2: data.dir \"/var/lib/ltxfs\" is inside fuse.dir "
		     "\"/var/lib/ltxfs/\"");
	/* A region is a metrics label: a short plain name. */
	expect_error("region: eu west\n", "t.yml:1: region \"eu west\" must "
		     "be up to 63 bytes of A-Z a-z 0-9 . _ -");
	expect_error("region: \"a\\\"b\"\n", "t.yml:1: region \"a\"b\" must "
		     "be up to 63 bytes of A-Z a-z 0-9 . _ -");
	expect_error("lease:\n  upstream-url: node2:20202\n",
		     "t.yml:2: lease.upstream-url: \"node2:20202\" is not an "
		     "http:// or https:// URL");
	expect_error("lease:\n  advertise-url: http://n1:20202\n"
		     "  upstream-url: http://n1:20202\n",
		     "t.yml:3: lease.upstream-url is this node's own "
		     "lease.advertise-url (http://n1:20202): a node cannot "
		     "stream from itself");
	/* Multi-line values still give a one-line error. */
	expect_error("fuse:\n  debug: \"a\\nb\"\n",
		     "t.yml:2: fuse.debug: \"a b\" is not a boolean (true or "
		     "false)");
}

/* The TLS keys that go together, the scoped metrics token, and
 * metrics-auth's values (issue 16). */
static void test_http_tls_keys(void **state)
{
	ltxfs_cfg cfg;

	(void)state;
	expect_error("http:\n  tls-cert-file: /c\n",
		     "t.yml:2: http.tls-cert-file is set but "
		     "http.tls-key-file is empty: it needs it");
	expect_error("http:\n  tls-key-file: /k\n",
		     "t.yml:2: http.tls-key-file is set but "
		     "http.tls-cert-file is empty: it needs it");
	expect_error("http:\n  tls-client-ca-file: /ca\n",
		     "t.yml:2: http.tls-client-ca-file is set but "
		     "http.tls-cert-file is empty: it needs it");
	expect_error("http:\n  tls-client-key-file: /k\n",
		     "t.yml:2: http.tls-client-key-file is set but "
		     "http.tls-client-cert-file is empty: it needs it");
	expect_error("http:\n  metrics-token: m\n",
		     "t.yml:2: http.metrics-token is set but http.token is "
		     "empty: it needs it");
	expect_error("http:\n  metrics-auth: open\n",
		     "t.yml:2: http.metrics-auth: \"open\" is not one of "
		     "token, none");
	expect_error("http:\n  tls-skip-verify: true\n",
		     "t.yml:2: unknown key \"http.tls-skip-verify\"");
	assert_int_equal(load(&cfg, "http:\n  token: t\n"
				    "  metrics-token: m\n"
				    "  metrics-auth: none\n"
				    "  tls-cert-file: /c\n"
				    "  tls-key-file: /k\n"
				    "  tls-client-ca-file: /ca\n"),
			 0);
	assert_string_equal(cfg.http.metrics_token, "m");
	assert_int_equal(cfg.http.metrics_auth, CFG_METRICS_AUTH_NONE);
	assert_string_equal(cfg.http.tls_client_ca_file, "/ca");
	assert_string_equal(cfg.http.tls_ca_file, "");
	cfg_free(&cfg);
}

static void test_bad_yaml(void **state)
{
	ltxfs_cfg cfg;

	assert_int_equal(load(&cfg, "fuse:\n  dir: [a\n"), -EINVAL);
	assert_true(strncmp(err, "t.yml:", 6) == 0);
	assert_non_null(strstr(err, "YAML syntax error"));
	assert_null(strchr(err, '\n'));
	cfg_free(&cfg);
	expect_error("- a\n- b\n",
		     "t.yml:1: expected a mapping of keys, not a list");
	expect_error("fuse:\n  debug: true\n---\nfuse:\n  debug: false\n",
		     "t.yml:4: more than one YAML document");
	expect_error("? [a]\n: 1\n", "t.yml:1: keys must be strings");
}

static void test_empty(void **state)
{
	static const char *const texts[] = {
		"", "\n", "# only a comment\n", "---\n", "~\n",
		"fuse:\ndata:\nlease:\n  etcd:\n",
	};
	ltxfs_cfg cfg;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		if (load(&cfg, texts[i]) != 0)
			fail_msg("\"%s\": %s", texts[i], err);
		check_defaults(&cfg);
		cfg_free(&cfg);
	}
}

static void test_missing_file(void **state)
{
	ltxfs_cfg cfg;
	int rc = cfg_load_file(&cfg, "/nonexistent/ltxfs.yml", err,
			       sizeof(err));

	assert_int_equal(rc, -ENOENT);
	assert_string_equal(err,
			    "/nonexistent/ltxfs.yml: No such file or directory");
	check_defaults(&cfg);
	cfg_free(&cfg);

	rc = cfg_load_file(&cfg, "/", err, sizeof(err));
	assert_int_equal(rc, -EISDIR);
	cfg_free(&cfg);
}

/* Writes text to a fresh temporary file; returns its malloc'd path. */
static char *write_temp(const char *text)
{
	char *path = strdup("/tmp/ltxfs-test-cfg-XXXXXX");
	FILE *f;
	int fd;

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	return path;
}

static void test_file_error_names_file(void **state)
{
	char *path = write_temp("fuse:\n  dirr: x\n");
	char want[600];
	ltxfs_cfg cfg;

	assert_int_equal(cfg_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: unknown key \"fuse.dirr\"", path);
	assert_string_equal(err, want);
	cfg_free(&cfg);
	unlink(path);
	free(path);
}

static void test_defaults_round_trip(void **state)
{
	ltxfs_cfg def, back;
	char *text, *path;

	assert_int_equal(cfg_init_defaults(&def), 0);
	text = print_to_string(&def, true);
	path = write_temp(text);
	if (cfg_load_file(&back, path, err, sizeof(err)) != 0)
		fail_msg("%s\n%s", err, text);
	check_defaults(&back);
	assert_same_cfg(&def, &back);
	cfg_free(&back);
	unlink(path);
	free(path);
	free(text);

	/* Without comments too. */
	text = print_to_string(&def, false);
	assert_int_equal(load(&back, text), 0);
	assert_same_cfg(&def, &back);
	cfg_free(&back);
	free(text);
	cfg_free(&def);
}

static void test_full_round_trip(void **state)
{
	ltxfs_cfg cfg, back;
	char *text;

	assert_int_equal(load(&cfg, full_yaml), 0);
	/* Awkward strings survive: quotes, backslash, ${, control bytes. */
	free(cfg.lease.hostname);
	cfg.lease.hostname = strdup("a\"b\\c ${X} $${Y} \t\x01 ünï");
	assert_non_null(cfg.lease.hostname);
	text = print_to_string(&cfg, true);
	if (load(&back, text) != 0)
		fail_msg("%s\n%s", err, text);
	/* Secrets come back redacted. */
	assert_string_equal(back.http.token, "<redacted>");
	assert_string_equal(back.lease.etcd.password, "<redacted>");
	free(back.http.token);
	free(back.lease.etcd.password);
	back.http.token = strdup("s3cret");
	back.lease.etcd.password = strdup("p\"w");
	assert_string_equal(back.lease.hostname, cfg.lease.hostname);
	assert_same_cfg(&cfg, &back);
	free(cfg.lease.hostname);
	cfg.lease.hostname = strdup("node1");
	check_full(&cfg);
	cfg_free(&back);
	cfg_free(&cfg);
	free(text);
}

/* exec as LiteFS writes it: items are strings or {cmd, if-candidate}. */
static void test_exec_forms(void **state)
{
	ltxfs_cfg cfg, again;
	char *text;

	(void)state;
	setenv("LTXFS_TEST_MIG", "./migrate.sh", 1);
	assert_int_equal(load(&cfg, "exec:\n"
				    "  - cmd: ${LTXFS_TEST_MIG} --up\n"
				    "    if-candidate: true\n"
				    "  - cmd: ./check\n"
				    "    if-candidate: no\n"
				    "  - ./app --port 8080\n"
				    "exec-grace-period: 30s\n"),
			 0);
	assert_int_equal(cfg.exec.count, 3);
	assert_string_equal(cfg.exec.items[0].cmd, "./migrate.sh --up");
	assert_true(cfg.exec.items[0].if_candidate);
	assert_string_equal(cfg.exec.items[1].cmd, "./check");
	assert_false(cfg.exec.items[1].if_candidate);
	assert_string_equal(cfg.exec.items[2].cmd, "./app --port 8080");
	assert_false(cfg.exec.items[2].if_candidate);
	assert_int_equal(cfg.exec_grace_ms, 30000);
	/* Printed, it loads back the same. */
	text = print_to_string(&cfg, true);
	assert_int_equal(load(&again, text), 0);
	assert_same_cfg(&cfg, &again);
	assert_true(again.exec.items[0].if_candidate);
	free(text);
	cfg_free(&again);
	cfg_free(&cfg);
	/* A mapping alone is a one-item list. */
	assert_int_equal(load(&cfg, "exec:\n  cmd: ./app\n"), 0);
	assert_int_equal(cfg.exec.count, 1);
	assert_string_equal(cfg.exec.items[0].cmd, "./app");
	cfg_free(&cfg);
	unsetenv("LTXFS_TEST_MIG");

	expect_error("exec:\n  - cmd: ''\n",
		     "t.yml:2: exec.cmd: must not be empty");
	expect_error("exec:\n  - if-candidate: true\n",
		     "t.yml:2: exec: an item without cmd");
	expect_error("exec:\n  - cmd: a\n    foo: 1\n",
		     "t.yml:3: exec: unknown or repeated key \"foo\" (an item "
		     "has cmd and if-candidate)");
	expect_error("exec:\n  - cmd: a\n    cmd: b\n",
		     "t.yml:3: exec: unknown or repeated key \"cmd\" (an item "
		     "has cmd and if-candidate)");
	expect_error("exec:\n  - cmd: a\n    if-candidate: maybe\n",
		     "t.yml:3: exec.if-candidate: \"maybe\" is not a boolean "
		     "(true or false)");
	expect_error("exec:\n  - cmd: [a]\n",
		     "t.yml:2: exec.cmd: expected a single value, not a list");
	expect_error("exec-grace-period: soon\n",
		     "t.yml:1: exec-grace-period: \"soon\" is not a duration "
		     "(e.g. 500ms, 10s, 2m, 1h, 7d, or plain seconds)");
}

static void test_durations(void **state)
{
	static const struct {
		const char *s;
		int64_t ms;
	} ok[] = {
		{"0", 0},          {"10", 10000},  {"10s", 10000},
		{"500ms", 500},    {"2m", 120000}, {"1h", 3600000},
		{"1h2m3s4ms", 3723004}, {"0ms", 0}, {"7d", 604800000},
		{"1d12h", 129600000},
	};
	static const char *const bad[] = {
		"", "s", "10x", "1.5s", "-1s", " 1s", "1s ", "10 s", "1w",
		"ms", "d", "99999999999999999999h", "9223372036854775807s",
	};
	int64_t ms;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(cfg_parse_duration(ok[i].s, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (cfg_parse_duration(bad[i], &ms) != -EINVAL)
			fail_msg("\"%s\" accepted", bad[i]);
}

static void test_print_durations(void **state)
{
	ltxfs_cfg cfg;
	char *out;

	assert_int_equal(load(&cfg, "data:\n  retention: 1500ms\n"
				    "lease:\n  etcd:\n    ttl: 120\n"),
			 0);
	out = print_to_string(&cfg, false);
	assert_non_null(strstr(out, "  retention: 1500ms\n"));
	assert_non_null(strstr(out, "    ttl: 2m\n"));
	free(out);
	cfg_free(&cfg);
}

/* The backup section: its defaults, a full s3 store, and the checks of
 * cfg_backup.c's finish. */
static void test_backup(void **state)
{
	ltxfs_cfg cfg;

	assert_int_equal(load(&cfg, "fuse:\n  dir: /m\n"), 0);
	assert_int_equal(cfg.backup.type, 0);
	assert_int_equal(cfg.backup.interval_ms, 1000);
	assert_int_equal(cfg.backup.compaction_interval_ms, 600000);
	assert_string_equal(cfg.backup.region, "us-east-1");
	assert_false(cfg.backup.force_path_style);
	assert_int_equal(cfg.backup.snapshot_interval_ms, 86400000);
	assert_int_equal(cfg.backup.retention_ms, 7 * 86400000);
	cfg_free(&cfg);
	assert_int_equal(load(&cfg, "backup:\n  type: s3\n"
			      "  endpoint: http://127.0.0.1:9000\n"
			      "  bucket: b\n  prefix: p/q\n"
			      "  access-key-id: K\n"
			      "  secret-access-key: S\n"
			      "  force-path-style: true\n"
			      "  interval: 250ms\n"
			      "  snapshot-interval: 6h\n"
			      "  retention: 30d\n"
			      "  compaction-interval: 2s\n"), 0);
	assert_int_equal(cfg.backup.snapshot_interval_ms, 6 * 3600000);
	assert_int_equal(cfg.backup.retention_ms, 30LL * 86400000);
	assert_int_equal(cfg.backup.type, 2);
	assert_string_equal(cfg.backup.bucket, "b");
	assert_string_equal(cfg.backup.prefix, "p/q");
	assert_true(cfg.backup.force_path_style);
	assert_int_equal(cfg.backup.interval_ms, 250);
	assert_int_equal(cfg.backup.compaction_interval_ms, 2000);
	cfg_free(&cfg);
	expect_error("backup:\n  type: file\n",
		     "t.yml:2: backup.dir is required with backup.type: file");
	expect_error("backup:\n  type: s3\n  bucket: b\n",
		     "t.yml:2: backup.endpoint and backup.bucket are required "
		     "with backup.type: s3");
	expect_error("backup:\n  type: file\n  dir: /b\n  prefix: ../x\n",
		     "t.yml:4: backup.prefix: \"../x\" must be relative "
		     "without ..");
	expect_error("backup:\n  type: file\n  dir: /b\n"
		     "  snapshot-interval: 0\n",
		     "t.yml:4: backup.retention needs backup.snapshot-interval "
		     "(a newer snapshot is what lets older objects go); set "
		     "backup.retention: 0 to keep everything");
	assert_int_equal(load(&cfg, "backup:\n  type: file\n  dir: /b\n"
			      "  snapshot-interval: 0\n  retention: 0\n"),
			 0);
	cfg_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_backup, setup),
		cmocka_unit_test_setup(test_defaults, setup),
		cmocka_unit_test_setup(test_every_key, setup),
		cmocka_unit_test_setup(test_partial_keeps_defaults, setup),
		cmocka_unit_test_setup(test_single_string_lists, setup),
		cmocka_unit_test_setup(test_env_expansion, setup),
		cmocka_unit_test_setup(test_env_list, setup),
		cmocka_unit_test_setup(test_token_env, setup),
		cmocka_unit_test_setup(test_unknown_keys, setup),
		cmocka_unit_test_setup(test_bad_values, setup),
		cmocka_unit_test_setup(test_http_tls_keys, setup),
		cmocka_unit_test_setup(test_bad_yaml, setup),
		cmocka_unit_test_setup(test_empty, setup),
		cmocka_unit_test_setup(test_missing_file, setup),
		cmocka_unit_test_setup(test_file_error_names_file, setup),
		cmocka_unit_test_setup(test_defaults_round_trip, setup),
		cmocka_unit_test_setup(test_full_round_trip, setup),
		cmocka_unit_test_setup(test_exec_forms, setup),
		cmocka_unit_test_setup(test_durations, setup),
		cmocka_unit_test_setup(test_print_durations, setup),
	};

	return cmocka_run_group_tests_name("cmd/cfg", tests, NULL, NULL);
}
