# monitoring-rs: the commands a developer and CI run.
CARGO ?= cargo
# The folder `make run` tails (a small sample ships with the repository).
ROOT ?= sample-logs

.PHONY: build run test lint bench-collector bench-store bench-api

build:
	$(CARGO) build --release --locked

# Tails $(ROOT) with the directory collector and prints every line as JSON.
run:
	$(CARGO) run --release --locked -- --log-collector directory --root-path $(ROOT) --data-directory .data --output stdout

# Formatting, lints, then every test (each test in its own process).
test: lint
	$(CARGO) nextest run --locked --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Tails a generated ~1 GiB CRI corpus from the head and prints throughput.
bench-collector:
	$(CARGO) bench --locked --bench collector

# Ingests ~10M generated entries into a fresh store, then opens and queries it.
bench-store:
	$(CARGO) bench --locked --bench store

# The real binary tailing 50k lines/s while 50 clients query it.
bench-api:
	$(CARGO) bench --locked --bench api
