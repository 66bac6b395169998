/**
 * `node src/node/main.ts --config <path>`: runs one institution's node until SIGINT or SIGTERM,
 * printing one JSON line per event on stdout (events.ts). Exit codes: 0 after a clean stop, 1 when
 * the node cannot start (the message names the bad field or file) or stops on a fatal failure.
 */
import { parseArgs } from 'node:util';
import { readNodeConfig } from './config.ts';
import { formatEventLine } from './events.ts';
import { startNode } from './node.ts';

function print(index: number, e: Parameters<typeof formatEventLine>[2]): void {
  process.stdout.write(formatEventLine(index, Date.now(), e));
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string' } }, strict: true });
  if (values.config === undefined) {
    process.stderr.write('usage: node src/node/main.ts --config <config.json>\n');
    process.exitCode = 1;
    return;
  }
  const config = await readNodeConfig(values.config, process.env);
  const node = await startNode({
    config,
    onEvent: (e) => print(config.index, e),
    // The node has stopped itself; libp2p may leave a socket behind (js-libp2p #2477).
    onFatal: () => process.exit(1),
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    node.stop().then(
      () => process.exit(process.exitCode ?? 0),
      (err) => {
        process.stderr.write(`stop failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  const e = err as Error & { code?: string };
  process.stdout.write(
    `${JSON.stringify({ t: Date.now(), event: 'fatal', code: e.code ?? 'INTERNAL', message: e.message })}\n`,
  );
  process.stderr.write(`spchain node: ${e.message}\n`);
  process.exit(1);
});
