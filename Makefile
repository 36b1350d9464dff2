# pbxguard — build and test.
#
#   make test    everything CI runs: deps (as root), format, vet, staticcheck,
#                unit tests, bounded fuzz smoke, e2e (root + PBXGUARD_E2E=1)
#   make bench   benchmarks with allocations (not part of make test)
#   make build   the binary in ./bin/pbxguard

SHELL     := /bin/bash
GO        ?= go
BIN       := bin/pbxguard
FUZZTIME  ?= 5s
STATICCHECK_VERSION := v0.8.2

.PHONY: all build test unit e2e fuzz lint deps bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pbxguard

deps:
	@scripts/deps.sh

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; \
	  elif [ -x "$$($(GO) env GOPATH)/bin/staticcheck" ]; then "$$($(GO) env GOPATH)/bin/staticcheck" ./...; \
	  else echo "staticcheck not installed: run 'make deps' (or go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION))"; exit 1; fi

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz-smoke.sh

e2e: build
	$(GO) test -count=1 -timeout 40m ./e2e/...

test: deps lint unit fuzz e2e

bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /e2e)

clean:
	rm -rf bin
