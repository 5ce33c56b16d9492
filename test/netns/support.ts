// Shared by the netns scenarios: counters around a piece of traffic, waiting for a state
// (never for a time), TCP transfers with the handshake kept apart from the data, neighbour
// entries.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

import type { DemoTopology, Host, Site } from '../../lib/demo/topology';
import { DEMO_ADDRESSES } from '../../lib/demo/topology';
import { startTraffic, type TcpResult } from '../../lib/demo/traffic';
import type { GatewayFlow, GatewayStats } from '../../lib/gateway/types';
import { readPcap } from '../../lib/pcap';

/** Mocha timeouts: a topology (namespaces, two flowgate starts) and a test's traffic. */
export const HOOK_TIMEOUT_MS = 180_000;
export const TEST_TIMEOUT_MS = 120_000;

import { until } from '../helpers/wait';

export { until };

/** Waits for `event`, but at most `timeoutMs`: the assertions that follow say what was missing. */
export async function awaitAtMost(event: Promise<unknown>, timeoutMs = 20_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([event.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
}

export interface Counters {
  fast: number;
  slow: number;
  reasons: Record<string, number>;
  added: number;
  removedBy: Record<string, number>;
}

function counters(s: GatewayStats): Counters {
  return { fast: s.fastpath.packets, slow: s.slowpath.packets, reasons: s.slowpath.reasons, added: s.flows.added, removedBy: s.flows.removed_by };
}

/** What changed between two stats snapshots. */
export function delta(before: GatewayStats, after: GatewayStats): Counters {
  const b = counters(before);
  const a = counters(after);
  const minus = (x: Record<string, number>, y: Record<string, number>) =>
    Object.fromEntries(Object.entries(x).map(([key, value]) => [key, value - (y[key] ?? 0)]).filter(([, value]) => value !== 0));
  return { fast: a.fast - b.fast, slow: a.slow - b.slow, reasons: minus(a.reasons, b.reasons), added: a.added - b.added, removedBy: minus(a.removedBy, b.removedBy) };
}

export async function statsOf(topology: DemoTopology, sites: readonly Site[]): Promise<Record<Site, GatewayStats>> {
  const entries = await Promise.all(sites.map(async (site) => [site, await topology.site(site).stats()] as const));
  return Object.fromEntries(entries) as Record<Site, GatewayStats>;
}

/** The offloaded flow of a connection at a site, by its original direction's ports. */
export function flowOf(flows: GatewayFlow[], proto: 'tcp' | 'udp', match: { sport?: number; dport: number }): GatewayFlow | undefined {
  return flows.find(
    (f) =>
      f.proto === proto &&
      ((f.dport === match.dport && (match.sport === undefined || f.sport === match.sport)) ||
        (f.sport === match.dport && (match.sport === undefined || f.dport === match.sport))),
  );
}

/** The hosts' addresses with the default (ip4ip6) tunnel; `topology.addresses` has each mode's. */
export const HOST_ADDRESS: Record<'lan' | 'remote', string> = { lan: DEMO_ADDRESSES.lanHost, remote: DEMO_ADDRESSES.remoteHost };

export interface Transfer {
  sent: TcpResult;
  received: TcpResult;
  /**
   * Per site, the counters over the data phase only: after the handshake, with the flow
   * offloaded, until the receiver has every byte; before the close, whose FIN tears the flow
   * down and sends what follows it (the ACKs of the data still in flight) to the kernel.
   */
  data: Record<Site, Counters>;
}

/**
 * A TCP transfer of `bytes` random bytes from host `from` to host `to`: the connection is made,
 * the data sent once every site in `offloadedAt` has offloaded it, and the connection closed
 * once the receiver has it all, so that the counters over the data phase show what the fast
 * path carried after the handshake.
 */
export async function tcpTransfer(
  topology: DemoTopology,
  options: {
    from: 'lan' | 'remote';
    to: 'lan' | 'remote' | Host;
    toAddress?: string;
    bytes: number;
    /** The receiver listens here... */
    port: number;
    /** ...and the sender connects to this port (a port forward's), by default the same. */
    dialPort?: number;
    offloadedAt: readonly Site[];
  },
): Promise<Transfer> {
  const sink = startTraffic(topology.ns[options.to], { kind: 'tcp-receive', port: options.port, expectBytes: options.bytes }, { timeoutMs: 90_000 });
  await sink.ready;
  const hosts: Partial<Record<Host, string>> = { lan: topology.addresses.lanHost, remote: topology.addresses.remoteHost };
  const host = options.toAddress ?? hosts[options.to];
  if (host === undefined) throw new Error(`tcpTransfer: give toAddress for host ${options.to}`);
  const dport = options.dialPort ?? options.port;
  const source = startTraffic(
    topology.ns[options.from],
    { kind: 'tcp-send', host, port: dport, bytes: options.bytes, gate: true, holdOpen: true },
    { timeoutMs: 90_000 },
  );
  try {
    await source.ready;
    for (const site of options.offloadedAt) {
      await until(`site ${site.toUpperCase()} to offload the connection to port ${dport} after its handshake`, async () =>
        flowOf(await topology.site(site).flows(), 'tcp', { dport }) !== undefined ? true : undefined,
      );
    }
    const before = await statsOf(topology, options.offloadedAt);
    source.next();
    await sink.reached;
    const after = await statsOf(topology, options.offloadedAt);
    source.finish();
    const sent = await source.result;
    const received = await sink.result;
    const data = Object.fromEntries(options.offloadedAt.map((site) => [site, delta(before[site], after[site])])) as Record<Site, Counters>;
    return { sent, received, data };
  } finally {
    source.kill();
    sink.kill();
  }
}

/** Asserts that the data phase went through the fast path: >= 90 % of the packets, the slow path small. */
export function assertFastPathCarried(transfer: Transfer, sites: readonly Site[]): void {
  for (const site of sites) {
    const c = transfer.data[site];
    const share = c.fast / (c.fast + c.slow);
    const detail = `site ${site.toUpperCase()}: ${c.fast} packets on the fast path, ${c.slow} on the slow path (${JSON.stringify(c.reasons)})`;
    assert.ok(share >= 0.9, `fast-path share ${(share * 100).toFixed(1)} % < 90 %; ${detail}`);
    // Of an offloaded flow's data, only what is too big for the tunnel belongs to the slow path
    // (path MTU discovery); the few others are the hosts' own chatter (ARP, NDP).
    assert.ok(c.slow - (c.reasons.too_big ?? 0) <= 5, `more than 5 other packets on the slow path; ${detail}`);
  }
}

export interface NeighborEntry {
  dst: string;
  dev: string;
  lladdr?: string;
  state?: string[];
}

/** The neighbour entry for `address` on `dev` in `host`'s namespace. */
export async function neighbor(topology: DemoTopology, host: Host, dev: string, address: string): Promise<NeighborEntry | undefined> {
  const entries = JSON.parse(await topology.run(host, ['ip', '-j', 'neigh', 'show', 'to', address, 'dev', dev])) as NeighborEntry[];
  return entries[0];
}

/** The MAC address of `dev` in `host`'s namespace. */
export async function macOf(topology: DemoTopology, host: Host, dev: string): Promise<string> {
  const [link] = JSON.parse(await topology.run(host, ['ip', '-j', 'link', 'show', 'dev', dev])) as { address: string }[];
  assert.ok(link !== undefined, `${dev} in ${host}`);
  return link.address;
}

/**
 * An Icmp counter of /proc/net/snmp in `host`'s namespace (InTimeExcds, OutDestUnreachs...),
 * or an Icmp6 counter of /proc/net/snmp6 (Icmp6InTimeExcds...).
 */
export async function icmpCounter(topology: DemoTopology, host: Host, name: string): Promise<number> {
  if (name.startsWith('Icmp6')) {
    const line = (await topology.run(host, ['cat', '/proc/net/snmp6'])).split('\n').find((l) => l.split(/\s+/)[0] === name);
    if (line === undefined) throw new Error(`no counter ${name} in /proc/net/snmp6 of ${host}`);
    return Number(line.split(/\s+/)[1]);
  }
  const lines = (await topology.run(host, ['cat', '/proc/net/snmp'])).split('\n').filter((line) => line.startsWith('Icmp:'));
  const [names, values] = lines.map((line) => line.split(/\s+/).slice(1));
  const at = names?.indexOf(name) ?? -1;
  if (at < 0 || values === undefined) throw new Error(`no Icmp counter ${name} in /proc/net/snmp of ${host}`);
  return Number(values[at]);
}

/** A tcpdump capture to a pcap file in a host's namespace, read back once stopped. */
export class Capture {
  private constructor(
    private readonly child: ChildProcess,
    private readonly file: string,
    private readonly exited: Promise<void>,
  ) {}

  /** Starts capturing on `iface`; resolves once tcpdump listens. */
  static async start(topology: DemoTopology, host: Host, iface: string, filter: string): Promise<Capture> {
    const file = path.join(topology.dir, `capture-${Date.now()}-${Math.random().toString(16).slice(2)}.pcap`);
    const child = spawn('ip', ['netns', 'exec', topology.ns[host], 'tcpdump', '-i', iface, '--immediate-mode', '-U', '-n', '-s', '0', '-w', file, filter], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
        if (stderr.includes('listening on')) resolve();
      });
      void exited.then(() => reject(new Error(`tcpdump on ${iface} in ${host} exited: ${stderr.trim()}`)));
    });
    return new Capture(child, file, exited);
  }

  /** Stops the capture and returns the frames captured. */
  async stop(): Promise<Buffer[]> {
    this.child.kill('SIGINT');
    await this.exited;
    return readPcap(this.file).packets.map((p) => p.data);
  }
}
