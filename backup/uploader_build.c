/* The uploader's objects (uploader.c rule U3): from the log's records
 * after the store's position, or a snapshot of the database; the body
 * is records back to back (object.h). */
#include "uploader_i.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include "fs/log.h"
#include "lib/bytes.h"
#include "lib/io.h"

int bk_up_tmpfile(const bk_uploader *u)
{
	int fd = open(u->data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	return fd < 0 ? -errno : fd;
}

/* Copies len bytes of in at off to out at out_off. */
static int copy_bytes(int in, uint64_t off, int out, uint64_t out_off,
		      uint64_t len)
{
	while (len > 0) {
		loff_t a = (loff_t)off, b = (loff_t)out_off;
		ssize_t n = copy_file_range(in, &a, out, &b, (size_t)len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		off += (uint64_t)n;
		out_off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Appends one record (length prefix, LTX bytes) to out at *end. */
static int add_record(int in, uint64_t off, uint64_t len, int out,
		      uint64_t *end)
{
	uint8_t pfx[4];
	int rc;

	if (len > UINT32_MAX)
		return -EFBIG;
	put_be32(pfx, (uint32_t)len);
	rc = lib_io_pwrite_full(out, pfx, 4, (off_t)*end);
	if (rc == 0)
		rc = copy_bytes(in, off, out, *end + 4, len);
	if (rc == 0)
		*end += 4 + len;
	return rc;
}

/* The post-apply checksum of the LTX file at [off, off+len) of fd. */
static int read_post(int fd, uint64_t off, uint64_t len, uint64_t *out)
{
	uint8_t b[8];
	int rc = len < LTX_HEADER_SIZE + 16 ? -EBADMSG :
		 lib_io_pread_full(fd, b, 8, (off_t)(off + len - 16), NULL);

	if (rc == 0)
		*out = get_be64(b);
	return rc;
}

/* U3: the log records after st->txid, up to TXID upto (the published
 * position: with synchronous replication the log's last record may still
 * be taken back, docs/SYNC.md), into b; -ESTALE when they do not follow
 * the store's position (a snapshot is needed), 0 with b->records 0 when
 * there is nothing new. */
int bk_up_build_from_log(fs_db *db, const struct db_state *st,
			  uint64_t upto, struct built *b)
{
	fs_log_iter *it = NULL;
	ltx_header hdr;
	uint64_t off, len;
	int rc, fd;

	rc = fs_log_iter_open(fs_db_log(db), st->txid, &it);
	if (rc < 0)
		return rc == -ENOENT ? -ESTALE : rc;
	while (b->len < BK_OBJECT_MAX_BYTES &&
	       (rc = fs_log_iter_next(it, &fd, &off, &len, &hdr)) == 1) {
		/* Rule O2: a snapshot record is an object of its own. */
		if ((b->records > 0 && hdr.min_txid == 1) ||
		    hdr.max_txid > upto)
			break;
		if (b->records == 0) {
			b->first_ms = hdr.timestamp;
			bool follows = hdr.min_txid == st->txid + 1 &&
				       (st->txid == 0 ||
					hdr.pre_apply_checksum == st->post);
			if (!follows && hdr.min_txid != 1) {
				rc = -ESTALE;
				break;
			}
			b->o.min_txid = hdr.min_txid;
		}
		rc = add_record(fd, off, len, b->fd, &b->len);
		if (rc == 0)
			rc = read_post(fd, off, len, &b->o.post);
		if (rc < 0)
			break;
		b->o.max_txid = hdr.max_txid;
		b->records++;
		if (hdr.min_txid == 1)
			break;
	}
	fs_log_iter_free(it);
	if (rc == -ENOENT)
		rc = -ESTALE;
	return rc < 0 ? rc : 0;
}

/* U3: a snapshot of db as one object into b. */
int bk_up_build_snapshot(bk_uploader *u, fs_db *db, struct built *b)
{
	ltx_header hdr;
	uint64_t len = 0;
	int rc, snap = bk_up_tmpfile(u);

	if (snap < 0)
		return snap;
	rc = fs_db_snapshot_ltx(db, snap, &hdr, &len);
	if (rc == 0)
		rc = add_record(snap, 0, len, b->fd, &b->len);
	if (rc == 0)
		rc = read_post(snap, 0, len, &b->o.post);
	close(snap);
	if (rc == 0) {
		b->o.min_txid = hdr.min_txid;
		b->o.max_txid = hdr.max_txid;
		b->first_ms = hdr.timestamp;
		b->records = 1;
	}
	return rc;
}
