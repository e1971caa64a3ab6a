#!/usr/bin/env bash
# The whole thing, locally: the edge in workerd (wrangler dev), a compute node on CPU with
# the PP-OCRv4 text detector, a sample video with text in it, and the analysis followed in
# the terminal to its result. Stays in the foreground with the edge and the node up until
# Ctrl-C; STAGECAST_DEMO_EXIT=1 stops once the sample analysis is done (for scripts).
# The dashboard URL it prints opens the analysis live in a browser.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

port="${STAGECAST_EDGE_PORT:-8787}"
node_port="${STAGECAST_NODE_PORT:-8788}"
edge="http://127.0.0.1:$port"
node_api="http://127.0.0.1:$node_port"
out=target/demo
mkdir -p "$out"
ensure_dev_secret
export STAGECAST_NODE_SECRET="$STAGECAST_DEV_SECRET" STAGECAST_EDGE_URL="$edge"
export STAGECAST_ORT_DYLIB="$ORT_DYLIB" STAGECAST_MODELS_DIR="$MODELS_DIR"

log "building the compute node (release)"
cargo build -q --release -p stagecast-node
node=target/release/stagecast-node

pids=()
cleanup() { for pid in "${pids[@]}"; do kill -- -"$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # url what log pid
  for _ in $(seq 1 300); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    kill -0 "$4" 2>/dev/null || die "$2 exited; see $3"
    sleep 0.2
  done
  die "$2 did not answer on $1; see $3"
}

log "starting the edge on $edge (log: $out/edge.log)"
WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false setsid wrangler dev --config wrangler.toml \
  --ip 127.0.0.1 --port "$port" --persist-to "${STAGECAST_STATE_DIR:-.wrangler/state}" \
  --show-interactive-dev-session=false --var "STAGECAST_DEV_SECRET:$STAGECAST_DEV_SECRET" \
  >"$out/edge.log" 2>&1 &
pids+=($!)
wait_for "$edge/healthz" "the edge" "$out/edge.log" "${pids[-1]}"

log "starting a compute node on CPU at $node_api (log: $out/node.log)"
# the demo submits a local file: this node takes local paths from its API callers
setsid "$node" serve --listen "127.0.0.1:$node_port" --state-dir "$CACHE/demo-node" --allow-local-inputs >"$out/node.log" 2>&1 &
pids+=($!)
wait_for "$node_api/readyz" "the node" "$out/node.log" "${pids[-1]}"

sample="$out/sample.mp4"
if [ ! -f "$sample" ]; then
  log "making a 12 s sample video with text in it ($sample)"
  font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
  ffmpeg -loglevel error -y -f lavfi -i "color=c=white:s=1280x720:d=12:r=25" -vf \
    "drawtext=fontfile=$font:text='Stagecast live analysis':fontsize=64:fontcolor=black:x=120:y=200,drawtext=fontfile=$font:text='frame %{n}':fontsize=48:fontcolor=black:x=120:y=420:enable='gte(t,4)'" \
    -c:v libx264 -pix_fmt yuv420p "$sample"
fi

id="demo-$(date +%s)"
log "submitting analysis $id to the node"
curl -fsS -X POST "$node_api/v1/analyses" -H "authorization: Bearer $("$node" token admin --ttl 600)" \
  -H 'content-type: application/json' \
  -d "{\"input\": \"$ROOT/$sample\", \"analysis_id\": \"$id\", \"fps\": 2}" >/dev/null
viewer="$("$node" token viewer --analysis "$id" --ttl 86400)"
log "dashboard: $edge/analysis?id=$id#token=$viewer"
log "  snapshot: curl -H 'authorization: Bearer $viewer' $edge/v1/analyses/$id"
log "following it here too:"

"$node" watch "$id" || die "the analysis did not complete"
log "node metrics: $node_api/metrics"
if [ "${STAGECAST_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
log "the edge and the node stay up until Ctrl-C; submit more with POST $node_api/v1/analyses (README: the node API)"
wait
