/*
 * A database as SQLite sees it in a stopped node's data directory
 * (dbs/<name>/): the database file with the WAL's committed frames on top
 * (the frames up to the last commit frame whose salts and running
 * checksum hold, as SQLite's WAL recovery reads them). Used by `ltxfs
 * verify` and `ltxfs repair`; internal to fs/.
 */
#ifndef FS_LIVEDB_H
#define FS_LIVEDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fs_live_db {
	int db_fd, wal_fd;      /* -1 when the file is absent */
	uint32_t page_size;     /* 0: no database yet */
	uint32_t pages;         /* the database's size in pages */
	uint64_t *frame_off;    /* per page: WAL offset of its page, or 0 */
	uint32_t nframe_off;
} fs_live_db;

/* Opens dir's database and WAL (read-write when writable) and reads the
 * WAL's committed frames. On failure msg says why; fs_live_close anyway. */
int fs_live_open(const char *dir, bool writable, fs_live_db *l, char *msg,
		 size_t msglen);
/* Page pgno (1-based) as SQLite reads it. */
int fs_live_read(fs_live_db *l, uint32_t pgno, uint8_t *buf);
void fs_live_close(fs_live_db *l);

#endif
