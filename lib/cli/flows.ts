/**
 * `flowgate flows`: the connections the running instance has offloaded, one per line in the
 * manner of `conntrack -L` (key=value pairs, original direction then reply), or as JSON
 * lines. Lines are printed as the instance streams them, so that the listing of millions of
 * flows starts at once and holds a page of them at a time, not all.
 */
import { once } from 'node:events';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { ConfigError, formatIssue } from '../config';
import { ControlClient, resolveControlSocket } from '../control/client';
import { ControlError } from '../control/errors';
import { FLOW_FILTERS, FLOW_PROTOCOLS, FLOW_STATES, parseFlowQuery } from '../control/flow-query';
import { flowgateVersion } from '../control/protocol';
import type { FlowEndpointView, GatewayFlow } from '../gateway/types';
import { HELP_OPTION, type CliOption, type CliOptions } from './options';

export const USAGE = `usage: flowgate flows [--json | --count] [FILTERS] [-c FILE | --socket PATH]

Lists the connections the running flowgate has offloaded to the fast path, like
conntrack -L: protocol, idle seconds, state, then the original direction (addresses,
ports, input and output device, packets, bytes), the reply direction, and the tunnel
with its mode.
The two tuples are conntrack's original and reply tuples, so a NATed connection shows its
translation as conntrack does; a connection seen one way only shows the reply tuple
conntrack expects, after [UNREPLIED]. State: offloaded, closing (FIN/RST seen, still on the
fast path) or teardown (leaving it).

Filters, applied by the instance; a flow is listed when it matches all given:
  --proto tcp|udp     the protocol
  --src ADDR[/LEN]    the original tuple's source address, or an address in the prefix
  --dst ADDR[/LEN]    the original tuple's destination address, or in the prefix
  --port N            the original tuple's source or destination port
  --tunnel NAME       connections through this tunnel
  --state STATE       offloaded, closing or teardown

  --json              one JSON object per line (NDJSON), a flow each: proto, src, dst,
                      sport, dport, nat, in, out, packets, bytes, tunnel, tunnel_mode,
                      idle, state, reply, id (nat: the tuple packets leave with when
                      NAT rewrites them, else null)
  --count             only the number of matching flows (counted by the instance,
                      nothing listed)
  -c, --config FILE   find the instance by the control.socket of FILE
  --socket PATH       the control socket      (default /run/flowgate/flowgate.sock)
  -h, --help          this text
`;

const IPPROTO: Record<GatewayFlow['proto'], number> = { tcp: 6, udp: 17 };

function tuple(direction: FlowEndpointView): string {
  return [
    `src=${direction.src}`,
    `dst=${direction.dst}`,
    `sport=${direction.sport}`,
    `dport=${direction.dport}`,
    `in=${direction.in}`,
    `out=${direction.out}`,
    `packets=${direction.packets}`,
    `bytes=${direction.bytes}`,
  ].join(' ');
}

/** The reply tuple conntrack expects for a direction: the inverse of how its packets leave. */
function expectedReply(direction: FlowEndpointView): string {
  const out = direction.nat ?? direction;
  return `src=${out.dst} dst=${out.src} sport=${out.dport} dport=${out.sport}`;
}

/** One flow as a conntrack -L style line (conntrack's timeout column is our idle time). */
export function formatFlow(flow: GatewayFlow): string {
  const parts = [
    `${flow.proto.padEnd(8)} ${IPPROTO[flow.proto]}`,
    `idle=${Math.floor(flow.idle)}`,
    flow.state,
    tuple(flow),
    flow.reply === null ? `[UNREPLIED] ${expectedReply(flow)}` : tuple(flow.reply),
  ];
  if (flow.tunnel !== null) parts.push(`tunnel=${flow.tunnel}`);
  if (flow.tunnel_mode !== null) parts.push(`tunnel_mode=${flow.tunnel_mode}`);
  parts.push(`id=${flow.id}`);
  return parts.join(' ');
}

export interface InstanceArgs {
  json: boolean;
  socket: string;
  /** The values of the command's own options (`extraOptions`). */
  values: Record<string, string | boolean | undefined>;
}

/** The options of every command that talks to the running instance (flows, stats...). */
export const INSTANCE_OPTIONS = {
  json: { type: 'boolean' },
  config: { type: 'string', short: 'c', complete: 'config' },
  socket: { type: 'string', complete: 'file' },
  help: HELP_OPTION,
} as const satisfies CliOptions;

/** The options flows and stats share, or the exit code once a usage error or the help is printed. */
export async function parseInstanceArgs(
  command: string,
  argv: string[],
  usage: string,
  extraOptions: ParseArgsConfig['options'] = {},
): Promise<InstanceArgs | number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { ...extraOptions, ...INSTANCE_OPTIONS },
      strict: true,
      allowPositionals: false,
    }) as { values: Record<string, string | boolean | undefined> });
  } catch (err) {
    process.stderr.write(`flowgate ${command}: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(usage);
    return 0;
  }
  if (values.config !== undefined && values.socket !== undefined) {
    process.stderr.write(`flowgate ${command}: give -c FILE or --socket PATH, not both\n\n${usage}`);
    return 2;
  }
  const config = typeof values.config === 'string' ? values.config : undefined;
  const socket = typeof values.socket === 'string' ? values.socket : undefined;
  try {
    return { json: values.json === true, socket: await resolveControlSocket({ config, socket }), values };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(
      `flowgate ${command}: cannot read control.socket from ${config}: the config is invalid (use --socket PATH):\n` +
        err.issues.map((issue) => `${formatIssue(issue)}\n`).join(''),
    );
    return 1;
  }
}

/** The values the shell can offer for a filter; the others (addresses, ports, names) it cannot guess. */
const FILTER_VALUES: Partial<Record<(typeof FLOW_FILTERS)[number], readonly string[]>> = { proto: FLOW_PROTOCOLS, state: FLOW_STATES };

const FILTER_OPTIONS: Record<string, CliOption> = Object.fromEntries(
  FLOW_FILTERS.map((filter) => {
    const values = FILTER_VALUES[filter];
    return [filter, values === undefined ? { type: 'string' } : { type: 'string', complete: values }];
  }),
);

export const OPTIONS: CliOptions = { ...FILTER_OPTIONS, count: { type: 'boolean' }, ...INSTANCE_OPTIONS };

/** The filters given on the command line as request params (a port that is not a number is left as written, for the check to name). */
function filterParams(values: InstanceArgs['values']): Record<string, unknown> {
  const params: Record<string, unknown> = {};
  for (const filter of FLOW_FILTERS) {
    const value = values[filter];
    if (typeof value !== 'string') continue;
    params[filter] = filter === 'port' && /^[0-9]{1,5}$/.test(value) ? Number(value) : value;
  }
  return params;
}

/** Writes to stdout; when the pipe is full, the promise holds the listing until it drains. */
function print(text: string): void | Promise<void> {
  if (text === '' || process.stdout.write(text)) return;
  return once(process.stdout, 'drain').then(() => undefined);
}

export async function run(argv: string[]): Promise<number> {
  const args = await parseInstanceArgs('flows', argv, USAGE, OPTIONS);
  if (typeof args === 'number') return args;
  const countOnly = args.values.count === true;
  if (countOnly && args.json) {
    process.stderr.write(`flowgate flows: give --json or --count, not both\n\n${USAGE}`);
    return 2;
  }
  const params = filterParams(args.values);
  try {
    parseFlowQuery(params, (filter) => `--${filter}`);
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    process.stderr.write(`flowgate flows: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  // The default answer timeout suits any listing: the instance sends a line at least every second.
  const client = await ControlClient.connect(args.socket);
  try {
    if (countOnly) {
      const { count } = await client.request('flows', { ...params, count: true });
      process.stdout.write(`${count}\n`);
      return 0;
    }
    const format = args.json ? (flow: GatewayFlow) => `${JSON.stringify(flow)}\n` : (flow: GatewayFlow) => `${formatFlow(flow)}\n`;
    const { count } = await client.stream('flows', params, (flows) => print(flows.map(format).join('')));
    // As conntrack: the count on stderr, so that stdout is only flows.
    if (!args.json) process.stderr.write(`flowgate v${flowgateVersion()}: ${count} flow ${count === 1 ? 'entry has' : 'entries have'} been shown.\n`);
    return 0;
  } finally {
    client.close();
  }
}
