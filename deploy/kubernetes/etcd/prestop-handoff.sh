#!/bin/sh
# preStop hook of an ltxfs pod with the etcd lease: if this node is the
# primary, hand the lease to another candidate (POST /handoff,
# docs/PROTOCOL.md "Handoff") before Kubernetes sends SIGTERM, so that a
# new primary takes writes while this pod's application is still shutting
# down. The primary drains its replicas first: no acknowledged write is
# lost. A replica answers 409 and nothing happens. If the hook fails (or
# the image has no curl), SIGTERM still drains and revokes the lease.
# The answer goes to ltxfs's output (PID 1), so it is in the pod's log.
# The token is read by curl from its standard input, not from its
# command line.
printf 'header = "Authorization: Bearer %s"\n' "${LTXFS_TOKEN:-}" |
	curl -sS -m 15 -K - -X POST -w ' (HTTP %{http_code})\n' \
	    http://127.0.0.1:20202/handoff >/proc/1/fd/1 2>&1
exit 0
