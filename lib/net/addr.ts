/**
 * Address utilities shared by the config, the slow-path mirror and the tests.
 *
 * Parsers are strict on purpose: a config value that `ip` or `inet_pton` would read in some
 * surprising way (leading zeros as octal, a zone index, a prefix without a length) is
 * rejected with a message that names what was expected, what was found and why.
 */
import { InvalidArgumentError } from '../errors';

export type IpFamily = 4 | 6;

/** An IP address in network byte order: 4 bytes for IPv4, 16 for IPv6. */
export interface IpAddress {
  family: IpFamily;
  bytes: Buffer;
}

/** An address with a prefix length. Host bits are kept: "192.168.0.2/24" is an interface address. */
export interface IpPrefix extends IpAddress {
  length: number;
}

function quote(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${String(value)}`;
}

function invalid(expected: string, found: unknown, reason?: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `expected ${expected}, found ${quote(found)}${reason === undefined ? '' : ` (${reason})`}`,
  );
}

const IPV4_EXPECTED = 'an IPv4 address such as 192.0.2.1';
const IPV6_EXPECTED = 'an IPv6 address such as 2001:db8::1';

/** Parses dotted-quad text into its byte form, or returns the reason it is not one. */
function parseIPv4Octets(text: string): Buffer | string {
  const parts = text.split('.');
  if (parts.length !== 4) return `${parts.length} dot-separated parts instead of 4`;
  const bytes = Buffer.alloc(4);
  for (const [index, part] of parts.entries()) {
    if (!/^[0-9]{1,3}$/.test(part)) return `octet '${part}' is not a decimal number 0-255`;
    // inet_aton reads a leading zero as octal, so "010" would silently mean 8.
    if (part.length > 1 && part.startsWith('0')) return `octet '${part}' has a leading zero`;
    const value = Number(part);
    if (value > 255) return `octet '${part}' is above 255`;
    bytes[index] = value;
  }
  return bytes;
}

export function parseIPv4(s: string): Buffer {
  if (typeof s !== 'string') throw invalid(IPV4_EXPECTED, s);
  const parsed = parseIPv4Octets(s);
  if (typeof parsed === 'string') throw invalid(IPV4_EXPECTED, s, parsed);
  return parsed;
}

function parseIPv6Groups(text: string): Buffer | string {
  if (!text.includes(':')) return "no ':' in it";
  if (text.includes('%')) return 'zone indexes are not accepted';
  const halves = text.split('::');
  if (halves.length > 2) return "'::' appears more than once";

  const splitGroups = (half: string): string[] => (half === '' ? [] : half.split(':'));
  const head = splitGroups(halves[0] ?? '');
  const tail = halves.length === 2 ? splitGroups(halves[1] ?? '') : [];
  const groups = [...head, ...tail];

  // An embedded IPv4 address stands for the last two groups (RFC 4291 section 2.2, form 3).
  let embedded: Buffer | undefined;
  const last = groups.at(-1);
  if (last !== undefined && last.includes('.')) {
    if (halves.length === 2 && tail.length === 0) return `embedded IPv4 address '${last}' is not at the end`;
    const v4 = parseIPv4Octets(last);
    if (typeof v4 === 'string') return `embedded IPv4 address '${last}': ${v4}`;
    embedded = v4;
    (tail.length > 0 ? tail : head).pop();
    groups.pop();
  }

  for (const group of groups) {
    if (group === '') return "empty group (a single ':' at the start or end, or ':::')";
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return `group '${group}' is not 1-4 hex digits`;
  }

  const explicitGroups = groups.length + (embedded === undefined ? 0 : 2);
  if (halves.length === 1 && explicitGroups !== 8) return `${explicitGroups} groups instead of 8`;
  // '::' stands for one or more zero groups, so at most 7 groups may be written around it.
  if (halves.length === 2 && explicitGroups > 7) {
    return `'::' with ${explicitGroups} other groups leaves no group for it to stand for`;
  }

  const bytes = Buffer.alloc(16);
  head.forEach((group, index) => bytes.writeUInt16BE(parseInt(group, 16), index * 2));
  const tailStart = 16 - (embedded === undefined ? 0 : 4) - tail.length * 2;
  tail.forEach((group, index) => bytes.writeUInt16BE(parseInt(group, 16), tailStart + index * 2));
  if (embedded !== undefined) embedded.copy(bytes, 12);
  return bytes;
}

export function parseIPv6(s: string): Buffer {
  if (typeof s !== 'string') throw invalid(IPV6_EXPECTED, s);
  const parsed = parseIPv6Groups(s);
  if (typeof parsed === 'string') throw invalid(IPV6_EXPECTED, s, parsed);
  return parsed;
}

export function formatIPv4(bytes: Uint8Array): string {
  if (bytes.length !== 4) throw new InvalidArgumentError(`expected 4 bytes of IPv4 address, found ${bytes.length} bytes`);
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

function isIPv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/** RFC 5952 canonical text: lowercase, no leading zeros, the longest zero run (>= 2 groups) as '::'. */
export function formatIPv6(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new InvalidArgumentError(`expected 16 bytes of IPv6 address, found ${bytes.length} bytes`);
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // RFC 5952 section 5: IPv4-mapped addresses are written with their IPv4 part in dotted form.
  if (isIPv4Mapped(view)) return `::ffff:${formatIPv4(view.subarray(12))}`;

  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(view.readUInt16BE(i * 2));

  let bestStart = -1;
  let bestLength = 0;
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start++;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end++;
    // Strictly longer: on a tie the first run is compressed (RFC 5952 section 4.2.3).
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }

  const hex = (list: number[]): string => list.map((group) => group.toString(16)).join(':');
  // A single zero group is never shortened to '::' (RFC 5952 section 4.2.2).
  if (bestLength < 2) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

export function formatIp(address: IpAddress): string {
  return address.family === 4 ? formatIPv4(address.bytes) : formatIPv6(address.bytes);
}

export function parseIp(s: string): IpAddress {
  if (typeof s !== 'string') throw invalid('an IPv4 or IPv6 address', s);
  // A colon can only appear in IPv6 text, so it decides the family and the error to give.
  if (s.includes(':')) return { family: 6, bytes: parseIPv6(s) };
  return { family: 4, bytes: parseIPv4(s) };
}

export function parsePrefix(s: string): IpPrefix {
  const expected = 'an address with a prefix length such as 192.0.2.1/24 or 2001:db8::1/64';
  if (typeof s !== 'string') throw invalid(expected, s);
  const slash = s.indexOf('/');
  if (slash < 0) throw invalid(expected, s, "no '/length'");
  const addressText = s.slice(0, slash);
  const lengthText = s.slice(slash + 1);
  const isV6 = addressText.includes(':');
  const parsed = isV6 ? parseIPv6Groups(addressText) : parseIPv4Octets(addressText);
  if (typeof parsed === 'string') throw invalid(expected, s, parsed);
  const maxLength = isV6 ? 128 : 32;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lengthText) || Number(lengthText) > maxLength) {
    throw invalid(expected, s, `prefix length '${lengthText}' is not a decimal number 0-${maxLength}`);
  }
  return { family: isV6 ? 6 : 4, bytes: parsed, length: Number(lengthText) };
}

/** The prefix with its host bits cleared: the destination of the connected route of an address. */
export function prefixNetwork(prefix: IpPrefix): IpPrefix {
  const bytes = Buffer.from(prefix.bytes);
  for (let bit = prefix.length; bit < bytes.length * 8; bit++) {
    bytes[bit >> 3] = (bytes[bit >> 3] ?? 0) & ~(0x80 >> (bit & 7));
  }
  return { family: prefix.family, bytes, length: prefix.length };
}

export function hasHostBits(prefix: IpPrefix): boolean {
  return !prefixNetwork(prefix).bytes.equals(prefix.bytes);
}

export function formatPrefix(prefix: IpPrefix): string {
  return `${formatIp(prefix)}/${prefix.length}`;
}

export function prefixContains(prefix: IpPrefix, address: IpAddress): boolean {
  if (prefix.family !== address.family) return false;
  const fullBytes = prefix.length >> 3;
  if (!prefix.bytes.subarray(0, fullBytes).equals(address.bytes.subarray(0, fullBytes))) return false;
  const remainingBits = prefix.length & 7;
  if (remainingBits === 0) return true;
  const mask = (0xff << (8 - remainingBits)) & 0xff;
  return (((prefix.bytes[fullBytes] ?? 0) ^ (address.bytes[fullBytes] ?? 0)) & mask) === 0;
}

export function ipEquals(a: IpAddress, b: IpAddress): boolean {
  return a.family === b.family && a.bytes.equals(b.bytes);
}

const MAC_EXPECTED = 'a MAC address such as 02:00:00:00:00:01';

/** Accepts six two-digit hex octets separated consistently by ':' or '-'. */
export function parseMac(s: string): Buffer {
  if (typeof s !== 'string') throw invalid(MAC_EXPECTED, s);
  const separator = s.includes('-') ? '-' : ':';
  const parts = s.split(separator);
  if (parts.length !== 6) throw invalid(MAC_EXPECTED, s, `${parts.length} octets instead of 6`);
  const bytes = Buffer.alloc(6);
  for (const [index, part] of parts.entries()) {
    if (!/^[0-9a-fA-F]{2}$/.test(part)) throw invalid(MAC_EXPECTED, s, `octet '${part}' is not 2 hex digits`);
    bytes[index] = parseInt(part, 16);
  }
  return bytes;
}

const HEX_BYTE = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

export function formatMac(bytes: Uint8Array): string {
  if (bytes.length !== 6) throw new InvalidArgumentError(`expected 6 bytes of MAC address, found ${bytes.length} bytes`);
  const h = (i: number) => HEX_BYTE[bytes[i] as number] as string;
  return `${h(0)}:${h(1)}:${h(2)}:${h(3)}:${h(4)}:${h(5)}`;
}

/** IFNAMSIZ is 16 including the terminating NUL. */
export const IFNAME_MAX_BYTES = 15;

/**
 * The kernel's dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
 * '%' is refused too: register_netdevice() treats a name containing it as a template
 * ("eth%d") and picks a different name, so the interface would not be the one configured.
 */
export function isValidIfName(s: string): boolean {
  if (typeof s !== 'string' || s === '' || s === '.' || s === '..') return false;
  if (Buffer.byteLength(s, 'utf8') > IFNAME_MAX_BYTES) return false;
  return !/[/:%\s]/.test(s);
}
