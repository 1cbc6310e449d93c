# slotscaler developer workflow. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash

GO ?= go
BENCHTIME ?= 3s
FUZZTIME ?= 60s

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Compile every package
	$(GO) build ./...

# One build configuration for every binary: packages shared by the
# binaries (and the standard library) compile once, in one go build.
BUILD = CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/

.PHONY: binaries
binaries: ## Static, trimmed binaries of scaler, agent (+ its slotscaler-supervisor) and dashboard in bin/ (what the Dockerfile builds)
	$(BUILD) ./scaler ./agent ./cmd/slotscaler-supervisor ./dashboard

.PHONY: demo
demo: ## The whole system locally, in the foreground: embedded Redis, scaler, janitor + fake kubelet on an in-memory Kubernetes API, KEDA/HPA maths, two pools under load, dashboard on http://127.0.0.1:8080/ (Ctrl-C stops; DEMO_ARGS=--help)
	@echo "make demo: building scaler, agent, dashboard and demo into bin/ (first build: about 3 minutes on 2 cores; later runs start in seconds)"
	@$(BUILD) ./scaler ./agent ./cmd/slotscaler-supervisor ./dashboard ./demo
	./bin/demo $(DEMO_ARGS)

.PHONY: test
test: ## The whole test suite: installs redis-server and chromium if missing, private Redis servers, vet + tests in every module (real kube-apiserver, KEDA client, Helm, browser), mutation runs, generated-code check
	./scripts/test.sh

.PHONY: bench
bench: ## Benchmarks on real redis-servers (started privately): slot store cycles vs trivial EVALSHA and vs the floor under them (the cycle's round trips alone; plus only its writes), one agent's claim and complete latency (p50/p99) under that cycle load, the slowest call of each script on a 1,000-pod pool with 10,000 queued, a janitor pass over a 1,000-pod pool at rest (full vs rest), stats, KEDA polls, the history recorder per tick, a metrics scrape of 1,000 pools (own read vs the recorder's), the webhook notifier at rest (100 and 1,000 pools: commands, round trips, Redis CPU per second), agent overhead, page render, live viewers and one live tick over a 1,000-pod pool at rest (full vs change token), capacity math
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./pkg/slots/ ./pkg/capacity/ ./pkg/history/ ./pkg/poolmetrics/ ./scaler/ ./agent/ ./pkg/executor/ ./dashboard/
	$(GO) test -run '^$$' -bench JanitorPassAtRest -benchtime 20x ./pkg/janitor/
	$(GO) test -run '^$$' -bench NotifierAtRest -benchtime 60x ./pkg/notify/

.PHONY: bench-kube
bench-kube: ## Janitor benchmark on a real kube-apiserver: 1,000-pod pool at the chart's QPS/burst (create, idle reconcile, remove 500)
	cd test/kube && $(GO) test -run '^$$' -bench Janitor1000Pods -benchtime 1x .

SCALE ?= 1
SCALE_PHASE ?= 30
SCALE_LOG ?= /tmp/slotscaler-bench-scale.log
.PHONY: bench-scale
bench-scale: ## Sizing run (docs/sizing.md) on a private 3-node Redis Cluster: 1,000 pools, 100,000 pods, 300k slots, 100k queued, finished tasks, heartbeats at the real rate, scaler, reaper, janitor resyncs (full and at rest), dashboard; SCALE=0.1 for a 10% run, SCALE_PHASE seconds per measured window (full log: SCALE_LOG)
	@echo "make bench-scale: SCALE=$(SCALE), $(SCALE_PHASE)s windows, log in $(SCALE_LOG) (full scale: about 5 minutes on 2 cores)"
	@cd test/scale && env -u SLOTSCALER_TEST_REDIS_CLUSTER_ADDRS SLOTSCALER_SCALE_RUN=1 SLOTSCALER_SCALE=$(SCALE) \
		SLOTSCALER_SCALE_PHASE_SECONDS=$(SCALE_PHASE) $(GO) test -v -count=1 -run '^TestScale$$' -timeout 0 . >$(SCALE_LOG) 2>&1 \
		|| { tail -n 60 $(SCALE_LOG); exit 1; }
	@sed -n '/^## Sizing run/,/^whole run/p' $(SCALE_LOG)

SEED ?= 20261203
DURATION ?= 30m
.PHONY: soak
soak: ## The fault-injection run (test/kube TestFaults) for one seed, longer: make soak SEED=20261203 DURATION=30m (odd seeds include Redis data loss)
	cd test/kube && SLOTSCALER_FAULTS_SEEDS=$(SEED) SLOTSCALER_FAULTS_DURATION=$(DURATION) $(GO) test -count=1 -run '^TestFaults$$' -v -timeout 0 .

.PHONY: fuzz
fuzz: ## Fuzz the slot store against its Go model and the capacity math (FUZZTIME each)
	$(GO) test -run '^$$' -fuzz FuzzStoreMatchesModel -fuzztime $(FUZZTIME) ./pkg/slots/
	$(GO) test -run '^$$' -fuzz FuzzDesired -fuzztime $(FUZZTIME) ./pkg/capacity/

.PHONY: lint
lint: ## gofmt and go vet (also with the mutation build tag)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags slotsmutants ./pkg/slots/

.PHONY: tidy
tidy: ## go mod tidy in every module (nested test modules replace the root: tidy them after its go.mod changes)
	@for m in $$(find . -name go.mod -not -path './.git/*' -exec dirname {} \;); do echo "tidy $$m"; (cd $$m && $(GO) mod tidy) || exit 1; done

.PHONY: screenshot
screenshot: ## Write docs/dashboard.png: a busy pool page in headless chromium (apt-get install chromium; starts a private redis-server)
	$(GO) test -tags screenshot -run '^TestWriteScreenshot$$' -count=1 ./dashboard/

.PHONY: generate
generate: ## Regenerate generated code and docs (templ components, AgentPool deepcopy and CRD, docs/configuration.md; committed and checked by make test)
	$(GO) tool templ generate
	$(GO) tool controller-gen object paths=./pkg/apis/... crd:generateEmbeddedObjectMeta=true paths=./pkg/apis/... output:crd:artifacts:config=charts/slotscaler/crds
	$(GO) run ./scripts/crdtrim -under spec.template charts/slotscaler/crds/slotscaler.io_agentpools.yaml
	./scripts/config-reference.sh
