#!/bin/sh
# `ltxfs ltx` end to end, against the built binary.
#
# Usage: test_ltx_cmd.sh LTXFS roundtrip|peer
#
#   roundtrip  databases made with the sqlite3 CLI at several page sizes:
#              encode-db, verify, apply, checksum agree and give back the
#              same file; corrupt and truncated copies fail verify and
#              apply; usage errors exit 2.
#   peer       the LiteFS vectors in $LTXFS_PEER_DIR: checksum prints
#              fe3831a381c602b9, verify and dump agree with the README,
#              a corrupt copy fails, apply to a database at another
#              position is refused. Exits 77 when the directory is
#              missing, unless LTXFS_REQUIRE_PEER=1.
set -eu

ltxfs=$1
mode=$2
case $ltxfs in /*) ;; *) ltxfs=$(pwd)/$ltxfs ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_rc WANT CMD...: runs CMD, fails unless it exits WANT.
expect_rc() {
	want=$1
	shift
	set +e
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	set -e
	[ "$rc" -eq "$want" ] ||
		fail "$* exited $rc, expected $want: $(cat "$tmp/err")"
}

# flip FILE OFFSET: XORs the byte at OFFSET with 0x01.
flip() {
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	v=$((b ^ 1))
	# shellcheck disable=SC2059
	printf "\\$(printf '%03o' "$v")" |
		dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

size_of() { wc -c <"$1" | tr -d ' '; }

roundtrip() {
	command -v sqlite3 >/dev/null 2>&1 || {
		echo "SKIP: the sqlite3 CLI is not installed" >&2
		exit 77
	}
	for ps in 512 4096 65536; do
		db=$tmp/a$ps.db
		sqlite3 "$db" "PRAGMA page_size=$ps;
			CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
			WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL
				SELECT i + 1 FROM n WHERE i < 200)
			INSERT INTO t(v) SELECT randomblob(300) FROM n;
			CREATE INDEX t_v ON t(v);"
		[ "$(sqlite3 "$db" 'PRAGMA page_size')" = "$ps" ] ||
			fail "sqlite3 did not make $ps-byte pages"

		expect_rc 0 "$ltxfs" ltx checksum "$db"
		sum=$(cat "$tmp/out")
		echo "$sum" | grep -Eq '^[0-9a-f]{16}$' ||
			fail "checksum printed \"$sum\""

		for level in 1 0; do
			ltx=$tmp/a$ps-$level.ltx
			expect_rc 0 "$ltxfs" ltx encode-db "$db" "$ltx" "$level"
			[ "$(cat "$tmp/out")" = "$sum" ] ||
				fail "encode-db printed $(cat "$tmp/out"), not $sum"
			expect_rc 0 "$ltxfs" ltx verify "$ltx"
			grep -q ": ok: " "$tmp/out" ||
				fail "verify: $(cat "$tmp/out")"

			# Flags at byte 4: 0x4 compressed, 0 plain.
			flags=$(od -An -tx1 -j4 -N4 "$ltx" | tr -d ' ')
			if [ "$level" = 0 ]; then
				[ "$flags" = 00000000 ] || fail "level 0 flags $flags"
				pages=$(( $(size_of "$db") / ps ))
				[ "$(size_of "$ltx")" -eq \
				  $((100 + pages * (4 + ps) + 4 + 16)) ] ||
					fail "uncompressed size $(size_of "$ltx")"
			else
				[ "$flags" = 00000004 ] || fail "level 1 flags $flags"
			fi

			expect_rc 0 "$ltxfs" ltx dump "$ltx"
			grep -q "post-apply:    $sum" "$tmp/out" ||
				fail "dump: $(cat "$tmp/out")"

			copy=$tmp/b$ps-$level.db
			# apply reports each file verified, then the checksum.
			expect_rc 0 "$ltxfs" ltx apply "$copy" "$ltx"
			grep -q ": ok: " "$tmp/out" ||
				fail "apply: $(cat "$tmp/out")"
			[ "$(tail -n1 "$tmp/out")" = "$sum" ] ||
				fail "apply printed $(cat "$tmp/out")"
			expect_rc 0 "$ltxfs" ltx checksum "$copy"
			[ "$(cat "$tmp/out")" = "$sum" ] ||
				fail "checksum after apply $(cat "$tmp/out")"
			cmp -s "$db" "$copy" || fail "applied copy differs"
			[ "$(sqlite3 "$copy" 'PRAGMA integrity_check')" = ok ] ||
				fail "applied copy fails integrity_check"
			[ "$(sqlite3 "$copy" 'SELECT count(*) FROM t')" = 200 ] ||
				fail "applied copy lost rows"

			# A snapshot applies over a database that is ahead.
			expect_rc 0 "$ltxfs" ltx apply "$copy" "$ltx"

			# A corrupt copy: verify fails, apply fails and says so.
			bad=$tmp/bad$ps-$level.ltx
			# (A page byte when plain; in a zstd frame a few bits do
			# not change what it inflates to, so the timestamp.)
			cp "$ltx" "$bad"
			if [ "$level" = 0 ]; then
				flip "$bad" $(( $(size_of "$bad") / 2 ))
			else
				flip "$bad" 33
			fi
			expect_rc 1 "$ltxfs" ltx verify "$bad"
			[ -s "$tmp/err" ] || fail "verify of a corrupt file is silent"
			expect_rc 1 "$ltxfs" ltx verify "$ltx" "$bad"
			expect_rc 1 "$ltxfs" ltx apply "$tmp/c$ps-$level.db" "$bad"
			[ ! -s "$tmp/c$ps-$level.db" ] ||
				fail "a corrupt file was applied"

			# Truncated, and with a byte appended.
			head -c $(( $(size_of "$ltx") - 1 )) "$ltx" >"$bad"
			expect_rc 1 "$ltxfs" ltx verify "$bad"
			cp "$ltx" "$bad"
			printf 'x' >>"$bad"
			expect_rc 1 "$ltxfs" ltx verify "$bad"
		done
	done

	# Not a database, not an LTX file, not there.
	printf 'hello' >"$tmp/junk"
	expect_rc 1 "$ltxfs" ltx checksum "$tmp/junk"
	expect_rc 1 "$ltxfs" ltx verify "$tmp/junk"
	expect_rc 1 "$ltxfs" ltx verify "$tmp/missing.ltx"
	expect_rc 1 "$ltxfs" ltx encode-db "$tmp/junk" "$tmp/x.ltx"

	# Usage errors.
	expect_rc 2 "$ltxfs" ltx
	expect_rc 2 "$ltxfs" ltx verify
	expect_rc 2 "$ltxfs" ltx checksum
	expect_rc 2 "$ltxfs" ltx nonsense x
}

peer() {
	dir=${LTXFS_PEER_DIR:-}
	if [ -z "$dir" ] || [ ! -d "$dir" ]; then
		echo "cmd/ltx-peer: LiteFS peer vectors not found" \
			"(LTXFS_PEER_DIR=${dir:-unset})" >&2
		[ "${LTXFS_REQUIRE_PEER:-}" = 1 ] && fail "LTXFS_REQUIRE_PEER=1"
		exit 77
	fi
	ltx=$dir/litefs-000000000000000d-000000000000000d.ltx
	db=$dir/litefs-open-and-write-snapshot.db

	expect_rc 0 "$ltxfs" ltx checksum "$db"
	[ "$(cat "$tmp/out")" = fe3831a381c602b9 ] ||
		fail "checksum of the LiteFS database: $(cat "$tmp/out")"

	expect_rc 0 "$ltxfs" ltx verify "$ltx"
	grep -q "ok: TXID 000000000000000d-000000000000000d, 3 pages," \
		"$tmp/out" || fail "verify: $(cat "$tmp/out")"
	grep -q "post-apply fe3831a381c602b9" "$tmp/out" ||
		fail "verify: $(cat "$tmp/out")"

	expect_rc 0 "$ltxfs" ltx dump "$ltx"
	for want in "page size:     4096" "commit:        10" \
		"pre-apply:     9c74a15b4e4f246c" "page count:    3" \
		"post-apply:    fe3831a381c602b9" \
		"file checksum: 9496a29358326fb5" "size:          12420 bytes"; do
		grep -qF "$want" "$tmp/out" || fail "dump lacks \"$want\""
	done

	cp "$ltx" "$tmp/bad.ltx"
	flip "$tmp/bad.ltx" 5000
	expect_rc 1 "$ltxfs" ltx verify "$tmp/bad.ltx"

	# We lack the base it applies to: a database at another position is
	# refused, and left as it was.
	cp "$db" "$tmp/db"
	expect_rc 1 "$ltxfs" ltx apply "$tmp/db" "$ltx"
	grep -q "pre-apply" "$tmp/err" || fail "apply: $(cat "$tmp/err")"
	cmp -s "$db" "$tmp/db" || fail "a refused apply changed the database"
}

case $mode in
roundtrip) roundtrip ;;
peer) peer ;;
*) fail "unknown mode $mode" ;;
esac
echo ok
