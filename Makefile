# sealproxy: the README's two commands are `make demo` and `make test`.
GO ?= go

.PHONY: demo test vet lint build build-all fuzz soak bench

# demo runs the main job on embedded defaults: nothing beyond Go is needed.
demo:
	$(GO) run ./tools/demo

# test is what CI runs (see .ci/run: SEALPROXY_REQUIRE_INTEROP=1 makes the
# interop tests mandatory, TEST_FUZZTIME=2m fuzzes every parser for two
# minutes, VULNCHECK_REQUIRED=1 fails when no vulnerability database can be
# reached). The short soak (tools/soak) runs as part of `go test`.
TEST_FUZZTIME ?= 0
test: vet build-all lint
	$(GO) test -race -count=1 ./...
	# the key-handling packages again as the binaries are built (make build)
	GOEXPERIMENT=runtimesecret $(GO) test -count=1 ./unlock/... ./vault/... ./cmd/sealproxy/ ./cmd/sealgate/
	@if [ "$(TEST_FUZZTIME)" != 0 ]; then $(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME); fi

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...

# build makes the binaries in bin/. They are built with runtime/secret:
# only then are the standard library's copies of a key erased after a
# signature (see docs/benchmarks.md, "Key custody").
build:
	GOEXPERIMENT=runtimesecret $(GO) build -o bin/ ./cmd/...

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

# lint: staticcheck for every build variant, and govulncheck. vuln.go.dev
# may be out of reach (no network); then VULNDB names a local copy of the
# database (a directory of OSV files, or a v1 database), default
# /var/cache/sealproxy/vulndb/osv. With neither, the check is skipped with
# a warning, or fails when VULNCHECK_REQUIRED=1.
STATICCHECK_VERSION = v0.8.2
GOVULNCHECK_VERSION = v1.9.0
STATICCHECK = .tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck
GOVULNCHECK = .tools/govulncheck-$(GOVULNCHECK_VERSION)/govulncheck
VULNDB ?= /var/cache/sealproxy/vulndb/osv
$(STATICCHECK):
	GOBIN=$(CURDIR)/$(@D) GOOS= GOARCH= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(GOVULNCHECK):
	GOBIN=$(CURDIR)/$(@D) GOOS= GOARCH= $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
lint: $(STATICCHECK) $(GOVULNCHECK)
	$(STATICCHECK) ./...
	CGO_ENABLED=0 $(STATICCHECK) ./...
	GOOS=windows $(STATICCHECK) ./...
	@tools/vulncheck.sh "$(GOVULNCHECK)" "$(VULNDB)"

bench:
	$(GO) test ./... -run '^$$' -bench . -benchmem

# bench-compare runs sealproxy side by side with haproxy, stunnel and a
# minimal Go terminator (tools/bench/run.sh; Linux, needs the Debian
# packages haproxy and stunnel4; not run in CI). ARGS go to `bench compare`.
.PHONY: bench-compare
bench-compare: build
	tools/bench/run.sh $(ARGS)
