#!/usr/bin/env bash
# The Windows suite (make test-windows): every package's Windows test binary
# under Wine, then the service under Wine's service manager
# (TestServiceUnderWine). tools/wine/README.md says why each workaround
# below exists and when it can go.
#
#   tools/wine/run.sh                every package that builds for Windows, then the service
#   tools/wine/run.sh PACKAGES       those packages only
#   tools/wine/run.sh service        the service test only
#   GOTESTFLAGS=-v tools/wine/run.sh more go test flags for the package tests
#
# Without Wine it skips with a warning, unless CI=true or
# SEALPROXY_REQUIRE_INTEROP=1: then a missing Wine is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

missing=()
for tool in wine wineserver wineboot x86_64-w64-mingw32-as x86_64-w64-mingw32-dlltool x86_64-w64-mingw32-ld; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  msg="test-windows: ${missing[*]} not found (Debian: apt-get install wine wine64 binutils-mingw-w64-x86-64)"
  if [ "${CI:-}" = true ] || [ "${SEALPROXY_REQUIRE_INTEROP:-}" = 1 ]; then
    echo "$msg" >&2
    exit 1
  fi
  echo "$msg; skipping the Windows suite (CI=true or SEALPROXY_REQUIRE_INTEROP=1 make this a failure)" >&2
  exit 0
fi

start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/sealproxy-wine.XXXXXX")
export WINEPREFIX="$work/prefix" WINEARCH=win64 WINEDEBUG="${WINEDEBUG:--all}"
# No Mono or Gecko: nothing here needs .NET or HTML, and their installers
# would wait for a click.
export WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() {
  wineserver -k >/dev/null 2>&1 || true
  wineserver -w >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The stand-in bcryptprimitives.dll (Wine 8 has none; Go calls its ProcessPrng).
dll="$work/dll"
mkdir -p "$dll"
x86_64-w64-mingw32-as -o "$dll/prng.o" tools/wine/dll/bcryptprimitives.s
x86_64-w64-mingw32-dlltool -d tools/wine/dll/advapi32.def -l "$dll/libadvapi32.a"
x86_64-w64-mingw32-dlltool -d tools/wine/dll/bcryptprimitives.def -e "$dll/exports.o"
x86_64-w64-mingw32-ld --dll --no-insert-timestamp -e DllMain --subsystem windows \
  -o "$dll/bcryptprimitives.dll" "$dll/prng.o" "$dll/exports.o" "$dll/libadvapi32.a"

# 3. A persistent wineserver before wineboot: one started on demand by
# `wine` inherits go test's output pipes and outlives the test binary, so
# go test waits for it. Its own output goes nowhere for the same reason.
mkdir -p "$WINEPREFIX"
wineserver -p </dev/null >/dev/null 2>&1
if ! wineboot --init </dev/null >"$work/wineboot.log" 2>&1; then
  cat "$work/wineboot.log" >&2
  echo "test-windows: wineboot --init failed" >&2
  exit 1
fi
cp "$dll/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
# Right after wineboot --init, a service created by `service install` was
# at times unknown to `sc start` (1060) or started without ever reporting
# (1053); in a prefix whose server had been restarted it never was.
# So restart the server once, and start the service manager.
wineserver -k >/dev/null 2>&1 || true
wineserver -w >/dev/null 2>&1 || true
wineserver -p </dev/null >/dev/null 2>&1
wine sc query Eventlog </dev/null >/dev/null 2>&1 || true

# 2. The overlay that makes os.RemoveAll fall back under Wine. The go
# command will not replace files beneath GOMODCACHE, where GOTOOLCHAIN
# keeps the toolchain, so the go command runs from a symbolic link to it,
# at a fixed path so that the build cache keeps the standard library.
goroot=$(GOOS= GOARCH= "$GO" env GOROOT)
link="$PWD/.tools/wine/goroot-$(basename "$goroot")"
mkdir -p "$(dirname "$link")"
ln -sfn "$goroot" "$link"
overlay=$("$GO" run ./tools/wine/overlay -goroot "$link" -out "$PWD/.tools/wine/overlay")
wgo() { GOROOT="$link" GOTOOLCHAIN=local GOOS=windows GOARCH=amd64 "$link/bin/go" "$@"; }

service=1
pkgs=()
if [ $# -eq 0 ]; then
  mapfile -t pkgs < <(wgo list ./...)
elif [ "$*" != service ]; then
  pkgs=("$@")
  service=0
fi
echo "test-windows: ${#pkgs[@]} packages under $(wine --version) (prefix ready after $(($(date +%s) - start))s)"
status=0
if [ ${#pkgs[@]} -gt 0 ]; then
  # shellcheck disable=SC2086 # GOTESTFLAGS (e.g. -v or -run X) is split on purpose
  wgo test -count=1 -timeout 10m ${GOTESTFLAGS:-} -overlay "$overlay" -exec "$PWD/tools/wine/exec.sh" "${pkgs[@]}" || status=1
fi

# The service under Wine's SCM, driven from the Linux side.
if [ $service = 1 ]; then
  wgo build -o "$work/sealproxy.exe" ./cmd/sealproxy
  SEALPROXY_WINE_SEALPROXY="$work/sealproxy.exe" "$GO" test -count=1 -timeout 5m \
    -run 'TestServiceUnderWine' -v ./tools/wine/ || status=1
fi
echo "test-windows: $(($(date +%s) - start))s"
exit $status
