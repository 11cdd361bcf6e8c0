// Prometheus metrics, all prefixed iys_. Label sets are small and fixed (route, status class, reason, type): no
// recipient, brand or free text ever becomes a label. Children are bound once here, not looked up per request.

import client from 'prom-client'
import { CONSENT_TYPES, type ConsentType } from './domain/vocabulary.js'
import { REASON_INDEX, REASONS, type Reason } from './policy/decide.js'
import { CORRECTIONS, RETRY_CAUSES, SEND_METHODS } from './iys/outbox.js'

export const ROUTES = ['check', 'messages', 'consents', 'push', 'history', 'scrub', 'health', 'ready', 'metrics', 'token', 'other'] as const
export type Route = (typeof ROUTES)[number]

export class Metrics {
  readonly registry = new client.Registry()
  private readonly requests: client.Counter<'route' | 'status'>
  private readonly duration: client.Histogram<'route'>
  private readonly durationByRoute: Record<Route, client.Histogram.Internal<'route'>>
  private readonly decisionsBound: Record<string, client.Counter.Internal>
  private readonly scratch = new Uint32Array(REASONS.length)
  /** bound children per route and status (a handful of statuses per route: bounded) */
  private readonly requestsBound = new Map<string, client.Counter.Internal>()
  readonly bloomMaybe: client.Counter<string>
  readonly bloomAbsent: client.Counter<string>
  readonly storeErrors: client.Counter<string>
  readonly filterVersion: client.Gauge<string>
  readonly filterKeys: client.Gauge<string>
  readonly filterRebuilds: client.Counter<'result'>
  readonly uwsNative: client.Gauge<string>
  readonly decisionsWritten: client.Counter<string>
  readonly decisionsSpooled: client.Counter<string>
  readonly decisionsQuarantined: client.Counter<string>
  readonly upstreamOutcomes: client.Counter<'type' | 'status'>
  readonly breakerState: client.Gauge<'upstream'>
  readonly scrubDiskBytes: client.Gauge<string>
  // consent write queues (İYS push inbox, asynchronous consent requests), set by store/backlog.ts
  readonly pushBacklog: client.Gauge<string>
  readonly pushBacklogOldest: client.Gauge<string>
  readonly requestsBacklog: client.Gauge<string>
  readonly requestsBacklogOldest: client.Gauge<string>
  readonly pushItems: client.Counter<'outcome'>
  readonly queueFailed: client.Counter<'queue'>
  // İYS write-through outbox (iys/outbox.ts)
  readonly outboxPending: client.Gauge<string>
  readonly outboxOldest: client.Gauge<string>
  readonly outboxSent: client.Counter<'method'>
  readonly outboxRefused: client.Counter<'correction'>
  readonly outboxRetried: client.Counter<'cause'>
  // İYS push receiver sign-ins (http/push-route.ts) and the per-key rate limits (auth/rate-limit.ts)
  readonly pushAuthFailures: client.Counter<'kind'>
  readonly pushLockouts: client.Counter<string>
  readonly rateLimitLocal: client.Gauge<string>

  constructor () {
    const r = this.registry
    client.collectDefaultMetrics({ register: r, prefix: 'iys_' })
    this.requests = new client.Counter({ name: 'iys_http_requests_total', help: 'HTTP requests by route and status code', labelNames: ['route', 'status'], registers: [r] })
    this.duration = new client.Histogram({
      name: 'iys_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      labelNames: ['route'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [r]
    })
    this.durationByRoute = Object.fromEntries(ROUTES.map(route => [route, this.duration.labels(route)])) as Record<Route, client.Histogram.Internal<'route'>>
    const decisions = new client.Counter({ name: 'iys_decisions_total', help: 'Check decisions by reason and channel type', labelNames: ['reason', 'type'], registers: [r] })
    this.decisionsBound = {}
    for (const reason of REASONS) for (const type of CONSENT_TYPES) this.decisionsBound[reason + type] = decisions.labels(reason, type)
    this.bloomMaybe = new client.Counter({ name: 'iys_bloom_maybe_total', help: 'Lookups the bloom filter passed to the exact store', registers: [r] })
    this.bloomAbsent = new client.Counter({ name: 'iys_bloom_absent_total', help: 'Lookups the bloom filter answered as absent', registers: [r] })
    this.storeErrors = new client.Counter({ name: 'iys_store_errors_total', help: 'Exact-store lookups that failed (answered STORE_UNAVAILABLE or per STORE_FAILURE_MODE)', registers: [r] })
    this.filterVersion = new client.Gauge({ name: 'iys_filter_version', help: 'Filter version this process serves (0: none)', registers: [r] })
    this.filterKeys = new client.Gauge({ name: 'iys_filter_keys', help: 'Consent keys in the served filter version', registers: [r] })
    this.filterRebuilds = new client.Counter({ name: 'iys_filter_rebuilds_total', help: 'Automatic filter rebuilds this process ran (AUTO_REBUILD), by result (ok, failed)', labelNames: ['result'], registers: [r] })
    this.decisionsWritten = new client.Counter({ name: 'iys_decision_log_written_total', help: 'Decision records written to Postgres', registers: [r] })
    this.decisionsSpooled = new client.Counter({ name: 'iys_decision_log_spooled_total', help: 'Decision records spooled to disk because Postgres could not take them', registers: [r] })
    this.decisionsQuarantined = new client.Counter({ name: 'iys_decision_batches_quarantined_total', help: 'Decision records Postgres refused for their content, kept in the spool folder\'s quarantine/ with the reason', registers: [r] })
    this.upstreamOutcomes = new client.Counter({ name: 'iys_upstream_messages_total', help: 'Messages sent to carriers by channel and outcome', labelNames: ['type', 'status'], registers: [r] })
    this.breakerState = new client.Gauge({ name: 'iys_upstream_breaker_open', help: '1 while the carrier circuit breaker of a channel is open (or half open), 0 when closed', labelNames: ['upstream'], registers: [r] })
    this.scrubDiskBytes = new client.Gauge({ name: 'iys_scrub_disk_bytes', help: 'Bytes of scrub uploads and results on disk or being written (bounded by SCRUB_MAX_TOTAL_BYTES)', registers: [r] })
    this.pushBacklog = new client.Gauge({ name: 'iys_push_backlog', help: 'İYS push notifications stored and not yet applied', registers: [r] })
    this.pushBacklogOldest = new client.Gauge({ name: 'iys_push_backlog_oldest_seconds', help: 'Age of the oldest İYS push notification not yet applied (0: none pending)', registers: [r] })
    this.requestsBacklog = new client.Gauge({ name: 'iys_consent_requests_backlog', help: 'Asynchronous consent requests stored and not yet applied', registers: [r] })
    this.requestsBacklogOldest = new client.Gauge({ name: 'iys_consent_requests_backlog_oldest_seconds', help: 'Age of the oldest asynchronous consent request not yet applied (0: none pending)', registers: [r] })
    this.pushItems = new client.Counter({ name: 'iys_push_items_total', help: 'İYS push items processed by outcome (applied, stale, refused)', labelNames: ['outcome'], registers: [r] })
    this.queueFailed = new client.Counter({ name: 'iys_queue_failed_total', help: 'Push inbox rows or consent requests closed as failed after repeated errors', labelNames: ['queue'], registers: [r] })
    this.outboxPending = new client.Gauge({ name: 'iys_outbox_pending', help: 'Accepted provider consent changes not yet answered by İYS (write-through outbox)', registers: [r] })
    this.outboxOldest = new client.Gauge({ name: 'iys_outbox_oldest_seconds', help: 'Age of the oldest consent change waiting for İYS in the write-through outbox (0: none pending)', registers: [r] })
    this.outboxSent = new client.Counter({ name: 'iys_outbox_sent_total', help: 'Consent changes İYS registered through the write-through outbox, by method (single, batch)', labelNames: ['method'], registers: [r] })
    this.outboxRefused = new client.Counter({ name: 'iys_outbox_refused_total', help: 'Consent changes İYS refused after we had accepted them, by local correction (restored, withdrawn, kept, superseded)', labelNames: ['correction'], registers: [r] })
    this.outboxRetried = new client.Counter({ name: 'iys_outbox_retried_total', help: 'Write-through sends put off to retry later, by cause (unavailable, rate_limited, unauthorized, error)', labelNames: ['cause'], registers: [r] })
    for (const m of SEND_METHODS) this.outboxSent.labels(m).inc(0)
    for (const c of CORRECTIONS) this.outboxRefused.labels(c).inc(0)
    for (const c of RETRY_CAUSES) this.outboxRetried.labels(c).inc(0)
    this.pushAuthFailures = new client.Counter({ name: 'iys_push_auth_failures_total', help: 'İYS push requests refused at sign-in, by kind (missing: no basic credentials, wrong: wrong credentials, locked: the source is locked out)', labelNames: ['kind'], registers: [r] })
    this.pushLockouts = new client.Counter({ name: 'iys_push_lockouts_total', help: 'Sources the İYS push receiver locked out after repeated failed sign-ins', registers: [r] })
    this.rateLimitLocal = new client.Gauge({ name: 'iys_rate_limit_local', help: '1 while per-key rate limits are kept per process because Redis does not answer, 0 while shared through Redis (or without Redis)', registers: [r] })
    this.uwsNative = new client.Gauge({ name: 'iys_uws_native', help: '1 if the native uWebSockets.js binding is loaded, 0 on the slow pure-JS fallback', registers: [r] })
  }

  request (route: Route, status: number, seconds: number): void {
    const key = route + status
    let child = this.requestsBound.get(key)
    if (child === undefined) { child = this.requests.labels(route, String(status)); this.requestsBound.set(key, child) }
    child.inc()
    this.durationByRoute[route].observe(seconds)
  }

  /** Counts a batch of decisions: one inc() per reason present (prom-client hashes labels on every call). */
  decisions (type: ConsentType, results: ArrayLike<{ readonly reason: Reason }>): void {
    const counts = this.scratch
    counts.fill(0)
    for (let i = 0; i < results.length; i++) counts[REASON_INDEX[results[i]!.reason]]++
    for (let r = 0; r < REASONS.length; r++) if (counts[r]! > 0) this.decisionsBound[REASONS[r]! + type]!.inc(counts[r])
  }
}
