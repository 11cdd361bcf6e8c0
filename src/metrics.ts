// Prometheus metrics, all prefixed iys_. Label sets are small and fixed (route, status class, reason, type): no
// recipient, brand or free text ever becomes a label. What every request or decision counts is a slot of a typed
// array (slot-metrics.ts), read on scrape.

import client from 'prom-client'
import { CONSENT_TYPES, type ConsentType } from './domain/vocabulary.js'
import { REASON_INDEX, REASONS, type Reason } from './policy/decide.js'
import { CORRECTIONS, RETRY_CAUSES, SEND_METHODS } from './iys/outbox.js'
import type { ReplicaFigures } from './filter/mirror.js'
import { SlotCounter, SlotHistogram } from './slot-metrics.js'

// check_batch: /v1/check with a `recipients` list (up to 1000), timed apart from single checks (their latencies differ
// by two orders of magnitude, so one histogram would hide a slow single check behind the batches)
export const ROUTES = ['check', 'check_batch', 'messages', 'consents', 'push', 'history', 'scrub', 'health', 'ready', 'metrics', 'token', 'other'] as const
export type Route = (typeof ROUTES)[number]
const ROUTE_INDEX = Object.fromEntries(ROUTES.map((r, i) => [r, i])) as Record<Route, number>
/** iys_http_requests_total's slots per route: one per status code 100…599 */
const STATUS_SLOTS = 500
const TYPE_INDEX = Object.fromEntries(CONSENT_TYPES.map((t, i) => [t, i])) as Record<ConsentType, number>

/** Why a gateway is not ready, bounded for the iys_ready label; /readyz gives the same word as `reason`. */
export const READY_REASONS = ['ok', 'replica_without_redis', 'no_filter_version', 'filter_version_lost', 'filter_version_unloadable', 'redis_unreachable', 'api_keys_not_loaded'] as const
export type ReadyReason = (typeof READY_REASONS)[number]

export interface MetricSources {
  readiness (): { ready: boolean, reason: ReadyReason }
  /** [upstream name, whether its breaker refuses messages now] per configured carrier */
  breakers (): Iterable<readonly [string, boolean]>
  /** the local replica's figures (filter/mirror.ts); null without Redis */
  replica?: () => ReplicaFigures | null
}

/** Scrub jobs by state, and the wait of the oldest queued one (iys_scrub_jobs, iys_scrub_queue_oldest_seconds). */
export const SCRUB_JOB_STATES = ['uploading', 'queued', 'running'] as const
export type ScrubJobCounts = Record<(typeof SCRUB_JOB_STATES)[number], number> & { oldestQueuedSeconds: number }

export class Metrics {
  readonly registry = new client.Registry()
  private readonly requests: SlotCounter
  private readonly duration: SlotHistogram
  /** slot: reason index × CONSENT_TYPES.length + type index */
  private readonly decisionsTotal: SlotCounter
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
  // the SMPP front end (smpp/): binds, PDUs answered, receipts and MO messages routed
  readonly smppBinds: client.Gauge<string>
  readonly smppPdus: client.Counter<'command' | 'status'>
  readonly smppReceipts: client.Counter<'result'>
  readonly smppMo: client.Counter<'result'>
  // the SMTP front end (smtp/): commands answered, relayed copies
  readonly smtpCommands: client.Counter<'command' | 'result'>
  readonly smtpRelay: client.Counter<'result'>
  readonly smtpSpooled: client.Gauge<string>
  readonly scrubDiskBytes: client.Gauge<string>
  // consent write queues (İYS push inbox, asynchronous consent requests), set by store/freshness.ts
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
  // Freshness of the consent pipeline, polled from Postgres and the spool folder (store/freshness.ts)
  readonly postgresUnreachable: client.Gauge<string>
  readonly ledgerSeq: client.Gauge<string>
  readonly appliedSeq: client.Gauge<string>
  readonly applierLagSeconds: client.Gauge<string>
  readonly syncBrands: client.Gauge<string>
  readonly syncFailingBrands: client.Gauge<string>
  readonly syncSuccessAge: client.Gauge<string>
  readonly syncAttemptAge: client.Gauge<string>
  readonly spoolSegments: client.Gauge<string>
  readonly spoolBytes: client.Gauge<string>
  readonly spoolOldest: client.Gauge<string>
  readonly quarantinedFiles: client.Gauge<string>
  /** What iys_ready and the carrier breakers report are read on scrape (see watch()): null until the server wires them. */
  private sources: MetricSources | null = null

  // ---- Scrub jobs (issue 11; scrub/engine.ts, audit/decisions-hook.ts). One block, kept apart: the fields are
  // created by their initialisers (after `registry`), so nothing in the constructor below refers to them.
  /** Counts jobs by state on scrape (ScrubQueue wires it): null until a queue exists. */
  private scrubJobCounts: (() => ScrubJobCounts) | null = null
  readonly scrubJobs = new client.Gauge({
    name: 'iys_scrub_jobs',
    help: 'Scrub jobs on this gateway by state: uploading, queued (waiting for the one job that runs at a time), running',
    labelNames: ['state'],
    registers: [this.registry],
    collect: () => {
      const counts = this.scrubJobCounts?.()
      if (counts === undefined) return
      for (const state of SCRUB_JOB_STATES) this.scrubJobs.labels(state).set(counts[state])
    }
  })
  readonly scrubQueueOldest = new client.Gauge({
    name: 'iys_scrub_queue_oldest_seconds',
    help: 'How long the oldest queued scrub job has waited to run (0: none queued)',
    registers: [this.registry],
    collect: () => { const counts = this.scrubJobCounts?.(); if (counts !== undefined) this.scrubQueueOldest.set(counts.oldestQueuedSeconds) }
  })
  readonly scrubLines = new client.Counter({ name: 'iys_scrub_lines_total', help: 'Lines scrub jobs decided (duplicates and invalid lines included): rate() is lines/s', registers: [this.registry] })
  readonly scrubJobsFinished = new client.Counter({ name: 'iys_scrub_jobs_finished_total', help: 'Scrub job runs that ended, by result (done, failed; a run a shutdown interrupted is neither: it runs again)', labelNames: ['result'], registers: [this.registry] })

  /** Counts jobs by state on every scrape. */
  watchScrubJobs (counts: () => ScrubJobCounts): void {
    this.scrubJobCounts = counts
    for (const result of ['done', 'failed']) this.scrubJobsFinished.labels(result).inc(0)
  }

  /** iys_decisions_total from counts by reason index (REASONS): a scrub chunk's, one inc() per reason present. */
  decisionCounts (type: ConsentType, counts: ArrayLike<number>): void {
    const base = TYPE_INDEX[type]
    for (let r = 0; r < REASONS.length; r++) if (counts[r]! > 0) this.decisionsTotal.inc(r * CONSENT_TYPES.length + base, counts[r])
  }
  // ---- end of scrub jobs

  constructor () {
    const r = this.registry
    client.collectDefaultMetrics({ register: r, prefix: 'iys_' })
    // prom-client names three gauges *_total, which `promtool check metrics` refuses (only counters end in _total);
    // their labelled twins (iys_nodejs_active_handles{type}, ...) carry the same figures: sum() gives the totals.
    for (const name of ['handles', 'requests', 'resources']) r.removeSingleMetric(`iys_nodejs_active_${name}_total`)
    this.requests = new SlotCounter({
      name: 'iys_http_requests_total',
      help: 'HTTP requests by route and status code',
      labelNames: ['route', 'status'],
      size: ROUTES.length * STATUS_SLOTS,
      labelsOf: s => ({ route: ROUTES[Math.floor(s / STATUS_SLOTS)]!, status: String(100 + s % STATUS_SLOTS) })
    }, r)
    this.duration = new SlotHistogram({
      name: 'iys_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      label: 'route',
      series: ROUTES,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]
    }, r)
    this.decisionsTotal = new SlotCounter({
      name: 'iys_decisions_total',
      help: 'Check decisions by reason and channel type',
      labelNames: ['reason', 'type'],
      size: REASONS.length * CONSENT_TYPES.length,
      labelsOf: s => ({ reason: REASONS[Math.floor(s / CONSENT_TYPES.length)]!, type: CONSENT_TYPES[s % CONSENT_TYPES.length]! })
    }, r)
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
    this.smppBinds = new client.Gauge({ name: 'iys_smpp_binds', help: 'Providers\' SMPP sessions bound to this gateway', registers: [r] })
    this.smppPdus = new client.Counter({ name: 'iys_smpp_pdus_total', help: 'SMPP requests from providers\' binds answered, by command and command_status name (malformed: answered generic_nack)', labelNames: ['command', 'status'], registers: [r] })
    this.smppReceipts = new client.Counter({ name: 'iys_smpp_receipts_total', help: 'Operators\' delivery receipts by what became of them (routed, delivered to a bind, unknown_message, queue_full_dropped_oldest…)', labelNames: ['result'], registers: [r] })
    this.smppMo = new client.Counter({ name: 'iys_smpp_mo_total', help: 'MO messages from operators by what became of them (routed, unrouted, rejection_recorded…)', labelNames: ['result'], registers: [r] })
    this.smtpCommands = new client.Counter({ name: 'iys_smtp_commands_total', help: 'SMTP commands of providers\' mail software by command (auth, mail, rcpt, data) and result (rcpt: accepted, REJECTED, NO_CONSENT, STORE_UNAVAILABLE, invalid, throttled…)', labelNames: ['command', 'result'], registers: [r] })
    this.smtpRelay = new client.Counter({ name: 'iys_smtp_relay_total', help: 'Copies relayed to the upstream mail relay by result (delivered, retrying, bounced)', labelNames: ['result'], registers: [r] })
    this.smtpSpooled = new client.Gauge({ name: 'iys_smtp_spool_messages', help: 'Messages in the SMTP spool with recipients not yet delivered or bounced', registers: [r] })
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
    const sources = (): MetricSources | null => this.sources
    new client.Gauge({
      name: 'iys_ready',
      help: 'Readiness as /readyz answers it: 1 with reason="ok" (or "replica_without_redis": Redis away, checks answered from the local replica kept current from Postgres), else 0 with the one reason (bounded: ' + READY_REASONS.join(', ') + ')',
      labelNames: ['reason'],
      registers: [r],
      collect () {
        const s = sources()
        if (s === null) return
        const { ready, reason } = s.readiness()
        this.reset()
        this.labels(reason).set(ready ? 1 : 0)
      }
    })
    new client.Gauge({
      name: 'iys_upstream_breaker_open',
      help: '1 while the carrier circuit breaker of a channel refuses messages (open, or its probe in flight), 0 while messages go through (closed, or the cool-down is over and the next message is the probe)',
      labelNames: ['upstream'],
      registers: [r],
      collect () {
        const s = sources()
        if (s === null) return
        this.reset()
        for (const [upstream, refusing] of s.breakers()) this.labels(upstream).set(refusing ? 1 : 0)
      }
    })
    const replica = (): ReturnType<NonNullable<MetricSources['replica']>> => sources()?.replica?.() ?? null
    new client.Gauge({ name: 'iys_replica_serving', help: '1 while checks are answered from the local exact replica (built and current within REPLICA_MAX_LAG_MS), 0 while they ask Redis', registers: [r], collect () { this.set(replica()?.serving === true ? 1 : 0) } })
    new client.Gauge({ name: 'iys_replica_keys', help: 'Consent keys in the local exact replica (0: none built)', registers: [r], collect () { this.set(replica()?.keys ?? 0) } })
    new client.Gauge({ name: 'iys_replica_bytes', help: 'Memory of the local exact replica (SharedArrayBuffers), bounded by REPLICA_MAX_BYTES', registers: [r], collect () { this.set(replica()?.bytes ?? 0) } })
    new client.Gauge({ name: 'iys_replica_lag_seconds', help: 'Time since the replica last had news (a change-stream entry, an applier heartbeat, or its own read of the ledger reaching the end while the stream is quiet): past REPLICA_MAX_LAG_MS it stops answering alone', registers: [r], collect () { const a = replica()?.newsAgeMs; this.set(a === null || a === undefined ? 0 : a / 1000) } })
    new client.Gauge({ name: 'iys_replica_seq', help: 'Every ledger change up to this seq is in the local replica (0: no replica)', registers: [r], collect () { this.set(replica()?.seq ?? 0) } })
    new client.Gauge({ name: 'iys_replica_following_ledger', help: '1 while the change stream is quiet (Redis away) and the replica follows the ledger in Postgres itself', registers: [r], collect () { this.set(replica()?.newsFrom === 'ledger' ? 1 : 0) } })
    this.postgresUnreachable = new client.Gauge({ name: 'iys_postgres_unreachable', help: '1 while Postgres (DATABASE_URL) does not answer this gateway: the consent API and evidence answer 503, decisions spool to disk (0 when it answers, or without DATABASE_URL)', registers: [r] })
    this.ledgerSeq = new client.Gauge({ name: 'iys_ledger_seq', help: 'Highest change sequence number in the Postgres evidence ledger', registers: [r] })
    this.appliedSeq = new client.Gauge({ name: 'iys_applied_seq', help: 'Highest ledger sequence number applied to Redis (the change applier\'s watermark as this gateway last saw it)', registers: [r] })
    this.applierLagSeconds = new client.Gauge({ name: 'iys_applier_lag_seconds', help: 'Age of the oldest ledger change not yet applied to Redis (0: none waiting); checks do not see such a change yet', registers: [r] })
    this.syncBrands = new client.Gauge({ name: 'iys_sync_brands', help: 'Brands sync-iys has pulled İYS changes for (recorded in Postgres; 0: sync-iys never ran)', registers: [r] })
    this.syncFailingBrands = new client.Gauge({ name: 'iys_sync_failing_brands', help: 'Brands whose last sync-iys pull failed', registers: [r] })
    this.syncSuccessAge = new client.Gauge({ name: 'iys_sync_success_age_seconds', help: 'Time since the stalest brand last pulled İYS changes to the end (İYS keeps only the last days of changes)', registers: [r] })
    this.syncAttemptAge = new client.Gauge({ name: 'iys_sync_attempt_age_seconds', help: 'Time since the stalest brand was last tried by sync-iys (grows when sync-iys is not running)', registers: [r] })
    this.spoolSegments = new client.Gauge({ name: 'iys_decision_log_spool_segments', help: 'Decision journal segments on local disk not yet in Postgres (one or two while Postgres keeps up)', registers: [r] })
    this.spoolBytes = new client.Gauge({ name: 'iys_decision_log_spool_bytes', help: 'Bytes of decision journal segments on local disk not yet in Postgres', registers: [r] })
    this.spoolOldest = new client.Gauge({ name: 'iys_decision_log_spool_oldest_seconds', help: 'Age of the oldest decision journal segment on local disk (0: none)', registers: [r] })
    this.quarantinedFiles = new client.Gauge({ name: 'iys_decision_log_quarantine_files', help: 'Decision records Postgres refused, kept in the spool folder\'s quarantine/ for a person to look at', registers: [r] })
    this.uwsNative = new client.Gauge({ name: 'iys_uws_native', help: '1 if the native uWebSockets.js binding is loaded, 0 on the slow pure-JS fallback', registers: [r] })
  }

  /** Wires the figures read on scrape: readiness (iys_ready) and whether each carrier breaker refuses messages. */
  watch (sources: MetricSources): void {
    this.sources = sources
  }

  request (route: Route, status: number, seconds: number): void {
    const i = ROUTE_INDEX[route]
    this.requests.inc(i * STATUS_SLOTS + (status - 100))
    this.duration.observe(i, seconds)
  }

  /** Counts a batch of decisions, one slot add each. */
  decisions (type: ConsentType, results: ArrayLike<{ readonly reason: Reason }>): void {
    const base = TYPE_INDEX[type]
    for (let i = 0; i < results.length; i++) this.decisionsTotal.inc(REASON_INDEX[results[i]!.reason] * CONSENT_TYPES.length + base)
  }
}
