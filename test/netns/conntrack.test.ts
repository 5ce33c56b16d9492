// The kernel's conntrack decides what flowgate offloads, as it decides for nftables'
// `flow add @ft` (nft_flow_offload_eval), in the reference scenario with NAT on both sites:
//
//   lan 192.168.0.10 ── [site A] ══ tun0, masqueraded to 192.168.100.1 ══ [site B] ── eth0, masqueraded to 10.0.0.1 ── remote 10.0.0.10
//                        DNAT 192.168.100.1:8080 -> 192.168.0.10:5600
//                        FTP helper on port 21, forward policy drop: only established,
//                        related and the LAN's own connections pass
//
// The kernel's nft_flowtable.sh NAT scenarios with flowgate as the router, the FTP helper,
// `conntrack -D`/`-F`, idle connections, connections older than flowgate, half-closed
// connections and forged RSTs, each checked against conntrack itself (`conntrack -L`).
// Site A's flowtable timeouts are 2 s, so that idleness fits in a test.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { DEMO_ADDRESSES, DemoTopology } from '../../lib/demo/topology';
import { startTraffic } from '../../lib/demo/traffic';
import type { GatewayFlow } from '../../lib/gateway/types';
import { DEFAULT_LIMITS } from '../../lib/slowpath/learner';
import { atExit } from '../helpers/netns';
import { assertFastPathCarried, delta, flowOf, HOOK_TIMEOUT_MS, statsOf, tcpTransfer, TEST_TIMEOUT_MS, until } from './support';

const TWO_MB = 2 * 1024 * 1024;
const FLOWTABLE_TIMEOUT_S = 2;
const DNAT_PORT = 8080;
const LAN_SERVICE_PORT = 5600;
const FTP_PORT = 21;
/** config/demo-site-a.yaml's eth0. */
const SITE_A_LAN_MAC = '00:00:22:33:11:55';

const SITE_A_RULESET = `table inet fg_ct_test {
  ct helper ftp-standard {
    type "ftp" protocol tcp;
  }
  chain prerouting {
    type filter hook prerouting priority filter;
    iifname "eth0" tcp dport ${FTP_PORT} ct helper set "ftp-standard"
  }
  chain port_forward {
    type nat hook prerouting priority dstnat;
    iifname "tun0" tcp dport ${DNAT_PORT} dnat ip to ${DEMO_ADDRESSES.lanHost}:${LAN_SERVICE_PORT}
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct status dnat accept
    iifname "eth0" tcp dport != ${FTP_PORT} ct state new tcp flags & (syn | ack) == syn accept
    iifname "eth0" tcp dport ${FTP_PORT} accept
    iifname "eth0" meta l4proto udp accept
    meta l4proto { icmp, ipv6-icmp } accept
  }
  chain masquerade_out {
    type nat hook postrouting priority srcnat;
    oifname "tun0" ip saddr 192.168.0.0/24 masquerade
  }
}
`;

const SITE_B_RULESET = `table inet fg_ct_test {
  chain masquerade_out {
    type nat hook postrouting priority srcnat;
    oifname "eth0" ip saddr 192.168.100.0/24 masquerade
  }
}
`;

interface ConntrackLine {
  line: string;
  state: string | null;
}

/** A site's conntrack entries (conntrack -L) for TCP with this original destination port. */
async function conntrackTcp(topology: DemoTopology, site: 'a' | 'b', dport: number): Promise<ConntrackLine[]> {
  const out = await topology.run(site, ['conntrack', '-L', '-p', 'tcp', '--orig-port-dst', String(dport)]);
  return out
    .split('\n')
    .filter((line) => line.startsWith('tcp'))
    .map((line) => ({ line, state: /^tcp\s+\d+\s+\d+\s+([A-Z_]+)/.exec(line)?.[1] ?? null }));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends `count` TCP SYNs from random LAN addresses (192.168.0.64-254, hosts that do not
 * exist) and random source ports out of `iface`, to `dst` port 80 through the router with MAC
 * `dmac`: valid checksums, so that the kernel tracks and forwards them. The answers come back
 * to the LAN, where nobody takes them. argv: iface dmac dst count.
 */
const SYN_FLOOD = `
import random, socket, struct, sys
iface, dmac, dst, count = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), socket.inet_aton(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
smac = s.getsockname()[4][:6]
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    t += t >> 16
    return ~t & 0xffff
rnd = random.Random(7)
for _ in range(count):
    src = struct.pack('!I', 0xc0a80000 | rnd.randrange(64, 255))
    sport = rnd.randrange(1024, 65536)
    tcp = struct.pack('!HHIIBBHHH', sport, 80, rnd.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack('!H', csum(src + dst + struct.pack('!BBH', 0, 6, 20) + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    s.send(dmac + smac + b'\\x08\\x00' + ip + tcp)
`;

describe('conntrack decides: NAT, helpers, teardown and timeouts from ctnetlink', function () {
  this.timeout(TEST_TIMEOUT_MS);
  let topology: DemoTopology;
  let liberalBefore: string;

  before(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    topology = await DemoTopology.create({
      farEnd: 'flowgate',
      prefix: 'fgct',
      privateSockets: true,
      configure: {
        a: (config) => {
          config.nftables = SITE_A_RULESET;
          (config.flowtable as { timeout?: unknown }).timeout = { tcp: FLOWTABLE_TIMEOUT_S, udp: FLOWTABLE_TIMEOUT_S };
        },
        b: (config) => {
          config.nftables = SITE_B_RULESET;
        },
      },
    });
    liberalBefore = (await topology.run('a', ['sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_be_liberal'])).trim();
    await topology.start();
  });

  after(async function () {
    this.timeout(HOOK_TIMEOUT_MS);
    await topology?.destroy();
  });

  it('offloads a connection masqueraded into the tunnel and again on the uplink, 2 MB each way byte for byte, with the translated tuples', async () => {
    for (const [from, to, port] of [['lan', 'remote', 5501], ['remote', 'lan', 5502]] as const) {
      // From the remote host the LAN is reached through site A's port forward.
      const toAddress = to === 'lan' ? DEMO_ADDRESSES.tunnelA : undefined;
      const listen = to === 'lan' ? LAN_SERVICE_PORT : port;
      const transfer = await tcpTransfer(topology, {
        from,
        to,
        bytes: TWO_MB,
        port: listen,
        ...(toAddress === undefined ? {} : { toAddress, dialPort: DNAT_PORT }),
        offloadedAt: ['a', 'b'],
      });
      assert.equal(transfer.received.sha256, transfer.sent.sha256, `${from} -> ${to}: the bytes arrived unchanged`);
      assertFastPathCarried(transfer, ['a', 'b']);
    }
  });

  it('shows both tuples of a NATed connection, as conntrack -L does', async () => {
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: 5503 });
    await sink.ready;
    const source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: 5503, bytes: 0, holdOpen: true });
    try {
      await source.ready;
      const a = await until('site A to offload the masqueraded connection', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5503 }));
      const b = await until('site B to offload it too', async () => flowOf(await topology.site('b').flows(), 'tcp', { dport: 5503 }));
      assert.equal(a.src, DEMO_ADDRESSES.lanHost);
      assert.equal(a.nat?.src, DEMO_ADDRESSES.tunnelA, 'site A: leaves the tunnel with the tunnel address as source');
      assert.equal(a.reply?.dst, DEMO_ADDRESSES.tunnelA, "site A: the reply arrives for the tunnel address (conntrack's reply tuple)");
      assert.equal(a.reply?.nat?.dst, DEMO_ADDRESSES.lanHost);
      assert.equal(b.src, DEMO_ADDRESSES.tunnelA);
      assert.equal(b.nat?.src, DEMO_ADDRESSES.siteBLan, "site B: masqueraded to its uplink's address");
      const ct = await topology.run('a', ['conntrack', '-L', '-p', 'tcp', '--orig-port-dst', '5503']);
      assert.match(ct, new RegExp(`src=${DEMO_ADDRESSES.lanHost} dst=${DEMO_ADDRESSES.remoteHost} sport=${a.sport} dport=5503 .*src=${DEMO_ADDRESSES.remoteHost} dst=${DEMO_ADDRESSES.tunnelA} sport=5503 dport=${a.reply?.dport}`));
    } finally {
      source.finish();
      sink.finish();
      await Promise.allSettled([source.result, sink.result]);
    }
  });

  it('offloads a TCP connection again after it sat idle past the flowtable timeout', async () => {
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: 5504 });
    await sink.ready;
    // Connected and then idle; on next(), a stream.
    const source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: 5504, seconds: 60, gate: true, holdOpen: true });
    try {
      await source.ready;
      const first = await until('site A to offload the connection', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5504 }));
      await until('site A to reap it once idle', async () => (flowOf(await topology.site('a').flows(), 'tcp', { dport: 5504 }) === undefined ? true : undefined));
      assert.equal((await conntrackTcp(topology, 'a', 5504))[0]?.state, 'ESTABLISHED', 'conntrack still has it established');
      source.next();
      const again = await until('site A to offload it again on its next packets', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5504 }));
      assert.notEqual(again.id, first.id);
      const before = await topology.site('a').stats();
      await sleep(1000);
      const d = delta(before, await topology.site('a').stats());
      assert.ok(d.fast > 10 * d.slow, `on the fast path from then on: ${d.fast} fast, ${d.slow} slow`);
    } finally {
      source.kill();
      sink.kill();
    }
  });

  it('does not let a forged out-of-window RST keep a connection out of the fast path', async () => {
    const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: 5505, expectBytes: TWO_MB });
    await sink.ready;
    const source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: 5505, bytes: TWO_MB, gate: true, holdOpen: true });
    try {
      await source.ready;
      const { sport } = await until('site A to offload the connection', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5505 }));
      await until('site A to reap it once idle', async () => (flowOf(await topology.site('a').flows(), 'tcp', { dport: 5505 }) === undefined ? true : undefined));
      // Out of the receiver's window by far: conntrack calls it INVALID, the remote host ignores it.
      await topology.run('lan', [
        '/usr/bin/python3', '-c',
        `from scapy.all import *; sendp(Ether(dst=getmacbyip('${DEMO_ADDRESSES.siteALan}'))/IP(src='${DEMO_ADDRESSES.lanHost}', dst='${DEMO_ADDRESSES.remoteHost}')/TCP(sport=${sport}, dport=5505, flags='R', seq=12345), iface='eth0', verbose=0)`,
      ]);
      source.next();
      await until('site A to offload the connection again', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: 5505 }));
      await sink.reached;
      source.finish();
      assert.equal((await sink.result).sha256, (await source.result).sha256);
    } finally {
      source.kill();
      sink.kill();
    }
  });

  it('never offloads an FTP control connection (it has a helper), and offloads its passive data connection, accepted as related', async () => {
    const dir = path.join(topology.dir, 'ftp');
    mkdirSync(dir, { recursive: true });
    const data = randomBytes(TWO_MB);
    writeFileSync(path.join(dir, 'file.bin'), data);
    const server = spawn('ip', ['netns', 'exec', topology.ns.remote, '/usr/bin/python3', '-m', 'pyftpdlib', '-p', String(FTP_PORT), '-d', dir, '-i', DEMO_ADDRESSES.remoteHost], { stdio: 'ignore' });
    const forget = atExit(() => server.kill('SIGKILL'));
    const out = path.join(topology.dir, 'ftp-out.bin');
    try {
      await until('the FTP server to listen', async () => ((await topology.run('remote', ['ss', '-ltn'])).includes(`:${FTP_PORT} `) ? true : undefined));
      const before = await topology.site('a').stats();
      const seen: GatewayFlow[] = [];
      const client = topology.run('lan', ['curl', '-sS', '--limit-rate', '400k', '-o', out, `ftp://${DEMO_ADDRESSES.remoteHost}/file.bin`], { timeoutMs: 60_000 });
      let done = false;
      void client.finally(() => (done = true)).catch(() => undefined);
      while (!done) {
        seen.push(...(await topology.site('a').flows()).filter((f) => f.proto === 'tcp' && (f.dst === DEMO_ADDRESSES.remoteHost || f.src === DEMO_ADDRESSES.remoteHost)));
        await sleep(200);
      }
      await client;
      const got = readFileSync(out);
      assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(data).digest('hex'), 'the file arrived whole');
      assert.ok(!seen.some((f) => f.dport === FTP_PORT || f.sport === FTP_PORT), 'the control connection was never offloaded');
      assert.ok(seen.some((f) => f.dport !== FTP_PORT && f.sport !== FTP_PORT), 'the data connection was offloaded');
      const s = await topology.site('a').stats();
      assert.ok((s.learner.conntrack.refused.helper ?? 0) > (before.learner.conntrack.refused.helper ?? 0), 'conntrack said: helper');
    } finally {
      server.kill();
      forget();
    }
  });

  it('removes an offloaded connection within a second of conntrack -D, and all of them after conntrack -F', async () => {
    const peers = [5511, 5512].map((port) => {
      const sink = startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: port, listen: true });
      return { port, sink };
    });
    await Promise.all(peers.map((p) => p.sink.ready));
    const senders = peers.map((p) =>
      startTraffic(topology.ns.lan, { kind: 'udp-peer', bind: p.port + 100, peer: { host: DEMO_ADDRESSES.remoteHost, port: p.port }, pps: 50, seconds: 30 }),
    );
    try {
      const flows = await Promise.all(
        peers.map((p) => until(`site A to offload the UDP flow to ${p.port}`, async () => flowOf(await topology.site('a').flows(), 'udp', { dport: p.port }))),
      );
      await topology.run('a', ['conntrack', '-D', '-p', 'udp', '--orig-port-dst', String(peers[0]?.port)]);
      await sleep(1000);
      let ids = (await topology.site('a').flows()).map((f) => f.id);
      assert.ok(!ids.includes(flows[0]?.id as number), 'the deleted connection left the fast path within a second');
      assert.ok(ids.includes(flows[1]?.id as number), 'the other one stayed');
      await topology.run('a', ['conntrack', '-F']);
      await sleep(1000);
      ids = (await topology.site('a').flows()).map((f) => f.id);
      assert.ok(!flows.some((f) => ids.includes(f.id)), 'conntrack -F: none of them is left');
      assert.ok(((await topology.site('a').stats()).flows.removed_by.destroyed ?? 0) >= 2);
    } finally {
      senders.forEach((s) => s.kill());
      peers.forEach((p) => p.sink.kill());
    }
  });

  it('carries a half-closed 2 MB echo on the fast path, FIN included, and leaves its connection in CLOSE', async () => {
    const port = 5520;
    const echo = startTraffic(topology.ns.remote, { kind: 'tcp-echo', port });
    await echo.ready;
    // The data and the close once the handshake is offloaded, as the kernel's flowtable would
    // have it by then.
    const sender = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port, bytes: TWO_MB, gate: true, halfClose: true }, { timeoutMs: 60_000 });
    await sender.ready;
    await until('site A to offload the connection', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: port }));
    const before = await statsOf(topology, ['a']);
    sender.next();
    const client = await sender.result;
    const echoed = await echo.result;
    const after = await statsOf(topology, ['a']);
    assert.equal(client.receivedSha256, client.sha256, 'everything came back');
    assert.equal(echoed.bytes, TWO_MB);
    const d = delta(before.a, after.a);
    const share = d.fast / (d.fast + d.slow);
    assert.ok(share >= 0.95, `fast-path share ${(share * 100).toFixed(1)} % < 95 %: ${d.fast} fast, ${d.slow} slow ${JSON.stringify(d.reasons)}`);
    const closed = await until('site A to reap the closed connection and hand it back to conntrack', async () => {
      const entries = await conntrackTcp(topology, 'a', port);
      return entries.length > 0 && entries.every((e) => e.state === 'CLOSE') ? entries : undefined;
    });
    assert.equal(closed[0]?.state, 'CLOSE');
  });

  // Through the port forward: the kernel flushes masqueraded connections when their output
  // interface goes (nf_nat_masquerade's device notifier), as site A's TUN does on a restart.
  it('offloads a connection that was open before flowgate (re)started', async () => {
    const sink = startTraffic(topology.ns.lan, { kind: 'tcp-receive', port: LAN_SERVICE_PORT });
    await sink.ready;
    // A stream, not a transfer: once offloaded again, the fast path must carry what follows.
    const source = startTraffic(
      topology.ns.remote,
      { kind: 'tcp-send', host: DEMO_ADDRESSES.tunnelA, port: DNAT_PORT, seconds: 60, gate: true, holdOpen: true },
      { timeoutMs: 90_000 },
    );
    try {
      await source.ready;
      await topology.restartSite('a');
      assert.equal(flowOf(await topology.site('a').flows(), 'tcp', { dport: DNAT_PORT }), undefined, 'nothing offloaded yet after the restart');
      assert.equal((await conntrackTcp(topology, 'a', DNAT_PORT))[0]?.state, 'ESTABLISHED', 'conntrack kept the connection');
      source.next();
      const flow = await until('site A to offload the connection it never saw open', async () => flowOf(await topology.site('a').flows(), 'tcp', { dport: DNAT_PORT }));
      const before = await topology.site('a').stats();
      await sleep(1000);
      const d = delta(before, await topology.site('a').stats());
      assert.ok(d.fast > 10 * d.slow, `on the fast path from then on: ${d.fast} fast, ${d.slow} slow`);
      assert.ok((await topology.site('a').flows()).some((f) => f.id === flow.id), 'the same flow throughout');
    } finally {
      source.kill();
      sink.kill();
    }
  });

  it('leaves nf_conntrack_tcp_be_liberal alone: only offloaded connections are liberal', async () => {
    assert.equal((await topology.run('a', ['sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_be_liberal'])).trim(), liberalBefore);
  });

  // Last: the flood fills site A's conntrack table for the SYN_SENT timeout.
  it('keeps its state bounded under 300,000 spoofed SYNs from the LAN, and an offloaded flow stays offloaded through them', async () => {
    const port = 5540;
    const after100 = 100;
    const peer = startTraffic(topology.ns.remote, { kind: 'udp-peer', bind: port, listen: true });
    await peer.ready;
    const send = (options: { count?: number; seconds?: number; sendUntilNext?: boolean }) =>
      startTraffic(topology.ns.lan, { kind: 'udp-peer', bind: port + 100, peer: { host: DEMO_ADDRESSES.remoteHost, port }, pps: 200, ...options });
    const stream = send({ seconds: 120, sendUntilNext: true });
    try {
      const flow = await until('site A to offload the UDP stream', async () => flowOf(await topology.site('a').flows(), 'udp', { dport: port }));
      const before = await topology.site('a').stats();
      await topology.run('lan', ['/usr/bin/python3', '-c', SYN_FLOOD, 'eth0', SITE_A_LAN_MAC, DEMO_ADDRESSES.remoteHost, '300000'], { timeoutMs: 180_000 });
      // Until the kernels have dealt with what the flood left in their queues.
      let last = -1;
      const after = await until('site A to settle after the flood', async () => {
        const s = await topology.site('a').stats();
        const settled = s.slowpath.packets === last;
        last = s.slowpath.packets;
        return settled ? s : (await sleep(500), undefined);
      }, 60_000);
      stream.next();
      await stream.result;
      // What the flood does to the wire is this rig's: site A's AF_PACKET ring overflows and
      // loses datagrams of the stream with the SYNs, whatever flowgate does. What flowgate
      // owes is that the flow is still offloaded, and carries the stream on afterwards.
      const during = (await topology.site('a').flows()).find((f) => f.id === flow.id);
      assert.ok(during !== undefined, 'the UDP stream is still the same offloaded flow after the flood');
      await send({ count: after100 }).result;
      const later = (await topology.site('a').flows()).find((f) => f.id === flow.id);
      assert.equal((later?.packets ?? 0) - during.packets, after100, 'and carries every datagram after it on the fast path');

      const learned = after.learner.forwarded - before.learner.forwarded;
      assert.ok(learned > 10_000, `the flood reached the learner: ${learned} SYNs forwarded by the kernel`);
      // The heap itself is measured with a full GC before and after, in test/unit/learner-bounds.
      assert.ok(after.learner.directions <= DEFAULT_LIMITS.directions, `directions remembered: ${after.learner.directions}`);
      const evicted = after.learner.evicted.directions - before.learner.evicted.directions;
      // (Exact counts, with distinct tuples only, are test/unit/learner-bounds's: here the
      // hosts' answers repeat some tuples.)
      assert.ok(learned <= DEFAULT_LIMITS.directions || evicted > 0, `past the bound, the oldest were dropped, and counted: ${evicted} of ${learned}`);
      assert.equal(after.learner.conntrack.queries, before.learner.conntrack.queries, 'a SYN is never a reason to ask conntrack');
    } finally {
      stream.kill();
      peer.kill();
    }
  });
});
