// Scrub jobs shared through Postgres (with DATABASE_URL), so that any gateway behind a load balancer answers for any
// job: its status, and its result once it is done. The gateway that runs a job stays its only writer and keeps its
// files on its own disk, as without Postgres; this is a copy that lets the others answer. Decisions:
//
// - What is shared: the job's record as GET /v1/scrub/{jobId} answers it (`scrub_jobs.record`, json: kept as written,
//   so every gateway answers the same text), with the columns the queries need (state, tenant, expiry, the gateway
//   that runs it), and, once the job is done, its result file in 1 MiB bytea rows (`scrub_result_chunks`).
// - Off the scrub's path: the runner writes records and copies results from one background loop (kicked by every
//   save of a job, one write in flight, each write the job's record as last saved), never awaited by the upload, the
//   scrub or the runner's own answers. The runner answers for its jobs from memory (the record as last saved, not the
//   totals counting on between saves: so it answers what the others read) and serves their results from its disk, as
//   without Postgres; the others read Postgres. A running job's totals are those of its last save (every 2 s, and at
//   each change of state) on every gateway; the others see a save once its write has landed (milliseconds).
// - The result is copied right after the job is done, one chunk per statement (never the whole file in memory); the
//   copy waits while the runner itself is streaming a result from its disk (that download is what a client of the
//   runner waits for, and what the benchmark measures). Another gateway streams a done job's result as its chunks
//   arrive, so a download started there before the copy has finished runs at the copy's pace instead of failing.
// - A gateway is alive while its heartbeat lands (`scrub_gateways`, every 5 s). A job of a gateway silent for over
//   LEASE_MS (60 s: a dozen missed heartbeats, long past a GC pause or a busy pool) is failed by whichever gateway
//   looks at it: its input was on that machine and nobody else can run it. Only a gateway whose own heartbeats have
//   landed without a gap for at least as long may judge so: after a Postgres outage every gateway is silent, and the
//   first one back must not fail the jobs of the others, which are about to write again. One clock only, Postgres's
//   now(), so clock skew between machines does not count. A job failed so is failed for good: its gateway, back on
//   its folder, takes that failure and does not run it again (a failed state is never overwritten).
// - A gateway's identity is its scrub folder (SCRUB_DIR/.gateway-id): the folder holds the inputs and the results,
//   so a process restarted on it is the same runner, resumes its queued jobs and finishes copying its results.
// - Postgres away: the runner goes on as without it (uploads without a jobId are taken, jobs run, results are served
//   from its disk) and writes the records and results when Postgres is back. A jobId the client names must be unique
//   across gateways, which only Postgres can tell: such an upload is refused with 503 meanwhile.
// - Retention deletes the shared copy with the local one; any gateway deletes expired rows of a gateway that is gone.

import { hostname } from 'node:os'
import { open, stat } from 'node:fs/promises'
import type { QueryConfig } from 'pg'
import type { Logger } from 'pino'
import { GatewayError } from '../domain/errors.js'
import { isTransientDbError, type Pool } from '../store/pg.js'
import type { JobRecord, JobState } from './job-record.js'

/** How often a gateway says it is alive. */
export const HEARTBEAT_MS = 5000
/** A gateway silent for longer is gone: its unfinished jobs are failed by the others. */
export const LEASE_MS = 60_000
/** A heartbeat later than this after the one before starts a new streak (the gateway was cut off from Postgres). */
export const STREAK_GAP_MS = 3 * HEARTBEAT_MS
/** Size of each stored piece of a result (the last one is shorter). */
export const RESULT_CHUNK_BYTES = 1 << 20

const RETRY_MIN_MS = 1000
const RETRY_MAX_MS = 30_000
/** How often a download on another gateway looks for the next chunk of a result still being copied. */
const CHUNK_POLL_MS = 250
/** A result copy that makes no progress for this long (its gateway alive but not copying) ends such a download. */
const CHUNK_STALL_MS = 10 * 60_000
/** Gateways silent this long, with no job left, are forgotten. */
const FORGET_GATEWAY_DAYS = 7

const ACTIVE = `('uploading', 'queued', 'running')`
const ms = (n: number): string => `interval '${n} milliseconds'`

/**
 * True for a job `j` whose gateway is gone while the asking gateway ($1) is not: unfinished (or done with its result
 * not yet all copied), no heartbeat from its gateway for LEASE_MS, and the asker's own heartbeats landing without a
 * gap for at least as long (so Postgres was there all that time, and the silence is the other gateway's).
 */
const ORPHANED = `(j.gateway_id <> $1
    AND (j.state IN ${ACTIVE} OR (j.state = 'done' AND NOT j.result_stored))
    AND NOT EXISTS (SELECT 1 FROM scrub_gateways g WHERE g.gateway_id = j.gateway_id AND g.heartbeat_at >= now() - ${ms(LEASE_MS)})
    AND EXISTS (SELECT 1 FROM scrub_gateways me WHERE me.gateway_id = $1 AND me.heartbeat_at >= now() - ${ms(STREAK_GAP_MS)}
                AND me.streak_since <= now() - ${ms(LEASE_MS)}))`

const HEARTBEAT = `INSERT INTO scrub_gateways AS g (gateway_id, host) VALUES ($1, $2)
  ON CONFLICT (gateway_id) DO UPDATE SET host = EXCLUDED.host, heartbeat_at = now(),
    streak_since = CASE WHEN g.heartbeat_at >= now() - ${ms(STREAK_GAP_MS)} THEN g.streak_since ELSE now() END`

const CLAIM = `INSERT INTO scrub_jobs (job_id, gateway_id, iys_code, state, record, created_at, expires_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id) DO NOTHING RETURNING 1`

// The runner's write: never over another gateway's job (a jobId taken while Postgres was away) nor over a failure
// (its own is final, and one written by another gateway means the job was given up).
const PUT = `INSERT INTO scrub_jobs AS j (job_id, gateway_id, iys_code, state, record, created_at, expires_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
  ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record, expires_at = EXCLUDED.expires_at, updated_at = now()
    WHERE j.gateway_id = EXCLUDED.gateway_id AND j.state <> 'failed'
  RETURNING 1`

const PUT_CHUNK = `WITH c AS (
    INSERT INTO scrub_result_chunks (job_id, n, bytes) VALUES ($1, $2, $3)
    ON CONFLICT (job_id, n) DO UPDATE SET bytes = EXCLUDED.bytes RETURNING n)
  UPDATE scrub_jobs SET result_chunks = (SELECT n + 1 FROM c) WHERE job_id = $1 AND gateway_id = $4 AND state = 'done' RETURNING 1`

const STORED = `UPDATE scrub_jobs SET result_stored = true, result_chunks = $2 WHERE job_id = $1 AND gateway_id = $3 AND state = 'done' RETURNING 1`

/**
 * A result chunk's bytes as Postgres sends them in binary format: no hex text to encode there and decode here.
 * (`binary` is node-postgres's query option for binary results; its typings lack it, hence the assertion.)
 */
const readChunk = (id: string, n: number): QueryConfig => ({
  text: 'SELECT bytes FROM scrub_result_chunks WHERE job_id = $1 AND n = $2',
  values: [id, n],
  binary: true,
  types: { getTypeParser: () => (v: Buffer) => v }
} as QueryConfig)

export interface SharedJobsOptions {
  pool: Pool
  gatewayId: string
  retentionMs: number
  log: Logger
  /** this gateway's record of a job, or undefined when it has none */
  local: (id: string) => JobRecord | undefined
  /** the record of this gateway's job as last saved (job.json's text): what is written to Postgres */
  saved: (id: string) => string | undefined
  /** the ids of this gateway's jobs */
  localIds: () => Iterable<string>
  resultPath: (id: string) => string
  /** another gateway gave up this gateway's job (its heartbeat had lapsed): `record` is the failure it wrote */
  onLost: (id: string, record: JobRecord) => void
}

/**
 * A jobId a job of another gateway (or an earlier job here) holds in Postgres. JOB_EXISTS as it stands; the upload
 * route words its own answer from `record` (saying nothing of a job the caller may not see).
 */
export class JobTaken extends GatewayError {
  readonly record: JobRecord
  constructor (record: JobRecord) {
    super('JOB_EXISTS', { location: 'jobId', value: record.jobId, message: `A scrub job named ${record.jobId} exists already; choose another jobId.` })
    this.record = record
  }
}

export class SharedJobs {
  readonly gatewayId: string
  private readonly o: SharedJobsOptions
  private readonly host = hostname()
  /** jobs whose latest record is still to be written */
  private readonly dirty = new Set<string>()
  /** done jobs whose result is being copied: the next chunk to write */
  private readonly copies = new Map<string, number>()
  /** jobs this gateway keeps to itself: their jobId was taken in Postgres while it was away (see put) */
  private readonly localOnly = new Set<string>()
  private running: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  private backoffMs = RETRY_MIN_MS
  private downloads = 0
  private needsReconcile = true
  private started = false
  private stopped = false
  /** whether the last statement reached Postgres: while not, uploads do not wait for a claim */
  reachable = true

  constructor (o: SharedJobsOptions) {
    this.o = o
    this.gatewayId = o.gatewayId
  }

  /** Says this gateway is alive, and reads what Postgres holds of its jobs (both also retried later if Postgres is away). */
  async start (): Promise<void> {
    await this.heartbeat()
    this.heartbeatTimer = setInterval(() => { void this.heartbeat() }, HEARTBEAT_MS)
    this.heartbeatTimer.unref()
    if (this.reachable) await this.reconcile().catch(err => { this.failed(err, 'reading this gateway\'s scrub jobs from Postgres') })
    this.started = true
    this.kick()
  }

  /** Stops the heartbeat and the background writes (a write in flight finishes; the rest is done at the next start). */
  stop (): void {
    this.stopped = true
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer)
    if (this.timer !== null) clearTimeout(this.timer)
    this.heartbeatTimer = this.timer = null
  }

  private async heartbeat (): Promise<void> {
    try {
      await this.o.pool.query(HEARTBEAT, [this.gatewayId, this.host])
      const wasDown = !this.reachable
      this.reachable = true
      if (!wasDown) return
      this.o.log.info({ gatewayId: this.gatewayId }, 'Postgres answers scrub writes again')
      // What waited for it goes now rather than at the end of its back-off.
      if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; this.backoffMs = RETRY_MIN_MS; this.kick() }
    } catch (err) {
      this.failed(err, 'scrub heartbeat')
    }
  }

  /** A statement failed: Postgres away is said once (at debug level while it stays away), anything else each time. */
  private failed (err: unknown, what: string): void {
    const away = isTransientDbError(err)
    if (away && !this.reachable) { this.o.log.debug({ err }, `${what} failed; retrying`); return }
    if (away) this.reachable = false
    this.o.log.warn({ err, gatewayId: this.gatewayId }, `${what} failed; retrying (jobs go on here, and are written to Postgres when it answers)`)
  }

  /**
   * Takes `job.jobId` in Postgres for this gateway, with the job's first record. Throws JobTaken when another job
   * holds it, and the database's error when Postgres cannot say (the caller decides whether to go on without it).
   */
  async claim (job: JobRecord): Promise<void> {
    let r
    try {
      r = await this.o.pool.query(CLAIM, this.row(job))
    } catch (err) {
      if (isTransientDbError(err)) this.reachable = false
      throw err
    }
    this.reachable = true
    if (r.rowCount === 1) return
    const { rows } = await this.o.pool.query<{ record: JobRecord }>('SELECT record FROM scrub_jobs WHERE job_id = $1', [job.jobId])
    if (rows.length === 0) return this.claim(job) // deleted between the two (its retention): take it
    throw new JobTaken(rows[0]!.record)
  }

  /** The job's latest record is written in the background (now, or when Postgres is back). */
  touch (id: string): void {
    if (this.localOnly.has(id)) return
    this.dirty.add(id)
    this.kick()
  }

  /** A done job's result is copied to Postgres in the background, from chunk `from` on. */
  copyResult (id: string, from = 0): void {
    if (this.localOnly.has(id)) return
    this.copies.set(id, from)
    this.kick()
  }

  /** Brackets a result download from this gateway's disk: the result copy waits while one is going on. */
  downloadStarted (): void { this.downloads++ }
  downloadEnded (): void { this.downloads--; if (this.downloads === 0) this.kick() }

  /** The record of job `id` in Postgres (failed first if its gateway is gone), or undefined when there is none. */
  async get (id: string): Promise<JobRecord | undefined> {
    const { rows } = await this.o.pool.query<{ record: JobRecord, orphaned: boolean }>(
      `SELECT j.record, ${ORPHANED} AS orphaned FROM scrub_jobs j WHERE j.job_id = $2`, [this.gatewayId, id])
    const row = rows[0]
    if (row === undefined) return undefined
    return row.orphaned ? await this.failOrphan(row.record) : row.record
  }

  /** The records of one tenant's jobs in Postgres (orphans failed first). */
  async listTenant (iysCode: string): Promise<JobRecord[]> {
    const { rows } = await this.o.pool.query<{ record: JobRecord, orphaned: boolean }>(
      `SELECT j.record, ${ORPHANED} AS orphaned FROM scrub_jobs j WHERE j.iys_code = $2`, [this.gatewayId, iysCode])
    const out: JobRecord[] = []
    for (const row of rows) out.push(row.orphaned ? await this.failOrphan(row.record) : row.record)
    return out
  }

  /**
   * A done job's result from Postgres, chunk by chunk, in order (one chunk in memory at a time). While the gateway
   * that ran it is still copying it, waits for the next chunk; throws (the route's answer when no byte was sent yet)
   * when the job stops being done (its gateway went away before the copy ended: RESULT_NOT_READY with the failure;
   * the retention deleted it: NOT_FOUND) or the copy stalls for CHUNK_STALL_MS.
   */
  async * resultChunks (id: string): AsyncGenerator<Buffer> {
    let n = 0
    let lastProgress = Date.now()
    for (;;) {
      const { rows } = await this.o.pool.query<{ bytes: Buffer }>(readChunk(id, n))
      if (rows.length === 1) {
        n++
        lastProgress = Date.now()
        yield rows[0]!.bytes
        continue
      }
      const { rows: jobs } = await this.o.pool.query<{ record: JobRecord, state: JobState, stored: boolean, chunks: number, orphaned: boolean }>(
        `SELECT j.record, j.state, j.result_stored AS stored, j.result_chunks AS chunks, ${ORPHANED} AS orphaned FROM scrub_jobs j WHERE j.job_id = $2`, [this.gatewayId, id])
      const job = jobs[0]
      if (job === undefined) throw new GatewayError('NOT_FOUND', { message: 'No such scrub job (it passed its retention while its result was being read).' })
      const now = job.orphaned ? await this.failOrphan(job.record) : job.record
      if (now.state !== 'done') throw new GatewayError('RESULT_NOT_READY', { message: `The job is ${now.state}${now.reason !== undefined ? ': ' + now.reason : ''}; its result is served only when it is done.` })
      if (job.stored && n >= job.chunks) return
      if (job.chunks > n) continue // the chunk came in between the two reads
      if (Date.now() - lastProgress > CHUNK_STALL_MS) throw new GatewayError('RESULT_NOT_READY', { retryAfterS: 60, message: `The job is done, but its result has not been copied further for ${CHUNK_STALL_MS / 60_000} minutes to where this gateway can serve it; try again later.` })
      await new Promise(resolve => setTimeout(resolve, CHUNK_POLL_MS))
    }
  }

  /**
   * Retention in Postgres: gives up the jobs of gateways that are gone (so that they expire too), then deletes the
   * expired jobs and their results, except this gateway's jobs in `keep` (their decisions are not in the decision
   * log yet: audit/scrub-decisions.ts) and another gateway's in the same case while that gateway is alive.
   * Returns the jobs deleted.
   */
  async sweep (now: number, keep: readonly string[]): Promise<number> {
    const { rows } = await this.o.pool.query<{ record: JobRecord }>(`SELECT j.record FROM scrub_jobs j WHERE ${ORPHANED}`, [this.gatewayId])
    for (const row of rows) await this.failOrphan(row.record)
    const r = await this.o.pool.query(
      `DELETE FROM scrub_jobs j WHERE j.expires_at < $2 AND NOT (j.job_id = ANY($3::text[]))
         AND (j.gateway_id = $1 OR (j.record->'decisionLog'->>'state') IS DISTINCT FROM 'pending'
              OR NOT EXISTS (SELECT 1 FROM scrub_gateways g WHERE g.gateway_id = j.gateway_id AND g.heartbeat_at >= now() - ${ms(LEASE_MS)}))`,
      [this.gatewayId, new Date(now).toISOString(), keep])
    await this.o.pool.query(
      `DELETE FROM scrub_gateways g WHERE g.heartbeat_at < now() - interval '${FORGET_GATEWAY_DAYS} days'
         AND NOT EXISTS (SELECT 1 FROM scrub_jobs j WHERE j.gateway_id = g.gateway_id)`)
    return r.rowCount ?? 0
  }

  /** Forgets a job this gateway dropped as it was being created (its claim lost the jobId, or its folder failed). */
  forget (id: string): void {
    this.dirty.delete(id)
    this.copies.delete(id)
  }

  /** Deletes this gateway's job `id` from Postgres (claimed, then not created here after all). */
  async drop (id: string): Promise<void> {
    this.forget(id)
    await this.o.pool.query('DELETE FROM scrub_jobs WHERE job_id = $1 AND gateway_id = $2', [id, this.gatewayId])
  }

  /** The parameters of CLAIM and PUT for `job` (as `text`, its JSON). */
  private row (job: JobRecord, text = JSON.stringify(job)): unknown[] {
    return [job.jobId, this.gatewayId, job.owner?.iysCode ?? null, job.state, text, job.createdAt, job.expiresAt ?? null]
  }

  /**
   * Fails the job of a gateway that is gone, if it still is (the same test in the UPDATE: two gateways may find it at
   * once, or its gateway may be back), and returns the record Postgres holds now.
   */
  private async failOrphan (record: JobRecord): Promise<JobRecord> {
    const failed: JobRecord = { ...record }
    const now = Date.now()
    failed.state = 'failed'
    failed.reason = record.state === 'done'
      ? `the gateway that ran this job stopped (no sign of it for over ${LEASE_MS / 1000} s) before its result was copied where every gateway can serve it; send the list again`
      : `the gateway that was running this job stopped (no sign of it for over ${LEASE_MS / 1000} s) before the job finished, and the list was on that gateway; send it again`
    failed.finishedAt = new Date(now).toISOString()
    failed.expiresAt = new Date(now + this.o.retentionMs).toISOString()
    delete failed.etaSeconds
    const r = await this.o.pool.query<{ record: JobRecord }>(
      `UPDATE scrub_jobs j SET state = 'failed', record = $3, expires_at = $4, updated_at = now() WHERE j.job_id = $2 AND ${ORPHANED} RETURNING j.record`,
      [this.gatewayId, record.jobId, JSON.stringify(failed), failed.expiresAt])
    if (r.rows.length === 1) {
      this.o.log.warn({ jobId: record.jobId, state: record.state }, 'scrub job failed: the gateway running it stopped answering')
      return r.rows[0]!.record
    }
    const { rows } = await this.o.pool.query<{ record: JobRecord }>('SELECT record FROM scrub_jobs WHERE job_id = $1', [record.jobId])
    return rows[0]?.record ?? failed
  }

  /**
   * Compares this gateway's jobs with what Postgres holds of them: registers what it lacks (jobs from before, or
   * created while Postgres was away), takes the failures other gateways wrote, resumes result copies, and fails its
   * unfinished jobs whose files this gateway no longer has.
   */
  private async reconcile (): Promise<void> {
    const { rows } = await this.o.pool.query<{ job_id: string, state: JobState, record: JobRecord, stored: boolean, chunks: number, text: string }>(
      'SELECT job_id, state, record, record::text AS text, result_stored AS stored, result_chunks AS chunks FROM scrub_jobs WHERE gateway_id = $1', [this.gatewayId])
    this.needsReconcile = false
    const shared = new Map(rows.map(r => [r.job_id, r]))
    for (const r of rows) {
      const job = this.o.local(r.job_id)
      if (job === undefined && (r.state === 'uploading' || r.state === 'queued' || r.state === 'running')) {
        const failed: JobRecord = { ...r.record, state: 'failed', reason: 'the gateway running this job lost its files before the job finished; send the list again', finishedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + this.o.retentionMs).toISOString() }
        delete failed.etaSeconds
        await this.o.pool.query(`UPDATE scrub_jobs SET state = 'failed', record = $3, expires_at = $4 WHERE job_id = $1 AND gateway_id = $2 AND state IN ${ACTIVE}`, [r.job_id, this.gatewayId, JSON.stringify(failed), failed.expiresAt])
      } else if (job !== undefined && r.state === 'failed' && job.state !== 'failed') this.o.onLost(r.job_id, r.record)
    }
    for (const id of [...this.o.localIds()]) {
      const job = this.o.local(id)!
      const r = shared.get(id)
      if (r?.state === 'failed' && job.state !== 'failed') continue // taken above
      if (r === undefined || r.text !== this.o.saved(id)) this.dirty.add(id)
      if (job.state === 'done' && r?.stored !== true) this.copies.set(id, r?.chunks ?? 0)
    }
  }

  private kick (): void {
    if (this.running !== null || this.timer !== null || this.stopped || !this.started) return
    this.running = this.drain().finally(() => { this.running = null })
  }

  /** Writes dirty records first, then copies results one chunk per round, so a state change never waits behind a copy. */
  private async drain (): Promise<void> {
    try {
      while (!this.stopped) {
        if (this.needsReconcile) { await this.reconcile(); continue }
        const id = first(this.dirty)
        if (id !== undefined) {
          this.dirty.delete(id)
          try { await this.put(id) } catch (err) { this.dirty.add(id); throw err }
          continue
        }
        const copy = first(this.copies.keys())
        if (copy === undefined) return
        if (this.downloads > 0) { this.retryIn(200, false); return } // a download from this disk goes first
        await this.copyChunk(copy)
      }
    } catch (err) {
      this.failed(err, 'writing scrub jobs to Postgres')
      this.retryIn(this.backoffMs, true)
    }
  }

  private retryIn (delayMs: number, backoff: boolean): void {
    if (this.stopped) return
    if (backoff) this.backoffMs = Math.min(this.backoffMs * 2, RETRY_MAX_MS)
    this.timer = setTimeout(() => { this.timer = null; this.kick() }, delayMs)
    this.timer.unref()
  }

  /**
   * Writes job `id`'s record as last saved (the scrub goes on counting in memory meanwhile: the text saved, and not
   * the object now, is what every gateway answers, this one too); learns here that its jobId is another gateway's,
   * or that the job was given up.
   */
  private async put (id: string): Promise<void> {
    const text = this.o.saved(id)
    const job = this.o.local(id)
    if (text === undefined || job === undefined || this.localOnly.has(id)) return
    const r = await this.o.pool.query(PUT, this.row(JSON.parse(text) as JobRecord, text))
    this.reachable = true
    this.backoffMs = RETRY_MIN_MS
    if (r.rowCount === 1) return
    const { rows } = await this.o.pool.query<{ gateway_id: string, record: JobRecord }>('SELECT gateway_id, record FROM scrub_jobs WHERE job_id = $1', [id])
    const row = rows[0]
    if (row === undefined) return
    if (row.gateway_id !== this.gatewayId) {
      // Only a job created while Postgres was away, or one from before jobs were shared, can meet another's jobId.
      this.localOnly.add(id)
      this.copies.delete(id)
      this.o.log.warn({ jobId: id }, 'scrub job kept on this gateway only: another gateway holds its jobId in Postgres')
    } else if (row.record.state === 'failed' && job.state !== 'failed') {
      this.copies.delete(id)
      this.o.onLost(id, row.record)
    }
  }

  /** Copies the next chunk of a done job's result; the last one marks the result stored. */
  private async copyChunk (id: string): Promise<void> {
    const n = this.copies.get(id)!
    const job = this.o.local(id)
    if (job === undefined || job.state !== 'done') { this.copies.delete(id); return }
    const path = this.o.resultPath(id)
    let size: number
    try { size = (await stat(path)).size } catch (err) {
      this.copies.delete(id)
      this.o.log.warn({ err, jobId: id }, 'scrub result not copied to Postgres: the file cannot be read')
      return
    }
    const chunks = Math.max(1, Math.ceil(size / RESULT_CHUNK_BYTES))
    if (n < chunks) {
      const bytes = Buffer.allocUnsafe(Math.min(RESULT_CHUNK_BYTES, size - n * RESULT_CHUNK_BYTES))
      const fh = await open(path, 'r')
      try {
        const { bytesRead } = await fh.read(bytes, 0, bytes.length, n * RESULT_CHUNK_BYTES)
        if (bytesRead !== bytes.length) throw new Error(`scrub result ${id} shrank while being copied`)
      } finally { await fh.close() }
      const r = await this.o.pool.query(PUT_CHUNK, [id, n, bytes, this.gatewayId])
      this.backoffMs = RETRY_MIN_MS
      if (r.rowCount !== 1) { this.copies.delete(id); this.touch(id); return } // no longer done there: put() tells why
      if (this.copies.has(id)) this.copies.set(id, n + 1)
      return
    }
    const r = await this.o.pool.query(STORED, [id, chunks, this.gatewayId])
    this.copies.delete(id)
    if (r.rowCount !== 1) { this.touch(id); return }
    this.o.log.info({ jobId: id, bytes: size, chunks }, 'scrub result copied to Postgres')
  }
}

function first<T> (it: Iterable<T>): T | undefined {
  for (const x of it) return x
  return undefined
}
