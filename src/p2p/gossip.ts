/**
 * Gossip: one topic per payload kind, validated by a caller-supplied hook whose ledger verdict is
 * mapped to gossipsub's accept / ignore / reject (verdicts.ts). The hook is the delivery: a message
 * it accepts has been taken by the node, and only then does gossipsub forward it.
 *
 * `from` is the propagation source (the peer that handed us the message), not its author: with
 * StrictNoSign there is no author in the envelope, and payloads carry their own signatures, which
 * the hook verifies. A reject penalises the propagation source, which as an honest peer would have
 * validated before forwarding.
 */
import type { GossipSub, GossipsubOpts, Message, TopicValidatorFn } from '@libp2p/gossipsub';
import { TopicValidatorResult } from '@libp2p/gossipsub';
import { sha256Parts } from '../crypto/sha256.ts';
import type { Verdict } from '../ledger/errors.ts';
import type { InstitutionIndex } from '../ledger/types.ts';
import type { EdgeContext, P2pLimits } from './context.ts';
import { P2pError } from './errors.ts';
import { TokenBucket } from './limits.ts';
import {
  TOPIC_CODECS,
  TOPIC_NAMES,
  type TopicName,
  type TopicPayloads,
  topicId,
} from './messages.ts';
import { acceptanceOfError, acceptanceOfVerdict, type GossipAcceptance } from './verdicts.ts';

/**
 * Validates and takes one message; runs inside gossipsub's validation, before forwarding, so it
 * should answer quickly (gossipsub: well under 100 ms) and must not block on the network.
 */
export type GossipHandler<T extends TopicName> = (
  value: TopicPayloads[T],
  from: InstitutionIndex,
  data: Uint8Array,
) => Verdict | Promise<Verdict>;
export type GossipHandlers = { readonly [T in TopicName]?: GossipHandler<T> };

const RESULT: Readonly<Record<GossipAcceptance, TopicValidatorResult>> = {
  accept: TopicValidatorResult.Accept,
  ignore: TopicValidatorResult.Ignore,
  reject: TopicValidatorResult.Reject,
};

const encoder = new TextEncoder();

/** Content-hash message ids, SHA-256(topic || 0x00 || data): the same bytes are one message. */
export function gossipMessageId(msg: Pick<Message, 'topic' | 'data'>): Uint8Array {
  return sha256Parts([encoder.encode(msg.topic), new Uint8Array(1), msg.data]);
}

/**
 * Gossipsub options (NOTES-libp2p): StrictNoSign, since signing and verifying every message cost
 * 35-45 % of CPU and our payloads are signed by the application; only our topics (a peer cannot
 * make us track arbitrary topics); our misbehaviour points as the app-specific score; no IP
 * colocation penalty (institutions may share an address, and tests all share 127.0.0.1).
 */
export function gossipOptions(
  chainId: string,
  limits: P2pLimits,
  penaltyPoints: (peerId: string) => number,
): Partial<GossipsubOpts> {
  const maxMessage = Math.max(...TOPIC_NAMES.map((t) => limits.maxGossipBytes[t]));
  return {
    globalSignaturePolicy: 'StrictNoSign',
    msgIdFn: gossipMessageId,
    allowedTopics: TOPIC_NAMES.map((t) => topicId(chainId, t)),
    allowPublishToZeroTopicPeers: true,
    ignoreDuplicatePublishError: true,
    emitSelf: false,
    fallbackToFloodsub: false,
    maxInboundDataLength: maxMessage + 64 * 1024,
    scoreParams: {
      IPColocationFactorWeight: 0,
      appSpecificScore: (peerId: string) => -penaltyPoints(peerId),
      appSpecificWeight: 1,
    },
  };
}

export class GossipEdge {
  private readonly pubsub: GossipSub;
  private readonly ctx: EdgeContext;
  private readonly handlers: GossipHandlers;
  private readonly chainId: string;
  private readonly buckets = new Map<string, TokenBucket>();
  /** Messages ignored because their sender was over its gossip rate. */
  throttled = 0;

  constructor(pubsub: GossipSub, chainId: string, ctx: EdgeContext, handlers: GossipHandlers) {
    this.pubsub = pubsub;
    this.chainId = chainId;
    this.ctx = ctx;
    this.handlers = handlers;
    for (const name of TOPIC_NAMES) {
      pubsub.topicValidators.set(topicId(chainId, name), this.validator(name));
    }
  }

  /** Subscribes to the topics this node has a handler for (gossipsub must be started). */
  subscribe(): void {
    for (const name of TOPIC_NAMES) {
      if (this.handlers[name] !== undefined) this.pubsub.subscribe(topicId(this.chainId, name));
    }
  }

  async publish<T extends TopicName>(topic: T, value: TopicPayloads[T]): Promise<number> {
    const data = TOPIC_CODECS[topic].encode(value);
    const max = this.ctx.limits.maxGossipBytes[topic];
    if (data.length > max) {
      throw new P2pError('TOO_LARGE', `${topic} message of ${data.length} bytes exceeds ${max}`, {
        topic,
        size: data.length,
        max,
      });
    }
    const result = await this.pubsub.publish(topicId(this.chainId, topic), data);
    return result.recipients.length;
  }

  /** Peers known to subscribe to a topic. */
  subscribers(topic: TopicName): string[] {
    return this.pubsub.getSubscribers(topicId(this.chainId, topic)).map((p) => p.toString());
  }

  forget(peerId: string): void {
    this.buckets.delete(peerId);
  }

  private bucket(peerId: string): TokenBucket {
    let b = this.buckets.get(peerId);
    if (b === undefined) {
      b = new TokenBucket(this.ctx.limits.gossipRate, this.ctx.now());
      this.buckets.set(peerId, b);
    }
    return b;
  }

  private validator<T extends TopicName>(topic: T): TopicValidatorFn {
    const reject = (peer: string, points: number, reason: string) => {
      this.ctx.penalise(peer, points, `${topic}: ${reason}`);
      return TopicValidatorResult.Reject;
    };
    return async (source, msg) => {
      const peer = source.toString();
      const from = this.ctx.memberOf(peer);
      // The gater admits only verified peers; a peer removed or banned since is refused here.
      if (from === undefined || this.ctx.isBanned(peer)) return TopicValidatorResult.Reject;
      const max = this.ctx.limits.maxGossipBytes[topic];
      if (msg.data.length > max) {
        return reject(peer, this.ctx.limits.violationPenalty, `${msg.data.length} bytes > ${max}`);
      }
      if (!this.bucket(peer).take(this.ctx.now())) {
        this.throttled++;
        return TopicValidatorResult.Ignore; // gossip has no backpressure: shed the excess
      }
      let acceptance: GossipAcceptance;
      let reason = 'rejected by validator';
      try {
        const value = TOPIC_CODECS[topic].decode(msg.data, max) as TopicPayloads[T];
        const handler = this.handlers[topic] as GossipHandler<T> | undefined;
        const verdict: Verdict =
          handler === undefined ? { ok: true } : await handler(value, from, msg.data);
        acceptance = acceptanceOfVerdict(verdict);
        if (!verdict.ok) reason = `${verdict.error.code}: ${verdict.error.message}`;
      } catch (err) {
        acceptance = acceptanceOfError(err);
        reason = (err as Error).message;
      }
      if (acceptance === 'reject') return reject(peer, this.ctx.limits.rejectPenalty, reason);
      return RESULT[acceptance];
    };
  }
}
