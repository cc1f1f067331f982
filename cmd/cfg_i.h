/*
 * Internals of the configuration (cfg.h), shared by its files:
 *
 *   cfg.c          the sections' table, defaults, freeing, and the
 *                  conversion of a value to its key's type
 *   cfg_load.c     the YAML loader: ${VAR} expansion, the walk of the
 *                  file's mappings, the checks of each section
 *   cfg_print.c    printing (ltxfs config) and `ltxfs config`
 *   cfg_fuse.c, cfg_data.c, cfg_http.c, cfg_lease.c, cfg_region.c,
 *   cfg_proxy.c, cfg_backup.c, cfg_replication.c, cfg_exec.c,
 *   cfg_log.c      one section each: its keys (name, type, field,
 *                  default, meaning) and the checks that need more than
 *                  one key
 *
 * A key is added in its section's file only: the defaults, the loader
 * and the printer all walk the same tables.
 */
#ifndef CMD_CFG_I_H
#define CMD_CFG_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

#define CFG_REDACTED "<redacted>"
/* Keys in all sections, at most (cfg.c checks). */
#define CFG_MAX_KEYS 96

enum cfg_key_type {
	T_STR,      /* char * */
	T_BOOL,     /* bool */
	T_INT,      /* int, in [min, max] */
	T_I64,      /* int64_t, in [min, max] */
	T_DURATION, /* int64_t milliseconds, in [min, max] */
	T_ENUM,     /* int, parsed by parse(), printed from names[] */
	T_LIST,     /* cfg_strlist; a sequence or a single scalar */
	T_EXEC,     /* cfg_execlist; a sequence of strings and mappings
		     * {cmd, if-candidate}, or a single string */
};

enum cfg_key_flag {
	F_NONEMPTY = 1 << 0, /* "" is rejected */
	F_URL = 1 << 1,      /* "" or http(s)://... */
	F_SECRET = 1 << 2,   /* printed redacted */
	F_ADDR = 1 << 3,     /* [host]:port */
};

struct cfg_key {
	const char *name; /* full dotted name */
	enum cfg_key_type type;
	size_t off; /* offset of the field in ltxfs_cfg */
	const char *def; /* default as YAML text; NULL for an empty list */
	unsigned flags;
	int64_t min, max;
	const char *const *names; /* T_ENUM: value -> name, NULL-terminated */
	int (*parse)(const char *s, int *out); /* T_ENUM; NULL: the
						 * index in names */
	const char *help; /* lines separated by \n */
};

#define CFG_OFF(member) offsetof(ltxfs_cfg, member)

struct cfg_loader;

/* A part of the file: a mapping of keys (name "exec" style top-level keys
 * have a NULL name), and what loading it does once the whole file is in
 * (checks that need more than one key; NULL none). */
struct cfg_section {
	const char *name;
	const char *help;
	const struct cfg_key *keys;
	size_t nkeys;
	int (*finish)(struct cfg_loader *ld);
};

/* The sections, in printing order (cfg.c). */
extern const struct cfg_section cfg_fuse_section, cfg_data_section,
	cfg_http_section, cfg_lease_section, cfg_lease_etcd_section,
	cfg_region_section, cfg_proxy_section, cfg_backup_section,
	cfg_replication_section, cfg_replication_sync_section,
	cfg_exec_section,
	cfg_log_section;
size_t cfg_nsections(void);
const struct cfg_section *cfg_section_at(size_t i);
/* Every key of every section, in order: index i < cfg_nkeys(). */
size_t cfg_nkeys(void);
const struct cfg_key *cfg_key_at(size_t i);
/* The index of the key named name (CFG_MAX_KEYS when none). */
size_t cfg_key_index(const char *name);

void *cfg_field(ltxfs_cfg *cfg, const struct cfg_key *k);
const void *cfg_cfield(const ltxfs_cfg *cfg, const struct cfg_key *k);

/* cfg.c: value conversion. */
/* Sets the scalar key k (any type; a T_LIST gets one item, a T_EXEC one
 * command) from the already-expanded text v. 0, -ENOMEM, or -EINVAL with
 * the reason in why. */
int cfg_key_set(ltxfs_cfg *cfg, const struct cfg_key *k, const char *v,
		char *why, size_t whylen);
void cfg_strlist_free(cfg_strlist *l);
void cfg_execlist_free(cfg_execlist *l);
/* Appends a command (cmd taken over on success). 0 or -ENOMEM. */
int cfg_execlist_push(cfg_execlist *l, char *cmd, bool if_candidate);
void cfg_format_duration(int64_t ms, char *buf, size_t len);
/* true/yes/on, false/no/off, any case: 0 or -EINVAL. */
int cfg_parse_bool(const char *s, bool *out);

/* cfg_load.c, for the sections' finish: the configuration being loaded,
 * the line a key was set on (0: not in the file), and an error naming
 * the file and line (returns -EINVAL). */
ltxfs_cfg *cfg_loader_cfg(struct cfg_loader *ld);
size_t cfg_loader_line(struct cfg_loader *ld, const char *key);
int cfg_loader_error(struct cfg_loader *ld, size_t line, const char *fmt,
		     ...) __attribute__((format(printf, 3, 4)));

#endif
