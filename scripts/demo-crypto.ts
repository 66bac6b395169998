/**
 * `npm run demo:crypto`: a short demonstration of the crypto core on one FHIR record: a hospital
 * encrypts it to the patient's key and anchors it with a chameleon hash, the patient grants
 * another hospital, the record is re-encrypted, verified and decrypted there, and a correction
 * keeps the anchor. It prints sizes, digests and timings, never record contents.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { toHex, utf8 } from '../src/crypto/bytes.ts';
import {
  chameleonCollision,
  chameleonHash,
  generateChameleonKey,
  verifyChameleon,
} from '../src/crypto/chameleon.ts';
import { curveBackend } from '../src/crypto/curve/backend.ts';
import { generateSigningKey, sign, verify } from '../src/crypto/sign.ts';
import * as umbral from '../src/crypto/umbral/index.ts';

const SYNTHEA = new URL('../../shared/data/synthea/', import.meta.url).pathname;

/** The first Observation of the first Synthea bundle beside the project, or a small built-in one. */
function loadRecord(): { source: string; resource: Record<string, unknown> } {
  if (existsSync(SYNTHEA)) {
    const file = readdirSync(SYNTHEA).find((f) => f.endsWith('.json'));
    if (file) {
      const bundle = JSON.parse(readFileSync(join(SYNTHEA, file), 'utf8')) as {
        entry?: { resource?: Record<string, unknown> }[];
      };
      const obs = bundle.entry?.find((e) => e.resource?.resourceType === 'Observation')?.resource;
      if (obs) return { source: 'a Synthea bundle in ../shared/data/synthea', resource: obs };
    }
  }
  return {
    source: 'built-in sample',
    resource: {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8302-2', display: 'Body Height' }] },
      valueQuantity: { value: 172.5, unit: 'cm', system: 'http://unitsofmeasure.org', code: 'cm' },
    },
  };
}

function step<T>(label: string, f: () => T): T {
  const t0 = performance.now();
  const out = f();
  console.log(`  ${label.padEnd(62)} ${(performance.now() - t0).toFixed(2).padStart(8)} ms`);
  return out;
}

const { source, resource } = loadRecord();
const plaintext = utf8(JSON.stringify(resource));
console.log(`SPChain crypto core (backend: ${curveBackend().name}, node ${process.versions.node})`);
console.log(
  `record: one ${String(resource.resourceType)} from ${source}, ${plaintext.length} bytes\n`,
);

const patient = step('patient creates a PRE key pair on their device', () => {
  const sk = umbral.generateSecretKey();
  return { sk, pk: umbral.publicKeyOf(sk) };
});
const hospitalA = step('hospital A: signing key and chameleon-hash key', () => ({
  signing: generateSigningKey(),
  chameleon: generateChameleonKey(),
}));
const hospitalB = step('hospital B: PRE key', () => {
  const sk = umbral.generateSecretKey();
  return { sk, pk: umbral.publicKeyOf(sk) };
});

const sealed = step('A encrypts the record to the patient key (Umbral)', () =>
  umbral.encrypt(patient.pk, plaintext),
);
const ctx = utf8('patient-block 7/3 | hospital-A');
const anchor = step('A anchors sha256(ciphertext) with a chameleon hash', () =>
  chameleonHash(hospitalA.chameleon.hashKey, ctx, sha256(sealed.ciphertext)),
);
const txBody = new Uint8Array([...anchor.digest, ...umbral.encodeCapsule(sealed.capsule)]);
const txSig = step('A signs the medical transaction', () =>
  sign(hospitalA.signing.secretKey, 'spchain/medical-tx', txBody),
);
console.log(
  `    capsule ${umbral.encodeCapsule(sealed.capsule).length} B, ciphertext ${sealed.ciphertext.length} B, anchor ${toHex(anchor.digest).slice(0, 16)}…`,
);

const [kfrag] = step('patient grants hospital B: 1-of-1 kfrag, signed', () =>
  umbral.generateKFrags({
    delegatingSk: patient.sk,
    receivingPk: hospitalB.pk,
    signerSk: patient.sk,
    threshold: 1,
    shares: 1,
    signDelegatingKey: true,
    signReceivingKey: true,
  }),
);
const kfragBytes = umbral.encodeKeyFrag(kfrag!);
const cfragBytes = step('A verifies the kfrag and re-encrypts the capsule', () => {
  const verified = umbral.verifyKeyFrag(umbral.decodeKeyFrag(kfragBytes), {
    verifyingPk: patient.pk,
    delegatingPk: patient.pk,
    receivingPk: hospitalB.pk,
  });
  return umbral.encodeCapsuleFrag(umbral.reencrypt(sealed.capsule, verified));
});
const received = step('B checks tx signature, anchor and cfrag proof, then decrypts', () => {
  if (!verify(hospitalA.signing.publicKey, 'spchain/medical-tx', txBody, txSig))
    throw new Error('bad tx signature');
  if (
    !verifyChameleon(
      hospitalA.chameleon.hashKey,
      ctx,
      sha256(sealed.ciphertext),
      anchor.digest,
      anchor.opening,
    )
  ) {
    throw new Error('record does not match its anchor');
  }
  const cfrag = umbral.verifyCapsuleFrag(umbral.decodeCapsuleFrag(cfragBytes), {
    capsule: sealed.capsule,
    verifyingPk: patient.pk,
    delegatingPk: patient.pk,
    receivingPk: hospitalB.pk,
  });
  return umbral.decryptReencrypted(
    hospitalB.sk,
    patient.pk,
    sealed.capsule,
    [cfrag],
    sealed.ciphertext,
  );
});
console.log(`    B recovered the record byte for byte: ${toHex(received) === toHex(plaintext)}`);

const corrected = utf8(JSON.stringify({ ...resource, status: 'entered-in-error' }));
const fixedSealed = umbral.encrypt(patient.pk, corrected);
const opening = step('A corrects the record: chameleon collision, same anchor', () =>
  chameleonCollision(
    hospitalA.chameleon.trapdoor,
    ctx,
    anchor.digest,
    sha256(fixedSealed.ciphertext),
  ),
);
const stillAnchored = verifyChameleon(
  hospitalA.chameleon.hashKey,
  ctx,
  sha256(fixedSealed.ciphertext),
  anchor.digest,
  opening,
);
console.log(`    corrected ciphertext opens the unchanged anchor: ${stillAnchored}`);
console.log(
  '\nnpm test runs the interop suite against rust-umbral; npm run bench:crypto measures speed.',
);
