// Where an operator's deliver_sm goes: delivery receipts back to the bind that sent the message, MO messages to the
// tenant's receiver binds. Kept in Redis so that it survives a restart and works across gateways: an operator sends
// a receipt on whichever of its binds it likes, i.e. to any gateway, and the provider's platform may have
// reconnected to another one meanwhile.
//
//   <prefix>smpp:owner:<operator message id>  → the system_id that submitted it (SET … EX ttl)
//   <prefix>smpp:queue:<target>               → deliver_sm PDUs (encoded) waiting for that target to be bound:
//                                               a list, oldest first, capped at queueMax (the oldest dropped)
// A target is `sys:<system_id>` (receipts) or `tenant:<iysCode>` (MO). Gateways drain the queues of the targets
// bound to them (server.ts): at once when something is queued here, and by a short poll for what other gateways
// queued. Without Redis (the embedded trial) the same thing lives in memory, for this process only.

import type { RedisClient } from '../store/redis.js'

export interface ReceiptStore {
  /** Remembers who submitted operator message `carrierId`. */
  remember (carrierId: string, systemId: string): Promise<void>
  /** The system_id that submitted `carrierId`, or null when unknown or expired. */
  ownerOf (carrierId: string): Promise<string | null>
  /** Queues an encoded deliver_sm for `target`; false when the queue was full and the oldest entry was dropped. */
  enqueue (target: string, pdu: Buffer): Promise<boolean>
  /** Takes up to `max` queued PDUs for `target`, oldest first. */
  take (target: string, max: number): Promise<Buffer[]>
  /** Puts PDUs that could not be delivered back at the head of the queue, in their order. */
  putBack (target: string, pdus: readonly Buffer[]): Promise<void>
}

export interface ReceiptStoreOptions {
  /** How long a message's owner is remembered (seconds): the longest a receipt may come after its submit. */
  ttlSeconds: number
  /** Most PDUs queued per target; beyond it the oldest go (a platform that never binds must not fill Redis). */
  queueMax: number
}

export class RedisReceiptStore implements ReceiptStore {
  private readonly redis: RedisClient
  private readonly prefix: string
  private readonly opts: ReceiptStoreOptions

  constructor (redis: RedisClient, prefix: string, opts: ReceiptStoreOptions) {
    this.redis = redis
    this.prefix = prefix + 'smpp:'
    this.opts = opts
  }

  async remember (carrierId: string, systemId: string): Promise<void> {
    await this.redis.set(this.prefix + 'owner:' + carrierId, systemId, 'EX', this.opts.ttlSeconds)
  }

  ownerOf (carrierId: string): Promise<string | null> {
    return this.redis.get(this.prefix + 'owner:' + carrierId)
  }

  async enqueue (target: string, pdu: Buffer): Promise<boolean> {
    const key = this.prefix + 'queue:' + target
    const res = await this.redis.multi()
      .rpush(key, pdu)
      .ltrim(key, -this.opts.queueMax, -1)
      .expire(key, this.opts.ttlSeconds)
      .exec()
    const length = Number(res?.[0]?.[1] ?? 0)
    return length <= this.opts.queueMax
  }

  async take (target: string, max: number): Promise<Buffer[]> {
    return (await this.redis.lpopBuffer(this.prefix + 'queue:' + target, max)) ?? []
  }

  async putBack (target: string, pdus: readonly Buffer[]): Promise<void> {
    if (pdus.length === 0) return
    // LPUSH reverses its arguments: push them last first so that the oldest is at the head again.
    await this.redis.lpush(this.prefix + 'queue:' + target, ...[...pdus].reverse())
  }
}

/** The same for one process (no REDIS_URL): nothing survives a restart, and receipts reach only this gateway's binds. */
export class MemoryReceiptStore implements ReceiptStore {
  private readonly owners = new Map<string, { systemId: string, until: number }>()
  private readonly queues = new Map<string, Buffer[]>()
  private readonly opts: ReceiptStoreOptions

  constructor (opts: ReceiptStoreOptions) { this.opts = opts }

  async remember (carrierId: string, systemId: string): Promise<void> {
    const now = Date.now()
    // Expired owners go as new ones come (insertion order is expiry order: one TTL for all).
    for (const [id, o] of this.owners) { if (o.until > now) break; this.owners.delete(id) }
    this.owners.set(carrierId, { systemId, until: now + this.opts.ttlSeconds * 1000 })
  }

  async ownerOf (carrierId: string): Promise<string | null> {
    const o = this.owners.get(carrierId)
    return o !== undefined && o.until > Date.now() ? o.systemId : null
  }

  async enqueue (target: string, pdu: Buffer): Promise<boolean> {
    let q = this.queues.get(target)
    if (q === undefined) this.queues.set(target, q = [])
    q.push(pdu)
    if (q.length <= this.opts.queueMax) return true
    q.shift()
    return false
  }

  async take (target: string, max: number): Promise<Buffer[]> {
    const q = this.queues.get(target)
    if (q === undefined) return []
    const out = q.splice(0, max)
    if (q.length === 0) this.queues.delete(target)
    return out
  }

  async putBack (target: string, pdus: readonly Buffer[]): Promise<void> {
    if (pdus.length === 0) return
    const q = this.queues.get(target) ?? []
    this.queues.set(target, [...pdus, ...q])
  }
}
