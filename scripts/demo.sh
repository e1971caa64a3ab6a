#!/usr/bin/env bash
# The whole thing, locally: the edge in workerd (wrangler dev), then as much of the pipeline
# as exists. Stays in the foreground with the edge up until Ctrl-C; STAGECAST_DEMO_EXIT=1
# stops once the sample analysis is done (for scripts).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

port="${STAGECAST_EDGE_PORT:-8787}"
edge="http://127.0.0.1:$port"
mkdir -p target/demo
ensure_dev_secret

log "starting the edge on $edge (log: target/demo/edge.log)"
WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false setsid wrangler dev --config wrangler.toml \
  --ip 127.0.0.1 --port "$port" --persist-to "${STAGECAST_STATE_DIR:-.wrangler/state}" \
  --show-interactive-dev-session=false --var "STAGECAST_DEV_SECRET:$STAGECAST_DEV_SECRET" \
  >target/demo/edge.log 2>&1 &
edge_pid=$!
trap 'kill -- -$edge_pid 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 150); do
  curl -fs "$edge/healthz" >/dev/null 2>&1 && break
  kill -0 "$edge_pid" 2>/dev/null || die "the edge exited; see target/demo/edge.log"
  sleep 0.2
done
curl -fs "$edge/healthz" >/dev/null || die "the edge did not answer on $edge; see target/demo/edge.log"
log "edge is up: $edge/healthz answers"

log "not built yet: the compute node (issue 5) and the dashboard (issue 6); nothing to analyse"
if [ "${STAGECAST_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
log "the edge stays up until Ctrl-C"
wait "$edge_pid"
