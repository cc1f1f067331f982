#!/bin/sh
# Nothing in the project ends processes by name: a user's machine runs its
# own etcd (and anything else), and `pkill -x etcd` in a script would end
# it. Scripts and tests stop what they started, by PID. Fails naming each
# line of a script, test or source file that calls pkill or killall.
# Usage: test_no_kill_by_name.sh SOURCE_ROOT
set -eu
root=$1
self=tests/unit/scripts/test_no_kill_by_name.sh
cd "$root"
hits=$(find . -path ./.git -prune -o -path './build*' -prune -o \
	-path ./docs -prune -o -type f \
	\( -name '*.sh' -o -name '*.py' -o -name '*.c' -o -name '*.h' -o \
	   -name 'Dockerfile*' -o -name '*.yml' -o -name '*.yaml' -o \
	   -path './scripts/*' -o -path './.ci/*' -o -path './deploy/*' -o \
	   -path './tests/soak/*' \) -print |
	grep -v "^\./$self\$" |
	xargs grep -nE '(^|[^A-Za-z_-])(pkill|killall)([^A-Za-z_-]|$)' \
		/dev/null || true)
if [ -n "$hits" ]; then
	echo "FAIL: processes ended by name (stop them by PID):" >&2
	echo "$hits" >&2
	exit 1
fi
echo "ok: no pkill/killall in scripts, tests or sources"
