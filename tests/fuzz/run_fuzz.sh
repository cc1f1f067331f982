#!/bin/sh
# Runs a libFuzzer target for a while over a copy of its corpus, so the
# source tree is never written to (libFuzzer adds new inputs to the first
# corpus directory). Crashes are written to WORK/artifacts/; keep the
# input in tests/fuzz/regressions/ once the bug is fixed.
#
# Usage: run_fuzz.sh FUZZER SECONDS SEED_DIR REGRESSIONS_DIR WORK_DIR
set -eu
fuzzer=$1
seconds=$2
seeds=$3
regressions=$4
work=$5

rm -rf "$work/corpus"
mkdir -p "$work/corpus" "$work/artifacts"
for f in "$seeds"/* "$regressions"/*; do
	[ -f "$f" ] || continue
	case ${f##*/} in .*) continue ;; esac
	cp "$f" "$work/corpus/"
done
# A crash must fail the test: libFuzzer's own error exit code, 77, is
# what meson reads as "skipped".
exec "$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
	-error_exitcode=1 -timeout_exitcode=1 \
	-max_len=65536 -print_final_stats=1 \
	-artifact_prefix="$work/artifacts/" "$work/corpus"
