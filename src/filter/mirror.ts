// The gateway's local mirror of the current filter version in Redis. It polls the version pointer every
// FILTER_POLL_MS; when a load flips it, the new bloom is fetched and swapped in with one assignment, so a request
// in flight finishes on the version it started with and the next one uses the new. Each poll also writes a
// heartbeat (which version this gateway serves), which is how `load` knows when the old version may go.
// Between loads, changes arrive through the change stream: a second connection blocks on XREAD and sets each
// changed key's bits in the local bloom, so a key that just got its first record is looked up in Redis at once.
//
// With a replica (REPLICA, filter/replica.ts), the mirror also keeps the served version's exact states in local
// memory: read from Redis once the version is served (replica-source.ts), then kept current from the same stream,
// whose entries carry each change's state. Checks are answered from it, without Redis, only while it is current:
// while the change appliers' entries or heartbeats (changes.ts, HEARTBEAT_MS) keep arriving, at most
// REPLICA_MAX_LAG_MS apart. When the stream goes quiet (Redis unreachable or hung) and the gateway has Postgres, the
// mirror follows the ledger itself by seq (woken by the applier's NOTIFY, and every LEDGER_POLL_MS), so a RET
// committed during a Redis outage still reaches the replica at once and checks keep being answered exactly from it.
// Without news from either (both down, or no applier and no Postgres) the checks go the Redis way again, and fail
// closed where Redis cannot answer.

import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { readBloom } from './bloom-store.js'
import { BLOOM_SEGMENTS } from './bloom.js'
import { hashText, keyHash } from './key.js'
import type { Layout } from './layout.js'
import { RedisView } from './view.js'
import type { ReplicaTable } from './replica.js'
import { buildReplica } from './replica-source.js'
import { CHANGES_BATCH, encodedStateOf, readChanges } from './changes.js'
import type { Pool } from '../store/pg.js'
import { SingleFlight } from '../util/single-flight.js'
import { duplicate, type RedisClient } from '../store/redis.js'

/**
 * Command timeout of the connection that downloads a version's bloom and meta. The gateway's own connection fails
 * fast (REDIS_TIMEOUT_MS, e.g. 500 ms), which a bloom of hundreds of MB cannot meet, so such a version would never
 * load. Generous, not unbounded: a poll stuck on a hung Redis would stop the heartbeat for good.
 */
const DOWNLOAD_TIMEOUT_MS = 120_000
/** Wait before building a replica again after a build failed. */
const REPLICA_RETRY_MS = 5000
/**
 * The replica follows the ledger in Postgres when the change stream has brought nothing for STREAM_QUIET_MS (two
 * heartbeat intervals, changes.ts HEARTBEAT_MS), reading it every LEDGER_POLL_MS: a RET committed while Redis is away
 * reaches the checks within about LEDGER_POLL_MS plus one query.
 */
const STREAM_QUIET_MS = 1000
const LEDGER_POLL_MS = 200

export interface MirrorOptions {
  pollMs: number
  log: Logger
  /** Bound of a check's wait on Redis (REDIS_TIMEOUT_MS), given to every view. */
  timeoutMs?: number
  onSwitch?: (view: RedisView, keys: number) => void
  /** The mirror stopped serving a version (it is gone from Redis, or was replaced by one it cannot load). */
  onDrop?: () => void
  /** The local exact replica (off: every check asks Redis). */
  replica?: { maxLagMs: number, maxBytes: number }
  /** Postgres, for the replica to follow the ledger while the change stream is quiet (Redis away). */
  ledger?: Pool
}

/** Why the mirror serves nothing, or serves a version it cannot vouch for (null: it serves the current version). */
export type MirrorProblem =
  | { kind: 'no-version' } // Redis has never had a version (or lost it before this process served one)
  | { kind: 'lost', since: number } // the version we served is gone: Redis restarted empty or was flushed
  | { kind: 'unloadable', since: number, version: number, error: string } // Redis points at a version we cannot load
  | { kind: 'unreachable', since: number, error: string } // Redis has not answered the pointer read

export class FilterMirror {
  readonly gatewayId = randomUUID()
  view: RedisView | null = null
  /** Last time the pointer was read successfully (ms), for /readyz. */
  lastSyncAt = 0
  lastError: string | null = null
  problem: MirrorProblem | null = { kind: 'no-version' }
  private readonly redis: RedisClient
  private readonly layout: Layout
  private readonly opts: MirrorOptions
  private timer: NodeJS.Timeout | null = null
  private stopped = false
  private follower: RedisClient | null = null
  /** For downloads (bloom, meta): made on first use, see DOWNLOAD_TIMEOUT_MS. */
  private downloader: RedisClient | null = null
  /** Last change-stream entry applied to the local bloom. */
  private streamId = '0-0'
  private reloadNeeded = false
  /** The follower reconnected: ioredis re-sends its XREAD silently, so the poll checks for a gap in the stream. */
  private followerReconnected = false
  /** The replica of the served view, once built (null: none, or building, or dropped). */
  private replica: ReplicaTable | null = null
  /** What the replica is doing, for /readyz and the metrics. */
  replicaState: ReplicaStatus = 'off'
  /**
   * When the replica last had news: a change-stream entry (a change or an applier's heartbeat) arrived, or a read
   * of the ledger in Postgres reached its end. Its proof of being current (REPLICA_MAX_LAG_MS).
   */
  private newsAt = 0
  /** When the last change-stream entry arrived. */
  private streamNewsAt = 0
  /** Where the replica's last news came from, for /readyz. */
  private newsFrom: 'stream' | 'ledger' | null = null
  /** Every change with seq ≤ replicaSeq is in the replica (a stream entry's seq, a heartbeat's watermark, the ledger). */
  private replicaSeq = 0
  private ledgerTimer: NodeJS.Timeout | null = null
  /** Reads of the ledger never overlap; a NOTIFY during one runs another right after it. */
  private readonly ledgerFlight = new SingleFlight(() => this.followLedger())
  /**
   * The connection to Redis came back and no poll has read the pointer through it yet: Redis may have come back
   * empty, so nothing is vouched for until the poll (started at once) has looked.
   */
  redisBackUnverified = false
  private polling: Promise<void> | null = null
  /** The served version lost a group (probeSegment): it needs a rebuild. Cleared when another version is served. */
  damaged = false
  private probe = 0

  constructor (redis: RedisClient, layout: Layout, opts: MirrorOptions) {
    this.redis = redis
    this.layout = layout
    this.opts = opts
  }

  /** Polls once right away (so a caller can await the first version) and then every pollMs. */
  async start (): Promise<void> {
    // The connection's state, at once rather than at the next poll: a Redis that went away is unreachable from the
    // moment its connection closed, and one that came back is polled right away (it may have come back empty).
    let closed = false
    this.redis.on('close', () => {
      closed = true
      if (this.problem === null) this.problem = { kind: 'unreachable', since: Date.now(), error: 'the connection to Redis closed' }
    })
    this.redis.on('ready', () => {
      if (!closed || this.stopped) return
      closed = false
      this.redisBackUnverified = true
      void this.poll()
    })
    await this.poll()
    this.schedule()
    this.follower = duplicate(this.redis, { enableOfflineQueue: true, commandTimeout: undefined, maxRetriesPerRequest: null })
    this.follower.on('error', () => {})
    let connectedOnce = false
    this.follower.on('ready', () => {
      if (connectedOnce) this.followerReconnected = true
      connectedOnce = true
    })
    void this.follow()
    if (this.opts.ledger !== undefined && this.opts.replica !== undefined) this.scheduleLedger()
  }

  /** Applies change-stream entries to the local bloom, forever. */
  private async follow (): Promise<void> {
    const sub = this.follower!
    while (!this.stopped) {
      try {
        const res = await sub.xread('COUNT', 1000, 'BLOCK', 1000, 'STREAMS', this.layout.changes, this.streamId)
        if (res === null) continue
        const entries = res[0]![1]
        const view = this.view
        const replica = this.replica
        for (const [id, fields] of entries) {
          this.streamId = id
          if (fields[0] !== 'k') { // an applier's heartbeat: every change up to its watermark is before it
            if (replica !== null) this.raiseReplicaSeq(replica, Number(fields[1]))
            continue
          }
          if (view !== null) { hashText(fields[1]!); view.bloom.add(keyHash[0]!, keyHash[1]!) }
          if (replica !== null && this.applyEntry(replica, fields)) this.raiseReplicaSeq(replica, Number(fields[3]))
        }
        this.newsAt = this.streamNewsAt = Date.now()
        this.newsFrom = 'stream'
        // The stream is trimmed: a follower that fell further behind than its length has missed bits.
        if (entries.length === 1000 && await this.fellBehind(sub)) this.reloadNeeded = true
      } catch (err) {
        if (this.stopped) return
        // Disconnected: entries may have been trimmed meanwhile. Redis's own copy of the bloom is always current.
        this.reloadNeeded = true
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    }
  }

  /**
   * True when entries after our position may be gone: the stream starts after it, or is gone altogether. (XRANGE, not
   * XINFO STREAM: ioredis knows no key in XINFO, so on a Redis Cluster it would go to the wrong node.)
   */
  private async fellBehind (via: RedisClient): Promise<boolean> {
    const first = (await via.xrange(this.layout.changes, '-', '+', 'COUNT', 1))[0]?.[0]
    if (first === undefined) return this.streamId !== '0-0' // the stream is gone (or empty): what it held is gone too
    return compareIds(first, this.streamId) > 0
  }

  private schedule (): void {
    if (this.stopped) return
    this.timer = setTimeout(() => { this.poll().finally(() => this.schedule()) }, this.opts.pollMs)
    this.timer.unref()
  }

  /** Reads the pointer and follows it; a poll asked for while one runs joins it (they never overlap). */
  async poll (): Promise<void> {
    if (this.polling === null) this.polling = this.pollOnce().finally(() => { this.polling = null })
    return this.polling
  }

  private async pollOnce (): Promise<void> {
    let cur: string | null
    let gen: string | null
    try {
      // One command for the pointer and the generation id: they are set together, in one script, by `load`.
      [cur, gen] = await this.redis.mget(this.layout.current, this.layout.generation)
      if (this.followerReconnected) {
        this.followerReconnected = false
        if (await this.fellBehind(this.redis)) this.reloadNeeded = true
      }
    } catch (err) {
      const msg = (err as Error).message
      if (msg !== this.lastError) this.opts.log.warn({ err }, 'filter mirror cannot reach Redis; serving the version it has')
      this.lastError = msg
      // A lost or unloadable version stays the problem; otherwise say that Redis does not answer.
      if (this.problem === null || this.problem.kind === 'unreachable') {
        this.problem = { kind: 'unreachable', since: this.problem?.since ?? Date.now(), error: msg }
      }
      return
    }
    this.lastSyncAt = Date.now()
    this.lastError = null
    this.redisBackUnverified = false
    if (cur === null) {
      this.lose()
    } else {
      const view = this.view
      const same = view !== null && view.version === +cur && view.generation === gen
      if (!same || this.reloadNeeded) {
        try {
          await this.switchTo(+cur, gen)
          this.problem = null
        } catch (err) {
          const msg = (err as Error).message
          if (this.problem?.kind !== 'unloadable' || this.problem.error !== msg) this.opts.log.error({ version: +cur, err }, 'cannot load the filter version Redis points at')
          // Fail closed rather than keep serving the version we hold: once the pointer has moved, the change applier
          // writes only to the current version (and one being built), so ours no longer receives changes — a RET
          // committed after the flip is not in it. (The other way, applying changes to the previous version until
          // it is removed, would need a third pointer every applier and every build keep right.) The same number
          // with another generation: ours was lost and replaced; it is not current either.
          if (view !== null) { this.view = null; this.opts.onDrop?.() }
          this.problem = { kind: 'unloadable', since: this.problem?.kind === 'unloadable' ? this.problem.since : Date.now(), version: +cur, error: msg }
        }
      } else {
        if (this.problem !== null) this.problem = null
        await this.probeSegment(view)
      }
    }
    try {
      const v = this.view
      await this.redis.hset(this.layout.gateways, this.gatewayId, `${v?.version ?? 0}|${Date.now()}|${v?.generation ?? ''}`)
    } catch { /* the next poll reports it */ }
  }

  /**
   * One bloom segment of the served version per poll (all of them every BLOOM_SEGMENTS polls): in a Redis Cluster a
   * shard can lose its data alone (restarted empty with no replica to take over), and the groups it held with it, while
   * the pointer lives on another shard. `damaged` then asks for a rebuild (AUTO_REBUILD, rebuild.ts); the version keeps
   * serving meanwhile: its replica, current from the stream, still answers all keys right, and lookups of the lost
   * groups in Redis fail closed (their buckets lack their sentinel).
   */
  private async probeSegment (view: RedisView): Promise<void> {
    this.probe = (this.probe + 1) % BLOOM_SEGMENTS
    try {
      if (await this.redis.exists(this.layout.bloomSegment(view.version, this.probe)) === 1 || this.damaged) return
      this.damaged = true
      this.opts.log.error({ version: view.version, group: this.probe }, 'a group of the served filter version is gone from Redis (a shard lost its data?): it needs a rebuild')
    } catch { /* unreachable: the next poll says so */ }
  }

  /**
   * The pointer is gone: Redis lost its data (restart without persistence, flush). Whatever we hold is no longer
   * what Redis serves, and changes committed from now on reach no bloom; serve nothing (fail closed) until a version
   * is loaded. Keeping the old bloom would answer "no record" locally — for a TACIR recipient, "allowed" — for keys
   * whose first record, a RET, arrived after the loss.
   */
  private lose (): void {
    this.setReplica(null)
    if (this.view !== null) {
      this.opts.log.error({ version: this.view.version }, 'the filter version pointer is gone from Redis (restarted empty?): commercial checks fail closed until a version is loaded')
      this.view = null
      this.opts.onDrop?.()
      this.problem = { kind: 'lost', since: Date.now() }
      return
    }
    if (this.problem === null || this.problem.kind === 'unreachable' || this.problem.kind === 'unloadable') this.problem = { kind: 'no-version' }
  }

  private async switchTo (version: number, generation: string | null): Promise<void> {
    this.reloadNeeded = false
    this.damaged = false
    this.setReplica(null) // the version served is being replaced: its replica stops answering now, not after the download
    // Changes applied after this point are in the stream; those before it are in the bloom we download.
    const last = await this.redis.xrevrange(this.layout.changes, '+', '-', 'COUNT', 1)
    const streamMark = last[0]?.[0] ?? '0-0'
    if (this.downloader === null) {
      this.downloader = duplicate(this.redis, { commandTimeout: DOWNLOAD_TIMEOUT_MS, enableAutoPipelining: false, enableOfflineQueue: true, maxRetriesPerRequest: 1 })
      this.downloader.on('error', () => {})
    }
    const meta = await this.downloader.hgetall(this.layout.meta(version))
    const buckets = Number(meta.buckets)
    const bloom = buckets > 0 ? await readBloom(this.downloader, this.layout, version, Number(meta.blocks)) : null
    if (bloom === null) throw new Error(`filter version ${version} is incomplete in Redis`)
    // The meta must be that of the generation the pointer named (a version id can repeat); the bits are its
    // segments' (a version replaced meanwhile is found by the next poll: its generation differs).
    if ((meta.gen ?? null) !== generation) throw new Error(`filter version ${version} changed while it was being loaded`)
    // Entries after the mark that the follower has already applied to the old bloom: apply them to the new one
    // too, until it stops moving; the swap below then happens with no await in between.
    await this.replayChanges(streamMark, fields => { hashText(fields[1]!); bloom.add(keyHash[0]!, keyHash[1]!); return true })
    if (compareIds(streamMark, this.streamId) > 0) this.streamId = streamMark // entries up to the mark are in the bits
    const reload = this.view?.version === version && this.view.generation === generation
    const view = new RedisView(this.redis, version, bloom, buckets, this.layout, { generation, timeoutMs: this.opts.timeoutMs })
    this.view = view
    if (this.opts.replica !== undefined) void this.startReplica(view, Number(meta.count))
    this.opts.log.info({ version, generation, keys: Number(meta.count), buckets, bloomBytes: bloom.buffer.byteLength }, reload ? 'reloaded filter version after a gap in the change stream' : 'serving filter version')
    this.opts.onSwitch?.(view, Number(meta.count))
  }

  /**
   * Builds the replica of `view` and attaches it once it has caught up with the stream; checks use Redis meanwhile.
   * A change's state is written (lua/apply-states.lua) before its stream entry and the watermark (lua/apply-commit.lua),
   * so every change is either in the buckets read after the stream's last entry (the mark) or in an entry after it: those are replayed from the
   * stream, until it stops moving, and the table is attached with no await in between. A build that fails is tried
   * again a few seconds later, for as long as the view is served.
   */
  private async startReplica (view: RedisView, keys: number): Promise<void> {
    const { maxBytes } = this.opts.replica!
    this.replicaState = 'building'
    const wanted = (): boolean => this.view === view && !this.stopped
    try {
      const started = Date.now()
      // The watermark before the mark: every change up to it is in the buckets read after the mark (the applier
      // writes a change's state before it raises the watermark past it).
      const watermark = Number(await this.redis.get(this.layout.applied) ?? '0')
      const last = await this.redis.xrevrange(this.layout.changes, '+', '-', 'COUNT', 1)
      const mark = last[0]?.[0] ?? '0-0'
      const built = await buildReplica(this.downloader!, this.layout, view.version, view.buckets, keys, maxBytes, wanted)
      if (built === null || !wanted()) return
      if (built.table === null) {
        this.replicaState = 'too_large'
        this.opts.log.warn({ version: view.version, keys, neededBytes: built.tooLarge?.neededBytes, maxBytes }, 'filter version does not fit in REPLICA_MAX_BYTES: checks ask Redis')
        return
      }
      const table = built.table
      const replayed = await this.replayChanges(mark, fields => wanted() && this.applyEntry(table, fields))
      if (replayed === false || !wanted()) return
      this.replicaSeq = Math.max(watermark, replayed)
      // Only while the last poll saw this version as the one Redis points at (as the Redis path's generation check),
      // or could not ask (Redis unreachable: the news then comes from the ledger, which is the truth itself).
      view.exact = () => this.replica === table && (this.problem === null || this.problem.kind === 'unreachable') && Date.now() - this.newsAt < this.opts.replica!.maxLagMs ? table : null
      this.setReplica(table) // after exact(): a listener told now finds it vouched
      this.replicaState = 'ready'
      this.opts.log.info({ version: view.version, keys: table.keys, bytes: table.bytes, seconds: (Date.now() - started) / 1000 }, 'replica of the filter version ready: checks answered locally while it is current')
    } catch (err) {
      if (!wanted()) return
      this.replicaState = 'failed'
      this.opts.log.error({ err, version: view.version }, 'cannot build the replica of the filter version: checks ask Redis; trying again')
      setTimeout(() => { if (wanted()) void this.startReplica(view, keys) }, REPLICA_RETRY_MS).unref()
    }
  }

  /**
   * Replays the changes after `mark` up to where the follower has read, until it stops moving: what the follower
   * applied only to what the caller is replacing. `apply` gets each change's fields (`k` key, `s` seq, `v` state) and
   * may stop the replay (false, also returned). Returns the highest seq the replayed entries vouch for (a change's
   * seq, a heartbeat's watermark; 0 for none). The caller swaps its copy in after this, with no await in between.
   */
  private async replayChanges (mark: string, apply: (fields: string[]) => boolean): Promise<number | false> {
    let replayedTo = mark
    let seq = 0
    while (compareIds(this.streamId, replayedTo) > 0) {
      const upTo = this.streamId
      for (const [, fields] of await this.redis.xrange(this.layout.changes, '(' + replayedTo, upTo)) {
        if (fields[0] !== 'k') { seq = Math.max(seq, Number(fields[1])); continue } // a heartbeat carries no change
        if (!apply(fields)) return false
        seq = Math.max(seq, Number(fields[3]))
      }
      replayedTo = upTo
    }
    return seq
  }

  private raiseReplicaSeq (table: ReplicaTable, seq: number): void {
    if (this.replica === table && seq > this.replicaSeq) this.replicaSeq = seq
  }

  private scheduleLedger (): void {
    if (this.stopped) return
    this.ledgerTimer = setTimeout(() => { this.ledgerFlight.kick(); this.scheduleLedger() }, LEDGER_POLL_MS)
    this.ledgerTimer.unref()
  }

  /**
   * A change was committed (the applier's NOTIFY): while the replica follows the ledger itself, it reads it now
   * rather than at the next poll, so a RET written during a Redis outage reaches the checks in milliseconds.
   */
  ledgerChanged (): void {
    if (this.opts.ledger !== undefined && this.replica !== null && Date.now() - this.streamNewsAt >= STREAM_QUIET_MS) this.ledgerFlight.kick()
  }

  /**
   * While the change stream is quiet, brings the replica up to the end of the ledger in Postgres, from the seq it
   * has (the applier's query, changes.ts). Reaching the end is news: the replica is then as current as the truth.
   * A read that fails brings none, so with Postgres away too the replica goes past its lag bound and stops answering.
   */
  private async followLedger (): Promise<void> {
    const table = this.replica
    if (table === null || Date.now() - this.streamNewsAt < STREAM_QUIET_MS) return
    const asked = Date.now()
    try {
      while (true) {
        const rows = await readChanges(this.opts.ledger!, this.replicaSeq)
        if (this.replica !== table) return
        for (const row of rows) if (!this.applyToReplica(table, row.k, encodedStateOf(row))) return
        if (rows.length > 0) this.raiseReplicaSeq(table, Number(rows[rows.length - 1]!.seq))
        if (rows.length < CHANGES_BATCH) break
      }
    } catch (err) {
      if (this.newsFrom === 'ledger') this.opts.log.warn({ err }, 'the replica cannot read the ledger either: it stops answering once past REPLICA_MAX_LAG_MS')
      this.newsFrom = null
      return
    }
    if (Date.now() - this.streamNewsAt < STREAM_QUIET_MS) return // the stream came back meanwhile
    if (this.newsFrom !== 'ledger') this.opts.log.warn({ quietMs: asked - this.streamNewsAt, seq: this.replicaSeq }, 'the change stream is quiet (Redis away?): the replica follows the ledger in Postgres')
    this.newsAt = Math.max(this.newsAt, asked)
    this.newsFrom = 'ledger'
  }

  /** A change-stream entry (`k` key, `s` seq, `v` state) into the replica: applyToReplica. */
  private applyEntry (table: ReplicaTable, fields: string[]): boolean {
    return this.applyToReplica(table, fields[1]!, fields[4] === 'v' ? fields[5] : undefined)
  }

  /**
   * One change (key text, encoded state) into the replica; false (and the replica dropped) if it cannot take it.
   * `encoded` is undefined for a stream entry written without its state (an older applier).
   */
  private applyToReplica (table: ReplicaTable, keyText: string, encoded: string | undefined): boolean {
    try {
      if (encoded === undefined) throw new Error('a change-stream entry without its state (written by an older applier)')
      table.upsertEncoded(keyText, encoded)
      return true
    } catch (err) {
      // Full, or a change it cannot read: this replica is no longer exact. The next reload builds a new one.
      if (this.replica === table) this.setReplica(null)
      this.replicaState = 'failed'
      this.reloadNeeded = true
      this.opts.log.warn({ err }, 'replica dropped: checks ask Redis until it is built again')
      return false
    }
  }

  /**
   * Told at once whenever the replica attaches or is dropped (the serving threads stop reading a dropped one now,
   * not at their next look at vouchedReplica()).
   */
  onReplica: (() => void) | null = null

  private setReplica (table: ReplicaTable | null): void {
    this.replica = table
    this.onReplica?.()
  }

  /**
   * The replica checks may answer from now and until when (ms since the epoch) without further news: what exact()
   * judges, for serving threads (http/serve-threads.ts), which read the same table and follow this judgement. null:
   * none may answer.
   */
  vouchedReplica (): { table: ReplicaTable, until: number } | null {
    const table = this.replica
    if (table === null || this.view?.exact() !== table) return null
    return { table, until: this.newsAt + this.opts.replica!.maxLagMs }
  }

  /** The replica's figures for /readyz and the metrics. */
  replicaStatus (): ReplicaFigures {
    const table = this.replica
    return {
      state: this.opts.replica === undefined ? 'off' : this.replicaState,
      serving: table !== null && this.view?.exact?.() === table,
      keys: table?.keys ?? 0,
      bytes: table?.bytes ?? 0,
      seq: table !== null ? this.replicaSeq : null,
      newsFrom: table !== null ? this.newsFrom : null,
      newsAgeMs: this.newsAt > 0 ? Date.now() - this.newsAt : null
    }
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    if (this.ledgerTimer !== null) clearTimeout(this.ledgerTimer)
    this.ledgerFlight.stop()
    this.follower?.disconnect()
    this.downloader?.disconnect()
    try { await this.redis.hdel(this.layout.gateways, this.gatewayId) } catch { /* Redis may be gone; the entry ages out */ }
  }
}

/** off: REPLICA=false; building; ready: built and followed (serving while current); too_large; failed. */
export type ReplicaStatus = 'off' | 'building' | 'ready' | 'too_large' | 'failed'

/** The replica's figures (/readyz `replica`, the iys_replica_* metrics). */
export interface ReplicaFigures {
  state: ReplicaStatus
  /** checks are answered from it now */
  serving: boolean
  keys: number
  bytes: number
  /** every change up to this seq is in it (null: no replica) */
  seq: number | null
  /** what brought its last news: the change stream, or its own read of the ledger while the stream was quiet */
  newsFrom: 'stream' | 'ledger' | null
  /** since its last news (ms; null: never had any) */
  newsAgeMs: number | null
}

/** Orders Redis stream ids ("ms-seq"). */
export function compareIds (a: string, b: string): number {
  const [am, as] = a.split('-').map(Number) as [number, number]
  const [bm, bs] = b.split('-').map(Number) as [number, number]
  return am !== bm ? am - bm : as - bs
}

/** The sentence /readyz gives for a mirror problem. */
export function describeMirrorProblem (p: MirrorProblem): string {
  switch (p.kind) {
    case 'no-version': return 'no filter version in Redis yet: run `iys-gateway load`'
    case 'lost': return `the served filter version is gone from Redis (restarted empty or flushed, noticed ${new Date(p.since).toISOString()}): commercial checks fail closed until a version is loaded`
    case 'unloadable': return `Redis points at filter version ${p.version}, which cannot be loaded: ${p.error}`
    case 'unreachable': return `Redis has not answered the filter pointer since ${new Date(p.since).toISOString()}: ${p.error}`
  }
}
