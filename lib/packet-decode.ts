/**
 * Decoding the first bytes of a packet into one line per header, tcpdump-like, for
 * `flowgate trace`: Ethernet and its VLAN tags, IPv4 and IPv6 (with the extension headers a
 * tunnel uses, and the RFC 2473 tunnel encapsulation limit option), the inner packet of a
 * tunnel, TCP, UDP, ICMP and ICMPv6. A packet shorter than its headers say (a trace keeps
 * 128 bytes) ends with a line saying so; anything unknown is named, never guessed.
 */
import { formatIPv4, formatIPv6 } from './net/addr';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_DSTOPTS, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP } from './packets';

const ETHERTYPE_ARP = 0x0806;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;
const IPPROTO_HOPOPTS = 0;
const IPPROTO_ICMP = 1;
const IPPROTO_ROUTING = 43;
const IPPROTO_FRAGMENT = 44;
const IPPROTO_ICMPV6 = 58;
const IPPROTO_NONE = 59;
/** The tunnel encapsulation limit option of a destination options header (RFC 2473 section 4.1.1). */
const IP6OPT_TUNNEL_LIMIT = 4;

const PROTO_NAMES: Record<number, string> = {
  [IPPROTO_HOPOPTS]: 'hop-by-hop',
  [IPPROTO_ICMP]: 'icmp',
  [IPPROTO_IPIP]: 'ipip',
  [IPPROTO_TCP]: 'tcp',
  [IPPROTO_UDP]: 'udp',
  [IPPROTO_IPV6]: 'ipv6',
  [IPPROTO_ROUTING]: 'routing',
  [IPPROTO_FRAGMENT]: 'fragment',
  [IPPROTO_ICMPV6]: 'icmp6',
  [IPPROTO_NONE]: 'no-next-header',
  [IPPROTO_DSTOPTS]: 'dest-opts',
};

const protoName = (p: number): string => PROTO_NAMES[p] ?? `proto ${p}`;

function mac(b: Buffer, off: number): string {
  return [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function ethertypeName(t: number): string {
  switch (t) {
    case ETHERTYPE_IPV4: return 'IPv4';
    case ETHERTYPE_IPV6: return 'IPv6';
    case ETHERTYPE_ARP: return 'ARP';
    case ETHERTYPE_VLAN: return '802.1Q';
    case ETHERTYPE_QINQ: return '802.1ad';
    default: return `0x${t.toString(16).padStart(4, '0')}`;
  }
}

function tcpFlags(f: number): string {
  // tcpdump's letters; '.' is ACK.
  const letters: [number, string][] = [[0x02, 'S'], [0x01, 'F'], [0x04, 'R'], [0x08, 'P'], [0x20, 'U'], [0x40, 'E'], [0x80, 'W'], [0x10, '.']];
  const s = letters.filter(([bit]) => f & bit).map(([, l]) => l).join('');
  return s === '' ? 'none' : s;
}

/** Lines for one packet's headers, depth by depth. */
class Decoder {
  readonly lines: string[] = [];
  constructor(private readonly b: Buffer, private readonly wireLength: number) {}

  private truncated(what: string): void {
    this.lines.push(`(${what}: truncated, ${this.b.length} of ${this.wireLength} bytes kept)`);
  }

  ethernet(off: number): void {
    const b = this.b;
    if (b.length < off + 14) return this.truncated('ethernet');
    let type = b.readUInt16BE(off + 12);
    this.lines.push(`ethernet ${mac(b, off + 6)} > ${mac(b, off)}, ${ethertypeName(type)}`);
    let at = off + 14;
    while (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) {
      if (b.length < at + 4) return this.truncated('vlan');
      const tci = b.readUInt16BE(at);
      const inner = b.readUInt16BE(at + 2);
      this.lines.push(`vlan ${type === ETHERTYPE_QINQ ? '802.1ad' : '802.1Q'} id ${tci & 0xfff}, pcp ${tci >> 13}${tci & 0x1000 ? ', dei' : ''}, ${ethertypeName(inner)}`);
      type = inner;
      at += 4;
    }
    if (type === ETHERTYPE_IPV4) this.ipv4(at);
    else if (type === ETHERTYPE_IPV6) this.ipv6(at);
  }

  /** An IP packet of either version, by its first nibble (a TUN's packets). */
  ip(off: number): void {
    if (this.b.length < off + 1) return this.truncated('ip');
    const version = this.b[off]! >> 4;
    if (version === 4) this.ipv4(off);
    else if (version === 6) this.ipv6(off);
    else this.lines.push(`ip version ${version}: not IPv4 or IPv6`);
  }

  ipv4(off: number): void {
    const b = this.b;
    if (b.length < off + 20) return this.truncated('ipv4');
    const ihl = (b[off]! & 0xf) * 4;
    const version = b[off]! >> 4;
    const tos = b[off + 1]!;
    const len = b.readUInt16BE(off + 2);
    const id = b.readUInt16BE(off + 4);
    const frag = b.readUInt16BE(off + 6);
    const ttl = b[off + 8]!;
    const proto = b[off + 9]!;
    const src = formatIPv4(b.subarray(off + 12, off + 16));
    const dst = formatIPv4(b.subarray(off + 16, off + 20));
    const flags = [frag & 0x4000 ? 'DF' : '', frag & 0x2000 ? 'MF' : ''].filter((f) => f !== '').join('+');
    const parts = [`ipv4 ${src} > ${dst}`, `ttl ${ttl}`, protoName(proto), `len ${len}`, `id ${id}`];
    if (tos !== 0) parts.push(`tos 0x${tos.toString(16)}`);
    if (flags !== '') parts.push(`flags ${flags}`);
    if ((frag & 0x1fff) !== 0) parts.push(`frag offset ${(frag & 0x1fff) * 8}`);
    if (version !== 4 || ihl < 20) {
      this.lines.push(`${parts.join(', ')} (bad header: version ${version}, header length ${ihl})`);
      return;
    }
    if (ihl > 20) parts.push(`options ${ihl - 20} bytes`);
    this.lines.push(parts.join(', '));
    // Only a first fragment has the next header.
    if ((frag & 0x1fff) === 0) this.next(proto, off + ihl, 4);
  }

  ipv6(off: number): void {
    const b = this.b;
    if (b.length < off + 40) return this.truncated('ipv6');
    const vtf = b.readUInt32BE(off);
    const plen = b.readUInt16BE(off + 4);
    let nh = b[off + 6]!;
    const hlim = b[off + 7]!;
    const src = formatIPv6(b.subarray(off + 8, off + 24));
    const dst = formatIPv6(b.subarray(off + 24, off + 40));
    const parts = [`ipv6 ${src} > ${dst}`, `hlim ${hlim}`, protoName(nh), `plen ${plen}`];
    const tclass = (vtf >>> 20) & 0xff;
    const label = vtf & 0xfffff;
    if (tclass !== 0) parts.push(`tclass 0x${tclass.toString(16)}`);
    if (label !== 0) parts.push(`flowlabel 0x${label.toString(16)}`);
    this.lines.push(parts.join(', '));
    let at = off + 40;
    // The extension headers a tunnel packet may carry, each on its own line.
    for (;;) {
      if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_DSTOPTS || nh === IPPROTO_ROUTING) {
        if (b.length < at + 8) return this.truncated(protoName(nh));
        const next = b[at]!;
        const len = (b[at + 1]! + 1) * 8;
        const line = [`${protoName(nh)}, ${protoName(next)}, len ${len}`];
        if (nh === IPPROTO_DSTOPTS) line.push(...this.ip6Options(at + 2, Math.min(at + len, b.length)));
        this.lines.push(line.join(', '));
        nh = next;
        at += len;
      } else if (nh === IPPROTO_FRAGMENT) {
        if (b.length < at + 8) return this.truncated('fragment');
        const fo = b.readUInt16BE(at + 2);
        this.lines.push(`fragment, ${protoName(b[at]!)}, offset ${fo & 0xfff8}${fo & 1 ? ', more fragments' : ''}, id 0x${b.readUInt32BE(at + 4).toString(16)}`);
        if ((fo & 0xfff8) !== 0) return;
        nh = b[at]!;
        at += 8;
      } else {
        return this.next(nh, at, 6);
      }
    }
  }

  /** The options of a destination options header, as far as they are kept. */
  private ip6Options(from: number, to: number): string[] {
    const b = this.b;
    const out: string[] = [];
    for (let at = from; at < to; ) {
      const type = b[at]!;
      if (type === 0) {
        at++; // Pad1
        continue;
      }
      if (at + 2 > to) break;
      const len = b[at + 1]!;
      if (type === IP6OPT_TUNNEL_LIMIT && len === 1 && at + 3 <= to) out.push(`encapsulation limit ${b[at + 2]!}`);
      else if (type !== 1) out.push(`option ${type} (${len} bytes)`); // 1: PadN
      at += 2 + len;
    }
    return out;
  }

  private next(proto: number, off: number, family: 4 | 6): void {
    const b = this.b;
    switch (proto) {
      case IPPROTO_IPIP:
        this.lines.push('-- inner packet --');
        return this.ipv4(off);
      case IPPROTO_IPV6:
        this.lines.push('-- inner packet --');
        return this.ipv6(off);
      case IPPROTO_TCP: {
        if (b.length < off + 14) return this.truncated('tcp');
        this.lines.push(
          `tcp ${b.readUInt16BE(off)} > ${b.readUInt16BE(off + 2)}, flags [${tcpFlags(b[off + 13]!)}], seq ${b.readUInt32BE(off + 4)}, ack ${b.readUInt32BE(off + 8)}` +
            (b.length >= off + 16 ? `, win ${b.readUInt16BE(off + 14)}` : ''),
        );
        return;
      }
      case IPPROTO_UDP:
        if (b.length < off + 8) return this.truncated('udp');
        this.lines.push(`udp ${b.readUInt16BE(off)} > ${b.readUInt16BE(off + 2)}, len ${b.readUInt16BE(off + 4)}`);
        return;
      case IPPROTO_ICMP:
      case IPPROTO_ICMPV6:
        if (b.length < off + 2) return this.truncated(protoName(proto));
        this.lines.push(`${family === 4 ? 'icmp' : 'icmp6'} type ${b[off]!}, code ${b[off + 1]!}`);
        return;
      default:
        return;
    }
  }
}

/**
 * One line per header of a packet's first bytes: an Ethernet frame, or an IP packet (a
 * TUN's). wireLength: the packet's whole length, to tell a truncated capture from a
 * truncated packet.
 */
export function decodeHeaders(bytes: Buffer, link: 'ethernet' | 'ip', wireLength = bytes.length): string[] {
  const d = new Decoder(bytes, wireLength);
  if (link === 'ethernet') d.ethernet(0);
  else d.ip(0);
  return d.lines;
}
