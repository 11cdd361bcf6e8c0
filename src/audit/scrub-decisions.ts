// A scrub job's decisions in the decision log. A job decides millions of lines: they do not go through the
// per-request journal (one write() per request, shipped in 10,000-line segments) but as large batches, built by the
// scrub workers as COPY text (scrub/chunk.ts) and handed over here chunk by chunk, duplicates left out (a repeated
// recipient is no new decision: its first line carries it).
//
// Each batch (BATCH_ROWS rows) is COPYed straight into the `decisions` table with its batch id in `decision_batches`,
// in one transaction, off the scrub's path: the scrub never waits for Postgres. When Postgres cannot take a batch now
// (away, slow: more than MAX_DIRECT batches already on their way, or it refused the last one), the batch is written
// whole to the decision spool folder instead (`scrub-<job>-<run>-<n>.tsv`, fsynced, renamed into place) and the
// decision log ships it later with its other spooled batches, exactly once (the same batch id). A job is done only
// once each of its batches is in Postgres or in the spool: nothing of a served result is missing from the log. A
// batch that can be neither written nor spooled (the local disk refuses it too) fails the job: its result, whose
// decisions were not recorded, is never served.

import type { ScrubLogFormat } from '../scrub/chunk.js'
import type { ScrubParams } from '../scrub/jobs.js'
import { SCRUB_PREFIX } from './copy-text.js'
import type { DecisionLog } from './decision-log.js'

/** Rows per batch: large enough that a transaction per batch costs nothing, small enough to hold two in memory. */
export const BATCH_ROWS = 50_000
/** Batches COPYed at once; more waiting go to the spool rather than hold memory or the scrub. */
const MAX_DIRECT = 2
/** Batches on their way (being COPYed or spooled) before the scrub waits for the local disk. */
const MAX_PENDING = 4
/** After a batch Postgres did not take, the next ones go straight to the spool for this long. */
const AWAY_MS = 1000

/** What the writer needs of the decision log (DecisionLog implements it). */
export type ScrubDecisionTarget = Pick<DecisionLog, 'writeScrubBatch' | 'spoolScrubBatch' | 'postgresAway'>

/** Where a run's decisions went: rows in all, rows COPYed during the run, rows left in the spool for the shipper. */
export interface ScrubLogTotals {
  rows: number
  written: number
  spooled: number
}

export class ScrubDecisionWriter {
  private readonly target: ScrubDecisionTarget
  private readonly batchPrefix: string
  private readonly batchRows: number
  private parts: string[] = []
  private rows = 0
  private batchNo = 0
  private direct = 0
  private awayUntil = 0
  private readonly pending = new Set<Promise<void>>()
  private failure: Error | null = null
  readonly totals: ScrubLogTotals = { rows: 0, written: 0, spooled: 0 }

  /** `batchPrefix`: unique per run of a job (scrubBatchPrefix), so each batch id is written once. */
  constructor (target: ScrubDecisionTarget, batchPrefix: string, batchRows = BATCH_ROWS) {
    this.target = target
    this.batchPrefix = batchPrefix
    this.batchRows = batchRows
  }

  /** Takes `rows` complete COPY lines; a full batch is sent on its way (not awaited). */
  add (text: string, rows: number): void {
    if (rows === 0) return
    if (this.failure !== null) throw this.failure
    this.parts.push(text)
    this.rows += rows
    if (this.rows >= this.batchRows) this.seal()
  }

  /** Resolves when the scrub may go on: fewer than MAX_PENDING batches on their way (the local disk keeps up). */
  async ready (): Promise<void> {
    while (this.pending.size >= MAX_PENDING) await Promise.race(this.pending)
    if (this.failure !== null) throw this.failure
  }

  /** Sends the last batch and waits until every batch is in Postgres or in the spool; throws if one is in neither. */
  async finish (): Promise<ScrubLogTotals> {
    if (this.rows > 0) this.seal()
    while (this.pending.size > 0) await Promise.all(this.pending)
    if (this.failure !== null) throw this.failure
    return this.totals
  }

  private seal (): void {
    const text = this.parts.length === 1 ? this.parts[0]! : this.parts.join('')
    const rows = this.rows
    this.parts = []
    this.rows = 0
    this.totals.rows += rows
    const id = `${this.batchPrefix}-${String(++this.batchNo).padStart(6, '0')}`
    const p: Promise<void> = this.place(id, text, rows)
      .catch((err: Error) => { this.failure ??= new Error(`the job's decisions could not be logged (Postgres and the decision spool both refused a batch): ${err.message}`, { cause: err }) })
      .finally(() => { this.pending.delete(p) })
    this.pending.add(p)
  }

  private async place (id: string, text: string, rows: number): Promise<void> {
    if (this.direct < MAX_DIRECT && Date.now() >= this.awayUntil && !this.target.postgresAway) {
      this.direct++
      try {
        await this.target.writeScrubBatch(id, text, rows)
        this.totals.written += rows
        return
      } catch {
        // Away, or refusing the table's batches: to the spool, whose shipper retries it (and logs why).
        this.awayUntil = Date.now() + AWAY_MS
      } finally {
        this.direct--
      }
    }
    await this.target.spoolScrubBatch(id, text, rows)
    this.totals.spooled += rows
  }
}

/** The batch ids of one run of a job: `scrub-<jobId>-<run>` (a job run again after a restart is a new run). */
export const scrubBatchPrefix = (jobId: string, runStartedMs: number): string => `${SCRUB_PREFIX}${jobId}-${runStartedMs.toString(36)}`

/**
 * The constant parts of a job's decision rows (SCRUB_COLUMNS), around what the workers fill in per line: source
 * `scrub`, the owner's iysCode, brand, type, recipient type; no message, carrier status or carrier id; the job id.
 * Every value here is validated before a job exists (digits, enums, JOB_ID): nothing to escape.
 */
export function scrubLogFormat (jobId: string, iysCode: string | null, params: ScrubParams): ScrubLogFormat {
  return {
    head: `\tscrub\t${iysCode ?? '\\N'}\t${params.brandCode}\t${params.type}\t${params.recipientType}\t`,
    tail: `\t\\N\t\\N\t\\N\t${jobId}\n`
  }
}
