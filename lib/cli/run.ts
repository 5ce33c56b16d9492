/**
 * `flowgate run -c FILE`: the gateway in the foreground, with its control socket and
 * metrics endpoint, until SIGINT or SIGTERM; SIGHUP re-reads FILE.
 *
 * Start-up order: the config (every problem printed, nothing touched), root, the instance
 * lock (the network namespace and every device of the config: a second instance stops here,
 * before it touches anything), the control socket (served by one instance at a time), the
 * metrics endpoint (a taken port fails before EAL starts), then the gateway.
 * Signals are handled from the first line, so that SIGTERM during start-up still ends in a
 * clean stop.
 */
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';

import { ConfigError, compileConfig, formatIssue, loadConfig, type CompiledConfig } from '../config';
import { LOG_LEVELS } from '../config/schema';
import { ControlServer } from '../control/server';
import { GatewayNotReadyError } from '../control/errors';
import { flowgateVersion } from '../control/protocol';
import { FlowgateError } from '../errors';
import type { GatewayView, ReloadResult } from '../gateway/types';
import { InstanceLock } from '../instance-lock';
import { createLogger, parseLogLevel, type LogLevel, type Logger, type RootLogger } from '../log';
import { MetricsServer } from '../metrics';
import { runtimeDirectory } from '../runtime';
import { validateRuleset } from '../slowpath/ruleset-check';
import { HELP_OPTION, type CliOptions } from './options';

export const USAGE = `usage: flowgate run -c FILE [--log-level LEVEL]

Runs the gateway of FILE in the foreground: the DPDK ports and workers, their kernel
mirrors (TAP and TUN interfaces), the addresses, routes and nftables ruleset, the control
socket (control.socket) and the metrics endpoint (metrics.listen). Logs go to stderr, one
logfmt line per event. Needs root. Refuses to start while another flowgate holds this
network namespace or a device of FILE. After a crash, it adopts what the dead instance
changed in the kernel (flowgate cleanup undoes it without starting).

  -c, --config FILE     the config file (check it first with flowgate check -c FILE)
  --log-level LEVEL     debug, info, warn or error; overrides log.level of FILE
  -h, --help            this text

Signals:
  SIGHUP            re-read FILE; if it is valid, apply the difference, keeping the
                    offloaded flows that are still valid; if not, log every problem and
                    keep running the old config
  SIGINT, SIGTERM   stop: remove every interface, address, route and ruleset flowgate
                    created, then exit 0
`;

/**
 * The config of `file`, compiled, with its nftables ruleset checked by nft: at start before
 * anything is created, and at reload before anything changes, with nft's errors pointing
 * into the file. Throws ConfigError with every problem.
 */
async function loadCheckedConfig(file: string): Promise<CompiledConfig> {
  const config = compileConfig(await loadConfig(file));
  const rulesetIssues = await validateRuleset(config, file);
  if (rulesetIssues.length > 0) throw new ConfigError(rulesetIssues);
  return config;
}

/** What run needs of the Gateway (lib/gateway/gateway.ts); tests may stand in for it. */
export interface ManagedGateway extends GatewayView {
  start(): Promise<void>;
  reload(next: CompiledConfig): Promise<ReloadResult>;
  stop(): Promise<void>;
}

export type GatewayFactory = (config: CompiledConfig, options: { log: Logger; configFile?: string; runtimeDir: string }) => ManagedGateway | Promise<ManagedGateway>;

/** Loaded only when a gateway starts: `check`, `flows` and `stats` never load the addon. */
const createGatewayFromModule: GatewayFactory = async (config, options) => {
  const { Gateway } = await import('../gateway/gateway.js');
  return new Gateway(config, options);
};

type SignalSource = Pick<NodeJS.EventEmitter, 'on' | 'off'>;

export interface RunOptions {
  configFile: string;
  /** --log-level: wins over log.level of the config, also across reloads. */
  logLevel?: LogLevel;
  /** Where the logs and the start-up errors go; default process.stderr. */
  output?: Pick<Writable, 'write'>;
  createGateway?: GatewayFactory;
  /** Where SIGINT, SIGTERM and SIGHUP come from; default the process. */
  signals?: SignalSource;
  isRoot?: () => boolean;
  /** The instance locks and the kernel journal; default FLOWGATE_RUNTIME_DIR or /run/flowgate. */
  runtimeDir?: string;
}

export class NotRootError extends FlowgateError {
  constructor() {
    super(
      'ERR_FLOWGATE_NOT_ROOT',
      'flowgate run needs root: it drives NICs through DPDK (hugepages, vfio) and creates kernel interfaces, addresses and routes; run it with sudo or as the flowgate systemd service',
    );
  }
}

// ---- start-up errors: the one place where codes become advice -------------------------

const VDEV_DRIVER_MISSING_ERRNOS = new Set([2 /* ENOENT */, 14 /* EFAULT */, 95 /* ENOTSUP */]);
const EBUSY = 16;
const ENODEV = 19;

/** What to do about an error with this code, or null when its message already says it. */
const STARTUP_ADVICE: Record<string, (err: FlowgateError) => string | null> = {
  ERR_FLOWGATE_NOT_ROOT: () => null,
  ERR_FLOWGATE_INSTANCE_LOCKED: () => 'stop that instance first (systemctl stop flowgate); what an instance that died held is taken over at the next start',
  ERR_FLOWGATE_JOURNAL: () => 'the file is not a kernel journal this flowgate wrote: move it away, and undo by hand what it lists',
  ERR_FLOWGATE_NO_HUGEPAGES: () => null,
  ERR_FLOWGATE_CONTROL_IN_USE: () => null,
  ERR_FLOWGATE_CONTROL_NOT_SOCKET: () => null,
  ERR_FLOWGATE_CONTROL_LISTEN: () => 'check that the directory of control.socket is writable by root',
  ERR_FLOWGATE_METRICS_LISTEN: () => 'another process listens there (ss -ltnp shows which): stop it or change metrics.listen',
  ERR_FLOWGATE_DEVICE: (err) => {
    const vdev = /device 'net_([A-Za-z0-9_]+?)[0-9]*[,']/.exec(err.message);
    if (vdev !== null && err.errno !== undefined && VDEV_DRIVER_MISSING_ERRNOS.has(err.errno)) {
      return `no DPDK driver (PMD) named net_${vdev[1]} is loaded: install its package (Debian: apt-cache search librte-net-${(vdev[1] ?? '').replace(/_/g, '-')}) or fix the device name`;
    }
    if (vdev === null && err.errno === ENODEV) {
      return 'no such PCI device bound to a DPDK driver: check the address with dpdk-devbind.py --status and bind the NIC to vfio-pci';
    }
    if (err.errno === EBUSY) return 'the device is in use by another process (another flowgate or DPDK application, or the kernel driver)';
    return 'check the device string of the port, that the NIC is bound to vfio-pci (dpdk-devbind.py --status) and that its PMD is installed';
  },
  ERR_FLOWGATE_PORT_IN_USE: () => 'two ports name the same device, or another DPDK process owns it: give each port its own device',
  ERR_FLOWGATE_EAL_INIT: (err) =>
    err.errno === EBUSY
      ? 'a device is in use by another process (another flowgate or DPDK application): stop it first'
      : 'the EAL lines above say why; usual causes: a PCI device not bound to vfio-pci or used by another DPDK process, no free hugepages, an invalid eal.args',
  ERR_FLOWGATE_NO_MEMORY: () => 'reserve more hugepages (README, Deploying on bare metal) or lower flowtable.size',
  ERR_FLOWGATE_PORT_CONFIG: () => 'the driver refused the port settings: check ports.<name>.mtu and that the NIC has a queue per worker',
  ERR_FLOWGATE_CONNTRACK_EVENTS: () =>
    'flowgate offloads only what conntrack allows and must hear when it destroys a connection: run a kernel built with CONFIG_NF_CONNTRACK_EVENTS=y (every distribution kernel is), and load nf_conntrack_netlink',
  ERR_FLOWGATE_CONNTRACK_UNAVAILABLE: () => 'load ctnetlink (modprobe nf_conntrack_netlink; CONFIG_NF_CT_NETLINK) and check that nothing (a seccomp or LSM policy) blocks netlink sockets',
  ERR_FLOWGATE_INVALID_ARGUMENT: (err) =>
    /workers\.cpus|CPU/.test(err.message) ? 'pick worker CPUs that exist and that this process may use (taskset, systemd CPUAffinity)' : null,
};

/** The codes that get advice: the README's Troubleshooting covers each (test/cli/readme.test.ts). */
export const STARTUP_ERROR_CODES: readonly string[] = Object.keys(STARTUP_ADVICE);

/** One line for a start-up failure: the problem, what to do about it, and the code. */
export function describeStartupError(err: unknown): string {
  if (!(err instanceof FlowgateError)) {
    // Not an expected failure but a bug: the stack is what its report needs.
    return `cannot start: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
  }
  const advice = STARTUP_ADVICE[err.code]?.(err) ?? null;
  return `cannot start: ${err.message}${advice === null ? '' : `; ${advice}`} [${err.code}]`;
}

// ---- the running instance -------------------------------------------------------------

function describeListen(metrics: CompiledConfig['metrics']): string {
  return metrics === null ? 'off' : metrics.listen;
}

class Instance {
  private gateway: ManagedGateway | undefined;
  private ready = false;
  private control: ControlServer | undefined;
  private metrics: MetricsServer | undefined;
  private stopSignal: NodeJS.Signals | undefined;
  private wakeStop: (() => void) | undefined;
  private reloading: Promise<void> | undefined;
  private reloadRequested = false;
  private fatal: unknown;

  /** The figures the control socket and /metrics serve: the gateway's, once it is up. */
  private readonly view: GatewayView = {
    stats: () => this.runningGateway().stats(),
    flows: () => this.runningGateway().flows(),
    xstats: () => this.runningGateway().xstats(),
    trace: (options, summary) => this.runningGateway().trace(options, summary),
    capture: async (request, alive) => {
      const gateway = this.runningGateway();
      if (gateway.capture === undefined) throw new FlowgateError('ERR_FLOWGATE_STATE', 'this gateway cannot capture');
      return gateway.capture(request, alive);
    },
  };

  constructor(
    private config: CompiledConfig,
    private readonly options: RunOptions,
    private readonly log: RootLogger,
    private readonly output: Pick<Writable, 'write'>,
    private readonly lock: InstanceLock,
  ) {}

  private runningGateway(): ManagedGateway {
    if (!this.ready || this.gateway === undefined) throw new GatewayNotReadyError();
    return this.gateway;
  }

  get stopping(): boolean {
    return this.stopSignal !== undefined || this.fatal !== undefined;
  }

  requestStop(signal: NodeJS.Signals): void {
    if (this.stopping) {
      this.log.warn('already stopping; flowgate exits once every interface and route it created is removed', { signal });
      return;
    }
    this.log.info('stopping', { signal });
    this.stopSignal = signal;
    this.wakeStop?.();
  }

  /** An error nobody caught while running: stop cleanly (remove what was created), exit 1. */
  fail(err: unknown): void {
    this.log.error('unexpected error, stopping', { err, stack: err instanceof Error ? err.stack : undefined });
    if (this.stopping) return;
    this.fatal = err;
    this.wakeStop?.();
  }

  requestReload(): void {
    if (this.stopping) {
      this.log.info('reload ignored: stopping', { config: this.options.configFile });
      return;
    }
    // Reloads run one at a time; signals during one coalesce into one more.
    this.reloadRequested = true;
    if (this.ready && this.reloading === undefined) this.reloading = this.reloadLoop();
  }

  /** Serves until a stop is requested; resolves with the exit code. */
  async run(): Promise<number> {
    try {
      await this.start();
    } catch (err) {
      await this.shutdown();
      this.output.write(`flowgate: ${describeStartupError(err)}\n`);
      return 1;
    }
    if (!this.stopping) {
      this.log.info('running', {
        ports: this.config.ports.map((p) => p.name),
        vlans: this.config.vlans.map((v) => v.name),
        tunnels: this.config.tunnels.map((t) => t.name),
        workers: this.config.workers.cpus,
        control: this.config.control.socket,
        metrics: describeListen(this.config.metrics),
      });
      if (this.reloadRequested) this.reloading = this.reloadLoop();
      await new Promise<void>((resolve) => {
        this.wakeStop = resolve;
        if (this.stopping) resolve();
      });
    }
    const stopped = await this.shutdown();
    if (!stopped || this.fatal !== undefined) return 1;
    this.log.info('stopped');
    return 0;
  }

  private async start(): Promise<void> {
    this.control = await ControlServer.listen({ socketPath: this.config.control.socket, view: this.view, log: this.log });
    this.log.info('control socket ready', { socket: this.control.socketPath });
    if (this.stopping) return;
    if (this.config.metrics !== null) {
      this.metrics = await MetricsServer.listen({ host: this.config.metrics.host, port: this.config.metrics.port, view: this.view, log: this.log });
      this.log.info('metrics endpoint ready', { listen: this.metrics.listen });
    }
    if (this.stopping) return;
    const createGateway = this.options.createGateway ?? createGatewayFromModule;
    this.gateway = await createGateway(this.config, { log: this.log, configFile: this.options.configFile, runtimeDir: this.lock.runtimeDir });
    await this.gateway.start();
    this.ready = true;
  }

  /** Closes the servers and stops the gateway; false when the gateway failed to stop cleanly. */
  private async shutdown(): Promise<boolean> {
    this.wakeStop = undefined;
    // A reload in progress finishes first: the gateway is never reloaded and stopped at once.
    await this.reloading;
    await Promise.all([this.control?.close(), this.metrics?.close()]);
    if (this.gateway === undefined) return true;
    try {
      // After a failed start too: stop() removes whatever start() had created.
      await this.gateway.stop();
      return true;
    } catch (err) {
      if (!this.ready) {
        this.log.debug('stop after a failed start', { err });
        return true;
      }
      this.log.error('stop failed: some interfaces, routes or rulesets may be left behind', { err, stack: err instanceof Error ? err.stack : undefined });
      return false;
    } finally {
      this.ready = false;
    }
  }

  private async reloadLoop(): Promise<void> {
    while (this.reloadRequested && !this.stopping) {
      this.reloadRequested = false;
      try {
        await this.reload();
      } catch (err) {
        this.log.error('reload failed', { err, stack: err instanceof Error ? err.stack : undefined });
      }
    }
    this.reloading = undefined;
  }

  private async reload(): Promise<void> {
    const file = this.options.configFile;
    this.log.info('reloading', { config: file });
    let next: CompiledConfig;
    try {
      next = await loadCheckedConfig(file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // The problems first and the verdict last, so that whoever waits for the verdict
      // (an operator's tail, a test) has every problem already.
      for (const issue of err.issues) this.log.error('config problem', { issue: formatIssue(issue) });
      this.log.error('reload rejected: the config is invalid; the running config stays in force', { config: file, problems: err.issues.length });
      return;
    }
    const gateway = this.runningGateway();
    try {
      // Before the gateway attaches a device the new config adds: it may be another's.
      await this.lock.hold([this.config, next]);
    } catch (err) {
      this.log.error('reload rejected: the new config needs what another flowgate holds; the running config stays in force', { config: file, err });
      return;
    }
    let result: ReloadResult;
    try {
      result = await gateway.reload(next);
    } catch (err) {
      await this.lock.hold([this.config]);
      const advice = err instanceof FlowgateError ? STARTUP_ADVICE[err.code]?.(err) : null;
      this.log.error('reload failed: the gateway refused the new config', { config: file, err, ...(advice ? { advice } : {}) });
      return;
    }
    await this.lock.hold([next]);
    const changes = [...result.changes, ...(await this.applyProcessSettings(next))];
    for (const change of changes) this.log.info('config change applied', { change });
    this.log.info('config reloaded', { config: file, changes: changes.length, flows_removed: result.flowsRemoved });
  }

  /** What the gateway does not own: the log level, the metrics endpoint and the control socket. */
  private async applyProcessSettings(next: CompiledConfig): Promise<string[]> {
    const changes: string[] = [];
    const previous = this.config;
    this.config = next;
    if (this.options.logLevel === undefined && next.log.level !== previous.log.level) {
      this.log.setLevel(next.log.level);
      changes.push(`log.level ${previous.log.level} -> ${next.log.level}`);
    }
    if (describeListen(next.metrics) !== describeListen(previous.metrics)) {
      // The new endpoint first: if it cannot listen, the old one keeps serving.
      try {
        const metrics =
          next.metrics === null
            ? undefined
            : await MetricsServer.listen({ host: next.metrics.host, port: next.metrics.port, view: this.view, log: this.log });
        await this.metrics?.close();
        this.metrics = metrics;
        changes.push(`metrics.listen ${describeListen(previous.metrics)} -> ${describeListen(next.metrics)}`);
      } catch (err) {
        this.log.error('metrics endpoint not moved; the old one keeps serving', { err });
      }
    }
    if (next.control.socket !== previous.control.socket) {
      try {
        const control = await ControlServer.listen({ socketPath: next.control.socket, view: this.view, log: this.log });
        await this.control?.close();
        this.control = control;
        changes.push(`control.socket ${previous.control.socket} -> ${next.control.socket}`);
      } catch (err) {
        this.log.error('control socket not moved; the old one keeps serving', { err });
      }
    }
    return changes;
  }
}

/** Runs until SIGINT/SIGTERM; resolves with the exit code. Expected failures are printed, not thrown. */
export async function runGateway(options: RunOptions): Promise<number> {
  const output = options.output ?? process.stderr;
  const log = createLogger({ level: options.logLevel ?? 'info', stream: output });
  const signals: SignalSource = options.signals ?? process;
  let instance: Instance | undefined;
  // Until the instance exists there is nothing to clean up: remember the request.
  let earlyStop: NodeJS.Signals | undefined;
  let earlyReload = false;
  const onStop = (signal: NodeJS.Signals) => (instance === undefined ? (earlyStop ??= signal) : instance.requestStop(signal));
  const onReload = () => (instance === undefined ? (earlyReload = true) : instance.requestReload());
  // Once something may have been created, an error nobody caught must still end in a clean stop.
  const onFatal = (err: unknown) => instance?.fail(err);
  const catchesFatal = signals === process;
  signals.on('SIGINT', onStop);
  signals.on('SIGTERM', onStop);
  signals.on('SIGHUP', onReload);
  try {
    log.info('starting', { version: flowgateVersion(), config: options.configFile, pid: process.pid });
    let config: CompiledConfig;
    try {
      config = await loadCheckedConfig(options.configFile);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      output.write(`flowgate: ${options.configFile} is invalid (${err.issues.length === 1 ? '1 problem' : `${err.issues.length} problems`}):\n`);
      for (const issue of err.issues) output.write(`${formatIssue(issue)}\n`);
      return 1;
    }
    if (options.logLevel === undefined) log.setLevel(config.log.level);
    if (!(options.isRoot ?? (() => process.getuid?.() === 0))()) {
      output.write(`flowgate: ${describeStartupError(new NotRootError())}\n`);
      return 1;
    }
    if (earlyStop !== undefined) {
      log.info('stopped before starting', { signal: earlyStop });
      return 0;
    }
    const runtimeDir = options.runtimeDir ?? runtimeDirectory();
    let lock: InstanceLock;
    try {
      lock = await InstanceLock.acquire({ runtimeDir, model: config });
    } catch (err) {
      output.write(`flowgate: ${describeStartupError(err)}\n`);
      return 1;
    }
    log.debug('instance lock taken', { files: lock.files.join(' ') });
    try {
      instance = new Instance(config, options, log, output, lock);
      if (catchesFatal) {
        process.on('uncaughtException', onFatal);
        process.on('unhandledRejection', onFatal);
      }
      if (earlyReload) instance.requestReload();
      return await instance.run();
    } finally {
      await lock.release();
    }
  } finally {
    signals.off('SIGINT', onStop);
    signals.off('SIGTERM', onStop);
    signals.off('SIGHUP', onReload);
    if (catchesFatal) {
      process.off('uncaughtException', onFatal);
      process.off('unhandledRejection', onFatal);
    }
  }
}

export const OPTIONS = {
  config: { type: 'string', short: 'c', complete: 'config' },
  'log-level': { type: 'string', complete: LOG_LEVELS },
  help: HELP_OPTION,
} as const satisfies CliOptions;

export async function run(argv: string[]): Promise<number> {
  let values: { config?: string | undefined; 'log-level'?: string | undefined; help?: boolean | undefined };
  let logLevel: LogLevel | undefined;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }));
    if (values['log-level'] !== undefined) logLevel = parseLogLevel(values['log-level'], '--log-level');
  } catch (err) {
    process.stderr.write(`flowgate run: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.config === undefined) {
    process.stderr.write(`flowgate run: -c FILE is required\n\n${USAGE}`);
    return 2;
  }
  return runGateway({ configFile: values.config, ...(logLevel === undefined ? {} : { logLevel }) });
}
