// The learner's offload decisions, fed with observation records as the fast path makes
// them. The dataplane side is a recorder of the calls the learner makes: what is under test
// here is which flows get offloaded, when, and with what.
import assert from 'node:assert/strict';

import type { FlowPairOptions, ReapedFlow } from '../../lib/dataplane';
import { FlowInstaller, Learner, LearnerPolicy } from '../../lib/slowpath/learner';
import type { Observation } from '../../lib/slowpath/observations';

const SYN = 0x02, ACK = 0x10, FIN = 0x01, PSH = 0x08;
const PORTS = ['eth0', 'eth1', 'eth2'];
const TUNNELS = ['tun0'];

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

const policy = (over: Partial<LearnerPolicy> = {}): LearnerPolicy => ({
  devices: ['eth0', 'eth1'],
  l4proto: ['tcp', 'udp'],
  timeout: { tcp: 30, udp: 30 },
  tunnelUnderlay: new Map([['tun0', 'eth1']]),
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
}
function punt(p: Packet, o: { port?: number; tunnel?: number; tsc?: number } = {}): Observation {
  return {
    kind: 'punt', tsc: o.tsc ?? 0, reason: 'miss', tcpFlags: p.flags ?? 0, port: o.port ?? 0, tunnel: o.tunnel ?? null, family: 4, proto: p.proto ?? 6,
    src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, outerSrc: null, outerDst: null, dstMac: null, srcMac: null, fingerprint: fp, length: 40,
  };
}
function egress(p: Packet, out: { port: number } | { tunnel: number }, fingerprint = fp): Observation {
  const port = 'port' in out ? out.port : null;
  return {
    kind: port === null ? 'egress-tunnel' : 'egress-port', tsc: 0, reason: null, tcpFlags: p.flags ?? 0, port, tunnel: 'tunnel' in out ? out.tunnel : null, family: 4, proto: p.proto ?? 6,
    src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, outerSrc: null, outerDst: null,
    dstMac: port === null ? null : Buffer.from([2, 0, 0, 0, 0, port + 0x10]), srcMac: port === null ? null : Buffer.from([0, 0x22, 0x33, 0x44, 0x55, port]), fingerprint, length: 40,
  };
}
/** A packet the kernel forwarded: its punt, then its egress. */
function forwarded(l: Learner, p: Packet, inp: { port?: number; tunnel?: number; tsc?: number }, out: { port: number } | { tunnel: number }) {
  fp++;
  l.observe([punt(p, inp), egress(p, out)]);
}

const orig = { src: '192.168.0.10', dst: '10.0.0.1', sport: 40000, dport: 80 };
const reply = { src: '10.0.0.1', dst: '192.168.0.10', sport: 80, dport: 40000 };

describe('learner', () => {
  let dp: RecordingInstaller;
  let learner: Learner;
  beforeEach(() => {
    dp = new RecordingInstaller();
    learner = new Learner(dp, policy());
  });

  it('offloads TCP only after the handshake, on the first packet without SYN, both directions at once', () => {
    forwarded(learner, { ...orig, flags: SYN }, { port: 0 }, { port: 1 });
    forwarded(learner, { ...reply, flags: SYN | ACK }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 0, 'not during the handshake');
    forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
    const f = [...dp.installed.values()][0] as FlowPairOptions;
    assert.deepEqual(f.original, { in: 'eth0', proto: 'tcp', ...orig, out: { port: 'eth1', mac: '02:00:00:00:00:11', srcMac: '00:22:33:44:55:01' } });
    assert.deepEqual(f.reply, { in: 'eth1', proto: 'tcp', ...reply, out: { port: 'eth0', mac: '02:00:00:00:00:10', srcMac: '00:22:33:44:55:00' } });
  });

  it('pairs an egress delivered before its punt, as the slow-path thread may batch them', () => {
    const early = (l: Learner, p: Packet, inp: { port?: number; tunnel?: number }, out: { port: number } | { tunnel: number }) => {
      fp++;
      l.observe([egress(p, out)]);
      l.observe([punt(p, inp)]);
    };
    early(learner, { ...orig, flags: SYN }, { port: 0 }, { port: 1 });
    early(learner, { ...reply, flags: SYN | ACK }, { port: 1 }, { port: 0 });
    early(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
    assert.equal([...dp.installed.values()][0]?.reply?.in, 'eth1');
  });

  it('does not offload a TCP connection it saw no handshake for', () => {
    forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    forwarded(learner, { ...reply, flags: ACK | PSH }, { port: 1 }, { port: 0 });
    forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 0);
  });

  it('does not offload a connection that is closing', () => {
    forwarded(learner, { ...orig, flags: SYN }, { port: 0 }, { port: 1 });
    forwarded(learner, { ...reply, flags: SYN | ACK }, { port: 1 }, { port: 0 });
    forwarded(learner, { ...orig, flags: FIN | ACK }, { port: 0 }, { port: 1 });
    forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 0);
  });

  it('offloads UDP one way once the kernel forwarded it, then both ways when the reply comes', () => {
    const q = { ...orig, proto: 17, dport: 53 };
    forwarded(learner, q, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
    assert.equal([...dp.installed.values()][0]?.reply, undefined);
    forwarded(learner, { src: q.dst, dst: q.src, sport: q.dport, dport: q.sport, proto: 17 }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 1);
    assert.deepEqual(dp.removed, [1], 'the one-way flow made way for the pair');
    assert.equal([...dp.installed.values()][0]?.reply?.in, 'eth1');
  });

  it('never offloads what the kernel did not forward (dropped by its ruleset)', () => {
    fp++;
    learner.observe([punt({ ...orig, proto: 17 })]);
    assert.equal(dp.installed.size, 0);
  });

  it('leaves NATed connections in the slow path', () => {
    fp++;
    learner.observe([punt({ ...orig, proto: 17 }), egress({ ...orig, src: '203.0.113.5', sport: 61000, proto: 17 }, { port: 1 })]);
    assert.equal(dp.installed.size, 0);
    assert.equal(learner.stats().natSkipped, 1);
  });

  it('offloads only between flowtable devices, counting a tunnel through its underlay port', () => {
    forwarded(learner, { ...orig, proto: 17 }, { port: 0 }, { port: 2 });
    assert.equal(dp.installed.size, 0, 'eth2 is not a flowtable device');
    forwarded(learner, { ...orig, proto: 17, sport: 40001 }, { port: 0 }, { tunnel: 0 });
    assert.deepEqual([...dp.installed.values()][0]?.original.out, { tunnel: 'tun0' });
    const l = new Learner(dp, policy({ devices: ['eth0'] }));
    forwarded(l, { ...orig, proto: 17, sport: 40002 }, { port: 0 }, { tunnel: 0 });
    assert.equal(dp.installed.size, 1, "tun0's underlay eth1 is not a device here");
  });

  it('offloads the decapsulated direction with its tunnel', () => {
    const q = { ...orig, proto: 17 };
    forwarded(learner, q, { port: 0 }, { tunnel: 0 });
    forwarded(learner, { src: q.dst, dst: q.src, sport: q.dport, dport: q.sport, proto: 17 }, { port: 1, tunnel: 0 }, { port: 0 });
    const f = [...dp.installed.values()][0] as FlowPairOptions;
    assert.deepEqual([f.original.out, f.reply?.tunnel, f.reply?.in], [{ tunnel: 'tun0' }, 'tun0', 'eth1']);
  });

  it('offloads only the configured L4 protocols', () => {
    learner = new Learner(dp, policy({ l4proto: ['tcp'] }));
    forwarded(learner, { ...orig, proto: 17 }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 0);
  });

  it('forgets reaped flows, so that a new connection on the same tuple is learned again', () => {
    forwarded(learner, { ...orig, proto: 17 }, { port: 0 }, { port: 1 });
    dp.toReap = [{ flow: { id: 1 } as ReapedFlow['flow'], reason: 'idle', closing: false }];
    learner.tick();
    assert.equal(learner.stats().removedBy.idle, 1);
    forwarded(learner, { ...orig, proto: 17 }, { port: 0 }, { port: 1 });
    assert.equal(dp.installed.size, 1);
    assert.ok(dp.installed.has(2));
  });

  it('removes invalidated flows and relearns them from the next packets, TCP state kept', () => {
    forwarded(learner, { ...orig, flags: SYN }, { port: 0 }, { port: 1 });
    forwarded(learner, { ...reply, flags: SYN | ACK }, { port: 1 }, { port: 0 });
    forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    assert.equal(learner.invalidate((f) => f.directions.some((d) => 'port' in d.out && d.out.port === 'eth1')), 1);
    assert.equal(dp.installed.size, 0);
    forwarded(learner, { ...orig, flags: ACK }, { port: 0 }, { port: 1 });
    forwarded(learner, { ...reply, flags: ACK }, { port: 1 }, { port: 0 });
    assert.equal(dp.installed.size, 1);
  });

  it('measures the time from a connection\'s first packet to its offload', () => {
    forwarded(learner, { ...orig, proto: 17 }, { port: 0, tsc: dp.clock - 500_000 }, { port: 1 });
    assert.deepEqual(learner.stats().latencyMs, { p50: 0.5, p99: 0.5, samples: 1 });
  });
});
