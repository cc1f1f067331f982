/*
 * Configuration loading and printing (see cfg.h and docs/CONFIG.md): the
 * core. Each section's keys are in its own file (cfg_<section>.c; the
 * list is in cfg_i.h); this file puts the sections in order, sets the
 * defaults by parsing each key's default text, frees, and converts a
 * value to its key's type. The YAML loader is cfg_load.c, the printer
 * cfg_print.c.
 */
#include "cfg_i.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"

/* The sections, in printing order; a section's keys are contiguous. */
static const struct cfg_section *const sections[] = {
	&cfg_fuse_section, &cfg_data_section, &cfg_http_section,
	&cfg_lease_section, &cfg_lease_etcd_section, &cfg_region_section,
	&cfg_proxy_section,
	&cfg_backup_section,
	&cfg_replication_section, &cfg_replication_sync_section,
	&cfg_exec_section,
	&cfg_log_section,
};

#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

size_t cfg_nsections(void)
{
	return N_SECTIONS;
}

const struct cfg_section *cfg_section_at(size_t i)
{
	return sections[i];
}

size_t cfg_nkeys(void)
{
	size_t n = 0;

	for (size_t i = 0; i < N_SECTIONS; i++)
		n += sections[i]->nkeys;
	return n;
}

const struct cfg_key *cfg_key_at(size_t i)
{
	for (size_t s = 0; s < N_SECTIONS; s++) {
		if (i < sections[s]->nkeys)
			return &sections[s]->keys[i];
		i -= sections[s]->nkeys;
	}
	return NULL;
}

size_t cfg_key_index(const char *name)
{
	size_t n = cfg_nkeys();

	for (size_t i = 0; i < n; i++)
		if (strcmp(cfg_key_at(i)->name, name) == 0)
			return i;
	return CFG_MAX_KEYS;
}

void *cfg_field(ltxfs_cfg *cfg, const struct cfg_key *k)
{
	return (char *)cfg + k->off;
}

const void *cfg_cfield(const ltxfs_cfg *cfg, const struct cfg_key *k)
{
	return (const char *)cfg + k->off;
}

/* ---- value conversion --------------------------------------------------- */

void cfg_strlist_free(cfg_strlist *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

void cfg_execlist_free(cfg_execlist *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i].cmd);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

int cfg_execlist_push(cfg_execlist *l, char *cmd, bool if_candidate)
{
	cfg_exec_cmd *items = realloc(l->items,
				      (l->count + 1) * sizeof(*items));

	if (!items)
		return -ENOMEM;
	items[l->count].cmd = cmd;
	items[l->count].if_candidate = if_candidate;
	l->count++;
	l->items = items;
	return 0;
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

int cfg_parse_bool(const char *s, bool *out)
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
		} else if (*p == 's' || *p == 'm' || *p == 'h' || *p == 'd') {
			mult = *p == 's' ? 1000 : *p == 'm' ? 60000 :
			       *p == 'h' ? 3600000 : 86400000;
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
void cfg_format_duration(int64_t ms, char *buf, size_t len)
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
		cfg_format_duration(v, got, sizeof(got));
		cfg_format_duration(k->min, lo, sizeof(lo));
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
/* A T_ENUM value without a parse function: its index in names[]. */
static int enum_by_name(const struct cfg_key *k, const char *v, int *out)
{
	for (int i = 0; k->names[i]; i++) {
		if (strcmp(v, k->names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}


int cfg_key_set(ltxfs_cfg *cfg, const struct cfg_key *k, const char *v,
		char *why, size_t whylen)
{
	void *f = cfg_field(cfg, k);
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
	case T_EXEC:
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
		rc = k->type == T_EXEC ? cfg_execlist_push(f, dup, false)
				       : strlist_push(f, dup);
		if (rc < 0)
			free(dup);
		return rc;
	case T_BOOL:
		if (cfg_parse_bool(v, &b) < 0) {
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
				 "2m, 1h, 7d, or plain seconds)",
				 v);
			return -EINVAL;
		}
		rc = check_range(k, n, why, whylen);
		if (rc < 0)
			return rc;
		*(int64_t *)f = n;
		return 0;
	case T_ENUM:
		if ((k->parse ? k->parse(v, &e) : enum_by_name(k, v, &e)) < 0) {
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
	for (size_t i = 0; i < cfg_nkeys(); i++) {
		const struct cfg_key *k = cfg_key_at(i);

		if (k->type == T_STR)
			free(*(char **)cfg_field(cfg, k));
		else if (k->type == T_LIST)
			cfg_strlist_free(cfg_field(cfg, k));
		else if (k->type == T_EXEC)
			cfg_execlist_free(cfg_field(cfg, k));
	}
	memset(cfg, 0, sizeof(*cfg));
}

int cfg_init_defaults(ltxfs_cfg *cfg)
{
	char why[256];
	size_t i;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (cfg_nkeys() > CFG_MAX_KEYS) {
		log_error("config: %zu keys, more than CFG_MAX_KEYS",
			  cfg_nkeys());
		return -EINVAL;
	}
	for (i = 0; i < cfg_nkeys(); i++) {
		if (!cfg_key_at(i)->def)
			continue;
		rc = cfg_key_set(cfg, cfg_key_at(i), cfg_key_at(i)->def, why,
				 sizeof(why));
		if (rc < 0)
			goto fail;
	}
	return 0;

fail:
	/* A default that does not parse is a bug in its section's table. */
	if (rc != -ENOMEM)
		log_error("config: default of %s: %s", cfg_key_at(i)->name,
			  why);
	cfg_free(cfg);
	return rc;
}
