// Drives the dashboard in Debian's headless Chromium for the Rust browser tests
// (compute/tests/dashboard.rs). Argument: JSON {url, screenshot, timeout_ms,
// cancel_at_stage?, settle_ms?}. Prints one JSON object per line: {"type":"opened"},
// {"type":"status", ...} on every change of what the page shows, {"type":"clicked_cancel"},
// and last {"type":"final", ...} with everything the tests check.
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2]);
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const browser = await chromium.launch({
  executablePath: process.env.STAGECAST_CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 900 } });
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(options.url);
  say({ type: "opened" });

  const read = () => page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    return {
      status: $("status").textContent,
      connection: $("connection").dataset.state,
      connection_text: $("connection").textContent,
      overall: Number($("overall").getAttribute("aria-valuenow")),
      stages: [...document.querySelectorAll(".stage")].map((row) => ({
        name: row.dataset.stage,
        pct: Number(row.querySelector(".bar").getAttribute("aria-valuenow")),
        done: row.dataset.done === "true",
        times: row.querySelector(".times").textContent,
      })),
      cancel_enabled: !$("cancel").disabled,
      problem: $("problem").hidden ? null : $("problem-text").textContent,
      stalled: !$("stalled").hidden,
    };
  });

  const deadline = Date.now() + (options.timeout_ms ?? 120000);
  const terminal = new Set(["completed", "failed", "cancelled"]);
  let last = "";
  let clicked = false;
  const seen = { statuses: [], connections: [] };
  let view;
  for (;;) {
    view = await read();
    const key = JSON.stringify([view.status, view.connection, view.overall, view.problem]);
    if (key !== last) {
      last = key;
      say({ type: "status", ...view });
      if (seen.statuses.at(-1) !== view.status) seen.statuses.push(view.status);
      if (seen.connections.at(-1) !== view.connection) seen.connections.push(view.connection);
    }
    if (options.cancel_at_stage && !clicked && view.cancel_enabled &&
        view.stages.some((s) => s.name === options.cancel_at_stage && s.pct > 0)) {
      await page.getByRole("button", { name: "Cancel analysis" }).click();
      clicked = true;
      say({ type: "clicked_cancel" });
    }
    if (view.problem || (terminal.has(view.status) && ["closed", "finished"].includes(view.connection))) break;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  // anything arriving late (a repeat after a reconnect) would show up now
  await new Promise((r) => setTimeout(r, options.settle_ms ?? 1000));
  view = await read();
  const final = await page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const text = (id) => $(id).textContent;
    return {
      event_seqs: [...document.querySelectorAll("#event-log li")].map((li) => Number(li.dataset.seq)),
      result: $("result").hidden ? null : {
        flag: text("result-flag"), score: text("result-score"), frames: text("result-frames"),
        review: !$("result-review").hidden, rows: document.querySelectorAll("#result-regions tr").length,
        drawn: document.querySelectorAll("#result-frame rect").length,
        viewbox: $("result-frame").getAttribute("viewBox"),
      },
      failure: $("failure").hidden ? null : { code: text("failure-code"), message: text("failure-message") },
      toasts: [...document.querySelectorAll(".toast")].map((t) => t.textContent),
      eta: text("eta"),
    };
  });
  await page.screenshot({ path: options.screenshot, fullPage: true });
  say({ type: "final", ...view, ...final, seen, clicked, console_errors: consoleErrors,
        timed_out: Date.now() > deadline });
} finally {
  await browser.close();
}
