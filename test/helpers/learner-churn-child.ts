// Run with node --expose-gc: offloads `count` UDP connections through a Learner (each
// forwarded once by "the kernel", conntrack answering that it has it), lets conntrack destroy
// each of them, runs the learner's ticks, and prints one JSON line: the heap the learner
// retains afterwards (after a full GC, before and after) and its state. A gateway under
// connection churn goes through this a thousand times a second, for days.
import type { CtConnection, CtTuple } from '../../lib/conntrack';
import { IPS } from '../../lib/conntrack';
import type { Observation } from '../../lib/slowpath/observations';
import { stubLearner } from './learner-stubs';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');
const count = Number(process.argv[2] ?? 200_000);
const reply = (t: CtTuple): CtTuple => ({ ...t, src: t.dst, dst: t.src, sport: t.dport, dport: t.sport });
const connectionOf = (t: CtTuple): CtConnection => ({
  id: 1, orig: t, reply: reply(t), status: IPS.CONFIRMED | IPS.SEEN_REPLY | IPS.ASSURED, tcpState: null, helper: null,
  timeout: 30, mark: 0, zone: 0, tcpFlags: { orig: 0, reply: 0 },
});
const tracker = { get: async (tuples: readonly CtTuple[]) => tuples.map(connectionOf), update: async () => ({ ok: 0, notFound: 0, failed: 0 }) };
let clockMs = 0;
const learner = stubLearner(tracker, () => clockMs);
const settle = () => new Promise((resolve) => setImmediate(resolve));

async function main(): Promise<void> {
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const BATCH = 1000;
  for (let from = 0; from < count; from += BATCH) {
    const conns: CtConnection[] = [];
    const records: Observation[] = [];
    for (let i = from; i < from + BATCH; i++) {
      const packet = {
        tsc: 0, reason: 'miss', tcpFlags: 0, family: 4 as const, proto: 17, src: `192.168.${(i >> 8) & 255}.${i & 255}`, dst: '10.0.0.10',
        sport: 1024 + (i % 60_000), dport: 53, tunnelled: false, outerSrc: null, outerDst: null, fingerprint: i + 1, length: 40,
      };
      records.push({ ...packet, kind: 'punt', port: 0, tunnel: null, dstMac: null, srcMac: null });
      records.push({ ...packet, kind: 'egress-port', port: 1, tunnel: null, dstMac: Buffer.from([2, 0, 0, 0, 0, 1]), srcMac: Buffer.from([2, 0, 0, 0, 0, 2]) });
      conns.push(connectionOf({ family: 4, proto: 'udp', src: packet.src, dst: packet.dst, sport: packet.sport, dport: packet.dport }));
    }
    learner.observe(records);
    await settle();
    await settle();
    learner.onDestroyed(conns);
    clockMs += 10;
    learner.tick();
  }
  // A minute later, ticks until what the learner keeps for connections to come (forwarded
  // directions, bounded anyway) has expired: what remains is what the churn left behind.
  clockMs += 60_000;
  for (let i = 0; i < 1000 && learner.stats().directions > 0; i++) learner.tick();
  gc?.();
  const after = process.memoryUsage().heapUsed;
  process.stdout.write(`${JSON.stringify({ retainedBytes: after - before, stats: learner.stats() })}\n`);
}

void main();
