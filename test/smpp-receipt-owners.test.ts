// The owners of forwarded messages (src/smpp/receipts.ts): the submits answered in one turn are remembered in Redis
// with one script call, each owner under its own key and expiry, as the receipts look them up.

import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisReceiptStore } from '../src/smpp/receipts.js'
import { PrivateRedis } from './helpers/redis-server.js'

describe('remembering who sent a message', () => {
  let server: PrivateRedis
  let redis: Redis
  let monitor: Redis | null = null

  beforeAll(async () => { server = await PrivateRedis.start(); redis = new Redis(server.url, { enableAutoPipelining: true }) })
  afterAll(async () => { monitor?.disconnect(); redis.disconnect(); await server.stop() })

  it('sends one script call for the owners of one turn, each one a key with its TTL that ownerOf finds', async () => {
    const store = new RedisReceiptStore(redis, 'test:owners:', { ttlSeconds: 120, queueMax: 10 })
    const watch = new Redis(server.url)
    const seen: string[] = []
    monitor = await watch.monitor()
    watch.disconnect()
    monitor.on('monitor', (_time: string, args: string[], source: string) => { const cmd = args[0]!.toLowerCase(); if (source !== 'lua' && cmd !== 'get' && args.some(a => a.startsWith('test:owners:'))) seen.push(cmd) })
    await new Promise(resolve => setTimeout(resolve, 50))

    const ids = Array.from({ length: 40 }, (_, i) => `op-${i}`)
    await Promise.all(ids.map((id, i) => store.remember(id, i % 2 === 0 ? 'esme-even' : 'esme-odd')))
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(seen.length).toBe(1) // one script call, not 40 SETs
    expect(seen[0]).toMatch(/^eval(sha)?$/)

    for (const [i, id] of ids.entries()) expect(await store.ownerOf(id)).toBe(i % 2 === 0 ? 'esme-even' : 'esme-odd')
    const ttl = await redis.ttl('test:owners:smpp:owner:op-7')
    expect(ttl).toBeGreaterThan(100)
    expect(ttl).toBeLessThanOrEqual(120)
    expect(await store.ownerOf('op-unknown')).toBeNull()

    // the next turn is a batch of its own
    await new Promise(resolve => setTimeout(resolve, 50))
    seen.length = 0
    await store.remember('op-later', 'esme-late')
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(seen).toEqual(['evalsha']) // the script is loaded now
    expect(await store.ownerOf('op-later')).toBe('esme-late')
  })

  it('rejects the remembers of a batch Redis does not take', async () => {
    const down = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
    down.on('error', () => {})
    const store = new RedisReceiptStore(down, 'test:owners:', { ttlSeconds: 120, queueMax: 10 })
    const all = await Promise.allSettled([store.remember('x1', 'a'), store.remember('x2', 'a')])
    expect(all.map(r => r.status)).toEqual(['rejected', 'rejected'])
    down.disconnect()
  })
})
