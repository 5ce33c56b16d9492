/**
 * The instance lock: one lock file per network namespace and per device a flowgate drives,
 * in the runtime directory, holding the pid and start time of the holder. Two instances with
 * different control sockets or configs still exclude each other when they share a namespace
 * (the kernel state flowgate writes there) or a device (a NIC, or the kernel interface an
 * af_packet port reads). The lock of a process that is gone (kill -9, a crash) is taken over.
 */
import * as path from 'node:path';

import type { CompiledConfig } from './config/compile';
import { FlowgateError } from './errors';
import {
  InstanceLockedError,
  createFileExclusively,
  ensureRuntimeDirectory,
  fileNameOf,
  isRunning,
  namespaceId,
  processIdentity,
  readFileIfExists,
  removeFile,
  type ProcessIdentity,
} from './runtime';

/** What a lock is for: "network namespace net:[4026531840]", "device 0000:03:00.0". */
interface LockTarget {
  what: string;
  file: string;
}

interface LockContent extends ProcessIdentity {
  what: string;
}

/**
 * What an instance of `model` in the namespace `netnsId` holds: the namespace, and the
 * devices another process could drive too (without a model, the namespace alone).
 */
export function lockTargets(netnsId: string, model: CompiledConfig | null): string[] {
  const targets = new Set([`network namespace ${netnsId}`]);
  for (const port of model?.ports ?? []) {
    if (port.deviceKind === 'pci') targets.add(`device ${port.device.toLowerCase()}`);
    // A vdev that reads a kernel interface (af_packet, af_xdp, pcap): interface names are
    // per namespace.
    const iface = /(?:^|,)iface=([^,]+)/.exec(port.device)?.[1];
    if (port.deviceKind === 'vdev' && iface !== undefined) targets.add(`interface ${iface} of ${netnsId}`);
  }
  return [...targets];
}

function targetOf(runtimeDir: string, what: string): LockTarget {
  return { what, file: path.join(runtimeDir, `${fileNameOf(what.replace(/^network namespace /, ''))}.lock`) };
}

async function holderOf(file: string): Promise<LockContent | null> {
  const text = await readFileIfExists(file);
  if (text === null) return null;
  try {
    return JSON.parse(text) as LockContent;
  } catch {
    // Locks are written whole or not at all (createFileExclusively): this one is not flowgate's.
    throw new FlowgateError('ERR_FLOWGATE_LOCK_FILE', `${file} is not a flowgate lock file; remove it if nothing else uses it`);
  }
}

export class InstanceLock {
  private readonly self = processIdentity() as ProcessIdentity;
  private held: LockTarget[] = [];

  private constructor(
    readonly runtimeDir: string,
    private readonly netnsId: string,
  ) {}

  /**
   * Takes the lock of this process's network namespace and of `model`'s devices, all or
   * none: a target held by a running process throws InstanceLockedError naming its pid.
   */
  static async acquire(options: { runtimeDir: string; model: CompiledConfig }): Promise<InstanceLock> {
    const lock = new InstanceLock(options.runtimeDir, await namespaceId());
    await ensureRuntimeDirectory(options.runtimeDir);
    await lock.hold([options.model]);
    return lock;
  }

  /**
   * Holds the locks of `models` from now on: takes those not held yet, all or none (as
   * acquire), then releases those no model needs. A reload holds the old and the new
   * config's while the gateway moves from one to the other, then the one it runs.
   */
  async hold(models: CompiledConfig[]): Promise<void> {
    const wanted = new Set(models.flatMap((model) => lockTargets(this.netnsId, model)));
    const taken: LockTarget[] = [];
    try {
      for (const what of wanted) {
        if (this.held.some((target) => target.what === what)) continue;
        const target = targetOf(this.runtimeDir, what);
        await this.take(target);
        taken.push(target);
      }
    } catch (err) {
      await this.remove(taken);
      throw err;
    }
    const dropped = this.held.filter((target) => !wanted.has(target.what));
    this.held = [...this.held.filter((target) => wanted.has(target.what)), ...taken];
    await this.remove(dropped);
  }

  /** The lock files held, for the log. */
  get files(): string[] {
    return this.held.map((target) => target.file);
  }

  private async take(target: LockTarget): Promise<void> {
    const content = `${JSON.stringify({ ...this.self, what: target.what } satisfies LockContent)}\n`;
    for (;;) {
      if (await createFileExclusively(target.file, content)) return;
      const holder = await holderOf(target.file);
      if (holder !== null && isRunning(holder)) throw new InstanceLockedError(target.what, holder, target.file);
      // A dead holder's lock. Two instances starting at once may both find it stale; the
      // exclusive create above lets one of them win, but one may remove the winner's file
      // between the winner's create and its own: systemd starts one unit at a time.
      await removeFile(target.file);
    }
  }

  /** Releases every lock. */
  async release(): Promise<void> {
    await this.remove(this.held.splice(0));
  }

  /** Removes the lock files of `targets` that are still this process's. */
  private async remove(targets: LockTarget[]): Promise<void> {
    for (const target of targets) {
      const holder = await holderOf(target.file).catch(() => null);
      if (holder?.pid === this.self.pid && holder.start === this.self.start) await removeFile(target.file);
    }
  }

  /** Removes the lock files of `targets` (lockTargets) whose holder is gone; returns those removed. */
  static async removeStale(runtimeDir: string, targets: string[]): Promise<string[]> {
    const removed: string[] = [];
    for (const what of targets) {
      const target = targetOf(runtimeDir, what);
      const holder = await holderOf(target.file).catch(() => null);
      if (holder === null || isRunning(holder)) continue;
      await removeFile(target.file);
      removed.push(what);
    }
    return removed;
  }
}
