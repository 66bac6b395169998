/**
 * `npm run docs:config`: writes the sidecar's configuration table (src/config/schema.ts, rendered
 * by src/config/docs.ts) into README.md between `<!-- config:start -->` and `<!-- config:end -->`.
 * With --check it writes nothing and exits 1 when the README's table is out of date.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { renderConfigTable, replaceConfigBlock } from '../src/config/docs.ts';

const README = new URL('../README.md', import.meta.url);

const before = await readFile(README, 'utf8');
const after = replaceConfigBlock(before, renderConfigTable());
if (process.argv.includes('--check')) {
  if (after !== before) {
    console.error('README.md: the configuration table is out of date; run npm run docs:config');
    process.exit(1);
  }
  console.log('README.md: the configuration table is up to date');
} else if (after === before) {
  console.log('README.md: the configuration table was already up to date');
} else {
  await writeFile(README, after);
  console.log('README.md: configuration table written');
}
