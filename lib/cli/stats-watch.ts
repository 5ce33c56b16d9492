/**
 * `flowgate stats --watch [SECONDS]`: the running instance's rates, sampled every SECONDS.
 * On a terminal the view is redrawn in place (as watch and top do); into a pipe or a file
 * it is appended, a block per interval; with --json, one object per interval per line.
 */
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

import { controlRequest } from '../control/client';
import { ControlError } from '../control/errors';
import type { GatewayStats } from '../gateway/types';
import { si } from '../demo/live';
import { formatDuration } from './stats';
import { computeRates, PORT_RATES, type Rate, type RatesSample } from './stats-rates';

export const WATCH_DEFAULT_SECONDS = 1;
/** As watch(1): a shorter interval only measures the sampling. */
export const WATCH_MIN_SECONDS = 0.1;
/** A day: longer is no longer watching, and beyond 2^31 ms timers fire at once. */
export const WATCH_MAX_SECONDS = 86400;

/** One line of `--watch --json`: an interval's rates with the two samples they came from. */
export interface WatchRecord extends RatesSample {
  counters: { start: GatewayStats; end: GatewayStats };
}

export function watchRecord(start: GatewayStats, end: GatewayStats): WatchRecord {
  return { ...computeRates(start, end), counters: { start, end } };
}

/** 0, 0.25, 12.5, 950, "1.23 k": a rate as people read it; "-" for none. */
export function formatRate(value: Rate, unit = ''): string {
  if (value === null) return '-';
  if (Math.abs(value) >= 1000) return si(value, unit);
  const digits = Number.isInteger(value) ? 0 : Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0;
  const text = value.toFixed(digits);
  return unit === '' ? text : `${text} ${unit}`;
}

/** "miss 10, tcp_flags 2" of the reasons with a rate, largest first; null rates last, as "-". */
function reasons(rates: Record<string, Rate>): string {
  return Object.entries(rates)
    .filter(([, r]) => r !== 0)
    .sort(([a, x], [b, y]) => (y ?? -1) - (x ?? -1) || a.localeCompare(b))
    .map(([reason, r]) => `${reason} ${formatRate(r)}`)
    .join(', ');
}

function withReasons(total: Rate, rates: Record<string, Rate>): string {
  const detail = reasons(rates);
  return detail === '' ? formatRate(total) : `${formatRate(total)} (${detail})`;
}

// Column titles from the rate names: rx_packets -> "rx packets/s", rx_bits -> "rx bit/s".
const PORT_COLUMNS = PORT_RATES.map(({ rate }) => ({ rate, title: `${rate.replace('_', ' ').replace(/bits$/, 'bit')}/s` }));

/** Columns left-aligned for the first, right-aligned (numbers) for the others. */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ').trimEnd());
}

/** The lines of one interval for people. */
export function formatWatch(record: WatchRecord, everySeconds: number): string[] {
  const { interval, rates, notes, counters } = record;
  const end = counters.end;
  const over = Number.isFinite(interval.seconds) ? `rates over the instance's last ${interval.seconds.toFixed(3)} s` : 'no rates';
  const lines = [`every ${everySeconds} s: ${over}; uptime ${formatDuration(end.uptime)}`, ''];
  if (rates !== null) {
    lines.push(
      ...table([
        ['port', ...PORT_COLUMNS.map((c) => c.title)],
        ...Object.entries(rates.ports).map(([name, port]) => [name, ...PORT_COLUMNS.map((c) => formatRate(port[c.rate], c.rate.endsWith('_bits') ? 'bit/s' : ''))]),
      ]),
      '',
      `fast path  packets/s ${formatRate(rates.fastpath.packets)}, ${formatRate(rates.fastpath.bits, 'bit/s')}`,
      `slow path  packets/s ${withReasons(rates.slowpath.packets, rates.slowpath.reasons)}, policed/s ${formatRate(rates.slowpath.policed)}`,
      `drops      packets/s ${withReasons(rates.drops.packets, rates.drops.reasons)}`,
      `flows      added/s ${formatRate(rates.flows.added)}, removed/s ${withReasons(rates.flows.removed, rates.flows.removed_by)}, active ${end.flows.active}`,
    );
  }
  for (const note of notes) lines.push(`note: ${note}`);
  return lines;
}

/**
 * The lines drawn over the previous frame on a terminal: from the top left, each line
 * cleared to its end, and what the previous frame had below cleared, so that nothing
 * scrolls and nothing flickers.
 */
export function terminalFrame(lines: readonly string[]): string {
  return `\x1b[H${lines.map((line) => `${line}\x1b[K\n`).join('')}\x1b[J`;
}

export interface WatchOptions {
  socket: string;
  seconds: number;
  json: boolean;
  out: NodeJS.WriteStream;
  err: Pick<NodeJS.WriteStream, 'write'>;
}

/** Writes to `out`; when it is full, the promise holds the next sample until it drains. */
async function write(out: NodeJS.WriteStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

/**
 * Samples until stopped: the command ends with Ctrl-C, or quietly when the reader of its
 * output goes away (main.ts turns EPIPE into exit 0). An instance that stops answering is
 * said on stderr and asked again each interval; the rates resume with its next two answers.
 * Rejects only when the first sample cannot be had, as `flowgate stats` would.
 */
export async function watchStats(options: WatchOptions): Promise<never> {
  const { out, seconds } = options;
  const tty = out.isTTY === true && !options.json;
  const periodMs = seconds * 1000;
  let previous: GatewayStats | undefined = await controlRequest(options.socket, 'stats');
  if (tty) await write(out, `\x1b[H\x1b[2J${terminalFrame([`every ${seconds} s: the first rates in ${seconds} s`])}`);
  let first = true;
  // Due times on a fixed schedule, so that a slow answer does not push every later sample back.
  const started = performance.now();
  for (let tick = 1; ; tick++) {
    await sleep(Math.max(0, started + tick * periodMs - performance.now()));
    let sample: GatewayStats;
    try {
      sample = await controlRequest(options.socket, 'stats');
    } catch (err) {
      if (!(err instanceof ControlError)) throw err;
      if (previous !== undefined) options.err.write(`flowgate stats: ${err.message}; asking again every ${seconds} s\n`);
      previous = undefined;
      continue;
    }
    if (previous !== undefined) {
      const record = watchRecord(previous, sample);
      if (options.json) await write(out, `${JSON.stringify(record)}\n`);
      else if (tty) await write(out, terminalFrame(formatWatch(record, seconds)));
      else await write(out, `${first ? '' : '\n'}${formatWatch(record, seconds).join('\n')}\n`);
      first = false;
    }
    previous = sample;
  }
}
