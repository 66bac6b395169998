/**
 * The container build and the compose file, read as data (no Docker engine on these machines, and
 * no `docker compose` plugin to run `config`): four sidecars, Redis and the init service wired as
 * the deployment needs; the Dockerfile multi-stage on Node 24, non-root, with a health check and
 * nothing secret copied; the production image's dependencies cover every runtime import; and the
 * init script's and health check's environment handling.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { healthUrl } from '../../docker/healthcheck.ts';
import { InitEnvError, peerMultiaddr, readInitEnv } from '../../docker/init-network.ts';
import { parseDirectory } from '../../src/http/patient-routes.ts';
import {
  DOCKER,
  imageEnv,
  ROOT,
  readCompose,
  readDockerfile,
  SIDECARS,
  stages,
} from './compose-files.ts';

const compose = readCompose();
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  devDependencies: Record<string, string>;
};
/** Where the sidecar's environment variables are named: main.ts and its configuration schema. */
const configDir = join(ROOT, 'src/config');
const sidecarSources = [
  readFileSync(join(ROOT, 'src/main.ts'), 'utf8'),
  ...(existsSync(configDir) ? readdirSync(configDir) : [])
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(join(configDir, f), 'utf8')),
].join('\n');

describe('compose.yaml', () => {
  it('has Redis, the init service and four sidecars', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['init', 'redis', ...SIDECARS].sort());
  });

  it('runs Redis with an append-only file on a volume and a health check', () => {
    const redis = compose.services.redis!;
    expect(redis.image).toMatch(/^redis:\d/);
    expect(redis.command?.join(' ')).toMatch(/--appendonly yes/);
    expect(redis.volumes).toContain('redis-data:/data');
    expect(redis.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
  });

  it('makes the network once, into the shared volume, from the same image', () => {
    const init = compose.services.init!;
    expect(init.command).toEqual(['node', 'docker/init-network.ts']);
    expect(init.restart).toBe('no');
    expect(init.volumes).toEqual(['network:/network']);
    expect(init.image).toBe(compose.services['sidecar-0']!.image);
    expect(init.build).toEqual({ context: '..', dockerfile: 'docker/Dockerfile' });
    const env = init.environment!;
    expect(env.SPCHAIN_NETWORK_DIR).toBe('/network');
    expect(env.SPCHAIN_INSTITUTIONS).toBe('4');
    // Each institution at its service name on the libp2p port the image exposes.
    expect(env.SPCHAIN_PEERS).toBe(SIDECARS.map((s) => `${s}:4001`).join(','));
    expect(env.SPCHAIN_NODE_DATA_DIR).toBe('/var/lib/spchain/node');
  });

  it.each(SIDECARS.map((s, i) => [s, i] as const))(
    '%s is wired and configured by environment',
    (name, i) => {
      const s = compose.services[name]!;
      expect(s.command).toEqual(['node', 'src/main.ts']);
      expect(s.depends_on).toEqual({
        init: { condition: 'service_completed_successfully' },
        redis: { condition: 'service_healthy' },
      });
      expect(s.healthcheck?.test).toEqual(['CMD', 'node', 'docker/healthcheck.ts']);
      expect(s.volumes).toEqual([`${name}-data:/var/lib/spchain`, 'network:/network:ro']);
      expect(s.ports).toEqual([`127.0.0.1:${8080 + i}:8080`]);
      const env = s.environment!;
      expect(env.SPCHAIN_NODE_CONFIG).toBe(`/network/inst-${i}/config.json`);
      expect(env.SPCHAIN_DATA_DIR).toBe('/var/lib/spchain/sidecar');
      expect(env.REDIS_URL).toBe(`redis://redis:6379/${i}`);
      expect(env.SPCHAIN_BASE_URL).toBe(`http://localhost:${8080 + i}/fhir`);
      expect(env.SPCHAIN_HOST).toBe('0.0.0.0');
      expect(env.SPCHAIN_PORT).toBe('8080');
      // The portal's directory: every institution's public base, as main.ts parses it.
      const dir = parseDirectory(env.SPCHAIN_DIRECTORY!);
      expect([...dir.keys()]).toEqual([0, 1, 2, 3]);
      expect(dir.get(i)).toBe(env.SPCHAIN_BASE_URL!.replace(/\/fhir$/, ''));
      // The key file's passphrase: required from docker/.env, never a default in the file.
      expect(env.SPCHAIN_PASSPHRASE).toMatch(new RegExp(`^\\$\\{SPCHAIN_PASSPHRASE_${i}:\\?`));
      expect(compose.services.init!.environment![`SPCHAIN_PASSPHRASE_${i}`]).toBe(
        env.SPCHAIN_PASSPHRASE,
      );
      // Every variable is one the sidecar reads (its configuration, or the node config's
      // passphraseEnv, which init-network.ts writes).
      for (const key of Object.keys(env)) {
        if (key === 'SPCHAIN_PASSPHRASE') continue;
        expect(sidecarSources, key).toMatch(new RegExp(`\\b${key}\\b`));
      }
    },
  );

  it('gives each sidecar its own data volume and Redis database, and declares every volume', () => {
    const volumes = SIDECARS.map((s) => compose.services[s]!.volumes![0]!.split(':')[0]);
    expect(new Set(volumes).size).toBe(4);
    const dbs = SIDECARS.map((s) => compose.services[s]!.environment!.REDIS_URL);
    expect(new Set(dbs).size).toBe(4);
    const used = Object.values(compose.services).flatMap((s) =>
      (s.volumes ?? []).map((v) => v.split(':')[0]!),
    );
    expect(Object.keys(compose.volumes).sort()).toEqual([...new Set(used)].sort());
  });
});

describe('Dockerfile', () => {
  const ins = readDockerfile();
  const all = stages(ins);
  const final = all.at(-1)!;
  const ops = (op: string) => final.body.filter((i) => i.op === op);

  it('is multi-stage on the Node 24 that package.json pins, slim Debian, pinned by tag', () => {
    expect(all.length).toBeGreaterThanOrEqual(2);
    const version = pkg.devDependencies.node;
    for (const s of all) expect(s.from).toMatch(new RegExp(`^node:${version}-bookworm-slim\\b`));
    expect(all[0]!.from).toMatch(/ AS deps$/);
  });

  it('installs from the lockfile without dev dependencies, and copies node_modules from there', () => {
    const run = all[0]!.body.find((i) => i.op === 'RUN')!;
    expect(run.args).toMatch(/npm ci --omit=dev/);
    expect(ops('COPY').map((c) => c.args)).toContain(
      '--from=deps /app/node_modules ./node_modules',
    );
  });

  it('runs as a non-root user, under /app, with a data volume, ports and a health check', () => {
    const user = ops('USER').at(-1)!.args;
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(ops('WORKDIR').at(-1)!.args).toBe('/app');
    expect(ops('VOLUME').at(-1)!.args).toContain('/var/lib/spchain');
    expect(ops('EXPOSE').at(-1)!.args.split(/\s+/).sort()).toEqual(['4001', '8080']);
    expect(ops('HEALTHCHECK').at(-1)!.args).toMatch(/CMD \["node", "docker\/healthcheck.ts"\]$/);
    expect(ops('CMD').at(-1)!.args).toBe('["node", "src/main.ts"]');
    expect(imageEnv(ins).SPCHAIN_DATA_DIR).toMatch(/^\/var\/lib\/spchain\//);
  });

  it('copies only what runs: no secrets, keys, data or tests', () => {
    const sources = ops('COPY')
      .filter((c) => !c.args.startsWith('--from='))
      .flatMap((c) => c.args.split(/\s+/).slice(0, -1));
    expect(sources.sort()).toEqual(
      [
        'package.json',
        'package-lock.json',
        'src',
        'fhir-mappings',
        'docker/init-network.ts',
        'docker/healthcheck.ts',
      ].sort(),
    );
    const text = readFileSync(join(DOCKER, 'Dockerfile'), 'utf8');
    expect(text).not.toMatch(/\.env\b|passphrase|\.key\.json|ehr-token|ARG .*(SECRET|PASS|TOKEN)/i);
    // The build context admits the same paths and nothing else.
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('**');
    expect(ignore.slice(1).every((l) => l.startsWith('!'))).toBe(true);
  });

  it('the production dependencies cover every runtime import of src/ and the docker scripts', () => {
    const runtime = new Set([
      ...Object.keys(pkg.dependencies),
      ...Object.keys(pkg.optionalDependencies ?? {}),
    ]);
    const files = [
      ...readdirSync(join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts'))
        .map((f) => join(ROOT, 'src', f)),
      join(DOCKER, 'init-network.ts'),
      join(DOCKER, 'healthcheck.ts'),
    ];
    const missing = new Set<string>();
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(
        /^\s*(?:import|export)\s+(?!type\b)[^;]*?from\s+'([^.'][^']*)'/gms,
      )) {
        const spec = m[1]!;
        if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
        const name = spec.startsWith('@')
          ? spec.split('/').slice(0, 2).join('/')
          : spec.split('/')[0]!;
        if (!runtime.has(name)) missing.add(`${name} (${f.slice(ROOT.length)})`);
      }
    }
    expect([...missing]).toEqual([]);
  });
});

describe('init-network environment', () => {
  const good = {
    SPCHAIN_NETWORK_DIR: '/network',
    SPCHAIN_PEERS: 'sidecar-0:4001,sidecar-1:4001',
    SPCHAIN_INSTITUTIONS: '2',
    SPCHAIN_NODE_DATA_DIR: '/var/lib/spchain/node',
    SPCHAIN_PASSPHRASE_0: 'correct horse 0',
    SPCHAIN_PASSPHRASE_1: 'correct horse 1',
  };
  const problem = (env: Record<string, string | undefined>) => {
    try {
      readInitEnv(env);
    } catch (err) {
      expect(err).toBeInstanceOf(InitEnvError);
      return (err as Error).message;
    }
    return 'accepted';
  };

  it('reads a good environment', () => {
    const o = readInitEnv(good);
    expect(o.peers).toEqual([
      { host: 'sidecar-0', port: 4001 },
      { host: 'sidecar-1', port: 4001 },
    ]);
    expect(o.listenHost).toBe('0.0.0.0');
    expect(o.passphrases).toEqual(['correct horse 0', 'correct horse 1']);
    expect(peerMultiaddr(o.peers[0]!)).toBe('/dns4/sidecar-0/tcp/4001');
    expect(peerMultiaddr({ host: '10.0.0.5', port: 4001 })).toBe('/ip4/10.0.0.5/tcp/4001');
  });

  it.each([
    [{ SPCHAIN_NETWORK_DIR: undefined }, /^SPCHAIN_NETWORK_DIR is required/],
    [{ SPCHAIN_INSTITUTIONS: '65' }, /^SPCHAIN_INSTITUTIONS must be an integer from 1 to 64/],
    [{ SPCHAIN_INSTITUTIONS: '3' }, /^SPCHAIN_PEERS lists 2 .*SPCHAIN_INSTITUTIONS is 3/],
    [{ SPCHAIN_PEERS: 'a:1,a:1' }, /^SPCHAIN_PEERS lists an entry twice/],
    [{ SPCHAIN_PEERS: 'a:1,b' }, /^SPCHAIN_PEERS entry 1 must be host:port/],
    [{ SPCHAIN_PEERS: 'a:1,b:70000' }, /^SPCHAIN_PEERS entry 1 has a port outside/],
    [{ SPCHAIN_PEERS: 'a:1,b c:2' }, /^SPCHAIN_PEERS entry 1 has a host/],
    [{ SPCHAIN_P2P_LISTEN_HOST: 'any' }, /^SPCHAIN_P2P_LISTEN_HOST must be an IPv4/],
    [{ SPCHAIN_NODE_DATA_DIR: 'data' }, /^SPCHAIN_NODE_DATA_DIR must be an absolute path/],
    [{ SPCHAIN_PASSPHRASE_1: undefined }, /^SPCHAIN_PASSPHRASE_1 must be set, at least 12/],
  ])('refuses %o, naming the variable', (change, message) => {
    expect(problem({ ...good, ...change })).toMatch(message);
  });

  it('never repeats a passphrase in its messages', () => {
    expect(problem({ ...good, SPCHAIN_PASSPHRASE_0: 'short-secret'.slice(0, 11) })).not.toContain(
      'short-secr',
    );
  });
});

describe('health check URL', () => {
  it('checks the sidecar on loopback at its port, /health/live by default', () => {
    expect(healthUrl({ SPCHAIN_HOST: '0.0.0.0', SPCHAIN_PORT: '8080' })).toBe(
      'http://127.0.0.1:8080/health/live',
    );
    expect(healthUrl({}, '/fhir/metadata')).toBe('http://127.0.0.1:8080/fhir/metadata');
    expect(healthUrl({ SPCHAIN_HOST: '::1', SPCHAIN_PORT: '9000' })).toBe(
      'http://[::1]:9000/health/live',
    );
    expect(() => healthUrl({ SPCHAIN_PORT: 'x' })).toThrow(/SPCHAIN_PORT/);
  });
});
