// The reference scenario with the tunnel's underlay on an 802.1Q VLAN: both sites' uplink
// port eth1 carries VLAN 100 (eth1.100, which holds the underlay addresses), so every frame
// between the sites is tagged on the wire. Both ends are flowgate, each mirroring eth1.100 as
// a TAP of its own: neither kernel needs an 8021q module (this one has none).
//
//   lan 192.168.0.10 ── [site A] eth1.100 ══ VLAN 100 on the underlay bridge ══ eth1.100 [site B] ── remote 10.0.0.10
//
// Site A lists the VLAN itself in flowtable.devices, site B only its port, whose VLANs the
// flowtable then covers too (as the kernel's flowtable on a real device).

import assert from 'node:assert/strict';

import type { ConfigInput } from '../../lib/config';
import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { scapyDissect, scapySendRecv } from '../helpers/scapy';
import { assertFastPathCarried, Capture, delta, HOOK_TIMEOUT_MS, macOf, neighbor, statsOf, tcpTransfer, TEST_TIMEOUT_MS } from './support';

const VLAN_ID = 100;
const UNKNOWN_VLAN_ID = 999;
const TWO_MB = 2 * 1024 * 1024;
/** The fast path's drop reason for a tagged frame whose id no VLAN of the port has. */
const UNKNOWN_VLAN_DROP = 'unknown_vlan';

/** Moves a site's underlay addresses from its port eth1 to the VLAN eth1.100 on it. */
function underlayOnVlan(devices: string[]): (config: ConfigInput) => void {
  return (config) => {
    const eth1 = config.ports.eth1;
    assert.ok(eth1 !== undefined);
    config.ports['eth1.100'] = { parent: 'eth1', vlan: VLAN_ID, addresses: eth1.addresses ?? [] };
    eth1.addresses = [];
    config.flowtable.devices = devices;
  };
}

describe('two flowgate sites whose tunnel runs over an 802.1Q VLAN underlay', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({
      farEnd: 'flowgate',
      prefix: 'fgvlan',
      privateSockets: true,
      configure: { a: underlayOnVlan(['eth0', 'eth1.100']), b: underlayOnVlan(['eth0', 'eth1']) },
    });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('resolves the underlay neighbours through the VLAN TAPs and sends every underlay frame tagged with VLAN 100', async () => {
    const capture = await Capture.start(topology, 'underlay', 'u-a', 'ip6');
    await topology.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', DEMO_ADDRESSES.remoteHost]);
    const frames = await scapyDissect(await capture.stop());

    // The kernels resolved each other's underlay address on the VLAN sub-interfaces.
    assert.equal((await neighbor(topology, 'a', 'eth1.100', DEMO_ADDRESSES.underlayB))?.lladdr, await macOf(topology, 'b', 'eth1.100'));
    assert.equal((await neighbor(topology, 'b', 'eth1.100', DEMO_ADDRESSES.underlayA))?.lladdr, await macOf(topology, 'a', 'eth1.100'));
    // The TAP of a VLAN has its parent's MAC, as an 8021q device has by default.
    assert.equal(await macOf(topology, 'a', 'eth1.100'), await macOf(topology, 'a', 'eth1'));

    // tcpdump's "ip6" matches tagged IPv6 too; scapy, not flowgate, reads the tags.
    const tunnelled = frames.filter((f) => f.layers.some((l) => l.name === 'IPv6' && l.fields.src === DEMO_ADDRESSES.underlayA));
    assert.ok(tunnelled.length >= 3, `site A's echo requests crossed the underlay: ${frames.map((f) => f.summary).join('\n')}`);
    for (const frame of tunnelled) {
      const tag = frame.layers.find((l) => l.name === 'Dot1Q');
      assert.ok(tag !== undefined, `tagged: ${frame.summary}`);
      assert.equal(tag.fields.vlan, VLAN_ID);
      assert.equal(frame.layers.filter((l) => l.name === 'Dot1Q').length, 1, `one tag: ${frame.summary}`);
    }
  });

  it('carries 2 MB of TCP from the LAN host to the remote host byte for byte, on the fast path of both sites', async () => {
    const transfer = await tcpTransfer(topology, { from: 'lan', to: 'remote', bytes: TWO_MB, port: 5301, offloadedAt: ['a', 'b'] });
    assert.equal(transfer.received.bytes, TWO_MB);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a', 'b']);
  });

  it('carries 2 MB of TCP from the remote host to the LAN host byte for byte, on the fast path of both sites', async () => {
    const transfer = await tcpTransfer(topology, { from: 'remote', to: 'lan', bytes: TWO_MB, port: 5302, offloadedAt: ['a', 'b'] });
    assert.equal(transfer.received.bytes, TWO_MB);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a', 'b']);
  });

  it('drops and counts tagged frames whose VLAN id no sub-interface of the port has, and punts none of them', async () => {
    const aWan = await macOf(topology, 'a', 'eth1');
    const frame = (id: number, n: number) =>
      `Ether(dst='${aWan}', src='02:00:00:00:00:77')/Dot1Q(vlan=${id})/IPv6(src='${DEMO_ADDRESSES.underlayB}', dst='${DEMO_ADDRESSES.underlayA}')/UDP(sport=7000, dport=7001)/Raw(b'UNKNOWN-VLAN-${n}')`;
    const count = 20;
    const before = await statsOf(topology, ['a']);
    await scapySendRecv({
      netns: topology.ns.underlay,
      iface: 'br0',
      send: Array.from({ length: count }, (_, n) => frame(UNKNOWN_VLAN_ID, n)),
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
