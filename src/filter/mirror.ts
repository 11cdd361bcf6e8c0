// The gateway's local mirror of the current filter version in Redis. It polls the version pointer every
// FILTER_POLL_MS; when a load flips it, the new bloom is fetched and swapped in with one assignment, so a request
// in flight finishes on the version it started with and the next one uses the new. Each poll also writes a
// heartbeat (which version this gateway serves), which is how `load` knows when the old version may go.

import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import { BloomFilter } from './bloom.js'
import type { Layout } from './layout.js'
import { RedisView } from './view.js'

export interface MirrorOptions {
  pollMs: number
  log: Logger
  onSwitch?: (view: RedisView, keys: number) => void
}

export class FilterMirror {
  readonly gatewayId = randomUUID()
  view: RedisView | null = null
  /** Last time the pointer was read successfully (ms), for /readyz. */
  lastSyncAt = 0
  lastError: string | null = null
  /** Redis answers but has no current version although we serve one: it restarted empty or was flushed. */
  pointerMissing = false
  private readonly redis: Redis
  private readonly layout: Layout
  private readonly opts: MirrorOptions
  private timer: NodeJS.Timeout | null = null
  private stopped = false

  constructor (redis: Redis, layout: Layout, opts: MirrorOptions) {
    this.redis = redis
    this.layout = layout
    this.opts = opts
  }

  /** Polls once right away (so a caller can await the first version) and then every pollMs. */
  async start (): Promise<void> {
    await this.poll()
    this.schedule()
  }

  private schedule (): void {
    if (this.stopped) return
    this.timer = setTimeout(() => { this.poll().finally(() => this.schedule()) }, this.opts.pollMs)
    this.timer.unref()
  }

  async poll (): Promise<void> {
    try {
      const cur = await this.redis.get(this.layout.current)
      this.pointerMissing = cur === null && this.view !== null
      if (this.pointerMissing && this.lastError !== 'pointer missing') {
        this.opts.log.error('the filter version pointer is gone from Redis (restarted empty?): commercial checks fail closed until `iys-gateway load` runs')
      }
      if (cur !== null && +cur !== this.view?.version) await this.switchTo(+cur)
      const serving = this.view?.version ?? 0
      await this.redis.hset(this.layout.gateways, this.gatewayId, `${serving}|${Date.now()}`)
      this.lastSyncAt = Date.now()
      this.lastError = this.pointerMissing ? 'pointer missing' : null
    } catch (err) {
      const msg = (err as Error).message
      if (msg !== this.lastError) this.opts.log.warn({ err: msg }, 'filter mirror cannot reach Redis; serving the version it has')
      this.lastError = msg
    }
  }

  private async switchTo (version: number): Promise<void> {
    const [meta, bits] = await Promise.all([
      this.redis.hgetall(this.layout.meta(version)),
      this.redis.getBuffer(this.layout.bloom(version))
    ])
    const buckets = Number(meta.buckets)
    if (bits === null || !(buckets > 0)) throw new Error(`filter version ${version} is incomplete in Redis`)
    const view = new RedisView(this.redis, version, BloomFilter.fromBytes(bits), buckets, this.layout)
    this.view = view
    this.opts.log.info({ version, keys: Number(meta.count), buckets, bloomBytes: bits.byteLength }, 'serving filter version')
    this.opts.onSwitch?.(view, Number(meta.count))
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    try { await this.redis.hdel(this.layout.gateways, this.gatewayId) } catch { /* Redis may be gone; the entry ages out */ }
  }
}
