/**
 * The audit log's order (src/fhir/audit.ts): newest first, also for events staged in one
 * millisecond or under a clock that stepped back, on a real LevelDB.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type AuditInput, AuditLog } from '../../src/fhir/audit.ts';
import { openDb } from '../../src/store/db.ts';

const dir = mkdtempSync(join(tmpdir(), 'spchain-audit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('AuditLog order', () => {
  it('lists the events of one millisecond, and of a clock stepped back, in staging order', async () => {
    const db = await openDb(join(dir, 'db'));
    try {
      const log = new AuditLog(db, 'hospital-0');
      const input = (k: number, now: number): AuditInput => ({
        interaction: 'read',
        agent: { id: 'ehr', method: 'static-bearer' },
        status: 200,
        entities: [`Observation/o${k}`],
        patients: ['Patient/p'],
        requestId: `r${k}`,
        now,
      });
      const t = 1_790_000_000_000;
      // 40 events in one millisecond, then 10 with the clock 5 ms behind.
      for (let k = 0; k < 40; k++) await log.record(input(k, t));
      for (let k = 40; k < 50; k++) await log.record(input(k, t - 5));
      const order = (await log.search({ patient: 'Patient/p' }, 100)).events.map(
        (e) =>
          e.entity?.find((x) => x.what?.reference?.startsWith('Observation/'))?.what?.reference,
      );
      expect(order).toEqual(Array.from({ length: 50 }, (_, k) => `Observation/o${49 - k}`));
    } finally {
      await db.close();
    }
  });
});
