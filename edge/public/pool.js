// The live view of one pool: /pool?name=<pool>#token=<operator token (scope admin)>.
// The pool's socket (GET /v1/pools/{pool}/ws) sends the whole view first, then what
// changes; the lists come from the HTTP routes, fetched again (throttled) whenever the
// queue moves. docs/protocol.md, 14 ("Reading a pool").
import { BACKOFF_BASE_MS, BACKOFF_CAP_MS, HEALTHY_AFTER_MS, SUBPROTOCOL } from "/client/v1/stagecast.js";

const $ = (id) => document.getElementById(id);
const ID = /^[A-Za-z0-9_-]{1,64}$/;
// RFC 7230 token characters: what a subprotocol may hold (JWTs always fit).
const SUBPROTOCOL_SAFE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const QUEUED_SHOWN = 50;
const FINISHED_SHOWN = 25;
/** Lists follow events within this; a burst of events costs one round of fetches. */
const REFRESH_AFTER_MS = 250;
/** The view is read again this often while open: a node that drops while it holds
 * leases has no event of its own until its leases run out. */
const VIEW_EVERY_MS = 10_000;
const CLOSE_HELP = {
  4001: "The token is invalid or has expired. Ask for a new operator link.",
  4003: "This token may not read this pool: it needs scope admin.",
  4400: "The address is malformed: check the pool name.",
  4010: "The token expired while the page was open. Open the page again with a new token.",
  1000: "The edge ended the connection.",
};
const HTTP_HELP = {
  401: CLOSE_HELP[4001],
  403: CLOSE_HELP[4003],
  400: CLOSE_HELP[4400],
};

const state = {
  pool: "",
  token: "",
  /** @type {import('../../client/types/protocol').PoolView | null} */
  view: null,
  /** Local time the view's oldest_queued_ms was measured at. */
  viewAt: 0,
  /** Edge clock minus this browser's, from the socket's server_ts. */
  skew: 0,
  queued: [],
  leased: [],
  finished: [],
  stopped: false,
};

// --- formatting ---

function edgeNow() {
  return Date.now() + state.skew;
}

function fmtTime(ts) {
  return ts ? new Date(ts).toLocaleTimeString() : "—";
}

function fmtAge(ms) {
  if (ms == null || ms < 0) return "—";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

function fmtBytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${Math.round(n / 2 ** 20)} MiB`;
  return `${Math.round(n / 2 ** 10)} KiB`;
}

function fmtPercent(fraction) {
  return `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
}

/** What a heartbeat's metrics say, or null when the node sent none. */
function fmtMetrics(m) {
  if (!m) return null;
  const parts = [];
  if (m.gpu_util != null) parts.push(`GPU ${fmtPercent(m.gpu_util)}`);
  if (m.gpu_mem_used_bytes != null) {
    const total = m.gpu_mem_total_bytes != null ? ` of ${fmtBytes(m.gpu_mem_total_bytes)}` : "";
    parts.push(`GPU memory ${fmtBytes(m.gpu_mem_used_bytes)}${total}`);
  }
  if (m.cpu_util != null) parts.push(`CPU ${fmtPercent(m.cpu_util)}`);
  if (m.rss_bytes != null) parts.push(`memory ${fmtBytes(m.rss_bytes)}`);
  if (m.queue_depth != null) parts.push(`node queue ${m.queue_depth}`);
  return parts.length ? parts.join(" · ") : null;
}

/** The dashboard of one analysis, with the same token in the fragment (never sent). */
function dashboardUrl(id) {
  return `/analysis?id=${encodeURIComponent(id)}#token=${encodeURIComponent(state.token)}`;
}

/** The token's claims, for display only (the edge verifies it), or null. */
function claims(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return null;
  }
}

function analysisLink(id) {
  const a = document.createElement("a");
  a.href = dashboardUrl(id);
  a.textContent = id;
  return a;
}

/**
 * Makes `list`'s children one per row, in order, keyed by `key`: elements stay put where
 * they can, so keyboard focus and screen reader announcements survive a refetch.
 */
function reconcile(list, rows, key, build, update) {
  const existing = new Map([...list.children].map((el) => [el.dataset.key, el]));
  let at = list.firstElementChild;
  for (const row of rows) {
    const k = key(row);
    let el = existing.get(k);
    existing.delete(k);
    if (!el) {
      el = build(row);
      el.dataset.key = k;
    }
    update(el, row);
    if (el === at) at = at.nextElementSibling;
    else list.insertBefore(el, at);
  }
  for (const el of existing.values()) el.remove();
}

// --- rendering ---

function render() {
  const view = state.view;
  if (!view) return;
  $("queued").textContent = String(view.queued);
  $("leased").textContent = String(view.leased);
  const connected = view.nodes.filter((n) => n.connected);
  const used = connected.reduce((sum, n) => sum + n.running.length, 0);
  const slots = connected.reduce((sum, n) => sum + n.slots, 0);
  $("slots-total").textContent = `${used} of ${slots}`;
  $("unserved").hidden = view.models_without_nodes.length === 0;
  $("unserved-list").textContent = view.models_without_nodes.join(", ");
  renderNodes(view.nodes);
  renderQueued();
  renderFinished();
  renderAges();
}

function renderNodes(nodes) {
  $("nodes-count").textContent = `(${nodes.length})`;
  $("nodes-empty").hidden = nodes.length > 0;
  const attempts = new Map(state.leased.map((a) => [a.analysis_id, a.attempt]));
  reconcile($("nodes"), nodes, (n) => n.node_id, buildNode, (li, node) => {
    const used = node.running.length;
    li.dataset.connected = String(node.connected);
    li.dataset.used = String(used);
    li.dataset.slots = String(node.slots);
    const conn = li.querySelector(".node-conn");
    conn.dataset.state = node.connected ? "open" : "closed";
    conn.textContent = node.connected ? "connected" : "disconnected";
    li.querySelector(".node-slots").textContent = `${used} of ${node.slots} slot${node.slots === 1 ? "" : "s"} in use`;
    const bar = li.querySelector(".bar");
    const pct = node.slots > 0 ? Math.round(Math.min(1, used / node.slots) * 100) : used > 0 ? 100 : 0;
    bar.firstElementChild.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", `${used} of ${node.slots} slots in use`);
    const metrics = fmtMetrics(node.metrics);
    li.querySelector(".node-metrics").textContent = metrics ?? "No figures from this node yet.";
    li.querySelector(".node-metrics").classList.toggle("muted", metrics == null);
    const labels = Object.entries(node.labels ?? {}).map(([k, v]) => `${k}=${v}`);
    li.querySelector(".node-models").textContent =
      `Models: ${node.models.length ? node.models.join(", ") : "any (none declared)"}` +
      (labels.length ? ` · labels: ${labels.join(", ")}` : "");
    const running = li.querySelector(".node-running");
    const fingerprint = JSON.stringify(node.running.map((id) => [id, attempts.get(id) ?? null]));
    if (running.dataset.fingerprint !== fingerprint) {
      running.dataset.fingerprint = fingerprint;
      renderRunning(running, node.running, attempts);
    }
    li.dataset.heartbeat = String(node.last_heartbeat_ts);
  });
}

function buildNode(node) {
  const li = document.createElement("li");
  li.className = "node";
  li.dataset.node = node.node_id;
  const head = document.createElement("div");
  head.className = "row";
  const name = document.createElement("strong");
  name.className = "node-id mono";
  name.textContent = node.node_id;
  const conn = document.createElement("span");
  conn.className = "conn node-conn";
  const slots = document.createElement("span");
  slots.className = "node-slots";
  head.append(name, conn, slots);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", `Slots in use on ${node.node_id}`);
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.append(document.createElement("span"));
  const metrics = document.createElement("p");
  metrics.className = "node-metrics";
  const models = document.createElement("p");
  models.className = "node-models muted";
  const running = document.createElement("div");
  running.className = "node-running";
  const seen = document.createElement("p");
  seen.className = "node-seen muted";
  li.append(head, bar, metrics, models, running, seen);
  return li;
}

function renderRunning(box, ids, attempts) {
  box.replaceChildren();
  if (!ids.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "Running nothing.";
    box.append(p);
    return;
  }
  const p = document.createElement("p");
  p.textContent = "Running:";
  const ul = document.createElement("ul");
  ul.className = "running";
  for (const id of ids) {
    const li = document.createElement("li");
    li.dataset.id = id;
    li.append(analysisLink(id));
    const attempt = attempts.get(id);
    if (attempt) li.append(` attempt ${attempt}`);
    ul.append(li);
  }
  box.append(p, ul);
}

function renderQueued() {
  const rows = state.queued.slice(0, QUEUED_SHOWN);
  $("queued-count").textContent = `(${state.view?.queued ?? rows.length})`;
  reconcile($("queued-list"), rows, (a) => a.analysis_id, (a) => {
    const li = document.createElement("li");
    li.dataset.id = a.analysis_id;
    li.append(analysisLink(a.analysis_id), document.createElement("span"));
    li.lastElementChild.className = "muted";
    return li;
  }, (li, a) => {
    li.dataset.submitted = String(a.submitted_ts);
    li.dataset.detail = [
      a.priority ? `priority ${a.priority}` : null,
      a.attempt ? `${a.attempt} earlier attempt${a.attempt === 1 ? "" : "s"}` : null,
    ].filter(Boolean).join(", ");
  });
  const more = (state.view?.queued ?? 0) - rows.length;
  $("queued-more").hidden = more <= 0;
  $("queued-more").textContent = `and ${more} more after these`;
}

function renderFinished() {
  const rows = state.finished.slice(0, FINISHED_SHOWN);
  reconcile($("finished-list"), rows, (a) => a.analysis_id, (a) => {
    const li = document.createElement("li");
    li.dataset.id = a.analysis_id;
    const status = document.createElement("span");
    status.className = "status";
    const time = document.createElement("time");
    const detail = document.createElement("span");
    detail.className = "muted";
    li.append(analysisLink(a.analysis_id), " ", status, " ", time, detail);
    return li;
  }, (li, a) => {
    const status = li.querySelector(".status");
    status.textContent = a.status;
    status.dataset.status = a.status;
    li.dataset.status = a.status;
    const time = li.querySelector("time");
    if (a.finished_ts) {
      time.dateTime = new Date(a.finished_ts).toISOString();
      time.textContent = `at ${fmtTime(a.finished_ts)}`;
    }
    li.lastElementChild.textContent = a.attempt ? `, attempt ${a.attempt}` : "";
  });
}

/** The figures that move with the clock: ages and the time since each heartbeat. */
function renderAges() {
  const view = state.view;
  if (!view) return;
  $("oldest").textContent = view.oldest_queued_ms == null
    ? "nothing waits"
    : fmtAge(view.oldest_queued_ms + (Date.now() - state.viewAt));
  const now = edgeNow();
  for (const li of $("queued-list").children) {
    const detail = li.dataset.detail ? `, ${li.dataset.detail}` : "";
    li.lastElementChild.textContent = ` waiting ${fmtAge(now - Number(li.dataset.submitted))}${detail}`;
  }
  for (const li of $("nodes").children) {
    const since = fmtAge(now - Number(li.dataset.heartbeat));
    li.querySelector(".node-seen").textContent = li.dataset.connected === "true"
      ? `Last heard from ${since} ago.`
      : `Disconnected; last heard from ${since} ago. Its leases end unless it comes back.`;
  }
}

// --- what changes ---

function setView(view) {
  state.view = view;
  state.viewAt = Date.now();
}

function upsertNode(node) {
  const nodes = state.view.nodes.filter((n) => n.node_id !== node.node_id);
  nodes.push(node);
  nodes.sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0));
  state.view.nodes = nodes;
}

function onMessage(msg) {
  if (msg.type === "pool") {
    state.skew = msg.server_ts - Date.now();
    setView(msg.view);
    render();
    refreshSoon(0);
    return;
  }
  if (!state.view) return;
  switch (msg.type) {
    case "node_joined":
      upsertNode(msg.node);
      refreshSoon(); // its `ready` (slots, models) has no event of its own
      break;
    case "node_metrics":
      upsertNode(msg.node);
      break;
    case "node_left":
      state.view.nodes = state.view.nodes.filter((n) => n.node_id !== msg.node_id);
      break;
    case "queue_changed":
      state.view.queued = msg.queued;
      state.view.leased = msg.leased;
      refreshSoon();
      break;
    case "leased": {
      state.queued = state.queued.filter((a) => a.analysis_id !== msg.analysis_id);
      const node = state.view.nodes.find((n) => n.node_id === msg.node);
      if (node && !node.running.includes(msg.analysis_id)) node.running = [...node.running, msg.analysis_id];
      state.leased = [
        { analysis_id: msg.analysis_id, status: "pending", attempt: msg.attempt, priority: 0, node: msg.node, submitted_ts: 0 },
        ...state.leased.filter((a) => a.analysis_id !== msg.analysis_id),
      ];
      refreshSoon();
      break;
    }
    case "finished": {
      const attempt = state.leased.find((a) => a.analysis_id === msg.analysis_id)?.attempt ?? 0;
      for (const node of state.view.nodes) node.running = node.running.filter((id) => id !== msg.analysis_id);
      state.queued = state.queued.filter((a) => a.analysis_id !== msg.analysis_id);
      state.leased = state.leased.filter((a) => a.analysis_id !== msg.analysis_id);
      state.finished = [
        { analysis_id: msg.analysis_id, status: msg.status, attempt, priority: 0, submitted_ts: 0, finished_ts: edgeNow() },
        ...state.finished.filter((a) => a.analysis_id !== msg.analysis_id),
      ];
      refreshSoon();
      break;
    }
    default:
      return; // a later protocol's
  }
  render();
}

// --- HTTP: the view and the lists ---

class Refused extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path) {
  const res = await fetch(path, { headers: { authorization: `Bearer ${state.token}` }, cache: "no-store" });
  const body = await res.json().catch(() => null);
  if (res.status >= 400 && res.status < 500) throw new Refused(res.status, body);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  // a restarting edge can answer 200 with no JSON: passing trouble, not an empty pool
  if (body === null) throw new Error(`HTTP ${res.status} without a JSON body`);
  return body;
}

const refresh = { timer: null, running: false, again: false };

/** Fetches the view and the lists once, `ms` after the first of a burst of changes. */
function refreshSoon(ms = REFRESH_AFTER_MS) {
  if (state.stopped || refresh.timer !== null) return;
  refresh.timer = setTimeout(refreshNow, ms);
}

async function refreshNow() {
  refresh.timer = null;
  if (refresh.running) {
    refresh.again = true;
    return;
  }
  refresh.running = true;
  const base = `/v1/pools/${encodeURIComponent(state.pool)}`;
  try {
    const [view, queued, leased, finished] = await Promise.all([
      api(base),
      api(`${base}/analyses?state=queued&limit=${QUEUED_SHOWN}`),
      api(`${base}/analyses?state=leased&limit=1000`),
      api(`${base}/analyses?state=finished&limit=${FINISHED_SHOWN}`),
    ]);
    if (state.stopped) return;
    setView(view);
    Object.assign(state, { queued, leased, finished });
    render();
  } catch (err) {
    if (err instanceof Refused) {
      stop(`${HTTP_HELP[err.status] ?? "The edge refused to show this pool."} (${err.status}: ${err.message})`);
    }
    // anything else is passing trouble: the next event or the next round tries again
  } finally {
    refresh.running = false;
    if (refresh.again) {
      refresh.again = false;
      refreshSoon();
    }
  }
}

// --- the socket ---

const labels = { connecting: "connecting…", open: "live", reconnecting: "reconnecting…", closed: "disconnected" };
const conn = { ws: null, attempt: 0, openSince: null, retry: null };

function setConnection(s) {
  $("connection").dataset.state = s;
  $("connection").textContent = labels[s];
}

function socketUrl() {
  const url = new URL(`/v1/pools/${encodeURIComponent(state.pool)}/ws`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url;
}

function connect() {
  if (state.stopped) return;
  const url = socketUrl();
  let protocols = [SUBPROTOCOL, `bearer.${state.token}`];
  if (!SUBPROTOCOL_SAFE.test(state.token)) {
    url.searchParams.set("token", state.token); // not a JWT: a subprotocol cannot carry it
    protocols = [SUBPROTOCOL];
  }
  let ws;
  try {
    ws = new WebSocket(url.href, protocols);
  } catch (err) {
    stop(`No connection could be made: ${err.message ?? err}`);
    return;
  }
  conn.ws = ws;
  ws.onopen = () => {
    conn.openSince = Date.now();
    setConnection("open");
  };
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    onMessage(msg);
  };
  ws.onclose = (e) => {
    if (ws !== conn.ws) return;
    conn.ws = null;
    // The browser client's policy: these closes are final for a token that cannot renew.
    if (e.code in CLOSE_HELP) {
      stop(`${CLOSE_HELP[e.code]} (${e.code}${e.reason ? `: ${e.reason}` : ""})`);
      return;
    }
    retry();
  };
}

/** Full-jitter exponential backoff, 1 s doubling to 30 s, reset after a minute up. */
function retry() {
  if (conn.openSince !== null && Date.now() - conn.openSince >= HEALTHY_AFTER_MS) conn.attempt = 0;
  conn.openSince = null;
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** conn.attempt);
  conn.attempt += 1;
  setConnection("reconnecting");
  conn.retry = setTimeout(connect, Math.random() * ceiling);
}

function stop(text) {
  state.stopped = true;
  clearTimeout(conn.retry);
  clearTimeout(refresh.timer);
  const ws = conn.ws;
  conn.ws = null;
  if (ws) ws.close(1000, "stopped");
  setConnection("closed");
  if (text) {
    $("problem").hidden = false;
    $("problem-text").textContent = text;
  }
}

function main() {
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  state.pool = query.get("name") ?? "";
  state.token = fragment.get("token") ?? query.get("token") ?? "";
  $("pool-name").textContent = state.pool || "?";
  document.title = `${state.pool || "Pool"} · pool · Stagecast`;
  if (!ID.test(state.pool) || !state.token) {
    stop(!state.token || !state.pool
      ? "Open this page with ?name=<pool>#token=<operator token>, or start from the home page."
      : "A pool name is 1 to 64 letters, digits, _ or -.");
    return;
  }
  const scopes = String(claims(state.token)?.scope ?? "").split(/\s+/);
  $("scope-note").hidden = scopes.includes("subscribe");
  setInterval(renderAges, 1000);
  setInterval(() => conn.ws?.readyState === WebSocket.OPEN && refreshSoon(0), VIEW_EVERY_MS);
  connect();
}

main();
