/**
 * The params of a `trace` request (protocol.ts describes them), checked on both sides as
 * flow-query.ts checks those of `flows`: the CLI to name its own options in the messages,
 * the server since any client may send anything. The filter expression and the port name
 * are the dataplane's to judge (libpcap's message, the instance's ports).
 */
import { DEFAULT_TRACE_COUNT } from '../dataplane';
import { ControlError } from './errors';
import { CONTROL_ERROR_CODES } from './protocol';

/** Packets traced when the request does not say: the dataplane's default. */
export { DEFAULT_TRACE_COUNT };

export const TRACE_PARAMS = ['count', 'port', 'filter'] as const;

export interface TraceQuery {
  count: number;
  port?: string;
  filter?: string;
}

function found(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : (JSON.stringify(value) ?? String(value));
}

/** `name` says how a param is called where it came from ("--count", "params.count"). */
export function parseTraceQuery(params: Record<string, unknown>, name: (param: string) => string): TraceQuery {
  const unknown = Object.keys(params).find((key) => !(TRACE_PARAMS as readonly string[]).includes(key));
  if (unknown !== undefined) throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name(unknown)}: unknown parameter (parameters: ${TRACE_PARAMS.join(', ')})`);
  const { count, port, filter } = params;
  const query: TraceQuery = { count: DEFAULT_TRACE_COUNT };
  if (count !== undefined) {
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1)
      throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name('count')}: expected a whole number of packets, at least 1, found ${found(count)}`);
    query.count = count;
  }
  if (port !== undefined) {
    if (typeof port !== 'string' || port === '') throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name('port')}: expected a port or VLAN name, found ${found(port)}`);
    query.port = port;
  }
  if (filter !== undefined) {
    if (typeof filter !== 'string') throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name('filter')}: expected a tcpdump-style filter expression, found ${found(filter)}`);
    query.filter = filter;
  }
  return query;
}
