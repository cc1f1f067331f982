/*
 * The configuration loader (cfg.h): libyaml's document API makes the
 * whole file a node tree, then walk_mapping() visits it with the dotted
 * prefix of the current section. A mapping key is either a key of a
 * section (cfg_i.h), a section, or an error. Scalar values are expanded
 * (${VAR}, ${VAR:-default}, $${ for a literal ${) before they are
 * converted. Once the whole file is in, each section's finish runs the
 * checks that need more than one key.
 */
#include "cfg_i.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* Largest file cfg_load_file reads; a config is a few kilobytes. */
#define CFG_MAX_FILE (1024 * 1024)
/* Sections, at most. */
#define CFG_MAX_SECTIONS 16

struct cfg_loader {
	const char *name; /* file name for messages */
	yaml_document_t *doc;
	ltxfs_cfg *cfg;
	size_t key_line[CFG_MAX_KEYS]; /* 1-based line a key was set on;
					* 0: unset */
	size_t section_line[CFG_MAX_SECTIONS];
	char *err;
	size_t errlen;
};

ltxfs_cfg *cfg_loader_cfg(struct cfg_loader *ld)
{
	return ld->cfg;
}

size_t cfg_loader_line(struct cfg_loader *ld, const char *key)
{
	size_t i = cfg_key_index(key);

	return i < CFG_MAX_KEYS ? ld->key_line[i] : 0;
}

int cfg_loader_error(struct cfg_loader *ld, size_t line, const char *fmt, ...)
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
static int expand_env(struct cfg_loader *ld, size_t line, const char *key,
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
			rc = cfg_loader_error(ld, line,
					      "%s: bad variable reference "
					      "\"%.*s\" (use ${NAME} or "
					      "${NAME:-default}; $${ for a "
					      "literal ${)", key,
					      (int)strcspn(p, "}") + 1, p);
			goto cleanup;
		}
		{
			char vname[256];

			if (nlen >= sizeof(vname)) {
				rc = cfg_loader_error(ld, line,
						      "%s: variable name too "
						      "long", key);
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
				rc = cfg_loader_error(ld, line,
						      "environment variable "
						      "\"%s\" is not set (in "
						      "%s)", vname, key);
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
static int load_scalar(struct cfg_loader *ld, const struct cfg_key *k,
		       const yaml_node_t *n)
{
	char why[512];
	char *v = NULL;
	int rc;

	if (n->type != YAML_SCALAR_NODE)
		return cfg_loader_error(ld, node_line(n),
					"%s: expected %s, not %s", k->name,
					k->type == T_LIST ? "a list or a string"
					: k->type == T_EXEC
						? "a string or a mapping (cmd, "
						  "if-candidate)"
						: "a single value",
					node_kind(n));
	if (strlen((const char *)n->data.scalar.value) !=
	    n->data.scalar.length)
		return cfg_loader_error(ld, node_line(n),
					"%s: value contains NUL", k->name);
	rc = expand_env(ld, node_line(n), k->name,
			(const char *)n->data.scalar.value, &v);
	if (rc < 0)
		return rc;
	rc = cfg_key_set(ld->cfg, k, v, why, sizeof(why));
	if (rc == -EINVAL)
		rc = cfg_loader_error(ld, node_line(n), "%s: %s", k->name, why);
	free(v);
	return rc;
}

/* A scalar's text, ${VAR} expanded (*out malloc'd), or an error naming
 * key. */
static int load_text(struct cfg_loader *ld, const char *key,
		     const yaml_node_t *n, char **out)
{
	if (n->type != YAML_SCALAR_NODE)
		return cfg_loader_error(ld, node_line(n), "%s: expected a "
					"single value, not %s", key,
					node_kind(n));
	if (strlen((const char *)n->data.scalar.value) !=
	    n->data.scalar.length)
		return cfg_loader_error(ld, node_line(n),
					"%s: value contains NUL", key);
	return expand_env(ld, node_line(n), key,
			  (const char *)n->data.scalar.value, out);
}

/* One exec item written as a mapping: {cmd: "...", if-candidate: bool}. */
static int load_exec_map(struct cfg_loader *ld, const struct cfg_key *k,
			 const yaml_node_t *map)
{
	char *cmd = NULL, *v = NULL, key[64];
	bool if_candidate = false, seen_ic = false;
	int rc = 0;

	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     rc == 0 && pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *kn = yaml_document_get_node(ld->doc, pair->key);
		yaml_node_t *vn = yaml_document_get_node(ld->doc, pair->value);
		const char *name = kn->type == YAML_SCALAR_NODE
					   ? (const char *)kn->data.scalar.value
					   : "";
		snprintf(key, sizeof(key), "%s.%s", k->name, name);
		if (strcmp(name, "cmd") == 0 && !cmd) {
			rc = load_text(ld, key, vn, &cmd);
			if (rc == 0 && !cmd[0])
				rc = cfg_loader_error(ld, node_line(vn),
						      "%s: must not be empty",
						      key);
		} else if (strcmp(name, "if-candidate") == 0 && !seen_ic) {
			seen_ic = true;
			rc = load_text(ld, key, vn, &v);
			if (rc == 0 && cfg_parse_bool(v, &if_candidate) < 0)
				rc = cfg_loader_error(ld, node_line(vn),
						      "%s: \"%s\" is not a "
						      "boolean (true or false)",
						      key, v);
			free(v);
			v = NULL;
		} else {
			rc = cfg_loader_error(ld, node_line(kn),
					      "%s: unknown or repeated key "
					      "\"%s\" (an item has cmd and "
					      "if-candidate)", k->name, name);
		}
	}
	if (rc == 0 && !cmd)
		rc = cfg_loader_error(ld, node_line(map),
				      "%s: an item without cmd", k->name);
	if (rc == 0)
		rc = cfg_execlist_push(cfg_field(ld->cfg, k), cmd,
				       if_candidate);
	if (rc < 0)
		free(cmd);
	return rc;
}

/* exec: a string, or a sequence of strings and mappings. */
static int load_exec(struct cfg_loader *ld, const struct cfg_key *k,
		     const yaml_node_t *n)
{
	int rc = 0;

	cfg_execlist_free(cfg_field(ld->cfg, k));
	if (n->type != YAML_SEQUENCE_NODE)
		return n->type == YAML_MAPPING_NODE ? load_exec_map(ld, k, n)
						    : load_scalar(ld, k, n);
	for (yaml_node_item_t *it = n->data.sequence.items.start;
	     rc == 0 && it < n->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(ld->doc, *it);
		rc = item->type == YAML_MAPPING_NODE
			     ? load_exec_map(ld, k, item)
			     : load_scalar(ld, k, item);
	}
	return rc;
}

/* A list written as one string (not a YAML sequence): after expansion,
 * empty is the empty list and commas separate items, so a list can come
 * from one environment variable (lease.etcd.endpoints from a container's
 * env). */
static int load_list_string(struct cfg_loader *ld, const struct cfg_key *k,
			    const yaml_node_t *n)
{
	char why[512];
	char *v = NULL, *item, *next;
	int rc;

	rc = load_text(ld, k->name, n, &v);
	if (rc < 0)
		return rc;
	for (item = v; rc == 0 && *v && item; item = next) {
		next = strchr(item, ',');
		if (next)
			*next++ = '\0';
		rc = cfg_key_set(ld->cfg, k, item, why, sizeof(why));
		if (rc == -EINVAL)
			rc = cfg_loader_error(ld, node_line(n), "%s: %s",
					      k->name, why);
	}
	free(v);
	return rc;
}

static int load_key(struct cfg_loader *ld, const struct cfg_key *k,
		    const yaml_node_t *n)
{
	char why[256];
	int rc;

	if (node_is_null(n)) {
		switch (k->type) {
		case T_LIST:
			cfg_strlist_free(cfg_field(ld->cfg, k));
			return 0;
		case T_EXEC:
			cfg_execlist_free(cfg_field(ld->cfg, k));
			return 0;
		case T_STR:
			rc = cfg_key_set(ld->cfg, k, "", why, sizeof(why));
			if (rc == -EINVAL)
				rc = cfg_loader_error(ld, node_line(n),
						      "%s: %s", k->name, why);
			return rc;
		default:
			return cfg_loader_error(ld, node_line(n),
						"%s: no value", k->name);
		}
	}
	if (k->type == T_EXEC)
		return load_exec(ld, k, n);
	if (k->type != T_LIST)
		return load_scalar(ld, k, n);
	cfg_strlist_free(cfg_field(ld->cfg, k));
	if (n->type == YAML_SCALAR_NODE)
		return load_list_string(ld, k, n);
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

static int walk_mapping(struct cfg_loader *ld, const yaml_node_t *map,
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
			return cfg_loader_error(ld, line,
						"%s%skeys must be strings",
						prefix, *prefix ? ": " : "");
		snprintf(full, sizeof(full), "%s%s%s", prefix,
			 *prefix ? "." : "",
			 (const char *)kn->data.scalar.value);
		for (size_t i = 0; i < cfg_nkeys(); i++) {
			if (strcmp(full, cfg_key_at(i)->name) == 0) {
				key = cfg_key_at(i);
				seen = &ld->key_line[i];
				break;
			}
		}
		for (size_t i = 0; !seen && i < cfg_nsections(); i++) {
			const char *sn = cfg_section_at(i)->name;
			if (sn && strcmp(full, sn) == 0)
				seen = &ld->section_line[i];
		}
		if (!seen)
			return cfg_loader_error(ld, line,
						"unknown key \"%s\"", full);
		if (*seen)
			return cfg_loader_error(ld, line,
						"duplicate key \"%s\" (first on "
						"line %zu)", full, *seen);
		*seen = line;
		if (key) {
			rc = load_key(ld, key, vn);
		} else if (vn->type == YAML_MAPPING_NODE) {
			rc = walk_mapping(ld, vn, full);
		} else if (node_is_null(vn)) {
			rc = 0; /* "fuse:" alone: all defaults */
		} else {
			rc = cfg_loader_error(ld, node_line(vn),
					      "%s: expected a mapping of keys, "
					      "not %s", full, node_kind(vn));
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Each section's checks that need more than one key, in order. */
static int load_finish(struct cfg_loader *ld)
{
	for (size_t i = 0; i < cfg_nsections(); i++) {
		const struct cfg_section *s = cfg_section_at(i);
		int rc = s->finish ? s->finish(ld) : 0;
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int load_yaml(struct cfg_loader *ld, const char *text)
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
		rc = cfg_loader_error(ld, node_line(root),
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
		rc = cfg_loader_error(ld, node_line(root),
				      "more than one YAML document");
	yaml_document_delete(&extra);
	goto cleanup_parser;

syntax:
	if (parser.error == YAML_MEMORY_ERROR)
		rc = -ENOMEM;
	else
		rc = cfg_loader_error(ld, parser.problem_mark.line + 1,
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
	struct cfg_loader ld = {.name = name, .err = errbuf, .errlen = errlen};
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
