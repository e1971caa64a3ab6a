// npm's `eventsource` (a third-party client, not ours) on an analysis' stream, for
// tests/edge_sse.rs. Argument: the stream URL. Prints one JSON line per message:
// {type: "hello", resumed_from, recovered} or {type: "event", seq, id_matches}; the client
// reconnects by itself, with Last-Event-ID, whenever the stream drops.
import { EventSource } from "eventsource";

const source = new EventSource(process.argv[2]);
// Its reconnect timer does not hold the process open; the test ends it.
setInterval(() => {}, 60_000);
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
source.addEventListener("hello", (e) => {
  const hello = JSON.parse(e.data);
  say({ type: "hello", resumed_from: hello.resumed_from, recovered: hello.recovered });
});
source.addEventListener("event", (e) => {
  const { seq } = JSON.parse(e.data);
  say({ type: "event", seq, id_matches: e.lastEventId === String(seq) });
});
source.onerror = (e) => {
  // CONNECTING again: it retries by itself; CLOSED: the edge refused it for good.
  say({ type: "error", code: e.code ?? null, message: e.message ?? "", closed: source.readyState === EventSource.CLOSED });
  if (source.readyState === EventSource.CLOSED) process.exit(1);
};
