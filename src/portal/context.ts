/**
 * What the portal's sections share: the opened keys (memory only), the patient's registration as
 * this browser knows it (localStorage: not secret; the idHash is on the ledger), the network's
 * institutions as the home sidecar lists them, and the answers of the sidecars to the questions
 * every section asks (who holds my records, where are they).
 */
import type { RandomBytes } from '../crypto/random.ts';
import type { PatientKeySession } from './keys.ts';
import { type PatientSigner, requestJson, trimBase } from './net.ts';

export const STATE_STORAGE_KEY = 'spchain.portal.patient';

/** A grant made from this browser. */
export interface GrantMade {
  readonly consentId: string;
  readonly grantee: number;
  readonly granteeName: string;
  /** ms, exclusive. */
  readonly end: number;
  /** The institutions that accepted it. */
  readonly holders: readonly number[];
  revoked?: boolean;
}

export interface PatientState {
  idHash?: string;
  chainId?: string;
  home?: number;
  block?: { i: number; j: number };
  grants: GrantMade[];
}

/** One member as GET /spchain/institutions lists it. */
export interface Institution {
  readonly index: number;
  readonly name: string;
  readonly reputation: number;
  readonly inGroup: boolean;
  readonly preKey: string;
  readonly signingKey: string;
  readonly chameleonKey?: string;
  readonly url?: string;
}

export interface Directory {
  readonly self: number;
  readonly chainId: string;
  readonly minFee?: number;
  readonly institutions: readonly Institution[];
}

/** GET /spchain/patients/:idHash/registration. */
export interface Registration {
  readonly registered: boolean;
  readonly block?: { i: number; j: number };
  readonly home?: number;
  readonly leaves?: readonly { institution: number; seq: number }[];
}

export interface PortalContext {
  session: PatientKeySession | null;
  state: PatientState;
  directory: Directory | null;
  readonly random: RandomBytes;
  readonly storage: Storage;
  /** This page's sidecar (the patient's home): its origin, and the issuer of share links. */
  readonly origin: string;
  /** Persists `state`, then updates what the page enables. */
  save(): void;
  /** Updates which controls are enabled, from the keys and the state. */
  refresh(): void;
}

export function loadState(storage: Storage): PatientState {
  try {
    const v = JSON.parse(storage.getItem(STATE_STORAGE_KEY) ?? 'null') as PatientState | null;
    if (v && typeof v === 'object' && Array.isArray(v.grants)) return v;
  } catch {
    // a damaged entry is replaced
  }
  return { grants: [] };
}

export function saveState(storage: Storage, state: PatientState): void {
  storage.setItem(STATE_STORAGE_KEY, JSON.stringify(state));
}

function isInstitution(v: unknown): v is Institution {
  const x = v as Institution;
  return (
    typeof x === 'object' &&
    x !== null &&
    Number.isSafeInteger(x.index) &&
    typeof x.name === 'string' &&
    typeof x.preKey === 'string' &&
    typeof x.signingKey === 'string'
  );
}

/** The network's members from the home sidecar (GET /spchain/institutions). */
export async function loadDirectory(ctx: PortalContext): Promise<Directory> {
  const { body } = await requestJson<Record<string, unknown>>(`${ctx.origin}/spchain/institutions`);
  const list = body.institutions;
  if (
    typeof body.chainId !== 'string' ||
    !Number.isSafeInteger(body.self) ||
    !Array.isArray(list) ||
    !list.every(isInstitution)
  ) {
    throw new Error('the hospital sidecar did not list the institutions as expected');
  }
  const directory: Directory = {
    self: body.self as number,
    chainId: body.chainId,
    ...(Number.isSafeInteger(body.minFee) ? { minFee: body.minFee as number } : {}),
    institutions: list.map((i) => ({
      ...i,
      reputation: typeof i.reputation === 'number' ? i.reputation : 0,
      inGroup: i.inGroup === true,
      ...(typeof i.url === 'string' ? { url: trimBase(i.url) } : {}),
    })),
  };
  ctx.directory = directory;
  return directory;
}

export const memberOf = (d: Directory, index: number): Institution | undefined =>
  d.institutions.find((i) => i.index === index);

/** The patient's registration as the home sidecar sees it. */
export async function loadRegistration(ctx: PortalContext, idHash: string): Promise<Registration> {
  const { body } = await requestJson<Registration>(
    `${ctx.origin}/spchain/patients/${idHash}/registration`,
  );
  return body;
}

/** Institutions holding at least one pinned record of the patient (leaf seq > 0). */
export function holdersOf(reg: Registration): number[] {
  return (reg.leaves ?? []).filter((l) => l.seq > 0).map((l) => l.institution);
}

/** The signer of the patient's requests; throws when keys or registration are missing. */
export function signerOf(ctx: PortalContext): PatientSigner {
  const { session, state } = ctx;
  if (!session) throw new Error('unlock your keys first');
  if (!state.idHash || !state.chainId) throw new Error('register first');
  return {
    chainId: state.chainId,
    idHash: state.idHash,
    signingSecret: session.signingSecret,
    random: ctx.random,
  };
}

/** The URL of institution `index`: this page's own origin for the home, else the directory's. */
export function urlOf(ctx: PortalContext, d: Directory, index: number): string | undefined {
  if (index === d.self) return ctx.origin;
  return memberOf(d, index)?.url;
}
