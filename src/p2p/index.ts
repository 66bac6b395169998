/** The network edge's public surface, for the composition root. */
export { makePeerBinding, PEER_BINDING_DOMAIN, verifyPeerBinding } from './binding.ts';
export type { DirectHandlers, RecordHandler, SyncHandler } from './channels.ts';
export { defaultP2pLimits, type P2pEvent, type P2pLimits } from './context.ts';
export { isP2pError, P2pError, type P2pErrorCode } from './errors.ts';
export type { GossipHandler, GossipHandlers } from './gossip.ts';
export { peerIdFromSeed, peerKeyFromSeed } from './keys.ts';
export type { EnqueueOutcome, QueuePolicy, RateLimit } from './limits.ts';
export {
  type DirectKind,
  type DirectPayloads,
  PROTOCOLS,
  type SyncPage,
  type SyncRequest,
  type TopicName,
  type TopicPayloads,
  topicId,
} from './messages.ts';
export {
  createP2pNode,
  type P2pNode,
  type P2pNodeOpts,
  type P2pStats,
  type RequestOpts,
} from './node.ts';
export {
  type PeerEntry,
  type PeerEntryJson,
  peersFromJson,
  peersToJson,
  type RefusedPeer,
  verifyPeers,
} from './peers.ts';
export {
  acceptanceOfCode,
  acceptanceOfError,
  acceptanceOfVerdict,
  type GossipAcceptance,
} from './verdicts.ts';
