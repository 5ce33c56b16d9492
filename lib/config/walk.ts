/**
 * Navigation of the config schema by path, for the two consumers that need its structure
 * rather than a parse: unknown-key suggestions (which keys does this mapping know?) and the
 * generated reference. Uses zod's documented `_zod.def` introspection.
 */
import type { z } from 'zod';

type AnySchema = z.core.$ZodType;

/** The schema inside optional/default/prefault wrappers, and the default found on the way. */
export function unwrap(schema: AnySchema): { inner: AnySchema; wrappers: AnySchema[]; defaultValue?: unknown; hasDefault: boolean; optional: boolean } {
  const wrappers: AnySchema[] = [];
  let current = schema;
  let defaultValue: unknown;
  let hasDefault = false;
  let optional = false;
  for (;;) {
    const def = current._zod.def as z.core.$ZodTypeDef & { innerType?: AnySchema; defaultValue?: unknown };
    if (def.type === 'default' || def.type === 'prefault') {
      if (!hasDefault) {
        hasDefault = true;
        defaultValue = def.defaultValue;
      }
    } else if (def.type === 'optional') {
      optional = true;
    } else {
      return { inner: current, wrappers, defaultValue, hasDefault, optional };
    }
    wrappers.push(current);
    current = def.innerType as AnySchema;
  }
}

export function objectShape(schema: AnySchema): Record<string, AnySchema> | undefined {
  const { inner } = unwrap(schema);
  const def = inner._zod.def as z.core.$ZodTypeDef & { shape?: Record<string, AnySchema> };
  return def.type === 'object' ? def.shape : undefined;
}

/** The schema of the value found at `segment` below `schema`, if the schema has one there. */
export function childSchema(schema: AnySchema, segment: PropertyKey): AnySchema | undefined {
  const { inner } = unwrap(schema);
  const def = inner._zod.def as z.core.$ZodTypeDef & {
    shape?: Record<string, AnySchema>;
    valueType?: AnySchema;
    element?: AnySchema;
  };
  switch (def.type) {
    case 'object':
      return typeof segment === 'string' ? def.shape?.[segment] : undefined;
    case 'record':
      return def.valueType;
    case 'array':
      return typeof segment === 'number' ? def.element : undefined;
    default:
      return undefined;
  }
}

export function schemaAt(root: AnySchema, path: readonly PropertyKey[]): AnySchema | undefined {
  let current: AnySchema | undefined = root;
  for (const segment of path) {
    if (current === undefined) return undefined;
    current = childSchema(current, segment);
  }
  return current;
}
