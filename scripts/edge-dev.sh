#!/usr/bin/env bash
# Serves the edge alone in workerd (through wrangler dev), in the foreground.
# Honours the variables of the contract's "Running the edge alone" table (see README).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

port="${STAGECAST_EDGE_PORT:-8787}"
state="${STAGECAST_STATE_DIR:-.wrangler/state}"
ensure_dev_secret
args=(dev --config wrangler.toml --ip 127.0.0.1 --port "$port" --persist-to "$state"
      --show-interactive-dev-session=false)
for var in STAGECAST_DEV_SECRET STAGECAST_TENANTS STAGECAST_STALL_TIMEOUT_MS STAGECAST_RETENTION_MS \
           STAGECAST_MAX_SOCKETS STAGECAST_HISTORY_LIMIT STAGECAST_PUBLISH_RATE \
           STAGECAST_LEASE_MS STAGECAST_NODE_HEARTBEAT_MS STAGECAST_QUEUE_LIMIT; do
  [ -n "${!var:-}" ] && args+=(--var "$var:${!var}")
done
log "edge on http://127.0.0.1:$port (state in $state); Ctrl-C stops it"
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
exec wrangler "${args[@]}"
