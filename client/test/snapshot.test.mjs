// applyEvent against the edge's own state machine, and the socket URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AnalysisClient, applyEvent, socketUrl } from '../stagecast.js';
import { HISTORIES } from './fakes.mjs';

const pending = (analysis_id) => ({ analysis_id, status: 'pending', overall_progress: 0, last_seq: 0, cancel_requested: false, stages: [], regions_count: 0 });

for (const { analysis_id, steps } of HISTORIES) {
  test(`applyEvent matches the edge's state machine: ${analysis_id}`, () => {
    let snapshot = pending(analysis_id);
    for (const { stored, snapshot: expected } of steps) {
      for (const event of stored) snapshot = applyEvent(snapshot, event);
      assert.deepEqual(snapshot, expected, `after seq ${expected.last_seq}`);
    }
  });
}

test('applyEvent leaves its input alone', () => {
  const { steps } = HISTORIES[0];
  const before = structuredClone(steps[1].snapshot);
  const copy = structuredClone(before);
  applyEvent(before, steps[2].stored[0]);
  assert.deepEqual(before, copy);
});

test('socketUrl maps http(s) to ws(s) and keeps a path prefix', () => {
  assert.equal(socketUrl('https://edge.example', 'a1'), 'wss://edge.example/v1/analyses/a1/ws');
  assert.equal(socketUrl('http://127.0.0.1:8787/', 'a_1-B'), 'ws://127.0.0.1:8787/v1/analyses/a_1-B/ws');
  assert.equal(socketUrl('https://x.example/stagecast/?q=1#h', 'a1'), 'wss://x.example/stagecast/v1/analyses/a1/ws');
  assert.equal(socketUrl('wss://x.example', 'a1'), 'wss://x.example/v1/analyses/a1/ws');
  assert.throws(() => socketUrl('ftp://x.example', 'a1'), TypeError);
  assert.throws(() => socketUrl(undefined, 'a1'), /url is required/);
});

test('the constructor refuses what the edge would refuse', () => {
  const base = { url: 'https://edge.example', token: 't' };
  for (const analysisId of ['', 'a/b', 'a b', 'x'.repeat(65), undefined]) {
    assert.throws(() => new AnalysisClient({ ...base, analysisId }), TypeError, String(analysisId));
  }
  assert.throws(() => new AnalysisClient({ ...base, analysisId: 'a1', token: 5 }), TypeError);
  assert.throws(() => new AnalysisClient({ ...base, analysisId: 'a1', since: -1 }), TypeError);
  assert.equal(new AnalysisClient({ ...base, analysisId: 'x'.repeat(64) }).state, 'closed');
});
