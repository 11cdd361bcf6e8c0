// İYS push notifications. The receiver stores the whole payload in one INSERT and answers at once (İYS allows 5 s;
// an INSERT takes milliseconds even for a full list), so an accepted notification is never lost. It uses a pool of
// its own (see server.ts), so that consent writes queueing for the write lock can never take its connections.
//
// A processor then claims one inbox row at a time (FOR UPDATE SKIP LOCKED), validates each item on its own, applies
// the valid ones as İYS facts ('iys' authority) and marks the row processed with per-item outcomes, all in one
// transaction. A bad item (null, not an object, wrong types, a NUL character in a consent field) is refused with its
// reason and never stops the others. An item's metadata never refuses it: an unusable transactionId or creationDate
// is dropped and named in the item's outcome (`note`), and the consent is applied (a citizen's RET is never lost
// over how İYS wrote its metadata). A row whose processing throws for any reason but a database outage is retried
// a few times (with the drainer's back-off) and then closed as failed with the reason, so it never blocks the rows
// behind it.
// Once the cause is fixed, such rows are re-queued with
//   UPDATE iys_push_inbox SET processed_at = NULL, attempts = 0 WHERE failed_reason IS NOT NULL AND outcome IS NULL

import type { Logger } from 'pino'
import { isValidIysItem, validateIysItem } from '../domain/consent.js'
import type { ErrorCode } from '../domain/errors.js'
import { writeConsentsTx, type ConsentWrite } from './consent-store.js'
import { inTransaction, isTransientDbError } from './pg.js'
import { Drainer, failureReason, MAX_ATTEMPTS, type Backlog } from './drainer.js'
import type { Pool, PoolClient } from './pg.js'

/**
 * Stores a payload as JSON text (the column is text, not jsonb: jsonb refuses \u0000 and would turn a NUL in a
 * pushed string into a 500; JSON text holds it as an escape). `JSON.stringify` of the parsed body keeps every value.
 */
export async function storePush (pool: Pool, payload: unknown): Promise<number> {
  const { rows } = await pool.query<{ id: string }>('INSERT INTO iys_push_inbox (payload) VALUES ($1) RETURNING id', [JSON.stringify(payload)])
  return Number(rows[0]!.id)
}

export type PushItemOutcome = 'applied' | 'stale' | 'refused'
/** `note`: metadata of an item that was dropped while its consent went on (see validateIysItem). */
export interface PushOutcome { index: number, outcome: PushItemOutcome, code?: ErrorCode, reason?: string, note?: string }

export interface PushHooks {
  /** items processed, by outcome */
  onItems?: (outcome: PushItemOutcome, n: number) => void
  /** a row closed as failed after MAX_ATTEMPTS */
  onFailed?: () => void
}

/** Pending rows and the age of the oldest; reads the partial index of pending rows only. */
export async function pushBacklog (pool: Pool): Promise<Backlog> {
  const { rows } = await pool.query<{ n: string, age: number | null }>(
    'SELECT count(*) AS n, extract(epoch FROM now() - min(received_at))::float8 AS age FROM iys_push_inbox WHERE processed_at IS NULL')
  return { pending: Number(rows[0]!.n), oldestSeconds: Math.max(0, rows[0]!.age ?? 0) }
}

// Reasons are our own messages, but a NUL must never reach a jsonb column whatever a message ends up quoting.
const clean = (s: string): string => s.replace(/\0/g, '')

export class PushProcessor {
  private readonly pool: Pool
  private readonly receivePool: Pool
  private readonly log: Logger
  private readonly hooks: PushHooks
  readonly drainer: Drainer

  /** `receivePool` serves the receiver (store()); `pool` the processing. They may be the same pool (tests). */
  constructor (pool: Pool, log: Logger, opts: { receivePool?: Pool, hooks?: PushHooks } = {}) {
    this.pool = pool
    this.receivePool = opts.receivePool ?? pool
    this.log = log
    this.hooks = opts.hooks ?? {}
    this.drainer = new Drainer('İYS push processing', () => this.processOne(), log)
  }

  /** The receiver: stores the payload on the receiver's own pool and starts processing. */
  async store (payload: unknown): Promise<number> {
    const id = await storePush(this.receivePool, payload)
    this.drainer.kick()
    return id
  }

  private async processOne (): Promise<boolean> {
    let claimed: { id: string, attempts: number } | null = null
    try {
      return await inTransaction(this.pool, async client => {
        const { rows } = await client.query<{ id: string, payload: string, attempts: number }>(
          'SELECT id, payload, attempts FROM iys_push_inbox WHERE processed_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED')
        const row = rows[0]
        if (row === undefined) return false
        claimed = row
        const outcomes = await this.apply(client, row.payload)
        await client.query('UPDATE iys_push_inbox SET processed_at = now(), outcome = $2 WHERE id = $1', [row.id, JSON.stringify(outcomes)])
        for (const o of ['applied', 'stale', 'refused'] as const) {
          const n = outcomes.reduce((k, x) => k + (x.outcome === o ? 1 : 0), 0)
          if (n > 0) this.hooks.onItems?.(o, n)
        }
        return true
      })
    } catch (err) {
      const row = claimed as { id: string, attempts: number } | null
      if (row === null || isTransientDbError(err)) throw err
      return this.recordFailure(row, err)
    }
  }

  private async apply (client: PoolClient, text: string): Promise<PushOutcome[]> {
    const payload = JSON.parse(text) as { list?: unknown }
    const list = Array.isArray(payload?.list) ? payload.list as unknown[] : []
    const now = Math.floor(Date.now() / 1000)
    const outcomes: PushOutcome[] = new Array(list.length)
    const writes: ConsentWrite[] = []
    const slots: number[] = []
    const notes: (string | null)[] = []
    for (let index = 0; index < list.length; index++) {
      const v = validateIysItem(list[index], now)
      if (!isValidIysItem(v)) { outcomes[index] = { index, outcome: 'refused', code: v.code, reason: clean(v.message) }; continue }
      writes.push({ consent: v.consent, authority: 'iys', via: 'push', transactionId: v.transactionId, creationDate: v.creationDate })
      slots.push(index)
      notes.push(v.note)
    }
    const results = await writeConsentsTx(client, writes)
    results.forEach((res, i) => {
      const index = slots[i]!
      const o: PushOutcome = res.status === 'rejected'
        ? { index, outcome: 'refused', code: res.error.code, reason: clean(res.error.message) }
        : { index, outcome: res.status }
      if (notes[i] !== null) o.note = notes[i]!
      outcomes[index] = o
    })
    return outcomes
  }

  /**
   * Counts a failed attempt in a transaction of its own; at MAX_ATTEMPTS the row is closed as failed (true: go on
   * with the next row). Before that the failure is thrown, so the drainer retries after its back-off.
   */
  private async recordFailure (row: { id: string, attempts: number }, err: unknown): Promise<boolean> {
    const reason = failureReason(err)
    const attempts = row.attempts + 1
    const give = attempts >= MAX_ATTEMPTS
    await this.pool.query(
      `UPDATE iys_push_inbox SET attempts = $2, failed_reason = $3${give ? ', processed_at = now()' : ''} WHERE id = $1 AND processed_at IS NULL`,
      [row.id, attempts, reason])
    // Logs name the error's code only: the full reason (in the row) may quote a value.
    const code = reason.slice(0, reason.indexOf(':'))
    if (!give) throw new Error(`push inbox row ${row.id} failed (attempt ${attempts} of ${MAX_ATTEMPTS}): ${code}`)
    this.log.error({ row: row.id, attempts, code }, 'İYS push row closed as failed: it kept throwing; see iys_push_inbox.failed_reason')
    this.hooks.onFailed?.()
    return true
  }
}
