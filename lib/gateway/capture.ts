/**
 * `capture` on a running instance: copies of a port's frames written as pcapng into a FIFO
 * that the client (flowgate capture) made and reads. The gateway process owns the ports, the
 * client is another process: a FIFO in the client's private directory carries the bytes
 * without a second copy through the control socket, and its reader going away (Ctrl-C, a
 * killed client, tshark quitting) is seen by the writer at once.
 *
 * The request lasts until the capture has written its count, the FIFO's reader has gone,
 * or the client has closed its control connection; then the capture is stopped and its
 * pool, ring, thread and descriptor are freed.
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { CAPTURE_DIRECTION_NAMES, type CaptureDirection, type CaptureStats, type Dataplane } from '../dataplane';
import { intIn, InvalidArgumentError, StateError } from '../errors';

export interface CaptureRequest {
  port: string;
  direction: CaptureDirection;
  /** A tcpdump expression; '' captures every frame. */
  filter: string;
  snaplen: number;
  /** Packets to write before the capture ends; 0: until the client goes. */
  count: number;
  /** The FIFO to write into, which the client has open for reading. */
  fifo: string;
}

export interface CaptureResult {
  /** Packets written into the FIFO, frames the filter matched, copies lost (a slow reader, a full ring), bytes written. */
  written: number;
  matched: number;
  lost: number;
  bytes: number;
  /** Why it ended: 'count', 'reader_gone' (the client closed the FIFO), 'write_error' or 'stopped'. */
  end: CaptureStats['end'];
}

/** How often a running capture is looked at (its end, the client) while it runs. */
const POLL_MS = 250;


/** A capture request's params, checked; messages name `params.<field>`. */
export function parseCaptureParams(params: Record<string, unknown>): CaptureRequest {
  const { port, direction = 'both', filter = '', snaplen = 262144, count = 0, fifo } = params;
  if (typeof port !== 'string' || port === '') throw new InvalidArgumentError(`params.port: expected a port name, found ${JSON.stringify(port) ?? 'nothing'}`);
  if (typeof direction !== 'string' || !CAPTURE_DIRECTION_NAMES.includes(direction as CaptureDirection))
    throw new InvalidArgumentError(`params.direction: expected rx, tx or both, found ${JSON.stringify(direction)}`);
  if (typeof filter !== 'string') throw new InvalidArgumentError(`params.filter: expected a tcpdump filter expression, found ${JSON.stringify(filter)}`);
  if (typeof fifo !== 'string' || !fifo.startsWith('/'))
    throw new InvalidArgumentError(`params.fifo: expected the absolute path of a FIFO open for reading, found ${JSON.stringify(fifo) ?? 'nothing'}`);
  return {
    port,
    direction: direction as CaptureDirection,
    filter,
    snaplen: intIn(snaplen, 'params.snaplen', 64, 262144),
    count: intIn(count, 'params.count', 0, 2 ** 32 - 1),
    fifo,
  };
}

/**
 * Opens the request's FIFO for writing: only a FIFO (the gateway runs as root and must not
 * be made to write some other file), never through a symbolic link, and only while its
 * reader has it open (O_NONBLOCK fails with ENXIO otherwise, instead of waiting).
 */
async function openFifo(path: string): Promise<fsp.FileHandle> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENXIO' ? 'nothing has it open for reading' : e.message;
    throw new InvalidArgumentError(`params.fifo: cannot open ${path} for writing: ${why}`);
  }
  if (!(await handle.stat()).isFIFO()) {
    await handle.close();
    throw new InvalidArgumentError(`params.fifo: ${path} is not a FIFO`);
  }
  return handle;
}

/**
 * Runs a capture on one of `ports` (the config's ports and VLANs: the dataplane's own TAP
 * and TUN ports are not the operator's) until it ends by itself or `alive` throws (the
 * client went away; its error is rethrown once the capture is stopped). `alive` is called
 * with the packets written so far at every look.
 */
export async function runCapture(
  dp: Dataplane,
  ports: readonly string[],
  request: CaptureRequest,
  alive: (written: number) => Promise<void>,
): Promise<CaptureResult> {
  if (!ports.includes(request.port))
    throw new InvalidArgumentError(`params.port: no port named '${request.port}' (ports: ${ports.join(', ') || 'none'})`);
  const fifo = await openFifo(request.fifo);
  let id: number;
  try {
    id = dp.startCapture({
      port: request.port,
      direction: request.direction,
      filter: request.filter,
      snaplen: request.snaplen,
      count: request.count,
      fd: fifo.fd,
    });
  } finally {
    // The capture has its own duplicate.
    await fifo.close();
  }
  let failure: unknown;
  try {
    for (;;) {
      const { end, written } = dp.captureStats(id);
      if (end !== 'running') break;
      await alive(written);
      await sleep(POLL_MS);
    }
  } catch (err) {
    failure = err;
  }
  // A gateway that stopped meanwhile has stopped its captures with its dataplane.
  if (!dp.running) throw failure ?? new StateError('ERR_FLOWGATE_STATE', `the capture on ${request.port} ended: the gateway stopped`);
  const final = dp.stopCapture(id);
  if (failure !== undefined) throw failure;
  return { written: final.written, matched: final.matched, lost: final.lost, bytes: final.bytes, end: final.end };
}
