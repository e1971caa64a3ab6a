// Drives the Stagecast pages in Debian's headless Chromium for the Rust browser tests
// (tests/dashboard.rs, tests/pool_page.rs). Argument: JSON {url, screenshot, timeout_ms, view?,
// audit?, open_id?, cancel_at_stage?, settle_ms?, clicks?, missing?, dark?, pool?, from_index?,
// until_problem?}. Prints one JSON object per line, last {"type":"final", ...} with everything
// the tests check (and `sockets`: the path of every WebSocket the page opened).
//
// view "dashboard" (the default): {"type":"opened"}, {"type":"status", ...} on every change
// of what the page shows, {"type":"clicked_cancel"}, {"type":"audit", at, violations} the
// first time the page shows each status listed in `audit` once connected, then the final line.
// Once the analysis ended it takes the screenshot, then presses each of `clicks` in turn
// ({thumbnail: "frame 3"}: that key frame's button, clicked; {finding: i}: the i-th finding's,
// with the keyboard; {scores_table: true}: the chart's table opened), reports what the frame
// view and the chart show then as {"type":"clicked", ...} and in the final line's
// `clicked_frames`, and audits each click's `audit` moment. `missing`: artifact names
// answered 404, as the edge does once retention deleted them. `dark`: the page in the dark
// colour scheme.
// view "tenant": the tenant view opened with a token; audits "grants" once the token's grants
// show, submits the form without an id, audits "form_error" and takes the screenshot, then
// submits `open_id` and reports the address it went to.
// view "pool" (tests/pool_page.rs): the pool page; {"type":"pool", ...} on every change of
// what it shows. With `from_index` the url is the tenant view: it audits "index" once the
// pool form shows and opens `pool` from there. Then it takes commands on stdin, one JSON
// object a line: {"audit": at} answers {"type":"audit", at, violations}; {"finish": true}
// (or, with `until_problem`, a problem shown, audited as "problem", and `settle_ms` passed)
// ends it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { launch } from "./chromium.mjs";

const options = JSON.parse(process.argv[2]);
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/** axe-core's WCAG 2.1 AA violations on the page as it is now. */
async function audit(page) {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ content: AXE_SOURCE });
  const { violations } = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags } }),
    WCAG_21_AA,
  );
  return violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })),
  }));
}

async function dashboard(page, audits) {
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
      cancel_shown: $("cancel").checkVisibility(),
      problem: $("problem").hidden ? null : $("problem-text").textContent,
      stalled: !$("stalled").hidden,
      frame: $("frames").hidden ? null : (() => {
        const img = $("frame-box").querySelector("img");
        return {
          image: img?.getAttribute("src") ?? null,
          alt: img?.alt ?? null,
          loaded: img ? img.complete && img.naturalWidth > 0 : false,
          drawn: document.querySelectorAll("#result-frame rect").length,
          landmarks: [...document.querySelectorAll("#result-frame circle.landmark")]
            .map((c) => [Number(c.getAttribute("cx")), Number(c.getAttribute("cy"))]),
          viewbox: $("result-frame").getAttribute("viewBox"),
          caption: $("frame-caption").textContent,
          note: $("frame-note").hidden ? null : $("frame-note").textContent,
        };
      })(),
      labels: $("labels-found").hidden ? [] : [...$("labels").children].map((li) => li.textContent),
      // the score chart: what it says, and each point drawn as [x, y] in its 300×100 box
      chart: $("scores").hidden ? null : {
        label: $("score-chart").getAttribute("aria-label"),
        points: $("score-line").getAttribute("points").trim().split(/\s+/).map((p) => p.split(",").map(Number)),
        axis: [$("score-first").textContent, $("score-last").textContent],
        table: $("scores-table").open
          ? [...$("score-rows").rows].map((tr) => [...tr.cells].map((td) => td.textContent))
          : null,
      },
      strip: [...document.querySelectorAll("#key-frames button")].map((b) => {
        const img = b.querySelector("img");
        return {
          alt: img?.alt ?? null,
          text: b.textContent,
          pressed: b.getAttribute("aria-pressed") === "true",
          loaded: img ? img.complete && img.naturalWidth > 0 : false,
        };
      }),
    };
  });
  // what the frame view shows once its picture loaded or failed
  const settled = () => page.waitForFunction(
    () => document.getElementById("frame-box").querySelector("img")?.complete ?? true,
    null,
    { timeout: 10000 },
  );

  const deadline = Date.now() + (options.timeout_ms ?? 120000);
  const terminal = new Set(["completed", "failed", "cancelled"]);
  const auditAt = new Set(options.audit ?? []);
  let last = "";
  let clicked = false;
  const seen = { statuses: [], connections: [], cancel_shown: [] };
  let view;
  for (;;) {
    view = await read();
    const key = JSON.stringify([view.status, view.connection, view.overall, view.problem, view.cancel_shown,
      view.frame, view.strip, view.labels, view.chart]);
    if (key !== last) {
      last = key;
      say({ type: "status", ...view });
      if (seen.statuses.at(-1) !== view.status) seen.statuses.push(view.status);
      if (seen.connections.at(-1) !== view.connection) seen.connections.push(view.connection);
      if (seen.cancel_shown.at(-1) !== view.cancel_shown) seen.cancel_shown.push(view.cancel_shown);
    }
    // the static page says "pending" before it hears from the edge: audit what the edge sent
    if (auditAt.has(view.status) && view.connection !== "connecting") {
      auditAt.delete(view.status);
      audits[view.status] = await audit(page);
      say({ type: "audit", at: view.status, violations: audits[view.status] });
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
  await settled();
  view = await read();
  const final = await page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const text = (id) => $(id).textContent;
    const lines = (id) => [...$(id).querySelectorAll("li")].map((li) => {
      const time = li.querySelector("time");
      return {
        seq: Number(li.dataset.seq),
        time: time?.textContent ?? null,
        ts: time ? Date.parse(time.dateTime) : null,
        text: li.textContent,
      };
    });
    return {
      event_seqs: [...document.querySelectorAll("#event-log li")].map((li) => Number(li.dataset.seq)),
      messages: lines("messages"),
      findings: lines("partials"),
      findings_scroll: $("partials").scrollHeight > $("partials").clientHeight,
      result: $("result").hidden ? null : {
        flag: text("result-flag"), score: text("result-score"), frames: text("result-frames"),
        review: !$("result-review").hidden, rows: document.querySelectorAll("#result-regions tr").length,
        drawn: document.querySelectorAll("#result-frame rect").length,
        viewbox: $("result-frame").getAttribute("viewBox"),
      },
      failure: $("failure").hidden ? null : { code: text("failure-code"), message: text("failure-message") },
      toasts: [...document.querySelectorAll(".toast")].map((t) => t.textContent),
      eta: text("eta"),
      focused: document.activeElement?.id || null,
    };
  });
  await page.screenshot({ path: options.screenshot, fullPage: true });
  const clickedFrames = [];
  for (const click of options.clicks ?? []) {
    if (click.scores_table) {
      await page.locator("#scores-table summary").click();
      // the page fills the table on the details' toggle event, a task after the click
      await page.waitForFunction(() => document.getElementById("score-rows").rows.length > 0, null, { timeout: 10000 });
    } else if (click.thumbnail) {
      await page.locator("#key-frames").getByRole("button", { name: click.thumbnail, exact: true }).click();
    } else {
      await page.locator("#partials button").nth(click.finding).focus();
      await page.keyboard.press("Enter");
    }
    await settled();
    const shown = await read();
    clickedFrames.push({ ...click, frame: shown.frame, strip: shown.strip, chart: shown.chart });
    say({ type: "clicked", ...clickedFrames.at(-1) });
    if (click.audit) audits[click.audit] = await audit(page);
  }
  return { ...view, ...final, seen, clicked, clicked_frames: clickedFrames, timed_out: Date.now() > deadline };
}

async function tenant(page, audits) {
  const read = () => page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    return {
      grants_who: $("grants").hidden ? null : $("grants-who").textContent,
      grants: [...document.querySelectorAll("#grants-list li")].map((li) => ({
        text: li.textContent, href: li.querySelector("a")?.getAttribute("href") ?? null,
      })),
      form_error: $("form-error").hidden ? null : $("form-error").textContent,
      focused: document.activeElement?.id || null,
    };
  });
  await page.locator("#grants").waitFor({ timeout: options.timeout_ms });
  const shown = await read();
  audits.grants = await audit(page);
  await page.getByRole("button", { name: "Open the dashboard" }).click();
  await page.locator("#form-error").waitFor({ timeout: options.timeout_ms });
  const refused = await read();
  audits.form_error = await audit(page);
  await page.screenshot({ path: options.screenshot, fullPage: true });
  await page.getByLabel("Analysis id").fill(options.open_id);
  await page.getByRole("button", { name: "Open the dashboard" }).click();
  await page.waitForURL((url) => url.pathname === "/analysis", { timeout: options.timeout_ms });
  return { ...shown, form_error: refused.form_error, form_error_focus: refused.focused, opened: page.url() };
}

async function pool(page, audits) {
  if (options.from_index) {
    await page.locator("#pools").waitFor({ timeout: options.timeout_ms });
    audits.index = await audit(page);
    await page.getByLabel("Pool name").fill(options.pool);
    await page.getByRole("button", { name: "Open the pool" }).click();
    await page.waitForURL((url) => url.pathname === "/pool", { timeout: options.timeout_ms });
    say({ type: "navigated", url: page.url() });
  }
  const read = () => page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const shown = (id) => !$(id).hidden;
    return {
      connection: $("connection").dataset.state,
      problem: shown("problem") ? $("problem-text").textContent : null,
      queued: $("queued").textContent,
      leased: $("leased").textContent,
      slots_total: $("slots-total").textContent,
      unserved: shown("unserved") ? $("unserved-list").textContent.split(", ") : [],
      scope_note: shown("scope-note"),
      nodes: [...document.querySelectorAll("#nodes > li")].map((li) => ({
        id: li.dataset.node,
        connected: li.dataset.connected === "true",
        state: li.querySelector(".node-conn").textContent,
        used: Number(li.dataset.used),
        slots: Number(li.dataset.slots),
        slots_text: li.querySelector(".node-slots").textContent,
        metrics: li.querySelector(".node-metrics").textContent,
        models: li.querySelector(".node-models").textContent,
        running: [...li.querySelectorAll(".running li")].map((r) => ({
          id: r.dataset.id, href: r.querySelector("a").getAttribute("href"), text: r.textContent,
        })),
      })),
      queued_list: [...document.querySelectorAll("#queued-list li")].map((li) => li.dataset.id),
      finished: [...document.querySelectorAll("#finished-list li")].map((li) => ({
        id: li.dataset.id, status: li.dataset.status, text: li.textContent,
      })),
    };
  });
  const ages = () => page.evaluate(() => ({
    oldest: document.getElementById("oldest").textContent,
    queued_text: [...document.querySelectorAll("#queued-list li")].map((li) => li.textContent),
    seen: [...document.querySelectorAll("#nodes .node-seen")].map((p) => p.textContent),
  }));
  const commands = [];
  let stdinDone = false;
  const input = createInterface({ input: process.stdin });
  input.on("line", (line) => line.trim() && commands.push(JSON.parse(line)));
  input.on("close", () => { stdinDone = true; });
  const deadline = Date.now() + (options.timeout_ms ?? 120000);
  let last = "";
  let problemSince = null;
  const seen = { connections: [] };
  let view;
  for (;;) {
    view = await read();
    const key = JSON.stringify(view);
    if (key !== last) {
      last = key;
      say({ type: "pool", ...view, ...(await ages()) });
      if (seen.connections.at(-1) !== view.connection) seen.connections.push(view.connection);
    }
    const command = commands.shift();
    if (command?.audit) {
      audits[command.audit] = await audit(page);
      say({ type: "audit", at: command.audit, violations: audits[command.audit] });
    }
    if (command?.finish || stdinDone) break;
    if (options.until_problem && view.problem) {
      if (problemSince === null) {
        audits.problem = await audit(page);
        say({ type: "audit", at: "problem", violations: audits.problem });
      }
      problemSince ??= Date.now();
      if (Date.now() - problemSince > (options.settle_ms ?? 1000)) break;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  input.close();
  view = await read();
  await page.screenshot({ path: options.screenshot, fullPage: true });
  return { ...view, ...(await ages()), seen, timed_out: Date.now() > deadline };
}

const views = { dashboard, tenant, pool };

const browser = await launch();
try {
  // UTC and en-GB make the page's times ("14:03:05") something the tests can compute
  const page = await browser.newPage({
    viewport: { width: 390, height: 900 }, locale: "en-GB", timezoneId: "UTC",
    colorScheme: options.dark ? "dark" : "light",
  });
  const missing = new Set(options.missing ?? []);
  if (missing.size) {
    await page.route(
      (url) => missing.has(decodeURIComponent(url.pathname.split("/artifacts/")[1] ?? "")),
      (route) => route.fulfill({ status: 404, contentType: "application/json", body: '{"error":{"code":"not_found"}}' }),
    );
  }
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(new URL(ws.url()).pathname));
  await page.goto(options.url);
  say({ type: "opened" });
  const audits = {};
  const report = await views[options.view ?? "dashboard"](page, audits);
  say({ type: "final", ...report, audits, console_errors: consoleErrors, sockets });
} finally {
  await browser.close();
}
