/**
 * npm run bench:crypto — our crypto core beside rust-umbral 0.10 (WASM) in the same process and run.
 * Prints a table and writes bench/results/crypto.json. Medians in microseconds; ratio = theirs/ours
 * (> 1: we are faster). Not a test: nothing here passes or fails.
 */

import { generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import {
  chameleonCollision,
  chameleonHash,
  generateChameleonKey,
  verifyChameleon,
} from '../src/crypto/chameleon.ts';
import { curveBackend, nobleBackend, useCurveBackend } from '../src/crypto/curve/backend.ts';
import { generateSigningKey, sign, verify } from '../src/crypto/sign.ts';
import * as ours from '../src/crypto/umbral/index.ts';
import { median, printTable, sample, sideBySide, writeResults } from './lib/measure.ts';

type Oracle = typeof import('@nucypher/umbral-pre');
const theirs: Oracle = createRequire(import.meta.url)('@nucypher/umbral-pre');

const quick = process.argv.includes('--quick');
const N = quick ? 40 : 300;
const randomBytes = (n: number) => globalThis.crypto.getRandomValues(new Uint8Array(n));
const record36 = randomBytes(3686);
const record32 = randomBytes(32 * 1024);

const backend = curveBackend().name;
const alice = ours.generateSecretKey();
const alicePk = ours.publicKeyOf(alice);
const bob = ours.generateSecretKey();
const bobPk = ours.publicKeyOf(bob);
const tAlice = theirs.SecretKey.fromBEBytes(alice);
const tAlicePk = tAlice.publicKey();
const tBob = theirs.SecretKey.fromBEBytes(bob);
const tBobPk = tBob.publicKey();
const tSigner = new theirs.Signer(tAlice);

const kfragOpts = {
  delegatingSk: alice,
  receivingPk: bobPk,
  signerSk: alice,
  threshold: 1,
  shares: 1,
  signDelegatingKey: true,
  signReceivingKey: true,
};
const sealed = ours.encrypt(alicePk, record32);
const tCapsule = theirs.Capsule.fromBytes(ours.encodeCapsule(sealed.capsule));
const kfrag = ours.generateKFrags(kfragOpts)[0]!;
const kfragBytes = ours.encodeKeyFrag(kfrag);
const tKfrag = theirs.KeyFrag.fromBytes(kfragBytes).verify(tAlicePk, tAlicePk, tBobPk);
const cfrag = ours.reencrypt(sealed.capsule, kfrag);
const cfragBytes = ours.encodeCapsuleFrag(cfrag);
const tCfrag = theirs.CapsuleFrag.fromBytes(cfragBytes).verify(
  tCapsule,
  tAlicePk,
  tAlicePk,
  tBobPk,
);
const cfragOpts = {
  capsule: sealed.capsule,
  verifyingPk: alicePk,
  delegatingPk: alicePk,
  receivingPk: bobPk,
};

interface Row {
  operation: string;
  ours_us: number;
  theirs_us: number | null;
  ratio: number | null;
  ours_noble_us?: number | null;
}
const rows: Row[] = [];

function op(name: string, f: () => unknown, g: (() => unknown) | null, iterations = N): void {
  const m = sideBySide(f, g, iterations);
  rows.push({
    operation: name,
    ours_us: round(m.ours),
    theirs_us: m.theirs === null ? null : round(m.theirs),
    ratio: m.theirs === null ? null : round(m.theirs / m.ours, 2),
  });
}
const round = (x: number, digits = 1) => Number(x.toFixed(digits));

op(
  'encrypt 3.6 KiB',
  () => ours.encrypt(alicePk, record36),
  () => theirs.encrypt(tAlicePk, record36),
);
op(
  'encrypt 32 KiB',
  () => ours.encrypt(alicePk, record32),
  () => theirs.encrypt(tAlicePk, record32),
);
op(
  'decrypt original 32 KiB',
  () => ours.decryptOriginal(alice, sealed.capsule, sealed.ciphertext),
  () => theirs.decryptOriginal(tAlice, tCapsule, sealed.ciphertext),
);
op(
  'generate 1-of-1 kfrag',
  () => ours.generateKFrags(kfragOpts),
  () => theirs.generateKFrags(tAlice, tBobPk, tSigner, 1, 1, true, true),
);
op(
  'verify kfrag (decode + verify)',
  () =>
    ours.verifyKeyFrag(ours.decodeKeyFrag(kfragBytes), {
      verifyingPk: alicePk,
      delegatingPk: alicePk,
      receivingPk: bobPk,
    }),
  () => theirs.KeyFrag.fromBytes(kfragBytes).verify(tAlicePk, tAlicePk, tBobPk),
);
op(
  're-encrypt',
  () => ours.reencrypt(sealed.capsule, kfrag),
  () => theirs.reencrypt(tCapsule, tKfrag),
);
op(
  'verify cfrag (decode + verify)',
  () => ours.verifyCapsuleFrag(ours.decodeCapsuleFrag(cfragBytes), cfragOpts),
  () => theirs.CapsuleFrag.fromBytes(cfragBytes).verify(tCapsule, tAlicePk, tAlicePk, tBobPk),
);
op(
  'decrypt re-encrypted 32 KiB',
  () => ours.decryptReencrypted(bob, alicePk, sealed.capsule, [cfrag], sealed.ciphertext),
  () => theirs.decryptReencrypted(tBob, tAlicePk, tCapsule, [tCfrag], sealed.ciphertext),
);

const signer = generateSigningKey();
const txBytes = randomBytes(200);
const txSig = sign(signer.secretKey, 'spchain/tx', txBytes);
op(
  'sign (ECDSA secp256k1, 200 B)',
  () => sign(signer.secretKey, 'spchain/tx', txBytes),
  () => tSigner.sign(txBytes),
);
op(
  'verify (ECDSA secp256k1, 200 B)',
  () => verify(signer.publicKey, 'spchain/tx', txBytes, txSig),
  (() => {
    const s = tSigner.sign(txBytes);
    return () => s.verify(tAlicePk, txBytes);
  })(),
);

// The alternative signature scheme we measured against (see src/crypto/sign.ts).
const ed = generateKeyPairSync('ed25519');
const edSig = nodeSign(null, txBytes, ed.privateKey);
op(
  'verify (Ed25519 node:crypto, 200 B; not used)',
  () => nodeVerify(null, txBytes, ed.publicKey, edSig),
  null,
);

// Chameleon hash over a medical tx's record digest (no umbral-pre counterpart).
const ch = generateChameleonKey();
const chCtx = randomBytes(40);
const chMsg = randomBytes(120);
const chOut = chameleonHash(ch.hashKey, chCtx, chMsg);
op('CH hash', () => chameleonHash(ch.hashKey, chCtx, chMsg), null);
op('CH verify', () => verifyChameleon(ch.hashKey, chCtx, chMsg, chOut.digest, chOut.opening), null);
op(
  'CH collision (includes its self-check)',
  () => chameleonCollision(ch.trapdoor, chCtx, chOut.digest, chMsg),
  null,
);

// The fallback when the native addon cannot load (browsers): fewer iterations, Umbral ops only.
const nobleN = quick ? 5 : 30;
const nobleCases: [string, () => unknown][] = [
  ['encrypt 32 KiB', () => ours.encrypt(alicePk, record32)],
  ['re-encrypt', () => ours.reencrypt(sealed.capsule, kfrag)],
  [
    'verify cfrag (decode + verify)',
    () => ours.verifyCapsuleFrag(ours.decodeCapsuleFrag(cfragBytes), cfragOpts),
  ],
  [
    'decrypt re-encrypted 32 KiB',
    () => ours.decryptReencrypted(bob, alicePk, sealed.capsule, [cfrag], sealed.ciphertext),
  ],
];
const nativeBackend = curveBackend();
useCurveBackend(nobleBackend);
for (const [name, f] of nobleCases) {
  const row = rows.find((r) => r.operation === name)!;
  row.ours_noble_us = round(median(sample(f, nobleN, 3)));
}
useCurveBackend(nativeBackend);

// The paper's sharing case (section 6): re-key, then re-encrypt 50 records of 32 KiB for the
// receiver (the paper reports 21 s + 5 s). With Umbral only the 98-byte capsule is re-encrypted, so
// the cost does not grow with record size. Also the receiver's side: verify 50 cfrags and decrypt.
const records = Array.from({ length: 50 }, () => ours.encrypt(alicePk, record32));
const tRecords = records.map((r) => theirs.Capsule.fromBytes(ours.encodeCapsule(r.capsule)));
const runs = quick ? 3 : 9;
const timeMs = (f: () => unknown) => median(sample(f, runs, 1)) / 1000;
const sharing = {
  records: 50,
  record_bytes: 32 * 1024,
  ours_rekey_ms: round(
    timeMs(() => ours.generateKFrags(kfragOpts)),
    3,
  ),
  theirs_rekey_ms: round(
    timeMs(() => theirs.generateKFrags(tAlice, tBobPk, tSigner, 1, 1, true, true)),
    3,
  ),
  ours_reencrypt_50_ms: round(
    timeMs(() => records.map((r) => ours.reencrypt(r.capsule, kfrag))),
    2,
  ),
  theirs_reencrypt_50_ms: round(
    timeMs(() => tRecords.map((c) => theirs.reencrypt(c, tKfrag))),
    2,
  ),
  ours_receive_50_ms: round(
    timeMs(() =>
      records.map((r) => {
        const c = ours.verifyCapsuleFrag(
          ours.decodeCapsuleFrag(ours.encodeCapsuleFrag(ours.reencrypt(r.capsule, kfrag))),
          {
            ...cfragOpts,
            capsule: r.capsule,
          },
        );
        return ours.decryptReencrypted(bob, alicePk, r.capsule, [c], r.ciphertext);
      }),
    ),
    2,
  ),
  paper_rekey_ms: 21_000,
  paper_reencrypt_50_ms: 5_000,
};

console.log(
  `crypto benchmark: node ${process.versions.node}, backend ${backend}, ${cpus().length} cores, ${cpus()[0]?.model}`,
);
console.log(
  `medians in µs; ratio = umbral-pre / ours (> 1: ours faster); noble = our pure-JS fallback\n`,
);
printTable(rows.map((r) => ({ ...r, ours_noble_us: r.ours_noble_us ?? null })));
console.log('\nsharing case (paper section 6: 21 s re-key + 5 s re-encrypt for 50 records):');
printTable([sharing]);

const out = new URL('./results/crypto.json', import.meta.url).pathname;
writeResults(out, {
  benchmark: 'crypto',
  command: 'npm run bench:crypto',
  generated_at: new Date().toISOString(),
  node: process.versions.node,
  backend,
  cpu: cpus()[0]?.model,
  cores: cpus().length,
  iterations: N,
  unit: 'microseconds (median)',
  operations: rows,
  sharing_case: sharing,
});
console.log(`\nwrote ${out}`);
