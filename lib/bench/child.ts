/**
 * One measurement in its own process (EAL initialises once per process): start the
 * dataplane on the generated pcap, install the scenario's flows, let a warmup pass, then
 * read the counters over the measured window. Forked by runner.ts, which sends one job and
 * reads progress and one result back over the IPC channel.
 */
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { Dataplane } from '../dataplane';
import { FlowgateError } from '../errors';
import { ChildJob, ChildMessage, CaptureOutcome, FlowInstallReport, Measurement } from './protocol';
import { benchPorts, benchTunnel, benchVlans, flowInstallCount, flowInstalls, pcapDevice, PORT_OUT, scenarioFromName } from './scenarios';

/** addFlow() calls between two yields to the event loop (so progress messages leave). */
const INSTALL_CHUNK = 16_384;
/** How often the measured window reports progress. */
const PROGRESS_TICK_MS = 250;
/** How often a capture checks whether enough packets came out. */
const CAPTURE_POLL_MS = 1;

function send(message: ChildMessage): void {
  process.send?.(message);
}

function startDataplane(job: ChildJob, sinkDevice: string | undefined, warnings: string[]): Dataplane {
  const scenario = scenarioFromName(job.scenario);
  const dp = new Dataplane();
  dp.start({
    workers: { cpus: job.workerCpus },
    hugepages: job.hugepages,
    flowCapacity: job.resources.flowCapacity,
    mbufs: job.resources.mbufs,
    mbufDataRoom: job.resources.mbufDataRoom,
    ports: benchPorts(scenario, pcapDevice(job.pcapFiles), sinkDevice === undefined ? {} : { device: sinkDevice }),
    vlans: benchVlans(scenario),
    onWarning: (m) => warnings.push(m),
    // Without hugepages EAL takes -m MiB up front; the dataplane's own estimate leaves out
    // the preloaded pcap's rings (a later -m wins).
    ...(job.hugepages === 'off' ? { eal: ['-m', String(Math.ceil(job.resources.memoryBytes / (1024 * 1024)))] } : {}),
  });
  try {
    const tunnel = benchTunnel(scenario);
    if (tunnel !== null) dp.addTunnel(tunnel);
  } catch (err) {
    dp.stop();
    throw err;
  }
  return dp;
}

async function installFlows(dp: Dataplane, job: ChildJob): Promise<FlowInstallReport> {
  const scenario = scenarioFromName(job.scenario);
  const total = flowInstallCount(scenario, job.flows);
  const started = process.hrtime.bigint();
  let installed = 0;
  let failed = 0;
  let firstError: string | null = null;
  let done = 0;
  for (const flow of flowInstalls(scenario, job.flows)) {
    try {
      dp.addFlow(flow);
      installed++;
    } catch (err) {
      // A full pair of buckets is a property of the table worth reporting, not a reason to
      // stop; anything else (a bad spec) fails every flow and is caught below.
      failed++;
      firstError ??= err instanceof Error ? err.message : String(err);
    }
    if (++done % INSTALL_CHUNK === 0) {
      send({ type: 'progress', phase: 'installing flows', fraction: done / total });
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  if (installed === 0 && failed > 0) throw new FlowgateError('ERR_FLOWGATE_BENCH', `no flow could be installed: ${firstError}`);
  return {
    installed,
    failed,
    firstError,
    entries: dp.stats().flows.entries,
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  };
}

/** Linux reports thread CPU time in USER_HZ ticks, 100 a second on every architecture flowgate runs on. */
const USER_HZ = 100;

/**
 * CPU time of this process's EAL worker threads (DPDK names them rte-worker-N), in
 * seconds. Over the measured window it tells whether the workers had their CPUs to
 * themselves: a busy-polling worker that gets less than the whole window shared its CPU.
 */
function workerThreadSeconds(): number {
  let ticks = 0;
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (!/^(rte|lcore)-worker-\d+$/.test(fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim())) continue;
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      // Fields after the parenthesised name, from field 3 (state): utime is 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // the thread ended between readdir and read
    }
  }
  return ticks / USER_HZ;
}

interface Snapshot {
  at: bigint;
  cycles: ReturnType<Dataplane['cycles']>;
  stats: ReturnType<Dataplane['stats']>;
  workerSeconds: number;
}

function snapshot(dp: Dataplane): Snapshot {
  return { at: process.hrtime.bigint(), cycles: dp.cycles(), stats: dp.stats(), workerSeconds: workerThreadSeconds() };
}

function deltaRecord(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

async function measure(job: Extract<ChildJob, { kind: 'measure' }>): Promise<Measurement> {
  const warnings: string[] = [];
  send({ type: 'progress', phase: 'starting (preloading the pcap)' });
  const dp = startDataplane(job, undefined, warnings);
  try {
    send({ type: 'progress', phase: 'installing flows', fraction: 0 });
    const install = await installFlows(dp, job);
    send({ type: 'progress', phase: 'warmup' });
    await sleep(job.warmupSeconds * 1000);

    const a = snapshot(dp);
    const end = a.at + BigInt(Math.round(job.seconds * 1e9));
    for (let now = process.hrtime.bigint(); now < end; now = process.hrtime.bigint()) {
      send({ type: 'progress', phase: 'measuring', fraction: 1 - Number(end - now) / (job.seconds * 1e9) });
      await sleep(Math.min(PROGRESS_TICK_MS, Number(end - now) / 1e6));
    }
    const b = snapshot(dp);

    let workerCycles = 0;
    let busyCycles = 0;
    let rxPackets = 0;
    let fastPackets = 0;
    b.cycles.workers.forEach((w, i) => {
      const before = a.cycles.workers[i];
      if (before === undefined) return;
      workerCycles += w.busyCycles + w.idleCycles - before.busyCycles - before.idleCycles;
      busyCycles += w.busyCycles - before.busyCycles;
      rxPackets += w.rxPackets - before.rxPackets;
      fastPackets += w.fastPackets - before.fastPackets;
    });
    const elapsedSeconds = Number(b.at - a.at) / 1e9;
    return {
      kind: 'measure',
      elapsedSeconds,
      // Thread times come in 10 ms ticks: a whole-window share can read a tick above 1.
      workerCpuShare: Math.min(1, (b.workerSeconds - a.workerSeconds) / elapsedSeconds / job.workerCpus.length),
      tscHz: b.cycles.tscHz,
      workerCycles,
      busyCycles,
      rxPackets,
      fastPackets,
      fastBytes: b.stats.fastpath.bytes - a.stats.fastpath.bytes,
      punts: deltaRecord(a.stats.slowpath.reasons, b.stats.slowpath.reasons),
      drops: deltaRecord(a.stats.drops.reasons, b.stats.drops.reasons),
      install,
      hugepages: dp.hugepages,
      ealArgs: dp.ealArgs,
      warnings,
    };
  } finally {
    dp.stop();
  }
}

async function capture(job: Extract<ChildJob, { kind: 'capture' }>): Promise<CaptureOutcome> {
  const warnings: string[] = [];
  send({ type: 'progress', phase: 'starting (preloading the pcap)' });
  // A second net_pcap instance, writing what the fast path forwards to the capture file.
  const dp = startDataplane(job, `net_pcap1,tx_pcap=${job.file}`, warnings);
  try {
    send({ type: 'progress', phase: 'installing flows', fraction: 0 });
    const install = await installFlows(dp, job);
    send({ type: 'progress', phase: 'capturing' });
    const deadline = process.hrtime.bigint() + BigInt(job.timeoutSeconds * 1e9);
    let sent = dp.stats().ports[PORT_OUT]?.txPackets ?? 0;
    while (sent < job.packets) {
      if (process.hrtime.bigint() > deadline)
        throw new FlowgateError(
          'ERR_FLOWGATE_BENCH',
          `only ${sent} of ${job.packets} packets came out in ${job.timeoutSeconds} s (punts: ${JSON.stringify(dp.stats().slowpath.reasons)})`,
        );
      await sleep(CAPTURE_POLL_MS);
      sent = dp.stats().ports[PORT_OUT]?.txPackets ?? 0;
    }
    dp.stop();
    return { kind: 'capture', sent, install, warnings };
  } finally {
    dp.stop();
  }
}

async function runJob(job: ChildJob): Promise<void> {
  try {
    const result = job.kind === 'measure' ? await measure(job) : await capture(job);
    send({ type: 'result', result });
  } catch (err) {
    const e = err as Error & { code?: unknown };
    send({ type: 'error', message: e.message ?? String(err), ...(typeof e.code === 'string' ? { code: e.code } : {}) });
  } finally {
    process.disconnect?.();
  }
}

if (require.main === module) {
  if (process.send === undefined) {
    process.stderr.write('lib/bench/child.js runs measurements for `flowgate bench`; it is not a command of its own\n');
    process.exitCode = 2;
  } else {
    process.once('message', (job: ChildJob) => void runJob(job));
  }
}
