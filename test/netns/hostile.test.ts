// Frames the kernel would not forward, injected next to an offloaded flow, through
// `flowgate run` on AF_PACKET ports (two flowgate sites, lib/demo/topology.ts): from the LAN
// and from the underlay. Each one carries an offloaded flow's tuple, so that only the checks
// before the lookup keep it out of the tunnel; a legitimate packet of the same flow, sent in
// the same batch, shows that the capture would have seen them.
//
//   lan ── [site A] a-wan ═ u-a (capture here) ─ br0 ─ [site B] ── remote

import assert from 'node:assert/strict';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { parseIPv6 } from '../../lib/net/addr';
import { scapySendRecv } from '../helpers/scapy';
import { Capture, delta, flowOf, HOOK_TIMEOUT_MS, macOf, statsOf, TEST_TIMEOUT_MS, until } from './support';

const RECEIVER_PORT = 6301;
const SENDER_PORT = 6302;
const SITE_A_UNDERLAY = parseIPv6(DEMO_ADDRESSES.underlayA);
const TEL = `IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=4, optdata=bytes([4])), PadN(optdata=b'\\x00')])`;

/** The first byte of the inner packet of each IPv4-in-IPv6 frame that site A sent. */
function tunnelPackets(frames: Buffer[]): { inner: number; hex: string }[] {
  const out: { inner: number; hex: string }[] = [];
  for (const f of frames) {
    if (f.length < 62 || f.readUInt16BE(12) !== 0x86dd) continue;
    const source = f.subarray(22, 38);
    if (!source.equals(SITE_A_UNDERLAY)) continue;
    const nh = f[20];
    const at = nh === 4 ? 54 : nh === 60 ? 62 : -1;
    if (at < 0 || at >= f.length) continue;
    out.push({ inner: f[at] as number, hex: f.subarray(0, 80).toString('hex') });
  }
  return out;
}

describe('frames the kernel would not forward, next to an offloaded flow (flowgate run, AF_PACKET)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({ farEnd: 'flowgate', prefix: 'fghost', privateSockets: true });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('forwards none of them: IPv6 from :: to :: wrapping the tuple, another host\'s MAC, broadcast and multicast', async () => {
    const receiver = startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: RECEIVER_PORT, listen: true });
    await receiver.ready;
    // Keeps the flow offloaded while the frames below go in.
    const sender = startTraffic(topology.ns.lan, { kind: 'udp-peer', bind: SENDER_PORT, peer: { host: DEMO_ADDRESSES.remoteHost, port: RECEIVER_PORT }, pps: 20, count: 2000 });
    for (const job of [receiver, sender]) job.result.catch(() => undefined);
    try {
      await until('site A to offload the UDP flow', async () => flowOf(await topology.site('a').flows(), 'udp', { sport: SENDER_PORT, dport: RECEIVER_PORT }));
      const aLan = await macOf(topology, 'a', 'eth0');
      const aWan = await macOf(topology, 'a', 'eth1');
      const lanHost = await macOf(topology, 'lan', 'eth0');
      const tuple = (payload: string) =>
        `IP(src='${DEMO_ADDRESSES.lanHost}', dst='${DEMO_ADDRESSES.remoteHost}', ttl=64)/UDP(sport=${SENDER_PORT}, dport=${RECEIVER_PORT})/Raw(b'${payload}')`;
      const fromLan = [
        `Ether(dst='${aLan}', src='${lanHost}')/IPv6(src='::', dst='::', nh=4)/${tuple('HOSTILE-wrapped')}`,
        `Ether(dst='${aLan}', src='${lanHost}')/IPv6(src='::', dst='::')/${TEL}/${tuple('HOSTILE-wrapped-option')}`,
        `Ether(dst='02:00:00:00:00:99', src='${lanHost}')/${tuple('HOSTILE-other-host')}`,
        `Ether(dst='ff:ff:ff:ff:ff:ff', src='${lanHost}')/${tuple('HOSTILE-broadcast')}`,
        `Ether(dst='01:00:5e:00:00:01', src='${lanHost}')/${tuple('HOSTILE-multicast')}`,
        `Ether(dst='${aLan}', src='${lanHost}')/${tuple('LEGIT-from-lan')}`,
      ];
      // On the underlay, to site A's underlay port: the same tuple wrapped from :: to ::.
      const fromUnderlay = [
        `Ether(dst='${aWan}', src='02:00:00:00:00:77')/IPv6(src='::', dst='::', nh=4)/${tuple('HOSTILE-underlay-wrapped')}`,
        `Ether(dst='${aWan}', src='02:00:00:00:00:77')/IPv6(src='::', dst='::')/${TEL}/${tuple('HOSTILE-underlay-option')}`,
      ];

      const before = await statsOf(topology, ['a']);
      // What site A sends towards the underlay (and what is injected there, which no
      // assertion below looks for).
      const capture = await Capture.start(topology, 'underlay', 'u-a', 'ip6');
      await scapySendRecv({ netns: topology.ns.lan, iface: 'eth0', send: fromLan, filter: 'ether proto 0x88b5', timeoutMs: 500, intervalMs: 20 });
      await scapySendRecv({ netns: topology.ns.underlay, iface: 'br0', send: fromUnderlay, filter: 'ether proto 0x88b5', timeoutMs: 500, intervalMs: 20 });
      // The legitimate packet crosses both sites before the capture stops.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const frames = await capture.stop();
      const after = await statsOf(topology, ['a']);

      const seen = (text: string) => frames.some((f) => f.includes(Buffer.from(text)));
      assert.ok(seen('LEGIT-from-lan'), 'the legitimate packet went through the tunnel: the capture works');
      for (const payload of ['HOSTILE-other-host', 'HOSTILE-broadcast', 'HOSTILE-multicast'])
        assert.ok(!seen(payload), `${payload} must not reach the underlay`);
      // A wrapped frame taken for the flow's would leave encapsulated, cut to the inner
      // length (so without its payload): a tunnel packet whose inner packet is IPv6.
      for (const f of tunnelPackets(frames)) assert.equal(f.inner >> 4, 4, `site A tunnelled only IPv4: ${f.hex}`);
      const d = delta(before.a, after.a);
      assert.ok((after.a.drops.reasons.other_host ?? 0) - (before.a.drops.reasons.other_host ?? 0) >= 1, `other_host drops: ${JSON.stringify(after.a.drops)}`);
      assert.ok((d.reasons.multicast ?? 0) >= 2, `multicast punts: ${JSON.stringify(d)}`);
      assert.ok((d.reasons.miss ?? 0) >= 4, `the wrapped frames, from the LAN and the underlay, miss every flow: ${JSON.stringify(d)}`);
    } finally {
      sender.kill();
      receiver.kill();
    }
  });
});
