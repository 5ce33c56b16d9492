// A stateful nftables ruleset in site A's kernel (config `nftables:`), as nft_flowtable.sh's
// router has: forward policy drop, established connections accepted, one port open from the
// LAN. The fast path caches only what the kernel forwarded, so what the ruleset drops is
// never offloaded; and the kernel's conntrack must keep up with flows it no longer sees,
// because they come back to it: on close, after an invalidation. flowgate keeps their
// conntrack entries alive through ctnetlink, as the kernel's flowtable does.
//
// Site A's conntrack UDP timeouts are lowered to a few seconds so that a UDP flow can stay
// offloaded for longer than them within the test.

import assert from 'node:assert/strict';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import { assertFastPathCarried, awaitAtMost, delta, flowOf, HOOK_TIMEOUT_MS, tcpTransfer, TEST_TIMEOUT_MS, until } from './support';

const ALLOWED_PORT = 5401;
const DROPPED_PORT = 5402;
const CONNTRACK_UDP_TIMEOUT_S = 3;
const FLOWTABLE_TCP_TIMEOUT_S = 3;
const TWO_MB = 2 * 1024 * 1024;

const RULESET = `table inet demo_filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth0" oifname "tun0" meta l4proto { tcp, udp } th dport ${ALLOWED_PORT} accept
    meta l4proto { icmp, ipv6-icmp } accept
  }
}
`;

interface ConntrackEntry {
  line: string;
  /** Seconds left before the entry expires. */
  timeout: number;
}

/** Site A's conntrack entries of UDP from `sport` to `dport`. */
async function conntrackUdp(topology: DemoTopology, sport: number, dport: number): Promise<ConntrackEntry[]> {
  const out = await topology.run('a', ['conntrack', '-L', '-p', 'udp', '--orig-port-src', String(sport), '--orig-port-dst', String(dport)]);
  return out
    .split('\n')
    .filter((line) => line.startsWith('udp'))
    .map((line) => ({ line, timeout: Number(line.split(/\s+/)[2]) }));
}

describe('a stateful nftables ruleset in the slow path (policy drop, established accepted, one port open)', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.build({
      farEnd: 'flowgate',
      prefix: 'fgtnft',
      privateSockets: true,
      configure: {
        a: (config) => {
          config.nftables = RULESET;
          config.flowtable.timeout = { tcp: FLOWTABLE_TCP_TIMEOUT_S, udp: 30 };
        },
      },
      sysctls: {
        a: {
          'net.netfilter.nf_conntrack_udp_timeout': String(CONNTRACK_UDP_TIMEOUT_S),
          'net.netfilter.nf_conntrack_udp_timeout_stream': String(CONNTRACK_UDP_TIMEOUT_S),
        },
      },
    });
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('never offloads a flow the ruleset drops, while it offloads the one it accepts', async () => {
    const count = 200;
    const receivers = [ALLOWED_PORT, DROPPED_PORT].map((port) => startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: port, listen: true, expectCount: count }));
    await Promise.all(receivers.map((r) => r.ready));
    const before = await topology.site('a').stats();
    const send = (port: number) =>
      startTraffic(topology.ns.lan, { kind: 'udp-peer', bind: port + 100, peer: { host: DEMO_ADDRESSES.remoteHost, port }, pps: 200, count }).result;
    const [allowed, dropped] = await Promise.all([send(ALLOWED_PORT), send(DROPPED_PORT)]);
    // By the time the accepted stream is in, the other one would be too.
    await awaitAtMost(receivers[0]?.reached ?? Promise.resolve());
    const flows = await topology.site('a').flows();
    const after = await topology.site('a').stats();
    receivers.forEach((r) => r.finish());
    const [allowedIn, droppedIn] = await Promise.all(receivers.map((r) => r.result));

    assert.equal(allowedIn?.received, allowed.sent, 'the accepted stream arrived whole');
    assert.equal(droppedIn?.received, 0, 'the ruleset dropped the other');
    assert.ok(flowOf(flows, 'udp', { dport: ALLOWED_PORT }) !== undefined, 'the accepted flow is offloaded');
    assert.equal(flowOf(flows, 'udp', { dport: DROPPED_PORT }), undefined, 'the dropped flow is not');
    // Every datagram of the dropped flow went to the kernel, which dropped it again.
    const d = delta(before, after);
    assert.ok((d.reasons.miss ?? 0) >= dropped.sent, `${dropped.sent} dropped datagrams punted as misses: ${JSON.stringify(d.reasons)}`);
  });

  it('closes an offloaded TCP connection on the fast path and hands it back to conntrack closed, through the ruleset', async () => {
    const transfer = await tcpTransfer(topology, { from: 'lan', to: 'remote', bytes: TWO_MB, port: ALLOWED_PORT, offloadedAt: ['a'] });
    // The receiver's result comes only once the sender's FIN passed site A's kernel.
    assert.equal(transfer.received.sha256, transfer.sent.sha256);
    assertFastPathCarried(transfer, ['a']);
    const entries = await until('conntrack to get the closed connection back', async () => {
      const out = await topology.run('a', ['conntrack', '-L', '-p', 'tcp', '--orig-port-dst', String(ALLOWED_PORT), '--orig-port-src', String(transfer.sent.sport)]);
      return /\bCLOSE\b/.test(out) ? out : undefined;
    });
    assert.match(entries, /\bCLOSE\b/);
  });

  it('keeps a UDP flow offloaded longer than conntrack UDP timeout accepted when it returns to the slow path', async () => {
    const lanPort = 5411;
    // The LAN host opens the flow (the ruleset's open port), the remote host answers.
    const lan = startTraffic(topology.ns.lan, {
      kind: 'udp-peer',
      bind: lanPort,
      peer: { host: DEMO_ADDRESSES.remoteHost, port: ALLOWED_PORT },
      pps: 50,
      seconds: 60,
      sendUntilNext: true,
      listen: true,
    });
    await lan.ready;
    await until('site A to offload the LAN host\'s UDP flow', async () => flowOf(await topology.site('a').flows(), 'udp', { sport: lanPort, dport: ALLOWED_PORT }));
    const remote = startTraffic(topology.ns.remote, {
      kind: 'udp-peer',
      bind: ALLOWED_PORT,
      peer: { host: DEMO_ADDRESSES.lanHost, port: lanPort },
      pps: 50,
      seconds: 60,
      listen: true,
    });
    await remote.ready;
    const pair = await until('site A to offload both directions', async () => {
      const f = flowOf(await topology.site('a').flows(), 'udp', { sport: lanPort, dport: ALLOWED_PORT });
      return f?.reply !== null && f?.reply !== undefined ? f : undefined;
    });

    // Twice the conntrack timeout on the fast path: no packet of it reaches the kernel.
    await new Promise((resolve) => setTimeout(resolve, 2 * CONNTRACK_UDP_TIMEOUT_S * 1000 + 500));
    const offloaded = await topology.site('a').flows();
    assert.ok(offloaded.some((f) => f.id === pair.id), 'still the same offloaded flow');
    const entries = await conntrackUdp(topology, lanPort, ALLOWED_PORT);
    assert.equal(entries.length, 1, 'conntrack still has the entry (conntrack -L)');
    assert.ok((entries[0]?.timeout ?? 0) > 3600, `kept for a day through ctnetlink, as flow_offload_add does: ${entries[0]?.line}`);
    assert.ok(((await topology.site('a').stats()).learner.conntrack.updates ?? 0) >= 1);

    // Now only the remote host sends, and the flow leaves the fast path (a route change for
    // its destination invalidates it; this one leads the same way): its datagrams reach the
    // kernel as the reply direction of a connection it must still know, or the ruleset drops
    // them.
    lan.next();
    const sameWay = [`${DEMO_ADDRESSES.remoteHost}/32`, 'via', DEMO_ADDRESSES.tunnelB, 'dev', 'tun0'];
    await topology.run('a', ['ip', 'route', 'add', ...sameWay]);
    try {
      await until('the flow to be invalidated', async () => ((await topology.site('a').flows()).some((f) => f.id === pair.id) ? undefined : true));
      // Offloaded again only once the kernel forwarded one of them, after the ruleset.
      await until('site A to offload the remote host\'s direction again', async () => {
        const f = flowOf(await topology.site('a').flows(), 'udp', { sport: lanPort, dport: ALLOWED_PORT });
        return f !== undefined && f.id !== pair.id ? f : undefined;
      });
    } finally {
      await topology.run('a', ['ip', 'route', 'del', ...sameWay]);
    }
    remote.finish();
    const remoteResult = await remote.result;
    lan.finish();
    const lanResult = await lan.result;
    assert.ok(remoteResult.sent > 0);
    assert.equal(lanResult.receivedFromPeer, remoteResult.sent, 'every datagram of the remote host passed the ruleset, before and after the invalidation');
  });

  it('leaves conntrack\'s own TCP window tracking alone, and removes its ruleset when it stops', async () => {
    const liberal = async () => (await topology.run('a', ['sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_be_liberal'])).trim();
    assert.equal(await liberal(), '0');
    await topology.stopSite('a');
    assert.equal(await liberal(), '0');
    assert.equal((await topology.run('a', ['nft', 'list', 'tables'])).includes('demo_filter'), false, 'and its ruleset went too');
  });
});
