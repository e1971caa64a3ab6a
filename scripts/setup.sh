#!/usr/bin/env bash
# Installs everything the project needs, idempotently. Every step checks before it works,
# so a second run on the same machine takes seconds. See ../README.md, "Prerequisites".
source "$(dirname "$0")/lib.sh"

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing Debian packages: ${missing[*]} (install them by hand)"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then $sudo apt-get update -q >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. A toolchain that targets wasm32 (docs/toolchain.md, "1. A Rust toolchain that targets wasm32").
setup_wasm_toolchain() {
  if has_rustup_wasm; then log "wasm32: rustup target present"; return; fi
  # rust-web-clippy: the lint gate of make test checks the edge for wasm32 too
  apt_install rustc-web cargo-web rust-web-src rust-web-clippy lld-19
  local sysroot; sysroot="$(/usr/bin/rustc --print sysroot)"
  local libdir="$sysroot/lib/rustlib/wasm32-unknown-unknown/lib"
  if compgen -G "$libdir/libstd-*.rlib" >/dev/null; then log "wasm32: std present"; return; fi
  log "wasm32: building std from Debian's rust-web-src (about 2 minutes, once)"
  local crate="$CACHE/wasm-std"
  mkdir -p "$crate/src"
  printf '[package]\nname = "wasm_std_seed"\nversion = "0.0.0"\nedition = "2021"\n[lib]\ncrate-type = ["rlib"]\n[workspace]\n' >"$crate/Cargo.toml"
  : >"$crate/src/lib.rs"
  (cd "$crate" && PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$crate/target" \
    cargo build -q --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort)
  local sudo=""; [ -w "$sysroot/lib/rustlib" ] || sudo="sudo"
  $sudo mkdir -p "$libdir"
  find "$crate/target/wasm32-unknown-unknown/release/deps" -name '*.rlib' ! -name 'libwasm_std_seed-*' \
    -exec $sudo cp {} "$libdir/" \;
}

# 2. worker-build and wasm-bindgen-cli at the versions Cargo.lock pins (docs/toolchain.md, "2. worker-build and wasm-bindgen").
cargo_tool() { # crate version binary
  if [ -x "$TOOLS/bin/$3" ] && "$TOOLS/bin/$3" --version 2>/dev/null | grep -qF "$2"; then
    log "$1 $2 present"; return
  fi
  log "installing $1 $2 into $TOOLS (slow, once: minutes)"
  # The tool's own lockfile may name a crate version the registry mirror lacks
  # (wasm-bindgen-cli 0.2.130 does): then resolve afresh.
  cargo install -q --locked --force --root "$TOOLS" "$1" --version "=$2" 2>/dev/null ||
    cargo install -q --force --root "$TOOLS" "$1" --version "=$2"
}
setup_cargo_tools() {
  cargo_tool worker-build "$(locked_version worker)" worker-build
  cargo_tool wasm-bindgen-cli "$(locked_version wasm-bindgen)" wasm-bindgen
}

# 3. wrangler, workerd, esbuild, Node 22 and playwright-core from package-lock.json.
setup_npm() {
  local stamp="$ROOT/node_modules/.stagecast-lock"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$ROOT/package-lock.json"; then log "npm packages present"; return; fi
  log "installing npm packages from package-lock.json"
  # `npm ci` refuses this lockfile: the registry mirror omits other platforms' optional
  # workerd packages from it. `npm install` honours the locked versions all the same.
  (cd "$ROOT" && npm install --no-audit --no-fund --loglevel=error)
  cp "$ROOT/package-lock.json" "$stamp"
}

# 4. The ONNX Runtime shared library (CPU) from PyPI's wheel (docs/toolchain.md, "5. ONNX Runtime, offline").
pypi_extract() { # package==version member destination
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: "$1" -d "$tmp" >/dev/null
  mkdir -p "$(dirname "$3")"
  python3 - "$tmp"/*.whl "$2" "$3.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$3.part" "$3"
  rm -rf "$tmp"
}
setup_onnxruntime() {
  if [ -f "$ORT_DYLIB" ]; then log "onnxruntime $ORT_VERSION present"; return; fi
  log "fetching onnxruntime $ORT_VERSION from PyPI"
  pypi_extract "onnxruntime==$ORT_VERSION" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_DYLIB"
}

# 5. The demo model, a real pretrained one, from a PyPI package (docs/toolchain.md, "6. Models from registry packages").
setup_models() {
  local det="$MODELS_DIR/ch_PP-OCRv4_det_infer.onnx"
  if [ -f "$det" ]; then log "models present"; return; fi
  log "fetching the PP-OCRv4 text detection model from PyPI (rapidocr-onnxruntime)"
  pypi_extract "rapidocr-onnxruntime==1.4.4" "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx" "$det"
}

# 6. Media decoding, the browser for the pages' tests, and promtool.
setup_debian_tools() {
  # prometheus: its promtool checks the node's /metrics
  apt_install ffmpeg chromium chromium-driver fonts-dejavu-core prometheus
}

mkdir -p "$CACHE"
setup_debian_tools
setup_wasm_toolchain
setup_npm
setup_onnxruntime
setup_models
setup_cargo_tools
log "setup complete"
