// A Redis Cluster replicates asynchronously: a master that dies can take with it writes it acknowledged but had not
// yet sent to its replica. The change applier's two steps (changes.ts) put a change's state on its group's shard and
// the applied watermark on the control shard, so after such a failover the watermark can be past a state that the
// promoted replica never got, and nobody would write it again: the Redis way would answer from the older state.
// So whenever the cluster's masters change, the appliers apply again the changes of the last REPLAY_WINDOW_MS from
// the ledger (harmless: every write is by seq). What a failover lost is back within a pass of noticing it; gateways
// answering from their local replica never saw the loss (they follow the stream, on the control shard).

import { isCluster, type RedisClient } from '../store/redis.js'

/** How far back a failover is replayed: a master is failed over after cluster-node-timeout (15 s by default). */
export const REPLAY_WINDOW_MS = 120_000
/** Without a position that old (the applier started since), this many changes back. */
const REPLAY_FALLBACK_CHANGES = 100_000
const LOOK_EVERY_MS = 1000

export class FailoverReplay {
  private readonly redis: RedisClient
  private topology: string | null = null
  private lookedAt = 0
  /** The applier's position over time, oldest first: at most one a second, back to one older than the window. */
  private readonly marks: { seq: number, at: number }[] = []

  constructor (redis: RedisClient) {
    this.redis = redis
  }

  /** The applier's position after a pass. */
  mark (seq: number, now: number): void {
    const last = this.marks[this.marks.length - 1]
    if (last !== undefined && now - last.at < LOOK_EVERY_MS) { last.seq = Math.max(last.seq, seq); return }
    this.marks.push({ seq, at: now })
    while (this.marks.length > 1 && this.marks[1]!.at <= now - REPLAY_WINDOW_MS) this.marks.shift()
  }

  /**
   * When the cluster's masters changed since the last look (at most once a second): the seq after which to apply
   * again; else null. On one Redis, never: its state and watermark fail over together.
   */
  async check (now: number): Promise<number | null> {
    if (!isCluster(this.redis) || now - this.lookedAt < LOOK_EVERY_MS) return null
    this.lookedAt = now
    // [start, end, [host, port, node id], …replicas] per range: the masters' ids by range.
    const ranges = await this.redis.cluster('SLOTS') as unknown as [number, number, [string, number, string]][]
    const topology = ranges.map(r => `${r[0]}-${r[1]}:${r[2][2]}`).sort().join(',')
    const changed = this.topology !== null && topology !== this.topology
    this.topology = topology
    if (!changed) return null
    const old = this.marks[0]
    if (old === undefined) return null // nothing applied by this process yet: there is nothing of ours to lose
    return old.at <= now - REPLAY_WINDOW_MS ? old.seq : Math.max(0, old.seq - REPLAY_FALLBACK_CHANGES)
  }
}
