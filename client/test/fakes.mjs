import { readFileSync } from 'node:fs';

// Test doubles for the client: a manual clock and a WebSocket the test plays the edge for.

/** Lets pending promise callbacks (the token await) run. */
export const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A clock that only moves when told to; timers fire in time order. */
export class FakeClock {
  #now;
  #timers = new Map();
  #nextId = 1;

  constructor(now = 1_700_000_000_000) {
    this.#now = now;
  }

  now() {
    return this.#now;
  }

  setTimeout(fn, ms) {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), ms, fn });
    return id;
  }

  clearTimeout(id) {
    this.#timers.delete(id);
  }

  /** The delays (as requested) of the timers still pending. */
  pending() {
    return [...this.#timers.values()].map((t) => t.ms);
  }

  /** Moves time forward by `ms`, firing every timer due on the way. */
  async advance(ms) {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      let next = null;
      for (const [id, t] of this.#timers) {
        if (t.at <= end && (next === null || t.at < next.t.at)) next = { id, t };
      }
      if (next === null) break;
      this.#timers.delete(next.id);
      this.#now = next.t.at;
      next.t.fn();
    }
    this.#now = end;
    await settle();
  }
}

/** A WebSocket class whose instances land in `sockets`; the test speaks for the edge. */
export function fakeWebSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = new URL(url);
      this.protocols = protocols;
      /** Raw text frames the client sent. */
      this.sent = [];
      /** { code, reason } once the client closed it. */
      this.closedByClient = null;
      this.onmessage = null;
      this.onclose = null;
      this.readyState = 1; // open from the start: the tests speak with hello()
      sockets.push(this);
    }

    send(text) {
      if (typeof text !== 'string') throw new TypeError('text frames only');
      this.sent.push(text);
    }

    close(code, reason) {
      if (code !== 1000 && !(code >= 3000 && code <= 4999)) throw new RangeError(`invalid close code ${code}`);
      this.closedByClient ??= { code, reason };
      this.readyState = 2;
    }

    get since() {
      return this.url.searchParams.get('since');
    }

    /** Parsed messages the client sent. */
    get messages() {
      return this.sent.map((t) => JSON.parse(t));
    }

    // --- the edge's side ---

    receive(message) {
      this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) });
    }

    hello(snapshot, { heartbeat_ms = 15_000, recovered = true, resumed_from } = {}) {
      const since = this.since === null ? null : Number(this.since);
      this.receive({
        type: 'hello',
        analysis_id: snapshot.analysis_id,
        snapshot,
        server_ts: 0,
        heartbeat_ms,
        resumed_from: resumed_from === undefined ? since : resumed_from,
        recovered,
      });
    }

    events(...stored) {
      for (const s of stored) this.receive({ type: 'event', ...s });
    }

    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
  }
  return {
    WebSocket: FakeWebSocket,
    sockets,
    get last() {
      return sockets[sockets.length - 1];
    },
  };
}

/** An EventSource class whose instances land in `sources`; the test speaks for the edge. */
export function fakeEventSources() {
  const sources = [];
  class FakeEventSource {
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0; // CONNECTING
      this.closed = false;
      this.onerror = null;
      this.listeners = {};
      sources.push(this);
    }

    addEventListener(type, fn) {
      (this.listeners[type] ??= []).push(fn);
    }

    close() {
      this.closed = true;
      this.readyState = 2;
    }

    get since() {
      return this.url.searchParams.get('since');
    }

    // --- the edge's side ---

    emit(type, message) {
      this.readyState = 1;
      for (const fn of this.listeners[type] ?? []) fn({ data: JSON.stringify(message) });
    }

    hello(snapshot, { recovered = true, resumed_from } = {}) {
      const since = this.since === null ? null : Number(this.since);
      this.emit('hello', {
        type: 'hello',
        analysis_id: snapshot.analysis_id,
        snapshot,
        server_ts: 0,
        heartbeat_ms: 15_000,
        resumed_from: resumed_from === undefined ? since : resumed_from,
        recovered,
      });
    }

    events(...stored) {
      for (const s of stored) this.emit('event', { type: 'event', ...s });
    }

    /** The stream ended or broke: the EventSource reconnects by itself. */
    drop() {
      this.readyState = 0;
      this.onerror?.({});
    }

    /** The edge answered with an error status: the EventSource gives up. */
    refuse() {
      this.readyState = 2;
      this.onerror?.({});
    }
  }
  return {
    EventSource: FakeEventSource,
    sources,
    get last() {
      return sources[sources.length - 1];
    },
  };
}

/** A fetch that records its requests and answers each with the next of `answers`
 * ({ status, body }), or 200 {} when none is left. */
export function fakeFetch(answers = []) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    requests.push({ url: String(url), method: init.method ?? 'GET', headers: init.headers ?? {} });
    const { status = 200, body = {} } = answers.shift() ?? {};
    return { ok: status >= 200 && status < 300, status, json: async () => body };
  };
  return { fetch, requests };
}

// --- a real history ---

/** Histories run through the edge's own state machine (kept in sync by shared/tests/client_fixture.rs). */
export const HISTORIES = JSON.parse(readFileSync(new URL('./fixtures/machine-histories.json', import.meta.url), 'utf8')).analyses;

/** completed-1: started, progress over three stages, partial results, two stalls, a cancel request, completed (seq 1..15). */
const sample = HISTORIES[0];
export const ANALYSIS = sample.analysis_id;
export const STORED = sample.steps.flatMap((step) => step.stored);

/** Stored event `seq` of the sample. */
export const ev = (seq) => STORED[seq - 1];

/** The edge's snapshot once the sample stored events up to `seq` (0: pending). */
export function snapshotAt(seq) {
  if (seq === 0) return { analysis_id: ANALYSIS, status: 'pending', overall_progress: 0, last_seq: 0, cancel_requested: false, stages: [], regions_count: 0 };
  const step = sample.steps.find((s) => s.snapshot.last_seq === seq);
  if (!step) throw new Error(`seq ${seq} ends no step of the sample`);
  return structuredClone(step.snapshot);
}
