// AnalysisClient follows by the same rules as the Rust `stagecast_shared::follow::Follower`:
// each case in fixtures/follower-cases.json was decided by it (shared/tests/follower_fixture.rs),
// and is replayed here against the client on fake sockets.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { AnalysisClient } from '../stagecast.js';
import { FakeClock, fakeWebSockets, settle } from './fakes.mjs';

const { cases } = JSON.parse(readFileSync(new URL('./fixtures/follower-cases.json', import.meta.url), 'utf8'));
const ID = 'follow-1';

const snapshot = (last_seq) => ({
  analysis_id: ID, status: 'running', overall_progress: 0, last_seq, cancel_requested: false, stages: [], regions_count: 0,
});
const stored = (seq) => ({ seq, ts: seq, event: { id: `e${seq}`, type: 'heartbeat' }, overall_progress: 0 });

for (const { name, start_since, refresh_token, steps } of cases) {
  test(`follower case: ${name}`, async () => {
    const clock = new FakeClock();
    const net = fakeWebSockets();
    let calls = 0;
    const client = new AnalysisClient({
      url: 'https://edge.example', analysisId: ID, since: start_since,
      token: refresh_token ? () => `t${++calls}` : 'tok',
      WebSocket: net.WebSocket, clock, random: () => 0.5,
    });
    const delivered = [];
    client.addEventListener('event', (e) => delivered.push(e.detail.seq));
    client.connect();
    await settle();
    for (const [i, step] of steps.entries()) {
      const at = `step ${i} ${JSON.stringify(step)}`;
      const ws = net.last;
      if (step.hello) {
        ws.hello(snapshot(step.hello.last_seq), step.hello);
      } else if (step.event !== undefined) {
        const before = delivered.length;
        ws.events(stored(step.event));
        const got = ws.closedByClient?.code === 4000 ? 'gap' : delivered.length > before ? 'new' : 'repeat';
        assert.equal(got, step.arrival, at);
      } else {
        const tokensBefore = calls;
        ws.serverClose(step.close, 'closed by the edge');
        if (step.after === 'stop') {
          assert.equal(client.state, 'closed', at);
          assert.deepEqual(clock.pending(), [], at);
        } else {
          assert.equal(client.state, 'reconnecting', at);
          await clock.advance(clock.pending()[0]);
          assert.equal(net.last === ws, false, `${at}: no new socket`);
          if (step.after === 'reconnect_with_new_token') assert.equal(calls, tokensBefore + 1, at);
        }
      }
      assert.equal(client.lastSeq, step.since, at);
    }
    const last = steps.at(-1);
    if (last.arrival === 'gap') {
      await clock.advance(clock.pending()[0]);
      assert.equal(net.last.since, String(last.since), 'resumes after the last delivered seq');
    } else if (last.after?.startsWith('reconnect')) {
      assert.equal(net.last.since, String(last.since), 'resumes after the last delivered seq');
    }
    client.close();
  });
}
