/**
 * Upload grants at the home institution: another institution B may write a patient's records only
 * once B has a leaf in the patient's block (DESIGN section 4; the ingest refuses NO_LEAF before).
 * The leaf tx needs three parties, and none of them hands a secret to another:
 *   - the patient signs the upload grant for B (ledger/tx.ts signGrant, on their own device: the
 *     CLI's `patient allow-upload`);
 *   - anyone can make B's fresh leaf digest from B's public chameleon key;
 *   - the home institution opens the block's root chameleon hash to the new leaf set with its
 *     trapdoor, and only the home institution may submit leaf txs (ledger/batch.ts).
 * So the patient's signed grant goes to the home institution's sidecar (`POST /spchain/leaves`,
 * share-routes.ts), which makes the leaf tx (ledger/author.ts makeLeafTx), signs a bundle of it and
 * hands it to its node's mempool.
 *
 * One leaf tx per patient at a time: a second one made from the same pinned leaf set would open the
 * root to a set without the first newcomer, and the ledger would refuse whichever came second. A
 * request while another newcomer's leaf is pending is a 409 with Retry-After; asking again for the
 * same newcomer is idempotent (`pending`, then `present` once pinned). A pending entry older than
 * `pendingMs` is forgotten (the mempool may have dropped the tx, e.g. across a restart: it lives in
 * memory only), so asking again then submits afresh.
 */
import { toHex } from '../crypto/bytes.ts';
import type { RandomBytes } from '../crypto/random.ts';
import { fail, issue, OutcomeError } from '../fhir/outcome.ts';
import { type InstitutionSecrets, makeLeafTx } from '../ledger/author.ts';
import type { Verdict } from '../ledger/errors.ts';
import { signBundle, verifyGrant } from '../ledger/tx.ts';
import type { Bundle, Bytes, InstitutionIndex, Member } from '../ledger/types.ts';
import type { PatientLedger } from '../sidecar/patients.ts';

export interface LeafAuthorDeps {
  readonly chainId: string;
  /** This institution: index, chameleon key and trapdoor, signing secret. */
  readonly self: InstitutionSecrets & { readonly signingSecret: Bytes };
  readonly members: (index: InstitutionIndex) => Member | undefined;
  readonly ledger: PatientLedger;
  /** The node's mempool (SpchainNode.submitBundle). */
  readonly submitBundle: (bundle: Bundle) => Verdict;
  readonly fee: number;
  readonly now?: () => number;
  readonly random?: RandomBytes;
}

export interface LeafAuthorOpts {
  /** How long a submitted leaf tx counts as pending before a new request may submit again. */
  readonly pendingMs: number;
}

export const defaultLeafAuthorOpts: LeafAuthorOpts = { pendingMs: 60_000 };

/** present: the newcomer's leaf is pinned; submitted: just handed to the node; pending: earlier. */
export type LeafState = 'present' | 'submitted' | 'pending';

export interface LeafRequest {
  readonly idHash: Bytes;
  readonly institution: InstitutionIndex;
  /** The patient's signature over ledger/tx.ts grantMessage(chainId, idHash, institution). */
  readonly grant: Bytes;
}

export class LeafAuthor {
  private readonly deps: LeafAuthorDeps;
  private readonly opts: LeafAuthorOpts;
  private readonly now: () => number;
  /** idHash (hex) -> the newcomer whose leaf tx is in the mempool, and since when. */
  private readonly pending = new Map<string, { institution: InstitutionIndex; at: number }>();

  constructor(deps: LeafAuthorDeps, opts: Partial<LeafAuthorOpts> = {}) {
    this.deps = deps;
    this.opts = { ...defaultLeafAuthorOpts, ...opts };
    this.now = deps.now ?? Date.now;
  }

  /**
   * Adds the newcomer's leaf under the patient's grant. OutcomeErrors: 404 patient not registered
   * on the pinned ledger; 422 not this institution's patient, or an unknown newcomer; 403 the grant
   * is not the patient's signature, or the node refused the tx; 409 another leaf pending; 503 the
   * mempool is full (409 and 503 come with Retry-After).
   */
  async add(req: LeafRequest): Promise<LeafState> {
    const { chainId, self } = this.deps;
    const block = await this.deps.ledger.getMicroblockByIdHash(req.idHash);
    if (block === undefined) {
      throw fail(404, 'not-found', 'the patient is not registered on the pinned ledger here');
    }
    if (block.header.home !== self.index) {
      throw fail(
        422,
        'business-rule',
        `the patient's home institution is ${block.header.home}, not this one (${self.index}): send the upload grant there`,
      );
    }
    const newcomer = this.deps.members(req.institution);
    if (newcomer === undefined) {
      throw fail(
        422,
        'business-rule',
        `institution ${req.institution} is not a member`,
        'institution',
      );
    }
    const key = toHex(req.idHash);
    if (block.leaves.some((l) => l.institution === req.institution)) {
      this.pending.delete(key);
      return 'present';
    }
    const tx = makeLeafTx({
      chainId,
      block,
      home: self,
      newcomer: { index: newcomer.index, chameleonKey: newcomer.chameleonKey },
      fee: this.deps.fee,
      grant: req.grant,
      random: this.deps.random,
    });
    if (!verifyGrant(chainId, req.idHash, tx, block.patientSigningKey)) {
      throw fail(
        403,
        'forbidden',
        `the upload grant is not the patient's signature for institution ${req.institution}`,
        'grant',
      );
    }
    const t = this.now();
    const waiting = this.pending.get(key);
    if (waiting !== undefined && t - waiting.at < this.opts.pendingMs) {
      if (waiting.institution === req.institution) return 'pending';
      throw new OutcomeError(
        409,
        [
          issue(
            'conflict',
            "another institution's leaf for this patient is waiting to be pinned: ask again shortly",
          ),
        ],
        { 'retry-after': '2' },
      );
    }
    const verdict = this.deps.submitBundle(
      signBundle(chainId, self.index, [tx], self.signingSecret, this.deps.random),
    );
    if (!verdict.ok) {
      const { code, message } = verdict.error;
      if (code === 'TOO_LARGE') {
        throw new OutcomeError(503, [issue('transient', 'the node is busy: ask again shortly')], {
          'retry-after': '2',
        });
      }
      throw fail(422, 'business-rule', `the node refused the leaf tx: ${code}: ${message}`);
    }
    this.pending.set(key, { institution: req.institution, at: t });
    return 'submitted';
  }
}
