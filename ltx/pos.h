/*
 * Positions and LTX file names (shared/LTX.md, "Names and positions").
 *
 *   position   TXID/checksum      "%016x/%016x" (33 chars, lower-case hex)
 *   file name  min-max TXID       "%016x-%016x.ltx"
 *
 * Parsers are strict: exactly 16 lower- or upper-case hex digits per field,
 * the exact separator, nothing after.
 */
#ifndef LTX_POS_H
#define LTX_POS_H

#include <stdint.h>

#define LTX_POS_STRLEN 33
#define LTX_FILENAME_STRLEN 37

typedef struct ltx_pos {
	uint64_t txid;
	uint64_t checksum;
} ltx_pos;

/* buf holds at least LTX_POS_STRLEN + 1 bytes. */
void ltx_pos_format(ltx_pos pos, char *buf);
int ltx_pos_parse(const char *s, ltx_pos *out);

/* buf holds at least LTX_FILENAME_STRLEN + 1 bytes. */
void ltx_filename_format(uint64_t min_txid, uint64_t max_txid, char *buf);
int ltx_filename_parse(const char *s, uint64_t *out_min, uint64_t *out_max);

#endif
