// The kernel journal: what a KernelMirror changed survives the process that changed it
// (kill -9), so that the next instance, or `flowgate cleanup`, puts the kernel back exactly.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

import { KernelMirror } from '../../lib/slowpath/kernel';
import { createLab, deleteLab, modelV1, snapshot, type Lab, type ModelName } from '../helpers/kernel-lab';
import { atExit, sh } from '../helpers/netns';

const CHILD = path.join(__dirname, '../helpers/mirror-child.js');

/** Starts test/helpers/mirror-child.js and resolves once it printed `ready`. */
export async function startChild(args: string[], ready: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const forget = atExit(() => child.kill('SIGKILL'));
  child.on('exit', forget);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => line === ready && resolve());
    child.on('exit', (code, signal) => reject(new Error(`mirror-child ${args.join(' ')} exited (${signal ?? code}) before '${ready}': ${stderr}`)));
  });
  return child;
}

/** kill -9 and wait until it is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** A mirror in its own process applies `model` to `netns` and is killed with SIGKILL. */
export async function crashAfterApply(netns: string, model: ModelName, runtimeDir: string): Promise<number> {
  const child = await startChild(['apply', netns, model, runtimeDir], 'applied');
  await killHard(child);
  return child.pid as number;
}

describe('kernel journal', () => {
  let lab: Lab | undefined;
  let mirror: KernelMirror | undefined;
  let runtimeDir: string;

  beforeEach(() => {
    runtimeDir = mkdtempSync(path.join(tmpdir(), 'fg-journal-'));
  });

  afterEach(async () => {
    await mirror?.teardown().catch(() => undefined);
    await deleteLab(lab);
    lab = undefined;
    mirror = undefined;
    rmSync(runtimeDir, { recursive: true, force: true });
  });

  it('after kill -9, the next mirror that applies the same model gives back on teardown the kernel of before the first start', async () => {
    lab = await createLab();
    // ip_forward rewrites conf/all/accept_redirects: an unusual original must survive the crash too.
    await sh(['sysctl', '-q', '-w', 'net.ipv4.conf.all.accept_redirects=0'], { netns: lab.gw });
    const before = await snapshot(lab.gw);
    await crashAfterApply(lab.gw, 'v1', runtimeDir);
    assert.notDeepEqual(await snapshot(lab.gw), before);

    mirror = new KernelMirror({ netns: lab.gw, runtimeDir });
    await mirror.apply(modelV1());
    await mirror.teardown();
    assert.deepEqual(await snapshot(lab.gw), before);
  });
});
