/**
 * Runs captures on a Dataplane in its own process (EAL initialises once per process): start
 * paused, install flows, start the captures (each into a file or a FIFO), poll until the
 * input pcaps are consumed, pause, stop the captures and report their counts and errors as
 * JSON on stdout. Driven by test/dataplane/capture.test.ts.
 */
import * as fs from 'node:fs';

import { CaptureOptions, CaptureStats, Dataplane, FlowPairOptions, StartOptions } from '../../lib/dataplane';

export interface CaptureJob {
  start: Omit<StartOptions, 'onWarning' | 'paused'>;
  flows?: FlowPairOptions[];
  /** Started before the workers poll, each into its `file` (created, or a FIFO opened for writing). */
  captures?: (Omit<CaptureOptions, 'fd'> & { file: string })[];
  /** Started after the others, each expected to fail: their messages go to captureErrors. */
  badCaptures?: (Omit<CaptureOptions, 'fd'> & { file: string })[];
  expectRx: number;
  timeoutMs?: number;
  /** After the run, wait until each capture has ended by itself (its count, its reader gone). */
  awaitEnd?: boolean;
  /** After the captures are stopped: started on the same port again, then stopped (its counts go to restarted). */
  restart?: Omit<CaptureOptions, 'fd'> & { file: string };
}

export interface CaptureJobResult {
  captures: CaptureStats[];
  captureErrors: (string | null)[];
  restarted: CaptureStats | null;
  rx: number;
  fastPackets: number;
  txPackets: Record<string, number>;
}

function openOutput(file: string): number {
  // A FIFO opens for writing without waiting only once its reader has it (the test's).
  return fs.statSync(file, { throwIfNoEntry: false })?.isFIFO() === true
    ? fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
    : fs.openSync(file, 'w');
}

function startCapture(dp: Dataplane, c: Omit<CaptureOptions, 'fd'> & { file: string }): number {
  const { file, ...options } = c;
  const fd = openOutput(file);
  try {
    return dp.startCapture({ ...options, fd });
  } finally {
    fs.closeSync(fd);
  }
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as CaptureJob;
  const dp = new Dataplane();
  dp.start({ ...job.start, paused: true, onWarning: () => undefined });
  try {
    for (const f of job.flows ?? []) dp.addFlow(f);
    const ids = (job.captures ?? []).map((c) => startCapture(dp, c));
    const captureErrors = (job.badCaptures ?? []).map((c) => {
      try {
        dp.stopCapture(startCapture(dp, c));
        return null;
      } catch (err) {
        return (err as Error).message;
      }
    });
    dp.resume();
    const deadline = Date.now() + (job.timeoutMs ?? 10_000);
    const received = () => dp.stats().workers.reduce((n, w) => n + w.rxPackets, 0);
    while (received() < job.expectRx && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    dp.pause();
    while (job.awaitEnd === true && ids.some((id) => dp.captureStats(id).end === 'running') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    const captures = ids.map((id) => dp.stopCapture(id));
    const restarted = job.restart === undefined ? null : dp.stopCapture(startCapture(dp, job.restart));
    const stats = dp.stats();
    const result: CaptureJobResult = {
      captures,
      captureErrors,
      restarted,
      rx: received(),
      fastPackets: stats.fastpath.packets,
      txPackets: Object.fromEntries(Object.entries(stats.ports).map(([name, p]) => [name, p.txPackets])),
    };
    process.stdout.write(JSON.stringify(result));
  } finally {
    dp.stop();
  }
}

main().catch((err: unknown) => {
  const e = err as Error & { code?: string };
  process.stderr.write(`${e.code ?? ''} ${e.stack ?? String(err)}\n`);
  process.exitCode = 1;
});
