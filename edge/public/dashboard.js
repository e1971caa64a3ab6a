// The live dashboard of one analysis: /analysis?id=<id>#token=<viewer token>.
// Everything on the page is drawn from the client's snapshot and events.
import { AnalysisClient } from "/client/v1/stagecast.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const REGIONS_LISTED = 200;
// Labels named in the summary and in one finding's line; the rest are counted.
const LABELS_LISTED = 20;
const LABELS_IN_A_LINE = 5;
// The chart draws at most this many points, so thousands of frames stay cheap to draw.
const CHART_POINTS = 300;
// The chart's box, score 1 at the top (analysis.html's viewBox adds 2 above and below, so
// the line shows whole at 0 and 1).
const [CHART_W, CHART_H] = [300, 100];
const CLOSE_HELP = {
  4001: "The token is invalid or has expired. Ask your service for a new link.",
  4003: "This token may not watch this analysis.",
  4400: "The address is malformed: check the analysis id.",
  1000: "The edge ended the connection.",
};

let etaDeadline = null;
let toasted = new Set();
let artifactUrl = null; // set by main(), which knows the analysis and the token

// The frame view (drawFrame): the pictures of frames the node left (its `artifact` events),
// the partial results' regions by frame, the result, and the frame a person picked in the
// strip or the findings (null: follow the run, then show the result's frame).
const pictures = new Map();
const gone = new Set();
const partialRegions = new Map();
let latestKey = null;
let result = null;
let picked = null;

// Each frame's own score from the partial results' `scores`, by frame (a repeat replaces),
// and what was found by label (the partial results', then the result's regions). Both are
// drawn once per animation frame, however many events arrive in it.
const frameScores = new Map();
let labelsFound = new Map();
let redrawQueued = false;

function fmtTime(ts) {
  return ts ? new Date(ts).toLocaleTimeString() : "—";
}

function fmtDuration(ms) {
  if (ms == null || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${String(s % 60).padStart(2, "0")} s` : `${s} s`;
}

function setBar(el, fraction) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  el.firstElementChild.style.width = `${pct}%`;
  el.setAttribute("aria-valuenow", String(pct));
  el.setAttribute("aria-valuetext", `${pct} percent`);
  return pct;
}

function toast(text, kind) {
  const el = document.createElement("div");
  el.className = "toast";
  el.dataset.kind = kind;
  el.setAttribute("role", "status");
  el.textContent = text;
  $("toasts").append(el);
  setTimeout(() => el.remove(), 8000);
}

function toastOnce(key, text, kind) {
  if (toasted.has(key)) return;
  toasted.add(key);
  toast(text, kind);
}

// Stamped with the edge's time of the event (`stored.ts`), not the node's `event.ts`: it
// is never earlier than the previous event's, and edge events have no other. A replayed
// history shows when things happened, not when the page loaded.
// With `onClick` the line is a button (a finding shows its frame).
function logLine(list, stored, text, onClick) {
  const li = document.createElement("li");
  li.dataset.seq = String(stored.seq);
  const time = document.createElement("time");
  time.dateTime = new Date(stored.ts).toISOString();
  time.textContent = fmtTime(stored.ts);
  let line = li;
  if (onClick) {
    line = document.createElement("button");
    line.type = "button";
    line.className = "line";
    line.addEventListener("click", onClick);
    li.append(line);
  }
  line.append(time, ` ${text}`);
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function renderStages(snapshot) {
  const box = $("stages");
  if (!snapshot.stages.length) return;
  if (box.dataset.names !== snapshot.stages.map((s) => s.name).join()) {
    box.replaceChildren();
    box.dataset.names = snapshot.stages.map((s) => s.name).join();
    for (const stage of snapshot.stages) {
      const row = document.createElement("div");
      row.className = "stage";
      row.dataset.stage = stage.name;
      const id = `stage-${stage.name}`;
      row.innerHTML = `<span class="name" id="${id}-name"></span>
        <div class="bar" role="progressbar" aria-labelledby="${id}-name" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><span></span></div>
        <span class="pct">0%</span><span class="times muted"></span>`;
      row.querySelector(".name").textContent = stage.name;
      box.append(row);
    }
  }
  const now = Date.now();
  for (const stage of snapshot.stages) {
    const row = box.querySelector(`[data-stage="${CSS.escape(stage.name)}"]`);
    const pct = setBar(row.querySelector(".bar"), stage.progress);
    row.querySelector(".pct").textContent = `${pct}%`;
    row.dataset.done = String(stage.finished_ts != null);
    const end = stage.finished_ts ?? (snapshot.status === "running" ? now : snapshot.updated_ts);
    const verb = stage.finished_ts ? "took" : TERMINAL.has(snapshot.status) ? "stopped after" : "running for";
    row.querySelector(".times").textContent = stage.started_ts
      ? `started ${fmtTime(stage.started_ts)}, ${verb} ${fmtDuration(end - stage.started_ts)}`
      : "not started";
  }
}

function renderEta() {
  const el = $("eta");
  if (etaDeadline == null) {
    el.textContent = "ETA: —";
    return;
  }
  el.textContent = `ETA: ${fmtDuration(Math.max(0, etaDeadline - Date.now()))}`;
}

function render(snapshot) {
  const status = snapshot.status;
  $("status").textContent = status;
  $("status").dataset.status = status;
  const pct = setBar($("overall"), snapshot.overall_progress);
  $("overall-percent").textContent = `${pct}%`;
  $("current-stage").textContent = snapshot.stage && !TERMINAL.has(status) ? `now: ${snapshot.stage}` : "";
  etaDeadline = status === "running" && snapshot.eta_ms != null ? Date.now() + snapshot.eta_ms : null;
  renderEta();
  renderStages(snapshot);
  $("stalled").hidden = status !== "stalled";
  $("stalled").textContent = status === "stalled" ? "The node has gone quiet: no news for a while. It may be busy or gone; this page will update as soon as it speaks again." : "";
  const finished = TERMINAL.has(status);
  // hiding the focused button would drop keyboard focus to the top of the page: keep it by the status
  if (finished && document.activeElement === $("cancel")) $("status-line").focus();
  $("cancel").hidden = finished;
  $("cancel").disabled = finished || snapshot.cancel_requested;
  $("cancel-note").hidden = !snapshot.cancel_requested || finished;
  $("cancel-note").textContent = "Cancel requested: waiting for the node to stop.";
  $("findings-count").textContent = `(${snapshot.regions_count})`;
  if (snapshot.result) renderResult(snapshot.result);
  if (snapshot.error) renderFailure(snapshot.error);
  if (status === "completed") toastOnce("completed", "Analysis completed", "ok");
  if (status === "failed") toastOnce("failed", "Analysis failed", "bad");
  if (status === "cancelled") toastOnce("cancelled", "Analysis cancelled", "bad");
  if (snapshot.result?.validation_required) toastOnce("review", "Validation required: a person should check this result", "bad");
}

function renderResult(shown) {
  result = shown;
  $("result").hidden = false;
  $("result-flag").textContent = result.flagged ? "Flagged" : "Not flagged";
  $("result-flag").dataset.flagged = String(result.flagged);
  $("result-score").textContent = result.score.toFixed(3);
  $("result-frames").textContent = `${result.frames_processed} of ${result.total_frames}`;
  $("result-review").hidden = !result.validation_required;
  $("result-summary").textContent = result.summary ?? "";
  labelsFound = addLabels(new Map(), result.regions);
  redrawSoon();
  const body = $("result-regions");
  body.replaceChildren();
  for (const r of result.regions.slice(0, REGIONS_LISTED)) {
    const tr = document.createElement("tr");
    for (const v of [r.frame, r.x, r.y, r.w, r.h, r.score.toFixed(2), r.label ?? ""]) {
      const td = document.createElement("td");
      td.textContent = typeof v === "number" ? String(Math.round(v * 100) / 100) : v;
      tr.append(td);
    }
    body.append(tr);
  }
  drawFrame();
}

// The best of `regions` (the first of equals, as the node picks its key frames); null if none.
function bestRegion(regions) {
  return regions.reduce((a, b) => (a && a.score >= b.score ? a : b), null);
}

// The frame's size in pixels: the result says it. Before that, the picture's own: the node
// shrinks only frames over 640 px, and then at least enough to hold the regions; without
// a picture, the regions' extent.
function frameSize(regions, img) {
  if (result?.frame_width && result?.frame_height) return [result.frame_width, result.frame_height];
  const px = regions.filter((r) => r.units !== "normalized");
  if (img?.naturalWidth) {
    const [w, h] = [img.naturalWidth, img.naturalHeight];
    const scale = Math.max(1, ...px.map((r) => Math.max((r.x + r.w) / w, (r.y + r.h) / h)));
    return [Math.round(w * scale), Math.round(h * scale)];
  }
  return [Math.max(...px.map((r) => r.x + r.w), 1), Math.max(...px.map((r) => r.y + r.h), 1)];
}

// The picture `name` of `frame` under the regions (none: null), kept while it stays the
// same so it does not load again. One that fails (deleted by retention) is not asked again.
function showPicture(frame, name) {
  const box = $("frame-box");
  let img = box.querySelector("img");
  if (img && img.dataset.name === name) return img;
  img?.remove();
  if (!name) return null;
  img = document.createElement("img");
  img.dataset.name = name;
  img.alt = `picture of frame ${frame}`;
  // until the result tells the frame's size, the picture's own stands in for it
  img.addEventListener("load", drawFrame);
  img.addEventListener("error", () => {
    gone.add(name);
    drawFrame();
  });
  img.src = artifactUrl(name);
  box.prepend(img);
  return img;
}

// The frame picked, else the result's best frame, else the latest key frame: its picture
// under its regions (the result's once there is one: they replace the partial results').
function drawFrame() {
  const best = result && bestRegion(result.regions);
  const frame = picked ?? (result ? best?.frame : latestKey) ?? null;
  $("frames").hidden = frame === null && !result;
  const name = pictures.get(frame);
  const img = showPicture(frame, gone.has(name) ? null : name);
  const note = $("frame-note");
  note.hidden = frame === null || img !== null;
  note.textContent = gone.has(name) ? `The picture of frame ${frame} could not be loaded: it may have been deleted.` : `No picture of frame ${frame}.`;
  const follow = $("frame-follow");
  follow.hidden = picked === null;
  follow.textContent = result ? "Show the result's frame" : "Follow the latest key frame";
  for (const button of $("key-frames").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.frame) === frame));
  }
  const svg = $("result-frame");
  svg.replaceChildren();
  if (frame === null) {
    svg.setAttribute("aria-label", "No regions found");
    $("frame-caption").textContent = "No regions found.";
    return;
  }
  const regions = result ? result.regions.filter((r) => r.frame === frame) : partialRegions.get(frame) ?? [];
  const [width, height] = frameSize(regions, img);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const landmarks = regions.reduce((n, r) => n + (r.points?.length ?? 0), 0);
  svg.setAttribute("aria-label", `${regions.length} regions${landmarks ? ` and ${landmarks} landmarks` : ""} drawn on frame ${frame} (${width}×${height})`);
  const what = picked !== null ? "" : result ? ", where the best finding is" : ", the latest key frame";
  const named = labelsLine(regions);
  $("frame-caption").textContent = `Frame ${frame}${what}: ${regions.length} region${regions.length === 1 ? "" : "s"}${named && ` (${named})`}.`;
  const ns = "http://www.w3.org/2000/svg";
  const px = (r) => r.units !== "normalized";
  // a landmark's dot is the same size on any frame: a fraction of the frame's longer side
  const dot = Math.max(width, height) / 160;
  for (const r of regions) {
    const [sx, sy] = px(r) ? [1, 1] : [width, height];
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("class", "region");
    rect.setAttribute("x", r.x * sx);
    rect.setAttribute("y", r.y * sy);
    rect.setAttribute("width", r.w * sx);
    rect.setAttribute("height", r.h * sy);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${r.label ?? "region"} ${r.score.toFixed(2)}`;
    rect.append(title);
    svg.append(rect);
    for (const [x, y] of r.points ?? []) {
      const circle = document.createElementNS(ns, "circle");
      circle.setAttribute("class", "landmark");
      circle.setAttribute("cx", x * sx);
      circle.setAttribute("cy", y * sy);
      circle.setAttribute("r", dot);
      svg.append(circle);
    }
  }
}

// Counts `regions` into `found` by label (the text read, or a class): how many regions
// and in which frames. Regions without a label are not counted. Returns `found`.
function addLabels(found, regions) {
  for (const r of regions) {
    if (r.label == null) continue;
    if (!found.has(r.label)) found.set(r.label, { regions: 0, frames: new Set() });
    const seen = found.get(r.label);
    seen.regions += 1;
    seen.frames.add(r.frame);
  }
  return found;
}

// The labels found, the most found first: [[label, {regions, frames}]].
function byCount(found) {
  return [...found].sort(([a, x], [b, y]) => y.regions - x.regions || a.localeCompare(b));
}

// "HELLO STAGECAST, face × 2": the labels of `regions` with their counts, for one line;
// "" when none has a label.
function labelsLine(regions) {
  const found = byCount(addLabels(new Map(), regions));
  const named = found.slice(0, LABELS_IN_A_LINE).map(([label, { regions: n }]) => (n > 1 ? `${label} × ${n}` : label));
  if (found.length > LABELS_IN_A_LINE) named.push(`${found.length - LABELS_IN_A_LINE} more`);
  return named.join(", ");
}

// The summary of what was found: one item a label, "face × 3 in 2 frames".
function renderLabels() {
  const found = byCount(labelsFound);
  $("labels-found").hidden = found.length === 0;
  const items = found.slice(0, LABELS_LISTED).map(([label, seen]) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const frames = seen.frames.size;
    li.append(name, ` × ${seen.regions} in ${frames} frame${frames === 1 ? "" : "s"}`);
    return li;
  });
  if (found.length > LABELS_LISTED) {
    const more = document.createElement("li");
    more.textContent = `and ${found.length - LABELS_LISTED} more labels`;
    items.push(more);
  }
  $("labels").replaceChildren(...items);
}

// The frames' scores in frame order, in at most CHART_POINTS runs of consecutive frames:
// each run is drawn at its highest score (the first of equals), so no peak is lost.
function scoreRuns() {
  const sorted = [...frameScores].sort(([a], [b]) => a - b);
  const size = Math.ceil(sorted.length / CHART_POINTS);
  const runs = [];
  for (let i = 0; i < sorted.length; i += size) {
    const run = sorted.slice(i, i + size);
    const [frame, score] = run.reduce((best, s) => (s[1] > best[1] ? s : best));
    runs.push({ frame, score, from: run[0][0], to: run.at(-1)[0] });
  }
  return runs;
}

function drawChart() {
  const runs = scoreRuns();
  $("scores").hidden = runs.length === 0;
  if (!runs.length) return;
  const [first, last] = [runs[0].from, runs.at(-1).to];
  const x = (frame) => (last === first ? CHART_W / 2 : ((frame - first) / (last - first)) * CHART_W);
  const y = (score) => (1 - score) * CHART_H;
  const points = runs.map((r) => `${x(r.frame).toFixed(1)},${y(r.score).toFixed(1)}`);
  // one point alone is a line of no length: its round caps draw it as a dot
  $("score-line").setAttribute("points", (points.length === 1 ? [points[0], points[0]] : points).join(" "));
  const top = runs.reduce((best, r) => (r.score > best.score ? r : best));
  const frames = frameScores.size;
  const drawn = runs.length < frames ? `, drawn as ${runs.length} points, each the highest of its frames` : "";
  $("score-chart").setAttribute("aria-label",
    `Score per frame: ${frames} frame${frames === 1 ? "" : "s"} (${first} to ${last})${drawn}, highest ${top.score.toFixed(2)} at frame ${top.frame}`);
  $("score-first").textContent = `frame ${first}`;
  $("score-last").textContent = `frame ${last}`;
  $("scores-table-title").textContent = runs.length < frames
    ? `The scores as a table (the highest of every ${Math.ceil(frames / CHART_POINTS)} frames)`
    : "The scores as a table";
  // the table is built only while someone reads it
  if (!$("scores-table").open) return;
  $("score-rows").replaceChildren(...runs.map((r) => {
    const tr = document.createElement("tr");
    for (const text of [r.from === r.to ? `${r.from}` : `${r.from}–${r.to}`, r.score.toFixed(2)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

function redrawSoon() {
  if (redrawQueued) return;
  redrawQueued = true;
  requestAnimationFrame(() => {
    redrawQueued = false;
    drawChart();
    renderLabels();
  });
}

function pick(frame) {
  picked = frame;
  drawFrame();
}

// A thumbnail in the strip for each key frame (the client delivers each event once, replays
// after a reconnect included, so each arrives once).
function addKeyFrame(frame, name) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.frame = String(frame);
  const img = document.createElement("img");
  img.alt = `frame ${frame}`;
  img.src = artifactUrl(name);
  img.addEventListener("error", () => button.replaceChildren(img.alt));
  const number = document.createElement("span");
  number.setAttribute("aria-hidden", "true");
  number.textContent = String(frame);
  button.append(img, number);
  button.addEventListener("click", () => pick(frame));
  li.append(button);
  $("key-frames").append(li);
  $("key-frames").hidden = false;
  $("key-frames-title").hidden = false;
}

// Only pictures of frames: a node may leave other kinds (masks, reports) under its own words.
function onArtifact(e) {
  if (e.frame == null || !["key_frame", "result"].includes(e.kind)) return;
  pictures.set(e.frame, e.name);
  if (e.kind === "key_frame") {
    latestKey = e.frame;
    addKeyFrame(e.frame, e.name);
  }
  drawFrame();
}

function renderFailure(error) {
  $("failure").hidden = false;
  $("failure-code").textContent = error.code;
  $("failure-message").textContent = error.message;
  $("failure-retry").textContent = error.retryable ? "Running it again may succeed." : "Running it again will fail the same way.";
}

function onEvent(stored) {
  const e = stored.event;
  const item = document.createElement("li");
  item.dataset.seq = String(stored.seq);
  item.textContent = `#${stored.seq} ${fmtTime(stored.ts)} ${e.type}${e.stage ? ` ${e.stage}` : ""}`;
  $("event-log").append(item);
  $("log-count").textContent = String($("event-log").childElementCount);
  switch (e.type) {
    case "progress":
      if (e.message) logLine($("messages"), stored, `${e.stage}: ${e.message}`);
      break;
    case "partial_result": {
      for (const s of e.scores ?? []) frameScores.set(s.frame, s.score);
      // the result's regions replace the partial results' (a replay may bring it first)
      if (!result) addLabels(labelsFound, e.regions);
      redrawSoon();
      // a batch of scores alone is no finding: the chart shows it
      if (!e.regions.length) break;
      const frames = [...new Set(e.regions.map((r) => r.frame))];
      for (const r of e.regions) {
        if (!partialRegions.has(r.frame)) partialRegions.set(r.frame, []);
        partialRegions.get(r.frame).push(r);
      }
      // the line shows the frame the node pictures for this batch: its best region's
      const top = bestRegion(e.regions);
      const count = `${e.regions.length} region${e.regions.length === 1 ? "" : "s"}`;
      const where = `in frame${frames.length > 1 ? "s" : ""} ${frames.join(", ")}`;
      const named = labelsLine(e.regions);
      logLine($("partials"), stored, `${count} ${where} (best ${top.score.toFixed(2)})${named && `: ${named}`}`, () => pick(top.frame));
      drawFrame();
      break;
    }
    case "artifact":
      onArtifact(e);
      break;
    case "started":
      logLine($("messages"), stored, `started${e.model ? ` with ${e.model}` : ""}${e.node ? ` on ${e.node}` : ""}`);
      break;
    case "cancel_requested":
      logLine($("messages"), stored, `cancel requested by ${e.by}`);
      break;
    case "stalled":
      logLine($("messages"), stored, `no news from the node for ${Math.round(e.silent_ms / 1000)} s`);
      break;
    case "failed":
      logLine($("messages"), stored, `failed: ${e.error.code}`);
      break;
    case "cancelled":
      logLine($("messages"), stored, `cancelled${e.reason ? `: ${e.reason}` : ""}`);
      break;
    default:
      break;
  }
}

function problem(text) {
  $("problem").hidden = false;
  $("problem-text").textContent = text;
  $("cancel").disabled = true;
}

function main() {
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const id = query.get("id") ?? "";
  const token = fragment.get("token") ?? query.get("token") ?? "";
  $("analysis-id").textContent = id || "?";
  document.title = `${id} · Stagecast`;
  if (!id || !token) {
    problem("Open this page with ?id=<analysis id>#token=<viewer token>, or start from the home page.");
    $("connection").dataset.state = "closed";
    $("connection").textContent = "not connected";
    return;
  }
  // the token rides in the query: an <img> sends no Authorization header
  artifactUrl = (name) => `/v1/analyses/${encodeURIComponent(id)}/artifacts/${encodeURIComponent(name)}?token=${encodeURIComponent(token)}`;
  $("scores-table").addEventListener("toggle", drawChart);
  $("frame-follow").addEventListener("click", () => {
    pick(null);
    // the button hides itself: keep keyboard focus in the frame view, not at the page top
    $("frames-title").focus();
  });
  const client = new AnalysisClient({ analysisId: id, token });
  const labels = { connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "disconnected" };
  client.addEventListener("state", (e) => {
    $("connection").dataset.state = e.detail.state;
    $("connection").textContent = labels[e.detail.state] ?? e.detail.state;
  });
  client.addEventListener("snapshot", (e) => render(e.detail));
  client.addEventListener("event", (e) => onEvent(e.detail));
  client.addEventListener("terminal", () => {
    $("connection").dataset.state = "finished";
    $("connection").textContent = "finished";
  });
  client.addEventListener("error", (e) => toast(`${e.detail.code}: ${e.detail.message}`, "bad"));
  client.addEventListener("closed", (e) => {
    const { code, reason } = e.detail;
    problem(`${CLOSE_HELP[code] ?? "The edge closed the connection."} (${code}${reason ? `: ${reason}` : ""})`);
  });
  $("cancel").addEventListener("click", () => {
    $("cancel").disabled = true;
    client.cancel();
    $("cancel-note").hidden = false;
    $("cancel-note").textContent = "Cancel requested: waiting for the node to stop.";
    // a disabled button loses focus to the top of the page: keep it by the status, where the end shows
    $("status-line").focus();
  });
  setInterval(renderEta, 1000);
  client.connect();
}

main();
