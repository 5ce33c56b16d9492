// The learner's offload decisions, fed with observation records as the fast path makes them
// and with conntrack's answers as ctnetlink gives them. The dataplane side records the calls
// the learner makes, and conntrack is a table the test fills: what is under test here is
// which flows get offloaded, when, with what rewrite, and what conntrack is told. The real
// ctnetlink is exercised in test/conntrack and, with the whole gateway, in test/netns.
import assert from 'node:assert/strict';

import { IPS, type CtConnection, type CtTuple, type CtUpdate } from '../../lib/conntrack';
import type { FlowPairOptions, ReapedFlow } from '../../lib/dataplane';
import { ConnectionTracker, FlowInstaller, Learner, LearnerPolicy } from '../../lib/slowpath/learner';
import type { Observation } from '../../lib/slowpath/observations';

const SYN = 0x02, ACK = 0x10, FIN = 0x01, RST = 0x04;
const PORTS = ['eth0', 'eth1', 'eth2'];
const TUNNELS = ['tun0', 'v6in6', 'v6in4'];

class RecordingInstaller implements FlowInstaller {
  installed = new Map<number, FlowPairOptions>();
  removed: number[] = [];
  toReap: ReapedFlow[] = [];
  nextId = 1;
  clock = 1_000_000;
  readonly tscHz = 1_000_000_000;
  addFlow(o: FlowPairOptions): number {
    const id = this.nextId++;
    this.installed.set(id, o);
    return id;
  }
  removeFlow(id: number): boolean {
    this.removed.push(id);
    return this.installed.delete(id);
  }
  reap(): ReapedFlow[] {
    const r = this.toReap;
    this.toReap = [];
    for (const f of r) this.installed.delete(f.flow.id);
    return r;
  }
  portName(id: number) {
    return PORTS[id];
  }
  tunnelName(id: number) {
    return TUNNELS[id];
  }
  tsc() {
    return this.clock;
  }
}

const key = (t: CtTuple) => `${t.proto}|${t.src}|${t.sport}|${t.dst}|${t.dport}`;

/** Conntrack as a table: found by either direction's tuple, as ctnetlink's get does. */
class TableTracker implements ConnectionTracker {
  readonly conns = new Map<string, CtConnection>();
  readonly updates: CtUpdate[] = [];
  queries = 0;
  put(c: CtConnection): void {
    this.conns.set(key(c.orig), c);
    this.conns.set(key(c.reply), c);
  }
  async get(tuples: readonly CtTuple[]) {
    this.queries += tuples.length;
    return tuples.map((t) => this.conns.get(key(t)) ?? null);
  }
  async update(updates: readonly CtUpdate[]) {
    this.updates.push(...updates);
    return { ok: updates.length, notFound: 0, failed: 0 };
  }
}

const policy = (over: Partial<LearnerPolicy> = {}): LearnerPolicy => ({
  devices: ['eth0', 'eth1'],
  l4proto: ['tcp', 'udp'],
  timeout: { tcp: 30, udp: 30 },
  tunnelUnderlay: new Map([['tun0', 'eth1']]),
  conntrack: { tcpClose: 10, udp: 30, udpStream: 120 },
  ...over,
});

let fp = 1;
interface Packet {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto?: number;
  flags?: number;
  length?: number;
}
/** The (inner) packet's family, by its addresses. */
const familyOf = (p: Packet): 4 | 6 => (p.src.includes(':') ? 6 : 4);
function punt(p: Packet, o: { port?: number; tunnel?: number; tsc?: number; outer?: boolean } = {}): Observation {
  return {
    kind: 'punt', tsc: o.tsc ?? 0, reason: 'miss', tcpFlags: p.flags ?? 0, port: o.port ?? 0, tunnel: o.tunnel ?? null, family: familyOf(p), proto: p.proto ?? 6,
    src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, tunnelled: o.outer === true || o.tunnel !== undefined, outerSrc: o.outer === true || o.tunnel !== undefined ? '2001:db8:2::2' : null,
    outerDst: o.outer === true || o.tunnel !== undefined ? '2001:db8:2::1' : null, dstMac: null, srcMac: null, fingerprint: fp, length: p.length ?? 40,
  };
}
function egress(p: Packet, out: { port: number } | { tunnel: number }, fingerprint = fp): Observation {
  const port = 'port' in out ? out.port : null;
  return {
    kind: port === null ? 'egress-tunnel' : 'egress-port', tsc: 0, reason: null, tcpFlags: p.flags ?? 0, port, tunnel: 'tunnel' in out ? out.tunnel : null, family: familyOf(p), proto: p.proto ?? 6,
    src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, tunnelled: false, outerSrc: null, outerDst: null,
    dstMac: port === null ? null : Buffer.from([2, 0, 0, 0, 0, port + 0x10]), srcMac: port === null ? null : Buffer.from([0, 0x22, 0x33, 0x44, 0x55, port]), fingerprint, length: p.length ?? 40,
  };
}

/** Lets the learner's conntrack queries and their answers run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A packet the kernel forwarded (as `as`, when it rewrote it): its punt, then its egress. */
async function forwarded(l: Learner, p: Packet, inp: { port?: number; tunnel?: number; tsc?: number }, out: { port: number } | { tunnel: number }, as: Packet = p) {
  fp++;
  l.observe([punt(p, inp), egress({ ...as, flags: p.flags, proto: p.proto, length: p.length }, out)]);
  await settle();
}

const orig = { src: '192.168.0.10', dst: '10.0.0.1', sport: 40000, dport: 80 };
const reply = { src: '10.0.0.1', dst: '192.168.0.10', sport: 80, dport: 40000 };
const tuple = (p: Packet, proto: 'tcp' | 'udp' = 'tcp'): CtTuple => ({ family: familyOf(p), proto, src: p.src, dst: p.dst, sport: p.sport, dport: p.dport });

function connection(o: Packet, r: Packet, over: Partial<CtConnection> = {}, proto: 'tcp' | 'udp' = 'tcp'): CtConnection {
  return {
    id: 7, orig: tuple(o, proto), reply: tuple(r, proto), status: IPS.CONFIRMED | IPS.SEEN_REPLY | IPS.ASSURED,
    tcpState: proto === 'tcp' ? 'ESTABLISHED' : null, helper: null, timeout: 120, mark: 0, zone: 0, tcpFlags: { orig: 0, reply: 0 }, ...over,
  };
}

describe('learner', () => {
  let dp: RecordingInstaller;
  let ct: TableTracker;
  let learner: Learner;
  beforeEach(() => {
    dp = new RecordingInstaller();
    ct = new TableTracker();
    learner = new Learner(dp, ct, policy());
  });

  it('offloads a TCP connection once conntrack has it ESTABLISHED and ASSURED, both directions at once, oriented as conntrack', async () => {
    ct.put(connection(orig, reply, { tcpState: 'SYN_SENT', status: IPS.CONFIRMED }));
    await forwarded(learner, { ...orig, flags: SYN }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...reply, flags: SYN | ACK }, { port: 1 }, { port: 0 });
    assert.equal(ct.queries, 0, 'no question is asked for a SYN');
    ct.put(connection(orig, reply, { tcpState: 'SYN_RECV', status: IPS.CONFIRMED | IPS.SEEN_REPLY }));
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 0, 'not before conntrack says ESTABLISHED and ASSURED');
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
    const f = [...dp.installed.values()][0] as FlowPairOptions;
    assert.deepEqual(f.original, { in: 'eth0', proto: 'tcp', ...orig, out: { port: 'eth1', mac: '02:00:00:00:00:11', srcMac: '00:22:33:44:55:01' } });
    assert.deepEqual(f.reply, { in: 'eth1', proto: 'tcp', ...reply, out: { port: 'eth0', mac: '02:00:00:00:00:10', srcMac: '00:22:33:44:55:00' } });
    await settle();
    assert.deepEqual(ct.updates, [{ orig: tuple(orig), timeout: 86400, liberal: true }], "conntrack's entry made liberal and kept for a day, as flow_offload_add does");
  });

  it('offloads a connection it saw no handshake for (older than flowgate, or back from idle) on its next packets', async () => {
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 0, 'one direction is not enough for TCP');
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 1);
  });

  it('pairs an egress delivered before its punt, as the slow-path thread may batch them', async () => {
    ct.put(connection(orig, reply));
    for (const [p, inp, out] of [[reply, 1, 0], [orig, 0, 1]] as const) {
      fp++;
      learner.observe([egress({ ...p, flags: ACK }, { port: out })]);
      learner.observe([punt({ ...p, flags: ACK }, { port: inp })]);
      await settle();
    }
    assert.equal(dp.installed.size, 1);
  });

  it('pairs records on their length, family and protocol as well as the fingerprint', async () => {
    ct.put(connection(orig, reply, {}, 'udp'));
    fp++;
    learner.observe([punt({ ...orig, proto: 17, length: 100 }), egress({ ...orig, proto: 17, length: 60 }, { port: 1 })]);
    await settle();
    assert.equal(learner.stats().forwarded, 0, 'same fingerprint, another packet');
    assert.equal(dp.installed.size, 0);
  });

  it('never offloads a connection with a helper, a sequence adjustment, or not yet confirmed', async () => {
    const cases: Partial<CtConnection>[] = [{ helper: 'ftp' }, { status: IPS.CONFIRMED | IPS.ASSURED | IPS.SEQ_ADJUST }, { status: IPS.ASSURED }];
    for (const [i, over] of cases.entries()) {
      const o = { ...orig, sport: 41000 + i };
      const r = { ...reply, dport: 41000 + i };
      ct.put(connection(o, r, over));
      await forwarded(learner, { ...o, flags: ACK }, { port: 0 }, { port: 1 });
      await forwarded(learner, { ...r, flags: ACK }, { port: 1 }, { port: 0 });
    }
    assert.equal(dp.installed.size, 0);
    assert.deepEqual(learner.stats().ctRefused, { unconfirmed: 2, not_established: 0, helper: 2, seq_adjust: 2, nat_clash: 0, l4proto: 0 });
  });

  it('is not stopped by a FIN or RST the kernel dropped: conntrack decides, not the flags it saw', async () => {
    ct.put(connection(orig, reply));
    fp++;
    learner.observe([punt({ ...orig, flags: RST | ACK })]);
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 1);
  });

  it('does not offload on a FIN or RST, nor a connection conntrack has closing', async () => {
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: FIN | ACK }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...reply, flags: FIN | ACK }, { port: 1 }, { port: 0 });
    assert.equal(ct.queries, 0);
    ct.put(connection(orig, reply, { tcpState: 'TIME_WAIT' }));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 0);
    assert.equal(learner.stats().ctRefused.not_established, 1);
  });

  it('offloads UDP one way once conntrack confirmed it, then both ways when the reply comes', async () => {
    const q = { ...orig, proto: 17, dport: 53 };
    const a = { src: q.dst, dst: q.src, sport: q.dport, dport: q.sport, proto: 17 };
    ct.put(connection(q, a, { status: IPS.CONFIRMED }, 'udp'));
    await forwarded(learner, q, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
    assert.equal([...dp.installed.values()][0]?.reply, undefined);
    await forwarded(learner, a, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 1);
    assert.deepEqual(dp.removed, [1], 'the one-way flow made way for the pair');
    assert.equal([...dp.installed.values()][0]?.reply?.in, 'eth1');
    await settle();
    assert.deepEqual(ct.updates, [{ orig: tuple(q, 'udp'), timeout: 86400 }, { orig: tuple(q, 'udp'), timeout: 86400 }], 'kept for a day, again when the reply joined; no liberal flag for UDP');
  });

  it('extends the conntrack timeout again when a packet of an offloaded connection went through the kernel, which shortened it', async () => {
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    ct.updates.length = 0;
    // Too big for the fast path, say: the kernel forwards it (and answers for conntrack).
    await forwarded(learner, { ...orig, flags: ACK, length: 1500 }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...orig, flags: ACK, length: 1500 }, { port: 0 }, { port: 1 });
    await settle();
    assert.deepEqual(ct.updates.map((u) => u.timeout), [86400, 86400]);
    assert.equal(dp.installed.size, 1, 'and nothing is installed twice');
  });

  it('offloads a masqueraded connection with the rewrite conntrack\'s reply tuple gives, both ways', async () => {
    const wan = '203.0.113.1';
    const natReply = { src: reply.src, dst: wan, sport: 80, dport: 61000 };
    ct.put(connection(orig, natReply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 }, { ...orig, src: wan, sport: 61000 });
    await forwarded(learner, { ...natReply, flags: ACK }, { port: 1 }, { port: 0 }, reply);
    const f = [...dp.installed.values()][0] as FlowPairOptions;
    assert.deepEqual([f.original.src, f.original.sport, f.original.nat], [orig.src, orig.sport, { src: wan, sport: 61000 }]);
    assert.deepEqual([f.reply?.dst, f.reply?.dport, f.reply?.nat], [wan, 61000, { dst: orig.src, dport: orig.sport }]);
    assert.equal(learner.stats().natInstalls, 1);
  });

  it('offloads a DNAT port forward arriving through the tunnel: decapsulated, then translated', async () => {
    const o = { src: '10.0.0.10', dst: '192.168.100.1', sport: 50000, dport: 8080 };
    const r = { src: '192.168.0.10', dst: '10.0.0.10', sport: 80, dport: 50000 };
    ct.put(connection(o, r));
    await forwarded(learner, { ...o, flags: ACK }, { port: 1, tunnel: 0 }, { port: 0 }, { ...o, dst: r.src, dport: 80 });
    await forwarded(learner, { ...r, flags: ACK }, { port: 0 }, { tunnel: 0 }, { ...r, src: o.dst, sport: 8080 });
    const f = [...dp.installed.values()][0] as FlowPairOptions;
    assert.deepEqual([f.original.tunnel, f.original.nat], ['tun0', { dst: '192.168.0.10', dport: 80 }]);
    assert.deepEqual([f.reply?.out, f.reply?.nat], [{ tunnel: 'tun0' }, { src: '192.168.100.1', sport: 8080 }]);
  });

  it('offloads IPv6 connections through ip6ip6 and sit tunnels, decapsulated one way and encapsulated the other', async () => {
    learner = new Learner(dp, ct, policy({ tunnelUnderlay: new Map([['tun0', 'eth1'], ['v6in6', 'eth1'], ['v6in4', 'eth1']]) }));
    const lan = '2001:db8:10::10';
    const remote = '2001:db8:20::10';
    for (const [tunnel, sport] of [[1, 41000], [2, 42000]] as const) {
      const o = { src: lan, dst: remote, sport, dport: 443 };
      const r = { src: remote, dst: lan, sport: 443, dport: sport };
      ct.put(connection(o, r));
      await forwarded(learner, { ...o, flags: ACK }, { port: 0 }, { tunnel });
      await forwarded(learner, { ...r, flags: ACK }, { port: 1, tunnel }, { port: 0 });
    }
    const flows = [...dp.installed.values()];
    assert.deepEqual(
      flows.map((f) => [f.original.src, f.original.out, f.reply?.in, f.reply?.tunnel, f.reply?.out]),
      [
        [lan, { tunnel: 'v6in6' }, 'eth1', 'v6in6', { port: 'eth0', mac: '02:00:00:00:00:10', srcMac: '00:22:33:44:55:00' }],
        [lan, { tunnel: 'v6in4' }, 'eth1', 'v6in4', { port: 'eth0', mac: '02:00:00:00:00:10', srcMac: '00:22:33:44:55:00' }],
      ],
    );
    // Conntrack was asked about, and told of, the IPv6 connections.
    assert.deepEqual(
      ct.updates.map((u) => [u.orig.family, u.orig.src, u.orig.sport]),
      [
        [6, lan, 41000],
        [6, lan, 42000],
      ],
    );
  });

  it('does not trust a direction the kernel forwarded other than the connection says', async () => {
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 }, { ...orig, src: '203.0.113.9' });
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 0);
  });

  it('never learns a tunnelled packet for no configured tunnel as a plain flow', async () => {
    ct.put(connection(orig, reply, {}, 'udp'));
    fp++;
    learner.observe([punt({ ...orig, proto: 17 }, { port: 1, outer: true }), egress({ ...orig, proto: 17 }, { port: 0 })]);
    await settle();
    assert.equal(dp.installed.size, 0);
    assert.equal(learner.stats().untunnelled, 1);
  });

  it('offloads only between flowtable devices, counting a tunnel through its underlay port', async () => {
    const q = { ...orig, proto: 17 };
    for (const sport of [40000, 40001, 40002]) ct.put(connection({ ...q, sport }, { ...reply, proto: 17, dport: sport }, {}, 'udp'));
    await forwarded(learner, q, { port: 0 }, { port: 2 });
    assert.equal(dp.installed.size, 0, 'eth2 is not a flowtable device');
    await forwarded(learner, { ...q, sport: 40001 }, { port: 0 }, { tunnel: 0 });
    assert.deepEqual([...dp.installed.values()][0]?.original.out, { tunnel: 'tun0' });
    const l = new Learner(dp, ct, policy({ devices: ['eth0'] }));
    await forwarded(l, { ...q, sport: 40002 }, { port: 0 }, { tunnel: 0 });
    assert.equal(dp.installed.size, 1, "tun0's underlay eth1 is not a device here");
  });

  it('offloads only the configured L4 protocols', async () => {
    learner = new Learner(dp, ct, policy({ l4proto: ['tcp'] }));
    ct.put(connection({ ...orig, proto: 17 }, { ...reply, proto: 17 }, {}, 'udp'));
    await forwarded(learner, { ...orig, proto: 17 }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 0);
  });

  it('hands a reaped closing TCP connection back to conntrack in CLOSE, and a UDP one with the rest of its timeout', async () => {
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    const q = { ...orig, proto: 17, dport: 53 };
    ct.put(connection(q, { src: q.dst, dst: q.src, sport: 53, dport: q.sport }, {}, 'udp'));
    await forwarded(learner, q, { port: 0 }, { port: 1 });
    ct.updates.length = 0;
    dp.toReap = [
      { flow: { id: 1, closing: true } as ReapedFlow['flow'], reason: 'teardown' },
      { flow: { id: 2, closing: false } as ReapedFlow['flow'], reason: 'idle' },
    ];
    learner.tick();
    await settle();
    assert.deepEqual(ct.updates, [
      { orig: tuple(orig), tcpState: 'CLOSE', timeout: 10 },
      { orig: tuple(q, 'udp'), timeout: 90 },
    ]);
    assert.equal(learner.stats().connections, 0);
  });

  it('removes the flow of a connection conntrack destroyed, and after lost events every flow not in the dump', async () => {
    const conns = [0, 1, 2].map((i) => connection({ ...orig, sport: 42000 + i, proto: 17 }, { ...reply, dport: 42000 + i, proto: 17 }, {}, 'udp'));
    for (const c of conns) {
      ct.put(c);
      await forwarded(learner, { ...orig, sport: c.orig.sport, proto: 17 }, { port: 0 }, { port: 1 });
    }
    assert.equal(dp.installed.size, 3);
    assert.equal(learner.onDestroyed([conns[0] as CtConnection]), 1);
    assert.equal(learner.onResync([conns[1] as CtConnection]), 1);
    assert.deepEqual([...dp.installed.keys()], [2]);
    assert.deepEqual(learner.stats().removedBy, { idle: 0, teardown: 0, invalidated: 0, destroyed: 1, resync: 1 });
  });

  it('removes invalidated flows and offloads them again from the next packets', async () => {
    ct.put(connection(orig, reply));
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    await forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    assert.equal(learner.invalidate((f) => f.directions.some((d) => 'port' in d.out && d.out.port === 'eth1')), 1);
    assert.equal(dp.installed.size, 0);
    await forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
  });

  it('keeps its state bounded: a flood of forwarded SYNs evicts the oldest directions and is counted', async () => {
    learner = new Learner(dp, ct, policy(), { pending: 64, directions: 100, queries: 10 });
    for (let i = 0; i < 1000; i++) {
      fp++;
      const p = { ...orig, sport: 1024 + i, flags: SYN };
      learner.observe([punt(p), egress(p, { port: 1 })]);
    }
    for (let i = 0; i < 200; i++) {
      fp++;
      learner.observe([punt({ ...orig, sport: 5000 + i })]);
    }
    await settle();
    const s = learner.stats();
    assert.equal(s.directions, 100);
    assert.equal(s.evicted.directions, 900);
    assert.equal(s.evicted.pending, 136);
    assert.equal(ct.queries, 0);
  });

  it('forgets the oldest state first, by last write, whatever was deleted or written again in between', async () => {
    learner = new Learner(dp, ct, policy({ l4proto: ['udp'] }), { pending: 64, directions: 3, queries: 10 });
    const p = (sport: number) => ({ ...orig, sport, proto: 17 });
    for (const sport of [1, 2, 3]) await forwarded(learner, p(sport), { port: 0 }, { port: 1 });
    await forwarded(learner, p(1), { port: 0 }, { port: 1 }); // 1 is now the youngest
    await forwarded(learner, p(4), { port: 0 }, { port: 1 }); // evicts 2, the oldest write
    ct.put(connection(p(2), { ...reply, dport: 2, proto: 17 }, {}, 'udp'));
    ct.put(connection(p(1), { ...reply, dport: 1, proto: 17 }, {}, 'udp'));
    assert.deepEqual([learner.stats().directions, learner.stats().evicted.directions], [3, 1]);
    // A query answered now finds 1's direction, and not 2's.
    await forwarded(learner, { ...reply, dport: 1, proto: 17 }, { port: 1 }, { port: 0 });
    await forwarded(learner, { ...reply, dport: 2, proto: 17 }, { port: 1 }, { port: 0 });
    const pairs = [...dp.installed.values()].map((f) => [f.original.sport, f.reply?.dport ?? null]);
    assert.deepEqual(pairs, [[1, 1], [80, null]]);
  });

  it('measures the time from the packet that made the connection offloadable to its offload', async () => {
    ct.put(connection({ ...orig, proto: 17 }, { ...reply, proto: 17 }, {}, 'udp'));
    await forwarded(learner, { ...orig, proto: 17 }, { port: 0, tsc: dp.clock - 500_000 }, { port: 1 });
    assert.deepEqual(learner.stats().latencyMs, { p50: 0.5, p99: 0.5, samples: 1 });
  });
});
