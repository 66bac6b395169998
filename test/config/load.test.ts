/**
 * The sidecar's configuration (src/config): every option parses from its flag, its environment
 * variable and the file; wrong values are refused with a ConfigError naming the flag, variable or
 * file key (and never quoting a secret); precedence is flag > environment > file > default; the
 * schema's defaults are the sidecar's own.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ConfigError, isConfigError } from '../../src/config/errors.ts';
import { type ConfigInput, configFilePath, loadConfig, wantsHelp } from '../../src/config/load.ts';
import { type OptionKey, SIDECAR_OPTIONS } from '../../src/config/schema.ts';
import { defaultHttpOpts } from '../../src/http/server.ts';
import { defaultSidecarOpts } from '../../src/http/sidecar.ts';

const FILE = '/etc/spchain/sidecar.json';
const file = (o: unknown) => ({ path: FILE, text: JSON.stringify(o) });
const load = (input: Partial<ConfigInput>) => loadConfig({ env: {}, argv: [], ...input });

/** The ConfigError `f` throws (fails the test when it throws nothing or something else). */
function refusal(f: () => unknown): ConfigError {
  try {
    f();
  } catch (err) {
    if (isConfigError(err)) return err;
    throw err;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

const TOKEN = 'a-static-ehr-token-of-forty-characters-00';

/** One good value per option: as text (env, flag), as JSON (file), and what it loads as. */
const GOOD: Record<OptionKey, { text: string; json: unknown; value: unknown }> = {
  dataDir: { text: '/var/lib/spchain', json: '/var/lib/spchain', value: '/var/lib/spchain' },
  host: { text: '0.0.0.0', json: '::1', value: undefined },
  port: { text: '8443', json: 8443, value: 8443 },
  nodeConfig: { text: '/n/inst-1/config.json', json: '/n/inst-1/config.json', value: undefined },
  redisUrl: { text: 'redis://redis:6379/1', json: 'rediss://r:6380', value: undefined },
  ehrToken: { text: TOKEN, json: TOKEN, value: TOKEN },
  mappingFile: { text: '/m/custom.json', json: '/m/custom.json', value: '/m/custom.json' },
  baseUrl: { text: 'https://a.example/fhir', json: 'https://a.example/fhir', value: undefined },
  bodyLimit: { text: '4096', json: 4096, value: 4096 },
  logLevel: { text: 'warn', json: 'silent', value: undefined },
  directory: {
    text: '{"0":"http://a:8080/","2":"https://c.example"}',
    json: { 0: 'http://a:8080/', 2: 'https://c.example' },
    value: new Map([
      [0, 'http://a:8080'],
      [2, 'https://c.example'],
    ]),
  },
  readyMinPeers: { text: '2', json: 0, value: undefined },
  guessLimitMax: { text: '10', json: 10, value: 10 },
  guessLimitWindowMs: { text: '1000', json: 1000, value: 1000 },
  metricsPublic: { text: 'true', json: true, value: true },
};
const KEYS = Object.keys(SIDECAR_OPTIONS) as OptionKey[];

describe('every option', () => {
  it('has a good value in this table', () => {
    expect(Object.keys(GOOD).sort()).toEqual([...KEYS].sort());
  });

  it.each(KEYS)('%s parses from its environment variable, its flag and the file', (key) => {
    const o = SIDECAR_OPTIONS[key];
    const g = GOOD[key];
    const fromEnv = load({ env: { [o.env]: g.text } });
    expect(fromEnv.sources[key]).toBe('env');
    expect(fromEnv.options[key]).toEqual(g.value ?? SIDECAR_OPTIONS[key].kind.fromText(g.text));
    const fromFile = load({ file: file({ [key]: g.json }) });
    expect(fromFile.sources[key]).toBe('file');
    expect(fromFile.options[key]).toEqual(SIDECAR_OPTIONS[key].kind.fromJson(g.json));
    if (o.flag !== null) {
      const argv = o.kind.type === 'boolean' ? [`--${o.flag}`] : [`--${o.flag}`, g.text];
      const fromFlag = load({ argv });
      expect(fromFlag.sources[key]).toBe('flag');
      expect(fromFlag.options[key]).toEqual(fromEnv.options[key]);
    }
  });

  it('loads as its default when nothing gives it', () => {
    const { options, sources } = load({});
    for (const key of KEYS) {
      expect(sources[key]).toBe('default');
      expect(options[key]).toEqual(SIDECAR_OPTIONS[key].default);
    }
    expect(options.port).toBe(8080);
    expect(options.metricsPublic).toBe(false);
    expect(options.redisUrl).toBeUndefined();
  });

  it("has the sidecar's own defaults (src/http/sidecar.ts, src/http/server.ts)", () => {
    const { options } = load({});
    expect(options.dataDir).toBe(defaultSidecarOpts.dataDir);
    expect(options.host).toBe(defaultSidecarOpts.host);
    expect(options.port).toBe(defaultSidecarOpts.port);
    expect(options.bodyLimit).toBe(defaultHttpOpts.bodyLimit);
    expect(options.logLevel).toBe(defaultHttpOpts.logLevel);
    expect(options.guessLimitMax).toBe(defaultHttpOpts.guessLimit.max);
    expect(options.guessLimitWindowMs).toBe(defaultHttpOpts.guessLimit.windowMs);
    expect(options.metricsPublic).toBe(
      (defaultHttpOpts as { metricsPublic?: boolean }).metricsPublic ?? false,
    );
  });

  it('parses booleans and integers in their usual spellings', () => {
    for (const t of ['true', 'TRUE', '1', 'yes', 'on']) {
      expect(load({ env: { SPCHAIN_METRICS_PUBLIC: t } }).options.metricsPublic).toBe(true);
    }
    for (const t of ['false', '0', 'no', 'off']) {
      expect(load({ env: { SPCHAIN_METRICS_PUBLIC: t } }).options.metricsPublic).toBe(false);
    }
    expect(load({ env: { SPCHAIN_PORT: ' 0 ' } }).options.port).toBe(0);
    expect(load({ argv: ['--port=65535'] }).options.port).toBe(65535);
  });
});

describe('wrong values', () => {
  const cases: [string, Partial<ConfigInput>, string, OptionKey | ''][] = [
    ['port 70000 (env)', { env: { SPCHAIN_PORT: '70000' } }, 'SPCHAIN_PORT', 'port'],
    ['port 70000 (flag)', { argv: ['--port', '70000'] }, '--port', 'port'],
    ['port 70000 (file)', { file: file({ port: 70000 }) }, `${FILE}: port`, 'port'],
    ['port -1', { env: { SPCHAIN_PORT: '-1' } }, 'SPCHAIN_PORT', 'port'],
    ['port 80.5', { file: file({ port: 80.5 }) }, `${FILE}: port`, 'port'],
    ['port "8080" in the file', { file: file({ port: '8080' }) }, `${FILE}: port`, 'port'],
    ['bodyLimit x', { env: { SPCHAIN_BODY_LIMIT: 'x' } }, 'SPCHAIN_BODY_LIMIT', 'bodyLimit'],
    ['bodyLimit x (file)', { file: file({ bodyLimit: 'x' }) }, `${FILE}: bodyLimit`, 'bodyLimit'],
    ['bodyLimit 100', { argv: ['--body-limit', '100'] }, '--body-limit', 'bodyLimit'],
    ['bodyLimit 1e6', { env: { SPCHAIN_BODY_LIMIT: '1e6' } }, 'SPCHAIN_BODY_LIMIT', 'bodyLimit'],
    ['directory bad JSON', { env: { SPCHAIN_DIRECTORY: '{0:' } }, 'SPCHAIN_DIRECTORY', 'directory'],
    [
      'directory not an object',
      { env: { SPCHAIN_DIRECTORY: '["http://a"]' } },
      'SPCHAIN_DIRECTORY',
      'directory',
    ],
    [
      'directory key',
      { file: file({ directory: { a: 'http://a' } }) },
      `${FILE}: directory`,
      'directory',
    ],
    ['directory URL', { argv: ['--directory', '{"1":"ftp://b"}'] }, '--directory', 'directory'],
    ['log level loud', { env: { SPCHAIN_LOG_LEVEL: 'loud' } }, 'SPCHAIN_LOG_LEVEL', 'logLevel'],
    [
      'log level loud (file)',
      { file: file({ logLevel: 'loud' }) },
      `${FILE}: logLevel`,
      'logLevel',
    ],
    ['host with a space', { argv: ['--host', 'a b'] }, '--host', 'host'],
    ['empty host flag', { argv: ['--host', ''] }, '--host', 'host'],
    ['empty data dir in the file', { file: file({ dataDir: '' }) }, `${FILE}: dataDir`, 'dataDir'],
    ['base URL ftp', { env: { SPCHAIN_BASE_URL: 'ftp://a/fhir' } }, 'SPCHAIN_BASE_URL', 'baseUrl'],
    ['base URL relative', { argv: ['--base-url', '/fhir'] }, '--base-url', 'baseUrl'],
    ['Redis URL http', { env: { REDIS_URL: 'http://r:6379' } }, 'REDIS_URL', 'redisUrl'],
    [
      'metrics maybe',
      { env: { SPCHAIN_METRICS_PUBLIC: 'maybe' } },
      'SPCHAIN_METRICS_PUBLIC',
      'metricsPublic',
    ],
    [
      'metrics "true" in the file',
      { file: file({ metricsPublic: 'true' }) },
      `${FILE}: metricsPublic`,
      'metricsPublic',
    ],
    [
      'guess max 0',
      { env: { SPCHAIN_GUESS_LIMIT_MAX: '0' } },
      'SPCHAIN_GUESS_LIMIT_MAX',
      'guessLimitMax',
    ],
    [
      'guess window 0',
      { argv: ['--guess-limit-window-ms', '0'] },
      '--guess-limit-window-ms',
      'guessLimitWindowMs',
    ],
    [
      'ready peers -1',
      { file: file({ readyMinPeers: -1 }) },
      `${FILE}: readyMinPeers`,
      'readyMinPeers',
    ],
    ['node config null', { file: file({ nodeConfig: null }) }, `${FILE}: nodeConfig`, 'nodeConfig'],
    ['unknown file key', { file: file({ prot: 8080 }) }, `${FILE}: prot`, ''],
    ['a file naming a file', { file: file({ config: 'other.json' }) }, `${FILE}: config`, ''],
    ['file not JSON', { file: { path: FILE, text: '{"port": 80,}' } }, FILE, ''],
    ['file an array', { file: file([{ port: 80 }]) }, FILE, ''],
    ['unknown flag', { argv: ['--prot', '80'] }, '--prot', ''],
    ['flag without its value', { argv: ['--port'] }, '--port', ''],
    ['a positional argument', { argv: ['serve'] }, 'the command line', ''],
    ['a value on a boolean flag', { argv: ['--metrics-public=yes'] }, '--metrics-public', ''],
  ];

  it.each(cases)('%s is refused naming it', (_name, input, where, option) => {
    const err = refusal(() => load(input));
    expect(err.message.startsWith(where)).toBe(true);
    if (where !== '') expect(err.where).toBe(where);
    if (option !== '') {
      expect(err.option).toBe(option);
      expect(err.code).toBe('BAD_CONFIG');
    } else {
      expect(err.code).not.toBe('BAD_CONFIG');
    }
  });

  it('says what is wrong and which values are allowed', () => {
    expect(refusal(() => load({ env: { SPCHAIN_PORT: '70000' } })).message).toBe(
      'SPCHAIN_PORT must be an integer from 0 to 65535, got "70000"',
    );
    expect(refusal(() => load({ env: { SPCHAIN_LOG_LEVEL: 'loud' } })).message).toBe(
      'SPCHAIN_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    );
    expect(refusal(() => load({ file: file({ prot: 1 }) })).message).toMatch(
      /^\/etc\/spchain\/sidecar\.json: prot is not a known option \(the known ones: dataDir, host, port/,
    );
  });

  it('never quotes a secret', () => {
    const short = 'too-short-s3cret';
    for (const input of [
      { env: { SPCHAIN_EHR_TOKEN: short } },
      { env: { SPCHAIN_EHR_TOKEN: `${TOKEN} with spaces` } },
      { file: file({ ehrToken: short }) },
      { env: { REDIS_URL: 'http://user:s3cret@r:6379' } },
      { env: { REDIS_URL: 'not a url s3cret' } },
    ]) {
      const err = refusal(() => load(input));
      expect(err.message).not.toMatch(/s3cret|with spaces/);
      expect(err.message).toMatch(/^(SPCHAIN_EHR_TOKEN|REDIS_URL|\/etc)/);
    }
  });

  it('refuses a wrong value even where a higher source overrides it', () => {
    const err = refusal(() =>
      load({ argv: ['--port', '80'], env: { SPCHAIN_PORT: 'eighty' }, file: file({ port: 81 }) }),
    );
    expect(err.where).toBe('SPCHAIN_PORT');
    expect(
      refusal(() => load({ env: { SPCHAIN_PORT: '80' }, file: file({ port: 'x' }) })).where,
    ).toBe(`${FILE}: port`);
  });

  it('has no secret flags: the EHR token and the Redis URL come from the environment or file', () => {
    expect(refusal(() => load({ argv: ['--ehr-token', TOKEN] })).code).toBe('BAD_ARGUMENT');
    expect(refusal(() => load({ argv: ['--redis-url', 'redis://r'] })).code).toBe('BAD_ARGUMENT');
  });
});

describe('precedence', () => {
  it('flag > environment > file > default, option by option', () => {
    const { options, sources } = load({
      argv: ['--port', '1111', '--no-metrics-public'],
      env: { SPCHAIN_PORT: '2222', SPCHAIN_HOST: '10.0.0.1', SPCHAIN_METRICS_PUBLIC: 'true' },
      file: file({ port: 3333, host: '10.0.0.2', logLevel: 'warn', metricsPublic: true }),
    });
    expect([options.port, sources.port]).toEqual([1111, 'flag']);
    expect([options.metricsPublic, sources.metricsPublic]).toEqual([false, 'flag']);
    expect([options.host, sources.host]).toEqual(['10.0.0.1', 'env']);
    expect([options.logLevel, sources.logLevel]).toEqual(['warn', 'file']);
    expect([options.bodyLimit, sources.bodyLimit]).toEqual([32 * 1024 * 1024, 'default']);
  });

  it('takes an empty environment variable as unset, so the file or default applies', () => {
    const { options, sources } = load({
      env: { REDIS_URL: '', SPCHAIN_PORT: '', SPCHAIN_LOG_LEVEL: '' },
      file: file({ port: 3333 }),
    });
    expect(options.redisUrl).toBeUndefined();
    expect([options.port, sources.port]).toEqual([3333, 'file']);
    expect([options.logLevel, sources.logLevel]).toEqual(['info', 'default']);
  });

  it('reads paths in the file relative to the file, elsewhere as given', () => {
    const { options } = load({
      file: file({ dataDir: 'data', mappingFile: '../maps/m.json', nodeConfig: '/abs/c.json' }),
    });
    expect(options.dataDir).toBe(join('/etc/spchain', 'data'));
    expect(options.mappingFile).toBe('/etc/maps/m.json');
    expect(options.nodeConfig).toBe('/abs/c.json');
    expect(load({ env: { SPCHAIN_DATA_DIR: 'data' } }).options.dataDir).toBe('data');
    expect(load({ argv: ['--data-dir', './d'] }).options.dataDir).toBe('./d');
  });

  it('finds the configuration file from --config, else SPCHAIN_CONFIG', () => {
    expect(configFilePath({ env: {}, argv: [] })).toBeUndefined();
    expect(configFilePath({ env: { SPCHAIN_CONFIG: '' }, argv: [] })).toBeUndefined();
    expect(configFilePath({ env: { SPCHAIN_CONFIG: 'e.json' }, argv: [] })).toBe('e.json');
    expect(
      configFilePath({ env: { SPCHAIN_CONFIG: 'e.json' }, argv: ['--config', 'f.json'] }),
    ).toBe('f.json');
    expect(refusal(() => configFilePath({ env: {}, argv: ['--config', ''] })).where).toBe(
      '--config',
    );
    // --config is accepted by loadConfig too (the caller hands the file in).
    expect(load({ argv: ['--config', 'f.json'] }).options.port).toBe(8080);
  });

  it('sees --help and -h', () => {
    expect(wantsHelp(['--port', '1', '--help'])).toBe(true);
    expect(wantsHelp(['-h'])).toBe(true);
    expect(wantsHelp(['--port', '1'])).toBe(false);
  });
});
