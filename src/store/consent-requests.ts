// İYS's asynchronous multiple-consent request (POST .../consents/request): the request is stored and answered at
// once with a requestId; a processor applies it in the background. Claiming a request (FOR UPDATE SKIP LOCKED),
// writing its consents and storing the per-item results happen in one transaction, so a request is applied
// exactly once even with several gateways, and one left pending by a crash is picked up at the next start.
// Items are written as the mirrored API's single writes are (mirrored-writes.ts: İYS's TACIR update rules; for a v2
// request, a consent re-sent as it was first written is answered with that first write).

import { randomBytes, randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { ERRORS, type ErrorItem } from '../domain/errors.js'
import type { ValidConsent } from '../domain/consent.js'
import { formatIysDate } from '../domain/time.js'
import { writeMirroredTx, type Origin } from './mirrored-writes.js'
import { NOTHING_OMITTED, type Omitted } from '../domain/iys-validation.js'
import { inTransaction, isTransientDbError } from './pg.js'
import { Drainer, failureReason, MAX_ATTEMPTS, type Backlog } from './drainer.js'
import type { Pool } from './pg.js'

// omitted and fingerprint: from the mirrored routes' validation (absent in requests stored before migration 8).
interface StoredItem { consent: ValidConsent, subRequestId: string, omitted?: Omitted, fingerprint?: string }
// original: a v2 request's item that re-sent a consent already written (İYS's originalRequestInformation).
interface StoredResult { status: 'success' | 'failure', transactionId?: string, creationDate?: string, error?: { code: string, message: string }, original?: Origin }

export interface SubRequest {
  subRequestId: string
  recipient: string
  recipientType: string
  type: string
  status: string
  /** left out for a TACIR consent sent without one */
  source?: string
  /** left out for a TACIR consent sent without one */
  consentDate?: string
  creationDate: string
}

export interface RequestOptions {
  /** POST /v2/…/consents/request: re-sent consents are answered with where they were first written */
  v2?: boolean
  /** per consent, from domain/iys-validation.ts: the TACIR fields left out, and the fingerprint v2 compares */
  extras?: readonly { omitted: Omitted, fingerprint: string }[]
}

/** İYS-style request id: 32 hex characters. */
const newRequestId = (): string => randomBytes(16).toString('hex')

export async function createRequest (pool: Pool, iysCode: string, brandCode: string, consents: ValidConsent[], actor: string | null, opts: RequestOptions = {}): Promise<{ requestId: string, subRequests: SubRequest[] }> {
  const requestId = newRequestId()
  const creationDate = formatIysDate(Math.floor(Date.now() / 1000))
  const items: StoredItem[] = consents.map((consent, i) => ({ consent, subRequestId: randomUUID(), ...opts.extras?.[i] }))
  await pool.query('INSERT INTO consent_requests (request_id, iys_code, brand_code, actor, items, v2) VALUES ($1, $2, $3, $4, $5, $6)',
    [requestId, iysCode, brandCode, actor, JSON.stringify(items), opts.v2 === true])
  return {
    requestId,
    subRequests: items.map(({ consent: c, subRequestId, omitted }) => ({
      subRequestId, recipient: c.recipient, recipientType: c.recipientType, type: c.type, status: c.status,
      ...(omitted?.source === true ? {} : { source: c.source }),
      ...(omitted?.consentDate === true ? {} : { consentDate: formatIysDate(c.consentDate) }),
      creationDate
    }))
  }
}

/**
 * İYS's answer to GET .../consents/request/{requestId}: one entry per item, `enqueue` while not yet applied. `v2`
 * (GET /v2/…): an item that re-sent a consent already written says where it was (isAddConsentV2Service: first
 * written by POST /v2/…/consents; originalRequestInformation: the request and item that wrote it); v1 leaves it out.
 */
export async function requestResults (pool: Pool, iysCode: string, brandCode: string, requestId: string, v2 = false): Promise<unknown[]> {
  const { rows } = await pool.query<{ items: StoredItem[], results: StoredResult[] | null }>(
    'SELECT items, results FROM consent_requests WHERE request_id = $1 AND iys_code = $2 AND brand_code = $3',
    [requestId, iysCode, brandCode])
  const row = rows[0]
  if (row === undefined) return []
  return row.items.map((item, index) => {
    const r = row.results?.[index]
    if (r === undefined) return { requestId, subRequestId: item.subRequestId, index, status: 'enqueue' }
    const { original, ...result } = r
    if (!v2 || original === undefined) return { requestId, subRequestId: item.subRequestId, index, ...result }
    return {
      requestId,
      subRequestId: item.subRequestId,
      index,
      ...result,
      isAddConsentV2Service: original.v2Single,
      ...(original.requestId !== null ? { originalRequestInformation: { requestId: original.requestId, subRequestId: original.subRequestId } } : {})
    }
  })
}

/** Pending requests and the age of the oldest; reads the partial index of pending requests only. */
export async function requestBacklog (pool: Pool): Promise<Backlog> {
  const { rows } = await pool.query<{ n: string, age: number | null }>(
    'SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age FROM consent_requests WHERE done_at IS NULL')
  return { pending: Number(rows[0]!.n), oldestSeconds: Math.max(0, rows[0]!.age ?? 0) }
}

/**
 * Applies pending requests in the background; `kick()` after storing one, and once at start-up. A request whose
 * processing throws for any reason but a database outage is retried a few times (with the drainer's back-off) and
 * then closed: every item answered as failed with H015, the reason kept in failed_reason. It never blocks the rest.
 */
export class RequestProcessor {
  private readonly pool: Pool
  private readonly log: Logger
  private readonly onFailed: (() => void) | undefined
  readonly drainer: Drainer

  constructor (pool: Pool, log: Logger, opts: { onFailed?: () => void } = {}) {
    this.pool = pool
    this.log = log
    this.onFailed = opts.onFailed
    this.drainer = new Drainer('consent request processing', () => this.processOne(), log)
  }

  private async processOne (): Promise<boolean> {
    let claimed: { request_id: string, attempts: number, n: number } | null = null
    try {
      return await inTransaction(this.pool, async client => {
        const { rows } = await client.query<{ request_id: string, items: StoredItem[], actor: string | null, attempts: number, v2: boolean }>(
          'SELECT request_id, items, actor, attempts, v2 FROM consent_requests WHERE done_at IS NULL ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED')
        const req = rows[0]
        if (req === undefined) return false
        claimed = { request_id: req.request_id, attempts: req.attempts, n: Array.isArray(req.items) ? req.items.length : 0 }
        const outcomes = await writeMirroredTx(client, req.items.map(i => ({
          consent: i.consent,
          omitted: i.omitted ?? NOTHING_OMITTED,
          fingerprint: i.fingerprint ?? null,
          v2: req.v2,
          origin: { requestId: req.request_id, subRequestId: i.subRequestId, v2Single: false },
          actor: req.actor
        })))
        const results: StoredResult[] = outcomes.map(o => {
          if (o.status === 'applied') return { status: 'success', transactionId: o.transactionId, creationDate: formatIysDate(o.creationDate) }
          if (o.status === 'repeated') return { status: 'success', transactionId: o.transactionId, creationDate: formatIysDate(o.creationDate), original: o.original }
          // İYS's result item carries one error: the first that applies.
          const error: ErrorItem = o.errors[0]!
          return { status: 'failure', error: { code: error.code, message: error.message } }
        })
        await client.query('UPDATE consent_requests SET results = $2, done_at = now() WHERE request_id = $1', [req.request_id, JSON.stringify(results)])
        return true
      })
    } catch (err) {
      const req = claimed as { request_id: string, attempts: number, n: number } | null
      if (req === null || isTransientDbError(err)) throw err
      return this.recordFailure(req, err)
    }
  }

  /** Counts a failed attempt; at MAX_ATTEMPTS closes the request (true: go on), before that throws (back-off). */
  private async recordFailure (req: { request_id: string, attempts: number, n: number }, err: unknown): Promise<boolean> {
    const reason = failureReason(err)
    const attempts = req.attempts + 1
    const give = attempts >= MAX_ATTEMPTS
    const failed: StoredResult = { status: 'failure', error: { code: 'H015', message: ERRORS.H015.message } }
    await this.pool.query(
      `UPDATE consent_requests SET attempts = $2, failed_reason = $3${give ? ', done_at = now(), results = $4' : ''} WHERE request_id = $1 AND done_at IS NULL`,
      give ? [req.request_id, attempts, reason, JSON.stringify(new Array(req.n).fill(failed))] : [req.request_id, attempts, reason])
    const code = reason.slice(0, reason.indexOf(':')) // the full reason (in the row) may quote a value
    if (!give) throw new Error(`consent request failed (attempt ${attempts} of ${MAX_ATTEMPTS}): ${code}`)
    this.log.error({ attempts, code }, 'consent request closed as failed: it kept throwing; see consent_requests.failed_reason')
    this.onFailed?.()
    return true
  }
}
