#!/usr/bin/env bash
# Starts the FastAPI + Redis peer: its own redis-server on 127.0.0.1:REDIS_PORT (no
# persistence) and uvicorn (1 worker) on 127.0.0.1:PORT in the foreground.
# Installs what it needs first, idempotently. Usage: run.sh PORT REDIS_PORT
set -euo pipefail
PORT=${1:?usage: run.sh PORT REDIS_PORT}
REDIS_PORT=${2:?usage: run.sh PORT REDIS_PORT}
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${STAGECAST_PEERS_VENV:-$HOME/.cache/stagecast/peers-py}

if ! command -v redis-server >/dev/null; then
  apt-get install -y redis-server || { apt-get update && apt-get install -y redis-server; }
fi
if [ ! -x "$VENV/bin/uvicorn" ] || ! "$VENV/bin/python" -c 'import fastapi, redis, websockets' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q fastapi 'uvicorn[standard]' redis
fi

# One socket per subscriber here, plus one Redis connection each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --daemonize no --loglevel warning &
REDIS_PID=$!
UV_PID=
trap 'kill $UV_PID "$REDIS_PID" 2>/dev/null || true' EXIT
trap 'exit 143' INT TERM
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

cd "$HERE"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" "$VENV/bin/uvicorn" app:app \
  --host 127.0.0.1 --port "$PORT" --workers 1 --log-level warning --no-access-log &
UV_PID=$!
# uvicorn runs in the background and the script waits on it, so a signal to this shell
# runs the trap at once (bash defers traps while a foreground child runs).
wait "$UV_PID"
