/**
 * The configuration's documentation is made from the schema: the README's table (between the
 * config markers) is what `npm run docs:config` would write now, and the table and `--help` name
 * every option with its variable, flag and default. `npm start -- --help` and a wrong value are
 * checked on the real process (it stops before starting anything).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_END,
  CONFIG_START,
  configBlockOf,
  helpText,
  renderConfigTable,
  replaceConfigBlock,
} from '../../src/config/docs.ts';
import { CONFIG_FILE_OPTION, SIDECAR_OPTIONS } from '../../src/config/schema.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const ALL = [...Object.entries(SIDECAR_OPTIONS), ['', CONFIG_FILE_OPTION] as const];

describe('the README configuration table', () => {
  it('is up to date with the schema (run npm run docs:config if not)', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    expect(configBlockOf(readme)).toBe(renderConfigTable());
    expect(replaceConfigBlock(readme, renderConfigTable())).toBe(readme);
    expect(readme).toMatch(/## Configuration\n[\s\S]*<!-- config:start -->/);
  });

  it('has one row per option with its variable, flag, type and default', () => {
    const rows = renderConfigTable().split('\n').slice(2);
    expect(rows).toHaveLength(ALL.length);
    ALL.forEach(([key, o], i) => {
      const row = rows[i]!;
      expect(row).toContain(key === '' ? '(none)' : `\`${key}\``);
      expect(row).toContain(`\`${o.env}\``);
      expect(row).toMatch(o.flag === null ? /\| \(none\) +\|/ : new RegExp(`--${o.flag}`));
      expect(row).toContain(o.defaultText.replace(/\|/g, '\\|'));
      // Six cells: no unescaped pipe in a cell.
      expect(row.split(/(?<!\\)\|/)).toHaveLength(8);
    });
  });

  it('is replaced between the markers only, and refused without them', () => {
    const doc = `# A\n\n${CONFIG_START}\nold\n${CONFIG_END}\n\ntail\n`;
    expect(replaceConfigBlock(doc, 'new')).toBe(
      `# A\n\n${CONFIG_START}\nnew\n${CONFIG_END}\n\ntail\n`,
    );
    expect(configBlockOf(replaceConfigBlock(doc, 'new'))).toBe('new');
    expect(() => replaceConfigBlock('# A\n', 'new')).toThrow(/config:start/);
    expect(configBlockOf(`${CONFIG_END}${CONFIG_START}`)).toBeNull();
  });
});

describe('npm start', () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [join(ROOT, 'src/main.ts'), ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      encoding: 'utf8',
      timeout: 60_000,
    });

  it('--help lists every option with its variable and default, and exits 0', () => {
    expect(helpText()).toContain('--help');
    const r = run(['--help'], { SPCHAIN_PORT: 'not even read' });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(helpText());
    for (const [, o] of ALL) {
      expect(r.stdout).toContain(o.env);
      expect(r.stdout).toContain(o.defaultText.replace(/`/g, ''));
      if (o.flag !== null) expect(r.stdout).toContain(`--${o.flag}`);
    }
  });

  it('stops with exit 1 and a message naming a wrong value', () => {
    const r = run([], { SPCHAIN_PORT: '70000' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('BAD_CONFIG: SPCHAIN_PORT must be an integer from 0 to 65535');
    const flag = run(['--log-level', 'loud']);
    expect(flag.status).toBe(1);
    expect(flag.stderr).toContain('--log-level must be one of');
  });

  it('reads the file named by --config or SPCHAIN_CONFIG, and names it when it is wrong', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spchain-config-'));
    try {
      const path = join(dir, 'sidecar.json');
      await writeFile(path, JSON.stringify({ port: 8080, bodyLimt: 4096 }));
      const r = run(['--config', path]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`BAD_CONFIG_FILE: ${path}: bodyLimt is not a known option`);
      const missing = run([], { SPCHAIN_CONFIG: join(dir, 'none.json') });
      expect(missing.status).toBe(1);
      expect(missing.stderr).toContain(`${join(dir, 'none.json')} cannot be read (ENOENT)`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('starts from a configuration file: its relative data dir, its port, public metrics', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spchain-config-'));
    const path = join(dir, 'sidecar.json');
    await writeFile(path, JSON.stringify({ dataDir: 'state', port: 0, metricsPublic: true }));
    const child = spawn(process.execPath, [join(ROOT, 'src/main.ts')], {
      cwd: tmpdir(),
      env: { PATH: process.env.PATH ?? '', SPCHAIN_CONFIG: path, SPCHAIN_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      child.stderr.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const base = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /FHIR base\s+(\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) =>
          reject(new Error(`exited ${code} before its banner:\n${out}`)),
        );
      });
      expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/fhir$/);
      expect(base).not.toContain(':8080/');
      expect((await stat(join(dir, 'state', 'ehr-token'))).isFile()).toBe(true);
      const metrics = await fetch(base.replace(/\/fhir$/, '/metrics'));
      expect(metrics.status).toBe(200);
      await metrics.text();
      const code = await new Promise<number | null>((resolve) => {
        child.once('exit', resolve);
        child.kill('SIGTERM');
      });
      expect(code).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
