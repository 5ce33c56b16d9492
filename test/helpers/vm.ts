// A stock Debian kernel under qemu (TCG) as the far end of interop tests: the real Linux
// ip6tnl, ipip, sit and 8021q, which this machine's kernel lacks or may lack. The guest is built by scripts/vm/build-image.sh;
// the per-boot scenario (addresses, the tunnel, the host behind it, routes) is a second cpio
// archive appended to the cached base initramfs. The guest's serial console is qemu's stdio
// and carries a small command protocol (see the command loop in build-image.sh's /init).

import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import { atExit, linkExists, sh } from './netns';

export interface VmImage {
  kernel: string;
  baseInitramfs: string;
  /** `uname -r` of the guest, e.g. 6.1.0-56-amd64. */
  release: string;
}

/** What the tunnel devices have in common. */
interface TunnelCommon {
  /** Default tun0. */
  name?: string;
  /** Outer addresses: IPv6 for ip6tnl (ipip6, ip6ip6), IPv4 for ipip and sit. */
  local: string;
  remote: string;
  /** The tunnel's own address with prefix, either family (IPv6 without DAD), e.g. 192.168.100.2/24. */
  address?: string;
}

/**
 * An ip6tnl device as `ip link add NAME type ip6tnl mode ipip6|ip6ip6 ...` makes it: IPv4
 * (ipip6, the default) or IPv6 (ip6ip6) over IPv6, RFC 2473.
 */
export interface Ip6TunnelSpec extends TunnelCommon {
  mode?: 'ipip6' | 'ip6ip6';
  /** Tunnel Encapsulation Limit option value, or 'none' to send no destination options header. */
  encaplimit: number | 'none';
  /** Outer hop limit, or 'inherit' to copy the inner TTL or hop limit. */
  hoplimit: number | 'inherit';
  /** Outer traffic class, or 'inherit' to copy the inner TOS or traffic class. */
  tclass: number | 'inherit';
  /** Outer flow label, or 'inherit'; by default Linux's (which is 0, then auto flow labels). */
  flowlabel?: number | 'inherit';
}

/**
 * An IPv4-underlay tunnel as `ip link add NAME type ipip|sit ...` makes it: IPv4 (ipip, RFC
 * 2003) or IPv6 (sit, RFC 4213) over IPv4.
 */
export interface Ip4TunnelSpec extends TunnelCommon {
  mode: 'ipip' | 'sit';
  /** Outer TTL, or 'inherit' to copy the inner TTL or hop limit. */
  ttl: number | 'inherit';
  /** Outer TOS, or 'inherit' to copy the inner TOS or traffic class. */
  tos: number | 'inherit';
  /**
   * Linux's pmtudisc: DF on every outer header. Without it DF is copied from an inner IPv4
   * packet; iproute2 then insists on `ttl inherit`, and so does this harness.
   */
  pmtudisc: boolean;
}

export type TunnelSpec = Ip6TunnelSpec | Ip4TunnelSpec;

/** Whether the tunnel carries IPv6 inside (ip6ip6, sit) rather than IPv4 (ipip6, ipip). */
export function innerFamily(t: TunnelSpec): 4 | 6 {
  return t.mode === 'ip6ip6' || t.mode === 'sit' ? 6 : 4;
}

/** The family of the tunnel's outer header: IPv6 for ip6tnl, IPv4 for ipip and sit. */
export function outerFamily(t: TunnelSpec): 4 | 6 {
  return t.mode === 'ipip' || t.mode === 'sit' ? 4 : 6;
}

/**
 * A VLAN sub-interface, `ip link add link PARENT name NAME type vlan proto PROTOCOL id ID`.
 * Stacking one on another gives QinQ: an 802.1ad one on eth0, an 802.1Q one on that.
 */
export interface VlanSpec {
  /** e.g. eth0.100 or eth0.1000.20. */
  name: string;
  /** Default eth0; an earlier VLAN's name for QinQ. */
  parent?: string;
  /** 1..4094. */
  id: number;
  /** Default 802.1Q. */
  protocol?: '802.1Q' | '802.1ad';
  /** Addresses with prefix, either family (IPv6 without DAD). */
  addresses?: string[];
  /** Default: the parent's. */
  mtu?: number;
}

/** A host behind the guest, the destination of traffic that comes out of the tunnel. */
export type HostBehind =
  /** Addresses (either family) on a dummy interface: traffic to them is delivered to the guest itself. */
  | { kind: 'dummy'; name?: string; address: string | string[] }
  /**
   * A network namespace `name` (default lan) in the guest, joined by a veth pair: its eth0 has
   * `address` and a default route to the `gateway` of the same family, which the guest's end
   * (veth-<name>) holds. Traffic to it is forwarded by the guest, so TTLs and hop limits drop
   * as they would on a real gateway.
   */
  | { kind: 'netns'; name?: string; address: string | string[]; gateway: string | string[] };

export interface RouteSpec {
  /** Prefix of either family, e.g. 192.168.0.0/24 or 2001:db8:100::/64, or default (IPv4). */
  to: string;
  /** Default: the first tunnel's name. */
  dev?: string;
  via?: string;
}

export interface Scenario {
  /** Addresses with prefix on the guest's NIC (eth0), either family (IPv6 without DAD). */
  underlay: string[];
  /** MTU of eth0, set before the tunnel is made (whose own MTU Linux derives from it). Default 1500. */
  mtu?: number;
  /** VLAN sub-interfaces, made in order after eth0 and before the tunnels. */
  vlans?: VlanSpec[];
  tunnel?: TunnelSpec;
  /** More tunnels, made after `tunnel`; each needs its own name. */
  tunnels?: TunnelSpec[];
  behind?: HostBehind;
  routes?: RouteSpec[];
  /** Further shell lines run last, e.g. sysctls. */
  commands?: string[];
}

export interface BootOptions {
  /** Host network namespace in which qemu creates the TAP. */
  netns: string;
  /** Name of the TAP, at most 15 characters. */
  tap: string;
  /** The guest NIC's MAC address. */
  mac: string;
  /** Guest memory in qemu's syntax; default 256M. */
  memory?: string;
  scenario: Scenario;
  /** Addresses (with prefix) put on the TAP once it is up, added without DAD. */
  hostAddresses?: string[];
  /** Until the guest is ready; default 60 s (TCG boots in 5-20 s on a loaded machine). */
  bootTimeoutMs?: number;
  /** Default: the image that scripts/vm/build-image.sh builds or finds in its cache. */
  image?: VmImage;
}

export interface CommandResult {
  status: number;
  output: string;
}

export interface RunOptions {
  /** Default 30 s. */
  timeoutMs?: number;
}

export type TcpService =
  /** Sends back what it receives. */
  | { kind: 'echo' }
  /** Discards what it receives, appending the byte count of each connection to tcpSinkCounts. */
  | { kind: 'sink' }
  /** Sends `bytes` zero bytes, then closes. */
  | { kind: 'source'; bytes: number };

export class VmError extends Error {
  constructor(
    message: string,
    /** The last lines of the serial console and qemu's stderr. */
    readonly console: string[],
  ) {
    super(console.length ? `${message}\n--- last console lines ---\n${console.join('\n')}` : message);
    this.name = 'VmError';
  }
}

export class VmCommandError extends Error {
  constructor(
    readonly command: string,
    readonly status: number,
    readonly output: string,
  ) {
    super(`guest command exited with status ${status}: ${command}${output.trim() ? `\n${output.trimEnd()}` : ''}`);
    this.name = 'VmCommandError';
  }
}

const MARK = '@@FGVM-';
const CONSOLE_TAIL_LINES = 60;
const DEFAULT_BOOT_TIMEOUT_MS = 60_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const POWEROFF_TIMEOUT_MS = 10_000;
const BASE64_LINE = 76;
// The guest tty buffers about 4 KiB per line and 64 KiB in all; commands are scripts, not data.
const MAX_COMMAND_BYTES = 16 * 1024;
const NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

// ---------------------------------------------------------------------------------------------
// The image

function repoRoot(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'scripts', 'vm', 'build-image.sh'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no scripts/vm/build-image.sh above ${__dirname}`);
  }
}

let imagePromise: Promise<VmImage> | undefined;

/** Builds (or finds in .cache/vm) the kernel and base initramfs; once per process. */
export function buildVmImage(): Promise<VmImage> {
  imagePromise ??= (async () => {
    // Downloading the kernel and building the image takes under a minute on a cold cache.
    const out = await sh([join(repoRoot(), 'scripts', 'vm', 'build-image.sh')], { timeoutMs: 600_000 });
    const dir = out.trim().split('\n').pop() ?? '';
    const image = {
      kernel: join(dir, 'vmlinuz'),
      baseInitramfs: join(dir, 'base.cpio.gz'),
      release: readFileSync(join(dir, 'kernel-release'), 'utf8').trim(),
    };
    for (const file of [image.kernel, image.baseInitramfs]) {
      if (!existsSync(file)) throw new Error(`build-image.sh printed ${dir}, which has no ${file}`);
    }
    return image;
  })();
  imagePromise.catch(() => {
    imagePromise = undefined;
  });
  return imagePromise;
}

// ---------------------------------------------------------------------------------------------
// The scenario

/** Quotes a word for the guest's sh. */
function q(word: string | number): string {
  const s = String(word);
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function checkName(what: string, value: string): void {
  if (!NAME.test(value)) throw new TypeError(`${what}: expected an interface or namespace name of 1-15 characters [A-Za-z0-9_.-], got ${JSON.stringify(value)}`);
}

function checkPrefix(what: string, value: string, family: 4 | 6): void {
  const [addr = '', len, ...rest] = value.split('/');
  const max = family === 4 ? 32 : 128;
  if (isIP(addr) !== family || len === undefined || rest.length || !/^\d+$/.test(len) || Number(len) > max) {
    throw new TypeError(`${what}: expected an IPv${family} address with prefix length, got ${JSON.stringify(value)}`);
  }
}

function checkAddress(what: string, value: string, family: 4 | 6): void {
  if (isIP(value) !== family) throw new TypeError(`${what}: expected an IPv${family} address, got ${JSON.stringify(value)}`);
}

function checkByte(what: string, value: number, max = 255): void {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new TypeError(`${what}: expected an integer 0..${max}, got ${value}`);
}

function familyOf(prefix: string): 4 | 6 {
  return isIP(prefix.split('/')[0] ?? '') === 4 ? 4 : 6;
}

function checkAnyPrefix(what: string, value: string): void {
  checkPrefix(what, value, familyOf(value));
}

function checkMtu(what: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 1280 || mtu > 65535) throw new TypeError(`${what}: expected an integer 1280..65535 (IPv6 needs 1280), got ${mtu}`);
}

/** `ip addr add` for either family; IPv6 without DAD, so that the address is usable at once. */
function addAddress(prefix: string, dev: string, netns?: string): string {
  return `ip${netns === undefined ? '' : ` -n ${netns}`} addr add ${q(prefix)} dev ${dev}${familyOf(prefix) === 6 ? ' nodad' : ''}`;
}

function asList(value: string | string[]): string[] {
  return typeof value === 'string' ? [value] : value;
}

/** The `ip link add` line of a tunnel, after validating every option against its mode. */
function tunnelCommand(t: TunnelSpec, what: string): string {
  const name = t.name ?? 'tun0';
  checkName(`${what}.name`, name);
  const outer = outerFamily(t);
  checkAddress(`${what}.local`, t.local, outer);
  checkAddress(`${what}.remote`, t.remote, outer);
  if (t.address !== undefined) checkAnyPrefix(`${what}.address`, t.address);
  const hex = (n: number) => `0x${n.toString(16)}`;
  if (t.mode === 'ipip' || t.mode === 'sit') {
    if (t.ttl !== 'inherit') checkByte(`${what}.ttl`, t.ttl);
    if (t.tos !== 'inherit') checkByte(`${what}.tos`, t.tos);
    // iproute2's own rule ("ttl != 0 and nopmtudisc are incompatible"), said before the boot.
    if (!t.pmtudisc && t.ttl !== 'inherit') throw new TypeError(`${what}.ttl: expected 'inherit' with pmtudisc false (iproute2 refuses a fixed TTL without pmtudisc), got ${t.ttl}`);
    const options = [
      `local ${q(t.local)} remote ${q(t.remote)}`,
      `ttl ${t.ttl}`,
      `tos ${typeof t.tos === 'number' ? hex(t.tos) : t.tos}`,
      t.pmtudisc ? 'pmtudisc' : 'nopmtudisc',
    ];
    return `ip link add ${name} type ${t.mode} ${options.join(' ')}`;
  }
  if (t.mode !== undefined && t.mode !== 'ipip6' && t.mode !== 'ip6ip6') throw new TypeError(`${what}.mode: expected ipip6, ip6ip6, ipip or sit, got ${JSON.stringify(t.mode)}`);
  if (t.encaplimit !== 'none') checkByte(`${what}.encaplimit`, t.encaplimit);
  if (t.hoplimit !== 'inherit') checkByte(`${what}.hoplimit`, t.hoplimit);
  if (t.tclass !== 'inherit') checkByte(`${what}.tclass`, t.tclass);
  if (typeof t.flowlabel === 'number') checkByte(`${what}.flowlabel`, t.flowlabel, 0xfffff);
  // `ip link` rather than `ip -6 tunnel`: only the former accepts `hoplimit inherit`.
  const options = [
    `mode ${t.mode ?? 'ipip6'} local ${q(t.local)} remote ${q(t.remote)}`,
    `encaplimit ${t.encaplimit}`,
    `hoplimit ${t.hoplimit}`,
    `tclass ${typeof t.tclass === 'number' ? hex(t.tclass) : t.tclass}`,
    ...(t.flowlabel === undefined ? [] : [`flowlabel ${typeof t.flowlabel === 'number' ? hex(t.flowlabel) : t.flowlabel}`]),
  ];
  return `ip link add ${name} type ip6tnl ${options.join(' ')}`;
}

/** The shell script that /init runs (with -e and xtrace) before it reports ready. */
export function scenarioScript(scenario: Scenario): string {
  const lines = ['ip link set eth0 up'];
  if (scenario.mtu !== undefined) {
    checkMtu('scenario.mtu', scenario.mtu);
    lines.push(`ip link set eth0 mtu ${scenario.mtu}`);
  }
  scenario.underlay.forEach((a, i) => {
    checkAnyPrefix(`scenario.underlay[${i}]`, a);
    lines.push(addAddress(a, 'eth0'));
  });

  const devices = new Set(['eth0']);
  (scenario.vlans ?? []).forEach((v, i) => {
    const what = `scenario.vlans[${i}]`;
    const parent = v.parent ?? 'eth0';
    checkName(`${what}.name`, v.name);
    if (!devices.has(parent)) throw new TypeError(`${what}.parent: expected eth0 or an earlier VLAN's name, got ${JSON.stringify(parent)}`);
    if (devices.has(v.name)) throw new TypeError(`${what}.name: ${v.name} exists already`);
    if (!Number.isInteger(v.id) || v.id < 1 || v.id > 4094) throw new TypeError(`${what}.id: expected an integer 1..4094, got ${v.id}`);
    const protocol = v.protocol ?? '802.1Q';
    if (protocol !== '802.1Q' && protocol !== '802.1ad') throw new TypeError(`${what}.protocol: expected 802.1Q or 802.1ad, got ${JSON.stringify(protocol)}`);
    devices.add(v.name);
    lines.push(`ip link add link ${parent} name ${v.name} type vlan proto ${protocol} id ${v.id}`);
    if (v.mtu !== undefined) {
      checkMtu(`${what}.mtu`, v.mtu);
      lines.push(`ip link set ${v.name} mtu ${v.mtu}`);
    }
    lines.push(`ip link set ${v.name} up`);
    (v.addresses ?? []).forEach((a, j) => {
      checkAnyPrefix(`${what}.addresses[${j}]`, a);
      lines.push(addAddress(a, v.name));
    });
  });

  const tunnels = [...(scenario.tunnel ? [scenario.tunnel] : []), ...(scenario.tunnels ?? [])];
  const b = scenario.behind;
  const behindAddresses = b === undefined ? [] : asList(b.address);
  // The guest routes between the tunnel and the host behind it, in the families they carry.
  lines.push('sysctl -w net.ipv4.ip_forward=1 >/dev/null');
  if (tunnels.some((t) => innerFamily(t) === 6) || behindAddresses.some((a) => familyOf(a) === 6)) {
    lines.push('sysctl -w net.ipv6.conf.all.forwarding=1 >/dev/null');
  }

  tunnels.forEach((t, i) => {
    const what = scenario.tunnel && i === 0 ? 'scenario.tunnel' : `scenario.tunnels[${scenario.tunnel ? i - 1 : i}]`;
    const name = t.name ?? 'tun0';
    const command = tunnelCommand(t, what);
    if (devices.has(name)) throw new TypeError(`${what}.name: ${name} exists already`);
    devices.add(name);
    lines.push(command);
    if (t.address !== undefined) lines.push(addAddress(t.address, name));
    lines.push(`ip link set ${name} up`);
  });

  if (b?.kind === 'dummy') {
    const name = b.name ?? 'lan0';
    checkName('scenario.behind.name', name);
    lines.push(`ip link add ${name} type dummy`);
    behindAddresses.forEach((a, i) => {
      checkAnyPrefix(`scenario.behind.address[${i}]`, a);
      lines.push(addAddress(a, name));
    });
    lines.push(`ip link set ${name} up`);
  } else if (b?.kind === 'netns') {
    const ns = b.name ?? 'lan';
    checkName('scenario.behind.name', ns);
    checkName('scenario.behind.name (as veth-<name>)', `veth-${ns}`);
    const gateways = asList(b.gateway);
    lines.push(`ip netns add ${ns}`, `ip link add veth-${ns} type veth peer name eth0 netns ${ns}`);
    gateways.forEach((g, i) => {
      checkAnyPrefix(`scenario.behind.gateway[${i}]`, g);
      lines.push(addAddress(g, `veth-${ns}`));
    });
    lines.push(`ip link set veth-${ns} up`, `ip -n ${ns} link set lo up`);
    behindAddresses.forEach((a, i) => checkAnyPrefix(`scenario.behind.address[${i}]`, a));
    for (const family of [4, 6] as const) {
      const addresses = behindAddresses.filter((a) => familyOf(a) === family);
      const gateway = gateways.filter((g) => familyOf(g) === family);
      if (addresses.length === 0 && gateway.length === 0) continue;
      if (addresses.length !== 1 || gateway.length !== 1) throw new TypeError(`scenario.behind: expected one IPv${family} address and one IPv${family} gateway, got ${addresses.length} and ${gateway.length}`);
      lines.push(addAddress(addresses[0] as string, 'eth0', ns));
    }
    lines.push(`ip -n ${ns} link set eth0 up`);
    for (const g of gateways) lines.push(`ip -n ${ns} route add default via ${q(g.split('/')[0] ?? '')}`);
  }

  (scenario.routes ?? []).forEach((r, i) => {
    if (r.to !== 'default') checkAnyPrefix(`scenario.routes[${i}].to`, r.to);
    const dev = r.dev ?? tunnels[0]?.name ?? 'tun0';
    checkName(`scenario.routes[${i}].dev`, dev);
    if (r.via !== undefined) checkAddress(`scenario.routes[${i}].via`, r.via, isIP(r.via) === 4 ? 4 : 6);
    lines.push(`ip route add ${q(r.to)}${r.via ? ` via ${q(r.via)}` : ''} dev ${dev}`);
  });
  lines.push(...(scenario.commands ?? []));
  return `${lines.join('\n')}\n`;
}

/** A newc cpio archive of regular files (path -> contents), as the kernel's initramfs reads it. */
export function newcArchive(files: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const entry = (name: string, mode: number, data: Buffer) => {
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, Buffer.byteLength(name) + 1, 0];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`;
    const head = Buffer.concat([Buffer.from(header), Buffer.from(`${name}\0`)]);
    parts.push(head, pad4(head.length), data, pad4(data.length));
  };
  for (const [name, contents] of Object.entries(files)) entry(name, 0o100755, Buffer.from(contents));
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// The VM

interface Waiter {
  onLine(line: string): boolean;
  fail(err: Error): void;
}

export class LinuxVm {
  /** Serial console lines and qemu stderr, newest last, for error messages. */
  private readonly tail: string[] = [];
  private partial = '';
  private readonly waiters = new Set<Waiter>();
  private exitError: VmError | undefined;
  private readonly exited: Promise<void>;
  private queue: Promise<unknown> = Promise.resolve();
  private commandSeq = 0;
  private shutdownPromise: Promise<void> | undefined;
  private readonly echoConsole = process.env.FLOWGATE_VM_CONSOLE === '1';
  /** Set once the command loop runs; before that a poweroff command would not be read. */
  private ready = false;
  private readonly forgetExitCleanup: () => void;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly netns: string,
    readonly tap: string,
    readonly mac: string,
    private readonly workDir: string,
  ) {
    child.stdout.on('data', (chunk: Buffer) => this.consume(chunk.toString('latin1')));
    child.stderr.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line.trim()) this.remember(`qemu: ${line.trimEnd()}`);
    });
    // Writes after qemu died fail with EPIPE; the exit handler reports that.
    child.stdin.on('error', () => undefined);
    this.forgetExitCleanup = atExit(() => this.killNow());
    this.exited = new Promise((resolveExit) => {
      const exited = (why: string) => {
        if (this.exitError) return;
        this.exitError = new VmError(why, this.consoleTail());
        for (const w of this.waiters) w.fail(this.exitError);
        this.waiters.clear();
        this.forgetExitCleanup();
        resolveExit();
      };
      // 'close' rather than 'exit': the console's last lines are read by then.
      child.on('close', (code, signal) => exited(`qemu exited (${signal ? `signal ${signal}` : `status ${code}`})`));
      // setpriv, ip or qemu missing, or the spawn failed otherwise.
      child.on('error', (err) => exited(`could not run qemu (setpriv --pdeathsig KILL ip netns exec ${netns} qemu-system-x86_64 ...): ${err.message}`));
    });
  }

  /**
   * Boots the guest in `netns` behind TAP `tap`, brings the TAP up with `hostAddresses`, and
   * resolves once the scenario is in place. Rejects with the console's last lines on failure.
   */
  static async boot(options: BootOptions): Promise<LinuxVm> {
    checkName('boot: netns', options.netns);
    checkName('boot: tap', options.tap);
    if (!MAC.test(options.mac)) throw new TypeError(`boot: mac: expected xx:xx:xx:xx:xx:xx, got ${JSON.stringify(options.mac)}`);
    (options.hostAddresses ?? []).forEach((a, i) => checkPrefix(`boot: hostAddresses[${i}]`, a, isIP(a.split('/')[0] ?? '') === 4 ? 4 : 6));
    const script = scenarioScript(options.scenario);
    const image = options.image ?? (await buildVmImage());

    const workDir = mkdtempSync(join(tmpdir(), 'fgvm-'));
    const initrd = join(workDir, 'initrd');
    const base = readFileSync(image.baseInitramfs);
    // The kernel unpacks concatenated archives, each starting on a 4-byte boundary.
    const pad = Buffer.alloc((4 - (base.length % 4)) % 4);
    writeFileSync(initrd, Buffer.concat([base, pad, newcArchive({ 'fgvm/scenario.sh': script })]));

    const qemu = [
      'qemu-system-x86_64',
      '-name', `fgvm-${options.tap}`,
      '-accel', 'tcg',
      '-smp', '1',
      '-m', options.memory ?? '256M',
      '-nodefaults', '-nographic', '-no-reboot',
      '-monitor', 'none',
      '-chardev', 'stdio,id=console,signal=off',
      '-serial', 'chardev:console',
      '-kernel', image.kernel,
      '-initrd', initrd,
      // panic=-1 turns a guest panic into a reboot, which -no-reboot turns into qemu exiting.
      '-append', 'console=ttyS0 panic=-1 mitigations=off',
      '-netdev', `tap,id=underlay,ifname=${options.tap},script=no,downscript=no`,
      '-device', `virtio-net-pci,netdev=underlay,mac=${options.mac}`,
    ];
    // pdeathsig: qemu dies with this process even when it is SIGKILLed and no hook runs.
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'ip', 'netns', 'exec', options.netns, ...qemu], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const vm = new LinuxVm(child, options.netns, options.tap, options.mac, workDir);
    try {
      const timeoutMs = options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
      const ready = vm.waitForLine((line) => {
        // includes(): a kernel message may have left the line unterminated before the marker.
        const failed = line.indexOf(`${MARK}FAILED `);
        if (failed >= 0) throw new VmError(`guest set-up failed: ${line.slice(failed + MARK.length + 7)}`, vm.consoleTail());
        return line.includes(`${MARK}READY`);
      }, timeoutMs, `guest did not report ready within ${timeoutMs} ms`);
      // Handled below; without this a TAP failure would leave `ready` rejecting unobserved.
      ready.catch(() => undefined);
      await vm.configureTap(options.hostAddresses ?? []);
      await ready;
      vm.ready = true;
      return vm;
    } catch (err) {
      await vm.shutdown();
      throw err;
    }
  }

  /**
   * Runs `command` with the guest's sh (stdin /dev/null, stderr merged into stdout) and
   * resolves with its exit status and output. Commands run one at a time, in call order.
   */
  run(command: string, options: RunOptions = {}): Promise<CommandResult> {
    const result = this.queue.then(() => this.runNow(command, options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS));
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Like run, but resolves with the output only and rejects with VmCommandError on a non-zero status. */
  async exec(command: string, options: RunOptions = {}): Promise<string> {
    const { status, output } = await this.run(command, options);
    if (status !== 0) throw new VmCommandError(command, status, output);
    return output;
  }

  /**
   * Starts a TCP service on `port` (all addresses), in the guest's netns `netns` if given (the
   * host behind it), and resolves once it listens. Implemented with busybox `nc -ll -e`, which
   * forks a handler per connection; handlers are /bin/fgvm-tcp-{echo,sink,source} in the image.
   */
  async startTcpService(service: TcpService, port: number, netns?: string): Promise<void> {
    checkByte('startTcpService: port', port, 65535);
    if (netns !== undefined) checkName('startTcpService: netns', netns);
    const handler =
      service.kind === 'echo' ? 'fgvm-tcp-echo'
      : service.kind === 'sink' ? `fgvm-tcp-sink ${port}`
      : `fgvm-tcp-source ${service.bytes}`;
    if (service.kind === 'source') checkByte('startTcpService: bytes', service.bytes, Number.MAX_SAFE_INTEGER);
    const inNs = netns === undefined ? '' : `ip netns exec ${netns} `;
    await this.exec(
      `${inNs}nc -ll -p ${port} -e /bin/${handler} </dev/null >/dev/null 2>&1 &\n` +
        `for i in $(seq 100); do ${inNs}netstat -ltn | grep -q ':${port} ' && exit 0; sleep 0.1; done\n` +
        `echo "nothing listens on port ${port} after 10 s"; exit 1`,
    );
  }

  /** Byte counts received by the sink on `port`, one per finished connection. */
  async tcpSinkCounts(port: number): Promise<number[]> {
    checkByte('tcpSinkCounts: port', port, 65535);
    const out = await this.exec(`cat /tmp/fgvm-sink.${port} 2>/dev/null || true`);
    return out.split('\n').filter((l) => l.trim()).map(Number);
  }

  /** qemu's process id. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Whether qemu is still running. */
  get running(): boolean {
    return this.exitError === undefined;
  }

  /**
   * Powers the guest off (SIGKILL after 10 s), then makes sure that the TAP is gone and the
   * temporary files removed. Safe to call more than once and after qemu exited.
   */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= this.shutdownNow();
    return this.shutdownPromise;
  }

  /** Synchronous last resort for process exit: no poweroff, no TAP check (it dies with qemu). */
  killNow(): void {
    if (this.running) this.child.kill('SIGKILL');
    rmSync(this.workDir, { recursive: true, force: true });
  }

  // -------------------------------------------------------------------------------------------

  private async shutdownNow(): Promise<void> {
    if (this.running && !this.ready) {
      this.child.kill('SIGKILL');
      await this.exited;
    } else if (this.running) {
      // Not through run(): no answer comes back from a guest that is powering off, and a
      // command still in the queue must not hold the shutdown up.
      this.sendCommand(`${this.commandSeq + 1}-poweroff`, 'poweroff -f');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), POWEROFF_TIMEOUT_MS);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.workDir, { recursive: true, force: true });
    // qemu's TAP is not persistent and goes with it; this catches one that someone made persistent.
    if (await linkExists(this.tap, this.netns)) {
      await sh(['ip', 'link', 'delete', this.tap], { netns: this.netns });
    }
  }

  private async configureTap(addresses: string[]): Promise<void> {
    // qemu opens the TAP before the guest starts; poll rather than race it.
    for (let i = 0; !(await linkExists(this.tap, this.netns)); i++) {
      if (!this.running) throw this.exitError ?? new VmError('qemu exited', this.consoleTail());
      if (i >= 100) throw new VmError(`qemu did not create TAP ${this.tap} in netns ${this.netns} within 10 s`, this.consoleTail());
      await new Promise((r) => setTimeout(r, 100));
    }
    await sh(['ip', 'link', 'set', this.tap, 'up'], { netns: this.netns });
    for (const address of addresses) {
      await sh(['ip', 'addr', 'add', address, 'dev', this.tap, 'nodad'], { netns: this.netns });
    }
  }

  private sendCommand(id: string, command: string): void {
    const b64 = Buffer.from(command).toString('base64');
    const lines = [`${MARK}CMD ${id}`];
    for (let i = 0; i < b64.length; i += BASE64_LINE) lines.push(b64.slice(i, i + BASE64_LINE));
    lines.push(`${MARK}RUN ${id}`, '');
    this.child.stdin.write(lines.join('\n'));
  }

  private async runNow(command: string, timeoutMs: number): Promise<CommandResult> {
    if (Buffer.byteLength(command) > MAX_COMMAND_BYTES) {
      throw new RangeError(`guest command of ${Buffer.byteLength(command)} bytes exceeds ${MAX_COMMAND_BYTES}; copy data another way`);
    }
    if (this.exitError) throw this.exitError;
    const id = `${++this.commandSeq}-${randomBytes(4).toString('hex')}`;
    const begin = `${MARK}BEGIN ${id}`;
    const endPrefix = `${MARK}END ${id} `;
    const body: string[] = [];
    let inside = false;
    let status = -1;
    const done = this.waitForLine((line) => {
      if (line === begin) {
        inside = true;
      } else if (line.startsWith(endPrefix)) {
        status = Number(line.slice(endPrefix.length));
        return true;
      } else if (inside) {
        body.push(line);
      }
      return false;
    }, timeoutMs, `guest command did not finish within ${timeoutMs} ms: ${command}`);
    this.sendCommand(id, command);
    await done;
    // A kernel message on the console would corrupt the base64; say so rather than guess.
    const encoded = body.join('');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) {
      throw new VmError(`guest command output was garbled on the console: ${command}`, this.consoleTail());
    }
    return { status, output: Buffer.from(encoded, 'base64').toString() };
  }

  /** Resolves when `match` returns true for a console line; a throw from `match` rejects. */
  private waitForLine(match: (line: string) => boolean, timeoutMs: number, timeoutMessage: string): Promise<void> {
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolveWait, rejectWait) => {
      const waiter: Waiter = {
        onLine: (line) => {
          try {
            if (!match(line)) return false;
            resolveWait();
          } catch (err) {
            rejectWait(err);
          }
          clearTimeout(timer);
          return true;
        },
        fail: (err) => {
          clearTimeout(timer);
          rejectWait(err);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        rejectWait(new VmError(timeoutMessage, this.consoleTail()));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private consume(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      if (this.echoConsole) process.stderr.write(`[vm ${this.tap}] ${line}\n`);
      this.remember(line);
      for (const w of [...this.waiters]) if (w.onLine(line)) this.waiters.delete(w);
    }
  }

  private remember(line: string): void {
    this.tail.push(line);
    if (this.tail.length > CONSOLE_TAIL_LINES) this.tail.shift();
  }

  private consoleTail(): string[] {
    return this.partial ? [...this.tail, this.partial] : [...this.tail];
  }
}
