// A scrub job's decisions in the decision log, written from the job's result file once the job is done.
//
// Why from the result file, and not as the scrub goes: the result already holds every line's recipient, normalised
// form and decision, on local disk. Building decision rows beside it (in the workers, copied to the main thread,
// written to disk again) added 35–70 % to the gateway's CPU for a scrub in an A/B of 2,000,000 lines (2026-12-07),
// so the scrub's own path now only counts decisions per chunk (metrics). Here the file is streamed to Postgres as it
// is (COPY … CSV into a temporary table; no parsing in the gateway), and one INSERT … SELECT adds the job's columns
// and the ledger entry each CONSENT or REJECTED relied on: the key's last change of that status received by the time
// the job finished. DUPLICATE lines are left out: their first occurrence carries the decision.
//
// Exactly once: the rows commit together with the claim of the job's batch id in decision_batches, so a retry after
// an answer that never came back finds the claim and writes nothing. Nothing is lost when Postgres is away: the job is
// done and served, its decision log stays 'pending' in job.json, the result file is kept past its retention until the
// rows are written (ScrubJobs.sweep), and the write is retried with back-off, and again at the next start.

import { createReadStream } from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import copyStreams from 'pg-copy-streams'
import { inTransaction, type Pool } from '../store/pg.js'

const RETRY_MIN_MS = 1000
const RETRY_MAX_MS = 60_000

// RESULT_HEADER's columns (scrub/engine.ts), in its order.
const STAGE = `CREATE TEMP TABLE scrub_result (recipient text, normalized text, allowed boolean, reason text, line bigint, duplicate_of bigint) ON COMMIT DROP`

const INSERT = `INSERT INTO decisions (decided_at, source, iys_code, brand_code, type, recipient_type, recipient, normalized, commercial, allowed, reason, consent_seq, job_id)
  SELECT $1, 'scrub', $2, $3, $4, $5, coalesce(r.recipient, ''), r.normalized, $6, r.allowed, r.reason, h.seq, $7
    FROM scrub_result r
    LEFT JOIN LATERAL (
      SELECT seq FROM consent_history h
       WHERE r.reason IN ('CONSENT', 'REJECTED') AND h.brand_code = $3 AND h.type = $4 AND h.recipient_type = $5
         AND h.recipient = r.normalized AND h.status = CASE r.reason WHEN 'REJECTED' THEN 'RET' ELSE 'ONAY' END
         AND h.received_at <= $1
       ORDER BY h.seq DESC LIMIT 1) h ON true
   WHERE r.reason <> 'DUPLICATE'`

/** Where a done job's decisions are: not yet in Postgres, or written (with how many rows). */
export type ScrubDecisionLogState = { state: 'pending' } | { state: 'written', rows: number }

/** What this module reads of a scrub job (scrub/jobs.ts JobRecord has it; named by shape, as scrub/ sits above audit/). */
export interface LoggedJob {
  readonly jobId: string
  readonly startedAt?: string
  readonly finishedAt?: string
  readonly owner?: { readonly iysCode: string }
  readonly params: { readonly brandCode: string, readonly type: string, readonly recipientType: string, readonly commercial: boolean }
  decisionLog?: ScrubDecisionLogState
}

/** The batch id of one run of a job (a job run again after a restart is a new run, with decisions of its own). */
export const scrubBatchId = (job: LoggedJob): string => `scrub-${job.jobId}-${Date.parse(job.startedAt ?? '').toString(36)}`

export interface ScrubDecisionLogOptions {
  pool: Pool
  log: Logger
  /** creates the decision log's partition for a moment if it is missing (DecisionLog.partitionFor) */
  partitionFor: (ms: number) => Promise<void>
  /** rows written to Postgres (iys_decision_log_written_total) */
  onWritten?: (rows: number) => void
}

/** A job whose decisions are waiting to be written, and how to record that they were. */
interface Pending {
  job: LoggedJob
  resultPath: string
  save: () => Promise<void>
}

export class ScrubDecisionLog {
  private readonly opts: ScrubDecisionLogOptions
  private readonly queue: Pending[] = []
  private running: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private backoffMs = RETRY_MIN_MS
  private stopped = false

  constructor (opts: ScrubDecisionLogOptions) {
    this.opts = opts
  }

  /** Writes a done job's decisions (now, or after those queued before it); marks the job 'pending' until then. */
  enqueue<J extends LoggedJob> (job: J, resultPath: string, save: (job: J) => Promise<void>): void {
    if (job.decisionLog?.state === 'written') return
    job.decisionLog = { state: 'pending' }
    this.queue.push({ job, resultPath, save: () => save(job) })
    this.kick()
  }

  private kick (): void {
    if (this.running !== null || this.timer !== null || this.stopped) return
    this.running = this.drain().finally(() => { this.running = null })
  }

  private async drain (): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      const p = this.queue[0]!
      try {
        const rows = await this.write(p.job, p.resultPath)
        p.job.decisionLog = { state: 'written', rows }
        await p.save()
        this.queue.shift()
        this.backoffMs = RETRY_MIN_MS
      } catch (err) {
        // Postgres away (or the file unreadable): everything waits, in order, and is tried again.
        this.opts.log.warn({ err, jobId: p.job.jobId, retryInMs: this.backoffMs }, 'scrub decisions not written to the decision log yet; retrying')
        this.timer = setTimeout(() => { this.timer = null; this.kick() }, this.backoffMs)
        this.timer.unref()
        this.backoffMs = Math.min(this.backoffMs * 2, RETRY_MAX_MS)
        return
      }
    }
  }

  /** The rows of one job, in one transaction with the claim of its batch id; 0 rows if that was written before. */
  private async write (job: LoggedJob, resultPath: string): Promise<number> {
    const decidedAt = job.finishedAt ?? new Date().toISOString()
    await this.opts.partitionFor(Date.parse(decidedAt))
    const { params } = job
    const rows = await inTransaction(this.opts.pool, async client => {
      const claim = await client.query('INSERT INTO decision_batches (batch_id, rows) VALUES ($1, 0) ON CONFLICT DO NOTHING', [scrubBatchId(job)])
      if (claim.rowCount === 0) return null // committed by an earlier attempt whose answer was lost
      await client.query(STAGE)
      await pipeline(createReadStream(resultPath), new NulToReplacement(), client.query(copyStreams.from('COPY scrub_result FROM STDIN WITH (FORMAT csv, HEADER true)')))
      const r = await client.query(INSERT, [decidedAt, job.owner?.iysCode ?? null, params.brandCode, params.type, params.recipientType, params.commercial, job.jobId])
      await client.query('UPDATE decision_batches SET rows = $2 WHERE batch_id = $1', [scrubBatchId(job), r.rowCount ?? 0])
      return r.rowCount ?? 0
    })
    if (rows === null) {
      const { rows: claimed } = await this.opts.pool.query<{ rows: number }>('SELECT rows FROM decision_batches WHERE batch_id = $1', [scrubBatchId(job)])
      return claimed[0]?.rows ?? 0
    }
    this.opts.onWritten?.(rows)
    this.opts.log.info({ jobId: job.jobId, rows }, 'scrub decisions written to the decision log')
    return rows
  }

  /** Stops retrying; a write in progress finishes (or fails and is retried at the next start). */
  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await this.running
  }
}

/**
 * A result line shows a malformed input line as it was, and Postgres's text cannot hold a NUL byte: each becomes
 * U+FFFD on its way (the bytes are passed through untouched when there is none, which is nearly always).
 */
class NulToReplacement extends Transform {
  override _transform (chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (chunk.indexOf(0) === -1) { done(null, chunk); return }
    const parts: Buffer[] = []
    let from = 0
    for (let at = chunk.indexOf(0); at !== -1; at = chunk.indexOf(0, from)) {
      parts.push(chunk.subarray(from, at), REPLACEMENT)
      from = at + 1
    }
    parts.push(chunk.subarray(from))
    done(null, Buffer.concat(parts))
  }
}

const REPLACEMENT = Buffer.from('\uFFFD', 'utf8')
