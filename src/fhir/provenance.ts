/**
 * FHIR Provenance for every record this sidecar serves (issue 5 part 7): which institution wrote
 * it, which ledger tx anchors the version served, and where that tx is pinned.
 *
 *   Provenance.id          the tx hash (hex), so the same record version always has the same one
 *   target                 the record's resources, versioned (`Observation/x/_history/2`)
 *   recorded               when the version became visible here (lastUpdated of the served version)
 *   activity               v3-DataOperation CREATE (a medical tx) or UPDATE (a correction, label tx)
 *   agent[0]               the author institution: { identifier: urn:spchain:institution|index,
 *                          display: its name }, type provenance-participant-type#author
 *   entity                 for a correction: the medical tx it corrects (role revision)
 *   extension              urn:spchain:fhir:ledger: tx, kind, seq, block (i/j), batch, batchHash,
 *                          keyblock, origin, supersedes, verified, cached (a shared record), or
 *                          tx, state, batch, index (this institution's own record)
 *
 * A shared record's extension says `verified`: the receiver checked it against its own pinned
 * chain before decrypting it (src/sidecar/share-receiver.ts); a record that failed is not served
 * and has no Provenance, only a warning.
 */
import type { Extension, Provenance } from '@medplum/fhirtypes';
import type { AnchorStatus } from '../sidecar/anchor.ts';
import type { SharedProvenance } from '../sidecar/share.ts';

export const LEDGER_EXTENSION = 'urn:spchain:fhir:ledger';
export const INSTITUTION_SYSTEM = 'urn:spchain:institution';
export const TX_SYSTEM = 'urn:spchain:tx';

const DATA_OPERATION = 'http://terminology.hl7.org/CodeSystem/v3-DataOperation';
const PARTICIPANT_TYPE = 'http://terminology.hl7.org/CodeSystem/provenance-participant-type';

interface Author {
  readonly index: number;
  readonly name: string;
}

function base(
  id: string,
  targets: readonly string[],
  recorded: string,
  author: Author,
  correction: boolean,
  ledger: Extension[],
): Provenance {
  return {
    resourceType: 'Provenance',
    id,
    target: targets.map((reference) => ({ reference })),
    recorded,
    activity: {
      coding: [
        correction
          ? { system: DATA_OPERATION, code: 'UPDATE', display: 'revise' }
          : { system: DATA_OPERATION, code: 'CREATE', display: 'create' },
      ],
    },
    agent: [
      {
        type: { coding: [{ system: PARTICIPANT_TYPE, code: 'author', display: 'Author' }] },
        who: {
          identifier: { system: INSTITUTION_SYSTEM, value: String(author.index) },
          display: author.name,
        },
      },
    ],
    extension: [{ url: LEDGER_EXTENSION, extension: ledger }],
  };
}

/** The Provenance of a record shared by another institution and verified here. */
export function sharedProvenance(
  p: SharedProvenance,
  targets: readonly string[],
  recorded: string,
): Provenance {
  const ledger: Extension[] = [
    { url: 'tx', valueString: p.txHash },
    { url: 'kind', valueCode: p.kind },
    { url: 'seq', valueUnsignedInt: p.seq },
    { url: 'block', valueString: `${p.block.i}/${p.block.j}` },
    { url: 'batch', valueUnsignedInt: p.batchHeight },
    { url: 'batchHash', valueString: p.batchHash },
    { url: 'keyblock', valueUnsignedInt: p.keyblockHeight },
    { url: 'origin', valueString: p.origin },
    ...p.supersedes.map((tx) => ({ url: 'supersedes', valueString: tx })),
    { url: 'verified', valueBoolean: true },
    { url: 'cached', valueBoolean: p.cached },
  ];
  const prov = base(
    p.txHash,
    targets,
    recorded,
    { index: p.holder, name: p.holderName },
    p.kind === 'label',
    ledger,
  );
  if (p.kind === 'label') {
    prov.entity = [
      { role: 'revision', what: { identifier: { system: TX_SYSTEM, value: p.origin } } },
    ];
  }
  return prov;
}

/** The Provenance of one of this institution's own records (the tx it signed, and where it is). */
export function ownProvenance(opts: {
  readonly tx: string;
  readonly targets: readonly string[];
  readonly recorded: string;
  readonly institution: Author;
  readonly block?: { readonly i: number; readonly j: number };
  readonly status: AnchorStatus;
  /** The record's version: above 1 it is a correction. */
  readonly version: number;
}): Provenance {
  const s = opts.status;
  const ledger: Extension[] = [
    { url: 'tx', valueString: opts.tx },
    { url: 'kind', valueCode: opts.version > 1 ? 'label' : 'medical' },
    { url: 'state', valueCode: s.state },
    ...(opts.block ? [{ url: 'block', valueString: `${opts.block.i}/${opts.block.j}` }] : []),
    ...(s.state === 'pinned'
      ? [
          { url: 'batch', valueUnsignedInt: s.height },
          { url: 'index', valueUnsignedInt: s.index },
        ]
      : []),
  ];
  return base(opts.tx, opts.targets, opts.recorded, opts.institution, opts.version > 1, ledger);
}

/** The ledger extension's value `name` of a Provenance (tests, clients). */
export function ledgerValue(p: Provenance, name: string): unknown {
  const ext = p.extension?.find((e) => e.url === LEDGER_EXTENSION)?.extension ?? [];
  const e = ext.find((x) => x.url === name);
  return e?.valueString ?? e?.valueCode ?? e?.valueUnsignedInt ?? e?.valueBoolean;
}
