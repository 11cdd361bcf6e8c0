// Scrub jobs on local disk: one folder per job with job.json (state and totals), the uploaded input, and the
// result. A result is written to result.tmp and renamed to result.csv only when complete, so nothing half-written is
// ever served. Jobs survive a gateway restart; a job whose upload was cut off by the restart is failed, one that
// was queued or running is run again from its complete input. Finished jobs are deleted after the retention.
// The bytes of every job's files (uploads as they arrive, results as they are written) are counted here, so that
// the upload route can hold all of them under SCRUB_MAX_TOTAL_BYTES.
// A job belongs to the tenant whose key uploaded it (`owner`): only that tenant's keys, and of those only keys that
// may act for the job's brand, see it (`visibleTo`). Jobs from before owners were recorded have none: nobody is
// served them (not even admin keys, which are a tenant's too); they are deleted by the retention like any other.
// With DATABASE_URL (a pool given), every job is also shared through Postgres (scrub/shared.ts): any gateway answers
// for any job, its status and its result. This gateway stays the only writer of its jobs and answers for them from
// memory and its disk, as without Postgres; `find` and `listFor` add the jobs of the other gateways.

import { randomUUID } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { mayActFor, type Principal } from '../auth/principal.js'
import { GatewayError } from '../domain/errors.js'
import { isTransientDbError, type Pool } from '../store/pg.js'
import type { ScrubJobCounts } from '../metrics.js'
import { JobTaken, SharedJobs } from './shared.js'
import { emptyTotals, type JobOwner, type JobRecord, type ScrubParams } from './job-record.js'
import type { InputFormat } from './chunk.js'

export const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/

/** Whether `p` may see and download `job`: a key of the owning tenant that may act for the job's brand. */
export const visibleTo = (job: JobRecord, p: Principal): boolean =>
  job.owner !== undefined && job.owner.iysCode === p.iysCode && mayActFor(p, job.params.brandCode)

export class ScrubJobs {
  readonly dir: string
  private readonly retentionMs: number
  private readonly log: Logger
  private readonly jobs = new Map<string, JobRecord>()
  /** bytes on disk per job: its input and its result (or the result being written) */
  private readonly disk = new Map<string, { input: number, result: number }>()
  private used = 0
  private readonly onUsage: (bytes: number) => void
  private readonly pool: Pool | null
  /** the jobs shared through Postgres (from init on, with a pool) */
  private shared: SharedJobs | null = null
  /** jobs another gateway gave up while this one still had them going: the failure it wrote (see settleLost) */
  private readonly lost = new Map<string, JobRecord>()
  /**
   * With Postgres, each job's record as last saved (job.json's text): what is shared, and what every gateway answers,
   * this one included. A running job's totals grow in memory between saves (every 2 s, and at each change of state).
   */
  private readonly saved = new Map<string, string>()

  /**
   * `onUsage` hears every change of usedBytes (for a gauge). With `pool` (DATABASE_URL), jobs are shared through
   * Postgres with the other gateways (scrub/shared.ts).
   */
  constructor (dir: string, retentionHours: number, log: Logger, onUsage: (bytes: number) => void = () => {}, pool: Pool | null = null) {
    this.dir = dir
    this.retentionMs = retentionHours * 3_600_000
    this.log = log
    this.onUsage = onUsage
    this.pool = pool
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

  /** Loads the jobs a previous run left (and, with Postgres, shares them); returns those to run again. */
  async init (): Promise<JobRecord[]> {
    await mkdir(this.dir, { recursive: true })
    if (this.pool !== null) {
      this.shared = new SharedJobs({
        pool: this.pool,
        gatewayId: await this.gatewayId(),
        retentionMs: this.retentionMs,
        log: this.log,
        local: id => this.jobs.get(id),
        saved: id => this.snapshot(id),
        localIds: () => this.jobs.keys(),
        resultPath: id => this.resultPath(id),
        onLost: (id, record) => { this.onLost(id, record) }
      })
    }
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
    if (this.shared === null) return again
    // Postgres may hold a failure another gateway wrote for a job of ours while we were away: it is not run again.
    await this.shared.start()
    const run: JobRecord[] = []
    for (const job of again) if (!await this.settleLost(job)) run.push(job)
    return run
  }

  /** This gateway's id in Postgres: its scrub folder's, made once (a process restarted on the folder is the same runner). */
  private async gatewayId (): Promise<string> {
    const file = join(this.dir, '.gateway-id') // not a job: the dot keeps it out of JOB_ID
    try {
      const id = (await readFile(file, 'utf8')).trim()
      if (id !== '') return id
    } catch { /* none yet */ }
    const id = randomUUID()
    await writeFile(file + '.tmp', id)
    await rename(file + '.tmp', file)
    return id
  }

  /** Stops sharing (the heartbeat and the background writes); what is left is written at the next start. */
  stop (): void {
    this.shared?.stop()
  }

  /**
   * A new job in state 'uploading'. Its id is taken before the first await, so that of two uploads racing for one
   * jobId exactly one gets it (the route checks `has` first and answers the other 409). Without `owner` the job is
   * nobody's (see visibleTo): the upload route always gives one.
   *
   * With Postgres the id is also claimed there, beside the folder being made: a job of another gateway holding it is
   * JobTaken (and this job is gone again). When Postgres cannot answer, a job whose id the client `named` is refused
   * (DATABASE_UNAVAILABLE: only Postgres knows the ids of the other gateways); one with an id made here (a UUID) goes
   * on, and is written to Postgres when it is back.
   */
  async create (params: ScrubParams, format: InputFormat, jobId?: string, owner?: JobOwner, opts: { named?: boolean } = {}): Promise<JobRecord> {
    const id = jobId ?? randomUUID()
    if (this.jobs.has(id)) throw new Error(`scrub job ${id} exists already`)
    const named = opts.named === true
    if (named && this.sharedDown) throw namesNeedPostgres()
    const job: JobRecord = { jobId: id, ...(owner !== undefined ? { owner: { iysCode: owner.iysCode, keyId: owner.keyId } } : {}), state: 'uploading', params, format, createdAt: new Date().toISOString(), bytes: 0, totals: emptyTotals() }
    this.jobs.set(id, job)
    this.disk.set(id, { input: 0, result: 0 })
    const shared = this.shared
    let ok = false
    try {
      // Both settle before either failure is thrown: a folder made after the clean-up below would stay behind.
      const [made, claimed] = await Promise.allSettled([
        mkdir(join(this.dir, id), { recursive: true }),
        shared === null || shared.reachable || named ? this.claim(job, named) : Promise.resolve(false)
      ])
      if (claimed.status === 'rejected') throw claimed.reason
      if (made.status === 'rejected') throw made.reason
      ok = claimed.value
      await this.writeLocal(job)
      if (!ok) shared?.touch(id) // written when Postgres is back
    } catch (err) {
      this.jobs.delete(id)
      this.forget(id)
      shared?.forget(id)
      if (ok && shared !== null) await shared.drop(id).catch(() => {}) // claimed, then the folder failed
      await rm(join(this.dir, id), { recursive: true, force: true }).catch(() => {})
      throw err
    }
    return job
  }

  /** Claims `job`'s id in Postgres: true when claimed, false when Postgres could not say (and the job may go on). */
  private async claim (job: JobRecord, named: boolean): Promise<boolean> {
    if (this.shared === null) return true
    try {
      await this.shared.claim(job)
      return true
    } catch (err) {
      if (err instanceof JobTaken) throw err
      if (named) throw isTransientDbError(err) ? namesNeedPostgres(err) : err
      this.log.warn({ err, jobId: job.jobId }, 'scrub job not written to Postgres yet; the job goes on here and is written when Postgres answers')
      return false
    }
  }

  /** True while Postgres is not answering this gateway's scrub writes (a named upload is refused meanwhile). */
  get sharedDown (): boolean { return this.shared !== null && !this.shared.reachable }

  /** This gateway's own job `id` (the runner's record), or undefined. */
  get (id: string): JobRecord | undefined { return this.jobs.get(id) }

  /**
   * Job `id` wherever it runs: this gateway's own record, else (with Postgres) the shared one, which a job of a
   * gateway that stopped answering is failed in first. Throws the database's error when Postgres cannot say.
   */
  async find (id: string): Promise<JobRecord | undefined> {
    // An id no upload could take names no job; Postgres is not asked (it refuses a NUL in text: a 500, not a 404).
    if (!JOB_ID.test(id)) return undefined
    const local = this.jobs.get(id)
    if (this.shared === null) return local
    if (local !== undefined) return JSON.parse(this.snapshot(id)!) as JobRecord
    return await this.shared.get(id)
  }

  /** Job `id`'s record as last saved (as it is now when it was never saved in this run). */
  private snapshot (id: string): string | undefined {
    const job = this.jobs.get(id)
    return job === undefined ? undefined : this.saved.get(id) ?? JSON.stringify(job)
  }

  /** Whether job `id`'s result is on this gateway's disk (it ran the job): served from there, else from Postgres. */
  hasLocalResult (id: string): boolean { return this.jobs.get(id)?.state === 'done' }

  /** A done job's result from Postgres, in order, as its chunks arrive (see SharedJobs.resultChunks). */
  sharedResult (id: string): AsyncGenerator<Buffer> {
    if (this.shared === null) throw new Error('scrub jobs are not shared (no DATABASE_URL)')
    return this.shared.resultChunks(id)
  }

  /** Brackets a result download from this gateway's disk (the copy to Postgres waits meanwhile). */
  downloadStarted (): void { this.shared?.downloadStarted() }
  downloadEnded (): void { this.shared?.downloadEnded() }

  /** Every job, newest first; with `p`, only those `p` may see. */
  list (p?: Principal): JobRecord[] {
    const all = [...this.jobs.values()]
    return (p === undefined ? all : all.filter(j => visibleTo(j, p))).sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  }

  /**
   * Every job `p` may see, newest first: this gateway's and, with Postgres, the other gateways' (this gateway's own
   * record wins for its jobs). Throws the database's error when Postgres cannot say.
   */
  async listFor (p: Principal): Promise<JobRecord[]> {
    if (this.shared === null) return this.list(p)
    const all = new Map<string, JobRecord>()
    for (const j of await this.shared.listTenant(p.iysCode)) if (visibleTo(j, p)) all.set(j.jobId, j)
    for (const j of this.list(p)) all.set(j.jobId, JSON.parse(this.snapshot(j.jobId)!) as JobRecord)
    return [...all.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt))
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

  /** Writes job.json atomically (write + rename), and the record to Postgres in the background (with a pool). */
  async save (job: JobRecord): Promise<void> {
    await this.writeLocal(job)
    this.shared?.touch(job.jobId)
  }

  private async writeLocal (job: JobRecord): Promise<void> {
    const file = join(this.dir, job.jobId, 'job.json')
    const text = JSON.stringify(job)
    if (this.shared !== null) this.saved.set(job.jobId, text)
    await writeFile(file + '.tmp', text)
    await rename(file + '.tmp', file)
  }

  /** Ends a job; a done job's result (renamed into place before) is then copied to Postgres in the background. */
  async finish (job: JobRecord, state: 'done' | 'failed', reason?: string): Promise<void> {
    job.state = state
    if (reason !== undefined) job.reason = reason
    job.finishedAt = new Date().toISOString()
    job.expiresAt = new Date(Date.now() + this.retentionMs).toISOString()
    delete job.etaSeconds
    await this.save(job)
    if (state === 'done') this.shared?.copyResult(job.jobId)
  }

  /** Whether another gateway gave up job `id` (its heartbeat from here had lapsed): the queue stops it. */
  lostTo (id: string): boolean { return this.lost.has(id) }

  /**
   * If another gateway gave up `job`, makes this gateway's record the failure it wrote (so that every gateway answers
   * the same) and deletes the job's input and result: true. Else false.
   */
  async settleLost (job: JobRecord): Promise<boolean> {
    const failed = this.lost.get(job.jobId)
    if (failed === undefined) return false
    this.lost.delete(job.jobId)
    await this.adopt(job, failed)
    return true
  }

  /** Postgres holds a failure another gateway wrote for our job `id`: a done job takes it now, one going on when it stops. */
  private onLost (id: string, failed: JobRecord): void {
    const job = this.jobs.get(id)
    if (job === undefined || job.state === 'failed') return
    if (job.state === 'done') this.adopt(job, failed).catch((err: Error) => { this.log.warn({ err, jobId: id }, 'could not record a scrub job failed by another gateway') })
    else this.lost.set(id, failed)
  }

  private async adopt (job: JobRecord, failed: JobRecord): Promise<void> {
    this.log.warn({ jobId: job.jobId, reason: failed.reason }, 'scrub job given up by another gateway (this one did not answer in time): failed here too')
    // The same object the upload route and the queue hold, with the failure's fields in the failure's order.
    const decisionLog = job.decisionLog
    const done = job.state === 'done'
    for (const k of Object.keys(job)) delete (job as unknown as Record<string, unknown>)[k]
    Object.assign(job, failed)
    // A done job's decisions were taken all the same: its result file stays until the decision log has them (and
    // the retention), though it is never served again.
    if (decisionLog !== undefined) job.decisionLog = decisionLog
    await this.writeLocal(job)
    await this.removeInput(job.jobId)
    if (!done) await this.removeTmpResult(job.jobId) // a run stopped half-way
  }

  /**
   * Deletes finished jobs past their retention; with Postgres, their shared copies too, and those of other gateways'
   * expired jobs (a gateway that is gone deletes nothing itself). Returns the jobs deleted here.
   */
  async sweep (now = Date.now()): Promise<number> {
    let n = 0
    const keep: string[] = []
    for (const job of [...this.jobs.values()]) {
      if (job.decisionLog?.state === 'pending') keep.push(job.jobId)
      if (job.expiresAt === undefined || Date.parse(job.expiresAt) > now) continue
      if (job.decisionLog?.state === 'pending') continue // its result file is what the decision log is written from
      await rm(join(this.dir, job.jobId), { recursive: true, force: true })
      this.jobs.delete(job.jobId)
      this.forget(job.jobId)
      n++
    }
    if (n > 0) this.log.info({ deleted: n }, 'scrub job retention')
    if (this.shared !== null) {
      try {
        const shared = await this.shared.sweep(now, keep)
        if (shared > 0) this.log.info({ deleted: shared }, 'scrub job retention in Postgres')
      } catch (err) {
        this.log.warn({ err }, 'scrub job retention in Postgres failed; retried at the next sweep')
      }
    }
    return n
  }

  private forget (id: string): void {
    this.saved.delete(id)
    const d = this.disk.get(id)
    if (d !== undefined) { this.used -= d.input + d.result; this.disk.delete(id); this.onUsage(this.used) }
  }
}

/** 503 for an upload naming its jobId while Postgres does not answer this gateway. */
export const namesNeedPostgres = (cause?: unknown): GatewayError => new GatewayError('DATABASE_UNAVAILABLE', {
  ...(cause !== undefined ? { cause } : {}),
  retryAfterS: 5,
  message: 'Postgres (DATABASE_URL) is not answering, and only it can tell whether another gateway holds this jobId: send the list again later, or without a jobId.'
})

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}
