// A FilterView is one immutable version of the filter as a gateway sees it: the local bloom mirror and a way to
// fetch exact states for the keys the bloom says may be present. Redis and the embedded map implement the same
// interface, so the check path has one shape whatever the deployment.

import type { Redis } from 'ioredis'
import type { BloomFilter } from './bloom.js'
import type { Layout } from './layout.js'

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

export class RedisView implements FilterView {
  readonly version: number
  readonly bloom: BloomFilter
  readonly buckets: number
  private readonly redis: Redis
  private readonly bucketPrefix: string
  private readonly metaKey: string

  constructor (redis: Redis, version: number, bloom: BloomFilter, buckets: number, layout: Layout) {
    this.redis = redis
    this.version = version
    this.bloom = bloom
    this.buckets = buckets
    this.bucketPrefix = layout.bucketPrefix(version)
    this.metaKey = layout.meta(version)
  }

  /**
   * One pipeline for the whole batch: one round trip however many keys the bloom let through. The pipeline also
   * asks whether this version still exists: a Redis that restarted empty (or a version removed under us) must not
   * answer "no record", which for a TACIR recipient would mean "allowed". Then the lookup fails (fail closed).
   */
  async lookup (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const n = fields.length
    const p = this.redis.pipeline()
    p.exists(this.metaKey)
    for (let i = 0; i < n; i++) p.hget(this.bucketPrefix + buckets[i], fields[i]!)
    const replies = await p.exec()
    if (replies === null) throw new Error('redis pipeline was discarded')
    const [metaErr, exists] = replies[0]!
    if (metaErr !== null) throw metaErr
    if (exists !== 1) throw new VersionGoneError(this.version)
    const out = new Array<string | null>(n)
    for (let i = 0; i < n; i++) {
      const [err, v] = replies[i + 1]!
      if (err !== null) throw err
      out[i] = v as string | null
    }
    return out
  }
}

export class VersionGoneError extends Error {
  override name = 'VersionGoneError'
  constructor (version: number) {
    super(`filter version ${version} is no longer in Redis (Redis restarted empty, or the version was removed)`)
  }
}
