/*
 * Printing the configuration as YAML that loads back (cfg_print), and
 * `ltxfs config` (cfg.h): the sections (cfg_i.h) in order, each key with
 * its meaning and default as comments when asked.
 */
#include "cfg_i.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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
	for (size_t i = 0; i < cfg_nsections(); i++) {
		const struct cfg_section *s = cfg_section_at(i);
		if (s->name && strlen(s->name) == len &&
		    strncmp(s->name, name, len) == 0)
			return s->help;
	}
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

/* exec's items: a string, or {cmd, if-candidate: true}. */
static void print_exec(FILE *f, int indent, const cfg_execlist *l)
{
	if (!l->count)
		fputs(" []", f);
	for (size_t j = 0; j < l->count; j++) {
		fprintf(f, "\n%*s- ", indent + 2, "");
		if (l->items[j].if_candidate)
			fputs("cmd: ", f);
		print_quoted(f, l->items[j].cmd);
		if (l->items[j].if_candidate)
			fprintf(f, "\n%*sif-candidate: true", indent + 4, "");
	}
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
	for (size_t i = 0; i < cfg_nkeys(); i++) {
		const struct cfg_key *k = cfg_key_at(i);
		const void *v = cfg_cfield(cfg, k);
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
		if (k->type != T_LIST && k->type != T_EXEC)
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
			cfg_format_duration(*(const int64_t *)v, buf,
					    sizeof(buf));
			fputs(buf, f);
			break;
		case T_ENUM:
			s = "?";
			for (e = 0; k->names[e]; e++)
				if (e == *(const int *)v)
					s = k->names[e];
			fputs(s, f);
			break;
		case T_EXEC:
			print_exec(f, indent, v);
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
