SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Pinned tool versions (installed once per machine into $(ADRANK_CACHE)/tools, linked as bin/tools).
BUF_VERSION          := v1.75.0
PROTOC_GEN_GO        := v1.36.12
PROTOC_GEN_GO_GRPC   := v1.6.0
GRPC_GATEWAY_VERSION := v2.33.0
GRPCURL_VERSION      := v1.9.4

# Built tools live in a per-machine cache outside the clone, keyed by version,
# so that every clone on a machine (CI makes a fresh one each run) builds them
# once: the Consul agent takes minutes to build, buf about two.
ADRANK_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/adrank
CONSUL_VERSION := v1.13.9
TOOLS   := $(ADRANK_CACHE)/tools
MODULES := gen platform ml featuresvc rankersvc auctionsvc routersvc sim gateway adrankctl bench e2e examples/backend devbroker edge
BINARIES := featuresvc rankersvc auctionsvc routersvc gateway adrankctl devbroker
# A consul on PATH wins; otherwise the cached build of tools/consul (v1.13.9,
# MPL-2.0), linked as bin/consul.
CONSUL  := $(or $(shell command -v consul 2>/dev/null),$(CURDIR)/bin/consul)
export CONSUL_BIN := $(CONSUL)

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: run
run: build consul ## Build everything and start the demo pipeline (Ctrl-C stops it)
	CONSUL=$(CONSUL) scripts/run.sh

.PHONY: test
test: build consul redis kcat tools checkgenerate lint alerts unit simtest fuzz e2e bench-smoke ## Run every check and test (what CI runs)

.PHONY: build
build: $(addprefix bin/,$(BINARIES)) edge-scorer ## Build the service binaries, adrankctl and the edge scorer into bin/

# The edge scorer: the browser's module (GOOS=js) with the wasm_exec.js of the
# Go that built it, and the wasip1 build for other runtimes.
.PHONY: edge-scorer
edge-scorer:
	mkdir -p bin/edge
	GOOS=js GOARCH=wasm go build -trimpath -ldflags=-s -o bin/edge/scorer.wasm ./edge/cmd/scorer
	cp "$$(go env GOROOT)/lib/wasm/wasm_exec.js" bin/edge/wasm_exec.js
	GOOS=wasip1 GOARCH=wasm go build -trimpath -ldflags=-s -o bin/edge/scorer-wasip1.wasm ./edge/cmd/scorer-wasi

bin/%: FORCE
	go build -o $@ ./$*/cmd/$*

# The floor chain of make bench: the pipeline's topology with empty handlers.
bin/floorsvc: FORCE
	go build -o $@ ./bench/cmd/floorsvc

# make bench's filler of a router's store (#16: flat with state).
bin/statefill: FORCE
	go build -o $@ ./routersvc/cmd/statefill

.PHONY: FORCE
FORCE:

.PHONY: unit
unit: ## Unit and integration tests of every module with -race (Consul- and Redis-backed ones start real servers)
	go test -count=1 -race $$(go list $(addsuffix /...,$(addprefix ./,$(filter-out e2e,$(MODULES)))) | grep -v '/routersvc/internal/simtest$$')

.PHONY: sim
sim: ## Longer simulations (verbose simulator suite; results in docs/simulations.md). Against a live router: go run ./sim/cmd/adranksim
	go test -count=1 -v -timeout 30m ./routersvc/internal/simtest/ 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL)|sim_test.go'
	go test -count=1 -v -run 'TestGuardrailsAreAnytimeValid|TestAAFalsePositivesByMetric' ./routersvc/internal/lab/ 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL)|guard_test.go'
	go test -count=1 -v -run 'TestDropAlwaysValidP|TestCUPED|TestAlwaysValidPUnderTheNull' ./routersvc/internal/stats/ 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL)|_test.go'
	go test -count=1 -v -run '^$$' -bench BenchmarkRegret -benchtime 1x ./routersvc/internal/lab/ 2>&1 | grep -E '^\s+(regret|K|[0-9]+) ' 

.PHONY: simtest
simtest: ## The simulator's statistical tests (A/A, lift, bandits, interleaving, canary), without -race for speed
	go test -count=1 -timeout 30m ./routersvc/internal/simtest/

# A count of executions, not a duration: when a duration runs out, Go 1.26's fuzz
# coordinator can fail a target with a spurious "context deadline exceeded"
# (golang/go#75804, fixed in Go 1.27). 150000 runs take 4-20 s per target here.
FUZZTIME ?= 150000x
# package:target pairs; `make fuzz` runs each briefly, seeds in testdata/fuzz are kept.
FUZZ_TARGETS := ./auctionsvc/auction:FuzzAuction ./auctionsvc/auction:FuzzAuctionExtremes ./ml/model:FuzzParse \
  ./platform/experiment:FuzzParse ./auctionsvc/internal/config:FuzzParse ./routersvc/internal/routing:FuzzParseConfig \
  ./routersvc/internal/router:FuzzRankRequestJSON ./routersvc/internal/router:FuzzEventsJSON ./routersvc/internal/store:FuzzReadImpression

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME executions (150000x)
	for t in $(FUZZ_TARGETS); do go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}" || exit 1; done

BENCH_FLAGS ?= --duration 3s --runs 3 --rates 250,500,1000,2000

.PHONY: bench
bench: build bin/floorsvc bin/statefill consul ## Pipeline benchmark as separate processes: writes BENCHMARKS.md's table and docs/latency.svg
	go run ./bench/cmd/adrankbench $(BENCH_FLAGS)

.PHONY: bench-batch
bench-batch: ## Batch job against XGBoost's two-thread scoring on the demo universe (needs python3-xgboost); prints a table for BENCHMARKS.md
	scripts/bench-batch.sh

.PHONY: bench-edge
bench-edge: ## Edge budgets in a real browser: bundle size, load to first ranking, per-candidate time against native (needs chromium)
	scripts/bench-edge.sh

.PHONY: bench-smoke
bench-smoke: build bin/floorsvc bin/statefill consul ## A short run of the pipeline benchmark that proves it works (part of make test)
	go run ./bench/cmd/adrankbench --smoke

.PHONY: bench-scoring
bench-scoring: ## Scoring benchmark against XGBoost (needs python3-xgboost); prints a table for BENCHMARKS.md
	scripts/bench-scoring.sh

.PHONY: e2e
e2e: build consul tools ## End-to-end tests: Consul and every service as real processes
	go test -count=1 -timeout 30m ./e2e/...

.PHONY: e2e-stress
e2e-stress: build consul tools ## The e2e tests while stress-ng loads one core (installs Debian's stress-ng)
	@command -v stress-ng >/dev/null || { echo "installing stress-ng (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null; }
	stress-ng --cpu 1 --timeout 900s --quiet & pid=$$!; status=0; \
	  go test -count=1 -timeout 30m ./e2e/... || status=$$?; \
	  kill $$pid 2>/dev/null || true; wait $$pid 2>/dev/null || true; exit $$status

.PHONY: lint
lint: ## gofmt, go vet, and each module builds on its own
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\(\.gw\)\?\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet $(addsuffix /...,$(addprefix ./,$(MODULES)))
	for m in $(MODULES); do (cd $$m && GOWORK=off go build -o /dev/null ./... ) || exit 1; done

.PHONY: alerts
alerts: ## Check the Prometheus alert rules and run their unit tests (promtool, Debian's prometheus package)
	@command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus (.ci/run does)"; exit 1; }
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

PYTHON := /usr/bin/python3

.PHONY: models
models: ## Retrain the demo models and XGBoost parity data (needs Debian's python3-xgboost)
	@$(PYTHON) -c 'import xgboost' 2>/dev/null || { echo "models needs Debian's python3-xgboost: apt-get install -y python3-xgboost"; exit 1; }
	go run ./ml/cmd/trainmodels -step prepare -out models -logs .cache/logs
	$(PYTHON) ml/python/train_xgb.py --logs .cache/logs --out models --testdata ml/model/testdata
	go run ./ml/cmd/trainmodels -step eval -out models

.PHONY: generate
generate: tools ## Regenerate gen/ from proto/
	rm -rf gen/adrank gen/openapi/*.json
	PATH=$(TOOLS):$$PATH $(TOOLS)/buf generate

.PHONY: checkgenerate
checkgenerate: tools ## Fail when buf lint or the generated code is not clean
	$(TOOLS)/buf lint
	@before=$$(mktemp -d); cp -a gen/. "$$before"; \
	  $(MAKE) generate >/dev/null; \
	  if ! diff -r "$$before" gen >/dev/null; then \
	    echo "generated code is out of date: run make generate"; diff -rq "$$before" gen; rm -rf "$$before"; exit 1; fi; \
	  rm -rf "$$before"; echo "generated code is up to date"

.PHONY: tools
tools: $(TOOLS)/.buf-$(BUF_VERSION) $(TOOLS)/.protoc-gen-go-$(PROTOC_GEN_GO) \
  $(TOOLS)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC) $(TOOLS)/.grpc-gateway-$(GRPC_GATEWAY_VERSION) \
  $(TOOLS)/.grpcurl-$(GRPCURL_VERSION) ## Install the pinned tools (once per machine), linked as bin/tools
	@mkdir -p bin && ln -sfn $(TOOLS) bin/tools

$(TOOLS)/.buf-%:
	GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$*
	touch $@
$(TOOLS)/.protoc-gen-go-%:
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$*
	touch $@
$(TOOLS)/.protoc-gen-go-grpc-%:
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$*
	touch $@
$(TOOLS)/.grpc-gateway-%:
	GOBIN=$(TOOLS) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$* \
	  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$*
	touch $@
$(TOOLS)/.grpcurl-%:
	GOBIN=$(TOOLS) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$*
	touch $@

.PHONY: consul
consul: ## Make a consul agent available (PATH, else build v1.13.9 once per machine, linked as bin/consul)
	@if [ "$(CONSUL)" = "$(CURDIR)/bin/consul" ]; then \
	  cached=$(ADRANK_CACHE)/consul-$(CONSUL_VERSION)/consul; \
	  if [ ! -x "$$cached" ]; then \
	    echo "building consul $(CONSUL_VERSION) into $$cached (3-6 minutes, once per machine)"; \
	    (cd tools/consul && GOWORK=off go build -o "$$cached.tmp" github.com/hashicorp/consul) && mv "$$cached.tmp" "$$cached"; \
	  fi; \
	  mkdir -p bin && ln -sfn "$$cached" bin/consul; \
	fi
	@$(CONSUL) version | sed -n 1p

.PHONY: redis
redis: ## Make redis-server available (Debian's package) for the state store tests
	@command -v redis-server >/dev/null || { echo "installing redis-server (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version | cut -d' ' -f1-3

.PHONY: kcat
kcat: ## Make kcat available (Debian's package): the streaming e2e test's outside Kafka client
	@command -v kcat >/dev/null || { echo "installing kcat (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }
	@kcat -V | head -1

.PHONY: clean
clean: ## Remove built binaries (keeps the cached tools and Consul)
	rm -f $(addprefix bin/,$(BINARIES)) bin/floorsvc
