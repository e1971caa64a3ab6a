// AnalysisClient against a fake edge: fake sockets, a manual clock, a fixed random.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AnalysisClient } from '../stagecast.js';
import { ANALYSIS, FakeClock, STORED, ev, fakeWebSockets, settle, snapshotAt } from './fakes.mjs';

const TYPES = ['state', 'hello', 'event', 'snapshot', 'error', 'closed', 'terminal'];

/** A client on fakes, with every event it dispatches recorded. */
function setup(options = {}) {
  const clock = new FakeClock();
  const net = fakeWebSockets();
  const client = new AnalysisClient({
    url: 'https://edge.example',
    analysisId: ANALYSIS,
    token: 'tok',
    WebSocket: net.WebSocket,
    clock,
    random: () => 0.5,
    ...options,
  });
  const seen = Object.fromEntries(TYPES.map((t) => [t, []]));
  for (const type of TYPES) client.addEventListener(type, (e) => seen[type].push(e.detail));
  return { clock, net, client, seen };
}

/** Connects and lets the token resolve: the socket exists afterwards. */
async function connected(options) {
  const t = setup(options);
  t.client.connect();
  await settle();
  return t;
}

/** Lets `ms` pass on an open socket, answering its pings as the edge does. */
async function stayUp(clock, ws, ms) {
  for (let left = ms; left > 0; left -= 1000) {
    await clock.advance(Math.min(1000, left));
    while (ws.sent.length > (ws.answered ?? 0)) {
      ws.answered = (ws.answered ?? 0) + 1;
      ws.receive({ type: 'pong' });
    }
  }
}

const seqs = (events) => events.map((e) => e.seq);
const states = (seen) => seen.state.map((s) => s.state);

test('hello then events keep the snapshot current, each event once and in order', async () => {
  const { net, client, seen } = await connected();
  const ws = net.last;
  assert.equal(ws.url.href, 'wss://edge.example/v1/analyses/completed-1/ws?since=0');
  assert.deepEqual(ws.protocols, ['stagecast.v1', 'bearer.tok']);
  assert.equal(client.state, 'connecting');

  ws.hello(snapshotAt(0));
  assert.equal(client.state, 'open');
  assert.equal(seen.hello.length, 1);
  assert.deepEqual(client.snapshot, snapshotAt(0));

  ws.events(...STORED.slice(0, 8)); // through the first stall
  assert.deepEqual(client.snapshot, snapshotAt(8));
  assert.equal(client.snapshot.status, 'stalled');
  assert.equal(client.snapshot.eta_ms, undefined);
  ws.events(ev(9)); // a node event after the stall: running again
  assert.deepEqual(client.snapshot, snapshotAt(9));
  ws.events(...STORED.slice(9, 13)); // partial result, stall, heartbeat, cancel_requested
  assert.deepEqual(client.snapshot, snapshotAt(13));
  assert.equal(client.snapshot.cancel_requested, true);
  assert.equal(client.snapshot.regions_count, 3);

  assert.equal(client.lastSeq, 13);
  assert.deepEqual(seen.event, STORED.slice(0, 13)); // no `type`, nothing else added
  assert.deepEqual(seen.snapshot.at(-1), snapshotAt(13));
  assert.equal(seen.snapshot.length, 1 + 13);
  assert.equal(seen.terminal.length, 0);
  assert.equal(ws.closedByClient, null);
});

test('an abnormal close resumes from the last seq and drops what was already delivered', async () => {
  const { clock, net, client, seen } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.events(...STORED.slice(0, 5));
  net.last.serverClose(1006);
  assert.equal(client.state, 'reconnecting');
  assert.equal(client.closeInfo.code, 1006);

  await clock.advance(500);
  assert.equal(net.sockets.length, 2);
  const ws = net.last;
  assert.equal(ws.since, '5');
  // The edge is at seq 9; a replay that overlaps what the client has.
  ws.hello(snapshotAt(9));
  ws.events(...STORED.slice(2, 9));
  ws.events(ev(9), ev(10));

  assert.deepEqual(seqs(seen.event), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(client.lastSeq, 10);
  // Events 6..9 are in the hello's snapshot already: not applied twice.
  assert.deepEqual(client.snapshot, snapshotAt(10));
  assert.deepEqual(states(seen), ['connecting', 'open', 'reconnecting', 'open']);
});

test('backoff grows 1, 2, 4 s... to a 30 s cap with full jitter, and resets after 60 s healthy', async () => {
  let r = 0.5;
  // WebSockets only: 'auto' would move to Server-Sent Events (test/transport.test.mjs).
  const { clock, net } = await connected({ random: () => r, transport: 'websocket' });
  const delays = [];
  for (let i = 0; i < 8; i++) {
    net.last.serverClose(1006);
    const [delay] = clock.pending();
    delays.push(delay);
    await clock.advance(delay);
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);

  // Healthy for less than 60 s: the backoff keeps its level.
  net.last.hello(snapshotAt(0));
  await stayUp(clock, net.last, 59_000);
  r = 0.25;
  net.last.serverClose(1012);
  assert.deepEqual(clock.pending(), [7500]);
  await clock.advance(7500);

  // Healthy for 60 s (pongs keep it alive): back to the first step.
  const ws = net.last;
  ws.hello(snapshotAt(0));
  await stayUp(clock, ws, 60_000);
  ws.serverClose(1006);
  assert.deepEqual(clock.pending(), [250]);
  r = 0.999;
  await clock.advance(250);
  net.last.serverClose(1006);
  assert.deepEqual(clock.pending(), [1998]);
});

for (const [code, reason] of [
  [4001, 'missing or invalid token: expired'],
  [4003, 'token not allowed here'],
  [4400, 'malformed request'],
  [1000, 'analysis deleted after its retention period'],
]) {
  test(`close ${code} stops without reconnecting and emits closed`, async () => {
    const { clock, net, client, seen } = await connected();
    net.last.hello(snapshotAt(2));
    net.last.serverClose(code, reason);
    assert.deepEqual(seen.closed, [{ code, reason }]);
    assert.deepEqual(client.closeInfo, { code, reason });
    assert.equal(client.state, 'closed');
    assert.deepEqual(clock.pending(), []);
    await clock.advance(10 * 60_000);
    assert.equal(net.sockets.length, 1);
  });
}

test('4001 with a token function: one fresh token, then a second 4001 stops', async () => {
  let calls = 0;
  const { clock, net, client, seen } = await connected({ token: () => `t${++calls}` });
  net.last.serverClose(4001, 'missing or invalid token');
  await clock.advance(500);
  assert.equal(calls, 2);
  assert.deepEqual(net.last.protocols, ['stagecast.v1', 'bearer.t2']);
  net.last.serverClose(4001, 'missing or invalid token');
  assert.equal(client.state, 'closed');
  assert.equal(seen.closed.length, 1);
  await clock.advance(10 * 60_000);
  assert.equal(net.sockets.length, 2);
  assert.equal(calls, 2);
});

test('4001 after a hello gets a fresh token again: the limit is per failure run', async () => {
  let calls = 0;
  const { clock, net, client } = await connected({ token: () => `t${++calls}` });
  net.last.serverClose(4001);
  await clock.advance(500);
  net.last.hello(snapshotAt(0));
  net.last.serverClose(4001);
  assert.equal(client.state, 'reconnecting');
  await clock.advance(clock.pending()[0]);
  assert.equal(calls, 3);
  assert.deepEqual(net.last.protocols, ['stagecast.v1', 'bearer.t3']);
});

test('4010 calls the token function again and resumes from the last seq', async () => {
  const tokens = ['old', 'new'];
  const { clock, net, client, seen } = await connected({ token: async () => tokens.shift() });
  net.last.hello(snapshotAt(0));
  net.last.events(...STORED.slice(0, 4));
  net.last.serverClose(4010, 'token expired');
  assert.equal(seen.closed.length, 0);
  await clock.advance(500);
  const ws = net.last;
  assert.deepEqual(ws.protocols, ['stagecast.v1', 'bearer.new']);
  assert.equal(ws.since, '4');
  ws.hello(snapshotAt(5), { resumed_from: 4 });
  ws.events(ev(5));
  assert.deepEqual(seqs(seen.event), [1, 2, 3, 4, 5]);
  assert.equal(client.state, 'open');
});

test('4010 with a fixed token stops: there is no fresh token to get', async () => {
  const { clock, net, client, seen } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.serverClose(4010, 'token expired');
  assert.deepEqual(seen.closed, [{ code: 4010, reason: 'token expired' }]);
  assert.equal(client.state, 'closed');
  await clock.advance(60_000);
  assert.equal(net.sockets.length, 1);
});

test('the token function is awaited before every attempt; a failing one is retried with backoff', async () => {
  const pending = [];
  const token = () => new Promise((resolve, reject) => pending.push({ resolve, reject }));
  const { clock, net, client, seen } = setup({ token });
  client.connect();
  await settle();
  assert.equal(net.sockets.length, 0);
  pending.shift().resolve('t1');
  await settle();
  assert.equal(net.sockets.length, 1);

  net.last.serverClose(1012);
  await clock.advance(500);
  assert.equal(pending.length, 1);
  assert.equal(net.sockets.length, 1); // not before the token is there
  pending.shift().reject(new Error('auth server down'));
  await settle();
  assert.deepEqual(seen.error, [{ code: 'token_unavailable', message: 'auth server down' }]);
  assert.deepEqual(clock.pending(), [1000]);
  await clock.advance(1000);
  pending.shift().resolve('t2');
  await settle();
  assert.equal(net.sockets.length, 2);
  assert.deepEqual(net.last.protocols, ['stagecast.v1', 'bearer.t2']);
});

test('commands wait while offline and go out once, after the next hello', async () => {
  const { clock, net, client } = await connected();
  net.last.hello(snapshotAt(2));
  client.requestSnapshot();
  assert.deepEqual(net.last.messages, [{ type: 'snapshot' }]); // open: sent at once

  net.last.serverClose(1006);
  client.cancel();
  client.cancel();
  client.requestSnapshot();
  await clock.advance(500);
  const ws = net.last;
  assert.deepEqual(ws.sent, []); // not before the hello
  ws.hello(snapshotAt(2));
  assert.deepEqual(ws.messages, [{ type: 'cancel' }, { type: 'snapshot' }]);

  ws.serverClose(1006);
  await clock.advance(1000);
  net.last.hello(snapshotAt(2));
  assert.deepEqual(net.last.sent, []); // nothing sent twice
});

test('cancel is not sent again once the edge recorded one', async () => {
  const { clock, net, client } = await connected();
  net.last.hello(snapshotAt(12));
  net.last.serverClose(1006);
  client.cancel(); // queued; meanwhile someone else's cancel went through
  await clock.advance(500);
  net.last.hello(snapshotAt(13));
  assert.equal(client.snapshot.cancel_requested, true);
  client.cancel();
  assert.deepEqual(net.last.sent, []);
});

test('pings go out every heartbeat_ms, and 45 s of silence counts as a dead connection', async () => {
  const { clock, net, client } = await connected();
  const ws = net.last;
  ws.hello(snapshotAt(0));
  ws.events(ev(1), ev(2));
  await clock.advance(15_000);
  assert.deepEqual(ws.sent, ['{"type":"ping"}']); // the exact text the edge auto-answers
  ws.receive({ type: 'pong' });
  await clock.advance(30_000);
  assert.equal(ws.sent.length, 3);
  assert.equal(net.sockets.length, 1);
  await clock.advance(15_000); // 45 s since the pong
  assert.equal(ws.closedByClient?.code, 4000);
  assert.equal(client.state, 'reconnecting');
  await clock.advance(500);
  assert.equal(net.sockets.length, 2);
  assert.equal(net.last.since, '2');
  ws.receive({ type: 'event', ...ev(3) }); // the abandoned socket is ignored
  assert.equal(client.lastSeq, 2);
});

test('a socket left closing without a close event is dropped at the next ping', async () => {
  const { clock, net, client } = await connected();
  const ws = net.last;
  ws.hello(snapshotAt(0));
  ws.readyState = 2; // the edge's close frame arrived; the close event has not
  await clock.advance(15_000);
  assert.deepEqual(ws.sent, []);
  assert.equal(client.state, 'reconnecting');
  assert.equal(client.closeInfo.reason, 'closed without a close event');
  await clock.advance(500);
  assert.equal(net.sockets.length, 2);
});

test('a handshake that never answers is abandoned after 45 s', async () => {
  const { clock, net } = await connected();
  await clock.advance(44_999);
  assert.equal(net.sockets.length, 1);
  await clock.advance(1);
  assert.equal(net.sockets[0].closedByClient?.code, 4000);
  await clock.advance(500);
  assert.equal(net.sockets.length, 2);
});

test('a longer heartbeat_ms stretches the dead-connection timeout', async () => {
  const { clock, net } = await connected();
  net.last.hello(snapshotAt(0), { heartbeat_ms: 40_000 });
  await clock.advance(59_999);
  assert.equal(net.last.closedByClient, null);
  await clock.advance(1);
  assert.equal(net.last.closedByClient?.code, 4000);
});

test('recovered: false replaces the snapshot and accepts the gap once', async () => {
  const { clock, net, client, seen } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.events(ev(1), ev(2));
  net.last.serverClose(1006);
  await clock.advance(500);
  const ws = net.last;
  seen.snapshot.length = 0;
  ws.hello(snapshotAt(12), { recovered: false }); // history before seq 9 was dropped
  assert.deepEqual(client.snapshot, snapshotAt(12));
  assert.deepEqual(seen.snapshot, [snapshotAt(12)]);
  ws.events(...STORED.slice(8, 13));
  assert.deepEqual(seqs(seen.event), [1, 2, 9, 10, 11, 12, 13]);
  assert.deepEqual(client.snapshot, snapshotAt(13));
  assert.equal(client.state, 'open');
});

test('recovered: false behind the last seq: the history started over', async () => {
  const { clock, net, client, seen } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.events(...STORED.slice(0, 4));
  net.last.serverClose(1006);
  await clock.advance(500);
  net.last.hello(snapshotAt(0), { recovered: false });
  assert.equal(client.lastSeq, 0);
  net.last.events(ev(1));
  assert.deepEqual(seqs(seen.event), [1, 2, 3, 4, 1]);
  assert.deepEqual(client.snapshot, snapshotAt(1));
});

test('a gap in a recovered stream resumes from the last seq to fill it', async () => {
  const { clock, net, client, seen } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.events(ev(1), ev(3));
  assert.deepEqual(seqs(seen.event), [1]);
  assert.equal(net.sockets[0].closedByClient?.code, 4000);
  await clock.advance(500);
  assert.equal(net.last.since, '1');
  net.last.hello(snapshotAt(4));
  net.last.events(ev(2), ev(3), ev(4));
  assert.deepEqual(seqs(seen.event), [1, 2, 3, 4]);
  assert.deepEqual(client.snapshot, snapshotAt(4));
});

test('1012, 4008, 4009 and 1013 reconnect with backoff', async () => {
  const { clock, net, client, seen } = await connected({ transport: 'websocket' });
  for (const code of [1012, 4008, 4009, 1013]) {
    net.last.serverClose(code);
    assert.equal(client.state, 'reconnecting', String(code));
    await clock.advance(clock.pending()[0]);
  }
  assert.equal(net.sockets.length, 5);
  assert.equal(seen.closed.length, 0);
});

test('close() stops everything, whenever it comes', async () => {
  // While open.
  let t = await connected();
  t.net.last.hello(snapshotAt(2));
  t.client.close();
  assert.deepEqual(t.net.last.closedByClient, { code: 1000, reason: 'closed by client' });
  assert.equal(t.client.state, 'closed');
  assert.deepEqual(t.clock.pending(), []);
  assert.equal(t.seen.closed.length, 0);
  t.net.last.serverClose(1000); // the echo changes nothing
  await t.clock.advance(10 * 60_000);
  assert.equal(t.net.sockets.length, 1);

  // While waiting to reconnect.
  t = await connected();
  t.net.last.serverClose(1006);
  t.client.close();
  assert.deepEqual(t.clock.pending(), []);
  await t.clock.advance(10 * 60_000);
  assert.equal(t.net.sockets.length, 1);

  // While the token is on its way.
  let resolve;
  t = setup({ token: () => new Promise((r) => (resolve = r)) });
  t.client.connect();
  await settle();
  t.client.close();
  resolve('late');
  await t.clock.advance(10 * 60_000);
  assert.equal(t.net.sockets.length, 0);
  assert.deepEqual(states(t.seen), ['connecting', 'closed']);
});

test('connect() after close() resumes from the last seq', async () => {
  const { net, client } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.events(ev(1), ev(2));
  client.close();
  client.connect();
  await settle();
  assert.equal(net.sockets.length, 2);
  assert.equal(net.last.since, '2');
});

test('a terminal event emits terminal, closes the socket, and nothing reconnects', async () => {
  const { clock, net, client, seen } = await connected();
  net.last.hello(snapshotAt(14));
  net.last.events(...STORED.slice(0, 14)); // the replay
  assert.equal(seen.terminal.length, 0);
  net.last.events(ev(15));
  assert.deepEqual(seen.terminal, [snapshotAt(15)]);
  assert.equal(client.snapshot.status, 'completed');
  assert.deepEqual(net.last.closedByClient, { code: 1000, reason: 'analysis completed' });
  assert.equal(client.state, 'closed');
  assert.deepEqual(clock.pending(), []);
  await clock.advance(10 * 60_000);
  assert.equal(net.sockets.length, 1);
  assert.equal(seen.closed.length, 0);
});

test('a finished analysis: terminal once every event up to the end arrived, even across a reconnect', async () => {
  const { clock, net, seen } = await connected();
  net.last.hello(snapshotAt(15)); // already completed; the replay follows
  net.last.events(...STORED.slice(0, 6));
  assert.equal(seen.terminal.length, 0);
  net.last.serverClose(1006);
  await clock.advance(500);
  assert.equal(net.last.since, '6');
  net.last.hello(snapshotAt(15));
  net.last.events(...STORED.slice(6));
  assert.deepEqual(seqs(seen.event), STORED.map((s) => s.seq));
  assert.equal(seen.terminal.length, 1);
  assert.equal(net.last.closedByClient?.code, 1000);
});

test('since: null asks for no replay; a finished analysis is terminal at the hello', async () => {
  const { net, client, seen } = await connected({ since: null });
  assert.equal(net.last.since, null);
  net.last.hello(snapshotAt(15));
  assert.equal(client.lastSeq, 15);
  assert.equal(seen.event.length, 0);
  assert.equal(seen.terminal.length, 1);
  assert.equal(client.state, 'closed');
});

test('a since option starts the replay there', async () => {
  const { net, client } = await connected({ since: 7 });
  assert.equal(net.last.since, '7');
  assert.equal(client.lastSeq, 7);
});

test('server error messages surface as error events and keep the socket', async () => {
  const { net, client, seen } = await connected();
  net.last.hello(snapshotAt(2));
  client.cancel();
  net.last.receive({ type: 'error', code: 'insufficient_scope', message: 'this token lacks scope cancel' });
  assert.deepEqual(seen.error, [{ code: 'insufficient_scope', message: 'this token lacks scope cancel' }]);
  assert.equal(client.state, 'open');
});

test('a snapshot answer replaces the snapshot', async () => {
  const { net, client, seen } = await connected();
  net.last.hello(snapshotAt(0));
  net.last.events(ev(1), ev(2));
  client.requestSnapshot();
  net.last.receive({ type: 'snapshot', snapshot: snapshotAt(2) });
  assert.deepEqual(client.snapshot, snapshotAt(2));
  assert.equal(seen.snapshot.length, 4);
});

test('a token a subprotocol cannot carry goes in the query instead', async () => {
  const { net } = await connected({ token: 'opaque/with+base64==' });
  assert.deepEqual(net.last.protocols, ['stagecast.v1']);
  assert.equal(net.last.url.searchParams.get('token'), 'opaque/with+base64==');
});

test('junk frames are ignored; events before the hello are ignored', async () => {
  const { net, client, seen } = await connected();
  net.last.receive('not json');
  net.last.receive({ type: 'event', ...ev(1) });
  net.last.receive({ type: 'something_new' });
  assert.equal(seen.event.length, 0);
  net.last.hello(snapshotAt(0));
  net.last.events(ev(1));
  assert.equal(client.lastSeq, 1);
});
