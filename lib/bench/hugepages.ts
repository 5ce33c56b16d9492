/**
 * Hugepages for benchmark runs. net_pcap's infinite_rx preloads every packet of the pcap
 * into mbufs, so a million-flow run needs more than the 2 GiB a developer machine usually
 * reserves. The keeper raises the 2 MiB pool when a run needs it (root only), says so, and
 * puts the original count back when the benchmark ends.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

const SYSFS = '/sys/kernel/mm/hugepages/hugepages-2048kB';
export const HUGEPAGE_BYTES = 2 * 1024 * 1024;
/** Extra pages on top of the estimate: EAL and the PMDs allocate a little beyond it. */
const MARGIN_PAGES = 16;
/** Memory never handed to hugepages, so the rest of the machine keeps running. */
const KEEP_FREE_BYTES = 2 * 1024 * 1024 * 1024;

export interface HugepageCounts {
  total: number;
  free: number;
}

export function readHugepages(): HugepageCounts | null {
  try {
    return {
      total: Number(fs.readFileSync(`${SYSFS}/nr_hugepages`, 'utf8').trim()),
      free: Number(fs.readFileSync(`${SYSFS}/free_hugepages`, 'utf8').trim()),
    };
  } catch {
    return null;
  }
}

function memAvailableBytes(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m?.[1] !== undefined) return Number(m[1]) * 1024;
  } catch {
    // fall through
  }
  return os.freemem();
}

export interface HugepageDecision {
  /** Run on hugepages (true) or with --no-huge (false). */
  hugepages: boolean;
  /** What was done or why hugepages could not be had, for the output; undefined: nothing to say. */
  note?: string;
}

export class HugepageKeeper {
  private original: number | null = null;

  /** Make sure `bytes` of 2 MiB hugepages are free, raising the reservation if needed. */
  ensure(bytes: number): HugepageDecision {
    const now = readHugepages();
    if (now === null) return { hugepages: false, note: 'no 2 MiB hugepage support: running with --no-huge (slower)' };
    const need = Math.ceil(bytes / HUGEPAGE_BYTES);
    if (now.free >= need) return { hugepages: true };
    const target = now.total + (need - now.free) + MARGIN_PAGES;
    const extraBytes = (target - now.total) * HUGEPAGE_BYTES;
    const mib = (pages: number) => `${(pages * HUGEPAGE_BYTES) / (1024 * 1024)} MiB`;
    if (memAvailableBytes() - extraBytes < KEEP_FREE_BYTES)
      return {
        hugepages: false,
        note: `the run needs ${mib(need)} of hugepages, ${mib(now.free)} are free and the machine cannot spare more: running with --no-huge (slower)`,
      };
    try {
      fs.writeFileSync(`${SYSFS}/nr_hugepages`, String(target));
    } catch (err) {
      return {
        hugepages: false,
        note: `the run needs ${mib(need)} of hugepages, ${mib(now.free)} are free, and raising nr_hugepages failed (${(err as NodeJS.ErrnoException).code ?? String(err)}; root needed): running with --no-huge (slower)`,
      };
    }
    this.original ??= now.total;
    const after = readHugepages();
    if (after === null || after.free < need)
      return {
        hugepages: false,
        note: `raised nr_hugepages to ${target} but only ${after?.free ?? 0} pages are free (memory fragmented?): running with --no-huge (slower)`,
      };
    return { hugepages: true, note: `raised 2 MiB hugepages from ${now.total} to ${after.total} for this run (${mib(need)} needed); restored at exit` };
  }

  /** Put the reservation back to what it was before ensure() raised it. */
  restore(): string | undefined {
    if (this.original === null) return undefined;
    const original = this.original;
    this.original = null;
    try {
      fs.writeFileSync(`${SYSFS}/nr_hugepages`, String(original));
      return `restored 2 MiB hugepages to ${readHugepages()?.total ?? original}`;
    } catch (err) {
      return `could not restore nr_hugepages to ${original}: ${(err as Error).message}`;
    }
  }
}
