/**
 * Interop with rust-umbral 0.10 both ways: what we produce, they accept and use, and the reverse.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UMBRAL_U } from '../../src/crypto/curve/point.ts';
import { isCryptoError } from '../../src/crypto/errors.ts';
import * as ours from '../../src/crypto/umbral/index.ts';
import { backends, nativeBackend, useCurveBackend } from '../helpers/backends.ts';
import { oracle as theirs } from '../helpers/umbral-oracle.ts';

const text = (s: string) => new TextEncoder().encode(s);
const record = text(JSON.stringify({ resourceType: 'Observation', status: 'final', value: 42 }));

function keyPair() {
  const sk = ours.generateSecretKey();
  return { sk, pk: ours.publicKeyOf(sk), theirSk: theirs.SecretKey.fromBEBytes(sk) };
}

function flip(bytes: Uint8Array, index: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[index] = out[index]! ^ 0x01;
  return out;
}

describe.each(backends)('Umbral interop with rust-umbral ($name backend)', (backend) => {
  beforeAll(() => useCurveBackend(backend));
  afterAll(() => useCurveBackend(nativeBackend));

  const alice = keyPair(); // delegator (the patient)
  const bob = keyPair(); // receiver (the granted institution)
  const signer = keyPair(); // signs the kfrags
  const theirPk = (pk: Uint8Array) => theirs.PublicKey.fromCompressedBytes(pk);
  /** One signed 1-of-1 kfrag from alice to bob. */
  const aliceToBob = () =>
    ours.generateKFrags({
      delegatingSk: alice.sk,
      receivingPk: bob.pk,
      signerSk: signer.sk,
      threshold: 1,
      shares: 1,
      signDelegatingKey: true,
      signReceivingKey: true,
    })[0];

  it('derives the same U and the same public keys', () => {
    const [x, y] = new theirs.Parameters().u.coordinates()!;
    expect(UMBRAL_U.slice(1)).toEqual(x);
    expect(UMBRAL_U[0]).toBe(2 + (y[31]! & 1));
    expect(ours.publicKeyOf(alice.sk)).toEqual(alice.theirSk.publicKey().toCompressedBytes());
  });

  it('our ciphertext decrypts in theirs, and theirs in ours', () => {
    const mine = ours.encrypt(alice.pk, record);
    const theirCapsule = theirs.Capsule.fromBytes(ours.encodeCapsule(mine.capsule));
    expect(theirs.decryptOriginal(alice.theirSk, theirCapsule, mine.ciphertext)).toEqual(record);

    const [capsule, ciphertext] = theirs.encrypt(theirPk(alice.pk), record);
    const decoded = ours.decodeCapsule(capsule.toBytes());
    expect(ours.encodeCapsule(decoded)).toEqual(capsule.toBytes());
    expect(ours.capsuleBytesSimple(decoded)).toEqual(capsule.toBytesSimple());
    expect(ours.decryptOriginal(alice.sk, decoded, ciphertext)).toEqual(record);
  });

  it('several plaintexts under one capsule: each decrypts in theirs, and re-encrypted in ours', () => {
    const plaintexts = [record, text('second record'), new Uint8Array(0), record];
    const { capsule, ciphertexts } = ours.encryptMany(alice.pk, plaintexts);
    // Fresh nonces: equal plaintexts give different ciphertexts.
    expect(ciphertexts[0]).not.toEqual(ciphertexts[3]);
    expect(
      new Set(ciphertexts.map((c) => Buffer.from(c.subarray(0, 24)).toString('hex'))).size,
    ).toBe(4);
    const theirCapsule = theirs.Capsule.fromBytes(ours.encodeCapsule(capsule));
    ciphertexts.forEach((c, k) => {
      expect(theirs.decryptOriginal(alice.theirSk, theirCapsule, c)).toEqual(plaintexts[k]);
    });
    const kfrag = aliceToBob();
    const cfrag = ours.verifyCapsuleFrag(
      ours.decodeCapsuleFrag(ours.encodeCapsuleFrag(ours.reencrypt(capsule, kfrag!))),
      {
        capsule,
        verifyingPk: signer.pk,
        delegatingPk: alice.pk,
        receivingPk: bob.pk,
      },
    );
    ciphertexts.forEach((c, k) => {
      expect(ours.decryptReencrypted(bob.sk, alice.pk, capsule, [cfrag], c)).toEqual(plaintexts[k]);
    });
    // Another patient's key opens none of them.
    expect(() => ours.decryptOriginal(bob.sk, capsule, ciphertexts[1]!)).toThrow();
  });

  it('signatures cross-verify', () => {
    const msg = text('grant');
    const mine = ours.signUmbral(signer.sk, msg);
    expect(theirs.Signature.fromBEBytes(mine).verify(theirPk(signer.pk), msg)).toBe(true);
    const theirSig = new theirs.Signer(signer.theirSk).sign(msg).toBEBytes();
    expect(ours.verifyUmbral(signer.pk, msg, theirSig)).toBe(true);
    expect(ours.verifyUmbral(signer.pk, text('other'), theirSig)).toBe(false);
  });

  it('our kfrags verify and re-encrypt in theirs; their cfrags verify and decrypt in ours', () => {
    const { capsule, ciphertext } = ours.encrypt(alice.pk, record);
    const kfrag = aliceToBob();
    const theirKFrag = theirs.KeyFrag.fromBytes(ours.encodeKeyFrag(kfrag!)).verify(
      theirPk(signer.pk),
      theirPk(alice.pk),
      theirPk(bob.pk),
    );
    expect(theirKFrag.toBytes()).toEqual(ours.encodeKeyFrag(kfrag!));
    const theirCapsule = theirs.Capsule.fromBytes(ours.encodeCapsule(capsule));
    const theirCFrag = theirs.reencrypt(theirCapsule, theirKFrag);

    const cfrag = ours.verifyCapsuleFrag(ours.decodeCapsuleFrag(theirCFrag.toBytes()), {
      capsule,
      verifyingPk: signer.pk,
      delegatingPk: alice.pk,
      receivingPk: bob.pk,
    });
    expect(ours.encodeCapsuleFrag(cfrag)).toEqual(theirCFrag.toBytes());
    expect(ours.decryptReencrypted(bob.sk, alice.pk, capsule, [cfrag], ciphertext)).toEqual(record);
  });

  it('their kfrags verify and re-encrypt in ours; our cfrags verify and decrypt in theirs', () => {
    const [theirCapsule, ciphertext] = theirs.encrypt(theirPk(alice.pk), record);
    const theirKFrags = theirs.generateKFrags(
      alice.theirSk,
      theirPk(bob.pk),
      new theirs.Signer(signer.theirSk),
      1,
      1,
      false,
      true,
    );
    const kfrag = ours.verifyKeyFrag(ours.decodeKeyFrag(theirKFrags[0]!.toBytes()), {
      verifyingPk: signer.pk,
      receivingPk: bob.pk,
    });
    const capsule = ours.decodeCapsule(theirCapsule.toBytes());
    const cfrag = ours.reencrypt(capsule, kfrag);

    const theirCFrag = theirs.CapsuleFrag.fromBytes(ours.encodeCapsuleFrag(cfrag)).verify(
      theirCapsule,
      theirPk(signer.pk),
      theirPk(alice.pk),
      theirPk(bob.pk),
    );
    expect(
      theirs.decryptReencrypted(
        bob.theirSk,
        theirPk(alice.pk),
        theirCapsule,
        [theirCFrag],
        ciphertext,
      ),
    ).toEqual(record);
  });

  it('a mixed 2-of-3 decrypts in both: one cfrag from each implementation', () => {
    const { capsule, ciphertext } = ours.encrypt(alice.pk, record);
    const kfrags = ours.generateKFrags({
      delegatingSk: alice.sk,
      receivingPk: bob.pk,
      signerSk: signer.sk,
      threshold: 2,
      shares: 3,
      signDelegatingKey: true,
      signReceivingKey: true,
    });
    const theirCapsule = theirs.Capsule.fromBytes(ours.encodeCapsule(capsule));
    const theirKFrag = theirs.KeyFrag.fromBytes(ours.encodeKeyFrag(kfrags[2]!)).verify(
      theirPk(signer.pk),
      theirPk(alice.pk),
      theirPk(bob.pk),
    );
    const fromTheirs = theirs.reencrypt(theirCapsule, theirKFrag).toBytes();
    const fromOurs = ours.encodeCapsuleFrag(ours.reencrypt(capsule, kfrags[0]!));
    const verifyOpts = {
      capsule,
      verifyingPk: signer.pk,
      delegatingPk: alice.pk,
      receivingPk: bob.pk,
    };

    const mixed = [fromOurs, fromTheirs].map((b) =>
      ours.verifyCapsuleFrag(ours.decodeCapsuleFrag(b), verifyOpts),
    );
    expect(ours.decryptReencrypted(bob.sk, alice.pk, capsule, mixed, ciphertext)).toEqual(record);
    // One share is not enough.
    expect(() =>
      ours.decryptReencrypted(bob.sk, alice.pk, capsule, mixed.slice(0, 1), ciphertext),
    ).toThrow();

    const theirMixed = [fromOurs, fromTheirs].map((b) =>
      theirs.CapsuleFrag.fromBytes(b).verify(
        theirCapsule,
        theirPk(signer.pk),
        theirPk(alice.pk),
        theirPk(bob.pk),
      ),
    );
    expect(
      theirs.decryptReencrypted(
        bob.theirSk,
        theirPk(alice.pk),
        theirCapsule,
        theirMixed,
        ciphertext,
      ),
    ).toEqual(record);
  });

  describe('tampering is rejected by both', () => {
    const { capsule, ciphertext } = ours.encrypt(alice.pk, record);
    const capsuleBytes = ours.encodeCapsule(capsule);
    const kfrag = aliceToBob();
    const kfragBytes = ours.encodeKeyFrag(kfrag!);
    const cfragBytes = ours.encodeCapsuleFrag(ours.reencrypt(capsule, kfrag!));
    const verifyOpts = {
      capsule,
      verifyingPk: signer.pk,
      delegatingPk: alice.pk,
      receivingPk: bob.pk,
    };

    it('capsules: every single-bit flip in E, V or s', () => {
      // Offsets of the last byte of E, V and s inside the MessagePack encoding (3 + 33, +35, +34).
      for (const index of [5, 35, 40, 70, 75, 104]) {
        const bad = flip(capsuleBytes, index);
        let oursRejected = false;
        try {
          ours.decodeCapsule(bad);
        } catch (err) {
          oursRejected = isCryptoError(err);
        }
        expect(oursRejected).toBe(true);
        expect(() => theirs.Capsule.fromBytes(bad)).toThrow();
      }
    });

    it('kfrags: altered key, commitment, precursor or signature', () => {
      // key (byte 42..73), precursor (76..108), commitment (112..144), signature for proxy (147..)
      for (const index of [60, 100, 130, 180]) {
        const bad = flip(kfragBytes, index);
        const oursOk = (() => {
          try {
            ours.verifyKeyFrag(ours.decodeKeyFrag(bad), {
              verifyingPk: signer.pk,
              delegatingPk: alice.pk,
              receivingPk: bob.pk,
            });
            return true;
          } catch (err) {
            return !isCryptoError(err);
          }
        })();
        expect(oursOk).toBe(false);
        expect(() =>
          theirs.KeyFrag.fromBytes(bad).verify(
            theirPk(signer.pk),
            theirPk(alice.pk),
            theirPk(bob.pk),
          ),
        ).toThrow();
      }
    });

    it('cfrags: any altered field', () => {
      const theirCapsule = theirs.Capsule.fromBytes(capsuleBytes);
      for (let index = 4; index < cfragBytes.length; index += 23) {
        const bad = flip(cfragBytes, index);
        expect(() => ours.verifyCapsuleFrag(ours.decodeCapsuleFrag(bad), verifyOpts)).toThrow();
        expect(() =>
          theirs.CapsuleFrag.fromBytes(bad).verify(
            theirCapsule,
            theirPk(signer.pk),
            theirPk(alice.pk),
            theirPk(bob.pk),
          ),
        ).toThrow();
      }
    });

    it('a cfrag is not accepted for another capsule', () => {
      const other = ours.encrypt(alice.pk, record).capsule;
      expect(() =>
        ours.verifyCapsuleFrag(ours.decodeCapsuleFrag(cfragBytes), {
          ...verifyOpts,
          capsule: other,
        }),
      ).toThrow(/re-encryption proof/);
    });

    it('ciphertexts: nonce, body or tag', () => {
      const theirCapsule = theirs.Capsule.fromBytes(capsuleBytes);
      for (const index of [0, 30, ciphertext.length - 1]) {
        const bad = flip(ciphertext, index);
        expect(() => ours.decryptOriginal(alice.sk, capsule, bad)).toThrow(/authentication failed/);
        expect(() => theirs.decryptOriginal(alice.theirSk, theirCapsule, bad)).toThrow();
      }
      expect(() => ours.decryptOriginal(bob.sk, capsule, ciphertext)).toThrow(/authentication/);
    });
  });
});
