/**
 * The docker files as data, for the docker tests: compose.yaml parsed (with YAML merge keys, as
 * Compose reads them), the Dockerfile's stages and instructions, and the environment a container
 * gets (the image's ENV lines, then the service's environment).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export const ROOT = new URL('../../', import.meta.url).pathname;
export const DOCKER = join(ROOT, 'docker');

export interface Service {
  readonly image?: string;
  readonly build?: { readonly context: string; readonly dockerfile: string };
  readonly command?: readonly string[];
  readonly environment?: Readonly<Record<string, string>>;
  readonly volumes?: readonly string[];
  readonly ports?: readonly string[];
  readonly depends_on?: Readonly<Record<string, { readonly condition: string }>>;
  readonly healthcheck?: { readonly test?: readonly string[]; readonly disable?: boolean };
  readonly restart?: string;
  readonly init?: boolean;
}

export interface Compose {
  readonly name?: string;
  readonly services: Readonly<Record<string, Service>>;
  readonly volumes: Readonly<Record<string, unknown>>;
}

export function readCompose(): Compose {
  return parse(readFileSync(join(DOCKER, 'compose.yaml'), 'utf8'), { merge: true }) as Compose;
}

export const SIDECARS = ['sidecar-0', 'sidecar-1', 'sidecar-2', 'sidecar-3'] as const;

export interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** The Dockerfile's instructions, continuation lines joined, comments dropped. */
export function readDockerfile(): Instruction[] {
  const text = readFileSync(join(DOCKER, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l)!;
      return { op: m[1]!.toUpperCase(), args: m[2]!.trim() };
    });
}

/** The instructions of each stage (after its FROM), with ARGs before the first FROM resolved. */
export function stages(ins: readonly Instruction[]): { from: string; body: Instruction[] }[] {
  const args = new Map<string, string>();
  const out: { from: string; body: Instruction[] }[] = [];
  for (const i of ins) {
    if (i.op === 'ARG' && out.length === 0) {
      const [k, v] = i.args.split('=');
      args.set(k!, v ?? '');
    } else if (i.op === 'FROM') {
      out.push({
        from: i.args.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? ''),
        body: [],
      });
    } else {
      out.at(-1)?.body.push(i);
    }
  }
  return out;
}

/** The final stage's ENV as a map (`ENV A=1 B=2` form). */
export function imageEnv(ins: readonly Instruction[]): Record<string, string> {
  const last = stages(ins).at(-1)!;
  const env: Record<string, string> = {};
  for (const i of last.body.filter((b) => b.op === 'ENV')) {
    for (const pair of i.args.split(/\s+/)) {
      const [k, v] = pair.split('=');
      env[k!] = v ?? '';
    }
  }
  return env;
}
