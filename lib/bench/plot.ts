/**
 * Mpps against flow count, one line per scenario (and size), as a standalone SVG. Flow
 * counts span decades, so the x axis is logarithmic. When testpmd ran, its io rate for the
 * same traffic is drawn dashed in the scenario's colour: the distance between the two lines
 * is what the fast path costs.
 */
import { BenchResult } from './runner';
import { formatSize } from './output';

const WIDTH = 880;
const HEIGHT = 500;
const MARGIN = { left: 64, right: 230, top: 48, bottom: 56 };
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] as string);
}

function flowLabel(n: number): string {
  if (n >= 1e6 && n % 1e6 === 0) return `${n / 1e6}M`;
  if (n >= 1e3 && n % 1e3 === 0) return `${n / 1e3}k`;
  return String(n);
}

/** A round step giving about `count` ticks between 0 and max. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const factor = [1, 2, 2.5, 5, 10].find((f) => f * magnitude >= raw) ?? 10;
  return factor * magnitude;
}

function seriesName(r: BenchResult, sizes: number, zipfs: number): string {
  let name = r.scenario;
  if (sizes > 1) name += ` ${formatSize(r.size)}`;
  if (zipfs > 1) name += r.zipf === null ? ' uniform' : ` zipf ${r.zipf}`;
  return name;
}

export function renderPlot(results: readonly BenchResult[], title?: string): string {
  const sizes = new Set(results.map((r) => r.size)).size;
  const zipfs = new Set(results.map((r) => r.zipf)).size;
  const series = new Map<string, BenchResult[]>();
  for (const r of results) {
    const name = seriesName(r, sizes, zipfs);
    series.set(name, [...(series.get(name) ?? []), r]);
  }
  for (const list of series.values()) list.sort((a, b) => a.flows - b.flows);

  const flows = results.map((r) => r.flows);
  let lo = Math.log10(Math.min(...flows, 1e9));
  let hi = Math.log10(Math.max(...flows, 1));
  if (!(hi > lo)) {
    lo -= 0.5;
    hi += 0.5;
  }
  lo = Math.floor(lo);
  hi = Math.ceil(hi);
  const yMaxData = Math.max(1, ...results.map((r) => Math.max(r.mpps, r.baseline?.io_mpps ?? 0)));
  const yStep = niceStep(yMaxData, 6);
  const yMax = Math.ceil((yMaxData * 1.05) / yStep) * yStep;

  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (n: number) => MARGIN.left + ((Math.log10(n) - lo) / (hi - lo)) * plotW;
  const y = (v: number) => MARGIN.top + plotH - (v / yMax) * plotH;
  const f = (v: number) => v.toFixed(1);

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
  );
  const workers = [...new Set(results.map((r) => r.workers))].join('/');
  const heading = title ?? `flowgate fast path: Mpps by flow count (${workers} worker${workers === '1' ? '' : 's'}${sizes === 1 && results[0] !== undefined ? `, ${formatSize(results[0].size)} B` : ''})`;
  parts.push(`<text x="${MARGIN.left}" y="28" font-size="15" font-weight="bold">${escapeXml(heading)}</text>`);

  // Grid and axes.
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    parts.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${MARGIN.left - 8}" y="${f(y(v) + 4)}" text-anchor="end">${Number(v.toFixed(2))}</text>`);
  }
  for (let d = lo; d <= hi; d++) {
    const n = 10 ** d;
    parts.push(`<line x1="${f(x(n))}" x2="${f(x(n))}" y1="${MARGIN.top}" y2="${MARGIN.top + plotH}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${f(x(n))}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${flowLabel(n)}</text>`);
  }
  parts.push(
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 14}" text-anchor="middle">flows (log scale)</text>`,
    `<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">Mpps</text>`,
  );

  // Series, and the legend beside the plot.
  let index = 0;
  const legendX = MARGIN.left + plotW + 16;
  for (const [name, list] of series) {
    const colour = PALETTE[index % PALETTE.length] as string;
    const legendY = MARGIN.top + 8 + index * 20;
    const line = list.map((r) => `${f(x(r.flows))},${f(y(r.mpps))}`).join(' ');
    parts.push(`<polyline points="${line}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    for (const r of list)
      parts.push(
        `<circle cx="${f(x(r.flows))}" cy="${f(y(r.mpps))}" r="3.5" fill="${colour}"><title>${escapeXml(
          `${name}, ${r.flows} flows: ${r.mpps.toFixed(2)} Mpps, ${r.cycles_per_packet.toFixed(1)} cycles/packet`,
        )}</title></circle>`,
      );
    const io = list.filter((r) => r.baseline !== null);
    if (io.length > 0) {
      const ioLine = io.map((r) => `${f(x(r.flows))},${f(y(r.baseline?.io_mpps ?? 0))}`).join(' ');
      parts.push(`<polyline points="${ioLine}" fill="none" stroke="${colour}" stroke-width="1.2" stroke-dasharray="5 4" opacity="0.8"/>`);
    }
    parts.push(
      `<line x1="${legendX}" x2="${legendX + 22}" y1="${legendY}" y2="${legendY}" stroke="${colour}" stroke-width="2"/>`,
      `<text x="${legendX + 28}" y="${legendY + 4}">${escapeXml(name)}</text>`,
    );
    index++;
  }
  if (results.some((r) => r.baseline !== null)) {
    const legendY = MARGIN.top + 8 + index * 20 + 8;
    parts.push(
      `<line x1="${legendX}" x2="${legendX + 22}" y1="${legendY}" y2="${legendY}" stroke="#444" stroke-width="1.2" stroke-dasharray="5 4"/>`,
      `<text x="${legendX + 28}" y="${legendY + 4}">testpmd io, same traffic</text>`,
    );
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
