/**
 * The small slice of FHIRPath the mapping needs: a dotted element path (`subject`,
 * `item.encounter`, `context.encounter`) read from a FHIR JSON object, arrays flattened at every
 * step, each value with its FHIRPath expression (`Bundle.entry[3].resource.item[0].encounter[0]`)
 * so that a problem can be reported where it is.
 */

/** A dotted path of FHIR element names: lower camel case, no choice types, no indices. */
export const ELEMENT_PATH = /^[a-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9]*)*$/;

export interface Located {
  readonly value: unknown;
  readonly expression: string;
}

export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Every value at `path` below `root` (whose own expression is `base`), arrays flattened. */
export function valuesAt(root: unknown, path: string, base: string): Located[] {
  let level: Located[] = [{ value: root, expression: base }];
  for (const name of path.split('.')) {
    const next: Located[] = [];
    for (const { value, expression } of level) {
      if (!isJsonObject(value) || !(name in value)) continue;
      const child = value[name];
      if (Array.isArray(child)) {
        child.forEach((item, i) => {
          next.push({ value: item, expression: `${expression}.${name}[${i}]` });
        });
      } else if (child !== undefined && child !== null) {
        next.push({ value: child, expression: `${expression}.${name}` });
      }
    }
    level = next;
  }
  return level;
}

/** The `reference` strings of the Reference elements at `path`, with their expressions. */
export function referencesAt(
  root: unknown,
  path: string,
  base: string,
): { reference: string; expression: string }[] {
  const out: { reference: string; expression: string }[] = [];
  for (const { value, expression } of valuesAt(root, path, base)) {
    if (isJsonObject(value) && typeof value.reference === 'string') {
      out.push({ reference: value.reference, expression });
    }
  }
  return out;
}
