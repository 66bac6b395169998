/**
 * The CapabilityStatement of `GET /fhir/metadata` (FHIR R4 4.0.1): what this sidecar does, per
 * resource type, derived from the mapping in force (records, Patient, context and ignored types)
 * plus AuditEvent, and the security it expects: SMART on FHIR, with the authorisation server's
 * endpoints (src/smart/routes.ts) in the `oauth-uris` extension.
 */
import type {
  CapabilityStatement,
  CapabilityStatementRestResource,
  CapabilityStatementRestResourceInteraction,
} from '@medplum/fhirtypes';
import type { FhirMapping } from '../mapping/mapping.ts';

export interface CapabilityInfo {
  /** The FHIR base URL, e.g. http://127.0.0.1:8080/fhir. */
  readonly base: string;
  readonly software: { readonly name: string; readonly version: string };
  /** The institution this sidecar serves, for the implementation description. */
  readonly institution: string;
  /** When this statement was made (ISO date-time). */
  readonly date: string;
}

/** The SMART authorisation server's endpoints for a FHIR base (src/smart/routes.ts). */
export function smartUrls(
  base: string,
): Record<'token' | 'authorize' | 'revoke' | 'introspect', string> {
  const smart = `${base.replace(/\/fhir\/?$/, '')}/smart`;
  return {
    token: `${smart}/token`,
    authorize: `${smart}/authorize`,
    revoke: `${smart}/revoke`,
    introspect: `${smart}/introspect`,
  };
}

const COUNT_PARAM = {
  name: '_count',
  type: 'number' as const,
  documentation: 'Page size, 1 to 1000 (default 50); next links carry _cursor.',
};

/** The searches and operations of a type: Patient lookup and $everything, records by patient. */
function searchOf(
  type: string,
  mapping: FhirMapping,
): Pick<CapabilityStatementRestResource, 'searchParam' | 'searchRevInclude' | 'operation'> {
  if (type === 'Patient') {
    return {
      searchParam: [
        {
          name: 'identifier',
          type: 'token',
          documentation:
            'system|value. With birthdate, also finds a patient registered at another institution (Patient/{idHash}).',
        },
        { name: 'birthdate', type: 'date', documentation: 'YYYY-MM-DD (equality).' },
        { name: '_id', type: 'token' },
      ],
      operation: [
        {
          name: 'everything',
          definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything',
          documentation:
            "The patient's records held here and shared by other institutions under the patient's grant (verified against the ledger, decrypted), with their Provenance and context; _type, _since, _count. Warnings (a record that failed verification, a refused grant) come as an OperationOutcome entry.",
        },
      ],
    };
  }
  const rule = mapping.records.get(type);
  if (rule === undefined) return {};
  return {
    searchParam: [
      {
        name: 'patient',
        type: 'reference',
        documentation: "The patient's records here and shared with this institution.",
      },
      ...(rule.patient === 'subject'
        ? [{ name: 'subject', type: 'reference' as const, documentation: 'Patient/id only.' }]
        : []),
      COUNT_PARAM,
    ],
    searchRevInclude: ['Provenance:target'],
  };
}

const interactions = (
  ...codes: CapabilityStatementRestResourceInteraction['code'][]
): CapabilityStatementRestResourceInteraction[] => codes.map((code) => ({ code }));

export function capabilityStatement(
  mapping: FhirMapping,
  info: CapabilityInfo,
): CapabilityStatement {
  const stored = ['Patient', ...mapping.records.keys(), ...mapping.contextTypes].sort();
  const resource: CapabilityStatementRestResource[] = stored.map((type) => ({
    type: type as CapabilityStatementRestResource['type'],
    interaction:
      type === 'Patient' || mapping.records.has(type)
        ? interactions('read', 'vread', 'history-instance', 'create', 'update', 'search-type')
        : interactions('read', 'vread', 'history-instance', 'create', 'update'),
    ...searchOf(type, mapping),
    versioning: 'versioned',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalUpdate: true,
    conditionalDelete: 'not-supported',
    conditionalRead: 'not-supported',
    referencePolicy: ['literal', 'logical'],
    documentation: mapping.records.has(type)
      ? "A record: encrypted to the patient and anchored on SPChain (an update is a correction, a label tx). Read by id also serves a record another institution shares, once fetched here by the patient's $everything or a search by patient (the holders are asked again on each read)."
      : type === 'Patient'
        ? 'The identity of records: identifier (mapping systems) and birthDate give the ledger idHash. Not a record.'
        : 'Context carried alongside the records that reference it. Not a record.',
  }));
  for (const type of [...mapping.ignoredTypes].sort()) {
    resource.push({
      type: type as CapabilityStatementRestResource['type'],
      interaction: interactions('create', 'update'),
      documentation: `Accepted in bundles and not stored (ignored by the mapping ${mapping.name}).`,
    });
  }
  // The Provenance of every record served (own and shared) is read by id, whatever the mapping
  // does with Provenance an EHR posts (the default mapping ignores it).
  const provenanceDoc =
    'GET Provenance/{id} of a record served here (its id is the tx hash of the record version): who wrote it, its ledger tx, batch and block. Read with the same access as the record it targets.';
  const provenance = resource.find((r) => r.type === 'Provenance');
  if (provenance === undefined) {
    resource.push({
      type: 'Provenance',
      interaction: interactions('read'),
      documentation: provenanceDoc,
    });
  } else {
    if (!provenance.interaction?.some((i) => i.code === 'read')) {
      provenance.interaction = [...(provenance.interaction ?? []), { code: 'read' }];
    }
    provenance.documentation = `${provenance.documentation ?? ''} ${provenanceDoc}`.trim();
  }
  resource.push({
    type: 'AuditEvent',
    interaction: interactions('search-type'),
    searchParam: [
      {
        name: 'patient',
        type: 'reference',
        documentation: 'Events about a patient (Patient/id): who read or wrote their records.',
      },
      { name: 'entity', type: 'reference', documentation: 'Events about a resource (Type/id).' },
      { name: '_count', type: 'number', documentation: 'Page size, 1 to 1000 (default 50).' },
    ],
    documentation: 'One AuditEvent for every read and every write through this API.',
  });
  const urls = smartUrls(info.base);
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: info.date,
    kind: 'instance',
    software: { name: info.software.name, version: info.software.version },
    implementation: {
      description: `SPChain FHIR sidecar of ${info.institution}`,
      url: info.base,
    },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: [],
    rest: [
      {
        mode: 'server',
        documentation:
          'Transaction and batch Bundles at the base; all or nothing for transactions. DELETE and ' +
          'PATCH are refused: the ledger never forgets, so a wrong record is corrected by an update ' +
          'or marked entered-in-error.',
        security: {
          cors: true,
          service: [
            {
              coding: [
                {
                  system: 'http://terminology.hl7.org/CodeSystem/restful-security-service',
                  code: 'SMART-on-FHIR',
                },
              ],
            },
          ],
          description:
            'SMART App Launch 2 (standalone patient launch, PKCE S256, v1 and v2 scopes; the patient ' +
            'approves with the keys of their registration) and SMART Backend Services ' +
            '(client_credentials with private_key_jwt); discovery at .well-known/smart-configuration. ' +
            'An EHR may also use the static bearer token configured for it.',
          extension: [
            {
              url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
              extension: [
                { url: 'token', valueUri: urls.token },
                { url: 'authorize', valueUri: urls.authorize },
                { url: 'revoke', valueUri: urls.revoke },
                { url: 'introspect', valueUri: urls.introspect },
              ],
            },
          ],
        },
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}
