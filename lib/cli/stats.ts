/**
 * `flowgate stats`: the running instance's counters, as a summary for people or as the
 * control socket's JSON for programs.
 */
import { controlRequest } from '../control/client';
import { PORT_COUNTERS, type GatewayStats } from '../gateway/types';
import { INSTANCE_OPTIONS, parseInstanceArgs } from './flows';
import type { CliOptions } from './options';

export const USAGE = `usage: flowgate stats [--json] [-c FILE | --socket PATH]

Shows the counters of the running flowgate: per port rx/tx packets, bytes, drops and
errors; packets and bytes forwarded by the fast path; packets punted to the kernel slow
path by reason; fast-path drops by reason; flows active, added and removed; the learner;
the workers' busy ratio.

  --json              the counters as JSON: ports.<name>.{rx_packets,tx_packets,...},
                      fastpath.{packets,bytes}, slowpath.{packets,reasons,policed},
                      drops, flows.{active,entries,capacity,added,removed,...},
                      learner, workers, uptime
  -c, --config FILE   find the instance by the control.socket of FILE
  --socket PATH       the control socket      (default /run/flowgate/flowgate.sock)
  -h, --help          this text
`;

/** What parseInstanceArgs takes, for the completion: an option stats adds goes here too. */
export const OPTIONS: CliOptions = INSTANCE_OPTIONS;

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

export async function run(argv: string[]): Promise<number> {
  const args = await parseInstanceArgs('stats', argv, USAGE);
  if (typeof args === 'number') return args;
  const stats = await controlRequest(args.socket, 'stats');
  process.stdout.write(args.json ? `${JSON.stringify(stats, null, 2)}\n` : formatStats(stats));
  return 0;
}
