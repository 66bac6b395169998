/**
 * AuditEvents (FHIR R4, the `rest` type of the DICOM/HL7 audit vocabulary): one for every read and
 * every write through the FHIR API, kept in the sidecar's LevelDB and searchable by patient and by
 * entity (`GET /fhir/AuditEvent?patient=Patient/x`, `?entity=Observation/y`), so a patient can see
 * who read or wrote what (the portal, issue 6). A write's event is staged into the write's own
 * atomic batch; a failed request gets an event with its failure outcome.
 *
 * An event names the agent (the authorised client), the resources touched (`Type/id/_history/v`)
 * and their patients (`Patient/id`): references, never identifiers, names or content.
 *
 *   ae  be48(ms) || be32(seq) || 6 random bytes -> the AuditEvent (JSON, sealed)
 *   ap  (`Patient/id`) || event key            -> (empty)
 *   an  (`Type/id`) || event key               -> (empty)
 */
import { randomBytes } from 'node:crypto';
import type { AuditEvent, AuditEventEntity } from '@medplum/fhirtypes';
import { fromHex, toHex } from '../crypto/bytes.ts';
import { encode } from '../ledger/codec.ts';
import type { Db, Sublevel, WriteOp } from '../store/db.ts';
import { openSublevel } from '../store/db.ts';
import { StoreError } from '../store/errors.ts';
import { be } from '../store/keys.ts';
import { openSeal, sealIn } from '../store/values.ts';
import { fail } from './outcome.ts';
import { upperBound } from './resource-store.ts';

export const AUDIT_SPACES = { event: 'ae', byPatient: 'ap', byEntity: 'an' } as const;

/** The RESTful interaction audited (http://hl7.org/fhir/restful-interaction). */
export type AuditInteraction =
  | 'create'
  | 'update'
  | 'read'
  | 'vread'
  | 'history-instance'
  | 'search-type'
  | 'transaction'
  | 'batch'
  | 'operation';

/** Who asked: from the authorisation hook. */
export interface AuditAgent {
  /** The client's id (for the interim static token: `ehr`). */
  readonly id: string;
  /** How it was authorised, e.g. `static-bearer`. */
  readonly method: string;
  readonly address?: string;
}

export interface AuditInput {
  readonly interaction: AuditInteraction;
  readonly agent: AuditAgent;
  /** The HTTP status the request got. */
  readonly status: number;
  /** Resources read or written: `Type/id` or `Type/id/_history/v`. */
  readonly entities: readonly string[];
  /** The patients those resources are about: `Patient/id`. */
  readonly patients: readonly string[];
  readonly requestId: string;
  /** What failed (issue codes, no patient data), for failures. */
  readonly failure?: string;
  /** Milliseconds since the epoch. */
  readonly now: number;
}

export interface AuditPage {
  readonly events: readonly AuditEvent[];
  /** The cursor for the next (older) page, if there may be one. */
  readonly next?: string;
}

const ACTION: Record<AuditInteraction, AuditEvent['action']> = {
  create: 'C',
  update: 'U',
  read: 'R',
  vread: 'R',
  'history-instance': 'R',
  'search-type': 'E',
  transaction: 'E',
  batch: 'E',
  operation: 'E',
};

const ENC = new TextEncoder();
const DEC = new TextDecoder();
const EVENT_KEY_BYTES = 16;

const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';

export class AuditLog {
  private readonly spaces: Record<keyof typeof AUDIT_SPACES, Sublevel>;
  private readonly db: Db;
  private readonly observer: string;
  private lastMs = 0;
  private seq = 0;

  /** `observer`: how this sidecar names itself in AuditEvent.source (e.g. its institution). */
  constructor(db: Db, observer: string) {
    this.db = db;
    this.observer = observer;
    this.spaces = {
      event: openSublevel(db, AUDIT_SPACES.event),
      byPatient: openSublevel(db, AUDIT_SPACES.byPatient),
      byEntity: openSublevel(db, AUDIT_SPACES.byEntity),
    };
  }

  /** Stages the event of `input` (and its index entries) into `ops`. */
  stage(ops: WriteOp[], input: AuditInput): AuditEvent {
    // Time, then a counter within the millisecond, so that the events of one sidecar list in the
    // order they were staged (a read right after a write is newer even in the same millisecond),
    // then random bytes (keys stay unique across restarts and stores).
    const ms = Math.max(input.now, this.lastMs);
    this.seq = ms === this.lastMs ? this.seq + 1 : 0;
    this.lastMs = ms;
    const key = new Uint8Array(EVENT_KEY_BYTES);
    key.set(be(ms, 6, 'audit time'));
    key.set(be(this.seq, 4, 'audit sequence'), 6);
    key.set(randomBytes(EVENT_KEY_BYTES - 10), 10);
    const event = this.eventOf(toHex(key), input);
    ops.push({
      type: 'put',
      sublevel: this.spaces.event,
      key,
      value: sealIn(AUDIT_SPACES.event, key, ENC.encode(JSON.stringify(event))),
    });
    const empty = new Uint8Array(0);
    for (const p of new Set(input.patients)) {
      ops.push({
        type: 'put',
        sublevel: this.spaces.byPatient,
        key: indexKey(p, key),
        value: empty,
      });
    }
    for (const e of new Set(input.entities.map(withoutVersion))) {
      ops.push({
        type: 'put',
        sublevel: this.spaces.byEntity,
        key: indexKey(e, key),
        value: empty,
      });
    }
    return event;
  }

  /** Writes the event of `input` on its own (reads, failures). */
  async record(input: AuditInput): Promise<AuditEvent> {
    const ops: WriteOp[] = [];
    const event = this.stage(ops, input);
    await this.db.batch(ops as never, { sync: true });
    return event;
  }

  /**
   * Events about a patient (`Patient/id`) or an entity (`Type/id`), newest first, `count` at most,
   * older than the cursor `before` (from a previous page's `next`).
   */
  async search(
    by: { patient: string } | { entity: string },
    count: number,
    before?: string,
  ): Promise<AuditPage> {
    const [space, ref] =
      'patient' in by ? (['byPatient', by.patient] as const) : (['byEntity', by.entity] as const);
    const prefix = encode((w) => w.string(ref));
    const upper = before === undefined ? upperBound(prefix) : indexKey(ref, cursorKey(before));
    const keys: Uint8Array[] = [];
    for await (const k of this.spaces[space].keys({ gte: prefix, lt: upper, reverse: true })) {
      keys.push(k.subarray(prefix.length));
      if (keys.length > count) break;
    }
    const page = keys.slice(0, count);
    const values = await this.spaces.event.getMany(page);
    const events = values.map((v, n) => {
      if (v === undefined) throw corrupt(page[n]!, 'an indexed event is missing');
      const opened = openSeal(AUDIT_SPACES.event, page[n]!, v);
      if (!opened.ok) throw corrupt(page[n]!, opened.problem);
      return JSON.parse(DEC.decode(opened.payload)) as AuditEvent;
    });
    return keys.length > count ? { events, next: toHex(page.at(-1)!) } : { events };
  }

  /** The newest `count` events, newest first (operators; failures are indexed by nothing else). */
  async recent(count: number): Promise<AuditEvent[]> {
    const out: AuditEvent[] = [];
    for await (const [key, value] of this.spaces.event.iterator({ reverse: true, limit: count })) {
      const opened = openSeal(AUDIT_SPACES.event, key, value);
      if (!opened.ok) throw corrupt(key, opened.problem);
      out.push(JSON.parse(DEC.decode(opened.payload)) as AuditEvent);
    }
    return out;
  }

  private eventOf(id: string, input: AuditInput): AuditEvent {
    const outcome = input.status < 400 ? '0' : input.status < 500 ? '4' : '8';
    const entity: AuditEventEntity[] = [
      ...[...new Set(input.patients)].map(
        (p): AuditEventEntity => ({
          what: { reference: p },
          type: { system: ENTITY_TYPE, code: '1', display: 'Person' },
          role: {
            system: 'http://terminology.hl7.org/CodeSystem/object-role',
            code: '1',
            display: 'Patient',
          },
        }),
      ),
      ...input.entities.map(
        (e): AuditEventEntity => ({
          what: { reference: e },
          type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
        }),
      ),
    ];
    return {
      resourceType: 'AuditEvent',
      id,
      meta: { versionId: '1', lastUpdated: new Date(input.now).toISOString() },
      type: {
        system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
        code: 'rest',
        display: 'RESTful Operation',
      },
      subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: input.interaction }],
      action: ACTION[input.interaction],
      recorded: new Date(input.now).toISOString(),
      outcome,
      ...(input.failure ? { outcomeDesc: `HTTP ${input.status}: ${input.failure}` } : {}),
      agent: [
        {
          who: { identifier: { system: 'urn:spchain:client', value: input.agent.id } },
          requestor: true,
          policy: [`urn:spchain:authorisation:${input.agent.method}`],
          ...(input.agent.address ? { network: { address: input.agent.address, type: '2' } } : {}),
        },
      ],
      source: {
        observer: { display: this.observer },
        type: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/security-source-type',
            code: '4',
            display: 'Application Server',
          },
        ],
      },
      ...(entity.length > 0 ? { entity } : {}),
      extension: [{ url: 'urn:spchain:request-id', valueString: input.requestId }],
    } as AuditEvent;
  }
}

function withoutVersion(ref: string): string {
  const at = ref.indexOf('/_history/');
  return at < 0 ? ref : ref.slice(0, at);
}

function indexKey(ref: string, eventKey: Uint8Array): Uint8Array {
  const prefix = encode((w) => w.string(ref));
  const out = new Uint8Array(prefix.length + eventKey.length);
  out.set(prefix);
  out.set(eventKey, prefix.length);
  return out;
}

function cursorKey(cursor: string): Uint8Array {
  if (!/^[0-9a-f]{32}$/.test(cursor)) {
    throw fail(400, 'invalid', '_cursor must be 32 lowercase hex digits (from a next link)');
  }
  return fromHex(cursor, 'cursor');
}

function corrupt(key: Uint8Array, problem: string): StoreError {
  return new StoreError('CORRUPT', `corrupt audit event ${toHex(key)}: ${problem}`, {});
}
