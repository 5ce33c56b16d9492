/**
 * The reference scenario (DESIGN.md) in network namespaces, as `flowgate demo` shows it and
 * the netns tests exercise it:
 *
 *   lan ── eth0 ═ a-lan [site A: flowgate] a-wan ═ u-a ─┐
 *   192.168.0.10        eth0 192.168.0.2/24               br0 (IPv6 underlay, L2 only)
 *                       eth1 2001:db8:2::1/64               │
 *                       tun0 192.168.100.1/24  u-b ═ b-wan [site B] b-lan ═ eth0 ── remote
 *                                                            eth1 2001:db8:2::2  10.0.0.10
 *                                                            eth0 10.0.0.1/24
 *
 * Five namespaces: the LAN host, site A, the underlay (a bridge), site B and the remote host
 * behind it. Site A is always flowgate (config/demo-site-a.yaml). The far end of its
 * ip4ip6 tunnel is the kernel's own ip6tnl in site B's namespace when this kernel has one,
 * else a second flowgate (config/demo-site-b.yaml); or, for interop tests, something the
 * caller attaches to the underlay bridge (a VM running Linux's ip6tnl).
 *
 * The tunnel is ip4ip6 unless `tunnel` names another mode: ip6ip6 (IPv6 hosts, the same
 * IPv6 underlay), ipip (IPv4 hosts over an IPv4 underlay 198.51.100.0/24) or sit (IPv6
 * hosts over the IPv4 underlay); `addresses` holds each mode's (demoAddresses()).
 *
 * For path MTU tests the far end can sit behind a router instead (`underlayHop`): a sixth
 * namespace on the bridge that routes 2001:db8:2::2 out of a link with a smaller MTU (a VM's
 * TAP, attachBehindHop()), so that its kernel answers larger packets with ICMPv6 packet too
 * big. The prefix stays one /64 at both ends: the router answers neighbour solicitations for
 * the address on the other side (proxy NDP), as a router on a split link would.
 *
 *   [site A] a-wan ═ u-a ─ br0 ─ u-hop ═ eth0 [hop 2001:db8:2::fe] TAP (MTU 1280) ── far end
 *
 * flowgate's ports are AF_PACKET sockets on veths in the sites' namespaces, which the
 * sites' kernels therefore also see. flowgate keeps its namespace's kernel off such an
 * interface itself (an ingress drop chain and no IPv6: lib/slowpath/kernel.ts); here the
 * veths only get IPv6 off before they come up, so that not even a router solicitation
 * leaves before flowgate starts. And veths hand TCP and UDP to AF_PACKET with checksum
 * offload pending, which flowgate forwards as they are, with bad checksums: every veth that
 * transmits towards a flowgate port has tx checksumming off, so the kernel completes the
 * checksums first (a property of the hosts, as a real NIC would compute them).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

import type { ConfigInput, TunnelMode } from '../config';
import { TUNNEL_FAMILIES } from '../config/schema';
import { FlowgateError } from '../errors';
import { FlowgateProcess } from './flowgate-process';
import { deleteNetnsSync, onExit, sh, shStatus, type ShOptions } from './shell';

/** config/, next to dist/ once compiled. */
export const CONFIG_DIR = path.resolve(__dirname, '..', '..', '..', 'config');
export const SITE_CONFIG_FILES = { a: path.join(CONFIG_DIR, 'demo-site-a.yaml'), b: path.join(CONFIG_DIR, 'demo-site-b.yaml') } as const;

/** The scenario's addresses; the sites' configs hold the same. */
export const DEMO_ADDRESSES = {
  lanHost: '192.168.0.10',
  lanPrefix: 24,
  siteALan: '192.168.0.2',
  remoteHost: '10.0.0.10',
  remotePrefix: 24,
  siteBLan: '10.0.0.1',
  underlayA: '2001:db8:2::1',
  underlayB: '2001:db8:2::2',
  underlayPrefix: 64,
  tunnelA: '192.168.100.1',
  tunnelB: '192.168.100.2',
  tunnelPrefix: 24,
  /** The router of `underlayHop`, on the bridge's side: the source of its ICMPv6 errors. */
  underlayHop: '2001:db8:2::fe',
} as const;

export type DemoAddresses = { readonly [K in keyof typeof DEMO_ADDRESSES]: K extends `${string}Prefix` ? number : string };

/** The scenario's addresses for a tunnel mode: the hosts of its inner family, the underlay of its outer. */
export function demoAddresses(mode: TunnelMode): DemoAddresses {
  const { inner, underlay } = TUNNEL_FAMILIES[mode];
  const hosts =
    inner === 4
      ? DEMO_ADDRESSES
      : {
          lanHost: '2001:db8:10::10',
          lanPrefix: 64,
          siteALan: '2001:db8:10::2',
          remoteHost: '2001:db8:20::10',
          remotePrefix: 64,
          siteBLan: '2001:db8:20::1',
          tunnelA: '2001:db8:100::1',
          tunnelB: '2001:db8:100::2',
          tunnelPrefix: 64,
        };
  const wire =
    underlay === 6
      ? DEMO_ADDRESSES
      : { underlayA: '198.51.100.1', underlayB: '198.51.100.2', underlayPrefix: 24, underlayHop: '198.51.100.254' };
  return {
    lanHost: hosts.lanHost,
    lanPrefix: hosts.lanPrefix,
    siteALan: hosts.siteALan,
    remoteHost: hosts.remoteHost,
    remotePrefix: hosts.remotePrefix,
    siteBLan: hosts.siteBLan,
    underlayA: wire.underlayA,
    underlayB: wire.underlayB,
    underlayPrefix: wire.underlayPrefix,
    tunnelA: hosts.tunnelA,
    tunnelB: hosts.tunnelB,
    tunnelPrefix: hosts.tunnelPrefix,
    underlayHop: wire.underlayHop,
  };
}

/** Site A's tunnel (and its far end's): a mode, and for those over IPv6 the encapsulation limit. */
export interface DemoTunnel {
  mode: TunnelMode;
  /** ip4ip6 and ip6ip6: default 4, as the configs'. */
  encaplimit?: number | 'none';
}

/** The veths flowgate's ports use, in each site's namespace. */
export const SITE_VETHS = { a: { lan: 'a-lan', wan: 'a-wan' }, b: { lan: 'b-lan', wan: 'b-wan' } } as const;
const UNDERLAY_BRIDGE = 'br0';
const UNDERLAY_PORTS = { a: 'u-a', b: 'u-b', hop: 'u-hop' } as const;
const HOST_IFACE = 'eth0';

export type Host = 'lan' | 'a' | 'underlay' | 'b' | 'remote' | 'hop';
export type Site = 'a' | 'b';
/** Who ends site A's tunnel: a second flowgate, the kernel's ip6tnl, or what the caller attaches to the underlay. */
export type FarEnd = 'flowgate' | 'kernel' | 'external';

export interface TopologyOptions {
  /** The tunnel between the sites; default ip4ip6 with encaplimit 4 (config/demo-site-{a,b}.yaml as written). */
  tunnel?: DemoTunnel;
  /** Default 'auto': the kernel's ip6tnl when this kernel has one, else flowgate. */
  farEnd?: FarEnd | 'auto';
  /** Namespace name prefix; the names are `<prefix>-<pid>-<host>`. Default 'fgdemo'. */
  prefix?: string;
  /** Edits of a site's config (config/demo-site-{a,b}.yaml) before it starts. */
  configure?: Partial<Record<Site, (config: ConfigInput) => void>>;
  /**
   * Control sockets in the topology's temporary directory instead of the configs'
   * /run/flowgate/, so that tests never meet a running demo. Implies temporary config files.
   */
  privateSockets?: boolean;
  /** sysctls written in a site's namespace before flowgate starts there, e.g. conntrack timeouts. */
  sysctls?: Partial<Record<Site, Record<string, string>>>;
  /**
   * MTU of the LAN link: the lan host's eth0 and the veth a-lan. Site A's port eth0 keeps its
   * config's MTU (DPDK 22.11's net_af_packet and net_tap take frames of 1518 and 1522 bytes
   * at most). Default: 1500.
   */
  lanLinkMtu?: number;
  /**
   * With farEnd 'external': a router between the underlay bridge and the far end, whose link
   * towards the far end (attachBehindHop()) has this MTU.
   */
  underlayHop?: { mtu: number };
  /** One line per step, for people watching. */
  progress?: (line: string) => void;
  /** Per flowgate instance, until it runs with its tunnel resolved. Default 60 s. */
  readyTimeoutMs?: number;
}

export class TopologyError extends FlowgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_FLOWGATE_DEMO_TOPOLOGY', message, options);
  }
}

const DEFAULT_READY_TIMEOUT_MS = 60_000;

/** `ip link add NAME` arguments of Linux's own tunnel of `mode` (ip6tnl, ipip, sit), with iproute2's defaults otherwise. */
function linuxTunnelArgs(tunnel: DemoTunnel, local: string, remote: string): string[] {
  const endpoints = ['local', local, 'remote', remote];
  switch (tunnel.mode) {
    case 'ip4ip6':
    case 'ip6ip6':
      return ['type', 'ip6tnl', 'mode', tunnel.mode === 'ip4ip6' ? 'ipip6' : 'ip6ip6', ...endpoints, 'encaplimit', String(tunnel.encaplimit ?? 4), 'hoplimit', '64'];
    case 'ipip':
    case 'sit':
      return ['type', tunnel.mode, ...endpoints];
  }
}

/** Whether this kernel can make an ip6tnl device: tried in a scratch namespace. */
export function kernelHasIp6tnl(): Promise<boolean> {
  return kernelHasTunnel({ mode: 'ip4ip6' });
}

/** Whether this kernel can make its own tunnel of `tunnel.mode` (ip6tnl, ipip, sit): tried in a scratch namespace. */
export async function kernelHasTunnel(tunnel: DemoTunnel): Promise<boolean> {
  const scratch = `fgprobe-${process.pid}-${tunnel.mode}`;
  await sh(['ip', 'netns', 'add', scratch]);
  const forget = onExit(() => deleteNetnsSync(scratch));
  try {
    const [local, remote] = TUNNEL_FAMILIES[tunnel.mode].underlay === 6 ? ['2001:db8::1', '2001:db8::2'] : ['192.0.2.1', '192.0.2.2'];
    const probe = await shStatus(['ip', '-n', scratch, 'link', 'add', 'probe0', ...linuxTunnelArgs(tunnel, local, remote)]);
    return probe.status === 0;
  } finally {
    await sh(['ip', 'netns', 'delete', scratch]).catch(() => undefined);
    forget();
  }
}

interface SiteRuntime {
  configFile: string;
  socket: string;
  tunnels: string[];
  process: FlowgateProcess | undefined;
}

/**
 * A site's config (config/demo-site-{a,b}.yaml) for the tunnel's mode: the LAN port's and the
 * underlay port's addresses, tun0, and the default route into it, of the mode's families.
 */
function siteTunnel(config: ConfigInput, site: Site, tunnel: DemoTunnel, a: DemoAddresses): void {
  const lanPort = config.ports.eth0;
  const wanPort = config.ports.eth1;
  if (lanPort === undefined || wanPort === undefined) throw new TopologyError(`the config of site ${site.toUpperCase()} has no ports eth0 and eth1`);
  const [lan, lanPrefix, underlay, peerUnderlay, own, peer] =
    site === 'a'
      ? [a.siteALan, a.lanPrefix, a.underlayA, a.underlayB, a.tunnelA, a.tunnelB]
      : [a.siteBLan, a.remotePrefix, a.underlayB, a.underlayA, a.tunnelB, a.tunnelA];
  lanPort.addresses = [`${lan}/${lanPrefix}`];
  wanPort.addresses = [`${underlay}/${a.underlayPrefix}`];
  const outer = TUNNEL_FAMILIES[tunnel.mode].underlay === 6 ? { encaplimit: tunnel.encaplimit ?? 4, hoplimit: 64, tclass: 0 } : {};
  config.tunnels = {
    tun0: { mode: tunnel.mode, local: underlay, remote: peerUnderlay, ...outer, mtu: 'auto', addresses: [`${own}/${a.tunnelPrefix}`] },
  };
  config.routes = [{ to: 'default', via: peer, dev: 'tun0' }];
}

export class DemoTopology {
  /** Namespace of each host. */
  readonly ns: Record<Host, string>;
  /** The tunnel between the sites. */
  readonly tunnel: DemoTunnel;
  /** The hosts', sites' and underlay's addresses for the tunnel's mode. */
  readonly addresses: DemoAddresses;
  /** Temporary files: generated configs, logs, private sockets. Removed by destroy(). */
  readonly dir: string;
  private readonly sites = new Map<Site, SiteRuntime>();
  /** The config edits in force, restartSite()'s included. */
  private readonly configure: Partial<Record<Site, (config: ConfigInput) => void>>;
  private readonly created: string[] = [];
  private readonly forgetExitCleanup: () => void;
  private destroyed: Promise<void> | undefined;

  private constructor(
    readonly farEnd: FarEnd,
    private readonly options: TopologyOptions,
  ) {
    const base = `${options.prefix ?? 'fgdemo'}-${process.pid}`;
    this.ns = { lan: `${base}-lan`, a: `${base}-a`, underlay: `${base}-ul`, b: `${base}-b`, remote: `${base}-remote`, hop: `${base}-hop` };
    this.tunnel = options.tunnel ?? { mode: 'ip4ip6' };
    this.addresses = demoAddresses(this.tunnel.mode);
    this.dir = mkdtempSync(path.join(tmpdir(), 'flowgate-demo-'));
    this.configure = { ...options.configure };
    this.forgetExitCleanup = onExit(() => this.destroyNow());
  }

  /** create() then start(). */
  static async build(options: TopologyOptions = {}): Promise<DemoTopology> {
    const topology = await DemoTopology.create(options);
    try {
      await topology.start();
    } catch (err) {
      await topology.destroy().catch(() => undefined);
      throw err;
    }
    return topology;
  }

  /**
   * The namespaces, links, addresses and preparation of every host; site B's ip6tnl when the
   * kernel is the far end. No flowgate runs yet (start() starts them).
   */
  static async create(options: TopologyOptions = {}): Promise<DemoTopology> {
    const wanted = options.farEnd ?? 'auto';
    const tunnel = options.tunnel ?? { mode: 'ip4ip6' };
    const farEnd: FarEnd = wanted !== 'auto' ? wanted : (await kernelHasTunnel(tunnel)) ? 'kernel' : 'flowgate';
    if (options.underlayHop !== undefined && farEnd !== 'external') throw new TopologyError(`underlayHop: only with farEnd 'external' (the caller attaches the far end behind it), got farEnd ${farEnd}`);
    // The hop answers for the far end with proxy NDP: an IPv6 underlay's.
    if (options.underlayHop !== undefined && TUNNEL_FAMILIES[tunnel.mode].underlay !== 6) throw new TopologyError(`underlayHop: only over an IPv6 underlay, got tunnel mode ${tunnel.mode}`);
    const topology = new DemoTopology(farEnd, options);
    try {
      await topology.createHosts();
    } catch (err) {
      await topology.destroy().catch(() => undefined);
      throw err;
    }
    return topology;
  }

  /** The flowgate instances of the sites, whichever run. */
  get flowgates(): { site: Site; process: FlowgateProcess }[] {
    return [...this.sites].flatMap(([site, s]) => (s.process === undefined ? [] : [{ site, process: s.process }]));
  }

  /** Site A's flowgate (or B's); throws if it does not run. */
  site(site: Site = 'a'): FlowgateProcess {
    const p = this.sites.get(site)?.process;
    if (p === undefined) throw new TopologyError(`site ${site.toUpperCase()} runs no flowgate (far end: ${this.farEnd})`);
    return p;
  }

  /** The config file site `site` runs (or would run) with. */
  configFile(site: Site): string {
    const s = this.sites.get(site);
    if (s === undefined) throw new TopologyError(`site ${site.toUpperCase()} has no flowgate (far end: ${this.farEnd})`);
    return s.configFile;
  }

  /** Runs a command in a host's namespace. */
  run(host: Host, command: string | readonly string[], options: Omit<ShOptions, 'netns'> = {}): Promise<string> {
    return sh(command, { ...options, netns: this.ns[host] });
  }

  private progress(line: string): void {
    this.options.progress?.(line);
  }

  // ---- hosts and links --------------------------------------------------------------------

  private sitesWithFlowgate(): Site[] {
    return this.farEnd === 'flowgate' ? ['a', 'b'] : ['a'];
  }

  private hosts(): Host[] {
    if (this.farEnd === 'external') return this.options.underlayHop === undefined ? ['lan', 'a', 'underlay'] : ['lan', 'a', 'underlay', 'hop'];
    return ['lan', 'a', 'underlay', 'b', 'remote'];
  }

  private async createHosts(): Promise<void> {
    const hosts = this.hosts();
    this.progress(`namespaces: ${hosts.map((h) => this.ns[h]).join(', ')}`);
    for (const host of hosts) {
      await sh(['ip', 'netns', 'add', this.ns[host]]);
      this.created.push(this.ns[host]);
      await this.run(host, ['ip', 'link', 'set', 'lo', 'up']);
    }
    // The underlay is a wire: no addresses, and no IPv6 of its own to chatter with.
    await this.run('underlay', ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    await this.run('underlay', ['ip', 'link', 'add', UNDERLAY_BRIDGE, 'type', 'bridge', 'mcast_snooping', '0']);
    await this.run('underlay', ['ip', 'link', 'set', UNDERLAY_BRIDGE, 'up']);

    const a = this.addresses;
    await this.veth('lan', HOST_IFACE, 'a', SITE_VETHS.a.lan, this.options.lanLinkMtu);
    await this.veth('a', SITE_VETHS.a.wan, 'underlay', UNDERLAY_PORTS.a);
    await this.host('lan', `${a.lanHost}/${a.lanPrefix}`, a.siteALan);
    await this.underlayPort(UNDERLAY_PORTS.a);
    await this.prepareAfPacketVeths('a', [SITE_VETHS.a.lan, SITE_VETHS.a.wan]);
    this.sites.set('a', this.siteRuntime('a'));
    if (this.farEnd === 'external') {
      if (this.options.underlayHop !== undefined) await this.createHop();
      return;
    }

    await this.veth('underlay', UNDERLAY_PORTS.b, 'b', SITE_VETHS.b.wan);
    await this.veth('b', SITE_VETHS.b.lan, 'remote', HOST_IFACE);
    await this.host('remote', `${a.remoteHost}/${a.remotePrefix}`, a.siteBLan);
    await this.underlayPort(UNDERLAY_PORTS.b);
    if (this.farEnd === 'flowgate') {
      await this.prepareAfPacketVeths('b', [SITE_VETHS.b.lan, SITE_VETHS.b.wan]);
      this.sites.set('b', this.siteRuntime('b'));
    } else {
      await this.kernelFarEnd();
    }
  }

  /** A veth pair between two namespaces, with `mtu` on both ends when given. */
  private async veth(hostA: Host, nameA: string, hostB: Host, nameB: string, mtu?: number): Promise<void> {
    await sh(['ip', 'link', 'add', nameA, 'netns', this.ns[hostA], ...(mtu === undefined ? [] : ['mtu', String(mtu)]), 'type', 'veth', 'peer', 'name', nameB, 'netns', this.ns[hostB]]);
    if (mtu !== undefined) await this.run(hostB, ['ip', 'link', 'set', nameB, 'mtu', String(mtu)]);
  }

  /** An end host: its address, its default route, and complete checksums on what it sends. */
  private async host(host: Host, address: string, gateway: string): Promise<void> {
    const v6 = address.includes(':');
    // IPv6 without DAD: the address is usable at once, as the sites' own.
    await this.run(host, ['ip', 'addr', 'add', address, 'dev', HOST_IFACE, ...(v6 ? ['nodad'] : [])]);
    await this.run(host, ['ip', 'link', 'set', HOST_IFACE, 'up']);
    await this.run(host, ['ip', v6 ? '-6' : '-4', 'route', 'add', 'default', 'via', gateway]);
    await this.run(host, ['ethtool', '-K', HOST_IFACE, 'tx', 'off']);
    // As nft_flowtable.sh: no cached path MTU from one transfer to the next.
    await this.run(host, ['sysctl', '-q', '-w', 'net.ipv4.tcp_no_metrics_save=1']);
  }

  /** A bridge port towards a site: it transmits into an AF_PACKET port, so checksums complete. */
  private async underlayPort(name: string): Promise<void> {
    await this.run('underlay', ['ip', 'link', 'set', name, 'master', UNDERLAY_BRIDGE]);
    await this.run('underlay', ['ethtool', '-K', name, 'tx', 'off']);
    await this.run('underlay', ['ip', 'link', 'set', name, 'up']);
  }

  /**
   * Puts an interface of the underlay namespace (a VM's TAP) on the underlay bridge, with
   * complete checksums on what leaves it.
   */
  async attachToUnderlay(ifname: string): Promise<void> {
    await this.underlayPort(ifname);
  }

  /** The router of `underlayHop`, on the bridge; the far end's link comes with attachBehindHop(). */
  private async createHop(): Promise<void> {
    await this.veth('underlay', UNDERLAY_PORTS.hop, 'hop', HOST_IFACE);
    await this.underlayPort(UNDERLAY_PORTS.hop);
    await this.run('hop', ['sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.all.proxy_ndp=1']);
    await this.run('hop', ['ip', '-6', 'addr', 'add', `${this.addresses.underlayHop}/${this.addresses.underlayPrefix}`, 'dev', HOST_IFACE, 'nodad']);
    // Its ICMPv6 errors go to site A's AF_PACKET port: complete checksums.
    await this.run('hop', ['ethtool', '-K', HOST_IFACE, 'tx', 'off']);
    await this.run('hop', ['ip', 'link', 'set', HOST_IFACE, 'up']);
  }

  /**
   * Makes an interface of the hop's namespace (a VM's TAP) the link towards the far end
   * (2001:db8:2::2), with the `underlayHop` MTU: routed there, and each side's neighbour
   * solicitations for the other's address answered by the router.
   */
  async attachBehindHop(ifname: string): Promise<void> {
    const hop = this.options.underlayHop;
    if (hop === undefined) throw new TopologyError('attachBehindHop: the topology was created without underlayHop');
    const a = this.addresses;
    await this.run('hop', ['ip', 'link', 'set', ifname, 'mtu', String(hop.mtu), 'up']);
    await this.run('hop', ['ip', '-6', 'route', 'add', `${a.underlayB}/128`, 'dev', ifname]);
    await this.run('hop', ['ip', '-6', 'neigh', 'add', 'proxy', a.underlayB, 'dev', HOST_IFACE]);
    await this.run('hop', ['ip', '-6', 'neigh', 'add', 'proxy', a.underlayA, 'dev', ifname]);
  }

  /** The veths under a site's AF_PACKET ports: up, with IPv6 off from the start. */
  private async prepareAfPacketVeths(site: Site, veths: readonly string[]): Promise<void> {
    for (const veth of veths) {
      await this.run(site, ['sysctl', '-q', '-w', `net.ipv6.conf.${veth}.disable_ipv6=1`]);
      await this.run(site, ['ip', 'link', 'set', veth, 'up']);
    }
  }

  /** Site B as the kernel: its own tunnel of the mode (ip6tnl, ipip or sit), forwarding, the remote network. */
  private async kernelFarEnd(): Promise<void> {
    const a = this.addresses;
    const { inner, underlay } = TUNNEL_FAMILIES[this.tunnel.mode];
    const nodad = (family: 4 | 6) => (family === 6 ? ' nodad' : '');
    const b = (command: string) => this.run('b', command);
    await b(
      [
        inner === 4 ? 'sysctl -q -w net.ipv4.ip_forward=1' : 'sysctl -q -w net.ipv6.conf.all.forwarding=1',
        `ip link set ${SITE_VETHS.b.wan} up`,
        `ip link set ${SITE_VETHS.b.lan} up`,
        `ip -${underlay} addr add ${a.underlayB}/${a.underlayPrefix} dev ${SITE_VETHS.b.wan}${nodad(underlay)}`,
        `ip -${inner} addr add ${a.siteBLan}/${a.remotePrefix} dev ${SITE_VETHS.b.lan}${nodad(inner)}`,
        ['ip link add tun0', ...linuxTunnelArgs(this.tunnel, a.underlayB, a.underlayA)].join(' '),
        `ip -${inner} addr add ${a.tunnelB}/${a.tunnelPrefix} dev tun0${nodad(inner)}`,
        'ip link set tun0 up',
        `ip -${inner} route add default via ${a.tunnelA} dev tun0`,
      ].join('\n'),
    );
  }

  // ---- flowgate ---------------------------------------------------------------------------

  private siteRuntime(site: Site): SiteRuntime {
    const file = SITE_CONFIG_FILES[site];
    const config = parseYaml(readFileSync(file, 'utf8')) as ConfigInput;
    const edit = this.configure[site];
    const rewrite = edit !== undefined || this.options.privateSockets === true || this.options.tunnel !== undefined;
    if (this.options.privateSockets === true) config.control = { ...config.control, socket: path.join(this.dir, `site-${site}.sock`) };
    if (this.options.tunnel !== undefined) siteTunnel(config, site, this.tunnel, this.addresses);
    edit?.(config);
    const configFile = rewrite ? path.join(this.dir, `demo-site-${site}.yaml`) : file;
    if (rewrite) writeFileSync(configFile, stringifyYaml(config));
    return {
      configFile,
      socket: config.control?.socket ?? '/run/flowgate/flowgate.sock',
      tunnels: Object.keys(config.tunnels ?? {}),
      process: undefined,
    };
  }

  /** Starts the flowgate instances and waits until each runs with its tunnel resolved. */
  async start(): Promise<void> {
    for (const [site, values] of Object.entries(this.options.sysctls ?? {}) as [Site, Record<string, string>][]) {
      const settings = Object.entries(values).map(([key, value]) => `${key}=${value}`);
      if (settings.length > 0) await this.run(site, ['sysctl', '-q', '-w', ...settings]);
    }
    const sites = this.sitesWithFlowgate();
    for (const site of sites) this.launch(site);
    // Both at once: each one's tunnel resolves only once the other answers neighbour solicitations.
    await Promise.all(sites.map((site) => this.awaitReady(site)));
  }

  private launch(site: Site): void {
    const s = this.sites.get(site) as SiteRuntime;
    this.progress(`site ${site.toUpperCase()}: ip netns exec ${this.ns[site]} flowgate run -c ${s.configFile}`);
    s.process = FlowgateProcess.start({
      name: `site ${site.toUpperCase()}`,
      netns: this.ns[site],
      configFile: s.configFile,
      socket: s.socket,
      tunnels: s.tunnels,
      logFile: path.join(this.dir, `site-${site}.log`),
    });
  }

  private async awaitReady(site: Site): Promise<void> {
    const started = Date.now();
    await this.site(site).ready(this.options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
    this.progress(`site ${site.toUpperCase()}: ready in ${((Date.now() - started) / 1000).toFixed(1)} s (control socket ${this.sites.get(site)?.socket})`);
  }

  /**
   * Stops a site's flowgate and starts it again, with a changed config if `edit` is given;
   * with `crash`, it is killed with SIGKILL instead of stopped (what it made stays behind
   * for the new instance to take over).
   */
  async restartSite(site: Site, edit?: (config: ConfigInput) => void, options: { crash?: boolean } = {}): Promise<void> {
    const s = this.sites.get(site);
    if (s === undefined || s.process === undefined) throw new TopologyError(`site ${site.toUpperCase()} runs no flowgate`);
    if (options.crash === true) await s.process.crash();
    else await this.stopSite(site);
    if (edit !== undefined) {
      const previous = this.configure[site];
      this.configure[site] = (config) => {
        previous?.(config);
        edit(config);
      };
      this.sites.set(site, this.siteRuntime(site));
    }
    this.launch(site);
    await this.awaitReady(site);
  }

  /** Stops a site's flowgate (SIGTERM); throws if it did not stop cleanly. */
  async stopSite(site: Site): Promise<void> {
    const p = this.sites.get(site)?.process;
    if (p === undefined) return;
    await p.stop();
    if (!p.stoppedCleanly) throw new TopologyError(`site ${site.toUpperCase()}: flowgate ${p.exit} on SIGTERM\n${p.logTail(20).join('\n')}`);
  }

  // ---- teardown ---------------------------------------------------------------------------

  /**
   * Stops the flowgate instances (each removes what it created), deletes the namespaces (with
   * their links) and the temporary files. Idempotent; rejects, after doing all of it, if a
   * flowgate did not stop cleanly.
   */
  destroy(): Promise<void> {
    this.destroyed ??= (async () => {
      const failures: string[] = [];
      await Promise.all(
        this.flowgates.map(({ site }) => this.stopSite(site).catch((err: unknown) => failures.push((err as Error).message))),
      );
      for (const ns of this.created.reverse()) await sh(['ip', 'netns', 'delete', ns]).catch(() => deleteNetnsSync(ns));
      this.created.length = 0;
      rmSync(this.dir, { recursive: true, force: true });
      this.forgetExitCleanup();
      if (failures.length > 0) throw new TopologyError(failures.join('\n'));
    })();
    return this.destroyed;
  }

  /** Synchronous last resort at process exit: kill, delete, remove. */
  private destroyNow(): void {
    for (const { process: p } of this.flowgates) p.killNow();
    for (const ns of this.created) deleteNetnsSync(ns);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
