/**
 * The limit, measured in the same run: dpdk-testpmd forwarding the same pcap (same
 * net_pcap infinite_rx and net_null vdevs, same EAL arguments and CPU mapping as flowgate)
 * in io mode (receive and send, packets untouched) and macswap mode (also writes the
 * Ethernet header, as any forwarder must). testpmd prints per-port statistics every
 * --stats-period seconds; the rate is the null port's Tx-pps averaged over the samples
 * after the warmup.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';

import { FlowgateError } from '../errors';

export const DEFAULT_TESTPMD = '/usr/bin/dpdk-testpmd';

export type TestpmdMode = 'io' | 'macswap';

export interface TestpmdOptions {
  binary: string;
  mode: TestpmdMode;
  /** EAL arguments without the program name (flowgate's own, from planEal). */
  ealArgs: string[];
  /** The in-port vdev (the same string flowgate attaches). */
  inDevice: string;
  workers: number;
  mbufs: number;
  /** Packet bytes per mbuf, without headroom. */
  mbufDataRoom: number;
  warmupSeconds: number;
  seconds: number;
  /** Give up when testpmd has not produced its samples by then (preloading takes a while). */
  timeoutSeconds: number;
}

export interface TestpmdResult {
  mpps: number;
  /** Tx-pps of the null port, one per second of the measured window. */
  samples: number[];
  /** The full command line. */
  command: string[];
}

/** DPDK's RTE_PKTMBUF_HEADROOM in Debian's build: testpmd's --mbuf-size includes it. */
const MBUF_HEADROOM = 128;
const SINK_PORT = 1;

/** Throws a one-line FlowgateError when the binary is missing or not executable. */
export function checkTestpmd(binary: string): void {
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    throw new FlowgateError(
      'ERR_FLOWGATE_NO_TESTPMD',
      `${binary} not found or not executable: install Debian's dpdk-dev (apt-get install dpdk-dev), pass --testpmd PATH, or run with --no-baseline`,
    );
  }
}

export function testpmdCommand(o: TestpmdOptions): string[] {
  return [
    o.binary,
    ...o.ealArgs,
    '--vdev',
    o.inDevice,
    '--vdev',
    'net_null0,no-rx=1',
    '--',
    `--forward-mode=${o.mode}`,
    '--stats-period=1',
    `--nb-cores=${o.workers}`,
    `--rxq=${o.workers}`,
    `--txq=${o.workers}`,
    `--total-num-mbufs=${o.mbufs}`,
    `--mbuf-size=${o.mbufDataRoom + MBUF_HEADROOM}`,
    // flowgate does not lock its memory either.
    '--no-mlockall',
  ];
}

/** Tx-pps of each statistics block printed for `port`, in order. */
export function parseTxPps(output: string, port: number): number[] {
  const samples: number[] = [];
  const re = new RegExp(`NIC statistics for port ${port}\\s[\\s\\S]*?Tx-pps:\\s+(\\d+)`, 'g');
  for (let m = re.exec(output); m !== null; m = re.exec(output)) samples.push(Number(m[1]));
  return samples;
}

function lastLines(text: string, n: number): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^[#+-]+$/.test(l))
    .slice(-n)
    .join(' | ');
}

export function runTestpmd(o: TestpmdOptions, register?: (child: ChildProcess) => void): Promise<TestpmdResult> {
  const command = testpmdCommand(o);
  // The first block is printed when forwarding starts (0 pps: nothing to compare with yet);
  // each later one covers the second before it.
  const skip = 1 + Math.ceil(o.warmupSeconds);
  const wanted = Math.max(1, Math.round(o.seconds));
  return new Promise((resolve, reject) => {
    const child = spawn(command[0] as string, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    register?.(child);
    let out = '';
    let err = '';
    let stopping = false;
    const timer = setTimeout(() => {
      stopping = true;
      child.kill('SIGKILL');
    }, o.timeoutSeconds * 1000);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (!stopping && parseTxPps(out, SINK_PORT).length >= skip + wanted) {
        stopping = true;
        // testpmd stops forwarding, prints its totals and closes the ports on SIGINT.
        child.kill('SIGINT');
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk;
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new FlowgateError('ERR_FLOWGATE_TESTPMD', `cannot run ${o.binary}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const samples = parseTxPps(out, SINK_PORT).slice(skip, skip + wanted);
      if (samples.length < wanted) {
        const why = signal === 'SIGKILL' ? `no rate after ${o.timeoutSeconds} s` : `exit ${code ?? signal}`;
        reject(
          new FlowgateError('ERR_FLOWGATE_TESTPMD', `testpmd ${o.mode}: ${why}: ${lastLines(err + '\n' + out, 3) || 'no output'}`),
        );
        return;
      }
      const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
      resolve({ mpps: mean / 1e6, samples, command });
    });
  });
}
