// Where `load` writes a version's buckets (build.ts): over bulk RESP connections of their own (store/resp-bulk.ts),
// one to a single Redis, or one to each master of a Redis Cluster, every bucket to the master that serves its
// group's hash slot (layout.ts GROUP_SLOTS). The client's slot map is read once, at the start: a cluster resharded
// during a load answers MOVED, which the bulk writer takes as an error reply, and the load fails (run it again).

import { BUCKET_GROUPS, GROUP_SLOTS } from './layout.js'
import { RespBulkWriter } from '../store/resp-bulk.js'
import { isCluster, type RedisClient } from '../store/redis.js'

export class BucketWriters {
  readonly all: readonly RespBulkWriter[]
  private readonly byGroup: readonly RespBulkWriter[]

  private constructor (all: RespBulkWriter[], byGroup: RespBulkWriter[]) {
    this.all = all
    this.byGroup = byGroup
  }

  /** `redisUrl` is the address `redis` was made from (store/redis.ts). */
  static async open (redis: RedisClient, redisUrl: string): Promise<BucketWriters> {
    if (!isCluster(redis)) {
      const w = await RespBulkWriter.connect(redisUrl)
      return new BucketWriters([w], new Array<RespBulkWriter>(BUCKET_GROUPS).fill(w))
    }
    const { username, password, tls } = redis.options.redisOptions ?? {}
    const auth = password !== undefined ? `${encodeURIComponent(username ?? '')}:${encodeURIComponent(password)}@` : ''
    const scheme = tls !== undefined ? 'rediss' : 'redis'
    // Each group's master first (no connection is opened before all are known), then one connection per master.
    const nodeOf = GROUP_SLOTS.map(slot => {
      const node = redis.slots[slot]?.[0]
      if (node === undefined) throw new Error(`no master serves hash slot ${slot} of the cluster (is it fully assigned?)`)
      return node
    })
    const nodes = [...new Set(nodeOf)]
    const opened = await Promise.allSettled(nodes.map(async node => await RespBulkWriter.connect(`${scheme}://${auth}${node}`)))
    const failed = opened.find(r => r.status === 'rejected')
    if (failed !== undefined) {
      for (const r of opened) if (r.status === 'fulfilled') r.value.close()
      throw (failed as PromiseRejectedResult).reason
    }
    const all = opened.map(r => (r as PromiseFulfilledResult<RespBulkWriter>).value)
    return new BucketWriters(all, nodeOf.map(node => all[nodes.indexOf(node)]!))
  }

  /** The connection for bucket `b`. */
  of (b: number): RespBulkWriter {
    return this.byGroup[b & (BUCKET_GROUPS - 1)]!
  }

  /** Waits while any connection has too much unanswered (Redis is slower than Postgres's COPY). */
  async backpressure (): Promise<void> {
    for (const w of this.all) if (w.congested) await w.backpressure()
  }

  /** Resolves when every command sent has been answered; rejects on any error reply. */
  async drain (): Promise<void> {
    await Promise.all(this.all.map(async w => await w.drain()))
  }

  close (): void {
    for (const w of this.all) w.close()
  }
}
