import { scrypt, scryptAsync } from '@noble/hashes/scrypt.js';
import fc from 'fast-check';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { aeadOpen, aeadSeal } from '../../src/crypto/aead.ts';
import { toHex, utf8 } from '../../src/crypto/bytes.ts';
import { CryptoError, type CryptoErrorCode } from '../../src/crypto/errors.ts';
import {
  type KeyFileKind,
  openKeyFile,
  openKeyFileAsync,
  parseKeyFile,
  sealKeyFile,
  sealKeyFileAsync,
} from '../../src/crypto/keyfile.ts';
import { deterministicRandom } from '../../src/crypto/random.ts';

vi.mock('@noble/hashes/scrypt.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('@noble/hashes/scrypt.js')>();
  return { ...real, scrypt: vi.fn(real.scrypt), scryptAsync: vi.fn(real.scryptAsync) };
});

const FAST = { N: 2 ** 10, r: 8, p: 1 };
const PASS = 'correct horse battery staple';
const bytes = (seed: string, n: number) => deterministicRandom(seed)(n);

const institution = {
  kind: 'institution' as const,
  label: 'St. Example Hospital',
  publicKeys: { signing: bytes('pk-sign', 33), umbral: bytes('pk-umbral', 33) },
  secretKeys: { signing: bytes('sk-sign', 32), umbral: bytes('sk-umbral', 32) },
};
const patient = {
  kind: 'patient' as const,
  publicKeys: { umbral: bytes('pk-patient', 33) },
  secretKeys: { umbral: bytes('sk-patient', 32), chameleon: bytes('sk-cham', 32) },
};
const institutionFile = sealKeyFile({ ...institution, passphrase: PASS, kdf: FAST });
const patientFile = sealKeyFile({ ...patient, passphrase: PASS, kdf: FAST });

type Doc = Record<string, unknown> & {
  public: Record<string, unknown>;
  kdf: Record<string, unknown>;
  cipher: Record<string, unknown>;
};
const edit = (text: string, change: (doc: Doc) => void): string => {
  const doc = JSON.parse(text) as Doc;
  change(doc);
  return JSON.stringify(doc);
};
const b64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
const unb64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

// The associated data as the format defines it: JSON with sorted keys and no whitespace.
const canonical = (v: unknown): string =>
  typeof v === 'object' && v !== null
    ? `{${Object.keys(v)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
        .join(',')}}`
    : JSON.stringify(v);

function failure(f: () => unknown): CryptoError {
  try {
    f();
  } catch (err) {
    if (err instanceof CryptoError) return err;
    throw err;
  }
  throw new Error('expected a CryptoError');
}
const codeOf = (f: () => unknown): CryptoErrorCode => failure(f).code;

describe('key files: round trip', () => {
  it.each([
    ['institution', institution, institutionFile],
    ['patient', patient, patientFile],
  ] as const)('opens a %s key file it sealed', (kind, keys, text) => {
    const opened = openKeyFile(text, PASS);
    expect(opened.kind).toBe(kind);
    expect(opened.label).toBe('label' in keys ? keys.label : undefined);
    expect(opened.publicKeys).toEqual(keys.publicKeys);
    expect(opened.secretKeys).toEqual(keys.secretKeys);

    const header = parseKeyFile(text);
    expect(header).toEqual({
      kind,
      label: opened.label,
      publicKeys: keys.publicKeys,
      kdf: FAST,
    });
  });

  it('writes the documented, pretty-printed JSON with public keys in clear and no secrets', () => {
    const doc = JSON.parse(institutionFile);
    expect(Object.keys(doc)).toEqual([
      'format',
      'version',
      'kind',
      'label',
      'public',
      'kdf',
      'cipher',
      'ciphertext',
    ]);
    expect(doc).toMatchObject({
      format: 'spchain-keyfile',
      version: 1,
      kind: 'institution',
      label: institution.label,
      public: { signing: toHex(institution.publicKeys.signing) },
      kdf: { name: 'scrypt', N: 1024, r: 8, p: 1 },
      cipher: { name: 'xchacha20-poly1305' },
    });
    expect(unb64(doc.kdf.salt).length).toBe(16);
    expect(unb64(doc.cipher.nonce).length).toBe(24);
    expect(institutionFile).toContain('\n  "kind": "institution",\n');
    expect(institutionFile.endsWith('}\n')).toBe(true);
    for (const sk of Object.values(institution.secretKeys)) {
      expect(institutionFile).not.toContain(toHex(sk));
    }
    expect(institutionFile).not.toContain(PASS);
    expect('label' in JSON.parse(patientFile)).toBe(false);
  });

  it('binds the canonical header as associated data and seals canonical { name: hex } JSON', () => {
    const doc = JSON.parse(institutionFile);
    const { ciphertext, ...head } = doc;
    const key = scrypt(utf8(PASS), unb64(doc.kdf.salt), { ...FAST, dkLen: 32 });
    const plaintext = aeadOpen(
      key,
      unb64(doc.cipher.nonce),
      unb64(ciphertext),
      utf8(canonical(head)),
    );
    expect(new TextDecoder().decode(plaintext)).toBe(
      `{"signing":"${toHex(institution.secretKeys.signing)}","umbral":"${toHex(institution.secretKeys.umbral)}"}`,
    );
  });

  it('is reproducible with a seeded random source and fresh with the system one', () => {
    const seal = (random?: ReturnType<typeof deterministicRandom>) =>
      sealKeyFile({ ...patient, passphrase: PASS, kdf: FAST, random });
    expect(seal(deterministicRandom('seed'))).toBe(seal(deterministicRandom('seed')));
    expect(seal()).not.toBe(seal());
  });

  it('does not wipe or keep the caller’s key arrays', () => {
    const sk = bytes('mine', 32);
    const text = sealKeyFile({
      kind: 'patient',
      publicKeys: {},
      secretKeys: { k: sk },
      passphrase: PASS,
      kdf: FAST,
    });
    expect(sk).toEqual(bytes('mine', 32));
    expect(openKeyFile(text, PASS).secretKeys.k).toEqual(sk);
  });

  it('normalises the passphrase with NFKC', () => {
    const text = sealKeyFile({ ...patient, passphrase: 'caf\u00e9 \ufb01sh', kdf: FAST });
    expect(openKeyFile(text, 'cafe\u0301 fish').secretKeys).toEqual(patient.secretKeys);
  });

  it('has async forms that interoperate with the sync ones', async () => {
    const asyncFile = await sealKeyFileAsync({ ...institution, passphrase: PASS, kdf: FAST });
    expect(openKeyFile(asyncFile, PASS).secretKeys).toEqual(institution.secretKeys);
    expect((await openKeyFileAsync(institutionFile, PASS)).secretKeys).toEqual(
      institution.secretKeys,
    );
    await expect(openKeyFileAsync(institutionFile, 'nope')).rejects.toMatchObject({
      code: 'WRONG_PASSPHRASE',
    });
    await expect(openKeyFileAsync('{', PASS)).rejects.toMatchObject({ code: 'KEYFILE_INVALID' });
  });

  it('round-trips random secret maps, labels and passphrases', () => {
    const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.-]{0,15}$/);
    fc.assert(
      fc.property(
        fc.constantFrom<KeyFileKind>('institution', 'patient'),
        fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
        fc.dictionary(name, fc.uint8Array({ minLength: 1, maxLength: 40 }), { maxKeys: 3 }),
        fc.dictionary(name, fc.uint8Array({ minLength: 1, maxLength: 64 }), {
          minKeys: 1,
          maxKeys: 5,
        }),
        fc.string({ minLength: 1, maxLength: 24 }).filter((s) => s.normalize('NFKC').length > 0),
        (kind, label, publicKeys, secretKeys, passphrase) => {
          const text = sealKeyFile({ kind, label, publicKeys, secretKeys, passphrase, kdf: FAST });
          expect(openKeyFile(text, passphrase)).toEqual({ kind, label, publicKeys, secretKeys });
        },
      ),
      { numRuns: 12 },
    );
  });
});

describe('key files: wrong passphrase and tampering', () => {
  it('reports a wrong passphrase without echoing it', () => {
    const err = failure(() => openKeyFile(institutionFile, 'correct horse battery stapler'));
    expect(err.code).toBe('WRONG_PASSPHRASE');
    expect(err.message).toBe('wrong passphrase (or the key file was altered)');
    expect(JSON.stringify(err.detail)).not.toContain('stapler');
  });

  const flipHex = (h: string) => (h[0] === '0' ? '1' : '0') + h.slice(1);
  const flipB64 = (s: string) => {
    const b = unb64(s);
    b[0] = b[0]! ^ 1;
    return b64(b);
  };
  it.each<[string, (d: Doc) => void]>([
    ['a changed public key', (d) => (d.public.signing = flipHex(d.public.signing as string))],
    [
      'a swapped public key',
      (d) => ([d.public.signing, d.public.umbral] = [d.public.umbral, d.public.signing]),
    ],
    ['an added public key', (d) => (d.public.extra = 'aa')],
    ['a removed public key', (d) => delete d.public.umbral],
    ['a lowered kdf.N', (d) => (d.kdf.N = 2 ** 10)],
    ['a raised kdf.N', (d) => (d.kdf.N = 2 ** 12)],
    ['a changed kdf.r', (d) => (d.kdf.r = 4)],
    ['a changed kdf.p', (d) => (d.kdf.p = 2)],
    ['a changed kdf.salt', (d) => (d.kdf.salt = flipB64(d.kdf.salt as string))],
    ['a changed cipher.nonce', (d) => (d.cipher.nonce = flipB64(d.cipher.nonce as string))],
    ['a changed kind', (d) => (d.kind = 'patient')],
    ['a changed label', (d) => (d.label = 'Another Hospital')],
    ['a removed label', (d) => delete d.label],
    ['an emptied label', (d) => (d.label = '')],
    [
      'a truncated ciphertext',
      (d) => (d.ciphertext = b64(unb64(d.ciphertext as string).subarray(1))),
    ],
  ])('detects %s', (_, change) => {
    // Sealed at N = 2^11 so that lowering the cost is a change too.
    const text = sealKeyFile({ ...institution, passphrase: PASS, kdf: { ...FAST, N: 2 ** 11 } });
    expect(openKeyFile(text, PASS).secretKeys).toEqual(institution.secretKeys);
    const altered = edit(text, change);
    expect(altered).not.toBe(edit(text, () => {}));
    expect(codeOf(() => openKeyFile(altered, PASS))).toBe('WRONG_PASSPHRASE');
  });

  it('detects a flip in any ciphertext byte', () => {
    const ct = unb64(JSON.parse(patientFile).ciphertext);
    for (let i = 0; i < ct.length; i++) {
      const altered = edit(patientFile, (d) => {
        const b = Uint8Array.from(ct);
        b[i] = b[i]! ^ 0x80;
        d.ciphertext = b64(b);
      });
      expect(codeOf(() => openKeyFile(altered, PASS))).toBe('WRONG_PASSPHRASE');
    }
  });
});

describe('key files: malformed input', () => {
  const set = (path: string, value: unknown) => (d: Doc) => {
    const parts = path.split('.');
    const last = parts.pop()!;
    const target = parts.reduce<Record<string, unknown>>(
      (o, k) => o[k] as Record<string, unknown>,
      d,
    );
    if (value === undefined) delete target[last];
    else target[last] = value;
  };
  const zeros = (n: number) => b64(new Uint8Array(n));
  const cases: [string, string | ((d: Doc) => void), string][] = [
    ['not JSON', '{"format":', 'document'],
    ['a JSON array', '[]', 'document'],
    ['JSON null', 'null', 'document'],
    ['missing format', set('format', undefined), 'format'],
    ['missing version', set('version', undefined), 'version'],
    ['missing kind', set('kind', undefined), 'kind'],
    ['missing public', set('public', undefined), 'public'],
    ['missing kdf', set('kdf', undefined), 'kdf'],
    ['missing cipher', set('cipher', undefined), 'cipher'],
    ['missing ciphertext', set('ciphertext', undefined), 'ciphertext'],
    ['an unknown field', set('comment', 'hi'), 'comment'],
    ['another format', set('format', 'pem'), 'format'],
    ['version 2', set('version', 2), 'version'],
    ['version as a string', set('version', '1'), 'version'],
    ['an unknown kind', set('kind', 'hospital'), 'kind'],
    ['a numeric label', set('label', 7), 'label'],
    ['public as an array', set('public', []), 'public'],
    [
      'a __proto__ public key name',
      institutionFile.replace('"public": {', '"public": { "__proto__": "aa",'),
      'public',
    ],
    ['a public key name with a space', set('public.my key', 'aa'), 'public'],
    ['a non-hex public key', set('public.signing', 'zz'), 'public.signing'],
    ['an odd-length public key', set('public.signing', 'abc'), 'public.signing'],
    ['an empty public key', set('public.signing', ''), 'public.signing'],
    ['a numeric public key', set('public.signing', 12), 'public.signing'],
    ['kdf as a string', set('kdf', 'scrypt'), 'kdf'],
    ['another KDF', set('kdf.name', 'argon2id'), 'kdf.name'],
    ['an unknown kdf field', set('kdf.dkLen', 64), 'kdf.dkLen'],
    ['a missing kdf.salt', set('kdf.salt', undefined), 'kdf.salt'],
    ['N not a power of two', set('kdf.N', 1000), 'kdf.N'],
    ['N below 2^10', set('kdf.N', 2 ** 9), 'kdf.N'],
    ['N above 2^22', set('kdf.N', 2 ** 23), 'kdf.N'],
    ['N fractional', set('kdf.N', 1024.5), 'kdf.N'],
    ['N as a string', set('kdf.N', '1024'), 'kdf.N'],
    ['r = 0', set('kdf.r', 0), 'kdf.r'],
    ['r = 33', set('kdf.r', 33), 'kdf.r'],
    ['p = 0', set('kdf.p', 0), 'kdf.p'],
    ['p = 17', set('kdf.p', 17), 'kdf.p'],
    ['N × r above 512 MiB', (d) => Object.assign(d.kdf, { N: 2 ** 22, r: 2 }), 'kdf'],
    ['a 15-byte salt', set('kdf.salt', zeros(15)), 'kdf.salt'],
    ['a 65-byte salt', set('kdf.salt', zeros(65)), 'kdf.salt'],
    ['a salt that is not base64', set('kdf.salt', 'not base64 at all!!!!!!!'), 'kdf.salt'],
    ['an unpadded salt', set('kdf.salt', 'AAAAAAAAAAAAAAAAAAAAAA'), 'kdf.salt'],
    ['a non-canonical salt', set('kdf.salt', 'AAAAAAAAAAAAAAAAAAAAAB=='), 'kdf.salt'],
    ['a url-safe salt', set('kdf.salt', '-_AAAAAAAAAAAAAAAAAAAA=='), 'kdf.salt'],
    ['another cipher', set('cipher.name', 'aes-256-gcm'), 'cipher.name'],
    ['a 12-byte nonce', set('cipher.nonce', zeros(12)), 'cipher.nonce'],
    ['a missing nonce', set('cipher.nonce', undefined), 'cipher.nonce'],
    ['an unknown cipher field', set('cipher.tag', zeros(16)), 'cipher.tag'],
    ['a ciphertext that is not base64', set('ciphertext', 'zz zz'), 'ciphertext'],
    ['a ciphertext shorter than the tag', set('ciphertext', zeros(15)), 'ciphertext'],
  ];

  const table = cases.map(([what, change, field]) => [what, field, change] as const);
  it.each(table)('rejects %s as KEYFILE_INVALID naming %s', (_, field, change) => {
    const text = typeof change === 'string' ? change : edit(institutionFile, change);
    for (const read of [() => parseKeyFile(text), () => openKeyFile(text, PASS)]) {
      const err = failure(read);
      expect(err.code).toBe('KEYFILE_INVALID');
      expect(err.detail.field).toBe(field);
      expect(err.message).toMatch(/^key file: /);
      expect(err.message).toContain(field === 'document' ? 'the document' : field);
    }
  });

  it('names the N bound in words', () => {
    expect(failure(() => parseKeyFile(edit(institutionFile, set('kdf.N', 2 ** 23)))).message).toBe(
      'key file: kdf.N must be a power of two between 2^10 and 2^22',
    );
  });

  it('rejects a hostile N = 2^30 before any scrypt work', async () => {
    const hostile = edit(institutionFile, set('kdf.N', 2 ** 30));
    vi.mocked(scrypt).mockClear();
    vi.mocked(scryptAsync).mockClear();
    const started = performance.now();
    expect(failure(() => openKeyFile(hostile, PASS)).detail.field).toBe('kdf.N');
    await expect(openKeyFileAsync(hostile, PASS)).rejects.toMatchObject({
      code: 'KEYFILE_INVALID',
    });
    expect(performance.now() - started).toBeLessThan(200);
    expect(scrypt).not.toHaveBeenCalled();
    expect(scryptAsync).not.toHaveBeenCalled();
    openKeyFile(institutionFile, PASS);
    expect(scrypt).toHaveBeenCalledTimes(1);
  });

  it('reports a malformed secret map without its contents', () => {
    const doc = JSON.parse(patientFile);
    const { ciphertext: _, ...head } = doc;
    const key = scrypt(utf8(PASS), unb64(doc.kdf.salt), { ...FAST, dkLen: 32 });
    const secretHex = toHex(bytes('leak', 32));
    for (const plaintext of [
      'not json',
      '[]',
      `{"bad name":"${secretHex}"}`,
      `{"k":"${secretHex}x"}`,
    ]) {
      const ct = aeadSeal(key, unb64(doc.cipher.nonce), utf8(plaintext), utf8(canonical(head)));
      const err = failure(() => openKeyFile(JSON.stringify({ ...doc, ciphertext: b64(ct) }), PASS));
      expect(err.code).toBe('KEYFILE_INVALID');
      expect(err.message).not.toContain(secretHex);
      expect(JSON.stringify(err.detail)).not.toContain(secretHex);
    }
  });
});

describe('key files: sealing arguments', () => {
  beforeEach(() => {
    vi.mocked(scrypt).mockClear();
  });
  const base = { ...patient, passphrase: PASS, kdf: FAST };
  it.each<[string, Record<string, unknown>, RegExp]>([
    ['an empty passphrase', { passphrase: '' }, /passphrase must be a non-empty string/],
    ['a non-string passphrase', { passphrase: 42 }, /passphrase must be a non-empty string/],
    ['an unknown kind', { kind: 'hospital' }, /kind must be/],
    ['a numeric label', { label: 3 }, /label must be a string/],
    ['no secret keys', { secretKeys: {} }, /at least one key/],
    ['a bad key name', { secretKeys: { 'a b': new Uint8Array(1) } }, /not a valid key name/],
    [
      'a hex secret key',
      { secretKeys: { k: 'aa' } },
      /secretKeys\.k must be a non-empty Uint8Array/,
    ],
    ['an empty public key', { publicKeys: { k: new Uint8Array(0) } }, /publicKeys\.k must be/],
    ['N = 2^30', { kdf: { N: 2 ** 30, r: 8, p: 1 } }, /kdf\.N must be a power of two/],
    ['r = 0', { kdf: { N: 2 ** 10, r: 0, p: 1 } }, /kdf\.r/],
  ])('rejects %s', (_, change, message) => {
    const err = failure(() => sealKeyFile({ ...base, ...change } as never));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(message);
    expect(scrypt).not.toHaveBeenCalled();
  });

  it('rejects an empty passphrase when opening', () => {
    expect(codeOf(() => openKeyFile(patientFile, ''))).toBe('INVALID_ARGUMENT');
  });
});
