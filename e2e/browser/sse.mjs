// Server-Sent Events in Debian's headless Chromium, for tests/edge_sse.rs. Argument: JSON
// {base, analysis_id, token, dead_port, timeout_ms}. The page, on the edge's origin (through
// the test's cuttable proxy), follows one analysis three ways at once:
//   native  Chromium's own EventSource on /stream, resuming by itself with Last-Event-ID
//   sse     the client (/client/v1/stagecast.js) with transport 'sse'
//   auto    the client with transport 'auto' and a WebSocket sent to `dead_port` while
//           `broken` (a proxy that breaks WebSockets); its clock turns the 5 minutes before
//           it tries WebSockets again into 3 s
// Prints {"type":"opened"}, then {"type":"seen", native, sse, auto, transport} (counts, and
// the auto client's transport) on every change. Commands on stdin, one JSON object a line:
// {"websockets": "ok"} mends the auto client's WebSockets; {"finish": true} ends with
// {"type":"final", native, sse, auto (seqs in delivery order), hellos, transports,
// console_errors}.
import { createInterface } from "node:readline";

import { launch } from "./chromium.mjs";

const options = JSON.parse(process.argv[2]);
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

async function follow({ id, token, deadPort }) {
  const seen = { native: [], sse: [], auto: [], hellos: { native: [], sse: [], auto: [] }, transports: [] };
  window.seen = seen;
  window.broken = true;

  const source = new EventSource(`/v1/analyses/${id}/stream?since=0&token=${encodeURIComponent(token)}`);
  source.addEventListener("hello", (e) => seen.hellos.native.push(JSON.parse(e.data).resumed_from));
  source.addEventListener("event", (e) => {
    const { seq } = JSON.parse(e.data);
    seen.native.push(seq);
    if (e.lastEventId !== String(seq)) seen.hellos.native.push(`id ${e.lastEventId} for seq ${seq}`);
  });

  const { AnalysisClient, WEBSOCKET_AGAIN_MS } = await import("/client/v1/stagecast.js");
  const follower = (name, extra) => {
    const client = new AnalysisClient({ analysisId: id, token, ...extra });
    client.addEventListener("event", (e) => seen[name].push(e.detail.seq));
    client.addEventListener("hello", (e) => {
      seen.hellos[name].push(e.detail.resumed_from);
      if (name === "auto") seen.transports.push(client.transport);
    });
    client.connect();
    return client;
  };
  follower("sse", { transport: "sse" });
  class Flaky extends WebSocket {
    constructor(url, protocols) {
      super(window.broken ? url.replace(location.host, `127.0.0.1:${deadPort}`) : url, protocols);
    }
  }
  const clock = {
    now: () => Date.now(),
    setTimeout: (fn, ms) => setTimeout(fn, ms === WEBSOCKET_AGAIN_MS ? 3000 : ms),
    clearTimeout: (t) => clearTimeout(t),
  };
  window.auto = follower("auto", { WebSocket: Flaky, clock });
}

const browser = await launch();
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  // the edge serves no icon; its 404 would be the only console error
  await page.route("**/favicon.ico", (route) => route.fulfill({ status: 204 }));
  await page.goto(`${options.base}/healthz`);
  await page.evaluate(follow, { id: options.analysis_id, token: options.token, deadPort: options.dead_port });
  say({ type: "opened" });

  const commands = [];
  let stdinDone = false;
  const input = createInterface({ input: process.stdin });
  input.on("line", (line) => commands.push(JSON.parse(line)));
  input.on("close", () => { stdinDone = true; });
  const deadline = Date.now() + (options.timeout_ms ?? 120000);
  let last = "";
  for (;;) {
    const command = commands.shift();
    if (command?.websockets === "ok") await page.evaluate(() => { window.broken = false; });
    if (command?.finish || stdinDone || Date.now() > deadline) break;
    const now = await page.evaluate(() => ({
      native: window.seen.native.length,
      sse: window.seen.sse.length,
      auto: window.seen.auto.length,
      transport: window.auto.transport,
    }));
    const key = JSON.stringify(now);
    if (key !== last) {
      last = key;
      say({ type: "seen", ...now });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  input.close(); // an open stdin would keep this process alive
  const seen = await page.evaluate(() => window.seen);
  say({ type: "final", ...seen, timed_out: Date.now() > deadline, console_errors: consoleErrors });
} finally {
  await browser.close();
}
