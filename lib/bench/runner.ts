/**
 * One benchmark case end to end, in the parent process: traffic (cached pcaps), memory
 * plan and hugepages, the flowgate measurement in a fresh child process, then testpmd io
 * and macswap on the same pcap with the same EAL arguments. Repeats are whole runs of all
 * three; the figures reported are medians over them.
 */
import { ChildProcess, fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { estimateMemory } from '../eal';
import { FlowgateError } from '../errors';
import { detectMachine } from '../machine';
import { HugepageKeeper } from './hugepages';
import { median } from './median';
import { CaptureOutcome, ChildJob, ChildMessage, Measurement, ResourcePlan } from './protocol';
import { pcapDevice, Scenario } from './scenarios';
import { runTestpmd, TestpmdResult } from './testpmd';
import { FrameSize, TrafficFiles, trafficFiles } from './traffic';

export interface BenchCase {
  scenario: Scenario;
  flows: number;
  size: FrameSize;
  zipf: number | null;
  workers: number;
}

export interface BenchSettings {
  seconds: number;
  warmupSeconds: number;
  /** Run testpmd io and macswap as the limit. */
  baseline: boolean;
  testpmd: string;
  cacheDir: string;
  repeat: number;
}

/** What a run needs from its caller: hugepage bookkeeping, notes for the output, progress, and the child processes to kill on Ctrl-C. */
export interface RunContext {
  keeper: HugepageKeeper;
  notes: Set<string>;
  progress(phase: string, fraction?: number): void;
  children: Set<ChildProcess>;
}

/** One case's figures (the --json object). Rates are medians over `runs` runs. */
export interface BenchResult {
  scenario: string;
  flows: number;
  size: FrameSize;
  zipf: number | null;
  workers: number;
  cpus: number[];
  seconds: number;
  warmup: number;
  /** Fast-path forwarded packets per second, millions. */
  mpps: number;
  /** mpps times the mean inner frame size with FCS (RFC 2544 frame rate in bits). */
  gbps: number;
  /** Worker cycles (busy + idle) per fast-path packet. */
  cycles_per_packet: number;
  /** Fast-path packets / packets received by the workers. */
  hit_ratio: number;
  baseline: { io_mpps: number; macswap_mpps: number } | null;
  /** mpps / testpmd io mpps of the same run. */
  ratio_io: number | null;
  /** Mean inner frame size with FCS. */
  frame_bytes: number;
  pcap_packets: number;
  rx_packets: number;
  fast_packets: number;
  punts: Record<string, number>;
  drops: Record<string, number>;
  flows_installed: number;
  insert_failed: number;
  /** The first failed insert's message, when there was one. */
  insert_error: string | null;
  install_seconds: number;
  /** Fraction of worker cycles in polls that received packets. */
  busy_ratio: number;
  /** Share of the window the worker threads were on their CPUs (median): below ~0.97 another task shared them. */
  worker_cpu_share: number;
  hugepages: boolean;
  tsc_hz: number;
  runs: number;
  samples: { mpps: number[]; cycles_per_packet: number[]; io_mpps: number[]; macswap_mpps: number[]; ratio_io: number[] };
}

/** Memory tuned to the pcap: net_pcap preloads every packet, so the pool holds them all plus what is in flight. */
const MBUF_SLACK = 8192;
const MBUF_SLACK_PER_WORKER = 2048;
const MIN_DATA_ROOM = 128;
const MIN_FLOW_CAPACITY = 65_536;
/** Time a child or testpmd may take beyond the run itself: preloading and flow installation. */
const STARTUP_SECONDS = 120;
const INSTALL_FLOWS_PER_SECOND = 100_000;

function ringBytes(entries: number): number {
  return 8 * 2 ** Math.ceil(Math.log2(entries + 1));
}

export function planResources(traffic: TrafficFiles, flows: number, workers: number): ResourcePlan {
  const packets = traffic.packets.reduce((a, b) => a + b, 0);
  const mbufDataRoom = Math.max(MIN_DATA_ROOM, Math.ceil(traffic.maxFrame / 64) * 64);
  const mbufs = packets + MBUF_SLACK + MBUF_SLACK_PER_WORKER * workers;
  const flowCapacity = Math.max(MIN_FLOW_CAPACITY, flows);
  // Beyond the dataplane's own estimate: the mempool's ring of every mbuf and net_pcap's
  // ring of every preloaded packet, 64 MiB each at 4 Mi packets.
  const rings = ringBytes(mbufs) + traffic.packets.reduce((sum, n) => sum + ringBytes(n), 0);
  return { mbufs, mbufDataRoom, flowCapacity, memoryBytes: estimateMemory({ flowCapacity, workers, mbufs, mbufDataRoom }) + rings };
}

/** Worker CPUs: the highest ones (CPU 1 on a two-core machine), leaving CPU 0 to the main lcore and the system. */
export function workerCpus(workers: number): number[] {
  const cpus = [...detectMachine().cpus].sort((a, b) => b - a);
  if (workers > cpus.length)
    throw new FlowgateError('ERR_FLOWGATE_INVALID_ARGUMENT', `--workers ${workers}: this process may use ${cpus.length} CPU(s)`);
  return cpus.slice(0, workers);
}

export function checkDevargsPath(file: string, what: string): void {
  // DPDK splits device arguments at commas; a path with one cannot be passed.
  if (file.includes(','))
    throw new FlowgateError('ERR_FLOWGATE_INVALID_ARGUMENT', `${what} ${file}: DPDK device arguments cannot hold a path with a comma`);
}

function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join(' | ');
}

/** Run one job in a fresh child process (EAL initialises once per process). */
export function runChild(job: ChildJob, ctx: RunContext, timeoutSeconds: number): Promise<Measurement | CaptureOutcome> {
  return new Promise((resolve, reject) => {
    // EAL and the PMDs log to stdout and stderr: keep them off the benchmark's own output.
    const child = fork(path.join(__dirname, 'child.js'), [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    ctx.children.add(child);
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-8192);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    let result: Measurement | CaptureOutcome | undefined;
    let failure: Error | undefined;
    const timer = setTimeout(() => {
      failure = new FlowgateError('ERR_FLOWGATE_BENCH', `the measurement did not finish in ${timeoutSeconds} s`);
      child.kill('SIGKILL');
    }, timeoutSeconds * 1000);
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'progress') ctx.progress(m.phase, m.fraction);
      else if (m.type === 'result') result = m.result;
      else failure = new FlowgateError(m.code ?? 'ERR_FLOWGATE_BENCH', m.message);
    });
    child.send(job);
    // 'close' comes after the exit and after every message and output chunk was delivered.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      ctx.children.delete(child);
      if (result !== undefined) resolve(result);
      else
        reject(
          failure ??
            new FlowgateError(
              'ERR_FLOWGATE_BENCH',
              `the measurement process ended (${signal ?? `exit ${code}`}) without a result: ${tail(output, 3) || 'no output'}`,
            ),
        );
    });
  });
}

interface SingleRun {
  m: Measurement;
  io: TestpmdResult | null;
  macswap: TestpmdResult | null;
}

export interface PreparedCase {
  traffic: TrafficFiles;
  resources: ResourcePlan;
  hugepages: boolean;
  cpus: number[];
}

/** The case's pcaps (from the cache or generated now). */
export function prepareTraffic(c: BenchCase, settings: Pick<BenchSettings, 'cacheDir'>, progress: RunContext['progress']): TrafficFiles {
  checkDevargsPath(settings.cacheDir, '--cache-dir');
  progress('preparing traffic');
  return trafficFiles(
    { scenario: c.scenario, flows: c.flows, size: c.size, zipf: c.zipf, queues: c.workers },
    settings.cacheDir,
    (f) => progress('generating traffic', f),
  );
}

/** Traffic, memory plan and hugepages for a case: what a measurement and a capture both need. */
export function prepareCase(c: BenchCase, settings: Pick<BenchSettings, 'cacheDir'>, ctx: RunContext): PreparedCase {
  const cpus = workerCpus(c.workers);
  const traffic = prepareTraffic(c, settings, ctx.progress);
  const resources = planResources(traffic, c.flows, c.workers);
  const decision = ctx.keeper.ensure(resources.memoryBytes);
  if (decision.note !== undefined) ctx.notes.add(decision.note);
  return { traffic, resources, hugepages: decision.hugepages, cpus };
}

async function runOnce(c: BenchCase, settings: BenchSettings, prep: PreparedCase, ctx: RunContext): Promise<SingleRun> {
  const job: ChildJob = {
    kind: 'measure',
    scenario: c.scenario.name,
    flows: c.flows,
    pcapFiles: prep.traffic.files,
    workerCpus: prep.cpus,
    resources: prep.resources,
    hugepages: prep.hugepages ? 'on' : 'off',
    warmupSeconds: settings.warmupSeconds,
    seconds: settings.seconds,
  };
  const timeout = STARTUP_SECONDS + c.flows / INSTALL_FLOWS_PER_SECOND + settings.warmupSeconds + settings.seconds;
  const m = (await runChild(job, ctx, timeout)) as Measurement;
  for (const w of m.warnings) ctx.notes.add(w);
  if (!settings.baseline) return { m, io: null, macswap: null };

  const base = {
    binary: settings.testpmd,
    // Exactly flowgate's EAL arguments (CPU mapping, memory mode), without its program name.
    ealArgs: m.ealArgs.slice(1),
    inDevice: pcapDevice(prep.traffic.files),
    workers: c.workers,
    mbufs: prep.resources.mbufs,
    mbufDataRoom: prep.resources.mbufDataRoom,
    warmupSeconds: settings.warmupSeconds,
    seconds: settings.seconds,
    timeoutSeconds: STARTUP_SECONDS + settings.warmupSeconds + settings.seconds,
  };
  const register = (child: ChildProcess) => {
    ctx.children.add(child);
    child.on('exit', () => ctx.children.delete(child));
  };
  ctx.progress('testpmd io');
  const io = await runTestpmd({ ...base, mode: 'io' }, register);
  ctx.progress('testpmd macswap');
  const macswap = await runTestpmd({ ...base, mode: 'macswap' }, register);
  return { m, io, macswap };
}

export async function runCase(c: BenchCase, settings: BenchSettings, ctx: RunContext): Promise<BenchResult> {
  const prep = prepareCase(c, settings, ctx);
  const runs: SingleRun[] = [];
  for (let r = 0; r < settings.repeat; r++) runs.push(await runOnce(c, settings, prep, ctx));

  const mppsOf = (run: SingleRun) => run.m.fastPackets / run.m.elapsedSeconds / 1e6;
  const samples = {
    mpps: runs.map(mppsOf),
    cycles_per_packet: runs.map((run) => (run.m.fastPackets === 0 ? Infinity : run.m.workerCycles / run.m.fastPackets)),
    io_mpps: runs.flatMap((run) => (run.io === null ? [] : [run.io.mpps])),
    macswap_mpps: runs.flatMap((run) => (run.macswap === null ? [] : [run.macswap.mpps])),
    ratio_io: runs.flatMap((run) => (run.io === null || run.io.mpps === 0 ? [] : [mppsOf(run) / run.io.mpps])),
  };
  // Counters and the install report come from the run whose rate is the median.
  const mpps = median(samples.mpps);
  const typical = runs.reduce((best, run) => (Math.abs(mppsOf(run) - mpps) < Math.abs(mppsOf(best) - mpps) ? run : best));
  const m = typical.m;
  return {
    scenario: c.scenario.name,
    flows: c.flows,
    size: c.size,
    zipf: c.zipf,
    workers: c.workers,
    cpus: prep.cpus,
    seconds: settings.seconds,
    warmup: settings.warmupSeconds,
    mpps,
    gbps: (mpps * prep.traffic.meanFrameSize * 8) / 1000,
    cycles_per_packet: median(samples.cycles_per_packet),
    hit_ratio: m.rxPackets === 0 ? 0 : m.fastPackets / m.rxPackets,
    baseline: settings.baseline ? { io_mpps: median(samples.io_mpps), macswap_mpps: median(samples.macswap_mpps) } : null,
    ratio_io: settings.baseline ? median(samples.ratio_io) : null,
    frame_bytes: prep.traffic.meanFrameSize,
    pcap_packets: prep.traffic.packets.reduce((a, b) => a + b, 0),
    rx_packets: m.rxPackets,
    fast_packets: m.fastPackets,
    punts: m.punts,
    drops: m.drops,
    flows_installed: m.install.entries,
    insert_failed: m.install.failed,
    insert_error: m.install.firstError,
    install_seconds: m.install.seconds,
    busy_ratio: m.workerCycles === 0 ? 0 : m.busyCycles / m.workerCycles,
    worker_cpu_share: median(runs.map((run) => run.m.workerCpuShare)),
    hugepages: m.hugepages,
    tsc_hz: m.tscHz,
    runs: runs.length,
    samples,
  };
}

/**
 * Write the first `packets` packets the fast path forwards to `file` (a net_pcap tx_pcap
 * sink), then cut the file to exactly that many records.
 */
export async function runCapture(
  c: BenchCase,
  settings: Pick<BenchSettings, 'cacheDir'>,
  file: string,
  packets: number,
  ctx: RunContext,
): Promise<CaptureOutcome> {
  if (c.workers !== 1) throw new FlowgateError('ERR_FLOWGATE_INVALID_ARGUMENT', '--capture runs one worker: its pcap sink has one tx queue');
  const target = path.resolve(file);
  checkDevargsPath(target, '--capture');
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const prep = prepareCase(c, settings, ctx);
  const job: ChildJob = {
    kind: 'capture',
    scenario: c.scenario.name,
    flows: c.flows,
    pcapFiles: prep.traffic.files,
    workerCpus: prep.cpus,
    resources: prep.resources,
    hugepages: prep.hugepages ? 'on' : 'off',
    file: target,
    packets,
    timeoutSeconds: 30,
  };
  const outcome = (await runChild(job, ctx, STARTUP_SECONDS + c.flows / INSTALL_FLOWS_PER_SECOND + 30)) as CaptureOutcome;
  for (const w of outcome.warnings) ctx.notes.add(w);
  const kept = truncatePcap(target, packets);
  if (kept < packets) throw new FlowgateError('ERR_FLOWGATE_BENCH', `${target} holds ${kept} packets, fewer than the ${packets} asked for`);
  return outcome;
}

/** Cut a pcap file after its first `records` records; returns how many it keeps. */
export function truncatePcap(file: string, records: number): number {
  const buf = fs.readFileSync(file);
  if (buf.length < 24) throw new FlowgateError('ERR_FLOWGATE_BENCH', `${file} is not a pcap file (${buf.length} bytes)`);
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  let off = 24;
  let kept = 0;
  while (kept < records && off + 16 <= buf.length) {
    const caplen = le ? buf.readUInt32LE(off + 8) : buf.readUInt32BE(off + 8);
    if (off + 16 + caplen > buf.length) break;
    off += 16 + caplen;
    kept++;
  }
  fs.truncateSync(file, off);
  return kept;
}
