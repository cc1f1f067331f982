#!/bin/sh
# No merge conflict markers are left in the source tree (sources, tests,
# scripts, docs). Fails naming each line.
# Usage: test_no_conflict_markers.sh SOURCE_ROOT
set -eu
cd "$1"
hits=$(find . -path ./.git -prune -o -path './build*' -prune -o -type f \
	-print | xargs grep -nE '^(<<<<<<< |>>>>>>> |=======$)' /dev/null \
	2>/dev/null | grep -v '^\./tests/unit/scripts/test_no_conflict' || true)
if [ -n "$hits" ]; then
	echo "FAIL: merge conflict markers:" >&2
	echo "$hits" >&2
	exit 1
fi
echo "ok: no merge conflict markers"
