// Raw frames on the host side, built and decoded by scapy (Debian's python3-scapy) so that
// tests check the project's packets with a decoder that is not the project's own.

import { sh } from './netns';

/** Debian's interpreter, which has python3-scapy; a python3 earlier on PATH may not. */
export const PYTHON = '/usr/bin/python3';

/** A frame to send: a scapy expression such as `Ether(dst=...)/IPv6(...)/...`, or raw bytes. */
export type FrameSpec = string | Buffer;

export interface ScapyLayer {
  /** scapy's class name: Ether, IPv6, IPv6ExtHdrDestOpt, IP, ICMP, Raw, ... */
  name: string;
  /** Every field of the layer as scapy decoded it (bytes as hex strings, flags as numbers). */
  fields: Record<string, unknown>;
}

export interface ScapyFrame {
  bytes: Buffer;
  layers: ScapyLayer[];
  /** scapy's one-line summary, for assertion messages. */
  summary: string;
}

export interface SendRecvOptions {
  /** Network namespace holding `iface`. */
  netns?: string;
  /** Interface to send on and capture from (AF_PACKET). */
  iface: string;
  /** Frames sent in order once the capture is running. */
  send: readonly FrameSpec[];
  /** BPF capture filter (tcpdump syntax); it should exclude the frames sent. */
  filter: string;
  /** Stop as soon as this many frames are captured; default: capture for the whole window. */
  count?: number;
  /** Capture window after the last frame was sent. */
  timeoutMs: number;
  /** Pause between two frames sent; default 0. */
  intervalMs?: number;
}

// One JSON job on stdin, one JSON answer on stdout. Expressions run with scapy.all imported.
const SCAPY_SCRIPT = String.raw`
import json, sys, threading, time
from scapy.all import *
from scapy.packet import NoPayload

conf.verb = 0
job = json.load(sys.stdin)
scope = {name: value for name, value in globals().items()}

def frame(spec):
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    return bytes(eval(spec["expr"], scope))

def plain(value):
    if isinstance(value, Packet):
        return {"name": type(value).__name__, "fields": fields(value)}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)

def fields(layer):
    return {f.name: plain(layer.getfieldval(f.name)) for f in layer.fields_desc}

def dissect(data):
    packet = Ether(data)
    layers = []
    layer = packet
    while not isinstance(layer, NoPayload):
        layers.append({"name": type(layer).__name__, "fields": fields(layer)})
        layer = layer.payload
    return {"hex": data.hex(), "layers": layers, "summary": packet.summary()}

def send_recv(job):
    frames = [frame(spec) for spec in job["send"]]
    started = threading.Event()
    sniffer = AsyncSniffer(iface=job["iface"], filter=job["filter"], count=job.get("count") or 0,
                           store=True, started_callback=started.set)
    sniffer.start()
    if not started.wait(10):
        raise RuntimeError("the capture on %s did not start within 10 s" % job["iface"])
    sock = conf.L2socket(iface=job["iface"])
    try:
        for i, data in enumerate(frames):
            if i and job.get("intervalMs"):
                time.sleep(job["intervalMs"] / 1000)
            sock.send(data)
    finally:
        sock.close()
    sniffer.join(job["timeoutMs"] / 1000)
    if sniffer.running:
        sniffer.stop()
    return [dissect(bytes(p)) for p in sniffer.results]

def checksums(data):
    # Every IPv4, TCP and UDP checksum of the frame (inner headers too) as found, and as
    # scapy computes it for the same bytes with the checksum fields cleared.
    found = Ether(data)
    cleared = Ether(data)
    layer = cleared
    while not isinstance(layer, NoPayload):
        if isinstance(layer, (IP, TCP, UDP)):
            del layer.chksum
        layer = layer.payload
    computed = Ether(bytes(cleared))
    out = []
    a, b = found, computed
    while not isinstance(a, NoPayload):
        if isinstance(a, (IP, TCP, UDP)):
            out.append({"layer": type(a).__name__, "found": a.chksum, "computed": b.chksum})
        a, b = a.payload, b.payload
    return out

if job["op"] == "checksums":
    answer = [checksums(bytes.fromhex(h)) for h in job["frames"]]
elif job["op"] == "sendrecv":
    answer = send_recv(job)
elif job["op"] == "dissect":
    answer = [dissect(bytes.fromhex(h)) for h in job["frames"]]
elif job["op"] == "build":
    answer = [frame(spec).hex() for spec in job["send"]]
else:
    raise ValueError("unknown op %r" % job["op"])
json.dump(answer, sys.stdout)
`;

interface RawFrame {
  hex: string;
  layers: ScapyLayer[];
  summary: string;
}

function specs(frames: readonly FrameSpec[]): Array<{ expr: string } | { hex: string }> {
  return frames.map((f) => (typeof f === 'string' ? { expr: f } : { hex: f.toString('hex') }));
}

function toFrame(raw: RawFrame): ScapyFrame {
  return { bytes: Buffer.from(raw.hex, 'hex'), layers: raw.layers, summary: raw.summary };
}

async function runScapy(job: object, netns?: string, timeoutMs = 60_000): Promise<unknown> {
  const out = await sh([PYTHON, '-c', SCAPY_SCRIPT], { netns, input: JSON.stringify(job), timeoutMs });
  return JSON.parse(out) as unknown;
}

/**
 * Starts a capture on `iface`, sends the frames, and resolves with the frames captured
 * (decoded) until `count` arrived or `timeoutMs` passed after the last send.
 */
export async function scapySendRecv(options: SendRecvOptions): Promise<ScapyFrame[]> {
  const job = {
    op: 'sendrecv',
    iface: options.iface,
    send: specs(options.send),
    filter: options.filter,
    count: options.count ?? 0,
    timeoutMs: options.timeoutMs,
    intervalMs: options.intervalMs ?? 0,
  };
  // Interpreter start and the scapy import take a few seconds on a loaded machine.
  const raw = (await runScapy(job, options.netns, options.timeoutMs + 60_000)) as RawFrame[];
  return raw.map(toFrame);
}

/** Decodes Ethernet frames with scapy. */
export async function scapyDissect(frames: readonly Buffer[]): Promise<ScapyFrame[]> {
  const raw = (await runScapy({ op: 'dissect', frames: frames.map((f) => f.toString('hex')) })) as RawFrame[];
  return raw.map(toFrame);
}

export interface ScapyChecksum {
  /** IP, TCP or UDP (inner headers of tunnelled packets have their own entries). */
  layer: string;
  /** The checksum field as the frame has it. */
  found: number;
  /** What scapy computes for the same bytes (a UDP checksum that computes to 0 as 0xffff). */
  computed: number;
}

/** Every IPv4, TCP and UDP checksum of each frame, as found and as scapy computes it. */
export async function scapyChecksums(frames: readonly Buffer[]): Promise<ScapyChecksum[][]> {
  return (await runScapy({ op: 'checksums', frames: frames.map((f) => f.toString('hex')) })) as ScapyChecksum[][];
}

/** Builds frames from scapy expressions (checksums and lengths filled in by scapy). */
export async function scapyBuild(frames: readonly string[]): Promise<Buffer[]> {
  const hex = (await runScapy({ op: 'build', send: specs(frames) })) as string[];
  return hex.map((h) => Buffer.from(h, 'hex'));
}

/** The first layer named `name`, or an error naming the layers that the frame does have. */
export function layer(frame: ScapyFrame, name: string, nth = 0): ScapyLayer {
  const found = frame.layers.filter((l) => l.name === name)[nth];
  if (!found) {
    throw new Error(`frame has no ${name} layer #${nth}: ${frame.layers.map((l) => l.name).join('/')} (${frame.summary})`);
  }
  return found;
}
