/**
 * The filters of a `flows` request (protocol.ts lists them), checked once on each side: the
 * CLI checks them to name its own option in the message, the server checks them again since
 * any client may send anything.
 */
import type { GatewayFlow } from '../gateway/types';
import { formatIp, parseIp, parsePrefix, prefixContains } from '../net/addr';
import { ControlError } from './errors';
import { CONTROL_ERROR_CODES } from './protocol';

export const FLOW_PROTOCOLS: readonly GatewayFlow['proto'][] = ['tcp', 'udp'];
export const FLOW_STATES: readonly GatewayFlow['state'][] = ['offloaded', 'closing', 'teardown'];

/** The filters a flows request may carry (protocol.ts says what each matches). */
export const FLOW_FILTERS = ['proto', 'src', 'dst', 'port', 'tunnel', 'state'] as const;

export interface FlowQuery {
  matches(flow: GatewayFlow): boolean;
  /** Send only the count of matching flows, no record. */
  countOnly: boolean;
}

type Predicate = (flow: GatewayFlow) => boolean;

function found(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : (JSON.stringify(value) ?? String(value));
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${what}: expected ${allowed.join(', ')}, found ${found(value)}`);
}

/** An address matches itself; ADDR/LEN matches every address in the prefix. */
function addressPredicate(value: unknown, what: string, field: (flow: GatewayFlow) => string): Predicate {
  const expected = 'an IPv4 or IPv6 address, or a prefix ADDR/LEN';
  if (typeof value !== 'string') throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${what}: expected ${expected}, found ${found(value)}`);
  try {
    if (value.includes('/')) {
      const prefix = parsePrefix(value);
      return (flow) => prefixContains(prefix, parseIp(field(flow)));
    }
    // Flows carry addresses in canonical text (formatIp): comparing text is exact and cheap.
    const canonical = formatIp(parseIp(value));
    return (flow) => field(flow) === canonical;
  } catch (err) {
    throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${what}: expected ${expected}, found ${found(value)} (${(err as Error).message})`);
  }
}

/**
 * Reads the params of a flows request. `name` says how a filter is called where the value
 * came from ("--src" on the command line, "params.src" on the socket), for the messages.
 */
export function parseFlowQuery(params: Record<string, unknown>, name: (filter: string) => string): FlowQuery {
  const known = [...FLOW_FILTERS, 'count'];
  const unknown = Object.keys(params).find((key) => !known.includes(key));
  if (unknown !== undefined)
    throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name(unknown)}: unknown filter (filters: ${known.join(', ')})`);
  const predicates: Predicate[] = [];
  const { proto, src, dst, port, tunnel, state, count } = params;
  if (proto !== undefined) {
    const wanted = oneOf(proto, FLOW_PROTOCOLS, name('proto'));
    predicates.push((flow) => flow.proto === wanted);
  }
  if (src !== undefined) predicates.push(addressPredicate(src, name('src'), (flow) => flow.src));
  if (dst !== undefined) predicates.push(addressPredicate(dst, name('dst'), (flow) => flow.dst));
  if (port !== undefined) {
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)
      throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name('port')}: expected a port number 0..65535, found ${found(port)}`);
    predicates.push((flow) => flow.sport === port || flow.dport === port);
  }
  if (tunnel !== undefined) {
    if (typeof tunnel !== 'string' || tunnel === '')
      throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name('tunnel')}: expected a tunnel name, found ${found(tunnel)}`);
    predicates.push((flow) => flow.tunnel === tunnel);
  }
  if (state !== undefined) {
    const wanted = oneOf(state, FLOW_STATES, name('state'));
    predicates.push((flow) => flow.state === wanted);
  }
  if (count !== undefined && typeof count !== 'boolean')
    throw new ControlError(CONTROL_ERROR_CODES.badRequest, `${name('count')}: expected true or false, found ${found(count)}`);
  return { matches: (flow) => predicates.every((matches) => matches(flow)), countOnly: count === true };
}
