// Fills a local exact replica (replica.ts) with a filter version read from Redis: every bucket hash of the version,
// 64 buckets per round trip, each bucket's pairs handed to the table in one bulk call. The mirror (mirror.ts) then
// replays the change-stream entries that arrived meanwhile and keeps it current from the stream.

import type { Redis } from 'ioredis'
import { BUCKET_SENTINEL, type Layout } from './layout.js'
import { ReplicaFullError, ReplicaTable } from './replica.js'

/** Buckets read per pipeline. */
const BUCKETS_PER_ROUND = 64
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
export async function buildReplica (redis: Redis, layout: Layout, version: number, buckets: number, keys: number, maxBytes: number, stillWanted: () => boolean): Promise<ReplicaBuild | null> {
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

async function fill (redis: Redis, prefix: string, buckets: number, table: ReplicaTable, stillWanted: () => boolean): Promise<boolean> {
  const pairs: string[] = []
  for (let from = 0; from < buckets; from += BUCKETS_PER_ROUND) {
    if (!stillWanted()) return false
    const pipe = redis.pipeline()
    const to = Math.min(buckets, from + BUCKETS_PER_ROUND)
    for (let b = from; b < to; b++) pipe.hgetall(prefix + b)
    const replies = await pipe.exec()
    pairs.length = 0
    for (const [err, hash] of replies ?? []) {
      if (err !== null) throw err
      for (const [field, value] of Object.entries(hash as Record<string, string>)) {
        if (field !== BUCKET_SENTINEL) pairs.push(field, value)
      }
    }
    table.upsertEncodedMany(pairs)
  }
  return true
}
