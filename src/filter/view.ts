// A FilterView is one immutable version of the filter as a gateway sees it: the local bloom mirror and a way to
// fetch exact states for the keys the bloom says may be present. Redis and the embedded map implement the same
// interface, so the check path has one shape whatever the deployment.

import type { Redis } from 'ioredis'
import type { BloomFilter } from './bloom.js'
import { BUCKET_SENTINEL, type Layout } from './layout.js'

export interface FilterView {
  readonly version: number
  readonly bloom: BloomFilter
  readonly buckets: number
  /** Exact encoded states for `fields` (key texts) in `buckets`; null where absent. Rejects if the store fails. */
  lookup (fields: string[], buckets: number[]): Promise<(string | null)[]>
}

export class MemoryView implements FilterView {
  readonly version: number
  readonly bloom: BloomFilter
  readonly buckets = 1
  readonly states: Map<string, string>

  constructor (version: number, bloom: BloomFilter, states: Map<string, string>) {
    this.version = version
    this.bloom = bloom
    this.states = states
  }

  lookup (fields: string[]): Promise<(string | null)[]> {
    const out = new Array<string | null>(fields.length)
    for (let i = 0; i < fields.length; i++) out[i] = this.states.get(fields[i]!) ?? null
    return Promise.resolve(out)
  }
}

// One round trip and one command per batch, however many keys the bloom let through: measurably cheaper than a
// pipeline of HGETs (ioredis builds a command object and a promise per command; the script is one). It also asks
// whether the version still exists, so that a Redis that restarted empty (or a version removed under us) is never
// read as "no record" — which for a TACIR recipient would mean "allowed".
// KEYS[1] = meta of the version, KEYS[2..n+1] = bucket of each field; ARGV[1..n] = fields.
// Returns false when the version is gone, else the n values (false where absent).
// (Redis Cluster will need the keys grouped by slot: see the README's scale-out notes.)
const LOOKUP_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local out = {}
for i = 1, #ARGV do out[i] = redis.call('HGET', KEYS[i + 1], ARGV[i]) end
return out`

/** Keys per lookup script: about 0.5 ms of Redis time each. */
const SCRIPT_KEYS = 256

interface LookupRedis extends Redis {
  iysLookup (numKeys: number, ...args: string[]): Promise<(string | null)[] | null>
}

export class RedisView implements FilterView {
  readonly version: number
  readonly bloom: BloomFilter
  readonly buckets: number
  private readonly redis: LookupRedis
  private readonly bucketPrefix: string
  private readonly metaKey: string

  constructor (redis: Redis, version: number, bloom: BloomFilter, buckets: number, layout: Layout) {
    if (typeof (redis as unknown as { iysLookup?: unknown }).iysLookup !== 'function') redis.defineCommand('iysLookup', { lua: LOOKUP_LUA })
    this.redis = redis as LookupRedis
    this.version = version
    this.bloom = bloom
    this.buckets = buckets
    this.bucketPrefix = layout.bucketPrefix(version)
    this.metaKey = layout.meta(version)
  }

  /**
   * Batches of more than SCRIPT_KEYS keys go as several scripts, sent together (auto-pipelining: still one round
   * trip): Redis runs a script to the end before it serves anyone else, so one huge script would stall every other
   * client — the checks of all gateways — for milliseconds.
   */
  async lookup (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const n = fields.length
    if (n === 1) {
      // The common single check: one plain HMGET, cheaper for Redis than a script. The bucket's sentinel field
      // answers "is this version still here?" in the same command.
      const [sentinel, value] = await this.redis.hmget(this.bucketPrefix + buckets[0], BUCKET_SENTINEL, fields[0]!)
      if (sentinel === null) throw new VersionGoneError(this.version)
      return [value ?? null]
    }
    if (n <= SCRIPT_KEYS) return this.lookupPart(fields, buckets, 0, n)
    const parts: Promise<(string | null)[]>[] = []
    for (let from = 0; from < n; from += SCRIPT_KEYS) parts.push(this.lookupPart(fields, buckets, from, Math.min(n, from + SCRIPT_KEYS)))
    return (await Promise.all(parts)).flat()
  }

  private async lookupPart (fields: string[], buckets: number[], from: number, to: number): Promise<(string | null)[]> {
    const n = to - from
    const args = new Array<string>(1 + 2 * n)
    args[0] = this.metaKey
    for (let i = 0; i < n; i++) {
      args[1 + i] = this.bucketPrefix + buckets[from + i]
      args[1 + n + i] = fields[from + i]!
    }
    const values = await this.redis.iysLookup(1 + n, ...args)
    if (values === null) throw new VersionGoneError(this.version)
    return values
  }
}

export class VersionGoneError extends Error {
  override name = 'VersionGoneError'
  constructor (version: number) {
    super(`filter version ${version} is no longer in Redis (Redis restarted empty, or the version was removed)`)
  }
}
