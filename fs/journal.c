#include "journal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/bytes.h"
#include "lib/io.h"
#include "lib/log.h"

const uint8_t fs_journal_magic[8] = {0xd9, 0xd5, 0x05, 0xf9,
				     0x20, 0xa1, 0x63, 0xd7};

bool fs_journal_has_magic(const uint8_t *buf, uint64_t len)
{
	return len >= 8 && memcmp(buf, fs_journal_magic, 8) == 0;
}

static uint32_t record_cksum(uint32_t init, const uint8_t *page, uint32_t ps)
{
	uint32_t c = init;

	for (int i = (int)ps - 200; i > 0; i -= 200)
		c += page[i];
	return c;
}

int fs_journal_rollback(int jfd, int db_fd, uint32_t *out_pages)
{
	struct stat st;
	uint8_t hdr[FS_JOURNAL_HDR_MIN];
	uint8_t *rec = NULL;
	uint64_t off = 0, size;
	uint32_t orig_pages = 0, restored = 0, ps = 0;
	bool first = true;
	int rc = 0;

	*out_pages = 0;
	if (fstat(jfd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size;
	for (;;) {
		uint32_t nrec, init, sector, hps;
		uint64_t rec_size;
		if (off + sizeof(hdr) > size)
			break;
		rc = lib_io_pread_full(jfd, hdr, sizeof(hdr), (off_t)off, NULL);
		if (rc < 0)
			goto out;
		if (memcmp(hdr, fs_journal_magic, 8) != 0)
			break;
		nrec = get_be32(hdr + 8);
		init = get_be32(hdr + 12);
		sector = get_be32(hdr + 20);
		hps = get_be32(hdr + 24);
		if (sector < 32 || sector > 65536 || (sector & (sector - 1)) ||
		    hps < 512 || hps > 65536 || (hps & (hps - 1))) {
			log_warn("journal header at %llu has sector size %u, "
				 "page size %u: ending playback",
				 (unsigned long long)off, sector, hps);
			break;
		}
		if (first) {
			orig_pages = get_be32(hdr + 16);
			ps = hps;
			rec = malloc(8 + (size_t)ps);
			if (!rec) {
				rc = -ENOMEM;
				goto out;
			}
			first = false;
		} else if (hps != ps) {
			break;
		}
		rec_size = 8 + (uint64_t)ps;
		off += sector;
		/* 0xFFFFFFFF: written with synchronous=OFF, records run to
		 * the end of the file. 0 in a hot journal: nothing synced. */
		if (nrec == 0xFFFFFFFFu)
			nrec = (uint32_t)((size - off) / rec_size);
		for (uint32_t i = 0; i < nrec; i++, off += rec_size) {
			uint32_t pgno;
			if (off + rec_size > size)
				goto done;
			rc = lib_io_pread_full(jfd, rec, rec_size, (off_t)off,
					       NULL);
			if (rc < 0)
				goto out;
			pgno = get_be32(rec);
			if (pgno == 0 || get_be32(rec + 4 + ps) !=
						 record_cksum(init, rec + 4, ps))
				goto done;
			if (pgno > orig_pages)
				continue;
			rc = lib_io_pwrite_full(db_fd, rec + 4, ps,
						(off_t)(pgno - 1) * ps);
			if (rc < 0)
				goto out;
			restored++;
		}
		/* The next segment's header starts at a sector boundary. */
		off = (off + sector - 1) / sector * sector;
	}
done:
	if (!first) {
		rc = lib_io_ftruncate(db_fd, (off_t)orig_pages * ps);
		if (rc == 0)
			rc = lib_io_fsync(db_fd);
	}
	*out_pages = restored;
out:
	free(rec);
	return rc;
}

int fs_journal_read_super(int jfd, char *out, size_t n)
{
	uint8_t tail[16];
	struct stat st;
	uint64_t size;
	uint32_t len, sum;
	int rc;

	out[0] = '\0';
	if (fstat(jfd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size;
	if (size < sizeof(tail))
		return 0;
	rc = lib_io_pread_full(jfd, tail, sizeof(tail),
			       (off_t)(size - sizeof(tail)), NULL);
	if (rc < 0)
		return rc;
	len = get_be32(tail);
	sum = get_be32(tail + 4);
	if (memcmp(tail + 8, fs_journal_magic, 8) != 0 || len == 0 ||
	    len > size - sizeof(tail) || len >= FS_JOURNAL_SUPER_MAX ||
	    len >= n)
		return 0;
	rc = lib_io_pread_full(jfd, out, len,
			       (off_t)(size - sizeof(tail) - len), NULL);
	if (rc < 0) {
		out[0] = '\0';
		return rc;
	}
	for (uint32_t i = 0; i < len; i++)
		sum -= (uint32_t)(int)out[i]; /* a C char, as SQLite sums it */
	out[sum == 0 ? len : 0] = '\0'; /* a NUL inside ends it, as in C */
	return 0;
}
