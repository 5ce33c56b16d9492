/**
 * The control protocol: newline-delimited JSON over a unix stream socket.
 *
 *   → {"id":1,"method":"stats"}
 *   ← {"id":1,"result":{"uptime":12.5,"ports":{...},...}}
 *   → {"id":"a","method":"nope"}
 *   ← {"id":"a","error":{"code":"ERR_FLOWGATE_CONTROL_UNKNOWN_METHOD","message":"unknown method 'nope' (methods: ping, version, stats, flows, xstats, trace, capture)"}}
 *
 * One request per line, one final response line per request, in request order; a connection
 * may carry any number of requests. `id` is the caller's (a number or a string) and is
 * echoed; a request that could not be read at all is answered with `"id": null`. `params` is
 * an optional object. Errors carry the same stable `code` as FlowgateError.
 *
 * `flows` streams: one record line per flow, then the final response, which carries the
 * count of records sent (or an error, if the listing failed part way; records before it
 * stand):
 *
 *   → {"id":3,"method":"flows","params":{"proto":"tcp","dst":"10.0.0.0/8"}}
 *   ← {"id":3,"record":{"id":17,"proto":"tcp","src":"192.168.0.10",...}}
 *   ← {"id":3,"record":{"id":21,"proto":"tcp","src":"192.168.0.11",...}}
 *   ← {"id":3,"result":{"count":2}}
 *
 * Its params are filters, all optional, all of which a flow must match: `proto` ("tcp" or
 * "udp"), `src` and `dst` (an address or a prefix ADDR/LEN, against the original tuple),
 * `port` (the original tuple's source or destination port), `tunnel` (a tunnel name) and
 * `state` ("offloaded", "closing" or "teardown"); `"count": true` sends no record, only the
 * final count. While nothing else is sent for a second (a count over millions of flows), a
 * progress line says how many flows were looked at so far, {"id":3,"progress":{"scanned":N}},
 * so that a client can tell a busy instance from a hung one.
 *
 * `trace` streams too: one record line per packet traced (GatewayTraceRecord: input port,
 * decision and reason, flow id, output, first bytes as received and as sent), as the
 * packets come, then {"count":N,"lost":L}. Params, all optional: `count` (packets, default
 * 50), `port` (input port or VLAN name), `filter` (a tcpdump-style expression, which libpcap
 * compiles). One trace at a time per instance (a second fails with ERR_FLOWGATE_TRACE_BUSY);
 * a client that disconnects stops it. While no packet comes, progress lines keep the
 * connection alive, as for `flows`.
 *
 * The server reads the flowtable a page at a time, waits for the client to read what it sent
 * before sending more, and lets the event loop run between pages: a listing of millions of
 * flows neither holds them all in memory nor stalls the instance.
 *
 * `capture` writes copies of a port's frames as pcapng into a FIFO the client made and
 * reads (lib/gateway/capture.ts): params `port`, `fifo`, and optional `direction` ("rx",
 * "tx" or "both"), `filter` (tcpdump syntax), `snaplen` and `count`. It answers once the
 * capture has ended (count reached, or the FIFO's reader gone) with {written, matched,
 * lost, bytes, end}, and sends progress lines ({"progress":{"scanned":WRITTEN}}) meanwhile;
 * a client that closes its connection stops it.
 *
 * Newline-delimited JSON rather than HTTP or JSON-RPC 2.0: `socat - UNIX:/run/flowgate/flowgate.sock`
 * is a complete client, and nothing beyond JSON.parse is needed on either side.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import type { CaptureResult } from '../gateway/capture';
import type { GatewayFlow, GatewayStats, GatewayTraceRecord, PortXstats } from '../gateway/types';

/** Bumped when a method's result changes incompatibly (2: flows streams records). */
export const CONTROL_PROTOCOL_VERSION = 2;

/** A request line longer than this is refused: no request needs more, and it bounds memory. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export type RequestId = number | string;

export interface ControlRequest {
  id: RequestId;
  method: string;
  params?: Record<string, unknown>;
}

export interface ControlErrorBody {
  code: string;
  message: string;
}

export type ControlResponse =
  | { id: RequestId; result: unknown }
  | { id: RequestId | null; error: ControlErrorBody }
  /** One item of a streamed answer; the final result or error follows the last. */
  | { id: RequestId; record: unknown }
  /** A streamed answer still under way, with nothing to send yet. */
  | { id: RequestId; progress: { scanned: number } };

export interface PingResult {
  /** The process serving the socket: what a second instance names when it refuses to start. */
  pid: number;
}

export interface VersionResult {
  version: string;
  protocol: number;
  pid: number;
  node: string;
}

export interface XstatsResult {
  /** Each port's NIC extended statistics, every one of them, zeros included. */
  ports: PortXstats;
}

export interface FlowsResult {
  /** Flows that matched the filters: the records sent, or with `count`, those that would have been. */
  count: number;
}

export interface TraceResult {
  /** Packets traced: the records sent. */
  count: number;
  /** Records the instance lost before it could send them (the client read too slowly). */
  lost: number;
}

/** Every method and its final result type. */
export interface ControlResults {
  ping: PingResult;
  version: VersionResult;
  stats: GatewayStats;
  flows: FlowsResult;
  xstats: XstatsResult;
  trace: TraceResult;
  capture: CaptureResult;
}

/** The methods that stream records before their result, and their record type. */
export interface ControlRecords {
  flows: GatewayFlow;
  trace: GatewayTraceRecord;
}

export type StreamingMethod = keyof ControlRecords;

export type ControlMethod = keyof ControlResults;

export const CONTROL_METHODS: readonly ControlMethod[] = ['ping', 'version', 'stats', 'flows', 'xstats', 'trace', 'capture'];

export const CONTROL_ERROR_CODES = {
  /** Another live process serves the socket. */
  inUse: 'ERR_FLOWGATE_CONTROL_IN_USE',
  /** The socket path exists and is something else than a socket. */
  notSocket: 'ERR_FLOWGATE_CONTROL_NOT_SOCKET',
  /** The socket could not be created (directory not writable, path too long...). */
  listen: 'ERR_FLOWGATE_CONTROL_LISTEN',
  /** No instance answers on the socket (client side). */
  unavailable: 'ERR_FLOWGATE_CONTROL_UNAVAILABLE',
  /** The instance did not answer in time (client side). */
  timeout: 'ERR_FLOWGATE_CONTROL_TIMEOUT',
  /** The connection ended before the answer (client side). */
  closed: 'ERR_FLOWGATE_CONTROL_CLOSED',
  /** A line that is not a request: not JSON, not an object, no method, too long. */
  badRequest: 'ERR_FLOWGATE_CONTROL_BAD_REQUEST',
  unknownMethod: 'ERR_FLOWGATE_CONTROL_UNKNOWN_METHOD',
  /** A method failed with something else than a FlowgateError: a bug, reported as such. */
  internal: 'ERR_FLOWGATE_CONTROL_INTERNAL',
} as const;

/**
 * Splits a byte stream into lines, refusing lines over `maxBytes` (the rest of such a line is
 * skipped up to its newline, so that a reader can answer and carry on).
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private skipping = false;

  constructor(private readonly maxBytes: number) {}

  /** Calls `onLine` for each complete line and `onTooLong` once per oversized line. */
  push(chunk: Buffer, onLine: (line: string) => void, onTooLong: () => void): void {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      const end = newline === -1 ? chunk.length : newline;
      if (!this.skipping) {
        this.pendingBytes += end - start;
        if (this.pendingBytes > this.maxBytes) {
          this.skipping = true;
          this.pending = [];
          this.pendingBytes = 0;
          onTooLong();
        } else {
          this.pending.push(chunk.subarray(start, end));
        }
      }
      if (newline === -1) return;
      if (!this.skipping) onLine(Buffer.concat(this.pending).toString('utf8'));
      this.pending = [];
      this.pendingBytes = 0;
      this.skipping = false;
      start = newline + 1;
    }
  }
}

export type ParsedRequest = { ok: true; request: ControlRequest } | { ok: false; id: RequestId | null; message: string };

function isRequestId(value: unknown): value is RequestId {
  return (typeof value === 'number' && Number.isFinite(value)) || typeof value === 'string';
}

/** Reads one request line; the message of a failure says what was expected and found. */
export function parseRequest(line: string): ParsedRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, id: null, message: `expected a JSON request such as {"id":1,"method":"stats"}, found '${truncate(line)}'` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, id: null, message: `expected a JSON object such as {"id":1,"method":"stats"}, found ${truncate(line)}` };
  }
  const record = value as Record<string, unknown>;
  const id = isRequestId(record.id) ? record.id : null;
  if (!isRequestId(record.id)) return { ok: false, id, message: `expected "id" to be a number or a string, found ${describe(record.id)}` };
  if (typeof record.method !== 'string') return { ok: false, id, message: `expected "method" to be a string, found ${describe(record.method)}` };
  const params = record.params;
  if (params !== undefined && (params === null || typeof params !== 'object' || Array.isArray(params))) {
    return { ok: false, id, message: `expected "params" to be an object when present, found ${describe(params)}` };
  }
  return {
    ok: true,
    request: { id: record.id, method: record.method, ...(params === undefined ? {} : { params: params as Record<string, unknown> }) },
  };
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  return truncate(JSON.stringify(value) ?? String(value));
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

let cachedVersion: string | undefined;

/** flowgate's version, from the package.json above this file (lib/ or dist/lib/). */
export function flowgateVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  cachedVersion = 'unknown';
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'flowgate' && typeof pkg.version === 'string') {
        cachedVersion = pkg.version;
        break;
      }
    } catch {
      // No package.json at this level: keep going up.
    }
    if (path.dirname(dir) === dir) break;
  }
  return cachedVersion;
}
