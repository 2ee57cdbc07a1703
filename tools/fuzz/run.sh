#!/usr/bin/env bash
# run.sh runs every fuzz target of every package (or of the packages
# given as arguments, e.g. ./proxy/...) for FUZZTIME each, one after
# another, and prints a summary table: package, target, elapsed,
# executions, new interesting inputs, result. It exits non-zero if any
# target fails, naming the failing input that go test wrote under the
# package's testdata/fuzz/<Target>/ (commit it with the fix: it then runs
# as a regression test in every `go test`).
#
# Environment:
#   FUZZTIME          time per target (go test -fuzztime), default 30s
#   FUZZPARALLEL      fuzzing workers per target (go test -parallel);
#                     default GOMAXPROCS
#   FUZZ_LOGDIR       where each target's full output goes; default a
#                     new temporary directory
#   FUZZ_QUIET=1      print only a line per target, not go test's
#                     progress lines every 3 s
#   GO                the go command, default go
#
# Generated inputs accumulate in the Go build cache ($(go env GOCACHE)/fuzz),
# so later runs start from what earlier ones found. The first run of a
# target builds an instrumented test binary, which can take minutes
# before the first "fuzz: elapsed" line: there is no timeout for that.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
LOGDIR=${FUZZ_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/sealproxy-fuzz.XXXXXX")}
mkdir -p "$LOGDIR"
if [ $# -eq 0 ]; then
	set -- ./...
fi

ts() { date -u +%H:%M:%S; }

# Discover the targets: go test -list prints a package's matching names,
# then "ok  <package> <time>" (or "?  <package> [no test files]").
echo "$(ts) fuzz: listing fuzz targets in $* (builds the test binaries)"
list=$LOGDIR/list.txt
if ! "$GO" test -list '^Fuzz' "$@" >"$list" 2>&1; then
	cat "$list" >&2
	echo "fuzz: error: listing the fuzz targets failed (see above)" >&2
	exit 2
fi
pkgs=() targets=() names=()
while IFS= read -r line; do
	case $line in
	Fuzz*) names+=("$line") ;;
	ok* | \?*)
		pkg=$(awk '{print $2}' <<<"$line")
		for n in ${names[@]+"${names[@]}"}; do
			pkgs+=("$pkg")
			targets+=("$n")
		done
		names=()
		;;
	esac
done <"$list"
total=${#targets[@]}
if [ "$total" -eq 0 ]; then
	echo "fuzz: error: no fuzz targets found in $*" >&2
	exit 2
fi
echo "$(ts) fuzz: $total targets, $FUZZTIME each; logs in $LOGDIR"

# Show packages relative to the module: ./proxy, not github.com/....
module=$("$GO" list -m 2>/dev/null || true)
short() {
	if [ -n "$module" ] && [ "$1" = "$module" ]; then
		echo .
	elif [ -n "$module" ] && [ "${1#"$module"/}" != "$1" ]; then
		echo "./${1#"$module"/}"
	else
		echo "$1"
	fi
}

declare -a r_elapsed r_execs r_new r_result r_input
failed=0

summary() {
	local n=${#r_result[@]}
	echo
	echo "fuzz summary ($n of $total targets run, FUZZTIME=$FUZZTIME)"
	printf '%-24s %-26s %8s %12s %5s  %s\n' PACKAGE TARGET ELAPSED EXECS NEW RESULT
	local i
	for ((i = 0; i < n; i++)); do
		printf '%-24s %-26s %8s %12s %5s  %s\n' "$(short "${pkgs[i]}")" "${targets[i]}" \
			"${r_elapsed[i]}" "${r_execs[i]}" "${r_new[i]}" "${r_result[i]}"
	done
	for ((i = 0; i < n; i++)); do
		if [ -n "${r_input[i]}" ]; then
			echo "fuzz: FAIL ${pkgs[i]} ${targets[i]}: failing input ${r_input[i]}"
			echo "fuzz:   re-run: $GO test ${pkgs[i]} -run '^${targets[i]}\$/$(basename "${r_input[i]}")\$' -v"
		elif [ "${r_result[i]#ok}" = "${r_result[i]}" ]; then
			echo "fuzz: FAIL ${pkgs[i]} ${targets[i]}: see $LOGDIR/${targets[i]}.$i.log"
		fi
	done
}
trap 'summary; echo "fuzz: interrupted" >&2; exit 130' INT TERM

for ((i = 0; i < total; i++)); do
	pkg=${pkgs[i]} target=${targets[i]}
	log=$LOGDIR/$target.$i.log
	echo "$(ts) fuzz: [$((i + 1))/$total] $(short "$pkg") $target: building and starting (FUZZTIME=$FUZZTIME)"
	args=("$pkg" -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 1s)
	if [ -n "${FUZZPARALLEL:-}" ]; then
		args+=(-parallel "$FUZZPARALLEL")
	fi
	set +e
	if [ "${FUZZ_QUIET:-}" = 1 ]; then
		"$GO" test "${args[@]}" >"$log" 2>&1
		rc=$?
	else
		"$GO" test "${args[@]}" 2>&1 | tee "$log"
		rc=${PIPESTATUS[0]}
	fi
	set -e
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1 || true)
	if [ -z "$last" ]; then
		last=$(grep -E '^fuzz: elapsed: ' "$log" | tail -n 1 || true)
	fi
	elapsed=- execs=- new=-
	if [ -n "$last" ]; then
		elapsed=$(sed -E 's/^fuzz: elapsed: ([^,]+),.*/\1/' <<<"$last")
		execs=$(sed -nE 's/.*, execs: ([0-9]+).*/\1/p' <<<"$last")
		new=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
		: "${execs:=-}" "${new:=-}"
	fi
	input=
	if [ "$rc" -eq 0 ]; then
		result=ok
		# FUZZTIME ran out while the cached corpus was being replayed:
		# no new input was tried. Say so rather than report 0 executions.
		base=$(grep -E '^fuzz: elapsed: ' "$log" | tail -n 1 | sed -nE 's/.*gathering baseline coverage: ([0-9]+\/[0-9]+).*/\1/p')
		if [ "$execs" = - ] && [ -n "$base" ]; then
			result="ok (baseline only, $base)"
		fi
	elif ! grep -q 'Failing input written to\|failure while testing seed corpus entry' "$log" &&
		grep -qxE '    context deadline exceeded' "$log"; then
		# Go's fuzzing coordinator (go1.26.x) can report its own -fuzztime
		# deadline as a failure when a worker is mid-call as it expires:
		# no input failed and none was written (go.dev/issue/75804, fixed
		# in Go 1.27). A target's own error would carry file:line.
		result="ok (go.dev/issue/75804 at the deadline, no failing input)"
	else
		failed=1
		result=FAIL
		# "Failing input written to testdata/fuzz/FuzzX/0123abcd", relative
		# to the package directory; a failing seed names itself instead.
		rel=$(sed -nE 's/.*Failing input written to ([^ ]+).*/\1/p' "$log" | tail -n 1)
		if [ -n "$rel" ]; then
			dir=$("$GO" list -f '{{.Dir}}' "$pkg" 2>/dev/null || echo "$pkg")
			input=$dir/$rel
			result="FAIL (crasher)"
		elif seed=$(grep -oE 'failure while testing seed corpus entry: [^ ]+' "$log" | tail -n 1) && [ -n "$seed" ]; then
			result="FAIL (seed ${seed##*: })"
		elif [ -z "$last" ]; then
			result="FAIL (did not start)"
		fi
	fi
	r_elapsed[i]=$elapsed r_execs[i]=$execs r_new[i]=$new r_result[i]=$result r_input[i]=$input
	echo "$(ts) fuzz: [$((i + 1))/$total] $(short "$pkg") $target: $result, $execs execs in $elapsed, $new new interesting"
done
trap - INT TERM

summary
if [ "$failed" -ne 0 ]; then
	exit 1
fi
