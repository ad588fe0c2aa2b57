# Spillway. `make up` runs the whole system; `make test` is what CI runs.
# `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO           ?= go
# Static binaries: the same files run on the host and in the images.
GO_BUILD     := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w'
TEST_TIMEOUT ?= 30m
# Packages make test runs (CI: all of them).
PKGS         ?= ./...
# Tests that turn swarm mode on and off (and change the engine's networks
# and iptables as they do) run after the others, one package at a time, so
# that no other test's containers or published ports see that happen.
SWARM_PKGS    = ./internal/swarm ./test/swarm
SWARM_TESTS   = ^TestSwarmStack$$
BENCHTIME    ?= 1s
BENCH_COUNT  ?= 1
FUZZTIME     ?= 30s
CACHE        := .cache
# Packages that have Go benchmarks (found when bench runs).
BENCH_PKGS    = $(shell grep -rl --include='*_test.go' --exclude-dir=.cache --exclude-dir=.git '^func Benchmark' . 2>/dev/null | xargs -r -n1 dirname | sort -u)
# Extra benchmark scripts the other parts provide (run after the Go benchmarks).
BENCH_SCRIPTS ?= $(wildcard scripts/bench-*.sh)

export SPILLWAY_INTEGRATION
# Image tag (scripts/images.sh): .env wins over .env.example; tests read it too.
IMAGE_TAG ?= $(or $(shell sed -n 's/^IMAGE_TAG=//p' .env.example .env 2>/dev/null | tail -n1),latest)
export IMAGE_TAG

.PHONY: help build deps base images render compose-check e2e e2e-stack up down test vet fmt-check bench fuzz clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: ## build every ./cmd/* into bin/ (static, CGO off)
	@mkdir -p bin
	@if ! ls -d cmd/*/ >/dev/null 2>&1; then echo "build: no ./cmd/* yet"; exit 0; fi
	$(GO_BUILD) -o bin/ ./cmd/...
	@ls bin

deps: ## install missing Debian packages (as root) or say what is missing
	@scripts/deps.sh

base: ## make the offline base image spillway-base:bookworm (if absent)
	@scripts/base-image.sh

images: build ## build the worker, localcloud and lb images on BASE_IMAGE or the offline base
	@scripts/images.sh

render: ## render compose.yml from compose.tmpl.yml and .env
	@scripts/render-compose.sh

up: build ## start redis, localcloud and lb (POOL_BACKEND=swarm: as a swarm stack), publish the examples, print next steps
	@scripts/up.sh

down: ## stop and remove the stack, its workers, volumes, networks (and on a swarm its secrets and configs)
	@scripts/down.sh

compose-check: ## render compose.yml and validate it with the compose tool found here
	@scripts/render-compose.sh
	@if docker compose version >/dev/null 2>&1; then docker compose -f compose.yml config -q; else docker-compose -f compose.yml config -q; fi
	@echo "compose.yml: valid"

e2e: build ## the compose stack end to end on its own pool and ports (scripts/e2e-compose.sh)
	@scripts/e2e-compose.sh

e2e-stack: build ## the swarm stack end to end (POOL_BACKEND=swarm SWARM_INIT=1; scripts/e2e-stack.sh)
	@scripts/e2e-stack.sh

vet: ## go vet
	$(GO) vet ./...

fmt-check: ## fail when a Go file is not gofmt-formatted
	@files=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*')); \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi

# test: everything, integration included (SPILLWAY_INTEGRATION=1 turns a missing
# redis-server, Docker or image into a failure instead of a skip). The full log
# goes to .cache/test.log; the failures are repeated at the end so they stay
# visible under long output.
test: SPILLWAY_INTEGRATION = 1
test: deps images compose-check vet fmt-check ## deps, images, compose check, vet, gofmt, go test -race ./... with integration tests
	@mkdir -p $(CACHE)
	@echo "go test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS) (SPILLWAY_INTEGRATION=1)"
	@set +e; pkgs=$$($(GO) list $(PKGS) | grep -v -x -F "$$($(GO) list $(SWARM_PKGS))"); \
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -skip '$(SWARM_TESTS)' $$pkgs 2>&1 | tee $(CACHE)/test.log; \
	status=$${PIPESTATUS[0]}; \
	echo "go test (swarm mode, alone): $(SWARM_PKGS) and $(SWARM_TESTS) in ./test/e2e" | tee -a $(CACHE)/test.log; \
	$(GO) test -race -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(SWARM_PKGS) 2>&1 | tee -a $(CACHE)/test.log; \
	s2=$${PIPESTATUS[0]}; \
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run '$(SWARM_TESTS)' ./test/e2e 2>&1 | tee -a $(CACHE)/test.log; \
	s3=$${PIPESTATUS[0]}; set -e; \
	[ $$status -ne 0 ] || status=$$s2; [ $$status -ne 0 ] || status=$$s3; \
	echo "----- go test summary (full log: $(CACHE)/test.log) -----"; \
	grep -E '^(ok |FAIL|panic:)|^[[:space:]]*--- FAIL' $(CACHE)/test.log || true; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (go test exit $$status)"; exit $$status; fi; \
	echo "make test: PASS"

bench: SPILLWAY_INTEGRATION = 1
bench: deps images ## Go benchmarks of every package that has them, then scripts/bench-*.sh
	@pkgs="$(BENCH_PKGS)"; if [ -z "$$pkgs" ]; then echo "bench: no benchmarks yet"; else \
	echo "go test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCH_COUNT) $$pkgs"; \
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCH_COUNT) -timeout 30m $$pkgs; fi
	@for s in $(BENCH_SCRIPTS); do echo "== $$s"; bash $$s; done

fuzz: ## fuzz the XML-RPC request decoder for FUZZTIME (default 30s)
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCall$$' -fuzztime $(FUZZTIME) ./internal/xmlrpc

clean: ## remove bin/, .cache/, compose.yml and stack.yml (images stay; make down removes containers)
	rm -rf bin $(CACHE) compose.yml stack.yml
