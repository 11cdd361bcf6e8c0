// How current the consent pipeline is, for the metrics and /readyz: the write queues (İYS push inbox, asynchronous
// consent requests), the change applier's lag behind the ledger, sync-iys's last pulls, the decision log's spool on
// local disk, and whether Postgres answers at all. Polled on a timer rather than on scrape, so that a scrape never
// waits for Postgres; each poll is a handful of small queries over indexes (pending rows, the ledger's seq key, one
// row per pulled brand) and one listing of the spool folder.
//
// When Postgres cannot be asked, the counts stay as last seen and the ages keep growing from the last figures, so the
// backlog and freshness alerts still fire during an outage that holds pending work; iys_postgres_unreachable says why.

import type { Logger } from 'pino'
import type { Gauge } from 'prom-client'
import { requestBacklog } from './consent-requests.js'
import { pushBacklog } from './push-inbox.js'
import type { Pool } from './pg.js'

/**
 * The gauges this monitor sets (Metrics has them). Named by shape rather than by importing metrics.ts, which sits
 * above store/ (it takes its label sets from policy/, which reads filter/, which writes through store/).
 */
export interface FreshnessGauges {
  readonly pushBacklog: Gauge
  readonly pushBacklogOldest: Gauge
  readonly requestsBacklog: Gauge
  readonly requestsBacklogOldest: Gauge
  readonly postgresUnreachable: Gauge
  readonly ledgerSeq: Gauge
  readonly appliedSeq: Gauge
  readonly applierLagSeconds: Gauge
  readonly syncBrands: Gauge
  readonly syncFailingBrands: Gauge
  readonly syncSuccessAge: Gauge
  readonly syncAttemptAge: Gauge
  readonly spoolSegments: Gauge
  readonly spoolBytes: Gauge
  readonly spoolOldest: Gauge
  readonly quarantinedFiles: Gauge
}

export interface FreshnessOptions {
  /** The change applier's watermark (highest seq applied to Redis); null without Redis (nothing to lag behind). */
  appliedSeq?: () => number | null
  /**
   * What waits in the decision log's spool folder (audit/journal.ts spoolFigures, given by the caller: store/ sits
   * below audit/); null when decisions are not logged.
   */
  spool?: (() => Promise<SpoolFigures>) | null
  intervalMs?: number
}

/** A spool folder's contents, as audit/journal.ts counts them. */
export interface SpoolFigures {
  segments: number
  bytes: number
  /** mtime (ms) of the oldest segment; null when there is none */
  oldestMs: number | null
  quarantined: number
}

/** Postgres as this gateway last found it: answering, or not since `since` (ms). */
export type PostgresHealth = { reachable: true } | { reachable: false, since: number }

interface Figures {
  at: number
  push: { pending: number, oldestSeconds: number }
  requests: { pending: number, oldestSeconds: number }
  ledger: { head: number, lagSeconds: number }
  sync: { brands: number, failing: number, successAge: number, attemptAge: number }
}

// The oldest change the applier has not reached: the ledger's primary key answers both parts from its index.
const LEDGER_SQL = `SELECT (SELECT max(seq) FROM consent_history)::text AS head,
  (SELECT extract(epoch FROM now() - received_at)::float8 FROM consent_history WHERE seq > $1 ORDER BY seq LIMIT 1) AS lag`

// One row per brand sync-iys has touched (migration 9); a brand never pulled to the end counts from its first try.
const SYNC_SQL = `SELECT count(*)::int AS brands,
  (count(*) FILTER (WHERE failed_at IS NOT NULL AND (succeeded_at IS NULL OR failed_at > succeeded_at)))::int AS failing,
  coalesce(extract(epoch FROM now() - min(coalesce(succeeded_at, created_at))), 0)::float8 AS success_age,
  coalesce(extract(epoch FROM now() - min(coalesce(attempted_at, created_at))), 0)::float8 AS attempt_age
  FROM iys_sync_cursors`

export class FreshnessMonitor {
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> | null = null
  private last: Figures | null = null
  private pg: PostgresHealth = { reachable: true }
  private readonly appliedSeq: () => number | null
  private readonly spool: (() => Promise<SpoolFigures>) | null
  private readonly intervalMs: number

  constructor (private readonly pool: Pool, private readonly metrics: FreshnessGauges, private readonly log: Logger, opts: FreshnessOptions = {}) {
    this.appliedSeq = opts.appliedSeq ?? (() => null)
    this.spool = opts.spool ?? null
    this.intervalMs = opts.intervalMs ?? 5000
  }

  /** Postgres as the last poll found it (for /readyz). */
  get postgres (): PostgresHealth { return this.pg }

  start (): void {
    this.timer = setInterval(() => { void this.poll() }, this.intervalMs)
    this.timer.unref()
    void this.poll()
  }

  /** One poll now (tests; the timer calls it). Never overlaps itself, never throws. */
  async poll (): Promise<void> {
    if (this.polling !== null) return this.polling
    this.polling = Promise.all([this.pollPostgres(), this.pollSpool()]).then(() => {}).finally(() => { this.polling = null })
    return this.polling
  }

  private async pollPostgres (): Promise<void> {
    const applied = this.appliedSeq()
    try {
      const [push, requests, ledger, sync] = await Promise.all([
        pushBacklog(this.pool),
        requestBacklog(this.pool),
        this.pool.query<{ head: string | null, lag: number | null }>(LEDGER_SQL, [applied ?? Number.MAX_SAFE_INTEGER]),
        this.pool.query<{ brands: number, failing: number, success_age: number, attempt_age: number }>(SYNC_SQL)
      ])
      const l = ledger.rows[0]!
      const s = sync.rows[0]!
      this.last = {
        at: Date.now(),
        push,
        requests,
        ledger: { head: Number(l.head ?? 0), lagSeconds: Math.max(0, l.lag ?? 0) },
        sync: { brands: s.brands, failing: s.failing, successAge: s.brands > 0 ? s.success_age : 0, attemptAge: s.brands > 0 ? s.attempt_age : 0 }
      }
      if (!this.pg.reachable) this.log.info('Postgres answers again')
      this.pg = { reachable: true }
      this.publish(0, applied)
    } catch (err) {
      if (this.pg.reachable) {
        this.log.error({ err }, 'Postgres (DATABASE_URL) does not answer: the consent API answers 503 and decisions spool to disk until it is back')
        this.pg = { reachable: false, since: Date.now() }
      }
      if (this.last !== null) this.publish((Date.now() - this.last.at) / 1000, applied)
    }
    this.metrics.postgresUnreachable.set(this.pg.reachable ? 0 : 1)
  }

  /** Ages grow by `staleSeconds` when the figures are from an earlier poll (Postgres is not answering). */
  private publish (staleSeconds: number, applied: number | null): void {
    const { push, requests, ledger, sync } = this.last!
    const m = this.metrics
    const age = (pending: number, seconds: number): number => pending > 0 ? seconds + staleSeconds : 0
    m.pushBacklog.set(push.pending)
    m.pushBacklogOldest.set(age(push.pending, push.oldestSeconds))
    m.requestsBacklog.set(requests.pending)
    m.requestsBacklogOldest.set(age(requests.pending, requests.oldestSeconds))
    m.ledgerSeq.set(ledger.head)
    if (applied !== null) {
      m.appliedSeq.set(applied)
      m.applierLagSeconds.set(age(ledger.head > applied ? 1 : 0, ledger.lagSeconds))
    }
    m.syncBrands.set(sync.brands)
    m.syncFailingBrands.set(sync.failing)
    m.syncSuccessAge.set(age(sync.brands, sync.successAge))
    m.syncAttemptAge.set(age(sync.brands, sync.attemptAge))
  }

  /** The decision journal's segments waiting on local disk, and what Postgres refused (quarantine/). */
  private async pollSpool (): Promise<void> {
    if (this.spool === null) return
    try {
      const f = await this.spool()
      const m = this.metrics
      m.spoolSegments.set(f.segments)
      m.spoolBytes.set(f.bytes)
      m.spoolOldest.set(f.oldestMs !== null ? Math.max(0, (Date.now() - f.oldestMs) / 1000) : 0)
      m.quarantinedFiles.set(f.quarantined)
    } catch (err) {
      this.log.debug({ err }, 'decision spool folder cannot be listed')
    }
  }

  async stop (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.polling
  }
}
