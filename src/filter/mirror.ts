// The gateway's local mirror of the current filter version in Redis. It polls the version pointer every
// FILTER_POLL_MS; when a load flips it, the new bloom is fetched and swapped in with one assignment, so a request
// in flight finishes on the version it started with and the next one uses the new. Each poll also writes a
// heartbeat (which version this gateway serves), which is how `load` knows when the old version may go.
// Between loads, changes arrive through the change stream: a second connection blocks on XREAD and sets each
// changed key's bits in the local bloom, so a key that just got its first record is looked up in Redis at once.

import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import { BloomFilter } from './bloom.js'
import { hashText, keyHash } from './key.js'
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
  private follower: Redis | null = null
  /** Last change-stream entry applied to the local bloom. */
  private streamId = '0-0'
  private reloadNeeded = false

  constructor (redis: Redis, layout: Layout, opts: MirrorOptions) {
    this.redis = redis
    this.layout = layout
    this.opts = opts
  }

  /** Polls once right away (so a caller can await the first version) and then every pollMs. */
  async start (): Promise<void> {
    await this.poll()
    this.schedule()
    this.follower = this.redis.duplicate({ enableOfflineQueue: true, commandTimeout: undefined, maxRetriesPerRequest: null })
    this.follower.on('error', () => {})
    void this.follow()
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
        for (const [id, fields] of entries) {
          this.streamId = id
          if (view !== null) { hashText(fields[1]!); view.bloom.add(keyHash[0]!, keyHash[1]!) }
        }
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

  private async fellBehind (sub: Redis): Promise<boolean> {
    const info = await sub.call('XINFO', 'STREAM', this.layout.changes) as unknown[]
    const i = info.indexOf('first-entry')
    const first = (info[i + 1] as [string, string[]] | null)?.[0]
    return first !== undefined && compareIds(first, this.streamId) > 0
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
      if (cur !== null && (+cur !== this.view?.version || this.reloadNeeded)) await this.switchTo(+cur)
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
    this.reloadNeeded = false
    // Changes applied after this point are in the stream; those before it are in the bloom we download.
    const last = await this.redis.xrevrange(this.layout.changes, '+', '-', 'COUNT', 1)
    const streamMark = last[0]?.[0] ?? '0-0'
    const [meta, bits] = await Promise.all([
      this.redis.hgetall(this.layout.meta(version)),
      this.redis.getBuffer(this.layout.bloom(version))
    ])
    const buckets = Number(meta.buckets)
    if (bits === null || !(buckets > 0)) throw new Error(`filter version ${version} is incomplete in Redis`)
    const bloom = BloomFilter.fromBytes(bits)
    // Entries after the mark that the follower has already applied to the old bloom: apply them to the new one
    // too, until it stops moving; the swap below then happens with no await in between.
    let replayedTo = streamMark
    while (compareIds(this.streamId, replayedTo) > 0) {
      const upTo = this.streamId
      const missed = await this.redis.xrange(this.layout.changes, '(' + replayedTo, upTo)
      for (const [, fields] of missed) { hashText(fields[1]!); bloom.add(keyHash[0]!, keyHash[1]!) }
      replayedTo = upTo
    }
    if (compareIds(streamMark, this.streamId) > 0) this.streamId = streamMark // entries up to the mark are in the bits
    const reload = this.view?.version === version
    const view = new RedisView(this.redis, version, bloom, buckets, this.layout)
    this.view = view
    this.opts.log.info({ version, keys: Number(meta.count), buckets, bloomBytes: bits.byteLength }, reload ? 'reloaded filter version after a gap in the change stream' : 'serving filter version')
    this.opts.onSwitch?.(view, Number(meta.count))
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.follower?.disconnect()
    try { await this.redis.hdel(this.layout.gateways, this.gatewayId) } catch { /* Redis may be gone; the entry ages out */ }
  }
}

/** Orders Redis stream ids ("ms-seq"). */
export function compareIds (a: string, b: string): number {
  const [am, as] = a.split('-').map(Number) as [number, number]
  const [bm, bs] = b.split('-').map(Number) as [number, number]
  return am !== bm ? am - bm : as - bs
}
