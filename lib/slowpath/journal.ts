/**
 * The kernel journal: the KernelMirror's record of what flowgate changed in a network
 * namespace, kept in the runtime directory so that it outlives the process. It is written
 * before each change, together with the change's intent when the outcome of a command could
 * not be known after a crash (an address or route added, a ruleset replaced): the next
 * instance, or `flowgate cleanup`, treats an intent as possibly carried out and undoes it
 * like the rest, which removal makes safe (removing what is absent is no error).
 *
 * One file per namespace, named by the namespace's inode (instances in different namespaces
 * never share one), with the pid and start time of its writer: while the writer runs, the
 * journal is its own; once it died, the next mirror of that namespace adopts the record.
 * The mirror's in-memory record stays the authority while it runs; this is its copy on disk.
 */
import { readdir } from 'node:fs/promises';
import * as path from 'node:path';

import { FlowgateError } from '../errors';
import {
  InstanceLockedError,
  ensureRuntimeDirectory,
  fileNameOf,
  isRunning,
  namespaceId,
  processIdentity,
  readFileIfExists,
  removeFile,
  writeFileAtomically,
  type ProcessIdentity,
} from '../runtime';
import type { AddressSpec, MirrorRecord, RouteSpec } from './kernel';

/** A change under way whose outcome a crash would leave unknown; the record holds the rest. */
export type Intent = { kind: 'address'; spec: AddressSpec } | { kind: 'route'; spec: RouteSpec } | { kind: 'nftables'; tables: string[] };

export interface JournalEntry {
  version: typeof VERSION;
  writer: ProcessIdentity;
  /** The namespace as the mirror was given it (`ip netns` name), null for the writer's own. */
  netns: string | null;
  record: MirrorRecord;
  intent: Intent | null;
}

const VERSION = 1;

export class JournalError extends FlowgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_FLOWGATE_JOURNAL', message, options);
  }
}

export class Journal {
  private namespace: { id: string; file: string } | undefined;
  /** What this process last wrote, so that a change that leaves the record as it was costs no write. */
  private written: string | null = null;
  private readonly self = processIdentity() as ProcessIdentity;

  constructor(
    readonly runtimeDir: string,
    readonly netns?: string,
  ) {}

  /** The journal's path; `netns` is resolved (to its inode) once. */
  async path(): Promise<string> {
    return (await this.resolve()).file;
  }

  private async resolve(): Promise<{ id: string; file: string }> {
    if (this.namespace === undefined) {
      const id = await namespaceId(this.netns);
      this.namespace = { id, file: path.join(this.runtimeDir, `kernel-${fileNameOf(id)}.json`) };
    }
    return this.namespace;
  }

  /**
   * Makes the journal this process's: the entry of a dead writer, or of this process, is
   * returned for adoption (null when there is none); another live writer's is refused with
   * its pid. Temp files that interrupted writes left are removed: they never replaced the
   * journal.
   */
  async claim(): Promise<JournalEntry | null> {
    const { id, file } = await this.resolve();
    const entry = await this.read(file);
    if (entry !== null && isRunning(entry.writer) && entry.writer.pid !== this.self.pid) {
      throw new InstanceLockedError(`the kernel state of network namespace ${id}${this.netns === undefined ? '' : ` (${this.netns})`}`, entry.writer, file);
    }
    const leftovers = (await readdir(this.runtimeDir).catch(() => [])).filter((name) => name.startsWith(`${path.basename(file)}.`) && name.endsWith('.tmp'));
    for (const name of leftovers) await removeFile(path.join(this.runtimeDir, name));
    return entry;
  }

  /** Writes `record` and `intent`, atomically, unless that is what the journal already holds. */
  async write(record: MirrorRecord, intent: Intent | null): Promise<void> {
    const entry: JournalEntry = { version: VERSION, writer: this.self, netns: this.netns ?? null, record, intent };
    const text = `${JSON.stringify(entry, null, 1)}\n`;
    if (text === this.written) return;
    await ensureRuntimeDirectory(this.runtimeDir);
    await writeFileAtomically(await this.path(), text);
    this.written = text;
  }

  /** Removes the journal: nothing flowgate changed is left in the kernel. */
  async remove(): Promise<void> {
    await removeFile(await this.path());
    this.written = null;
  }

  private async read(file: string): Promise<JournalEntry | null> {
    const text = await readFileIfExists(file);
    if (text === null) return null;
    let entry: JournalEntry;
    try {
      entry = JSON.parse(text) as JournalEntry;
    } catch (err) {
      throw new JournalError(`the kernel journal ${file} is not JSON (${(err as Error).message}); it was not written by flowgate`, { cause: err });
    }
    if (entry.version !== VERSION) throw new JournalError(`the kernel journal ${file} has version ${String(entry.version)}; this flowgate reads version ${VERSION}`);
    return entry;
  }
}
