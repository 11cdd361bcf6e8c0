// The piscina pool that runs scrub chunks in worker threads, and the shapes passed to it.

import { fileURLToPath } from 'node:url'
import { Piscina } from 'piscina'
import type { CheckQuery, CheckerOptions } from '../check/checker.js'
import type { BloomShare, ReplicaShare } from '../filter/shared-view.js'
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
  view: BloomShare
  /** The version's local replica when it was current at dispatch, else null. */
  replica: ReplicaShare | null
}

// The worker is compiled JavaScript: the built one, also when this module runs from src/ under the test runner.
const workerFile = fileURLToPath(projectUrl('dist/src/scrub/worker.js'))

export function createScrubPool (data: ScrubWorkerData, threads: number): Piscina<ScrubTask, ChunkOutput> {
  // Two chunks per worker: one is decided while the other waits for Redis.
  return new Piscina<ScrubTask, ChunkOutput>({ filename: workerFile, workerData: data, minThreads: 1, maxThreads: threads, concurrentTasksPerWorker: 2, idleTimeout: 60_000 })
}
