# sealproxy: the README's two commands are `make demo` and `make test`.
GO ?= go
# The toolchain: Go 1.27.3 fixes standard-library vulnerabilities that
# 1.26.x binaries reach (crypto/tls, crypto/x509, net/http). The go command
# fetches it through the module proxy. Set GOTOOLCHAIN yourself to override.
export GOTOOLCHAIN ?= go1.27.3

.PHONY: demo test test-windows vet lint build build-all fuzz soak bench package test-systemd

# demo runs the main job on embedded defaults: nothing beyond Go is needed.
demo:
	$(GO) run ./tools/demo

# test is what CI runs (see .ci/run: SEALPROXY_REQUIRE_INTEROP=1 makes the
# interop tests mandatory, TEST_FUZZTIME fuzzes every parser for that long
# after the tests). The short soak (tools/soak) runs as part of `go test`.
TEST_FUZZTIME ?= 0
test: vet build-all lint test-windows
	$(GO) test -race -count=1 ./...
	# the key-handling packages again as the binaries are built (make build)
	GOEXPERIMENT=runtimesecret $(GO) test -count=1 ./internal/... ./unlock/... ./vault/... ./cmd/sealproxy/ ./cmd/sealgate/
	$(MAKE) --no-print-directory test-systemd
	@if [ "$(TEST_FUZZTIME)" != 0 ]; then $(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME); fi

# test-windows runs every package's Windows test binary under Wine, then
# the service under Wine's service manager (tools/wine/README.md). Without
# Wine it skips with a warning, unless CI=true or SEALPROXY_REQUIRE_INTEROP=1
# (then it fails). No -race: the race detector does not run under Wine.
test-windows:
	GO="$(GO)" tools/wine/run.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...

# build makes the binaries in bin/. They are built with runtime/secret:
# only then are the standard library's copies of a key erased after a
# signature (see docs/benchmarks.md, "Key custody").
build:
	GOEXPERIMENT=runtimesecret $(GO) build -o bin/ ./cmd/...

# package builds dist/: sealproxy_VERSION_amd64.deb and _arm64.deb (nfpm,
# docs/packaging/nfpm.yaml) and sealproxy_VERSION_windows-amd64.zip, each
# binary built with runtime/secret, -trimpath and the version stamped;
# then checks them (tools/release). VERSION defaults to the git tag, or
# 0.0.0~gitDATE.HASH. See docs/packaging/README.md.
NFPM_VERSION = v2.48.0
NFPM = .tools/nfpm-$(NFPM_VERSION)/nfpm
VERSION ?=
$(NFPM):
	GOBIN=$(CURDIR)/$(@D) GOOS= GOARCH= $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
package: $(NFPM)
	$(GO) run ./tools/release -out dist -nfpm $(NFPM) -version "$(VERSION)"

# test-systemd boots systemd as PID 1 in systemd-nspawn (Debian
# systemd-container) on a volatile overlay of this machine's root, with a
# private network, installs the .deb and drives the units with systemctl
# (tools/systemd/test.sh, docs/systemd.md). Needs root; skips without
# nspawn unless CI=true or SEALPROXY_REQUIRE_INTEROP=1, where it fails.
test-systemd: package
	tools/systemd/test.sh dist/sealproxy_*_$$(dpkg --print-architecture 2>/dev/null || echo amd64).deb

# build-all builds every variant the build tags allow: cgo and not, Linux
# and Windows, with and without runtime/secret.
build-all:
	$(GO) build ./...
	CGO_ENABLED=0 $(GO) build ./...
	GOOS=windows GOARCH=amd64 $(GO) build ./...
	GOEXPERIMENT=runtimesecret $(GO) build ./...

# fuzz runs every fuzz target of every package for FUZZTIME each and
# prints a table of executions (tools/fuzz/run.sh).
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) tools/fuzz/run.sh

# soak is the full reliability suite (docs/reliability.md): 9,000 held
# connections, floods, silent and slow clients, hostile bytes, against the
# real binary. Its short form runs in `make test`. Linux only.
soak:
	$(GO) run ./tools/soak $(ARGS)

# lint: staticcheck for every build variant, and govulncheck against the
# Go vulnerability database at a pinned version, which the module proxy
# serves as the module golang.org/x/vulndb (its data/osv). A vulnerability
# in code we call fails the check. To take newer advisories, bump
# VULNDB_VERSION (docs/reliability.md, "Vulnerability scan"). VULNDB may
# name another directory of OSV files instead.
STATICCHECK_VERSION = v0.8.2
GOVULNCHECK_VERSION = v1.9.0
VULNDB_VERSION = v0.0.0-20261105234957-e22db6528018
STATICCHECK = .tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck
GOVULNCHECK = .tools/govulncheck-$(GOVULNCHECK_VERSION)/govulncheck
VULNDB ?=
$(STATICCHECK):
	GOBIN=$(CURDIR)/$(@D) GOOS= GOARCH= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(GOVULNCHECK):
	GOBIN=$(CURDIR)/$(@D) GOOS= GOARCH= $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
lint: $(STATICCHECK) $(GOVULNCHECK)
	$(STATICCHECK) ./...
	CGO_ENABLED=0 $(STATICCHECK) ./...
	GOOS=windows $(STATICCHECK) ./...
	@GO="$(GO)" tools/vulncheck.sh "$(GOVULNCHECK)" "$(VULNDB_VERSION)" "$(VULNDB)"

bench:
	$(GO) test ./... -run '^$$' -bench . -benchmem

# bench-compare runs sealproxy side by side with haproxy, stunnel and a
# minimal Go terminator (tools/bench/run.sh; Linux, needs the Debian
# packages haproxy and stunnel4; not run in CI). ARGS go to `bench compare`.
.PHONY: bench-compare
bench-compare: build
	tools/bench/run.sh $(ARGS)
