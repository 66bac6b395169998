/**
 * The containers' health check (the Dockerfile's HEALTHCHECK and the compose file's healthcheck):
 * GET the sidecar's liveness endpoint on loopback and exit 0 on a 2xx answer, 1 otherwise. The
 * image has no curl or wget, so Node does it.
 *
 *   node docker/healthcheck.ts [path]     (default /health/live)
 *
 * Environment: SPCHAIN_PORT (default 8080) and SPCHAIN_HOST (a wildcard address such as 0.0.0.0
 * is checked on 127.0.0.1), as the sidecar reads them. Prints one line saying what failed; never
 * a response body.
 */

export const DEFAULT_HEALTH_PATH = '/health/live';
const TIMEOUT_MS = 4000;

/** The URL to check, from the sidecar's own environment. */
export function healthUrl(
  env: Readonly<Record<string, string | undefined>>,
  path: string = DEFAULT_HEALTH_PATH,
): string {
  const port = Number(env.SPCHAIN_PORT?.trim() || '8080');
  if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
    throw new RangeError('SPCHAIN_PORT must be a port number from 1 to 65535');
  }
  if (!path.startsWith('/')) throw new RangeError('the path must start with /');
  const given = env.SPCHAIN_HOST?.trim() || '127.0.0.1';
  const host = given === '0.0.0.0' || given === '::' || given === '[::]' ? '127.0.0.1' : given;
  return `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}${path}`;
}

async function main(): Promise<void> {
  let url: string;
  try {
    url = healthUrl(process.env, process.argv[2]);
  } catch (err) {
    process.stderr.write(`healthcheck: ${(err as Error).message}\n`);
    process.exit(2);
  }
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    await res.body?.cancel();
    if (res.ok) process.exit(0);
    process.stderr.write(`healthcheck: ${url} answered ${res.status}\n`);
  } catch (err) {
    process.stderr.write(`healthcheck: ${url} unreachable: ${(err as Error).message}\n`);
  }
  process.exit(1);
}

if (import.meta.main) void main();
