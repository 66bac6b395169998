/**
 * The queue's module surface and its one choice: BullMQ on Redis when REDIS_URL is set, the
 * embedded LevelDB queue otherwise (DESIGN section 5). types.ts states the contract both keep.
 */
import type { Db } from '../store/db.ts';
import { BullQueue, type BullQueueOpts } from './bull.ts';
import { EmbeddedQueue, type EmbeddedQueueOpts } from './embedded.ts';
import { QueueError } from './errors.ts';
import type { TxQueue } from './types.ts';

export {
  BullQueue,
  type BullQueueOpts,
  defaultBullQueueOpts,
  type RedisPersistence,
  redactRedisUrl,
} from './bull.ts';
export { defaultEmbeddedQueueOpts, EmbeddedQueue, type EmbeddedQueueOpts } from './embedded.ts';
export { isQueueError, QueueError, type QueueErrorCode } from './errors.ts';
export * from './types.ts';

export interface OpenTxQueueArgs {
  /** The environment's REDIS_URL (unset or empty: the embedded queue). */
  readonly redisUrl?: string | undefined;
  /** The sidecar's LevelDB, for the embedded queue. */
  readonly db?: Db;
  readonly bull?: Partial<BullQueueOpts>;
  readonly embedded?: Partial<EmbeddedQueueOpts>;
}

export async function openTxQueue(args: OpenTxQueueArgs): Promise<TxQueue> {
  const url = args.redisUrl?.trim();
  if (url) return BullQueue.open(url, args.bull);
  if (!args.db) {
    throw new QueueError('CONFIG', 'the embedded queue (REDIS_URL unset) needs the LevelDB handle');
  }
  return EmbeddedQueue.open(args.db, args.embedded);
}
