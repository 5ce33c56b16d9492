// Run with node --expose-gc: feeds a Learner with the records of `count` forwarded SYNs from
// spoofed sources (each a punt and its egress, none of them ever answered), as a SYN flood
// through the kernel makes them, and prints one JSON line: the heap the learner retains
// afterwards (after a full GC, before and after), its state, and the time of the tick that
// forgets it all.
import { DEFAULT_LIMITS } from '../../lib/slowpath/learner';
import type { Observation } from '../../lib/slowpath/observations';
import { stubLearner } from './learner-stubs';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');
const count = Number(process.argv[2] ?? 300_000);
const tracker = { get: async (t: readonly unknown[]) => t.map(() => null), update: async () => ({ ok: 0, notFound: 0, failed: 0 }) };
let clockMs = 0;
const learner = stubLearner(tracker, () => clockMs);
gc();
const before = process.memoryUsage().heapUsed;
for (let i = 0; i < count; i++) {
  const packet = {
    tsc: 0, reason: 'miss', tcpFlags: 0x02, family: 4 as const, proto: 6, src: `198.18.${(i >> 8) & 255}.${i & 255}`, dst: '10.0.0.10',
    sport: 1024 + (i % 64_000), dport: 80, tunnelled: false, outerSrc: null, outerDst: null, dstMac: null, srcMac: null, fingerprint: i + 1, length: 40,
  };
  const records: Observation[] = [
    { ...packet, kind: 'punt', port: 0, tunnel: null },
    { ...packet, kind: 'egress-tunnel', port: null, tunnel: 0 },
  ];
  learner.observe(records);
}
gc();
const after = process.memoryUsage().heapUsed;
// The tick that forgets all of it at once, once it is stale: the longest there can be.
clockMs += 60_000;
const started = performance.now();
learner.tick();
const tickMs = performance.now() - started;
process.stdout.write(`${JSON.stringify({ retainedBytes: after - before, tickMs, stats: learner.stats(), limits: DEFAULT_LIMITS })}\n`);
