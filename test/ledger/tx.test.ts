import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { makeLeafTx, makeRecordTx, makeRegisterTx } from '../../src/ledger/author.ts';
import { decode, encode } from '../../src/ledger/codec.ts';
import { isLedgerError } from '../../src/ledger/errors.ts';
import { computeIdHash, normaliseIdentity } from '../../src/ledger/idhash.ts';
import { createMicroblock } from '../../src/ledger/microblock.ts';
import {
  decodeBundle,
  decodeTx,
  encodeBundle,
  encodeTx,
  signBundle,
  txHash,
  verifyBundleSignature,
  verifyRegisterSignature,
} from '../../src/ledger/tx.ts';
import { makeNetwork, makePatient } from '../helpers/ledger-fixtures.ts';

const { genesis, institutions, random } = makeNetwork(2, 'txs');
const [home, other] = institutions as [(typeof institutions)[0], (typeof institutions)[0]];
const patient = makePatient(random);
const register = makeRegisterTx({
  chainId: genesis.chainId,
  idHash: random(32),
  home,
  patient,
  fee: 3,
  random,
});
const made = createMicroblock(register, { i: 2, j: 0 }, (i) => genesis.members[i]);
if (!made.ok) throw new Error('register failed');
const block = made.block;
const medical = makeRecordTx(block, home, { type: 'medical', pointer: random(32) }, 2, random);
const label = makeRecordTx(
  block,
  home,
  { type: 'label', pointer: random(32), target: txHash(medical) },
  2,
  random,
);
const leaf = makeLeafTx({
  chainId: genesis.chainId,
  block,
  home,
  newcomer: { index: other.index, chameleonKey: other.chameleonKey },
  patientSigningSecret: patient.signingSecret,
  fee: 1,
  random,
});
const all = [register, medical, label, leaf];

describe('canonical codec', () => {
  it('varints are minimal and round-trip', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => {
        const bytes = encode((w) => w.varint(n));
        return decode(bytes, 'n', (r) => r.varint('n')) === n;
      }),
    );
    expect(() => decode(Uint8Array.of(0x80, 0x00), 'n', (r) => r.varint('n'))).toThrow(
      /not a minimal varint/,
    );
    expect(() => decode(Uint8Array.of(0x05, 0x00), 'n', (r) => r.varint('n'))).toThrow(/trailing/);
    expect(() => decode(Uint8Array.of(0x85), 'n', (r) => r.varint('n'))).toThrow(/input ended/);
  });

  it('decoded byte fields are copies, also when the input is a Buffer', () => {
    const source = Buffer.from(encode((w) => w.bytes(Uint8Array.of(1, 2, 3))));
    const field = decode(source, 'b', (r) => r.bytes('b', 8));
    field[0] = 9;
    expect([...source]).toEqual([3, 1, 2, 3]);
    expect(Object.getPrototypeOf(field)).toBe(Uint8Array.prototype);
  });
});

describe('transactions', () => {
  it('every tx type round-trips through its canonical encoding', () => {
    for (const tx of all) {
      const bytes = encodeTx(tx);
      expect(encodeTx(decodeTx(bytes))).toEqual(bytes);
      expect(txHash(decodeTx(bytes))).toEqual(txHash(tx));
    }
  });

  it('sizes: register ~300 B once per patient, medical ~105 B, label ~140 B', () => {
    expect(encodeTx(register).length).toBeLessThan(330);
    expect(encodeTx(medical).length).toBeLessThan(110);
    expect(encodeTx(label).length).toBeLessThan(145);
  });

  it('register txs are signed by the patient, for this chain only', () => {
    expect(verifyRegisterSignature(genesis.chainId, register)).toBe(true);
    expect(verifyRegisterSignature('another-chain', register)).toBe(false);
    expect(verifyRegisterSignature(genesis.chainId, { ...register, home: other.index })).toBe(
      false,
    );
  });

  it('bundles carry one signature over the Merkle root of their txs', () => {
    const bundle = signBundle(
      genesis.chainId,
      home.index,
      [medical, label],
      home.signingSecret,
      random,
    );
    expect(verifyBundleSignature(genesis.chainId, bundle, home.member.signingKey)).toBe(true);
    expect(
      verifyBundleSignature(genesis.chainId, { ...bundle, txs: [medical] }, home.member.signingKey),
    ).toBe(false);
    expect(verifyBundleSignature(genesis.chainId, bundle, other.member.signingKey)).toBe(false);
    expect(decodeBundle(encodeBundle(bundle))).toEqual(bundle);
  });

  it('any mutation of an encoded tx is rejected or changes its hash', () => {
    for (const tx of all) {
      const bytes = encodeTx(tx);
      const hash = toHex(txHash(tx));
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: bytes.length - 1 }),
          fc.integer({ min: 1, max: 255 }),
          (i, x) => {
            const bad = Uint8Array.from(bytes);
            bad[i] = bad[i]! ^ x;
            try {
              return toHex(txHash(decodeTx(bad))) !== hash;
            } catch (err) {
              return isLedgerError(err);
            }
          },
        ),
        { numRuns: 100 },
      );
    }
  });

  it('rejects unknown types, seq 0, register txs in bundles and bad keys, naming the field', () => {
    expect(() => decodeTx(Uint8Array.of(9))).toThrow(/type is unknown/);
    const zeroSeq = encodeTx({ ...medical, seq: 0 });
    expect(() => decodeTx(zeroSeq)).toThrow(/seq starts at 1/);
    const badKey = encodeTx(register);
    badKey[33] = 0x05; // patientPreKey prefix
    expect(() => decodeTx(badKey)).toThrow(/patientPreKey is not a valid public key/);
    const withRegister = encode((w) => {
      w.varint(0).varint(1);
      const b = encodeTx(register);
      w.fixed(b, b.length, 'tx').fixed(new Uint8Array(64), 64, 'sig');
    });
    expect(() => decodeBundle(withRegister)).toThrow(/cannot be a register tx/);
  });
});

describe('idHash', () => {
  const key = new Uint8Array(32).fill(7);
  const cheap = { N: 2 ** 10, r: 8, p: 1 };
  const id = {
    system: 'urn:oid:2.16.840.1.113883.4.1',
    value: '123-45-6789',
    birthDate: '1980-02-29',
  };

  it('is deterministic and insensitive to formatting of the identifier', () => {
    const a = computeIdHash(key, id, cheap);
    expect(computeIdHash(key, { ...id, value: ' 123 45 6789 ' }, cheap)).toEqual(a);
    expect(computeIdHash(key, { ...id, value: '123456789' }, cheap)).toEqual(a);
  });

  it('changes with the key, the identifier or the birth date', () => {
    const a = toHex(computeIdHash(key, id, cheap));
    expect(toHex(computeIdHash(new Uint8Array(32).fill(8), id, cheap))).not.toBe(a);
    expect(toHex(computeIdHash(key, { ...id, value: '123456788' }, cheap))).not.toBe(a);
    expect(toHex(computeIdHash(key, { ...id, birthDate: '1980-03-01' }, cheap))).not.toBe(a);
  });

  it('rejects impossible dates and empty identifiers', () => {
    expect(() => normaliseIdentity({ ...id, birthDate: '1981-02-29' })).toThrow(/real date/);
    expect(() => normaliseIdentity({ ...id, birthDate: '29/02/1980' })).toThrow(/YYYY-MM-DD/);
    expect(() => normaliseIdentity({ ...id, value: ' - ' })).toThrow(/value is empty/);
  });
});
