// Interop with the real Linux ip6tnl (RFC 2473, `mode ipip6`) in a stock Debian kernel under
// qemu. These tests prove the VM harness and pin down, byte for byte, the outer headers that
// Linux builds, because flowgate's encapsulation must be identical to them (flow label aside).
//
// Topology, per describe (one boot each):
//
//   host netns fgvm-*: TAP fgvm0 2001:db8:2::1/64  <-- scapy sends/captures raw frames here
//        | qemu virtio-net
//   guest eth0 2001:db8:2::2/64 (+ 2001:db8:2::3/64, not the tunnel's local)
//   guest tun0: ip6tnl ipip6 local 2001:db8:2::2 remote 2001:db8:2::1, 192.168.100.2/24,
//               route 192.168.0.0/24 dev tun0
//   guest netns lan: eth0 10.0.0.1/24 via veth to the guest (10.0.0.254), default route to it
//
// scapy plays the tunnel's far end: it sends an ICMP echo request from 192.168.0.10 to the lan
// host, encapsulated as Linux would, and captures the encapsulated echo reply. The lan host is
// a namespace rather than an address of the guest so that the guest forwards the reply (TTL
// 64 -> 63) as a gateway does, which is what `hoplimit inherit` is about.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createNetns, deleteNetns, linkExists, macAddress, sh } from '../helpers/netns';
import { layer, ScapyFrame, scapySendRecv } from '../helpers/scapy';
import { buildVmImage, Ip6TunnelSpec, LinuxVm, VmCommandError, VmError } from '../helpers/vm';

const TAP = 'fgvm0';
const GUEST_MAC = '52:54:00:f9:00:02';
const HOST_UNDERLAY = '2001:db8:2::1';
const GUEST_UNDERLAY = '2001:db8:2::2';
/** Also the guest's, but not the tunnel's local address. */
const GUEST_OTHER = '2001:db8:2::3';
const STRANGER = '2001:db8:2::99';
const HOST_UNDERLAY_HEX = '20010db8000200000000000000000001';
const GUEST_UNDERLAY_HEX = '20010db8000200000000000000000002';
const REMOTE_LAN_HOST = '192.168.0.10';
const LAN_HOST = '10.0.0.1';
const ICMP_PAYLOAD = 16;
/** IPv4 header 20 + ICMP header 8 + payload. */
const INNER_LENGTH = 20 + 8 + ICMP_PAYLOAD;
const ETHER_LENGTH = 14;

// TCG: a boot takes 5-20 s depending on the machine's load; a capture a few seconds.
const BOOT_TIMEOUT_MS = 90_000;
const HOOK_TIMEOUT_MS = BOOT_TIMEOUT_MS + 60_000;
const TEST_TIMEOUT_MS = 60_000;
/** How long to wait for replies that must not come. */
const SILENCE_MS = 3_000;
/** How long to wait for replies that must come (the capture ends as soon as they are in). */
const REPLY_WINDOW_MS = 10_000;

const DEFAULT_TUNNEL: Ip6TunnelSpec = {
  local: GUEST_UNDERLAY,
  remote: HOST_UNDERLAY,
  encaplimit: 4,
  hoplimit: 64,
  tclass: 0,
  address: '192.168.100.2/24',
};

interface Guest {
  vm: LinuxVm;
  netns: string;
  hostMac: string;
}

async function bootGuest(tunnel: Partial<Ip6TunnelSpec>): Promise<Guest> {
  const netns = await createNetns('fgvm');
  let vm: LinuxVm | undefined;
  try {
    vm = await LinuxVm.boot({
      netns,
      tap: TAP,
      mac: GUEST_MAC,
      hostAddresses: [`${HOST_UNDERLAY}/64`],
      bootTimeoutMs: BOOT_TIMEOUT_MS,
      scenario: {
        underlay: [`${GUEST_UNDERLAY}/64`, `${GUEST_OTHER}/64`],
        tunnel: { ...DEFAULT_TUNNEL, ...tunnel },
        behind: { kind: 'netns', name: 'lan', address: `${LAN_HOST}/24`, gateway: '10.0.0.254/24' },
        routes: [{ to: '192.168.0.0/24' }],
      },
    });
    // The host has no ip6tnl; without this its kernel would answer every tunnelled packet
    // from the guest with an ICMPv6 Parameter Problem, which a real far end never sends.
    await sh(
      `nft add table ip6 fgvm
       nft add chain ip6 fgvm input '{ type filter hook input priority 0; }'
       nft add rule ip6 fgvm input iifname ${TAP} meta l4proto ipip drop`,
      { netns },
    );
    return { vm, netns, hostMac: await macAddress(TAP, netns) };
  } catch (err) {
    await vm?.shutdown();
    await deleteNetns(netns);
    throw err;
  }
}

async function destroyGuest(guest: Guest | undefined): Promise<void> {
  if (!guest) return;
  try {
    await guest.vm.shutdown();
  } finally {
    await deleteNetns(guest.netns);
  }
}

/** Boots a guest with these tunnel settings before the calling suite and shuts it down after. */
function guestPerSuite(tunnel: Partial<Ip6TunnelSpec>): () => Guest {
  let guest: Guest | undefined;
  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    guest = await bootGuest(tunnel);
  });
  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await destroyGuest(guest);
  });
  return () => {
    assert.ok(guest, 'the VM did not boot');
    return guest;
  };
}

interface EchoRequest {
  seq: number;
  outerSrc?: string;
  outerDst?: string;
  /** Outer traffic class; default 0. */
  outerTc?: number;
  /** Put the Tunnel Encapsulation Limit option (limit 4) in front, as Linux's default does. */
  encapLimitOption?: boolean;
  tos?: number;
  /** Default REMOTE_LAN_HOST; repliesBySeq expects that. */
  innerSrc?: string;
  /** Default ICMP_ID; repliesBySeq expects that. */
  icmpId?: number;
}

const ICMP_ID = 0x4647;

/** A scapy expression for an encapsulated ICMP echo request from the far end's LAN to the lan host. */
function echoRequest(guest: Guest, r: EchoRequest): string {
  const outer =
    `Ether(src='${guest.hostMac}', dst='${GUEST_MAC}')` +
    `/IPv6(src='${r.outerSrc ?? HOST_UNDERLAY}', dst='${r.outerDst ?? GUEST_UNDERLAY}', tc=${r.outerTc ?? 0}, hlim=64)`;
  const option = r.encapLimitOption
    ? `/IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=b'\\x04'), PadN(optdata=b'\\x00')])`
    : '';
  const inner =
    `/IP(src='${r.innerSrc ?? REMOTE_LAN_HOST}', dst='${LAN_HOST}', ttl=64, tos=${r.tos ?? 0})` +
    `/ICMP(type='echo-request', id=${r.icmpId ?? ICMP_ID}, seq=${r.seq})/Raw(b'f' * ${ICMP_PAYLOAD})`;
  return outer + option + inner;
}

/**
 * Sends the requests into the guest's tunnel and captures what comes back encapsulated (next
 * header 4 or 60) until `expect` frames arrived or the window closed. Requests whose reply
 * must not come belong before those whose reply must: the guest answers in order.
 */
async function exchange(guest: Guest, requests: EchoRequest[], expect: number): Promise<ScapyFrame[]> {
  return scapySendRecv({
    netns: guest.netns,
    iface: TAP,
    send: requests.map((r) => echoRequest(guest, r)),
    filter: `ether src ${GUEST_MAC} and ip6 and (ip6 proto 4 or ip6 proto 60)`,
    count: expect,
    timeoutMs: expect ? REPLY_WINDOW_MS : SILENCE_MS,
    intervalMs: 50,
  });
}

/** The echo replies among `frames`, by ICMP sequence number; fails on anything else. */
function repliesBySeq(frames: ScapyFrame[]): Map<number, ScapyFrame> {
  const replies = new Map<number, ScapyFrame>();
  for (const frame of frames) {
    const ip = layer(frame, 'IP').fields;
    const icmp = layer(frame, 'ICMP').fields;
    assert.deepEqual(
      { src: ip.src, dst: ip.dst, type: icmp.type, id: icmp.id },
      { src: LAN_HOST, dst: REMOTE_LAN_HOST, type: 0, id: ICMP_ID },
      `not an echo reply from the lan host: ${frame.summary}`,
    );
    replies.set(Number(icmp.seq), frame);
  }
  return replies;
}

async function replyTo(guest: Guest, request: EchoRequest): Promise<ScapyFrame> {
  const frames = await exchange(guest, [request], 1);
  const reply = repliesBySeq(frames).get(request.seq);
  assert.ok(reply, `no encapsulated echo reply to seq ${request.seq} within ${REPLY_WINDOW_MS} ms`);
  return reply;
}

/** The IPv6 header with the flow label (20 bits) cleared, as hex. */
function outerHeaderHex(frame: ScapyFrame, length: number): string {
  const outer = Buffer.from(frame.bytes.subarray(ETHER_LENGTH, ETHER_LENGTH + length));
  outer[1] = (outer[1] ?? 0) & 0xf0;
  outer[2] = 0;
  outer[3] = 0;
  return outer.toString('hex');
}

function flowLabel(frame: ScapyFrame): number {
  return frame.bytes.readUInt32BE(ETHER_LENGTH) & 0xfffff;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/**
 * Asserts the reply's Ethernet type and every byte of its outer IPv6 header (and destination
 * options header when `encaplimit` is a number) against bytes written out here from RFC 8200
 * and RFC 2473, then that scapy reads them the same way and finds the inner packet after them.
 */
function assertOuterHeaders(frame: ScapyFrame, o: { tclass: number; hoplimit: number; encaplimit: number | 'none' }): void {
  const withOption = o.encaplimit !== 'none';
  const payloadLength = INNER_LENGTH + (withOption ? 8 : 0);
  assert.equal(frame.bytes.subarray(12, 14).toString('hex'), '86dd', 'EtherType IPv6');
  assert.equal(frame.bytes.length, ETHER_LENGTH + 40 + payloadLength, 'frame length: no padding, no trailer');

  const expected =
    // version 6, traffic class, flow label (cleared here, checked separately)
    `6${hex2(o.tclass)}00000` +
    payloadLength.toString(16).padStart(4, '0') +
    (withOption ? '3c' : '04') + // next header: Destination Options (60) or IPv4 (4)
    hex2(o.hoplimit) +
    GUEST_UNDERLAY_HEX +
    HOST_UNDERLAY_HEX +
    (withOption
      ? // next header IPv4, hdr ext len 0 (8 bytes), Tunnel Encapsulation Limit (type 4, length 1,
        // the limit), PadN (type 1, length 1, one zero byte) to fill the 8 bytes
        `0400` + `0401${hex2(o.encaplimit as number)}` + `010100`
      : '');
  assert.equal(outerHeaderHex(frame, withOption ? 48 : 40), expected, `outer headers of ${frame.summary}`);

  const ipv6 = layer(frame, 'IPv6').fields;
  assert.deepEqual(
    { version: ipv6.version, tc: ipv6.tc, plen: ipv6.plen, nh: ipv6.nh, hlim: ipv6.hlim, src: ipv6.src, dst: ipv6.dst },
    { version: 6, tc: o.tclass, plen: payloadLength, nh: withOption ? 60 : 4, hlim: o.hoplimit, src: GUEST_UNDERLAY, dst: HOST_UNDERLAY },
  );
  if (withOption) {
    const destopt = layer(frame, 'IPv6ExtHdrDestOpt').fields;
    assert.equal(destopt.nh, 4);
    assert.equal(destopt.len, 0);
    assert.deepEqual(destopt.options, [
      { name: 'HBHOptUnknown', fields: { otype: 4, optlen: 1, optdata: hex2(o.encaplimit as number) } },
      { name: 'PadN', fields: { otype: 1, optlen: 1, optdata: '00' } },
    ]);
  } else {
    assert.ok(!frame.layers.some((l) => l.name === 'IPv6ExtHdrDestOpt'), 'no destination options header');
  }
  const inner = layer(frame, 'IP').fields;
  assert.equal(inner.len, INNER_LENGTH, 'the inner packet follows the outer headers whole');
}

async function tunnelCounter(guest: Guest, counter: string): Promise<number> {
  return Number((await guest.vm.exec(`cat /sys/class/net/tun0/statistics/${counter}`)).trim());
}

// ECN codepoints (RFC 3168) in the low two bits of TOS / traffic class.
const NOT_ECT = 0b00;
const ECT_1 = 0b01;
const ECT_0 = 0b10;
const CE = 0b11;
const DSCP_EF = 0xb8;

describe('interop: the VM harness (LinuxVm)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let netns: string;
  let vm: LinuxVm | undefined;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    netns = await createNetns('fgvm');
    vm = await LinuxVm.boot({
      netns,
      tap: TAP,
      mac: GUEST_MAC,
      hostAddresses: [`${HOST_UNDERLAY}/64`, '10.1.0.1/24'],
      bootTimeoutMs: BOOT_TIMEOUT_MS,
      scenario: {
        underlay: [`${GUEST_UNDERLAY}/64`, '10.1.0.2/24'],
        vlans: [
          { name: 'eth0.100', id: 100, addresses: ['2001:db8:3::2/64'] },
          { name: 'eth0.1000', id: 1000, protocol: '802.1ad' },
          { name: 'eth0.1000.20', parent: 'eth0.1000', id: 20, addresses: ['172.16.20.2/24'], mtu: 1400 },
        ],
        tunnel: { ...DEFAULT_TUNNEL, encaplimit: 'none', hoplimit: 'inherit', tclass: 'inherit', flowlabel: 0x12345 },
        tunnels: [
          { name: 'ipip1', mode: 'ipip', local: '10.1.0.2', remote: '10.1.0.1', ttl: 'inherit', tos: 'inherit', pmtudisc: false, address: '192.168.101.2/24' },
          { name: 'sit1', mode: 'sit', local: '10.1.0.2', remote: '10.1.0.1', ttl: 64, tos: 0x28, pmtudisc: true, address: '2001:db8:101::2/64' },
          // Not tun0's remote: Linux keys ip6tnl devices by their addresses alone, whatever the
          // mode ("File exists"); ipip and sit, two modules, may share theirs.
          { name: 'ip6t1', mode: 'ip6ip6', local: GUEST_UNDERLAY, remote: '2001:db8:2::11', encaplimit: 7, hoplimit: 40, tclass: 0 },
        ],
        behind: { kind: 'dummy', name: 'lan0', address: [`${LAN_HOST}/24`, '2001:db8:aa::1/64'] },
        routes: [{ to: '192.168.0.0/24' }, { to: '2001:db8:100::/64', dev: 'ip6t1' }],
        commands: ['echo scenario-commands-ran > /tmp/marker'],
      },
    });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    try {
      await vm?.shutdown();
    } finally {
      await deleteNetns(netns);
    }
  });

  function guest(): LinuxVm {
    assert.ok(vm, 'the VM did not boot');
    return vm;
  }

  it('runs the Debian kernel that build-image.sh prepared', async () => {
    const image = await buildVmImage();
    assert.equal((await guest().exec('uname -r')).trim(), image.release);
    assert.match(image.release, /-amd64$/);
  });

  it('returns a guest command’s combined output and exit status', async () => {
    assert.deepEqual(await guest().run('echo out; echo err >&2; exit 7'), { status: 7, output: 'out\nerr\n' });
    await assert.rejects(guest().exec('echo failing; false'), (err: unknown) => {
      assert.ok(err instanceof VmCommandError);
      assert.equal(err.status, 1);
      assert.equal(err.output, 'failing\n');
      return true;
    });
  });

  it('carries long commands and long, unterminated output intact through the serial console', async () => {
    const word = 'x'.repeat(6000);
    assert.equal(await guest().exec(`printf %s ${word} | wc -c`), '6000\n');
    const out = await guest().exec('seq 1 5000 | tr "\\n" " "; printf "\\001"');
    assert.equal(out, `${Array.from({ length: 5000 }, (_, i) => `${i + 1} `).join('')}\u0001`);
  });

  it('runs commands one at a time in call order when they are issued together', async () => {
    const results = await Promise.all([1, 2, 3, 4].map((n) => guest().exec(`sleep 0.${n % 2}; echo ${n} >> /tmp/order; cat /tmp/order | tr -d "\\n"`)));
    assert.deepEqual(results, ['1', '12', '123', '1234']);
  });

  it('sets up the scenario: ip6tnl with its options, addresses, the host behind it and routes', async () => {
    const tunnel = await guest().exec('ip -6 tunnel show tun0');
    assert.match(tunnel, /^tun0: ip\/ipv6 remote 2001:db8:2::1 local 2001:db8:2::2 encaplimit none hoplimit inherit tclass inherit flowlabel 0x12345 /);
    assert.match(await guest().exec('ip -4 addr show dev tun0'), /inet 192\.168\.100\.2\/24 /);
    assert.match(await guest().exec('ip -6 addr show dev eth0'), /inet6 2001:db8:2::2\/64 scope global/);
    assert.match(await guest().exec('ip -4 addr show dev lan0'), /inet 10\.0\.0\.1\/24 /);
    assert.match(await guest().exec('ip route show 192.168.0.0/24'), /^192\.168\.0\.0\/24 dev tun0 /);
    assert.equal(await guest().exec('cat /tmp/marker /proc/sys/net/ipv4/ip_forward'), 'scenario-commands-ran\n1\n');
  });

  it('sets up the other tunnel modes: ipip and sit with ttl/tos/pmtudisc, ip6tnl ip6ip6', async () => {
    assert.match(await guest().exec('ip -d link show ipip1'), /ipip any remote 10\.1\.0\.1 local 10\.1\.0\.2 ttl inherit tos inherit nopmtudisc /);
    assert.match(await guest().exec('ip -d link show sit1'), /sit any remote 10\.1\.0\.1 local 10\.1\.0\.2 ttl 64 tos 0x28 pmtudisc /);
    assert.match(await guest().exec('ip -d link show ip6t1'), /ip6tnl ip6ip6 remote 2001:db8:2::11 local 2001:db8:2::2 hoplimit 40 encaplimit 7 tclass 0x00 /);
    assert.match(await guest().exec('ip -4 addr show dev ipip1'), /inet 192\.168\.101\.2\/24 /);
    assert.match(await guest().exec('ip -6 addr show dev sit1'), /inet6 2001:db8:101::2\/64 scope global/);
    assert.match(await guest().exec('ip -6 addr show dev lan0'), /inet6 2001:db8:aa::1\/64 scope global/);
    assert.match(await guest().exec('ip -6 route show 2001:db8:100::/64'), /^2001:db8:100::\/64 dev ip6t1 /);
    // IPv6 forwarding follows the IPv6 inside sit and ip6ip6.
    assert.equal(await guest().exec('cat /proc/sys/net/ipv6/conf/all/forwarding'), '1\n');
  });

  // The host's kernel has no 8021q: scapy tags the frames, and the answers show the guest's tags.
  it('sets up VLAN sub-interfaces that answer tagged frames: 802.1Q, and 802.1ad with 802.1Q inside (QinQ)', async () => {
    assert.match(await guest().exec('ip -d link show eth0.100'), /vlan protocol 802\.1Q id 100 /);
    assert.match(await guest().exec('ip -d link show eth0.1000'), /vlan protocol 802\.1ad id 1000 /);
    assert.match(await guest().exec('ip -d link show eth0.1000.20'), /eth0\.1000\.20@eth0\.1000: .* mtu 1400 [^]*vlan protocol 802\.1Q id 20 /);
    const hostMac = await macAddress(TAP, netns);
    // Nothing on the host answers the guest's neighbour solicitations and ARP requests on VLANs.
    await guest().exec(`ip neigh replace 2001:db8:3::1 lladdr ${hostMac} dev eth0.100 && ip neigh replace 172.16.20.1 lladdr ${hostMac} dev eth0.1000.20`);
    const frames = await scapySendRecv({
      netns,
      iface: TAP,
      send: [
        `Ether(src='${hostMac}', dst='${GUEST_MAC}')/Dot1Q(vlan=100)/IPv6(src='2001:db8:3::1', dst='2001:db8:3::2')/ICMPv6EchoRequest(id=1, seq=1)`,
        `Ether(src='${hostMac}', dst='${GUEST_MAC}')/Dot1AD(vlan=1000)/Dot1Q(vlan=20)/IP(src='172.16.20.1', dst='172.16.20.2')/ICMP(id=2, seq=2)`,
      ],
      // Everything the guest sends: the kernel hands AF_PACKET the outer tag as metadata (scapy
      // puts it back), so a BPF filter on the tags would not see them.
      filter: `ether src ${GUEST_MAC}`,
      timeoutMs: REPLY_WINDOW_MS,
      intervalMs: 50,
    });
    const tags = (f: ScapyFrame) => f.layers.filter((l) => l.name === 'Dot1Q' || l.name === 'Dot1AD').map((l) => `${l.name}:${String(l.fields.vlan)}`).join('/');
    const summaries = frames.map((f) => `${tags(f)} ${f.summary}`);
    assert.ok(frames.some((f) => tags(f) === 'Dot1Q:100' && f.layers.some((l) => l.name === 'ICMPv6EchoReply')), `an 802.1Q-tagged echo reply on VLAN 100: ${summaries.join('; ')}`);
    assert.ok(frames.some((f) => tags(f) === 'Dot1AD:1000/Dot1Q:20' && f.layers.some((l) => l.name === 'ICMP' && l.fields.type === 0)), `a QinQ echo reply, 802.1ad 1000 outside, 802.1Q 20 inside: ${summaries.join('; ')}`);
  });

  it('reaches the guest from the host netns over the TAP', async () => {
    const out = await sh(['ping', '-6', '-c', '1', '-W', '5', GUEST_UNDERLAY], { netns });
    assert.match(out, /1 received/);
  });

  it('serves TCP echo, sink and source from the guest (busybox nc -ll -e)', async () => {
    await guest().startTcpService({ kind: 'echo' }, 7);
    await guest().startTcpService({ kind: 'sink' }, 9);
    await guest().startTcpService({ kind: 'source', bytes: 50_000 }, 19);
    const target = (port: number) => `TCP6:[${GUEST_UNDERLAY}]:${port}`;

    const echoed = await sh(`printf 'hello, ip6tnl\\n' | socat -t 10 - '${target(7)}'`, { netns });
    assert.equal(echoed, 'hello, ip6tnl\n');
    assert.equal((await sh(`socat -u '${target(19)}' - | wc -c`, { netns })).trim(), '50000');
    await sh(`head -c 100000 /dev/zero | socat -u - '${target(9)}'`, { netns });
    let counts: number[] = [];
    for (let i = 0; i < 50 && counts.length === 0; i++) {
      counts = await guest().tcpSinkCounts(9);
      if (counts.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(counts, [100_000]);
  });

  it('shuts down: no qemu process and no TAP are left, and a second call is harmless', async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    const pid = guest().pid;
    await guest().shutdown();
    await guest().shutdown();
    assert.equal(guest().running, false);
    assert.equal(await linkExists(TAP, netns), false, `TAP ${TAP} is left in ${netns}`);
    assert.equal(processExists(pid), false, `qemu (pid ${pid}) is still running`);
    await assert.rejects(guest().exec('true'), VmError);
  });

  it('rejects boot with the console lines when the scenario fails, leaving nothing behind', async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    const failing = LinuxVm.boot({
      netns,
      tap: 'fgvm1',
      mac: '52:54:00:f9:00:03',
      bootTimeoutMs: BOOT_TIMEOUT_MS,
      scenario: { underlay: [`${GUEST_UNDERLAY}/64`], commands: ['echo about-to-fail', 'ip link set nosuchdev up'] },
    });
    await assert.rejects(failing, (err: unknown) => {
      assert.ok(err instanceof VmError, String(err));
      assert.match(err.message, /guest set-up failed: scenario exited with status 1/);
      assert.ok(err.console.some((l) => l.includes('+ ip link set nosuchdev up')), err.message);
      return true;
    });
    assert.equal(await linkExists('fgvm1', netns), false, 'TAP fgvm1 is left behind');
    assert.equal(qemuRunningFor('fgvm1'), false, 'a qemu for fgvm1 is still running');
  });

  it('rejects options it cannot turn into a scenario, naming the option', async () => {
    await assert.rejects(
      LinuxVm.boot({ netns, tap: TAP, mac: GUEST_MAC, scenario: { underlay: ['2001:db8:2::2'] } }),
      /scenario\.underlay\[0\]: expected an IPv6 address with prefix length, got "2001:db8:2::2"/,
    );
    await assert.rejects(
      LinuxVm.boot({ netns, tap: TAP, mac: GUEST_MAC, scenario: { underlay: [], tunnel: { ...DEFAULT_TUNNEL, encaplimit: 256 } } }),
      /scenario\.tunnel\.encaplimit: expected an integer 0\.\.255, got 256/,
    );
    const ipip = { name: 'ipip1', mode: 'ipip', local: '10.1.0.2', remote: '10.1.0.1', ttl: 64, tos: 0, pmtudisc: true } as const;
    await assert.rejects(
      LinuxVm.boot({ netns, tap: TAP, mac: GUEST_MAC, scenario: { underlay: [], tunnels: [{ ...ipip, pmtudisc: false }] } }),
      /scenario\.tunnels\[0\]\.ttl: expected 'inherit' with pmtudisc false .*, got 64/,
    );
    await assert.rejects(
      LinuxVm.boot({ netns, tap: TAP, mac: GUEST_MAC, scenario: { underlay: [], tunnels: [{ ...ipip, local: GUEST_UNDERLAY }] } }),
      /scenario\.tunnels\[0\]\.local: expected an IPv4 address, got "2001:db8:2::2"/,
    );
    await assert.rejects(
      LinuxVm.boot({ netns, tap: TAP, mac: GUEST_MAC, scenario: { underlay: [], vlans: [{ name: 'eth0.20', parent: 'eth0.1000', id: 20 }] } }),
      /scenario\.vlans\[0\]\.parent: expected eth0 or an earlier VLAN's name, got "eth0\.1000"/,
    );
    await assert.rejects(
      LinuxVm.boot({ netns, tap: TAP, mac: GUEST_MAC, scenario: { underlay: [], vlans: [{ name: 'eth0.4095', id: 4095 }] } }),
      /scenario\.vlans\[0\]\.id: expected an integer 1\.\.4094, got 4095/,
    );
  });
});

function processExists(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function qemuRunningFor(tap: string): boolean {
  // qemu runs with `-name fgvm-<tap>`.
  return spawnSync('pgrep', ['-f', '--', `-name fgvm-${tap} `]).status === 0;
}

describe('interop: Linux ip6tnl ipip6, encaplimit 4, hoplimit 64, tclass 0 (the defaults)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const g = guestPerSuite({ encaplimit: 4, hoplimit: 64, tclass: 0 });

  it('encapsulates the echo reply behind a Tunnel Encapsulation Limit option of 4, hop limit 64, traffic class 0', async () => {
    const reply = await replyTo(g(), { seq: 1, encapLimitOption: true });
    assertOuterHeaders(reply, { tclass: 0, hoplimit: 64, encaplimit: 4 });
    // The lan host answered with TTL 64 and the guest forwarded it.
    assert.equal(layer(reply, 'IP').fields.ttl, 63);
  });

  it('decapsulates packets with and without the destination options header', async () => {
    const frames = await exchange(g(), [{ seq: 10, encapLimitOption: true }, { seq: 11, encapLimitOption: false }], 2);
    assert.deepEqual([...repliesBySeq(frames).keys()].sort(), [10, 11]);
  });

  // INET_ECN_encapsulate(): the outer ECN field is the inner one, except that CE becomes ECT(0)
  // (RFC 6040 normal mode); the fixed traffic class supplies only the DSCP bits, so even with
  // `tclass 0` the outer traffic class is not always 0.
  it('copies the inner ECN field into the fixed traffic class, CE as ECT(0), and not the inner DSCP', async () => {
    const cases = [
      { tos: DSCP_EF | NOT_ECT, tclass: NOT_ECT },
      { tos: DSCP_EF | ECT_1, tclass: ECT_1 },
      { tos: DSCP_EF | ECT_0, tclass: ECT_0 },
      { tos: DSCP_EF | CE, tclass: ECT_0 },
      { tos: CE, tclass: ECT_0 },
    ];
    const replies = repliesBySeq(await exchange(g(), cases.map((c, i) => ({ seq: 20 + i, tos: c.tos, encapLimitOption: true })), cases.length));
    cases.forEach((c, i) => {
      const reply = replies.get(20 + i);
      assert.ok(reply, `no reply for inner TOS 0x${hex2(c.tos)}`);
      // The lan host echoes the request's TOS, so the inner TOS of the reply is the one sent.
      assert.equal(layer(reply, 'IP').fields.tos, c.tos);
      assertOuterHeaders(reply, { tclass: c.tclass, hoplimit: 64, encaplimit: 4 });
    });
  });

  // With flowlabel 0 (the default) Linux's ip6_make_flowlabel() fills in an automatic label
  // (net.ipv6.auto_flowlabels=1) from skb_get_hash_flowi6(). A forwarded packet reaches the
  // tunnel without a hash (no RSS/RPS here), so the hash is taken over the outer flowi6:
  // addresses and protocol only. Forwarded traffic thus gets one label per tunnel, whatever
  // the inner flow; it changes from boot to boot (the hash seed is random). Locally sent
  // traffic with a socket hash would get a label per socket instead.
  it('labels forwarded traffic automatically: one non-zero flow label for every inner flow', async () => {
    const frames = await exchange(
      g(),
      [
        { seq: 30, encapLimitOption: true },
        { seq: 31, encapLimitOption: true, tos: DSCP_EF },
        { seq: 32, encapLimitOption: false, innerSrc: '192.168.0.77', icmpId: 0x1234 },
      ],
      3,
    );
    assert.equal(frames.length, 3, 'three echo replies');
    const labels = frames.map((reply) => {
      assert.equal(layer(reply, 'IPv6').fields.fl, flowLabel(reply), 'scapy reads the same flow label');
      return flowLabel(reply);
    });
    assert.notEqual(labels[0], 0);
    assert.deepEqual(labels, [labels[0], labels[0], labels[0]]);
  });

  it('decapsulates only packets from the tunnel’s remote to its local address', async () => {
    const received = await tunnelCounter(g(), 'rx_packets');
    const frames = await exchange(
      g(),
      [
        { seq: 40, outerSrc: STRANGER, encapLimitOption: true },
        { seq: 41, outerDst: GUEST_OTHER, encapLimitOption: true },
        { seq: 42, encapLimitOption: true }, // the control: same request, right addresses
      ],
      1,
    );
    assert.deepEqual([...repliesBySeq(frames).keys()], [42]);
    assert.equal(await tunnelCounter(g(), 'rx_packets'), received + 1, 'tun0 received only the control');
  });

  it('gives the tunnel the underlay MTU less 40 (IPv6) and 8 (the option): 1452', async () => {
    assert.equal((await g().vm.exec('cat /sys/class/net/tun0/mtu')).trim(), '1452');
  });
});

describe('interop: Linux ip6tnl ipip6, encaplimit none', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const g = guestPerSuite({ encaplimit: 'none', hoplimit: 64, tclass: 0 });

  it('puts the inner IPv4 packet right after the IPv6 header (next header 4)', async () => {
    const reply = await replyTo(g(), { seq: 1 });
    assertOuterHeaders(reply, { tclass: 0, hoplimit: 64, encaplimit: 'none' });
  });

  it('still decapsulates packets that carry the encap-limit option', async () => {
    const reply = await replyTo(g(), { seq: 2, encapLimitOption: true });
    assertOuterHeaders(reply, { tclass: 0, hoplimit: 64, encaplimit: 'none' });
  });

  it('gives the tunnel the underlay MTU less 40: 1460', async () => {
    assert.equal((await g().vm.exec('cat /sys/class/net/tun0/mtu')).trim(), '1460');
  });
});

describe('interop: Linux ip6tnl ipip6, hoplimit inherit', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const g = guestPerSuite({ encaplimit: 4, hoplimit: 'inherit', tclass: 0 });

  // ip6_tnl_xmit(): hop limit 0 ("inherit") takes the inner TTL as it leaves the guest, i.e.
  // after ip_forward() decremented it.
  it('sets the outer hop limit to the inner TTL after the forwarding decrement', async () => {
    const reply = await replyTo(g(), { seq: 1, encapLimitOption: true });
    assert.equal(layer(reply, 'IP').fields.ttl, 63);
    assertOuterHeaders(reply, { tclass: 0, hoplimit: 63, encaplimit: 4 });

    // Not a coincidence with 64 - 1: the lan host now answers with TTL 20.
    await g().vm.exec('ip netns exec lan sysctl -w net.ipv4.ip_default_ttl=20');
    const lower = await replyTo(g(), { seq: 2, encapLimitOption: true });
    assert.equal(layer(lower, 'IP').fields.ttl, 19);
    assertOuterHeaders(lower, { tclass: 0, hoplimit: 19, encaplimit: 4 });
  });
});

describe('interop: Linux ip6tnl ipip6, tclass inherit', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const g = guestPerSuite({ encaplimit: 4, hoplimit: 64, tclass: 'inherit' });

  // IP6_TNL_F_USE_ORIG_TCLASS copies the whole inner TOS, then INET_ECN_encapsulate() rewrites
  // CE as ECT(0): a congestion mark is not carried across the tunnel in the outer header.
  it('copies the inner TOS into the traffic class, ECN as is except CE, which becomes ECT(0)', async () => {
    const cases = [
      { tos: 0x00, tclass: 0x00 },
      { tos: DSCP_EF | NOT_ECT, tclass: DSCP_EF | NOT_ECT },
      { tos: DSCP_EF | ECT_1, tclass: DSCP_EF | ECT_1 },
      { tos: DSCP_EF | ECT_0, tclass: DSCP_EF | ECT_0 },
      { tos: DSCP_EF | CE, tclass: DSCP_EF | ECT_0 },
      { tos: 0x28 | CE, tclass: 0x28 | ECT_0 },
    ];
    const replies = repliesBySeq(await exchange(g(), cases.map((c, i) => ({ seq: 1 + i, tos: c.tos, encapLimitOption: true })), cases.length));
    cases.forEach((c, i) => {
      const reply = replies.get(1 + i);
      assert.ok(reply, `no reply for inner TOS 0x${hex2(c.tos)}`);
      assert.equal(layer(reply, 'IP').fields.tos, c.tos, 'the lan host echoes the TOS it received');
      assertOuterHeaders(reply, { tclass: c.tclass, hoplimit: 64, encaplimit: 4 });
    });
  });

  // INET_ECN_decapsulate() (RFC 6040 section 4.2): outer CE marks an ECT inner packet CE and
  // drops a not-ECT one (counted as an rx frame error); outer ECT(1) turns an inner ECT(0) into
  // ECT(1); an outer ECT over a not-ECT inner packet changes nothing; the outer DSCP is ignored
  // without `dscp inherit`. The lan host's echo of the TOS shows what the guest made of each
  // request.
  it('decapsulates ECN per RFC 6040: outer CE marks ECT inner packets CE and drops not-ECT ones, outer ECT(1) marks ECT(0) ECT(1)', async () => {
    const errors = await tunnelCounter(g(), 'rx_frame_errors');
    const dropped = { seq: 20, outerTc: CE, tos: NOT_ECT };
    const cases = [
      { seq: 21, outerTc: CE, tos: ECT_0, arrived: CE },
      { seq: 22, outerTc: CE, tos: ECT_1, arrived: CE },
      { seq: 23, outerTc: CE, tos: CE, arrived: CE },
      { seq: 24, outerTc: ECT_1, tos: ECT_0, arrived: ECT_1 },
      { seq: 25, outerTc: ECT_0, tos: ECT_1, arrived: ECT_1 },
      { seq: 26, outerTc: ECT_1, tos: NOT_ECT, arrived: NOT_ECT },
      { seq: 27, outerTc: NOT_ECT, tos: CE, arrived: CE },
      { seq: 28, outerTc: DSCP_EF | ECT_0, tos: ECT_0, arrived: ECT_0 },
    ];
    const replies = repliesBySeq(
      await exchange(g(), [dropped, ...cases].map((c) => ({ ...c, encapLimitOption: true })), cases.length),
    );
    assert.deepEqual([...replies.keys()].sort(), cases.map((c) => c.seq), 'only the not-ECT packet under outer CE is dropped');
    for (const c of cases) {
      const reply = replies.get(c.seq);
      assert.ok(reply);
      assert.equal(layer(reply, 'IP').fields.tos, c.arrived, `outer 0x${hex2(c.outerTc)} inner 0x${hex2(c.tos)}`);
    }
    assert.equal(await tunnelCounter(g(), 'rx_frame_errors'), errors + 1);
  });
});
