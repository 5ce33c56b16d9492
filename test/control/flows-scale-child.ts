/**
 * The server side of the flows scale test, in its own process (EAL initialises once per
 * process): a real dataplane holding `count` offloaded connections, installed through the
 * dataplane API, served on a control socket as the gateway serves them. Driven over the IPC
 * channel by flows-scale.test.ts.
 */
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { ControlServer } from '../../lib/control';
import { Dataplane, type FlowPairOptions } from '../../lib/dataplane';
import { gatewayFlowPages } from '../../lib/gateway/flow-view';
import { gatewayTracePages } from '../../lib/gateway/trace-view';
import type { GatewayView } from '../../lib/gateway/types';

export interface ScaleJob {
  socketPath: string;
  connections: number;
  flowCapacity: number;
  workerCpu: number;
}

export type ScaleRequest = { type: 'reset-delay' } | { type: 'report' } | { type: 'stop' };

export type ScaleMessage =
  | { type: 'ready'; installed: number; failed: number; firstError: string | null; installSeconds: number; hugepages: boolean }
  | { type: 'report'; maxDelayMs: number; p99DelayMs: number; rssPeakBytes: number }
  | { type: 'failed'; message: string };

/** addFlow() calls between two turns of the event loop, so that IPC messages leave. */
const INSTALL_CHUNK = 16_384;
const LAN_MAC = '02:00:00:00:01:01';
const WAN_MAC = '02:00:00:00:02:01';

/** Connection i: TCP and UDP alternately, each from its own LAN address (10.0.0.0/8 has 16M). */
function connection(i: number): FlowPairOptions {
  const proto = i % 2 === 0 ? 'tcp' : 'udp';
  const lan = `10.${(i >>> 16) & 0xff}.${(i >>> 8) & 0xff}.${i & 0xff}`;
  const server = '198.51.100.10';
  const sport = 1024 + (i % 60_000);
  const dport = proto === 'tcp' ? 443 : 53;
  return {
    original: { in: 'lan', proto, src: lan, dst: server, sport, dport, out: { port: 'wan', mac: WAN_MAC } },
    reply: { in: 'wan', proto, src: server, dst: lan, sport: dport, dport: sport, out: { port: 'lan', mac: LAN_MAC } },
  };
}

function send(message: ScaleMessage): void {
  process.send?.(message);
}

function peakRss(): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return match === null ? 0 : Number(match[1]) * 1024;
}

async function main(job: ScaleJob): Promise<void> {
  const dp = new Dataplane();
  dp.start({
    workers: { cpus: [job.workerCpu] },
    flowCapacity: job.flowCapacity,
    paused: true,
    ports: [
      { name: 'lan', device: 'net_null0,no-rx=1' },
      { name: 'wan', device: 'net_null1,no-rx=1' },
    ],
    onWarning: (message) => process.stderr.write(`${message}\n`),
  });
  const started = process.hrtime.bigint();
  let installed = 0;
  let failed = 0;
  let firstError: string | null = null;
  for (let i = 0; i < job.connections; i++) {
    try {
      dp.addFlow(connection(i));
      installed++;
    } catch (err) {
      failed++;
      firstError ??= (err as Error).message;
    }
    if (i % INSTALL_CHUNK === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const installSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const view: GatewayView = {
    stats: () => {
      throw new Error('the scale test serves flows only');
    },
    flows: () => gatewayFlowPages(dp, new Map()),
    xstats: () => {
      throw new Error('the scale test serves flows only');
    },
    trace: (options, summary) => gatewayTracePages(dp, options, summary),
  };
  const server = await ControlServer.listen({ socketPath: job.socketPath, view });
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  process.on('message', (request: ScaleRequest) => {
    switch (request.type) {
      case 'reset-delay':
        delay.reset();
        break;
      case 'report':
        send({ type: 'report', maxDelayMs: delay.max / 1e6, p99DelayMs: delay.percentile(99) / 1e6, rssPeakBytes: peakRss() });
        break;
      case 'stop':
        delay.disable();
        void server.close().then(() => {
          dp.stop();
          process.disconnect();
        });
        break;
    }
  });
  send({ type: 'ready', installed, failed, firstError, installSeconds, hugepages: dp.hugepages });
}

process.once('message', (job: ScaleJob) => {
  main(job).catch((err: unknown) => {
    send({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exitCode = 1;
    process.disconnect();
  });
});
