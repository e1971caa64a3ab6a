#!/usr/bin/env bash
# Every test of the project, one exit code. Called by `make test` after setup and the edge build.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

log "shared crate for wasm32 (both sides of the wire use it)"
with_wasm_toolchain cargo build -q -p stagecast-shared --target wasm32-unknown-unknown --release

export STAGECAST_ORT_DYLIB="$ORT_DYLIB" STAGECAST_MODELS_DIR="$MODELS_DIR"
log "Rust tests: unit, property, and end to end against the real edge in workerd"
cargo test --workspace --no-fail-fast

if compgen -G "client/test/*.test.mjs" >/dev/null; then
  log "browser client unit tests (node --test)"
  node --test client/test/*.test.mjs
fi
