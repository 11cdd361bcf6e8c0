// A FilterView is one immutable version of the filter as a gateway sees it: the local bloom mirror and a way to
// fetch exact states for the keys the bloom says may be present. Redis and the embedded map implement the same
// interface, so the check path has one shape whatever the deployment.

import type { Redis } from 'ioredis'
import type { BloomFilter } from './bloom.js'
import { CodedError } from '../domain/errors.js'
import { BUCKET_SENTINEL, type Layout } from './layout.js'
import type { ReplicaTable } from './replica.js'
import { withScripts, type ScriptedRedis } from './scripts.js'

export interface FilterView {
  readonly version: number
  readonly bloom: BloomFilter
  readonly buckets: number
  /** Exact encoded states for `fields` (key texts) in `buckets`; null where absent. Rejects if the store fails. */
  lookup (fields: string[], buckets: number[]): Promise<(string | null)[]>
  /** The version's local exact replica while it is current (mirror.ts), else null: checks then need no I/O. */
  exact?: () => ReplicaTable | null
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

// Batches go through lua/lookup.lua (one round trip and one command per batch, measurably cheaper than a pipeline of
// HGETs; it also proves that the version and every bucket read are still the ones this view serves, so that a lost or
// replaced version is never read as "no record": see the script's header).

/** Keys per lookup script: about 0.5 ms of Redis time each. */
const SCRIPT_KEYS = 256

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
  private readonly redis: ScriptedRedis
  private readonly bucketPrefix: string
  private readonly metaKey: string
  private readonly deadlines: DeadlineQueue | null
  /** Set by the mirror once the replica of this version is built (FilterView.exact). */
  exact: () => ReplicaTable | null = () => null

  constructor (redis: Redis, version: number, bloom: BloomFilter, buckets: number, layout: Layout, opts: RedisViewOptions = {}) {
    this.redis = withScripts(redis)
    this.version = version
    this.generation = opts.generation ?? null
    this.bloom = bloom
    this.buckets = buckets
    this.bucketPrefix = layout.bucketPrefix(version)
    this.metaKey = layout.meta(version)
    this.deadlines = (opts.timeoutMs ?? 0) > 0 ? new DeadlineQueue(opts.timeoutMs!) : null
  }

  lookup (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const p = this.lookupAll(fields, buckets)
    return this.deadlines !== null ? this.deadlines.wrap(p) : p
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
    if (values === null || values === 0) throw new VersionGoneError(this.version)
    return values
  }
}

interface PendingDeadline { at: number, reject: ((err: Error) => void) | null, next: PendingDeadline | null }

/**
 * The lookup deadlines of one view: `wrap(p)` is `p`, or a StoreTimeoutError `ms` after the call. Every deadline has
 * the same length, so the order they were set in is the order they expire in: one FIFO list and one timer (armed for
 * the oldest) serve all lookups, instead of a Timeout per lookup. A lookup that settles only clears its entry's
 * `reject`; the entry leaves the list when it reaches the front (at most `ms` later).
 */
class DeadlineQueue {
  private readonly ms: number
  private head: PendingDeadline | null = null
  private tail: PendingDeadline | null = null
  private timer: NodeJS.Timeout | null = null

  constructor (ms: number) {
    this.ms = ms
  }

  wrap<T> (p: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: PendingDeadline = { at: Date.now() + this.ms, reject, next: null }
      if (this.tail === null) this.head = entry
      else this.tail.next = entry
      this.tail = entry
      if (this.timer === null) this.arm()
      p.then(v => { entry.reject = null; resolve(v) }, (err: unknown) => { entry.reject = null; reject(err) })
    })
  }

  private arm (): void {
    this.timer = setTimeout(this.expire, Math.max(0, this.head!.at - Date.now()))
    this.timer.unref()
  }

  private readonly expire = (): void => {
    this.timer = null
    const now = Date.now()
    let e = this.head
    while (e !== null && (e.reject === null || e.at <= now)) {
      const reject = e.reject
      e.reject = null
      if (reject !== null) reject(new StoreTimeoutError(this.ms)) // the command itself still settles later
      e = e.next
    }
    this.head = e
    if (e === null) this.tail = null
    else this.arm()
  }
}

export class StoreTimeoutError extends CodedError<'STORE_TIMEOUT'> {
  constructor (ms: number) {
    super('STORE_TIMEOUT', `Redis did not answer a lookup within ${ms} ms (REDIS_TIMEOUT_MS)`)
  }
}

export class VersionGoneError extends CodedError<'VERSION_GONE'> {
  constructor (version: number) {
    super('VERSION_GONE', `filter version ${version} is no longer (wholly) in Redis (Redis restarted empty, the version was removed or replaced, or a bucket of it is gone)`)
  }
}
