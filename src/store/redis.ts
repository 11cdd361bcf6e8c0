// Redis connections: one Redis (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES), behind one type. Commands
// fail fast instead of queueing while the connection is down (enableOfflineQueue: false) and time out after
// REDIS_TIMEOUT_MS, so a check that needs Redis answers STORE_UNAVAILABLE quickly rather than hanging; ioredis keeps
// reconnecting in the background (and, for a cluster, follows MOVED and failovers), so recovery needs nobody.
//
// The address is one string everywhere (config.redisUrl, the scrub workers' and serving threads' data): REDIS_URL,
// or `cluster:` followed by REDIS_CLUSTER_NODES (`host:port,…` or `redis[s]://[user:password@]host:port,…`; the
// first node's credentials and TLS are every node's). One string keeps "is there a Redis?" one test.

import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'

export type RedisClient = Redis | Cluster

export const CLUSTER_SCHEME = 'cluster:'

export interface ClusterSeed {
  nodes: { host: string, port: number }[]
  /** username, password and TLS of the first node, for all of them */
  auth: Pick<RedisOptions, 'username' | 'password' | 'tls'>
}

/** The seed nodes of a `cluster:` address; throws a line that names REDIS_CLUSTER_NODES on a bad entry. */
export function parseClusterNodes (list: string): ClusterSeed {
  const entries = list.split(',').map(s => s.trim()).filter(s => s !== '')
  if (entries.length === 0) throw new Error('REDIS_CLUSTER_NODES lists no node')
  const nodes: ClusterSeed['nodes'] = []
  let auth: ClusterSeed['auth'] = {}
  for (const [i, entry] of entries.entries()) {
    let u: URL
    try { u = new URL(entry.includes('://') ? entry : `redis://${entry}`) } catch { throw new Error(`REDIS_CLUSTER_NODES: "${entry}" is not host:port or a redis:// URL`) }
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`REDIS_CLUSTER_NODES: "${entry}" must use redis: or rediss:`)
    const port = u.port === '' ? 6379 : Number(u.port)
    if (u.hostname === '' || !(port > 0 && port < 65536)) throw new Error(`REDIS_CLUSTER_NODES: "${entry}" is not host:port`)
    if (u.pathname !== '' && u.pathname !== '/') throw new Error('REDIS_CLUSTER_NODES: a cluster has one database; no /db in its addresses')
    nodes.push({ host: u.hostname.replace(/^\[|\]$/g, ''), port })
    if (i === 0) {
      auth = {
        ...(u.username !== '' ? { username: decodeURIComponent(u.username) } : {}),
        ...(u.password !== '' ? { password: decodeURIComponent(u.password) } : {}),
        ...(u.protocol === 'rediss:' ? { tls: {} } : {})
      }
    }
  }
  return { nodes, auth }
}

export function isCluster (client: RedisClient): client is Cluster {
  return client.isCluster
}

export function createRedis (url: string, opts: { timeoutMs: number, name: string, failFast?: boolean }): RedisClient {
  const failFast = opts.failFast ?? true
  const connection = {
    connectionName: opts.name,
    commandTimeout: failFast ? opts.timeoutMs : undefined,
    maxRetriesPerRequest: failFast ? 0 : 20
  }
  const retry = (times: number): number => Math.min(50 * 2 ** Math.min(times, 6), 2000)
  if (url.startsWith(CLUSTER_SCHEME)) {
    const seed = parseClusterNodes(url.slice(CLUSTER_SCHEME.length))
    return new Cluster(seed.nodes, clusterOptions({
      enableOfflineQueue: !failFast,
      enableAutoPipelining: failFast, // per node: ioredis groups a tick's commands by the node that serves them
      clusterRetryStrategy: retry,
      redisOptions: { ...connection, ...seed.auth }
    }))
  }
  return new Redis(url, {
    ...connection,
    enableOfflineQueue: !failFast,
    // Commands issued in the same tick (concurrent checks) go out in one write. Caveat: a pipeline waits until the
    // one ahead of it has settled, and commandTimeout starts only when it is sent, so behind a hung pipeline a command
    // can wait twice the timeout; the check path bounds its own wait (filter/view.ts, RedisView lookup deadline).
    enableAutoPipelining: failFast,
    retryStrategy: retry,
    lazyConnect: false
  })
}

/**
 * Cluster behaviour every client shares. During a failover the slots of the dead master answer CLUSTERDOWN or
 * connection errors until its replica is promoted (cluster-node-timeout, then an election): commands are retried on
 * those for a short while (retryDelayOnFailover/ClusterDown, maxRedirections) and the slot map is read again, so a
 * failover costs the clients its own length, not a restart. Reads go to masters only: a replica may lag, and a
 * consent check must see the newest RET.
 */
function clusterOptions (o: ClusterOptions): ClusterOptions {
  return {
    scaleReads: 'master',
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    maxRedirections: 16,
    slotsRefreshTimeout: 2000,
    ...o
  }
}

/** The connection options `duplicate` may change. */
export interface DuplicateOptions {
  commandTimeout?: number
  enableAutoPipelining?: boolean
  enableOfflineQueue?: boolean
  maxRetriesPerRequest?: number | null
}

/** A second client to the same Redis or cluster, with some options changed (a blocking XREAD needs its own). */
export function duplicate (client: RedisClient, o: DuplicateOptions): RedisClient {
  if (!isCluster(client)) return client.duplicate(o)
  const { enableAutoPipelining, enableOfflineQueue, ...connection } = o
  return client.duplicate(undefined, clusterOptions({
    ...client.options,
    ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    redisOptions: { ...client.options.redisOptions, ...connection }
  }))
}

/** Where a client connects, for error messages: host:port, or the cluster's nodes it knows. */
export function addressOf (client: RedisClient): string {
  if (!isCluster(client)) return `${client.options.host ?? '?'}:${client.options.port ?? '?'}`
  const known = client.nodes().map(n => `${n.options.host ?? '?'}:${n.options.port ?? '?'}`)
  return known.length > 0 ? `the cluster of ${known.join(',')}` : 'the cluster of REDIS_CLUSTER_NODES'
}

/**
 * Waits until the client is ready, or fails after `ms` with one line that says where it tried, the last connection
 * error and the variable to check (used by CLI commands).
 */
export async function waitReady (redis: RedisClient, ms: number): Promise<void> {
  if (redis.status === 'ready') return
  let last = ''
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      cleanup()
      reject(new Error(`Redis at ${addressOf(redis)} is not reachable after ${ms} ms${last !== '' ? ` (${last})` : ''} (check ${isCluster(redis) ? 'REDIS_CLUSTER_NODES' : 'REDIS_URL'})`))
    }, ms)
    const onReady = (): void => { cleanup(); resolve() }
    const onError = (err: Error): void => { last = err.message }
    const cleanup = (): void => { clearTimeout(t); redis.off('ready', onReady); redis.off('error', onError) }
    redis.on('ready', onReady)
    redis.on('error', onError)
  })
}

/**
 * Deletes every key matching `pattern` with SCAN + UNLINK, in batches (never KEYS: it blocks Redis). A cluster is
 * scanned master by master, and its keys unlinked one per command (a multi-key UNLINK must stay in one slot).
 */
export async function unlinkPattern (redis: RedisClient, pattern: string): Promise<number> {
  if (!isCluster(redis)) return unlinkOnNode(redis, pattern, false)
  let deleted = 0
  for (const node of redis.nodes('master')) deleted += await unlinkOnNode(node, pattern, true)
  return deleted
}

async function unlinkOnNode (node: Redis, pattern: string, oneKeyPerCommand: boolean): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (keys.length === 0) continue
    if (!oneKeyPerCommand) { deleted += await node.unlink(...keys); continue }
    const counts = await Promise.all(keys.map(async k => await node.unlink(k)))
    for (const c of counts) deleted += c
  } while (cursor !== '0')
  return deleted
}
