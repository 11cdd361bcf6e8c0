// Load for the shared rate limiter's tests (one Redis, a Redis Cluster).

import type { RateLimiter } from '../../src/auth/rate-limit.js'

/**
 * Offers `key` to each limiter in turn, `perTick` times each every millisecond or so, for `ms`: how many requests
 * each let through.
 */
export async function hammer (ls: RateLimiter[], key: string, rate: number, ms: number, perTick = 5): Promise<number[]> {
  const counts = ls.map(() => 0)
  const end = Date.now() + ms
  while (Date.now() < end) {
    ls.forEach((l, i) => { for (let j = 0; j < perTick; j++) if (l.take(key, rate) === 0) counts[i]!++ })
    await new Promise(resolve => setTimeout(resolve, 1))
  }
  return counts
}
