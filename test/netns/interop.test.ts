// Interop with the real Linux ip6tnl: site A is flowgate, the far end of its tunnel a stock
// Debian kernel under qemu (test/helpers/vm.ts), whose TAP is a port of the underlay bridge.
// The host behind the far end is a namespace in the guest, so that the guest forwards
// between it and its ip6tnl as a gateway does.
//
//   lan 192.168.0.10 ── [site A: flowgate] ══ br0 ══ u-vm ─ qemu: eth0 2001:db8:2::2
//                                                            tun0 ip6tnl 192.168.100.2
//                                                            netns remote 10.0.0.10
//
// Once with the Tunnel Encapsulation Limit option (encaplimit 4, both ends), once without
// (encaplimit none): one boot each.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { ip4Packet, tunnelEncapLimitOption } from '../../lib/packets';
import { LinuxVm } from '../helpers/vm';
import { awaitAtMost, Capture, delta, flowOf, HOOK_TIMEOUT_MS, TEST_TIMEOUT_MS, until } from './support';

const VM_TAP = 'u-vm';
const VM_MAC = '52:54:00:f9:00:22';
const SITE_A_UNDERLAY_MAC = '00:11:22:33:11:55';
const VM_NETNS = 'remote';
const ECHO_PORT = 7;
const ETHER_LENGTH = 14;
/** Inner IPv4 packets of 64 bytes: an echo with 36 bytes of data, a UDP datagram of 36. */
const PAYLOAD = 36;
const INNER_LENGTH = 20 + 8 + PAYLOAD;

/** The outer headers of an encapsulated frame (IPv6, and the destination options when present), flow label cleared, addresses apart. */
function outerTemplate(frame: Buffer): { header: string; src: string; dst: string } {
  const ip6 = Buffer.from(frame.subarray(ETHER_LENGTH, ETHER_LENGTH + 40));
  const options = ip6[6] === 60 ? frame.subarray(ETHER_LENGTH + 40, ETHER_LENGTH + 48).toString('hex') : '';
  const src = ip6.subarray(8, 24).toString('hex');
  const dst = ip6.subarray(24, 40).toString('hex');
  ip6[1] = (ip6[1] ?? 0) & 0xf0;
  ip6[2] = 0;
  ip6[3] = 0;
  return { header: ip6.subarray(0, 8).toString('hex') + options, src, dst };
}

function macOfFrame(frame: Buffer, offset: number): string {
  return [...frame.subarray(offset, offset + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

for (const encaplimit of [4, 'none'] as const) {
  describe(`interop: Linux's ip6tnl in a VM as the far end of site A's tunnel, encaplimit ${encaplimit} at both ends`, function () {
    this.timeout(TEST_TIMEOUT_MS);
    let topology: DemoTopology | undefined;
    let vm: LinuxVm | undefined;

    before(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      topology = await DemoTopology.create({
        farEnd: 'external',
        prefix: 'fgtvm',
        privateSockets: true,
        configure: {
          a: (config) => {
            const tunnel = config.tunnels?.tun0;
            assert.ok(tunnel !== undefined);
            tunnel.encaplimit = encaplimit;
          },
        },
      });
      vm = await LinuxVm.boot({
        netns: topology.ns.underlay,
        tap: VM_TAP,
        mac: VM_MAC,
        bootTimeoutMs: 90_000,
        scenario: {
          underlay: [`${DEMO_ADDRESSES.underlayB}/${DEMO_ADDRESSES.underlayPrefix}`],
          tunnel: {
            local: DEMO_ADDRESSES.underlayB,
            remote: DEMO_ADDRESSES.underlayA,
            encaplimit,
            hoplimit: 64,
            tclass: 0,
            address: `${DEMO_ADDRESSES.tunnelB}/${DEMO_ADDRESSES.tunnelPrefix}`,
          },
          behind: { kind: 'netns', name: VM_NETNS, address: `${DEMO_ADDRESSES.remoteHost}/${DEMO_ADDRESSES.remotePrefix}`, gateway: `${DEMO_ADDRESSES.siteBLan}/${DEMO_ADDRESSES.remotePrefix}` },
          routes: [{ to: `192.168.0.0/${DEMO_ADDRESSES.lanPrefix}` }],
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
      assert.match(await t.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', DEMO_ADDRESSES.remoteHost]), / 0% packet loss/);
      assert.match(await (vm as LinuxVm).exec(`ip netns exec ${VM_NETNS} ping -c 3 -W 5 ${DEMO_ADDRESSES.lanHost}`), / 0% packet loss/);
    });

    it('carries a TCP stream to the host behind the VM and its echo back byte for byte, offloaded at site A both ways', async () => {
      const t = topology as DemoTopology;
      await (vm as LinuxVm).startTcpService({ kind: 'echo' }, ECHO_PORT, VM_NETNS);
      const bytes = 512 * 1024;
      // The close only once the echo is back: after the FIN the flow leaves the fast path.
      const source = startTraffic(t.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: ECHO_PORT, bytes, gate: true, expectBytes: bytes }, { timeoutMs: 90_000 });
      await source.ready;
      const flow = await until('site A to offload the connection', async () => flowOf(await site().flows(), 'tcp', { dport: ECHO_PORT }));
      assert.deepEqual([flow.in, flow.out, flow.reply?.in, flow.reply?.out], ['eth0', 'tun0', 'tun0', 'eth0']);
      const before = await site().stats();
      source.next();
      const sent = await source.result;
      const d = delta(before, await site().stats());

      assert.equal(sent.receivedBytes, bytes, 'the whole echo came back');
      assert.equal(sent.receivedSha256, sent.sha256, 'byte for byte');
      // Encapsulation (LAN to VM) and decapsulation (the echo) both on the fast path.
      assert.ok(d.fast / (d.fast + d.slow) >= 0.9, `fast-path share < 90 %: ${JSON.stringify(d)}`);
    });

    it("encapsulates, in the slow path and the fast path, with the outer headers Linux's ip6tnl builds (flow label aside)", async () => {
      const t = topology as DemoTopology;
      // On the VM's bridge port: the bridge device itself sees only what is addressed to it.
      const capture = await Capture.start(t, 'underlay', VM_TAP, 'ip6 and (ip6 proto 4 or ip6 proto 60)');
      const before = await site().stats();
      let frames: Buffer[];
      try {
        // Echo requests (not offloaded: flowgate's slow-path encapsulation) and replies (Linux's), ...
        await t.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', '-s', String(PAYLOAD), DEMO_ADDRESSES.remoteHost]);
        // ... and a UDP stream, offloaded after its first datagram (the fast path's), all with 64-byte inner packets.
        await startTraffic(t.ns.lan, { kind: 'udp-peer', bind: 7002, peer: { host: DEMO_ADDRESSES.remoteHost, port: 7001 }, pps: 200, count: 20, size: PAYLOAD }).result;
      } finally {
        frames = await capture.stop();
      }
      const d = delta(before, await site().stats());
      assert.ok(d.fast >= 15, `the UDP stream went through the fast path: ${JSON.stringify(d)}`);

      const fromFlowgate = frames.filter((f) => macOfFrame(f, 6) === SITE_A_UNDERLAY_MAC);
      const fromLinux = frames.filter((f) => macOfFrame(f, 6) === VM_MAC && f.length === ETHER_LENGTH + 40 + (encaplimit === 'none' ? 0 : 8) + INNER_LENGTH);
      assert.ok(fromFlowgate.length >= 3 + 20, `flowgate's frames captured: ${fromFlowgate.length}`);
      assert.ok(fromLinux.length >= 3, `Linux's echo replies captured: ${fromLinux.length}`);

      const linux = outerTemplate(fromLinux[0] as Buffer);
      const option = encaplimit === 'none' ? '' : '0400040104010100';
      assert.equal(linux.header, `60000000${(INNER_LENGTH + option.length / 2).toString(16).padStart(4, '0')}${encaplimit === 'none' ? '04' : '3c'}40${option}`, "Linux's own outer headers, as documented in test/interop/README.md");
      for (const frame of fromFlowgate) {
        const ours = outerTemplate(frame);
        assert.equal(ours.header, linux.header, `outer headers of flowgate's ${frame.length}-byte frame`);
        assert.deepEqual([ours.src, ours.dst], [linux.dst, linux.src], 'the same tunnel, the other way');
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
