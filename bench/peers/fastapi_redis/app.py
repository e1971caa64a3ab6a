"""FastAPI + WebSockets + Redis pub/sub: the relay a team would build today, as a peer
for Stagecast's edge benchmark. Same routes and message shapes as Stagecast's wire
contract v1 (the subset a publisher and a subscriber need); no auth, no state machine.

Each WebSocket gets its own Redis pub/sub connection (the redis-py asyncio pattern:
`r.pubsub()`, `subscribe`, then `get_message(ignore_subscribe_messages=True, timeout=None)`
in a loop), so Redis does the fan-out and every socket is independent.

Run: uvicorn app:app --host 127.0.0.1 --port PORT --workers 1 (REDIS_URL in the env).
"""

import asyncio
import json
import os
import re
import time

import redis.asyncio as redis
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

app = FastAPI()
# Every open WebSocket holds one pooled connection (its pub/sub) for its whole life, so the
# pool must be larger than the number of sockets: redis-py's default cap is 100.
MAX_CONNECTIONS = int(os.environ.get("REDIS_MAX_CONNECTIONS", "10000"))
r = redis.Redis.from_url(REDIS_URL, decode_responses=True, max_connections=MAX_CONNECTIONS)

# One round trip per batch, atomic: dedupe by id (a set), seq from INCR, append the stored
# event to the list (list index = seq - 1), publish it. Atomic so that concurrent
# publishers still publish in seq order.
# KEYS: ids set, seq counter, event list, channel. ARGV: ts, then one JSON event per id,
# alternating id, event.
APPEND = r.register_script(
    """
local accepted, duplicates = 0, 0
for i = 2, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    local seq = redis.call('INCR', KEYS[2])
    local stored = '{"seq":' .. seq .. ',"ts":' .. ARGV[1] .. ',"event":' .. ARGV[i + 1] .. '}'
    redis.call('RPUSH', KEYS[3], stored)
    redis.call('PUBLISH', KEYS[4], stored)
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
return {accepted, duplicates, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""
)


def keys(analysis_id: str) -> list[str]:
    k = f"analysis:{analysis_id}"
    return [f"{k}:ids", f"{k}:seq", f"{k}:events", k]


def check_id(analysis_id: str) -> None:
    if not ID.match(analysis_id):
        raise HTTPException(400, "analysis id: 1 to 64 of [A-Za-z0-9_-]")


def seq_of(stored: str) -> int:
    # Stored events are written by APPEND and start with {"seq":N,
    return int(stored[7 : stored.index(",")])


def frame(stored: str) -> str:
    # {"type":"event", ...stored}, without parsing and re-encoding the stored event.
    return '{"type":"event",' + stored[1:]


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.post("/v1/analyses/{analysis_id}/events")
async def publish(analysis_id: str, request: Request):
    # The bearer token is accepted and not verified: this peer measures relaying.
    check_id(analysis_id)
    body = await request.json()
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not 1 <= len(events) <= 100:
        raise HTTPException(400, "events: 1 to 100 events")
    argv = [str(int(time.time() * 1000))]
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise HTTPException(400, "every event needs a string id")
        argv += [event["id"], json.dumps(event, separators=(",", ":"))]
    accepted, duplicates, last_seq = await APPEND(keys=keys(analysis_id), args=argv)
    return {
        "accepted": accepted,
        "duplicates": duplicates,
        "last_seq": last_seq,
        "cancel_requested": False,
    }


@app.websocket("/v1/analyses/{analysis_id}/ws")
async def subscribe(websocket: WebSocket, analysis_id: str, since: int | None = None):
    # Token (query, header, cookie or subprotocol) accepted and not verified.
    if not ID.match(analysis_id):
        await websocket.close(code=4400)
        return
    _, seq_key, list_key, channel = keys(analysis_id)
    protocols = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="stagecast.v1" if "stagecast.v1" in protocols else None)
    async with r.pubsub() as pubsub:
        # Subscribe before reading the past, then drop live events already replayed.
        await pubsub.subscribe(channel)
        async with r.pipeline(transaction=True) as pipe:
            pipe.get(seq_key)
            if since is not None:
                pipe.lrange(list_key, since, -1)  # list index = seq - 1
            results = await pipe.execute()
        last_seq = int(results[0] or 0)
        replay = results[1] if since is not None else []
        await websocket.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "analysis_id": analysis_id,
                    "snapshot": {"last_seq": last_seq},
                    "resumed_from": since,
                    "recovered": True,
                },
                separators=(",", ":"),
            )
        )
        for stored in replay:
            await websocket.send_text(frame(stored))
        delivered = last_seq

        async def forward():
            nonlocal delivered
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None:
                    continue
                stored = message["data"]
                seq = seq_of(stored)
                if seq <= delivered:
                    continue
                delivered = seq
                await websocket.send_text(frame(stored))

        forwarder = asyncio.create_task(forward())
        try:
            # Client messages are read (to notice the close) and ignored.
            while True:
                receive = asyncio.create_task(websocket.receive_text())
                done, _ = await asyncio.wait(
                    {receive, forwarder}, return_when=asyncio.FIRST_COMPLETED
                )
                if forwarder in done:
                    receive.cancel()
                    forwarder.result()  # raises what stopped it
                    break
                receive.result()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)
