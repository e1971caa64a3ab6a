#!/usr/bin/env bash
# Every test of the project, one exit code: the lint gates, then the edge build and the tests.
# Called by `make test` after setup.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Gates first: they fail in seconds where the tests take minutes.
log "gates: cargo fmt --check, clippy -D warnings (native, and the edge for wasm32)"
cargo fmt --all --check || die "code is not formatted: run cargo fmt --all"
cargo clippy -q --workspace --all-targets -- -D warnings
with_wasm_toolchain cargo clippy -q -p stagecast-edge --target wasm32-unknown-unknown --release -- -D warnings

"$ROOT/scripts/edge-build.sh"

log "shared crate for wasm32 (both sides of the wire use it)"
with_wasm_toolchain cargo build -q -p stagecast-shared --target wasm32-unknown-unknown --release

export STAGECAST_ORT_DYLIB="$ORT_DYLIB" STAGECAST_MODELS_DIR="$MODELS_DIR"
export STAGECAST_SAMPLES_DIR="$SAMPLES_DIR" STAGECAST_REF_PYTHON="$REF_PYTHON"
log "Rust tests: unit, property, and end to end against the real edge in workerd"
# The end-to-end tests run the node binary, which Cargo builds only for compute's own tests.
cargo build -q -p stagecast-node
cargo test --workspace --no-fail-fast

# The drift tests above keep docs/openapi/ equal to the Rust types; this checks the documents
# against OpenAPI 3.1 and redocly's recommended rules (redocly.yaml). No telemetry or update
# check: CI may be offline.
log "OpenAPI documents (redocly lint)"
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  redocly lint docs/openapi/edge.json docs/openapi/node.json

compgen -G "client/test/*.test.mjs" >/dev/null || die "no browser client tests found in client/test/"
log "browser client unit tests (node --test)"
node --test client/test/*.test.mjs
