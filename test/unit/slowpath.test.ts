// Tier 1: what the fast path does for the slow path — observation records for the learner,
// and the punt policer — run without EAL.
import assert from 'node:assert/strict';

import { native, NativeFlowSpec } from '../../lib/native';
import { parseIPv4, parseIPv6, parseMac } from '../../lib/net/addr';
import { ethernetFrame, ipInIp6Packet, ip4Packet, ip6Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../lib/packets';
import { decodeObservations, KEY, OBS, OBSERVATION_SIZE } from '../../lib/slowpath/observations';

const testing = native().testing;
const reasons = native().reasons().punt.map((r) => r.name);
const PORTS = [
  { id: 0, mac: parseMac('02:00:00:00:00:01'), mtu: 1500, slowpath: 2 },
  { id: 1, mac: parseMac('02:00:00:00:00:11'), mtu: 1500, slowpath: 3 },
  { id: 2, mtu: 1500 },
  { id: 3, mtu: 1500 },
  { id: 4, mtu: 1452, l3: true },
];
const lan = (src: string, sport: number, flags = TCP_ACK, payload = 'hello') =>
  ethernetFrame('02:00:00:00:00:01', '02:00:00:00:00:02', ip4Packet({ src, dst: '10.0.0.1', id: 4242 }, { tcp: { sport, dport: 80, flags, seq: 1000, ack: 2000 } }, Buffer.from(payload)));
const udpFlow = (): NativeFlowSpec => ({
  inPort: 0, l3: 4, l4: 17, src: parseIPv4('192.168.0.10'), dst: parseIPv4('10.0.0.1'), sport: 5000, dport: 53, action: 'fwd4', outPort: 1, dstMac: parseMac('02:00:00:00:00:09'),
});
const udp = () => ethernetFrame('02:00:00:00:00:01', '02:00:00:00:00:02', ip4Packet({ src: '192.168.0.10', dst: '10.0.0.1' }, { udp: { sport: 5000, dport: 53 } }));

describe('fast path for the slow path', () => {
  describe('observation records', () => {
    it('have the layout that the TypeScript decoder reads', () => {
      const l = testing.observationLayout();
      assert.equal(l.size, OBSERVATION_SIZE);
      for (const [name, off] of Object.entries({ tsc: OBS.tsc, key: OBS.key, kind: OBS.kind, reason: OBS.reason, tcp_flags: OBS.tcpFlags, port: OBS.port, tunnel: OBS.tunnel, dst_mac: OBS.dstMac, src_mac: OBS.srcMac, fingerprint: OBS.fingerprint, l3_len: OBS.l3Len }))
        assert.equal(l[name], off, `offset of ${name}`);
      assert.deepEqual([l.keyIp4Src, l.keyIp4OuterSrc, l.keyIp6Outer, l.keySport, l.keyInPort, l.keyL3, l.keyL4], [KEY.ip4Src, KEY.ip4OuterSrc, KEY.ip6Outer, KEY.sport, KEY.inPort, KEY.l3, KEY.l4]);
    });

    it('tell the learner where a punted packet came in, its flow and its TCP flags', () => {
      const r = testing.process({ ports: PORTS, observe: true, nowTsc: 777 }, [{ port: 0, frame: lan('192.168.0.10', 40000, TCP_SYN) }]);
      const [o] = decodeObservations(r.observations as Buffer, reasons);
      assert.ok(o);
      assert.deepEqual(
        { kind: o.kind, reason: o.reason, port: o.port, tunnel: o.tunnel, src: o.src, dst: o.dst, sport: o.sport, dport: o.dport, proto: o.proto, flags: o.tcpFlags, tsc: o.tsc, length: o.length },
        { kind: 'punt', reason: 'miss', port: 0, tunnel: null, src: '192.168.0.10', dst: '10.0.0.1', sport: 40000, dport: 80, proto: 6, flags: TCP_SYN, tsc: 777, length: 45 },
      );
    });

    it('name the tunnel of a packet decapsulated into its TUN, with the outer addresses', () => {
      const tunnel = {
        id: 0, local: parseIPv6('2001:db8:2::1'), remote: parseIPv6('2001:db8:2::2'), encapLimit: 4, hopLimit: 64, tclass: 0, flowLabel: 0, flowLabelHash: false,
        mtu: 1452, port: 1, dstMac: parseMac('02:00:00:00:00:22'), srcMac: parseMac('02:00:00:00:00:11'), slowpathPort: 4,
      };
      const inner = ip4Packet({ src: '10.0.0.1', dst: '192.168.0.10' }, { udp: { sport: 53, dport: 5000 } });
      const frame = ethernetFrame('02:00:00:00:00:11', '02:00:00:00:00:22', ipInIp6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1' }, inner));
      const r = testing.process({ ports: PORTS, tunnels: [tunnel], observe: true }, [{ port: 1, frame }]);
      const [o] = decodeObservations(r.observations as Buffer, reasons);
      assert.deepEqual([o?.tunnel, o?.port, o?.outerSrc, o?.outerDst, o?.src], [0, 1, '2001:db8:2::2', '2001:db8:2::1', '10.0.0.1']);
      assert.equal(r.results[0]?.port, 4);
    });

    it('say the inner family and the outer addresses of every mode (ip6ip6: the tunnel only), and mark an untunnelled packet', () => {
      const base = { encapLimit: null, hopLimit: 64, tclass: 0, flowLabel: 0, flowLabelHash: false, mtu: 1480, port: 1, dstMac: parseMac('02:00:00:00:00:22'), srcMac: parseMac('02:00:00:00:00:11'), slowpathPort: 4 };
      const inner6 = ip6Packet({ src: '2001:db8:3::1', dst: '2001:db8:1::10' }, { udp: { sport: 53, dport: 5000 } });
      const inner4 = ip4Packet({ src: '10.0.0.1', dst: '192.168.0.10' }, { udp: { sport: 53, dport: 5000 } });
      const wan = (l3: Buffer) => ethernetFrame('02:00:00:00:00:11', '02:00:00:00:00:22', l3);
      const cases = [
        { mode: 'sit' as const, local: parseIPv4('198.51.100.1'), remote: parseIPv4('198.51.100.2'), frame: wan(ip4Packet({ src: '198.51.100.2', dst: '198.51.100.1' }, { proto: 41, data: inner6 })), want: [0, 6, true, '198.51.100.2', '198.51.100.1', '2001:db8:3::1'] },
        { mode: 'ipip' as const, local: parseIPv4('198.51.100.1'), remote: parseIPv4('198.51.100.2'), frame: wan(ip4Packet({ src: '198.51.100.2', dst: '198.51.100.1' }, { proto: 4, data: inner4 })), want: [0, 4, true, '198.51.100.2', '198.51.100.1', '10.0.0.1'] },
        { mode: 'ip6ip6' as const, local: parseIPv6('2001:db8:2::1'), remote: parseIPv6('2001:db8:2::2'), frame: wan(ipInIp6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1', encapLimit: null }, inner6)), want: [0, 6, true, null, null, '2001:db8:3::1'] },
        // From an address that is no tunnel's remote: tunnelled, but no tunnel's.
        { mode: 'ip6ip6' as const, local: parseIPv6('2001:db8:2::1'), remote: parseIPv6('2001:db8:2::7'), frame: wan(ipInIp6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1', encapLimit: null }, inner6)), want: [null, 6, true, null, null, '2001:db8:3::1'] },
      ];
      for (const c of cases) {
        const r = testing.process({ ports: PORTS, tunnels: [{ ...base, id: 0, mode: c.mode, local: c.local, remote: c.remote }], observe: true }, [{ port: 1, frame: c.frame }]);
        const [o] = decodeObservations(r.observations as Buffer, reasons);
        assert.deepEqual([o?.tunnel, o?.family, o?.tunnelled, o?.outerSrc, o?.outerDst, o?.src], c.want, c.mode);
      }
      const [plain] = decodeObservations(testing.process({ ports: PORTS, observe: true }, [{ port: 0, frame: udp() }]).observations as Buffer, reasons);
      assert.deepEqual([plain?.tunnelled, plain?.outerSrc], [false, null]);
    });

    it('give an IPv6 packet decapsulated from ip6ip6 or sit the fingerprint and TCP flags it has plain, as its egress from the kernel will', () => {
      const base = { encapLimit: null, hopLimit: 64, tclass: 0, flowLabel: 0, flowLabelHash: false, mtu: 1480, port: 1, dstMac: parseMac('02:00:00:00:00:22'), srcMac: parseMac('02:00:00:00:00:11'), slowpathPort: 4 };
      const inner6 = ip6Packet({ src: '2001:db8:3::1', dst: '2001:db8:1::10' }, { tcp: { sport: 80, dport: 40000, flags: TCP_FIN | TCP_ACK, seq: 77, ack: 88 } }, Buffer.from('payload'));
      const wan = (l3: Buffer) => ethernetFrame('02:00:00:00:00:11', '02:00:00:00:00:22', l3);
      const plain = decodeObservations(testing.process({ ports: PORTS, observe: true }, [{ port: 1, frame: wan(inner6) }]).observations as Buffer, reasons)[0];
      const tunnels = [
        { mode: 'sit' as const, local: parseIPv4('198.51.100.1'), remote: parseIPv4('198.51.100.2'), frame: wan(ip4Packet({ src: '198.51.100.2', dst: '198.51.100.1' }, { proto: 41, data: inner6 })) },
        { mode: 'ip6ip6' as const, local: parseIPv6('2001:db8:2::1'), remote: parseIPv6('2001:db8:2::2'), frame: wan(ipInIp6Packet({ src: '2001:db8:2::2', dst: '2001:db8:2::1', encapLimit: null }, inner6)) },
      ];
      for (const t of tunnels) {
        const r = testing.process({ ports: PORTS, tunnels: [{ ...base, id: 0, mode: t.mode, local: t.local, remote: t.remote }], observe: true }, [{ port: 1, frame: t.frame }]);
        const [o] = decodeObservations(r.observations as Buffer, reasons);
        assert.deepEqual([o?.fingerprint, o?.tcpFlags, o?.length], [plain?.fingerprint, TCP_FIN | TCP_ACK, inner6.length], t.mode);
      }
    });

    it('give a packet and its NATed copy the same fingerprint, and another packet a different one', () => {
      const r = testing.process({ ports: PORTS, observe: true }, [
        { port: 0, frame: lan('192.168.0.10', 40000) },
        { port: 0, frame: lan('198.51.100.1', 61000) }, // the same packet after SNAT
        { port: 0, frame: lan('192.168.0.10', 40000, TCP_ACK, 'other') },
      ]);
      const [a, natted, other] = decodeObservations(r.observations as Buffer, reasons);
      assert.equal(natted?.fingerprint, a?.fingerprint);
      assert.notEqual(other?.fingerprint, a?.fingerprint);
    });

    it('give a packet whose payload is in a later mbuf segment the fingerprint it has in one, reading no byte past a segment', () => {
      const frame = lan('192.168.0.10', 40000, TCP_ACK, 'payload in the second and third segments');
      const headers = 14 + 20 + 20;
      const r = testing.process({ ports: PORTS, observe: true }, [
        { port: 0, frame },
        { port: 0, frame, segments: [headers, 10, frame.length - headers - 10] },
        { port: 0, frame, segments: [headers + 3, frame.length - headers - 3] },
      ]);
      const [whole, split, partly] = decodeObservations(r.observations as Buffer, reasons);
      assert.ok(whole);
      assert.deepEqual([split?.fingerprint, partly?.fingerprint], [whole.fingerprint, whole.fingerprint]);
    });

    it('are not made for packets without a flow key (ARP, ICMP)', () => {
      const arp = Buffer.concat([Buffer.from('ffffffffffff020000000001' + '0806', 'hex'), Buffer.alloc(28)]);
      const icmp = ethernetFrame('02:00:00:00:00:01', '02:00:00:00:00:02', ip4Packet({ src: '1.1.1.1', dst: '2.2.2.2' }, { proto: 1, data: Buffer.alloc(8) }));
      const r = testing.process({ ports: PORTS, observe: true }, [{ port: 0, frame: arp }, { port: 0, frame: icmp }]);
      assert.equal(r.observations?.length, 0);
      assert.equal(r.stats.punts.multicast! + r.stats.punts.l4proto!, 2);
    });
  });

  describe('the punt policer', () => {
    it('passes a burst of punts and drops the rest, counted, while offloaded flows keep flowing', () => {
      const ports = [{ ...PORTS[0]!, puntCost: 1000, puntBurst: 3000 }, ...PORTS.slice(1)];
      const packets = [
        ...Array.from({ length: 10 }, (_, i) => ({ port: 0, frame: lan('192.168.0.10', 41000 + i) })),
        ...Array.from({ length: 5 }, () => ({ port: 0, frame: udp() })),
      ];
      const r = testing.process({ ports, flows: [{ orig: udpFlow() }] }, packets);
      assert.equal(r.stats.punts.miss, 3);
      assert.equal(r.stats.drops.punt_policed, 7);
      assert.equal(r.stats.fastPackets, 5);
    });

    it('never polices an offloaded TCP flow\'s FIN and RST: they are forwarded, not punted, while misses flood', () => {
      const ports = [{ ...PORTS[0]!, puntCost: 1000, puntBurst: 1000 }, ...PORTS.slice(1)];
      const tcpFlow: NativeFlowSpec = { ...udpFlow(), l4: 6, sport: 40000, dport: 80 };
      const flood = Array.from({ length: 8 }, (_, i) => ({ port: 0, frame: lan('192.168.0.10', 41000 + i) }));
      const r = testing.process({ ports, flows: [{ orig: tcpFlow }] }, [
        ...flood,
        { port: 0, frame: lan('192.168.0.10', 40000, TCP_FIN | TCP_ACK) },
        { port: 0, frame: lan('192.168.0.10', 40000, TCP_RST) },
      ], { burst: 1 });
      assert.equal(r.stats.drops.punt_policed, 7);
      assert.deepEqual(r.results.slice(8).map((x) => [x.reason, x.port]), [['forward', 1], ['forward', 1]]);
      assert.equal(r.flows[0]?.orig.closing, true);
    });
  });
});
