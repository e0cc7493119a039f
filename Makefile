# longhaul. `make` (or `make help`) lists the targets; each says what it does
# after its `##`. Variables can be set on the command line: make test PKGS=./wal/...

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
PKGS      ?= ./...
TIMEOUT   ?= 20m
BENCH     ?= .
BENCHTIME ?= 1x
FUZZTIME  ?= 30s

.PHONY: help test test-race lint generate check-generate bench bench-any fuzz faults

help: ## list the targets
	@echo 'usage: make <target> [PKGS=./... TIMEOUT=$(TIMEOUT) BENCH=$(BENCH) BENCHTIME=$(BENCHTIME) FUZZTIME=$(FUZZTIME)]'
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

test: ## run the tests (a throwaway PostgreSQL starts on its own; or set LONGHAUL_TEST_DATABASE_URL)
	$(GO) test -count=1 -timeout $(TIMEOUT) $(PKGS)

test-race: ## run the tests with the race detector
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

lint: ## gofmt, go vet and staticcheck (pinned in go.mod as a tool)
	@unformatted=$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l); \
	if [ -n "$$unformatted" ]; then echo "lint: not gofmt'ed (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

generate: ## regenerate api/ from the .proto files (needs protoc: apt-get install -y protobuf-compiler)
	scripts/generate.sh

check-generate: ## fail if the generated files in api/ differ from what `make generate` writes
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	scripts/generate.sh "$$tmp"; \
	stale=$$( \
		cd "$$tmp" && find . -type f | sort | while read -r f; do \
			cmp -s "$$f" "$(CURDIR)/api/$$f" || echo "  api/$${f#./}"; \
		done; \
		cd "$(CURDIR)" && find api -type f \( -name '*.pb.go' -o -name '*.pb.gw.go' -o -name '*.swagger.json' \) | sort | while read -r f; do \
			[ -e "$$tmp/$${f#api/}" ] || echo "  $$f (no longer generated)"; \
		done); \
	if [ -n "$$stale" ]; then echo "check-generate: stale generated files, run make generate and commit them:"; echo "$$stale"; exit 1; fi; \
	echo "check-generate: api/ is up to date"

bench: ## run the benchmarks the README quotes (about 20 minutes; see README "Benchmarks")
	$(GO) test -run '^$$' -bench BenchmarkApply -benchtime 1x -timeout 30m ./primary/
	$(GO) test -run '^$$' -bench BenchmarkAppend -benchtime 2s -count 3 ./wal/
	$(GO) test -run '^$$' -bench BenchmarkPushLatency -benchtime 3000x ./edge/
	LONGHAUL_BENCH_INSIGHTS=600000 $(GO) test -run '^$$' -bench BenchmarkShipRTT -benchtime 1x -count 3 ./edge/
	$(GO) test -run '^$$' -bench BenchmarkSeedSituation -benchtime 1x -timeout 30m ./edge/
	$(GO) test -run '^$$' -bench BenchmarkRegionBudgets -benchtime 1x ./edge/
	$(GO) test -run '^$$' -bench BenchmarkPipeline -benchtime 1x -timeout 30m ./checker/
	LONGHAUL_BENCH_MIXED=1 LONGHAUL_BENCH_SCAN_TIME=200ms LONGHAUL_BENCH_BIG_SCAN_TIME=30s $(GO) test -run '^$$' -bench BenchmarkWritepath -benchtime 1x -timeout 30m ./bench/writepath/
	LONGHAUL_BENCH_MIXED=1 $(GO) test -run '^$$' -bench BenchmarkWritepath -benchtime 1x -timeout 30m ./bench/writepath/

faults: ## the fault matrix, long form (LONGHAUL_FAULTS_LONG=1, -race; about 7 minutes on 2 idle cores)
	LONGHAUL_FAULTS_LONG=1 $(GO) test -race -count=1 -timeout 40m -v ./internal/faults/

bench-any: ## run the benchmarks matching BENCH in PKGS, BENCHTIME each
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -timeout $(TIMEOUT) $(PKGS)

fuzz: ## run every Fuzz target, one after another, each for FUZZTIME
	@found=0; \
	while read -r pkg dir; do \
		for target in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*\*testing\.F\).*/\1/p' "$$dir"/*_test.go 2>/dev/null); do \
			found=1; echo "fuzz: $$pkg $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done < <($(GO) list -f '{{.ImportPath}} {{.Dir}}' $(PKGS)); \
	[ "$$found" = 1 ] || echo "fuzz: no Fuzz targets in $(PKGS)"
