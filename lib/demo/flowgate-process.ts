/**
 * A `flowgate run -c FILE` child process inside a network namespace, as an operator would
 * start it: its logs captured, its readiness taken from what it reports (the log line that
 * says it runs, the tunnel adjacencies it resolved, and an answer on its control socket),
 * and a graceful stop with SIGTERM.
 *
 * The child runs in its own process group, so that a Ctrl-C in the terminal reaches only the
 * parent, which stops the children in order; and with a parent-death signal, so that it also
 * stops cleanly when the parent is killed without a chance to do so.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import * as path from 'node:path';

import { controlRequest, controlStream } from '../control/client';
import { FlowgateError } from '../errors';
import type { GatewayFlow, GatewayStats } from '../gateway/types';
import { onExit } from './shell';

/** dist/lib/cli/main.js, next to this module's directory once compiled. */
export const FLOWGATE_MAIN = path.resolve(__dirname, '..', 'cli', 'main.js');

const LOG_TAIL_LINES = 80;
const STOP_TIMEOUT_MS = 20_000;
const READY_POLL_MS = 50;

export class FlowgateProcessError extends FlowgateError {
  constructor(message: string, readonly logTail: readonly string[]) {
    super('ERR_FLOWGATE_DEMO_PROCESS', logTail.length === 0 ? message : `${message}\n--- last log lines ---\n${logTail.join('\n')}`);
  }
}

export interface FlowgateProcessOptions {
  /** For messages: "site A". */
  name: string;
  netns: string;
  configFile: string;
  /** The control socket the config names. */
  socket: string;
  /** Tunnels whose adjacency must be resolved before the instance counts as ready. */
  tunnels: readonly string[];
  /** Where the log is also written, whole. */
  logFile?: string;
}

export class FlowgateProcess {
  private readonly child: ChildProcess;
  private readonly tail: string[] = [];
  private partial = '';
  private readonly log: WriteStream | undefined;
  private running = false;
  private readonly resolvedTunnels = new Set<string>();
  private exitStatus: string | undefined;
  private readonly exited: Promise<void>;
  private readonly forgetExitCleanup: () => void;
  private stopping: Promise<void> | undefined;
  private readonly lineListeners = new Set<(line: string) => void>();

  private constructor(readonly options: FlowgateProcessOptions) {
    const argv = ['setpriv', '--pdeathsig', 'TERM', 'ip', 'netns', 'exec', options.netns, process.execPath, FLOWGATE_MAIN, 'run', '-c', options.configFile];
    this.child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.log = options.logFile === undefined ? undefined : createWriteStream(options.logFile);
    for (const stream of [this.child.stdout, this.child.stderr]) stream?.setEncoding('utf8').on('data', (chunk: string) => this.consume(chunk));
    this.forgetExitCleanup = onExit(() => this.killNow());
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.exitStatus = `could not start (${err.message})`;
        resolve();
      });
      this.child.on('close', (code, signal) => {
        this.exitStatus ??= signal !== null ? `killed by ${signal}` : `exited with status ${code}`;
        this.forgetExitCleanup();
        this.log?.end();
        resolve();
      });
    });
  }

  static start(options: FlowgateProcessOptions): FlowgateProcess {
    return new FlowgateProcess(options);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Whether the process has exited, and how ("exited with status 0"). */
  get exit(): string | undefined {
    return this.exitStatus;
  }

  /** The last log lines, for error messages. */
  logTail(lines = LOG_TAIL_LINES): string[] {
    const all = this.partial === '' ? this.tail : [...this.tail, this.partial];
    return all.slice(-lines);
  }

  /** Calls `listener` with every log line from now on; returns a function that stops it. */
  onLogLine(listener: (line: string) => void): () => void {
    this.lineListeners.add(listener);
    return () => this.lineListeners.delete(listener);
  }

  /**
   * Resolves once the instance runs, every tunnel's underlay adjacency is resolved and the
   * control socket answers; rejects with the log's tail if the process exits or time runs out.
   */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const { name, tunnels, socket } = this.options;
    for (;;) {
      if (this.exitStatus !== undefined) throw new FlowgateProcessError(`${name}: flowgate ${this.exitStatus} before it was ready`, this.logTail());
      if (this.running && tunnels.every((t) => this.resolvedTunnels.has(t))) {
        try {
          await controlRequest(socket, 'stats', { timeoutMs: Math.max(100, deadline - Date.now()) });
          return;
        } catch (err) {
          if (Date.now() > deadline) throw new FlowgateProcessError(`${name}: the control socket ${socket} does not answer: ${(err as Error).message}`, this.logTail());
        }
      }
      if (Date.now() > deadline) {
        const missing = tunnels.filter((t) => !this.resolvedTunnels.has(t));
        const what = !this.running ? 'flowgate did not report running' : `tunnel adjacency of ${missing.join(', ')} not resolved`;
        throw new FlowgateProcessError(`${name}: ${what} within ${timeoutMs} ms`, this.logTail());
      }
      await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
    }
  }

  stats(): Promise<GatewayStats> {
    return controlRequest(this.options.socket, 'stats');
  }

  async flows(): Promise<GatewayFlow[]> {
    const flows: GatewayFlow[] = [];
    await controlStream(this.options.socket, 'flows', {}, (records) => void flows.push(...records));
    return flows;
  }

  /** SIGTERM (flowgate removes what it created and exits), SIGKILL after 20 s. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.exitStatus === undefined) {
        this.signal('SIGTERM');
        const timer = setTimeout(() => this.signal('SIGKILL'), STOP_TIMEOUT_MS);
        await this.exited;
        clearTimeout(timer);
      }
      await this.exited;
    })();
    return this.stopping;
  }

  /**
   * Whether the last stop was clean: flowgate exits 0 once it removed what it created. A
   * SIGTERM can only kill it before it handles signals, that is before it created anything.
   */
  get stoppedCleanly(): boolean {
    return this.exitStatus === 'exited with status 0' || this.exitStatus === 'killed by SIGTERM';
  }

  /** SIGHUP: flowgate re-reads its config file. */
  reload(): void {
    if (this.exitStatus === undefined) this.signal('SIGHUP');
  }

  /**
   * kill -9 of flowgate alone, as a crash would end it: nothing it made is removed, and its
   * helpers are left to their parent-death signal. Resolves once it is gone.
   */
  async crash(): Promise<void> {
    const pid = this.child.pid;
    if (pid !== undefined && this.exitStatus === undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    await this.exited;
  }

  /** Synchronous last resort at process exit. */
  killNow(): void {
    if (this.exitStatus === undefined) this.signal('SIGKILL');
  }

  private signal(signal: NodeJS.Signals): void {
    // The whole group: `ip netns exec` execs flowgate, but its own children (ip, nft) too.
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(signal === 'SIGKILL' ? -pid : pid, signal);
    } catch {
      // Gone already.
    }
  }

  private consume(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      this.log?.write(`${line}\n`);
      this.tail.push(line);
      if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
      if (/\bmsg=running\b/.test(line)) this.running = true;
      if (/\bmsg="tunnel adjacency"/.test(line)) {
        const tunnel = /\btunnel=(\S+)/.exec(line)?.[1];
        if (tunnel !== undefined) this.resolvedTunnels.add(tunnel);
      }
      for (const listener of this.lineListeners) listener(line);
    }
  }
}
