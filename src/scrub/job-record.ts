// A scrub job's record: what GET /v1/scrub/{jobId} answers, what jobs.ts keeps on disk and shared.ts in Postgres.
// Types only (and the empty totals), so that both stores take them from here and neither from the other.

import type { ConsentType, RecipientType } from '../domain/vocabulary.js'
import type { ScrubDecisionLogState } from '../audit/scrub-decisions.js'
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

export const emptyTotals = (): ScrubTotals => ({ read: 0, checked: 0, allowed: 0, blocked: 0, invalid: 0, duplicates: 0, tooLong: 0, blockedByReason: {} })
