// Host-side helpers for network tests: run commands (optionally inside a network namespace)
// and create namespaces that are deleted again even when a test fails or the process exits.

import { spawn, spawnSync } from 'node:child_process';

export interface ShOptions {
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** Written to the command's stdin, which is otherwise empty. */
  input?: string | Buffer;
  /** Kill the command (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
}

export class CommandError extends Error {
  constructor(
    message: string,
    readonly command: readonly string[],
    readonly status: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** argv for running `command` in `netns`; a string is a bash script with errexit and pipefail. */
export function commandLine(command: string | readonly string[], netns?: string): string[] {
  const argv = typeof command === 'string' ? ['bash', '-euo', 'pipefail', '-c', command] : [...command];
  return netns === undefined ? argv : ['ip', 'netns', 'exec', netns, ...argv];
}

/**
 * Runs a command and resolves with its stdout; rejects with a CommandError carrying the exit
 * status and both outputs when it fails, cannot start or times out.
 */
export function sh(command: string | readonly string[], options: ShOptions = {}): Promise<string> {
  const argv = commandLine(command, options.netns);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new TypeError('sh: command must not be empty'));
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
      reject(new CommandError(`${quote(argv)}: ${err.message}`, argv, null, null, '', ''));
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const out = Buffer.concat(stdout).toString();
      const err = Buffer.concat(stderr).toString();
      if (status === 0) {
        resolve(out);
        return;
      }
      const why = timedOut ? `timed out after ${timeoutMs} ms` : signal ? `killed by ${signal}` : `exited with status ${status}`;
      const detail = err.trim() || out.trim();
      reject(new CommandError(`${quote(argv)} ${why}${detail ? `: ${detail}` : ''}`, argv, status, signal, out, err));
    });
  });
}

function quote(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

const exitCleanups = new Set<() => void>();
let exitHooksInstalled = false;

function runExitCleanups(): void {
  for (const cleanup of [...exitCleanups]) {
    exitCleanups.delete(cleanup);
    try {
      cleanup();
    } catch {
      // The process is going away; the remaining cleanups still get their turn.
    }
  }
}

/**
 * Registers a synchronous cleanup (kill a process, delete a namespace) run when the process
 * exits or is ended by SIGINT, SIGTERM or SIGHUP, so that a failing or interrupted run leaves
 * nothing behind. Returns a function that unregisters it.
 */
export function atExit(cleanup: () => void): () => void {
  if (!exitHooksInstalled) {
    exitHooksInstalled = true;
    process.on('exit', runExitCleanups);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(signal, () => {
        runExitCleanups();
        // Ours was the only handler: let the signal end the process as it would have.
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
    }
  }
  exitCleanups.add(cleanup);
  return () => exitCleanups.delete(cleanup);
}

const namespaceCleanups = new Map<string, () => void>();
let namespaceCounter = 0;

/**
 * Creates a network namespace with a name unique to this process (`<prefix>-<pid>-<n>`) and
 * its loopback up. The namespace is deleted at process exit unless deleteNetns ran first.
 */
export async function createNetns(prefix = 'fg'): Promise<string> {
  const name = `${prefix}-${process.pid}-${++namespaceCounter}`;
  await sh(['ip', 'netns', 'add', name]);
  namespaceCleanups.set(name, atExit(() => spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' })));
  await sh(['ip', 'link', 'set', 'lo', 'up'], { netns: name });
  return name;
}

/** Deletes a namespace made by createNetns; its interfaces (veth ends, TAPs) go with it. */
export async function deleteNetns(name: string): Promise<void> {
  namespaceCleanups.get(name)?.();
  namespaceCleanups.delete(name);
  await sh(['ip', 'netns', 'delete', name]);
}

/** Runs `fn` with a fresh namespace and deletes the namespace afterwards, whatever happens. */
export async function withNetns<T>(fn: (netns: string) => Promise<T>, prefix = 'fg'): Promise<T> {
  const name = await createNetns(prefix);
  try {
    return await fn(name);
  } finally {
    await deleteNetns(name);
  }
}

/** The interface's MAC address, e.g. to address frames sent to or through it. */
export async function macAddress(ifname: string, netns?: string): Promise<string> {
  const [link] = JSON.parse(await sh(['ip', '-json', 'link', 'show', 'dev', ifname], { netns })) as Array<{ address?: string }>;
  if (!link?.address) throw new Error(`macAddress: ${ifname}${netns ? ` in netns ${netns}` : ''} has no link-layer address`);
  return link.address;
}

/** Whether the interface exists (in the namespace, if given). */
export async function linkExists(ifname: string, netns?: string): Promise<boolean> {
  try {
    await sh(['ip', 'link', 'show', 'dev', ifname], { netns });
    return true;
  } catch (err) {
    if (err instanceof CommandError && err.status !== null) return false;
    throw err;
  }
}
