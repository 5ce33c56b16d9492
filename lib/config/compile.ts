/**
 * compileConfig(): a validated Config becomes the plain, fully-resolved model that the rest
 * of flowgate uses. Addresses are parsed, defaults that depend on other fields are
 * computed (tunnel MTU from its underlay port, route metrics by family, each port's punt
 * policer), and connected routes are derived from addresses as the kernel does.
 *
 * The resolution helpers here are shared with semantic.ts, so that what the checks accept
 * is exactly what compilation can resolve.
 */
import { InvalidArgumentError } from '../errors';
import {
  formatPrefix,
  ipEquals,
  parseIp,
  parseMac,
  parsePrefix,
  prefixContains,
  prefixNetwork,
  type IpAddress,
  type IpFamily,
  type IpPrefix,
} from '../net/addr';
import {
  DEFAULT_PORT_MTU,
  DEFAULT_VLAN_PCP,
  DEFAULT_VLAN_PROTOCOL,
  isVlanConfig,
  parseListenAddress,
  TUNNEL_DEFAULTS,
  TUNNEL_FAMILIES,
  type Config,
  type TunnelConfig,
  type TunnelMode,
  type VlanConfig,
  type VlanProtocol,
} from './schema';

export { TUNNEL_FAMILIES };

export interface AddressModel extends IpAddress {
  /** The text as written in the config. */
  text: string;
}

export interface PrefixModel extends IpPrefix {
  /** The text as written in the config ("192.168.0.2/24", "default"), or the kernel's form for derived routes. */
  text: string;
}

export interface MacModel {
  text: string;
  bytes: Buffer;
}

export interface PuntPolicerModel {
  /** packets per second */
  rate: number;
  /** packets */
  burst: number;
}

export interface PortModel {
  name: string;
  /** PCI address or DPDK vdev string, as written. */
  device: string;
  deviceKind: 'pci' | 'vdev';
  /** null: keep the device's own MAC. */
  mac: MacModel | null;
  mtu: number;
  /** Interface addresses; host bits kept. */
  addresses: PrefixModel[];
  punt: PuntPolicerModel;
}

/** A VLAN sub-interface (a `ports` entry with `parent`), mirrored into the kernel as its own TAP. */
export interface VlanModel {
  name: string;
  /** The port, or (QinQ) the 802.1ad VLAN, whose frames carry this VLAN's tag. */
  parent: string;
  /** The port with a device under it all. */
  port: string;
  id: number;
  protocol: VlanProtocol;
  mtu: number;
  /** null: the MAC of `port`'s device (known once it runs); else its own or the nearest parent's. */
  mac: MacModel | null;
  /** PCP of the tags pushed onto packets that arrived untagged. */
  pcp: number;
  addresses: PrefixModel[];
  /** The fast path polices a VLAN's punts apart from its port's, as another port's. */
  punt: PuntPolicerModel;
}

interface TunnelModelBase {
  name: string;
  local: AddressModel;
  remote: AddressModel;
  /** The port or VLAN the encapsulated packets leave through. */
  underlay: string;
  mtu: number;
  addresses: PrefixModel[];
}

/** The outer header's settings of a tunnel over IPv6 (ip6tnl's). */
export interface Ip6UnderlaySettings {
  mode: 'ip4ip6' | 'ip6ip6';
  encaplimit: number | 'none';
  hoplimit: number | 'inherit';
  tclass: number | 'inherit';
  flowlabel: number | 'hash';
}

/** The outer header's settings of a tunnel over IPv4 (ip tunnel's). */
export interface Ip4UnderlaySettings {
  mode: 'ipip' | 'sit';
  ttl: number | 'inherit';
  tos: number | 'inherit';
  pmtudisc: boolean;
}

export type TunnelSettings = Ip6UnderlaySettings | Ip4UnderlaySettings;
export type TunnelModel = TunnelModelBase & TunnelSettings;

export function overIPv4<T extends TunnelSettings>(settings: T): settings is Extract<T, Ip4UnderlaySettings> {
  return TUNNEL_FAMILIES[settings.mode].underlay === 4;
}

export interface RouteModel {
  /** Destination network, host bits cleared; `text` is 'default' for a default route. */
  to: PrefixModel;
  via: AddressModel | null;
  dev: string;
  metric: number;
  /** 'connected': derived from an interface address (proto kernel, scope link). */
  origin: 'connected' | 'static';
}

export interface CompiledConfig {
  /** The ports with a device. */
  ports: PortModel[];
  /** VLAN sub-interfaces, each after its parent. */
  vlans: VlanModel[];
  tunnels: TunnelModel[];
  /** Connected routes first (in address order), then static routes in config order. */
  routes: RouteModel[];
  flowtable: {
    devices: string[];
    l4proto: ('tcp' | 'udp')[];
    size: number;
    timeout: { tcp: number; udp: number };
    counter: boolean;
  };
  workers: { cpus: number[]; idle: 'busy' | 'adaptive' };
  eal: { args: string[]; hugepages: 'auto' | 'on' | 'off' };
  /** nftables ruleset for the kernel slow path, or null to leave nftables alone. */
  nftables: string | null;
  /** null: no metrics endpoint. */
  metrics: { listen: string; host: string; port: number } | null;
  control: { socket: string };
  log: { level: 'debug' | 'info' | 'warn' | 'error' };
}

// ---- helpers shared with the semantic checks ------------------------------------------

const IPV6_HEADER_BYTES = 40;
const IPV4_HEADER_BYTES = 20;
/** Destination options header carrying the Tunnel Encapsulation Limit option (RFC 2473 4.1.1). */
const ENCAP_LIMIT_OPTION_BYTES = 8;

/** How many bytes the encapsulation adds: what 'auto' subtracts from the underlay MTU. */
export function tunnelOverhead(settings: TunnelSettings): number {
  if (overIPv4(settings)) return IPV4_HEADER_BYTES;
  return IPV6_HEADER_BYTES + (settings.encaplimit === 'none' ? 0 : ENCAP_LIMIT_OPTION_BYTES);
}

/**
 * A tunnel's outer header settings with the defaults of its mode filled in; the schema has
 * already refused the keys of the other underlay family.
 */
export function tunnelSettings(tunnel: TunnelConfig): TunnelSettings {
  const mode: TunnelMode = tunnel.mode;
  if (mode === 'ipip' || mode === 'sit') {
    return {
      mode,
      ttl: tunnel.ttl ?? TUNNEL_DEFAULTS.ttl,
      tos: tunnel.tos ?? TUNNEL_DEFAULTS.tos,
      pmtudisc: tunnel.pmtudisc ?? TUNNEL_DEFAULTS.pmtudisc,
    };
  }
  return {
    mode,
    encaplimit: tunnel.encaplimit ?? TUNNEL_DEFAULTS.encaplimit,
    hoplimit: tunnel.hoplimit ?? TUNNEL_DEFAULTS.hoplimit,
    tclass: tunnel.tclass ?? TUNNEL_DEFAULTS.tclass,
    flowlabel: tunnel.flowlabel ?? TUNNEL_DEFAULTS.flowlabel,
  };
}

/** iproute2's default metrics: static IPv6 routes 1024, connected IPv6 256, IPv4 0. */
export function defaultMetric(family: IpFamily, origin: RouteModel['origin']): number {
  if (family === 4) return 0;
  return origin === 'connected' ? 256 : 1024;
}

export function toAddressModel(text: string): AddressModel {
  return { text, ...parseIp(text) };
}

export function toPrefixModel(text: string): PrefixModel {
  return { text, ...parsePrefix(text) };
}

export function familyName(family: IpFamily): string {
  return family === 4 ? 'IPv4' : 'IPv6';
}

/**
 * The chain of parents of a `ports` entry, from the entry up to (and with) the port that has
 * a device; undefined when a parent is missing or the chain loops (semantic.ts reports both).
 */
export function parentChain(config: Config, name: string): string[] | undefined {
  const chain: string[] = [];
  for (let current: string | undefined = name; current !== undefined; current = config.ports[current]?.parent) {
    if (config.ports[current] === undefined || chain.includes(current)) return undefined;
    chain.push(current);
  }
  return chain;
}

/** A port's MTU, or a VLAN's: its own, else its parent's, down to the port's (default 1500). */
export function portMtu(config: Config, name: string): number {
  for (const entry of parentChain(config, name) ?? [name]) {
    const mtu = config.ports[entry]?.mtu;
    if (mtu !== undefined) return mtu;
  }
  return DEFAULT_PORT_MTU;
}

/** The VLAN sub-interfaces of a config, each after its parent (the order they are created in). */
export function vlanEntries(config: Config): [string, VlanConfig][] {
  const depth = (name: string) => parentChain(config, name)?.length ?? 0;
  const vlans = Object.entries(config.ports).filter((entry): entry is [string, VlanConfig] => isVlanConfig(entry[1]));
  return vlans.sort(([a], [b]) => depth(a) - depth(b));
}

/** The families a device can route: a port's address families, a tunnel's inner family. */
export function deviceFamilies(config: Config, dev: string): Set<IpFamily> {
  const port = config.ports[dev];
  if (port !== undefined) return new Set(port.addresses.map((text) => parsePrefix(text).family));
  const tunnel = config.tunnels[dev];
  if (tunnel !== undefined) return new Set([TUNNEL_FAMILIES[tunnel.mode].inner]);
  return new Set();
}

/**
 * The destination of a static route: a prefix, or for 'default' the all-zero prefix of the
 * family of `via`, or of the device when it has a single family. undefined when 'default'
 * leaves the family open.
 */
export function routeDestination(config: Config, route: Config['routes'][number]): PrefixModel | undefined {
  if (route.to !== 'default') {
    const prefix = parsePrefix(route.to);
    return { text: route.to, ...prefixNetwork(prefix) };
  }
  let family: IpFamily | undefined;
  if (route.via !== undefined) family = parseIp(route.via).family;
  else {
    const families = [...deviceFamilies(config, route.dev)];
    if (families.length === 1) family = families[0];
  }
  if (family === undefined) return undefined;
  return { text: 'default', family, bytes: Buffer.alloc(family === 4 ? 4 : 16), length: 0 };
}

export function connectedRoutes(config: Config): RouteModel[] {
  const routes: RouteModel[] = [];
  const add = (dev: string, addresses: string[]) => {
    for (const text of addresses) {
      const network = prefixNetwork(parsePrefix(text));
      routes.push({
        to: { text: formatPrefix(network), ...network },
        via: null,
        dev,
        metric: defaultMetric(network.family, 'connected'),
        origin: 'connected',
      });
    }
  };
  for (const [name, port] of Object.entries(config.ports)) add(name, port.addresses);
  for (const [name, tunnel] of Object.entries(config.tunnels)) add(name, tunnel.addresses);
  return routes;
}

/** Static routes whose destination resolves; the checks report the others. */
export function staticRoutes(config: Config): RouteModel[] {
  const routes: RouteModel[] = [];
  for (const route of config.routes) {
    const to = routeDestination(config, route);
    if (to === undefined) continue;
    routes.push({
      to,
      via: route.via === undefined ? null : toAddressModel(route.via),
      dev: route.dev,
      metric: route.metric ?? defaultMetric(to.family, 'static'),
      origin: 'static',
    });
  }
  return routes;
}

/** The kernel's choice: longest prefix, then lowest metric, then connected before static. */
export function lookupRoute(routes: readonly RouteModel[], address: IpAddress): RouteModel | undefined {
  let best: RouteModel | undefined;
  for (const route of routes) {
    if (!prefixContains(route.to, address)) continue;
    if (
      best === undefined ||
      route.to.length > best.to.length ||
      (route.to.length === best.to.length && route.metric < best.metric)
    ) {
      best = route;
    }
  }
  return best;
}

export type UnderlayResolution =
  | { ok: true; port: string; route: RouteModel }
  | { ok: false; reason: 'no-route' }
  | { ok: false; reason: 'through-tunnel'; route: RouteModel };

/** The port a tunnel's encapsulated packets leave through: the route towards `remote`. */
export function resolveUnderlay(config: Config, routes: readonly RouteModel[], tunnel: TunnelConfig): UnderlayResolution {
  const route = lookupRoute(routes, parseIp(tunnel.remote));
  if (route === undefined) return { ok: false, reason: 'no-route' };
  if (config.ports[route.dev] === undefined) return { ok: false, reason: 'through-tunnel', route };
  return { ok: true, port: route.dev, route };
}

/** The largest MTU a tunnel can have over its underlay port or VLAN: also what 'auto' resolves to. */
export function tunnelMtuLimit(underlayMtu: number, tunnel: TunnelConfig): number {
  return underlayMtu - tunnelOverhead(tunnelSettings(tunnel));
}

export function isPortAddress(config: Config, address: IpAddress): boolean {
  return Object.values(config.ports).some((port) =>
    port.addresses.some((text) => ipEquals(parsePrefix(text), address)),
  );
}

/**
 * The devices whose forwarded flows are offloaded: those flowtable.devices lists, and the
 * VLANs over a listed port or VLAN, as the kernel's flowtable on a real device also takes
 * the frames of the VLANs over it. A VLAN may also be listed alone.
 */
export function offloadDevices(model: Pick<CompiledConfig, 'flowtable' | 'vlans'>): Set<string> {
  const devices = new Set(model.flowtable.devices);
  // Parents come first in `vlans`: one pass covers QinQ too.
  for (const vlan of model.vlans) if (devices.has(vlan.parent)) devices.add(vlan.name);
  return devices;
}

// ---- compilation ----------------------------------------------------------------------

function unresolved(what: string): never {
  throw new InvalidArgumentError(`compileConfig() needs a config that passed checkConfigText(): ${what}`);
}

/**
 * Compiles a validated config. It trusts the checks of checkConfigText()/loadConfig() and
 * throws InvalidArgumentError only when something cannot be resolved at all.
 */
export function compileConfig(config: Config): CompiledConfig {
  const statics = staticRoutes(config);
  if (statics.length !== config.routes.length) {
    unresolved("a 'default' route without 'via' whose device has no single address family");
  }
  const routes = [...connectedRoutes(config), ...statics];

  const punt = (name: string): PuntPolicerModel => {
    const override = config.slowpath.ports[name];
    return { rate: override?.rate ?? config.slowpath.rate, burst: override?.burst ?? config.slowpath.burst };
  };
  const ports: PortModel[] = [];
  for (const [name, port] of Object.entries(config.ports)) {
    if (port.device === undefined) continue;
    ports.push({
      name,
      device: port.device,
      deviceKind: port.device.startsWith('net_') ? 'vdev' : 'pci',
      mac: port.mac === undefined ? null : { text: port.mac, bytes: parseMac(port.mac) },
      mtu: port.mtu ?? DEFAULT_PORT_MTU,
      addresses: port.addresses.map(toPrefixModel),
      punt: punt(name),
    });
  }

  const vlans: VlanModel[] = vlanEntries(config).map(([name, vlan]) => {
    const chain = parentChain(config, name) ?? unresolved(`VLAN ${name} has no port under it`);
    // The first entry with a MAC of its own, or null: the port's device's MAC.
    const mac = chain.map((entry) => config.ports[entry]?.mac).find((text) => text !== undefined);
    return {
      name,
      parent: vlan.parent,
      port: chain.at(-1) as string,
      id: vlan.vlan,
      protocol: vlan.protocol ?? DEFAULT_VLAN_PROTOCOL,
      mtu: portMtu(config, name),
      mac: mac === undefined ? null : { text: mac, bytes: parseMac(mac) },
      pcp: vlan.pcp ?? DEFAULT_VLAN_PCP,
      addresses: vlan.addresses.map(toPrefixModel),
      punt: punt(name),
    };
  });

  const tunnels: TunnelModel[] = Object.entries(config.tunnels).map(([name, tunnel]) => {
    const underlay = resolveUnderlay(config, routes, tunnel);
    if (!underlay.ok) unresolved(`tunnel ${name} has no underlay port towards ${tunnel.remote}`);
    const underlayMtu = portMtu(config, underlay.port);
    return {
      name,
      ...tunnelSettings(tunnel),
      local: toAddressModel(tunnel.local),
      remote: toAddressModel(tunnel.remote),
      underlay: underlay.port,
      mtu: tunnel.mtu === 'auto' ? tunnelMtuLimit(underlayMtu, tunnel) : tunnel.mtu,
      addresses: tunnel.addresses.map(toPrefixModel),
    };
  });

  const metrics =
    config.metrics === undefined
      ? null
      : { listen: config.metrics.listen, ...parseListenAddress(config.metrics.listen) };

  return {
    ports,
    vlans,
    tunnels,
    routes,
    flowtable: {
      devices: [...config.flowtable.devices],
      l4proto: [...config.flowtable.l4proto],
      size: config.flowtable.size,
      timeout: { ...config.flowtable.timeout },
      counter: config.flowtable.counter,
    },
    workers: { cpus: [...config.workers.cpus], idle: config.workers.idle },
    eal: { args: [...config.eal.args], hugepages: config.eal.hugepages },
    nftables: config.nftables ?? null,
    metrics,
    control: { socket: config.control.socket },
    log: { level: config.log.level },
  };
}
