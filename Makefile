# sealproxy: the README's two commands are `make demo` and `make test`.
GO ?= go

.PHONY: demo test vet build build-all fuzz bench interop

# demo runs the main job on embedded defaults: nothing beyond Go is needed.
demo:
	$(GO) run ./tools/demo

# test is what CI runs (with SEALPROXY_REQUIRE_INTEROP=1, see .ci/run).
test: vet build-all
	$(GO) test -race -count=1 ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...

build:
	$(GO) build ./...

# build-all builds every variant the build tags allow: cgo and not, Linux
# and Windows, with and without runtime/secret.
build-all:
	$(GO) build ./...
	CGO_ENABLED=0 $(GO) build ./...
	GOOS=windows GOARCH=amd64 $(GO) build ./...
	GOEXPERIMENT=runtimesecret $(GO) build ./...

# fuzz runs each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./unlock -run '^$$' -fuzz '^FuzzParseJWE$$' -fuzztime $(FUZZTIME)
	$(GO) test ./unlock/tang -run '^$$' -fuzz '^FuzzParseAdvertisement$$' -fuzztime $(FUZZTIME)
	$(GO) test ./unlock/tang -run '^$$' -fuzz '^FuzzParseJWK$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test ./unlock/... -run '^$$' -bench . -benchmem
