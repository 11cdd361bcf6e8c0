// The change applier: follows the evidence ledger in Postgres by seq and applies every change to Redis — the exact
// state in the current filter version (and in the version `load` is building), that version's bloom bits, the
// `applied` watermark and the change stream gateways follow. It wakes on NOTIFY and also polls, so a change whose
// NOTIFY was missed, or that was committed while Redis was down, is applied when the next pass runs.
//
// Correctness rests on two things: seq order is commit order (every seq-assigning transaction holds
// CONSENT_WRITE_LOCK), so reading `seq > applied` never skips a change; and the Lua scripts only write a state whose
// seq is newer than the stored one, so any number of appliers, replays and retries are harmless.
//
// A batch is applied in two steps, so that it works on a Redis Cluster, where a script touches one hash slot
// (layout.ts): the states and bloom bits, one script per bucket group (lua/apply-states.lua), then one script in the
// control slot (lua/apply-commit.lua) that proves the pointers have not moved, publishes the changes on the stream and
// raises the watermark. When the pointers moved in between, both steps run again for the new versions.
// A change whose commit did not happen is not applied as far as anyone can tell: the watermark stays, no gateway
// hears of it, and the states already written are the same states the next attempt writes.

import type { Logger } from 'pino'
import type { Pool, PoolClient } from '../store/pg.js'
import { CHANGES_CHANNEL } from '../store/consent-store.js'
import { SingleFlight } from '../util/single-flight.js'
import { redisBitOffsets } from './bloom.js'
import { bucketOf, hashText, keyHash, keyTextSql } from './key.js'
import { BUCKET_GROUPS, bucketGroup, bucketKey, type Layout } from './layout.js'
import { withScripts, type ScriptedRedis } from './scripts.js'
import { FailoverReplay } from './failover-replay.js'
import { isCluster, type RedisClient } from '../store/redis.js'
import { encodeStateFrom, stateColumnsSql } from './state.js'

/** Changes read from the ledger per query (readChanges). */
export const CHANGES_BATCH = 2000
/** Back-off between attempts to take LISTEN again after its connection broke. */
const LISTEN_RETRY_MIN_MS = 200
const LISTEN_RETRY_MAX_MS = 5000
const STREAM_MAXLEN = 100_000
/**
 * A pass that wrote nothing to the change stream for this long adds a heartbeat entry (`h`, the watermark): the
 * replicas' proof that the pipeline from Postgres into Redis is alive and that they have missed nothing (mirror.ts).
 */
export const HEARTBEAT_MS = 500
const NO_VERSION = 'no filter version in Redis yet: changes wait in Postgres until `iys-gateway load` runs'

// One batch of the ledger: key text and the pieces of the encoded state, computed by Postgres from the tables that
// own both encodings (key.ts, state.ts), the same columns `load` reads (build.ts).
const CHANGES_SQL = `SELECT ${keyTextSql()} AS k, ${stateColumnsSql()}
       FROM consent_history WHERE seq > $1 ORDER BY seq LIMIT ${CHANGES_BATCH}`

interface VersionGeometry { version: number, buckets: number, blocks: number, gen: string }
/** One ledger change: key text, and the pieces of its encoded state (encodeStateFrom(s, src, d, seq)). */
export interface ChangeRow { k: string, s: string, src: number, d: string, seq: string }

/**
 * The next CHANGES_BATCH changes with seq > `from`, in seq order. Seq order is commit order, so a reader that
 * applies every change it is given and goes on from the last one's seq never skips a change.
 */
export async function readChanges (pool: Pool, from: number): Promise<ChangeRow[]> {
  return (await pool.query<ChangeRow>(CHANGES_SQL, [from])).rows
}

/** A change's state as Redis and the change stream hold it (state.ts). */
export const encodedStateOf = (row: ChangeRow): string => encodeStateFrom(row.s, row.src, Number(row.d), Number(row.seq))

export interface ApplierOptions {
  pool: Pool
  redis: RedisClient
  layout: Layout
  log: Logger
  /** Backstop poll interval (ms) in case a NOTIFY is missed. */
  pollMs?: number
  /** Called on every NOTIFY of a committed change (the mirror's replica follows the ledger by it while Redis is away). */
  onNotify?: () => void
}

export class ChangeApplier {
  private readonly opts: ApplierOptions
  private readonly redis: ScriptedRedis
  private readonly geometry = new Map<number, VersionGeometry>()
  private listener: PoolClient | null = null
  /** Destroys the LISTEN connection (once, whoever comes first: its error, its end, or stop()). */
  private dropListener: (() => void) | null = null
  private listenTimer: NodeJS.Timeout | null = null
  private listenBackoffMs = LISTEN_RETRY_MIN_MS
  private timer: NodeJS.Timeout | null = null
  /** Passes never overlap; a NOTIFY or poll during one is served by another right after it. */
  private readonly flight = new SingleFlight(() => this.pass())
  private stopped = false
  private lastProblem = ''
  /** Highest seq this applier has seen applied to Redis, by itself or another (the lag metric, readiness, tests). */
  appliedSeq = 0
  /** When this applier last wrote to the change stream (changes or a heartbeat). */
  private streamWrittenAt = 0
  private readonly replay: FailoverReplay

  constructor (opts: ApplierOptions) {
    this.opts = opts
    this.redis = withScripts(opts.redis)
    this.replay = new FailoverReplay(opts.redis)
  }

  /** True while a LISTEN connection is up (NOTIFY wakes the applier; otherwise only the poll does). */
  get listening (): boolean { return this.listener !== null }

  async start (): Promise<void> {
    await this.listen()
    const tick = (): void => {
      if (this.stopped) return
      this.kick()
      this.timer = setTimeout(tick, this.opts.pollMs ?? 1000)
      this.timer.unref()
    }
    tick()
  }

  /**
   * Takes a connection of its own and LISTENs on it. When that connection breaks (a Postgres restart, a network
   * blip), it is destroyed — never left checked out of the pool, where it would hold pool.end() — and LISTEN is
   * taken again with back-off, followed by a pass for what was committed meanwhile.
   */
  private async listen (): Promise<void> {
    this.listenTimer = null
    if (this.stopped) return
    let client: PoolClient | null = null
    let released = false
    const drop = (err?: Error): void => {
      if (released) return
      released = true
      if (this.listener === client) { this.listener = null; this.dropListener = null }
      client!.release(err ?? true) // destroys the connection
      if (!this.stopped) {
        this.opts.log.warn({ err: err?.message }, 'change applier lost its LISTEN connection; reconnecting (the poll covers the gap)')
        this.scheduleListen()
      }
    }
    try {
      client = await this.opts.pool.connect()
      client.on('error', drop)
      client.on('end', () => { drop() })
      client.on('notification', () => { this.kick(); this.opts.onNotify?.() })
      await client.query(`LISTEN ${CHANGES_CHANNEL}`)
      if (released) return
      if (this.stopped) { drop(); return }
      this.listener = client
      this.dropListener = drop
      if (this.listenBackoffMs > LISTEN_RETRY_MIN_MS) this.opts.log.info('change applier is listening again')
      this.listenBackoffMs = LISTEN_RETRY_MIN_MS
      this.kick() // changes committed while nobody listened
    } catch (err) {
      if (client === null) {
        if (this.listenBackoffMs === LISTEN_RETRY_MIN_MS) this.opts.log.warn({ err }, 'change applier cannot LISTEN; polling until it can')
        this.scheduleListen()
      } else {
        drop(err as Error)
      }
    }
  }

  /**
   * A pass just read Postgres, so it is back: a LISTEN waiting out its back-off (up to LISTEN_RETRY_MAX_MS after a
   * long outage) is taken now, so propagation is back to NOTIFY speed at once instead of the poll's.
   */
  private listenSoonerIfBack (): void {
    if (this.listener !== null || this.listenTimer === null || this.stopped) return
    clearTimeout(this.listenTimer)
    void this.listen()
  }

  private scheduleListen (): void {
    if (this.stopped || this.listenTimer !== null) return
    const wait = this.listenBackoffMs
    this.listenBackoffMs = Math.min(this.listenBackoffMs * 2, LISTEN_RETRY_MAX_MS)
    this.listenTimer = setTimeout(() => { void this.listen() }, wait)
    this.listenTimer.unref()
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.flight.stop()
    if (this.timer !== null) clearTimeout(this.timer)
    if (this.listenTimer !== null) clearTimeout(this.listenTimer)
    await this.flight.idle()
    // Destroyed, not released with an UNLISTEN first: a round trip to a Postgres that may be gone could hang, and
    // closing the connection ends the LISTEN anyway.
    this.dropListener?.()
  }

  /** Runs a pass now, or right after the one in progress. */
  kick (): void {
    this.flight.kick()
  }

  /** One pass; a failure is logged once per distinct problem and retried by the next poll or NOTIFY. */
  private async pass (): Promise<void> {
    try {
      await this.catchUp()
      this.replay.mark(this.appliedSeq, Date.now())
      const from = await this.replay.check(Date.now())
      if (from !== null) {
        this.opts.log.warn({ from, to: this.appliedSeq }, 'the Redis Cluster\'s masters changed: applying the recent changes again (a failover may have lost writes a replica never got)')
        await this.applyAgain(from)
      }
      if (Date.now() - this.streamWrittenAt >= HEARTBEAT_MS) {
        await this.opts.redis.xadd(this.opts.layout.changes, 'MAXLEN', '~', STREAM_MAXLEN, '*', 'h', String(this.appliedSeq))
        this.streamWrittenAt = Date.now()
      }
    } catch (err) {
      const message = (err as Error).message
      if (message !== this.lastProblem) this.opts.log.warn({ err }, 'change applier: pass failed; will retry')
      this.lastProblem = message
      return
    }
    this.listenSoonerIfBack()
  }

  /**
   * Applies every change after Redis's watermark. Resolves when Redis has caught up with Postgres.
   * The watermark is read again before each batch and the higher of it and our own position wins: a build or a flip
   * (or another applier) may have raised it meanwhile — after Redis lost its data, the build sets it to its snapshot
   * — and walking on from our own position would re-apply what is already there while live changes wait behind it.
   * With no version at all there is nothing to apply to, so nothing is read from Postgres either.
   */
  async catchUp (): Promise<void> {
    const { redis, layout } = this.opts
    let from = 0
    while (true) {
      const [applied, cur, bld] = await redis.mget(layout.applied, layout.current, layout.building)
      if (cur === null && bld === null) throw new Error(NO_VERSION)
      from = Math.max(from, Number(applied ?? '0'))
      this.appliedSeq = Math.max(this.appliedSeq, from) // another applier's (or a build's) progress counts too
      const next = await this.applyFrom(from)
      if (next === from) return
      from = next
    }
  }

  /** Applies again every change with seq > from up to where this applier is (failover-replay.ts). */
  private async applyAgain (from: number): Promise<void> {
    const until = this.appliedSeq
    for (let next = from; next < until;) {
      const reached = await this.applyFrom(next)
      if (reached === next) return
      next = reached
    }
  }

  /** Applies one batch of changes with seq > from; returns the highest seq applied (`from` when none). */
  async applyFrom (from: number): Promise<number> {
    const rows = await readChanges(this.opts.pool, from)
    if (rows.length === 0) return from
    for (let attempt = 0; ; attempt++) {
      if (await this.applyRows(rows) !== -1) break
      this.geometry.clear() // a version may have been replaced by another of the same number
      if (attempt > 20) throw new Error('filter version pointers keep moving; giving up this pass')
    }
    const last = Number(rows[rows.length - 1]!.seq)
    this.appliedSeq = Math.max(this.appliedSeq, last)
    this.streamWrittenAt = Date.now()
    this.lastProblem = ''
    return last
  }

  /** One batch through both steps; -1 when the pointers moved (the caller retries). */
  private async applyRows (rows: ChangeRow[]): Promise<number> {
    const { layout } = this.opts
    const redis = this.redis
    const [cur, bld] = await redis.mget(layout.current, layout.building)
    if (cur === null && bld === null) throw new Error(NO_VERSION)
    const versions: VersionGeometry[] = []
    if (cur !== null) versions.push(await this.geometryOf(Number(cur)))
    const building = bld === null ? null : parseInt(bld, 10) // the claim is "N|generation"
    if (building !== null && String(building) !== cur) versions.push(await this.geometryOf(building))

    // Step 1: the states and bloom bits, by bucket group (one hash slot each; one Redis takes them all in one script).
    const byGroup = isCluster(redis) ? BUCKET_GROUPS : 1
    const keys: string[][] = Array.from({ length: byGroup }, () => [])
    const args: (string | number)[][] = Array.from({ length: byGroup }, () => [])
    const commit: (string | number)[] = [cur ?? '0', bld ?? '0', rows.length, STREAM_MAXLEN, versions[0]?.gen ?? '', versions[1]?.gen ?? '']
    const offsets = new Array<number>(8)
    // Per version, once: its bucket prefix, and whether its buckets must exist already (the current one's do).
    const prefixes = versions.map(g => layout.bucketPrefix(g.version))
    const mustExist = versions.map(g => String(g.version) === cur ? '1' : '0')
    for (const row of rows) {
      const value = encodedStateOf(row)
      const seq = Number(row.seq)
      commit.push(seq, row.k, value)
      hashText(row.k)
      const h1 = keyHash[0]!; const h2 = keyHash[1]!
      for (let v = 0; v < versions.length; v++) {
        const g = versions[v]!
        const bucket = bucketOf(h1, h2, g.buckets)
        const group = byGroup === 1 ? 0 : bucketGroup(bucket)
        keys[group]!.push(bucketKey(prefixes[v]!, bucket), layout.bloomSegment(g.version, bucketGroup(bucket)))
        redisBitOffsets(g.blocks, h1, h2, offsets)
        args[group]!.push(row.k, value, seq, mustExist[v]!, ...offsets)
      }
    }
    const writes: Promise<number>[] = []
    for (let g = 0; g < byGroup; g++) {
      if (keys[g]!.length > 0) writes.push(redis.iysApplyStates(keys[g]!.length, ...keys[g]!, ...args[g]!))
    }
    await Promise.all(writes)

    // Step 2: in the control slot, atomically: still these versions? stream entries, watermark.
    const commitKeys = [layout.current, layout.building, layout.applied, layout.changes]
    for (const g of versions) commitKeys.push(layout.meta(g.version))
    const result = await redis.iysApplyCommit(commitKeys.length, ...commitKeys, ...commit)
    if (result === -2) throw new Error(NO_VERSION)
    return result
  }

  /**
   * Bucket count and bloom size of a version (from its meta). Cached: a version never changes shape, but a version
   * number can be reused by another generation after Redis lost its data — the script checks the generation.
   */
  private async geometryOf (version: number): Promise<VersionGeometry> {
    const cached = this.geometry.get(version)
    if (cached !== undefined) return cached
    const meta = await this.opts.redis.hgetall(this.opts.layout.meta(version))
    const buckets = Number(meta.buckets)
    const blocks = Number(meta.blocks)
    if (!(buckets > 0 && blocks > 0)) throw new Error(`filter version ${version} has no meta yet`)
    const g = { version, buckets, blocks, gen: meta.gen ?? '' }
    this.geometry.set(version, g)
    return g
  }
}
