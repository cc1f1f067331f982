/*
 * `ltxfs verify`: replays a database's LTX log from nothing into a scratch
 * file and compares it, byte for byte and by checksum, with the live
 * database (the database file with the WAL's committed frames laid over
 * it). Reads the data directory only; run it on a quiet database.
 */
#ifndef FS_VERIFY_H
#define FS_VERIFY_H

#include <stddef.h>

/* 0 when identical; -EBADMSG when they differ (msg says where); other
 * -errno on failure. msg always gets one line. */
int fs_verify_db(const char *data_dir, const char *name, char *msg,
		 size_t msglen);

#endif
