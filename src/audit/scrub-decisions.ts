// A scrub job's decisions in the decision log. A job decides millions of lines: they do not go through the
// per-request journal (one write() per request, shipped in 10,000-line segments) but as large batches, built by the
// scrub workers as COPY text (scrub/chunk.ts) and handed over here chunk by chunk, duplicates left out (a repeated
// recipient is no new decision: its first line carries it).
//
// Each batch (BATCH_ROWS rows) is written whole to the decision spool folder (`scrub-<job>-<run>-<n>.tsv`, fsynced,
// renamed into place): a job is done only once each of its batches is there, so nothing of a served result is
// missing from the log. The decision log ships these files to the `decisions` table (COPY, batch id in
// `decision_batches`, exactly once), like any other spooled batch — but not while a scrub runs (DecisionLog
// holdScrubBatches): writing a row to Postgres costs about as much CPU as scrubbing its line (the recipient index),
// and on a gateway that shares its cores with Postgres a scrub that wrote as it went ran at a third of its speed
// (README, Benchmarks). A batch held longer than SCRUB_HOLD_MAX_MS is shipped anyway, so back-to-back jobs cannot
// grow the spool without end. A batch the local disk refuses fails the job: its result, whose decisions were not
// recorded, is never served.

import type { ScrubLogFormat } from '../scrub/chunk.js'
import type { ScrubParams } from '../scrub/jobs.js'
import { SCRUB_PREFIX } from './copy-text.js'
import type { DecisionLog } from './decision-log.js'

/** Rows per batch: about 6 MB of COPY text, fsynced once. */
export const BATCH_ROWS = 50_000
/** Batches being written to the spool before the scrub waits for the local disk. */
const MAX_PENDING = 4

/** What the writer needs of the decision log (DecisionLog implements it). */
export type ScrubDecisionTarget = Pick<DecisionLog, 'spoolScrubBatch' | 'holdScrubBatches'>

/** A run's decisions: rows in all, in how many batches (each a file in the decision spool until it is in Postgres). */
export interface ScrubLogTotals {
  rows: number
  batches: number
}

export class ScrubDecisionWriter {
  private readonly target: ScrubDecisionTarget
  private readonly batchPrefix: string
  private readonly batchRows: number
  private parts: string[] = []
  private rows = 0
  private batchNo = 0
  private readonly pending = new Set<Promise<void>>()
  private failure: Error | null = null
  readonly totals: ScrubLogTotals = { rows: 0, batches: 0 }

  /** `batchPrefix`: unique per run of a job (scrubBatchPrefix), so each batch id is written once. */
  constructor (target: ScrubDecisionTarget, batchPrefix: string, batchRows = BATCH_ROWS) {
    this.target = target
    this.batchPrefix = batchPrefix
    this.batchRows = batchRows
  }

  /** Takes `rows` complete COPY lines; a full batch is written to the spool (not awaited: see ready()). */
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

  /** Writes the last batch and waits until every batch is in the spool; throws if one could not be written. */
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
    this.totals.batches++
    const p: Promise<void> = this.target.spoolScrubBatch(id, text)
      .catch((err: Error) => { this.failure ??= new Error(`the job's decisions could not be logged (the decision spool refused a batch): ${err.message}`, { cause: err }) })
      .finally(() => { this.pending.delete(p) })
    this.pending.add(p)
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
