/**
 * One baseline server of `npm run bench:ingest` as its own process, so that it shares no event
 * loop with the load generator or the other servers:
 *
 *   node bench/lib/ingest-serve.ts medplum|medplum-validated|plain <dataDir>
 *
 * Listens on 127.0.0.1 (any free port), prints one line `listening http://127.0.0.1:<port>` when
 * ready, and closes on SIGTERM or SIGINT (exit 0).
 */
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildMedplumServer, buildPlainServer } from './ingest-baselines.ts';

async function main(): Promise<void> {
  const [kind, dataDir] = process.argv.slice(2);
  let app: FastifyInstance;
  if (kind === 'medplum') app = buildMedplumServer();
  else if (kind === 'medplum-validated') app = buildMedplumServer({ validate: true });
  else if (kind === 'plain' && dataDir)
    app = (await buildPlainServer(join(dataDir, 'plain-db'))).app;
  else
    throw new Error(
      'usage: node bench/lib/ingest-serve.ts medplum|medplum-validated|plain <dataDir>',
    );
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  process.stdout.write(`listening ${url}\n`);
  const stop = () => {
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`close failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`ingest-serve: ${(err as Error).message}\n`);
  process.exit(1);
});
