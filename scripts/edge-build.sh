#!/usr/bin/env bash
# Builds the edge Worker with worker-build, offline: every tool it would download comes
# from setup.sh instead (docs/toolchain.md, "2. worker-build and wasm-bindgen").
source "$(dirname "$0")/lib.sh"
cd "$ROOT/edge"
log "building the edge (wasm32, release)"
WASM_BINDGEN_BIN="$TOOLS/bin/wasm-bindgen" ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild" \
  with_wasm_toolchain worker-build --release --no-opt

