/**
 * The client side of the control socket, used by `flowgate flows|stats` and by a starting
 * instance to find out who serves a socket that is already there.
 */
import * as net from 'node:net';

import { loadConfig } from '../config/load';
import { DEFAULT_CONTROL_SOCKET } from '../config/schema';
import { ControlError } from './errors';
import {
  CONTROL_ERROR_CODES,
  LineSplitter,
  type ControlMethod,
  type ControlRecords,
  type ControlResponse,
  type ControlResults,
  type RequestId,
  type StreamingMethod,
} from './protocol';

export const DEFAULT_CONTROL_TIMEOUT_MS = 5000;

/** The largest line is a stats answer or one flow record; a line longer than this is not one we can use. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/**
 * Takes the records of a streamed answer as they arrive, a batch per chunk read from the
 * socket. Returning a promise stops reading until it settles: a consumer slower than the
 * instance (a full pipe) holds the instance back instead of piling records up here.
 */
export type RecordConsumer<R> = (records: R[]) => void | Promise<void>;

interface Pending {
  method: string;
  /** Re-armed by every record and progress line: a long listing is fine as long as it keeps coming. */
  timer: NodeJS.Timeout;
  onRecords?: RecordConsumer<unknown>;
  /** Records of the chunk being read, handed over once the chunk is done. */
  batch: unknown[];
  /** The consumer is still busy with the previous batch. */
  consuming: Promise<void> | undefined;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

function connectError(socketPath: string, err: NodeJS.ErrnoException): ControlError {
  const errno = typeof err.errno === 'number' ? -err.errno : undefined;
  const options = { cause: err, ...(errno === undefined ? {} : { errno }) };
  switch (err.code) {
    case 'ENOENT':
      return new ControlError(
        CONTROL_ERROR_CODES.unavailable,
        `no flowgate is serving ${socketPath}: the socket does not exist (is 'flowgate run' running with this control.socket?)`,
        options,
      );
    case 'ECONNREFUSED':
      return new ControlError(
        CONTROL_ERROR_CODES.unavailable,
        `no flowgate is serving ${socketPath}: the socket was left by an instance that is no longer running`,
        options,
      );
    case 'EACCES':
    case 'EPERM':
      return new ControlError(
        CONTROL_ERROR_CODES.unavailable,
        `permission denied on ${socketPath}: the control socket is root-only (mode 0600), run this as root`,
        options,
      );
    case 'ENOTSOCK':
      return new ControlError(CONTROL_ERROR_CODES.unavailable, `${socketPath} is not a socket`, options);
    default:
      return new ControlError(CONTROL_ERROR_CODES.unavailable, `cannot connect to ${socketPath}: ${err.message}`, options);
  }
}

export interface ControlClientOptions {
  /** How long to wait for the connection and for each answer; default 5 s. */
  timeoutMs?: number;
}

export class ControlClient {
  private nextId = 1;
  private readonly pending = new Map<RequestId, Pending>();
  private readonly lines = new LineSplitter(MAX_RESPONSE_BYTES);
  private closedError: ControlError | undefined;

  private constructor(
    readonly socketPath: string,
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.lines.push(
        chunk,
        (line) => this.onLine(line),
        () => this.fail(new ControlError(CONTROL_ERROR_CODES.badRequest, `${socketPath} sent a response line over ${MAX_RESPONSE_BYTES} bytes`)),
      );
      for (const pending of this.pending.values()) this.deliver(pending);
    });
    socket.on('error', (err) => this.fail(new ControlError(CONTROL_ERROR_CODES.closed, `control connection to ${socketPath} failed: ${err.message}`, { cause: err })));
    socket.on('close', () => this.fail(new ControlError(CONTROL_ERROR_CODES.closed, `${socketPath} closed the connection before answering`)));
  }

  static connect(socketPath: string, options: ControlClientOptions = {}): Promise<ControlClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ControlError(CONTROL_ERROR_CODES.timeout, `${socketPath} did not accept the connection within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(connectError(socketPath, err));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new ControlClient(socketPath, socket, timeoutMs));
      });
    });
  }

  /** Sends one request; resolves with its result or rejects with the error the instance answered. */
  request<M extends ControlMethod>(method: M, params?: Record<string, unknown>): Promise<ControlResults[M]>;
  request(method: string, params?: Record<string, unknown>): Promise<unknown>;
  request(method: string, params?: Record<string, unknown>): Promise<unknown> {
    return this.send(method, params, undefined);
  }

  /**
   * Sends a request whose answer streams records: `onRecords` takes them as they arrive,
   * and the promise resolves with the final result once every record has been consumed.
   */
  stream<M extends StreamingMethod>(method: M, params: Record<string, unknown>, onRecords: RecordConsumer<ControlRecords[M]>): Promise<ControlResults[M]> {
    return this.send(method, params, onRecords as RecordConsumer<unknown>) as Promise<ControlResults[M]>;
  }

  private send(method: string, params: Record<string, unknown> | undefined, onRecords: RecordConsumer<unknown> | undefined): Promise<unknown> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ControlError(CONTROL_ERROR_CODES.timeout, `${this.socketPath} did not answer '${method}' within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, {
        method,
        timer,
        ...(onRecords === undefined ? {} : { onRecords }),
        batch: [],
        consuming: undefined,
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      this.socket.write(`${JSON.stringify({ id, method, ...(params === undefined ? {} : { params }) })}\n`);
    });
  }

  close(): void {
    this.closedError ??= new ControlError(CONTROL_ERROR_CODES.closed, `the connection to ${this.socketPath} was closed`);
    this.socket.end();
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let response: ControlResponse;
    try {
      response = JSON.parse(line) as ControlResponse;
    } catch {
      this.fail(new ControlError(CONTROL_ERROR_CODES.badRequest, `${this.socketPath} answered something that is not JSON`));
      return;
    }
    const pending = response.id === null ? undefined : this.pending.get(response.id);
    if (pending === undefined) return;
    if ('progress' in response) {
      pending.timer.refresh();
      return;
    }
    if ('record' in response) {
      if (pending.onRecords === undefined) {
        this.fail(new ControlError(CONTROL_ERROR_CODES.badRequest, `${this.socketPath} streamed records in answer to '${pending.method}'`));
        return;
      }
      pending.batch.push(response.record);
      pending.timer.refresh();
      return;
    }
    this.pending.delete(response.id as RequestId);
    // The records that came before the final line are consumed before the request settles.
    this.deliver(pending);
    const settle = 'error' in response ? () => pending.reject(new ControlError(response.error.code, response.error.message)) : () => pending.resolve(response.result);
    if (pending.consuming === undefined) settle();
    else pending.consuming.then(settle, () => undefined); // a failed consumer has rejected it already
  }

  /** Hands the batch read so far to its consumer; the socket is not read while the consumer is busy. */
  private deliver(pending: Pending): void {
    const { onRecords } = pending;
    if (onRecords === undefined || pending.batch.length === 0) return;
    const batch = pending.batch;
    pending.batch = [];
    let consumed: void | Promise<void>;
    try {
      // Lines of the chunk in hand still arrive after a pause: they wait for the batch before.
      consumed = pending.consuming === undefined ? onRecords(batch) : pending.consuming.then(() => onRecords(batch));
    } catch (err) {
      this.abandon(pending, err);
      return;
    }
    if (consumed === undefined) return;
    this.socket.pause();
    const consuming: Promise<void> = consumed.then(() => {
      if (pending.consuming !== consuming) return;
      pending.consuming = undefined;
      this.socket.resume();
    });
    consuming.catch((err: unknown) => this.abandon(pending, err));
    pending.consuming = consuming;
  }

  /** The consumer failed (stdout closed...): the request fails with its error and the connection ends. */
  private abandon(pending: Pending, err: unknown): void {
    for (const [id, p] of this.pending) if (p === pending) this.pending.delete(id);
    pending.reject(err instanceof Error ? err : new Error(String(err)));
    this.close();
  }

  private fail(err: ControlError): void {
    this.closedError ??= err;
    for (const pending of this.pending.values()) pending.reject(err);
    this.pending.clear();
    this.socket.destroy();
  }
}

/** Connects, asks one thing and disconnects. */
export async function controlRequest<M extends ControlMethod>(
  socketPath: string,
  method: M,
  options: ControlClientOptions = {},
): Promise<ControlResults[M]> {
  const client = await ControlClient.connect(socketPath, options);
  try {
    return await client.request(method);
  } finally {
    client.close();
  }
}

/** Connects, streams one request's records to `onRecords` and disconnects. */
export async function controlStream<M extends StreamingMethod>(
  socketPath: string,
  method: M,
  params: Record<string, unknown>,
  onRecords: RecordConsumer<ControlRecords[M]>,
  options: ControlClientOptions = {},
): Promise<ControlResults[M]> {
  const client = await ControlClient.connect(socketPath, options);
  try {
    return await client.stream(method, params, onRecords);
  } finally {
    client.close();
  }
}

/**
 * The socket of the instance a CLI command talks to: `--socket` when given, else the
 * `control.socket` of the config given with `-c`, else the default. An invalid config is
 * reported as such (ConfigError), since its socket setting cannot be trusted.
 */
export async function resolveControlSocket(options: { socket?: string | undefined; config?: string | undefined }): Promise<string> {
  if (options.socket !== undefined) return options.socket;
  if (options.config !== undefined) return (await loadConfig(options.config)).control.socket;
  return DEFAULT_CONTROL_SOCKET;
}
