// The reference scenario with the tunnel's underlay on an 802.1Q VLAN: both sites' uplink
// port eth1 carries VLAN 100, and the sub-interface eth1.100 holds the underlay addresses, so
// every frame between the sites is tagged on the wire. Both ends are flowgate, each mirroring
// eth1.100 as a TAP of its own: neither kernel needs an 8021q module (this one has none).
//
//   lan 192.168.0.10 ── [site A] eth1.100 ══ VLAN 100 on the underlay bridge ══ eth1.100 [site B] ── remote 10.0.0.10
//   (VLAN 10 frames from scapy) eth0.10 192.168.10.1/24
//
// Site A lists the VLAN itself in flowtable.devices, site B only its port, whose VLANs the
// flowtable then covers too (as the kernel's flowtable on a real device). Site A's LAN port
// also carries VLAN 10, whose frames scapy writes (the LAN host has no 8021q either).
//
// No QinQ here: the kernel moves a received frame's outer tag into the skb's metadata, and
// DPDK's af_packet PMD puts it back as 0x8100 whatever its TPID was, so an 802.1ad S-tag
// reaches the fast path as an 802.1Q one and the frame is dropped as unknown_vlan (measured:
// site B counted 32 such drops and no tunnel came up). QinQ is tested in the qemu VM.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';

import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

import type { ConfigInput } from '../../lib/config';
import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { scapyDissect, scapySendRecv } from '../helpers/scapy';
import { assertFastPathCarried, awaitAtMost, Capture, delta, flowOf, HOOK_TIMEOUT_MS, macOf, neighbor, statsOf, tcpTransfer, TEST_TIMEOUT_MS, until } from './support';

const UNDERLAY_VLAN = 100;
const UNDERLAY_DEV = 'eth1.100';
const LAN_VLAN = 10;
const LAN_VLAN_HOST = '192.168.10.10';
const UNKNOWN_VLAN_ID = 999;
/** The fast path's drop reason for a tagged frame whose id no VLAN of the port has. */
const UNKNOWN_VLAN_DROP = 'unknown_vlan';
const TWO_MB = 2 * 1024 * 1024;

/** Moves a site's underlay addresses from its port eth1 to the VLAN eth1.100 on it. */
function underlayOnVlan(devices: string[]): (config: ConfigInput) => void {
  return (config) => {
    const eth1 = config.ports.eth1;
    assert.ok(eth1 !== undefined);
    config.ports[UNDERLAY_DEV] = { parent: 'eth1', vlan: UNDERLAY_VLAN, addresses: eth1.addresses ?? [] };
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
      configure: {
        a: (config) => {
          underlayOnVlan(['eth0', UNDERLAY_DEV])(config);
          config.ports[`eth0.${LAN_VLAN}`] = { parent: 'eth0', vlan: LAN_VLAN, addresses: ['192.168.10.1/24'] };
        },
        b: underlayOnVlan(['eth0', 'eth1']),
      },
    });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('resolves the underlay neighbours through the VLAN TAPs and sends every underlay frame with one 802.1Q tag, id 100', async () => {
    // Everything site A's uplink sends, whatever its tags (tcpdump's filters need to be told of them).
    const capture = await Capture.start(topology, 'underlay', 'u-a', `ether src ${await macOf(topology, 'a', 'eth1')}`);
    await topology.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', DEMO_ADDRESSES.remoteHost]);
    const frames = await scapyDissect(await capture.stop());

    // The kernels resolved each other's underlay address on the VLAN sub-interfaces.
    assert.equal((await neighbor(topology, 'a', UNDERLAY_DEV, DEMO_ADDRESSES.underlayB))?.lladdr, await macOf(topology, 'b', UNDERLAY_DEV));
    assert.equal((await neighbor(topology, 'b', UNDERLAY_DEV, DEMO_ADDRESSES.underlayA))?.lladdr, await macOf(topology, 'a', UNDERLAY_DEV));
    // The TAP of a VLAN has its parent's MAC, as an 8021q device has by default.
    assert.equal(await macOf(topology, 'a', UNDERLAY_DEV), await macOf(topology, 'a', 'eth1'));

    // scapy, not flowgate, reads the tags.
    const tunnelled = frames.filter((f) => f.layers.some((l) => l.name === 'IPv6' && l.fields.src === DEMO_ADDRESSES.underlayA));
    assert.ok(tunnelled.length >= 3, `site A's echo requests crossed the underlay:\n${frames.map((f) => f.summary).join('\n')}`);
    for (const frame of tunnelled) {
      const tags = frame.layers.filter((l) => l.name === 'Dot1Q' || l.name === 'Dot1AD').map((l) => ({ layer: l.name, vlan: l.fields.vlan }));
      assert.deepEqual(tags, [{ layer: 'Dot1Q', vlan: UNDERLAY_VLAN }], frame.summary);
    }
  });

  it('carries 2 MB of TCP from the LAN host to the remote host byte for byte, on the fast path of both sites', async () => {
    const transfer = await tcpTransfer(topology, { from: 'lan', to: 'remote', bytes: TWO_MB, port: 5311, offloadedAt: ['a', 'b'] });
    assert.equal(transfer.received.bytes, TWO_MB);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a', 'b']);
  });

  it('carries 2 MB of TCP from the remote host to the LAN host byte for byte, on the fast path of both sites', async () => {
    const transfer = await tcpTransfer(topology, { from: 'remote', to: 'lan', bytes: TWO_MB, port: 5312, offloadedAt: ['a', 'b'] });
    assert.equal(transfer.received.bytes, TWO_MB);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a', 'b']);
  });

  it('offloads a UDP stream that arrives tagged on a LAN VLAN, and lists the VLAN as its input in flows and as a port in stats', async () => {
    const count = 300;
    const receiver = startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: 6411, listen: true, expectCount: count });
    await receiver.ready;
    const aLan = await macOf(topology, 'a', 'eth0');
    const lanHost = await macOf(topology, 'lan', 'eth0');
    const frame = (n: number) =>
      `Ether(dst='${aLan}', src='${lanHost}')/Dot1Q(vlan=${LAN_VLAN})/IP(src='${LAN_VLAN_HOST}', dst='${DEMO_ADDRESSES.remoteHost}', ttl=64)/UDP(sport=6410, dport=6411)/Raw(b'VLAN-10-${n}')`;
    const before = await statsOf(topology, ['a']);
    await scapySendRecv({ netns: topology.ns.lan, iface: 'eth0', send: Array.from({ length: count }, (_, n) => frame(n)), filter: 'ether proto 0x88b5', timeoutMs: 500, intervalMs: 5 });
    await awaitAtMost(receiver.reached);
    const flow = flowOf(await topology.site('a').flows(), 'udp', { sport: 6410, dport: 6411 });
    const after = await statsOf(topology, ['a']);
    receiver.finish();
    const received = await receiver.result;

    assert.equal(received.received, count, 'every datagram arrived');
    assert.ok(flow !== undefined, 'site A lists the UDP flow');
    assert.deepEqual([flow.src, flow.in, flow.out, flow.tunnel], [LAN_VLAN_HOST, `eth0.${LAN_VLAN}`, 'tun0', 'tun0']);
    const d = delta(before.a, after.a);
    assert.ok(flow.packets >= count / 2, `the flow's own counter: ${flow.packets} of ${count} datagrams on the fast path; ${JSON.stringify(d)}`);
    // stats counts the VLAN's frames as a port's: every datagram was received on it.
    const vlanRx = (after.a.ports[`eth0.${LAN_VLAN}`]?.rx_packets ?? 0) - (before.a.ports[`eth0.${LAN_VLAN}`]?.rx_packets ?? 0);
    assert.ok(vlanRx >= count, `eth0.${LAN_VLAN} received ${vlanRx} frames: ${JSON.stringify(after.a.ports)}`);
  });

  it('drops and counts tagged frames whose VLAN id no sub-interface of the port has, and punts none of them', async () => {
    const aWan = await macOf(topology, 'a', 'eth1');
    const count = 20;
    const frame = (n: number) =>
      `Ether(dst='${aWan}', src='02:00:00:00:00:77')/Dot1Q(vlan=${UNKNOWN_VLAN_ID})/IPv6(src='${DEMO_ADDRESSES.underlayB}', dst='${DEMO_ADDRESSES.underlayA}')/UDP(sport=7000, dport=7001)/Raw(b'UNKNOWN-VLAN-${n}')`;
    const before = await statsOf(topology, ['a']);
    await scapySendRecv({ netns: topology.ns.underlay, iface: 'br0', send: Array.from({ length: count }, (_, n) => frame(n)), filter: 'ether proto 0x88b5', timeoutMs: 500, intervalMs: 10 });
    const after = await statsOf(topology, ['a']);
    const dropped = (after.a.drops.reasons[UNKNOWN_VLAN_DROP] ?? 0) - (before.a.drops.reasons[UNKNOWN_VLAN_DROP] ?? 0);
    assert.equal(dropped, count, `${UNKNOWN_VLAN_DROP} drops: ${JSON.stringify(after.a.drops)}`);
    const d = delta(before.a, after.a);
    assert.ok(d.slow < count, `the frames did not go to the kernel: ${JSON.stringify(d)}`);
  });

  it('adds, replaces and removes a VLAN on SIGHUP: its TAP and address come and go with it, and the other VLANs keep their flows', async () => {
    const file = topology.configFile('a');
    const original = readFileSync(file, 'utf8');
    const reloadWith = (edit: (config: ConfigInput) => void) => {
      const config = parseYaml(original) as ConfigInput;
      edit(config);
      writeFileSync(file, stringifyYaml(config));
      topology.site('a').reload();
    };
    type Link = { ifname: string; ifindex: number; addr_info: { local: string; prefixlen: number }[] };
    const link = async (dev: string): Promise<Link | undefined> =>
      (JSON.parse(await topology.run('a', ['ip', '-j', 'addr', 'show'])) as Link[]).find((l) => l.ifname === dev);
    const withAddress = (address: string) => async () => {
      const l = await link('eth0.20');
      return l?.addr_info.some((a) => `${a.local}/${a.prefixlen}` === address) === true ? l : undefined;
    };
    const before = await topology.site('a').stats();
    try {
      reloadWith((config) => {
        config.ports['eth0.20'] = { parent: 'eth0', vlan: 20, addresses: ['192.168.20.1/24'] };
      });
      const added = await until('eth0.20 and its address on site A', withAddress('192.168.20.1/24'));

      // A new id is a new VLAN: a new TAP, which gets the address again.
      reloadWith((config) => {
        config.ports['eth0.20'] = { parent: 'eth0', vlan: 21, addresses: ['192.168.20.1/24'] };
      });
      await until('eth0.20 to be replaced', async () => {
        const l = await withAddress('192.168.20.1/24')();
        return l !== undefined && l.ifindex !== added.ifindex ? true : undefined;
      });
    } finally {
      writeFileSync(file, original);
      topology.site('a').reload();
    }
    await until('eth0.20 to be gone', async () => ((await link('eth0.20')) === undefined ? true : undefined));
    const after = await topology.site('a').stats();
    assert.equal((after.flows.removed_by.invalidated ?? 0) - (before.flows.removed_by.invalidated ?? 0), 0, 'no flow of another device was invalidated');
    assert.ok((await link(UNDERLAY_DEV)) !== undefined && (await link(`eth0.${LAN_VLAN}`)) !== undefined, 'the other VLANs stay');
  });
});
