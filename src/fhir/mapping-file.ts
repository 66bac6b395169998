/**
 * Reads a mapping file (fhir-mappings/*.json) at start-up. Every failure is a MappingError
 * `BAD_MAPPING` whose message names the file (and the field, from `parseMapping`), so a sidecar
 * with a broken mapping refuses to start with a message the integrator can act on.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { MappingError } from '../mapping/errors.ts';
import { type FhirMapping, parseMapping } from '../mapping/mapping.ts';

/** The mapping shipped with the sidecar, used when no other is configured. */
export const DEFAULT_MAPPING_FILE = new URL('../../fhir-mappings/default.json', import.meta.url);

/** Mapping files are small; anything larger is not one. */
const MAX_BYTES = 1024 * 1024;

/** `path` is also how the file is named in messages (pass it as the integrator configured it). */
export async function loadMappingFile(
  path: string | URL = DEFAULT_MAPPING_FILE,
): Promise<FhirMapping> {
  const source = typeof path === 'string' ? path : displayPath(path);
  let text: string;
  try {
    const bytes = await readFile(path);
    if (bytes.length > MAX_BYTES) {
      throw new MappingError(
        'BAD_MAPPING',
        `${source}: is ${bytes.length} bytes, over ${MAX_BYTES}`,
        {
          source,
        },
      );
    }
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (err) {
    if (err instanceof MappingError) throw err;
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new MappingError('BAD_MAPPING', `${source}: cannot be read (${reason})`, { source });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new MappingError(
      'BAD_MAPPING',
      `${source}: is not valid JSON (${(err as Error).message})`,
      {
        source,
      },
    );
  }
  return parseMapping(json, source);
}

/** A file URL shown relative to the working directory when it is inside it. */
function displayPath(url: URL): string {
  const path = fileURLToPath(url);
  const cwd = `${process.cwd()}/`;
  return path.startsWith(cwd) ? path.slice(cwd.length) : path;
}
