// MTU mismatch, after nft_flowtable.sh: the LAN link has MTU 9000, the underlay 1500 and the
// tunnel 1452, so the MSS the LAN host announces is far larger than the path allows. The
// transfers complete because the packets too big for the tunnel go to the slow path and the
// kernel answers them with ICMP "fragmentation needed" (path MTU discovery), in both
// directions.
//
// Site A's port eth0 itself stays at 1500: DPDK 22.11's net_af_packet and net_tap (the port
// and its kernel mirror) take no larger frames. The LAN host's MTU still decides the MSS it
// announces, which is what makes the remote host's segments too big for the tunnel.

import assert from 'node:assert/strict';

import { DEMO_ADDRESSES, DemoTopology, type Host } from '../../lib/demo/topology';
import { assertFastPathCarried, HOOK_TIMEOUT_MS, icmpCounter, tcpTransfer, TEST_TIMEOUT_MS } from './support';

const TWO_MB = 2 * 1024 * 1024;
const LAN_LINK_MTU = 9000;
const TUNNEL_MTU = 1452;

/** The path MTU `host` learnt towards `address`, from its route cache; null if none. */
async function cachedPathMtu(topology: DemoTopology, host: Host, address: string): Promise<number | null> {
  const route = await topology.run(host, ['ip', 'route', 'get', address]);
  const mtu = /\bmtu (\d+)/.exec(route)?.[1];
  return mtu === undefined ? null : Number(mtu);
}

describe('MTU mismatch: a 9000-byte LAN behind a 1452-byte tunnel', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({ farEnd: 'flowgate', prefix: 'fgtmtu', privateSockets: true, lanLinkMtu: LAN_LINK_MTU });
    const [lan] = JSON.parse(await topology.run('lan', ['ip', '-j', 'link', 'show', 'eth0'])) as { mtu: number }[];
    const [tunnel] = JSON.parse(await topology.run('a', ['ip', '-j', 'link', 'show', 'tun0'])) as { mtu: number }[];
    assert.deepEqual([lan?.mtu, tunnel?.mtu], [LAN_LINK_MTU, TUNNEL_MTU], 'the scenario: LAN MTU 9000, tunnel MTU 1452');
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  beforeEach(async () => {
    // Each transfer starts without a learnt path MTU.
    for (const host of ['lan', 'remote'] as const) await topology.run(host, ['ip', 'route', 'flush', 'cache']);
  });

  for (const [from, to, site, toAddress] of [
    ['lan', 'remote', 'a', DEMO_ADDRESSES.remoteHost],
    ['remote', 'lan', 'b', DEMO_ADDRESSES.lanHost],
  ] as const) {
    it(`completes 2 MB from the ${from} host to the ${to} host, the sender learning MTU ${TUNNEL_MTU} from site ${site.toUpperCase()}'s ICMP fragmentation needed`, async () => {
      assert.equal(await cachedPathMtu(topology, from, toAddress), null, 'no path MTU learnt before');
      const sentBefore = await icmpCounter(topology, site, 'OutDestUnreachs');
      const receivedBefore = await icmpCounter(topology, from, 'InDestUnreachs');

      const transfer = await tcpTransfer(topology, { from, to, bytes: TWO_MB, port: from === 'lan' ? 5301 : 5302, offloadedAt: ['a', 'b'] });

      assert.equal(transfer.received.bytes, TWO_MB);
      assert.equal(transfer.received.sha256, transfer.sent.sha256);
      const tooBig = transfer.data[site].reasons.too_big ?? 0;
      assert.ok(tooBig >= 1, `site ${site.toUpperCase()} punted the segments too big for the tunnel: ${JSON.stringify(transfer.data[site].reasons)}`);
      assert.ok((await icmpCounter(topology, site, 'OutDestUnreachs')) > sentBefore, "the site's kernel sent ICMP destination unreachable");
      assert.ok((await icmpCounter(topology, from, 'InDestUnreachs')) > receivedBefore, 'the sender received it');
      assert.equal(await cachedPathMtu(topology, from, toAddress), TUNNEL_MTU);
      assertFastPathCarried(transfer, ['a', 'b']);
    });
  }
});
