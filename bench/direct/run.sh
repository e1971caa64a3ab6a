#!/usr/bin/env bash
# Benchmark only: serves the built edge (edge/build, `make edge-build`) in one workerd through
# Miniflare, without the dev-proxy workerd that `wrangler dev` puts in front of it (see
# serve.mjs). State goes to a fresh temp dir, removed on exit.
#   bench/direct/run.sh PORT [NAME=VALUE ...]     (NAME=VALUE: the Worker's vars)
set -euo pipefail
PORT=${1:?usage: run.sh PORT [NAME=VALUE ...]}
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ ! -f "$ROOT/edge/build/worker/shim.mjs" ]; then
  echo "the edge is not built: run make edge-build first" >&2
  exit 1
fi
export PATH="$ROOT/node_modules/.bin:$PATH"
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
# One socket per subscriber here; workerd inherits the limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STATE=$(mktemp -d "${TMPDIR:-/tmp}/stagecast-direct.XXXXXX")
NODE_PID=
trap 'kill $NODE_PID 2>/dev/null || true; wait $NODE_PID 2>/dev/null || true; rm -rf "$STATE"' EXIT
trap 'exit 143' INT TERM
cd "$ROOT"
node "$ROOT/bench/direct/serve.mjs" "$PORT" "$STATE" "$@" &
NODE_PID=$!
# node runs in the background and the script waits on it, so a signal to this shell runs
# the trap at once (bash defers traps while a foreground child runs).
wait "$NODE_PID"
