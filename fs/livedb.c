/* The live database: the file with the WAL's committed frames on top
 * (what SQLite reads once it has recovered the WAL). */
#include "livedb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/io.h"
#include "ltx/dbfile.h"
#include "wal.h"

static int scan_wal(fs_live_db *l)
{
	uint8_t hdr[FS_WAL_HDR_SIZE];
	fs_wal_hdr h;
	uint8_t *frame = NULL;
	uint64_t *pending = NULL;
	uint32_t *pending_pg = NULL;
	size_t npending = 0, cap = 0;
	struct stat st;
	uint32_t s0, s1;
	int rc;

	if (l->wal_fd < 0 || fstat(l->wal_fd, &st) < 0 ||
	    st.st_size < FS_WAL_HDR_SIZE)
		return 0;
	rc = lib_io_pread_full(l->wal_fd, hdr, sizeof(hdr), 0, NULL);
	if (rc < 0 || fs_wal_hdr_parse(hdr, &h) < 0)
		return rc;
	if (l->page_size && h.page_size != l->page_size)
		return 0;
	l->page_size = h.page_size;
	frame = malloc(FS_WAL_FRAME_HDR_SIZE + h.page_size);
	if (!frame)
		return -ENOMEM;
	s0 = h.cksum1;
	s1 = h.cksum2;
	for (uint64_t i = 0;; i++) {
		uint64_t off = fs_wal_frame_offset(h.page_size, i);
		uint32_t pgno, commit;
		if (off + FS_WAL_FRAME_HDR_SIZE + h.page_size >
		    (uint64_t)st.st_size)
			break;
		rc = lib_io_pread_full(l->wal_fd, frame,
				       FS_WAL_FRAME_HDR_SIZE + h.page_size,
				       (off_t)off, NULL);
		if (rc < 0)
			goto out;
		if (!fs_wal_frame_check(&h, frame, frame + FS_WAL_FRAME_HDR_SIZE,
					&s0, &s1, &pgno, &commit))
			break;
		if (npending == cap) {
			size_t c = cap ? cap * 2 : 64;
			uint64_t *a = realloc(pending, c * sizeof(*a));
			uint32_t *b = a ? realloc(pending_pg, c * sizeof(*b))
					: NULL;
			if (a)
				pending = a;
			if (!a || !b) {
				rc = -ENOMEM;
				goto out;
			}
			pending_pg = b;
			cap = c;
		}
		pending[npending] = off + FS_WAL_FRAME_HDR_SIZE;
		pending_pg[npending++] = pgno;
		if (commit == 0)
			continue;
		for (size_t j = 0; j < npending; j++) {
			uint32_t p = pending_pg[j];
			if (p >= l->nframe_off) {
				uint32_t n = l->nframe_off ? l->nframe_off : 64;
				uint64_t *a;
				while (n <= p)
					n *= 2;
				a = realloc(l->frame_off, n * sizeof(*a));
				if (!a) {
					rc = -ENOMEM;
					goto out;
				}
				memset(a + l->nframe_off, 0,
				       (n - l->nframe_off) * sizeof(*a));
				l->frame_off = a;
				l->nframe_off = n;
			}
			l->frame_off[p] = pending[j];
		}
		npending = 0;
		l->pages = commit;
	}
	rc = 0;
out:
	free(frame);
	free(pending);
	free(pending_pg);
	return rc;
}

int fs_live_read(fs_live_db *l, uint32_t pgno, uint8_t *buf)
{
	if (pgno < l->nframe_off && l->frame_off[pgno])
		return lib_io_pread_full(l->wal_fd, buf, l->page_size,
					 (off_t)l->frame_off[pgno], NULL);
	return lib_io_pread_full(l->db_fd, buf, l->page_size,
				 (off_t)(pgno - 1) * l->page_size, NULL);
}

int fs_live_open(const char *dir, bool writable, fs_live_db *l, char *msg,
		 size_t msglen)
{
	char path[PATH_MAX];
	int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
	struct stat st;
	ltx_err err = {0};
	int rc;

	memset(l, 0, sizeof(*l));
	l->db_fd = l->wal_fd = -1;
	snprintf(path, sizeof(path), "%s/database", dir);
	l->db_fd = open(path, flags);
	if (l->db_fd < 0 && errno != ENOENT) {
		rc = -errno;
		snprintf(msg, msglen, "cannot open %s: %s", path, strerror(-rc));
		return rc;
	}
	snprintf(path, sizeof(path), "%s/wal", dir);
	l->wal_fd = open(path, flags);
	if (l->db_fd >= 0 && fstat(l->db_fd, &st) == 0 && st.st_size >= 100 &&
	    ltx_dbfile_page_size(l->db_fd, &l->page_size, &err) < 0) {
		snprintf(msg, msglen, "live database: %s", err.msg);
		return -EBADMSG;
	}
	if (l->db_fd >= 0 && l->page_size) {
		uint8_t h[100];
		l->pages = (uint32_t)((uint64_t)st.st_size / l->page_size);
		/* SQLite cuts a shrunk file only after the commit; pages past
		 * the header's valid page count are not the database's. */
		if (lib_io_pread_full(l->db_fd, h, sizeof(h), 0, NULL) == 0 &&
		    get_be32(h + 92) == get_be32(h + 24) &&
		    get_be32(h + 28) != 0 && get_be32(h + 28) < l->pages)
			l->pages = get_be32(h + 28);
	}
	rc = scan_wal(l);
	if (rc < 0)
		snprintf(msg, msglen, "reading the WAL: %s", strerror(-rc));
	return rc;
}

void fs_live_close(fs_live_db *l)
{
	free(l->frame_off);
	l->frame_off = NULL;
	if (l->db_fd >= 0)
		close(l->db_fd);
	if (l->wal_fd >= 0)
		close(l->wal_fd);
	l->db_fd = l->wal_fd = -1;
}
