/* The base of a pruned LTX log: layout and rules in logbase.h. */
#include "logbase.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/io.h"
#include "ltx/checksum.h"

#define BASE_MAGIC "LTXBASE1"
#define BASE_HDR 248
#define BASE_TRAILER 8
#define CHUNK_ENTRIES 4096      /* entries read or copied at a time */

_Static_assert(BASE_HDR == 48 + FS_LOGBASE_WHY, "base header layout");
_Static_assert(sizeof(BASE_MAGIC) - 1 == 8, "base magic");

struct fs_logbase {
	int fd;                 /* the table: header room, then entries */
	fs_logbase_info info;   /* info.checksum is the XOR of the entries */
	uint8_t *page;          /* a decoded page */
	uint8_t *zero;          /* a page of zeros */
	uint8_t *chunk;         /* CHUNK_ENTRIES entries */
};

static off_t entry_off(uint32_t pgno)
{
	return (off_t)BASE_HDR + (off_t)(pgno - 1) * 8;
}

static off_t table_end(uint32_t commit)
{
	return (off_t)BASE_HDR + (off_t)commit * 8;
}

int fs_logbase_new(int fd, fs_logbase **out)
{
	fs_logbase *b = calloc(1, sizeof(*b));
	int rc;

	*out = NULL;
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	b->fd = fd;
	b->info.checksum = LTX_CHECKSUM_EMPTY;
	b->page = malloc(LTX_MAX_PAGE_SIZE);
	b->zero = calloc(1, LTX_MAX_PAGE_SIZE);
	b->chunk = malloc(CHUNK_ENTRIES * 8);
	if (!b->page || !b->zero || !b->chunk) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = lib_io_ftruncate(fd, 0);
	if (rc == 0)
		rc = lib_io_ftruncate(fd, BASE_HDR);
	if (rc < 0)
		goto fail;
	*out = b;
	return 0;
fail:
	fs_logbase_free(b);
	return rc;
}

void fs_logbase_free(fs_logbase *b)
{
	if (!b)
		return;
	if (b->fd >= 0)
		close(b->fd);
	free(b->page);
	free(b->zero);
	free(b->chunk);
	free(b);
}

const fs_logbase_info *fs_logbase_get_info(const fs_logbase *b)
{
	return &b->info;
}

static int get_entry(fs_logbase *b, uint32_t pgno, uint64_t *out)
{
	uint8_t buf[8];
	size_t got = 0;
	int rc = lib_io_pread_full(b->fd, buf, 8, entry_off(pgno), &got);

	if (rc == -ENODATA && got == 0) {
		*out = 0; /* past the end of the file: no entry */
		return 0;
	}
	if (rc < 0)
		return rc;
	*out = get_be64(buf);
	return 0;
}

static int set_entry(fs_logbase *b, uint32_t pgno, uint64_t v)
{
	uint8_t buf[8];

	put_be64(buf, v);
	return lib_io_pwrite_full(b->fd, buf, 8, entry_off(pgno));
}

int fs_logbase_get(fs_logbase *b, uint32_t pgno, uint64_t *out)
{
	*out = 0;
	if (pgno == 0 || pgno > b->info.commit)
		return 0;
	return get_entry(b, pgno, out);
}

/* XORs the entries of pages [from, to] into *sum (the lock page's is 0,
 * so it needs no skipping), a chunk at a time. */
static int xor_range(fs_logbase *b, uint32_t from, uint32_t to,
		     uint64_t *sum)
{
	uint64_t p = from;

	while (p <= to) {
		size_t n = to - p + 1 < CHUNK_ENTRIES ? (size_t)(to - p + 1)
						       : CHUNK_ENTRIES;
		int rc = lib_io_pread_full(b->fd, b->chunk, n * 8,
					   entry_off((uint32_t)p), NULL);
		if (rc < 0)
			return rc;
		for (size_t i = 0; i < n; i++) {
			uint64_t v = get_be64(b->chunk + i * 8);
			if (v)
				*sum = ltx_checksum_xor(*sum, v);
		}
		p += n;
	}
	return 0;
}

/* Pages [from, to] that a growing commit adds without a frame: they read
 * as zeros and count like any other page. */
static int zero_fill(fs_logbase *b, uint32_t page_size, uint64_t from,
		     uint64_t to, uint64_t *sum)
{
	uint32_t lock = ltx_lock_pgno(page_size);

	for (uint64_t p = from; p <= to; p++) {
		uint64_t v;
		int rc;
		if (p == lock)
			continue;
		v = ltx_checksum_page((uint32_t)p, b->zero, page_size);
		rc = set_entry(b, (uint32_t)p, v);
		if (rc < 0)
			return rc;
		*sum = ltx_checksum_xor(*sum, v);
	}
	return 0;
}

/* Checks that h follows b's position (a snapshot follows anything). */
static int check_follows(const fs_logbase *b, const ltx_header *h, char *why,
			 size_t whylen)
{
	if (ltx_header_is_snapshot(h))
		return 0;
	if (b->info.txid == 0) {
		snprintf(why, whylen, "TXID %016" PRIx64 " is not a snapshot "
			 "and nothing comes before it", h->max_txid);
		return -EBADMSG;
	}
	if (h->min_txid != b->info.txid + 1 ||
	    h->pre_apply_checksum != b->info.checksum) {
		snprintf(why, whylen, "TXID %016" PRIx64 " does not follow "
			 "%016" PRIx64 "/%016" PRIx64 ": it starts at %016"
			 PRIx64 "/%016" PRIx64, h->max_txid, b->info.txid,
			 b->info.checksum, h->min_txid - 1,
			 h->pre_apply_checksum);
		return -EBADMSG;
	}
	return 0;
}

/* The record's pages onto the table; *io_grown is the highest page
 * accounted for so far. */
static int apply_pages(fs_logbase *b, ltx_decoder *dec, const ltx_header *h,
		       uint32_t old_commit, const fs_logbase_hooks *hk,
		       uint64_t *io_grown, uint64_t *io_sum)
{
	uint32_t ps = h->page_size, pgno;
	int rc;

	while ((rc = ltx_decoder_next_page(dec, &pgno, b->page)) == 1) {
		uint64_t v;
		if (pgno <= old_commit) {
			rc = get_entry(b, pgno, &v);
			if (rc < 0)
				return rc;
			if (v)
				*io_sum = ltx_checksum_xor(*io_sum, v);
		}
		if (pgno > *io_grown + 1) {
			rc = zero_fill(b, ps, *io_grown + 1, pgno - 1, io_sum);
			if (rc < 0)
				return rc;
		}
		if (pgno > *io_grown)
			*io_grown = pgno;
		v = ltx_checksum_page(pgno, b->page, ps);
		rc = set_entry(b, pgno, v);
		if (rc == 0 && hk && hk->page)
			rc = hk->page(hk->ctx, pgno, b->page, ps);
		if (rc < 0)
			return rc;
		*io_sum = ltx_checksum_xor(*io_sum, v);
	}
	return rc;
}

int fs_logbase_apply(fs_logbase *b, ltx_decoder *dec,
		     const fs_logbase_hooks *hk, ltx_header *out_hdr,
		     char *why, size_t whylen)
{
	fs_logbase_info *in = &b->info;
	ltx_header h;
	ltx_trailer t;
	uint64_t sum = in->checksum, grown;
	uint32_t old_commit = in->commit;
	int rc;

	rc = ltx_decoder_read_header(dec, &h);
	if (rc < 0) {
		snprintf(why, whylen, "a record: %s", ltx_decoder_err(dec)->msg);
		return rc;
	}
	rc = check_follows(b, &h, why, whylen);
	if (rc < 0)
		return rc;
	if (ltx_header_is_snapshot(&h) || h.page_size != in->page_size) {
		/* Every entry XORed out is the empty database: their XOR is
		 * the checksum. */
		sum = LTX_CHECKSUM_EMPTY;
		old_commit = 0;
		in->commit = 0;
		in->page_size = h.page_size;
		rc = lib_io_ftruncate(b->fd, BASE_HDR);
		if (rc == 0 && hk && hk->resize)
			rc = hk->resize(hk->ctx, 0, h.page_size, true);
		if (rc < 0)
			goto io;
	}
	grown = old_commit;
	rc = apply_pages(b, dec, &h, old_commit, hk, &grown, &sum);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, &t);
	if (rc < 0 && ltx_decoder_err(dec)->kind != LTX_OK) {
		/* The record itself: -EBADMSG when it is corrupt. */
		snprintf(why, whylen, "TXID %016" PRIx64 ": %s", h.max_txid,
			 ltx_decoder_err(dec)->msg);
		return rc;
	}
	if (rc < 0)
		goto io;
	if (h.commit == 0)
		sum = LTX_CHECKSUM_EMPTY; /* deleted: every entry goes */
	else if (old_commit > h.commit)
		rc = xor_range(b, h.commit + 1, old_commit, &sum);
	if (rc == 0 && h.commit > grown)
		rc = zero_fill(b, h.page_size, grown + 1, h.commit, &sum);
	if (rc == 0)
		rc = lib_io_ftruncate(b->fd, table_end(h.commit));
	if (rc == 0 && hk && hk->resize)
		rc = hk->resize(hk->ctx, h.commit, h.page_size, false);
	if (rc < 0)
		goto io;
	if (sum != t.post_apply_checksum) {
		snprintf(why, whylen, "TXID %016" PRIx64 " does not replay: "
			 "its pages onto %016" PRIx64 "/%016" PRIx64 " give "
			 "checksum %016" PRIx64 ", its post-apply checksum is "
			 "%016" PRIx64, h.max_txid, h.min_txid - 1,
			 h.pre_apply_checksum, sum, t.post_apply_checksum);
		return -EBADMSG;
	}
	in->commit = h.commit;
	in->txid = h.max_txid;
	in->checksum = sum;
	if (ltx_header_is_snapshot(&h))
		in->since = h.max_txid;
	if (out_hdr)
		*out_hdr = h;
	return 0;
io:
	snprintf(why, whylen, "TXID %016" PRIx64 ": the page checksum table: "
		 "%s", h.max_txid, strerror(-rc));
	return rc;
}

void fs_logbase_stop(fs_logbase *b, uint64_t txid, const char *why)
{
	b->info.stopped = txid;
	snprintf(b->info.why, sizeof(b->info.why), "%s", why);
}

static void encode_header(const fs_logbase_info *in, uint8_t *hdr)
{
	size_t wl = strnlen(in->why, FS_LOGBASE_WHY - 1);

	memset(hdr, 0, BASE_HDR);
	memcpy(hdr, BASE_MAGIC, 8);
	put_be32(hdr + 8, in->page_size);
	put_be32(hdr + 12, in->commit);
	put_be64(hdr + 16, in->txid);
	put_be64(hdr + 24, in->checksum);
	put_be64(hdr + 32, in->since);
	put_be64(hdr + 40, in->stopped);
	memcpy(hdr + 48, in->why, wl);
}

/* crc64 of the fd's bytes [0, end). */
static int crc_of(fs_logbase *b, off_t end, uint64_t *out)
{
	uint64_t crc = 0;
	off_t off = 0;

	while (off < end) {
		size_t n = end - off < CHUNK_ENTRIES * 8 ? (size_t)(end - off)
							 : CHUNK_ENTRIES * 8;
		int rc = lib_io_pread_full(b->fd, b->chunk, n, off, NULL);
		if (rc < 0)
			return rc;
		crc = ltx_crc64(crc, b->chunk, n);
		off += (off_t)n;
	}
	*out = crc | LTX_CHECKSUM_FLAG;
	return 0;
}

int fs_logbase_write(fs_logbase *b)
{
	uint8_t hdr[BASE_HDR], tr[BASE_TRAILER];
	off_t end = table_end(b->info.commit);
	uint64_t crc = 0;
	int rc;

	encode_header(&b->info, hdr);
	rc = lib_io_pwrite_full(b->fd, hdr, sizeof(hdr), 0);
	if (rc == 0)
		rc = lib_io_ftruncate(b->fd, end);
	if (rc == 0)
		rc = crc_of(b, end, &crc);
	if (rc < 0)
		return rc;
	put_be64(tr, crc);
	rc = lib_io_pwrite_full(b->fd, tr, sizeof(tr), end);
	if (rc == 0)
		rc = lib_io_fsync(b->fd);
	return rc;
}

/* Rules B1, B2, B4, B7 on a header read from a file of size bytes. */
static int check_header(const uint8_t *hdr, uint64_t size, fs_logbase_info *in,
			char *why, size_t whylen)
{
	uint32_t ps;

	if (memcmp(hdr, BASE_MAGIC, 8) != 0) {
		snprintf(why, whylen, "no \"%s\" magic (rule B1)", BASE_MAGIC);
		return -EBADMSG;
	}
	memset(in, 0, sizeof(*in));
	in->page_size = ps = get_be32(hdr + 8);
	in->commit = get_be32(hdr + 12);
	in->txid = get_be64(hdr + 16);
	in->checksum = get_be64(hdr + 24);
	in->since = get_be64(hdr + 32);
	in->stopped = get_be64(hdr + 40);
	memcpy(in->why, hdr + 48, FS_LOGBASE_WHY - 1);
	if (size != (uint64_t)table_end(in->commit) + BASE_TRAILER) {
		snprintf(why, whylen, "%" PRIu64 " bytes for %" PRIu32 " pages: "
			 "expected %" PRIu64 " (rule B2)", size, in->commit,
			 (uint64_t)table_end(in->commit) + BASE_TRAILER);
		return -EBADMSG;
	}
	if ((in->commit > 0 || ps != 0) &&
	    (ps < LTX_MIN_PAGE_SIZE || ps > LTX_MAX_PAGE_SIZE ||
	     (ps & (ps - 1)))) {
		snprintf(why, whylen, "page size %" PRIu32 " (rule B4)", ps);
		return -EBADMSG;
	}
	if (in->since == 0 || in->since > in->txid ||
	    (in->stopped != 0 && in->stopped <= in->txid)) {
		snprintf(why, whylen, "at TXID %016" PRIx64 ", from the "
			 "snapshot at %016" PRIx64 ", stopped at %016" PRIx64
			 " (rule B7)", in->txid, in->since, in->stopped);
		return -EBADMSG;
	}
	return 0;
}

/* Copies the entries of fd into b; *io_crc goes on over them. Rules B5
 * and B6: *out_bad is set, with why, when they are broken (the copy goes
 * on: the file checksum is checked first). */
static int copy_entries(fs_logbase *b, int fd, const fs_logbase_info *in,
			uint64_t *io_crc, bool *out_bad, char *why,
			size_t whylen)
{
	uint32_t lock = in->commit ? ltx_lock_pgno(in->page_size) : 0;
	uint64_t sum = LTX_CHECKSUM_EMPTY, p = 1;

	while (p <= in->commit) {
		size_t n = in->commit - p + 1 < CHUNK_ENTRIES ?
				   (size_t)(in->commit - p + 1) : CHUNK_ENTRIES;
		off_t off = entry_off((uint32_t)p);
		int rc = lib_io_pread_full(fd, b->chunk, n * 8, off, NULL);
		if (rc == 0)
			rc = lib_io_pwrite_full(b->fd, b->chunk, n * 8, off);
		if (rc < 0)
			return rc;
		*io_crc = ltx_crc64(*io_crc, b->chunk, n * 8);
		for (size_t i = 0; i < n; i++, p++) {
			uint64_t v = get_be64(b->chunk + i * 8);
			if (!*out_bad && (p == lock ? v != 0
						    : !(v & LTX_CHECKSUM_FLAG))) {
				snprintf(why, whylen, "page %" PRIu64 "'s "
					 "checksum is %016" PRIx64 " (rule B5)",
					 p, v);
				*out_bad = true;
			}
			if (v)
				sum = ltx_checksum_xor(sum, v);
		}
	}
	if (!*out_bad && sum != in->checksum) {
		snprintf(why, whylen, "its pages' checksums give %016" PRIx64
			 ", its header says %016" PRIx64 " (rule B6)", sum,
			 in->checksum);
		*out_bad = true;
	}
	return 0;
}

int fs_logbase_load(fs_logbase *b, const char *path, char *why,
		    size_t whylen)
{
	uint8_t hdr[BASE_HDR], tr[BASE_TRAILER];
	fs_logbase_info in = {0};
	struct stat st;
	uint64_t crc = 0;
	bool bad = false;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, whylen, "%s", strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(why, whylen, "%s", strerror(-rc));
		goto out;
	}
	rc = lib_io_pread_full(fd, hdr, sizeof(hdr), 0, NULL);
	if (rc == -ENODATA) {
		snprintf(why, whylen, "%jd bytes, shorter than its header "
			 "(rule B2)", (intmax_t)st.st_size);
		rc = -EBADMSG;
	}
	if (rc == 0)
		rc = check_header(hdr, (uint64_t)st.st_size, &in, why, whylen);
	if (rc < 0)
		goto out;
	crc = ltx_crc64(0, hdr, sizeof(hdr));
	rc = copy_entries(b, fd, &in, &crc, &bad, why, whylen);
	if (rc == 0)
		rc = lib_io_pread_full(fd, tr, sizeof(tr), table_end(in.commit),
				       NULL);
	if (rc == 0 && get_be64(tr) != (crc | LTX_CHECKSUM_FLAG)) {
		snprintf(why, whylen, "file checksum %016" PRIx64 ": computed "
			 "%016" PRIx64 " (rule B3)", get_be64(tr),
			 crc | LTX_CHECKSUM_FLAG);
		rc = -EBADMSG;
	}
	if (rc == 0 && bad)
		rc = -EBADMSG; /* why says which rule */
	if (rc == 0)
		rc = lib_io_ftruncate(b->fd, table_end(in.commit));
	if (rc == 0)
		b->info = in;
	else if (rc != -EBADMSG)
		snprintf(why, whylen, "%s", strerror(-rc));
out:
	close(fd);
	return rc;
}
