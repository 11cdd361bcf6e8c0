// A filter version's bloom bits in Redis: one string per segment (bloom.ts), each in its bucket group's hash slot
// (layout.ts), so that a Redis Cluster spreads them over its shards with the buckets and no string nears Redis's
// 512 MB limit (a segment holds 1/128 of the bits: about 2 MB at 100M consents).

import { BLOCK_BYTES, BLOOM_SEGMENTS, BloomFilter } from './bloom.js'
import type { Layout } from './layout.js'
import type { RedisClient } from '../store/redis.js'

/** Writes every segment of `bloom` as version `version`'s bits (all at once: a cluster client sends each to its shard). */
export async function writeBloom (redis: RedisClient, layout: Layout, version: number, bloom: BloomFilter): Promise<void> {
  const writes: Promise<unknown>[] = []
  for (let g = 0; g < BLOOM_SEGMENTS; g++) {
    const seg = bloom.segment(g)
    writes.push(redis.set(layout.bloomSegment(version, g), Buffer.from(seg.buffer, seg.byteOffset, seg.byteLength))) // a view: no copy
  }
  await Promise.all(writes)
}

/**
 * Every segment of version `version` as zeros (`blocks` blocks), before the build claims it: the change applier writes
 * a version's states and bits only where its segment exists (lua/apply-states.lua), so that a version being removed
 * (its segments go first) gets no stray keys from an applier that has not seen it go.
 */
export async function createEmptyBloom (redis: RedisClient, layout: Layout, version: number, blocks: number): Promise<void> {
  const zeros = Buffer.alloc(blocks / BLOOM_SEGMENTS * BLOCK_BYTES) // one segment's worth, shared by every SET
  await Promise.all(Array.from({ length: BLOOM_SEGMENTS }, async (_, g) => await redis.set(layout.bloomSegment(version, g), zeros)))
}

/** Version `version`'s bits, `blocks` blocks (its meta), as one filter; null when a segment is missing or misshapen. */
export async function readBloom (redis: RedisClient, layout: Layout, version: number, blocks: number): Promise<BloomFilter | null> {
  const segments = await Promise.all(Array.from({ length: BLOOM_SEGMENTS }, async (_, g) => await redis.getBuffer(layout.bloomSegment(version, g))))
  const bytes = blocks / BLOOM_SEGMENTS * BLOCK_BYTES
  if (!Number.isInteger(bytes) || bytes === 0) return null
  const bloom = new BloomFilter(new SharedArrayBuffer(bytes * BLOOM_SEGMENTS))
  for (let g = 0; g < BLOOM_SEGMENTS; g++) {
    const s = segments[g]
    if (s === null || s === undefined || s.length !== bytes) return null
    bloom.segment(g).set(s)
  }
  return bloom
}
