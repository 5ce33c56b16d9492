/**
 * The runtime directory (/run/flowgate, or FLOWGATE_RUNTIME_DIR) and what instances keep in
 * it: the kernel journal (slowpath/journal.ts) and the instance locks (instance-lock.ts).
 * Each file names the process that wrote it by pid and start time, so that a file a dead
 * instance left behind (kill -9, a crash) is told apart from a live one's, even once the pid
 * has been reused.
 */
import { readFileSync } from 'node:fs';
import { link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import * as path from 'node:path';

import { FlowgateError } from './errors';

export const DEFAULT_RUNTIME_DIR = '/run/flowgate';

/** FLOWGATE_RUNTIME_DIR, else /run/flowgate (systemd's RuntimeDirectory=flowgate). */
export function runtimeDirectory(): string {
  return process.env.FLOWGATE_RUNTIME_DIR || DEFAULT_RUNTIME_DIR;
}

/** A process as the kernel tells processes apart: pid, and start time in clock ticks after boot. */
export interface ProcessIdentity {
  pid: number;
  start: number;
}

/** The identity of the running process `pid`; null when there is none, or only its zombie. */
export function processIdentity(pid: number = process.pid): ProcessIdentity | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted from its
  // closing parenthesis. Field 3 is the state, field 22 the start time.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return null;
  return { pid, start: Number(fields[19]) };
}

/** Whether the process `owner` names still runs (the same process, not a later one with its pid). */
export function isRunning(owner: ProcessIdentity): boolean {
  return processIdentity(owner.pid)?.start === owner.start;
}

/** Another flowgate runs and holds what this one needs: a namespace, a device, a kernel journal. */
export class InstanceLockedError extends FlowgateError {
  constructor(
    readonly what: string,
    readonly holder: ProcessIdentity,
    readonly file: string,
  ) {
    super('ERR_FLOWGATE_INSTANCE_LOCKED', `${what} is held by flowgate pid ${holder.pid} (${file})`);
  }
}

/**
 * The network namespace `netns` (an `ip netns` name or a namespace file; the caller's when
 * undefined) as "net:[INODE]", the name the kernel gives it in /proc/PID/ns/net.
 */
export async function namespaceId(netns?: string): Promise<string> {
  const file = netns === undefined ? '/proc/self/ns/net' : netns.includes('/') ? netns : path.join('/run/netns', netns);
  try {
    return `net:[${(await stat(file)).ino}]`;
  } catch (err) {
    throw new FlowgateError('ERR_FLOWGATE_NO_NETNS', `network namespace ${netns ?? '(own)'}: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** A file name of the runtime directory for `id`: "net:[4026531840]" -> "net-4026531840". */
export function fileNameOf(id: string): string {
  return id.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/-+$/, '');
}

/** Creates the runtime directory (and its parents) if it does not exist. */
export async function ensureRuntimeDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
}

/** Writes `text` to a temp file next to `file` and fsyncs it; returns the temp file's path. */
async function writeTemp(file: string, text: string): Promise<string> {
  const temp = `${file}.${process.pid}.tmp`;
  const handle = await open(temp, 'w', 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return temp;
}

/** fsync of a directory: makes a rename, link or unlink in it durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `file` by `text` so that a crash at any point leaves the old content or the new,
 * never a mix: the text goes to a temp file, fsynced, renamed over `file`, and the directory
 * is fsynced so that the rename is durable too. A crash leaves at most a temp file behind.
 */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  await rename(await writeTemp(file, text), file);
  await syncDirectory(path.dirname(file));
}

/** Creates `file` with `text`, complete or not at all; false (and no change) when it exists. */
export async function createFileExclusively(file: string, text: string): Promise<boolean> {
  const temp = await writeTemp(file, text);
  try {
    // link() fails with EEXIST where rename() would replace: the exclusive create of a full file.
    await link(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(temp);
  }
  await syncDirectory(path.dirname(file));
  return true;
}

/** The text of `file`; null when there is no such file. */
export async function readFileIfExists(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Removes `file` if it exists. */
export async function removeFile(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
