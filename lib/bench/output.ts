/**
 * How benchmark figures are shown: a table for people, one JSON object per case for
 * programs, and a progress bar on stderr while cases run (only on a terminal, so that logs
 * and pipes get clean output).
 */
import { BenchResult } from './runner';
import { FrameSize } from './traffic';

export function formatFlows(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatSize(size: FrameSize): string {
  return size === 'imix' ? 'imix' : `${size}`;
}

function fixed(value: number | null | undefined, digits: number): string {
  return value === null || value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}

function percent(ratio: number): string {
  // Received and forwarded counters are read a burst apart, so the ratio is exact to about
  // 32 packets; the misses themselves are listed after the table (anomalies()).
  return `${(ratio * 100).toFixed(2)}%`;
}

interface Column {
  title: string;
  right: boolean;
  cell(r: BenchResult): string;
}

const COLUMNS: Column[] = [
  { title: 'scenario', right: false, cell: (r) => r.scenario + (r.zipf === null ? '' : ` zipf ${r.zipf}`) },
  { title: 'flows', right: true, cell: (r) => formatFlows(r.flows) },
  { title: 'size', right: true, cell: (r) => formatSize(r.size) },
  { title: 'Mpps', right: true, cell: (r) => fixed(r.mpps, 2) },
  { title: 'Gbps', right: true, cell: (r) => fixed(r.gbps, 2) },
  { title: 'cycles/pkt', right: true, cell: (r) => fixed(r.cycles_per_packet, 1) },
  { title: 'hit', right: true, cell: (r) => percent(r.hit_ratio) },
  { title: 'testpmd io', right: true, cell: (r) => fixed(r.baseline?.io_mpps, 2) },
  { title: 'macswap', right: true, cell: (r) => fixed(r.baseline?.macswap_mpps, 2) },
  { title: 'vs io', right: true, cell: (r) => fixed(r.ratio_io, 2) },
];

export function formatTable(results: readonly BenchResult[]): string {
  const rows = results.map((r) => COLUMNS.map((c) => c.cell(r)));
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => ((COLUMNS[i] as Column).right ? cell.padStart(widths[i] as number) : cell.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  const header = line(COLUMNS.map((c) => c.title));
  return [header, '-'.repeat(header.length), ...rows.map(line)].join('\n') + '\n';
}

/** A busy-polling worker runs the whole window unless the scheduler gave its CPU to someone else. */
const SHARED_CPU_THRESHOLD = 0.97;

/** What the table leaves out but a reader should know: misses, drops, failed inserts. */
export function anomalies(r: BenchResult): string[] {
  const out: string[] = [];
  const where = `${r.scenario} ${formatFlows(r.flows)} flows ${formatSize(r.size)}${r.size === 'imix' ? '' : ' B'}`;
  if (r.insert_failed > 0) out.push(`${where}: ${formatFlows(r.insert_failed)} flows could not be installed (first: ${r.insert_error ?? 'no message'})`);
  const punts = Object.entries(r.punts).filter(([, n]) => n > 0);
  if (punts.length > 0) out.push(`${where}: punted in the measured window: ${punts.map(([k, n]) => `${k} ${formatFlows(n)}`).join(', ')}`);
  const drops = Object.entries(r.drops).filter(([, n]) => n > 0);
  if (drops.length > 0) out.push(`${where}: dropped in the measured window: ${drops.map(([k, n]) => `${k} ${formatFlows(n)}`).join(', ')}`);
  if (r.worker_cpu_share < SHARED_CPU_THRESHOLD)
    out.push(
      `${where}: the worker ran ${(r.worker_cpu_share * 100).toFixed(1)} % of the window: another task shared CPU${r.cpus.length > 1 ? 's' : ''} ${r.cpus.join(',')}, so the rate is low`,
    );
  if (!r.hugepages) out.push(`${where}: ran without hugepages (--no-huge): rates are not representative`);
  return out;
}

/** Where each phase of a case sits on its stretch of the bar (runner.ts and child.ts name them). */
const PHASE_SPANS: Record<string, [number, number]> = {
  'generating traffic': [0, 0.15],
  'starting (preloading the pcap)': [0.15, 0.15],
  'installing flows': [0.15, 0.35],
  warmup: [0.35, 0.35],
  measuring: [0.35, 0.65],
  capturing: [0.35, 1],
  'testpmd io': [0.65, 0.8],
  'testpmd macswap': [0.8, 0.95],
};

/** A one-line progress bar on stderr, redrawn in place; silent unless stderr is a terminal. */
export class Progress {
  private readonly enabled: boolean;
  private caseIndex = 0;
  private label = '';
  private lastDraw = 0;
  /** How far the current case is, 0..1: it only moves forward (repeats do not rewind it). */
  private caseDone = 0;

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.enabled = out.isTTY === true;
  }

  startCase(index: number, label: string): void {
    this.caseIndex = index;
    this.label = label;
    this.caseDone = 0;
    this.draw('starting', undefined, true);
  }

  update(phase: string, fraction?: number): void {
    this.draw(phase, fraction, false);
  }

  private draw(phase: string, fraction: number | undefined, force: boolean): void {
    if (!this.enabled) return;
    const now = Date.now();
    // Redrawing at every message would flood a slow terminal during flow installation.
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = 24;
    const [from, to] = PHASE_SPANS[phase] ?? [this.caseDone, this.caseDone];
    this.caseDone = Math.max(this.caseDone, from + (to - from) * Math.min(Math.max(fraction ?? 0, 0), 1));
    const done = (this.caseIndex + this.caseDone * 0.999) / this.total;
    const filled = Math.round(done * width);
    const bar = '#'.repeat(filled) + '.'.repeat(width - filled);
    const pct = fraction === undefined ? '' : ` ${Math.round(fraction * 100)}%`;
    let text = `[${bar}] ${this.caseIndex + 1}/${this.total} ${this.label}: ${phase}${pct}`;
    const columns = this.out.columns ?? 100;
    if (text.length > columns - 1) text = text.slice(0, columns - 1);
    this.out.write(`\r\x1b[K${text}`);
  }

  /** Clear the bar, so that what follows starts on a clean line. */
  clear(): void {
    if (this.enabled) this.out.write('\r\x1b[K');
  }
}
