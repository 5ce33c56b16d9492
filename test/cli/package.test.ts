// The package as a user gets it: `npm pack`, installed into a new project (its dependencies
// from the npm registry), imported from CommonJS and from an ES module, its types compiled
// by tsc together with the README's TypeScript examples. Installed with --ignore-scripts, so
// the addon is not built: nothing here needs it, and its absence is what shows that the
// entry point loads no native code.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '../../..');
const pkg = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { name: string; version: string };

interface PackResult {
  filename: string;
  files: { path: string }[];
}

function node(cwd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { cwd, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The ```ts blocks of a `## title` section of the README. */
function readmeTypeScript(title: string): string[] {
  const text = readFileSync(path.join(repo, 'README.md'), 'utf8');
  const start = text.indexOf(`\n## ${title}\n`);
  assert.notEqual(start, -1, `README has '## ${title}'`);
  const end = text.indexOf('\n## ', start + 1);
  return [...text.slice(start, end === -1 ? undefined : end).matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

describe('the flowgate package', function () {
  let dir: string;
  let app: string;
  let packed: PackResult;
  let installed: string;

  before(function () {
    this.timeout(180_000);
    dir = mkdtempSync(path.join(tmpdir(), 'fg-package-'));
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    packed = (JSON.parse(out) as PackResult[])[0] as PackResult;
    app = path.join(dir, 'app');
    mkdirSync(app);
    // An ES module project: the strictest consumer (named imports of a CommonJS package).
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', path.join(dir, packed.filename)], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
    installed = path.join(app, 'node_modules', pkg.name);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('ships the entry point and its types, every source binding.gyp compiles, and the example configs; no tests', () => {
    const files = new Set(packed.files.map((f) => f.path));
    const gyp = JSON.parse(readFileSync(path.join(repo, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
    const sources = gyp.targets.flatMap((t) => t.sources);
    const configs = readdirSync(path.join(repo, 'config')).map((f) => `config/${f}`);
    for (const file of ['package.json', 'binding.gyp', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/cli/main.js', ...sources, ...configs])
      assert.ok(files.has(file), `the package holds ${file}`);
    assert.deepEqual([...files].filter((f) => f.startsWith('dist/test/') || f.startsWith('test/')), []);
  });

  it("require('flowgate') gives Dataplane and loadConfig, and loadConfig loads every shipped config example", () => {
    const r = node(app, [
      '-e',
      `const { Dataplane, loadConfig, ConfigError, FlowgateError } = require('flowgate');
       const fs = require('node:fs');
       (async () => {
         const dir = require('node:path').join(require.resolve('flowgate/package.json'), '..', 'config');
         const ports = {};
         for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'))) ports[f] = Object.keys((await loadConfig(dir + '/' + f)).ports);
         console.log(JSON.stringify({ Dataplane: typeof Dataplane, ConfigError: new ConfigError([]) instanceof FlowgateError, ports }));
       })();`,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const result = JSON.parse(r.stdout) as { Dataplane: string; ConfigError: boolean; ports: Record<string, string[]> };
    assert.equal(result.Dataplane, 'function');
    assert.equal(result.ConfigError, true);
    const examples = readdirSync(path.join(repo, 'config')).filter((f) => f.endsWith('.yaml'));
    assert.deepEqual(Object.keys(result.ports).sort(), examples.sort());
    for (const [file, ports] of Object.entries(result.ports)) assert.ok(ports.length > 0, `${file} describes ports`);
  });

  it("import { Dataplane, loadConfig } from 'flowgate' works in an ES module; package.json is exported, internals are not", () => {
    const r = node(app, [
      '--input-type=module',
      '-e',
      `import { Dataplane, loadConfig } from 'flowgate';
       import { createRequire } from 'node:module';
       const require = createRequire(import.meta.url);
       let deep;
       try { require('flowgate/dist/lib/dataplane'); deep = 'loaded'; } catch (err) { deep = err.code; }
       console.log(JSON.stringify({ Dataplane: typeof Dataplane, loadConfig: typeof loadConfig, version: require('flowgate/package.json').version, deep }));`,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { Dataplane: 'function', loadConfig: 'function', version: pkg.version, deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED' });
  });

  it('loads no native code until a Dataplane is made, which then says the addon is not built', () => {
    assert.equal(existsSync(path.join(installed, 'build')), false, 'installed with --ignore-scripts: no addon');
    const r = node(app, [
      '-e',
      `const { Dataplane } = require('flowgate');
       try { new Dataplane(); console.log('constructed'); } catch (err) { console.log(JSON.stringify({ name: err.name, code: err.code, message: err.message })); }`,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const err = JSON.parse(r.stdout) as { name: string; code: string; message: string };
    assert.equal(err.name, 'FlowgateError');
    assert.equal(err.code, 'ERR_FLOWGATE_ADDON_NOT_BUILT');
    assert.match(err.message, /build\/Release\/flowgate\.node is not built: build it with 'npm rebuild flowgate'/);
  });

  it("compiles with tsc: ES module and CommonJS consumers of Dataplane and loadConfig, and the README's TypeScript API examples", function () {
    this.timeout(120_000);
    const consumer = `import { Dataplane, loadConfig, type Flow, type StartOptions } from 'flowgate';

export async function ports(file: string): Promise<string[]> {
  return Object.keys((await loadConfig(file)).ports);
}

export function start(options: StartOptions): Flow[] {
  const dp = new Dataplane();
  dp.start(options);
  // @ts-expect-error: the types are Dataplane's, not any (an unused directive is an error)
  dp.noSuchMethod();
  return dp.flows();
}
`;
    writeFileSync(path.join(app, 'consumer.ts'), consumer);
    writeFileSync(path.join(app, 'consumer-cjs.cts'), consumer);
    readmeTypeScript('The TypeScript API').forEach((block, i) => writeFileSync(path.join(app, `readme-${i}.ts`), block));
    writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'node16',
          moduleResolution: 'node16',
          strict: true,
          noUncheckedIndexedAccess: true,
          noEmit: true,
          // Checking @types/node itself is most of the time and not what is under test.
          skipLibCheck: true,
          // flowgate's types use Buffer: a consumer has @types/node, here the project's own.
          types: ['node'],
          typeRoots: [path.join(repo, 'node_modules/@types')],
        },
        include: ['*.ts', '*.cts'],
      }),
    );
    const r = spawnSync(path.join(repo, 'node_modules/.bin/tsc'), ['-p', app], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.stdout + r.stderr, '');
    assert.equal(r.status, 0);
  });
});
