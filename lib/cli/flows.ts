/**
 * `flowgate flows`: the connections the running instance has offloaded, one per line in the
 * manner of `conntrack -L` (key=value pairs, original direction then reply), or as JSON.
 */
import { parseArgs } from 'node:util';

import { ConfigError, formatIssue } from '../config';
import { controlRequest, resolveControlSocket } from '../control/client';
import { flowgateVersion } from '../control/protocol';
import type { FlowEndpointView, GatewayFlow } from '../gateway/types';

export const USAGE = `usage: flowgate flows [--json] [-c FILE | --socket PATH]

Lists the connections the running flowgate has offloaded to the fast path, like
conntrack -L: protocol, idle seconds, state, then the original direction (addresses,
ports, input and output device, packets, bytes), the reply direction, and the tunnel.
The two tuples are conntrack's original and reply tuples, so a NATed connection shows its
translation as conntrack does; a connection seen one way only shows the reply tuple
conntrack expects, after [UNREPLIED]. State: offloaded, closing (FIN/RST seen, still on the
fast path) or teardown (leaving it).

  --json              a JSON array of flows: proto, src, dst, sport, dport, nat, in,
                      out, packets, bytes, tunnel, idle, state, reply, id (nat: the
                      tuple packets leave with when NAT rewrites them, else null)
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
  parts.push(`id=${flow.id}`);
  return parts.join(' ');
}

export function formatFlows(flows: readonly GatewayFlow[]): string {
  return flows.map((flow) => `${formatFlow(flow)}\n`).join('');
}

export interface InstanceArgs {
  json: boolean;
  socket: string;
}

/** The options flows and stats share, or the exit code once a usage error or the help is printed. */
export async function parseInstanceArgs(command: string, argv: string[], usage: string): Promise<InstanceArgs | number> {
  let values: { json?: boolean | undefined; config?: string | undefined; socket?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        json: { type: 'boolean' },
        config: { type: 'string', short: 'c' },
        socket: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
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
  try {
    return { json: values.json === true, socket: await resolveControlSocket({ config: values.config, socket: values.socket }) };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(
      `flowgate ${command}: cannot read control.socket from ${values.config}: the config is invalid (use --socket PATH):\n` +
        err.issues.map((issue) => `${formatIssue(issue)}\n`).join(''),
    );
    return 1;
  }
}

export async function run(argv: string[]): Promise<number> {
  const args = await parseInstanceArgs('flows', argv, USAGE);
  if (typeof args === 'number') return args;
  const flows = await controlRequest(args.socket, 'flows');
  if (args.json) {
    process.stdout.write(`${JSON.stringify(flows, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(formatFlows(flows));
  // As conntrack: the count on stderr, so that stdout is only flows.
  process.stderr.write(`flowgate v${flowgateVersion()}: ${flows.length} flow ${flows.length === 1 ? 'entry has' : 'entries have'} been shown.\n`);
  return 0;
}
