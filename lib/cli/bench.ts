/**
 * `flowgate bench`: the fast path's packet rate and cycles per packet on DPDK virtual
 * devices, testpmd-style (DESIGN.md, "Performance method"), with dpdk-testpmd on the same
 * traffic in the same run as the limit.
 */
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { FlowgateError } from '../errors';
import { detectMachine } from '../machine';
import { HugepageKeeper } from '../bench/hugepages';
import { anomalies, formatFlows, formatSize, formatTable, Progress } from '../bench/output';
import { renderPlot } from '../bench/plot';
import { BenchCase, BenchResult, BenchSettings, prepareTraffic, RunContext, runCapture, runCase } from '../bench/runner';
import { EncapLimit, isTunnelKind, makeScenario, MAX_BENCH_FLOWS, OTHER_TUNNEL_MODES, Scenario, SCENARIO_KINDS, ScenarioKind, scenarioFromName } from '../bench/scenarios';
import { checkTestpmd, DEFAULT_TESTPMD } from '../bench/testpmd';
import { defaultCacheDir, FrameSize } from '../bench/traffic';
import { HELP_OPTION, type CliOptions } from './options';

export const USAGE = `usage: flowgate bench [options]

Measures the fast path on DPDK virtual devices: generated traffic replayed from a pcap
(net_pcap infinite_rx) through flowgate into net_null, flows installed before measuring,
and dpdk-testpmd io and macswap forwarding of the same traffic in the same run as the limit.
Each measurement runs in its own process. Lists are comma-separated; every combination runs.

  --scenario LIST     fwd4, fwd6, decap, encap, mixed, fwd4-vlan, or all (default fwd4)
                      (decap: 4in6 from the tunnel peer; encap: into the tunnel;
                      mixed: both directions of each connection at once; fwd4-vlan:
                      802.1Q in and out), or a tunnel mode's: decap-ip6ip6,
                      encap-ip6ip6[-nolimit], decap-ipip, encap-ipip, decap-sit, encap-sit
  --encaplimit LIST   tunnel scenarios: an encapsulation limit (4) or none; with
                      --scenario all both 4 and none run unless this is given (default 4)
  --flows LIST        flows in the traffic, 1..4194304; k and M suffixes  (default 1000)
  --size LIST         inner frame size with FCS, 64..1518, or imix (7:4:1 of 64, 594,
                      1518)                                               (default 64)
  --seconds S         measured window                                     (default 5)
  --warmup S          after the flows are installed, before measuring     (default 1)
  --workers N         worker cores, the highest CPUs first (1: CPU 1 here); the main
                      lcore floats over all CPUs                          (default 1)
  --zipf S            flow popularity ~ 1/rank^S instead of uniform
  --repeat N          run every combination N times and report medians    (default 1)
  --json              one JSON object per combination on stdout
  --plot FILE         also write an SVG of Mpps against flows per scenario
  --no-baseline       do not run testpmd
  --testpmd PATH      the testpmd binary                (default ${DEFAULT_TESTPMD})
  --capture FILE      instead of measuring, write the first --packets packets the fast
                      path forwards to FILE (pcap), for inspection
  --packets N         packets to capture                                  (default 100)
  --generate-only     write the traffic's pcap(s) and print their paths
  --cache-dir DIR     where generated pcaps are kept (default ${defaultCacheDir()})
  -h, --help          this text

Mpps counts fast-path forwarded packets; cycles/pkt is worker cycles (busy + idle) per
forwarded packet; hit is forwarded / received; Gbps is Mpps times the frame size with FCS;
vs io is Mpps / testpmd io Mpps. net_pcap preloads the whole pcap into mbufs (one packet
per flow from 4,096 flows up): when a run needs more 2 MiB hugepages than are free, bench
raises nr_hugepages (as root), says so, and puts it back at exit. Two cores: keep other
work off the worker's CPU while measuring (a note says when the worker had to share it).
`;

class UsageError extends Error {}

const DEFAULTS = { scenario: 'fwd4', flows: '1000', size: '64', seconds: 5, warmup: 1, workers: 1, repeat: 1, packets: 100 };

function list(text: string, what: string): string[] {
  const items = text.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new UsageError(`${what}: empty item in '${text}'`);
  return items;
}

function number(text: string | undefined, what: string, min: number, max: number, integer: boolean): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max)
    throw new UsageError(`${what}: expected ${integer ? 'an integer' : 'a number'} ${min}..${max}, found '${text}'`);
  return value;
}

export function parseFlows(text: string): number[] {
  return list(text, '--flows').map((item) => {
    const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(item);
    const value = m === null ? NaN : Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2] as string) ? 1e3 : 1e6);
    if (!Number.isInteger(value) || value < 1 || value > MAX_BENCH_FLOWS)
      throw new UsageError(`--flows: expected flow counts 1..${MAX_BENCH_FLOWS} (such as 1000, 100k, 1M), found '${item}'`);
    return value;
  });
}

export function parseSizes(text: string): FrameSize[] {
  return list(text, '--size').map((item) => {
    if (item === 'imix') return 'imix';
    const n = Number(item);
    if (!/^\d+$/.test(item) || n < 64 || n > 1518)
      throw new UsageError(`--size: expected a frame size 64..1518 (such as 64, 128, 512, 1500) or imix, found '${item}'`);
    return n;
  });
}

function parseEncapLimits(text: string): EncapLimit[] {
  return list(text, '--encaplimit').map((item) => {
    if (item === 'none') return 'none';
    if (!/^\d+$/.test(item) || Number(item) > 255) throw new UsageError(`--encaplimit: expected 0..255 or none, found '${item}'`);
    return Number(item);
  });
}

export function parseScenarios(text: string, limitsText: string | undefined): Scenario[] {
  const limits = limitsText === undefined ? undefined : parseEncapLimits(limitsText);
  const out: Scenario[] = [];
  for (const item of list(text, '--scenario')) {
    if (item === 'all') {
      for (const kind of SCENARIO_KINDS)
        for (const l of isTunnelKind(kind) ? (limits ?? [4, 'none' as const]) : [4]) out.push(makeScenario(kind, l));
      // The other modes once each (ip6ip6 with the default option), beside their ip4ip6 counterparts.
      for (const kind of ['decap', 'encap'] as const) for (const mode of OTHER_TUNNEL_MODES) out.push(makeScenario(kind, 4, mode));
    } else if ((SCENARIO_KINDS as readonly string[]).includes(item)) {
      const kind = item as ScenarioKind;
      for (const l of isTunnelKind(kind) ? (limits ?? [4]) : [4]) out.push(makeScenario(kind, l));
    } else {
      try {
        out.push(scenarioFromName(item));
      } catch {
        throw new UsageError(`--scenario: expected ${SCENARIO_KINDS.join(', ')}, a name such as decap-ip6ip6 or encap-sit, or all, found '${item}'`);
      }
    }
  }
  const seen = new Set<string>();
  return out.filter((s) => !seen.has(s.name) && seen.add(s.name));
}

interface Options {
  cases: BenchCase[];
  settings: BenchSettings;
  json: boolean;
  plot: string | undefined;
  capture: string | undefined;
  packets: number;
  generateOnly: boolean;
}

export const OPTIONS = {
  scenario: { type: 'string', complete: [...SCENARIO_KINDS, 'all'] },
  encaplimit: { type: 'string' },
  flows: { type: 'string' },
  size: { type: 'string' },
  seconds: { type: 'string' },
  warmup: { type: 'string' },
  workers: { type: 'string' },
  zipf: { type: 'string' },
  repeat: { type: 'string' },
  json: { type: 'boolean' },
  plot: { type: 'string', complete: 'file' },
  'no-baseline': { type: 'boolean' },
  testpmd: { type: 'string', complete: 'file' },
  capture: { type: 'string', complete: 'file' },
  packets: { type: 'string' },
  'generate-only': { type: 'boolean' },
  'cache-dir': { type: 'string', complete: 'directory' },
  help: HELP_OPTION,
} as const satisfies CliOptions;

export function parseOptions(argv: string[]): Options | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: OPTIONS,
    });
  } catch (err) {
    // parseArgs explains unknown options and missing values well; keep its first sentence.
    throw new UsageError((err as Error).message.split('. ')[0] as string);
  }
  const v = parsed.values;
  if (v.help === true) return 'help';
  const scenarios = parseScenarios(v.scenario ?? DEFAULTS.scenario, v.encaplimit);
  const flows = parseFlows(v.flows ?? DEFAULTS.flows);
  const sizes = parseSizes(v.size ?? DEFAULTS.size);
  const cpuCount = detectMachine().cpus.length;
  const workers = number(v.workers, '--workers', 1, cpuCount, true) ?? DEFAULTS.workers;
  const zipf = number(v.zipf, '--zipf', 0.01, 10, false) ?? null;
  const seconds = number(v.seconds, '--seconds', 0.1, 3600, false) ?? DEFAULTS.seconds;
  const warmup = number(v.warmup, '--warmup', 0, 600, false) ?? DEFAULTS.warmup;
  const repeat = number(v.repeat, '--repeat', 1, 100, true) ?? DEFAULTS.repeat;
  const packets = number(v.packets, '--packets', 1, 10_000_000, true) ?? DEFAULTS.packets;
  if (v.packets !== undefined && v.capture === undefined) throw new UsageError('--packets goes with --capture FILE');
  if (v.capture !== undefined && v.plot !== undefined) throw new UsageError('--capture and --plot do not go together: a capture measures nothing');

  const cases: BenchCase[] = [];
  for (const scenario of scenarios)
    for (const size of sizes) for (const n of flows) cases.push({ scenario, flows: n, size, zipf, workers });
  for (const c of cases)
    if (c.flows < c.workers)
      throw new UsageError(`--flows ${c.flows} with --workers ${c.workers}: every worker's rx queue needs at least one flow`);
  if (v.capture !== undefined && v['generate-only'] === true) throw new UsageError('--capture and --generate-only do not go together');
  if (v.capture !== undefined && cases.length !== 1) throw new UsageError('--capture takes one scenario, one flow count and one size');
  if (v.capture !== undefined && workers !== 1) throw new UsageError('--capture runs one worker');

  return {
    cases,
    settings: {
      seconds,
      warmupSeconds: warmup,
      baseline: v['no-baseline'] !== true,
      testpmd: v.testpmd ?? DEFAULT_TESTPMD,
      cacheDir: path.resolve(v['cache-dir'] ?? defaultCacheDir()),
      repeat,
    },
    json: v.json === true,
    plot: v.plot,
    capture: v.capture,
    packets,
    generateOnly: v['generate-only'] === true,
  };
}

function caseLabel(c: BenchCase): string {
  return `${c.scenario.name} ${formatFlows(c.flows)} flows ${formatSize(c.size)}${c.size === 'imix' ? '' : ' B'}${c.zipf === null ? '' : ` zipf ${c.zipf}`}`;
}

function detail(r: BenchResult): string {
  const lines = [
    `${r.scenario}: ${formatFlows(r.flows_installed)} flowtable entries installed in ${r.install_seconds.toFixed(2)} s; ` +
      `${formatFlows(r.pcap_packets)} packets in the pcap, mean frame ${r.frame_bytes.toFixed(1)} B with FCS; ` +
      `worker${r.workers === 1 ? '' : 's'} on CPU ${r.cpus.join(',')} at ${(r.tsc_hz / 1e9).toFixed(2)} GHz TSC, busy ${(r.busy_ratio * 100).toFixed(1)} % of cycles, on its CPU ${(r.worker_cpu_share * 100).toFixed(1)} % of the window`,
  ];
  if (r.runs > 1) lines.push(`medians of ${r.runs} runs; Mpps per run: ${r.samples.mpps.map((m) => m.toFixed(2)).join(', ')}`);
  return lines.join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  let options: Options | 'help';
  try {
    options = parseOptions(argv);
  } catch (err) {
    if (err instanceof UsageError || err instanceof FlowgateError) {
      process.stderr.write(`flowgate bench: ${err.message}\n(flowgate bench --help lists the options)\n`);
      return 2;
    }
    throw err;
  }
  if (options === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const o = options;

  const keeper = new HugepageKeeper();
  const children = new Set<ChildProcess>();
  const notes = new Set<string>();
  const progress = new Progress(o.cases.length);
  const ctx: RunContext = { keeper, notes, children, progress: (phase, fraction) => progress.update(phase, fraction) };
  const onSignal = (signal: NodeJS.Signals) => {
    progress.clear();
    for (const child of children) child.kill(signal);
    const restored = keeper.restore();
    if (restored !== undefined) process.stderr.write(`flowgate bench: ${restored}\n`);
    process.stderr.write(`flowgate bench: interrupted\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const printNotes = (stream: NodeJS.WriteStream) => {
    for (const note of notes) stream.write(`note: ${note}\n`);
    notes.clear();
  };

  const results: BenchResult[] = [];
  try {
    if (o.settings.baseline && o.capture === undefined && !o.generateOnly) checkTestpmd(o.settings.testpmd);

    if (o.generateOnly) {
      for (const [i, c] of o.cases.entries()) {
        progress.startCase(i, caseLabel(c));
        const traffic = prepareTraffic(c, o.settings, ctx.progress);
        progress.clear();
        if (o.json)
          process.stdout.write(
            JSON.stringify({ scenario: c.scenario.name, flows: c.flows, size: c.size, zipf: c.zipf, files: traffic.files, packets: traffic.packets, generated: traffic.generated }) + '\n',
          );
        else process.stdout.write(traffic.files.join('\n') + '\n');
      }
      return 0;
    }

    if (o.capture !== undefined) {
      const c = o.cases[0] as BenchCase;
      progress.startCase(0, caseLabel(c));
      const outcome = await runCapture(c, o.settings, o.capture, o.packets, ctx);
      progress.clear();
      const file = path.resolve(o.capture);
      if (o.json)
        process.stdout.write(
          JSON.stringify({ scenario: c.scenario.name, flows: c.flows, size: c.size, capture: file, packets: o.packets, forwarded_before_stop: outcome.sent }) + '\n',
        );
      else process.stdout.write(`wrote the first ${o.packets} packets flowgate forwarded (${caseLabel(c)}) to ${file}\n`);
      printNotes(o.json ? process.stderr : process.stdout);
      return 0;
    }

    for (const [i, c] of o.cases.entries()) {
      progress.startCase(i, caseLabel(c));
      const r = await runCase(c, o.settings, ctx);
      results.push(r);
      if (o.json) {
        progress.clear();
        process.stdout.write(JSON.stringify(r) + '\n');
      }
    }
    progress.clear();
    if (!o.json) {
      process.stdout.write(formatTable(results));
      if (results.length === 1) process.stdout.write('\n' + detail(results[0] as BenchResult));
    }
    const out = o.json ? process.stderr : process.stdout;
    for (const r of results) for (const a of anomalies(r)) out.write(`note: ${a}\n`);
    if (o.plot !== undefined) {
      fs.writeFileSync(o.plot, renderPlot(results));
      out.write(`plot: ${path.resolve(o.plot)}\n`);
    }
    printNotes(out);
    return 0;
  } catch (err) {
    progress.clear();
    if (err instanceof FlowgateError || err instanceof UsageError) {
      process.stderr.write(`flowgate bench: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    for (const child of children) child.kill('SIGKILL');
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    const restored = keeper.restore();
    if (restored !== undefined) process.stderr.write(`note: ${restored}\n`);
  }
}
