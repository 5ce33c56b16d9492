/**
 * pcap in / pcap out through the real addon: write input pcaps, run a job in a child
 * process (test/helpers/dataplane-child.ts) with net_pcap ports reading and writing them,
 * read back what each port sent. Decoding the output is the tests' business, with
 * independent tools (scapy, tshark), never with the fast path's own parser.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { DataplaneStats, Flow, PortInfo, ReapedFlow, TunnelMtu, VlanInfo } from '../../lib/dataplane';
import { readPcap, writePcap } from '../../lib/pcap';
import type { DataplaneJob, JobTraceRecord } from './dataplane-child';
import { sh } from './netns';

export interface JobResult {
  stats: DataplaneStats;
  flows: Flow[];
  /** With job.reap: the flows reaped after the run. */
  reaped: ReapedFlow[];
  flowIds: number[];
  /** With job.nextHopRewrites: the adjacencies each rewrite changed. */
  nextHopsRewritten: number[];
  ports: PortInfo[];
  vlans: VlanInfo[];
  /** With job.badVlans: each one's error message (null: it was added). */
  vlanErrors: (string | null)[];
  /** With job.removals: the ports, VLANs, flow ids and job tunnels left after them. */
  afterRemovals: { ports: string[]; vlans: string[]; flows: number[]; tunnels: string[] };
  hugepages: boolean;
  warnings: string[];
  received: number;
  /** Every job tunnel's MTUs after the run, before and after job.pathMtu applied the reports, and those it changed. */
  tunnelsBefore: TunnelMtu[];
  pathMtuChanges: TunnelMtu[];
  tunnelMtus: TunnelMtu[];
  /** With job.pathMtuExpiry: the tunnels whose learnt path MTU expired. */
  pathMtuExpired: TunnelMtu[];
  /** With job.trace: its records and state after the run (null when it was refused: traceError). */
  trace: { records: JobTraceRecord[]; running: boolean; remaining: number; lost: number } | null;
  traceError: { code: string; message: string } | null;
}

const CHILD = path.join(__dirname, 'dataplane-child.js');

/** A temporary directory of pcaps and the net_pcap device strings that use them. */
export class PcapBench {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowgate-pcap-'));
  private nextDevice = 0;
  private inputs = 0;

  /** A net_pcap device reading `frames` (once, or none) and writing what it sends to `<name>.out.pcap`. */
  device(name: string, frames: Buffer[] = []): string {
    const input = path.join(this.dir, `${name}.in.pcap`);
    writePcap(input, frames);
    this.inputs += frames.length;
    return `net_pcap${this.nextDevice++},rx_pcap=${input},tx_pcap=${this.output(name)}`;
  }

  output(name: string): string {
    return path.join(this.dir, `${name}.out.pcap`);
  }

  /** Frames a port sent. */
  sent(name: string): Buffer[] {
    return readPcap(this.output(name)).packets.map((p) => p.data);
  }

  get inputPackets(): number {
    return this.inputs;
  }

  dispose(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function runJob(job: DataplaneJob, timeoutMs = 60_000): Promise<JobResult> {
  return runChildJob<JobResult>(CHILD, 'dataplane', job, timeoutMs);
}

/**
 * Runs a test's dataplane in a child process (EAL starts once per process): the job as JSON
 * on its stdin, its result as JSON on its stdout. `what` names it in failures.
 */
export function runChildJob<R>(script: string, what: string, job: unknown, timeoutMs = 60_000): Promise<R> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${what} job failed (exit ${code ?? signal}): ${err.trim()}`));
      try {
        resolve(JSON.parse(out) as R);
      } catch {
        reject(new Error(`${what} job printed no result: ${out} ${err}`));
      }
    });
    child.stdin.end(JSON.stringify(job));
  });
}

/** One array of tshark's fields per packet of a pcap or pcapng file. */
export async function tsharkFields(file: string, fields: string[]): Promise<string[][]> {
  const out = await sh(['tshark', '-r', file, '-n', '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])]);
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split('|'));
}

export interface ChecksumStatus {
  ip: string[];
  udp: string[];
  tcp: string[];
}

/**
 * tshark's verdict on every IPv4, UDP and TCP checksum of each packet in a pcap (inner
 * headers of tunnelled packets included): 'Good', 'Bad' or 'Unverified' per header.
 */
export async function tsharkChecksums(pcap: string): Promise<ChecksumStatus[]> {
  const out = await sh([
    'tshark', '-r', pcap, '-n',
    '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE',
    '-T', 'fields', '-E', 'separator=|', '-E', 'aggregator=,',
    '-e', 'ip.checksum.status', '-e', 'udp.checksum.status', '-e', 'tcp.checksum.status',
  ]);
  const name = (v: string) => ({ '0': 'Bad', '1': 'Good', '2': 'Unverified' })[v] ?? v;
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      const [ip = '', udp = '', tcp = ''] = line.split('|');
      const list = (s: string) => (s === '' ? [] : s.split(',').map(name));
      return { ip: list(ip), udp: list(udp), tcp: list(tcp) };
    });
}
