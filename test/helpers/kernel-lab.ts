// The kernel mirror's lab: a gateway namespace with the seed config's interfaces (as DPDK
// would create them) and a peer namespace with the hosts, the models applied to it, and a
// snapshot of everything the mirror could change, for before/after comparisons.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { checkConfigText, compileConfig, type CompiledConfig, type Config } from '../../lib/config';
import { createNetns, deleteNetns, sh } from './netns';

const repo = path.resolve(__dirname, '../../..');

export function seedConfig(): Config {
  const file = path.join(repo, 'config/seed.yaml');
  const { config, issues } = checkConfigText(readFileSync(file, 'utf8'), file, { machine: { cpus: [0, 1, 2, 3] } });
  assert.deepEqual(issues, []);
  assert.ok(config);
  return config;
}

/** The seed scenario with changes applied to a copy of its config. */
export function seedModel(change: (config: Config) => void = () => undefined): CompiledConfig {
  const config = structuredClone(seedConfig());
  change(config);
  return compileConfig(config);
}

const RULESET_V1 = `
table inet flowgate {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state invalid drop
  }
}
table ip flowgate_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "tun0" masquerade
  }
}
`;

export const RULESET_V2 = `
table inet flowgate {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth0" accept
  }
}
`;

/** Reload scenario, first version: the seed plus an address, two routes and a ruleset. */
export function modelV1(): CompiledConfig {
  return seedModel((config) => {
    config.ports.eth0!.addresses.push('192.168.50.2/24');
    config.routes.push({ to: '10.10.0.0/16', via: '192.168.0.1', dev: 'eth0' });
    config.routes.push({ to: '2001:db8:9::/48', via: '2001:db8:2::2', dev: 'eth1' });
    config.nftables = RULESET_V1;
  });
}

/** Second version: one address replaced by another, a route's next hop, eth0's MTU and the ruleset changed. */
export function modelV2(): CompiledConfig {
  return seedModel((config) => {
    config.ports.eth0!.addresses.push('192.168.60.2/24');
    config.ports.eth0!.mtu = 1400;
    config.routes.push({ to: '10.10.0.0/16', via: '192.168.0.254', dev: 'eth0' });
    config.routes.push({ to: '2001:db8:9::/48', via: '2001:db8:2::2', dev: 'eth1' });
    config.nftables = RULESET_V2;
  });
}

/** The seed with eth0 on an af_packet port reading afp0: the mirror guards afp0 from the kernel (createLab's afPacket). */
export function modelAfPacket(): CompiledConfig {
  return seedModel((config) => {
    config.ports.eth0!.device = 'net_af_packet0,iface=afp0';
  });
}

/** The models by name, for child processes (test/helpers/mirror-child.ts). */
export const MODELS = { seed: () => seedModel(), v1: modelV1, v2: modelV2, afpacket: modelAfPacket } as const;
export type ModelName = keyof typeof MODELS;

// ---- the lab: a gateway namespace with the seed's interfaces, hosts in a peer namespace --

export interface Lab {
  gw: string;
  peer: string;
}

/**
 * Stands in for what DPDK creates: eth0 and eth1 are veths (this kernel has no dummy
 * driver, and a veth gives a real neighbour to resolve) with the seed's MACs, their far ends
 * the LAN host and the tunnel peer; tun0 is a TUN; afp0 (with afPacket) is the veth an af_packet
 * port would read. They start down, eth0 with another MTU.
 */
export async function createLab(options: { tunnel?: boolean; afPacket?: boolean } = {}): Promise<Lab> {
  const gw = await createNetns('fgk');
  const peer = await createNetns('fgk-peer');
  const ports = [
    ['eth0', '00:00:22:33:11:55', 'lan0', '192.168.0.1/24'],
    ['eth1', '00:11:22:33:11:55', 'wan0', '2001:db8:2::2/64'],
  ] as const;
  for (const [port, mac, far, address] of ports) {
    await sh(['ip', '-n', gw, 'link', 'add', port, 'address', mac, 'type', 'veth', 'peer', 'name', far, 'netns', peer]);
    await sh(['ip', '-n', peer, 'addr', 'add', address, 'dev', far, 'nodad']);
    await sh(['ip', '-n', peer, 'link', 'set', far, 'up']);
  }
  await sh(['ip', '-n', gw, 'link', 'set', 'eth0', 'mtu', '9000']);
  if (options.tunnel !== false) await sh(['ip', '-n', gw, 'tuntap', 'add', 'tun0', 'mode', 'tun']);
  if (options.afPacket === true) await sh(['ip', '-n', gw, 'link', 'add', 'afp0', 'type', 'veth', 'peer', 'name', 'afp0-far', 'netns', peer]);
  return { gw, peer };
}

export async function deleteLab(lab: Lab | undefined): Promise<void> {
  if (lab === undefined) return;
  await deleteNetns(lab.gw);
  await deleteNetns(lab.peer);
}

export async function json<T>(netns: string, ...args: string[]): Promise<T> {
  return JSON.parse(await sh(['ip', '-n', netns, '-j', ...args])) as T;
}

/** Everything of a namespace that the mirror could change, for before/after comparisons. */
export async function snapshot(netns: string): Promise<Record<string, unknown>> {
  type Links = { qdisc?: string }[];
  const links = await json<Links>(netns, 'addr', 'show');
  // The kernel attaches a default qdisc when a link first comes up and keeps it after: a
  // consequence of having been up, not a setting anyone wrote.
  for (const link of links) delete link.qdisc;
  return {
    links,
    routes4: await json(netns, '-4', 'route', 'show', 'table', 'all'),
    routes6: await json(netns, '-6', 'route', 'show', 'table', 'all'),
    rules4: await json(netns, '-4', 'rule', 'show'),
    rules6: await json(netns, '-6', 'rule', 'show'),
    nftables: await sh(['nft', 'list', 'ruleset'], { netns }),
    sysctls: (await sh(['sysctl', '-a', '-r', '^net\\.ipv[46]\\.'], { netns })).split('\n'),
  };
}

/** "dev address/length" of each address of global scope. */
export async function globalAddresses(netns: string): Promise<string[]> {
  type Dump = { ifname: string; addr_info: { local: string; prefixlen: number; scope: string }[] }[];
  const links = await json<Dump>(netns, 'addr', 'show');
  return links.flatMap((link) => link.addr_info.filter((a) => a.scope === 'global').map((a) => `${link.ifname} ${a.local}/${a.prefixlen}`)).sort();
}
