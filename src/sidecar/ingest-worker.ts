/**
 * The ingest crypto worker (a piscina worker thread, see ingest.ts): seals one bundle's records
 * (ingest-worker-seal.ts) off the main event loop, with randomness from the system CSPRNG.
 */
import { systemRandom } from '../crypto/random.ts';
import { type SealTask, type SealTaskResult, sealAll } from './ingest-worker-seal.ts';

export default function sealTask(task: SealTask): SealTaskResult {
  return sealAll(task, systemRandom);
}
