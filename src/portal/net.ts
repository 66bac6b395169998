/**
 * The portal's HTTP calls to sidecars: JSON in and out, errors as Error with the server's
 * OperationOutcome text, and the patient's request signature (authz/patient-request.ts) on the
 * routes that read the patient's own data. Nothing here carries plaintext records.
 */
import { PATIENT_REQUEST_HEADER, signPatientRequest } from '../authz/patient-request.ts';
import type { RandomBytes } from '../crypto/random.ts';

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
  }
}

/** The texts of an OperationOutcome's issues, or ''. */
export function outcomeText(body: unknown): string {
  const issues = (body as { issue?: unknown } | null)?.issue;
  if (!Array.isArray(issues)) return '';
  return issues
    .map((i) => {
      const x = i as { details?: { text?: unknown }; diagnostics?: unknown };
      return typeof x.details?.text === 'string'
        ? x.details.text
        : typeof x.diagnostics === 'string'
          ? x.diagnostics
          : '';
    })
    .filter((t) => t !== '')
    .join('; ');
}

/** A base URL without its trailing slashes. */
export const trimBase = (url: string): string => url.replace(/\/+$/, '');

/**
 * A JSON request; resolves with the parsed answer when its status is one of `ok` (default any
 * 2xx), else rejects with an HttpError naming the server and its reason.
 */
export async function requestJson<T = unknown>(
  url: string,
  init: RequestInit & { ok?: readonly number[] } = {},
): Promise<{ status: number; body: T }> {
  const where = new URL(url, location.href).origin;
  let res: Response;
  try {
    res = await fetch(url, {
      ...init,
      headers: { accept: 'application/json', ...(init.headers as Record<string, string>) },
    });
  } catch {
    throw new HttpError(0, `cannot reach ${where}`);
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    body = null;
  }
  const ok = init.ok ? init.ok.includes(res.status) : res.status >= 200 && res.status < 300;
  if (!ok) {
    const reason = outcomeText(body);
    throw new HttpError(
      res.status,
      `${where} answered ${res.status}${reason ? `: ${reason}` : ''}`,
    );
  }
  return { status: res.status, body: body as T };
}

/** POSTs a JSON body. */
export function postJson<T = unknown>(
  url: string,
  body: unknown,
  init: RequestInit & { ok?: readonly number[] } = {},
): Promise<{ status: number; body: T }> {
  return requestJson<T>(url, {
    ...init,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string>) },
    body: JSON.stringify(body),
  });
}

/** Who signs patient requests: the network, the patient, and their signing secret. */
export interface PatientSigner {
  readonly chainId: string;
  readonly idHash: string;
  readonly signingSecret: Uint8Array;
  readonly random: RandomBytes;
}

/** A GET of `path` (with its query) at `base`, signed as the patient. */
export function signedGet<T = unknown>(
  base: string,
  path: string,
  signer: PatientSigner,
): Promise<{ status: number; body: T }> {
  const header = signPatientRequest({
    chainId: signer.chainId,
    method: 'GET',
    path,
    ts: Date.now(),
    idHash: signer.idHash,
    signingSecret: signer.signingSecret,
    random: signer.random,
  });
  return requestJson<T>(`${trimBase(base)}${path}`, {
    headers: { [PATIENT_REQUEST_HEADER]: header },
  });
}

/** A PUT or POST of a JSON body to `path` at `base`, signed as the patient (the exact bytes sent). */
export function signedSend<T = unknown>(
  base: string,
  method: 'PUT' | 'POST',
  path: string,
  body: unknown,
  signer: PatientSigner,
): Promise<{ status: number; body: T }> {
  const text = JSON.stringify(body);
  const header = signPatientRequest({
    chainId: signer.chainId,
    method,
    path,
    ts: Date.now(),
    body: text,
    idHash: signer.idHash,
    signingSecret: signer.signingSecret,
    random: signer.random,
  });
  return requestJson<T>(`${trimBase(base)}${path}`, {
    method,
    headers: { 'content-type': 'application/json', [PATIENT_REQUEST_HEADER]: header },
    body: text,
  });
}
