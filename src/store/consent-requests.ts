// İYS's asynchronous multiple-consent request (POST .../consents/request): the request is stored and answered at
// once with a requestId; a processor applies it in the background. Claiming a request (FOR UPDATE SKIP LOCKED),
// writing its consents and storing the per-item results happen in one transaction, so a request is applied
// exactly once even with several gateways, and one left pending by a crash is picked up at the next start.

import { randomBytes, randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { ErrorItem } from '../domain/errors.js'
import type { ValidConsent } from '../domain/consent.js'
import { formatIysDate } from '../domain/time.js'
import { writeConsentsTx } from './consent-store.js'
import { inTransaction } from './pg.js'
import { Drainer } from './drainer.js'
import type { Pool } from './pg.js'

interface StoredItem { consent: ValidConsent, subRequestId: string }
interface StoredResult { status: 'success' | 'failure', transactionId?: string, creationDate?: string, error?: { code: string, message: string } }

export interface SubRequest {
  subRequestId: string
  recipient: string
  recipientType: string
  type: string
  status: string
  source: string
  consentDate: string
  creationDate: string
}

/** İYS-style request id: 32 hex characters. */
const newRequestId = (): string => randomBytes(16).toString('hex')

export async function createRequest (pool: Pool, iysCode: string, brandCode: string, consents: ValidConsent[], actor: string | null): Promise<{ requestId: string, subRequests: SubRequest[] }> {
  const requestId = newRequestId()
  const creationDate = formatIysDate(Math.floor(Date.now() / 1000))
  const items: StoredItem[] = consents.map(consent => ({ consent, subRequestId: randomUUID() }))
  await pool.query('INSERT INTO consent_requests (request_id, iys_code, brand_code, actor, items) VALUES ($1, $2, $3, $4, $5)',
    [requestId, iysCode, brandCode, actor, JSON.stringify(items)])
  return {
    requestId,
    subRequests: items.map(({ consent: c, subRequestId }) => ({
      subRequestId, recipient: c.recipient, recipientType: c.recipientType, type: c.type, status: c.status,
      source: c.source, consentDate: formatIysDate(c.consentDate), creationDate
    }))
  }
}

/** İYS's answer to GET .../consents/request/{requestId}: one entry per item, `enqueue` while not yet applied. */
export async function requestResults (pool: Pool, iysCode: string, brandCode: string, requestId: string): Promise<unknown[]> {
  const { rows } = await pool.query<{ items: StoredItem[], results: StoredResult[] | null }>(
    'SELECT items, results FROM consent_requests WHERE request_id = $1 AND iys_code = $2 AND brand_code = $3',
    [requestId, iysCode, brandCode])
  const row = rows[0]
  if (row === undefined) return []
  return row.items.map((item, index) => {
    const r = row.results?.[index]
    if (r === undefined) return { requestId, subRequestId: item.subRequestId, index, status: 'enqueue' }
    return { requestId, subRequestId: item.subRequestId, index, ...r }
  })
}

/** Applies pending requests in the background; `kick()` after storing one, and once at start-up. */
export class RequestProcessor {
  private readonly pool: Pool
  readonly drainer: Drainer

  constructor (pool: Pool, log: Logger) {
    this.pool = pool
    this.drainer = new Drainer('consent request processing', () => this.processOne(), log)
  }

  private processOne (): Promise<boolean> {
    return inTransaction(this.pool, async client => {
      const { rows } = await client.query<{ request_id: string, items: StoredItem[], actor: string | null }>(
        'SELECT request_id, items, actor FROM consent_requests WHERE done_at IS NULL ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED')
      const req = rows[0]
      if (req === undefined) return false
      const outcomes = await writeConsentsTx(client, req.items.map(i => ({ consent: i.consent, authority: 'provider', via: 'api', actor: req.actor })))
      const results: StoredResult[] = outcomes.map(o => {
        if (o.status === 'applied') return { status: 'success', transactionId: o.transactionId, creationDate: formatIysDate(o.creationDate) }
        const error: ErrorItem | undefined = o.status === 'rejected' ? o.error : undefined
        return { status: 'failure', error: { code: error?.code ?? 'H174', message: error?.message ?? '' } }
      })
      await client.query('UPDATE consent_requests SET results = $2, done_at = now() WHERE request_id = $1', [req.request_id, JSON.stringify(results)])
      return true
    })
  }
}
