/**
 * `spchain`: the sidecar's command line (program.ts has the commands; `spchain --help` lists
 * them). The `bin/spchain` launcher runs this file with Node 24; so does `node src/cli/spchain.ts`.
 * Exit codes: 0 done, 1 failed (the message says why), 2 bad usage.
 */
import { runSpchain } from './program.ts';

runSpchain(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`spchain: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
