// `flowgate flows` against a real dataplane holding a million offloaded connections: the
// listing must be complete and the CLI's memory flat. Times and the server's event-loop
// stalls are printed, not asserted (they depend on the machine and its load).
import assert from 'node:assert/strict';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import * as path from 'node:path';

import type { ScaleJob, ScaleMessage, ScaleRequest } from './flows-scale-child';

const repo = path.resolve(__dirname, '../../..');
const main = path.join(repo, 'dist/lib/cli/main.js');
const CHILD = path.join(__dirname, 'flows-scale-child.js');

const CONNECTIONS = 1_000_000;
/** Flowtable entries: two per connection, with room so that no bucket pair fills. */
const FLOW_CAPACITY = 4 * 1024 * 1024;
const CLI_RSS_LIMIT_BYTES = 200 * 1024 * 1024;

interface CliRun {
  status: number | null;
  /** Newlines written to stdout, counted as they came; the output is not kept. */
  lines: number;
  firstLine: string;
  stderr: string;
  seconds: number;
  peakRssBytes: number;
}

/** Runs the CLI under /usr/bin/time, which reports its peak RSS; stdout is counted, or sent to /dev/null. */
function runCli(args: string[], stdout: 'count' | 'discard'): Promise<CliRun> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-scale-time-'));
  const timeFile = path.join(dir, 'time');
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, process.execPath, main, ...args], {
      stdio: ['ignore', stdout === 'count' ? 'pipe' : 'ignore', 'pipe'],
    });
    let lines = 0;
    let firstLine = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      if (firstLine === '') firstLine = chunk.toString('utf8').split('\n')[0] ?? '';
      for (let at = chunk.indexOf(0x0a); at !== -1; at = chunk.indexOf(0x0a, at + 1)) lines++;
    });
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (status) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      try {
        const peakRssBytes = Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop()) * 1024;
        resolve({ status, lines, firstLine, stderr, seconds, peakRssBytes });
      } catch (err) {
        reject(err as Error);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

describe('flows at scale', function () {
  // Installing a million connections takes half a minute on a loaded two-core machine.
  this.timeout(600_000);
  let dir: string;
  let socketPath: string;
  let server: ChildProcess;
  const messages: ScaleMessage[] = [];
  let waiters: (() => void)[] = [];

  function next(type: ScaleMessage['type']): Promise<ScaleMessage> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const failure = messages.find((m) => m.type === 'failed');
        if (failure !== undefined && failure.type === 'failed') return reject(new Error(`the server failed: ${failure.message}`));
        const index = messages.findIndex((m) => m.type === type);
        if (index === -1) return waiters.push(check);
        resolve(messages.splice(index, 1)[0] as ScaleMessage);
      };
      check();
    });
  }

  function request(message: ScaleRequest): void {
    server.send(message);
  }

  async function serverReport(): Promise<Extract<ScaleMessage, { type: 'report' }>> {
    request({ type: 'report' });
    return (await next('report')) as Extract<ScaleMessage, { type: 'report' }>;
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'fg-scale-'));
    socketPath = path.join(dir, 'flowgate.sock');
    server = fork(CHILD, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    server.on('message', (m: ScaleMessage) => {
      messages.push(m);
      const pending = waiters;
      waiters = [];
      for (const w of pending) w();
    });
    server.on('exit', (code) => {
      messages.push({ type: 'failed', message: `exited with ${code}` });
      for (const w of waiters.splice(0)) w();
    });
    const job: ScaleJob = { socketPath, connections: CONNECTIONS, flowCapacity: FLOW_CAPACITY, workerCpu: availableParallelism() - 1 };
    server.send(job);
    const ready = await next('ready');
    assert.equal(ready.type, 'ready');
    if (ready.type !== 'ready') return;
    console.log(
      `      server: ${ready.installed} connections installed in ${ready.installSeconds.toFixed(1)} s ` +
        `(${ready.hugepages ? 'hugepages' : 'no hugepages'}), ${ready.failed} failed${ready.firstError === null ? '' : ` (first: ${ready.firstError})`}`,
    );
    assert.equal(ready.installed, CONNECTIONS, `every connection fits the flowtable (${ready.firstError ?? ''})`);
  });

  after(async () => {
    if (server.connected) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      request({ type: 'stop' });
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts a million offloaded connections exactly, server-side', async () => {
    request({ type: 'reset-delay' });
    const r = await runCli(['flows', '--socket', socketPath, '--count'], 'count');
    const report = await serverReport();
    console.log(
      `      flows --count: ${r.firstLine} in ${r.seconds.toFixed(2)} s, CLI peak RSS ${mib(r.peakRssBytes)}; ` +
        `server event loop: worst delay ${report.maxDelayMs.toFixed(1)} ms, p99 ${report.p99DelayMs.toFixed(1)} ms`,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.firstLine, String(CONNECTIONS));
    assert.ok(r.peakRssBytes < CLI_RSS_LIMIT_BYTES, `CLI peak RSS ${mib(r.peakRssBytes)}`);
  });

  it('lists a million offloaded connections, a line each, with the CLI under 200 MB', async () => {
    request({ type: 'reset-delay' });
    const r = await runCli(['flows', '--socket', socketPath], 'count');
    const report = await serverReport();
    console.log(
      `      flows (text, counted through a pipe): ${r.lines} lines in ${r.seconds.toFixed(2)} s, CLI peak RSS ${mib(r.peakRssBytes)}; ` +
        `server event loop: worst delay ${report.maxDelayMs.toFixed(1)} ms, p99 ${report.p99DelayMs.toFixed(1)} ms; server peak RSS ${mib(report.rssPeakBytes)}`,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.lines, CONNECTIONS);
    assert.equal(r.stderr, `flowgate v0.1.0: ${CONNECTIONS} flow entries have been shown.\n`);
    assert.match(r.firstLine, /^(tcp|udp) .* src=10\.\d+\.\d+\.\d+ dst=198\.51\.100\.10 .* in=lan out=wan .* id=\d+$/);
    assert.ok(r.peakRssBytes < CLI_RSS_LIMIT_BYTES, `CLI peak RSS ${mib(r.peakRssBytes)}`);
  });

  it('lists them as JSON lines to /dev/null with the CLI under 200 MB', async () => {
    request({ type: 'reset-delay' });
    const r = await runCli(['flows', '--json', '--socket', socketPath], 'discard');
    const report = await serverReport();
    console.log(
      `      flows --json > /dev/null: ${r.seconds.toFixed(2)} s, CLI peak RSS ${mib(r.peakRssBytes)}; ` +
        `server event loop: worst delay ${report.maxDelayMs.toFixed(1)} ms, p99 ${report.p99DelayMs.toFixed(1)} ms`,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.peakRssBytes < CLI_RSS_LIMIT_BYTES, `CLI peak RSS ${mib(r.peakRssBytes)}`);
  });
});
