/**
 * `flowgate stats`: the running instance's counters, as a summary for people or as the
 * control socket's JSON for programs.
 */
import { controlRequest } from '../control/client';
import { PORT_COUNTERS, type GatewayStats, type PortXstats } from '../gateway/types';
import { INSTANCE_OPTIONS, parseInstanceArgs } from './flows';
import type { CliOptions } from './options';

export const USAGE = `usage: flowgate stats [--json] [--watch [SECONDS] | --xstats [--all]] [-c FILE | --socket PATH]

Shows the counters of the running flowgate: per port rx/tx packets, bytes, drops and
errors; packets and bytes forwarded by the fast path; packets punted to the kernel slow
path by reason; fast-path drops by reason; flows active, added and removed; the learner;
the workers' busy ratio.

  --json              the counters as JSON: ports.<name>.{rx_packets,tx_packets,...},
                      fastpath.{packets,bytes}, slowpath.{packets,reasons,policed},
                      drops, flows.{active,entries,capacity,added,removed,...},
                      learner, workers, uptime, monotonic
  --watch [SECONDS]   rates per second, sampled every SECONDS (default 1, 0.1..86400)
                      until Ctrl-C: per port rx/tx packets/s, bit/s, dropped/s and
                      errors/s; fast-path packets/s and bit/s; punts and drops by reason
                      per second; flows added and removed per second. Redrawn in place on
                      a terminal, a block per interval otherwise. The seconds are the
                      instance's own between two samples; a counter that went backwards
                      has no rate, and a note says why. With --json, an object per interval
                      per line: interval.{start,end,seconds}, rates (null when the instance
                      restarted), notes, and counters.{start,end}, the two samples
  --xstats            each port's NIC extended statistics (rte_eth_xstats), as ethtool -S
                      lists them; statistics at zero are left out (--json has them all)
  --all               with --xstats: the statistics at zero too
  -c, --config FILE   find the instance by the control.socket of FILE
  --socket PATH       the control socket      (default /run/flowgate/flowgate.sock)
  -h, --help          this text
`;

/** What stats takes beside the instance's options. */
const STATS_OPTIONS = {
  watch: { type: 'string' },
  xstats: { type: 'boolean' },
  all: { type: 'boolean' },
} as const satisfies CliOptions;

/** Everything stats takes, for its parser and the completion. */
export const OPTIONS: CliOptions = { ...INSTANCE_OPTIONS, ...STATS_OPTIONS };

/** "3d 04:05:06", "04:05:06": uptime as people read it. */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const days = Math.floor(total / 86400);
  const hms = [Math.floor((total % 86400) / 3600), Math.floor((total % 3600) / 60), total % 60]
    .map((n) => String(n).padStart(2, '0'))
    .join(':');
  return days > 0 ? `${days}d ${hms}` : hms;
}

/** Columns left-aligned for the first, right-aligned (numbers) for the others. */
function table(rows: string[][], indent: string): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) => indent + row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ').trimEnd())
    .map((line) => `${line}\n`)
    .join('');
}

/** "miss 180, teardown 20", largest first; empty when there are none. */
function reasons(counts: Record<string, number>): string {
  const entries = Object.entries(counts)
    .filter(([, n]) => n > 0)
    .sort(([a, x], [b, y]) => y - x || a.localeCompare(b));
  return entries.map(([reason, n]) => `${reason} ${n}`).join(', ');
}

function withReasons(total: number, counts: Record<string, number>): string {
  const detail = reasons(counts);
  return detail === '' ? `${total}` : `${total} (${detail})`;
}

function milliseconds(value: number | null): string {
  return value === null ? '-' : `${value.toFixed(2)} ms`;
}

// Column titles from the field names: rx_packets -> "rx packets".
const PORT_COLUMNS = PORT_COUNTERS.map(({ field }) => ({ title: field.replace('_', ' '), field }));

export function formatStats(stats: GatewayStats): string {
  const { fastpath, slowpath, drops, flows, learner } = stats;
  const lines: string[] = [];
  lines.push(`uptime     ${formatDuration(stats.uptime)}\n`);
  lines.push('\n');
  lines.push(
    table(
      [
        ['port', ...PORT_COLUMNS.map((c) => c.title)],
        ...Object.entries(stats.ports).map(([name, counters]) => [name, ...PORT_COLUMNS.map((c) => String(counters[c.field]))]),
      ],
      '',
    ),
  );
  lines.push('\n');
  lines.push(`fast path  packets ${fastpath.packets}, bytes ${fastpath.bytes}\n`);
  lines.push(`slow path  packets ${withReasons(slowpath.packets, slowpath.reasons)}, policed ${slowpath.policed}\n`);
  lines.push(`drops      packets ${withReasons(drops.packets, drops.reasons)}\n`);
  lines.push(
    `flows      active ${flows.active}, entries ${flows.entries} of ${flows.capacity}, added ${flows.added}, ` +
      `removed ${withReasons(flows.removed, flows.removed_by)}, insert failures ${flows.insert_failed}\n`,
  );
  lines.push(
    `learner    observations ${learner.observations}, lost ${learner.observations_lost}, ` +
      `offload latency p50 ${milliseconds(learner.offload_latency_ms.p50)}, p99 ${milliseconds(learner.offload_latency_ms.p99)}\n`,
  );
  const ct = learner.conntrack;
  lines.push(
    `conntrack  queries ${ct.queries}, not found ${ct.not_found}, refused ${withReasons(Object.values(ct.refused).reduce((a, b) => a + b, 0), ct.refused)}, ` +
      `updates ${ct.updates}, update failures ${ct.update_failures}, events ${ct.events}, resyncs ${ct.resyncs}\n`,
  );
  const k = stats.kernel;
  lines.push(
    `kernel     routes ${k.routes.ipv4} IPv4, ${k.routes.ipv6} IPv6; events ${k.events} in ${k.batches} batches, errors ${k.errors}, ` +
      `resyncs ${k.resyncs}, next hops moved ${k.next_hops_rewritten}, MTUs refused ${k.mtu_refused}\n`,
  );
  lines.push(
    `memory     mbufs ${stats.mbufs.in_use} of ${stats.mbufs.total} in use, rss ${(stats.process.rss_bytes / 2 ** 20).toFixed(1)} MiB, ` +
      `event loop delay p99 ${milliseconds(stats.process.event_loop_delay_ms.p99)}, max ${milliseconds(stats.process.event_loop_delay_ms.max)}\n`,
  );
  lines.push('\n');
  lines.push(
    table(
      [
        ['worker', 'cpu', 'busy', 'rx packets', 'fast packets'],
        ...stats.workers.map((w) => [String(w.index), String(w.cpu), `${(w.busy_ratio * 100).toFixed(1)}%`, String(w.rx_packets), String(w.fast_packets)]),
      ],
      '',
    ),
  );
  return lines.join('');
}

/**
 * SECONDS after --watch is optional: `--watch 2` and `--watch=2` give it, a bare `--watch`
 * (last, or before another option) does not. Returns argv with --watch=SECONDS in its place.
 */
export function normalizeWatch(argv: readonly string[], defaultSeconds: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg !== '--watch') {
      out.push(arg);
      continue;
    }
    const next = argv[i + 1];
    if (next !== undefined && !next.startsWith('-')) {
      out.push(`--watch=${next}`);
      i++;
    } else {
      out.push(`--watch=${defaultSeconds}`);
    }
  }
  return out;
}

/** `ethtool -S` for each port: its name, then `name: value` lines; zeros only with `all`. */
export function formatXstats(ports: PortXstats, all: boolean): string {
  return Object.entries(ports)
    .map(([port, xstats]) => {
      const entries = Object.entries(xstats);
      const shown = all ? entries : entries.filter(([, value]) => value !== 0);
      const hidden = entries.length - shown.length;
      const lines = [`${port}:`, ...shown.map(([name, value]) => `     ${name}: ${value}`)];
      if (hidden > 0) lines.push(`     (${hidden} more at 0: --all lists them)`);
      return lines.map((line) => `${line}\n`).join('');
    })
    .join('\n');
}

function usageError(message: string): number {
  process.stderr.write(`flowgate stats: ${message}\n\n${USAGE}`);
  return 2;
}

export async function run(argv: string[]): Promise<number> {
  // Loaded here rather than above: stats-watch.ts uses this module's formatting.
  const { WATCH_DEFAULT_SECONDS, WATCH_MIN_SECONDS, WATCH_MAX_SECONDS, watchStats } = await import('./stats-watch.js');
  const args = await parseInstanceArgs('stats', normalizeWatch(argv, WATCH_DEFAULT_SECONDS), USAGE, STATS_OPTIONS);
  if (typeof args === 'number') return args;
  const { watch, xstats, all } = args.values;
  if (watch !== undefined && xstats === true) return usageError('give --watch or --xstats, not both');
  if (all === true && xstats !== true) return usageError('--all goes with --xstats');
  if (typeof watch === 'string') {
    const seconds = /^[0-9]+(\.[0-9]+)?$/.test(watch) ? Number(watch) : NaN;
    if (!(seconds >= WATCH_MIN_SECONDS && seconds <= WATCH_MAX_SECONDS))
      return usageError(`--watch: expected a number of seconds from ${WATCH_MIN_SECONDS} to ${WATCH_MAX_SECONDS}, found '${watch}'`);
    // Ctrl-C is how a watch ends: quietly and with success, as the reader going away.
    process.once('SIGINT', () => process.exit(0));
    return watchStats({ socket: args.socket, seconds, json: args.json, out: process.stdout, err: process.stderr });
  }
  if (xstats === true) {
    const result = await controlRequest(args.socket, 'xstats');
    process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : formatXstats(result.ports, all === true));
    return 0;
  }
  const stats = await controlRequest(args.socket, 'stats');
  process.stdout.write(args.json ? `${JSON.stringify(stats, null, 2)}\n` : formatStats(stats));
  return 0;
}
