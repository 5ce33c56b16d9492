/**
 * The control socket a running instance serves (protocol.ts describes the wire format).
 *
 * One instance serves a socket path: a second flowgate started with the same control.socket
 * finds it served and refuses to start (ControlSocketInUseError). The instance lock proper,
 * of the namespace and the devices, is taken before (instance-lock.ts). A socket file whose
 * process died (SIGKILL, a crash) accepts no connection; it is removed and replaced.
 */
import { mkdir, chmod, lstat, unlink } from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';

import { FlowgateError } from '../errors';
import { parseCaptureParams } from '../gateway/capture';
import type { GatewayView } from '../gateway/types';
import { silentLogger, type Logger } from '../log';
import { ControlClient } from './client';
import { ControlError, ControlSocketInUseError } from './errors';
import { parseFlowQuery } from './flow-query';
import { parseTraceQuery } from './trace-query';
import {
  CONTROL_ERROR_CODES,
  CONTROL_METHODS,
  CONTROL_PROTOCOL_VERSION,
  LineSplitter,
  MAX_REQUEST_BYTES,
  flowgateVersion,
  parseRequest,
  type ControlResponse,
  type ControlResults,
  type RequestId,
} from './protocol';

/** How long a starting instance waits for the one already serving the socket to say its pid. */
const PROBE_TIMEOUT_MS = 1000;

export interface ControlServerOptions {
  socketPath: string;
  view: GatewayView;
  log?: Logger;
}

/**
 * Where a streaming method sends its records: each call writes a page, then waits until the
 * client has read enough (the socket drained) or, when it has room, until the event loop has
 * had a turn, so that a long listing neither buffers without bound nor stalls the instance.
 */
interface RecordSink {
  /** `scanned`: items looked at so far, said in a progress line when nothing else was sent for a while. */
  send(records: readonly unknown[], scanned: number): Promise<void>;
}

/** A count over millions of flows sends nothing for seconds: a progress line tells the client it is alive. */
const PROGRESS_INTERVAL_MS = 1000;

/** The client went away while records were being sent: the listing stops, nothing is answered. */
class ConnectionGone extends Error {}

type Handlers = {
  [M in keyof ControlResults]: (params: Record<string, unknown>, records: RecordSink) => ControlResults[M] | Promise<ControlResults[M]>;
};

function handlersFor(view: GatewayView): Handlers {
  return {
    ping: () => ({ pid: process.pid }),
    version: () => ({ version: flowgateVersion(), protocol: CONTROL_PROTOCOL_VERSION, pid: process.pid, node: process.version }),
    stats: () => view.stats(),
    flows: async (params, records) => {
      const query = parseFlowQuery(params, (filter) => `params.${filter}`);
      let count = 0;
      let scanned = 0;
      for await (const page of view.flows()) {
        const matching = page.filter(query.matches);
        count += matching.length;
        scanned += page.length;
        await records.send(query.countOnly ? [] : matching, scanned);
      }
      return { count };
    },
    xstats: () => ({ ports: view.xstats() }),
    trace: async (params, records) => {
      const query = parseTraceQuery(params, (param) => `params.${param}`);
      const summary = { lost: 0 };
      let count = 0;
      // Empty pages too: sending nothing still finds out whether the client left (then the
      // iteration stops, and with it the trace).
      for await (const page of view.trace(query, summary)) {
        count += page.length;
        await records.send(page, count);
      }
      return { count, lost: summary.lost };
    },
    capture: (params, records) => {
      if (view.capture === undefined) throw new ControlError(CONTROL_ERROR_CODES.unknownMethod, 'this instance cannot capture');
      // Progress lines keep the client waiting; sending fails once it has gone, which stops the capture.
      return view.capture(parseCaptureParams(params), (written) => records.send([], written));
    },
  };
}

function recordSink(socket: net.Socket, id: RequestId): RecordSink {
  const idText = JSON.stringify(id);
  let lastSent = performance.now();
  return {
    async send(records, scanned) {
      if (!socket.writable) throw new ConnectionGone();
      let text = records.map((record) => `{"id":${idText},"record":${JSON.stringify(record)}}\n`).join('');
      const now = performance.now();
      if (text === '' && now - lastSent >= PROGRESS_INTERVAL_MS) text = `{"id":${idText},"progress":{"scanned":${scanned}}}\n`;
      if (text !== '') lastSent = now;
      if (text !== '' && !socket.write(text)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            socket.off('drain', done).off('close', done);
            resolve();
          };
          socket.on('drain', done).on('close', done);
        });
      } else {
        await nextTurn();
      }
    },
  };
}

/** Who is behind an existing socket path. */
type SocketOwner = { kind: 'live'; pid: number | null } | { kind: 'stale' } | { kind: 'absent' };

async function probeOwner(socketPath: string): Promise<SocketOwner> {
  let client: ControlClient;
  try {
    client = await ControlClient.connect(socketPath, { timeoutMs: PROBE_TIMEOUT_MS });
  } catch (err) {
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause;
    if (cause?.code === 'ECONNREFUSED') return { kind: 'stale' };
    if (cause?.code === 'ENOENT') return { kind: 'absent' };
    // It accepted nothing within the timeout, or refused us for another reason: it is not
    // provably dead, so it must not be removed.
    return { kind: 'live', pid: null };
  }
  try {
    const { pid } = await client.request('ping');
    return { kind: 'live', pid };
  } catch {
    return { kind: 'live', pid: null };
  } finally {
    client.close();
  }
}

/** Creates the socket's directory (and missing parents) with mode 0755, whatever the umask. */
async function ensureDirectory(dir: string): Promise<void> {
  const firstCreated = await mkdir(dir, { recursive: true, mode: 0o755 });
  if (firstCreated === undefined) return;
  for (let created = dir; ; created = path.dirname(created)) {
    await chmod(created, 0o755);
    if (created === firstCreated || path.dirname(created) === created) break;
  }
}

/**
 * Binds with a umask that leaves the socket 0600 from the moment it exists (bind() creates
 * it with the process umask, and chmod afterwards would leave a window). The bind happens
 * synchronously inside listen(), so the umask is restored before anything else runs.
 */
function bindPrivately(server: net.Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    let previous: number | undefined;
    try {
      previous = process.umask(0o177);
    } catch {
      // Worker threads cannot change the umask; the chmod after listening still applies.
    }
    try {
      server.listen(socketPath);
    } finally {
      if (previous !== undefined) process.umask(previous);
    }
  });
}

export class ControlServer {
  private readonly connections = new Set<net.Socket>();
  private closing: Promise<void> | undefined;

  private constructor(
    readonly socketPath: string,
    private readonly server: net.Server,
    private readonly handlers: Handlers,
    private readonly log: Logger,
    /** The inode of the socket file this server created: close() removes only that one. */
    private readonly inode: number,
  ) {
    server.on('connection', (socket) => this.serve(socket));
  }

  /**
   * Serves `view` on `socketPath`. Fails with ERR_FLOWGATE_CONTROL_IN_USE when another live
   * process serves it, ERR_FLOWGATE_CONTROL_NOT_SOCKET when the path is some other file.
   */
  static async listen(options: ControlServerOptions): Promise<ControlServer> {
    const { socketPath } = options;
    const log = (options.log ?? silentLogger).child({ component: 'control' });
    try {
      await ensureDirectory(path.dirname(socketPath));
    } catch (err) {
      throw new ControlError(CONTROL_ERROR_CODES.listen, `cannot create the directory of control socket ${socketPath}: ${(err as Error).message}`, { cause: err });
    }
    const server = net.createServer();
    for (let attempt = 0; ; attempt++) {
      try {
        await bindPrivately(server, socketPath);
        break;
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code !== 'EADDRINUSE' || attempt > 0) {
          throw new ControlError(CONTROL_ERROR_CODES.listen, `cannot serve control socket ${socketPath}: ${e.message}`, { cause: err });
        }
        await ControlServer.claim(socketPath, log);
      }
    }
    // Belt and braces for the umask (see bindPrivately): only root may talk to the gateway.
    await chmod(socketPath, 0o600);
    const { ino } = await lstat(socketPath);
    log.debug('control socket listening', { socket: socketPath });
    return new ControlServer(socketPath, server, handlersFor(options.view), log, ino);
  }

  /** The path is taken: refuse if it is served or not a socket, remove it if it is stale. */
  private static async claim(socketPath: string, log: Logger): Promise<void> {
    const stat = await lstat(socketPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (stat === undefined) return;
    if (!stat.isSocket()) {
      throw new ControlError(
        CONTROL_ERROR_CODES.notSocket,
        `control socket ${socketPath} exists and is not a socket; remove it or set another control.socket`,
      );
    }
    const owner = await probeOwner(socketPath);
    if (owner.kind === 'live') throw new ControlSocketInUseError(socketPath, owner.pid);
    if (owner.kind === 'stale') {
      log.info('replacing a stale control socket left by an instance that is no longer running', { socket: socketPath });
      await unlink(socketPath).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
  }

  /** Stops answering, ends open connections and removes the socket file. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      // Closing the listening socket unlinks its file (libuv does it for servers it bound).
      this.server.close(() => resolve());
      for (const socket of this.connections) socket.destroy();
    }).then(async () => {
      // libuv normally has removed it already; if not, remove it unless it is no longer ours.
      const stat = await lstat(this.socketPath).catch(() => undefined);
      if (stat?.ino === this.inode) await unlink(this.socketPath).catch(() => undefined);
      this.log.debug('control socket closed', { socket: this.socketPath });
    });
    return this.closing;
  }

  private serve(socket: net.Socket): void {
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    // A client that goes away mid-answer is its own business, not an error of the server.
    socket.on('error', (err) => this.log.debug('control connection error', { err }));
    const lines = new LineSplitter(MAX_REQUEST_BYTES);
    // Answers may take a while (flows yields to the event loop between pages): chained, so
    // that they leave in the order the requests came.
    let answered = Promise.resolve();
    const reply = (response: () => ControlResponse | null | Promise<ControlResponse | null>) => {
      answered = answered
        .then(response)
        .then((r) => (r === null ? undefined : this.send(socket, r)))
        .catch((err: unknown) => {
          // Only sending can fail here (answer() turns every error into a response): a
          // response too large to serialise. The client sees the connection end.
          this.log.error('control response failed', { err });
          socket.destroy();
        });
    };
    socket.on('data', (chunk: Buffer) =>
      lines.push(
        chunk,
        (line) => {
          if (line.trim() === '') return;
          reply(() => this.answer(line, socket));
        },
        () =>
          reply(() => ({
            id: null,
            error: { code: CONTROL_ERROR_CODES.badRequest, message: `expected a request line of at most ${MAX_REQUEST_BYTES} bytes` },
          })),
      ),
    );
  }

  /** The final response to a request line; null when its client left during a streamed answer. */
  private async answer(line: string, socket: net.Socket): Promise<ControlResponse | null> {
    const parsed = parseRequest(line);
    if (!parsed.ok) return { id: parsed.id, error: { code: CONTROL_ERROR_CODES.badRequest, message: parsed.message } };
    const { id, method, params } = parsed.request;
    if (!Object.hasOwn(this.handlers, method)) {
      return {
        id,
        error: { code: CONTROL_ERROR_CODES.unknownMethod, message: `unknown method '${method}' (methods: ${CONTROL_METHODS.join(', ')})` },
      };
    }
    try {
      return { id, result: await this.handlers[method as keyof Handlers](params ?? {}, recordSink(socket, id)) };
    } catch (err) {
      if (err instanceof ConnectionGone) return null;
      if (err instanceof FlowgateError) return { id, error: { code: err.code, message: err.message } };
      this.log.error('control method failed', { method, err, stack: err instanceof Error ? err.stack : undefined });
      return { id, error: { code: CONTROL_ERROR_CODES.internal, message: `${method} failed: ${err instanceof Error ? err.message : String(err)}` } };
    }
  }

  private send(socket: net.Socket, response: ControlResponse): void {
    if (socket.writable) socket.write(`${JSON.stringify(response)}\n`);
  }
}
