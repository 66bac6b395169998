/**
 * Institutions in one process with everything real but consensus (test/sharing/network.ts: each a
 * LevelDB ledger and sidecar store, an embedded queue, a sidecar core, sharing, and a libp2p node
 * on 127.0.0.1 whose record service is that sharing), each with its FHIR API built as the
 * composition root builds it (createFhirApi with sharing and the leaf author, the real validator
 * and the default mapping). Batches are pinned by `net.anchorAll()`.
 */
import type { Bundle } from '@medplum/fhirtypes';
import { expect } from 'vitest';
import { toHex } from '../../src/crypto/bytes.ts';
import { createFhirApi, type FhirApi, type FhirApiParts } from '../../src/http/api.ts';
import type { PatientIdentity } from '../../src/ledger/idhash.ts';
import { signGrant } from '../../src/ledger/tx.ts';
import { openShareNet, type ShareNet } from '../sharing/network.ts';
import type { TestPatient } from '../sidecar/ledger.ts';
import { TEST_ID_COST } from '../sidecar/ledger.ts';
import { AUTH, FHIR, sharedParts, TOKEN } from './harness.ts';

export interface ShareApiNet {
  readonly net: ShareNet;
  readonly apis: readonly FhirApi[];
  readonly patients: readonly TestPatient[];
  close(): Promise<void>;
}

/** `members` institutions; every patient's home is institution 0. */
export async function openShareApiNet(
  seed: string,
  identities: readonly PatientIdentity[],
  members: number,
  /** More API parts for an institution (e.g. its SMART server, on its store's database). */
  extra: (inst: ShareNet['institutions'][number]) => Partial<FhirApiParts> = () => ({}),
): Promise<ShareApiNet> {
  const net = await openShareNet({
    seed,
    homes: identities.map(() => 0),
    members,
    identities,
  });
  const parts = await sharedParts();
  const { genesis } = net.fixture;
  const primary = net.institutions[0]!.ledger;
  const apis = net.institutions.map((inst) =>
    createFhirApi({
      core: inst.core,
      ledger: inst.ledger.store,
      genesis,
      institution: { index: inst.index, name: genesis.members[inst.index]!.name },
      submitRegister: () => ({ ok: true }),
      sharing: inst.sharing,
      leafAuthor: {
        keys: net.fixture.institutions[inst.index]!,
        submitBundle: (b) => primary.submitBundle(b),
      },
      mapping: parts.mapping,
      validator: parts.validator,
      ehrToken: TOKEN,
      idHashCost: TEST_ID_COST,
      http: { logLevel: 'silent' },
      ...extra(inst),
    }),
  );
  for (const api of apis) await api.app.ready();
  return {
    net,
    apis,
    patients: net.fixture.patients,
    async close() {
      for (const api of apis) await api.app.close();
      await net.close();
    },
  };
}

/** A request to institution `at`'s API (with the EHR token unless `auth: false`). */
export async function call(
  s: ShareApiNet,
  at: number,
  method: 'GET' | 'POST' | 'PUT',
  url: string,
  body?: unknown,
  auth = true,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await s.apis[at]!.app.inject({
    method,
    url,
    headers: {
      ...(auth ? AUTH : {}),
      ...(body === undefined ? {} : FHIR),
    },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
  return { status: res.statusCode, json: JSON.parse(res.body) as Record<string, unknown> };
}

/**
 * Gives `institution` a leaf in the patient's block: the patient's signed upload grant goes to the
 * home (institution 0), which answers 202; once pinned, asking again says `present`.
 */
export async function giveLeaf(
  s: ShareApiNet,
  patient: TestPatient,
  institution: number,
): Promise<void> {
  const { chainId } = s.net.fixture.genesis;
  const leaf = {
    idHash: toHex(patient.idHash),
    institution,
    grant: toHex(signGrant(chainId, patient.idHash, institution, patient.signingSecret)),
  };
  const added = await call(s, 0, 'POST', '/spchain/leaves', leaf, false);
  expect(added.status, JSON.stringify(added.json)).toBe(202);
  await s.net.anchorAll();
  expect((await call(s, 0, 'POST', '/spchain/leaves', leaf, false)).json.state).toBe('present');
}

/** GET that must answer 200 with a Bundle. */
export async function getBundle(s: ShareApiNet, at: number, url: string): Promise<Bundle> {
  const r = await call(s, at, 'GET', url);
  expect(r.status, JSON.stringify(r.json).slice(0, 500)).toBe(200);
  expect(r.json.resourceType).toBe('Bundle');
  return r.json as unknown as Bundle;
}
