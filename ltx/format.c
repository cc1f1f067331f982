/* LTX header and trailer encoding, validation and error reporting; the
 * layout and the numbered rules are in ltx.h. */
#include "ltx.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "checksum.h"
#include "lib/bytes.h"

_Static_assert(LTX_HEADER_SIZE == 100, "LTX header is 100 bytes");
_Static_assert(LTX_TRAILER_SIZE == 16, "LTX trailer is 16 bytes");

static const char *const kind_names[LTX_ERR_KIND_COUNT] = {
	[LTX_OK] = "ok",
	[LTX_ERR_IO] = "i/o error",
	[LTX_ERR_NOMEM] = "out of memory",
	[LTX_ERR_TRUNCATED] = "truncated",
	[LTX_ERR_MAGIC] = "bad magic",
	[LTX_ERR_FLAGS] = "unknown flags",
	[LTX_ERR_UNSUPPORTED] = "unsupported compression",
	[LTX_ERR_PAGE_SIZE] = "bad page size",
	[LTX_ERR_MIN_TXID] = "bad min TXID",
	[LTX_ERR_MAX_TXID] = "bad max TXID",
	[LTX_ERR_PRE_APPLY] = "bad pre-apply checksum",
	[LTX_ERR_WAL_RANGE] = "bad WAL offset/size",
	[LTX_ERR_WAL_SALT] = "bad WAL salt",
	[LTX_ERR_RESERVED] = "reserved bytes not zero",
	[LTX_ERR_COMMIT] = "bad commit",
	[LTX_ERR_PGNO] = "bad page number",
	[LTX_ERR_LOCK_PAGE] = "lock page present",
	[LTX_ERR_PAGE_ORDER] = "pages out of order",
	[LTX_ERR_SNAPSHOT] = "incomplete snapshot",
	[LTX_ERR_COMPRESSED] = "corrupt compressed block",
	[LTX_ERR_POST_APPLY] = "bad post-apply checksum",
	[LTX_ERR_FILE_CHECKSUM] = "file checksum mismatch",
	[LTX_ERR_TRAILING] = "trailing data",
	[LTX_ERR_USAGE] = "invalid use",
};

const char *ltx_err_kind_name(int kind)
{
	if (kind < 0 || kind >= LTX_ERR_KIND_COUNT)
		return "unknown error";
	return kind_names[kind];
}

int ltx_err_set(ltx_err *err, int kind, int64_t offset, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		int n;

		err->kind = kind;
		err->offset = offset;
		n = snprintf(err->msg, sizeof(err->msg), "%s at byte %" PRId64
			     ": ", ltx_err_kind_name(kind), offset);
		if (n < 0 || (size_t)n >= sizeof(err->msg))
			n = 0;
		va_start(ap, fmt);
		vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	switch (kind) {
	case LTX_OK:
		return 0;
	case LTX_ERR_IO:
		return -EIO;
	case LTX_ERR_NOMEM:
		return -ENOMEM;
	case LTX_ERR_UNSUPPORTED:
		return -ENOTSUP;
	case LTX_ERR_USAGE:
		return -EINVAL;
	default:
		return -EBADMSG;
	}
}

void ltx_header_encode(const ltx_header *h, uint8_t *out)
{
	memset(out, 0, LTX_HEADER_SIZE);
	memcpy(out, LTX_MAGIC, 4);
	put_be32(out + 4, h->flags);
	put_be32(out + 8, h->page_size);
	put_be32(out + 12, h->commit);
	put_be64(out + 16, h->min_txid);
	put_be64(out + 24, h->max_txid);
	put_be64(out + 32, (uint64_t)h->timestamp);
	put_be64(out + 40, h->pre_apply_checksum);
	put_be64(out + 48, h->wal_offset);
	put_be64(out + 56, h->wal_size);
	put_be32(out + 64, h->wal_salt1);
	put_be32(out + 68, h->wal_salt2);
	put_be64(out + 72, h->node_id);
}

int ltx_header_validate(const ltx_header *h, ltx_err *err)
{
	uint32_t ps = h->page_size;

	if (h->flags & ~LTX_FLAGS_KNOWN)
		return ltx_err_set(err, LTX_ERR_FLAGS, 4,
				   "flags 0x%08" PRIx32 " has unknown bits "
				   "0x%08" PRIx32, h->flags,
				   h->flags & ~LTX_FLAGS_KNOWN);
	if (h->flags & LTX_FLAG_COMPRESS_LZ4)
		return ltx_err_set(err, LTX_ERR_UNSUPPORTED, 4,
				   "flags 0x%08" PRIx32 ": LZ4 compression "
				   "(LiteFS) is not supported; expected "
				   "uncompressed or zstd (0x4)", h->flags);
	if (ps < LTX_MIN_PAGE_SIZE || ps > LTX_MAX_PAGE_SIZE ||
	    (ps & (ps - 1)) != 0)
		return ltx_err_set(err, LTX_ERR_PAGE_SIZE, 8,
				   "page size %" PRIu32 ": expected a power "
				   "of two from 512 to 65536", ps);
	if (h->min_txid == 0)
		return ltx_err_set(err, LTX_ERR_MIN_TXID, 16,
				   "min TXID 0: expected > 0");
	if (h->max_txid < h->min_txid)
		return ltx_err_set(err, LTX_ERR_MAX_TXID, 24,
				   "max TXID %016" PRIx64 " < min TXID %016"
				   PRIx64, h->max_txid, h->min_txid);
	if (ltx_header_is_snapshot(h) && h->pre_apply_checksum != 0)
		return ltx_err_set(err, LTX_ERR_PRE_APPLY, 40,
				   "snapshot pre-apply checksum %016" PRIx64
				   ": expected 0", h->pre_apply_checksum);
	if (!ltx_header_is_snapshot(h) &&
	    !(h->pre_apply_checksum & LTX_CHECKSUM_FLAG))
		return ltx_err_set(err, LTX_ERR_PRE_APPLY, 40,
				   "pre-apply checksum %016" PRIx64
				   ": expected bit 63 set",
				   h->pre_apply_checksum);
	if ((h->wal_offset == 0) != (h->wal_size == 0))
		return ltx_err_set(err, LTX_ERR_WAL_RANGE, 48,
				   "WAL offset %" PRIu64 " and size %" PRIu64
				   ": expected both set or both zero",
				   h->wal_offset, h->wal_size);
	if (h->wal_offset == 0 && (h->wal_salt1 || h->wal_salt2))
		return ltx_err_set(err, LTX_ERR_WAL_SALT, 64,
				   "WAL salts %08" PRIx32 "/%08" PRIx32
				   " without a WAL offset: expected zero",
				   h->wal_salt1, h->wal_salt2);
	if ((uint64_t)h->commit * ps > (UINT64_C(1) << 47))
		return ltx_err_set(err, LTX_ERR_COMMIT, 12,
				   "commit %" PRIu32 " pages of %" PRIu32
				   " bytes: larger than any SQLite database",
				   h->commit, ps);
	return 0;
}

int ltx_header_decode(const uint8_t *buf, ltx_header *out, ltx_err *err)
{
	if (memcmp(buf, LTX_MAGIC, 4) != 0)
		return ltx_err_set(err, LTX_ERR_MAGIC, 0,
				   "magic %02x%02x%02x%02x: expected \"LTX1\"",
				   buf[0], buf[1], buf[2], buf[3]);
	out->flags = get_be32(buf + 4);
	out->page_size = get_be32(buf + 8);
	out->commit = get_be32(buf + 12);
	out->min_txid = get_be64(buf + 16);
	out->max_txid = get_be64(buf + 24);
	out->timestamp = (int64_t)get_be64(buf + 32);
	out->pre_apply_checksum = get_be64(buf + 40);
	out->wal_offset = get_be64(buf + 48);
	out->wal_size = get_be64(buf + 56);
	out->wal_salt1 = get_be32(buf + 64);
	out->wal_salt2 = get_be32(buf + 68);
	out->node_id = get_be64(buf + 72);
	for (int i = 80; i < LTX_HEADER_SIZE; i++) {
		if (buf[i] != 0)
			return ltx_err_set(err, LTX_ERR_RESERVED, i,
					   "reserved byte %d is 0x%02x: "
					   "expected 0", i, buf[i]);
	}
	return ltx_header_validate(out, err);
}

void ltx_trailer_encode(const ltx_trailer *t, uint8_t *out)
{
	put_be64(out, t->post_apply_checksum);
	put_be64(out + 8, t->file_checksum);
}

void ltx_trailer_decode(const uint8_t *buf, ltx_trailer *out)
{
	out->post_apply_checksum = get_be64(buf);
	out->file_checksum = get_be64(buf + 8);
}
