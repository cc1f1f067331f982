/*
 * Configuration loading and printing (see cfg.h and docs/CONFIG.md).
 *
 * One table, cfg_keys[], describes every key: its dotted name, type, field,
 * default (as the text a user would write) and meaning. The defaults are
 * set by parsing those texts, the loader looks keys up in it, and cfg_print
 * walks it, so a key cannot be added to one and forgotten in another.
 *
 * Loading uses libyaml's document API: the whole file becomes a node tree,
 * then walk_mapping() visits it with the dotted prefix of the current
 * section. A mapping key is either a leaf in cfg_keys[], a section in
 * cfg_sections[], or an error. Scalar values are expanded (${VAR},
 * ${VAR:-default}, $${ for a literal ${) before they are converted.
 */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "lib/log.h"

/* Largest file cfg_load_file reads; a config is a few kilobytes. */
#define CFG_MAX_FILE (1024 * 1024)
#define CFG_REDACTED "<redacted>"

enum key_type {
	T_STR,      /* char * */
	T_BOOL,     /* bool */
	T_INT,      /* int, in [min, max] */
	T_I64,      /* int64_t, in [min, max] */
	T_DURATION, /* int64_t milliseconds, in [min, max] */
	T_ENUM,     /* int, parsed by parse(), printed from names[] */
	T_LIST,     /* cfg_strlist; a sequence or a single scalar */
};

enum key_flag {
	F_NONEMPTY = 1 << 0, /* "" is rejected */
	F_URL = 1 << 1,      /* "" or http(s)://... */
	F_SECRET = 1 << 2,   /* printed redacted */
	F_ADDR = 1 << 3,     /* [host]:port */
};

struct cfg_key {
	const char *name; /* full dotted name */
	enum key_type type;
	size_t off; /* offset of the field in ltxfs_cfg */
	const char *def; /* default as YAML text; NULL for an empty list */
	unsigned flags;
	int64_t min, max;
	const char *const *names; /* T_ENUM: value -> name, NULL-terminated */
	int (*parse)(const char *s, int *out);
	const char *help; /* lines separated by \n */
};

struct cfg_section {
	const char *name;
	const char *help;
};

static int parse_lease_type(const char *s, int *out);

static const char *const lease_type_names[] = {"static", "etcd", NULL};
static const char *const log_level_names[] = {"debug", "info", "warn",
					      "error", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};

#define OFF(member) offsetof(ltxfs_cfg, member)

/* Sections, in printing order; a section's keys must be contiguous below. */
static const struct cfg_section cfg_sections[] = {
	{"fuse", "The FUSE mount that applications open databases in."},
	{"data", "Where this node keeps databases and their LTX logs."},
	{"http", "The replication and admin HTTP server."},
	{"lease", "Which node is primary."},
	{"lease.etcd", "etcd v3 lease (lease.type: etcd)."},
	{"log", "Logging to stderr."},
};

static const struct cfg_key cfg_keys[] = {
	{.name = "fuse.dir", .type = T_STR, .off = OFF(fuse.dir),
	 .def = "/litefs", .flags = F_NONEMPTY,
	 .help = "Mount point; databases appear as files directly in it."},
	{.name = "fuse.allow-other", .type = T_BOOL,
	 .off = OFF(fuse.allow_other), .def = "false",
	 .help = "Let users other than the mounting one access the mount\n"
		 "(needs user_allow_other in /etc/fuse.conf when not root)."},
	{.name = "fuse.debug", .type = T_BOOL, .off = OFF(fuse.debug),
	 .def = "false", .help = "Print every FUSE request (very verbose)."},

	{.name = "data.dir", .type = T_STR, .off = OFF(data.dir),
	 .def = "/var/lib/ltxfs", .flags = F_NONEMPTY,
	 .help = "Data directory: node identity, databases, LTX logs.\n"
		 "Must not be inside fuse.dir."},
	{.name = "data.retention", .type = T_DURATION,
	 .off = OFF(data.retention_ms), .def = "10m", .min = 0,
	 .max = INT64_MAX,
	 .help = "Keep LTX records at least this long, so replicas that\n"
		 "fall behind catch up without a snapshot (500ms, 10s, 2m, "
		 "1h)."},
	{.name = "data.retention-bytes", .type = T_I64,
	 .off = OFF(data.retention_bytes), .def = "1073741824", .min = 0,
	 .max = INT64_MAX,
	 .help = "Upper bound in bytes on each database's LTX log.\n"
		 "0: no cap."},
	{.name = "data.compress", .type = T_BOOL, .off = OFF(data.compress),
	 .def = "true", .help = "Compress LTX records with zstd."},
	{.name = "data.zstd-level", .type = T_INT, .off = OFF(data.zstd_level),
	 .def = "1", .min = 1, .max = 19,
	 .help = "zstd compression level, 1 (fastest) to 19."},

	{.name = "http.addr", .type = T_STR, .off = OFF(http.addr),
	 .def = ":20202", .flags = F_NONEMPTY | F_ADDR,
	 .help = "Listen address, [HOST]:PORT; no host means all."},
	{.name = "http.token", .type = T_STR, .off = OFF(http.token), .def = "",
	 .flags = F_SECRET,
	 .help = "Cluster token; requests must carry \"Authorization: Bearer\n"
		 "TOKEN\". Empty: no authentication. When this key is absent\n"
		 "the token is taken from $LTXFS_TOKEN."},
	{.name = "http.max-import-size", .type = T_I64,
	 .off = OFF(http.max_import_size), .def = "0", .min = 0,
	 .max = INT64_MAX,
	 .help = "Largest database POST /import (ltxfs import) takes, in\n"
		 "bytes; larger ones get 413. 0: no cap but the data\n"
		 "directory's free space."},

	{.name = "lease.type", .type = T_ENUM, .off = OFF(lease.type),
	 .def = "static", .names = lease_type_names, .parse = parse_lease_type,
	 .help = "static: the primary is fixed by configuration;\n"
		 "etcd: nodes compete for a lease in etcd."},
	{.name = "lease.candidate", .type = T_BOOL, .off = OFF(lease.candidate),
	 .def = "true",
	 .help = "Whether this node may become primary. With static, the\n"
		 "candidate is the primary and the others are replicas."},
	{.name = "lease.advertise-url", .type = T_STR,
	 .off = OFF(lease.advertise_url), .def = "", .flags = F_URL,
	 .help = "URL other nodes reach this node at, e.g.\n"
		 "http://node1:20202."},
	{.name = "lease.primary-url", .type = T_STR,
	 .off = OFF(lease.primary_url), .def = "", .flags = F_URL,
	 .help = "static: URL of the primary; needed on replicas."},
	{.name = "lease.hostname", .type = T_STR, .off = OFF(lease.hostname),
	 .def = "",
	 .help = "Name of this node shown to others. Empty: gethostname()."},
	{.name = "lease.etcd.endpoints", .type = T_LIST,
	 .off = OFF(lease.etcd.endpoints), .def = NULL, .flags = F_URL,
	 .help = "etcd URLs (a list, or one string); required with etcd."},
	{.name = "lease.etcd.prefix", .type = T_STR,
	 .off = OFF(lease.etcd.prefix), .def = "/ltxfs", .flags = F_NONEMPTY,
	 .help = "Key prefix of this cluster's keys in etcd."},
	{.name = "lease.etcd.ttl", .type = T_DURATION,
	 .off = OFF(lease.etcd.ttl_ms), .def = "10s", .min = 1000,
	 .max = INT64_MAX,
	 .help = "Lease time to live, at least 1s. A primary that cannot\n"
		 "renew turns read-only before this has passed."},
	{.name = "lease.etcd.username", .type = T_STR,
	 .off = OFF(lease.etcd.username), .def = "",
	 .help = "etcd user name. Empty: no authentication."},
	{.name = "lease.etcd.password", .type = T_STR,
	 .off = OFF(lease.etcd.password), .def = "", .flags = F_SECRET,
	 .help = "etcd password."},
	{.name = "lease.etcd.tls-ca-file", .type = T_STR,
	 .off = OFF(lease.etcd.tls_ca_file), .def = "",
	 .help = "PEM file of the CA(s) an https endpoint's certificate must\n"
		 "chain to. Empty: the system's CA store. Verification of\n"
		 "the certificate and its name is never turned off."},
	{.name = "lease.etcd.tls-cert-file", .type = T_STR,
	 .off = OFF(lease.etcd.tls_cert_file), .def = "",
	 .help = "PEM client certificate for etcd (--client-cert-auth);\n"
		 "needs lease.etcd.tls-key-file."},
	{.name = "lease.etcd.tls-key-file", .type = T_STR,
	 .off = OFF(lease.etcd.tls_key_file), .def = "",
	 .help = "PEM private key of lease.etcd.tls-cert-file."},

	{.name = "exec", .type = T_LIST, .off = OFF(exec), .def = NULL,
	 .help = "Shell commands (a list, or one string) run under\n"
		 "supervision once the node is ready."},

	{.name = "log.level", .type = T_ENUM, .off = OFF(log.level),
	 .def = "info", .names = log_level_names, .parse = lib_log_parse_level,
	 .help = "debug, info, warn or error."},
	{.name = "log.format", .type = T_ENUM, .off = OFF(log.format),
	 .def = "text", .names = log_format_names,
	 .parse = lib_log_parse_format, .help = "text or json (one object a "
					       "line)."},
};

#define N_KEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))
#define N_SECTIONS (sizeof(cfg_sections) / sizeof(cfg_sections[0]))

static int parse_lease_type(const char *s, int *out)
{
	for (int i = 0; lease_type_names[i]; i++) {
		if (strcmp(s, lease_type_names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

static void *field(ltxfs_cfg *cfg, const struct cfg_key *k)
{
	return (char *)cfg + k->off;
}

static const void *cfield(const ltxfs_cfg *cfg, const struct cfg_key *k)
{
	return (const char *)cfg + k->off;
}

/* ---- value conversion --------------------------------------------------- */

static void strlist_free(cfg_strlist *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

/* Appends s (taken over on success) to l. Returns 0 or -ENOMEM. */
static int strlist_push(cfg_strlist *l, char *s)
{
	char **items = realloc(l->items, (l->count + 1) * sizeof(*items));

	if (!items)
		return -ENOMEM;
	items[l->count++] = s;
	l->items = items;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on"};
	static const char *const no[] = {"false", "no", "off"};

	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_i64(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (!isdigit((unsigned char)s[0]) && s[0] != '-' && s[0] != '+')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

int cfg_parse_duration(const char *s, int64_t *out_ms)
{
	int64_t total = 0;
	const char *p = s;
	bool plain = true;

	if (!*s)
		return -EINVAL;
	for (const char *q = s; *q; q++)
		plain = plain && isdigit((unsigned char)*q);
	while (*p) {
		int64_t n = 0, mult;

		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		while (isdigit((unsigned char)*p)) {
			if (__builtin_mul_overflow(n, 10, &n) ||
			    __builtin_add_overflow(n, *p - '0', &n))
				return -EINVAL;
			p++;
		}
		if (plain) {
			mult = 1000;
		} else if (p[0] == 'm' && p[1] == 's') {
			mult = 1;
			p += 2;
		} else if (*p == 's' || *p == 'm' || *p == 'h') {
			mult = *p == 's' ? 1000 : *p == 'm' ? 60000 : 3600000;
			p++;
		} else {
			return -EINVAL;
		}
		if (__builtin_mul_overflow(n, mult, &n) ||
		    __builtin_add_overflow(total, n, &total))
			return -EINVAL;
	}
	*out_ms = total;
	return 0;
}

/* Shortest exact form: 10m, 1h, 1500ms. */
static void format_duration(int64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % 3600000 == 0)
		snprintf(buf, len, "%" PRId64 "h", ms / 3600000);
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(buf, len, "%" PRId64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRId64 "s", ms / 1000);
	else
		snprintf(buf, len, "%" PRId64 "ms", ms);
}

static bool is_url(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

/* [HOST]:PORT, PORT in 1..65535. */
static bool is_addr(const char *s)
{
	const char *colon = strrchr(s, ':');
	int64_t port;

	if (!colon || parse_i64(colon + 1, &port) < 0 || colon[1] == '+' ||
	    colon[1] == '-')
		return false;
	return port >= 1 && port <= 65535;
}

/* Checks a string value of k against its flags; fills why on error. */
static int check_string(const struct cfg_key *k, const char *v, char *why,
			size_t whylen)
{
	if ((k->flags & F_NONEMPTY) && !*v) {
		snprintf(why, whylen, "must not be empty");
		return -EINVAL;
	}
	if ((k->flags & F_URL) && *v && !is_url(v)) {
		snprintf(why, whylen, "\"%s\" is not an http:// or https:// URL",
			 v);
		return -EINVAL;
	}
	if ((k->flags & F_ADDR) && !is_addr(v)) {
		snprintf(why, whylen,
			 "\"%s\" is not [HOST]:PORT (e.g. :20202, "
			 "0.0.0.0:20202)",
			 v);
		return -EINVAL;
	}
	return 0;
}

static int check_range(const struct cfg_key *k, int64_t v, char *why,
		       size_t whylen)
{
	char lo[32], got[32];

	if (v >= k->min && v <= k->max)
		return 0;
	if (k->type == T_DURATION) {
		format_duration(v, got, sizeof(got));
		format_duration(k->min, lo, sizeof(lo));
		snprintf(why, whylen, "%s is less than %s", got, lo);
	} else if (k->max == INT64_MAX) {
		snprintf(why, whylen, "%" PRId64 " is less than %" PRId64, v,
			 k->min);
	} else {
		snprintf(why, whylen,
			 "%" PRId64 " is out of range %" PRId64 "..%" PRId64, v,
			 k->min, k->max);
	}
	return -EINVAL;
}

/*
 * Sets the scalar key k (any type; a T_LIST gets one item) from the
 * already-expanded text v. Returns 0, -ENOMEM, or -EINVAL with the reason
 * in why.
 */
static int key_set(ltxfs_cfg *cfg, const struct cfg_key *k, const char *v,
		   char *why, size_t whylen)
{
	void *f = field(cfg, k);
	int64_t n;
	char *dup;
	bool b;
	int e, rc;

	switch (k->type) {
	case T_STR:
		rc = check_string(k, v, why, whylen);
		if (rc < 0)
			return rc;
		dup = strdup(v);
		if (!dup)
			return -ENOMEM;
		free(*(char **)f);
		*(char **)f = dup;
		return 0;
	case T_LIST:
		rc = check_string(k, v, why, whylen);
		if (rc < 0)
			return rc;
		if (!*v) {
			snprintf(why, whylen, "empty item");
			return -EINVAL;
		}
		dup = strdup(v);
		if (!dup)
			return -ENOMEM;
		rc = strlist_push(f, dup);
		if (rc < 0)
			free(dup);
		return rc;
	case T_BOOL:
		if (parse_bool(v, &b) < 0) {
			snprintf(why, whylen,
				 "\"%s\" is not a boolean (true or false)", v);
			return -EINVAL;
		}
		*(bool *)f = b;
		return 0;
	case T_INT:
	case T_I64:
		if (parse_i64(v, &n) < 0) {
			snprintf(why, whylen, "\"%s\" is not an integer", v);
			return -EINVAL;
		}
		rc = check_range(k, n, why, whylen);
		if (rc < 0)
			return rc;
		if (k->type == T_INT)
			*(int *)f = (int)n;
		else
			*(int64_t *)f = n;
		return 0;
	case T_DURATION:
		if (cfg_parse_duration(v, &n) < 0) {
			snprintf(why, whylen,
				 "\"%s\" is not a duration (e.g. 500ms, 10s, "
				 "2m, 1h, or plain seconds)",
				 v);
			return -EINVAL;
		}
		rc = check_range(k, n, why, whylen);
		if (rc < 0)
			return rc;
		*(int64_t *)f = n;
		return 0;
	case T_ENUM:
		if (k->parse(v, &e) < 0) {
			int len = snprintf(why, whylen, "\"%s\" is not one of",
					   v);

			for (int i = 0; k->names[i] && len >= 0 &&
					(size_t)len < whylen;
			     i++)
				len += snprintf(why + len, whylen - (size_t)len,
						"%s %s", i ? "," : "",
						k->names[i]);
			return -EINVAL;
		}
		*(int *)f = e;
		return 0;
	}
	return -EINVAL;
}

/* ---- defaults and freeing ----------------------------------------------- */

void cfg_free(ltxfs_cfg *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (k->type == T_STR)
			free(*(char **)field(cfg, k));
		else if (k->type == T_LIST)
			strlist_free(field(cfg, k));
	}
	memset(cfg, 0, sizeof(*cfg));
}

int cfg_init_defaults(ltxfs_cfg *cfg)
{
	char why[256];
	size_t i;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < N_KEYS; i++) {
		if (!cfg_keys[i].def)
			continue;
		rc = key_set(cfg, &cfg_keys[i], cfg_keys[i].def, why,
			     sizeof(why));
		if (rc < 0)
			goto fail;
	}
	return 0;

fail:
	/* A default that does not parse is a bug in cfg_keys[]. */
	if (rc != -ENOMEM)
		log_error("config: default of %s: %s", cfg_keys[i].name, why);
	cfg_free(cfg);
	return rc;
}

/* ---- loading ------------------------------------------------------------- */

struct loader {
	const char *name; /* file name for messages */
	yaml_document_t *doc;
	ltxfs_cfg *cfg;
	size_t key_line[N_KEYS]; /* 1-based line a key was set on; 0: unset */
	size_t section_line[N_SECTIONS];
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 3, 4))) static int
load_error(struct loader *ld, size_t line, const char *fmt, ...)
{
	va_list ap;
	int len;

	if (!ld->errlen)
		return -EINVAL;
	len = snprintf(ld->err, ld->errlen, "%s:%zu: ", ld->name, line);
	if (len >= 0 && (size_t)len < ld->errlen) {
		va_start(ap, fmt);
		vsnprintf(ld->err + len, ld->errlen - (size_t)len, fmt, ap);
		va_end(ap);
	}
	/* One line, whatever the values quoted in it hold. */
	for (char *p = ld->err; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return -EINVAL;
}

static size_t node_line(const yaml_node_t *n)
{
	return n->start_mark.line + 1;
}

static bool node_is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE ||
	    n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = (const char *)n->data.scalar.value;
	return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a scalar";
	}
}

/*
 * Expands ${VAR} and ${VAR:-default} (default when VAR is unset or empty)
 * in in. In a run of $ before a {, each $$ is one literal $ and a last odd
 * $ starts a reference: $${X} is the text ${X}, $$${X} is $ and X's value.
 * Any other $ is literal. *out is malloc'd, freed by the caller. Returns 0,
 * -ENOMEM or -EINVAL (reported).
 */
static int expand_env(struct loader *ld, size_t line, const char *key,
		      const char *in, char **out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int rc = 0;

	if (!f)
		return -ENOMEM;
	for (const char *p = in; *p;) {
		const char *name, *end, *def = NULL, *val;
		size_t nlen, run = 0;

		if (*p != '$') {
			fputc(*p++, f);
			continue;
		}
		while (p[run] == '$')
			run++;
		if (p[run] != '{') {
			fwrite(p, 1, run, f);
			p += run;
			continue;
		}
		/* Before a {, $$ is one literal $ and an odd $ expands. */
		for (size_t i = 0; i < run / 2; i++)
			fputc('$', f);
		p += run - 1;
		if (run % 2 == 0) {
			fputc('{', f);
			p += 2;
			continue;
		}
		name = p + 2;
		end = name;
		while (isalnum((unsigned char)*end) || *end == '_')
			end++;
		nlen = (size_t)(end - name);
		if (end[0] == ':' && end[1] == '-') {
			def = end + 2;
			end = strchr(def, '}');
		} else if (*end != '}') {
			end = NULL;
		}
		if (!end || nlen == 0 || isdigit((unsigned char)name[0])) {
			rc = load_error(ld, line,
					"%s: bad variable reference \"%.*s\" "
					"(use ${NAME} or ${NAME:-default}; "
					"$${ for a literal ${)",
					key, (int)strcspn(p, "}") + 1, p);
			goto cleanup;
		}
		{
			char vname[256];

			if (nlen >= sizeof(vname)) {
				rc = load_error(ld, line,
						"%s: variable name too long",
						key);
				goto cleanup;
			}
			memcpy(vname, name, nlen);
			vname[nlen] = '\0';
			val = getenv(vname);
			if (def && (!val || !*val)) {
				fwrite(def, 1, (size_t)(end - def), f);
			} else if (val) {
				fputs(val, f);
			} else {
				rc = load_error(ld, line,
						"environment variable \"%s\" is "
						"not set (in %s)",
						vname, key);
				goto cleanup;
			}
		}
		p = end + 1;
	}

cleanup:
	if (fclose(f) != 0 && rc == 0)
		rc = -ENOMEM;
	if (rc < 0) {
		free(buf);
		return rc;
	}
	*out = buf;
	return 0;
}

/* Expands and sets one scalar node into key k. */
static int load_scalar(struct loader *ld, const struct cfg_key *k,
		       const yaml_node_t *n)
{
	char why[512];
	char *v = NULL;
	int rc;

	if (n->type != YAML_SCALAR_NODE)
		return load_error(ld, node_line(n), "%s: expected %s, not %s",
				  k->name,
				  k->type == T_LIST ? "a list or a string"
						    : "a single value",
				  node_kind(n));
	if (strlen((const char *)n->data.scalar.value) !=
	    n->data.scalar.length)
		return load_error(ld, node_line(n), "%s: value contains NUL",
				  k->name);
	rc = expand_env(ld, node_line(n), k->name,
			(const char *)n->data.scalar.value, &v);
	if (rc < 0)
		return rc;
	rc = key_set(ld->cfg, k, v, why, sizeof(why));
	if (rc == -EINVAL)
		rc = load_error(ld, node_line(n), "%s: %s", k->name, why);
	free(v);
	return rc;
}

static int load_key(struct loader *ld, const struct cfg_key *k,
		    const yaml_node_t *n)
{
	char why[256];
	int rc;

	if (node_is_null(n)) {
		switch (k->type) {
		case T_LIST:
			strlist_free(field(ld->cfg, k));
			return 0;
		case T_STR:
			rc = key_set(ld->cfg, k, "", why, sizeof(why));
			if (rc == -EINVAL)
				rc = load_error(ld, node_line(n), "%s: %s",
						k->name, why);
			return rc;
		default:
			return load_error(ld, node_line(n), "%s: no value",
					  k->name);
		}
	}
	if (k->type != T_LIST)
		return load_scalar(ld, k, n);
	strlist_free(field(ld->cfg, k));
	if (n->type != YAML_SEQUENCE_NODE)
		return load_scalar(ld, k, n);
	for (yaml_node_item_t *it = n->data.sequence.items.start;
	     it < n->data.sequence.items.top; it++) {
		rc = load_scalar(ld, k, yaml_document_get_node(ld->doc, *it));
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int walk_mapping(struct loader *ld, const yaml_node_t *map,
			const char *prefix)
{
	char full[256];
	int rc;

	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *kn = yaml_document_get_node(ld->doc, pair->key);
		yaml_node_t *vn = yaml_document_get_node(ld->doc, pair->value);
		const struct cfg_key *key = NULL;
		size_t line = node_line(kn);
		size_t *seen = NULL;

		if (kn->type != YAML_SCALAR_NODE)
			return load_error(ld, line, "%s%skeys must be strings",
					  prefix, *prefix ? ": " : "");
		snprintf(full, sizeof(full), "%s%s%s", prefix,
			 *prefix ? "." : "", (const char *)kn->data.scalar.value);
		for (size_t i = 0; i < N_KEYS; i++) {
			if (strcmp(full, cfg_keys[i].name) == 0) {
				key = &cfg_keys[i];
				seen = &ld->key_line[i];
				break;
			}
		}
		if (!seen) {
			for (size_t i = 0; i < N_SECTIONS; i++) {
				if (strcmp(full, cfg_sections[i].name) == 0) {
					seen = &ld->section_line[i];
					break;
				}
			}
		}
		if (!seen)
			return load_error(ld, line, "unknown key \"%s\"", full);
		if (*seen)
			return load_error(ld, line,
					  "duplicate key \"%s\" (first on line "
					  "%zu)",
					  full, *seen);
		*seen = line;
		if (key) {
			rc = load_key(ld, key, vn);
		} else if (vn->type == YAML_MAPPING_NODE) {
			rc = walk_mapping(ld, vn, full);
		} else if (node_is_null(vn)) {
			rc = 0; /* "fuse:" alone: all defaults */
		} else {
			rc = load_error(ld, node_line(vn),
					"%s: expected a mapping of keys, not %s",
					full, node_kind(vn));
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

static size_t key_index(const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(cfg_keys[i].name, name) == 0)
			return i;
	return N_KEYS;
}

/* True when path b is a or lies under it, compared as written. */
static bool path_within(const char *a, const char *b)
{
	size_t n = strlen(a);

	while (n > 1 && a[n - 1] == '/')
		n--;
	if (strncmp(a, b, n) != 0)
		return false;
	return b[n] == '\0' || b[n] == '/' || (n == 1 && a[0] == '/');
}

/* lease.etcd.tls-*: a client certificate needs its key and the other way
 * round; TLS settings with an http:// endpoint would send the lease in
 * clear text while the file says otherwise. Whether the files can be
 * read is checked when the node starts (cmd/mount_cmd.c). */
static int check_etcd_tls(struct loader *ld)
{
	const char *cert = ld->cfg->lease.etcd.tls_cert_file;
	const char *key = ld->cfg->lease.etcd.tls_key_file;
	const char *ca = ld->cfg->lease.etcd.tls_ca_file;
	const cfg_strlist *eps = &ld->cfg->lease.etcd.endpoints;
	size_t cert_line = ld->key_line[key_index("lease.etcd.tls-cert-file")];
	size_t key_line = ld->key_line[key_index("lease.etcd.tls-key-file")];
	size_t ca_line = ld->key_line[key_index("lease.etcd.tls-ca-file")];

	if (!*cert != !*key)
		return load_error(ld, *cert ? cert_line : key_line,
				  "lease.etcd.tls-cert-file and "
				  "lease.etcd.tls-key-file go together: %s is "
				  "set but %s is empty",
				  *cert ? "lease.etcd.tls-cert-file"
					: "lease.etcd.tls-key-file",
				  *cert ? "lease.etcd.tls-key-file"
					: "lease.etcd.tls-cert-file");
	if (!*cert && !*ca)
		return 0;
	for (size_t i = 0; i < eps->count; i++)
		if (strncasecmp(eps->items[i], "https://", 8) != 0)
			return load_error(
				ld, *ca ? ca_line : cert_line,
				"lease.etcd.tls-* is set but endpoint \"%s\" "
				"of lease.etcd.endpoints is not https://",
				eps->items[i]);
	return 0;
}

/* Checks that need more than one key, and takes $LTXFS_TOKEN. */
static int load_finish(struct loader *ld)
{
	size_t type_i = key_index("lease.type");
	size_t data_line = ld->key_line[key_index("data.dir")];
	size_t fuse_line = ld->key_line[key_index("fuse.dir")];
	const char *tok;
	int rc;

	if (path_within(ld->cfg->fuse.dir, ld->cfg->data.dir))
		return load_error(ld, data_line ? data_line : fuse_line,
				  "data.dir \"%s\" is inside fuse.dir \"%s\"",
				  ld->cfg->data.dir, ld->cfg->fuse.dir);

	if (ld->cfg->lease.type == CFG_LEASE_ETCD &&
	    ld->cfg->lease.etcd.endpoints.count == 0)
		return load_error(ld, ld->key_line[type_i],
				  "lease.type is etcd but "
				  "lease.etcd.endpoints is empty");
	rc = check_etcd_tls(ld);
	if (rc < 0)
		return rc;
	tok = getenv(CFG_TOKEN_ENV);
	if (!ld->key_line[key_index("http.token")] && tok) {
		char *dup = strdup(tok);

		if (!dup)
			return -ENOMEM;
		free(ld->cfg->http.token);
		ld->cfg->http.token = dup;
	}
	return 0;
}

static int load_yaml(struct loader *ld, const char *text)
{
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	yaml_node_t *root;
	bool empty;
	int rc = 0;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text,
				     strlen(text));
	if (!yaml_parser_load(&parser, &doc))
		goto syntax;
	ld->doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (root && root->type == YAML_MAPPING_NODE)
		rc = walk_mapping(ld, root, "");
	else if (root && !node_is_null(root))
		rc = load_error(ld, node_line(root),
				"expected a mapping of keys, not %s",
				node_kind(root));
	empty = !root;
	ld->doc = NULL;
	yaml_document_delete(&doc);
	if (rc < 0 || empty)
		goto cleanup_parser;
	if (!yaml_parser_load(&parser, &extra))
		goto syntax;
	root = yaml_document_get_root_node(&extra);
	if (root)
		rc = load_error(ld, node_line(root),
				"more than one YAML document");
	yaml_document_delete(&extra);
	goto cleanup_parser;

syntax:
	if (parser.error == YAML_MEMORY_ERROR)
		rc = -ENOMEM;
	else
		rc = load_error(ld, parser.problem_mark.line + 1,
				"YAML syntax error: %s%s%s",
				parser.problem ? parser.problem : "unknown",
				parser.context ? " " : "",
				parser.context ? parser.context : "");
cleanup_parser:
	yaml_parser_delete(&parser);
	return rc;
}

int cfg_load_string(ltxfs_cfg *cfg, const char *text, const char *name,
		    char *errbuf, size_t errlen)
{
	struct loader ld = {.name = name, .err = errbuf, .errlen = errlen};
	ltxfs_cfg tmp;
	int rc;

	if (errlen)
		errbuf[0] = '\0';
	rc = cfg_init_defaults(&tmp);
	if (rc < 0)
		goto fail;
	ld.cfg = &tmp;
	rc = load_yaml(&ld, text);
	if (rc == 0)
		rc = load_finish(&ld);
	if (rc < 0) {
		cfg_free(&tmp);
		goto fail;
	}
	*cfg = tmp;
	return 0;

fail:
	if (rc == -ENOMEM && errlen)
		snprintf(errbuf, errlen, "%s: out of memory", name);
	if (cfg_init_defaults(cfg) < 0)
		memset(cfg, 0, sizeof(*cfg));
	return rc;
}

/* Reads the whole file into a NUL-terminated malloc'd buffer. */
static int read_file(const char *path, char **out, char *errbuf,
		     size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;
	int rc = 0;

	if (!f) {
		rc = -errno;
		goto report;
	}
	buf = malloc(CFG_MAX_FILE + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto report;
	}
	len = fread(buf, 1, CFG_MAX_FILE + 1, f);
	if (ferror(f)) {
		rc = -errno;
		goto report;
	}
	if (len > CFG_MAX_FILE) {
		rc = -EFBIG;
		goto report;
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		rc = -EINVAL;
		if (errlen)
			snprintf(errbuf, errlen, "%s: contains a NUL byte",
				 path);
		goto cleanup;
	}
	*out = buf;
	buf = NULL;
	goto cleanup;

report:
	if (rc == 0)
		rc = -EIO;
	if (errlen)
		snprintf(errbuf, errlen, "%s: %s", path,
			 rc == -EFBIG ? "larger than 1 MiB" : strerror(-rc));
cleanup:
	free(buf);
	if (f)
		fclose(f);
	return rc;
}

int cfg_load_file(ltxfs_cfg *cfg, const char *path, char *errbuf,
		  size_t errlen)
{
	char *text = NULL;
	int rc;

	if (errlen)
		errbuf[0] = '\0';
	rc = read_file(path, &text, errbuf, errlen);
	if (rc < 0) {
		if (cfg_init_defaults(cfg) < 0)
			memset(cfg, 0, sizeof(*cfg));
		return rc;
	}
	rc = cfg_load_string(cfg, text, path, errbuf, errlen);
	free(text);
	return rc;
}

int cfg_load(ltxfs_cfg *cfg, const char *path, const char **out_path,
	     char *errbuf, size_t errlen)
{
	static const char *const search[] = {CFG_FILE_NAME, CFG_FILE_SYSTEM};

	if (out_path)
		*out_path = path;
	if (path)
		return cfg_load_file(cfg, path, errbuf, errlen);
	for (size_t i = 0; i < 2; i++) {
		if (access(search[i], F_OK) == 0) {
			if (out_path)
				*out_path = search[i];
			return cfg_load_file(cfg, search[i], errbuf, errlen);
		}
	}
	return cfg_load_string(cfg, "", "(defaults)", errbuf, errlen);
}

/* ---- printing ------------------------------------------------------------ */

/* A YAML double-quoted scalar that loads back to s: the $ of a run of $
 * before a { are doubled, so that expand_env gives them back. */
static void print_quoted(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		size_t run = 0;

		if (c == '$') {
			while (s[run] == '$')
				run++;
			for (size_t i = 0; i < (s[run] == '{' ? 2 : 1) * run;
			     i++)
				fputc('$', f);
			s += run - 1;
		} else if (c == '"' || c == '\\') {
			fprintf(f, "\\%c", c);
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\x%02x", c);
		} else {
			fputc(c, f);
		}
	}
	fputc('"', f);
}

static void print_comment(FILE *f, int indent, const char *help)
{
	while (*help) {
		size_t n = strcspn(help, "\n");

		fprintf(f, "%*s# %.*s\n", indent, "", (int)n, help);
		help += n;
		if (*help)
			help++;
	}
}

static const char *section_help(const char *name, size_t len)
{
	for (size_t i = 0; i < N_SECTIONS; i++)
		if (strlen(cfg_sections[i].name) == len &&
		    strncmp(cfg_sections[i].name, name, len) == 0)
			return cfg_sections[i].help;
	return "";
}

/* Prints the headers of the sections of name that prev (the previous key)
 * was not already in; returns the indent of name's leaf. */
static int print_sections(FILE *f, const char *prev, const char *name,
			  bool comments)
{
	size_t common = 0; /* bytes of shared whole section components */
	int depth = 0, indent;

	if (prev) {
		for (size_t i = 0; prev[i] && prev[i] == name[i]; i++)
			if (name[i] == '.')
				common = i + 1;
	}
	if (!prev || common == 0)
		fputc('\n', f);
	for (const char *p = name; *p; p++)
		depth += *p == '.';
	for (const char *dot = name; (dot = strchr(dot, '.')); dot++) {
		size_t end = (size_t)(dot - name);
		const char *start = name;

		indent = 0;
		for (const char *q = name; q < dot; q++) {
			if (*q == '.') {
				start = q + 1;
				indent += 2;
			}
		}
		if (end < common)
			continue;
		if (comments)
			print_comment(f, indent, section_help(name, end));
		fprintf(f, "%*s%.*s:\n", indent, "", (int)(dot - start), start);
	}
	return depth * 2;
}

void cfg_print(const ltxfs_cfg *cfg, FILE *f, bool comments)
{
	const char *prev = NULL;
	char buf[64];

	if (comments)
		fputs("# ltxfs configuration (ltxfs.yml); see docs/CONFIG.md.\n"
		      "# ${VAR} and ${VAR:-default} in values are taken from "
		      "the environment.\n",
		      f);
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		const void *v = cfield(cfg, k);
		const char *leaf = strrchr(k->name, '.');
		int indent = print_sections(f, prev, k->name, comments);
		const cfg_strlist *l;
		const char *s;
		int e;

		leaf = leaf ? leaf + 1 : k->name;
		prev = k->name;
		if (comments)
			print_comment(f, indent, k->help);
		fprintf(f, "%*s%s:", indent, "", leaf);
		if (k->type != T_LIST)
			fputc(' ', f);
		switch (k->type) {
		case T_STR:
			s = *(char *const *)v;
			if ((k->flags & F_SECRET) && s && *s)
				s = CFG_REDACTED;
			print_quoted(f, s ? s : "");
			break;
		case T_BOOL:
			fputs(*(const bool *)v ? "true" : "false", f);
			break;
		case T_INT:
			fprintf(f, "%d", *(const int *)v);
			break;
		case T_I64:
			fprintf(f, "%" PRId64, *(const int64_t *)v);
			break;
		case T_DURATION:
			format_duration(*(const int64_t *)v, buf, sizeof(buf));
			fputs(buf, f);
			break;
		case T_ENUM:
			s = "?";
			for (e = 0; k->names[e]; e++)
				if (e == *(const int *)v)
					s = k->names[e];
			fputs(s, f);
			break;
		case T_LIST:
			l = v;
			if (!l->count)
				fputs(" []", f);
			for (size_t j = 0; j < l->count; j++) {
				fprintf(f, "\n%*s- ", indent + 2, "");
				print_quoted(f, l->items[j]);
			}
			break;
		}
		fputc('\n', f);
	}
}

/* ---- `ltxfs config` ------------------------------------------------------ */

static void config_usage(FILE *f)
{
	fprintf(f, "usage: ltxfs config [-c FILE]   print the effective "
		   "configuration\n"
		   "       ltxfs config --defaults   print every key with its "
		   "default\n");
}

int cmd_config(int argc, char **argv)
{
	const char *path = NULL, *used = NULL;
	bool defaults = false;
	char err[512];
	ltxfs_cfg cfg;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--defaults") == 0) {
			defaults = true;
		} else if ((strcmp(argv[i], "-c") == 0 ||
			    strcmp(argv[i], "--config") == 0) &&
			   i + 1 < argc) {
			path = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			path = argv[i] + 9;
		} else if (strcmp(argv[i], "-h") == 0 ||
			   strcmp(argv[i], "--help") == 0) {
			config_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "ltxfs config: bad argument \"%s\"\n",
				argv[i]);
			config_usage(stderr);
			return 2;
		}
	}
	if (defaults && path) {
		fprintf(stderr, "ltxfs config: --defaults takes no -c\n");
		return 2;
	}
	rc = defaults ? cfg_init_defaults(&cfg)
		      : cfg_load(&cfg, path, &used, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "ltxfs config: %s\n",
			defaults ? strerror(-rc) : err);
		cfg_free(&cfg);
		return 1;
	}
	if (!defaults)
		printf("# effective configuration (%s)\n",
		       used ? used : "no file; defaults");
	cfg_print(&cfg, stdout, defaults);
	cfg_free(&cfg);
	return 0;
}
