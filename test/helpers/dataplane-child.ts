/**
 * Runs one dataplane job in its own process (EAL initialises once per process): start
 * paused, install tunnels and flows, poll until the input pcaps are consumed, pause, report
 * stats and flows as JSON on stdout, stop. Driven by test/helpers/dataplane.ts.
 */
import { Dataplane, FlowPairOptions, StartOptions, TraceOptions, TraceRecord, TunnelOptions, VlanOptions } from '../../lib/dataplane';

export interface DataplaneJob {
  start: Omit<StartOptions, 'onWarning' | 'paused'>;
  tunnels?: TunnelOptions[];
  flows?: FlowPairOptions[];
  /** Packets the workers must have received before the job ends (all input pcaps). */
  expectRx: number;
  /** Packets the slow-path thread must have read from the kernel-facing ports (TAP input pcaps) before the job ends. */
  expectKernelRx?: number;
  /** VLANs added after start, each expected to fail: their error messages go to vlanErrors. */
  badVlans?: VlanOptions[];
  /** After the run: ports and VLANs removed in order; what is left goes to afterRemovals. */
  removals?: ({ port: string } | { vlan: string })[];
  timeoutMs?: number;
  /** Reap after the run (flows marked for teardown only: the timeouts are long), and report what went. */
  reap?: boolean;
  /** Next hops moved in place after the flows are installed (a neighbour's MAC changed); their counts go to nextHopsRewritten. */
  nextHopRewrites?: { port: string; family: 4 | 6; from: string; to: string }[];
  /** Port MTUs set after the tunnels and flows are installed (an underlay MTU changing under a tunnel). */
  portMtus?: { port: string; mtu: number }[];
  /** After the run, apply the path MTUs the workers learnt from packet too big, and report every tunnel's MTUs. */
  pathMtu?: boolean;
  /** Then wait this long and apply again, with path MTUs expiring after expiresSeconds: the changes go to pathMtuExpired. */
  pathMtuExpiry?: { waitMs: number; expiresSeconds: number };
  /** A packet trace started before the workers run: its records go to traced (bytes as hex), a refusal to traceError. */
  trace?: TraceOptions;
}

/** A trace record as the job reports it: bytes as hex strings. */
export type JobTraceRecord = Omit<TraceRecord, 'rx' | 'tx'> & { rx: string; tx: string | null };

/** Every record of the job's trace, read after the workers stopped. */
function readTrace(dp: Dataplane): { records: JobTraceRecord[]; running: boolean; remaining: number; lost: number } {
  const records: JobTraceRecord[] = [];
  for (;;) {
    const page = dp.traceRead();
    for (const r of page.records) records.push({ ...r, rx: r.rx.toString('hex'), tx: r.tx === null ? null : r.tx.toString('hex') });
    if (page.records.length === 0) return { records, running: page.running, remaining: page.remaining, lost: page.lost };
  }
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as DataplaneJob;
  const warnings: string[] = [];
  const dp = new Dataplane();
  dp.start({ ...job.start, paused: true, onWarning: (w) => warnings.push(w) });
  try {
    for (const t of job.tunnels ?? []) dp.addTunnel(t);
    const flowIds = (job.flows ?? []).map((f) => dp.addFlow(f));
    const nextHopsRewritten = (job.nextHopRewrites ?? []).map(({ port, family, from, to }) => dp.rewriteNextHop(port, family, from, to));
    for (const { port, mtu } of job.portMtus ?? []) dp.setMtu(port, mtu);
    let traceError: { code: string; message: string } | null = null;
    if (job.trace !== undefined) {
      try {
        dp.traceStart(job.trace);
      } catch (err) {
        const e = err as Error & { code: string };
        traceError = { code: e.code, message: e.message };
      }
    }
    dp.resume();
    const deadline = Date.now() + (job.timeoutMs ?? 10_000);
    const received = () => dp.stats().workers.reduce((n, w) => n + w.rxPackets, 0);
    const kernelReceived = () => dp.stats().kernel.rxPackets;
    while ((received() < job.expectRx || kernelReceived() < (job.expectKernelRx ?? 0)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    // Frames the slow-path thread read wait in a ring for worker 0: a moment to send them.
    if (job.expectKernelRx !== undefined) await new Promise((r) => setTimeout(r, 100));
    // Joining the workers finishes the burst in flight and its transmission.
    dp.pause();
    const trace = job.trace !== undefined && traceError === null ? readTrace(dp) : null;
    dp.traceStop();
    const flows = dp.flows();
    const reaped = job.reap === true ? dp.reap({ tcp: 1_000_000, udp: 1_000_000 }) : [];
    const tunnelsBefore = (job.tunnels ?? []).map((t) => dp.tunnelMtu(t.name));
    const pathMtuChanges = job.pathMtu === true ? dp.applyPathMtuReports() : [];
    const tunnelMtus = (job.tunnels ?? []).map((t) => dp.tunnelMtu(t.name));
    let pathMtuExpired: ReturnType<Dataplane['applyPathMtuReports']> = [];
    if (job.pathMtuExpiry !== undefined) {
      // The workers stay paused: nothing reports a path MTU meanwhile.
      const { waitMs, expiresSeconds } = job.pathMtuExpiry;
      await new Promise((r) => setTimeout(r, waitMs));
      pathMtuExpired = dp.applyPathMtuReports({ expiresSeconds });
    }
    const vlanErrors = (job.badVlans ?? []).map((v) => {
      try {
        dp.addVlan(v);
        return null;
      } catch (err) {
        return (err as Error).message;
      }
    });
    const vlans = dp.vlans();
    const portsBeforeRemovals = dp.ports();
    for (const r of job.removals ?? []) {
      if ('port' in r) dp.removePort(r.port);
      else dp.removeVlan(r.vlan);
    }
    const afterRemovals = {
      ports: dp.ports().map((p) => p.name),
      vlans: dp.vlans().map((v) => v.name),
      flows: dp.flows().map((f) => f.id),
      tunnels: (job.tunnels ?? []).map((t) => t.name).filter((name) => {
        try {
          dp.tunnelMtu(name);
          return true;
        } catch {
          return false;
        }
      }),
    };
    const result = {
      stats: dp.stats(),
      flows,
      reaped,
      flowIds,
      nextHopsRewritten,
      ports: portsBeforeRemovals,
      vlans,
      vlanErrors,
      afterRemovals,
      hugepages: dp.hugepages,
      warnings,
      received: received(),
      tunnelsBefore,
      pathMtuChanges,
      pathMtuExpired,
      tunnelMtus,
      trace,
      traceError,
    };
    process.stdout.write(JSON.stringify(result));
  } finally {
    dp.stop(); // closes the pcap ports, which flushes their output files
  }
}

main().catch((err: unknown) => {
  const e = err as Error & { code?: string };
  process.stderr.write(`${e.code ?? ''} ${e.stack ?? String(err)}\n`);
  process.exitCode = 1;
});
