/**
 * Benchmark of flow learning, end to end, in the demo's topology (two flowgate sites; the
 * LAN host sends new UDP flows into site A's tunnel): how long from a flow's first packet
 * to its offload (the learner's offload_latency_ms), and how many new flows per second site
 * A learns. A benchmark, not a test: it prints figures.
 *
 *   node dist/lib/demo/learn-bench.js [--runs 3] [--json]
 *
 * Each run, on one topology (site A restarted between runs):
 *   idle      400 new flows, 200 a second: latency when nothing else happens (p50, p99).
 *   sweep     2 s of new flows at each of 10k, 20k, 30k and 40k a second: the share learned
 *             and the latency at each rate.
 *   flood     60,000 new flows as fast as one Node.js socket sends them; flows learned per
 *             second = flows.added over the time from the first datagram to the last flow
 *             learned.
 * Every datagram is a new flow (its own port pair); the remote host drops them silently, so
 * nothing comes back through the tunnel. Site B only forwards (it offloads TCP only), so
 * that its learning does not compete for the same cores. Figures are medians over the runs.
 *
 * `--components` measures the control plane's parts alone, in a child process (EAL on
 * net_null devices, no traffic), per flow: decoding observation records, the learner's
 * decisions (with conntrack's answers made up in memory, to time the JavaScript alone),
 * ctnetlink lookups against the real kernel (tuples it does not have: the same lookup and
 * round trip), ctnetlink timeout updates of real connections, and the N-API flow insertions.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';

import { median } from '../bench/median';
import { Conntrack, type CtConnection, type CtTuple } from '../conntrack';
import { Dataplane, exceptionReasons } from '../dataplane';
import type { GatewayStats } from '../gateway/types';
import { KEY, OBS, OBSERVATION_SIZE, decodeObservations } from '../slowpath/observations';
import { Learner } from '../slowpath/learner';
import { DEMO_ADDRESSES, DemoTopology } from './topology';
import { startTraffic } from './traffic';

const IDLE_FLOWS = 400;
const IDLE_RATE = 200;
const SWEEP_RATES = [10_000, 20_000, 30_000, 40_000];
const SWEEP_SECONDS = 2;
const FLOOD_FLOWS = 60_000;
const BASE_PORT = 1024;
const UDP_IDLE_TIMEOUT_S = 3;
const POLL_MS = 100;
/** flows.added unchanged this long: the learner has caught up. */
const SETTLED_MS = 1000;
const COMPONENT_FLOWS = 50_000;

interface Latency {
  p50: number | null;
  p99: number | null;
}

/** Where the datagrams of a step went, stage by stage, at site A. */
interface Funnel {
  /** Reached the veth under site A's port eth0 (kernel counter). */
  atVeth: number;
  /** Read by flowgate's port eth0 (AF_PACKET); the rest overflowed its ring. */
  received: number;
  /** Dropped by the punt policer (slowpath rate and burst). */
  policed: number;
  /** Handed to the kernel through the TAP. */
  punted: number;
  /** Routed by the kernel into tun0, and of those dropped because tun0's queue was full. */
  intoTunnel: number;
  tunnelQueueDrops: number;
  /** Observation records delivered to the learner, and lost on the way (rings or queue full). */
  observations: number;
  observationsLost: number;
}

interface Step {
  offered: number;
  learned: number;
  /** Flows learned per second, first datagram to last flow learned. */
  rate: number;
  latencyMs: Latency;
  senderRate: number;
  policed: number;
  observationsLost: number;
  funnel: Funnel;
}

interface Run {
  idle: Latency;
  sweep: (Step & { pps: number })[];
  flood: Step;
}

function medianOrNull(values: number[]): number | null {
  return values.length === 0 ? null : median(values);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until site A's flows.added stops growing; returns the last stats and when it last grew. */
async function settle(topology: DemoTopology): Promise<{ stats: GatewayStats; lastGrowthAt: number }> {
  let stats = await topology.site('a').stats();
  let lastGrowthAt = performance.now();
  for (;;) {
    await sleep(POLL_MS);
    const next = await topology.site('a').stats();
    if (next.flows.added !== stats.flows.added) lastGrowthAt = performance.now();
    stats = next;
    if (performance.now() - lastGrowthAt > SETTLED_MS) return { stats, lastGrowthAt };
  }
}

/** Waits until site A's flows have expired and been reaped, so that the next step starts from an empty table. */
async function drain(topology: DemoTopology): Promise<void> {
  while ((await topology.site('a').stats()).flows.active > 0) await sleep(POLL_MS * 5);
}

interface LinkCounters {
  rx: number;
  tx: number;
  txDropped: number;
}

async function linkCounters(topology: DemoTopology): Promise<Record<string, LinkCounters>> {
  type Dump = { ifname: string; stats64: { rx: { packets: number }; tx: { packets: number; dropped: number } } }[];
  const links = JSON.parse(await topology.run('a', ['ip', '-s', '-j', 'link', 'show'])) as Dump;
  return Object.fromEntries(links.map((l) => [l.ifname, { rx: l.stats64.rx.packets, tx: l.stats64.tx.packets, txDropped: l.stats64.tx.dropped }]));
}

async function step(topology: DemoTopology, flows: number, pps?: number): Promise<Step> {
  const linksBefore = await linkCounters(topology);
  const before = await topology.site('a').stats();
  const started = performance.now();
  const sent = await startTraffic(topology.ns.lan, {
    kind: 'udp-flows',
    host: DEMO_ADDRESSES.remoteHost,
    basePort: BASE_PORT,
    flows,
    ...(pps === undefined ? {} : { pps }),
  }).result;
  const { stats: after, lastGrowthAt } = await settle(topology);
  const linksAfter = await linkCounters(topology);
  const learned = after.flows.added - before.flows.added;
  await drain(topology);
  const link = (name: string, pick: (c: LinkCounters) => number) => pick(linksAfter[name] as LinkCounters) - pick(linksBefore[name] as LinkCounters);
  return {
    offered: sent.sent,
    learned,
    rate: learned / ((lastGrowthAt - started) / 1000),
    latencyMs: after.learner.offload_latency_ms,
    senderRate: sent.sent / sent.seconds,
    policed: after.slowpath.policed - before.slowpath.policed,
    observationsLost: after.learner.observations_lost - before.learner.observations_lost,
    funnel: {
      atVeth: link('a-lan', (c) => c.rx),
      received: (after.ports.eth0?.rx_packets ?? 0) - (before.ports.eth0?.rx_packets ?? 0),
      policed: after.slowpath.policed - before.slowpath.policed,
      punted: after.slowpath.packets - before.slowpath.packets,
      intoTunnel: link('tun0', (c) => c.tx + c.txDropped),
      tunnelQueueDrops: link('tun0', (c) => c.txDropped),
      observations: after.learner.observations - before.learner.observations,
      observationsLost: after.learner.observations_lost - before.learner.observations_lost,
    },
  };
}

function describeFunnel(f: Funnel, offered: number, learned: number): string {
  return (
    `sent ${offered} -> at the veth ${f.atVeth} -> read by the port ${f.received} -> policed ${f.policed} -> punted ${f.punted} -> ` +
    `routed into tun0 ${f.intoTunnel} (${f.tunnelQueueDrops} dropped, queue full) -> observation records ${f.observations} (${f.observationsLost} lost) -> learned ${learned}`
  );
}

async function oneRun(topology: DemoTopology, log: (line: string) => void): Promise<Run> {
  const idle = await step(topology, IDLE_FLOWS, IDLE_RATE);
  log(`  idle: ${IDLE_FLOWS} flows at ${IDLE_RATE}/s, latency p50 ${ms(idle.latencyMs.p50)} p99 ${ms(idle.latencyMs.p99)}`);
  const sweep: Run['sweep'] = [];
  for (const pps of SWEEP_RATES) {
    const s = await step(topology, pps * SWEEP_SECONDS, pps);
    sweep.push({ ...s, pps });
    log(`  ${pps}/s offered: ${describeStep(s)}`);
  }
  const flood = await step(topology, FLOOD_FLOWS);
  log(`  flood: ${describeStep(flood)}`);
  log(`    ${describeFunnel(flood.funnel, flood.offered, flood.learned)}`);
  return { idle: idle.latencyMs, sweep, flood };
}

function ms(v: number | null): string {
  return v === null ? '-' : `${v.toFixed(3)} ms`;
}

function describeStep(s: Step): string {
  return (
    `${s.learned}/${s.offered} learned (${((s.learned / s.offered) * 100).toFixed(1)} %), ${s.rate.toFixed(0)} flows/s, ` +
    `latency p50 ${ms(s.latencyMs.p50)} p99 ${ms(s.latencyMs.p99)}; sender ${s.senderRate.toFixed(0)}/s, policed ${s.policed}, observations lost ${s.observationsLost}`
  );
}

// ---- the JavaScript side alone --------------------------------------------------------------

interface Components {
  /** Microseconds per flow (a punt and an egress record). */
  decodeUs: number;
  /** The learner's decisions with a stand-in installer and conntrack answers made up in memory. */
  learnerUs: number;
  /** One ctnetlink lookup, in batches of 64 as the learner sends them. */
  ctGetUs: number;
  /** Dataplane.addFlow alone: validation and the N-API call into the flowtable. */
  addFlowUs: number;
  /** All three, as the gateway runs them. */
  totalUs: number;
}

/** Synthetic records of `n` one-way UDP flows, each a punt on port 0 and its egress on port 1. */
function syntheticRecords(n: number, tsc: number): Buffer {
  const buf = Buffer.alloc(OBSERVATION_SIZE * 2 * n);
  for (let i = 0; i < n; i++) {
    for (const [j, kind] of [
      [0, 1],
      [1, 2],
    ] as const) {
      const off = (2 * i + j) * OBSERVATION_SIZE;
      const k = off + OBS.key;
      buf.writeBigUInt64LE(BigInt(Math.round(tsc)), off + OBS.tsc);
      buf.writeUInt8(kind, off + OBS.kind);
      buf.writeUInt16LE(j, off + OBS.port);
      buf.writeUInt16LE(0xffff, off + OBS.tunnel);
      buf.set([192, 168, 0, 10], k + KEY.ip4Src);
      buf.set([10, 0, 0, 10], k + KEY.ip4Dst);
      buf.writeUInt16BE(2000 + (i >> 16), k + KEY.sport);
      buf.writeUInt16BE(i & 0xffff, k + KEY.dport);
      buf.writeUInt8(4, k + KEY.l3);
      buf.writeUInt8(17, k + KEY.l4);
      buf.set([2, 0, 0, 0, 0, 1], off + OBS.dstMac);
      buf.set([2, 0, 0, 0, 0, 2], off + OBS.srcMac);
      buf.writeUInt32LE(i + 1, off + OBS.fingerprint);
    }
  }
  return buf;
}

/** Lets promises settle until `done` holds. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setImmediate(resolve));
}

async function measureComponents(): Promise<Components> {
  const dp = new Dataplane();
  dp.start({ workers: { cpus: [1], idle: 'adaptive' }, flowCapacity: 262_144, ports: [{ name: 'eth0', device: 'net_null0' }, { name: 'eth1', device: 'net_null1' }] });
  try {
    const n = COMPONENT_FLOWS;
    const reasons = exceptionReasons().punt.map((r) => r.name);
    const buf = syntheticRecords(n, dp.tsc());
    const policy = {
      devices: ['eth0', 'eth1'],
      l4proto: ['udp' as const],
      timeout: { tcp: 30, udp: 30 },
      tunnelUnderlay: new Map<string, string>(),
      conntrack: { tcpClose: 10, udp: 30, udpStream: 120 },
    };
    // As the slow-path thread delivers them: a batch per turn of the event loop, so that
    // conntrack's answers come back in between.
    const batches = async (records: ReturnType<typeof decodeObservations>, fn: (batch: typeof records) => void) => {
      for (let i = 0; i < records.length; i += 64) {
        fn(records.slice(i, i + 64));
        await new Promise((resolve) => setImmediate(resolve));
      }
    };

    let t = performance.now();
    const records = decodeObservations(buf, reasons);
    const decodeUs = ((performance.now() - t) * 1000) / n;

    let installs = 0;
    const standIn = { addFlow: () => ++installs, removeFlow: () => true, reap: () => [], portName: (id: number) => dp.portName(id), tunnelName: () => undefined, tsc: () => dp.tsc(), tscHz: dp.tscHz };
    // Conntrack's answer for a one-way UDP flow the kernel forwarded: confirmed, no NAT.
    const answered = {
      get: async (tuples: readonly CtTuple[]) =>
        tuples.map((t): CtConnection => ({
          id: 1, orig: t, reply: { ...t, src: t.dst, dst: t.src, sport: t.dport, dport: t.sport }, status: 1 << 3, tcpState: null,
          helper: null, timeout: 30, mark: 0, zone: 0, tcpFlags: { orig: 0, reply: 0 },
        })),
      update: async () => ({ ok: 0, notFound: 0, failed: 0 }),
    };
    const dry = new Learner(standIn, answered, policy);
    t = performance.now();
    await batches(records, (b) => dry.observe(b));
    await until(() => installs >= n);
    const learnerUs = ((performance.now() - t) * 1000) / n;

    const ct = Conntrack.open({ events: ['destroy'], onEvents: () => undefined, onResync: () => undefined });
    let ctGetUs: number;
    try {
      const tuples = records.filter((r) => r.kind === 'punt').map((r): CtTuple => ({ family: 4, proto: 'udp', src: r.src, dst: r.dst, sport: r.sport, dport: r.dport }));
      t = performance.now();
      for (let i = 0; i < tuples.length; i += 64) await ct.get(tuples.slice(i, i + 64));
      ctGetUs = ((performance.now() - t) * 1000) / tuples.length;
    } finally {
      ct.close();
    }

    t = performance.now();
    for (let i = 0; i < n; i++)
      dp.addFlow({ original: { in: 'eth0', proto: 'udp', src: '192.168.0.10', dst: '10.0.0.10', sport: 3000 + (i >> 16), dport: i & 0xffff, out: { port: 'eth1', mac: '02:00:00:00:00:01' } } });
    const addFlowUs = ((performance.now() - t) * 1000) / n;
    dp.flushFlows();

    const real = new Learner(dp, answered, policy);
    t = performance.now();
    await batches(decodeObservations(buf, reasons), (b) => real.observe(b));
    await until(() => dp.stats().flows.active >= n);
    const totalUs = ((performance.now() - t) * 1000) / n;
    return { decodeUs, learnerUs, ctGetUs, addFlowUs, totalUs };
  } finally {
    dp.stop();
  }
}

/** In a child: EAL runs once per process, and not beside the benchmark's own figures. */
function componentsInChild(): Promise<Components> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [__filename, '--components'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as Components) : reject(new Error(`--components exited with status ${code}`))));
  });
}

// ---- main -----------------------------------------------------------------------------------

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { runs: { type: 'string' }, json: { type: 'boolean' }, components: { type: 'boolean' } }, strict: true });
  if (values.components === true) {
    process.stdout.write(`${JSON.stringify(await measureComponents())}\n`);
    return 0;
  }
  const runs = Number(values.runs ?? 3);
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const components = await componentsInChild();
  const topology = await DemoTopology.build({
    farEnd: 'flowgate',
    prefix: 'fglearn',
    privateSockets: true,
    configure: {
      a: (config) => {
        config.flowtable.timeout = { tcp: 30, udp: UDP_IDLE_TIMEOUT_S };
      },
      b: (config) => {
        config.flowtable.l4proto = ['tcp'];
      },
    },
    progress: log,
  });
  const results: Run[] = [];
  try {
    await topology.run('remote', ['nft', '-f', '-'], {
      input: `table inet learn_bench {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    udp dport >= ${BASE_PORT} drop\n  }\n}\n`,
    });
    for (let run = 1; run <= runs; run++) {
      // The learner's latency figures are over its last 4096 offloads: a fresh site A per run
      // keeps the previous run's flood out of this run's unloaded figure.
      if (run > 1) await topology.restartSite('a');
      log(`run ${run}:`);
      results.push(await oneRun(topology, log));
    }
  } finally {
    await topology.destroy();
  }

  const med = (pick: (r: Run) => number | null) => medianOrNull(results.map(pick).filter((v): v is number => v !== null));
  const summary = {
    runs,
    idleLatencyMs: { p50: med((r) => r.idle.p50), p99: med((r) => r.idle.p99) },
    sweep: SWEEP_RATES.map((pps, i) => ({
      pps,
      learnedShare: med((r) => (r.sweep[i] === undefined ? null : r.sweep[i].learned / r.sweep[i].offered)),
      rate: med((r) => r.sweep[i]?.rate ?? null),
      latencyMs: { p50: med((r) => r.sweep[i]?.latencyMs.p50 ?? null), p99: med((r) => r.sweep[i]?.latencyMs.p99 ?? null) },
    })),
    flood: {
      funnel: Object.fromEntries(
        (Object.keys(results[0]?.flood.funnel ?? {}) as (keyof Funnel)[]).map((key) => [key, med((r) => r.flood.funnel[key])]),
      ) as Record<keyof Funnel, number | null>,
      offered: med((r) => r.flood.offered),
      learned: med((r) => r.flood.learned),
      flowsPerSecond: med((r) => r.flood.rate),
      learnedShare: med((r) => r.flood.learned / r.flood.offered),
      senderRate: med((r) => r.flood.senderRate),
      latencyMs: { p50: med((r) => r.flood.latencyMs.p50), p99: med((r) => r.flood.latencyMs.p99) },
    },
    componentsUsPerFlow: components,
  };
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify({ summary, results })}\n`);
    return 0;
  }
  const pct = (v: number | null) => (v === null ? '-' : `${(v * 100).toFixed(1)} %`);
  const lines = [
    `flow learning at site A, median of ${runs} runs`,
    `  first packet -> offloaded, one new flow at a time:   p50 ${ms(summary.idleLatencyMs.p50)}, p99 ${ms(summary.idleLatencyMs.p99)}`,
    ...summary.sweep.map(
      (s) => `  ${String(s.pps).padStart(6)} new flows/s offered: ${pct(s.learnedShare)} learned, ${s.rate?.toFixed(0)} flows/s, latency p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}`,
    ),
    `  flood (${FLOOD_FLOWS} flows, sender ${summary.flood.senderRate?.toFixed(0)}/s): ${summary.flood.flowsPerSecond?.toFixed(0)} flows/s learned (${pct(summary.flood.learnedShare)} of them), latency p50 ${ms(summary.flood.latencyMs.p50)}, p99 ${ms(summary.flood.latencyMs.p99)}`,
    `    where they went (medians): ${describeFunnel(summary.flood.funnel as Funnel, summary.flood.offered ?? 0, summary.flood.learned ?? 0)}`,
    `  control plane per flow: decode ${components.decodeUs.toFixed(2)} us, learner ${components.learnerUs.toFixed(2)} us, addFlow (N-API) ${components.addFlowUs.toFixed(2)} us; ` +
      `the JavaScript thread all together ${components.totalUs.toFixed(2)} us (${(1e6 / components.totalUs).toFixed(0)} flows/s); ` +
      `a ctnetlink lookup ${components.ctGetUs.toFixed(2)} us, on the addon's conntrack thread (${(1e6 / components.ctGetUs).toFixed(0)}/s)`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      process.stderr.write(`learn-bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
