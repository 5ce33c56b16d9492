/**
 * The flowgate YAML config: the single source of its types (z.infer), its leaf validation
 * and, through `.describe()` and `fieldTypes`, of the config reference in the README.
 *
 * Every leaf names what it expects in one phrase; the same phrase is the type column of the
 * reference and the "expected X" of every message, so the two cannot drift apart. Checks
 * that read several fields (a route's device exists, a tunnel's remote is reachable...)
 * live in semantic.ts: they need a whole, schema-valid config and the machine.
 */
import { z } from 'zod';
import { formatPrefix, hasHostBits, parseIPv4, parseIPv6, parseIp, parseMac, parsePrefix, prefixNetwork } from '../net/addr';
import { InvalidArgumentError } from '../errors';
import { describeValue } from './describe';

/** The type column of the config reference, registered on each leaf schema. */
export const fieldTypes = z.registry<{ type: string }>();

/**
 * The default column of the reference for keys whose default depends on other keys (a VLAN's
 * MTU is its parent's): the schema leaves them optional and compile.ts resolves them.
 */
export const documentedDefaults = z.registry<{ default: string }>();

function documented<T extends z.ZodType>(schema: T, text: string): T {
  documentedDefaults.add(schema, { default: text });
  return schema;
}

type ErrorMap = (issue: z.core.$ZodRawIssue) => string;

function errorMap(expected: string): ErrorMap {
  return (issue) => {
    // Replaced by one message per key, with a suggestion, where positions are attached.
    if (issue.code === 'unrecognized_keys') return `unknown keys ${issue.keys.join(', ')}`;
    if (issue.code === 'invalid_type' && issue.input === undefined) {
      return `missing required key '${String(issue.path?.at(-1))}': expected ${expected}`;
    }
    return `expected ${expected}, found ${describeValue(issue.input)}`;
  };
}

/**
 * Builds a leaf whose every failure, including those of its checks, reads
 * "expected <expected>, found <value>". The reference shows `expected` without its article.
 */
function leaf<T extends z.ZodType>(expected: string, build: (params: { error: ErrorMap }) => T): T {
  const schema = build({ error: errorMap(expected) });
  fieldTypes.add(schema, { type: expected.replace(/^(a|an) /, '') });
  return schema;
}

/** Runs a parser from lib/net/addr.ts as a check; its message already says expected/found. */
function parsedBy(parse: (text: string) => unknown) {
  return (text: string, ctx: z.core.$RefinementCtx<string>): void => {
    try {
      parse(text);
    } catch (err) {
      if (!(err instanceof InvalidArgumentError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message, input: text });
    }
  };
}

function intRange(min: number, max: number): string {
  return `an integer ${min}..${max}`;
}

function intOrKeyword<K extends string>(min: number, max: number, keyword: K) {
  return leaf(`${intRange(min, max)} or '${keyword}'`, (p) =>
    z.union([z.int(p).min(min).max(max), z.literal(keyword, p)], p),
  );
}

function mapping<T extends z.core.$ZodLooseShape>(shape: T, expected = 'a mapping') {
  return leaf(expected, (p) => z.strictObject(shape, p));
}

function mappingOf<T extends z.ZodType>(expected: string, value: T) {
  return leaf(expected, (p) => z.record(z.string(p), value, p));
}

// ---- addresses and names --------------------------------------------------------------

const ipAddress = leaf('an IPv4 or IPv6 address', (p) => z.string(p).superRefine(parsedBy(parseIp)));

const interfaceAddress = leaf('an address with a prefix length such as 192.0.2.1/24 or 2001:db8::1/64', (p) =>
  z.string(p).superRefine(parsedBy(parsePrefix)),
);

const interfaceAddresses = leaf('a list of addresses with prefix lengths', (p) => z.array(interfaceAddress, p));

function checkUnicastMac(text: string, ctx: z.core.$RefinementCtx<string>): void {
  let bytes: Buffer;
  try {
    bytes = parseMac(text);
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message, input: text });
    return;
  }
  const first = bytes[0] ?? 0;
  if ((first & 1) !== 0) {
    ctx.addIssue({ code: 'custom', input: text, message: `expected a unicast MAC address, found '${text}' (the multicast bit of the first octet is set)` });
  } else if (bytes.every((byte) => byte === 0)) {
    ctx.addIssue({ code: 'custom', input: text, message: `expected a unicast MAC address, found '${text}' (all zeros)` });
  }
}

const PCI_ADDRESS = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]$/;
// A vdev is a driver name, an instance suffix and comma-separated key=value arguments.
const VDEV = /^net_[A-Za-z0-9_]+(,[A-Za-z0-9_]+=[^,\s]*)*$/;

// 9702 is the largest MTU that every DPDK PMD flowgate targets can carry in one jumbo mbuf chain.
export const PORT_MTU_MIN = 68;
export const PORT_MTU_MAX = 9702;
export const DEFAULT_PORT_MTU = 1500;

export const VLAN_PROTOCOLS = ['802.1Q', '802.1ad'] as const;
export type VlanProtocol = (typeof VLAN_PROTOCOLS)[number];
export const VLAN_ID_MIN = 1;
export const VLAN_ID_MAX = 4094;
export const DEFAULT_VLAN_PROTOCOL: VlanProtocol = '802.1Q';
export const DEFAULT_VLAN_PCP = 0;

const DEVICE_EXPECTED = 'a PCI address (DDDD:BB:DD.F) or a DPDK vdev string (net_...)';
const PARENT_EXPECTED = 'a port name';
const VLAN_ID_EXPECTED = intRange(VLAN_ID_MIN, VLAN_ID_MAX);
/** Keys that make sense only on a VLAN sub-interface (with `parent`). */
const VLAN_ONLY_KEYS = ['vlan', 'protocol', 'pcp'] as const;

/**
 * A port is either a DPDK device (`device`) or, named as iproute2 names them (eth0.100), a
 * VLAN sub-interface of another port (`parent` and `vlan`). Which one decides the keys that
 * must or may be present; the cross-port checks (the parent exists...) are semantic.
 */
interface PortKeys {
  device?: string | undefined;
  parent?: string | undefined;
  vlan?: number | undefined;
  protocol?: string | undefined;
  pcp?: number | undefined;
}

function checkPortKind<T extends PortKeys>(port: T, ctx: z.core.$RefinementCtx<T>): void {
  if (port.device !== undefined && port.parent !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['parent'], input: port.parent, message: "expected either 'device' (a port) or 'parent' (a VLAN sub-interface), found both" });
    return;
  }
  if (port.device !== undefined) {
    for (const key of VLAN_ONLY_KEYS) {
      if (port[key] === undefined) continue;
      ctx.addIssue({ code: 'custom', path: [key], input: port[key], message: `expected '${key}' only on a VLAN sub-interface (one with 'parent'), found it on a port with a device` });
    }
    return;
  }
  if (port.parent !== undefined) {
    if (port.vlan === undefined) ctx.addIssue({ code: 'custom', path: ['vlan'], input: undefined, message: `missing required key 'vlan': expected ${VLAN_ID_EXPECTED}` });
    return;
  }
  // Neither: a VLAN that lost its parent, or (most often) a port that lost its device.
  if (port.vlan !== undefined) ctx.addIssue({ code: 'custom', path: ['parent'], input: undefined, message: `missing required key 'parent': expected ${PARENT_EXPECTED}` });
  else ctx.addIssue({ code: 'custom', path: ['device'], input: undefined, message: `missing required key 'device': expected ${DEVICE_EXPECTED}` });
}

const portSchema = leaf('a mapping of port settings', (p) =>
  z
    .strictObject(
      {
        device: documented(leaf(DEVICE_EXPECTED, (q) => z.string(q).refine((text) => PCI_ADDRESS.test(text) || VDEV.test(text))), 'required without `parent`').optional()
          .describe('PCI address of the NIC (DDDD:BB:DD.F) or a DPDK vdev string, e.g. "net_af_packet0,iface=veth0". Only the shape is checked. Required on a port; absent on a VLAN sub-interface.'),
        parent: leaf(PARENT_EXPECTED, (q) => z.string(q))
          .optional()
          .describe('Makes the entry a VLAN sub-interface (named as iproute2 does, e.g. eth0.100) of this port, or, for QinQ, of an 802.1ad VLAN; exclusive with `device`.'),
        vlan: documented(leaf(VLAN_ID_EXPECTED, (q) => z.int(q).min(VLAN_ID_MIN).max(VLAN_ID_MAX)), 'required with `parent`').optional()
          .describe('VLAN id of a sub-interface (required with `parent`); unique per parent.'),
        protocol: documented(leaf("'802.1Q' or '802.1ad'", (q) => z.enum(VLAN_PROTOCOLS, q)), `\`${DEFAULT_VLAN_PROTOCOL}\``).optional()
          .describe("Tag of a sub-interface: '802.1Q' (TPID 0x8100, the default) or '802.1ad' (S-tag, TPID 0x88a8, directly on a port only)."),
        pcp: documented(leaf(intRange(0, 7), (q) => z.int(q).min(0).max(7)), `\`${DEFAULT_VLAN_PCP}\``).optional()
          .describe('Priority code point of the tags pushed onto packets that arrived untagged; forwarded tagged packets keep theirs.'),
        mac: leaf('a unicast MAC address such as 02:00:00:00:00:01', (q) => z.string(q).superRefine(checkUnicastMac))
          .optional()
          .describe("MAC address of the port and of its kernel TAP mirror; default: the device's own, or a sub-interface's parent's."),
        mtu: documented(leaf(intRange(PORT_MTU_MIN, PORT_MTU_MAX), (q) => z.int(q).min(PORT_MTU_MIN).max(PORT_MTU_MAX)), `\`${DEFAULT_PORT_MTU}\`, or the parent's`).optional()
          .describe("MTU of the port (IPv6 needs at least 1280); a sub-interface's may not exceed its parent's."),
        addresses: interfaceAddresses
          .default([])
          .describe('Interface addresses with prefix length, host bits kept ("192.168.0.2/24"); each adds a connected route, as in the kernel.'),
      },
      p,
    )
    .superRefine(checkPortKind),
);

// ---- tunnels --------------------------------------------------------------------------

export const TUNNEL_MODES = ['ip4ip6', 'ip6ip6', 'ipip', 'sit'] as const;
export type TunnelMode = (typeof TUNNEL_MODES)[number];
export type IpFamilyNumber = 4 | 6;

/** Outer (underlay) and inner (payload) families of each tunnel mode. */
export const TUNNEL_FAMILIES: Record<TunnelMode, { underlay: IpFamilyNumber; inner: IpFamilyNumber }> = {
  ip4ip6: { underlay: 6, inner: 4 },
  ip6ip6: { underlay: 6, inner: 6 },
  ipip: { underlay: 4, inner: 4 },
  sit: { underlay: 4, inner: 6 },
};

/**
 * The outer header's settings, by the underlay's family, in iproute2's words: `ip -6 tunnel`
 * (ip6tnl) for an IPv6 underlay, `ip tunnel` (ipip, sit) for IPv4. A tunnel takes only those
 * of its underlay; the same setting's name in the other family is named in the message.
 */
export const TUNNEL_KEYS = {
  6: ['encaplimit', 'hoplimit', 'tclass', 'flowlabel'],
  4: ['ttl', 'tos', 'pmtudisc'],
} as const satisfies Record<IpFamilyNumber, readonly string[]>;
export const TUNNEL_KEY_COUNTERPARTS: Readonly<Record<string, string>> = { hoplimit: 'ttl', ttl: 'hoplimit', tclass: 'tos', tos: 'tclass' };

/**
 * Defaults as Linux's: ip6tnl's (encaplimit 4, hoplimit 64, tclass 0, flowlabel 0) and
 * `ip tunnel add`'s (ttl 0 = inherit, tos 0, pmtudisc on). compile.ts applies them per mode.
 */
export const TUNNEL_DEFAULTS = { encaplimit: 4, hoplimit: 64, tclass: 0, flowlabel: 0, ttl: 'inherit', tos: 0, pmtudisc: true } as const;

const tunnelMode = leaf(`one of ${TUNNEL_MODES.map((mode) => `'${mode}'`).join(', ')}`, (p) => z.enum(TUNNEL_MODES, p));

// The default of an optional key that compile.ts fills in only where it applies (a
// tunnel's mode decides), for the reference's default column.
function modeDefault<T extends z.ZodType>(schema: T, value: string | number | boolean): T {
  return documented(schema, `\`${String(value)}\``);
}

const IPV6_ONLY = 'IPv6 underlay (ip4ip6, ip6ip6) only.';
const IPV4_ONLY = 'IPv4 underlay (ipip, sit) only.';

/** A key of the other underlay family, or a fixed TTL without DF: reported at the key's value. */
function checkTunnelKeys(tunnel: Record<string, unknown> & { mode: TunnelMode }, ctx: z.core.$RefinementCtx<unknown>): void {
  const underlay = TUNNEL_FAMILIES[tunnel.mode].underlay;
  const own: readonly string[] = TUNNEL_KEYS[underlay];
  const other = TUNNEL_KEYS[underlay === 6 ? 4 : 6];
  const runsOver = `${tunnel.mode} tunnels run over IPv${underlay} and take ${own.slice(0, -1).join(', ')} and ${own.at(-1)}`;
  for (const key of other) {
    if (tunnel[key] === undefined) continue;
    const counterpart = TUNNEL_KEY_COUNTERPARTS[key];
    const hint = counterpart !== undefined && own.includes(counterpart) ? `; did you mean '${counterpart}'?` : '';
    ctx.addIssue({
      code: 'custom',
      path: [key],
      input: tunnel[key],
      message: `expected no '${key}' in ${tunnel.mode === 'sit' ? 'a' : 'an'} ${tunnel.mode} tunnel (${runsOver}${hint}), found ${describeValue(tunnel[key])}`,
    });
  }
  // ip_tunnel_xmit() and ipip6_tunnel_xmit() read the low bit of a configured TOS as
  // "inherit" (iproute2 writes 'tos inherit' as 1): flowgate would send the odd TOS as it is,
  // and the two ends of the comparison with Linux would differ.
  if (underlay === 4 && typeof tunnel.tos === 'number' && tunnel.tos % 2 === 1) {
    ctx.addIssue({
      code: 'custom',
      path: ['tos'],
      input: tunnel.tos,
      message: `expected an even TOS (Linux's ipip and sit take an odd one as 'inherit'; write 'inherit' for that), found ${describeValue(tunnel.tos)}`,
    });
  }
  // iproute2 refuses it ("ttl != 0 and nopmtudisc are incompatible"): with a fixed TTL a
  // packet routed back into its own tunnel gets a fresh TTL at every pass, and only DF ends
  // the loop, once the growing packet exceeds the path MTU.
  if (underlay === 4 && tunnel.pmtudisc === false && tunnel.ttl !== undefined && tunnel.ttl !== 'inherit') {
    ctx.addIssue({
      code: 'custom',
      path: ['ttl'],
      input: tunnel.ttl,
      message: `expected 'inherit' with pmtudisc: false (a fixed TTL needs path MTU discovery, as in ip tunnel), found ${describeValue(tunnel.ttl)}`,
    });
  }
}

const tunnelSchema = mapping({
  mode: tunnelMode.describe(
    'Encapsulation: ip4ip6 carries IPv4 in IPv6 and ip6ip6 IPv6 in IPv6 (RFC 2473, as ip6tnl); ipip carries IPv4 in IPv4 (RFC 2003) and sit IPv6 in IPv4 (RFC 4213).',
  ),
  local: ipAddress.describe('Outer source address, of the underlay family (IPv6 for ip4ip6 and ip6ip6, IPv4 for ipip and sit); must be an address of a port.'),
  remote: ipAddress.describe("Outer destination address (the peer), of the underlay family; must be reachable through a port's connected prefix or a route via a port."),
  encaplimit: modeDefault(
    intOrKeyword(0, 255, 'none').optional().describe(`${IPV6_ONLY} Tunnel Encapsulation Limit option value (RFC 2473); 'none' sends no destination options header.`),
    TUNNEL_DEFAULTS.encaplimit,
  ),
  hoplimit: modeDefault(
    intOrKeyword(1, 255, 'inherit').optional().describe(`${IPV6_ONLY} Outer hop limit; 'inherit' copies the inner TTL or hop limit.`),
    TUNNEL_DEFAULTS.hoplimit,
  ),
  tclass: modeDefault(
    intOrKeyword(0, 255, 'inherit').optional().describe(`${IPV6_ONLY} Outer traffic class; 'inherit' copies the inner DSCP (ECN always follows RFC 6040).`),
    TUNNEL_DEFAULTS.tclass,
  ),
  flowlabel: modeDefault(
    intOrKeyword(0, 0xfffff, 'hash').optional().describe(`${IPV6_ONLY} Outer flow label; 'hash' derives it from the inner flow.`),
    TUNNEL_DEFAULTS.flowlabel,
  ),
  ttl: modeDefault(
    intOrKeyword(1, 255, 'inherit').optional().describe(`${IPV4_ONLY} Outer TTL; 'inherit' (Linux's default) copies the inner TTL or hop limit.`),
    TUNNEL_DEFAULTS.ttl,
  ),
  tos: modeDefault(
    intOrKeyword(0, 255, 'inherit').optional().describe(`${IPV4_ONLY} Outer TOS; 'inherit' copies the inner DSCP (ECN always follows RFC 6040).`),
    TUNNEL_DEFAULTS.tos,
  ),
  pmtudisc: modeDefault(
    leaf('true or false', (p) => z.boolean(p)).optional().describe(`${IPV4_ONLY} Path MTU discovery, as ip tunnel's pmtudisc: the outer header has DF set; false copies DF from an inner IPv4 packet (and needs ttl 'inherit').`),
    TUNNEL_DEFAULTS.pmtudisc,
  ),
  mtu: leaf(`'auto' or ${intRange(PORT_MTU_MIN, PORT_MTU_MAX)}`, (p) =>
    z.union([z.literal('auto', p), z.int(p).min(PORT_MTU_MIN).max(PORT_MTU_MAX)], p),
  )
    .default('auto')
    .describe("Tunnel MTU; 'auto' is the underlay port's MTU minus the outer headers: 40 for IPv6 (48 with an encaplimit), 20 for IPv4. A number may not exceed that."),
  addresses: interfaceAddresses
    .default([])
    .describe('Addresses of the tunnel interface, of the inner family (IPv4 for ip4ip6 and ipip, IPv6 for ip6ip6 and sit).'),
}, 'a mapping of tunnel settings').superRefine(checkTunnelKeys, {
  // Also when other keys of the tunnel are wrong, so that every problem is reported at once:
  // the check reads only the mode, and which keys are present.
  when: (payload) => TUNNEL_MODES.includes((payload.value as { mode?: unknown } | null)?.mode as TunnelMode),
});

// ---- routes ---------------------------------------------------------------------------

function checkDestination(text: string, ctx: z.core.$RefinementCtx<string>): void {
  if (text === 'default') return;
  let prefix;
  try {
    prefix = parsePrefix(text);
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw err;
    ctx.addIssue({ code: 'custom', input: text, message: err.message.replace(/^expected /, "expected 'default' or ") });
    return;
  }
  // The kernel refuses such a route ("Invalid prefix for given prefix length").
  if (hasHostBits(prefix)) {
    ctx.addIssue({
      code: 'custom',
      input: text,
      message: `expected a destination prefix without host bits, found '${text}' (did you mean '${formatPrefix(prefixNetwork(prefix))}'?)`,
    });
  }
}

const routeSchema = mapping({
  to: leaf("'default' or a destination prefix such as 10.0.0.0/8", (p) => z.string(p).superRefine(checkDestination))
    .describe("Destination: a prefix without host bits, or 'default' (of the family of `via`, or of `dev` when it has one family)."),
  via: ipAddress.optional().describe('Next hop, on a connected prefix of `dev`; without it the route is a device route.'),
  dev: leaf('a port or tunnel name', (p) => z.string(p)).describe('Port or tunnel the route leaves through.'),
  metric: leaf(intRange(0, 0xffffffff), (p) => z.int(p).min(0).max(0xffffffff))
    .optional()
    .describe('Route metric; default as iproute2: 0 for IPv4, 1024 for IPv6.'),
}, 'a route such as { to: default, via: 192.0.2.1, dev: eth0 }');

// ---- flowtable and workers ------------------------------------------------------------

export const L4_PROTOCOLS = ['tcp', 'udp'] as const;
export const FLOWTABLE_DEFAULTS = { size: 1048576, timeout: { tcp: 30, udp: 30 }, counter: true } as const;

const idleTimeout = (fallback: number) =>
  leaf(intRange(1, 86400), (p) => z.int(p).min(1).max(86400)).default(fallback);

const flowtableSchema = mapping({
  devices: leaf('a non-empty list of port names', (p) => z.array(leaf('a port name', (q) => z.string(q)), p).min(1))
    .describe('Ports whose forwarded flows are offloaded, as `flowtable ft { devices = {...} }` in nftables.'),
  l4proto: leaf("a non-empty list of 'tcp' and 'udp'", (p) => z.array(leaf("'tcp' or 'udp'", (q) => z.enum(L4_PROTOCOLS, q)), p).min(1))
    .default([...L4_PROTOCOLS])
    .describe('Transport protocols offloaded, as `meta l4proto { tcp, udp } flow add @ft`.'),
  size: leaf(intRange(1024, 134217728), (p) => z.int(p).min(1024).max(134217728))
    .default(FLOWTABLE_DEFAULTS.size)
    .describe('Flowtable capacity in flows (one entry per direction).'),
  timeout: mapping({
    tcp: idleTimeout(FLOWTABLE_DEFAULTS.timeout.tcp).describe('Seconds an established TCP flow may stay idle before it leaves the fast path.'),
    udp: idleTimeout(FLOWTABLE_DEFAULTS.timeout.udp).describe('Seconds a UDP flow may stay idle before it leaves the fast path.'),
  })
    .prefault({})
    .describe('Idle timeouts in seconds.'),
  counter: leaf('true or false', (p) => z.boolean(p))
    .default(FLOWTABLE_DEFAULTS.counter)
    .describe('Count packets and bytes per flow, as the nftables flowtable `counter` flag.'),
});

export const WORKER_IDLE_MODES = ['busy', 'adaptive'] as const;

const workersSchema = mapping({
  cpus: leaf('a non-empty list of CPU numbers', (p) => z.array(leaf('a CPU number (an integer >= 0)', (q) => z.int(q).min(0)), p).min(1))
    .describe('CPUs for worker lcores, one worker each. At least one online CPU must stay free for the control thread and the kernel.'),
  idle: leaf("'busy' or 'adaptive'", (p) => z.enum(WORKER_IDLE_MODES, p))
    .default('busy')
    .describe("'busy' polls all the time (lowest latency); 'adaptive' sleeps when the queues stay empty."),
});

// ---- process settings -----------------------------------------------------------------

const ealSchema = mapping({
  args: leaf('a list of strings', (p) => z.array(leaf('a string', (q) => z.string(q)), p))
    .default([])
    .describe('Extra EAL arguments, appended after those flowgate derives from ports and workers.'),
  hugepages: leaf("'auto', 'on' or 'off'", (p) => z.enum(['auto', 'on', 'off'], p))
    .default('auto')
    .describe("'on' requires hugepages, 'off' runs EAL with --no-huge, 'auto' uses them when mounted."),
});

export const SLOWPATH_DEFAULTS = { rate: 100000, burst: 1000 } as const;

const puntRate = leaf(intRange(1, 1000000000), (p) => z.int(p).min(1).max(1000000000));
const puntBurst = leaf(intRange(1, 1000000), (p) => z.int(p).min(1).max(1000000));

const slowpathSchema = mapping({
  rate: puntRate.default(SLOWPATH_DEFAULTS.rate).describe('Packets per second each port, and each VLAN apart from its port, may punt to the kernel slow path.'),
  burst: puntBurst.default(SLOWPATH_DEFAULTS.burst).describe('Packets a port may punt in a burst above `rate`.'),
  ports: mappingOf(
    'a mapping of port names to punt policers',
    mapping({
      rate: puntRate.optional().describe('Overrides `slowpath.rate` for this port.'),
      burst: puntBurst.optional().describe('Overrides `slowpath.burst` for this port.'),
    }),
  )
    .default({})
    .describe('Per-port overrides, keyed by port or VLAN name.'),
});

/** host:port, with an IPv6 host in brackets: "127.0.0.1:9464", "[::1]:9464", "localhost:9464". */
export function parseListenAddress(text: string): { host: string; port: number } {
  const expected = 'host:port such as 127.0.0.1:9464 or [::1]:9464';
  const match = /^(\[([^\]]*)\]|[^:[\]]+):([0-9]+)$/.exec(text);
  if (match === null) throw new InvalidArgumentError(`expected ${expected}, found '${text}'`);
  const host = match[2] ?? match[1] ?? '';
  const port = Number(match[3]);
  const bracketed = match[2] !== undefined;
  if (bracketed || /^[0-9.]+$/.test(host)) {
    const family = bracketed ? 'IPv6' : 'IPv4';
    try {
      if (bracketed) parseIPv6(host);
      else parseIPv4(host);
    } catch (err) {
      if (!(err instanceof InvalidArgumentError)) throw err;
      throw new InvalidArgumentError(`expected ${expected}, found '${text}' ('${host}' is not an ${family} address)`);
    }
  } else if (!/^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(host)) {
    throw new InvalidArgumentError(`expected ${expected}, found '${text}' ('${host}' is not a host name)`);
  }
  if (port < 1 || port > 65535 || match[3]!.length > 5) {
    throw new InvalidArgumentError(`expected ${expected}, found '${text}' (port ${match[3]} is not 1-65535)`);
  }
  return { host, port };
}

export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9464';
export const DEFAULT_CONTROL_SOCKET = '/run/flowgate/flowgate.sock';
// sun_path holds 108 bytes including the terminating NUL.
const UNIX_PATH_MAX_BYTES = 107;

const metricsSchema = mapping({
  listen: leaf('host:port such as 127.0.0.1:9464 or [::1]:9464', (p) => z.string(p).superRefine(parsedBy(parseListenAddress)))
    .default(DEFAULT_METRICS_LISTEN)
    .describe('Address of the Prometheus metrics endpoint.'),
});

const controlSchema = mapping({
  socket: leaf(`an absolute path of at most ${UNIX_PATH_MAX_BYTES} bytes`, (p) =>
    z.string(p).refine((path) => path.startsWith('/') && Buffer.byteLength(path) <= UNIX_PATH_MAX_BYTES),
  )
    .default(DEFAULT_CONTROL_SOCKET)
    .describe('Unix socket of the control API (used by the flowgate CLI).'),
});

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;

const logSchema = mapping({
  level: leaf("'debug', 'info', 'warn' or 'error'", (p) => z.enum(LOG_LEVELS, p))
    .default('info')
    .describe('Least severe level logged.'),
});

// ---- the whole file -------------------------------------------------------------------

export const CONFIG_EXPECTED = 'a mapping of config sections (ports, flowtable, workers...)';

export const configSchema = mapping({
  ports: mappingOf('a mapping of port names to port settings', portSchema)
    .refine((ports) => Object.keys(ports).length > 0, { message: 'expected at least one port, found an empty mapping' })
    .describe('DPDK ports and their VLAN sub-interfaces, keyed by the name of their kernel mirror interface (at most 15 bytes).'),
  tunnels: mappingOf('a mapping of tunnel names to tunnel settings', tunnelSchema)
    .default({})
    .describe('Tunnels, keyed by interface name; names are shared with ports.'),
  routes: leaf('a list of routes', (p) => z.array(routeSchema, p))
    .default([])
    .describe('Static routes written to the kernel; connected routes come from the addresses.'),
  flowtable: flowtableSchema.describe('What the fast path offloads.'),
  workers: workersSchema.describe('Worker lcores.'),
  eal: ealSchema.prefault({}).describe('DPDK EAL settings.'),
  slowpath: slowpathSchema.prefault({}).describe('Policer of the packets each port punts to the kernel.'),
  nftables: leaf('a string', (p) => z.string(p)).optional().describe('nftables ruleset applied to the kernel slow path.'),
  metrics: metricsSchema.optional().describe('Prometheus metrics endpoint; off when absent.'),
  control: controlSchema.prefault({}).describe('Control API.'),
  log: logSchema.prefault({}).describe('Logging.'),
}, CONFIG_EXPECTED);

/** A config as written in YAML (defaults not yet applied). */
export type ConfigInput = z.input<typeof configSchema>;
/** A config after schema validation: every default filled in, addresses still text. */
export type Config = z.output<typeof configSchema>;
export type PortConfig = Config['ports'][string];
/** A port entry that is a VLAN sub-interface: the schema guarantees `vlan` with `parent`. */
export type VlanConfig = PortConfig & { parent: string; vlan: number };

export function isVlanConfig(port: PortConfig): port is VlanConfig {
  return port.parent !== undefined;
}
export type TunnelConfig = Config['tunnels'][string];
export type RouteConfig = Config['routes'][number];
