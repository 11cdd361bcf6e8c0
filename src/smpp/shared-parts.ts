// The decision of a concatenated message, shared by the gateways: a platform with several binds may send the parts
// of one message over binds that a load balancer spread over different gateways, and every part must still get the
// first part's decision, logged once. The gateway that decides first claims the message in Redis (SET NX with the
// message's TTL, SMPP_CONCAT_TTL_MS); the others take that decision and log nothing. Without Redis, or while it does
// not answer, each gateway keeps its own (concat.ts's ConcatDecisions, which also spares Redis every later part).

import { REASONS, type Reason } from '../policy/decide.js'
import type { RedisClient } from '../store/redis.js'

export interface PartsDecision {
  allowed: boolean
  reason: Reason
}

export class SharedParts {
  private readonly redis: RedisClient
  private readonly prefix: string
  private readonly ttlMs: number

  constructor (redis: RedisClient, prefix: string, ttlMs: number) {
    this.redis = redis
    this.prefix = prefix + 'smpp:parts:'
    this.ttlMs = ttlMs
  }

  /** The decision another gateway took for this message, or null. */
  async get (key: string): Promise<PartsDecision | null> {
    return parse(await this.redis.get(this.prefix + key))
  }

  /**
   * Claims the message with `ours`; returns null when ours is now the decision (also when the other claim expired
   * between our SET and GET: no gateway holds one then), else the one already in force.
   */
  async claim (key: string, ours: PartsDecision): Promise<PartsDecision | null> {
    const k = this.prefix + key
    const set = await this.redis.set(k, (ours.allowed ? '1' : '0') + ours.reason, 'PX', this.ttlMs, 'NX')
    return set === 'OK' ? null : parse(await this.redis.get(k))
  }

  /** Gives up our claim (our decision could not be journalled: it is no decision, and must not be taken by others). */
  async release (key: string): Promise<void> {
    await this.redis.del(this.prefix + key)
  }
}

function parse (text: string | null): PartsDecision | null {
  if (text === null || text.length < 2) return null
  const reason = text.slice(1)
  return (REASONS as readonly string[]).includes(reason) ? { allowed: text[0] === '1', reason: reason as Reason } : null
}
