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
  type ControlResponse,
  type ControlResults,
  type RequestId,
} from './protocol';

export const DEFAULT_CONTROL_TIMEOUT_MS = 5000;

/** Responses can be large (every flow); a line longer than this is not a response we can use. */
const MAX_RESPONSE_BYTES = 1024 * 1024 * 1024;

interface Pending {
  method: string;
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
    socket.on('data', (chunk: Buffer) =>
      this.lines.push(
        chunk,
        (line) => this.onLine(line),
        () => this.fail(new ControlError(CONTROL_ERROR_CODES.badRequest, `${socketPath} sent a response line over ${MAX_RESPONSE_BYTES} bytes`)),
      ),
    );
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
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ControlError(CONTROL_ERROR_CODES.timeout, `${this.socketPath} did not answer '${method}' within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, {
        method,
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
    this.pending.delete(response.id as RequestId);
    if ('error' in response) pending.reject(new ControlError(response.error.code, response.error.message));
    else pending.resolve(response.result);
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
