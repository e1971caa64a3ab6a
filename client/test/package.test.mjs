// @stagecast/client as npm ships it: `npm pack` (its prepack builds the declarations) holds
// exactly the package's files, and a project outside the repo installs the tarball, loads
// both exports and type-checks against them with tsc --strict.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLIENT = fileURLToPath(new URL('..', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const NPM_TIMEOUT = { timeout: 180_000 }; // npm and tsc take seconds; a cold npm cache longer

const work = mkdtempSync(join(tmpdir(), 'stagecast-client-package-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Runs a command; fails with its output unless it exits 0. Returns stdout. */
function run(cwd, command, ...args) {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `${command} ${args.join(' ')} failed (${r.error ?? r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

let tarball;
before(() => {
  const [packed] = JSON.parse(run(CLIENT, 'npm', 'pack', '--pack-destination', work, '--json'));
  tarball = join(work, packed.filename);
}, NPM_TIMEOUT);

test('the tarball holds the modules, their declarations, the README and package.json: nothing else', () => {
  const files = run(work, 'tar', '-tzf', tarball).trim().split('\n').sort();
  assert.deepEqual(files, [
    'package/README.md',
    'package/dist/types/react.d.ts',
    'package/dist/types/stagecast.d.ts',
    'package/dist/types/types/protocol.d.ts',
    'package/package.json',
    'package/react.js',
    'package/stagecast.js',
  ]);

  const unpacked = join(work, 'unpacked');
  mkdirSync(unpacked);
  run(work, 'tar', '-xzf', tarball, '-C', unpacked);
  const pkg = JSON.parse(readFileSync(join(unpacked, 'package/package.json'), 'utf8'));
  // Every path the exports name is in the tarball.
  const targets = Object.values(pkg.exports).flatMap((conditions) => Object.values(conditions));
  for (const target of targets) assert.ok(files.includes(join('package', target)), `exports names ${target}, not packed`);
  // The same module the Worker serves at /client/v1/stagecast.js (edge/src/pages.rs compiles it in).
  assert.equal(readFileSync(join(unpacked, 'package/stagecast.js'), 'utf8'), readFileSync(join(CLIENT, 'stagecast.js'), 'utf8'));
  assert.equal(pkg.dependencies, undefined);

  const workspaceVersion = readFileSync(join(ROOT, 'Cargo.toml'), 'utf8').match(/\[workspace\.package\]\nversion = "([^"]+)"/)[1];
  assert.equal(pkg.version, workspaceVersion, 'client/package.json and the Cargo workspace disagree on the version');
});

// The consumer's code. Each @ts-expect-error fails tsc ("unused directive") should the
// declarations lose their types, e.g. to `any`.
const APP = `
import { AnalysisClient, type Snapshot, type StoredEvent } from '@stagecast/client';
import { useAnalysis } from '@stagecast/client/react';

const client = new AnalysisClient({ url: 'https://edge.example', analysisId: 'a-1', token: () => Promise.resolve('tok') });
const first: Snapshot | null = client.snapshot;
client.connect();

export function Progress({ id }: { id: string }) {
  const { snapshot, events, state, error, closeInfo, cancel } = useAnalysis({ analysisId: id, token: () => 'tok' });
  const last: StoredEvent | undefined = events.at(-1);
  // @ts-expect-error the snapshot is null until the first hello
  snapshot.status;
  // @ts-expect-error since is a seq or null, not a string
  useAnalysis({ analysisId: id, token: 'tok', since: 'latest' });
  // @ts-expect-error 'failed' is an analysis status, not a connection state
  if (state === 'failed') return null;
  return (
    <div data-state={state}>
      <progress value={snapshot?.overall_progress ?? 0} />
      <p>{snapshot?.status} {last?.seq} {error?.code} {closeInfo?.code} {first?.last_seq}</p>
      <button onClick={cancel}>Cancel</button>
    </div>
  );
}
`;

const TSCONFIG = {
  compilerOptions: {
    strict: true,
    noEmit: true,
    skipLibCheck: false, // the shipped .d.ts files are checked too
    target: 'es2022',
    module: 'esnext',
    moduleResolution: 'bundler', // honours `exports`
    lib: ['es2022', 'dom'],
    jsx: 'react-jsx',
    types: [],
  },
  files: ['app.tsx'],
};

test('a project outside the repo installs the tarball, loads both exports and type-checks with tsc --strict', NPM_TIMEOUT, () => {
  const app = join(work, 'consumer');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ private: true, type: 'module' }));
  run(app, 'npm', 'install', '--no-audit', '--no-fund', '--offline', tarball);
  // No runtime dependencies, and the optional react peer is not pulled in.
  assert.deepEqual(readdirSync(join(app, 'node_modules')).sort(), ['.package-lock.json', '@stagecast']);

  // React and its types from the repo, as the app's own dependencies would be.
  symlinkSync(join(ROOT, 'node_modules/react'), join(app, 'node_modules/react'));
  mkdirSync(join(app, 'node_modules/@types'));
  symlinkSync(join(ROOT, 'node_modules/@types/react'), join(app, 'node_modules/@types/react'));

  const loaded = run(app, process.execPath, '--input-type=module', '-e', `
    import { AnalysisClient } from '@stagecast/client';
    import { useAnalysis } from '@stagecast/client/react';
    console.log(typeof AnalysisClient, typeof useAnalysis);
  `);
  assert.equal(loaded.trim(), 'function function');

  writeFileSync(join(app, 'app.tsx'), APP);
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(TSCONFIG));
  run(app, process.execPath, TSC, '-p', 'tsconfig.json');
  // Node's own resolution, as a project without a bundler type-checks.
  const node16 = { ...TSCONFIG.compilerOptions, module: 'node16', moduleResolution: 'node16' };
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, compilerOptions: node16 }));
  run(app, process.execPath, TSC, '-p', 'tsconfig.json');
});
