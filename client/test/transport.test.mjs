// AnalysisClient on Server-Sent Events, and 'auto' moving between the two transports:
// fake sockets, fake EventSources and a fake fetch, a manual clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AnalysisClient, SSE_AFTER_FAILURES, WEBSOCKET_AGAIN_MS } from '../stagecast.js';
import { ANALYSIS, FakeClock, ev, fakeEventSources, fakeFetch, fakeWebSockets, settle, snapshotAt } from './fakes.mjs';

function setup(options = {}, answers = []) {
  const clock = new FakeClock();
  const net = fakeWebSockets();
  const sse = fakeEventSources();
  const http = fakeFetch(answers);
  const client = new AnalysisClient({
    url: 'https://edge.example',
    analysisId: ANALYSIS,
    token: 'tok',
    WebSocket: net.WebSocket,
    EventSource: sse.EventSource,
    fetch: http.fetch,
    clock,
    random: () => 0.5,
    ...options,
  });
  const seqs = [];
  const states = [];
  const errors = [];
  const closed = [];
  client.addEventListener('event', (e) => seqs.push(e.detail.seq));
  client.addEventListener('state', (e) => states.push(e.detail.state));
  client.addEventListener('error', (e) => errors.push(e.detail));
  client.addEventListener('closed', (e) => closed.push(e.detail));
  return { clock, net, sse, http, client, seqs, states, errors, closed };
}

async function started(options, answers) {
  const t = setup(options, answers);
  t.client.connect();
  await settle();
  return t;
}

/** Lets `ms` pass on an open stream, with the edge's heartbeat every 10 s. */
async function stayUp(clock, source, ms) {
  for (let left = ms; left > 0; left -= 10_000) {
    await clock.advance(Math.min(10_000, left));
    if (!source.closed) source.emit('pong', { type: 'pong' });
  }
  await settle();
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test("'sse' streams from /stream with the token in the query, and its own reconnect loses nothing", async () => {
  const { sse, net, client, seqs, states } = await started({ transport: 'sse' });
  assert.equal(net.sockets.length, 0);
  assert.equal(client.transport, 'sse');
  const url = sse.last.url;
  assert.equal(`${url.origin}${url.pathname}`, `https://edge.example/v1/analyses/${ANALYSIS}/stream`);
  assert.equal(url.searchParams.get('since'), '0');
  assert.equal(url.searchParams.get('token'), 'tok');
  sse.last.hello(snapshotAt(0));
  assert.equal(client.state, 'open');
  sse.last.events(ev(1), ev(2), ev(3), ev(4));
  // The edge ended the stream: the EventSource comes back with Last-Event-ID 4, and the
  // edge replays from there (here with one repeat, which the client drops).
  sse.last.drop();
  assert.equal(client.state, 'reconnecting');
  sse.last.hello(snapshotAt(4), { resumed_from: 4 });
  sse.last.events(ev(4), ev(5));
  assert.equal(sse.sources.length, 1, 'the same EventSource');
  assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
  assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'open']);
});

test("'sse' sends cancel and snapshot requests over HTTP with the token in Authorization", async () => {
  const answers = [
    { status: 202, body: { cancel_requested: true } },
    { status: 200, body: snapshotAt(5) },
    { status: 403, body: { error: { code: 'insufficient_scope', message: 'this token lacks scope cancel' } } },
  ];
  const { sse, http, client, errors } = await started({ transport: 'sse' }, answers);
  sse.last.hello(snapshotAt(0));
  client.cancel();
  client.requestSnapshot();
  await settle();
  assert.deepEqual(
    http.requests.map((r) => [r.method, r.url, r.headers.authorization]),
    [
      ['POST', `https://edge.example/v1/analyses/${ANALYSIS}/cancel`, 'Bearer tok'],
      ['GET', `https://edge.example/v1/analyses/${ANALYSIS}`, 'Bearer tok'],
    ],
  );
  assert.deepEqual(client.snapshot, snapshotAt(5));
  // A refused cancel is an `error` event, as on the socket.
  client.cancel();
  await settle();
  assert.deepEqual(errors, [{ code: 'insufficient_scope', message: 'this token lacks scope cancel' }]);
});

test("a refused stream learns the edge's answer: 403 stops with 4003", async () => {
  const refusal = { status: 403, body: { error: { code: 'analysis_not_granted', message: 'not yours' } } };
  const { sse, http, client, closed } = await started({ transport: 'sse' }, [refusal]);
  sse.last.refuse();
  await settle();
  assert.equal(http.requests[0].url, `https://edge.example/v1/analyses/${ANALYSIS}`);
  assert.deepEqual(closed, [{ code: 4003, reason: 'not yours' }]);
  assert.equal(client.state, 'closed');
  assert.ok(sse.last.closed);
});

test('a refused stream with an expired token gets a fresh one and resumes from the last seq', async () => {
  const tokens = ['old', 'new'];
  const expired = { status: 401, body: { error: { code: 'token_expired', message: 'expired' } } };
  const { sse, clock, client, seqs } = await started({ transport: 'sse', token: () => tokens.shift() }, [expired]);
  sse.last.hello(snapshotAt(0));
  sse.last.events(ev(1), ev(2));
  sse.last.refuse();
  await settle();
  assert.equal(client.state, 'reconnecting');
  await clock.advance(clock.pending()[0]);
  await settle();
  assert.equal(sse.sources.length, 2);
  assert.equal(sse.last.url.searchParams.get('token'), 'new');
  assert.equal(sse.last.since, '2');
  sse.last.hello(snapshotAt(2));
  sse.last.events(ev(3));
  assert.deepEqual(seqs, [1, 2, 3]);
});

test("'auto' moves to Server-Sent Events after WebSockets fail before their hello, and back later", async () => {
  const { net, sse, clock, client, seqs } = await started();
  assert.equal(client.transport, 'websocket');
  net.last.hello(snapshotAt(0));
  net.last.events(ev(1), ev(2));
  // A proxy breaks WebSockets from now on: the socket drops, and each retry dies before
  // its hello.
  for (let i = 0; i <= SSE_AFTER_FAILURES; i++) {
    net.last.serverClose(1006);
    await clock.advance(clock.pending()[0]);
    await settle();
  }
  assert.equal(net.sockets.length, 1 + SSE_AFTER_FAILURES, 'the first socket and its failed retries');
  assert.equal(client.transport, 'sse');
  assert.equal(sse.sources.length, 1);
  assert.equal(sse.last.since, '2', 'resumes where the socket stopped');
  sse.last.hello(snapshotAt(2));
  sse.last.events(ev(2), ev(3), ev(4));
  // Later, WebSockets again, from the last seq; the stream is closed.
  await stayUp(clock, sse.last, WEBSOCKET_AGAIN_MS);
  assert.ok(sse.last.closed);
  assert.equal(client.transport, 'websocket');
  assert.equal(net.last.since, '4');
  net.last.hello(snapshotAt(4));
  net.last.events(ev(5), ev(6));
  assert.deepEqual(seqs, range(1, 6), 'nothing lost or repeated across both switches');
  assert.equal(client.state, 'open');
});

test("'auto' goes straight back to the stream when WebSockets still fail", async () => {
  const { net, sse, clock, client, seqs } = await started();
  for (let i = 0; i < SSE_AFTER_FAILURES; i++) {
    net.last.serverClose(1006);
    await clock.advance(clock.pending()[0]);
    await settle();
  }
  sse.last.hello(snapshotAt(0));
  sse.last.events(ev(1));
  await stayUp(clock, sse.last, WEBSOCKET_AGAIN_MS);
  assert.equal(client.transport, 'websocket');
  net.last.serverClose(1006); // one more failure
  await clock.advance(clock.pending()[0]);
  await settle();
  assert.equal(client.transport, 'sse');
  assert.equal(sse.sources.length, 2);
  assert.equal(sse.last.since, '1');
});

test('a socket that reached its hello does not count as a failure', async () => {
  const { net, sse, clock, client } = await started();
  for (let i = 0; i < SSE_AFTER_FAILURES + 2; i++) {
    net.last.hello(snapshotAt(0));
    net.last.serverClose(1006);
    await clock.advance(clock.pending()[0]);
    await settle();
  }
  assert.equal(client.transport, 'websocket');
  assert.equal(sse.sources.length, 0);
});

test("'websocket' never tries Server-Sent Events, and a bad transport throws", async () => {
  const { net, sse, clock } = await started({ transport: 'websocket' });
  for (let i = 0; i < 2 * SSE_AFTER_FAILURES; i++) {
    net.last.serverClose(1006);
    await clock.advance(clock.pending()[0]);
    await settle();
  }
  assert.equal(sse.sources.length, 0);
  assert.throws(() => new AnalysisClient({ url: 'https://e', analysisId: 'a', token: 't', transport: 'smoke' }), /transport must be/);
});
