/**
 * Redis for the queue tests: the machine's server on 127.0.0.1:6379 (required), key clean-up, and
 * redis-servers of a test's own on free ports (the machine's server is never stopped).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

export const REDIS_URL = 'redis://127.0.0.1:6379';

/** Fails with a clear message when Redis is not there: the BullMQ suite is never skipped. */
export async function requireRedis(url = REDIS_URL): Promise<void> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    throw new Error(
      `the BullMQ queue tests need Redis at ${url} (.ci/run starts one; locally: redis-server --daemonize yes): ${(err as Error).message}`,
    );
  } finally {
    client.disconnect();
  }
}

/** A key prefix no other test run uses. */
export function uniquePrefix(): string {
  return `spchain-test-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Deletes every key under `prefix`. */
export async function deleteKeys(prefix: string, url = REDIS_URL): Promise<number> {
  const client = new Redis(url);
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await client.del(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
  return deleted;
}

/**
 * A free port below Linux's ephemeral range (32768-60999), so that between a kill and a restart of
 * the test's redis-server no other test's listen(0) or outgoing connection can take it.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = createServer();
    const free = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (free) {
      await new Promise((resolve) => server.close(resolve));
      return port;
    }
  }
  throw new Error('no free port found in 20000-31999');
}

/** A redis-server with appendonly + appendfsync always in `dir`, on `port`. */
export class OwnRedis {
  readonly port: number;
  readonly dir: string;
  private proc: ChildProcess | null = null;

  constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir];
    args.push('--appendonly', 'yes', '--appendfsync', 'always', '--save', '');
    const proc = spawn('redis-server', args, { stdio: 'ignore' });
    let spawnError: Error | null = null;
    proc.on('error', (err) => {
      spawnError = err;
    });
    this.proc = proc;
    for (let tries = 0; ; tries++) {
      if (spawnError)
        throw new Error(`cannot start redis-server: ${(spawnError as Error).message}`);
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`);
      // Bounded: a port some other process answers on must not hang the start.
      const client = new Redis(this.url, {
        lazyConnect: true,
        retryStrategy: () => null,
        connectTimeout: 1000,
        commandTimeout: 1000,
      });
      client.on('error', () => {});
      try {
        await client.connect();
        await client.ping();
        return;
      } catch (err) {
        if (tries > 100) throw new Error(`redis-server did not answer: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        client.disconnect();
      }
    }
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGKILL');
    await exited;
    this.proc = null;
  }
}
