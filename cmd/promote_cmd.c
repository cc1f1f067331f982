/*
 * `ltxfs promote [-c ltxfs.yml | --url http://HOST:PORT]`: makes the node
 * the primary by a graceful handoff (POST /promote, docs/PROTOCOL.md): the
 * primary stops taking writes, its replicas receive every transaction,
 * and the lease passes to this node. Needs lease.type etcd. Prints the
 * node's answer; exit 0 once the node is primary, 1 otherwise, 2 on a
 * usage error.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "cmd.h"
#include "node_url.h"

struct answer {
	char text[1024];
	size_t len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct answer *a = ctx;
	size_t n = size * nmemb, take = sizeof(a->text) - 1 - a->len;

	if (take > n)
		take = n;
	memcpy(a->text + a->len, data, take);
	a->len += take;
	a->text[a->len] = '\0';
	return n;
}

int cmd_promote(int argc, char **argv)
{
	const char *cfg_path = NULL, *url = NULL, *t;
	char base[512], full[600], auth[600], err[512];
	struct answer ans = {{0}, 0};
	struct curl_slist *hdrs = NULL;
	ltxfs_cfg cfg;
	char *token = NULL;
	long status = 0;
	CURLcode cc;
	CURL *c;
	size_t n;

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
		if (!url && cmd_node_url_from_addr(cfg.http.addr, base,
						  sizeof(base)) < 0) {
			fprintf(stderr, "ltxfs promote: http.addr \"%s\" is not "
				"[HOST]:PORT\n", cfg.http.addr);
			cfg_free(&cfg);
			free(token);
			return 1;
		}
		cfg_free(&cfg);
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
			return 2;
		}
		n = strlen(url);
		while (n > 0 && url[n - 1] == '/')
			n--;
		snprintf(base, sizeof(base), "%.*s", (int)n, url);
	}
	c = curl_easy_init();
	if (!token || !c) {
		fprintf(stderr, "ltxfs promote: out of memory\n");
		free(token);
		curl_easy_cleanup(c);
		return 1;
	}
	snprintf(full, sizeof(full), "%s/promote", base);
	if (token[0]) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &ans);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	free(token);
	if (cc != CURLE_OK) {
		fprintf(stderr, "ltxfs promote: %s: %s\n", full,
			curl_easy_strerror(cc));
		return 1;
	}
	n = strlen(ans.text);
	while (n > 0 && ans.text[n - 1] == '\n')
		ans.text[--n] = '\0';
	if (status != 200) {
		fprintf(stderr, "ltxfs promote: %s: HTTP %ld: %s\n", full,
			status, ans.text);
		return 1;
	}
	printf("%s\n", ans.text);
	return 0;
}
