/**
 * A sidecar process for the crash test (crash.test.ts): opens the test ledger, the sidecar store,
 * the embedded queue and the core in `dir` (recovering from whatever a SIGKILL left), starts the
 * anchor worker and a pinning loop, then ingests bundles without end, printing one line per
 * acknowledged bundle:  ACK {"bundle": n, "results": [...]}  (only after `ingest` resolved).
 *
 *   node test/sidecar/ingest-child.ts <dir> <seed> <round>
 */

import { observation, openHarness, record } from './harness.ts';
import { makeLedgerFixture } from './ledger.ts';

const [dir, seed, roundArg] = process.argv.slice(2);
if (dir === undefined || seed === undefined || roundArg === undefined) {
  console.error('usage: ingest-child.ts <dir> <seed> <round>');
  process.exit(2);
}
const round = Number(roundArg);
const fixture = makeLedgerFixture(seed, [0, 0]);
const h = await openHarness(dir, fixture);
h.core.start();

let pinning = false;
const pinner = setInterval(() => {
  if (pinning) return;
  pinning = true;
  h.ledger
    .pinAll()
    .catch((err: Error) => console.error(`pin failed: ${err.message}`))
    .finally(() => {
      pinning = false;
    });
}, 15);
pinner.unref();

// The test kills this process long before; the cap only keeps a forgotten one from running on.
const MAX_BUNDLES = 5000;
for (let n = 0; n < MAX_BUNDLES; n++) {
  const p = fixture.patients[n % 2]!;
  const records = [
    record(p, observation(`r${round}-${n}-a`, n)),
    record(p, observation(`r${round}-${n}-b`, n + 1000)),
  ];
  // Every fourth bundle also corrects an earlier resource of the same patient (a label tx).
  if (n >= 4 && n % 4 === 0) {
    records.push(record(p, observation(`r${round}-${n - 4}-a`, -n)));
  }
  const results = await h.core.ingestor.ingest(records);
  console.log(`ACK ${JSON.stringify({ bundle: n, results })}`);
}
process.exit(3);
