// The piscina pool that runs scrub chunks in worker threads, and the shapes passed to it.

import { fileURLToPath } from 'node:url'
import { Piscina } from 'piscina'
import type { CheckQuery, CheckerOptions } from '../check/checker.js'
import type { ReplicaShared } from '../filter/replica.js'
import type { ChunkInput, ChunkOutput } from './chunk.js'
import { projectUrl } from '../util/paths.js'

export interface ScrubWorkerData {
  redisUrl: string
  redisPrefix: string
  redisTimeoutMs: number
  policy: CheckerOptions
}

export interface ScrubTask {
  input: ChunkInput
  query: Omit<CheckQuery, 'recipients'>
  /** `id` names the bloom's buffer (sharedId): a posted SharedArrayBuffer arrives as a new object every time */
  view: { id: number, version: number, generation: string | null, sab: SharedArrayBuffer, buckets: number }
  /** The version's local replica when it was current at dispatch (`id`: sharedId of its table), else null. */
  replica: { id: number, shared: ReplicaShared } | null
}

const sharedIds = new WeakMap<object, number>()
let lastSharedId = 0

/**
 * A number naming `owner` (a bloom's buffer, a replica table) for as long as it lives, so that a worker can tell the
 * buffers it was handed before from new ones: the SharedArrayBuffer objects a worker receives are new at every
 * message, even for the same memory.
 */
export function sharedId (owner: object): number {
  let id = sharedIds.get(owner)
  if (id === undefined) sharedIds.set(owner, id = ++lastSharedId)
  return id
}

// The worker is compiled JavaScript: the built one, also when this module runs from src/ under the test runner.
const workerFile = fileURLToPath(projectUrl('dist/src/scrub/worker.js'))

export function createScrubPool (data: ScrubWorkerData, threads: number): Piscina<ScrubTask, ChunkOutput> {
  // Two chunks per worker: one is decided while the other waits for Redis.
  return new Piscina<ScrubTask, ChunkOutput>({ filename: workerFile, workerData: data, minThreads: 1, maxThreads: threads, concurrentTasksPerWorker: 2, idleTimeout: 60_000 })
}
