# pbxguard — build and test.
#
#   make test    everything CI runs: deps (as root), format, vet, staticcheck,
#                unit tests, bounded fuzz smoke, e2e (root + PBXGUARD_E2E=1)
#   make bench   benchmarks with allocations (not part of make test)
#   make build   the static binary in ./bin/pbxguard (version from scripts/version.sh)
#   make release static binaries for linux/amd64 and linux/arm64 in dist/, with SHA256SUMS
#   make deb     dist/pbxguard_<version>_<arch>.deb (dpkg-deb; no download)

SHELL     := /bin/bash
GO        ?= go
BIN       := bin/pbxguard
FUZZTIME  ?= 5s
STATICCHECK_VERSION := v0.8.2

VERSION   ?= $(shell scripts/version.sh)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell git show -s --format=%cI HEAD 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
VPKG      := github.com/pbxguard/pbxguard/internal/version
LDFLAGS   := -s -w -X $(VPKG).version=$(VERSION) -X $(VPKG).commit=$(COMMIT) -X $(VPKG).date=$(DATE)
ARCHES    ?= amd64 arm64

.PHONY: all build release deb test unit e2e fuzz lint deps bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pbxguard

release:
	@mkdir -p dist
	@for a in $(ARCHES); do \
	  echo "build linux/$$a"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/pbxguard_$(VERSION)_linux_$$a ./cmd/pbxguard || exit 1; \
	done
	cd dist && sha256sum pbxguard_$(VERSION)_linux_* > SHA256SUMS && cat SHA256SUMS

deb:
	scripts/mkdeb.sh '$(VERSION)'

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
	rm -rf bin dist
