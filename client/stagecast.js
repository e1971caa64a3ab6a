// Stagecast browser client, protocol v1. Dependency-free ES module; the edge serves it at
// /client/v1/stagecast.js. The wire contract is docs/protocol.md.
//
//   const client = new AnalysisClient({ url, analysisId, token });
//   client.addEventListener('snapshot', (e) => draw(e.detail));
//   client.connect();
//
// Options:
//   url         edge base URL (http(s) or ws(s); default: this page's origin)
//   analysisId  1 to 64 characters of [A-Za-z0-9_-]
//   token       a JWT, or a function returning one or a Promise of one; a function is called
//               before every connection attempt, so it can refresh an expiring token
//   since       where the first connection replays from: 0 (default) = the whole history,
//               null = no replay (the snapshot stands for the past); later ones resume from
//               lastSeq
//   transport   'auto' (default): WebSockets, switching to Server-Sent Events after
//               SSE_AFTER_FAILURES WebSockets in a row failed before their hello, and back
//               to WebSockets WEBSOCKET_AGAIN_MS later; 'websocket' or 'sse': that one only
//   WebSocket, EventSource, fetch, clock { now, setTimeout, clearTimeout }, random:
//               injectable for tests
//
// Methods: connect(), close(), cancel(), requestSnapshot(). Commands wait in a queue while
// the client is not open and go out once, after the next hello.
// Properties: snapshot (the current state, or null before the first hello), lastSeq (the
// seq of the latest event delivered), state ('connecting' | 'open' | 'reconnecting' |
// 'closed'), transport ('websocket' | 'sse': what the current connection is), closeInfo ({ code, reason } of the latest close, or null; code 4000 when the
// client dropped a socket itself: silent for too long, or a gap in the seqs).
// Events (CustomEvent, payload in `detail`):
//   state     { state, previous }
//   hello     the hello message
//   event     each StoredEvent exactly once, in seq order (client.snapshot already applied)
//   snapshot  the new snapshot, after every change
//   terminal  the snapshot, once the analysis completed, failed or was cancelled and every
//             event up to that was delivered; the client has closed by then (state 'closed')
//   error     { code, message } of a server `error` message, or code 'token_unavailable'
//             when the token function failed (the client retries with backoff)
//   closed    { code, reason }: the edge refused us for good (4001, 4003, 4400, 4409, 4010
//             without a token function, or a normal 1000 close), or no WebSocket could be
//             made of the URL (1006); the client stopped
//
// Reconnects: full-jitter exponential backoff (1 s doubling to 30 s, reset once a connection
// stayed up 60 s), since = lastSeq, repeats dropped. A socket silent for 45 s (pings go out
// every hello.heartbeat_ms) counts as dead. On Server-Sent Events (GET .../stream, the
// token in ?token=) the same messages arrive; cancel and snapshot requests go over HTTP;
// the EventSource resumes a stream the edge ended by itself with Last-Event-ID, and every
// other reconnect takes since = lastSeq, so a switch loses and repeats nothing.

/** @typedef {import('./types/protocol.js').Snapshot} Snapshot */
/** @typedef {import('./types/protocol.js').StoredEvent} StoredEvent */
/** @typedef {import('./types/protocol.js').ServerMessage} ServerMessage */
/** @typedef {import('./types/protocol.js').ClientMessage} ClientMessage */
/** @typedef {'connecting' | 'open' | 'reconnecting' | 'closed'} ConnectionState */
/** @typedef {'websocket' | 'sse'} Transport */
/** @typedef {{ code: number, reason: string }} CloseInfo */
/** @typedef {{ now(): number, setTimeout(fn: () => void, ms: number): any, clearTimeout(id: any): void }} Clock */
/**
 * @typedef {object} AnalysisClientOptions
 * @property {string} [url]
 * @property {string} analysisId
 * @property {string | (() => string | Promise<string>)} token
 * @property {number | null} [since]
 * @property {'auto' | Transport} [transport]
 * @property {typeof WebSocket} [WebSocket]
 * @property {typeof EventSource} [EventSource]
 * @property {typeof fetch} [fetch]
 * @property {Clock} [clock]
 * @property {() => number} [random]
 */

export const SUBPROTOCOL = 'stagecast.v1';
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_CAP_MS = 30_000;
export const HEALTHY_AFTER_MS = 60_000;
export const DEAD_AFTER_MS = 45_000;
export const DEFAULT_HEARTBEAT_MS = 30_000;
/** WebSockets failing before their hello this many times in a row: Server-Sent Events. */
export const SSE_AFTER_FAILURES = 3;
/** How long an 'auto' client stays on Server-Sent Events before it tries WebSockets again. */
export const WEBSOCKET_AGAIN_MS = 5 * 60_000;

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
// Closes that retrying cannot fix (4001 and 4010 are decided by the token's kind). The same
// rules as the Rust `stagecast_shared::follow`; test/follower.test.mjs replays its cases.
const FINAL_CODES = new Set([1000, 4003, 4400, 4409]);
const ANALYSIS_ID = /^[A-Za-z0-9_-]{1,64}$/;
// RFC 7230 token characters: what a subprotocol may hold (JWTs always fit).
const SUBPROTOCOL_SAFE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** @type {Clock} */
const realClock = {
  now: () => Date.now(),
  // Wrapped: browsers refuse setTimeout called on another `this`.
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

export class AnalysisClient extends EventTarget {
  /** @type {Snapshot | null} */
  snapshot = null;
  lastSeq = 0;
  /** @type {ConnectionState} */
  state = 'closed';
  /** @type {CloseInfo | null} */
  closeInfo = null;
  /** @type {Transport} */
  transport = 'websocket';

  /** The analysis' HTTP URL: its routes hang off it. */
  #url;
  /** @type {'auto' | Transport} */
  #mode;
  /** WebSockets in a row that failed before their hello. */
  #wsFailures = 0;
  #token;
  #WebSocket;
  #EventSource;
  #fetch;
  #clock;
  #random;
  /** `since` of the next connection until a hello arrived; lastSeq after. */
  #since;
  #resumed = false;
  /** The connection: a WebSocket, or a StreamSocket shaped like one.
   * @type {WebSocket | StreamSocket | null} */
  #ws = null;
  /** Bumped by every attempt and by close(): a stale await or socket sees it and backs off. */
  #generation = 0;
  #attempt = 0;
  /** @type {number | null} */
  #openSince = null;
  #heartbeatMs = DEFAULT_HEARTBEAT_MS;
  #authRetried = false;
  /** The first event after a hello with recovered: false may skip the dropped history. */
  #gapAllowed = false;
  #terminalSent = false;
  /** @type {Map<string, ClientMessage>} */
  #queue = new Map();
  /** Timer ids of the clock: the backoff wait, the next ping, the dead-connection check,
   * and (on Server-Sent Events, 'auto') the next try of WebSockets. */
  #timers = { retry: null, ping: null, dead: null, upgrade: null };

  /** @param {AnalysisClientOptions} options */
  constructor({ url, analysisId, token, since = 0, transport = 'auto', WebSocket, EventSource, fetch, clock, random } = /** @type {any} */ ({})) {
    super();
    if (!ANALYSIS_ID.test(analysisId ?? '')) {
      throw new TypeError(`analysisId must be 1 to 64 characters of [A-Za-z0-9_-], got ${JSON.stringify(analysisId)}`);
    }
    if (typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('token must be a string or a function returning one');
    }
    if (since !== null && !(Number.isSafeInteger(since) && since >= 0)) {
      throw new TypeError('since must be a non-negative integer or null');
    }
    if (!['auto', 'websocket', 'sse'].includes(transport)) {
      throw new TypeError(`transport must be 'auto', 'websocket' or 'sse', got ${JSON.stringify(transport)}`);
    }
    this.#url = analysisUrl(url ?? globalThis.location?.origin, analysisId);
    this.#mode = transport;
    this.transport = transport === 'sse' ? 'sse' : 'websocket';
    this.#token = token;
    this.#WebSocket = WebSocket;
    this.#EventSource = EventSource;
    this.#fetch = fetch;
    this.#clock = clock ?? realClock;
    this.#random = random ?? Math.random;
    this.#since = since;
    this.lastSeq = since ?? 0;
  }

  /** Starts (or, after close() or a stop, resumes from lastSeq). No-op while running. */
  connect() {
    if (this.state !== 'closed') return;
    this.#authRetried = false;
    this.#setState(this.#resumed ? 'reconnecting' : 'connecting');
    this.#open();
  }

  /** Stops everything: the socket, timers, queued commands. Emits no `closed`. */
  close() {
    if (this.state === 'closed') return;
    this.#stop({ code: 1000, reason: 'closed by client' });
  }

  /** Asks the node to stop (scope `cancel`); a no-op once requested or finished. */
  cancel() {
    this.#command({ type: 'cancel' });
  }

  /** Asks the edge for a fresh snapshot (answered with a `snapshot` message). */
  requestSnapshot() {
    this.#command({ type: 'snapshot' });
  }

  // --- connection ---

  async #open() {
    const generation = ++this.#generation;
    let token;
    try {
      token = typeof this.#token === 'function' ? await this.#token() : this.#token;
      if (typeof token !== 'string' || token === '') throw new TypeError('the token function returned no token');
    } catch (err) {
      if (generation !== this.#generation) return;
      this.#emit('error', { code: 'token_unavailable', message: String(err?.message ?? err) });
      this.#retry();
      return;
    }
    if (generation !== this.#generation) return; // close() ran meanwhile

    const since = this.#resumed ? this.lastSeq : this.#since;
    if (this.transport === 'sse') {
      this.#attach(new StreamSocket(this.#url, token, since, this.#EventSource, this.#fetch));
      return;
    }
    const url = new URL(this.#url.replace(/^http/, 'ws') + '/ws');
    if (since !== null) url.searchParams.set('since', String(since));
    let protocols = [SUBPROTOCOL, `bearer.${token}`];
    if (!SUBPROTOCOL_SAFE.test(token)) {
      // Not a JWT: a subprotocol cannot carry it (the constructor would throw).
      url.searchParams.set('token', token);
      protocols = [SUBPROTOCOL];
    }
    const Ctor = this.#WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new Ctor(url.href, protocols);
    } catch (err) {
      // A bad URL or a blocked scheme: retrying cannot help.
      this.#stop({ code: 1006, reason: String(err?.message ?? err) }, true);
      return;
    }
    this.#attach(ws);
  }

  /** @param {WebSocket | StreamSocket} ws */
  #attach(ws) {
    this.#ws = ws;
    ws.onmessage = (e) => ws === this.#ws && this.#onMessage(e.data);
    ws.onclose = (e) => ws === this.#ws && this.#onClose(e.code, e.reason ?? '');
    // A stream the edge ended by itself is resumed by its EventSource.
    if (ws instanceof StreamSocket) ws.onreconnecting = () => ws === this.#ws && this.#setState('reconnecting');
    this.#watchdog(); // also bounds a handshake that never completes
  }

  /** Counts a connection that ended before its hello; 'auto' moves to Server-Sent Events
   * after SSE_AFTER_FAILURES WebSockets in a row. */
  #failedBeforeHello() {
    if (this.#openSince !== null || this.transport !== 'websocket') return;
    this.#wsFailures += 1;
    if (this.#mode === 'auto' && this.#wsFailures >= SSE_AFTER_FAILURES) {
      this.transport = 'sse';
      this.#attempt = 0; // a new way in: no reason to wait long for it
    }
  }

  /** 'auto' on Server-Sent Events: try WebSockets again, resuming from lastSeq; one more
   * failure brings the client back. */
  #tryWebSocketAgain() {
    this.#timers.upgrade = null;
    if (this.state !== 'open' || this.transport !== 'sse') return;
    this.#dropSocket(1000, 'trying WebSockets again');
    this.transport = 'websocket';
    this.#wsFailures = SSE_AFTER_FAILURES - 1;
    this.#openSince = null;
    this.#setState('reconnecting');
    this.#open();
  }

  /** @param {number} code @param {string} reason */
  #onClose(code, reason) {
    this.#failedBeforeHello();
    this.#dropSocket();
    this.closeInfo = { code, reason };
    const fresh = typeof this.#token === 'function';
    if (FINAL_CODES.has(code) || (code === 4010 && !fresh) || (code === 4001 && (!fresh || this.#authRetried))) {
      this.#stop({ code, reason }, true);
      return;
    }
    if (code === 4001) this.#authRetried = true; // one fresh token; a second 4001 stops
    this.#retry();
  }

  /** Drops the socket without waiting for its close (it may never come), then retries. */
  #abandon(reason) {
    this.#failedBeforeHello();
    this.#dropSocket(4000, reason);
    this.closeInfo = { code: 4000, reason };
    this.#retry();
  }

  #retry() {
    if (this.#openSince !== null && this.#clock.now() - this.#openSince >= HEALTHY_AFTER_MS) this.#attempt = 0;
    this.#openSince = null;
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.#attempt);
    this.#attempt += 1;
    this.#setState('reconnecting');
    this.#timers.retry = this.#clock.setTimeout(() => {
      this.#timers.retry = null;
      this.#open();
    }, this.#random() * ceiling);
  }

  /** @param {CloseInfo} info @param {boolean} [refused] */
  #stop(info, refused = false) {
    this.#generation += 1;
    this.#dropSocket(1000, info.reason);
    this.#clearTimer('retry');
    this.#clearTimer('upgrade');
    this.#queue.clear();
    this.#openSince = null;
    this.closeInfo = info;
    this.#setState('closed');
    if (refused) this.#emit('closed', info);
  }

  /** Detaches the current socket (closing it with `code` when given) and its timers. */
  #dropSocket(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    this.#clearTimer('ping');
    this.#clearTimer('dead');
    if (!ws) return;
    ws.onmessage = ws.onclose = null;
    if (ws instanceof StreamSocket) ws.onreconnecting = null;
    if (code !== undefined) {
      try {
        ws.close(code, reason.slice(0, 100));
      } catch {
        // Already closing.
      }
    }
  }

  // --- messages ---

  #onMessage(data) {
    this.#watchdog();
    if (typeof data !== 'string') return;
    /** @type {ServerMessage} */
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg?.type) {
      case 'hello':
        this.#onHello(msg);
        break;
      case 'event':
        if (this.state === 'open') this.#onEvent(msg);
        break;
      case 'snapshot':
        // Events before it on this socket are in it already; never step back.
        if (this.snapshot && msg.snapshot.last_seq >= this.snapshot.last_seq) this.#setSnapshot(msg.snapshot);
        this.#checkTerminal();
        break;
      case 'error':
        this.#emit('error', { code: msg.code, message: msg.message });
        break;
      // 'pong' only feeds the watchdog; unknown types are a later protocol's.
    }
  }

  /** @param {Extract<ServerMessage, { type: 'hello' }>} msg */
  #onHello(msg) {
    const ws = this.#ws;
    this.#openSince = this.#clock.now();
    this.#authRetried = false;
    if (this.transport === 'websocket') this.#wsFailures = 0;
    else if (this.#mode === 'auto' && this.#timers.upgrade === null) {
      this.#timers.upgrade = this.#clock.setTimeout(() => this.#tryWebSocketAgain(), WEBSOCKET_AGAIN_MS);
    }
    this.#heartbeatMs = msg.heartbeat_ms > 0 ? msg.heartbeat_ms : DEFAULT_HEARTBEAT_MS;
    this.#watchdog();
    this.#schedulePing();
    const last = msg.snapshot.last_seq;
    if (msg.resumed_from === null) {
      this.lastSeq = Math.max(this.lastSeq, last); // nothing replays: the snapshot is the past
    } else if (!msg.recovered && last < this.lastSeq) {
      this.lastSeq = last; // the analysis' history started over (deleted, then re-created)
    }
    this.#gapAllowed = !msg.recovered;
    this.#resumed = true;
    // The hello's snapshot is the truth now; replayed events up to its last_seq are in it.
    this.snapshot = msg.snapshot;
    for (const command of this.#queue.values()) if (!this.#needless(command)) ws?.send(JSON.stringify(command));
    this.#queue.clear();
    // Listeners run last: one may call close().
    this.#setState('open');
    this.#emit('hello', msg);
    this.#emit('snapshot', this.snapshot);
    if (this.#ws === ws) this.#checkTerminal();
  }

  /** @param {Extract<ServerMessage, { type: 'event' }>} msg */
  #onEvent(msg) {
    const { type: _, ...stored } = msg;
    if (stored.seq <= this.lastSeq) return; // a repeat after reconnecting
    if (stored.seq > this.lastSeq + 1 && !this.#gapAllowed) {
      this.#abandon(`missed events after seq ${this.lastSeq}`); // resume fills the gap
      return;
    }
    this.#gapAllowed = false;
    this.lastSeq = stored.seq;
    const changed = this.snapshot !== null && stored.seq > this.snapshot.last_seq;
    if (changed) this.snapshot = applyEvent(this.snapshot, stored);
    this.#emit('event', stored);
    if (changed) this.#emit('snapshot', this.snapshot);
    this.#checkTerminal();
  }

  /** Done once the analysis finished and every event up to the end was delivered. */
  #checkTerminal() {
    const s = this.snapshot;
    if (!s || !TERMINAL.has(s.status) || this.lastSeq < s.last_seq) return;
    // Closed first, so `terminal` is the last word.
    if (this.state !== 'closed') this.#stop({ code: 1000, reason: `analysis ${s.status}` });
    if (!this.#terminalSent) {
      this.#terminalSent = true;
      this.#emit('terminal', s);
    }
  }

  /** @param {ClientMessage} command */
  #command(command) {
    if (this.#needless(command)) return;
    if (this.state === 'open' && this.#ws) this.#ws.send(JSON.stringify(command));
    else this.#queue.set(command.type, command); // one of each is enough
  }

  /** A cancel the edge already recorded, or one too late, would only earn an error. */
  #needless(command) {
    const s = this.snapshot;
    return command.type === 'cancel' && s !== null && (s.cancel_requested || TERMINAL.has(s.status));
  }

  // --- timers ---

  #schedulePing() {
    this.#clearTimer('ping');
    this.#timers.ping = this.#clock.setTimeout(() => {
      this.#timers.ping = null;
      const ws = this.#ws;
      if (!ws) return;
      // Closing but no close event yet: Node's WebSocket can sit there for 30 s. Nothing
      // more arrives on it, so go (the next attempt learns the code if it was final).
      if (ws.readyState >= 2) return this.#abandon('closed without a close event');
      ws.send('{"type":"ping"}'); // this exact text: the edge answers it without waking
      this.#schedulePing();
    }, this.#heartbeatMs);
  }

  /** (Re)arms the dead-connection timer: any message proves the socket alive. */
  #watchdog() {
    this.#clearTimer('dead');
    const ms = Math.max(DEAD_AFTER_MS, this.#heartbeatMs * 1.5);
    this.#timers.dead = this.#clock.setTimeout(() => {
      this.#timers.dead = null;
      this.#abandon(`no message for ${ms / 1000} s`);
    }, ms);
  }

  /** @param {'retry' | 'ping' | 'dead' | 'upgrade'} name */
  #clearTimer(name) {
    if (this.#timers[name] !== null) this.#clock.clearTimeout(this.#timers[name]);
    this.#timers[name] = null;
  }

  // --- output ---

  /** @param {Snapshot} snapshot */
  #setSnapshot(snapshot) {
    this.snapshot = snapshot;
    this.#emit('snapshot', snapshot);
  }

  /** @param {ConnectionState} state */
  #setState(state) {
    const previous = this.state;
    if (state === previous) return;
    this.state = state;
    this.#emit('state', { state, previous });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * The HTTP URL of an analysis (`.../v1/analyses/{id}`), from an http(s) or ws(s) base.
 * @param {string | undefined} base @param {string} analysisId
 */
export function analysisUrl(base, analysisId) {
  if (!base) throw new TypeError('url is required outside a browser page');
  const url = new URL(base, globalThis.location?.href);
  const schemes = { 'http:': 'http:', 'https:': 'https:', 'ws:': 'http:', 'wss:': 'https:' };
  const scheme = schemes[/** @type {keyof schemes} */ (url.protocol)];
  if (!scheme) throw new TypeError(`url must be http(s) or ws(s), got ${url.protocol}`);
  url.protocol = scheme;
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/analyses/${analysisId}`;
  url.search = '';
  url.hash = '';
  return url.href;
}

/**
 * The WebSocket URL of an analysis, without `since` and token.
 * @param {string | undefined} base @param {string} analysisId
 */
export function socketUrl(base, analysisId) {
  return `${analysisUrl(base, analysisId).replace(/^http/, 'ws')}/ws`;
}

/** The close code a socket would have been closed with for an HTTP refusal. */
function closeCodeFor(status) {
  if (status === 401) return 4001;
  if (status === 403) return 4003;
  if (status === 429) return 4008;
  if (status === 503) return 1013;
  if (status >= 500) return 1012;
  return 4400;
}

/**
 * A Server-Sent Events stream of an analysis, shaped like the WebSocket the client uses:
 * `onmessage` gets the socket's messages (hello, event, pong), `send` takes the client's
 * (cancel and snapshot go over HTTP, ping needs nothing), `onclose` tells why it ended.
 */
class StreamSocket {
  /** 0 until the hello, 1 open, 3 closed: WebSocket's values. */
  readyState = 0;
  /** @type {((e: { data: string }) => void) | null} */
  onmessage = null;
  /** @type {((e: { code: number, reason: string }) => void) | null} */
  onclose = null;
  /** @type {(() => void) | null} */
  onreconnecting = null;
  #url;
  #token;
  #fetch;
  #source;

  /**
   * @param {string} url the analysis' HTTP URL @param {string} token
   * @param {number | null} since @param {typeof EventSource | undefined} Source
   * @param {typeof fetch | undefined} fetcher
   */
  constructor(url, token, since, Source, fetcher) {
    this.#url = url;
    this.#token = token;
    this.#fetch = fetcher ?? ((...args) => globalThis.fetch(...args));
    const stream = new URL(`${url}/stream`);
    if (since !== null) stream.searchParams.set('since', String(since));
    stream.searchParams.set('token', token); // an EventSource cannot send a header
    const Ctor = Source ?? globalThis.EventSource;
    this.#source = new Ctor(stream.href);
    const deliver = (/** @type {MessageEvent} */ e) => this.onmessage?.({ data: e.data });
    this.#source.addEventListener('hello', (e) => {
      this.readyState = 1;
      deliver(e);
    });
    this.#source.addEventListener('event', deliver);
    this.#source.addEventListener('pong', deliver);
    this.#source.onerror = () => {
      if (this.readyState === 3) return;
      // CONNECTING: it comes back by itself, with Last-Event-ID; CLOSED: refused.
      if (this.#source.readyState !== 2) this.onreconnecting?.();
      else this.#refused();
    };
  }

  /** @param {string} text a client message */
  send(text) {
    const { type } = JSON.parse(text);
    if (type === 'cancel') this.#request('POST', '/cancel', () => {});
    if (type === 'snapshot') this.#request('GET', '', (body) => this.#reply({ type: 'snapshot', snapshot: body }));
  }

  close() {
    this.readyState = 3;
    this.#source.close();
  }

  /** The stream was refused: learn why from the same route's HTTP answer. */
  async #refused() {
    this.#source.close();
    let code = 1006;
    let reason = 'the stream failed';
    try {
      const response = await this.#fetch(this.#url, { headers: { authorization: `Bearer ${this.#token}` } });
      if (!response.ok) {
        code = closeCodeFor(response.status);
        reason = (await response.json())?.error?.message ?? reason;
      }
    } catch {
      // unreachable: a network failure, retried like one
    }
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** @param {string} method @param {string} path @param {(body: any) => void} then */
  async #request(method, path, then) {
    try {
      const response = await this.#fetch(`${this.#url}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.#token}` },
      });
      const body = await response.json();
      if (response.ok) then(body);
      else this.#reply({ type: 'error', code: body?.error?.code ?? 'internal', message: body?.error?.message ?? '' });
    } catch (err) {
      this.#reply({ type: 'error', code: 'unavailable', message: String(/** @type {any} */ (err)?.message ?? err) });
    }
  }

  /** @param {object} message as the edge would have sent it on a socket */
  #reply(message) {
    if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
  }
}

/**
 * The snapshot after one stored event, as the edge's state machine computes it; the
 * stored event carries overall_progress and eta_ms. Returns a new object.
 * @param {Snapshot} snapshot @param {StoredEvent} stored @returns {Snapshot}
 */
export function applyEvent(snapshot, stored) {
  const s = { ...snapshot, stages: snapshot.stages.map((st) => ({ ...st })) };
  const { ts } = stored;
  const e = /** @type {any} */ (stored.event);
  s.last_seq = stored.seq;
  s.updated_ts = ts;
  s.overall_progress = stored.overall_progress;
  if (stored.eta_ms === undefined || stored.eta_ms === null) delete s.eta_ms;
  else s.eta_ms = stored.eta_ms;
  switch (e.type) {
    case 'started':
      s.stages = e.stages.map((/** @type {any} */ st) => ({ name: st.name, weight: st.weight, progress: 0 }));
      s.started_ts = ts;
      s.status = 'running';
      break;
    case 'progress': {
      const stage = s.stages.find((st) => st.name === e.stage);
      if (stage) {
        stage.progress = e.stage_progress;
        stage.started_ts ??= ts;
        if (e.stage_progress >= 1) stage.finished_ts ??= ts;
      }
      s.stage = e.stage;
      s.status = 'running';
      break;
    }
    case 'partial_result':
      s.regions_count += e.regions.length;
      s.status = 'running';
      break;
    case 'heartbeat':
      s.status = 'running'; // a stalled node that speaks again is running
      break;
    case 'completed':
      for (const stage of s.stages) {
        stage.progress = 1;
        stage.finished_ts ??= ts;
      }
      s.result = e.result;
      s.regions_count = e.result.regions.length;
      s.status = 'completed';
      break;
    case 'failed':
      s.error = e.error;
      s.status = 'failed';
      break;
    case 'cancelled':
      s.status = 'cancelled';
      break;
    case 'cancel_requested':
      s.cancel_requested = true;
      break;
    case 'stalled':
      s.status = 'stalled';
      break;
    // Unknown types (a later protocol's): only seq, ts and progress apply.
  }
  return s;
}
