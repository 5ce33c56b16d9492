/**
 * `flowgate trace`: the next packets the running instance handles, each with its input
 * port, a decode of its headers, what the fast path (or the slow-path thread) decided and
 * why, the flow it hit and where it went, in the manner of VPP's `show trace`. Packets are
 * printed as the instance traces them; the trace stops itself after --count packets, and
 * stops when this command is interrupted.
 */
import { once } from 'node:events';

import { ControlClient } from '../control/client';
import { ControlError } from '../control/errors';
import { flowgateVersion } from '../control/protocol';
import { DEFAULT_TRACE_COUNT, parseTraceQuery } from '../control/trace-query';
import type { GatewayTraceRecord } from '../gateway/types';
import { decodeHeaders } from '../packet-decode';
import { INSTANCE_OPTIONS, parseInstanceArgs } from './flows';
import type { CliOptions } from './options';

export const USAGE = `usage: flowgate trace [--count N] [--port NAME] [--filter EXPR] [--json] [-c FILE | --socket PATH]

Traces the next packets the running flowgate handles: those the workers receive on the
ports, and those the kernel sends out of the TAP and TUN devices. For each: when, which
worker, the input port, its headers as received (Ethernet, VLAN tags, IPv4/IPv6, the
tunnel's outer header and encapsulation limit, the inner packet, TCP/UDP/ICMP), the
decision (forward, decap, encap, punt with its reason, drop with its reason), the flow it
hit (the id flowgate flows shows) and where it went, with its headers as sent when it was
rewritten. Tracing costs the fast path nothing while no trace runs; one trace at a time.

  --count N           packets to trace                          (default ${DEFAULT_TRACE_COUNT})
  --port NAME         only packets arriving on this port or VLAN (a TAP or TUN: what
                      the kernel sends out of it)
  --filter EXPR       only packets matching this tcpdump-style filter (libpcap syntax,
                      e.g. 'udp port 53', 'host 10.0.0.1 and tcp'), on the frame as the
                      port sees it (a VLAN's untagged, a TUN's the IP packet)
  --json              one JSON object per line (NDJSON), a packet each: seq, time, worker,
                      in, out, decision, reason, punt_reason, flow, flow_direction,
                      wire_length, rx_link, rx, tx_length, tx_link, tx (bytes in hex)
  -c, --config FILE   find the instance by the control.socket of FILE
  --socket PATH       the control socket      (default /run/flowgate/flowgate.sock)
  -h, --help          this text
`;

const indent = (lines: string[], by: string) => lines.map((l) => `${by}${l}\n`).join('');

function decision(r: GatewayTraceRecord): string {
  const parts = [r.reason === null ? r.decision : `${r.decision} (${r.reason})`];
  if (r.decision === 'drop' && r.punt_reason !== null) parts.push(`punted for ${r.punt_reason}`);
  if (r.flow !== null) parts.push(`flow ${r.flow}${r.flow_direction === null ? '' : ` (${r.flow_direction})`}`);
  else if (r.decision !== 'drop') parts.push('no flow');
  if (r.out !== null) parts.push(`to ${r.out}`);
  return parts.join(', ');
}

/** One packet as a block of lines, VPP `show trace` style. */
export function formatTraceRecord(r: GatewayTraceRecord): string {
  const who = r.worker === 'slowpath' ? 'slow-path thread' : `worker ${r.worker}`;
  let text = `Packet ${r.seq}  ${r.time}  ${who}\n`;
  text += `  in ${r.in}, ${r.wire_length} bytes\n`;
  text += indent(decodeHeaders(Buffer.from(r.rx, 'hex'), r.rx_link, r.wire_length), '    ');
  text += `  ${decision(r)}\n`;
  if (r.tx !== null && r.tx_link !== null && r.tx_length !== null && (r.tx !== r.rx || r.tx_length !== r.wire_length)) {
    text += `  out ${r.out ?? '?'}, ${r.tx_length} bytes, as sent\n`;
    text += indent(decodeHeaders(Buffer.from(r.tx, 'hex'), r.tx_link, r.tx_length), '    ');
  }
  return `${text}\n`;
}

/** Writes to stdout; when the pipe is full, the promise holds the trace until it drains. */
function print(text: string): void | Promise<void> {
  if (text === '' || process.stdout.write(text)) return;
  return once(process.stdout, 'drain').then(() => undefined);
}

/** What trace takes beside the instance's options. */
const TRACE_OPTIONS = {
  count: { type: 'string' },
  port: { type: 'string' },
  filter: { type: 'string' },
} as const satisfies CliOptions;

/** Everything trace takes, for its parser and the completion. */
export const OPTIONS: CliOptions = { ...INSTANCE_OPTIONS, ...TRACE_OPTIONS };

export async function run(argv: string[]): Promise<number> {
  const args = await parseInstanceArgs('trace', argv, USAGE, TRACE_OPTIONS);
  if (typeof args === 'number') return args;
  const params: Record<string, unknown> = {};
  const { count, port, filter } = args.values;
  if (typeof count === 'string') params.count = /^[0-9]+$/.test(count) ? Number(count) : count;
  if (typeof port === 'string') params.port = port;
  if (typeof filter === 'string') params.filter = filter;
  try {
    parseTraceQuery(params, (param) => `--${param}`);
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    process.stderr.write(`flowgate trace: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  // The instance sends a line at least every second while it waits for packets.
  const client = await ControlClient.connect(args.socket);
  try {
    const format = args.json ? (r: GatewayTraceRecord) => `${JSON.stringify(r)}\n` : formatTraceRecord;
    const result = await client.stream('trace', params, (records) => print(records.map(format).join('')));
    if (!args.json) {
      const lost = result.lost === 0 ? '' : `, ${result.lost} lost (not read in time)`;
      process.stderr.write(`flowgate v${flowgateVersion()}: ${result.count} packet${result.count === 1 ? '' : 's'} traced${lost}.\n`);
    }
    return 0;
  } catch (err) {
    // What the instance refused as given (a filter libpcap cannot compile, a port it does
    // not have) is a usage error, said in one line; a second trace is busy (exit 1).
    if (err instanceof ControlError && err.code === 'ERR_FLOWGATE_INVALID_ARGUMENT') {
      process.stderr.write(`flowgate trace: ${err.message}\n`);
      return 2;
    }
    throw err;
  } finally {
    client.close();
  }
}
