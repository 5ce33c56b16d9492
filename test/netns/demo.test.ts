// `flowgate demo` (npm start) as a user runs it: the reference scenario comes up, traffic
// goes through the tunnel with flows offloaded, and everything it made is gone afterwards,
// also when it is interrupted.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { sh } from '../../lib/demo/shell';
import { HOOK_TIMEOUT_MS } from './support';

const MAIN = path.resolve(__dirname, '../../lib/cli/main.js');
const SOCKETS = ['/run/flowgate/demo-site-a.sock', '/run/flowgate/demo-site-b.sock'];

interface DemoRun {
  status: number | null;
  stdout: string;
  stderr: string;
  pid: number;
}

/** Runs the demo; `interruptWhen`: send SIGINT once stdout matches it. */
function runDemo(args: string[], interruptWhen?: RegExp): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'demo', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let interrupted = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (interruptWhen !== undefined && !interrupted && interruptWhen.test(stdout)) {
        interrupted = true;
        child.kill('SIGINT');
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr, pid: child.pid ?? 0 }));
  });
}

async function leftovers(pid: number): Promise<string[]> {
  const namespaces = (await sh(['ip', 'netns', 'list'])).split('\n').filter((line) => line.startsWith(`fgdemo-${pid}-`));
  const configs = path.resolve(__dirname, '../../../config');
  const processes = (await sh(['ps', '-eo', 'args']))
    .split('\n')
    .filter((line) => line.includes(`run -c ${configs}/demo-site-`) || /^iperf3 (-s -1 -p 5201|-c 10\.0\.0\.10)/.test(line));
  return [...namespaces, ...processes, ...SOCKETS.filter((socket) => existsSync(socket))];
}

describe('flowgate demo (npm start)', function () {
  this.timeout(HOOK_TIMEOUT_MS);

  it('pings through the tunnel, streams TCP with the fast path carrying it, prints a summary and leaves nothing behind', async () => {
    const run = await runDemo(['--seconds', '3']);
    assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /lan 192\.168\.0\.10 -> remote 10\.0\.0\.10: 3\/3 replies/);
    assert.match(run.stdout, /remote 10\.0\.0\.10 -> lan 192\.168\.0\.10: 3\/3 replies/);
    // Not a terminal here: one plain line per second.
    assert.match(run.stdout, /^t=\d+ s {2}site A: fast [\d.]+ [kM]? ?pkt\/s/m);
    const summary = /site A: (\d+) packets on the fast path, (\d+) on the slow path \([\d.]+ % fast\); (\d+) flows? learned; offload latency p50 [\d.]+ ms/.exec(run.stdout);
    assert.ok(summary !== null, run.stdout);
    const [fast, slow, learned] = summary.slice(1).map(Number) as [number, number, number];
    assert.ok(fast > 10 * slow, `the fast path carried the stream: ${summary[0]}`);
    assert.ok(learned >= 1);
    assert.match(run.stdout, /cleaned up: flowgate stopped, namespaces and temporary files removed/);
    assert.deepEqual(await leftovers(run.pid), []);
  });

  it('cleans up and exits 130 when interrupted with Ctrl-C during the stream', async () => {
    const run = await runDemo(['--seconds', '60'], /TCP stream from the lan host/);
    assert.equal(run.status, 130, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /interrupted by SIGINT: cleaning up\ncleaned up: flowgate stopped, namespaces and temporary files removed/);
    assert.deepEqual(await leftovers(run.pid), []);
  });
});
