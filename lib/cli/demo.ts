/**
 * `flowgate demo` (`npm start`): the reference scenario in network namespaces on any Linux
 * machine, no NIC needed. It builds the topology of lib/demo/topology.ts (a LAN host,
 * flowgate as site A, an IPv6 underlay, the tunnel's far end, a remote host), pings through
 * the tunnel, runs a TCP stream through it while showing what the fast and the slow path
 * carry, prints a summary, and removes everything it created, also on Ctrl-C.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';

import type { GatewayStats } from '../gateway/types';
import { formatSummary, line, rates, summaryOf, table } from '../demo/live';
import { inNetns, onExit, sh } from '../demo/shell';
import { DEMO_ADDRESSES, DemoTopology, type FarEnd, type Site } from '../demo/topology';
import { startTraffic } from '../demo/traffic';
import { HELP_OPTION, type CliOptions } from './options';

export const USAGE = `usage: flowgate demo [--seconds N] [--far-end auto|kernel|flowgate]

Builds flowgate's reference scenario in network namespaces and shows it at work:

  lan host ── eth0 [site A: flowgate] eth1 ── IPv6 underlay ── far end ── remote host
  ${DEMO_ADDRESSES.lanHost}         tun0: ip4ip6 ${DEMO_ADDRESSES.underlayA} -> ${DEMO_ADDRESSES.underlayB}         ${DEMO_ADDRESSES.remoteHost}

Site A runs config/demo-site-a.yaml on AF_PACKET ports. The tunnel's far end is the
kernel's own ip6tnl where this kernel has one, else a second flowgate
(config/demo-site-b.yaml). The demo pings through the tunnel, runs a TCP stream
(iperf3 when installed) while it shows fast-path and slow-path packet rates and the
flows offloaded, prints a summary, and removes every namespace, process and file it
created, also on Ctrl-C. Needs root.

  --seconds N     how long the TCP stream runs                    (default 20)
  --far-end KIND  auto, kernel (ip6tnl) or flowgate               (default auto)
  -h, --help      this text
`;

const DEFAULT_SECONDS = 20;
const IPERF_PORT = 5201;
const STREAM_PORT = 5001;

class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }
}

interface StreamResult {
  tool: string;
  bytes: number;
  seconds: number;
}

interface Stream {
  result: Promise<StreamResult>;
  stop(): void;
}

function hasIperf3(): Promise<boolean> {
  return sh(['iperf3', '--version'], { timeoutMs: 5000 }).then(
    () => true,
    () => false,
  );
}

/** A child in a namespace, in its own process group (killed with it at exit); resolves with its stdout. */
function spawnIn(netns: string, argv: string[]): { output: Promise<string>; kill(): void } {
  const full = inNetns(argv, netns);
  const child = spawn(full[0] as string, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const kill = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  const forget = onExit(kill);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const output = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      forget();
      if (code === 0) resolve(stdout);
      else reject(new Error(`${argv.join(' ')} ${signal !== null ? `killed by ${signal}` : `exited with status ${code}`}: ${(stderr || stdout).trim().slice(-500)}`));
    });
  });
  output.catch(() => undefined);
  return { output, kill };
}

const LISTEN_TIMEOUT_MS = 10_000;

/** Resolves once something listens on TCP `port` in `netns` (iperf3 says so only into a buffer). */
async function listening(netns: string, port: number, serverExited: Promise<unknown>): Promise<void> {
  let exited = false;
  const markExited = () => (exited = true);
  serverExited.then(markExited, markExited);
  const deadline = Date.now() + LISTEN_TIMEOUT_MS;
  while (!(await sh(['ss', '-Hltn', `sport = :${port}`], { netns })).includes(`:${port}`)) {
    if (exited) await serverExited;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} in ${netns} after ${LISTEN_TIMEOUT_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

class StreamStopped extends Error {
  constructor() {
    super('the stream was stopped before it started');
  }
}

/** iperf3 from the lan host to the remote host; stop() is safe before it started. */
function iperfStream(topology: DemoTopology, seconds: number): Stream {
  const server = spawnIn(topology.ns.remote, ['iperf3', '-s', '-1', '-p', String(IPERF_PORT)]);
  let client: ReturnType<typeof spawnIn> | undefined;
  let stopped = false;
  const result = (async () => {
    await listening(topology.ns.remote, IPERF_PORT, server.output);
    // Stopped while the server came up: a client started now would be left trying to
    // connect (for two minutes of SYN retries) to a server that is gone, keeping us alive.
    if (stopped) throw new StreamStopped();
    client = spawnIn(topology.ns.lan, ['iperf3', '-c', DEMO_ADDRESSES.remoteHost, '-p', String(IPERF_PORT), '-t', String(seconds), '-J']);
    const report = JSON.parse(await client.output) as { end: { sum_received: { bytes: number; seconds: number } } };
    return { tool: 'iperf3', bytes: report.end.sum_received.bytes, seconds: report.end.sum_received.seconds };
  })();
  return {
    result,
    stop: () => {
      stopped = true;
      client?.kill();
      server.kill();
    },
  };
}

/** Without iperf3: flowgate's own TCP sender and receiver (lib/demo/traffic.ts). */
function nodeStream(topology: DemoTopology, seconds: number): Stream {
  const sink = startTraffic(topology.ns.remote, { kind: 'tcp-receive', port: STREAM_PORT });
  let source: ReturnType<typeof startTraffic> | undefined;
  let stopped = false;
  const result = (async () => {
    await sink.ready;
    if (stopped) throw new StreamStopped();
    source = startTraffic(topology.ns.lan, { kind: 'tcp-send', host: DEMO_ADDRESSES.remoteHost, port: STREAM_PORT, seconds });
    await source.result;
    const received = await sink.result;
    return { tool: 'a Node.js TCP sender', bytes: received.bytes, seconds: received.seconds };
  })();
  return {
    result,
    stop: () => {
      stopped = true;
      source?.kill();
      sink.kill();
    },
  };
}

interface Output {
  write(text: string): void;
  isTTY: boolean;
}

/** Redraws the live table in place on a terminal; prints one line per second otherwise. */
class LiveView {
  private drawn = 0;

  constructor(private readonly out: Output) {}

  show(elapsed: number, sites: ReturnType<typeof rates>[], seconds: number): void {
    if (!this.out.isTTY) {
      this.out.write(`${line(elapsed, sites, seconds)}\n`);
      return;
    }
    const lines = table(elapsed, sites, seconds);
    // Back to the first line drawn last time, then each line cleared and rewritten.
    if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}F`);
    this.out.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
    this.drawn = lines.length;
  }
}

async function pingThrough(topology: DemoTopology, from: 'lan' | 'remote', to: string): Promise<string> {
  const out = await topology.run(from, ['ping', '-c', '3', '-i', '0.2', '-W', '5', to]);
  const summary = /(\d+) packets transmitted, (\d+) received.*\n.*= [\d.]+\/([\d.]+)\//.exec(out);
  if (summary === null) throw new Error(`ping ${to} from the ${from} host: ${out.trim()}`);
  if (summary[2] !== summary[1]) throw new Error(`ping ${to} from the ${from} host: ${summary[2]} of ${summary[1]} replies`);
  return `${summary[2]}/${summary[1]} replies, average round trip ${summary[3]} ms`;
}

async function statsOf(topology: DemoTopology): Promise<{ site: Site; stats: GatewayStats }[]> {
  return Promise.all(topology.flowgates.map(async ({ site, process: p }) => ({ site, stats: await p.stats() })));
}

export interface DemoOptions {
  seconds: number;
  farEnd: FarEnd | 'auto';
  out?: Output;
}

/** Runs the demo; resolves with the exit code. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const out: Output = options.out ?? { write: (text) => process.stdout.write(text), isTTY: process.stdout.isTTY === true };
  const say = (text: string) => out.write(`${text}\n`);
  if (process.getuid?.() !== 0) {
    process.stderr.write('flowgate demo: needs root (network namespaces, DPDK); run it with sudo\n');
    return 1;
  }
  let interrupt: (signal: NodeJS.Signals) => void = () => undefined;
  const interrupted = new Promise<never>((_, reject) => (interrupt = (signal) => reject(new Interrupted(signal))));
  interrupted.catch(() => undefined);
  const onSignal = (signal: NodeJS.Signals) => interrupt(signal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const step = <T>(promise: Promise<T>) => Promise.race([promise, interrupted]);

  let topology: DemoTopology | undefined;
  let creating: Promise<DemoTopology> | undefined;
  let stream: Stream | undefined;
  let code = 1;
  try {
    say('flowgate demo: the reference scenario in network namespaces');
    creating = DemoTopology.create({ farEnd: options.farEnd, progress: (text) => say(`  ${text}`) });
    topology = await step(creating);
    say(`  far end of the tunnel: ${topology.farEnd === 'kernel' ? "the kernel's ip6tnl" : 'a second flowgate (this kernel has no ip6tnl)'}`);
    await step(topology.start());
    for (const { site } of topology.flowgates) {
      const c = `-c ${topology.configFile(site)}`;
      say(`  inspect: flowgate stats ${c}    flowgate flows ${c}    flowgate trace ${c} --count 5`);
    }

    say('\nping through the tunnel:');
    say(`  lan ${DEMO_ADDRESSES.lanHost} -> remote ${DEMO_ADDRESSES.remoteHost}: ${await step(pingThrough(topology, 'lan', DEMO_ADDRESSES.remoteHost))}`);
    say(`  remote ${DEMO_ADDRESSES.remoteHost} -> lan ${DEMO_ADDRESSES.lanHost}: ${await step(pingThrough(topology, 'remote', DEMO_ADDRESSES.lanHost))}`);

    const start = await step(statsOf(topology));
    stream = (await step(hasIperf3())) ? iperfStream(topology, options.seconds) : nodeStream(topology, options.seconds);
    say(`\nTCP stream from the lan host to the remote host for ${options.seconds} s:`);
    const view = new LiveView(out);
    const began = performance.now();
    let previous = start;
    let previousAt = began;
    let finished = false;
    const result = stream.result.finally(() => (finished = true));
    result.catch(() => undefined);
    while (!finished) {
      await step(Promise.race([new Promise((resolve) => setTimeout(resolve, 1000)), result.catch(() => undefined)]));
      const now = performance.now();
      const current = await step(statsOf(topology));
      const interval = (now - previousAt) / 1000;
      // The stream's last fraction of a second would show as a burst of rates: the summary has it.
      if (finished && interval < 0.5) break;
      view.show(
        (now - began) / 1000,
        current.map(({ site, stats }, i) => rates(site.toUpperCase(), (previous[i] as { stats: GatewayStats }).stats, stats, interval)),
        interval,
      );
      previous = current;
      previousAt = now;
    }
    const streamed = await step(result);
    const end = await step(statsOf(topology));

    say('\nsummary:');
    say(`  TCP stream (${streamed.tool}): ${(streamed.bytes / 1e6).toFixed(1)} MB in ${streamed.seconds.toFixed(1)} s, ${((streamed.bytes * 8) / streamed.seconds / 1e9).toFixed(2)} Gbit/s`);
    const summaries = end.map(({ site, stats }, i) => summaryOf(site.toUpperCase(), (start[i] as { stats: GatewayStats }).stats, stats));
    for (const s of summaries) say(`  ${formatSummary(s)}`);
    const siteA = summaries[0];
    code = siteA !== undefined && siteA.fast > 0 && siteA.flowsLearned > 0 ? 0 : 1;
    if (code !== 0) say('  site A offloaded nothing: the fast path did not carry the stream');
  } catch (err) {
    if (err instanceof Interrupted) {
      say(`\n${err.message}: cleaning up`);
      code = err.signal === 'SIGINT' ? 130 : 143;
    } else {
      process.stderr.write(`flowgate demo: ${err instanceof Error ? err.message : String(err)}\n`);
      for (const { site, process: p } of topology?.flowgates ?? []) {
        process.stderr.write(`--- site ${site.toUpperCase()} log (last lines) ---\n${p.logTail(30).join('\n')}\n`);
      }
      code = 1;
    }
  } finally {
    stream?.stop();
    // Interrupted while the namespaces were being made: they are complete (or removed) soon.
    topology ??= await creating?.catch(() => undefined);
    if (topology !== undefined) {
      try {
        await topology.destroy();
        say('cleaned up: flowgate stopped, namespaces and temporary files removed');
      } catch (err) {
        process.stderr.write(`flowgate demo: cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
        code = code === 0 ? 1 : code;
      }
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return code;
}

const FAR_ENDS = ['auto', 'kernel', 'flowgate'] as const;

function isFarEnd(word: string): word is (typeof FAR_ENDS)[number] {
  return (FAR_ENDS as readonly string[]).includes(word);
}

export const OPTIONS = {
  seconds: { type: 'string' },
  'far-end': { type: 'string', complete: FAR_ENDS },
  help: HELP_OPTION,
} as const satisfies CliOptions;

export async function run(argv: string[]): Promise<number> {
  let values: { seconds?: string | undefined; 'far-end'?: string | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`flowgate demo: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const seconds = values.seconds === undefined ? DEFAULT_SECONDS : Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 3600) {
    process.stderr.write(`flowgate demo: --seconds: expected an integer 1..3600, found '${values.seconds}'\n`);
    return 2;
  }
  const farEnd = values['far-end'] ?? 'auto';
  if (!isFarEnd(farEnd)) {
    process.stderr.write(`flowgate demo: --far-end: expected ${FAR_ENDS.join(', ')}, found '${farEnd}'\n`);
    return 2;
  }
  return runDemo({ seconds, farEnd });
}
