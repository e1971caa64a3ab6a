// The live dashboard of one analysis: /analysis?id=<id>#token=<viewer token>.
// Everything on the page is drawn from the client's snapshot and events.
import { AnalysisClient } from "/client/v1/stagecast.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const REGIONS_LISTED = 200;
const CLOSE_HELP = {
  4001: "The token is invalid or has expired. Ask your service for a new link.",
  4003: "This token may not watch this analysis.",
  4400: "The address is malformed: check the analysis id.",
  1000: "The edge ended the connection.",
};

let etaDeadline = null;
let toasted = new Set();

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
function logLine(list, stored, text) {
  const li = document.createElement("li");
  li.dataset.seq = String(stored.seq);
  const time = document.createElement("time");
  time.dateTime = new Date(stored.ts).toISOString();
  time.textContent = fmtTime(stored.ts);
  li.append(time, ` ${text}`);
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

function renderResult(result) {
  $("result").hidden = false;
  $("result-flag").textContent = result.flagged ? "Flagged" : "Not flagged";
  $("result-flag").dataset.flagged = String(result.flagged);
  $("result-score").textContent = result.score.toFixed(3);
  $("result-frames").textContent = `${result.frames_processed} of ${result.total_frames}`;
  $("result-review").hidden = !result.validation_required;
  $("result-summary").textContent = result.summary ?? "";
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
  drawFrame(result);
}

// The regions of the frame holding the best one, on a box of the frame's size.
function drawFrame(result) {
  const svg = $("result-frame");
  svg.replaceChildren();
  if (!result.regions.length) {
    svg.setAttribute("aria-label", "No regions found");
    return;
  }
  const best = result.regions.reduce((a, b) => (b.score > a.score ? b : a));
  const regions = result.regions.filter((r) => r.frame === best.frame);
  const px = (r) => r.units !== "normalized";
  const width = result.frame_width ?? Math.max(...regions.filter(px).map((r) => r.x + r.w), 1);
  const height = result.frame_height ?? Math.max(...regions.filter(px).map((r) => r.y + r.h), 1);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("aria-label", `${regions.length} regions drawn on frame ${best.frame} (${width}×${height})`);
  const ns = "http://www.w3.org/2000/svg";
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
  }
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
      const frames = [...new Set(e.regions.map((r) => r.frame))];
      const best = Math.max(...e.regions.map((r) => r.score));
      logLine($("partials"), stored, `${e.regions.length} regions in frame${frames.length > 1 ? "s" : ""} ${frames.join(", ")} (best ${best.toFixed(2)})`);
      break;
    }
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
