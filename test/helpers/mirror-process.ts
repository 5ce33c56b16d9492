// The parent side of test/helpers/mirror-child.ts: start it, wait until it is ready, kill it
// with SIGKILL, as a crash would end flowgate.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

import type { ModelName } from './kernel-lab';
import { atExit } from './netns';

const CHILD = path.join(__dirname, 'mirror-child.js');

/** A mirror-child process, and the lines it printed so far. */
export interface MirrorChild {
  process: ChildProcess;
  lines: string[];
}

/** Starts test/helpers/mirror-child.js with `args`; it is killed at exit if still running. */
export function spawnChild(args: string[], onLine: (line: string) => void = () => undefined): MirrorChild {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const forget = atExit(() => child.kill('SIGKILL'));
  child.on('exit', forget);
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    onLine(line);
  });
  return { process: child, lines };
}

/** Starts test/helpers/mirror-child.js with `args` and resolves once it printed `ready`. */
export async function startChild(args: string[], ready: string): Promise<ChildProcess> {
  let child: ChildProcess | undefined;
  await new Promise<void>((resolve, reject) => {
    child = spawnChild(args, (line) => line === ready && resolve()).process;
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('exit', (code, signal) => reject(new Error(`mirror-child ${args.join(' ')} exited (${signal ?? code}) before '${ready}': ${stderr}`)));
  });
  return child as ChildProcess;
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

