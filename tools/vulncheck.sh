#!/usr/bin/env bash
# vulncheck.sh GOVULNCHECK VULNDB_VERSION [VULNDB]: run govulncheck on every
# package (Linux and Windows builds) against the Go vulnerability database.
# The database is golang.org/x/vulndb at VULNDB_VERSION, fetched through
# the Go module proxy like any module (its data/osv directory is what
# govulncheck reads as file://), so the check needs no other network and
# gives the same answer on every machine until the pin is bumped. VULNDB,
# when set, names another directory of OSV files instead. A vulnerability
# in code we call fails; one in a module we require but do not call is
# reported and passes (govulncheck's own rule).
set -euo pipefail
govulncheck=$1
version=$2
local_db=${3:-}
GO=${GO:-go}

if [ -z "$local_db" ]; then
  if ! dir=$("$GO" mod download -json "golang.org/x/vulndb@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || [ -z "$dir" ]; then
    echo "govulncheck: error: fetching golang.org/x/vulndb@$version through the Go module proxy failed" >&2
    echo "govulncheck: hint: check GOPROXY, or set VULNDB to a directory of OSV files (golang/vulndb's data/osv)" >&2
    exit 1
  fi
  local_db=$dir/data/osv
fi
if [ ! -d "$local_db" ]; then
  echo "govulncheck: error: $local_db is not a directory of OSV files" >&2
  exit 1
fi
echo "govulncheck: database $local_db ($(find "$local_db" -name '*.json' | wc -l) entries)"
db=file://$(cd "$local_db" && pwd)
$govulncheck -db "$db" ./...
GOOS=windows $govulncheck -db "$db" ./...
