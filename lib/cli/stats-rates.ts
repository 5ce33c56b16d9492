/**
 * Per-second rates from two samples of the running instance's counters, for
 * `flowgate stats --watch`. The time between the samples is the instance's own (the
 * `monotonic` of each sample, taken where the counters are read), so that a rate times the
 * interval is exactly the difference of the counters it came from, however long the
 * requests took to arrive.
 *
 * A counter that went backwards (the port was restarted or re-added) has no rate, never a
 * negative one, and a note says why; so does a port that came or went during the interval.
 * Across a restart of the instance, or with no time between the samples, there are no rates
 * at all.
 */
import { PORT_COUNTERS, type GatewayStats, type PortCounters } from '../gateway/types';

/** Per second; null where the counter went backwards over the interval. */
export type Rate = number | null;

/** Port counters as rates: bytes become bits, as link speeds are said. */
type RateName<F extends string> = F extends `${infer Direction}_bytes` ? `${Direction}_bits` : F;
export type PortRates = { [F in keyof PortCounters as RateName<F>]: Rate };

/** Each port rate with the counter it comes from and the factor from that counter's unit. */
export const PORT_RATES: readonly { rate: keyof PortRates; counter: keyof PortCounters; scale: number }[] = PORT_COUNTERS.map(({ field }) =>
  field.endsWith('_bytes') ? { rate: field.replace(/_bytes$/, '_bits') as keyof PortRates, counter: field, scale: 8 } : { rate: field as keyof PortRates, counter: field, scale: 1 },
);

export interface StatsRates {
  /** Ports present in both samples. */
  ports: Record<string, PortRates>;
  /** Forwarded by the fast path: packets, and bits of their L3 bytes. */
  fastpath: { packets: Rate; bits: Rate };
  /** Handed to the kernel, in all and by reason; and kept from it by the punt policer. */
  slowpath: { packets: Rate; reasons: Record<string, Rate>; policed: Rate };
  drops: { packets: Rate; reasons: Record<string, Rate> };
  /** Connections offloaded and removed per second, removed by reason. */
  flows: { added: Rate; removed: Rate; removed_by: Record<string, Rate> };
}

export interface RatesSample {
  /** The interval, in seconds on the instance's monotonic clock. */
  interval: { start: number; end: number; seconds: number };
  /** Null when no rate can be had for the interval (no time passed, the instance restarted or is too old); `notes` says which. */
  rates: StatsRates | null;
  /** Why some or all rates are missing; empty when nothing is. */
  notes: string[];
}

/** Rates of the counters between `start` and `end`, two stats of the same instance, in that order. */
export function computeRates(start: GatewayStats, end: GatewayStats): RatesSample {
  // An instance older than this command does not say when it read its counters.
  if (typeof start.monotonic !== 'number' || typeof end.monotonic !== 'number') {
    return {
      interval: { start: NaN, end: NaN, seconds: NaN },
      rates: null,
      notes: ['the instance does not say when it read its counters (it runs an older flowgate): no rates'],
    };
  }
  const seconds = end.monotonic - start.monotonic;
  const interval = { start: start.monotonic, end: end.monotonic, seconds };
  // Uptime only goes backwards when another process took over: none of its counters has
  // anything to do with the previous ones, even those that happen to be larger. (Uptime is
  // counted on the wall clock: one stepped back would cost an interval its rates, no more.)
  if (end.uptime < start.uptime) {
    return { interval, rates: null, notes: [`the instance restarted (uptime ${start.uptime} s, then ${end.uptime} s): no rates for this interval`] };
  }
  if (!(seconds > 0)) return { interval, rates: null, notes: [`no time passed between the samples (${seconds} s): no rates for this interval`] };

  const notes: string[] = [];
  /** Per second over the interval, or null, with `what` added to `backwards`, for a counter that went backwards. */
  const per = (backwards: string[], what: string, from: number, to: number, scale = 1): Rate => {
    if (to < from) {
      backwards.push(what);
      return null;
    }
    return ((to - from) * scale) / seconds;
  };
  const backwards: string[] = [];
  const rate = (what: string, from: number, to: number, scale = 1): Rate => per(backwards, what, from, to, scale);
  // A reason first counted during the interval counted from zero; one no longer reported has no rate.
  const byReason = (what: string, from: Record<string, number>, to: Record<string, number>): Record<string, Rate> =>
    Object.fromEntries(Object.entries(to).map(([reason, n]) => [reason, rate(`${what}.${reason}`, from[reason] ?? 0, n)]));

  const ports: Record<string, PortRates> = {};
  for (const [name, to] of Object.entries(end.ports)) {
    const from = start.ports[name];
    if (from === undefined) {
      notes.push(`${name}: a new port, rates from the next interval`);
      continue;
    }
    const portBackwards: string[] = [];
    ports[name] = Object.fromEntries(PORT_RATES.map(({ rate: key, counter, scale }) => [key, per(portBackwards, counter, from[counter], to[counter], scale)])) as PortRates;
    if (portBackwards.length > 0) notes.push(`${name}: ${portBackwards.join(', ')} went backwards (the port was restarted or re-added): no rate for them`);
  }
  for (const name of Object.keys(start.ports)) if (!(name in end.ports)) notes.push(`${name}: the port went away`);

  const rates: StatsRates = {
    ports,
    fastpath: { packets: rate('fastpath.packets', start.fastpath.packets, end.fastpath.packets), bits: rate('fastpath.bytes', start.fastpath.bytes, end.fastpath.bytes, 8) },
    slowpath: {
      packets: rate('slowpath.packets', start.slowpath.packets, end.slowpath.packets),
      reasons: byReason('slowpath.reasons', start.slowpath.reasons, end.slowpath.reasons),
      policed: rate('slowpath.policed', start.slowpath.policed, end.slowpath.policed),
    },
    drops: { packets: rate('drops.packets', start.drops.packets, end.drops.packets), reasons: byReason('drops.reasons', start.drops.reasons, end.drops.reasons) },
    flows: {
      added: rate('flows.added', start.flows.added, end.flows.added),
      removed: rate('flows.removed', start.flows.removed, end.flows.removed),
      removed_by: byReason('flows.removed_by', start.flows.removed_by, end.flows.removed_by),
    },
  };
  if (backwards.length > 0) notes.push(`${backwards.join(', ')} went backwards: no rate for ${backwards.length === 1 ? 'it' : 'them'}`);
  return { interval, rates, notes };
}
