// `flowgate run` around the gateway: config errors, root, the instance lock, start-up errors
// as one line, signals and reloads. A stand-in gateway records what run asks of it; the real
// one runs in test/gateway/run.test.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { describeStartupError, runGateway, type ManagedGateway } from '../../lib/cli/run';
import { checkConfigText, compileConfig, detectMachine, formatIssue, loadConfig, type CompiledConfig } from '../../lib/config';
import { ControlServer, controlRequest } from '../../lib/control';
import { FlowgateError } from '../../lib/errors';
import type { GatewayFlow, GatewayStats, GatewayTraceRecord, PortXstats, ReloadResult } from '../../lib/gateway/types';
import { InstanceLock, lockTargets } from '../../lib/instance-lock';
import { fileNameOf, namespaceId, processIdentity } from '../../lib/runtime';
import { FixedView, fixedStats } from '../control/fixed-view';
import { spawnFlowgate } from '../helpers/cli';
import { withNetns } from '../helpers/netns';
import { until } from '../helpers/wait';

const workerCpu = detectMachine().cpus.at(-1) ?? 0;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}


function configText(options: { socket: string; metrics?: number; routes?: string[]; level?: string; devices?: [string, string] }): string {
  const [eth0 = 'net_null0', eth1 = 'net_null1'] = options.devices ?? [];
  return [
    'ports:',
    `  eth0: { device: "${eth0}", addresses: ["192.168.0.1/24"] }`,
    `  eth1: { device: "${eth1}", addresses: ["203.0.113.1/24"] }`,
    ...(options.routes === undefined ? [] : ['routes:', ...options.routes.map((r) => `  - ${r}`)]),
    'flowtable: { devices: [eth0, eth1] }',
    `workers: { cpus: [${workerCpu}] }`,
    `control: { socket: "${options.socket}" }`,
    ...(options.metrics === undefined ? [] : [`metrics: { listen: "127.0.0.1:${options.metrics}" }`]),
    ...(options.level === undefined ? [] : [`log: { level: ${options.level} }`]),
    '',
  ].join('\n');
}

/** Records what run asks of it; start can be held back and made to fail. */
class StandInGateway implements ManagedGateway {
  readonly calls: string[] = [];
  readonly reloads: CompiledConfig[] = [];
  started = false;
  startGate: Promise<void> = Promise.resolve();
  startError: unknown;
  reloadResult: ReloadResult | Error = { changes: ['route 10.9.0.0/16 added'], flowsRemoved: 2 };
  private readonly view = new FixedView();

  constructor(readonly config: CompiledConfig) {}

  async start(): Promise<void> {
    this.calls.push('start');
    await this.startGate;
    if (this.startError !== undefined) throw this.startError;
    this.started = true;
  }

  async reload(next: CompiledConfig): Promise<ReloadResult> {
    this.calls.push('reload');
    if (this.reloadResult instanceof Error) throw this.reloadResult;
    this.reloads.push(next);
    return this.reloadResult;
  }

  async stop(): Promise<void> {
    this.calls.push('stop');
    this.started = false;
  }

  stats(): GatewayStats {
    return this.view.stats();
  }

  flows(): AsyncIterable<readonly GatewayFlow[]> {
    return this.view.flows();
  }

  xstats(): PortXstats {
    return this.view.xstats();
  }

  trace(): AsyncIterable<readonly GatewayTraceRecord[]> {
    return this.view.trace();
  }
}

describe('flowgate run', () => {
  let dir: string;
  let socketPath: string;
  let configFile: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'fg-run-'));
    socketPath = path.join(dir, 'flowgate.sock');
    configFile = path.join(dir, 'flowgate.yaml');
    writeFileSync(configFile, configText({ socket: socketPath }));
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('before the gateway starts', () => {
    it('prints every problem of an invalid config and exits 1 without creating the socket', async () => {
      const text = configText({ socket: socketPath }).replace('192.168.0.1/24', '192.168.0.1/99').replace('net_null1', 'not a device');
      writeFileSync(configFile, text);
      const expected = checkConfigText(text, configFile).issues.map(formatIssue);
      assert.equal(expected.length, 2);
      const r = await spawnFlowgate(['run', '-c', configFile], { runtimeDir: dir });
      assert.equal(r.status, 1);
      assert.ok(r.stderr.endsWith(`flowgate: ${configFile} is invalid (2 problems):\n${expected.join('\n')}\n`), r.stderr);
      assert.equal(existsSync(socketPath), false);
    });

    it('refuses to run as a user other than root, with one line and no stack', async () => {
      chmodSync(dir, 0o755);
      chmodSync(configFile, 0o644);
      const r = await spawnFlowgate(['run', '-c', configFile], { prefix: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'], runtimeDir: dir });
      assert.equal(r.status, 1);
      const lastLine = r.stderr.trimEnd().split('\n').at(-1);
      assert.equal(
        lastLine,
        'flowgate: cannot start: flowgate run needs root: it drives NICs through DPDK (hugepages, vfio) and creates kernel interfaces, addresses and routes; run it with sudo or as the flowgate systemd service [ERR_FLOWGATE_NOT_ROOT]',
      );
      assert.doesNotMatch(r.stderr, /^\s+at /m);
      assert.equal(existsSync(socketPath), false);
    });

    it('refuses to start when another instance serves its control socket, naming that pid, and leaves it serving', async () => {
      const other = await ControlServer.listen({ socketPath, view: new FixedView() });
      try {
        const r = await spawnFlowgate(['run', '-c', configFile], { runtimeDir: dir });
        assert.equal(r.status, 1);
        assert.equal(
          r.stderr.trimEnd().split('\n').at(-1),
          `flowgate: cannot start: control socket ${socketPath} is served by another flowgate (pid ${process.pid}); stop that instance first, or give this one another control.socket [ERR_FLOWGATE_CONTROL_IN_USE]`,
        );
        assert.doesNotMatch(r.stderr, /dataplane started/, 'it gave up before touching any device');
        assert.deepEqual(await controlRequest(socketPath, 'stats'), fixedStats());
      } finally {
        await other.close();
      }
    });

    it('refuses to start when the metrics address is taken, and removes the control socket it had claimed', async () => {
      const taken = net.createServer();
      await new Promise<void>((resolve) => taken.listen({ host: '127.0.0.1', port: 0 }, resolve));
      const { port } = taken.address() as net.AddressInfo;
      try {
        writeFileSync(configFile, configText({ socket: socketPath, metrics: port }));
        const r = await spawnFlowgate(['run', '-c', configFile], { runtimeDir: dir });
        assert.equal(r.status, 1);
        assert.equal(
          r.stderr.trimEnd().split('\n').at(-1),
          `flowgate: cannot start: metrics.listen 127.0.0.1:${port}: the address is already in use; another process listens there (ss -ltnp shows which): stop it or change metrics.listen [ERR_FLOWGATE_METRICS_LISTEN]`,
        );
        assert.equal(existsSync(socketPath), false);
      } finally {
        taken.close();
      }
    });

    it('exits 2 with the usage without -c or with an unknown log level', async () => {
      const missing = await spawnFlowgate(['run']);
      assert.equal(missing.status, 2);
      assert.match(missing.stderr, /^flowgate run: -c FILE is required\n\nusage: flowgate run -c FILE/);
      const level = await spawnFlowgate(['run', '-c', configFile, '--log-level', 'loud']);
      assert.equal(level.status, 2);
      assert.match(level.stderr, /^flowgate run: --log-level: expected one of debug, info, warn, error, found 'loud'\n/);
    });
  });

  describe('the instance lock', () => {
    const ADVICE = 'stop that instance first (systemctl stop flowgate); what an instance that died held is taken over at the next start [ERR_FLOWGATE_INSTANCE_LOCKED]';
    const lastLine = (text: string) => text.trimEnd().split('\n').at(-1);
    const locksIn = (directory: string) => readdirSync(directory).filter((name) => name.endsWith('.lock')).sort();

    it('refuses to start while another flowgate holds this network namespace, naming its pid, before the control socket', async () => {
      const holder = await InstanceLock.acquire({ runtimeDir: dir, model: compileConfig(await loadConfig(configFile)) });
      try {
        writeFileSync(configFile, configText({ socket: path.join(dir, 'other.sock') }));
        const r = await spawnFlowgate(['run', '-c', configFile], { runtimeDir: dir });
        assert.equal(r.status, 1);
        const netns = await namespaceId();
        assert.equal(lastLine(r.stderr), `flowgate: cannot start: network namespace ${netns} is held by flowgate pid ${process.pid} (${dir}/${fileNameOf(netns)}.lock); ${ADVICE}`);
        assert.equal(existsSync(path.join(dir, 'other.sock')), false);
      } finally {
        await holder.release();
      }
      assert.deepEqual(locksIn(dir), []);
    });

    it('refuses to start in another namespace while another flowgate holds one of its devices, and releases what it took', async () => {
      writeFileSync(configFile, configText({ socket: socketPath, devices: ['0000:03:00.0', 'net_null1'] }));
      const holder = await InstanceLock.acquire({ runtimeDir: dir, model: compileConfig(await loadConfig(configFile)) });
      try {
        const held = locksIn(dir);
        const r = await withNetns((netns) => spawnFlowgate(['run', '-c', configFile], { prefix: ['ip', 'netns', 'exec', netns], runtimeDir: dir }), 'fglock');
        assert.equal(r.status, 1);
        assert.equal(lastLine(r.stderr), `flowgate: cannot start: device 0000:03:00.0 is held by flowgate pid ${process.pid} (${dir}/device-0000-03-00.0.lock); ${ADVICE}`);
        assert.deepEqual(locksIn(dir), held, 'the lock of its own namespace is released again');
      } finally {
        await holder.release();
      }
    });

    it('locks the namespace, PCI devices and the kernel interfaces that vdevs read, not purely virtual devices', async () => {
      writeFileSync(configFile, configText({ socket: socketPath, devices: ['net_af_packet0,iface=veth0', '0000:03:00.1'] }));
      assert.deepEqual(lockTargets('net:[7]', compileConfig(await loadConfig(configFile))), ['network namespace net:[7]', 'interface veth0 of net:[7]', 'device 0000:03:00.1']);
      writeFileSync(configFile, configText({ socket: socketPath }));
      assert.deepEqual(lockTargets('net:[7]', compileConfig(await loadConfig(configFile))), ['network namespace net:[7]']);
    });
  });

  describe('start-up errors', () => {
    it('names a missing PMD for a vdev whose driver is not loaded', () => {
      const err = new FlowgateError('ERR_FLOWGATE_DEVICE', "port eth0: cannot attach device 'net_foo0': Bad address", { errno: 14 });
      assert.equal(
        describeStartupError(err),
        "cannot start: port eth0: cannot attach device 'net_foo0': Bad address; no DPDK driver (PMD) named net_foo is loaded: install its package (Debian: apt-cache search librte-net-foo) or fix the device name [ERR_FLOWGATE_DEVICE]",
      );
    });

    it('points at dpdk-devbind.py for a PCI device that is missing or not bound', () => {
      const err = new FlowgateError('ERR_FLOWGATE_DEVICE', "port eth0: cannot attach device '0000:09:00.0': No such device", { errno: 19 });
      assert.match(describeStartupError(err), /; no such PCI device bound to a DPDK driver: check the address with dpdk-devbind.py --status and bind the NIC to vfio-pci \[ERR_FLOWGATE_DEVICE\]$/);
    });

    it('says a device is in use by another process when EAL or the device answers EBUSY', () => {
      const eal = new FlowgateError('ERR_FLOWGATE_EAL_INIT', 'DPDK EAL initialisation failed: Device or resource busy', { errno: 16 });
      assert.match(describeStartupError(eal), /; a device is in use by another process \(another flowgate or DPDK application\): stop it first \[ERR_FLOWGATE_EAL_INIT\]$/);
      const inUse = new FlowgateError('ERR_FLOWGATE_PORT_IN_USE', "port eth1: device 'net_null0' is already port eth0");
      assert.match(describeStartupError(inUse), /; two ports name the same device, or another DPDK process owns it/);
    });

    it('adds advice to a CPU that does not exist and keeps the hugepages message as it is', () => {
      const cpu = new FlowgateError('ERR_FLOWGATE_INVALID_ARGUMENT', 'workers.cpus: CPU 7 is not available to this process (available: 0-1)');
      assert.match(describeStartupError(cpu), /CPU 7 is not available to this process \(available: 0-1\); pick worker CPUs that exist/);
      const huge = new FlowgateError('ERR_FLOWGATE_NO_HUGEPAGES', 'hugepages: on, but only 0 MiB of 2 MiB hugepages are free');
      assert.equal(describeStartupError(huge), 'cannot start: hugepages: on, but only 0 MiB of 2 MiB hugepages are free [ERR_FLOWGATE_NO_HUGEPAGES]');
    });

    it('shows the stack of an error without a code, since that is a bug to report', () => {
      const line = describeStartupError(new TypeError('x is undefined'));
      assert.match(line, /^cannot start: unexpected error: TypeError: x is undefined\n\s+at /);
    });
  });

  describe('lifecycle', () => {
    let signals: EventEmitter;
    let output: string[];
    let gateways: StandInGateway[];

    let exits: Promise<number>[];

    function start(extra: { logLevel?: 'debug' | 'info' | 'warn' | 'error'; prepare?: (g: StandInGateway) => void } = {}): Promise<number> {
      const exit = runGateway({
        configFile,
        output: { write: (text: string) => output.push(text) > 0 },
        signals,
        isRoot: () => true,
        runtimeDir: dir,
        ...(extra.logLevel === undefined ? {} : { logLevel: extra.logLevel }),
        createGateway: (config) => {
          const gateway = new StandInGateway(config);
          extra.prepare?.(gateway);
          gateways.push(gateway);
          return gateway;
        },
      });
      exits.push(exit);
      return exit;
    }

    const logged = (msg: string) => output.filter((line) => line.includes(` msg=${/\s/.test(msg) ? `"${msg}"` : msg}`));

    async function running(): Promise<StandInGateway> {
      await until('the gateway to start', () => (gateways[0]?.started === true && logged('running').length > 0 ? true : undefined));
      return gateways[0] as StandInGateway;
    }

    beforeEach(() => {
      signals = new EventEmitter();
      output = [];
      gateways = [];
      exits = [];
    });

    afterEach(async () => {
      // A failed assertion must not leave an instance serving (and this process running).
      signals.emit('SIGTERM', 'SIGTERM');
      await Promise.all(exits);
    });

    it('serves the gateway on the control socket and stops it on SIGTERM, removing the socket, exit 0', async () => {
      const exit = start();
      const gateway = await running();
      assert.deepEqual(await controlRequest(socketPath, 'stats'), fixedStats());
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.deepEqual(gateway.calls, ['start', 'stop']);
      assert.equal(existsSync(socketPath), false);
      assert.equal(logged('stopped').length, 1);
      assert.equal(signals.listenerCount('SIGTERM') + signals.listenerCount('SIGINT') + signals.listenerCount('SIGHUP'), 0);
    });

    it('takes over an instance lock whose holder is gone, and releases it on stop', async () => {
      const netns = await namespaceId();
      const lockFile = path.join(dir, `${fileNameOf(netns)}.lock`);
      const gone = spawnSync('true').pid;
      writeFileSync(lockFile, JSON.stringify({ pid: gone, start: 1, what: `network namespace ${netns}` }));
      const exit = start();
      await running();
      assert.deepEqual(JSON.parse(readFileSync(lockFile, 'utf8')), { ...processIdentity(), what: `network namespace ${netns}` });
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.equal(existsSync(lockFile), false);
    });

    it('stops on SIGINT as on SIGTERM', async () => {
      const exit = start();
      const gateway = await running();
      signals.emit('SIGINT', 'SIGINT');
      assert.equal(await exit, 0);
      assert.deepEqual(gateway.calls, ['start', 'stop']);
    });

    it('answers "not ready" on the socket while the gateway is starting, and stops it once started when SIGTERM came meanwhile', async () => {
      let release!: () => void;
      const exit = start({ prepare: (g) => (g.startGate = new Promise((resolve) => (release = resolve))) });
      await until('the socket', () => (existsSync(socketPath) && gateways.length === 1 ? true : undefined));
      await assert.rejects(controlRequest(socketPath, 'stats'), { code: 'ERR_FLOWGATE_NOT_READY' });
      signals.emit('SIGTERM', 'SIGTERM');
      release();
      assert.equal(await exit, 0);
      assert.deepEqual(gateways[0]?.calls, ['start', 'stop']);
      assert.equal(logged('running').length, 0);
    });

    it('on SIGHUP with a valid file, reloads the gateway with the new compiled config and logs each change', async () => {
      const exit = start();
      const gateway = await running();
      writeFileSync(configFile, configText({ socket: socketPath, routes: ['{ to: "10.9.0.0/16", via: 203.0.113.2, dev: eth1 }'] }));
      signals.emit('SIGHUP', 'SIGHUP');
      await until('the reload', () => (logged('config reloaded').length > 0 ? true : undefined));
      assert.deepEqual(
        gateway.reloads[0]?.routes.filter((r) => r.origin === 'static').map((r) => `${r.to.text} via ${r.via?.text} dev ${r.dev}`),
        ['10.9.0.0/16 via 203.0.113.2 dev eth1'],
      );
      assert.match(logged('config change applied')[0] ?? '', / change="route 10.9.0.0\/16 added"/);
      assert.match(logged('config reloaded')[0] ?? '', / changes=1 flows_removed=2/);
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.deepEqual(gateway.calls, ['start', 'reload', 'stop']);
    });

    it('on SIGHUP with an invalid file, logs every problem and leaves the gateway untouched', async () => {
      const exit = start();
      const gateway = await running();
      const text = configText({ socket: socketPath, routes: ['{ to: "10.9.0.0/99", via: 203.0.113.2, dev: eth1, metric: -1 }'] });
      writeFileSync(configFile, text);
      const expected = checkConfigText(text, configFile).issues.map(formatIssue);
      assert.equal(expected.length, 2);
      signals.emit('SIGHUP', 'SIGHUP');
      await until('the rejection', () => (logged('reload rejected: the config is invalid; the running config stays in force').length > 0 ? true : undefined));
      assert.match(logged('reload rejected: the config is invalid; the running config stays in force')[0] ?? '', / problems=2$/m);
      assert.deepEqual(
        logged('config problem').map((line) => / issue=("(?:[^"\\]|\\.)*")/.exec(line)?.[1]).map((quoted) => JSON.parse(quoted ?? 'null') as string),
        expected,
      );
      assert.deepEqual(await controlRequest(socketPath, 'stats'), fixedStats(), 'still serving');
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.deepEqual(gateway.calls, ['start', 'stop'], 'no reload reached the gateway');
    });

    it('on SIGHUP, takes the lock of a device the new config adds, and refuses the reload while another flowgate holds it', async () => {
      const exit = start();
      const gateway = await running();
      // pid 1 runs as long as the machine: a live holder that is not this process.
      writeFileSync(path.join(dir, 'device-0000-03-00.0.lock'), JSON.stringify(processIdentity(1)));
      writeFileSync(configFile, configText({ socket: socketPath, devices: ['net_null0', '0000:03:00.0'] }));
      signals.emit('SIGHUP', 'SIGHUP');
      const refused = 'reload rejected: the new config needs what another flowgate holds; the running config stays in force';
      await until('the refusal', () => (logged(refused).length > 0 ? true : undefined));
      assert.match(logged(refused)[0] ?? '', / err="device 0000:03:00\.0 is held by flowgate pid 1 \(/);
      assert.deepEqual(gateway.calls, ['start'], 'the gateway was not reloaded');

      writeFileSync(configFile, configText({ socket: socketPath, devices: ['net_null0', '0000:03:00.1'] }));
      signals.emit('SIGHUP', 'SIGHUP');
      await until('the reload', () => (logged('config reloaded').length > 0 ? true : undefined));
      const lockFile = path.join(dir, 'device-0000-03-00.1.lock');
      assert.equal(JSON.parse(readFileSync(lockFile, 'utf8')).pid, process.pid);
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.deepEqual(gateway.calls, ['start', 'reload', 'stop']);
      assert.equal(existsSync(lockFile), false, 'released on stop');
    });

    it('logs a reload the gateway refuses and keeps running', async () => {
      const exit = start({ prepare: (g) => (g.reloadResult = new FlowgateError('ERR_FLOWGATE_RELOAD', 'workers and eal settings take effect on restart only')) });
      const gateway = await running();
      signals.emit('SIGHUP', 'SIGHUP');
      await until('the refusal', () => (logged('reload failed: the gateway refused the new config').length > 0 ? true : undefined));
      assert.match(logged('reload failed: the gateway refused the new config')[0] ?? '', / err="workers and eal settings take effect on restart only" err_code=ERR_FLOWGATE_RELOAD/);
      assert.deepEqual(await controlRequest(socketPath, 'ping'), { pid: process.pid });
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.deepEqual(gateway.calls, ['start', 'reload', 'stop']);
    });

    it('applies log.level and metrics.listen from a reload itself, since they are not the gateway\'s', async () => {
      const exit = start();
      await running();
      const port = await freePort();
      writeFileSync(configFile, configText({ socket: socketPath, metrics: port, level: 'debug' }));
      signals.emit('SIGHUP', 'SIGHUP');
      await until('the reload', () => (logged('config reloaded').length > 0 ? true : undefined));
      const changes = logged('config change applied').map((line) => / change="([^"]*)"/.exec(line)?.[1]);
      assert.deepEqual(changes, ['route 10.9.0.0/16 added', 'log.level info -> debug', `metrics.listen off -> 127.0.0.1:${port}`]);
      const reply = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(reply.status, 200);
      assert.match(await reply.text(), /^flowgate_flows_active 3$/m);
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.ok(output.some((line) => / level=debug msg="metrics endpoint listening"/.test(line)), 'debug events are logged after the reload');
    });

    it('keeps --log-level over log.level of the file', async () => {
      writeFileSync(configFile, configText({ socket: socketPath, level: 'error' }));
      const exit = start({ logLevel: 'info' });
      await running();
      signals.emit('SIGTERM', 'SIGTERM');
      assert.equal(await exit, 0);
      assert.equal(logged('stopped').length, 1);
    });

    it('prints a start-up failure as one line, stops what was started, removes the socket and exits 1', async () => {
      const exit = start({
        prepare: (g) => (g.startError = new FlowgateError('ERR_FLOWGATE_PORT_IN_USE', "port eth1: device 'net_null0' is already port eth0")),
      });
      assert.equal(await exit, 1);
      assert.equal(
        output.at(-1),
        "flowgate: cannot start: port eth1: device 'net_null0' is already port eth0; two ports name the same device, or another DPDK process owns it: give each port its own device [ERR_FLOWGATE_PORT_IN_USE]\n",
      );
      assert.deepEqual(gateways[0]?.calls, ['start', 'stop']);
      assert.equal(existsSync(socketPath), false);
    });
  });
});
