// A small reader of the Prometheus text exposition format (version 0.0.4), written from the
// format's description rather than from prom-client, to check what a scraper would read.

export interface ExpositionSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ExpositionFamily {
  name: string;
  help: string;
  type: string;
  samples: ExpositionSample[];
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const pattern = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;
  let match: RegExpExecArray | null;
  while (pattern.lastIndex < text.length && (match = pattern.exec(text)) !== null) {
    labels[match[1] as string] = (match[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  if (pattern.lastIndex !== text.length && text.trim() !== '') throw new Error(`bad labels in '${line}'`);
  return labels;
}

function parseValue(text: string, line: string): number {
  // Prometheus reads values with Go's ParseFloat, which takes these in any case (prom-client writes 'Nan').
  if (/^\+?inf(inity)?$/i.test(text)) return Infinity;
  if (/^-inf(inity)?$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw new Error(`bad value in '${line}'`);
  return value;
}

/** Families by name; a sample line outside a declared family (or a malformed line) throws. */
export function parseExposition(text: string): Map<string, ExpositionFamily> {
  const families = new Map<string, ExpositionFamily>();
  const familyOf = (name: string): ExpositionFamily => {
    let family = families.get(name);
    if (family === undefined) {
      family = { name, help: '', type: 'untyped', samples: [] };
      families.set(name, family);
    }
    return family;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta !== null) {
      const family = familyOf(meta[2] as string);
      if (meta[1] === 'HELP') family.help = meta[3] as string;
      else family.type = meta[3] as string;
      continue;
    }
    if (line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (sample === null) throw new Error(`not an exposition line: '${line}'`);
    const name = sample[1] as string;
    // Histogram and summary samples carry suffixes of their family's name.
    const familyName = [name, name.replace(/_(bucket|sum|count)$/, '')].find((n) => families.has(n));
    if (familyName === undefined) throw new Error(`sample before its # TYPE line: '${line}'`);
    familyOf(familyName).samples.push({ name, labels: parseLabels(sample[2] ?? '', line), value: parseValue(sample[3] as string, line) });
  }
  return families;
}

/** The value of the one sample of `name` with exactly these labels. */
export function sampleValue(families: Map<string, ExpositionFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.get(name);
  const matches = (family?.samples ?? []).filter(
    (s) => s.name === name && Object.keys(s.labels).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (matches.length > 1) throw new Error(`${matches.length} samples of ${name} with labels ${JSON.stringify(labels)}`);
  return matches[0]?.value;
}
