// The conventions a command-line tool is held to, checked on the built CLI as a user runs it:
// --version, machine-readable check output, quiet ends when the reader of a pipe goes away,
// and bash completion generated from the options each command parses.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import type { CheckReport } from '../../lib/cli/check';
import { SUBCOMMANDS } from '../../lib/cli/main';
import type { CliOptions } from '../../lib/cli/options';
import { checkConfigText } from '../../lib/config';
import { ControlServer } from '../../lib/control';
import type { GatewayFlow } from '../../lib/gateway/types';
import { spawnFlowgate } from '../helpers/cli';
import { withNetns } from '../helpers/netns';
import { FixedView, fixedFlows } from '../control/fixed-view';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');
const packageVersion = (JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string }).version;

interface PipeRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  /** What was read before the pipe was closed. */
  stdout: string;
  stderr: string;
}

/**
 * Runs `flowgate ARGS` with its stdout (or stderr) a pipe whose reader goes away: at once,
 * before the command writes anything, or after the first chunk, as `| head -1` does.
 */
function runWithReaderGone(args: string[], options: { close: 'stdout' | 'stderr'; when: 'at-once' | 'after-first-output' }): Promise<PipeRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    const closed = options.close === 'stdout' ? child.stdout : child.stderr;
    const kept = options.close === 'stdout' ? child.stderr : child.stdout;
    let read = '';
    let keptText = '';
    kept.on('data', (chunk: Buffer) => (keptText += chunk.toString('utf8')));
    if (options.when === 'at-once') closed.destroy();
    else
      closed.once('data', (chunk: Buffer) => {
        read = chunk.toString('utf8');
        closed.destroy();
      });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve(options.close === 'stdout' ? { status, signal, stdout: read, stderr: keptText } : { status, signal, stdout: keptText, stderr: read });
    });
  });
}

/** Runs a bash snippet; returns its stdout. */
function bash(script: string, cwd: string): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', script], { cwd, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

/** `-c --config`: how the options of a declaration are typed. */
function spellings(options: CliOptions): string[] {
  return Object.entries(options).flatMap(([name, option]) => [...(option.short === undefined ? [] : [`-${option.short}`]), `--${name}`]);
}

describe('flowgate conventions', () => {
  describe('--version', () => {
    for (const flag of ['--version', '-V'])
      it(`prints "flowgate VERSION" from package.json for ${flag}, one line, and exits 0`, async () => {
        const r = await spawnFlowgate([flag]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, `flowgate ${packageVersion}\n`);
        assert.equal(r.stderr, '');
      });

    it('is named in the usage', async () => {
      const r = await spawnFlowgate(['--help']);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /^ {7}flowgate --version$/m);
      assert.match(r.stdout, /-V, --version/);
    });
  });

  describe('check --json', () => {
    it('prints every problem of an invalid file as {file, line, column, path, message} on stdout and exits 1', async () => {
      const file = 'test/fixtures/config/invalid/several-cross-field-errors.yaml';
      // The same checks in this process, so that the CPU checks agree with the child's.
      const expected = checkConfigText(readFileSync(path.join(repo, file), 'utf8'), file).issues;
      assert.ok(expected.length > 10, 'the fixture has many problems');
      const r = await spawnFlowgate(['check', '-c', file, '--json']);
      assert.equal(r.status, 1);
      assert.equal(r.stderr, '');
      const report = JSON.parse(r.stdout) as CheckReport;
      assert.deepEqual(report, {
        file,
        valid: false,
        summary: null,
        problems: expected.map((i) => ({ file: i.file, line: i.line, column: i.col, path: i.path, message: i.message })),
      });
    });

    it('gives a YAML syntax error its line and column and an empty path', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'fg-conv-'));
      try {
        const file = path.join(dir, 'broken.yaml');
        writeFileSync(file, 'ports:\n  eth0: { device: "0000:03:00.0"\n');
        const r = await spawnFlowgate(['check', '--json', '-c', file]);
        assert.equal(r.status, 1);
        const report = JSON.parse(r.stdout) as CheckReport;
        assert.equal(report.valid, false);
        assert.equal(report.problems.length, 1);
        const [problem] = report.problems;
        assert.equal(problem?.file, file);
        assert.equal(problem?.path, '');
        assert.ok(problem !== undefined && problem.line >= 2 && problem.column >= 1, JSON.stringify(problem));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('names a file that cannot be read as a problem, exit 1', async () => {
      const r = await spawnFlowgate(['check', '-c', '/nonexistent/flowgate.yaml', '--json']);
      assert.equal(r.status, 1);
      const report = JSON.parse(r.stdout) as CheckReport;
      assert.equal(report.problems.length, 1);
      assert.match(report.problems[0]?.message ?? '', /ENOENT/);
    });

    it('says a valid file is valid, with what it describes, and exits 0', async () => {
      const r = await spawnFlowgate(['check', '-c', 'config/seed.yaml', '--json']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.deepEqual(JSON.parse(r.stdout), {
        file: 'config/seed.yaml',
        valid: true,
        summary: { ports: 2, vlans: 0, tunnels: 1, routes: 4, workers: 1 },
        problems: [],
      });
    });

    it('keeps the usage error and its exit status 2 when -c is missing', async () => {
      const r = await spawnFlowgate(['check', '--json']);
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^flowgate check: -c FILE is required/);
    });
  });

  describe('when the reader of the output goes away', () => {
    let dir: string;
    let socketPath: string;
    let server: ControlServer;

    before(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'fg-conv-'));
      socketPath = path.join(dir, 'flowgate.sock');
      const view = new FixedView();
      // Megabytes of listing, streamed a page at a time: far more than a pipe holds.
      const [template] = fixedFlows() as [GatewayFlow];
      view.flowsValue = Array.from({ length: 20_000 }, (_, i) => ({ ...template, id: i + 1, sport: 1024 + (i % 60000) }));
      view.pageSize = 1000;
      server = await ControlServer.listen({ socketPath, view });
    });

    after(async () => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    });

    for (const args of [['flows'], ['flows', '--json']])
      it(`flowgate ${args.join(' ')} | head -1: stops quietly with status 0, no stack trace`, async () => {
        const r = await runWithReaderGone([...args, '--socket', socketPath], { close: 'stdout', when: 'after-first-output' });
        assert.match(r.stdout, /^(tcp {6}6 idle=|\{"id":1,)/);
        assert.deepEqual({ status: r.status, signal: r.signal, stderr: r.stderr }, { status: 0, signal: null, stderr: '' });
      });

    it('flowgate stats --json with the pipe closed before it writes: status 0, no stack trace', async () => {
      const r = await runWithReaderGone(['stats', '--json', '--socket', socketPath], { close: 'stdout', when: 'at-once' });
      assert.deepEqual({ status: r.status, signal: r.signal, stderr: r.stderr }, { status: 0, signal: null, stderr: '' });
    });

    it('flowgate flows with its stderr closed still lists every flow and exits 0', async () => {
      // The count line goes to stderr, after the flows.
      const r = await runWithReaderGone(['flows', '--socket', socketPath], { close: 'stderr', when: 'at-once' });
      assert.equal(r.status, 0);
      assert.equal(r.stdout.split('\n').filter((line) => line !== '').length, 20_000);
    });

    for (const args of [['--help'], ...Object.keys(SUBCOMMANDS).map((name) => [name, '--help']), ['completion', 'bash'], ['check', '-c', 'config/seed.yaml', '--json']])
      it(`flowgate ${args.join(' ')} with the pipe closed before it writes: status 0, no stack trace`, async () => {
        const r = await runWithReaderGone(args, { close: 'stdout', when: 'at-once' });
        assert.deepEqual({ status: r.status, signal: r.signal, stderr: r.stderr }, { status: 0, signal: null, stderr: '' });
      });
  });

  describe('completion bash', () => {
    let dir: string;
    let cwd: string;
    let script: string;

    before(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'fg-complete-'));
      const r = await spawnFlowgate(['completion', 'bash']);
      assert.equal(r.status, 0, r.stderr);
      script = path.join(dir, 'flowgate.bash');
      writeFileSync(script, r.stdout);
      // Where the user types, apart from the script.
      cwd = path.join(dir, 'cwd');
      mkdirSync(path.join(cwd, 'configs'), { recursive: true });
      for (const file of ['gw.yaml', 'lab.yml', 'notes.txt', 'with space.yaml']) writeFileSync(path.join(cwd, file), '');
    });

    after(() => rmSync(dir, { recursive: true, force: true }));

    /** What bash offers for the words typed (the last one being completed), as `_flowgate` computes it. */
    async function complete(...typed: string[]): Promise<string[]> {
      const words = typed.map((w) => `'${w}'`).join(' ');
      const r = await bash(`source '${script}'; COMP_WORDS=(${words}); COMP_CWORD=${typed.length - 1}; _flowgate; printf '%s\\n' "\${COMPREPLY[@]}"`, cwd);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      return r.stdout.split('\n').filter((line) => line !== '').sort();
    }

    it('registers _flowgate for the flowgate command when sourced', async () => {
      const r = await bash(`source <('${process.execPath}' '${main}' completion bash) && complete -p flowgate`, dir);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'complete -F _flowgate flowgate\n');
    });

    it("offers the dispatcher's commands and --help, --version first", async () => {
      assert.deepEqual(await complete('flowgate', ''), [...Object.keys(SUBCOMMANDS), '-h', '--help', '-V', '--version'].sort());
      assert.deepEqual(await complete('flowgate', 'c'), Object.keys(SUBCOMMANDS).filter((name) => name.startsWith('c')).sort());
    });

    for (const name of Object.keys(SUBCOMMANDS))
      it(`offers exactly the options flowgate ${name} parses`, async () => {
        const module = await SUBCOMMANDS[name]?.load();
        assert.ok(module?.OPTIONS !== undefined, `lib/cli/${name}.ts exports OPTIONS and parses its arguments with them`);
        assert.deepEqual(await complete('flowgate', name, '-'), spellings(module.OPTIONS).sort());
      });

    for (const name of Object.keys(SUBCOMMANDS))
      it(`flowgate ${name}'s usage text documents every option it parses, and no other`, async () => {
        const module = (await SUBCOMMANDS[name]?.load()) as { OPTIONS?: CliOptions; USAGE?: string } | undefined;
        assert.ok(module?.OPTIONS !== undefined && module.USAGE !== undefined, `lib/cli/${name}.ts exports USAGE and OPTIONS`);
        const documented = [...module.USAGE.matchAll(/^ {2}(-\w, )?--([a-z-]+)/gm)].map((m) => `${m[1] ?? ''}--${m[2] ?? ''}`).sort();
        const declared = Object.entries(module.OPTIONS)
          .map(([option, o]) => `${o.short === undefined ? '' : `-${o.short}, `}--${option}`)
          .sort();
        assert.deepEqual(documented, declared);
      });

    it('completes config files (*.yaml, *.yml) and directories after -c and --config', async () => {
      const expected = ['configs', 'gw.yaml', 'lab.yml', 'with space.yaml'];
      assert.deepEqual(await complete('flowgate', 'check', '-c', ''), expected);
      assert.deepEqual(await complete('flowgate', 'run', '--config', ''), expected);
      assert.deepEqual(await complete('flowgate', 'flows', '--config', '=', ''), expected);
      assert.deepEqual(await complete('flowgate', 'stats', '-c', 'g'), ['gw.yaml']);
    });

    it('completes any file after an option that takes one, and directories after --cache-dir', async () => {
      assert.deepEqual(await complete('flowgate', 'flows', '--socket', ''), ['configs', 'gw.yaml', 'lab.yml', 'notes.txt', 'with space.yaml']);
      assert.deepEqual(await complete('flowgate', 'bench', '--cache-dir', ''), ['configs']);
    });

    it('offers the words an option accepts, and nothing for a value it cannot guess', async () => {
      assert.deepEqual(await complete('flowgate', 'flows', '--proto', ''), ['tcp', 'udp']);
      assert.deepEqual(await complete('flowgate', 'flows', '--state', 'c'), ['closing']);
      assert.deepEqual(await complete('flowgate', 'run', '--log-level', ''), ['debug', 'error', 'info', 'warn']);
      assert.deepEqual(await complete('flowgate', 'demo', '--far-end', 'k'), ['kernel']);
      assert.deepEqual(await complete('flowgate', 'flows', '--src', ''), []);
      assert.deepEqual(await complete('flowgate', 'completion', ''), ['--help', '-h', 'bash']);
    });

    it("completes the network namespaces of 'ip netns' after cleanup --netns", async () => {
      await withNetns(async (netns) => {
        assert.deepEqual(await complete('flowgate', 'cleanup', '--netns', netns.slice(0, -1)), [netns]);
      }, 'fg-complete');
    });

    it('offers the options again after an option and its value', async () => {
      assert.deepEqual(await complete('flowgate', 'check', '-c', 'gw.yaml', '--'), ['--config', '--help', '--json']);
    });

    it('refuses a shell it has no script for in one line, exit status 2', async () => {
      const r = await spawnFlowgate(['completion', 'zsh']);
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, "flowgate completion: no completion for the shell 'zsh' (there is one for bash)\n");
    });

    it('refuses to guess the shell: usage error without one', async () => {
      const r = await spawnFlowgate(['completion']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /^flowgate completion: expected one shell \(bash\)/);
    });
  });
});
