#!/bin/sh
# go test -exec for GOOS=windows: runs one test binary under Wine (tools/wine/run.sh
# has set up WINEPREFIX and its wineserver). The Linux toolchain's variables are
# dropped: a Windows process cannot use a Linux GOROOT.
unset GOROOT GOTOOLCHAIN GOFLAGS GOPATH GOCACHE GOMODCACHE GOENV
export SEALPROXY_UNDER_WINE=1
exec wine "$@"
