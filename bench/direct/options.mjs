// Prints, as JSON, the Miniflare (v4-style) worker options wrangler derives from
// wrangler.toml: Durable Object bindings (SQLite), [vars] (+ .dev.vars), [assets] if any, the
// compatibility date and main. Run in its own process by serve.mjs, so the server does not
// keep wrangler's bundle loaded (~140 MB of RSS) (its process group's memory is measured).
//   node bench/direct/options.mjs path/to/wrangler.toml
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const configPath = process.argv[2];
if (!configPath) {
  console.error("usage: options.mjs WRANGLER_TOML");
  process.exit(2);
}
// wrangler logs ("Using secrets defined in .dev.vars") go to stdout: keep stdout for JSON.
const log = console.log;
console.log = (...args) => console.error(...args);
const { workerOptions, main } = unstable_getMiniflareWorkerOptions(configPath);
log(JSON.stringify({ workerOptions, main }));
