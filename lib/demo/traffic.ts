/**
 * Traffic for the demo, the netns tests and the learning benchmark: small TCP and UDP
 * senders and receivers that run as child processes inside the hosts' namespaces and report
 * what they sent and received (bytes, SHA-256, datagram counts) as JSON.
 *
 *   const sink = startTraffic(ns.remote, { kind: 'tcp-receive', port: 5001 });
 *   await sink.ready;
 *   const sent = await startTraffic(ns.lan, { kind: 'tcp-send', host: '10.0.0.10', port: 5001, bytes: 2 << 20 }).result;
 *   assert.equal((await sink.result).sha256, sent.sha256);
 *
 * Protocol: the child prints one JSON line when it is ready (listening, bound), then one
 * with its result, and exits. Closing its stdin asks a job that waits (a receiver without
 * a deadline, a sender holding its connection open) to finish.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as net from 'node:net';

import { FlowgateError } from '../errors';
import { onExit } from './shell';

export interface TcpReceiveJob {
  kind: 'tcp-receive';
  port: number;
  /** Report `reached` once this many bytes are in (before the sender closes). */
  expectBytes?: number;
}
export interface TcpSendJob {
  kind: 'tcp-send';
  host: string;
  port: number;
  /** Send this many random bytes... */
  bytes?: number;
  /** ...or stream for this long. */
  seconds?: number;
  /** Connect, report ready, and send only on next(): the handshake apart from the data. */
  gate?: boolean;
  /** Keep the connection open after sending until finish() (then FIN)... */
  holdOpen?: boolean;
  /** ...or until the peer sent back this many bytes (an echo). */
  expectBytes?: number;
  /** Local port; default ephemeral. */
  sport?: number;
  /** Half-close (FIN) as soon as everything is sent, then read what the peer sends until it closes. */
  halfClose?: boolean;
}
/** Echoes everything of one connection back, and closes once the peer has closed its side. */
export interface TcpEchoJob {
  kind: 'tcp-echo';
  port: number;
}
export interface UdpPeerJob {
  kind: 'udp-peer';
  /** Local port to bind (receive on, send from). */
  bind: number;
  /** Where to send; nothing is sent without it. */
  peer?: { host: string; port: number };
  /** Datagrams per second to the peer. */
  pps?: number;
  /** Send for this long... */
  seconds?: number;
  /** ...or this many datagrams... */
  count?: number;
  /** ...or until next() (and at most `seconds`). */
  sendUntilNext?: boolean;
  /** Payload bytes; default 64. */
  size?: number;
  /** Keep receiving until stdin closes, after sending ended (then until the datagrams stop coming). */
  listen?: boolean;
  /** Report `reached` once this many datagrams came from anywhere. */
  expectCount?: number;
  /** IP TTL (IPv6: hop limit) of what is sent; default the system's. */
  ttl?: number;
  /** The socket's family; default that of `peer.host`, IPv4 without a peer. */
  family?: 4 | 6;
}
export interface UdpFlowsJob {
  kind: 'udp-flows';
  host: string;
  /** Destination ports from here up... */
  basePort: number;
  /** ...one new flow (one datagram) each, as fast as the socket takes them. */
  flows: number;
  /** Source ports: flows are spread over this many sockets (a flow is its port pair). Default 1, more past 60000 flows. */
  sockets?: number;
  size?: number;
  /** Datagrams per second at most; default unlimited. */
  pps?: number;
}
export type TrafficJob = TcpReceiveJob | TcpSendJob | TcpEchoJob | UdpPeerJob | UdpFlowsJob;

export interface TcpResult {
  /** Sent (tcp-send) or received (tcp-receive). */
  bytes: number;
  sha256: string;
  /** tcp-send: what the peer sent back, until it closed. */
  receivedBytes?: number;
  receivedSha256?: string;
  /** Local and remote port of the connection. */
  sport: number;
  dport: number;
  seconds: number;
}
export interface UdpPeerResult {
  sent: number;
  received: number;
  /** Received from the peer only (others are counted in received too). */
  receivedFromPeer: number;
}
export interface UdpFlowsResult {
  sent: number;
  seconds: number;
}
export type TrafficResult<J extends TrafficJob> = J extends TcpReceiveJob | TcpSendJob | TcpEchoJob ? TcpResult : J extends UdpPeerJob ? UdpPeerResult : UdpFlowsResult;

/** TCP receivers listen on both families: '::' takes IPv4 connections too (not IPV6_V6ONLY). */
const LISTEN_ANY = '::';

export class TrafficError extends FlowgateError {
  constructor(message: string) {
    super('ERR_FLOWGATE_DEMO_TRAFFIC', message);
  }
}

export interface TrafficHandle<R> {
  /** Resolves when the job listens or is bound (at once for senders that connect). */
  ready: Promise<void>;
  /** A receiver with expectBytes or expectCount: resolves once that much is in. */
  reached: Promise<void>;
  result: Promise<R>;
  /** Signal the job's next step (a line on its stdin): a gated sender starts, a sendUntilNext peer stops sending. */
  next(): void;
  /** Close the job's stdin: a waiting job finishes and reports. */
  finish(): void;
  /** Kill it (its result then rejects). */
  kill(): void;
}

/** Starts `job` in network namespace `netns` (or here, when undefined). */
export function startTraffic<J extends TrafficJob>(netns: string | undefined, job: J, options: { timeoutMs?: number } = {}): TrafficHandle<TrafficResult<J>> {
  const argv = [process.execPath, __filename, JSON.stringify(job)];
  const full = netns === undefined ? argv : ['ip', 'netns', 'exec', netns, ...argv];
  const child: ChildProcess = spawn(full[0] as string, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  const forget = onExit(() => child.kill('SIGKILL'));
  child.stdin?.on('error', () => undefined);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4096)));
  const lines: string[] = [];
  let partial = '';
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  let markReached: () => void = () => undefined;
  const reached = new Promise<void>((resolve) => (markReached = resolve));
  const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (line.trim() === '') continue;
      lines.push(line);
      if (lines.length === 1) markReady();
      if (line.startsWith('{"reached":')) markReached();
    }
  });
  const what = `${job.kind}${netns === undefined ? '' : ` in ${netns}`}`;
  const result = new Promise<TrafficResult<J>>((resolve, reject) => {
    child.on('error', (err) => reject(new TrafficError(`${what}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer);
      forget();
      const last = lines.at(-1);
      if (code === 0 && lines.length >= 2 && last !== undefined) resolve(JSON.parse(last) as TrafficResult<J>);
      else reject(new TrafficError(`${what} ${signal !== null ? `killed by ${signal}` : `exited with status ${code}`}${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}`));
    });
  });
  // A job that fails before it is ready must not leave `ready` pending forever.
  const readyOrFailed = Promise.race([ready, result.then(() => undefined)]);
  const reachedOrFailed = Promise.race([reached, result.then(() => Promise.reject(new TrafficError(`${what} ended before it reached ${JSON.stringify(job)}`)))]);
  result.catch(() => undefined);
  reachedOrFailed.catch(() => undefined);
  return {
    ready: readyOrFailed,
    reached: reachedOrFailed,
    result,
    next: () => child.stdin?.write('next\n'),
    finish: () => child.stdin?.end(),
    kill: () => child.kill('SIGKILL'),
  };
}

// ---- the jobs, run in the child ---------------------------------------------------------------

function report(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** The parent's signals on stdin: a line (next()), and its end (finish()). */
const control = (() => {
  let lines = 0;
  let ended = false;
  const waiters: (() => void)[] = [];
  let started = false;
  const wakeAll = () => waiters.splice(0).forEach((wake) => wake());
  const start = () => {
    if (started) return;
    started = true;
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => {
      lines += chunk.split('\n').length - 1;
      wakeAll();
    });
    const end = () => {
      ended = true;
      wakeAll();
    };
    process.stdin.on('end', end).on('close', end);
  };
  const until = async (done: () => boolean) => {
    start();
    while (!done()) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  return {
    line: () => until(() => lines > 0 || ended),
    end: () => until(() => ended),
    get ended() {
      start();
      return ended;
    },
    get signalled() {
      start();
      return lines > 0 || ended;
    },
  };
})();

const CHUNK = 64 * 1024;
/** A listening udp-peer told to finish stops once no datagram came for this long. */
const UDP_QUIET_MS = 300;

async function tcpReceive(job: TcpReceiveJob): Promise<TcpResult> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen({ port: job.port, host: LISTEN_ANY }, resolve));
  report({ ready: true });
  const socket = await new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  server.close();
  const ports = { sport: socket.localPort ?? 0, dport: socket.remotePort ?? 0 };
  const hash = createHash('sha256');
  let bytes = 0;
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    let reported = false;
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
      if (!reported && job.expectBytes !== undefined && bytes >= job.expectBytes) {
        reported = true;
        report({ reached: true });
      }
    });
    socket.on('end', () => {
      socket.end();
      resolve();
    });
    socket.on('error', reject);
  });
  return { bytes, sha256: hash.digest('hex'), ...ports, seconds: (performance.now() - started) / 1000 };
}

async function tcpEcho(job: TcpEchoJob): Promise<TcpResult> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen({ port: job.port, host: LISTEN_ANY }, resolve));
  report({ ready: true });
  const socket = await new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  server.close();
  const hash = createHash('sha256');
  let bytes = 0;
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
      if (!socket.write(chunk)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    });
    // The peer half-closed: the echo is complete once everything written has gone.
    socket.on('end', () => socket.end(resolve));
    socket.on('error', reject);
  });
  return { bytes, sha256: hash.digest('hex'), sport: socket.localPort ?? 0, dport: socket.remotePort ?? 0, seconds: (performance.now() - started) / 1000 };
}

async function tcpSend(job: TcpSendJob): Promise<TcpResult> {
  const socket = net.connect({ host: job.host, port: job.port, ...(job.sport === undefined ? {} : { localPort: job.sport }) });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const sport = socket.localPort ?? 0;
  report({ ready: true, sport });
  if (job.gate === true) await control.line();
  const hash = createHash('sha256');
  let bytes = 0;
  const started = performance.now();
  const deadline = job.seconds === undefined ? Infinity : started + job.seconds * 1000;
  const total = job.bytes ?? Infinity;
  const closed = new Promise<void>((resolve, reject) => {
    socket.on('close', () => resolve());
    socket.on('error', reject);
  });
  const received = createHash('sha256');
  let receivedBytes = 0;
  let echoed: () => void = () => undefined;
  const allEchoed = new Promise<void>((resolve) => (echoed = resolve));
  socket.on('data', (chunk: Buffer) => {
    receivedBytes += chunk.length;
    received.update(chunk);
    if (receivedBytes >= (job.expectBytes ?? Infinity)) echoed();
  });
  while (bytes < total && performance.now() < deadline) {
    const chunk = randomBytes(Math.min(CHUNK, total - bytes));
    hash.update(chunk);
    bytes += chunk.length;
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  if (job.halfClose === true) {
    socket.end();
    await closed;
  }
  if (job.holdOpen === true) await control.end();
  if (job.expectBytes !== undefined) await Promise.race([allEchoed, closed]);
  socket.end();
  await closed;
  return {
    bytes,
    sha256: hash.digest('hex'),
    receivedBytes,
    receivedSha256: received.digest('hex'),
    sport,
    dport: job.port,
    seconds: (performance.now() - started) / 1000,
  };
}

async function udpPeer(job: UdpPeerJob): Promise<UdpPeerResult> {
  const family = job.family ?? (job.peer !== undefined && net.isIPv6(job.peer.host) ? 6 : 4);
  const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', reuseAddr: true });
  let received = 0;
  let receivedFromPeer = 0;
  let lastMessageAt = performance.now();
  socket.on('message', (_msg, rinfo) => {
    received++;
    lastMessageAt = performance.now();
    if (job.peer !== undefined && rinfo.address === job.peer.host && rinfo.port === job.peer.port) receivedFromPeer++;
    if (received === job.expectCount) report({ reached: true });
  });
  await new Promise<void>((resolve, reject) => socket.once('error', reject).bind(job.bind, family === 6 ? '::' : '0.0.0.0', resolve));
  if (job.ttl !== undefined) socket.setTTL(job.ttl);
  report({ ready: true });
  let sent = 0;
  if (job.peer !== undefined && (job.pps ?? 0) > 0) {
    const peer = job.peer;
    const payload = Buffer.alloc(job.size ?? 64, 0x66);
    const interval = 1000 / (job.pps as number);
    const started = performance.now();
    const deadline = job.seconds === undefined ? Infinity : started + job.seconds * 1000;
    const count = job.count ?? Infinity;
    const stopped = () => (job.sendUntilNext === true ? control.signalled : control.ended);
    while (sent < count && performance.now() < deadline && !stopped()) {
      await new Promise<void>((resolve, reject) => socket.send(payload, peer.port, peer.host, (err) => (err ? reject(err) : resolve())));
      sent++;
      const next = started + sent * interval;
      const wait = next - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  if (job.listen === true) {
    await control.end();
    // What is on its way still counts: the datagrams already queued and those in the sites.
    while (performance.now() - lastMessageAt < UDP_QUIET_MS) await new Promise((resolve) => setTimeout(resolve, UDP_QUIET_MS / 4));
  }
  socket.close();
  return { sent, received, receivedFromPeer };
}

async function udpFlows(job: UdpFlowsJob): Promise<UdpFlowsResult> {
  const sockets: dgram.Socket[] = [];
  // A flow is its port pair: past ~60000 destination ports, another source port.
  const count = Math.max(job.sockets ?? 1, Math.ceil(job.flows / 60000));
  for (let i = 0; i < count; i++) {
    const v6 = net.isIPv6(job.host);
    const socket = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', sendBufferSize: 4 * 1024 * 1024 });
    await new Promise<void>((resolve) => socket.bind(0, v6 ? '::' : '0.0.0.0', resolve));
    sockets.push(socket);
  }
  report({ ready: true });
  const payload = Buffer.alloc(job.size ?? 18, 0x66);
  const started = performance.now();
  let sent = 0;
  let inFlight = 0;
  const maxInFlight = 256;
  let wake: (() => void) | undefined;
  const perSocket = Math.ceil(job.flows / sockets.length);
  for (let i = 0; i < job.flows; i++) {
    const socket = sockets[Math.floor(i / perSocket)] as dgram.Socket;
    const port = job.basePort + (i % perSocket);
    while (inFlight >= maxInFlight) await new Promise<void>((resolve) => (wake = resolve));
    inFlight++;
    socket.send(payload, port, job.host, () => {
      inFlight--;
      sent++;
      wake?.();
      wake = undefined;
    });
    if (job.pps !== undefined) {
      const wait = started + ((i + 1) * 1000) / job.pps - performance.now();
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  while (inFlight > 0) await new Promise<void>((resolve) => (wake = resolve));
  const seconds = (performance.now() - started) / 1000;
  for (const socket of sockets) socket.close();
  return { sent, seconds };
}

async function runJob(job: TrafficJob): Promise<unknown> {
  switch (job.kind) {
    case 'tcp-receive':
      return tcpReceive(job);
    case 'tcp-send':
      return tcpSend(job);
    case 'tcp-echo':
      return tcpEcho(job);
    case 'udp-peer':
      return udpPeer(job);
    case 'udp-flows':
      return udpFlows(job);
    default:
      throw new TrafficError(`unknown traffic job ${JSON.stringify(job)}`);
  }
}

if (require.main === module) {
  runJob(JSON.parse(process.argv[2] ?? '{}') as TrafficJob).then(
    (result) => {
      report(result);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
