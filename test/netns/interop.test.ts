// Interop with the real Linux tunnels: site A is flowgate, the far end of its tunnel a stock
// Debian kernel under qemu (test/helpers/vm.ts), whose TAP is a port of the underlay bridge.
// The host behind the far end is a namespace in the guest, so that the guest forwards
// between it and its tunnel as a gateway does.
//
//   lan ── [site A: flowgate] ══ br0 ══ u-vm ─ qemu: eth0 (the mode's underlay address)
//                                                  tun0 (the case's mode)
//                                                  netns remote (the mode's inner family)
//
// The addresses are DemoTopology's for the mode (its `tunnel` option, `addresses`). One boot
// per case: ip4ip6 and ip6ip6 with encaplimit 4 and none, ipip, sit, and ip4ip6 over a
// VLAN-tagged underlay (flowgate's eth1.100 and the guest's eth0.100; the bridge passes the
// tags, the host's kernel needs no 8021q).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import type { ConfigInput } from '../../lib/config';
import type { TunnelMode } from '../../lib/config/schema';
import { DEMO_ADDRESSES, type DemoAddresses, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { formatPrefix, parsePrefix, prefixNetwork } from '../../lib/net/addr';
import { ip4Packet, tunnelEncapLimitOption } from '../../lib/packets';
import { scapyChecksums } from '../helpers/scapy';
import { LinuxVm, TunnelSpec } from '../helpers/vm';
import { awaitAtMost, Capture, delta, flowOf, HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, until } from './support';

const VM_TAP = 'u-vm';
const VM_MAC = '52:54:00:f9:00:22';
const SITE_A_UNDERLAY_MAC = '00:11:22:33:11:55';
const VM_NETNS = 'remote';
const ECHO_PORT = 7;
const ETHER_LENGTH = 14;
/** Inner packets of 64 bytes: IPv4 20 + ICMP or UDP 8 + 36, IPv6 40 + 8 + 16. */
const INNER_LENGTH = 64;
const ECHO_BYTES = 2 * 1024 * 1024;

interface InteropCase {
  mode: TunnelMode;
  /** IPv6 underlay only. */
  encaplimit?: 4 | 'none';
  /** Both ends' underlay on this 802.1Q VLAN of their port (flowgate's eth1.N, the guest's eth0.N). */
  vlan?: number;
}

const CASES: InteropCase[] = [
  { mode: 'ip4ip6', encaplimit: 4 },
  { mode: 'ip4ip6', encaplimit: 'none' },
  { mode: 'ip6ip6', encaplimit: 4 },
  { mode: 'ip6ip6', encaplimit: 'none' },
  { mode: 'ipip' },
  { mode: 'sit' },
  { mode: 'ip4ip6', encaplimit: 4, vlan: 100 },
];

const inner6 = (c: InteropCase) => c.mode === 'ip6ip6' || c.mode === 'sit';
const outer4 = (c: InteropCase) => c.mode === 'ipip' || c.mode === 'sit';

function caseTitle(c: InteropCase): string {
  return `${c.mode}${c.encaplimit === undefined ? '' : `, encaplimit ${c.encaplimit}`}${c.vlan === undefined ? '' : `, over 802.1Q VLAN ${c.vlan}`}`;
}

/**
 * Site A's config for a case over a VLAN: the demo's (DemoTopology's for the mode) with the
 * underlay address moved to the VLAN sub-interface, which takes eth1's place in the flowtable.
 */
function vlanUnderlay(vlan: number, config: ConfigInput): void {
  const ports = config.ports as Record<string, Record<string, unknown>>;
  assert.ok(ports.eth1, 'the demo config has eth1');
  const name = `eth1.${vlan}`;
  ports[name] = { parent: 'eth1', vlan, addresses: ports.eth1.addresses };
  ports.eth1.addresses = [];
  const devices = config.flowtable?.devices as string[];
  config.flowtable = { ...config.flowtable, devices: devices.map((d) => (d === 'eth1' ? name : d)) };
}

/**
 * The guest's side of the case: the same tunnel with Linux's settings equal to flowgate's
 * defaults, which are iproute2's (hop limit 64, traffic class 0; ttl inherit, tos 0, pmtudisc).
 */
function guestTunnel(c: InteropCase, a: DemoAddresses): TunnelSpec {
  const address = `${a.tunnelB}/${a.tunnelPrefix}`;
  if (c.mode === 'ipip' || c.mode === 'sit') return { mode: c.mode, local: a.underlayB, remote: a.underlayA, ttl: 'inherit', tos: 0, pmtudisc: true, address };
  return { mode: c.mode === 'ip4ip6' ? 'ipip6' : 'ip6ip6', local: a.underlayB, remote: a.underlayA, encaplimit: c.encaplimit ?? 4, hoplimit: 64, tclass: 0, address };
}

/** The network of an address with prefix length, e.g. 2001:db8:10::/64 for 2001:db8:10::10/64. */
function networkOf(address: string, length: number): string {
  return formatPrefix(prefixNetwork(parsePrefix(`${address}/${length}`)));
}

/** Length of the Ethernet header with its VLAN tags. */
function l2Length(frame: Buffer): number {
  let offset = 12;
  while (frame.readUInt16BE(offset) === 0x8100 || frame.readUInt16BE(offset) === 0x88a8) offset += 4;
  return offset + 2;
}

/**
 * The outer headers of an encapsulated frame, addresses apart: the Ethernet type and VLAN tags,
 * then IPv6 with the flow label cleared (and the destination options when present), or IPv4
 * with the ID and checksum cleared.
 */
function outerTemplate(frame: Buffer): { header: string; src: string; dst: string; innerLength: number } {
  const l2 = l2Length(frame);
  const tags = frame.subarray(12, l2).toString('hex');
  if (frame.readUInt16BE(l2 - 2) === 0x0800) {
    const ip = Buffer.from(frame.subarray(l2, l2 + 20));
    ip.writeUInt16BE(0, 4);
    ip.writeUInt16BE(0, 10);
    return { header: tags + ip.subarray(0, 12).toString('hex'), src: ip.subarray(12, 16).toString('hex'), dst: ip.subarray(16, 20).toString('hex'), innerLength: frame.length - l2 - 20 };
  }
  const ip6 = Buffer.from(frame.subarray(l2, l2 + 40));
  const options = ip6[6] === 60 ? frame.subarray(l2 + 40, l2 + 48).toString('hex') : '';
  const src = ip6.subarray(8, 24).toString('hex');
  const dst = ip6.subarray(24, 40).toString('hex');
  ip6[1] = (ip6[1] ?? 0) & 0xf0;
  ip6[2] = 0;
  ip6[3] = 0;
  return { header: tags + ip6.subarray(0, 8).toString('hex') + options, src, dst, innerLength: frame.length - l2 - 40 - options.length / 2 };
}

/**
 * The outer headers Linux's tunnel builds for a 64-byte inner packet with the case's settings
 * (test/interop/README.md). Over IPv4 `ttl inherit`: the inner TTL after one forwarding hop, 63.
 */
function linuxTemplate(c: InteropCase): string {
  const tags = c.vlan === undefined ? '' : `8100${c.vlan.toString(16).padStart(4, '0')}`;
  const proto = inner6(c) ? '29' : '04';
  if (outer4(c)) return `${tags}0800` + `4500${(20 + INNER_LENGTH).toString(16).padStart(4, '0')}` + '0000' + '4000' + `3f${proto}0000`;
  const option = c.encaplimit === 'none' ? '' : `${proto}00040104010100`;
  return `${tags}86dd` + `60000000${(INNER_LENGTH + option.length / 2).toString(16).padStart(4, '0')}${option ? '3c' : proto}40${option}`;
}

function macOfFrame(frame: Buffer, offset: number): string {
  return [...frame.subarray(offset, offset + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

for (const c of CASES) {
  describe(`interop: Linux as the far end of site A's tunnel: ${caseTitle(c)}`, function () {
    this.timeout(TEST_TIMEOUT_MS);
    let topology: DemoTopology | undefined;
    let vm: LinuxVm | undefined;
    let hosts = { lan: '', remote: '' };

    before(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      const vlan = c.vlan;
      topology = await DemoTopology.create({
        farEnd: 'external',
        prefix: 'fgtvm',
        privateSockets: true,
        tunnel: { mode: c.mode, ...(c.encaplimit === undefined ? {} : { encaplimit: c.encaplimit }) },
        configure: vlan === undefined ? {} : { a: (config) => vlanUnderlay(vlan, config) },
      });
      const a = topology.addresses;
      hosts = { lan: a.lanHost, remote: a.remoteHost };
      const underlay = [`${a.underlayB}/${a.underlayPrefix}`];
      vm = await LinuxVm.boot({
        netns: topology.ns.underlay,
        tap: VM_TAP,
        mac: VM_MAC,
        bootTimeoutMs: 90_000,
        scenario: {
          underlay: c.vlan === undefined ? underlay : [],
          vlans: c.vlan === undefined ? [] : [{ name: `eth0.${c.vlan}`, id: c.vlan, addresses: underlay }],
          tunnel: guestTunnel(c, a),
          behind: { kind: 'netns', name: VM_NETNS, address: `${a.remoteHost}/${a.remotePrefix}`, gateway: `${a.siteBLan}/${a.remotePrefix}` },
          routes: [{ to: networkOf(a.lanHost, a.lanPrefix) }],
        },
      });
      await topology.attachToUnderlay(VM_TAP);
      await topology.start();
    });

    after(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      try {
        await vm?.shutdown();
      } finally {
        await topology?.destroy();
      }
    });

    const site = () => (topology as DemoTopology).site('a');

    it('answers ping both ways between the LAN host and the host behind the VM', async () => {
      const t = topology as DemoTopology;
      assert.match(await t.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', hosts.remote]), / 0% packet loss/);
      assert.match(await (vm as LinuxVm).exec(`ip netns exec ${VM_NETNS} ping -c 3 -W 5 ${hosts.lan}`), / 0% packet loss/);
    });

    it(`carries ${ECHO_BYTES / 1024 / 1024} MB to the host behind the VM and its echo back byte for byte, offloaded at site A both ways`, async () => {
      const t = topology as DemoTopology;
      await (vm as LinuxVm).startTcpService({ kind: 'echo' }, ECHO_PORT, VM_NETNS);
      // The close only once the echo is back: after the FIN the flow leaves the fast path.
      const source = startTraffic(t.ns.lan, { kind: 'tcp-send', host: hosts.remote, port: ECHO_PORT, bytes: ECHO_BYTES, gate: true, expectBytes: ECHO_BYTES }, { timeoutMs: 120_000 });
      await source.ready;
      const flow = await until('site A to offload the connection', async () => flowOf(await site().flows(), 'tcp', { dport: ECHO_PORT }));
      assert.deepEqual([flow.in, flow.out, flow.reply?.in, flow.reply?.out, flow.tunnel], ['eth0', 'tun0', 'tun0', 'eth0', 'tun0']);
      const before = await site().stats();
      source.next();
      const sent = await source.result;
      const d = delta(before, await site().stats());

      assert.equal(sent.receivedBytes, ECHO_BYTES, 'the whole echo came back');
      assert.equal(sent.receivedSha256, sent.sha256, 'byte for byte');
      // Encapsulation (LAN to VM) and decapsulation (the echo) both on the fast path.
      assert.ok(d.fast / (d.fast + d.slow) >= 0.9, `fast-path share < 90 %: ${JSON.stringify(d)}`);
    });

    it("encapsulates, in the slow path and the fast path, with the outer headers Linux's tunnel builds (flow label and IPv4 ID aside)", async () => {
      const t = topology as DemoTopology;
      // On the VM's bridge port: the bridge device itself sees only what is addressed to it.
      // libpcap puts the VLAN tag, which the kernel keeps as metadata, back into the frame.
      const ip = outer4(c) ? 'ip and (ip proto 4 or ip proto 41)' : 'ip6 and (ip6 proto 4 or ip6 proto 41 or ip6 proto 60)';
      const capture = await Capture.start(t, 'underlay', VM_TAP, c.vlan === undefined ? ip : `vlan ${c.vlan} and ${ip}`);
      const before = await site().stats();
      let frames: Buffer[];
      const payload = INNER_LENGTH - (inner6(c) ? 48 : 28);
      try {
        // Echo requests (not offloaded: flowgate's slow-path encapsulation) and replies (Linux's), ...
        await t.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', '-s', String(payload), hosts.remote]);
        // ... and a UDP stream, offloaded after its first datagram (the fast path's), all with 64-byte inner packets.
        await startTraffic(t.ns.lan, { kind: 'udp-peer', bind: 7002, peer: { host: hosts.remote, port: 7001 }, pps: 200, count: 20, size: payload }).result;
      } finally {
        frames = await capture.stop();
      }
      const d = delta(before, await site().stats());
      assert.ok(d.fast >= 15, `the UDP stream went through the fast path: ${JSON.stringify(d)}`);

      const fromFlowgate = frames.filter((f) => macOfFrame(f, 6) === SITE_A_UNDERLAY_MAC && outerTemplate(f).innerLength === INNER_LENGTH);
      const fromLinux = frames.filter((f) => macOfFrame(f, 6) === VM_MAC && outerTemplate(f).innerLength === INNER_LENGTH);
      assert.ok(fromFlowgate.length >= 3 + 20, `flowgate's 64-byte frames captured: ${fromFlowgate.length}`);
      assert.ok(fromLinux.length >= 3, `Linux's echo replies captured: ${fromLinux.length}`);

      const linux = outerTemplate(fromLinux[0] as Buffer);
      assert.equal(linux.header, linuxTemplate(c), "Linux's own outer headers, as test/interop/README.md documents them");
      for (const frame of fromFlowgate) {
        const ours = outerTemplate(frame);
        assert.equal(ours.header, linux.header, `outer headers of flowgate's ${frame.length}-byte frame`);
        assert.deepEqual([ours.src, ours.dst], [linux.dst, linux.src], 'the same tunnel, the other way');
      }
      if (outer4(c)) {
        // The IPv4 header checksum, which the template leaves out with the ID it covers.
        for (const sums of await scapyChecksums(fromFlowgate)) {
          const outer = sums[0];
          assert.ok(outer?.layer === 'IP' && outer.found === outer.computed, `flowgate's outer IPv4 checksum: ${JSON.stringify(sums)}`);
        }
      }
    });
  });
}

// Path MTU through the tunnel with Linux's ip6tnl at the far end, behind a router whose link
// towards the VM has MTU 1280 (DemoTopology's underlayHop, proxy NDP keeping one /64):
//
//   lan ── [site A: flowgate] ══ br0 ══ [hop 2001:db8:2::fe] ═ u-vm (MTU 1280) ─ qemu: eth0 (MTU 1280)
//
// Every tunnel packet of more than 1280 bytes draws ICMPv6 packet too big from the router's
// kernel. One boot for all cases.
const HOP_MTU = 1280;
/** The IPv6 header and the destination options with the encapsulation limit. */
const OUTER_HEADERS = 40 + 8;
const HOP_TUNNEL_MTU = HOP_MTU - OUTER_HEADERS;
const HOP_ECHO_PORT = 7;

/** The path MTU `from` cached towards `to` (`ip route get` in `run`); null if none. */
async function cachedPathMtu(run: (command: string[]) => Promise<string>, to: string): Promise<number | null> {
  const mtu = /\bmtu (\d+)/.exec(await run(['ip', 'route', 'get', to]))?.[1];
  return mtu === undefined ? null : Number(mtu);
}

describe(`interop: Linux's ip6tnl behind a router with a ${HOP_MTU}-byte link`, function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology | undefined;
  let vm: LinuxVm | undefined;
  const log: string[] = [];

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.create({ farEnd: 'external', prefix: 'fgth', privateSockets: true, underlayHop: { mtu: HOP_MTU } });
    vm = await LinuxVm.boot({
      netns: topology.ns.hop,
      tap: VM_TAP,
      mac: VM_MAC,
      bootTimeoutMs: 90_000,
      scenario: {
        underlay: [`${DEMO_ADDRESSES.underlayB}/${DEMO_ADDRESSES.underlayPrefix}`],
        mtu: HOP_MTU,
        tunnel: {
          local: DEMO_ADDRESSES.underlayB,
          remote: DEMO_ADDRESSES.underlayA,
          encaplimit: 4,
          hoplimit: 64,
          tclass: 0,
          address: `${DEMO_ADDRESSES.tunnelB}/${DEMO_ADDRESSES.tunnelPrefix}`,
        },
        behind: { kind: 'netns', name: VM_NETNS, address: `${DEMO_ADDRESSES.remoteHost}/${DEMO_ADDRESSES.remotePrefix}`, gateway: `${DEMO_ADDRESSES.siteBLan}/${DEMO_ADDRESSES.remotePrefix}` },
        routes: [{ to: `192.168.0.0/${DEMO_ADDRESSES.lanPrefix}` }],
      },
    });
    await topology.attachBehindHop(VM_TAP);
    await topology.start();
    topology.site('a').onLogLine((line) => log.push(line));
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    try {
      await vm?.shutdown();
    } finally {
      await topology?.destroy();
    }
  });

  const site = () => (topology as DemoTopology).site('a');

  it(`carries 2 MB from the LAN host to the host behind the VM and back byte for byte, the LAN host learning MTU ${HOP_TUNNEL_MTU} from the router's packet too big relayed by site A`, async () => {
    const t = topology as DemoTopology;
    const lan = (command: string[]) => t.run('lan', command);
    assert.equal(await cachedPathMtu(lan, DEMO_ADDRESSES.remoteHost), null, 'no path MTU learnt before');
    await (vm as LinuxVm).startTcpService({ kind: 'echo' }, HOP_ECHO_PORT, VM_NETNS);
    const bytes = 2 * 1024 * 1024;
    const source = startTraffic(t.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: HOP_ECHO_PORT, bytes, gate: true, expectBytes: bytes }, { timeoutMs: 90_000 });
    await source.ready;
    await until('site A to offload the connection', async () => flowOf(await site().flows(), 'tcp', { dport: HOP_ECHO_PORT }));
    const before = await site().stats();
    source.next();
    const sent = await source.result;
    const d = delta(before, await site().stats());

    // Both ways through the 1280-byte link: the LAN host's segments (MSS 1460 from the
    // remote's 1500-byte link) and the echo (MSS 1460 from the LAN's).
    assert.equal(sent.receivedBytes, bytes, 'the whole echo came back');
    assert.equal(sent.receivedSha256, sent.sha256, 'byte for byte');
    assert.ok((d.reasons.tunnel_too_big ?? 0) >= 1, `site A relayed the router's packet too big: ${JSON.stringify(d.reasons)}`);
    const lowered = log.find((line) => line.includes('tunnel path MTU lowered by ICMPv6 packet too big'));
    assert.ok(lowered !== undefined, "site A's log says the tunnel's path MTU was lowered");
    assert.match(lowered, new RegExp(`path_mtu=${HOP_MTU}\\b.*\\bmtu=${HOP_TUNNEL_MTU}\\b`), "the tunnel's effective MTU: the router's less the outer headers");
    const [tun] = JSON.parse(await t.run('a', ['ip', '-j', 'link', 'show', 'tun0'])) as { mtu: number }[];
    assert.equal(tun?.mtu, HOP_TUNNEL_MTU, "the TUN device's MTU followed it");
    // First the ICMPv4 that site A made of the packet too big (MTU 1280, Linux's floor), then
    // site A's kernel's fragmentation needed from the TUN: the sender ends at the tunnel's MTU.
    assert.equal(await cachedPathMtu(lan, DEMO_ADDRESSES.remoteHost), HOP_TUNNEL_MTU, "the LAN host's path MTU to the remote host");
    // And the far end's own: Linux's ip6tnl told the remote host the same (ip4ip6_tnl_xmit()).
    const remote = (command: string[]) => (vm as LinuxVm).exec(`ip netns exec ${VM_NETNS} ${command.join(' ')}`);
    assert.equal(await cachedPathMtu(remote, DEMO_ADDRESSES.lanHost), HOP_TUNNEL_MTU, "the remote host's path MTU to the LAN host");
    assert.ok(d.fast / (d.fast + d.slow) >= 0.9, `fast-path share < 90 %: ${JSON.stringify(d)}`);
  });

  it('reassembles a tunnel packet that the guest fragmented for the 1280-byte link and delivers the inner datagram intact to the LAN host', async () => {
    const t = topology as DemoTopology;
    const sport = 7003;
    const dport = 7004;
    // 1400 bytes of inner packet, no DF: 1448 of outer packet, two fragments on the 1280-byte
    // link. Sent through fgvm-send6 (scripts/vm/build-image.sh): Linux's ip6tnl itself never
    // fragments the outer packet of an IPv4 one, so the guest's IPv6 stack does it here.
    const payload = randomBytes(1400 - 20 - 8);
    const inner = ip4Packet({ src: DEMO_ADDRESSES.remoteHost, dst: DEMO_ADDRESSES.lanHost, ttl: 64, id: 0x4242 }, { udp: { sport, dport } }, payload);
    const tunnelPayload = Buffer.concat([tunnelEncapLimitOption(4), inner]);
    // Linux's layout: the destination options before the fragment header (ip6_find_1stfragopt()).
    const fragments = await Capture.start(t, 'hop', 'eth0', `ip6 and src ${DEMO_ADDRESSES.underlayB} and ip6[6] == 60 and ip6[40] == 44`);
    const delivered = await Capture.start(t, 'lan', 'eth0', `udp and dst port ${dport}`);
    const receiver = startTraffic(t.ns.lan, { kind: 'udp-peer', bind: dport, listen: true, expectCount: 1 }, { timeoutMs: 60_000 });
    const before = await site().stats();
    let seen: Buffer[];
    let got: Buffer[];
    try {
      await receiver.ready;
      await (vm as LinuxVm).exec(`echo ${tunnelPayload.toString('base64')} | base64 -d | fgvm-send6 ${DEMO_ADDRESSES.underlayA} 60`);
      await awaitAtMost(receiver.reached);
    } finally {
      receiver.kill();
      seen = await fragments.stop();
      got = await delivered.stop();
    }
    const d = delta(before, await site().stats());

    assert.equal(seen.length, 2, `the guest sent the tunnel packet as two outer fragments: ${seen.map((f) => f.length).join(', ')}`);
    assert.ok((d.reasons.tunnel_fragment ?? 0) >= 2, `site A took both fragments for reassembly: ${JSON.stringify(d.reasons)}`);
    assert.equal(got.length, 1, 'one datagram reached the LAN host');
    const frame = got[0] as Buffer;
    const ip = frame.subarray(ETHER_LENGTH);
    assert.equal(ip.readUInt16BE(2), inner.length, 'the whole inner packet');
    assert.equal(ip[8], 63, "TTL 64 less site A's kernel's hop");
    assert.ok(ip.subarray(20 + 8).equals(payload), 'the payload byte for byte');
  });
});

// A QinQ LAN: the guest is a LAN host of site A on 802.1Q VLAN 20 inside 802.1ad VLAN 1000
// (its eth0.1000.20 on eth0.1000), facing site A's matching sub-interfaces; the far end of the
// tunnel is the demo's site B (a second flowgate) with the remote host behind it.
//
// Site A's LAN port is a net_tap here, not af_packet: the kernel keeps a received frame's outer
// tag as skb metadata and DPDK's af_packet PMD writes it back as 0x8100 whatever its TPID (the
// config refuses 802.1ad on af_packet ports), whereas a TAP's reader gets the tag back with its
// own TPID (tun_put_user()). That TAP and the VM's are bridged in site A's namespace:
//
//   qemu: eth0.1000.20 192.168.20.10 ─ l-vm ─ br-q ─ qlan [site A: net_tap eth0] ══ ... [site B] ── remote 10.0.0.10
const QINQ = { service: 1000, customer: 20 } as const;
const QINQ_TAP = 'l-vm';
const QINQ_LAN_TAP = 'qlan';
const QINQ_VM_MAC = '52:54:00:f9:00:23';
const SITE_A_LAN_MAC = '00:00:22:33:11:55';
const QINQ_HOST = '192.168.20.10';
const QINQ_GATEWAY = '192.168.20.2';
const QINQ_PORT = `eth0.${QINQ.service}.${QINQ.customer}`;
/** The guest's MTU on the inner VLAN: two tags on 1500 bytes would exceed the LAN port's 1518-byte frames. */
const QINQ_MTU = 1492;

function configureQinQ(config: ConfigInput): void {
  const ports = config.ports as Record<string, Record<string, unknown>>;
  assert.ok(ports.eth0, 'the demo config has eth0');
  // A vdev name of its own: flowgate numbers its mirror TAPs net_tap0, net_tap1, ...
  ports.eth0.device = `net_tap99,iface=${QINQ_LAN_TAP}`;
  ports[`eth0.${QINQ.service}`] = { parent: 'eth0', vlan: QINQ.service, protocol: '802.1ad' };
  ports[QINQ_PORT] = { parent: `eth0.${QINQ.service}`, vlan: QINQ.customer, mtu: QINQ_MTU, addresses: [`${QINQ_GATEWAY}/24`] };
  const devices = config.flowtable?.devices as string[];
  config.flowtable = { ...config.flowtable, devices: [...devices, QINQ_PORT] };
}

{
  describe(`interop: Linux as a LAN host on a QinQ LAN (802.1ad ${QINQ.service}, 802.1Q ${QINQ.customer} inside) facing site A's sub-interfaces`, function () {
    this.timeout(TEST_TIMEOUT_MS);
    let topology: DemoTopology | undefined;
    let vm: LinuxVm | undefined;

    before(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      topology = await DemoTopology.create({ farEnd: 'flowgate', prefix: 'fgqvm', privateSockets: true, configure: { a: configureQinQ } });
      vm = await LinuxVm.boot({
        netns: topology.ns.a,
        tap: QINQ_TAP,
        mac: QINQ_VM_MAC,
        bootTimeoutMs: 90_000,
        scenario: {
          underlay: [],
          vlans: [
            { name: `eth0.${QINQ.service}`, id: QINQ.service, protocol: '802.1ad' },
            { name: QINQ_PORT, parent: `eth0.${QINQ.service}`, id: QINQ.customer, mtu: QINQ_MTU, addresses: [`${QINQ_HOST}/24`] },
          ],
          routes: [{ to: 'default', via: QINQ_GATEWAY, dev: QINQ_PORT }],
        },
      });
      await topology.start();
      // flowgate's LAN TAP exists once it runs. The bridge is a wire: no IPv6 of its own on it
      // or its ports, so that site A's kernel sends nothing into the LAN by itself. net_tap
      // gives the TAP flowgate's MAC, which a bridge would take for its own and deliver locally
      // instead of forwarding: the TAP and the bridge get MACs of their own (flowgate reads
      // whatever the TAP transmits).
      const off = [QINQ_TAP, QINQ_LAN_TAP, 'br-q'].map((i) => `net.ipv6.conf.${i}.disable_ipv6=1`).join(' ');
      await topology.run(
        'a',
        [
          'ip link add br-q address 02:00:00:00:0a:02 type bridge mcast_snooping 0',
          `sysctl -q -w ${off}`,
          `ip link set ${QINQ_LAN_TAP} address 02:00:00:00:0a:01`,
          `ip link set ${QINQ_LAN_TAP} master br-q`,
          `ip link set ${QINQ_TAP} master br-q`,
          `ip link set ${QINQ_TAP} up`,
          `ip link set ${QINQ_LAN_TAP} up`,
          'ip link set br-q up',
        ].join(' && '),
      );
    });

    after(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      try {
        await vm?.shutdown();
      } finally {
        await topology?.destroy();
      }
    });

    const site = () => (topology as DemoTopology).site('a');

    it('answers ping both ways between the QinQ LAN host and the remote host', async () => {
      const t = topology as DemoTopology;
      assert.match(await (vm as LinuxVm).exec(`ping -c 3 -W 5 ${DEMO_ADDRESSES.remoteHost}`), / 0% packet loss/);
      assert.match(await t.run('remote', ['ping', '-c', '3', '-i', '0.2', '-W', '5', QINQ_HOST]), / 0% packet loss/);
    });

    it(`carries ${ECHO_BYTES / 1024 / 1024} MB from the remote host to the QinQ LAN host and its echo back byte for byte, offloaded at site A both ways`, async () => {
      const t = topology as DemoTopology;
      await (vm as LinuxVm).startTcpService({ kind: 'echo' }, ECHO_PORT);
      const source = startTraffic(t.ns.remote, { kind: 'tcp-send', host: QINQ_HOST, port: ECHO_PORT, bytes: ECHO_BYTES, gate: true, expectBytes: ECHO_BYTES }, { timeoutMs: 120_000 });
      await source.ready;
      const flow = await until('site A to offload the connection', async () => flowOf(await site().flows(), 'tcp', { dport: ECHO_PORT }));
      assert.deepEqual([flow.in, flow.out, flow.reply?.in, flow.reply?.out], ['tun0', QINQ_PORT, QINQ_PORT, 'tun0']);
      const before = await site().stats();
      source.next();
      const sent = await source.result;
      const d = delta(before, await site().stats());
      assert.equal(sent.receivedBytes, ECHO_BYTES, 'the whole echo came back');
      assert.equal(sent.receivedSha256, sent.sha256, 'byte for byte');
      assert.ok(d.fast / (d.fast + d.slow) >= 0.9, `fast-path share < 90 %: ${JSON.stringify(d)}`);
    });

    it('tags what it sends to the QinQ LAN host as Linux tags what that host sends: 802.1ad outside, 802.1Q inside', async () => {
      const t = topology as DemoTopology;
      // By MAC: the kernel keeps the outer tag as metadata, so a filter on what follows the
      // tags would look in the wrong place (libpcap puts the tag back into the saved frame).
      const capture = await Capture.start(t, 'a', QINQ_TAP, `ether src ${QINQ_VM_MAC} or ether src ${SITE_A_LAN_MAC}`);
      let frames: Buffer[];
      try {
        await (vm as LinuxVm).exec(`ping -c 3 -W 5 ${DEMO_ADDRESSES.remoteHost}`);
        await startTraffic(t.ns.remote, { kind: 'udp-peer', bind: 7002, peer: { host: QINQ_HOST, port: 7001 }, pps: 200, count: 20, size: 36 }).result;
      } finally {
        frames = await capture.stop();
      }
      // 802.1ad, PCP 0 and the service VLAN; 802.1Q, PCP 0 and the customer VLAN; IPv4.
      const tags = `88a8${QINQ.service.toString(16).padStart(4, '0')}8100${QINQ.customer.toString(16).padStart(4, '0')}0800`;
      // IPv4 after the tags: what the guest and site A send besides (ARP, IPv6) is not counted.
      const ipv4 = (f: Buffer) => f.length > 22 && f.readUInt16BE(20) === 0x0800;
      const fromLinux = frames.filter((f) => macOfFrame(f, 6) === QINQ_VM_MAC && ipv4(f));
      const fromFlowgate = frames.filter((f) => macOfFrame(f, 6) === SITE_A_LAN_MAC && ipv4(f));
      assert.ok(fromLinux.length >= 3, `the guest's echo requests captured: ${fromLinux.length}`);
      assert.ok(fromFlowgate.length >= 3 + 20, `site A's echo replies and UDP datagrams captured: ${fromFlowgate.length}`);
      for (const f of fromLinux) assert.equal(f.subarray(12, 22).toString('hex'), tags, "Linux's tags");
      for (const f of fromFlowgate) assert.equal(f.subarray(12, 22).toString('hex'), tags, `site A's tags on a ${f.length}-byte frame`);
    });
  });
}
