#!/usr/bin/env bash
# Starts the PartyServer peer: `wrangler dev` (the repo's wrangler, so the same workerd as
# the edge) on 127.0.0.1:PORT in the foreground, state in a fresh temp dir removed on exit.
# Installs its npm packages into ./node_modules first, idempotently. Usage: run.sh PORT
set -euo pipefail
PORT=${1:?usage: run.sh PORT}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export PATH="$ROOT/node_modules/.bin:$PATH"
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

cd "$HERE"
if [ ! -f node_modules/partyserver/package.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
fi

# One socket per subscriber here; workerd inherits the limit through wrangler.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

INSPECTOR_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
STATE=$(mktemp -d "${TMPDIR:-/tmp}/stagecast-peer-partyserver.XXXXXX")
WRANGLER_PID=
trap 'kill $WRANGLER_PID 2>/dev/null || true; rm -rf "$STATE"' EXIT
trap 'exit 143' INT TERM
"$ROOT/node_modules/.bin/wrangler" dev --config "$HERE/wrangler.toml" \
  --ip 127.0.0.1 --port "$PORT" --persist-to "$STATE" --inspector-port "$INSPECTOR_PORT" \
  --show-interactive-dev-session=false --log-level warn &
WRANGLER_PID=$!
# wrangler runs in the background and the script waits on it, so a signal to this shell
# runs the trap at once (bash defers traps while a foreground child runs).
wait "$WRANGLER_PID"
