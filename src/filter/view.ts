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
// whether the version is still the one this view serves — its generation id, not only its number, which repeats
// after Redis lost its data — so that a Redis that restarted empty (or a version removed or replaced under us) is
// never read as "no record", which for a TACIR recipient would mean "allowed".
// KEYS[1] = meta of the version, KEYS[2..n+1] = bucket of each field; ARGV[1] = generation id ("" for a version
// built before generation ids: then existence is all we can check), ARGV[2..n+1] = fields.
// Returns false when the version is gone or is another generation, else the n values (false where absent).
// (Redis Cluster will need the keys grouped by slot: see the README's scale-out notes.)
const LOOKUP_LUA = `
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
elseif redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return false end
local out = {}
for i = 2, #ARGV do out[i - 1] = redis.call('HGET', KEYS[i], ARGV[i]) end
return out`

/** Keys per lookup script: about 0.5 ms of Redis time each. */
const SCRIPT_KEYS = 256

interface LookupRedis extends Redis {
  iysLookup (numKeys: number, ...args: string[]): Promise<(string | null)[] | null>
}

export interface RedisViewOptions {
  /** The version's generation id (meta `gen`); null for a version built before generation ids existed. */
  generation?: string | null
  /**
   * The bound of a lookup's wait (REDIS_TIMEOUT_MS). ioredis's commandTimeout alone is not: with auto-pipelining a
   * command waits, unsent, until the pipeline ahead of it has settled — for a hung Redis, that one's whole timeout.
   */
  timeoutMs?: number
}

export class RedisView implements FilterView {
  readonly version: number
  readonly generation: string | null
  readonly bloom: BloomFilter
  readonly buckets: number
  private readonly redis: LookupRedis
  private readonly bucketPrefix: string
  private readonly metaKey: string
  private readonly timeoutMs: number

  constructor (redis: Redis, version: number, bloom: BloomFilter, buckets: number, layout: Layout, opts: RedisViewOptions = {}) {
    if (typeof (redis as unknown as { iysLookup?: unknown }).iysLookup !== 'function') redis.defineCommand('iysLookup', { lua: LOOKUP_LUA })
    this.redis = redis as LookupRedis
    this.version = version
    this.generation = opts.generation ?? null
    this.bloom = bloom
    this.buckets = buckets
    this.bucketPrefix = layout.bucketPrefix(version)
    this.metaKey = layout.meta(version)
    this.timeoutMs = opts.timeoutMs ?? 0
  }

  lookup (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const p = this.lookupAll(fields, buckets)
    return this.timeoutMs > 0 ? withDeadline(p, this.timeoutMs) : p
  }

  /**
   * Batches of more than SCRIPT_KEYS keys go as several scripts, sent together (auto-pipelining: still one round
   * trip): Redis runs a script to the end before it serves anyone else, so one huge script would stall every other
   * client — the checks of all gateways — for milliseconds.
   */
  private async lookupAll (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const n = fields.length
    if (n === 1) {
      // The common single check: one plain HMGET, cheaper for Redis than a script. The bucket's sentinel field
      // (its value is the generation id) answers "is this still the version I serve?" in the same command.
      const [sentinel, value] = await this.redis.hmget(this.bucketPrefix + buckets[0], BUCKET_SENTINEL, fields[0]!)
      if (sentinel === null || (this.generation !== null && sentinel !== this.generation)) throw new VersionGoneError(this.version)
      return [value ?? null]
    }
    if (n <= SCRIPT_KEYS) return this.lookupPart(fields, buckets, 0, n)
    const parts: Promise<(string | null)[]>[] = []
    for (let from = 0; from < n; from += SCRIPT_KEYS) parts.push(this.lookupPart(fields, buckets, from, Math.min(n, from + SCRIPT_KEYS)))
    return (await Promise.all(parts)).flat()
  }

  private async lookupPart (fields: string[], buckets: number[], from: number, to: number): Promise<(string | null)[]> {
    const n = to - from
    const args = new Array<string>(2 + 2 * n)
    args[0] = this.metaKey
    args[1 + n] = this.generation ?? ''
    for (let i = 0; i < n; i++) {
      args[1 + i] = this.bucketPrefix + buckets[from + i]
      args[2 + n + i] = fields[from + i]!
    }
    const values = await this.redis.iysLookup(1 + n, ...args)
    if (values === null) throw new VersionGoneError(this.version)
    return values
  }
}

/** `p`, or a StoreTimeoutError after `ms` (one timer per lookup batch; the command itself still settles later). */
function withDeadline<T> (p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new StoreTimeoutError(ms)) }, ms)
    p.then(v => { clearTimeout(timer); resolve(v) }, (err: unknown) => { clearTimeout(timer); reject(err) })
  })
}

export class StoreTimeoutError extends Error {
  override name = 'StoreTimeoutError'
  constructor (ms: number) {
    super(`Redis did not answer a lookup within ${ms} ms (REDIS_TIMEOUT_MS)`)
  }
}

export class VersionGoneError extends Error {
  override name = 'VersionGoneError'
  constructor (version: number) {
    super(`filter version ${version} is no longer in Redis (Redis restarted empty, or the version was removed or replaced)`)
  }
}
