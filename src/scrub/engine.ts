// Runs scrub jobs: reads the input file in line batches, sends chunks of thousands of lines to the worker pool (or,
// in embedded mode, checks them inline), and writes the result in input order:
//   recipient,normalized,allowed,reason,line,duplicateOf
// A recipient seen before is reported once more as DUPLICATE with the line of its first occurrence (and is not
// allowed: the first occurrence carries the decision). A malformed line is INVALID_RECIPIENT with its line number;
// so is a line longer than maxLineBytes, which the splitter skips unread and which is shown with an empty recipient.
// Jobs run one at a time per process, each using every scrub thread; a few chunks are in flight so that the
// workers, Redis and the writer overlap, and the bounded window keeps memory flat whatever the file size.
// Each chunk's decisions go through the post-decision hook as one batch (metrics by reason, never per line; DUPLICATE
// lines left out, since the first occurrence carries the decision). With a decision log, a done job's decisions are
// written to it from the result file, off the scrub's path (audit/scrub-decisions.ts). With DATABASE_URL the jobs'
// records and results are also copied to Postgres for the other gateways, in the background (scrub/shared.ts): the
// scrub itself does nothing more for it than one Map lookup per read batch (has another gateway given the job up?).

import { once } from 'node:events'
import { createReadStream, createWriteStream } from 'node:fs'
import { rename, stat } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { Piscina } from 'piscina'
import type { CheckerOptions } from '../check/checker.js'
import { RedisView, type FilterView } from '../filter/view.js'
import { DEFAULT_MAX_LINE_BYTES, readLineBatches, splitCsvLine, type LineBatch } from '../formats/csv.js'
import { REASON_INDEX, REASONS } from '../policy/decide.js'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import type { ScrubDecisionLog } from '../audit/scrub-decisions.js'
import type { Metrics } from '../metrics.js'
import { checkChunk, type ChunkInput, type ChunkOutput, type InputFormat } from './chunk.js'
import { FirstSeen } from './dedup.js'
import type { ScrubJobs } from './jobs.js'
import type { JobRecord, ScrubParams } from './job-record.js'
import type { ScrubTask } from './pool.js'
import { bloomShare, replicaShare } from '../filter/shared-view.js'

/** Chunk size while the gateway is answering checks (see EngineDeps.pauseMs). */
const QUIET_CHUNK_LINES = 1024

const INVALID = REASON_INDEX.INVALID_RECIPIENT

export const RESULT_HEADER = 'recipient,normalized,allowed,reason,line,duplicateOf\n'

export interface EngineDeps {
  getView: () => FilterView | null
  /** Policy for chunks decided inline (embedded mode, or when there is no pool). */
  policy: CheckerOptions
  pool: Piscina<ScrubTask, ChunkOutput> | null
  chunkLines: number
  threads: number
  /** longest line read (bytes); a longer one is an INVALID_RECIPIENT line of its own (default 4 KiB) */
  maxLineBytes?: number
  log: Logger
  /**
   * Live traffic first: how long to pause between chunks right now (0: run at full speed). The gateway answers a
   * few ms while checks are being served, so a scrub takes the cores only when the checks leave them free.
   */
  pauseMs?: () => number
  /** the post-decision hook (gateway): decision metrics per chunk */
  hook?: Pick<DecisionsHook, 'afterScrubChunk'>
  /** the decision log of done jobs (gateway with DATABASE_URL): written from their result files */
  scrubLog?: Pick<ScrubDecisionLog, 'enqueue'> | null
  /** job metrics (gateway): jobs by state, lines, finished runs */
  metrics?: Pick<Metrics, 'scrubLines' | 'scrubJobsFinished' | 'watchScrubJobs'>
}

/** Where a job's decisions go besides its result file. */
export interface ScrubSinks {
  /** after each chunk is written: its decisions by reason index (REASONS, DUPLICATE lines left out) and its lines */
  onChunk?: (counts: Uint32Array, lines: number) => void
}

/**
 * Reads `path` and writes the result file; the progress callback sees the totals as they grow, the bytes of the
 * input read and the bytes of the result written so far.
 */
export async function scrubFile (deps: EngineDeps, input: string, output: string, params: ScrubParams, format: InputFormat, totals: JobRecord['totals'], onProgress?: (bytesRead: number, bytesWritten: number) => void, sinks: ScrubSinks = {}): Promise<void> {
  // Small reads and a yield after every chunk: the scrub shares the event loop with the gateway's checks, which must
  // not wait behind tens of thousands of lines handled in one go.
  const stream = createReadStream(input, { highWaterMark: 64 * 1024 })
  const out = createWriteStream(output)
  out.write(RESULT_HEADER)
  const seen = new FirstSeen(Math.ceil((await stat(input)).size / 14)) // ~14 bytes a line; it grows if needed
  const window = deps.threads * 4 // two chunks per worker, and as many again being written or read
  const inflight: Promise<ChunkOutput>[] = []
  const pendingLines: Float64Array[] = []
  let column = 0
  let headerChecked = format !== 'csv'
  let lines: string[] = []
  let numbers: number[] = []
  let chunkLimit = deps.chunkLines
  const { onChunk } = sinks
  const counts = new Uint32Array(REASONS.length)
  const blockedCounts = new Uint32Array(REASONS.length)

  const dispatch = (): void => {
    const nums = Float64Array.from(numbers)
    const chunk = runChunk(deps, params, { text: lines.join('\n'), numbers: nums, format, column })
    // Awaited in order by writeOldest; until then a rejection (the pool destroyed as the gateway stops mid-job) must
    // not count as unhandled, which would end the process.
    chunk.catch(() => {})
    inflight.push(chunk)
    pendingLines.push(nums)
    lines = []
    numbers = []
  }

  const writeOldest = async (): Promise<void> => {
    const res = await inflight.shift()!
    const nums = pendingLines.shift()!
    const { rows, rowEnds, prefixEnds, reasons, allowed, valid, h1, h2 } = res
    // The chunk's rows are written as its worker wrote them; a DUPLICATE row is its prefix and fields of its own.
    // Per line only the duplicate probe and two counters; the totals are summed per chunk. (Building the rows here
    // from per-line strings took this thread ~2.6× the CPU per line on the bench list: strings, their GC, their copy.)
    const parts: Uint8Array[] = []
    let from = 0
    let allowedLines = 0
    let duplicates = 0
    counts.fill(0)
    blockedCounts.fill(0)
    for (let i = 0; i < nums.length; i++) {
      const line = nums[i]!
      const first = valid[i] === 1 ? seen.firstLine(h1[i]!, h2[i]!, line) : 0
      if (first !== 0) {
        duplicates++
        parts.push(rows.subarray(from, prefixEnds[i]), Buffer.from('false,DUPLICATE,' + line + ',' + first + '\n', 'latin1'))
        from = rowEnds[i]!
        continue
      }
      counts[reasons[i]!]!++
      if (allowed[i] === 1) allowedLines++
      else blockedCounts[reasons[i]!]!++
    }
    parts.push(rows.subarray(from))
    totals.checked += nums.length
    totals.allowed += allowedLines
    totals.blocked += nums.length - allowedLines
    totals.invalid += counts[INVALID]!
    const byReason = totals.blockedByReason
    for (let r = 0; r < REASONS.length; r++) if (blockedCounts[r]! > 0) byReason[REASONS[r]!] = (byReason[REASONS[r]!] ?? 0) + blockedCounts[r]!
    if (duplicates > 0) {
      totals.duplicates += duplicates
      byReason.DUPLICATE = (byReason.DUPLICATE ?? 0) + duplicates
    }
    onChunk?.(counts, nums.length)
    if (!out.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts))) await once(out, 'drain')
  }

  try {
    for await (const read of readLineBatches(stream, { maxLineBytes: deps.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES })) {
      totals.tooLong += read.tooLong.length
      const batch = read.tooLong.length === 0 ? read : withTooLong(read)
      for (let i = 0; i < batch.lines.length; i++) {
        const line = batch.lines[i]!
        if (!headerChecked) {
          headerChecked = true
          const fields = splitCsvLine(line)
          const idx = fields === null ? -1 : fields.findIndex(f => f.trim().replace(/^\uFEFF/, '').toLowerCase() === 'recipient')
          if (idx !== -1) { column = idx; continue } // a header row naming the recipient column
        }
        lines.push(line)
        numbers.push(batch.numbers[i]!)
        totals.read++
        if (lines.length >= chunkLimit) {
          dispatch()
          const pause = deps.pauseMs?.() ?? 0
          // While checks are being served: small chunks, one at a time, with a pause after each, so that the cores
          // go to the checks first; at full size and speed again as soon as they stop.
          chunkLimit = pause > 0 ? Math.min(deps.chunkLines, QUIET_CHUNK_LINES) : deps.chunkLines
          if (pause > 0) {
            while (inflight.length > 0) await writeOldest()
            await new Promise(resolve => setTimeout(resolve, pause))
          } else if (inflight.length >= window) await writeOldest()
          else await new Promise(resolve => setImmediate(resolve))
        }
      }
      onProgress?.(stream.bytesRead, out.bytesWritten + out.writableLength)
    }
    if (lines.length > 0) dispatch()
    while (inflight.length > 0) await writeOldest()
    out.end()
    await once(out, 'close')
  } catch (err) {
    // Let chunks already sent settle before the caller cleans up.
    await Promise.allSettled(inflight)
    out.destroy()
    throw err
  }
}

/**
 * The batch with an empty line in the place of each line that was too long, so that it goes through the chunk as
 * every other line and comes out INVALID_RECIPIENT with its line number (an empty recipient is never valid).
 */
function withTooLong (b: LineBatch): LineBatch {
  const lines: string[] = []
  const numbers: number[] = []
  let t = 0
  for (let i = 0; i < b.lines.length; i++) {
    while (t < b.tooLong.length && b.tooLong[t]! < b.numbers[i]!) { lines.push(''); numbers.push(b.tooLong[t++]!) }
    lines.push(b.lines[i]!)
    numbers.push(b.numbers[i]!)
  }
  while (t < b.tooLong.length) { lines.push(''); numbers.push(b.tooLong[t++]!) }
  return { lines, numbers, tooLong: [] }
}

/**
 * One chunk through the pool (Redis mode) or inline. A filter version removed while the job ran (a `load` flipped
 * and the old version was dropped) fails the chunk's lookups; it is then run again on the version served now.
 *
 * The gateway's local replica goes with the chunk when it is current now, at dispatch (view.exact(): built, following
 * the change stream, news within REPLICA_MAX_LAG_MS), and the worker answers the whole chunk from it. A chunk
 * answered that way is as fresh as the lag bound plus the time the chunk waits and runs (milliseconds): the worker
 * does not ask again per line. When it is not current, the chunk carries none and the worker asks Redis.
 */
async function runChunk (deps: EngineDeps, params: ScrubParams, input: ChunkInput): Promise<ChunkOutput> {
  for (let attempt = 0; ; attempt++) {
    const view = deps.getView()
    let out: ChunkOutput
    if (deps.pool !== null && view instanceof RedisView) {
      const replica = view.exact()
      out = await deps.pool.run({ input, query: params, view: bloomShare(view), replica: replica === null ? null : replicaShare(replica) })
    } else out = await checkChunk(deps.getView, deps.policy, params, input)
    if (out.storeError !== 'VERSION_GONE' || attempt === 3) return out
  }
}

/** Runs queued jobs one after another. */
export class ScrubQueue {
  private readonly deps: EngineDeps & { jobs: ScrubJobs }
  private readonly queue: JobRecord[] = []
  private running: Promise<void> | null = null
  private stopping = false

  constructor (deps: EngineDeps & { jobs: ScrubJobs }) {
    this.deps = deps
    deps.metrics?.watchScrubJobs(() => deps.jobs.counts())
    // Done jobs whose decisions a previous run did not get into Postgres (it was away, or the process stopped).
    for (const job of deps.jobs.pendingDecisionLogs()) deps.scrubLog?.enqueue(job, deps.jobs.resultPath(job.jobId), j => deps.jobs.save(j))
  }

  enqueue (job: JobRecord): void {
    this.queue.push(job)
    if (this.running === null) this.running = this.drain().finally(() => { this.running = null })
  }

  async idle (): Promise<void> {
    while (this.running !== null) await this.running
  }

  /**
   * Shutting down: a job that fails from here on stays 'running' on disk and runs again at the next start. The jobs
   * stop being shared too (heartbeat, background writes): another gateway fails this one's unfinished jobs if it
   * does not come back within the lease (scrub/shared.ts).
   */
  stop (): void {
    this.stopping = true
    this.queue.length = 0
    this.deps.jobs.stop()
  }

  private async drain (): Promise<void> {
    const { jobs, log, hook, metrics, scrubLog } = this.deps
    for (let job = this.queue.shift(); job !== undefined; job = this.queue.shift()) {
      // Given up by another gateway meanwhile (this one's heartbeat had lapsed): failed for good, never run.
      if (await jobs.settleLost(job)) { metrics?.scrubJobsFinished.labels('failed').inc(); continue }
      job.state = 'running'
      job.startedAt = new Date().toISOString()
      delete job.decisionLog // a run again after a restart logs its own decisions
      await jobs.save(job)
      const started = Date.now()
      let lastSave = started
      const type = job.params.type
      const sinks: ScrubSinks = {
        onChunk: (counts, lines) => { hook?.afterScrubChunk(type, counts); metrics?.scrubLines.inc(lines) }
      }
      try {
        const id = job.jobId
        await scrubFile(this.deps, jobs.inputPath(id), jobs.tmpResultPath(id), job.params, job.format, job.totals, (bytesRead, bytesWritten) => {
          if (jobs.lostTo(id)) throw new Error('another gateway gave this job up') // settled below
          jobs.setResultBytes(job.jobId, bytesWritten)
          const secs = (Date.now() - started) / 1000
          job.rate = secs > 0 ? Math.round(job.totals.read / secs) : 0
          job.etaSeconds = bytesRead > 0 ? Math.max(0, Math.round(secs * (job.bytes - bytesRead) / bytesRead)) : undefined
          if (Date.now() - lastSave > 2000) { lastSave = Date.now(); void jobs.save(job) }
        }, sinks)
        await rename(jobs.tmpResultPath(job.jobId), jobs.resultPath(job.jobId))
        job.resultBytes = (await stat(jobs.resultPath(job.jobId))).size
        jobs.setResultBytes(job.jobId, job.resultBytes)
        const secs = (Date.now() - started) / 1000
        job.rate = secs > 0 ? Math.round(job.totals.read / secs) : 0
        // The decision log's 'pending' is saved with the job's end: a crash from here on leaves it for the next start.
        if (scrubLog != null) job.decisionLog = { state: 'pending' }
        metrics?.scrubJobsFinished.labels('done').inc() // before the job reads 'done' (finish() sets it before its await)
        await jobs.finish(job, 'done')
        scrubLog?.enqueue(job, jobs.resultPath(job.jobId), j => jobs.save(j))
        log.info({ jobId: job.jobId, lines: job.totals.read, seconds: secs, decisionLog: job.decisionLog }, 'scrub job done')
      } catch (err) {
        if (this.stopping) return
        metrics?.scrubJobsFinished.labels('failed').inc()
        if (await jobs.settleLost(job).catch(() => false)) continue
        log.warn({ jobId: job.jobId, err }, 'scrub job failed')
        await jobs.removeTmpResult(job.jobId).catch(() => {})
        await jobs.finish(job, 'failed', `the job stopped: ${(err as Error).message}`)
      }
    }
  }
}
