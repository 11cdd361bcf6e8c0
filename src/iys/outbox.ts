// İYS write-through: every provider write we accept through the mirrored İYS API is also registered with İYS, through
// a durable outbox in Postgres (table iys_outbox, migration 7).
//
// - Queued with the write. consent-store.ts inserts one outbox row per applied provider change (keyed by its ledger
//   seq) in the transaction that accepts it, while an outbox runs in the process (queueForIys). So nothing accepted is
//   lost and nothing is sent that was not accepted; a restart or an İYS outage only delays the rows.
// - One sender at a time. Every gateway runs an outbox; the one holding a session advisory lock (on a connection of
//   its own) sends, the others stand by and take over within `standbyMs` when it goes. One sender keeps İYS's per-IP
//   rate limit and per-key order simple; the IysClient paces it below 10 requests a second, waits out 429 H124 with
//   Retry-After, and renews tokens.
// - Order. A change is sent only when every earlier change of the same key (brand, type, recipientType, recipient)
//   has its answer from İYS and that answer is more than a second old (İYS gives two changes of one key in the same
//   second the same transactionId). A single write goes to İYS's single endpoint; the changes of one asynchronous
//   request go as one İYS batch (POST …/consents/request, at most one change per recipient, ≤ 1000), whose results
//   are asked for after `resultPollMs` (İYS: not before 300 s) and again until every item is answered.
// - Throughput. The client's pacing (8 requests a second) caps single writes sent one by one at about 8 a second;
//   when SINGLES_BATCH_AT or more never-sent single writes of one brand wait, they go together as one İYS batch
//   instead (as above), so a sustained load of single writes drains at up to 1000 per request (see SINGLES_BATCH_AT).
// - Outages. A network error, a 5xx or a rate limit that outlasts the client's retries stops the pass: the next is
//   tried with exponential back-off (honouring Retry-After), so a down İYS is asked about once per back-off, not once
//   per row. A 401/403 (our credentials or permissions) backs off the row concerned and lets the others go on.
// - Idempotency. We send through İYS's v2 endpoints: a single consent re-sent unchanged is answered with the
//   transactionId of the first, and a batch item identical to one already registered is answered with the original
//   (originalRequestInformation) instead of becoming a new transaction. A batch's id is a fingerprint of its seqs,
//   stored before it is posted, so after a crash the same changes are posted again as the same batch and never
//   regrouped with others; a single write once tried alone is only ever sent alone again. The window that remains: a
//   crash (or lost answer) between İYS accepting a POST and our commit re-sends the same body; v2 makes that the same
//   transaction, and only on v1 (IysClient writeVersion) would İYS answer H174 for a re-sent single — which we then
//   treat as "İYS already holds it" (kept, see below).
// - Refusals. İYS refusing a change we had accepted (400/422 with an H code, or a batch item `failure`) corrects the
//   local record in one transaction under the consent write lock, through the ordinary write path (ledger row with via
//   'correction', seq, NOTIFY → change applier → Redis and every gateway), and never makes a recipient reachable who
//   was not: a refused ONAY that still decides its key is replaced by the previous state (restored) or, with none, by
//   a withdrawal (RET: blocked, as BIREYSEL without a record; TACIR without a record would be allowed — the filter
//   has no way to delete a key yet); a refused RET stays in force (the recipient did reject; sending to them because
//   İYS could not register it would break the law); H174 (İYS already holds that status) keeps the record. The outcome,
//   İYS's code and message and the correction are kept in the outbox row and shown by outboxStatus().

import { createHash } from 'node:crypto'
import type { Counter, Gauge } from 'prom-client'
import type { Config } from '../config.js'
import { formatIysDate, parseIysDate, TR_INTERVAL_SQL as TR } from '../domain/time.js'
import { NO_SOURCE } from '../domain/vocabulary.js'
import type { Logger } from '../log.js'
import { requestResults } from '../store/consent-requests.js'
import { queueForIys, writeCorrectionTx } from '../store/consent-store.js'
import { CONSENT_WRITE_LOCK } from '../store/migrate.js'
import { inTransaction, type Pool, type PoolClient } from '../store/pg.js'
import { IysApiError, IysClient, type IysConsent, type IysWriteApi } from './client.js'

/** The session advisory lock of the one sending gateway. */
export const OUTBOX_LOCK = 0x1f5a7e03
/** İYS's largest asynchronous request. */
const BATCH_MAX = 1000
/**
 * Never-sent single writes of one brand waiting at once that go to İYS as one batch rather than one by one. Sent alone
 * a single write is answered at once (İYS's transactionId within a second, the key's next change a second later); in a
 * batch it is answered only when the results are polled, `resultPollMs` (IYS_RESULT_POLL_MS, 300 s) after posting,
 * and the key's next change waits as long. Batching pays only when singles come faster than the sender can send them
 * alone (about 8 a second); below that the queue stays short. 40 waiting is 5 s of single requests at that pace: a
 * burst shorter than that still goes one by one, answered within seconds; a longer queue means the singles cannot keep
 * up (or İYS was away), and then everything waiting (≤ 1000) goes in one request, registered 300 s later.
 */
const SINGLES_BATCH_AT = 40
/** Batch item codes that say İYS failed the item for a passing reason: sent again on its own, not a refusal. */
const PASSING_ITEM_CODES = new Set(['H015'])
/** Pending work this old makes writeThroughStatus() say "behind". */
const BEHIND_S = 60

export type Correction = 'restored' | 'withdrawn' | 'kept' | 'superseded'
export const CORRECTIONS: readonly Correction[] = ['restored', 'withdrawn', 'kept', 'superseded']
export const SEND_METHODS = ['single', 'batch'] as const
/** Why a pass or a row is retried: İYS unreachable or 5xx, rate limited, our credentials/permissions, anything else. */
export const RETRY_CAUSES = ['unavailable', 'rate_limited', 'unauthorized', 'error'] as const
export type RetryCause = (typeof RETRY_CAUSES)[number]

/** The metrics this module sets (Metrics has them); named by shape, as store/freshness.ts does. */
export interface OutboxMetrics {
  readonly outboxPending: Gauge
  readonly outboxOldest: Gauge
  readonly outboxSent: Counter<'method'>
  readonly outboxRefused: Counter<'correction'>
  readonly outboxRetried: Counter<'cause'>
}

export interface OutboxOptions {
  pool: Pool
  client: IysWriteApi
  /** The service provider whose writes are registered (IYS_CODE): İYS credentials are per iysCode. */
  iysCode: string
  log: Logger
  metrics?: OutboxMetrics
  /** Idle poll for new rows (ms), default 1000. */
  pollMs?: number
  /** How long after posting a batch, and between later polls, its results are asked for (ms); default 300 000. */
  resultPollMs?: number
  /** How often a standing-by gateway tries to become the sender (ms), default 5000. */
  standbyMs?: number
  /** Back-off after a failed pass: first wait, doubling to the cap (ms); defaults 1000 and 300 000. */
  backoffBaseMs?: number
  backoffMaxMs?: number
  /** How often the backlog gauges and status() are refreshed (ms), default 5000. */
  backlogMs?: number
  /** Close `client` on stop() (when the outbox made it). */
  closeClient?: boolean
}

interface Row {
  seq: string
  write_id: string
  brand_code: string
  type: string
  recipient_type: string
  recipient: string
  status: string
  source: string
  d: string
  solo: boolean
}

interface Batch { batch_id: string, brand_code: string, request_id: string | null, seqs: string[] }

const ROW_COLUMNS = `o.seq::text AS seq, o.write_id, o.brand_code::text AS brand_code, o.type, o.recipient_type, o.recipient, o.status, o.source,
  extract(epoch FROM o.consent_date)::bigint::text AS d, o.solo`

// Rows that may be sent now: not answered, not in a batch, not backed off, and with every earlier change of their
// key answered more than a second ago.
const ELIGIBLE = `o.done_at IS NULL AND o.batch_id IS NULL AND o.iys_code = $1 AND o.next_at <= now()
  AND NOT EXISTS (SELECT 1 FROM iys_outbox p
                  WHERE p.brand_code = o.brand_code AND p.type = o.type AND p.recipient_type = o.recipient_type
                    AND p.recipient = o.recipient AND p.seq < o.seq
                    AND (p.done_at IS NULL OR p.done_at > now() - interval '1 second'))`

/**
 * The consent as İYS takes it; the same fields in the same order every time, so a re-send is identical (v2). A TACIR
 * first record the provider sent without a source (stored as NO_SOURCE) goes without one, as it came.
 */
const consentOf = (r: Row): IysConsent => ({
  consentDate: formatIysDate(Number(r.d)),
  ...(r.source === NO_SOURCE ? {} : { source: r.source }),
  recipient: r.recipient,
  recipientType: r.recipient_type,
  status: r.status,
  type: r.type
})

/** İYS keeps one change per recipient of a list: the others of the same recipient wait for the next batch. */
function onePerRecipient (rows: Row[]): Row[] {
  const seen = new Set<string>()
  return rows.filter(r => {
    if (seen.has(r.recipient)) return false
    seen.add(r.recipient)
    return true
  })
}

/** Closes a batch none of whose rows still waits for İYS (answered, or taken out to go alone). */
async function closeIfAnswered (q: Pool | PoolClient, batchId: string): Promise<void> {
  await q.query(
    `UPDATE iys_outbox_batches SET done_at = now() WHERE batch_id = $1 AND done_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM iys_outbox WHERE batch_id = $1 AND done_at IS NULL)`, [batchId])
}

const iysSeconds = (text: string | undefined): number | null => {
  if (text === undefined) return null
  const p = parseIysDate(text)
  return p.ok ? p.seconds : null
}

function causeOf (err: unknown): RetryCause {
  if (!(err instanceof IysApiError)) return 'error'
  if (err.status === 429) return 'rate_limited'
  if (err.status === 401 || err.status === 403) return 'unauthorized'
  if (err.status === 0 || err.status >= 500) return 'unavailable'
  return 'error'
}

export class IysOutbox {
  private readonly pool: Pool
  private readonly client: IysWriteApi
  private readonly iysCode: string
  private readonly log: Logger
  private readonly metrics: OutboxMetrics | undefined
  private readonly pollMs: number
  private readonly resultPollMs: number
  private readonly standbyMs: number
  private readonly backoffBaseMs: number
  private readonly backoffMaxMs: number
  private readonly backlogMs: number
  private readonly closeClient: boolean
  private readonly abort = new AbortController()
  private stopped = false
  private running: Promise<void> | null = null
  private wake: (() => void) | null = null
  private leader: PoolClient | null = null
  private nextLeadTry = 0
  private failures = 0
  private problem: string | null = null
  private lastPrune = 0
  private stopQueueing: (() => void) | null = null
  private backlogTimer: NodeJS.Timeout | null = null
  private backlog = { at: 0, pending: 0, oldestSeconds: 0 }

  constructor (opts: OutboxOptions) {
    this.pool = opts.pool
    this.client = opts.client
    this.iysCode = opts.iysCode
    this.log = opts.log
    this.metrics = opts.metrics
    this.pollMs = opts.pollMs ?? 1000
    this.resultPollMs = opts.resultPollMs ?? 300_000
    this.standbyMs = opts.standbyMs ?? 5000
    this.backoffBaseMs = opts.backoffBaseMs ?? 1000
    this.backoffMaxMs = opts.backoffMaxMs ?? 300_000
    this.backlogMs = opts.backlogMs ?? 5000
    this.closeClient = opts.closeClient ?? false
  }

  /** True while this process is the one sending. */
  get sending (): boolean { return this.leader !== null }

  /** Starts queueing this iysCode's provider writes and sending them. */
  start (): void {
    if (this.running !== null) return
    this.stopQueueing = queueForIys(this.iysCode)
    this.running = this.loop()
    this.backlogTimer = setInterval(() => { void this.pollBacklog() }, this.backlogMs)
    this.backlogTimer.unref()
    void this.pollBacklog()
  }

  /** Runs a pass now instead of at the next poll (after a write; tests). */
  kick (): void {
    this.wake?.()
  }

  /**
   * Stops sending and queueing: an in-flight request is aborted (its row stays pending and is sent again, as the same
   * request, by whichever gateway sends next), the sender lock is given up.
   */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.stopQueueing?.()
    this.abort.abort()
    this.wake?.()
    if (this.backlogTimer !== null) clearInterval(this.backlogTimer)
    await this.running
    this.dropLeader()
    if (this.closeClient) await this.client.close()
  }

  /** For /readyz: 'ok', or how far behind (pending rows, age of the oldest, and İYS's last problem). */
  status (): string {
    const { pending, oldestSeconds } = this.backlog
    if (pending === 0 || (oldestSeconds < BEHIND_S && this.problem === null)) return 'ok'
    return `behind: ${pending} pending, oldest ${Math.round(oldestSeconds)}s` + (this.problem !== null ? ` (${this.problem})` : '')
  }

  /** Pending rows and the oldest one's age; sets the gauges. Never throws. */
  async pollBacklog (): Promise<{ pending: number, oldestSeconds: number }> {
    try {
      const { rows } = await this.pool.query<{ n: string, age: number | null }>(
        'SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age FROM iys_outbox WHERE done_at IS NULL')
      this.backlog = { at: Date.now(), pending: Number(rows[0]!.n), oldestSeconds: Math.max(0, rows[0]!.age ?? 0) }
    } catch (err) {
      // Postgres away: keep the count, age the oldest from the last figures so that the alert still fires.
      this.log.debug({ err }, 'İYS outbox backlog poll failed; ageing the last figures')
      if (this.backlog.at > 0 && this.backlog.pending > 0) {
        const now = Date.now()
        this.backlog = { at: now, pending: this.backlog.pending, oldestSeconds: this.backlog.oldestSeconds + (now - this.backlog.at) / 1000 }
      }
    }
    this.metrics?.outboxPending.set(this.backlog.pending)
    this.metrics?.outboxOldest.set(this.backlog.pending > 0 ? this.backlog.oldestSeconds : 0)
    return { pending: this.backlog.pending, oldestSeconds: this.backlog.oldestSeconds }
  }

  // ---- the loop ----

  private async loop (): Promise<void> {
    while (!this.stopped) {
      let wait = this.pollMs
      try {
        if (await this.lead()) {
          await this.drain()
          if (this.failures > 0) this.log.info('İYS outbox: sending again')
          this.failures = 0
          this.problem = null
        } else {
          wait = this.standbyMs
        }
      } catch (err) {
        if (this.stopped) break
        wait = this.failed(err)
      }
      await this.pause(wait)
    }
  }

  private async pause (ms: number): Promise<void> {
    if (this.stopped) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(done, ms)
      timer.unref() // the server's socket keeps a gateway alive, not this
      function done (): void { clearTimeout(timer); resolve() }
      this.wake = done
    })
    this.wake = null
  }

  /** A pass failed as a whole (İYS unreachable, rate limited, Postgres away): back off, honouring Retry-After. */
  private failed (err: unknown): number {
    this.failures++
    const cause = causeOf(err)
    this.metrics?.outboxRetried.inc({ cause })
    const step = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** (this.failures - 1))
    let wait = Math.round(step / 2 + Math.random() * step / 2)
    if (err instanceof IysApiError && err.retryAfterMs !== null) wait = Math.max(wait, err.retryAfterMs)
    const problem = err instanceof IysApiError ? `İYS ${cause}: ${err.iysCode}` : `${cause}: ${(err as { code?: string }).code ?? (err as Error).name}`
    if (problem !== this.problem) this.log.warn({ err, waitMs: wait, attempt: this.failures }, 'İYS outbox: pass failed; backing off')
    this.problem = problem
    return wait
  }

  /** Holds (or takes) the sender lock; false while another gateway holds it. */
  private async lead (): Promise<boolean> {
    if (this.leader !== null) {
      try {
        await this.leader.query('SELECT 1')
        return true
      } catch {
        this.dropLeader()
      }
    }
    if (Date.now() < this.nextLeadTry) return false
    const client = await this.pool.connect()
    let ok = false
    try {
      const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [OUTBOX_LOCK])
      ok = rows[0]!.ok
    } catch (err) {
      client.release(true)
      throw err
    }
    if (!ok || this.stopped) {
      client.release(ok) // a lock taken just as we stop goes with its connection
      this.nextLeadTry = Date.now() + this.standbyMs
      return false
    }
    // The lock lives with the session: this connection is never returned to the pool, only destroyed.
    client.on('error', () => { this.dropLeader() })
    this.leader = client
    this.log.info('İYS outbox: this gateway sends to İYS')
    return true
  }

  private dropLeader (): void {
    const c = this.leader
    if (c === null) return
    this.leader = null
    c.release(true)
  }

  /** Sends until nothing more can be sent now. */
  private async drain (): Promise<void> {
    while (!this.stopped && await this.step()) { /* next */ }
    if (Date.now() - this.lastPrune > 3_600_000) {
      this.lastPrune = Date.now()
      await this.prune()
    }
  }

  /** One unit of work: a batch's results, a batch to (re)post, or the next change; false when there was none. */
  private async step (): Promise<boolean> {
    const due = await this.pool.query<Batch>(
      `SELECT batch_id, brand_code::text AS brand_code, request_id, seqs::text[] AS seqs FROM iys_outbox_batches
       WHERE done_at IS NULL AND iys_code = $1 AND (next_poll_at IS NULL OR next_poll_at <= now())
       ORDER BY request_id IS NOT NULL, created_at LIMIT 1`, [this.iysCode])
    const batch = due.rows[0]
    if (batch !== undefined) {
      if (batch.request_id === null) await this.postBatch(batch)
      else await this.pollBatch(batch)
      return true
    }
    const first = await this.pool.query<Row>(`SELECT ${ROW_COLUMNS} FROM iys_outbox o WHERE ${ELIGIBLE} ORDER BY o.seq LIMIT 1`, [this.iysCode])
    const row = first.rows[0]
    if (row === undefined) return false
    if (!row.solo) {
      const group = await this.pool.query<Row>(
        `SELECT ${ROW_COLUMNS} FROM iys_outbox o WHERE ${ELIGIBLE} AND o.write_id = $2 AND o.brand_code = $3 AND NOT o.solo
         ORDER BY o.seq LIMIT ${BATCH_MAX}`, [this.iysCode, row.write_id, row.brand_code])
      const rows = onePerRecipient(group.rows)
      if (rows.length > 1) {
        await this.postBatch(await this.formBatch(row.brand_code, rows))
        return true
      }
      const singles = await this.waitingSingles(row.brand_code)
      if (singles.length >= SINGLES_BATCH_AT) {
        await this.postBatch(await this.formBatch(row.brand_code, singles))
        if (singles.some(r => r.seq === row.seq)) return true
        // `row` was left out (tried alone before, or one of several changes of its write): it goes alone now.
      }
    }
    await this.sendSingle(row)
    return true
  }

  /**
   * Single writes of this brand that may go in one batch: eligible, never tried (one tried alone may have reached İYS
   * with its answer lost: it is re-sent alone, where v2 answers it with its first transaction; the specification
   * does not say that a batch item is matched against a single write), and the only waiting change of their write (the
   * changes of a request go in a batch of their own). One per recipient, ≤ 1000, oldest first.
   */
  private async waitingSingles (brandCode: string): Promise<Row[]> {
    const { rows } = await this.pool.query<Row>(
      `SELECT ${ROW_COLUMNS} FROM iys_outbox o WHERE ${ELIGIBLE} AND o.brand_code = $2 AND NOT o.solo AND o.attempts = 0
       ORDER BY o.seq LIMIT ${2 * BATCH_MAX}`, [this.iysCode, brandCode])
    const perWrite = new Map<string, number>()
    for (const r of rows) perWrite.set(r.write_id, (perWrite.get(r.write_id) ?? 0) + 1)
    return onePerRecipient(rows.filter(r => perWrite.get(r.write_id) === 1)).slice(0, BATCH_MAX)
  }

  // ---- single writes ----

  private async sendSingle (row: Row): Promise<void> {
    await this.pool.query('UPDATE iys_outbox SET attempts = attempts + 1 WHERE seq = $1', [row.seq])
    try {
      const added = await this.client.addConsent(this.iysCode, row.brand_code, consentOf(row), this.abort.signal)
      await this.registered([{ seq: row.seq, transactionId: added.transactionId, creationDate: iysSeconds(added.creationDate) }], 'single')
    } catch (err) {
      if (err instanceof IysApiError && err.refused) return await this.refused(row.seq, err.iysCode, err.iysMessage)
      if (err instanceof IysApiError && !err.transient) return await this.backOffRow([row.seq], err)
      throw err // İYS unreachable or rate limited: the whole pass backs off
    }
  }

  /** A 401/403/404 or an answer we cannot read for these rows: they wait (with back-off), the others go on. */
  private async backOffRow (seqs: string[], err: IysApiError): Promise<void> {
    this.metrics?.outboxRetried.inc({ cause: causeOf(err) })
    this.log.error({ code: err.iysCode, status: err.status, rows: seqs.length }, 'İYS outbox: İYS did not take these changes (credentials, permissions or configuration); retrying them later')
    await this.pool.query(
      `UPDATE iys_outbox SET last_error = $2,
         next_at = now() + least($3::float8, $4::float8 * power(2, least(attempts, 20))) * interval '1 millisecond'
       WHERE seq = ANY($1::bigint[])`, [seqs, `${err.iysCode}: ${err.message}`.slice(0, 500), this.backoffMaxMs, this.backoffBaseMs])
  }

  // ---- batches ----

  /** Stores a batch of these rows (its id a fingerprint of their seqs) before anything is posted. */
  private async formBatch (brandCode: string, rows: Row[]): Promise<Batch> {
    const seqs = rows.map(r => r.seq)
    const batchId = createHash('sha256').update(`${this.iysCode}:${brandCode}:${seqs.join(',')}`).digest('hex').slice(0, 32)
    await inTransaction(this.pool, async tx => {
      await tx.query('INSERT INTO iys_outbox_batches (batch_id, iys_code, brand_code, seqs) VALUES ($1, $2, $3, $4::bigint[]) ON CONFLICT DO NOTHING',
        [batchId, this.iysCode, brandCode, seqs])
      await tx.query('UPDATE iys_outbox SET batch_id = $1 WHERE seq = ANY($2::bigint[]) AND done_at IS NULL', [batchId, seqs])
    })
    return { batch_id: batchId, brand_code: brandCode, request_id: null, seqs }
  }

  /** Posts a stored batch (again, after a crash or a failure: the same changes in the same order). */
  private async postBatch (batch: Batch): Promise<void> {
    const { rows } = await this.pool.query<Row>(
      `SELECT ${ROW_COLUMNS} FROM iys_outbox o JOIN unnest($1::bigint[]) WITH ORDINALITY AS b(seq, i) ON o.seq = b.seq ORDER BY b.i`, [batch.seqs])
    if (rows.length !== batch.seqs.length) {
      // Cannot happen while rows are only deleted with their ledger entry; never post a batch with holes.
      this.log.error({ batchId: batch.batch_id }, 'İYS outbox: a batch lost rows; sending its changes on their own')
      return await this.dissolve(batch, batch.seqs)
    }
    await this.pool.query('UPDATE iys_outbox_batches SET posts = posts + 1 WHERE batch_id = $1', [batch.batch_id])
    await this.pool.query('UPDATE iys_outbox SET attempts = attempts + 1 WHERE batch_id = $1', [batch.batch_id])
    try {
      const { requestId } = await this.client.addConsentRequest(this.iysCode, batch.brand_code, rows.map(consentOf), this.abort.signal)
      await this.pool.query(
        `UPDATE iys_outbox_batches SET request_id = $2, submitted_at = now(), next_poll_at = now() + $3::float8 * interval '1 millisecond'
         WHERE batch_id = $1`, [batch.batch_id, requestId, this.resultPollMs])
    } catch (err) {
      if (err instanceof IysApiError && err.refused) {
        // The list as a whole was refused: each change goes on its own, to be accepted or refused by itself.
        this.log.warn({ code: err.iysCode, items: rows.length }, 'İYS outbox: İYS refused a batch as a whole; sending its changes one by one')
        return await this.dissolve(batch, batch.seqs)
      }
      if (err instanceof IysApiError && !err.transient) return await this.backOffBatch(batch, err)
      throw err
    }
  }

  private async pollBatch (batch: Batch): Promise<void> {
    let items
    try {
      items = await this.client.requestResults(this.iysCode, batch.brand_code, batch.request_id!, this.abort.signal)
    } catch (err) {
      if (err instanceof IysApiError && !err.transient) return await this.backOffBatch(batch, err)
      throw err
    }
    const byIndex = new Map(items.map(i => [i.index, i]))
    const ok: { seq: string, transactionId: string | null, creationDate: number | null }[] = []
    const again: string[] = []
    const refusals: { seq: string, code: string, message: string }[] = []
    batch.seqs.forEach((seq, index) => {
      const item = byIndex.get(index)
      if (item === undefined || item.status === 'enqueue') return
      if (item.status === 'success') ok.push({ seq, transactionId: item.transactionId ?? null, creationDate: iysSeconds(item.creationDate) })
      else if (item.error === undefined || PASSING_ITEM_CODES.has(item.error.code)) again.push(seq)
      else refusals.push({ seq, code: item.error.code, message: item.error.message })
    })
    if (ok.length > 0) await this.registered(ok, 'batch')
    for (const r of refusals) await this.refused(r.seq, r.code, r.message)
    if (again.length > 0) await this.dissolve(batch, again)
    await this.pool.query(
      `UPDATE iys_outbox_batches SET polls = polls + 1, next_poll_at = now() + $2::float8 * interval '1 millisecond' WHERE batch_id = $1`,
      [batch.batch_id, this.resultPollMs])
    await closeIfAnswered(this.pool, batch.batch_id)
  }

  /** Takes these rows out of their batch, to be sent on their own. */
  private async dissolve (batch: Batch, seqs: string[]): Promise<void> {
    await inTransaction(this.pool, async tx => {
      await tx.query('UPDATE iys_outbox SET batch_id = NULL, solo = true WHERE seq = ANY($1::bigint[]) AND batch_id = $2 AND done_at IS NULL', [seqs, batch.batch_id])
      await closeIfAnswered(tx, batch.batch_id)
    })
  }

  /** İYS did not take a batch (credentials, permissions, configuration): its rows back off, and it is tried again when they are due. */
  private async backOffBatch (batch: Batch, err: IysApiError): Promise<void> {
    await this.backOffRow(batch.seqs, err)
    await this.pool.query('UPDATE iys_outbox_batches SET next_poll_at = (SELECT max(next_at) FROM iys_outbox WHERE batch_id = $1) WHERE batch_id = $1', [batch.batch_id])
  }

  // ---- outcomes ----

  /** İYS registered these changes: its transactionId goes on the outbox row and on the current state it set. */
  private async registered (list: { seq: string, transactionId: string | null, creationDate: number | null }[], method: 'single' | 'batch'): Promise<void> {
    const n = await inTransaction(this.pool, async tx => {
      const res = await tx.query(
        `UPDATE iys_outbox o SET outcome = 'registered', iys_transaction_id = x.tx, iys_creation_date = to_timestamp(x.cd), last_error = NULL, done_at = now()
         FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS x(seq, tx, cd) WHERE o.seq = x.seq AND o.done_at IS NULL`,
        [list.map(l => l.seq), list.map(l => l.transactionId), list.map(l => l.creationDate)])
      await tx.query(
        `UPDATE consents c SET iys_transaction_id = o.iys_transaction_id, iys_creation_date = o.iys_creation_date
         FROM iys_outbox o WHERE o.seq = ANY($1::bigint[]) AND c.brand_code = o.brand_code AND c.type = o.type
           AND c.recipient_type = o.recipient_type AND c.recipient = o.recipient AND c.seq = o.seq`, [list.map(l => l.seq)])
      return res.rowCount ?? 0
    })
    if (n > 0) this.metrics?.outboxSent.inc({ method }, n)
  }

  /**
   * İYS refused a change we had accepted. Under the consent write lock: record the refusal and, when the change still
   * decides its key and made the recipient reachable (ONAY), put back the state before it (or withdraw it).
   */
  private async refused (seq: string, code: string, message: string): Promise<void> {
    const correction = await inTransaction(this.pool, async tx => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
      const { rows } = await tx.query<Row & { iys_code: string }>(
        `SELECT ${ROW_COLUMNS}, o.iys_code::text AS iys_code FROM iys_outbox o WHERE o.seq = $1 AND o.done_at IS NULL FOR UPDATE`, [seq])
      const row = rows[0]
      if (row === undefined) return null
      const { kind, correctionSeq } = await this.correct(tx, row, code)
      await tx.query(
        `UPDATE iys_outbox SET outcome = 'refused', error_code = $2, error_message = $3, correction = $4, correction_seq = $5, done_at = now()
         WHERE seq = $1`, [seq, code, message.slice(0, 500), kind, correctionSeq])
      return kind
    })
    if (correction === null) return
    this.metrics?.outboxRefused.inc({ correction })
    this.log.warn({ seq: Number(seq), code, correction }, 'İYS refused a consent change we had accepted; the local record is corrected')
  }

  private async correct (tx: PoolClient, row: Row & { iys_code: string }, code: string): Promise<{ kind: Correction, correctionSeq: number | null }> {
    // H174: İYS holds this very status already. A RET: the recipient rejected; it stays in force whatever İYS says.
    if (code === 'H174' || row.status === 'RET') return { kind: 'kept', correctionSeq: null }
    const key = [row.brand_code, row.type, row.recipient_type, row.recipient]
    const cur = await tx.query<{ seq: string }>(
      'SELECT seq::text AS seq FROM consents WHERE brand_code = $1 AND type = $2 AND recipient_type = $3 AND recipient = $4', key)
    if (cur.rows[0]?.seq !== row.seq) return { kind: 'superseded', correctionSeq: null } // a later change decides already
    // The state before it: the last earlier change of the key that İYS did not refuse (refusals kept in force count).
    const prev = await tx.query<{ status: 'ONAY' | 'RET', source: string, d: string, tx: string | null, cd: string | null, iys: string, via: string, actor: string | null }>(
      `SELECT h.status, h.source, extract(epoch FROM h.consent_date)::bigint::text AS d, h.transaction_id AS tx,
              extract(epoch FROM h.creation_date)::bigint::text AS cd, h.iys_code::text AS iys, h.via, h.actor
       FROM consent_history h LEFT JOIN iys_outbox x ON x.seq = h.seq
       WHERE h.brand_code = $1 AND h.type = $2 AND h.recipient_type = $3 AND h.recipient = $4 AND h.seq < $5
         AND (x.outcome IS DISTINCT FROM 'refused' OR x.correction = 'kept')
       ORDER BY h.seq DESC LIMIT 1`, [...key, row.seq])
    const p = prev.rows[0]
    const base = { brandCode: row.brand_code, type: row.type, recipientType: row.recipient_type, recipient: row.recipient }
    if (p !== undefined && !(p.via === 'correction' && p.actor?.endsWith(' withdrawn') === true)) {
      const correctionSeq = await writeCorrectionTx(tx, {
        ...base, iysCode: p.iys, status: p.status, source: p.source, consentDate: Number(p.d), transactionId: p.tx,
        creationDate: p.cd === null ? null : Number(p.cd), actor: `iys-refused:${code} restored`
      })
      return { kind: 'restored', correctionSeq }
    }
    const correctionSeq = await writeCorrectionTx(tx, {
      ...base, iysCode: row.iys_code, status: 'RET', source: row.source, consentDate: Number(row.d), transactionId: null,
      creationDate: null, actor: `iys-refused:${code} withdrawn`
    })
    return { kind: 'withdrawn', correctionSeq }
  }

  /** Outbox rows live as long as the ledger entry they annotate; answered batches for İYS's 60 days. */
  private async prune (): Promise<void> {
    await this.pool.query(`DELETE FROM iys_outbox o WHERE o.done_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM consent_history h WHERE h.seq = o.seq)`)
    await this.pool.query(`DELETE FROM iys_outbox_batches WHERE done_at < now() - interval '60 days'`)
  }
}

// ---- what the routes and /readyz show ----

interface OutcomeRow { tx: string, outcome: string | null, iys_tx: string | null, iys_cd: string | null, code: string | null, message: string | null }

async function outcomesOf (pool: Pool, iysCode: string, brandCode: string, transactionIds: string[]): Promise<Map<string, OutcomeRow>> {
  if (transactionIds.length === 0) return new Map()
  const { rows } = await pool.query<OutcomeRow>(
    `SELECT DISTINCT ON (transaction_id) transaction_id AS tx, outcome, iys_transaction_id AS iys_tx,
            to_char(iys_creation_date AT TIME ZONE ${TR}, 'YYYY-MM-DD HH24:MI:SS') AS iys_cd, error_code AS code, error_message AS message
     FROM iys_outbox WHERE transaction_id = ANY($1::text[]) AND iys_code = $2 AND brand_code = $3 ORDER BY transaction_id, seq DESC`,
    [transactionIds, iysCode, brandCode])
  return new Map(rows.map(r => [r.tx, r]))
}

type Item = Record<string, unknown>

/** One result item as İYS would show it now: enqueue until İYS answered, failure with İYS's error once it refused. */
function overlay (item: Item, o: OutcomeRow | undefined): Item {
  if (o === undefined) return item
  const { transactionId: _t, creationDate: _c, ...rest } = item
  if (o.outcome === null) return { ...rest, status: 'enqueue' }
  if (o.outcome === 'refused') return { ...rest, status: 'failure', error: { code: o.code ?? 'H015', message: o.message ?? '' } }
  return { ...item, ...(o.iys_tx !== null ? { iysTransactionId: o.iys_tx } : {}), ...(o.iys_cd !== null ? { iysCreationDate: o.iys_cd } : {}) }
}

/**
 * The write-through view of GET …/consents/request/{id}: for a requestId, the request's items with İYS's outcome
 * laid over them (enqueue until İYS has answered, failure with İYS's code and message once it refused, success with
 * `iysTransactionId` once registered); for the transactionId a single write was answered with, that one item
 * (index 0). [] when the id is neither. Items of writes that were not sent through (write-through off, another
 * tenant) are shown as they are. `v2`: as requestResults (GET /v2/…).
 */
export async function outboxStatus (pool: Pool, iysCode: string, brandCode: string, id: string, v2 = false): Promise<Item[]> {
  const items = await requestResults(pool, iysCode, brandCode, id, v2) as Item[]
  if (items.length > 0) {
    const ids = items.map(i => i.transactionId).filter((t): t is string => typeof t === 'string')
    const outcomes = await outcomesOf(pool, iysCode, brandCode, ids)
    return items.map(i => overlay(i, typeof i.transactionId === 'string' ? outcomes.get(i.transactionId) : undefined))
  }
  const o = (await outcomesOf(pool, iysCode, brandCode, [id])).get(id)
  if (o === undefined) return []
  const { rows } = await pool.query<{ cd: string | null }>(
    `SELECT to_char(creation_date AT TIME ZONE ${TR}, 'YYYY-MM-DD HH24:MI:SS') AS cd FROM consent_history h
     JOIN iys_outbox o ON o.seq = h.seq WHERE o.transaction_id = $1 AND o.iys_code = $2 AND o.brand_code = $3
     ORDER BY h.seq DESC LIMIT 1`, [id, iysCode, brandCode])
  return [overlay({ index: 0, status: 'success', transactionId: id, creationDate: rows[0]?.cd ?? undefined }, o)]
}

/** /readyz's `writeThrough`: 'off' without İYS configured, else the outbox's status(). */
export function writeThroughStatus (outbox: IysOutbox | null): string {
  return outbox === null ? 'off' : outbox.status()
}

/**
 * Starts the outbox of a gateway when write-through is on (İYS credentials and IYS_CODE set, Postgres there,
 * IYS_WRITE_THROUGH not false); null otherwise.
 */
export function startWriteThrough (config: Config, pool: Pool | null, log: Logger, metrics?: OutboxMetrics): IysOutbox | null {
  const iys = config.iys
  if (!iys.writeThrough || pool === null || iys.username === null || iys.password === null || iys.iysCode === null) {
    log.info('İYS write-through is off: consent writes are not registered with İYS (set IYS_USERNAME, IYS_PASSWORD and IYS_CODE)')
    return null
  }
  const client = new IysClient({ apiUrl: iys.apiUrl, username: iys.username, password: iys.password, log })
  const outbox = new IysOutbox({ pool, client, iysCode: iys.iysCode, log, metrics, resultPollMs: iys.resultPollMs, closeClient: true })
  outbox.start()
  log.info({ iysCode: iys.iysCode, apiUrl: iys.apiUrl }, 'İYS write-through is on: accepted provider writes are registered with İYS through the outbox')
  return outbox
}
