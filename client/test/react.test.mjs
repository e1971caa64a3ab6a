// useAnalysis rendered by React 19 into jsdom; the client inside runs on fake sockets and a fake clock.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { JSDOM } from 'jsdom';

import { ANALYSIS, FakeClock, HISTORIES, STORED, ev, fakeWebSockets, settle, snapshotAt } from './fakes.mjs';

const { window } = new JSDOM('<!doctype html><body></body>');
globalThis.window = window;
globalThis.document = window.document;
globalThis.IS_REACT_ACT_ENVIRONMENT = true;
// react-dom looks for a DOM when it loads: imported after the globals.
const { StrictMode, act, createElement: h } = await import('react');
const { createRoot } = await import('react-dom/client');
const { useAnalysis } = await import('../react.js');

// React reports act() misuse, missing keys and the like on console.error: each one fails the test.
const reactErrors = [];
console.error = (...args) => reactErrors.push(args.join(' '));
afterEach(() => {
  assert.deepEqual(reactErrors.splice(0), []);
});

/** Renders a component using the hook; `renders` holds each render's props and hook value. */
async function mount(props = {}, { strict = false } = {}) {
  const clock = new FakeClock();
  const net = fakeWebSockets();
  const container = document.createElement('div');
  const root = createRoot(container);
  const renders = [];
  function Probe(p) {
    const view = useAnalysis(p);
    renders.push({ props: p, view });
    return h(
      'div',
      null,
      h('output', { id: 'state' }, view.state),
      h('output', { id: 'status' }, view.snapshot?.status ?? 'none'),
      h('ol', null, ...view.events.map((e) => h('li', { key: e.seq }, `${e.seq} ${e.event.type}`))),
    );
  }
  const base = { url: 'https://edge.example', analysisId: ANALYSIS, token: 'tok', WebSocket: net.WebSocket, clock, random: () => 0.5 };
  const render = (next) => act(async () => {
    const probe = h(Probe, { ...base, ...next });
    root.render(strict ? h(StrictMode, null, probe) : probe);
  });
  await render(props);
  return {
    clock,
    net,
    renders,
    render,
    get view() {
      return renders.at(-1).view;
    },
    text: (selector) => container.querySelector(selector).textContent,
    items: () => [...container.querySelectorAll('li')].map((li) => li.textContent),
    unmount: () => act(async () => root.unmount()),
  };
}

/** Runs `fn` (the edge speaking, time passing) inside act, so React renders what it caused. */
const edge = (fn) => act(async () => {
  await fn();
});
const seqs = (events) => events.map((e) => e.seq);
/** The states the renders showed, each run of equal states once. */
const stateRuns = (renders) => renders.map((r) => r.view.state).filter((s, i, all) => s !== all[i - 1]);
/** The sockets the client has not closed. */
const open = (net) => net.sockets.filter((ws) => ws.closedByClient === null);

test('the snapshot and the events render after the hello and the events', async () => {
  const t = await mount();
  assert.equal(t.net.sockets.length, 1);
  const ws = t.net.last;
  assert.equal(ws.url.href, 'wss://edge.example/v1/analyses/completed-1/ws?since=0');
  assert.equal(t.text('#state'), 'connecting');
  assert.equal(t.view.snapshot, null);

  await edge(() => ws.hello(snapshotAt(0)));
  assert.equal(t.text('#state'), 'open');
  assert.equal(t.text('#status'), 'pending');
  assert.deepEqual(t.items(), []);

  await edge(() => ws.events(...STORED.slice(0, 8)));
  assert.equal(t.text('#status'), 'stalled');
  assert.deepEqual(t.items(), STORED.slice(0, 8).map((s) => `${s.seq} ${s.event.type}`));
  assert.deepEqual(t.view.snapshot, snapshotAt(8));
  assert.deepEqual(t.view.events, STORED.slice(0, 8));
  assert.equal(t.view.snapshot, t.view.client.snapshot);
  await t.unmount();
});

test('state follows the connection through a reconnect to the terminal close; events stay once each', async () => {
  const t = await mount();
  await edge(() => t.net.last.hello(snapshotAt(0)));
  await edge(() => t.net.last.events(...STORED.slice(0, 5)));
  await edge(() => t.net.last.serverClose(1006, 'gone'));
  assert.equal(t.text('#state'), 'reconnecting');
  assert.deepEqual(t.view.closeInfo, { code: 1006, reason: 'gone' });

  await edge(() => t.clock.advance(500));
  assert.equal(t.net.sockets.length, 2);
  const ws = t.net.last;
  assert.equal(ws.since, '5');
  await edge(() => ws.hello(snapshotAt(9)));
  await edge(() => ws.events(...STORED.slice(2))); // overlaps what arrived before the drop

  assert.deepEqual(seqs(t.view.events), STORED.map((s) => s.seq));
  assert.equal(t.text('#status'), 'completed');
  assert.deepEqual(t.view.snapshot, snapshotAt(15));
  assert.deepEqual(stateRuns(t.renders), ['connecting', 'open', 'reconnecting', 'open', 'closed']);
  assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'analysis completed' });
  assert.deepEqual(t.view.closeInfo, { code: 1000, reason: 'analysis completed' });
  await t.unmount();
});

test('error and closed events reach the view; a refused client stays closed', async () => {
  const t = await mount();
  const ws = t.net.last;
  await edge(() => ws.hello(snapshotAt(0)));
  await edge(() => ws.receive({ type: 'error', code: 'insufficient_scope', message: 'token lacks cancel' }));
  assert.deepEqual(t.view.error, { code: 'insufficient_scope', message: 'token lacks cancel' });
  assert.equal(t.view.state, 'open');

  await edge(() => ws.serverClose(4003, 'analysis not granted'));
  assert.equal(t.text('#state'), 'closed');
  assert.deepEqual(t.view.closeInfo, { code: 4003, reason: 'analysis not granted' });
  await edge(() => t.clock.advance(60_000));
  assert.equal(t.net.sockets.length, 1);
  await t.unmount();
});

test('cancel() sends the cancel message', async () => {
  const t = await mount();
  const ws = t.net.last;
  await edge(() => ws.hello(snapshotAt(0)));
  await edge(() => t.view.cancel());
  assert.deepEqual(ws.messages, [{ type: 'cancel' }]);
  await t.unmount();
});

test('unmounting closes the client and its socket; nothing reconnects', async () => {
  const t = await mount();
  const ws = t.net.last;
  await edge(() => ws.hello(snapshotAt(0)));
  const { client } = t.view;
  await t.unmount();
  assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'closed by client' });
  assert.equal(client.state, 'closed');
  await edge(() => t.clock.advance(60_000));
  assert.equal(t.net.sockets.length, 1);
});

test('StrictMode mounts, unmounts and mounts: the first client is closed, one socket stays open, events show once', async () => {
  const t = await mount({}, { strict: true });
  assert.equal(t.net.sockets.length, 2);
  assert.deepEqual(t.net.sockets[0].closedByClient, { code: 1000, reason: 'closed by client' });
  assert.deepEqual(open(t.net), [t.net.sockets[1]]);

  const ws = t.net.sockets[1];
  await edge(() => ws.hello(snapshotAt(0)));
  await edge(() => ws.events(...STORED.slice(0, 5)));
  assert.deepEqual(seqs(t.view.events), [1, 2, 3, 4, 5]);
  assert.deepEqual(t.items(), STORED.slice(0, 5).map((s) => `${s.seq} ${s.event.type}`));
  assert.equal(t.view.client.state, 'open');
  await t.unmount();
  assert.deepEqual(open(t.net), []);
});

test('a new analysisId or url closes the old client and opens a new one, never showing the old view', async () => {
  const t = await mount();
  const first = t.net.last;
  await edge(() => first.hello(snapshotAt(0)));
  await edge(() => first.events(...STORED.slice(0, 3)));
  const firstClient = t.view.client;

  const other = HISTORIES[1];
  const rendered = t.renders.length;
  await t.render({ analysisId: other.analysis_id });
  assert.deepEqual(first.closedByClient, { code: 1000, reason: 'closed by client' });
  assert.equal(firstClient.state, 'closed');
  assert.equal(t.net.sockets.length, 2);
  assert.equal(t.net.last.url.pathname, `/v1/analyses/${other.analysis_id}/ws`);
  for (const { view } of t.renders.slice(rendered)) {
    assert.equal(view.snapshot, null);
    assert.deepEqual(view.events, []);
    assert.notEqual(view.client, firstClient);
  }
  assert.equal(t.text('#state'), 'connecting');
  // The app may still hold the old client: whatever it does no longer reaches the view.
  await edge(() => firstClient.connect());
  await edge(() => t.net.last.hello(snapshotAt(9)));
  assert.equal(t.view.snapshot, null);
  assert.equal(t.text('#state'), 'connecting');
  await edge(() => firstClient.close());
  const ws = t.net.sockets[1];

  // Up to the step before `failed`: the analysis stays live for the url change below.
  const live = other.steps.slice(0, -1);
  const stored = live.flatMap((step) => step.stored);
  await edge(() => ws.hello({ ...snapshotAt(0), analysis_id: other.analysis_id }));
  await edge(() => ws.events(...stored));
  assert.deepEqual(t.view.events, stored);
  assert.deepEqual(t.view.snapshot, live.at(-1).snapshot);

  await t.render({ analysisId: other.analysis_id, url: 'https://other-edge.example' });
  assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'closed by client' });
  assert.equal(t.net.last.url.host, 'other-edge.example');
  assert.deepEqual(open(t.net), [t.net.last]);
  await t.unmount();
});

test('a new inline token function each render reconnects nothing; the latest one is asked next time', async () => {
  const t = await mount({ token: () => 'tok-1' });
  await edge(settle); // the token function's promise
  assert.deepEqual(t.net.last.protocols, ['stagecast.v1', 'bearer.tok-1']);
  await edge(() => t.net.last.hello(snapshotAt(0)));
  await t.render({ token: () => 'tok-2' });
  await t.render({ token: () => 'tok-3' });
  assert.equal(t.net.sockets.length, 1);
  assert.equal(t.net.last.closedByClient, null);

  await edge(() => t.net.last.serverClose(4010, 'token expired'));
  await edge(() => t.clock.advance(500));
  assert.equal(t.net.sockets.length, 2);
  assert.deepEqual(t.net.last.protocols, ['stagecast.v1', 'bearer.tok-3']);
  await edge(() => t.net.last.hello(snapshotAt(1)));
  await edge(() => t.net.last.events(ev(1), ev(2)));
  assert.deepEqual(seqs(t.view.events), [1, 2]);
  await t.unmount();
});
