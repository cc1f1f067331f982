#include "wal.h"

#include <errno.h>

#include "lib/bytes.h"

void fs_wal_checksum(bool big_endian, const uint8_t *buf, uint32_t n,
		     uint32_t *s0, uint32_t *s1)
{
	uint32_t a = *s0, b = *s1;

	if (big_endian) {
		for (uint32_t i = 0; i + 8 <= n; i += 8) {
			a += get_be32(buf + i) + b;
			b += get_be32(buf + i + 4) + a;
		}
	} else {
		for (uint32_t i = 0; i + 8 <= n; i += 8) {
			a += get_le32(buf + i) + b;
			b += get_le32(buf + i + 4) + a;
		}
	}
	*s0 = a;
	*s1 = b;
}

int fs_wal_hdr_parse(const uint8_t *buf, fs_wal_hdr *out)
{
	uint32_t magic = get_be32(buf);
	uint32_t ps = get_be32(buf + 8);
	uint32_t s0 = 0, s1 = 0;

	if (magic != FS_WAL_MAGIC_LE && magic != FS_WAL_MAGIC_BE)
		return -EBADMSG;
	if (get_be32(buf + 4) != FS_WAL_VERSION)
		return -EBADMSG;
	/* As SQLite's walIndexRecover: 65536 is written as is (unlike the
	 * database header's 1), and a WAL with any other value is empty. */
	if (ps < 512 || ps > 65536 || (ps & (ps - 1)))
		return -EBADMSG;
	out->big_endian_cksum = magic == FS_WAL_MAGIC_BE;
	out->page_size = ps;
	out->ckpt_seq = get_be32(buf + 12);
	out->salt1 = get_be32(buf + 16);
	out->salt2 = get_be32(buf + 20);
	out->cksum1 = get_be32(buf + 24);
	out->cksum2 = get_be32(buf + 28);
	fs_wal_checksum(out->big_endian_cksum, buf, 24, &s0, &s1);
	if (s0 != out->cksum1 || s1 != out->cksum2)
		return -EBADMSG;
	return 0;
}

bool fs_wal_frame_check(const fs_wal_hdr *h, const uint8_t *fhdr,
			const uint8_t *page, uint32_t *s0, uint32_t *s1,
			uint32_t *out_pgno, uint32_t *out_commit)
{
	uint32_t a = *s0, b = *s1;

	if (get_be32(fhdr + 8) != h->salt1 || get_be32(fhdr + 12) != h->salt2)
		return false;
	if (get_be32(fhdr) == 0)
		return false;
	fs_wal_checksum(h->big_endian_cksum, fhdr, 8, &a, &b);
	fs_wal_checksum(h->big_endian_cksum, page, h->page_size, &a, &b);
	if (a != get_be32(fhdr + 16) || b != get_be32(fhdr + 20))
		return false;
	*s0 = a;
	*s1 = b;
	*out_pgno = get_be32(fhdr);
	*out_commit = get_be32(fhdr + 4);
	return true;
}
