/**
 * Checks that span fields, run on a config that passed the schema. Each returns the path of
 * the value to blame (or of its key, for names), so the loader can point at FILE:LINE:COL.
 * They reject what the kernel or EAL would reject later, at a worse time and with a worse
 * message: a gateway config error should fail `flowgate check`, not a half-applied start.
 */
import { IFNAME_MAX_BYTES, formatPrefix, ipEquals, isValidIfName, parseIp, parsePrefix, prefixContains, prefixNetwork, type IpFamily } from '../net/addr';
import { describeValue, didYouMean, formatPath, listWords } from './describe';
import {
  TUNNEL_FAMILIES,
  connectedRoutes,
  deviceFamilies,
  familyName,
  isPortAddress,
  resolveUnderlay,
  defaultMetric,
  parentChain,
  portMtu,
  routeDestination,
  toAddressModel,
  tunnelMtuLimit,
  type RouteModel,
} from './compile';
import { formatCpuList, type Machine } from '../machine';
import { DEFAULT_VLAN_PROTOCOL, PORT_MTU_MIN, isVlanConfig, type Config } from './schema';

export interface SemanticIssue {
  path: PropertyKey[];
  /** Point at the key (names) or at the value. */
  at: 'key' | 'value';
  message: string;
}

const IPV6_MIN_MTU = 1280; // RFC 8200 section 5; the kernel disables IPv6 on smaller links.

function article(family: IpFamily): string {
  return family === 4 ? 'an IPv4' : 'an IPv6';
}

/** Reports every value after the first that repeats an earlier one, naming the first. */
function checkUnique<T>(
  issues: SemanticIssue[],
  items: readonly { path: PropertyKey[]; key: T; value: string | number }[],
  expected: string,
  at: 'key' | 'value' = 'value',
): void {
  const firstByKey = new Map<T, PropertyKey[]>();
  for (const item of items) {
    const first = firstByKey.get(item.key);
    if (first === undefined) firstByKey.set(item.key, item.path);
    else issues.push({ path: item.path, at, message: `expected ${expected}, found ${describeValue(item.value)} (also at ${formatPath(first)})` });
  }
}

function checkNames(config: Config, issues: SemanticIssue[]): void {
  const named = [
    ...Object.keys(config.ports).map((name) => ({ path: ['ports', name], key: name, value: name })),
    ...Object.keys(config.tunnels).map((name) => ({ path: ['tunnels', name], key: name, value: name })),
  ];
  for (const { path, key: name } of named) {
    if (isValidIfName(name)) continue;
    const bytes = Buffer.byteLength(name);
    const message =
      bytes > IFNAME_MAX_BYTES
        ? `expected an interface name of at most ${IFNAME_MAX_BYTES} bytes, found '${name}' (${bytes} bytes)`
        : `expected an interface name without '/', ':', '%' or whitespace, other than '.' and '..', found '${name}'`;
    issues.push({ path, at: 'key', message });
  }
  // The kernel has one namespace of interface names: a TAP and a TUN cannot share one.
  checkUnique(issues, named, 'a name not used by another port or tunnel', 'key');
}

function checkPorts(config: Config, issues: SemanticIssue[]): void {
  checkUnique(
    issues,
    Object.entries(config.ports).flatMap(([name, port]) =>
      port.device === undefined ? [] : [{ path: ['ports', name, 'device'], key: port.device.toLowerCase(), value: port.device }],
    ),
    'a device not used by another port',
  );
  for (const [name, port] of Object.entries(config.ports)) {
    const prefixes = port.addresses.map((text) => parsePrefix(text));
    checkUnique(
      issues,
      port.addresses.map((text, index) => ({ path: ['ports', name, 'addresses', index], key: formatPrefix(parsePrefix(text)), value: text })),
      'each address once',
    );
    const mtu = portMtu(config, name);
    if (mtu < IPV6_MIN_MTU && prefixes.some((prefix) => prefix.family === 6)) {
      const inherited = port.mtu === undefined ? ` (the mtu of its parent ${String(port.parent)})` : '';
      issues.push({
        path: ['ports', name, port.mtu === undefined ? 'addresses' : 'mtu'],
        at: 'value',
        message: `expected at least ${IPV6_MIN_MTU} on a port with IPv6 addresses, found ${mtu}${inherited}`,
      });
    }
  }
}

/**
 * The loop a chain of parents starting at `name` runs into, for the message ("a -> b -> a");
 * undefined when the chain ends at a parent that does not exist (reported where it is named).
 */
function parentLoop(config: Config, name: string): string | undefined {
  const seen: string[] = [];
  let current: string | undefined = name;
  while (current !== undefined && !seen.includes(current)) {
    if (config.ports[current] === undefined) return undefined;
    seen.push(current);
    current = config.ports[current]?.parent;
  }
  return current === undefined ? undefined : [...seen.slice(seen.indexOf(current)), current].join(' -> ');
}

/**
 * VLAN sub-interfaces (ports with `parent`), as iproute2 and the kernel's 8021q module would
 * take them: the parent exists and leads to a device; an 802.1ad S-tag goes directly on a
 * port, and a VLAN on a VLAN is the 802.1Q C-tag inside an 802.1ad one (QinQ), so there are
 * at most two tags; the id is the parent's once; the MTU fits the parent's.
 */
function checkVlans(config: Config, issues: SemanticIssue[]): void {
  const byParent = new Map<string, { path: PropertyKey[]; key: number; value: number }[]>();
  for (const [name, port] of Object.entries(config.ports)) {
    if (!isVlanConfig(port)) continue;
    const path = ['ports', name];
    const parent = config.ports[port.parent];
    if (parent === undefined) {
      const candidates = Object.entries(config.ports)
        .filter(([, other]) => other.device !== undefined || (other.protocol === '802.1ad' && config.ports[other.parent ?? '']?.device !== undefined))
        .map(([other]) => other);
      issues.push({
        path: [...path, 'parent'],
        at: 'value',
        message: `expected a port or an 802.1ad VLAN (${listWords(candidates, 'or')}), found '${port.parent}'${didYouMean(port.parent, candidates)}`,
      });
      continue;
    }
    if (parentChain(config, name) === undefined) {
      const loop = parentLoop(config, name);
      if (loop !== undefined) {
        issues.push({
          path: [...path, 'parent'],
          at: 'value',
          message: `expected a parent that leads to a port with a device, found '${port.parent}' (a loop: ${loop})`,
        });
      }
      continue;
    }
    const protocol = port.protocol ?? DEFAULT_VLAN_PROTOCOL;
    if (isVlanConfig(parent)) {
      if (protocol === '802.1ad') {
        issues.push({
          path: [...path, 'protocol'],
          at: 'value',
          message: `expected '802.1Q' on a VLAN over VLAN ${port.parent} (an 802.1ad S-tag goes directly on a port), found '802.1ad'`,
        });
      }
      const parentProtocol = parent.protocol ?? DEFAULT_VLAN_PROTOCOL;
      if (parentProtocol !== '802.1ad') {
        issues.push({
          path: [...path, 'parent'],
          at: 'value',
          message: `expected a port or an 802.1ad VLAN (QinQ carries an 802.1Q C-tag inside an 802.1ad S-tag), found ${parentProtocol} VLAN '${port.parent}'`,
        });
      }
    }
    // The kernel hands AF_PACKET the outer tag apart from the frame (skb_vlan_untag), and
    // DPDK's af_packet PMD writes it back as 0x8100 whatever its TPID: an S-tag would arrive
    // as an 802.1Q tag and its frames be dropped as of an unknown VLAN.
    if (protocol === '802.1ad' && parent.device?.startsWith('net_af_packet') === true) {
      issues.push({
        path: [...path, 'protocol'],
        at: 'value',
        message: `expected '802.1Q' on a VLAN of af_packet port ${port.parent} (DPDK's af_packet PMD receives every outer tag as 802.1Q), found '802.1ad'`,
      });
    }
    const parentMtu = portMtu(config, port.parent);
    if (port.mtu !== undefined && port.mtu > parentMtu) {
      issues.push({
        path: [...path, 'mtu'],
        at: 'value',
        message: `expected an integer ${PORT_MTU_MIN}..${parentMtu} (the mtu of parent ${port.parent}), found ${port.mtu}`,
      });
    }
    const siblings = byParent.get(port.parent) ?? [];
    byParent.set(port.parent, [...siblings, { path: [...path, 'vlan'], key: port.vlan, value: port.vlan }]);
  }
  for (const [parent, ids] of byParent) checkUnique(issues, ids, `a VLAN id not used by another sub-interface of ${parent}`);
}

function checkTunnels(config: Config, routes: readonly RouteModel[], issues: SemanticIssue[]): void {
  const seenEndpoints: { path: PropertyKey[]; key: string; value: string }[] = [];
  for (const [name, tunnel] of Object.entries(config.tunnels)) {
    const path = ['tunnels', name];
    const families = TUNNEL_FAMILIES[tunnel.mode];
    const local = parseIp(tunnel.local);
    const remote = parseIp(tunnel.remote);

    for (const [index, text] of tunnel.addresses.entries()) {
      const family = parsePrefix(text).family;
      if (family !== families.inner) {
        issues.push({
          path: [...path, 'addresses', index],
          at: 'value',
          message: `expected ${article(families.inner)} address (${tunnel.mode} tunnels carry ${familyName(families.inner)}), found ${familyName(family)} '${text}'`,
        });
      }
    }
    checkUnique(
      issues,
      tunnel.addresses.map((text, index) => ({ path: [...path, 'addresses', index], key: formatPrefix(parsePrefix(text)), value: text })),
      'each address once',
    );

    let endpointsOk = true;
    for (const [field, address, text] of [['local', local, tunnel.local], ['remote', remote, tunnel.remote]] as const) {
      if (address.family !== families.underlay) {
        endpointsOk = false;
        issues.push({
          path: [...path, field],
          at: 'value',
          message: `expected ${article(families.underlay)} address (${tunnel.mode} tunnels run over ${familyName(families.underlay)}), found ${familyName(address.family)} '${text}'`,
        });
      }
    }
    if (!endpointsOk) continue;

    if (!isPortAddress(config, local)) {
      const candidates = Object.entries(config.ports).flatMap(([portName, port]) =>
        port.addresses
          .filter((text) => parsePrefix(text).family === families.underlay)
          .map((text) => `${text.slice(0, text.indexOf('/'))} on ${portName}`),
      );
      const hint = candidates.length === 0 ? `no port has ${article(families.underlay)} address` : listWords(candidates, 'or');
      issues.push({
        path: [...path, 'local'],
        at: 'value',
        message: `expected an address of a port (${hint}), found '${tunnel.local}'`,
      });
    }

    if (ipEquals(local, remote)) {
      issues.push({ path: [...path, 'remote'], at: 'value', message: `expected an address other than local, found '${tunnel.remote}'` });
      continue;
    }

    // Decapsulation looks a tunnel up by (remote, local): two tunnels cannot share the pair.
    seenEndpoints.push({ path: [...path, 'remote'], key: `${local.bytes.toString('hex')}>${remote.bytes.toString('hex')}`, value: tunnel.remote });

    const underlay = resolveUnderlay(config, routes, tunnel);
    if (!underlay.ok) {
      const why =
        underlay.reason === 'no-route'
          ? `no connected prefix or route of a port covers it`
          : `the route to it leads into tunnel ${underlay.route.dev}`;
      issues.push({
        path: [...path, 'remote'],
        at: 'value',
        message: `expected an address reachable through a port's connected prefix or a route via a port, found '${tunnel.remote}' (${why})`,
      });
      continue;
    }
    const underlayMtu = portMtu(config, underlay.port);
    const limit = tunnelMtuLimit(underlayMtu, tunnel);
    const overhead = underlayMtu - limit;
    const found = String(tunnel.mtu === 'auto' ? `'auto' = ${limit}` : tunnel.mtu);
    if (tunnel.mtu === 'auto' ? limit < PORT_MTU_MIN : tunnel.mtu > limit) {
      issues.push({
        path: [...path, 'mtu'],
        at: 'value',
        message: `expected 'auto' or an integer ${PORT_MTU_MIN}..${limit} (mtu ${underlayMtu} of underlay port ${underlay.port} - ${overhead}), found ${found}`,
      });
    } else if (families.inner === 6 && (tunnel.mtu === 'auto' ? limit : tunnel.mtu) < IPV6_MIN_MTU) {
      // The kernel disables IPv6 on the tunnel's TUN below 1280: it could carry nothing.
      issues.push({
        path: [...path, 'mtu'],
        at: 'value',
        message: `expected at least ${IPV6_MIN_MTU} for ${tunnel.mode === 'sit' ? 'a' : 'an'} ${tunnel.mode} tunnel (it carries IPv6; mtu ${underlayMtu} of underlay port ${underlay.port} - ${overhead} = ${limit}), found ${found}`,
      });
    }
  }
  checkUnique(issues, seenEndpoints, 'a local/remote pair not used by another tunnel');
}

/** Returns the static routes that passed, for the tunnels' underlay lookups. */
function checkRoutes(config: Config, issues: SemanticIssue[]): RouteModel[] {
  const valid: RouteModel[] = [];
  const devices = [...new Set([...Object.keys(config.ports), ...Object.keys(config.tunnels)])];
  const connected = connectedRoutes(config);
  // The first route to each (destination, metric), where "also at" points. Connected routes
  // may repeat among themselves (two ports on one subnet): the kernel appends those.
  const routed = new Map<string, PropertyKey[]>();
  for (const route of connected) {
    const key = `${route.to.text} ${route.metric}`;
    if (routed.has(key)) continue;
    const owner = config.ports[route.dev] === undefined ? 'tunnels' : 'ports';
    const addresses = config.ports[route.dev]?.addresses ?? config.tunnels[route.dev]?.addresses ?? [];
    const index = addresses.findIndex((text) => formatPrefix(prefixNetwork(parsePrefix(text))) === route.to.text);
    routed.set(key, [owner, route.dev, 'addresses', index]);
  }

  for (const [index, route] of config.routes.entries()) {
    const path = ['routes', index];
    if (!devices.includes(route.dev)) {
      issues.push({
        path: [...path, 'dev'],
        at: 'value',
        message: `expected the name of a port or tunnel (${listWords(devices, 'or')}), found '${route.dev}'${didYouMean(route.dev, devices)}`,
      });
      continue;
    }
    const families = deviceFamilies(config, route.dev);
    const tunnel = config.tunnels[route.dev];
    const via = route.via === undefined ? undefined : parseIp(route.via);
    const to = routeDestination(config, route);

    if (to === undefined) {
      const why = families.size === 0 ? `${route.dev} has no addresses` : `${route.dev} has IPv4 and IPv6 addresses`;
      issues.push({
        path: [...path, 'to'],
        at: 'value',
        message: `expected '0.0.0.0/0' or '::/0' to say which family, or a 'via', found 'default' (${why})`,
      });
      continue;
    }
    if (via !== undefined && via.family !== to.family) {
      issues.push({
        path: [...path, 'via'],
        at: 'value',
        message: `expected ${article(to.family)} next hop for ${article(to.family)} destination, found ${familyName(via.family)} '${route.via}'`,
      });
      continue;
    }
    if (families.size === 0) {
      issues.push({
        path: [...path, 'dev'],
        at: 'value',
        message: `expected a device with ${article(to.family)} address for ${article(to.family)} route, found '${route.dev}' (it has no addresses)`,
      });
      continue;
    }
    if (!families.has(to.family)) {
      const onlyFamily = families.has(4) ? 4 : 6;
      const field = via === undefined ? 'to' : 'via';
      const what = via === undefined ? 'destination' : 'next hop';
      const why =
        tunnel === undefined
          ? `${route.dev} has only ${familyName(onlyFamily)} addresses`
          : `${tunnel.mode} tunnel ${route.dev} carries only ${familyName(onlyFamily)}`;
      issues.push({
        path: [...path, field],
        at: 'value',
        message: `expected ${article(onlyFamily)} ${what} (${why}), found ${familyName(to.family)} '${field === 'to' ? route.to : route.via}'`,
      });
      continue;
    }
    if (via !== undefined) {
      const onLink = connected.filter((candidate) => candidate.dev === route.dev && prefixContains(candidate.to, via));
      // Every port's TAP mirror has an IPv6 link-local address, so fe80::/10 next hops are on-link.
      const linkLocal = via.family === 6 && config.ports[route.dev] !== undefined && prefixContains(parsePrefix('fe80::/10'), via);
      if (onLink.length === 0 && !linkLocal) {
        const prefixes = connected.filter((candidate) => candidate.dev === route.dev && candidate.to.family === via.family).map((candidate) => candidate.to.text);
        issues.push({
          path: [...path, 'via'],
          at: 'value',
          message: `expected a next hop on a connected prefix of ${route.dev} (${listWords(prefixes, 'or')}), found '${route.via}'`,
        });
        continue;
      }
    }
    const metric = route.metric ?? defaultMetric(to.family, 'static');
    const key = `${formatPrefix(to)} ${metric}`;
    const first = routed.get(key);
    if (first !== undefined) {
      // The kernel answers "File exists" for a second route to a prefix with the same metric.
      issues.push({
        path: [...path, 'to'],
        at: 'value',
        message: `expected a destination not already routed with the same metric, found ${describeValue(route.to)} (also at ${formatPath(first)})`,
      });
      continue;
    }
    routed.set(key, [...path, 'to']);
    valid.push({ to, via: route.via === undefined ? null : toAddressModel(route.via), dev: route.dev, metric, origin: 'static' });
  }
  return valid;
}

function checkFlowtable(config: Config, issues: SemanticIssue[]): void {
  const ports = Object.keys(config.ports);
  for (const [index, device] of config.flowtable.devices.entries()) {
    const path = ['flowtable', 'devices', index];
    if (config.ports[device] !== undefined) continue;
    if (config.tunnels[device] !== undefined) {
      issues.push({ path, at: 'value', message: `expected a port name (a tunnel is offloaded through its underlay port), found tunnel '${device}'` });
    } else {
      issues.push({ path, at: 'value', message: `expected a port name (${listWords(ports, 'or')}), found '${device}'${didYouMean(device, ports)}` });
    }
  }
  checkUnique(issues, config.flowtable.devices.map((device, index) => ({ path: ['flowtable', 'devices', index], key: device, value: device })), 'each device once');
  checkUnique(issues, config.flowtable.l4proto.map((proto, index) => ({ path: ['flowtable', 'l4proto', index], key: proto, value: proto })), 'each protocol once');
}

function checkWorkers(config: Config, machine: Machine, issues: SemanticIssue[]): void {
  const available = formatCpuList(machine.cpus);
  const cpus = config.workers.cpus;
  for (const [index, cpu] of cpus.entries()) {
    if (!machine.cpus.includes(cpu)) {
      issues.push({ path: ['workers', 'cpus', index], at: 'value', message: `expected a CPU of this machine (${available}), found ${cpu}` });
    }
  }
  checkUnique(issues, cpus.map((cpu, index) => ({ path: ['workers', 'cpus', index], key: cpu, value: cpu })), 'each CPU once');
  // Workers poll without yielding: the control thread, JavaScript and the kernel's slow
  // path need a CPU that no worker spins on.
  if (machine.cpus.every((cpu) => cpus.includes(cpu))) {
    issues.push({
      path: ['workers', 'cpus'],
      at: 'value',
      message: `expected at least one CPU of this machine (${available}) left free of workers for the control thread and the kernel, found all of them taken`,
    });
  }
}

function checkSlowpath(config: Config, issues: SemanticIssue[]): void {
  const ports = Object.keys(config.ports);
  for (const name of Object.keys(config.slowpath.ports)) {
    if (config.ports[name] !== undefined) continue;
    issues.push({
      path: ['slowpath', 'ports', name],
      at: 'key',
      message: `expected a port name (${listWords(ports, 'or')}), found '${name}'${didYouMean(name, ports)}`,
    });
  }
}

/** Every cross-field problem of a schema-valid config, in file order of the sections. */
export function checkSemantics(config: Config, machine: Machine): SemanticIssue[] {
  const issues: SemanticIssue[] = [];
  checkNames(config, issues);
  checkPorts(config, issues);
  checkVlans(config, issues);
  // A tunnel's underlay is looked up only among routes that passed their own checks, so
  // that one broken route is reported once, not again as every tunnel it misleads.
  const validStaticRoutes = checkRoutes(config, issues);
  checkTunnels(config, [...connectedRoutes(config), ...validStaticRoutes], issues);
  checkFlowtable(config, issues);
  checkWorkers(config, machine, issues);
  checkSlowpath(config, issues);
  return issues;
}
