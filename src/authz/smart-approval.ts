/**
 * A patient's approval of a SMART app's authorisation request (issue 6 part 1): the sidecar has
 * no passwords; the patient proves who they are by signing, with the signing key of their pinned
 * register tx, exactly what they approve: this network, this pending request, this client, these
 * scopes, for this FHIR server. The portal (or the CLI) signs; the authorisation server verifies
 * against the ledger and only then issues a code. A signature for one request, client, scope set
 * or server is worthless for any other. Pure: no IO, randomness passed in.
 */

import type { RandomBytes } from '../crypto/random.ts';
import { sign, verify } from '../crypto/sign.ts';
import { encode } from '../ledger/codec.ts';
import type { Bytes } from '../ledger/types.ts';

export const APPROVAL_DOMAIN = 'spchain/smart-approve';

export interface ApprovalSubject {
  readonly chainId: string;
  /** The pending authorisation request's id (the authorize endpoint gives it). */
  readonly request: string;
  readonly clientId: string;
  /** The scopes to be granted, space separated, as the authorize endpoint lists them. */
  readonly scope: string;
  /** The FHIR base URL the token is for (the request's `aud`). */
  readonly aud: string;
  /** The approving patient's idHash (hex). */
  readonly idHash: string;
}

export function approvalMessage(s: ApprovalSubject): Bytes {
  return encode((w) =>
    w
      .string(s.chainId)
      .string(s.request)
      .string(s.clientId)
      .string(s.scope)
      .string(s.aud)
      .string(s.idHash),
  );
}

export function signApproval(
  s: ApprovalSubject,
  signingSecret: Bytes,
  random?: RandomBytes,
): Bytes {
  return sign(signingSecret, APPROVAL_DOMAIN, approvalMessage(s), random);
}

export function verifyApproval(s: ApprovalSubject, signature: Bytes, signingKey: Bytes): boolean {
  return verify(signingKey, APPROVAL_DOMAIN, approvalMessage(s), signature);
}
