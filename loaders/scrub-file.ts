// `iys-gateway scrub FILE`: the same scrub as POST /v1/scrub, run locally against the same stores (the Redis
// filter when REDIS_URL is set, the embedded store otherwise), with a progress line and a JSON summary.

import { rename, stat } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { Config } from '../src/config.js'
import { buildEmbeddedView } from '../src/filter/embedded.js'
import { layout } from '../src/filter/layout.js'
import { FilterMirror } from '../src/filter/mirror.js'
import type { FilterView } from '../src/filter/view.js'
import { Progress } from './progress.js'
import { createRedis, waitReady } from '../src/store/redis.js'
import type { InputFormat } from '../src/scrub/chunk.js'
import { scrubFile } from '../src/scrub/engine.js'
import { emptyTotals, type ScrubParams } from '../src/scrub/job-record.js'
import { createScrubPool } from '../src/scrub/pool.js'

export async function scrubCommand (config: Config, log: Logger, file: string, params: ScrubParams, out: string): Promise<Record<string, unknown>> {
  const format: InputFormat = /\.(nd)?jsonl?$/i.test(file) || file.endsWith('.ndjson') ? 'ndjson' : 'csv'
  const policy = { tacirAllowedWithoutRecord: config.tacirAllowedWithoutRecord, storeFailureMode: config.storeFailureMode }
  const size = (await stat(file)).size
  let getView: () => FilterView | null
  let stop = async (): Promise<void> => {}
  let pool = null
  if (config.redisUrl !== null) {
    const redis = createRedis(config.redisUrl, { timeoutMs: config.redisTimeoutMs, name: 'iys-scrub' })
    redis.on('error', () => {})
    const mirror = new FilterMirror(redis, layout(config.redisPrefix), { pollMs: config.filterPollMs, log })
    try {
      await waitReady(redis, 10_000)
      await mirror.start()
      if (mirror.view === null) throw new Error('no filter version in Redis: run `iys-gateway load` first')
    } catch (err) {
      // Nothing may stay open after a failed start: the command must end (exit 1), not wait on a reconnecting client.
      redis.disconnect() // first: the mirror's goodbye then fails at once instead of waiting for a reconnect
      await mirror.stop()
      throw err
    }
    getView = () => mirror.view
    pool = createScrubPool({ redisUrl: config.redisUrl, redisPrefix: config.redisPrefix, redisTimeoutMs: config.redisTimeoutMs, policy }, config.scrub.threads)
    const p = pool
    stop = async () => { await p.destroy(); await mirror.stop(); redis.disconnect() }
  } else {
    const seed = await buildEmbeddedView(config.embeddedSeedFile, config.bloomFpr)
    log.warn('REDIS_URL is not set: scrubbing against the embedded store')
    getView = () => seed.view
  }
  const totals = emptyTotals()
  const progress = new Progress({ label: 'scrub', totalBytes: size })
  const started = Date.now()
  try {
    await scrubFile({ getView, policy, pool, chunkLines: config.scrub.chunkLines, threads: config.scrub.threads, maxLineBytes: config.scrub.maxLineBytes, log },
      file, out + '.tmp', params, format, totals, (bytes) => { progress.update(totals.read, bytes, totals.invalid) })
    await rename(out + '.tmp', out)
  } finally {
    await stop()
  }
  const seconds = (Date.now() - started) / 1000
  progress.done(`${totals.allowed} allowed, ${totals.blocked} blocked → ${out}`)
  return { out, seconds, rate: Math.round(totals.read / seconds), ...totals }
}
