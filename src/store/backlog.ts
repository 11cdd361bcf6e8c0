// Backlog of the consent write queues (İYS push inbox, asynchronous consent requests) for the metrics: pending rows
// and the age of the oldest. Polled on a timer rather than on scrape, so that a scrape never waits for Postgres;
// each poll is two count queries over partial indexes of pending rows (small: pending rows are drained at once).
// When Postgres cannot be asked, the counts stay as last seen and the ages keep growing from the last figures, so
// the backlog alerts still fire during an outage that holds pending work.

import type { Logger } from 'pino'
import type { Gauge } from 'prom-client'
import { requestBacklog } from './consent-requests.js'
import { pushBacklog } from './push-inbox.js'
import type { Pool } from './pg.js'

/**
 * The gauges this monitor sets (Metrics has them). Named by shape rather than by importing metrics.ts, which sits
 * above store/ (it takes its label sets from policy/, which reads filter/, which writes through store/).
 */
export interface BacklogGauges {
  readonly pushBacklog: Gauge
  readonly pushBacklogOldest: Gauge
  readonly requestsBacklog: Gauge
  readonly requestsBacklogOldest: Gauge
}

export class BacklogMonitor {
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> | null = null
  private last = { at: 0, push: { pending: 0, oldestSeconds: 0 }, requests: { pending: 0, oldestSeconds: 0 } }

  constructor (private readonly pool: Pool, private readonly metrics: BacklogGauges, private readonly log: Logger, private readonly intervalMs = 5000) {}

  start (): void {
    this.timer = setInterval(() => { void this.poll() }, this.intervalMs)
    this.timer.unref()
    void this.poll()
  }

  /** One poll now (tests; the timer calls it). Never overlaps itself, never throws. */
  async poll (): Promise<void> {
    if (this.polling !== null) return this.polling
    this.polling = (async () => {
      try {
        const [push, requests] = await Promise.all([pushBacklog(this.pool), requestBacklog(this.pool)])
        this.last = { at: Date.now(), push, requests }
        this.publish(0)
      } catch (err) {
        this.log.debug({ err }, 'queue backlog poll failed; ageing the last figures')
        if (this.last.at > 0) this.publish((Date.now() - this.last.at) / 1000)
      } finally {
        this.polling = null
      }
    })()
    return this.polling
  }

  private publish (staleSeconds: number): void {
    const { push, requests } = this.last
    const m = this.metrics
    m.pushBacklog.set(push.pending)
    m.pushBacklogOldest.set(push.pending > 0 ? push.oldestSeconds + staleSeconds : 0)
    m.requestsBacklog.set(requests.pending)
    m.requestsBacklogOldest.set(requests.pending > 0 ? requests.oldestSeconds + staleSeconds : 0)
  }

  async stop (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.polling
  }
}
