// The reference scenario with two flowgate sites back to back: the scenarios of the kernel's
// tools/testing/selftests/net/netfilter/nft_flowtable.sh with flowgate standing in for the
// router, and the tunnel's far end a second flowgate. Once per tunnel mode (lib/demo/topology.ts
// demoAddresses()):
//
//   lan 192.168.0.10 ── [site A] ══ ip4ip6 over 2001:db8:2::/64 ══ [site B] ── remote 10.0.0.10
//   lan 2001:db8:10::10 ═ ip6ip6 over 2001:db8:2::/64 (encaplimit 4, none) ═ remote 2001:db8:20::10
//   lan 192.168.0.10 ── ipip over 198.51.100.0/24 ── remote 10.0.0.10
//   lan 2001:db8:10::10 ── sit over 198.51.100.0/24 ── remote 2001:db8:20::10
//
// One topology per mode (lib/demo/topology.ts), with a short UDP idle timeout. Each test uses
// its own ports, so that no flow of one test is mistaken for another's.

import assert from 'node:assert/strict';

import { TUNNEL_FAMILIES } from '../../lib/config/schema';
import type { ConfigInput } from '../../lib/config';
import { DemoTopology, demoAddresses, type DemoTunnel } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { assertFastPathCarried, awaitAtMost, delta, flowOf, HOOK_TIMEOUT_MS, icmpCounter, macOf, neighbor, statsOf, tcpTransfer, TEST_TIMEOUT_MS, until } from './support';

const UDP_IDLE_TIMEOUT_S = 2;
const TCP_IDLE_TIMEOUT_S = 5;
const TWO_MB = 2 * 1024 * 1024;
const SITE_A_MACS = { eth0: '00:00:22:33:11:55', eth1: '00:11:22:33:11:55' };
const SITE_B_MACS = { eth0: '00:00:22:33:11:66', eth1: '00:11:22:33:11:66' };
/** A neighbour entry the kernel resolved (as opposed to INCOMPLETE or FAILED). */
const RESOLVED = /REACHABLE|STALE|DELAY|PROBE/;

const TUNNELS: { title: string; tunnel: DemoTunnel }[] = [
  { title: 'ip4ip6 over an IPv6 underlay (reference scenario)', tunnel: { mode: 'ip4ip6', encaplimit: 4 } },
  { title: 'ip6ip6 over an IPv6 underlay, encaplimit 4', tunnel: { mode: 'ip6ip6', encaplimit: 4 } },
  { title: 'ip6ip6 over an IPv6 underlay, encaplimit none', tunnel: { mode: 'ip6ip6', encaplimit: 'none' } },
  { title: 'ipip over an IPv4 underlay', tunnel: { mode: 'ipip' } },
  { title: 'sit over an IPv4 underlay', tunnel: { mode: 'sit' } },
];

for (const { title, tunnel } of TUNNELS) describe(`two flowgate sites back to back, ${title}`, function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;
  const inner = TUNNEL_FAMILIES[tunnel.mode].inner;
  // Getters: the addresses are the topology's, built in before().
  const A = () => topology.addresses;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({
      farEnd: 'flowgate',
      prefix: 'fgt2s',
      privateSockets: true,
      tunnel,
      configure: {
        a: (config) => {
          config.flowtable.timeout = { tcp: TCP_IDLE_TIMEOUT_S, udp: UDP_IDLE_TIMEOUT_S };
        },
      },
    });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('answers ping both ways through the tunnel, with ARP and NDP resolved by the kernels through the TAPs', async () => {
    const before = await statsOf(topology, ['a', 'b']);
    await topology.run('lan', ['ping', '-c', '3', '-i', '0.2', '-W', '5', A().remoteHost]);
    await topology.run('remote', ['ping', '-c', '3', '-i', '0.2', '-W', '5', A().lanHost]);
    const after = await statsOf(topology, ['a', 'b']);

    // The hosts learnt the sites' port MACs from the kernels' ARP replies, sent through the TAPs.
    const lanGateway = await neighbor(topology, 'lan', 'eth0', A().siteALan);
    assert.equal(lanGateway?.lladdr, SITE_A_MACS.eth0);
    assert.match(String(lanGateway?.state), RESOLVED);
    assert.equal((await neighbor(topology, 'remote', 'eth0', A().siteBLan))?.lladdr, SITE_B_MACS.eth0);
    // The sites' kernels resolved the hosts (ARP) and each other's underlay address (NDP).
    assert.equal((await neighbor(topology, 'a', 'eth0', A().lanHost))?.lladdr, await macOf(topology, 'lan', 'eth0'));
    assert.equal((await neighbor(topology, 'b', 'eth0', A().remoteHost))?.lladdr, await macOf(topology, 'remote', 'eth0'));
    const aToB = await neighbor(topology, 'a', 'eth1', A().underlayB);
    assert.equal(aToB?.lladdr, SITE_B_MACS.eth1);
    assert.match(String(aToB?.state), RESOLVED);
    assert.equal((await neighbor(topology, 'b', 'eth1', A().underlayA))?.lladdr, SITE_A_MACS.eth1);
    // ICMP is not offloaded: every echo went through both kernels.
    for (const site of ['a', 'b'] as const) {
      const d = delta(before[site], after[site]);
      assert.equal(d.fast, 0, `site ${site}: ${JSON.stringify(d)}`);
      assert.ok((d.reasons.l4proto ?? 0) >= 12, `site ${site}: 12 echo requests and replies punted as l4proto: ${JSON.stringify(d)}`);
    }
  });

  it('carries 2 MB of TCP from the LAN host to the remote host byte for byte, >= 90 % on the fast path of both sites after the handshake', async () => {
    const transfer = await tcpTransfer(topology, { from: 'lan', to: 'remote', bytes: TWO_MB, port: 5101, offloadedAt: ['a', 'b'] });
    assert.equal(transfer.received.bytes, TWO_MB);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a', 'b']);
  });

  it('carries 2 MB of TCP from the remote host to the LAN host byte for byte, >= 90 % on the fast path of both sites after the handshake', async () => {
    const transfer = await tcpTransfer(topology, { from: 'remote', to: 'lan', bytes: TWO_MB, port: 5102, offloadedAt: ['a', 'b'] });
    assert.equal(transfer.received.bytes, TWO_MB);
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a', 'b']);
  });

  it('offloads a TCP connection at both sites: encapsulated into tun0 at one, decapsulated from it at the other', async () => {
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: 5103 });
    await sink.ready;
    const source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: A().remoteHost, port: 5103, bytes: 64 * 1024, holdOpen: true });
    try {
      await source.ready;
      const atA = await until('site A to offload the connection', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5103 }));
      const atB = await until('site B to offload the connection', async () => flowOf(await topology.site('b').flows(), 'tcp', { dport: 5103 }));
      assert.deepEqual([atA.src, atA.dst, atA.in, atA.out, atA.tunnel], [A().lanHost, A().remoteHost, 'eth0', 'tun0', 'tun0']);
      assert.deepEqual([atA.reply?.in, atA.reply?.out], ['tun0', 'eth0']);
      assert.equal(atA.tunnel_mode, tunnel.mode);
      assert.equal(atB.tunnel_mode, tunnel.mode);
      assert.deepEqual([atB.src, atB.dst, atB.in, atB.out, atB.tunnel], [A().lanHost, A().remoteHost, 'tun0', 'eth0', 'tun0']);
      assert.deepEqual([atB.reply?.in, atB.reply?.out], ['eth0', 'tun0']);
    } finally {
      source.finish();
      await source.result.catch(() => undefined);
      await sink.result.catch(() => undefined);
    }
  });

  it('offloads a one-way UDP stream after the kernel forwarded its first datagram', async () => {
    const receiver = startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: 6101, listen: true, expectCount: 1000, family: inner });
    await receiver.ready;
    const before = await statsOf(topology, ['a', 'b']);
    const sender = await startTraffic(topology.ns.lan, {
      kind: 'udp-peer',
      bind: 6102,
      peer: { host: A().remoteHost, port: 6101 },
      pps: 500,
      count: 1000,
    }).result;
    await awaitAtMost(receiver.reached);
    const flowAtA = flowOf(await topology.site('a').flows(), 'udp', { sport: 6102, dport: 6101 });
    const after = await statsOf(topology, ['a', 'b']);
    receiver.finish();
    const received = await receiver.result;

    assert.equal(sender.sent, 1000);
    assert.equal(received.received, 1000, 'every datagram arrived');
    assert.ok(flowAtA !== undefined, 'site A lists the UDP flow');
    assert.equal(flowAtA.reply, null, 'one direction: nothing came back');
    assert.deepEqual([flowAtA.in, flowAtA.out], ['eth0', 'tun0']);
    assert.ok(flowAtA.packets >= 900, `the flow's own counter: ${flowAtA.packets} of 1000 datagrams on the fast path`);
    for (const site of ['a', 'b'] as const) {
      const d = delta(before[site], after[site]);
      assert.ok(d.fast >= 900, `site ${site}: ${JSON.stringify(d)}`);
    }
  });

  it('removes a UDP flow once it has been idle for flowtable.timeout.udp, and relearns it when packets come again', async () => {
    const send = (count: number) =>
      startTraffic(topology.ns.lan, { kind: 'udp-peer', bind: 6202, peer: { host: A().remoteHost, port: 6201 }, pps: 100, count }).result;
    const before = await topology.site('a').stats();
    await send(20);
    const first = await until('site A to offload the UDP flow', async () => flowOf(await topology.site('a').flows(), 'udp', { sport: 6202, dport: 6201 }));
    await until(`the flow to expire after ${UDP_IDLE_TIMEOUT_S} s idle`, async () =>
      flowOf(await topology.site('a').flows(), 'udp', { sport: 6202, dport: 6201 }) === undefined ? true : undefined,
    );
    const expired = await topology.site('a').stats();
    assert.ok(delta(before, expired).removedBy.idle !== undefined && (delta(before, expired).removedBy.idle ?? 0) >= 1, JSON.stringify(delta(before, expired)));

    await send(20);
    const second = await until('site A to offload the flow again', async () => flowOf(await topology.site('a').flows(), 'udp', { sport: 6202, dport: 6201 }));
    assert.notEqual(second.id, first.id, 'a new flow');
  });

  it('forwards the close of an offloaded TCP connection on the fast path, then hands the connection to conntrack in CLOSE', async () => {
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: 5201 });
    await sink.ready;
    const source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: A().remoteHost, port: 5201, bytes: 256 * 1024, holdOpen: true });
    await source.ready;
    const offloaded = await until('site A to offload the connection', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5201 }));
    const before = await topology.site('a').stats();

    source.finish();
    const sent = await source.result;
    assert.equal((await sink.result).sha256, sent.sha256);
    // As the kernel's flowtable since 2025 (nf_flow_state_check): FIN marks the flow closing
    // and it goes on forwarding, until it is idle.
    const closing = (await topology.site('a').flows()).find((f) => f.id === offloaded.id);
    assert.equal(closing?.state, 'closing');
    await until('the closed flow to leave the flowtable once idle', async () =>
      (await topology.site('a').flows()).some((f) => f.id === offloaded.id) ? undefined : true,
    );
    const d = delta(before, await topology.site('a').stats());
    assert.ok((d.removedBy.idle ?? 0) >= 1, `removed once idle: ${JSON.stringify(d.removedBy)}`);
    assert.equal(d.reasons.teardown ?? 0, 0, `no packet of the close went to the kernel: ${JSON.stringify(d.reasons)}`);
    const ct = await topology.run('a', ['conntrack', '-L', '-p', 'tcp', '--orig-port-dst', '5201']);
    assert.match(ct, /^tcp\s+\d+\s+\d+\s+CLOSE\s/m, `conntrack has the connection in CLOSE:\n${ct}`);
  });

  it("answers an expiring TTL or hop limit with the kernel's ICMP time exceeded, also for a datagram of an offloaded flow", async () => {
    const send = (count: number, ttl?: number) =>
      startTraffic(topology.ns.lan, {
        kind: 'udp-peer',
        bind: 6302,
        peer: { host: A().remoteHost, port: 6301 },
        pps: 100,
        count,
        ...(ttl === undefined ? {} : { ttl }),
      }).result;
    await send(10);
    await until('site A to offload the UDP flow', async () => flowOf(await topology.site('a').flows(), 'udp', { sport: 6302, dport: 6301 }));
    const before = await topology.site('a').stats();
    const timeExceeded = async () => icmpCounter(topology, 'lan', inner === 4 ? 'InTimeExcds' : 'Icmp6InTimeExcds');
    const received = await timeExceeded();
    await send(1, 1);
    await until("the lan host to receive site A's time exceeded", async () => ((await timeExceeded()) > received ? true : undefined));
    const d = delta(before, await topology.site('a').stats());
    assert.equal(d.reasons.ttl_expired, 1, `site A punted the TTL-1 datagram: ${JSON.stringify(d.reasons)}`);

    // TTL 1 expires at site A, TTL 2 at site B, whose tunnel address is the source.
    const atA = await topology.run('lan', `ping -c 1 -t 1 -W 5 ${A().remoteHost} || true`);
    const atB = await topology.run('lan', `ping -c 1 -t 2 -W 5 ${A().remoteHost} || true`);
    const expired = inner === 4 ? 'Time to live exceeded' : 'Time exceeded: Hop limit';
    assert.match(atA, new RegExp(`From ${A().siteALan.replace(/\./g, '\\.')} icmp_seq=1 ${expired}`));
    assert.match(atB, new RegExp(`From ${A().tunnelB.replace(/\./g, '\\.')} icmp_seq=1 ${expired}`));
  });
});

// Several tunnels of different modes on one underlay port: the sites run dual stack, IPv4
// through the ip4ip6 tunnel tun0 and IPv6 through a sit tunnel tun6, both over eth1 (an IPv6
// and an IPv4 address on the same underlay).
describe('two flowgate sites back to back, ip4ip6 and sit side by side over one underlay port (dual stack)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;
  const v4 = demoAddresses('ip4ip6');
  const v6 = demoAddresses('sit');

  /** A site's config with the IPv6 hosts' network on eth0 and the sit tunnel tun6 over eth1's IPv4 address. */
  const dualStack = (site: 'a' | 'b') => (config: ConfigInput) => {
    const [lan, lanPrefix, underlay, peerUnderlay, own, peer] =
      site === 'a'
        ? [v6.siteALan, v6.lanPrefix, v6.underlayA, v6.underlayB, v6.tunnelA, v6.tunnelB]
        : [v6.siteBLan, v6.remotePrefix, v6.underlayB, v6.underlayA, v6.tunnelB, v6.tunnelA];
    config.ports.eth0?.addresses?.push(`${lan}/${lanPrefix}`);
    config.ports.eth1?.addresses?.push(`${underlay}/${v6.underlayPrefix}`);
    config.tunnels = { ...config.tunnels, tun6: { mode: 'sit', local: underlay, remote: peerUnderlay, addresses: [`${own}/${v6.tunnelPrefix}`] } };
    config.routes = [...(config.routes ?? []), { to: '::/0', via: peer, dev: 'tun6' }];
  };

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({ farEnd: 'flowgate', prefix: 'fgt2d', privateSockets: true, configure: { a: dualStack('a'), b: dualStack('b') } });
    for (const [host, address, prefix, gateway] of [
      ['lan', v6.lanHost, v6.lanPrefix, v6.siteALan],
      ['remote', v6.remoteHost, v6.remotePrefix, v6.siteBLan],
    ] as const) {
      await topology.run(host, ['ip', '-6', 'addr', 'add', `${address}/${prefix}`, 'dev', 'eth0', 'nodad']);
      await topology.run(host, ['ip', '-6', 'route', 'add', 'default', 'via', gateway]);
    }
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('offloads an IPv4 and an IPv6 connection at both sites at once, each through the tunnel of its family', async () => {
    const sinks = [5401, 5402].map((port) => startTraffic(topology.ns.remote, { kind: 'tcp-receive', port }));
    await Promise.all(sinks.map((s) => s.ready));
    const sources = [
      startTraffic(topology.ns.lan, { kind: 'tcp-send', host: v4.remoteHost, port: 5401, bytes: 64 * 1024, holdOpen: true }),
      startTraffic(topology.ns.lan, { kind: 'tcp-send', host: v6.remoteHost, port: 5402, bytes: 64 * 1024, holdOpen: true }),
    ];
    try {
      await Promise.all(sources.map((s) => s.ready));
      for (const site of ['a', 'b'] as const) {
        const listed = async (dport: number) => until(`site ${site.toUpperCase()} to offload the connection to ${dport}`, async () => flowOf(await topology.site(site).flows(), 'tcp', { dport }));
        const ip4 = await listed(5401);
        const ip6 = await listed(5402);
        assert.deepEqual([ip4.src, ip4.dst, ip4.tunnel, ip4.tunnel_mode, ip4.reply !== null], [v4.lanHost, v4.remoteHost, 'tun0', 'ip4ip6', true]);
        assert.deepEqual([ip6.src, ip6.dst, ip6.tunnel, ip6.tunnel_mode, ip6.reply !== null], [v6.lanHost, v6.remoteHost, 'tun6', 'sit', true]);
      }
    } finally {
      for (const s of sources) s.finish();
      await Promise.all([...sources, ...sinks].map((s) => s.result.catch(() => undefined)));
    }
  });

  for (const [family, port] of [[4, 5411], [6, 5412]] as const) {
    it(`carries 2 MB of TCP over IPv${family} byte for byte, >= 90 % on the fast path of both sites, while the other tunnel is up`, async () => {
      const toAddress = family === 4 ? v4.remoteHost : v6.remoteHost;
      const transfer = await tcpTransfer(topology, { from: 'lan', to: 'remote', toAddress, bytes: TWO_MB, port, offloadedAt: ['a', 'b'] });
      assert.equal(transfer.received.sha256, transfer.sent.sha256);
      assertFastPathCarried(transfer, ['a', 'b']);
    });
  }
});
