// The served filter version handed to other threads (scrub workers, serving threads): the bloom filter's and the
// replica's SharedArrayBuffers, read there with zero copy, each named by an id. A posted SharedArrayBuffer arrives as
// a new object with every message, even for the same memory, so a thread tells the buffers it already wraps from
// new ones by the id, not by the object.

import { BloomFilter } from './bloom.js'
import type { Layout } from './layout.js'
import { ReplicaTable, type ReplicaShared } from './replica.js'
import { RedisView } from './view.js'
import type { RedisClient } from '../store/redis.js'

/** The bloom filter of a served version, as another thread builds its view over it. */
export interface BloomShare { id: number, version: number, generation: string | null, sab: SharedArrayBuffer, buckets: number }

/** A version's local replica, as another thread attaches to it. */
export interface ReplicaShare { id: number, shared: ReplicaShared }

const sharedIds = new WeakMap<object, number>()
let lastSharedId = 0

/** A number naming `owner` (a bloom's buffer, a replica table) for as long as it lives. */
export function sharedId (owner: object): number {
  let id = sharedIds.get(owner)
  if (id === undefined) sharedIds.set(owner, id = ++lastSharedId)
  return id
}

export function bloomShare (view: RedisView): BloomShare {
  const sab = view.bloom.buffer as SharedArrayBuffer
  return { id: sharedId(sab), version: view.version, generation: view.generation, sab, buckets: view.buckets }
}

export function replicaShare (table: ReplicaTable): ReplicaShare {
  return { id: sharedId(table), shared: table.shared() }
}

/**
 * The other thread's view over a shared bloom, with its own Redis connection: the same generation check and lookup
 * deadline as the gateway's own view, so that a lookup never reads another build.
 */
export function viewOfShare (b: BloomShare, redis: RedisClient, layout: Layout, timeoutMs: number): RedisView {
  return new RedisView(redis, b.version, new BloomFilter(b.sab), b.buckets, layout, { generation: b.generation, timeoutMs })
}

/** The other thread's read-only table over a shared replica. */
export const tableOfShare = (r: ReplicaShare): ReplicaTable => ReplicaTable.attach(r.shared)
