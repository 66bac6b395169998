/**
 * The configuration schema (schema.ts) as text: the README's configuration table (written between
 * the `<!-- config:start -->` and `<!-- config:end -->` markers by `npm run docs:config`, checked
 * up to date by test/config/docs.test.ts) and the `--help` text of `npm start`. Pure: the script
 * scripts/config-docs.ts does the reading and writing.
 */
import { CONFIG_FILE_OPTION, type OptionSpec, SIDECAR_OPTIONS } from './schema.ts';

export const CONFIG_START = '<!-- config:start -->';
export const CONFIG_END = '<!-- config:end -->';

interface Row {
  readonly key: string;
  readonly o: OptionSpec<unknown>;
}

const rows = (): Row[] => [
  ...Object.entries(SIDECAR_OPTIONS).map(([key, o]) => ({ key, o: o as OptionSpec<unknown> })),
  { key: '', o: CONFIG_FILE_OPTION as OptionSpec<unknown> },
];

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (s: string) => `\`${s}\``;

function flagText(o: OptionSpec<unknown>): string | null {
  if (o.flag === null) return null;
  return o.kind.type === 'boolean' ? `--${o.flag}, --no-${o.flag}` : `--${o.flag} <value>`;
}

/**
 * The Markdown table: one row per option, the configuration file's own option last; columns padded
 * to their widest cell, as the repository's formatter (Biome) lays Markdown tables out.
 */
export function renderConfigTable(): string {
  const head = ['File key', 'Environment', 'Flag', 'Type', 'Default', 'What it does'];
  const body = rows().map(({ key, o }) => {
    const flag = flagText(o);
    return [
      key === '' ? '(none)' : code(key),
      code(o.env),
      flag === null ? '(none)' : code(flag),
      cell(o.kind.type),
      cell(o.defaultText),
      cell(o.description),
    ];
  });
  const width = (s: string) => [...s].length;
  const widths = head.map((h, c) => Math.max(3, width(h), ...body.map((r) => width(r[c]!))));
  const line = (cells: readonly string[]) =>
    `| ${cells.map((x, c) => x + ' '.repeat(widths[c]! - width(x))).join(' | ')} |`;
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/** The README with its configuration block replaced by `table` (both markers must be there). */
export function replaceConfigBlock(readme: string, table: string): string {
  const start = readme.indexOf(CONFIG_START);
  const end = readme.indexOf(CONFIG_END);
  if (start < 0 || end < start) {
    throw new RangeError(`the README needs ${CONFIG_START} and then ${CONFIG_END}`);
  }
  return `${readme.slice(0, start + CONFIG_START.length)}\n${table}\n${readme.slice(end)}`;
}

/** The text between the markers (trimmed), or null without them. */
export function configBlockOf(readme: string): string | null {
  const start = readme.indexOf(CONFIG_START);
  const end = readme.indexOf(CONFIG_END);
  if (start < 0 || end < start) return null;
  return readme.slice(start + CONFIG_START.length, end).trim();
}

/** `npm start -- --help`: every option with its variable and default. */
export function helpText(): string {
  const out = [
    'Usage: node src/main.ts [options]   (npm start -- [options])',
    '',
    'Starts one SPChain sidecar. Each option comes from its flag, else its environment variable,',
    'else the configuration file (--config), else its default. A wrong value stops start-up.',
    '',
  ];
  for (const { key, o } of rows()) {
    const flag = flagText(o) ?? '(no flag)';
    out.push(`  ${flag.padEnd(34)} ${o.env}${key === '' ? '' : `, file key "${key}"`}`);
    out.push(`      ${o.description.replace(/`/g, '')}`);
    out.push(`      ${o.kind.type}; default: ${o.defaultText.replace(/`/g, '')}`);
  }
  out.push('  -h, --help                         this text');
  return `${out.join('\n')}\n`;
}
