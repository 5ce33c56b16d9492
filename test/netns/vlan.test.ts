// The reference scenario with the tunnel's underlay on a VLAN: both sites' uplink port eth1
// carries it, and the VLAN sub-interface holds the underlay addresses, so every frame between
// the sites is tagged on the wire. Both ends are flowgate, each mirroring its sub-interfaces
// as TAPs of their own: neither kernel needs an 8021q module (this one has none).
//
//   lan 192.168.0.10 ── [site A] eth1.100 ══ VLAN 100 on the underlay bridge ══ eth1.100 [site B] ── remote 10.0.0.10
//
// Once with an 802.1Q VLAN (eth1.100), once with QinQ: an 802.1ad S-tag on the port
// (eth1.1000) and an 802.1Q C-tag inside it (eth1.1000.20). Site A lists the VLAN itself in
// flowtable.devices, site B only its port, whose VLANs the flowtable then covers too (as the
// kernel's flowtable on a real device).

import assert from 'node:assert/strict';

import type { ConfigInput } from '../../lib/config';
import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { scapyDissect, scapySendRecv } from '../helpers/scapy';
import { assertFastPathCarried, Capture, delta, HOOK_TIMEOUT_MS, macOf, neighbor, statsOf, tcpTransfer, TEST_TIMEOUT_MS } from './support';

const TWO_MB = 2 * 1024 * 1024;
/** The fast path's drop reason for a tagged frame whose id no VLAN of the port has. */
const UNKNOWN_VLAN_DROP = 'unknown_vlan';
const UNKNOWN_VLAN_ID = 999;

interface Tag {
  /** scapy's layer: Dot1Q (TPID 0x8100) or Dot1AD (0x88a8). */
  layer: 'Dot1Q' | 'Dot1AD';
  vlan: number;
}

interface VlanUnderlay {
  title: string;
  prefix: string;
  /** The sub-interfaces of eth1, parents first; the last one holds the underlay addresses. */
  vlans: { name: string; parent: string; vlan: number; protocol?: '802.1Q' | '802.1ad' }[];
  /** The tags of every underlay frame, outermost first. */
  tags: Tag[];
  port: number;
}

const UNDERLAYS: VlanUnderlay[] = [
  { title: 'an 802.1Q VLAN', prefix: 'fgvlan', vlans: [{ name: 'eth1.100', parent: 'eth1', vlan: 100 }], tags: [{ layer: 'Dot1Q', vlan: 100 }], port: 5310 },
  {
    title: 'QinQ (an 802.1Q VLAN inside an 802.1ad one)',
    prefix: 'fgqinq',
    vlans: [
      { name: 'eth1.1000', parent: 'eth1', vlan: 1000, protocol: '802.1ad' },
      { name: 'eth1.1000.20', parent: 'eth1.1000', vlan: 20 },
    ],
    tags: [
      { layer: 'Dot1AD', vlan: 1000 },
      { layer: 'Dot1Q', vlan: 20 },
    ],
    port: 5320,
  },
];

/** Moves a site's underlay addresses from its port eth1 to the innermost VLAN on it. */
function underlayOn(underlay: VlanUnderlay, devices: (dev: string) => string[]): (config: ConfigInput) => void {
  return (config) => {
    const eth1 = config.ports.eth1;
    assert.ok(eth1 !== undefined);
    const dev = underlay.vlans.at(-1)?.name as string;
    for (const { name, ...vlan } of underlay.vlans) config.ports[name] = { ...vlan, addresses: name === dev ? (eth1.addresses ?? []) : [] };
    eth1.addresses = [];
    config.flowtable.devices = devices(dev);
  };
}

/** scapy's expression for the tags, outermost first, with the innermost id replaced by `innerId`. */
function tagsExpression(tags: readonly Tag[], innerId: number): string {
  return tags.map((tag, i) => `${tag.layer}(vlan=${i === tags.length - 1 ? innerId : tag.vlan})`).join('/');
}

for (const underlay of UNDERLAYS) {
  const dev = underlay.vlans.at(-1)?.name as string;

  describe(`two flowgate sites whose tunnel runs over ${underlay.title}`, function () {
    this.timeout(TEST_TIMEOUT_MS);
    let topology: DemoTopology;

    before(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      topology = await DemoTopology.build({
        farEnd: 'flowgate',
        prefix: underlay.prefix,
        privateSockets: true,
        configure: { a: underlayOn(underlay, (vlan) => ['eth0', vlan]), b: underlayOn(underlay, () => ['eth0', 'eth1']) },
      });
    });

    after(async function () {
      this.timeout(HOOK_TIMEOUT_MS);
      await topology?.destroy();
    });

    it(`resolves the underlay neighbours through the VLAN TAPs and sends every underlay frame with the tags ${underlay.tags.map((t) => `${t.layer} ${t.vlan}`).join(', ')}`, async () => {
      // Everything site A's uplink sends, whatever its tags (tcpdump's filters need to be told of them).
      const capture = await Capture.start(topology, 'underlay', 'u-a', `ether src ${await macOf(topology, 'a', 'eth1')}`);
      await topology.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', DEMO_ADDRESSES.remoteHost]);
      const frames = await scapyDissect(await capture.stop());

      // The kernels resolved each other's underlay address on the VLAN sub-interfaces.
      assert.equal((await neighbor(topology, 'a', dev, DEMO_ADDRESSES.underlayB))?.lladdr, await macOf(topology, 'b', dev));
      assert.equal((await neighbor(topology, 'b', dev, DEMO_ADDRESSES.underlayA))?.lladdr, await macOf(topology, 'a', dev));
      // The TAP of a VLAN has its parent's MAC, as an 8021q device has by default.
      assert.equal(await macOf(topology, 'a', dev), await macOf(topology, 'a', 'eth1'));

      // scapy, not flowgate, reads the tags.
      const tunnelled = frames.filter((f) => f.layers.some((l) => l.name === 'IPv6' && l.fields.src === DEMO_ADDRESSES.underlayA));
      assert.ok(tunnelled.length >= 3, `site A's echo requests crossed the underlay:\n${frames.map((f) => f.summary).join('\n')}`);
      for (const frame of tunnelled) {
        const tags = frame.layers.filter((l) => l.name === 'Dot1Q' || l.name === 'Dot1AD').map((l) => ({ layer: l.name, vlan: l.fields.vlan }));
        assert.deepEqual(tags, underlay.tags, frame.summary);
      }
    });

    it('carries 2 MB of TCP from the LAN host to the remote host byte for byte, on the fast path of both sites', async () => {
      const transfer = await tcpTransfer(topology, { from: 'lan', to: 'remote', bytes: TWO_MB, port: underlay.port + 1, offloadedAt: ['a', 'b'] });
      assert.equal(transfer.received.bytes, TWO_MB);
      assert.equal(transfer.received.sha256, transfer.sent.sha256);
      assertFastPathCarried(transfer, ['a', 'b']);
    });

    it('carries 2 MB of TCP from the remote host to the LAN host byte for byte, on the fast path of both sites', async () => {
      const transfer = await tcpTransfer(topology, { from: 'remote', to: 'lan', bytes: TWO_MB, port: underlay.port + 2, offloadedAt: ['a', 'b'] });
      assert.equal(transfer.received.bytes, TWO_MB);
      assert.equal(transfer.received.sha256, transfer.sent.sha256);
      assertFastPathCarried(transfer, ['a', 'b']);
    });

    it('drops and counts tagged frames whose innermost VLAN id no sub-interface has, and punts none of them', async () => {
      const aWan = await macOf(topology, 'a', 'eth1');
      const count = 20;
      const frame = (n: number) =>
        `Ether(dst='${aWan}', src='02:00:00:00:00:77')/${tagsExpression(underlay.tags, UNKNOWN_VLAN_ID)}/IPv6(src='${DEMO_ADDRESSES.underlayB}', dst='${DEMO_ADDRESSES.underlayA}')/UDP(sport=7000, dport=7001)/Raw(b'UNKNOWN-VLAN-${n}')`;
      const before = await statsOf(topology, ['a']);
      await scapySendRecv({
        netns: topology.ns.underlay,
        iface: 'br0',
        send: Array.from({ length: count }, (_, n) => frame(n)),
        filter: 'ether proto 0x88b5',
        timeoutMs: 500,
        intervalMs: 10,
      });
      const after = await statsOf(topology, ['a']);
      const dropped = (after.a.drops.reasons[UNKNOWN_VLAN_DROP] ?? 0) - (before.a.drops.reasons[UNKNOWN_VLAN_DROP] ?? 0);
      assert.equal(dropped, count, `${UNKNOWN_VLAN_DROP} drops: ${JSON.stringify(after.a.drops)}`);
      const d = delta(before.a, after.a);
      assert.ok(d.slow < count, `the frames did not go to the kernel: ${JSON.stringify(d)}`);
    });
  });
}
