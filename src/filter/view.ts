// A FilterView is one immutable version of the filter as a gateway sees it: the local bloom mirror and a way to
// fetch exact states for the keys the bloom says may be present. Redis and the embedded map implement the same
// interface, so the check path has one shape whatever the deployment.

import type { BloomFilter } from './bloom.js'
import { CodedError } from '../domain/errors.js'
import { BUCKET_GROUPS, BUCKET_SENTINEL, bucketGroup, bucketKey, type Layout } from './layout.js'
import type { ReplicaTable } from './replica.js'
import { withScripts, type ScriptedRedis } from './scripts.js'
import { isCluster, type RedisClient } from '../store/redis.js'

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
// HGETs; it also proves that every bucket read is still the version this view serves, so that a lost or replaced
// version is never read as "no record": see the script's header). In a Redis Cluster a script may only read one hash
// slot, so a batch is split by bucket group (layout.ts): one script per group it touches, sent together.

/** Keys per lookup script: about 0.5 ms of Redis time each. */
const SCRIPT_KEYS = 256

export interface RedisViewOptions {
  /** The version's generation id (meta `gen`): every bucket's sentinel must hold it. */
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
  /** Batches are split by bucket group (one hash slot each). */
  private readonly cluster: boolean
  private readonly deadlines: DeadlineQueue | null
  /** Set by the mirror once the replica of this version is built (FilterView.exact). */
  exact: () => ReplicaTable | null = () => null

  constructor (redis: RedisClient, version: number, bloom: BloomFilter, buckets: number, layout: Layout, opts: RedisViewOptions = {}) {
    this.redis = withScripts(redis)
    this.version = version
    this.generation = opts.generation ?? null
    this.bloom = bloom
    this.buckets = buckets
    this.bucketPrefix = layout.bucketPrefix(version)
    this.cluster = isCluster(redis)
    this.deadlines = (opts.timeoutMs ?? 0) > 0 ? new DeadlineQueue(opts.timeoutMs!) : null
  }

  lookup (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const p = this.lookupAll(fields, buckets)
    return this.deadlines !== null ? this.deadlines.wrap(p) : p
  }

  /**
   * Batches of more than SCRIPT_KEYS keys go as several scripts, sent together (one round trip on one Redis, where
   * auto-pipelining writes them at once; on a cluster, one per group, in parallel): Redis runs a script to the end before it serves anyone else, so one huge script would stall every other
   * client — the checks of all gateways — for milliseconds.
   */
  private async lookupAll (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const n = fields.length
    if (n === 1) {
      // The common single check: one plain HMGET, cheaper for Redis than a script. The bucket's sentinel field
      // (its value is the generation id) answers "is this still the version I serve?" in the same command.
      const [sentinel, value] = await this.redis.hmget(bucketKey(this.bucketPrefix, buckets[0]!), BUCKET_SENTINEL, fields[0]!)
      if (sentinel === null || sentinel !== this.generation) throw new VersionGoneError(this.version)
      return [value ?? null]
    }
    if (this.cluster) return this.lookupByGroup(fields, buckets)
    if (n <= SCRIPT_KEYS) return this.lookupPart(fields, buckets, null, 0, n)
    const parts: Promise<(string | null)[]>[] = []
    for (let from = 0; from < n; from += SCRIPT_KEYS) parts.push(this.lookupPart(fields, buckets, null, from, Math.min(n, from + SCRIPT_KEYS)))
    return (await Promise.all(parts)).flat()
  }

  /** A cluster's batch: the keys sorted by bucket group (a counting sort), one script per group and SCRIPT_KEYS. */
  private async lookupByGroup (fields: string[], buckets: number[]): Promise<(string | null)[]> {
    const n = fields.length
    const starts = new Int32Array(BUCKET_GROUPS + 1)
    for (let i = 0; i < n; i++) starts[bucketGroup(buckets[i]!) + 1]!++
    for (let g = 0; g < BUCKET_GROUPS; g++) starts[g + 1]! += starts[g]!
    const order = new Int32Array(n)
    const fill = starts.slice(0, BUCKET_GROUPS)
    for (let i = 0; i < n; i++) order[fill[bucketGroup(buckets[i]!)]!++] = i
    const parts: Promise<(string | null)[]>[] = []
    const at: number[] = []
    for (let g = 0; g < BUCKET_GROUPS; g++) {
      for (let from = starts[g]!; from < starts[g + 1]!; from += SCRIPT_KEYS) {
        parts.push(this.lookupPart(fields, buckets, order, from, Math.min(starts[g + 1]!, from + SCRIPT_KEYS)))
        at.push(from)
      }
    }
    const out = new Array<string | null>(n)
    const results = await Promise.all(parts)
    for (let p = 0; p < results.length; p++) {
      const values = results[p]!
      for (let j = 0; j < values.length; j++) out[order[at[p]! + j]!] = values[j] ?? null
    }
    return out
  }

  /** Keys [from, to) of the batch (through `order` when given) in one script. */
  private async lookupPart (fields: string[], buckets: number[], order: Int32Array | null, from: number, to: number): Promise<(string | null)[]> {
    const n = to - from
    const args = new Array<string>(1 + n + n)
    args[n] = this.generation ?? ''
    for (let i = 0; i < n; i++) {
      const k = order === null ? from + i : order[from + i]!
      args[i] = bucketKey(this.bucketPrefix, buckets[k]!)
      args[n + 1 + i] = fields[k]!
    }
    const values = await this.redis.iysLookup(n, ...args)
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
