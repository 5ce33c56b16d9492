/**
 * A set of IP prefixes that answers "does any of them cover this address?" in one lookup per
 * distinct prefix length, not one per prefix: the gateway asks it for every offloaded flow
 * after a burst of route changes (thousands of prefixes, a hundred thousand flows), so the
 * cost is what matters. The kernel's route decision for an address can only change when a
 * route whose prefix covers it changes, so this is exactly the set of flows to re-check.
 */
import { parseIp, prefixNetwork, type IpFamily, type IpPrefix } from './addr';

/** The network part of `bytes` at `length` bits, as a string key. */
function networkKey(bytes: Uint8Array, length: number): string {
  let key = '';
  const full = length >> 3;
  for (let i = 0; i < full; i++) key += String.fromCharCode(bytes[i] as number);
  const rest = length & 7;
  if (rest !== 0) key += String.fromCharCode((bytes[full] as number) & (0xff << (8 - rest)) & 0xff);
  return key;
}

export class PrefixSet {
  /** Per family: prefix length → the networks of that length. */
  private readonly byLength: Record<IpFamily, Map<number, Set<string>>> = { 4: new Map(), 6: new Map() };
  private count = 0;

  get size(): number {
    return this.count;
  }

  add(prefix: IpPrefix): void {
    const networks = this.byLength[prefix.family];
    let set = networks.get(prefix.length);
    if (set === undefined) networks.set(prefix.length, (set = new Set()));
    const key = networkKey(prefixNetwork(prefix).bytes, prefix.length);
    if (!set.has(key)) {
      set.add(key);
      this.count++;
    }
  }

  /** Whether a prefix of the set covers `address` (text, as flows carry it). */
  covers(address: string): boolean {
    const ip = parseIp(address);
    for (const [length, networks] of this.byLength[ip.family]) if (networks.has(networkKey(ip.bytes, length))) return true;
    return false;
  }
}
