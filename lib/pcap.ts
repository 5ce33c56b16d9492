/**
 * Classic libpcap files (the format net_pcap reads and writes): a 24-byte global header,
 * then a 16-byte record header before each packet. Microsecond timestamps, either byte order.
 */
import * as fs from 'node:fs';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101; // raw IPv4/IPv6, as a TUN device carries them

const MAGIC_MICROS = 0xa1b2c3d4;
const MAGIC_NANOS = 0xa1b23c4d;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

export interface PcapPacket {
  data: Buffer;
  /** Seconds since the epoch (fractional). */
  time: number;
  /** Length on the wire; larger than data.length when the capture was truncated. */
  originalLength: number;
}

export interface PcapFile {
  linkType: number;
  packets: PcapPacket[];
}

/** Encode packets as a pcap file, timestamps 1 µs apart from `startTime`. */
export function encodePcap(packets: readonly Buffer[], linkType = LINKTYPE_ETHERNET, startTime = 0): Buffer {
  const size = GLOBAL_HEADER + packets.reduce((n, p) => n + RECORD_HEADER + p.length, 0);
  const out = Buffer.alloc(size);
  out.writeUInt32LE(MAGIC_MICROS, 0);
  out.writeUInt16LE(2, 4);
  out.writeUInt16LE(4, 6);
  out.writeInt32LE(0, 8); // thiszone
  out.writeUInt32LE(0, 12); // sigfigs
  out.writeUInt32LE(262144, 16); // snaplen
  out.writeUInt32LE(linkType, 20);
  let off = GLOBAL_HEADER;
  packets.forEach((p, i) => {
    const micros = Math.round(startTime * 1e6) + i;
    out.writeUInt32LE(Math.floor(micros / 1e6), off);
    out.writeUInt32LE(micros % 1e6, off + 4);
    out.writeUInt32LE(p.length, off + 8);
    out.writeUInt32LE(p.length, off + 12);
    p.copy(out, off + RECORD_HEADER);
    off += RECORD_HEADER + p.length;
  });
  return out;
}

export function writePcap(file: string, packets: readonly Buffer[], linkType = LINKTYPE_ETHERNET): void {
  fs.writeFileSync(file, encodePcap(packets, linkType));
}

export function decodePcap(buf: Buffer): PcapFile {
  if (buf.length < GLOBAL_HEADER) throw new Error(`not a pcap file: ${buf.length} bytes, shorter than its header`);
  let le = true;
  let magic = buf.readUInt32LE(0);
  if (magic !== MAGIC_MICROS && magic !== MAGIC_NANOS) {
    le = false;
    magic = buf.readUInt32BE(0);
    if (magic !== MAGIC_MICROS && magic !== MAGIC_NANOS) throw new Error(`not a pcap file: magic 0x${buf.readUInt32LE(0).toString(16)}`);
  }
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const fraction = magic === MAGIC_NANOS ? 1e9 : 1e6;
  const file: PcapFile = { linkType: u32(20), packets: [] };
  let off = GLOBAL_HEADER;
  while (off + RECORD_HEADER <= buf.length) {
    const caplen = u32(off + 8);
    if (off + RECORD_HEADER + caplen > buf.length) break; // a record cut short by a writer still running
    file.packets.push({
      time: u32(off) + u32(off + 4) / fraction,
      originalLength: u32(off + 12),
      data: Buffer.from(buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + caplen)),
    });
    off += RECORD_HEADER + caplen;
  }
  return file;
}

export function readPcap(file: string): PcapFile {
  return decodePcap(fs.readFileSync(file));
}
