#include "pos.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void ltx_pos_format(ltx_pos pos, char *buf)
{
	snprintf(buf, LTX_POS_STRLEN + 1, "%016" PRIx64 "/%016" PRIx64,
		 pos.txid, pos.checksum);
}

static int parse_hex16(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		char c = s[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -EINVAL;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return 0;
}

int ltx_pos_parse(const char *s, ltx_pos *out)
{
	ltx_pos p;

	if (strlen(s) != LTX_POS_STRLEN || s[16] != '/')
		return -EINVAL;
	if (parse_hex16(s, &p.txid) < 0 || parse_hex16(s + 17, &p.checksum) < 0)
		return -EINVAL;
	*out = p;
	return 0;
}

void ltx_filename_format(uint64_t min_txid, uint64_t max_txid, char *buf)
{
	snprintf(buf, LTX_FILENAME_STRLEN + 1, "%016" PRIx64 "-%016" PRIx64
		 ".ltx", min_txid, max_txid);
}

int ltx_filename_parse(const char *s, uint64_t *out_min, uint64_t *out_max)
{
	uint64_t lo, hi;

	if (strlen(s) != LTX_FILENAME_STRLEN || s[16] != '-' ||
	    strcmp(s + 33, ".ltx") != 0)
		return -EINVAL;
	if (parse_hex16(s, &lo) < 0 || parse_hex16(s + 17, &hi) < 0)
		return -EINVAL;
	*out_min = lo;
	*out_max = hi;
	return 0;
}
