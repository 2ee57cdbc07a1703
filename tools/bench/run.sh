#!/bin/sh
# run.sh: sealproxy side by side with haproxy, stunnel and a minimal Go
# terminator (make bench-compare). Terminators run pinned to CPU 0, the
# load client and backend (this harness) to CPU 1; everything stays on
# 127.0.0.1 and stops by itself. Needs Linux, taskset, and the Debian
# packages haproxy and stunnel4. Extra arguments go to `bench compare`
# (e.g. -reps 5, -only "sealproxy sealed,haproxy"). Not run in CI.
set -eu
cd "$(dirname "$0")/../.."
GO=${GO:-go}
for tool in taskset haproxy stunnel4; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install -y util-linux haproxy stunnel4)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# SEALPROXY: the binary under test (default: make build's).
SEALPROXY=${SEALPROXY:-$(pwd)/bin/sealproxy}
[ -x "$SEALPROXY" ] || { echo "run.sh: $SEALPROXY missing: run make build" >&2; exit 1; }
"$GO" build -o "$tmp/" ./tools/bench ./tools/minterm
# HARNESS_CPUS: where the load client and backend run (1; with -cpus 0,1,
# where the terminators then run too, 0,1).
taskset -c "${HARNESS_CPUS:-1}" "$tmp/bench" compare -sealproxy "$SEALPROXY" -minterm "$tmp/minterm" "$@"
