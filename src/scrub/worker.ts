// Piscina worker for scrub chunks (Redis mode). It reads the gateway's bloom filter through the SharedArrayBuffer it
// is handed (zero copy: the very memory the gateway's checks read), resolves bloom positives against Redis with its
// own connection, in one pipeline per chunk, and decides with the same Checker as /v1/check.

import { workerData } from 'node:worker_threads'
import { BloomFilter } from '../filter/bloom.js'
import { layout } from '../filter/layout.js'
import { RedisView } from '../filter/view.js'
import { createRedis } from '../store/redis.js'
import { checkChunk, type ChunkInput, type ChunkOutput } from './chunk.js'
import type { ScrubWorkerData, ScrubTask } from './pool.js'

const data = workerData as ScrubWorkerData
const redis = createRedis(data.redisUrl, { timeoutMs: data.redisTimeoutMs, name: 'iys-scrub-worker', failFast: false })
redis.on('error', () => {}) // surfaced as a failed lookup: the chunk then fails closed like a check
const keys = layout(data.redisPrefix)
const views = new Map<SharedArrayBuffer, RedisView>()
let current: RedisView | null = null
const getView = (): RedisView | null => current

function viewFor (task: ScrubTask): RedisView {
  let v = views.get(task.view.sab)
  if (v === undefined) {
    views.clear() // one version at a time: drop the old bloom's wrapper so its memory can go when the gateway drops it
    // The same generation check and lookup deadline as the gateway's own view: a chunk never reads another build.
    v = new RedisView(redis, task.view.version, new BloomFilter(task.view.sab), task.view.buckets, keys, { generation: task.view.generation, timeoutMs: data.redisTimeoutMs })
    views.set(task.view.sab, v)
  }
  return v
}

export default async function run (task: ScrubTask): Promise<ChunkOutput> {
  current = viewFor(task)
  return checkChunk(getView, data.policy, task.query, task.input as ChunkInput)
}
