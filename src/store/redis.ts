// Redis connections. Commands fail fast instead of queueing while the connection is down (enableOfflineQueue:
// false) and time out after REDIS_TIMEOUT_MS, so a check that needs Redis answers STORE_UNAVAILABLE quickly
// rather than hanging; ioredis keeps reconnecting in the background, so recovery needs nobody.

import { Redis } from 'ioredis'

export function createRedis (url: string, opts: { timeoutMs: number, name: string, failFast?: boolean }): Redis {
  const failFast = opts.failFast ?? true
  return new Redis(url, {
    connectionName: opts.name,
    enableOfflineQueue: !failFast,
    commandTimeout: failFast ? opts.timeoutMs : undefined,
    maxRetriesPerRequest: failFast ? 0 : 20,
    // Commands issued in the same tick (concurrent checks) go out in one write. Caveat: a pipeline waits until the
    // one ahead of it has settled, and commandTimeout starts only when it is sent, so behind a hung pipeline a command
    // can wait twice the timeout; the check path bounds its own wait (filter/view.ts, RedisView lookup deadline).
    enableAutoPipelining: failFast,
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    lazyConnect: false
  })
}

/**
 * Waits until the client is ready, or fails after `ms` with one line that says where it tried, the last connection
 * error and the variable to check (used by CLI commands).
 */
export async function waitReady (redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return
  let last = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      cleanup()
      const { host, port } = redis.options
      reject(new Error(`Redis at ${host ?? '?'}:${port ?? '?'} is not reachable after ${ms} ms${last !== '' ? ` (${last})` : ''} (check REDIS_URL)`))
    }, ms)
    const onReady = (): void => { cleanup(); resolve() }
    const onError = (err: Error): void => { last = err.message }
    const cleanup = (): void => { clearTimeout(t); redis.off('ready', onReady); redis.off('error', onError) }
    redis.on('ready', onReady)
    redis.on('error', onError)
  })
}

/** Deletes every key matching `pattern` with SCAN + UNLINK, in batches (never KEYS: it blocks Redis). */
export async function unlinkPattern (redis: Redis, pattern: string): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) deleted += await redis.unlink(...keys)
  } while (cursor !== '0')
  return deleted
}
