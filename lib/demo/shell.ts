/**
 * Commands for the demo scenario: run a program (optionally in a network namespace) and get
 * its output, with a timeout and errors that carry the command, its status and its stderr;
 * and last-resort cleanups that run when the process exits or is ended by a signal, so that
 * an interrupted demo or test leaves no namespace or process behind.
 */
import { spawn, spawnSync } from 'node:child_process';

import { FlowgateError } from '../errors';

export interface ShOptions {
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** Written to the command's stdin, which is otherwise empty. */
  input?: string | Buffer;
  /** SIGKILL after this long; default 30 s. */
  timeoutMs?: number;
}

export class CommandFailedError extends FlowgateError {
  constructor(
    readonly argv: readonly string[],
    readonly status: number | null,
    readonly stdout: string,
    readonly stderr: string,
    why: string,
  ) {
    const detail = stderr.trim() || stdout.trim();
    super('ERR_FLOWGATE_DEMO_COMMAND', `${quote(argv)} ${why}${detail === '' ? '' : `: ${detail}`}`);
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** argv for `argv` in `netns`; a string is a bash script with errexit and pipefail. */
export function inNetns(command: string | readonly string[], netns?: string): string[] {
  const argv = typeof command === 'string' ? ['bash', '-euo', 'pipefail', '-c', command] : [...command];
  return netns === undefined ? argv : ['ip', 'netns', 'exec', netns, ...argv];
}

/** Runs a command; resolves with its stdout, rejects with CommandFailedError. */
export function sh(command: string | readonly string[], options: ShOptions = {}): Promise<string> {
  const argv = inNetns(command, options.netns);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new TypeError('sh: empty command'));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    // A command that exits without reading its stdin must not fail the call with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new CommandFailedError(argv, null, '', '', `could not start: ${err.message}`));
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const out = Buffer.concat(stdout).toString();
      const err = Buffer.concat(stderr).toString();
      if (status === 0) resolve(out);
      else {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : signal !== null ? `killed by ${signal}` : `exited with status ${status}`;
        reject(new CommandFailedError(argv, status, out, err, why));
      }
    });
  });
}

/** Like sh, but resolves with the status and both outputs instead of rejecting on failure. */
export function shStatus(command: string | readonly string[], options: ShOptions = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return sh(command, options).then(
    (stdout) => ({ status: 0, stdout, stderr: '' }),
    (err: unknown) => {
      if (err instanceof CommandFailedError && err.status !== null) return { status: err.status, stdout: err.stdout, stderr: err.stderr };
      throw err;
    },
  );
}

function quote(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

// ---- last-resort cleanups -------------------------------------------------------------------

const exitCleanups = new Set<() => void>();
let hooksInstalled = false;

function runExitCleanups(): void {
  for (const cleanup of [...exitCleanups].reverse()) {
    exitCleanups.delete(cleanup);
    try {
      cleanup();
    } catch {
      // The process is going away; the other cleanups still get their turn.
    }
  }
}

/**
 * Registers a synchronous cleanup (kill a process, delete a namespace) for when the process
 * exits, or is ended by SIGINT, SIGTERM or SIGHUP with nobody else handling the signal.
 * Cleanups run newest first. Returns a function that unregisters it.
 */
export function onExit(cleanup: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true;
    process.on('exit', runExitCleanups);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.on(signal, () => {
        // Someone else (the demo command, mocha) handles it and will exit in its own time.
        if (process.listenerCount(signal) > 1) return;
        runExitCleanups();
        process.removeAllListeners(signal);
        process.kill(process.pid, signal);
      });
    }
  }
  exitCleanups.add(cleanup);
  return () => exitCleanups.delete(cleanup);
}

/** Deletes a network namespace now, synchronously (for exit hooks); a missing one is fine. */
export function deleteNetnsSync(name: string): void {
  spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
}
