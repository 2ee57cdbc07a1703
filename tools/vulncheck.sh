#!/usr/bin/env bash
# vulncheck.sh GOVULNCHECK VULNDB: run govulncheck on every package (Linux
# and Windows builds) against the first vulnerability database it can
# reach: vuln.go.dev, else VULNDB (a local directory: OSV files, or a v1
# database). Without either it warns and succeeds, unless
# VULNCHECK_REQUIRED=1. Found vulnerabilities in called code always fail.
set -euo pipefail
govulncheck=$1
local_db=$2

db=""
if curl -sfI -m 10 -o /dev/null https://vuln.go.dev/index/modules.json.gz 2>/dev/null; then
  db=https://vuln.go.dev
elif [ -d "$local_db" ]; then
  db=file://$(cd "$local_db" && pwd)
  echo "govulncheck: vuln.go.dev is out of reach; using the local copy $local_db ($(find "$local_db" -name '*.json' | wc -l) entries, dated $(date -r "$local_db" +%F))"
fi

if [ -z "$db" ]; then
  msg="govulncheck: no vulnerability database reachable (vuln.go.dev is out of reach and $local_db does not exist); hint: set VULNDB to a directory of OSV files from golang/vulndb (data/osv)"
  if [ "${VULNCHECK_REQUIRED:-0}" = 1 ]; then
    echo "$msg" >&2
    exit 1
  fi
  echo "warning: $msg; not checked" >&2
  exit 0
fi

# shellcheck disable=SC2086 # GOVULNCHECK may be a command with arguments
$govulncheck -db "$db" ./...
GOOS=windows $govulncheck -db "$db" ./...
