/**
 * The config reference, rendered from the schema so that the README cannot drift from what
 * the loader accepts: key path, type (the phrase every "expected X" message uses), default
 * and the `.describe()` text of each field.
 */
import { z } from 'zod';
import { configSchema, documentedDefaults, fieldTypes } from './schema';
import { unwrap } from './walk';

export interface ReferenceRow {
  /** "ports.<name>.mtu", "routes[].via" */
  path: string;
  type: string;
  /** "required", "—" (absent unless set), or the default value as YAML. */
  default: string;
  description: string;
}

type AnySchema = z.core.$ZodType;

function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(formatDefault).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    return entries.length === 0 ? '{}' : `{ ${entries.map(([key, item]) => `${key}: ${formatDefault(item)}`).join(', ')} }`;
  }
  return String(value);
}

function firstMeta<T>(layers: readonly AnySchema[], read: (schema: AnySchema) => T | undefined): T | undefined {
  for (const layer of layers) {
    const value = read(layer);
    if (value !== undefined) return value;
  }
  return undefined;
}

function rowsOf(schema: AnySchema, path: string, rows: ReferenceRow[]): void {
  const { inner, wrappers, defaultValue, hasDefault, optional } = unwrap(schema);
  const layers = [...wrappers, inner];
  const description = firstMeta(layers, (layer) => z.globalRegistry.get(layer)?.description) ?? '';
  const type = firstMeta(layers, (layer) => fieldTypes.get(layer)?.type) ?? inner._zod.def.type;
  const def = inner._zod.def as z.core.$ZodTypeDef & {
    shape?: Record<string, AnySchema>;
    valueType?: AnySchema;
    element?: AnySchema;
  };
  const isSection = def.type === 'object';
  let defaultText = 'required';
  const documented = firstMeta(layers, (layer) => documentedDefaults.get(layer)?.default);
  if (documented !== undefined) defaultText = documented;
  // A section filled from its fields' defaults has no default of its own worth showing.
  else if (hasDefault) defaultText = isSection ? '—' : `\`${formatDefault(defaultValue)}\``;
  else if (optional) defaultText = '—';

  if (path !== '') rows.push({ path, type, default: defaultText, description });

  const prefix = path === '' ? '' : `${path}.`;
  if (def.type === 'object' && def.shape !== undefined) {
    for (const [key, child] of Object.entries(def.shape)) rowsOf(child, `${prefix}${key}`, rows);
  } else if (def.type === 'record' && def.valueType !== undefined) {
    // The entries themselves are described by the record's row; list their fields.
    const entry = unwrap(def.valueType).inner._zod.def as z.core.$ZodTypeDef & { shape?: Record<string, AnySchema> };
    for (const [key, child] of Object.entries(entry.shape ?? {})) rowsOf(child, `${prefix}<name>.${key}`, rows);
  } else if (def.type === 'array' && def.element !== undefined && unwrap(def.element).inner._zod.def.type === 'object') {
    const element = unwrap(def.element).inner._zod.def as z.core.$ZodTypeDef & { shape?: Record<string, AnySchema> };
    for (const [key, child] of Object.entries(element.shape ?? {})) rowsOf(child, `${path}[].${key}`, rows);
  }
}

/** One row per key of the config, in schema order (sections before their fields). */
export function configReferenceRows(): ReferenceRow[] {
  const rows: ReferenceRow[] = [];
  rowsOf(configSchema, '', rows);
  return rows;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The reference as a markdown table, for the README and `flowgate config reference`. */
export function renderConfigReference(): string {
  const lines = ['| Key | Type | Default | Description |', '| --- | --- | --- | --- |'];
  for (const row of configReferenceRows()) {
    lines.push(`| \`${cell(row.path)}\` | ${cell(row.type)} | ${cell(row.default)} | ${cell(row.description)} |`);
  }
  return `${lines.join('\n')}\n`;
}
