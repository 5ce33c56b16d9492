/**
 * Benchmark of the conntrack side of offloading: what it costs to keep the conntrack entries
 * of offloaded connections alive through ctnetlink, and to look connections up. A benchmark,
 * not a test: it prints figures.
 *
 *   node dist/lib/demo/ct-bench.js [--connections 250000] [--runs 3] [--json]
 *
 * In a scratch network namespace, real UDP connections are made on loopback (one datagram
 * each, so conntrack confirms them), then each run times, over all of them, in batches as the
 * learner sends them: timeout updates to a day (what flowgate sends on offload and when it
 * extends an offloaded connection, as the kernel's flowtable does: flow_offload_add,
 * nf_flow_table_extend_ct_timeout) and lookups. CPU is the whole process's (JavaScript and
 * the addon's conntrack thread, user and system time, so the kernel's netlink work too).
 *
 * Conntrack's table is global (nf_conntrack_max, 262144 here, and read-only in a namespace),
 * so the default is 250,000 connections; the cost per connection scales linearly.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

import { median } from '../bench/median';
import { Conntrack, type CtTuple } from '../conntrack';
import { deleteNetnsSync, onExit, sh } from './shell';
import { startTraffic } from './traffic';

const UPDATE_BATCH = 65_536;
const GET_BATCH = 64;
// As the kernel: an offloaded connection lives a day and is extended when less than five
// minutes are left, so each one is refreshed once every day less five minutes.
const DAY_S = 86_400;
const EXTEND_EVERY_S = DAY_S - 300;

interface Figures {
  connections: number;
  updateSeconds: number;
  updateCpuSeconds: number;
  getSeconds: number;
  getCpuSeconds: number;
}

async function timed(fn: () => Promise<void>): Promise<{ seconds: number; cpuSeconds: number }> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await fn();
  const used = process.cpuUsage(cpu);
  return { seconds: (performance.now() - started) / 1000, cpuSeconds: (used.user + used.system) / 1e6 };
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { connections: { type: 'string' }, runs: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
  const wanted = Number(values.connections ?? 250_000);
  const runs = Number(values.runs ?? 3);
  const netns = `fgctbench-${process.pid}`;
  await sh(['ip', 'netns', 'add', netns]);
  const forget = onExit(() => deleteNetnsSync(netns));
  const ct = Conntrack.open({ netns, events: ['destroy'], onEvents: () => undefined, onResync: () => undefined });
  try {
    await sh(['ip', 'link', 'set', 'lo', 'up'], { netns });
    // Conntrack tracks a namespace's packets once a ruleset uses it.
    await sh(['nft', '-f', '-'], {
      netns,
      input: 'table inet fg_ct_bench {\n  chain out {\n    type filter hook output priority filter;\n    ct state new accept\n  }\n}\n',
    });
    const sockets = Math.ceil(wanted / 60_000);
    const sent = await startTraffic(netns, { kind: 'udp-flows', host: '127.0.0.1', basePort: 1024, flows: wanted, sockets }).result;
    const tuples: CtTuple[] = (await ct.dump()).filter((c) => c.orig.proto === 'udp').map((c) => c.orig);
    process.stderr.write(`ct-bench: ${sent.sent} datagrams sent, ${tuples.length} UDP connections in conntrack\n`);
    const figures: Figures[] = [];
    for (let run = 0; run < runs; run++) {
      const update = await timed(async () => {
        for (let i = 0; i < tuples.length; i += UPDATE_BATCH) {
          const r = await ct.update(tuples.slice(i, i + UPDATE_BATCH).map((orig) => ({ orig, timeout: DAY_S })));
          if (r.failed + r.notFound > 0) throw new Error(`${r.failed + r.notFound} updates failed`);
        }
      });
      const get = await timed(async () => {
        const inFlight: Promise<unknown>[] = [];
        for (let i = 0; i < tuples.length; i += GET_BATCH) {
          inFlight.push(ct.get(tuples.slice(i, i + GET_BATCH)));
          // The learner keeps two batches in flight.
          if (inFlight.length >= 2) await inFlight.shift();
        }
        await Promise.all(inFlight);
      });
      figures.push({ connections: tuples.length, updateSeconds: update.seconds, updateCpuSeconds: update.cpuSeconds, getSeconds: get.seconds, getCpuSeconds: get.cpuSeconds });
      process.stderr.write(
        `  run ${run + 1}: ${tuples.length} timeout updates in ${update.seconds.toFixed(2)} s (${update.cpuSeconds.toFixed(2)} s CPU), ` +
          `lookups in ${get.seconds.toFixed(2)} s (${get.cpuSeconds.toFixed(2)} s CPU)\n`,
      );
    }
    const n = figures[0]?.connections ?? 0;
    const updateCpu = median(figures.map((f) => f.updateCpuSeconds));
    const perConnectionUs = (updateCpu / n) * 1e6;
    const summary = {
      connections: n,
      updatesPerSecond: n / median(figures.map((f) => f.updateSeconds)),
      updateCpuUsPerConnection: perConnectionUs,
      getsPerSecond: n / median(figures.map((f) => f.getSeconds)),
      getCpuUsPerConnection: (median(figures.map((f) => f.getCpuSeconds)) / n) * 1e6,
      // Share of one core that keeping 500,000 offloaded connections alive takes.
      coreShare500k: { kernelCadence: (500_000 * perConnectionUs) / 1e6 / EXTEND_EVERY_S, every30s: (500_000 * perConnectionUs) / 1e6 / 30 },
    };
    if (values.json === true) {
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(
      [
        `conntrack through ctnetlink, ${n} connections, median of ${runs} runs`,
        `  timeout updates: ${summary.updatesPerSecond.toFixed(0)}/s, ${perConnectionUs.toFixed(2)} us CPU each`,
        `  lookups:         ${summary.getsPerSecond.toFixed(0)}/s, ${summary.getCpuUsPerConnection.toFixed(2)} us CPU each`,
        `  keeping 500,000 offloaded connections alive: ${(summary.coreShare500k.kernelCadence * 100).toFixed(4)} % of a core at the kernel's cadence ` +
          `(a day, extended 5 min before it ends), ${(summary.coreShare500k.every30s * 100).toFixed(2)} % if every one were refreshed every 30 s`,
        '',
      ].join('\n'),
    );
    return 0;
  } finally {
    ct.close();
    spawnSync('ip', ['netns', 'delete', netns], { stdio: 'ignore' });
    forget();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`ct-bench: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
