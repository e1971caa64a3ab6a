# Shared shell helpers for the Makefile's scripts. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Slow installs live outside the clone so a second run (or a second clone) reuses them.
CACHE="${STAGECAST_CACHE:-$HOME/.cache/stagecast}"
TOOLS="$CACHE/tools"
ORT_VERSION="1.32.0"
ORT_DYLIB="$CACHE/onnxruntime/$ORT_VERSION/libonnxruntime.so.$ORT_VERSION"
MODELS_DIR="$CACHE/models"
SAMPLES_DIR="$CACHE/samples"
# The Python reference (scripts/reference.py) runs in this venv's python.
REF_PYTHON="$CACHE/reference/venv/bin/python"
WASM_LINKER=/usr/lib/llvm-19/bin/wasm-ld

log() { printf '\033[1;34m[stagecast]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[stagecast] error:\033[0m %s\n' "$*" >&2; exit 1; }

# A developer laptop with rustup's wasm32 target uses it; elsewhere Debian's rustc-web
# with a self-built std (see setup.sh) builds the edge.
has_rustup_wasm() {
  command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown
}

# The wasm32 builds get their own target dir: Debian's rustc is another compiler than
# rustup's, and its host crates (proc macros) in target/release break rustup's release
# builds there (E0514).
WASM_TARGET_DIR="$ROOT/target/wasm"

# Runs a command with the toolchain that targets wasm32.
with_wasm_toolchain() {
  if has_rustup_wasm; then
    CARGO_TARGET_DIR="$WASM_TARGET_DIR" "$@"
  else
    PATH="/usr/bin:$PATH" CARGO_TARGET_DIR="$WASM_TARGET_DIR" \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WASM_LINKER" "$@"
  fi
}

# The version of a crate as resolved in Cargo.lock.
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' \
    "$ROOT/Cargo.lock"
}

export PATH="$TOOLS/bin:$ROOT/node_modules/.bin:$PATH"

# The dev tenant's HS256 secret: STAGECAST_DEV_SECRET when set, else one generated once into
# the git-ignored .dev.vars (where wrangler dev also reads it). Exported either way.
ensure_dev_secret() {
  local vars="$ROOT/.dev.vars"
  if [ -z "${STAGECAST_DEV_SECRET:-}" ]; then
    if ! grep -q '^STAGECAST_DEV_SECRET=' "$vars" 2>/dev/null; then
      (umask 077; printf 'STAGECAST_DEV_SECRET=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$vars")
      log "generated a dev secret into .dev.vars"
    fi
    STAGECAST_DEV_SECRET="$(sed -n 's/^STAGECAST_DEV_SECRET=//p' "$vars" | tail -n 1)"
  fi
  export STAGECAST_DEV_SECRET
}
