/**
 * `flowgate capture`: copies of a port's frames, as the running instance's workers see
 * them, in pcapng, filtered like tcpdump. The instance writes into a FIFO that this command
 * makes in a private temporary directory and copies to the file or to stdout
 * (lib/gateway/capture.ts says why a FIFO). It ends after --count packets, or on Ctrl-C or
 * when the reader of stdout goes; then, as tcpdump does, it says on stderr how many packets
 * it captured and how many copies were lost.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { finished } from 'node:stream/promises';
import { parseArgs } from 'node:util';

import { ConfigError, formatIssue } from '../config';
import { ControlClient, resolveControlSocket } from '../control/client';
import { CAPTURE_DIRECTION_NAMES } from '../dataplane';
import type { CaptureResult } from '../gateway/capture';
import { FlowgateError } from '../errors';
import { INSTANCE_OPTIONS } from './flows';
import { HELP_OPTION, type CliOptions } from './options';

export const USAGE = `usage: flowgate capture --port NAME [--direction rx|tx|both] [-w FILE|-] [--count N] [-s N] [-c FILE | --socket PATH] [FILTER...]

Writes copies of the frames of a port of the running flowgate as pcapng, as dpdk-dumpcap
and tcpdump -w do: rx are the frames the port received, before any processing; tx the
frames sent on it (forwarded by the fast path and sent by the kernel through its TAP).
FILTER is a tcpdump filter expression (pcap-filter(7)), the remaining arguments joined by
spaces. Copies are made only while a capture runs; a reader too slow for the traffic
loses copies (counted), never forwarded packets. One capture per port at a time.

  --port NAME         the port (a VLAN: capture on its parent with the filter 'vlan ID')
  --direction DIR     rx, tx or both               (default both)
  -w, --write FILE    write to FILE; '-' writes to stdout, e.g. | tshark -r -
                      (default: stdout, unless it is a terminal)
  --count N           stop after N packets          (default: until Ctrl-C)
  -s, --snaplen N     keep at most N bytes of each frame (64..262144, default all)
  -c, --config FILE   find the instance by the control.socket of FILE
  --socket PATH       the control socket            (default /run/flowgate/flowgate.sock)
  -h, --help          this text

Examples:
  flowgate capture --port eth0 -w /tmp/eth0.pcapng udp port 53
  flowgate capture --port eth1 --direction tx -w - ip6 proto 4 | tshark -r - -V
`;

/** After Ctrl-C, how long the instance has to say the capture's final counts. */
const STOP_GRACE_MS = 3000;

const PCAPNG_ENHANCED_PACKET_BLOCK = 6;

/** Counts the packets (enhanced packet blocks) of a pcapng stream, chunk by chunk. */
export class PcapngPacketCounter {
  packets = 0;
  /** Bytes of the current block still to come. */
  private skip = 0;
  private header = Buffer.alloc(0);

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        this.skip -= n;
        at += n;
        continue;
      }
      // A block header (type, total length) may straddle chunks.
      const need = 8 - this.header.length;
      this.header = Buffer.concat([this.header, chunk.subarray(at, at + need)]);
      at += Math.min(need, chunk.length - at);
      if (this.header.length < 8) return;
      const type = this.header.readUInt32LE(0);
      const length = this.header.readUInt32LE(4);
      this.header = Buffer.alloc(0);
      if (type === PCAPNG_ENHANCED_PACKET_BLOCK) this.packets++;
      this.skip = Math.max(0, length - 8);
    }
  }
}

interface CaptureArgs {
  socket: string;
  port: string;
  direction: string;
  output: string;
  count: number;
  snaplen: number;
  filter: string;
}

function usageError(message: string): number {
  process.stderr.write(`flowgate capture: ${message}\n`);
  return 2;
}

/** Everything capture takes, for its parser and the completion; FILTER is the operands. */
export const OPTIONS = {
  port: { type: 'string' },
  direction: { type: 'string', complete: CAPTURE_DIRECTION_NAMES },
  write: { type: 'string', short: 'w', complete: 'file' },
  count: { type: 'string' },
  snaplen: { type: 'string', short: 's' },
  config: INSTANCE_OPTIONS.config,
  socket: INSTANCE_OPTIONS.socket,
  help: HELP_OPTION,
} as const satisfies CliOptions;

async function parse(argv: string[]): Promise<CaptureArgs | number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: OPTIONS,
      strict: true,
      allowPositionals: true,
    }) as { values: Record<string, string | boolean | undefined>; positionals: string[] });
  } catch (err) {
    return usageError((err as Error).message);
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const port = values.port;
  if (typeof port !== 'string' || port === '') return usageError('--port NAME is required');
  const direction = typeof values.direction === 'string' ? values.direction : 'both';
  if (!['rx', 'tx', 'both'].includes(direction)) return usageError(`--direction: expected rx, tx or both, found '${direction}'`);
  const integer = (name: string, min: number, max: number, fallback: number): number | string => {
    const text = values[name];
    if (typeof text !== 'string') return fallback;
    const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
    return Number.isSafeInteger(n) && n >= min && n <= max ? n : `--${name}: expected an integer ${min}..${max}, found '${text}'`;
  };
  const count = integer('count', 1, 2 ** 32 - 1, 0);
  if (typeof count === 'string') return usageError(count);
  const snaplen = integer('snaplen', 64, 262144, 262144);
  if (typeof snaplen === 'string') return usageError(snaplen);
  const output = typeof values.write === 'string' ? values.write : '-';
  if (output === '-' && values.write === undefined && process.stdout.isTTY === true)
    return usageError('stdout is a terminal: write to a file with -w FILE, or pipe into tshark -r -');
  if (values.config !== undefined && values.socket !== undefined) return usageError('give -c FILE or --socket PATH, not both');
  const config = typeof values.config === 'string' ? values.config : undefined;
  let socket: string;
  try {
    socket = await resolveControlSocket({ config, socket: typeof values.socket === 'string' ? values.socket : undefined });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(
      `flowgate capture: cannot read control.socket from ${config}: the config is invalid (use --socket PATH):\n` +
        err.issues.map((issue) => `${formatIssue(issue)}\n`).join(''),
    );
    return 2;
  }
  return { socket, port, direction, output, count, snaplen, filter: positionals.join(' ') };
}

/** A FIFO only this user can reach, in a fresh private directory. */
function makeFifo(): { dir: string; fifo: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowgate-capture-'));
  const fifo = path.join(dir, 'capture.pcapng');
  const made = spawnSync('mkfifo', ['-m', '600', fifo], { encoding: 'utf8' });
  if (made.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new FlowgateError('ERR_FLOWGATE_CAPTURE', `cannot make a FIFO in ${dir}: ${made.error?.message ?? made.stderr.trim()}`);
  }
  return { dir, fifo };
}

export async function run(argv: string[]): Promise<number> {
  const args = await parse(argv);
  if (typeof args === 'number') return args;
  const { dir, fifo } = makeFifo();
  try {
    return await capture(args, fifo);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function capture(args: CaptureArgs, fifo: string): Promise<number> {
  // Our own stream on fd 1, not process.stdout: a reader of stdout that leaves ends the
  // capture with its counts said, rather than the process at once.
  let out: fs.WriteStream;
  try {
    out = args.output === '-' ? fs.createWriteStream('', { fd: 1, autoClose: false }) : fs.createWriteStream(args.output, { flags: 'w' });
    if (args.output !== '-') await once(out, 'open');
  } catch (err) {
    process.stderr.write(`flowgate capture: cannot write ${args.output}: ${(err as Error).message}\n`);
    return 1;
  }
  // Open before the request: the instance opens the FIFO for writing only while it has a reader.
  const reader = new net.Socket({ fd: fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
  const counter = new PcapngPacketCounter();
  const readerClosed = once(reader, 'close');
  let outputError: Error | undefined;
  // Leaving the FIFO is how the capture is stopped: its writer sees its reader gone.
  const stopReading = () => reader.destroy();
  reader.on('data', (chunk: Buffer) => {
    counter.push(chunk);
    if (!out.write(chunk)) {
      reader.pause();
      out.once('drain', () => reader.resume());
    }
  });
  reader.on('error', stopReading);
  out.on('error', (err) => {
    outputError = err;
    stopReading();
  });

  let client: ControlClient;
  try {
    client = await ControlClient.connect(args.socket);
  } catch (err) {
    stopReading();
    throw err;
  }
  let interrupted = 0;
  let graceTimer: NodeJS.Timeout | undefined;
  const onSignal = () => {
    if (++interrupted > 1) process.exit(130);
    stopReading();
    // An instance that does not answer in time still lets us go.
    graceTimer = setTimeout(() => client.close(), STOP_GRACE_MS);
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  let result: CaptureResult | undefined;
  let failure: unknown;
  try {
    result = await client.request('capture', {
      port: args.port,
      direction: args.direction,
      filter: args.filter,
      snaplen: args.snaplen,
      ...(args.count === 0 ? {} : { count: args.count }),
      fifo,
    });
  } catch (err) {
    failure = err;
    stopReading();
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    clearTimeout(graceTimer);
    client.close();
  }
  // The instance closed its end before answering: what it wrote is read to the end.
  await readerClosed;
  out.end();
  await finished(out).catch(() => undefined);

  if (result === undefined) {
    if (interrupted > 0) {
      process.stderr.write(`${counter.packets} packets captured\n`);
      return 0;
    }
    if (failure instanceof FlowgateError) {
      process.stderr.write(`flowgate capture: ${failure.message}\n`);
      return failure.code === 'ERR_FLOWGATE_INVALID_ARGUMENT' ? 2 : 1;
    }
    throw failure;
  }
  // Blocks still in the FIFO when we left it count as lost with the copies the instance lost.
  const lost = result.lost + Math.max(0, result.written - counter.packets);
  process.stderr.write(`${counter.packets} packets captured\n${result.matched} packets matched the filter\n${lost} packets lost\n`);
  if (result.end === 'write_error') {
    process.stderr.write(`flowgate capture: the instance could not write the capture\n`);
    return 1;
  }
  if (outputError !== undefined && (outputError as NodeJS.ErrnoException).code !== 'EPIPE') {
    process.stderr.write(`flowgate capture: cannot write ${args.output === '-' ? 'stdout' : args.output}: ${outputError.message}\n`);
    return 1;
  }
  return 0;
}
