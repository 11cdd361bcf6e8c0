// Per-key request rates: a token bucket per API key, asked by the router before every handler. `take` is synchronous
// and never waits for Redis: it runs tens of thousands of times a second per core.
//
// The bucket holds one second's worth of the key's rate (at least 1 token) and refills continuously, so a key may
// burst one second's worth and then go on at its rate.
//
// Shared across gateway processes through Redis (one hash per key, `<REDIS_PREFIX>rate:<keyId>`, with a TTL): the
// bucket itself lives in Redis, refilled by Redis's own clock (lua/rate-lease.lua). A process does not ask Redis per
// request; it leases tokens in the background (a tenth of a second's worth, at least 1) when its allowance runs low,
// and spends them locally. Every request let through is then paid for by a token from the one bucket, so all
// processes together pass at most the bucket's capacity plus the rate × time, whatever their number; tokens leased
// and not spent within LEASE_TTL_MS are dropped (a process never saves tokens up into a later burst). Where the
// lease comes too late to decide, the process decides on its local bucket and charges what it let through to the
// Redis bucket with its next lease (the bucket may go one capacity into debt for it): a key's first requests in this
// process, a lease slower than LEASE_PATIENCE_MS, and a burst that spends the allowance while the next lease is on
// the wire. In that last case only as far as the shared bucket held tokens at its last answer (refilled since, less
// what this process already owes): a burst within the bucket's capacity passes whole instead of one lease per round
// trip, and one process alone never passes more than the shared bucket holds, give or take the lease on the wire;
// processes deciding on the same answer at once are held by their local buckets (rate ÷ peers each). What that
// costs: a process that has not seen a key for a minute may let one capacity through before its first lease
// returns; a burst may pass up to a lease more than the capacity (then owed); and a key at exactly its rate may now
// and then be refused while a lease is on the wire after the bucket ran empty (Retry-After 1).
//
// Without Redis (the embedded store: one process) the local bucket is the limit. While Redis does not answer, each
// process limits on its local bucket too, but not at the full rate: each key at its rate divided by the number of
// processes that leased it in the last 10 s (the lease script counts them; for a key it never leased, the most seen
// on any key), so that k processes behind a balancer still pass about the rate in total, not k× it; a key whose
// traffic all went to one process keeps its full rate there. The limiter fails open to these local
// limits, never to none, and tries Redis again once a second; then every key pays its way through Redis again.
//
// Memory: a small object per key that asked in the last minute (swept every 10 s), at most MAX_KEYS of them. Keys
// come from authenticated requests, so their number is the number of keys in use.

import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { RedisClient } from '../store/redis.js'
import type { Logger } from 'pino'
import { projectUrl } from '../util/paths.js'

// Read from the source tree, from src/ and dist/ alike (tsc copies no .lua files; filter/scripts.ts says why).
const LEASE_LUA = readFileSync(projectUrl('src/auth/lua/rate-lease.lua'), 'utf8')

/** A lease is this many seconds' worth of tokens (at least 1): about ten leases a second for a key at its rate. */
const LEASE_SECONDS = 0.1
/** Leased tokens not spent within this time are dropped. */
const LEASE_TTL_MS = 1000
/** A lease not back within this time: decide on the local bucket meanwhile (and charge it to Redis afterwards). */
const LEASE_PATIENCE_MS = 100
/** A lease that came back short is not asked again sooner than this (the bucket answers when it holds a token). */
const MIN_LEASE_GAP_MS = 10
/** While Redis fails, one lease tries it again at most this often. */
const PROBE_MS = 1000
/** Processes that leased a key within this window share it (for the local limits while Redis is away). */
const PEER_WINDOW_MS = 10_000
/** A key not asked for this long is forgotten. */
const IDLE_MS = 60_000
const SWEEP_MS = 10_000
const MAX_KEYS = 100_000

interface LeaseCommand {
  iysRateLease (key: string, capacity: number, rate: number, want: number, owed: number, process: string,
    peerWindowMs: number, ttlMs: number): Promise<[granted: number, waitMs: number, peers: number, left: number]>
}

/** One key's state in this process. */
class KeyState {
  rate: number
  /** tokens one lease asks for */
  want: number
  /** the local bucket (Infinity: full; clamped at the first take) and when it was last refilled */
  tokens = Infinity
  refilledAt: number
  usedAt: number
  /** leased tokens not spent yet, valid until `allowanceUntil` */
  allowance = 0
  allowanceUntil = 0
  /** requests let through on the local bucket while Redis was thought up: charged with the next lease */
  owed = 0
  leasing = false
  leaseStartedAt = 0
  /** no lease before this (the last one came back short) */
  nextLeaseAt = 0
  /** when the Redis bucket holds a whole token again, by its last answer (local clock) */
  retryAt = 0
  /** whole tokens the Redis bucket held after its last answer (below 1: empty or in debt), and when (local clock) */
  shared = 0
  sharedAt = 0
  /** the limiter's health epoch of the last lease answer: another one means "no lease since Redis came back" */
  epoch = -1
  /** processes that leased this key lately (0: unknown) */
  peers = 0

  constructor (rate: number, now: number) {
    this.rate = rate
    this.want = leaseSize(rate)
    this.refilledAt = now
    this.usedAt = now
  }
}

const capacityOf = (rate: number): number => Math.max(rate, 1)
const leaseSize = (rate: number): number => Math.max(1, Math.ceil(rate * LEASE_SECONDS))

export interface RateLimiterOptions {
  /** the shared Redis, or null for local buckets only (the embedded store) */
  redis: RedisClient | null
  /** key prefix in Redis: the gateway's REDIS_PREFIX + 'rate:' */
  prefix: string
  log: Logger
  /** told true when the limits fall back to per-process buckets because Redis fails, false when shared again */
  onLocal?: (local: boolean) => void
  /** clock in ms (monotonic); tests inject one */
  now?: () => number
}

export class RateLimiter {
  private readonly redis: (RedisClient & LeaseCommand) | null
  private readonly prefix: string
  private readonly log: Logger
  private readonly onLocal: ((local: boolean) => void) | undefined
  private readonly now: () => number
  private readonly keys = new Map<string, KeyState>()
  /** this process in the lease script's peer count */
  private readonly id = randomBytes(6).toString('hex')
  private readonly sweepTimer: NodeJS.Timeout
  private healthy = true
  /** raised each time Redis fails: a key's lease from an earlier epoch no longer counts */
  private epoch = 0
  private probeAt = 0
  /** the largest peer count Redis answered lately: the share for a key this process knows nothing about */
  private peersHint = 1
  private peersSeen = 0
  private closed = false

  constructor (opts: RateLimiterOptions) {
    this.prefix = opts.prefix
    this.log = opts.log
    this.onLocal = opts.onLocal
    this.now = opts.now ?? (() => performance.now())
    if (opts.redis !== null && typeof (opts.redis as unknown as Partial<LeaseCommand>).iysRateLease !== 'function') {
      opts.redis.defineCommand('iysRateLease', { numberOfKeys: 1, lua: LEASE_LUA })
    }
    this.redis = opts.redis as (RedisClient & LeaseCommand) | null
    this.sweepTimer = setInterval(() => { this.sweep() }, SWEEP_MS)
    this.sweepTimer.unref()
  }

  /**
   * Takes one token of `keyId`'s bucket: 0 when the request may go, otherwise the whole seconds (≥ 1) to wait, for
   * Retry-After. `ratePerSecond` 0 (or anything not positive) means not limited. `now`: the caller's reading of the
   * limiter's clock (performance.now() unless one was injected) for this request, if it has one: the clock read is
   * most of what `take` costs, and on Node 20 it allocates (process.hrtime's array); the rest allocates nothing.
   */
  take (keyId: string, ratePerSecond: number, now = this.now()): number {
    if (!(ratePerSecond > 0 && ratePerSecond < Infinity)) return 0
    let s = this.keys.get(keyId)
    if (s === undefined) s = this.add(keyId, ratePerSecond, now)
    else if (s.rate !== ratePerSecond) { s.rate = ratePerSecond; s.want = leaseSize(ratePerSecond) }
    s.usedAt = now
    if (this.redis === null) return this.takeLocal(s, now)
    if (s.allowance >= 1) {
      if (now < s.allowanceUntil) {
        s.allowance--
        if (s.allowance * 2 <= s.want) this.lease(s, keyId, now) // ahead of need, so the allowance rarely runs dry
        return 0
      }
      s.allowance = 0
    }
    if (!this.healthy) {
      this.lease(s, keyId, now) // a probe, at most one a second for all keys
      return this.takeLocal(s, now)
    }
    if (s.epoch !== this.epoch || (s.leasing && now - s.leaseStartedAt >= LEASE_PATIENCE_MS)) {
      const wait = this.takeLocal(s, now)
      if (wait === 0) s.owed++
      this.lease(s, keyId, now)
      return wait
    }
    this.lease(s, keyId, now)
    // The allowance ran out and the next lease is on the wire: rather than refuse a burst the shared bucket can pay
    // for, spend what it held at its last answer (as it refilled since, less what this process owes it already).
    if (s.leasing && s.shared >= 1) {
      const capacity = capacityOf(s.rate)
      let level = s.shared + (now - s.sharedAt) * s.rate / 1000
      if (level > capacity) level = capacity
      if (level - s.owed >= 1 && this.takeLocal(s, now) === 0) { s.owed++; return 0 }
    }
    return Math.max(1, Math.ceil((s.retryAt - now) / 1000))
  }

  /** Stops the sweep; leases still on the wire are ignored when they come back. The Redis client is the caller's. */
  close (): void {
    this.closed = true
    clearInterval(this.sweepTimer)
  }

  /** Keys this process holds state for (tests, and a bound to check). */
  get size (): number {
    return this.keys.size
  }

  /** True once a lease of `keyId` came back from Redis since it last failed (tests). */
  leased (keyId: string): boolean {
    return this.keys.get(keyId)?.epoch === this.epoch
  }

  private add (keyId: string, rate: number, now: number): KeyState {
    if (this.keys.size >= MAX_KEYS) {
      const oldest = this.keys.keys().next().value
      if (oldest !== undefined) this.keys.delete(oldest)
    }
    const s = new KeyState(rate, now)
    this.keys.set(keyId, s)
    return s
  }

  /** The local bucket: the key's rate divided by the processes sharing it (as last seen in Redis; 1 without Redis). */
  private takeLocal (s: KeyState, now: number): number {
    const rate = s.rate / (s.peers > 0 ? s.peers : this.peersHint)
    const capacity = capacityOf(rate)
    let tokens = s.tokens + (now - s.refilledAt) * rate / 1000
    if (tokens > capacity) tokens = capacity
    s.refilledAt = now
    if (tokens >= 1) { s.tokens = tokens - 1; return 0 }
    s.tokens = tokens
    return Math.max(1, Math.ceil((1 - tokens) / rate))
  }

  /** Asks Redis for a lease in the background, unless one is on the wire, too soon, or Redis is failing (probes). */
  private lease (s: KeyState, keyId: string, now: number): void {
    if (s.leasing || now < s.nextLeaseAt || this.closed) return
    if (!this.healthy) {
      if (now < this.probeAt) return
      this.probeAt = now + PROBE_MS
    }
    const redis = this.redis!
    if (redis.status !== 'ready') { this.failed(undefined); return } // not connected: a command now would only be refused
    s.leasing = true
    s.leaseStartedAt = now
    const want = s.want
    const owed = s.owed
    const capacity = capacityOf(s.rate)
    const ttlMs = Math.ceil(Math.max(IDLE_MS, 2000 * capacity / s.rate))
    redis.iysRateLease(this.prefix + keyId, capacity, s.rate, want, owed, this.id, PEER_WINDOW_MS, ttlMs).then(
      ([granted, waitMs, peers, left]) => {
        s.leasing = false
        if (this.closed) return
        const t = this.now()
        if (!this.healthy) this.recovered()
        s.epoch = this.epoch
        s.owed = Math.max(0, s.owed - owed)
        s.peers = peers
        if (peers > this.peersSeen) this.peersSeen = peers
        if (peers > this.peersHint) this.peersHint = peers
        if (granted > 0) { s.allowance += granted; s.allowanceUntil = t + LEASE_TTL_MS }
        s.retryAt = t + waitMs
        s.shared = left
        s.sharedAt = t
        s.nextLeaseAt = granted < want ? t + Math.max(waitMs, MIN_LEASE_GAP_MS) : 0
      },
      (err: unknown) => {
        s.leasing = false
        if (!this.closed) this.failed(err)
      })
  }

  private failed (err: unknown): void {
    if (!this.healthy) return
    this.healthy = false
    this.epoch++
    this.probeAt = this.now() + PROBE_MS
    this.log.warn(err === undefined ? { redis: this.redis?.status } : { err }, 'rate limits: Redis does not answer; limiting per process (each key at its rate divided by the gateways sharing it) until it is back')
    this.onLocal?.(true)
  }

  private recovered (): void {
    this.healthy = true
    this.log.info('rate limits: Redis answers again; limits are shared across gateways')
    this.onLocal?.(false)
  }

  private sweep (): void {
    const idleSince = this.now() - IDLE_MS
    for (const [keyId, s] of this.keys) if (s.usedAt < idleSince && !s.leasing) this.keys.delete(keyId)
    // Peer counts of the last period; kept as they were while Redis answers nothing (they are what the local limits divide by).
    if (this.peersSeen > 0) { this.peersHint = this.peersSeen; this.peersSeen = 0 }
  }
}
