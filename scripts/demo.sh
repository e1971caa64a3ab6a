#!/usr/bin/env bash
# The whole thing, locally: the edge in workerd (wrangler dev), two compute nodes on CPU
# with the PP-OCRv4 text detector in the edge's default pool (they dial out to it, as nodes
# behind NAT would), a sample video with text in it uploaded to the edge and submitted there, and the analysis
# followed in the terminal to its result. Stays in the foreground until Ctrl-C;
# STAGECAST_DEMO_EXIT=1 stops once the sample analysis is done (for scripts). The dashboard
# and pool page URLs it prints open the analysis and the pool live in a browser.
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

nodes=(demo-a demo-b)
for i in "${!nodes[@]}"; do
  name="${nodes[$i]}"
  api="http://127.0.0.1:$((node_port + i))"
  log "starting compute node $name on CPU in the default pool, its API at $api (log: $out/$name.log)"
  setsid "$node" serve --listen "127.0.0.1:$((node_port + i))" --state-dir "$CACHE/$name" \
    --pool default --node-id "$name" --threads 1 --models text-read,faces,moderation \
    >"$out/$name.log" 2>&1 &
  pids+=($!)
  wait_for "$api/readyz" "node $name" "$out/$name.log" "${pids[-1]}"
done

sample="$out/sample.mp4"
if [ ! -f "$sample" ]; then
  log "making a 12 s sample video with text in it ($sample)"
  font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
  ffmpeg -loglevel error -y -f lavfi -i "color=c=white:s=1280x720:d=12:r=25" -vf \
    "drawtext=fontfile=$font:text='Stagecast live analysis':fontsize=64:fontcolor=black:x=120:y=200,drawtext=fontfile=$font:text='frame %{n}':fontsize=48:fontcolor=black:x=120:y=420:enable='gte(t,4)'" \
    -c:v libx264 -pix_fmt yuv420p "$sample"
fi

id="demo-$(date +%s)"
log "pool:      $edge/pool?name=default#token=$("$node" token admin --ttl 86400)"
log "uploading the sample to the edge and submitting analysis $id (pool default); the dashboard URL follows, then the analysis here too:"
# text-read: find the lines, then read them; the dashboard shows the text as it is read
"$node" submit "$sample" --pool default --analysis-id "$id" --fps 2 --model text-read ||
  die "the analysis did not complete"
log "node metrics: $node_api/metrics and http://127.0.0.1:$((node_port + 1))/metrics"
if [ "${STAGECAST_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
log "the edge and the nodes stay up until Ctrl-C; submit more with: $node submit FILE --edge $edge (or POST $edge/v1/analyses, README: the protocol in brief)"
wait
