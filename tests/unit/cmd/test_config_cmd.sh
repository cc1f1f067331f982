#!/bin/sh
# `ltxfs config` end to end: --defaults loads back and prints the same
# values, the token is redacted, errors name file, line and key.
# Usage: test_config_cmd.sh LTXFS
set -eu
ltxfs=$1
case $ltxfs in /*) ;; *) ltxfs=$(pwd)/$ltxfs ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
values() { grep -v '^ *#' "$1" | grep -v '^$'; }

"$ltxfs" config --defaults >"$tmp/defaults.yml"
"$ltxfs" config -c "$tmp/defaults.yml" >"$tmp/effective.yml"
values "$tmp/defaults.yml" >"$tmp/a"
values "$tmp/effective.yml" >"$tmp/b"
cmp -s "$tmp/a" "$tmp/b" || fail "--defaults does not load back the same"
head -1 "$tmp/effective.yml" | grep -q "defaults.yml" ||
	fail "effective config does not name its file"

printf 'http:\n  token: hunter2\n' >"$tmp/token.yml"
out=$("$ltxfs" config --config "$tmp/token.yml")
case $out in *hunter2*) fail "token printed" ;; esac
case $out in *'token: "<redacted>"'*) ;; *) fail "token not redacted" ;; esac

: >"$tmp/empty.yml"
out=$(LTXFS_TOKEN=envtok "$ltxfs" config -c "$tmp/empty.yml")
case $out in *envtok*) fail "env token printed" ;; esac
case $out in *'token: "<redacted>"'*) ;; *) fail "LTXFS_TOKEN ignored" ;; esac

printf 'fuse:\n  dir: /x\n\n  dirr: x\n' >"$tmp/bad.yml"
if "$ltxfs" config -c "$tmp/bad.yml" >/dev/null 2>"$tmp/err"; then
	fail "bad config accepted"
fi
grep -qF "bad.yml:4: unknown key \"fuse.dirr\"" "$tmp/err" ||
	fail "unexpected error: $(cat "$tmp/err")"

set +e
"$ltxfs" config -c "$tmp/missing.yml" >/dev/null 2>&1
[ $? -eq 1 ] || fail "missing file: exit code"
"$ltxfs" config --bogus >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad argument: exit code"
set -e

mkdir "$tmp/cwd"
printf 'fuse:\n  dir: /from-cwd\n' >"$tmp/cwd/ltxfs.yml"
out=$(cd "$tmp/cwd" && "$ltxfs" config)
case $out in *'dir: "/from-cwd"'*) ;; *) fail "./ltxfs.yml not found" ;; esac
echo ok
