/**
 * The demo's live view: per second, what each site's fast path and slow path carried and
 * how many flows it holds, from two snapshots of its stats; and the summary at the end.
 * Pure formatting, so that it can be checked without a gateway.
 */
import type { GatewayStats } from '../gateway/types';

export interface SiteRates {
  site: string;
  /** Packets per second forwarded by the fast path. */
  fastPps: number;
  /** Packets per second punted to the kernel. */
  slowPps: number;
  /** Fast-path throughput, bits per second (L3 bytes). */
  fastBps: number;
  flowsActive: number;
  /** Flows offloaded in the interval. */
  flowsAdded: number;
}

export function rates(site: string, before: GatewayStats, after: GatewayStats, seconds: number): SiteRates {
  const per = (n: number) => (seconds > 0 ? n / seconds : 0);
  return {
    site,
    fastPps: per(after.fastpath.packets - before.fastpath.packets),
    slowPps: per(after.slowpath.packets - before.slowpath.packets),
    fastBps: per((after.fastpath.bytes - before.fastpath.bytes) * 8),
    flowsActive: after.flows.active,
    flowsAdded: after.flows.added - before.flows.added,
  };
}

/** 1234567 -> "1.23 M", 950 -> "950". */
export function si(value: number, unit = ''): string {
  const abs = Math.abs(value);
  const [scaled, prefix] = abs >= 1e9 ? [value / 1e9, 'G'] : abs >= 1e6 ? [value / 1e6, 'M'] : abs >= 1e3 ? [value / 1e3, 'k'] : [value, ''];
  const digits = prefix === '' ? 0 : Math.abs(scaled) >= 100 ? 0 : Math.abs(scaled) >= 10 ? 1 : 2;
  const text = scaled.toFixed(digits);
  return unit === '' && prefix === '' ? text : `${text} ${prefix}${unit}`;
}

const COLUMNS = ['site', 'fast path pkt/s', 'slow path pkt/s', 'fast path', 'flows', 'new flows/s'] as const;

function row(r: SiteRates, seconds: number): string[] {
  return [r.site, si(r.fastPps), si(r.slowPps), si(r.fastBps, 'bit/s'), String(r.flowsActive), si(r.flowsAdded / Math.max(seconds, 1e-9))];
}

/** A table for a terminal, redrawn in place each second. */
export function table(elapsed: number, sites: readonly SiteRates[], seconds: number): string[] {
  const rows = [[...COLUMNS], ...sites.map((r) => row(r, seconds))];
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((cells) => (cells[i] ?? '').length)));
  const lines = rows.map((cells) => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  '));
  return [`t=${elapsed.toFixed(0).padStart(3)} s`, ...lines];
}

/** One plain line per second, for logs and pipes. */
export function line(elapsed: number, sites: readonly SiteRates[], seconds: number): string {
  const parts = sites.map(
    (r) =>
      `site ${r.site}: fast ${si(r.fastPps)} pkt/s (${si(r.fastBps, 'bit/s')}), slow ${si(r.slowPps)} pkt/s, flows ${r.flowsActive} (+${si(r.flowsAdded / Math.max(seconds, 1e-9))}/s)`,
  );
  return `t=${elapsed.toFixed(0)} s  ${parts.join('  |  ')}`;
}

export interface SiteSummary {
  site: string;
  fast: number;
  slow: number;
  flowsLearned: number;
  latencyMs: { p50: number | null; p99: number | null };
}

export function summaryOf(site: string, start: GatewayStats, end: GatewayStats): SiteSummary {
  return {
    site,
    fast: end.fastpath.packets - start.fastpath.packets,
    slow: end.slowpath.packets - start.slowpath.packets,
    flowsLearned: end.flows.added - start.flows.added,
    latencyMs: end.learner.offload_latency_ms,
  };
}

export function formatSummary(s: SiteSummary): string {
  const total = s.fast + s.slow;
  const share = total === 0 ? '-' : `${((s.fast / total) * 100).toFixed(1)} %`;
  const ms = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)} ms`);
  return (
    `site ${s.site}: ${s.fast} packets on the fast path, ${s.slow} on the slow path (${share} fast); ` +
    `${s.flowsLearned} ${s.flowsLearned === 1 ? 'flow' : 'flows'} learned; offload latency p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}`
  );
}
