/*
 * Runs the fuzz target once over every file in the given directories,
 * without libFuzzer: the corpus and the regressions are replayed in every
 * build (suite 'fuzz'), so a fixed crash stays fixed.
 *
 *   fuzz_<target>_replay [--valid DIR]... DIR...
 *
 * Files in a --valid directory must also be valid inputs of the target
 * (fuzz_last_invalid: for the decoder, files that decode without error
 * and apply to the seed database; the seed corpus is made of such
 * files). Names
 * starting with '.' are skipped.
 * Exits 1 when a --valid directory is empty or holds an invalid file; a
 * crash or a broken invariant aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define REPLAY_MAX_INPUT (16u << 20)

static int run_file(const char *path, bool want_valid)
{
	FILE *f = fopen(path, "rb");
	char why[200];
	uint8_t *buf;
	size_t n;

	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	buf = malloc(REPLAY_MAX_INPUT);
	if (!buf)
		abort();
	n = fread(buf, 1, REPLAY_MAX_INPUT, f);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	if (want_valid && fuzz_last_invalid(why, sizeof(why)) < 0) {
		fprintf(stderr, "%s: %s\n", path, why);
		return -1;
	}
	return 0;
}

static int run_dir(const char *dir, bool want_valid)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0, bad = 0;

	if (!d) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		char path[PATH_MAX];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (run_file(path, want_valid) < 0)
			bad++;
		n++;
	}
	closedir(d);
	printf("%s: %d inputs%s\n", dir, n, bad ? ", some failed" : "");
	if (want_valid && n == 0) {
		fprintf(stderr, "%s: no seed inputs\n", dir);
		return -1;
	}
	return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		bool valid = false;
		if (strcmp(argv[i], "--valid") == 0 && i + 1 < argc) {
			valid = true;
			i++;
		}
		if (run_dir(argv[i], valid) < 0)
			rc = 1;
	}
	return rc;
}
