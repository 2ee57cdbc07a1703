# sealproxy: the README's two commands are `make demo` and `make test`.
GO ?= go

.PHONY: demo test vet build build-all fuzz bench interop

# demo runs the main job on embedded defaults: nothing beyond Go is needed.
demo:
	$(GO) run ./tools/demo

# test is what CI runs (with SEALPROXY_REQUIRE_INTEROP=1, see .ci/run).
test: vet build-all
	$(GO) test -race -count=1 ./...
	# the key-handling packages again as the binaries are built (make build)
	GOEXPERIMENT=runtimesecret $(GO) test -count=1 ./unlock/... ./vault/... ./cmd/sealproxy/

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

# fuzz runs every fuzz target of every package for FUZZTIME each.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test $$pkg -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s || exit 1; \
	  done; \
	done

bench:
	$(GO) test ./... -run '^$$' -bench . -benchmem

# bench-compare runs sealproxy side by side with haproxy, stunnel and a
# minimal Go terminator (tools/bench/run.sh; Linux, needs the Debian
# packages haproxy and stunnel4; not run in CI). ARGS go to `bench compare`.
.PHONY: bench-compare
bench-compare: build
	tools/bench/run.sh $(ARGS)
