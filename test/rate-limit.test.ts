// Per-key rate limits (auth/rate-limit.ts): a token bucket of one second's worth per key, local without Redis,
// shared through Redis by leases when there is one, and back to local limits (never to none) when Redis goes away.
// Local buckets run on an injected clock; the shared ones on real Redis (Redis's clock refills them), with
// tolerances of tens of per cent where time passes, so that a slow machine cannot make them flake.

import pino from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { RateLimiter } from '../src/auth/rate-limit.js'
import { createRedis, waitReady, type RedisClient } from '../src/store/redis.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'
import { hammer } from './helpers/rate.js'

const log = pino({ level: 'silent' })

/** A hand-driven clock in ms. */
const clock = (): { now: () => number, advance: (ms: number) => void } => {
  let t = 1_000_000
  return { now: () => t, advance: (ms) => { t += ms } }
}

/** Takes `n` tokens of `key` at once; the answers. */
const takeMany = (l: RateLimiter, key: string, rate: number, n: number): number[] => Array.from({ length: n }, () => l.take(key, rate))
const passed = (answers: number[]): number => answers.filter(a => a === 0).length

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

async function until (what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

describe('rate limits without Redis (local buckets)', () => {
  afterEach(() => { vi.useRealTimers() })

  it('lets a key burst one second\'s worth, then answers the seconds to wait', () => {
    const c = clock()
    const l = new RateLimiter({ redis: null, prefix: 'x:', log, now: c.now })
    const answers = takeMany(l, 'k1', 10, 15)
    expect(passed(answers)).toBe(10)
    expect(answers.slice(10)).toEqual([1, 1, 1, 1, 1])
    l.close()
  })

  it('refills at the rate, never beyond one second\'s worth', () => {
    const c = clock()
    const l = new RateLimiter({ redis: null, prefix: 'x:', log, now: c.now })
    expect(passed(takeMany(l, 'k', 10, 10))).toBe(10)
    c.advance(500)
    expect(passed(takeMany(l, 'k', 10, 10))).toBe(5)
    c.advance(60_000)
    expect(passed(takeMany(l, 'k', 10, 30))).toBe(10)
    l.close()
  })

  it('keeps keys apart, and takes nothing for a rate of 0 (unlimited)', () => {
    const c = clock()
    const l = new RateLimiter({ redis: null, prefix: 'x:', log, now: c.now })
    expect(passed(takeMany(l, 'a', 2, 5))).toBe(2)
    expect(passed(takeMany(l, 'b', 2, 5))).toBe(2)
    expect(passed(takeMany(l, 'free', 0, 10_000))).toBe(10_000)
    expect(l.size).toBe(2) // no state for the unlimited key
    l.close()
  })

  it('holds a bucket of at least one token under one request a second, and says how long to wait', () => {
    const c = clock()
    const l = new RateLimiter({ redis: null, prefix: 'x:', log, now: c.now })
    expect(l.take('slow', 0.25)).toBe(0)
    expect(l.take('slow', 0.25)).toBe(4)
    c.advance(3000)
    expect(l.take('slow', 0.25)).toBe(1)
    c.advance(1000)
    expect(l.take('slow', 0.25)).toBe(0)
    l.close()
  })

  it('follows a key whose rate changed', () => {
    const c = clock()
    const l = new RateLimiter({ redis: null, prefix: 'x:', log, now: c.now })
    expect(passed(takeMany(l, 'k', 5, 10))).toBe(5)
    c.advance(1000)
    expect(passed(takeMany(l, 'k', 20, 30))).toBe(20) // refilled at the new rate, into the new one second's worth
    l.close()
  })

  it('forgets keys idle for a minute (memory stays bounded by the keys in use)', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const c = clock()
    const l = new RateLimiter({ redis: null, prefix: 'x:', log, now: c.now })
    for (let i = 0; i < 100; i++) l.take(`key${i}`, 5)
    expect(l.size).toBe(100)
    c.advance(30_000)
    l.take('key0', 5)
    c.advance(40_000)
    vi.advanceTimersByTime(10_000)
    expect(l.size).toBe(1)
    l.close()
  })
})

describe('rate limits shared through Redis', () => {
  let services: TestServicesWithRedis
  let proxy: TcpProxy
  const clients: RedisClient[] = []
  const limiters: RateLimiter[] = []

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-rate-' })
    const u = new URL(services.redis.url)
    proxy = await TcpProxy.start({ host: u.hostname, port: Number(u.port || 6379) })
  })

  afterAll(async () => {
    for (const l of limiters) l.close()
    for (const c of clients) c.disconnect()
    await proxy?.cut()
    await services?.close()
  })

  /** A gateway process's limiter: its own connection (the gateway's settings), direct or through the proxy. */
  async function limiter (opts: { viaProxy?: boolean, onLocal?: (local: boolean) => void } = {}): Promise<RateLimiter> {
    const url = new URL(services.redis.url)
    if (opts.viaProxy === true) { url.hostname = '127.0.0.1'; url.port = String(proxy.port) }
    const redis = createRedis(url.href, { timeoutMs: 500, name: 'rate-test' })
    redis.on('error', () => {}) // the gateway logs these; here the outage is on purpose
    clients.push(redis)
    await waitReady(redis, 5000)
    const l = new RateLimiter({ redis, prefix: services.redis.prefix + 'rate:', log, ...(opts.onLocal !== undefined ? { onLocal: opts.onLocal } : {}) })
    limiters.push(l)
    return l
  }

  it('keeps two gateway processes on one key together at about the rate, not twice it', async () => {
    const [a, b] = [await limiter(), await limiter()]
    const rate = 100
    const seconds = 2
    const started = Date.now()
    const counts = await hammer([a, b], 'shared', rate, seconds * 1000)
    const elapsed = (Date.now() - started) / 1000
    const total = counts[0]! + counts[1]!
    // A bucket lets through its capacity (one second's worth) plus the rate × time; each process may add what it
    // let through before its first lease came back, charged to the bucket as debt. Two independent buckets would
    // pass 2 × (100 + 200) = 600. Tolerance: 30 % above the single bucket's allowance, 20 % below the refill alone.
    const allowance = rate + rate * elapsed
    expect(total).toBeLessThanOrEqual(Math.ceil(1.3 * allowance))
    expect(total).toBeGreaterThanOrEqual(Math.floor(0.8 * rate * seconds))
    expect(Math.min(...counts)).toBeGreaterThan(0) // both processes were served
    // The bucket lives under the given prefix, with a TTL.
    const ttl = await services.redis.client.pttl(services.redis.prefix + 'rate:shared')
    expect(ttl).toBeGreaterThan(0)
  })

  it('refuses a burst beyond the rate with a wait of a second, and lets the key go on at its rate', async () => {
    const l = await limiter()
    const rate = 50
    const first = takeMany(l, 'burst', rate, 200)
    expect(passed(first)).toBe(rate) // before the first lease is back: the local bucket, charged to Redis
    expect(new Set(first.filter(a => a > 0))).toEqual(new Set([1]))
    const counts = await hammer([l], 'burst', rate, 1000)
    // The second after the burst: the debt of the burst is paid first, so about the rate of one second at most.
    expect(counts[0]).toBeLessThanOrEqual(Math.ceil(1.3 * rate))
    expect(counts[0]).toBeGreaterThanOrEqual(Math.floor(0.5 * rate))
  })

  /** Lets `key` lease once (its first request), and waits until the answer is back. */
  async function warm (l: RateLimiter, key: string, rate: number): Promise<void> {
    expect(l.take(key, rate)).toBe(0)
    await until('the first lease', () => l.leased(key))
  }

  it('lets a burst within one second\'s worth through while the next lease is on the wire (rate 100: 50 at once)', async () => {
    const l = await limiter()
    const rate = 100
    await warm(l, 'burst100', rate)
    await sleep(200) // the shared bucket refills what the first request and lease took
    // The allowance (a tenth of a second's worth) is spent after 10; the other 40 are decided on the local bucket
    // while the next lease is on the wire, because the shared bucket held tokens at its last answer.
    expect(passed(takeMany(l, 'burst100', rate, 50))).toBe(50)
    // Not more than the bucket's capacity, give or take the lease on the wire: no second capacity from the local bucket.
    expect(passed(takeMany(l, 'burst100', rate, 200))).toBeLessThanOrEqual(rate + 2 * rate / 10 - 50)
  })

  it('lets a slow key (rate 5, a lease of one token) burst its capacity, not one request per round trip', async () => {
    const l = await limiter()
    const rate = 5
    await warm(l, 'burst5', rate)
    await sleep(1100) // the shared bucket is full again, the leased token has expired
    expect(takeMany(l, 'burst5', rate, 5)).toEqual([0, 0, 0, 0, 0])
    expect(l.take('burst5', rate)).toBe(1) // the sixth: the bucket is spent
  })

  it('falls back to local limits (not to none) when Redis goes away, divided among the processes that shared the key, and shares again when it is back', async () => {
    const changes: boolean[] = []
    const a = await limiter({ viaProxy: true, onLocal: (local) => { changes.push(local) } })
    const b = await limiter()
    const rate = 100
    // Both processes lease the key: each learns that two share it.
    await hammer([a, b], 'outage', rate, 300)

    await proxy.cut()
    // The next leases fail (at once: the connection is gone and commands are not queued).
    await until('the limiter to notice Redis is gone', () => { a.take('outage', rate); return changes.includes(true) })
    // In the same instant, whatever a took meanwhile: its local bucket holds half a second's worth at most (its
    // rate divided by the two processes), so a tight burst passes at most that, and then waits.
    const burst = takeMany(a, 'outage', rate, 500)
    expect(passed(burst)).toBeLessThanOrEqual(rate / 2 + 1)
    expect(burst.at(-1)).toBeGreaterThanOrEqual(1)
    // Over half a second, about half the rate: limits hold without Redis.
    const during = await hammer([a], 'outage', rate, 500)
    expect(during[0]).toBeLessThanOrEqual(Math.ceil(1.3 * (rate / 2) * 0.5 + rate / 2))
    expect(during[0]).toBeGreaterThan(0)
    // A key a has never leased gets the rate divided by the most processes seen sharing a key.
    expect(passed(takeMany(a, 'new-during-outage', rate, 500))).toBeLessThanOrEqual(rate / 2 + 1)

    await proxy.restore()
    await until('the limits to be shared again', () => { a.take('outage', rate); return changes.at(-1) === false }, 15_000)
    expect(changes).toEqual([true, false])
  })
})
