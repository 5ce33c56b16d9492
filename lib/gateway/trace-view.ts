/**
 * The dataplane's packet trace as the control socket streams it (GatewayTraceRecord): what
 * `flowgate trace` shows, shared by the Gateway and anything else that serves a dataplane.
 */
import { setTimeout as sleep } from 'node:timers/promises';

import type { Dataplane, TraceOptions, TraceRecord } from '../dataplane';
import { FlowgateError } from '../errors';
import type { GatewayTraceRecord } from './types';

/** A second trace while one runs on the same instance. */
export const TRACE_BUSY = 'ERR_FLOWGATE_TRACE_BUSY';

/** How often the records are collected while a trace waits for packets. */
const TRACE_POLL_MS = 20;

/** Dataplanes with a trace running: the addon has one ring and one budget per instance. */
const tracing = new WeakSet<Dataplane>();

export function gatewayTraceRecord(r: TraceRecord): GatewayTraceRecord {
  return {
    seq: r.seq,
    time: new Date(r.time).toISOString(),
    worker: r.worker,
    in: r.inPort,
    out: r.outPort,
    decision: r.decision,
    reason: r.reason,
    punt_reason: r.puntReason,
    flow: r.flow,
    flow_direction: r.flowDirection,
    wire_length: r.wireLength,
    rx_link: r.rxLink,
    rx: r.rx.toString('hex'),
    tx_length: r.txLength,
    tx_link: r.txLink,
    tx: r.tx === null ? null : r.tx.toString('hex'),
  };
}

/**
 * Traces the next packets and yields their records as they come, in pages (empty ones
 * while nothing came, so that the consumer can tell that its client is still there). Ends
 * once the count is reached and every record was read. A consumer that stops iterating (its
 * client left) stops the trace. `summary` receives the records lost, if any, at the end.
 */
export async function* gatewayTracePages(dp: Dataplane, options: TraceOptions, summary: { lost: number } = { lost: 0 }): AsyncGenerator<GatewayTraceRecord[]> {
  if (tracing.has(dp)) throw new FlowgateError(TRACE_BUSY, 'a packet trace is running already on this instance: one at a time');
  dp.traceStart(options);
  tracing.add(dp);
  try {
    for (;;) {
      const page = dp.traceRead();
      summary.lost = page.lost;
      if (page.records.length === 0 && !page.running) return;
      yield page.records.map(gatewayTraceRecord);
      if (page.records.length === 0) await sleep(TRACE_POLL_MS);
    }
  } finally {
    tracing.delete(dp);
    dp.traceStop();
  }
}
