// Automatic rebuild (AUTO_REBUILD): Redis is derived data, so when it has no usable filter version — it restarted
// empty, was flushed, or the version it points at is gone — a gateway with Postgres rebuilds it, as `load` would,
// without anyone's help. Of many gateways exactly one builds: each tries the build's advisory lock (build.ts,
// REBUILD_LOCK_KEY) and the one that gets it builds; the others wait and follow its flip through their mirrors.
// If the builder dies, Postgres drops its lock with its connection and the next try of another gateway takes over.
// Until a version is there, commercial checks fail closed as they would without this (STORE_UNAVAILABLE).

import type { Logger } from 'pino'
import type { Pool } from '../store/pg.js'
import { createRedis } from '../store/redis.js'
import { buildFilter } from './build.js'
import type { Layout } from './layout.js'
import { BLOOM_SEGMENTS } from './bloom.js'
import type { FilterMirror } from './mirror.js'
import type { RedisClient } from '../store/redis.js'

/**
 * The automatic rebuild's overall deadline for `rows` rows: ten minutes plus 0.1 ms a row (10,000 rows/s, several
 * times slower than `load` measures). Not a performance bound: a safety net for a build stuck on a connection that
 * died without telling (it would hold the rebuild lock, and every gateway would wait on it, forever). When it passes,
 * the build is aborted (its connections closed, the lock released, nothing flipped) and the next tick tries again.
 */
export function rebuildDeadlineMs (rows: number): number {
  return 10 * 60_000 + Math.ceil(rows / 10)
}

export interface RebuildOptions {
  pool: Pool
  redisUrl: string
  /** The gateway's connection (fail fast): used only to look at the pointer. */
  redis: RedisClient
  layout: Layout
  fpr: number
  log: Logger
  mirror: FilterMirror
  /** How often to look whether a rebuild is needed, and to try the lock again while another gateway holds it. */
  intervalMs: number
  onBuilt?: (result: 'ok' | 'failed') => void
}

export type RebuildStatus =
  | { kind: 'idle' }
  | { kind: 'rebuilding', since: number }
  | { kind: 'waiting', since: number } // another process holds the build lock
  | { kind: 'failed', since: number, error: string }

export class AutoRebuilder {
  status: RebuildStatus = { kind: 'idle' }
  private readonly opts: RebuildOptions
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  private stopped = false

  constructor (opts: RebuildOptions) {
    this.opts = opts
  }

  start (): void {
    const tick = (): void => {
      if (this.stopped) return
      if (this.running === null && this.needed()) this.running = this.attempt().finally(() => { this.running = null })
      this.timer = setTimeout(tick, this.opts.intervalMs)
      this.timer.unref()
    }
    tick()
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    // A build in progress is not cut short here: the process exit closes its connections, Postgres drops the lock,
    // and the version it half wrote is never pointed at (another gateway's build or `load` replaces it).
  }

  /** Whether the mirror says Redis has nothing usable to serve (and not merely that Redis is unreachable). */
  private needed (): boolean {
    const p = this.opts.mirror.problem
    if (p === null) {
      if (this.opts.mirror.damaged) return true // a shard lost the groups it held (mirror.ts probeSegment)
      if (this.status.kind !== 'idle' && this.status.kind !== 'rebuilding') this.status = { kind: 'idle' }
      return false
    }
    return p.kind === 'no-version' || p.kind === 'lost' || p.kind === 'unloadable'
  }

  private async attempt (): Promise<void> {
    const { log, layout } = this.opts
    // Its own connection: a build writes the bloom's segments in large commands and replays changes, which the
    // gateway's fail-fast connection (REDIS_TIMEOUT_MS per command) is not made for.
    const redis = createRedis(this.opts.redisUrl, { timeoutMs: 0, name: 'iys-gateway-rebuild', failFast: false })
    redis.on('error', () => {})
    const since = Date.now()
    // The deadline starts at its floor and is set from the row count as soon as the build knows it.
    const controller = new AbortController()
    const abort = (): void => {
      log.error({ seconds: Math.round((Date.now() - since) / 1000) }, 'automatic filter rebuild ran past its deadline; aborting it')
      controller.abort(new Error('the automatic rebuild ran past its deadline'))
      redis.disconnect() // fails any command the build waits on
    }
    let deadline = setTimeout(abort, rebuildDeadlineMs(0))
    const progress = {
      expect: (rows: number) => { clearTimeout(deadline); deadline = setTimeout(abort, Math.max(0, since + rebuildDeadlineMs(rows) - Date.now())) },
      update: () => {},
      setPhase: () => {},
      done: () => {}
    }
    try {
      const result = await buildFilter({
        signal: controller.signal,
        progress: () => progress,
        pool: this.opts.pool,
        redis,
        redisUrl: this.opts.redisUrl,
        layout,
        fpr: this.opts.fpr,
        log,
        lock: 'try',
        // Under the lock, look again: the gateway that held it a moment ago may have just rebuilt.
        stillNeeded: async () => {
          const usable = await hasUsableVersion(redis, layout)
          if (!usable) {
            this.status = { kind: 'rebuilding', since }
            log.warn('Redis has no usable filter version: rebuilding it from Postgres (AUTO_REBUILD)')
          }
          return !usable
        }
      })
      if (result === null) {
        // Someone else holds the lock (or just built): wait for the flip, which the mirror follows.
        if (this.status.kind !== 'waiting' && !await hasUsableVersion(redis, layout)) this.status = { kind: 'waiting', since }
        return
      }
      this.status = { kind: 'idle' }
      log.info({ version: result.version, rows: result.rows, seconds: result.seconds }, 'rebuilt the filter from Postgres')
      this.opts.onBuilt?.('ok')
      await this.opts.mirror.poll() // serve it now rather than at the next poll
    } catch (err) {
      const msg = (err as Error).message
      if (this.status.kind !== 'failed' || this.status.error !== msg) log.error({ err }, 'automatic filter rebuild failed; trying again')
      this.status = { kind: 'failed', since: this.status.kind === 'failed' ? this.status.since : since, error: msg }
      this.opts.onBuilt?.('failed')
    } finally {
      clearTimeout(deadline)
      redis.disconnect()
    }
  }
}

/**
 * True when the pointer names a complete version whose every bloom segment is there. In a Redis Cluster one shard can
 * lose its data alone (a master without persistence restarted empty, its replica gone too): the pointer survives on
 * another shard, and that shard's groups are gone; a missing segment says so (the segments lie beside the buckets).
 */
async function hasUsableVersion (redis: RedisClient, layout: Layout): Promise<boolean> {
  const cur = await redis.get(layout.current)
  if (cur === null) return false
  const [complete, ...segments] = await Promise.all([
    redis.hget(layout.meta(+cur), 'complete'),
    ...Array.from({ length: BLOOM_SEGMENTS }, async (_, g) => await redis.exists(layout.bloomSegment(+cur, g)))
  ])
  return complete === '1' && segments.every(n => n === 1)
}

/** The sentence /readyz gives while a rebuild runs or is awaited (null when there is none to tell). */
export function describeRebuild (s: RebuildStatus): string | null {
  switch (s.kind) {
    case 'idle': return null
    case 'rebuilding': return `rebuilding the filter from Postgres (started ${new Date(s.since).toISOString()})`
    case 'waiting': return `another gateway is rebuilding the filter from Postgres (waiting since ${new Date(s.since).toISOString()})`
    case 'failed': return `rebuilding the filter from Postgres failed (${s.error}); retrying`
  }
}
