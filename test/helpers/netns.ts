// Host-side helpers for network tests: run commands (optionally inside a network namespace)
// and create namespaces that are deleted again even when a test fails or the process exits.

import { spawnSync } from 'node:child_process';

// Commands and exit cleanups are the demo's (lib/demo/shell.ts): one implementation for the
// scenario code and the tests.
import { CommandFailedError, onExit, sh } from '../../lib/demo/shell';

export { sh, type ShOptions } from '../../lib/demo/shell';
export const atExit = onExit;

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
    if (err instanceof CommandFailedError && err.status !== null) return false;
    throw err;
  }
}
