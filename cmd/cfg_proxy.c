/* Configuration section `proxy`: the write-forwarding HTTP proxy in
 * front of the application (replica/proxy.h, docs/CONFIG.md). */
#include "cfg_i.h"

#include <stdlib.h>
#include <string.h>

static const struct cfg_key keys[] = {
	{.name = "proxy.addr", .type = T_STR, .off = CFG_OFF(proxy.addr),
	 .def = "",
	 .help = "Where clients connect to the proxy, [HOST]:PORT. Empty:\n"
		 "no proxy."},
	{.name = "proxy.target", .type = T_STR, .off = CFG_OFF(proxy.target),
	 .def = "",
	 .help = "The application's local address, HOST:PORT (HOST empty:\n"
		 "127.0.0.1). Required with proxy.addr."},
	{.name = "proxy.db", .type = T_STR, .off = CFG_OFF(proxy.db),
	 .def = "",
	 .help = "The database whose TXID is the consistency cookie's\n"
		 "(a name under the mount). Required with proxy.addr."},
	{.name = "proxy.advertise", .type = T_STR,
	 .off = CFG_OFF(proxy.advertise), .def = "", .flags = F_URL,
	 .help = "URL other nodes' proxies reach this one at\n"
		 "(http://HOST:PORT). Empty: the host of\n"
		 "lease.advertise-url with the port of proxy.addr."},
	{.name = "proxy.max-lag", .type = T_DURATION,
	 .off = CFG_OFF(proxy.max_lag_ms), .def = "0s", .min = 0,
	 .max = INT64_MAX,
	 .help = "A replica whose proxy.db has been behind the primary\n"
		 "for longer than this sends reads to the primary. 0: reads\n"
		 "stay local (the cookie still gives read-your-writes)."},
	{.name = "proxy.read-timeout", .type = T_DURATION,
	 .off = CFG_OFF(proxy.read_timeout_ms), .def = "5s", .min = 1,
	 .max = INT64_MAX,
	 .help = "How long a read waits for the TXID of its cookie before\n"
		 "it is sent to the primary instead."},
	{.name = "proxy.connect-timeout", .type = T_DURATION,
	 .off = CFG_OFF(proxy.connect_timeout_ms), .def = "5s", .min = 1,
	 .max = INT64_MAX,
	 .help = "Connecting to the application or to the primary's proxy\n"
		 "(502 after it)."},
	{.name = "proxy.idle-timeout", .type = T_DURATION,
	 .off = CFG_OFF(proxy.idle_timeout_ms), .def = "60s", .min = 1,
	 .max = INT32_MAX,
	 .help = "A client connection with no request (or a request that\n"
		 "sends nothing) for this long is closed."},
	{.name = "proxy.max-connections", .type = T_INT,
	 .off = CFG_OFF(proxy.max_conns), .def = "256", .min = 1,
	 .max = 65536,
	 .help = "Client connections served at once (a thread each); more\n"
		 "are answered 503."},
	{.name = "proxy.passthrough", .type = T_LIST,
	 .off = CFG_OFF(proxy.passthrough), .def = NULL,
	 .help = "Path patterns (shell globs; * also matches /; the query\n"
		 "is not part of the path) sent to the application as they\n"
		 "are, whatever the method and the role: no cookie, no\n"
		 "forwarding."},
	{.name = "proxy.always-forward", .type = T_LIST,
	 .off = CFG_OFF(proxy.always_forward), .def = NULL,
	 .help = "Path patterns of reads (GET, HEAD) a replica sends to the\n"
		 "primary (e.g. login callbacks that write)."},
};

/* [HOST]:PORT with PORT in 1..65535. */
static bool host_port(const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || !colon[1])
		return false;
	port = strtol(colon + 1, &end, 10);
	return *end == '\0' && colon[1] >= '0' && colon[1] <= '9' &&
	       port >= 1 && port <= 65535;
}

static int check_patterns(struct cfg_loader *ld, const char *key,
			  const cfg_strlist *l)
{
	for (size_t i = 0; i < l->count; i++)
		if (l->items[i][0] != '/' && l->items[i][0] != '*')
			return cfg_loader_error(ld, cfg_loader_line(ld, key),
						"%s: \"%s\" is not a path "
						"pattern (it starts with / "
						"or *)", key, l->items[i]);
	return 0;
}

static int finish(struct cfg_loader *ld)
{
	const ltxfs_cfg *c = cfg_loader_cfg(ld);
	const char *db = c->proxy.db;
	int rc;

	rc = check_patterns(ld, "proxy.passthrough", &c->proxy.passthrough);
	if (rc == 0)
		rc = check_patterns(ld, "proxy.always-forward",
				    &c->proxy.always_forward);
	if (rc < 0)
		return rc;
	if (!c->proxy.addr[0]) {
		if (c->proxy.target[0] || db[0])
			return cfg_loader_error(
				ld, cfg_loader_line(ld, c->proxy.target[0] ?
						    "proxy.target" :
						    "proxy.db"),
				"%s is set but proxy.addr is empty (the proxy "
				"is off)", c->proxy.target[0] ?
				"proxy.target" : "proxy.db");
		return 0;
	}
	if (!host_port(c->proxy.addr))
		return cfg_loader_error(ld, cfg_loader_line(ld, "proxy.addr"),
					"proxy.addr: \"%s\" is not [HOST]:PORT",
					c->proxy.addr);
	if (!host_port(c->proxy.target))
		return cfg_loader_error(
			ld, cfg_loader_line(ld, c->proxy.target[0] ?
					    "proxy.target" : "proxy.addr"),
			"proxy.target: \"%s\" is not HOST:PORT (it is "
			"required with proxy.addr)", c->proxy.target);
	if (!db[0] || db[0] == '.' || strchr(db, '/'))
		return cfg_loader_error(
			ld, cfg_loader_line(ld, db[0] ? "proxy.db"
						      : "proxy.addr"),
			"proxy.db: \"%s\" is not a database name (it is "
			"required with proxy.addr)", db);
	if (c->proxy.advertise[0] &&
	    strncmp(c->proxy.advertise, "http://", 7) != 0)
		return cfg_loader_error(
			ld, cfg_loader_line(ld, "proxy.advertise"),
			"proxy.advertise: \"%s\": proxies speak plain "
			"http:// to each other", c->proxy.advertise);
	return 0;
}

const struct cfg_section cfg_proxy_section = {
	.name = "proxy",
	.help = "The write-forwarding HTTP proxy in front of the application.",
	.keys = keys,
	.nkeys = sizeof(keys) / sizeof(keys[0]),
	.finish = finish,
};
