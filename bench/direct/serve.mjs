// Benchmark-only: serves the built edge Worker (edge/build) in ONE workerd process, through
// Miniflare directly, without the extra "dev proxy" workerd that `wrangler dev` puts in
// front of the runtime (every request would cross both; ~7 ms a request).
//
//   node bench/direct/serve.mjs PORT STATE_DIR [NAME=VALUE ...]
//
// wrangler.toml is turned into Miniflare options by wrangler's own
// unstable_getMiniflareWorkerOptions, run in a child process (options.mjs): Durable Object
// bindings + SQLite migrations, [vars] (and .dev.vars, as wrangler dev reads it), [assets] if any.
// NAME=VALUE arguments override/add vars, like `wrangler dev --var NAME:VALUE`.
// State goes to STATE_DIR/v3, the layout `wrangler dev --persist-to STATE_DIR` uses.
// Prints "ready on http://HOST:PORT" once it serves; stops (and its workerd) on SIGTERM/SIGINT.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";
import { Miniflare, Log, LogLevel, convertV4MiniflareOptions } from "miniflare";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const [portArg, stateArg, ...varArgs] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !stateArg) {
  console.error("usage: serve.mjs PORT STATE_DIR [NAME=VALUE ...]");
  process.exit(2);
}
const stateDir = path.resolve(stateArg);
const host = process.env.DIRECT_HOST ?? "127.0.0.1";

const vars = {};
for (const arg of varArgs) {
  const eq = arg.indexOf("=");
  if (eq <= 0) {
    console.error(`not NAME=VALUE: ${arg}`);
    process.exit(2);
  }
  vars[arg.slice(0, eq)] = arg.slice(eq + 1);
}

const configPath = path.join(root, "wrangler.toml");
// wrangler's unstable_getMiniflareWorkerOptions, in a child process (see options.mjs).
const { workerOptions, main } = JSON.parse(
  execFileSync(process.execPath, [path.join(root, "bench/direct/options.mjs"), configPath], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 16 << 20,
  }),
);
const entry = path.resolve(root, main ?? "edge/build/worker/shim.mjs");
// worker-build's output: worker/shim.mjs re-exports ../index.js, which imports
// ./index_bg.wasm. Listed explicitly (no bundling), names relative to edge/build.
const buildDir = path.resolve(path.dirname(entry), "..");
const modules = [
  { type: "ESModule", path: entry },
  { type: "ESModule", path: path.join(buildDir, "index.js") },
  { type: "CompiledWasm", path: path.join(buildDir, "index_bg.wasm") },
];

// Miniflare 5 takes a new options shape; wrangler itself builds v4-style options and
// converts them with convertV4MiniflareOptions, as done here.
const mf = new Miniflare(convertV4MiniflareOptions({
  host,
  port,
  // No internet: use Miniflare's built-in request.cf instead of fetching one.
  cf: false,
  logRequests: false,
  log: new Log(LogLevel.INFO),
  resourcePersistencePath: path.join(stateDir, "v3"),
  resourceTmpPath: path.join(stateDir, "tmp"),
  workers: [
    {
      ...workerOptions,
      // The name keys the Durable Objects' storage (<name>-<class>), as under wrangler dev.
      name: "stagecast-edge",
      modules,
      modulesRoot: buildDir,
      bindings: { ...(workerOptions.bindings ?? {}), ...vars },
    },
  ],
}));

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  try {
    await mf.dispose();
  } catch (e) {
    console.error(`dispose after ${signal}: ${e}`);
  }
  process.exit(0);
}
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => stop(sig));

try {
  const url = await mf.ready;
  console.log(`ready on ${url.href}`);
} catch (e) {
  console.error(`miniflare failed to start: ${e?.stack ?? e}`);
  await mf.dispose().catch(() => {});
  process.exit(1);
}
