# monitoring-rs: the commands a developer and CI run.
CARGO ?= cargo
DOCKER ?= docker
TMPDIR ?= /tmp
KUBECTL ?= kubectl
# Where `make kuberun` pushes the image, e.g. registry.example.com/team.
DOCKER_REGISTRY ?=
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
IMAGE = $(DOCKER_REGISTRY)/monitoring-rs:$(VERSION)
# The folder `make run` tails (a small sample ships with the repository).
ROOT ?= sample-logs

.PHONY: build run test ui-test ui bench-ui lint fuzz bench bench-collector bench-store bench-api bench-cluster dockertest kuberun kubecleanup

build:
	$(CARGO) build --release --locked

# Collects $(ROOT) with the directory collector into the store in .data and
# serves it on localhost:8000.
run:
	$(CARGO) run --release --locked -- --log-collector directory --root-path $(ROOT) --data-directory .data --listen 127.0.0.1:8000

# Formatting, lints, a few-second run of every `make bench` scenario
# (correctness only), each fuzz target for a bounded time, then every test
# (each test in its own process).
test: lint
	BENCH_SMOKE=1 $(CARGO) bench --locked --profile dev --bench node
	BENCH_SMOKE=1 $(CARGO) bench --locked --profile dev --bench cluster
	scripts/fuzz.sh
	$(CARGO) nextest run --locked --workspace --no-fail-fast
	$(MAKE) ui-test

# The page in headless Chromium against the real binary (web/tests), after
# checking that web/dist is what web/src builds; screenshots go to
# target/ui-screenshots/. Needs Node.js and Debian's chromium.
ui-test:
	$(CARGO) build --locked --workspace --bins
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs --check && npm test

# The page with 100,000 lines in headless Chromium: time to the lines,
# script heap, scroll; target/bench/ui.json.
bench-ui:
	$(CARGO) build --locked --release
	cd web && npm ci --no-audit --no-fund --loglevel=error && MONITORING_RS_BIN=../target/release/monitoring-rs node bench.mjs

# Rebuilds the page's bundle (web/dist, embedded in the binary).
ui:
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

# Each fuzz target (LogQL, runtime log lines, HTTP parameters) for
# FUZZ_SECONDS (45) seconds; see scripts/fuzz.sh.
fuzz:
	scripts/fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Tails a generated ~1 GiB CRI corpus from the head and prints throughput.
bench-collector:
	$(CARGO) bench --locked --bench collector

# Ingests ~10M generated entries into a fresh store, then opens and queries it.
bench-store:
	$(CARGO) bench --locked --bench store

# The real binary tailing 50k lines/s while 50 clients query it.
bench-api:
	$(CARGO) bench --locked --bench api

# Three daemons on 127.0.0.21-23 with the busy node's load split over
# them, 20 clients querying through one: the cluster's answers against one
# node's (a third of the data); target/bench/cluster.json.
bench-cluster:
	$(CARGO) bench --locked --bench cluster

# What monitoring-rs costs on a node: quiet, busy (with queries) and
# catch-up scenarios on a stand-in node; target/bench/report.json and busy.svg.
bench:
	$(CARGO) bench --locked --bench node

# The test suite and clippy inside the build image (needs a Docker engine).
dockertest:
	$(DOCKER) compose run --rm test
	$(DOCKER) compose run --rm lint

# Build and push the image, deploy the DaemonSet, wait for it, follow its logs.
# Needs a Docker engine, a registry the cluster can pull from, and kubectl
# pointed at the cluster.
kuberun:
	@test -n "$(DOCKER_REGISTRY)" || { echo "set DOCKER_REGISTRY, e.g. make kuberun DOCKER_REGISTRY=registry.example.com/team"; exit 2; }
	$(DOCKER) build -t $(IMAGE) .
	$(DOCKER) push $(IMAGE)
	sed 's|image: monitoring-rs:latest|image: $(IMAGE)|' deploy/kubernetes.yaml | $(KUBECTL) apply -f -
	@# The API serves HTTPS from this Secret; a self-signed one if there is none
	@# yet (use cert-manager for a real one, see the README).
	$(KUBECTL) -n monitoring-rs get secret monitoring-rs-tls >/dev/null 2>&1 || { \
	  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=monitoring-rs \
	    -addext "subjectAltName=DNS:monitoring-rs.monitoring-rs.svc,DNS:localhost,IP:127.0.0.1" \
	    -keyout $(TMPDIR)/monitoring-rs-tls.key -out $(TMPDIR)/monitoring-rs-tls.crt && \
	  $(KUBECTL) -n monitoring-rs create secret generic monitoring-rs-tls --type=kubernetes.io/tls \
	    --from-file=tls.crt=$(TMPDIR)/monitoring-rs-tls.crt --from-file=tls.key=$(TMPDIR)/monitoring-rs-tls.key \
	    --from-file=ca.crt=$(TMPDIR)/monitoring-rs-tls.crt; }
	$(KUBECTL) -n monitoring-rs rollout status daemonset/monitoring-rs --timeout=180s
	$(KUBECTL) -n monitoring-rs logs -f daemonset/monitoring-rs

# Remove everything kuberun created.
kubecleanup:
	$(KUBECTL) delete -f deploy/kubernetes.yaml --ignore-not-found
