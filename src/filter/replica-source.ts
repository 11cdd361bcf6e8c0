// Fills a local exact replica (replica.ts) with a filter version read from Redis: every bucket hash of the version,
// 64 buckets per round trip (one pipeline; in a Redis Cluster, 1024 buckets a round in one pipeline per bucket group,
// as a pipeline must stay on one node and a group is one hash slot: layout.ts), each round's pairs handed to the
// table in one bulk call. The mirror (mirror.ts) then
// replays the change-stream entries that arrived meanwhile and keeps it current from the stream.

import { BUCKET_SENTINEL, bucketGroup, bucketKey, type Layout } from './layout.js'
import { ReplicaFullError, ReplicaTable } from './replica.js'
import { isCluster, type RedisClient } from '../store/redis.js'

/** Buckets read per round trip: one pipeline from one Redis, one per group (about 8 buckets each) from a cluster. */
const BUCKETS_PER_ROUND = 64
const CLUSTER_BUCKETS_PER_ROUND = 1024
/** Room for the keys that arrive between two rebuilds. */
const KEY_HEADROOM = 1.25
/** A first guess of the text arena: a quarter of the keys as e-mails of about 32 bytes (grown once if short). */
const TEXT_BYTES_PER_KEY = 8
/** Bytes a slot takes (replica.ts: five 32-bit words, at its default load factor). */
const BYTES_PER_KEY = 20 / 0.8

export interface ReplicaBuild {
  table: ReplicaTable | null
  /** why there is none: the version does not fit in REPLICA_MAX_BYTES */
  tooLarge?: { neededBytes: number }
}

/** The bytes a replica of `keys` keys is sized to, with its text arena. */
function sizeOf (keys: number, textBytes: number): { capacity: number, emailBytes: number, bytes: number } {
  const capacity = Math.ceil(keys * KEY_HEADROOM) + 1024
  return { capacity, emailBytes: textBytes, bytes: Math.ceil(capacity * BYTES_PER_KEY) + textBytes }
}

/**
 * Reads version `version` (`buckets` buckets, about `keys` keys) into a new table; null with `tooLarge` when it would
 * pass `maxBytes`. `stillWanted` is asked between rounds: a build for a version no longer served stops early.
 */
export async function buildReplica (redis: RedisClient, layout: Layout, version: number, buckets: number, keys: number, maxBytes: number, stillWanted: () => boolean): Promise<ReplicaBuild | null> {
  let textBytes = Math.ceil(keys * TEXT_BYTES_PER_KEY) + (1 << 20)
  for (let attempt = 0; attempt < 3; attempt++) {
    const size = sizeOf(keys, textBytes)
    if (size.bytes > maxBytes) return { table: null, tooLarge: { neededBytes: size.bytes } }
    const table = ReplicaTable.create({ capacity: size.capacity, emailBytes: size.emailBytes })
    try {
      if (!await fill(redis, layout.bucketPrefix(version), buckets, table, stillWanted)) return null
      return { table }
    } catch (err) {
      if (!(err instanceof ReplicaFullError)) throw err
      // More e-mails (or more keys) than the first guess: size by what the version really holds.
      textBytes *= 4
      keys = Math.max(keys, table.keys) * 2
    }
  }
  throw new Error(`filter version ${version} did not fit the replica sized for it after three tries`)
}

async function fill (redis: RedisClient, prefix: string, buckets: number, table: ReplicaTable, stillWanted: () => boolean): Promise<boolean> {
  const cluster = isCluster(redis)
  const round = cluster ? CLUSTER_BUCKETS_PER_ROUND : BUCKETS_PER_ROUND
  const pairs: string[] = []
  for (let from = 0; from < buckets; from += round) {
    if (!stillWanted()) return false
    const pipes = new Map<number, ReturnType<RedisClient['pipeline']>>()
    const to = Math.min(buckets, from + round)
    for (let b = from; b < to; b++) {
      const group = cluster ? bucketGroup(b) : 0
      let pipe = pipes.get(group)
      if (pipe === undefined) pipes.set(group, pipe = redis.pipeline())
      pipe.hgetall(bucketKey(prefix, b))
    }
    const replies = await Promise.all([...pipes.values()].map(async p => await p.exec()))
    pairs.length = 0
    for (const [err, hash] of replies.flatMap(r => r ?? [])) {
      if (err !== null) throw err
      for (const [field, value] of Object.entries(hash as Record<string, string>)) {
        if (field !== BUCKET_SENTINEL) pairs.push(field, value)
      }
    }
    table.upsertEncodedMany(pairs)
  }
  return true
}
