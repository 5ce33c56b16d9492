/**
 * Kernel change notifications from `ip -o monitor label link address route neigh`.
 *
 * iproute2 6.1 ignores `-j` in `ip monitor` (it prints text either way), so this parses the
 * one-line text form: each event is one line, prefixed by its group ("[LINK]", "[ADDR]",
 * "[ROUTE]", "[NEIGH]"), with "Deleted " in front of removals, and the lines `ip` would print
 * after the first joined by a backslash. Lines that are none of these events (bridge FDB
 * entries, neighbour "miss" requests...) are skipped.
 */
import type { ChildProcess } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatIp, formatPrefix, parseIp, parsePrefix, type IpFamily } from '../net/addr';
import { KernelCommandError, type CommandRunner } from './command';

export interface LinkEvent {
  kind: 'link';
  deleted: boolean;
  index: number;
  dev: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** The lower layer is up: for a TAP or TUN, a process (DPDK) has it open. */
  carrier: boolean;
  /** null for interfaces without a link-layer address (TUN). */
  mac: string | null;
}

export interface AddressEvent {
  kind: 'addr';
  deleted: boolean;
  dev: string;
  family: IpFamily;
  /** Canonical "address/length", host bits kept: "192.168.0.2/24". */
  address: string;
}

export interface RouteEvent {
  kind: 'route';
  deleted: boolean;
  family: IpFamily;
  /** 'unicast', or the type ip prints in front of the destination: 'local', 'broadcast', 'multicast', 'unreachable'... */
  type: string;
  /** Canonical destination prefix; a default route is "0.0.0.0/0" or "::/0". */
  to: string;
  /** The gateway; null for an on-link route (and for a multipath route, whose next hops are not parsed). */
  via: string | null;
  dev: string | null;
  table: string;
  metric: number;
}

export interface NeighborEvent {
  kind: 'neigh';
  deleted: boolean;
  dev: string;
  address: string;
  /** null while unresolved (INCOMPLETE, FAILED). */
  mac: string | null;
  /** The NUD state as ip prints it: REACHABLE, STALE, DELAY, PROBE, INCOMPLETE, FAILED, PERMANENT, NOARP... */
  state: string;
}

/**
 * The monitor process died (`running: false`, with `reason`) or its replacement is subscribed
 * (`running: true`). Changes in between were not reported: a consumer that caches kernel
 * decisions must treat everything it derived before the `running: true` event as stale.
 */
export interface MonitorEvent {
  kind: 'monitor';
  running: boolean;
  reason: string;
}

export type KernelEvent = LinkEvent | AddressEvent | RouteEvent | NeighborEvent | MonitorEvent;

// ---- parsing ----------------------------------------------------------------------------

const LINK = /^(\d+): ([^\s:@]+)(?:@\S+)?: <([^>]*)> (.*)$/;
const ADDRESS = /^(\d+): (\S+)\s+(inet6?) (\S+)(?: peer (\S+))?/;
const NEIGHBOR_STATE = /^[A-Z_]+$/;
/** The types ip prints in front of a route's destination (rtnl_rtntype_n2a); unicast is not printed. */
const ROUTE_TYPES = new Set(['local', 'broadcast', 'anycast', 'multicast', 'blackhole', 'unreachable', 'prohibit', 'throw', 'nat', 'xresolve']);

/** Parses one line of `ip -o monitor label ...`; null for a line that is not a link, address, route or neighbour event. */
export function parseMonitorLine(line: string): Exclude<KernelEvent, MonitorEvent> | null {
  const label = /^\[(LINK|ADDR|ROUTE|NEIGH)\](Deleted )?(.*)$/.exec(line);
  if (label === null) return null;
  const [, group, deletedText, body = ''] = label;
  const deleted = deletedText !== undefined;
  try {
    switch (group) {
      case 'LINK':
        return parseLink(body, deleted);
      case 'ADDR':
        return parseAddress(body, deleted);
      case 'ROUTE':
        return parseRoute(body, deleted);
      default:
        return parseNeighbor(body, deleted);
    }
  } catch {
    // An address that does not parse belongs to a family flowgate does not deal in.
    return null;
  }
}

function parseLink(body: string, deleted: boolean): LinkEvent | null {
  const match = LINK.exec(body);
  if (match === null) return null;
  const [, index = '', dev = '', flagText = '', rest = ''] = match;
  const flags = flagText.split(',');
  const mtu = /\bmtu (\d+)/.exec(rest)?.[1];
  if (mtu === undefined) return null;
  return {
    kind: 'link',
    deleted,
    index: Number(index),
    dev,
    mtu: Number(mtu),
    up: flags.includes('UP'),
    carrier: flags.includes('LOWER_UP') && !flags.includes('NO-CARRIER'),
    mac: /link\/ether ([0-9a-f:]{17})/.exec(rest)?.[1] ?? null,
  };
}

function parseAddress(body: string, deleted: boolean): AddressEvent | null {
  const match = ADDRESS.exec(body);
  if (match === null) return null;
  const [, , dev = '', familyText, local = '', peer] = match;
  const family: IpFamily = familyText === 'inet6' ? 6 : 4;
  // "inet 10.3.0.1 peer 10.3.0.2/32": the prefix length is written after the peer.
  const length = (peer ?? local).split('/')[1] ?? String(family === 4 ? 32 : 128);
  return { kind: 'addr', deleted, dev, family, address: formatPrefix(parsePrefix(`${local.split('/')[0]}/${length}`)) };
}

/** Canonical prefix of a destination as iproute2 prints it: "default", "10.0.0.0/8" or a host "10.0.0.1". */
export function canonicalDestination(text: string, family: IpFamily): string {
  if (text === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  if (!text.includes('/')) return `${formatIp(parseIp(text))}/${family === 4 ? 32 : 128}`;
  return formatPrefix(parsePrefix(text));
}

function parseRoute(body: string, deleted: boolean): RouteEvent | null {
  const words = body.split(/[\s\\]+/).filter((word) => word !== '');
  const type = ROUTE_TYPES.has(words[0] ?? '') ? (words.shift() as string) : 'unicast';
  const destination = words.shift();
  if (destination === undefined) return null;
  const value = (key: string): string | undefined => {
    const at = words.indexOf(key);
    return at < 0 ? undefined : words[at + 1];
  };
  const via = value('via');
  // "default" names no family: a gateway or source does, and only IPv6 routes carry "pref".
  const hint = destination !== 'default' ? destination : (via ?? value('src'));
  const family: IpFamily = hint !== undefined ? parseIp(hint.split('/')[0] ?? '').family : words.includes('pref') ? 6 : 4;
  return {
    kind: 'route',
    deleted,
    family,
    type,
    to: canonicalDestination(destination, family),
    // A multipath route lists "nexthop via ..." after its attributes; those are not its own gateway.
    via: via === undefined || words.includes('nexthop') ? null : formatIp(parseIp(via)),
    dev: words.includes('nexthop') ? null : (value('dev') ?? null),
    table: value('table') ?? 'main',
    metric: Number(value('metric') ?? 0),
  };
}

function parseNeighbor(body: string, deleted: boolean): NeighborEvent | null {
  const words = body.trim().split(/\s+/);
  const address = words.shift();
  const dev = words[words.indexOf('dev') + 1];
  if (address === undefined || !words.includes('dev') || dev === undefined) return null;
  const lladdr = words.indexOf('lladdr');
  return {
    kind: 'neigh',
    deleted,
    dev,
    address: formatIp(parseIp(address)),
    mac: lladdr < 0 ? null : (words[lladdr + 1] ?? null),
    // The state is the upper-case word at the end; a device name may be upper case too.
    state: words.find((word, at) => NEIGHBOR_STATE.test(word) && words[at - 1] !== 'dev') ?? 'NONE',
  };
}

// ---- the monitor process ----------------------------------------------------------------

export interface KernelWatch {
  /**
   * Resolves once the first monitor is subscribed (every change after that is reported), or
   * when stop() comes first. Rejects if it could not start; then nothing is watched.
   */
  readonly ready: Promise<void>;
  /** Stops watching and resolves once the monitor process has exited. Idempotent. */
  stop(): Promise<void>;
}

const MONITOR_ARGS = ['-o', 'monitor', 'label', 'link', 'address', 'route', 'neigh'];
const RESTART_DELAY_MIN_MS = 100;
const RESTART_DELAY_MAX_MS = 5000;
const SUBSCRIBE_POLL_MS = 10;
const STDERR_KEEP_BYTES = 4096;

/**
 * Streams kernel events to `listener` from an `ip monitor` child, restarting it (with
 * backoff) when it dies once it has been running, and reporting the gap as MonitorEvents.
 */
export function watchKernel(runner: CommandRunner, listener: (event: KernelEvent) => void): KernelWatch {
  const argv = runner.argv(['ip', ...MONITOR_ARGS]);
  let child: ChildProcess | null = null;
  let stopped = false;
  let restartTimer: NodeJS.Timeout | null = null;
  let restartDelay = RESTART_DELAY_MIN_MS;
  let settleReady: { resolve: () => void; reject: (err: Error) => void } | null = null;
  // Sent synchronously as the process goes away, so that not even a crash leaves a monitor behind.
  const killOnExit = () => child?.kill('SIGKILL');
  process.on('exit', killOnExit);

  const ready = new Promise<void>((resolve, reject) => {
    settleReady = { resolve, reject };
  });

  const start = (afterFailure: string | null) => {
    const proc = runner.spawn(argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let stderr = '';
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_KEEP_BYTES);
    });
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      const event = parseMonitorLine(line);
      if (event !== null) listener(event);
    });
    let subscribed = false;
    void untilSubscribed(proc).then((ok) => {
      if (!ok || stopped) return;
      subscribed = true;
      restartDelay = RESTART_DELAY_MIN_MS;
      if (afterFailure === null) settleReady?.resolve();
      else listener({ kind: 'monitor', running: true, reason: `restarted after: ${afterFailure}` });
    });
    let ended = false;
    const onEnd = (why: string, code: number | null, cause?: Error) => {
      if (ended) return;
      ended = true;
      if (child === proc) child = null;
      if (stopped) return;
      const reason = new KernelCommandError(argv, stderr || why, code, cause).message;
      if (afterFailure === null && !subscribed) {
        // It never worked (no such namespace, no ip): a restart would fail the same way.
        stopped = true;
        process.removeListener('exit', killOnExit);
        settleReady?.reject(new KernelCommandError(argv, stderr || why, code, cause));
        return;
      }
      if (subscribed) listener({ kind: 'monitor', running: false, reason });
      restartTimer = setTimeout(() => {
        restartTimer = null;
        start(reason);
      }, restartDelay);
      restartDelay = Math.min(restartDelay * 2, RESTART_DELAY_MAX_MS);
    };
    proc.on('error', (err) => onEnd(err.message, null, err));
    proc.on('exit', (code, signal) => onEnd(signal ? `killed by ${signal}` : `exited with status ${code}`, code));
  };

  start(null);

  return {
    ready,
    stop: async () => {
      if (!stopped) {
        stopped = true;
        settleReady?.resolve();
        if (restartTimer !== null) clearTimeout(restartTimer);
      }
      const proc = child;
      if (proc !== null && proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((resolve) => proc.once('exit', resolve));
        proc.kill('SIGTERM');
        await exited;
      }
      process.removeListener('exit', killOnExit);
    },
  };
}

/**
 * Waits until `proc` holds a NETLINK_ROUTE socket bound to multicast groups: from then on the
 * kernel queues every change for it, so nothing is missed between this and its first read.
 * iproute2 prints nothing when it is ready; /proc/PID/net/netlink (in the process's own
 * namespace) shows each socket's groups, matched to the process through its fds' inodes.
 * Resolves false if the process exits first.
 */
async function untilSubscribed(proc: ChildProcess): Promise<boolean> {
  const pid = proc.pid;
  if (pid === undefined) return false;
  while (proc.exitCode === null && proc.signalCode === null) {
    try {
      const inodes = new Set<string>();
      for (const fd of await readdir(`/proc/${pid}/fd`)) {
        const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
        const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
        if (inode !== undefined) inodes.add(inode);
      }
      // Columns: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; Eth 0 is NETLINK_ROUTE.
      for (const row of (await readFile(`/proc/${pid}/net/netlink`, 'utf8')).split('\n').slice(1)) {
        const [, protocol, , groups, , , , , , inode] = row.trim().split(/\s+/);
        if (protocol === '0' && groups !== undefined && /[1-9a-f]/.test(groups) && inodes.has(inode ?? '')) return true;
      }
    } catch {
      // The process exited while being read; the loop condition sees it.
    }
    await sleep(SUBSCRIBE_POLL_MS);
  }
  return false;
}
