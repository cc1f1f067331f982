/*
 * `ltxfs verify`: replays a database's LTX log and compares the result
 * with the live database (the database file with the WAL's committed
 * frames laid over it). Reads the data directory only; run it on a quiet
 * database.
 *
 * The replay starts from the oldest full state the log has: its first
 * record when that is a snapshot (a log retention has not pruned), or
 * else the log's base (fs/logbase.h: the page checksums retention kept
 * as it removed records). Each record is applied to the page checksums
 * and must give its post-apply checksum; the pages the replayed records
 * wrote are compared with the live database byte for byte, the others by
 * page checksum against the base. A pruned log without a usable base
 * cannot be replayed: it is "not proved", and only its records'
 * checksums, their chain and the database's checksum are checked.
 */
#ifndef FS_VERIFY_H
#define FS_VERIFY_H

#include <stdbool.h>
#include <stddef.h>

/* 0 when the checks passed: *out_proved says whether that was a full
 * replay (msg starts "ok: ") or only the weaker checks of a log that
 * cannot be replayed (msg starts "not proved: "). -EBADMSG when the log
 * and the database disagree or a record does not replay (msg says where,
 * naming the TXID); other -errno on failure. msg always gets one line. */
int fs_verify_db(const char *data_dir, const char *name, bool *out_proved,
		 char *msg, size_t msglen);

#endif
