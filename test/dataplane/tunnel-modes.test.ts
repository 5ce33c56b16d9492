// Tier 2: every tunnel mode through the real addon on net_pcap ports, tunnels and flows
// installed through the TypeScript API (ip4ip6 has its own cases in pcap.test.ts). Inputs
// are built by scapy; outputs decoded by scapy and their checksums checked by tshark.
import assert from 'node:assert/strict';

import type { FlowDirection, TunnelMode, TunnelOptions } from '../../lib/dataplane';
import { PcapBench, runJob, tsharkChecksums } from '../helpers/dataplane';
import { layer, scapyBuild, scapyDissect } from '../helpers/scapy';

const HOST = '02:00:00:00:00:10';
const GW_LAN = '00:00:22:33:11:55';
const GW_WAN = '00:11:22:33:11:55';
const PEER = '02:00:00:00:00:22';
const WORKERS = { cpus: [1] };
const SMALL = { flowCapacity: 4096, mbufs: 4095 };

interface Case {
  name: string;
  mode: TunnelMode;
  outer: 4 | 6;
  inner: 4 | 6;
  options: Partial<TunnelOptions>;
  /** Outer headers' length. */
  overhead: number;
}
const CASES: Case[] = [
  { name: 'ip6ip6, encaplimit 4', mode: 'ip6ip6', outer: 6, inner: 6, options: { encapLimit: 4 }, overhead: 48 },
  { name: 'ip6ip6, encaplimit none', mode: 'ip6ip6', outer: 6, inner: 6, options: { encapLimit: 'none' }, overhead: 40 },
  { name: 'ipip', mode: 'ipip', outer: 4, inner: 4, options: {}, overhead: 20 },
  { name: 'sit', mode: 'sit', outer: 4, inner: 6, options: {}, overhead: 20 },
];
const ENDPOINTS = { 4: { local: '198.51.100.1', remote: '198.51.100.2' }, 6: { local: '2001:db8:2::1', remote: '2001:db8:2::2' } } as const;
const HOSTS = { 4: { lan: '192.168.0.10', far: '10.0.0.1', other: '10.0.0.2' }, 6: { lan: '2001:db8:1::10', far: '2001:db8:3::1', other: '2001:db8:3::2' } } as const;

function ipExpr(family: 4 | 6, src: string, dst: string, ttl: number): string {
  return family === 4 ? `IP(src='${src}', dst='${dst}', ttl=${ttl}, flags='DF')` : `IPv6(src='${src}', dst='${dst}', hlim=${ttl})`;
}

function outerExpr(c: Case): string {
  const e = ENDPOINTS[c.outer];
  const next = c.inner === 4 ? 4 : 41;
  if (c.outer === 4) return `IP(src='${e.remote}', dst='${e.local}', flags='DF', proto=${next})`;
  if (c.options.encapLimit === 'none') return `IPv6(src='${e.remote}', dst='${e.local}', nh=${next})`;
  return `IPv6(src='${e.remote}', dst='${e.local}', nh=60)/Raw(bytes([${next}, 0, 4, 1, 4, 1, 1, 0]))`;
}

describe('every tunnel mode through the addon (pcap in, pcap out)', function () {
  this.timeout(120_000);
  let bench: PcapBench;
  beforeEach(() => {
    bench = new PcapBench();
  });
  afterEach(() => bench.dispose());

  for (const c of CASES) {
    it(`${c.name}: encapsulates, decapsulates, and hands a miss decapsulated to the tunnel's TUN; flows name the tunnel`, async () => {
      const h = HOSTS[c.inner];
      const udpOut = `UDP(sport=40000, dport=53)/Raw(b'q'*40)`;
      const udpBack = `UDP(sport=53, dport=40000)/Raw(b'r'*40)`;
      const missInner = `${ipExpr(c.inner, h.other, h.lan, 50)}/UDP(sport=7, dport=7)/Raw(b'm'*8)`;
      const [lanIn, wanIn, wanMiss, missBytes] = await scapyBuild([
        `Ether(dst='${GW_LAN}', src='${HOST}')/${ipExpr(c.inner, h.lan, h.far, 64)}/${udpOut}`,
        `Ether(dst='${GW_WAN}', src='${PEER}')/${outerExpr(c)}/${ipExpr(c.inner, h.far, h.lan, 60)}/${udpBack}`,
        `Ether(dst='${GW_WAN}', src='${PEER}')/${outerExpr(c)}/${missInner}`,
        missInner,
      ]);
      const tunnel: TunnelOptions = {
        name: 'tun0', mode: c.mode, local: ENDPOINTS[c.outer].local, remote: ENDPOINTS[c.outer].remote,
        underlay: 'wan', nextHopMac: PEER, slowpath: 'tun0p', ...c.options,
      };
      const out: FlowDirection = { in: 'lan', proto: 'udp', src: h.lan, dst: h.far, sport: 40000, dport: 53, out: { tunnel: 'tun0' } };
      const back: FlowDirection = { in: 'wan', tunnel: 'tun0', proto: 'udp', src: h.far, dst: h.lan, sport: 53, dport: 40000, out: { port: 'lan', mac: HOST } };
      const r = await runJob({
        start: {
          workers: WORKERS,
          ...SMALL,
          ports: [
            { name: 'lan', mac: GW_LAN, device: bench.device('lan', [lanIn as Buffer]) },
            { name: 'wan', mac: GW_WAN, device: bench.device('wan', [wanIn as Buffer, wanMiss as Buffer]) },
            { name: 'tun0p', device: bench.device('tun0p'), poll: false, l3: true },
          ],
        },
        tunnels: [tunnel],
        flows: [{ original: out, reply: back }],
        expectRx: 3,
      });

      const [encapsulated] = await scapyDissect(bench.sent('wan'));
      assert.ok(encapsulated, 'the LAN packet left encapsulated');
      assert.equal(bench.sent('wan').length, 1);
      const outer = layer(encapsulated, c.outer === 4 ? 'IP' : 'IPv6');
      assert.deepEqual([outer.fields.src, outer.fields.dst], [ENDPOINTS[c.outer].local, ENDPOINTS[c.outer].remote]);
      assert.equal(encapsulated.bytes.length, (lanIn as Buffer).length + c.overhead);
      const innerOut = layer(encapsulated, c.inner === 4 ? 'IP' : 'IPv6', c.inner === c.outer ? 1 : 0);
      assert.equal(Number(innerOut.fields[c.inner === 4 ? 'ttl' : 'hlim']), 63);

      const [decapsulated] = await scapyDissect(bench.sent('lan'));
      assert.ok(decapsulated, 'the tunnelled packet left decapsulated');
      assert.deepEqual(decapsulated.layers.map((l) => l.name).slice(0, 3), ['Ether', c.inner === 4 ? 'IP' : 'IPv6', 'UDP']);
      assert.equal(Number(layer(decapsulated, c.inner === 4 ? 'IP' : 'IPv6').fields[c.inner === 4 ? 'ttl' : 'hlim']), 59);

      const tun = bench.sent('tun0p');
      assert.equal(tun.length, 1);
      assert.ok(tun[0]?.equals(missBytes as Buffer), 'the miss reached the TUN as its inner packet');

      for (const pcap of ['wan', 'lan']) {
        for (const s of await tsharkChecksums(bench.output(pcap))) for (const v of [...s.ip, ...s.udp]) assert.equal(v, 'Good', `${pcap}: ${JSON.stringify(s)}`);
      }
      const [flow] = r.flows;
      assert.ok(flow);
      assert.deepEqual([flow.original.out, flow.reply?.tunnel, flow.original.packets, flow.reply?.packets], [{ tunnel: 'tun0' }, 'tun0', 1, 1]);
      assert.equal(r.stats.slowpath.reasons.miss, 1);
    });
  }

  it('refuses flows of the family a tunnel does not carry, and tunnel options of the other underlay, naming them', async () => {
    const ports = [{ name: 'lan', mac: GW_LAN, device: bench.device('lan') }, { name: 'wan', mac: GW_WAN, device: bench.device('wan') }];
    const sit: TunnelOptions = { name: 'tun0', mode: 'sit', local: '198.51.100.1', remote: '198.51.100.2', underlay: 'wan', nextHopMac: PEER };
    await assert.rejects(
      runJob({ expectRx: 0, start: { workers: WORKERS, ...SMALL, ports }, tunnels: [sit], flows: [{ original: { in: 'lan', proto: 'udp', src: '192.168.0.10', dst: '10.0.0.1', sport: 1, dport: 2, out: { tunnel: 'tun0' } } }] }),
      /sit tunnels carry IPv6, found 192\.168\.0\.10/,
    );
    await assert.rejects(runJob({ expectRx: 0, start: { workers: WORKERS, ...SMALL, ports }, tunnels: [{ ...sit, encapLimit: 4 }] }), /encapLimit is for tunnels over IPv6, not sit/);
    await assert.rejects(runJob({ expectRx: 0, start: { workers: WORKERS, ...SMALL, ports }, tunnels: [{ ...sit, local: '2001:db8:2::1' }] }), /sit tunnels have IPv4 endpoints/);
    await assert.rejects(runJob({ expectRx: 0, start: { workers: WORKERS, ...SMALL, ports }, tunnels: [{ ...sit, remote: '127.0.0.1' }] }), /endpoints must be unicast addresses/);
    await assert.rejects(
      runJob({ expectRx: 0, start: { workers: WORKERS, ...SMALL, ports }, tunnels: [{ ...sit, mode: 'ip6ip6', local: '2001:db8:2::1', remote: '2001:db8:2::2', pmtudisc: false }] }),
      /pmtudisc is for tunnels over IPv4, not ip6ip6/,
    );
  });
});
