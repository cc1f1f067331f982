/*
 * `ltxfs promote [-c ltxfs.yml | --url http://HOST:PORT]`: makes the node
 * the primary by a graceful handoff (POST /promote, docs/PROTOCOL.md): the
 * primary stops taking writes, its replicas receive every transaction,
 * and the lease passes to this node. Needs lease.type etcd. Prints the
 * node's answer; exit 0 once the node is primary, 1 otherwise, 2 on a
 * usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "cmd.h"
#include "node_url.h"
#include "replica/http_client.h"

int cmd_promote(int argc, char **argv)
{
	const char *cfg_path = NULL, *url = NULL, *t;
	char base[512], full[600], err[512], cerr[CURL_ERROR_SIZE];
	rep_http_body ans = REP_HTTP_BODY_INIT(1023, false);
	ltxfs_cfg cfg = {0};
	rep_http_tls tls = {NULL, NULL, NULL};
	char *token = NULL, *text, empty[1] = "";
	long status = 0;
	size_t n;
	int rc;

	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 ||
		     strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			cfg_path = argv[++i];
		else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
			url = argv[++i];
		else {
			fprintf(stderr, "usage: ltxfs promote [-c ltxfs.yml | "
				"--url http://HOST:PORT]\n");
			return 2;
		}
	}
	if (cfg_path || !url) {
		if (cfg_load(&cfg, cfg_path, NULL, err, sizeof(err)) < 0) {
			fprintf(stderr, "ltxfs promote: %s\n", err);
			cfg_free(&cfg);
			return 1;
		}
		token = strdup(cfg.http.token);
		tls = (rep_http_tls){cfg.http.tls_ca_file,
				     cfg.http.tls_client_cert_file,
				     cfg.http.tls_client_key_file};
		if (!url && cmd_node_url_from_addr(cfg.http.addr,
						  cfg.http.tls_cert_file[0],
						  base, sizeof(base)) < 0) {
			fprintf(stderr, "ltxfs promote: http.addr \"%s\" is not "
				"[HOST]:PORT\n", cfg.http.addr);
			cfg_free(&cfg);
			free(token);
			return 1;
		}
	} else {
		t = getenv(CFG_TOKEN_ENV);
		token = strdup(t ? t : "");
	}
	if (url) {
		if (strncmp(url, "http://", 7) != 0 &&
		    strncmp(url, "https://", 8) != 0) {
			fprintf(stderr, "ltxfs promote: --url must start with "
				"http:// or https://\n");
			free(token);
			cfg_free(&cfg);
			return 2;
		}
		n = strlen(url);
		while (n > 0 && url[n - 1] == '/')
			n--;
		snprintf(base, sizeof(base), "%.*s", (int)n, url);
	}
	if (!token) {
		fprintf(stderr, "ltxfs promote: out of memory\n");
		cfg_free(&cfg);
		return 1;
	}
	snprintf(full, sizeof(full), "%s/promote", base);
	rc = rep_http_call("POST", full, token, &tls, 30000L, &status, &ans,
			   cerr, sizeof(cerr));
	free(token);
	cfg_free(&cfg);
	if (rc < 0) {
		fprintf(stderr, "ltxfs promote: %s: %s\n", full, cerr);
		rep_http_body_free(&ans);
		return 1;
	}
	text = ans.p ? ans.p : empty;
	n = strlen(text);
	while (n > 0 && text[n - 1] == '\n')
		text[--n] = '\0';
	if (status != 200) {
		fprintf(stderr, "ltxfs promote: %s: HTTP %ld: %s\n", full,
			status, text);
		rep_http_body_free(&ans);
		return 1;
	}
	printf("%s\n", text);
	rep_http_body_free(&ans);
	return 0;
}
