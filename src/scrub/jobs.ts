// Scrub jobs on local disk: one folder per job with job.json (state and totals), the uploaded input, and the
// result. A result is written to result.tmp and renamed to result.csv only when complete, so nothing half-written is
// ever served. Jobs survive a gateway restart; a job whose upload was cut off by the restart is failed, one that
// was queued or running is run again from its complete input. Finished jobs are deleted after the retention.
// The bytes of every job's files (uploads as they arrive, results as they are written) are counted here, so that
// the upload route can hold all of them under SCRUB_MAX_TOTAL_BYTES.
// A job belongs to the tenant whose key uploaded it (`owner`): only that tenant's keys, and of those only keys that
// may act for the job's brand, see it (`visibleTo`). Jobs from before owners were recorded have none: nobody is
// served them (not even admin keys, which are a tenant's too); they are deleted by the retention like any other.

import { randomUUID } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { mayActFor, type Principal } from '../auth/principal.js'
import type { ConsentType, RecipientType } from '../domain/vocabulary.js'
import type { ScrubDecisionLogState } from '../audit/scrub-decisions.js'
import type { ScrubJobCounts } from '../metrics.js'
import type { InputFormat } from './chunk.js'

export type JobState = 'uploading' | 'queued' | 'running' | 'done' | 'failed'

export interface ScrubParams {
  brandCode: string
  type: ConsentType
  recipientType: RecipientType
  commercial: boolean
}

export interface ScrubTotals {
  /** lines read from the input (blank lines and a header excluded) */
  read: number
  /** lines decided */
  checked: number
  allowed: number
  blocked: number
  invalid: number
  duplicates: number
  /** lines longer than SCRUB_MAX_LINE_BYTES (also counted in invalid: INVALID_RECIPIENT, shown empty) */
  tooLong: number
  blockedByReason: Record<string, number>
}

/** Who uploaded a job: the tenant it belongs to and the key it came with. */
export interface JobOwner {
  iysCode: string
  keyId: string
}

export interface JobRecord {
  jobId: string
  /** absent on jobs written before owners were recorded: those are visible to nobody */
  owner?: JobOwner
  state: JobState
  reason?: string
  params: ScrubParams
  format: InputFormat
  createdAt: string
  uploadedAt?: string
  startedAt?: string
  finishedAt?: string
  expiresAt?: string
  bytes: number
  totals: ScrubTotals
  /** lines per second over the run so far, and the estimated seconds left (while running) */
  rate?: number
  etaSeconds?: number
  resultBytes?: number
  /**
   * With a decision log (DATABASE_URL), a done job's decisions: 'pending' until they are in Postgres (the job's files
   * are kept past their retention until then), then 'written' with the rows (a DUPLICATE line is no decision and has
   * none). See audit/scrub-decisions.ts.
   */
  decisionLog?: ScrubDecisionLogState
}

export const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/

/** Whether `p` may see and download `job`: a key of the owning tenant that may act for the job's brand. */
export const visibleTo = (job: JobRecord, p: Principal): boolean =>
  job.owner !== undefined && job.owner.iysCode === p.iysCode && mayActFor(p, job.params.brandCode)

export const emptyTotals = (): ScrubTotals => ({ read: 0, checked: 0, allowed: 0, blocked: 0, invalid: 0, duplicates: 0, tooLong: 0, blockedByReason: {} })

export class ScrubJobs {
  readonly dir: string
  private readonly retentionMs: number
  private readonly log: Logger
  private readonly jobs = new Map<string, JobRecord>()
  /** bytes on disk per job: its input and its result (or the result being written) */
  private readonly disk = new Map<string, { input: number, result: number }>()
  private used = 0
  private readonly onUsage: (bytes: number) => void

  /** `onUsage` hears every change of usedBytes (for a gauge). */
  constructor (dir: string, retentionHours: number, log: Logger, onUsage: (bytes: number) => void = () => {}) {
    this.dir = dir
    this.retentionMs = retentionHours * 3_600_000
    this.log = log
    this.onUsage = onUsage
  }

  inputPath (id: string): string { return join(this.dir, id, 'input') }
  resultPath (id: string): string { return join(this.dir, id, 'result.csv') }
  tmpResultPath (id: string): string { return join(this.dir, id, 'result.tmp') }

  /** Bytes of all jobs' inputs and results on disk (or being written), for SCRUB_MAX_TOTAL_BYTES. */
  get usedBytes (): number { return this.used }

  /** Counts `n` more bytes of a job's upload. */
  addInputBytes (id: string, n: number): void {
    const d = this.disk.get(id)
    if (d === undefined) return
    d.input += n
    this.used += n
    this.onUsage(this.used)
  }

  /** Sets the size of a job's result (or of the result being written). */
  setResultBytes (id: string, n: number): void {
    const d = this.disk.get(id)
    if (d === undefined) return
    this.used += n - d.result
    d.result = n
    this.onUsage(this.used)
  }

  /** Deletes a job's input (an upload that failed: it can never run) and gives its bytes back. */
  async removeInput (id: string): Promise<void> {
    // Given back before the file goes, in the same tick as the caller's decision: a job already reads 'failed' by
    // then, and an upload that follows at once must find the room (seen under load as a spurious 507).
    const d = this.disk.get(id)
    if (d !== undefined) { this.used -= d.input; d.input = 0; this.onUsage(this.used) }
    await rm(this.inputPath(id), { force: true })
  }

  /** Deletes the result a failed run left half-written. */
  async removeTmpResult (id: string): Promise<void> {
    await rm(this.tmpResultPath(id), { force: true })
    this.setResultBytes(id, 0)
  }

  /** Loads the jobs a previous run left; returns those to run again. */
  async init (): Promise<JobRecord[]> {
    await mkdir(this.dir, { recursive: true })
    const again: JobRecord[] = []
    for (const id of await readdir(this.dir)) {
      if (!JOB_ID.test(id)) continue
      let job: JobRecord
      try { job = JSON.parse(await readFile(join(this.dir, id, 'job.json'), 'utf8')) as JobRecord } catch { continue }
      this.disk.set(id, { input: 0, result: 0 })
      this.addInputBytes(id, await sizeOf(this.inputPath(id)))
      this.setResultBytes(id, await sizeOf(this.resultPath(id)) + await sizeOf(this.tmpResultPath(id)))
      if (job.state === 'uploading') {
        await this.removeInput(id) // it can never run
        job.state = 'failed'
        job.reason = 'the upload did not complete before the gateway stopped'
        job.finishedAt = new Date().toISOString()
        job.expiresAt = new Date(Date.now() + this.retentionMs).toISOString()
        await this.save(job)
      } else if (job.state === 'queued' || job.state === 'running') {
        job.state = 'queued'
        job.totals = emptyTotals()
        again.push(job)
      }
      this.jobs.set(id, job)
    }
    return again
  }

  /**
   * A new job in state 'uploading'. Its id is taken before the first await, so that of two uploads racing for one
   * jobId exactly one gets it (the route checks `has` first and answers the other 409). Without `owner` the job is
   * nobody's (see visibleTo): the upload route always gives one.
   */
  async create (params: ScrubParams, format: InputFormat, jobId?: string, owner?: JobOwner): Promise<JobRecord> {
    const id = jobId ?? randomUUID()
    if (this.jobs.has(id)) throw new Error(`scrub job ${id} exists already`)
    const job: JobRecord = { jobId: id, ...(owner !== undefined ? { owner: { iysCode: owner.iysCode, keyId: owner.keyId } } : {}), state: 'uploading', params, format, createdAt: new Date().toISOString(), bytes: 0, totals: emptyTotals() }
    this.jobs.set(id, job)
    this.disk.set(id, { input: 0, result: 0 })
    try {
      await mkdir(join(this.dir, id), { recursive: true })
      await this.save(job)
    } catch (err) {
      this.jobs.delete(id)
      this.forget(id)
      throw err
    }
    return job
  }

  get (id: string): JobRecord | undefined { return this.jobs.get(id) }

  /** Every job, newest first; with `p`, only those `p` may see. */
  list (p?: Principal): JobRecord[] {
    const all = [...this.jobs.values()]
    return (p === undefined ? all : all.filter(j => visibleTo(j, p))).sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  }

  has (id: string): boolean { return this.jobs.has(id) }

  /** Jobs uploading, queued and running, and how long the oldest queued one has waited (for metrics). */
  counts (now = Date.now()): ScrubJobCounts {
    const c: ScrubJobCounts = { uploading: 0, queued: 0, running: 0, oldestQueuedSeconds: 0 }
    for (const job of this.jobs.values()) {
      if (job.state === 'uploading' || job.state === 'running') c[job.state]++
      else if (job.state === 'queued') {
        c.queued++
        const since = Date.parse(job.uploadedAt ?? job.createdAt)
        c.oldestQueuedSeconds = Math.max(c.oldestQueuedSeconds, (now - since) / 1000)
      }
    }
    return c
  }

  /** Done jobs whose decisions are not in the decision log yet (a previous run of the gateway could not write them). */
  pendingDecisionLogs (): JobRecord[] {
    return [...this.jobs.values()].filter(j => j.state === 'done' && j.decisionLog?.state === 'pending')
  }

  /** Writes job.json atomically (write + rename). */
  async save (job: JobRecord): Promise<void> {
    const file = join(this.dir, job.jobId, 'job.json')
    await writeFile(file + '.tmp', JSON.stringify(job))
    await rename(file + '.tmp', file)
  }

  async finish (job: JobRecord, state: 'done' | 'failed', reason?: string): Promise<void> {
    job.state = state
    if (reason !== undefined) job.reason = reason
    job.finishedAt = new Date().toISOString()
    job.expiresAt = new Date(Date.now() + this.retentionMs).toISOString()
    delete job.etaSeconds
    await this.save(job)
  }

  /** Deletes finished jobs past their retention. */
  async sweep (now = Date.now()): Promise<number> {
    let n = 0
    for (const job of [...this.jobs.values()]) {
      if (job.expiresAt === undefined || Date.parse(job.expiresAt) > now) continue
      if (job.decisionLog?.state === 'pending') continue // its result file is what the decision log is written from
      await rm(join(this.dir, job.jobId), { recursive: true, force: true })
      this.jobs.delete(job.jobId)
      this.forget(job.jobId)
      n++
    }
    if (n > 0) this.log.info({ deleted: n }, 'scrub job retention')
    return n
  }

  private forget (id: string): void {
    const d = this.disk.get(id)
    if (d !== undefined) { this.used -= d.input + d.result; this.disk.delete(id); this.onUsage(this.used) }
  }
}

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}
