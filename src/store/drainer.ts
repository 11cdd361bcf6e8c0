// Runs a "process one unit of queued work" function until it reports nothing left, one pass at a time (SingleFlight:
// a kick during a pass schedules another pass right after it, so no kick is lost and passes never overlap).
//
// A pass that fails (Postgres away, a row that throws) is retried on a timer with back-off (100 ms doubling to 30 s),
// not only at the next kick: a pending İYS push or consent request must not wait for the next one to arrive.
// A kick still starts a pass at once (new work may well succeed); a failure then lengthens the back-off.

import type { Logger } from 'pino'
import { SingleFlight } from '../util/single-flight.js'

export const RETRY_MIN_MS = 100
export const RETRY_MAX_MS = 30_000

export class Drainer {
  private readonly processOne: () => Promise<boolean>
  private readonly log: Logger
  private readonly what: string
  private readonly flight = new SingleFlight(() => this.pass())
  private retryMs = 0
  private retryTimer: NodeJS.Timeout | null = null
  private stopped = false

  constructor (what: string, processOne: () => Promise<boolean>, log: Logger) {
    this.what = what
    this.processOne = processOne
    this.log = log
  }

  kick (): void {
    this.flight.kick()
  }

  private async pass (): Promise<void> {
    // A pass starting now makes a pending retry redundant; a failure of this one schedules its own.
    if (this.retryTimer !== null) { clearTimeout(this.retryTimer); this.retryTimer = null }
    try {
      while (await this.processOne()) { /* next */ }
      this.retryMs = 0
    } catch (err) {
      this.failed(err as Error)
    }
  }

  private failed (err: Error): void {
    this.retryMs = this.retryMs === 0 ? RETRY_MIN_MS : Math.min(this.retryMs * 2, RETRY_MAX_MS)
    this.log.warn({ err, retryMs: this.retryMs }, `${this.what}: pass failed; retrying`)
    if (this.stopped) return
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.kick() }, this.retryMs)
    this.retryTimer.unref() // a pending retry never holds the process open
  }

  /** Resolves when no pass is running (tests, shutdown). */
  async idle (): Promise<void> {
    await this.flight.idle()
  }

  /** No more passes (shutdown): cancels a pending retry and waits for the running pass. */
  async stop (): Promise<void> {
    this.stopped = true
    this.flight.stop()
    if (this.retryTimer !== null) { clearTimeout(this.retryTimer); this.retryTimer = null }
    await this.idle()
  }
}

// ---- helpers for the queues the drainers work on (push inbox, consent requests) ----

/** Attempts before a queued row whose processing keeps throwing is closed as failed. */
export const MAX_ATTEMPTS = 5

/** A queue's pending rows and the age of the oldest, for the backlog metrics. */
export interface Backlog { pending: number, oldestSeconds: number }

/** A short description of why processing threw, stored with the row: the SQLSTATE (or error name) and the message. */
export function failureReason (err: unknown): string {
  const e = err as { code?: unknown, message?: unknown, name?: unknown } | null
  const code = typeof e?.code === 'string' ? e.code : typeof e?.name === 'string' ? e.name : 'Error'
  const message = typeof e?.message === 'string' ? e.message : String(err)
  return `${code}: ${message}`.replace(/\0/g, '').slice(0, 500)
}
