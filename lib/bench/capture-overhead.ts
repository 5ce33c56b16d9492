/**
 * What a port capture costs the fast path, printed, never asserted (a benchmark, not a
 * test): fwd4 replayed by net_pcap (infinite_rx) into net_null on one worker, as `flowgate
 * bench` does, in windows that alternate between no capture and a capture on the input
 * port whose filter matches nothing (so that every frame runs the filter and none is
 * copied). With --baseline ADDON (an addon built without the capture hooks), processes of
 * that build are interleaved with this one's, for the cost of the hooks while no capture
 * runs.
 *
 *   node dist/lib/bench/capture-overhead.js [--rounds 5] [--windows 6] [--seconds 1] [--flows 1024] [--baseline PATH]
 */
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { Dataplane } from '../dataplane';
import type { NativeAddon } from '../native';
import { median } from './median';
import { benchPorts, flowInstalls, pcapDevice, PORT_IN, scenarioFromName } from './scenarios';
import { defaultCacheDir, trafficFiles } from './traffic';

/** Matches none of the benchmark's frames (UDP to port 443), after reading as far as the UDP port. */
const FILTER_MATCHING_NOTHING = 'udp port 9';

type Mode = 'none' | 'capture';

interface Window {
  mode: Mode;
  mpps: number;
  cyclesPerPacket: number;
  jit?: boolean;
}

interface ChildRequest {
  addon: string | null;
  modes: Mode[];
  seconds: number;
  flows: number;
}

async function measureWindows(request: ChildRequest): Promise<Window[]> {
  const scenario = scenarioFromName('fwd4');
  const traffic = trafficFiles({ scenario, flows: request.flows, size: 64, zipf: null, queues: 1 }, defaultCacheDir());
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const dp = request.addon === null ? new Dataplane() : new Dataplane(require(request.addon) as NativeAddon);
  dp.start({ workers: { cpus: [1] }, flowCapacity: 65536, mbufs: 32767, ports: benchPorts(scenario, pcapDevice(traffic.files)), onWarning: () => undefined });
  const sink = fs.openSync('/dev/null', 'w');
  try {
    for (const flow of flowInstalls(scenario, request.flows)) dp.addFlow(flow);
    await sleep(1000);
    const windows: Window[] = [];
    for (const mode of request.modes) {
      const id = mode === 'capture' ? dp.startCapture({ port: PORT_IN, direction: 'both', filter: FILTER_MATCHING_NOTHING, fd: sink }) : null;
      await sleep(200);
      const a = dp.cycles();
      const t0 = process.hrtime.bigint();
      await sleep(request.seconds * 1000);
      const b = dp.cycles();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const jit = id === null ? undefined : dp.captureStats(id).jit;
      if (id !== null) {
        const s = dp.stopCapture(id);
        if (s.matched !== 0) throw new Error(`the filter '${FILTER_MATCHING_NOTHING}' matched ${s.matched} frames`);
      }
      let packets = 0;
      let cycles = 0;
      b.workers.forEach((w, i) => {
        const before = a.workers[i];
        if (before === undefined) return;
        packets += w.rxPackets - before.rxPackets;
        cycles += w.busyCycles + w.idleCycles - before.busyCycles - before.idleCycles;
      });
      windows.push({ mode, mpps: packets / seconds / 1e6, cyclesPerPacket: cycles / packets, ...(jit === undefined ? {} : { jit }) });
    }
    return windows;
  } finally {
    fs.closeSync(sink);
    dp.stop();
  }
}

function runChild(request: ChildRequest): Promise<Window[]> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (m: { windows?: Window[]; error?: string }) => (m.windows !== undefined ? resolve(m.windows) : reject(new Error(m.error))));
    child.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`measurement process exited with ${code}`))));
    child.send(request);
  });
}

const fmt = (v: number, digits = 3) => v.toFixed(digits);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5' },
      windows: { type: 'string', default: '6' },
      seconds: { type: 'string', default: '1' },
      flows: { type: 'string', default: '1024' },
      baseline: { type: 'string' },
    },
  });
  const rounds = Number(values.rounds);
  const perRound = Number(values.windows);
  const seconds = Number(values.seconds);
  const flows = Number(values.flows);
  const modes: Mode[] = Array.from({ length: perRound }, (_, i) => (i % 2 === 0 ? 'none' : 'capture'));
  const all: Window[] = [];
  const baseline: Window[] = [];
  for (let r = 0; r < rounds; r++) {
    if (values.baseline !== undefined) baseline.push(...(await runChild({ addon: values.baseline, modes: modes.map(() => 'none'), seconds, flows })));
    all.push(...(await runChild({ addon: null, modes, seconds, flows })));
    process.stderr.write(`round ${r + 1}/${rounds} done\n`);
  }
  const summary = (ws: Window[]) => ({ n: ws.length, mpps: median(ws.map((w) => w.mpps)), cpp: median(ws.map((w) => w.cyclesPerPacket)) });
  const none = summary(all.filter((w) => w.mode === 'none'));
  const cap = summary(all.filter((w) => w.mode === 'capture'));
  process.stdout.write(`fwd4, 64-byte frames, ${flows} flows, one worker, ${seconds} s windows, medians\n`);
  process.stdout.write(`no capture            ${fmt(none.mpps)} Mpps  ${fmt(none.cpp, 1)} cycles/packet  (${none.n} windows)\n`);
  const jit = all.some((w) => w.jit === true) ? 'JIT' : 'interpreter';
  process.stdout.write(`capture '${FILTER_MATCHING_NOTHING}'  ${fmt(cap.mpps)} Mpps  ${fmt(cap.cpp, 1)} cycles/packet  (${cap.n} windows, filter: ${jit})\n`);
  process.stdout.write(`capture / none        ${fmt((cap.mpps / none.mpps) * 100, 1)} % of the rate, +${fmt(cap.cpp - none.cpp, 1)} cycles/packet\n`);
  if (baseline.length > 0) {
    const base = summary(baseline);
    process.stdout.write(`baseline build        ${fmt(base.mpps)} Mpps  ${fmt(base.cpp, 1)} cycles/packet  (${base.n} windows, no capture hooks)\n`);
    process.stdout.write(`hooks, no capture     ${fmt(none.cpp - base.cpp, 2)} cycles/packet, ${fmt((none.cpp - base.cpp) * 32, 1)} cycles per 32-packet burst\n`);
  }
}

if (process.argv.includes('--child')) {
  process.once('message', (request: ChildRequest) => {
    measureWindows(request).then(
      (windows) => process.send?.({ windows }, () => process.exit(0)),
      (err: unknown) => process.send?.({ error: err instanceof Error ? err.message : String(err) }, () => process.exit(1)),
    );
  });
} else if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
