// İYS push notifications. The receiver stores the whole payload in one INSERT and answers at once (İYS allows 5 s;
// an INSERT takes milliseconds even for a full list), so an accepted notification is never lost. A processor then
// claims inbox rows (FOR UPDATE SKIP LOCKED), validates and applies their items as İYS facts ('iys' authority), and
// marks the rows processed with per-item outcomes, all in one transaction.

import type { Logger } from 'pino'
import { isValidConsent, validateConsent } from '../domain/consent.js'
import { parseIysDate } from '../domain/time.js'
import { writeConsentsTx, type ConsentWrite } from './consent-store.js'
import { inTransaction } from './pg.js'
import { Drainer } from './drainer.js'
import type { Pool } from './pg.js'

export async function storePush (pool: Pool, payload: unknown): Promise<number> {
  const { rows } = await pool.query<{ id: string }>('INSERT INTO iys_push_inbox (payload) VALUES ($1) RETURNING id', [JSON.stringify(payload)])
  return Number(rows[0]!.id)
}

export interface PushOutcome { index: number, outcome: 'applied' | 'stale' | 'invalid', code?: string }

const BATCH_ROWS = 20

export class PushProcessor {
  private readonly pool: Pool
  readonly drainer: Drainer

  constructor (pool: Pool, log: Logger) {
    this.pool = pool
    this.drainer = new Drainer('İYS push processing', () => this.processBatch(), log)
  }

  private processBatch (): Promise<boolean> {
    return inTransaction(this.pool, async client => {
      const { rows } = await client.query<{ id: string, payload: { list: Record<string, unknown>[] } }>(
        `SELECT id, payload FROM iys_push_inbox WHERE processed_at IS NULL ORDER BY id LIMIT ${BATCH_ROWS} FOR UPDATE SKIP LOCKED`)
      if (rows.length === 0) return false
      const now = Math.floor(Date.now() / 1000)
      const writes: ConsentWrite[] = []
      const perRow: PushOutcome[][] = []
      const slots: { row: number, index: number }[] = []
      rows.forEach((row, r) => {
        const outcomes: PushOutcome[] = []
        perRow.push(outcomes)
        row.payload.list.forEach((item, index) => {
          const v = validateConsent(item, now)
          if (!isValidConsent(v)) { outcomes.push({ index, outcome: 'invalid', code: v.code }); return }
          const created = typeof item.creationDate === 'string' ? parseIysDate(item.creationDate) : null
          writes.push({
            consent: v,
            authority: 'iys',
            via: 'push',
            transactionId: typeof item.transactionId === 'string' ? item.transactionId : null,
            creationDate: created !== null && created.ok ? created.seconds : null
          })
          slots.push({ row: r, index })
        })
      })
      const results = await writeConsentsTx(client, writes)
      results.forEach((res, i) => {
        const { row, index } = slots[i]!
        perRow[row]!.push(res.status === 'applied' ? { index, outcome: 'applied' } : res.status === 'stale' ? { index, outcome: 'stale' } : { index, outcome: 'invalid', code: res.error.code })
      })
      for (let r = 0; r < rows.length; r++) {
        perRow[r]!.sort((a, b) => a.index - b.index)
        await client.query('UPDATE iys_push_inbox SET processed_at = now(), outcome = $2 WHERE id = $1', [rows[r]!.id, JSON.stringify(perRow[r])])
      }
      return true
    })
  }
}
