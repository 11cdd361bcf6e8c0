// The fault suite's load generator: a few concurrent HTTP clients that send /v1/check (single and batches) and
// /v1/messages for a bounded time and judge every answer against the truth, with the figures of one phase; and the
// queries that find the answered decisions in Postgres afterwards.

import type pg from 'pg'
import { messyPhone } from '../../loaders/generate.js'
import { mulberry32 } from '../../src/util/random.js'
import { sleep } from './fault-rig.js'
import { authFor } from './gateway.js'
import { isDocumented5xx, POISON_RECIPIENTS, truthKey, type Truth, type Wrong } from './fault-truth.js'

export interface PhaseFigures {
  name: string
  /** fault window, ms since the phase started (null: no fault in this phase) */
  faultStartMs: number | null
  faultEndMs: number | null
  requests: number
  /** decisions answered (items in 200 answers) */
  answered: number
  checkItems: number
  messageItems: number
  /** answers received between fault start and fault end */
  during: { answered: number, allowed: number, storeUnavailable: number, http503: number, netErrors: number }
  /** answers from fault start until the first correct allowed answer after the fault (what clients saw meanwhile) */
  meanwhile: { answered: number, allowed: number, storeUnavailable: number, http503: number, netErrors: number }
  storeUnavailable: number
  http503: number
  netErrors: number
  /** 5xx that are not a documented STORE_UNAVAILABLE-style answer */
  bad5xx: number
  /** other non-200 answers to well-formed load requests */
  otherStatus: number
  wrong: Record<Wrong, number>
  /** wrong answers given while the last /readyz said ready */
  wrongWhileReady: number
  /** /readyz said 200 while the gateway could not vouch for what it serves (Redis empty, no new version yet) */
  readyWhileUnvouched: number
  readyPolls: number
  /** /readyz answers 200 with reason replica_without_redis */
  readyFromReplica: number
  maxLatencyMs: number
  /** where the slowest answer was: route and ms since the phase started */
  maxLatencyWhere: string
  /** fault end → first correct allowed (CONSENT) answer, and → first /readyz 200 */
  recoveryAllowedMs: number | null
  recoveryReadyMs: number | null
  /** decisions answered but not found in Postgres at the end of the phase (checks: by count; messages: by id) */
  lostCheckDecisions: number | null
  lostMessageDecisions: number | null
  /** messages the carrier has with no decision record, and messages the carrier has that truth blocks */
  sentWithoutDecision: number | null
  sentButBlocked: number
  gatewayCrashes: number
  /** consent changes the suite made (a RET pushed or written) that never took effect */
  changesNotApplied: number
  notes: string[]
  samples: string[]
}

interface LoadOptions {
  url: () => string
  truth: Truth
  clients: number
  pauseMs: number
  seed: number
  /** a fresh prefix for the messageIds of this phase */
  idPrefix: string
}

const TYPES = ['MESAJ', 'ARAMA', 'EPOSTA'] as const

/** One phase of traffic: start(), mark the fault, stop(); then figures. */
export class LoadPhase {
  readonly fig: PhaseFigures
  readonly startedAt = Date.now()
  stoppedAt = 0
  /** answered check decisions per truth key (brand|type|rt|canonical recipient), to match against Postgres */
  readonly answeredChecks = new Map<string, number>()
  /** messageId → [truth key, recipientType] of every message answered */
  readonly answeredMessages = new Map<string, [string, string]>()
  /** messageId → truth key of every message sent (answered or not), and when (sent, or answered) */
  readonly sentMessages = new Map<string, { key: string, at: number }>()
  private running = true
  private readonly loops: Promise<void>[] = []
  private faultStart = 0
  private faultEnd = 0
  private lastReady: boolean | null = null
  /**
   * set while Redis is known to hold no version: a /readyz 200 then is dishonest, unless its reason is
   * replica_without_redis (the gateway has not reached Redis since and answers from its local replica, kept exact
   * from the ledger: its answers are judged like any other)
   */
  unvouched = false
  /** asked before a /readyz 200 is counted as dishonest: true when a version has appeared in the meantime */
  vouched: (() => Promise<boolean>) | null = null
  private readonly rnd: () => number
  private n = 0
  private readonly opts: LoadOptions
  private readonly groupList: [string, string[]][]

  constructor (name: string, opts: LoadOptions) {
    this.opts = opts
    this.rnd = mulberry32(opts.seed)
    this.groupList = [...opts.truth.groups]
    this.fig = {
      name, faultStartMs: null, faultEndMs: null, requests: 0, answered: 0, checkItems: 0, messageItems: 0,
      during: { answered: 0, allowed: 0, storeUnavailable: 0, http503: 0, netErrors: 0 },
      meanwhile: { answered: 0, allowed: 0, storeUnavailable: 0, http503: 0, netErrors: 0 },
      storeUnavailable: 0, http503: 0, netErrors: 0, bad5xx: 0, otherStatus: 0,
      wrong: { retAllowed: 0, noOnayAllowed: 0, wrongBlocked: 0, wrongReason: 0 }, wrongWhileReady: 0,
      readyWhileUnvouched: 0, readyPolls: 0, readyFromReplica: 0, maxLatencyMs: 0, maxLatencyWhere: '', recoveryAllowedMs: null, recoveryReadyMs: null,
      lostCheckDecisions: null, lostMessageDecisions: null, sentWithoutDecision: null, sentButBlocked: 0, gatewayCrashes: 0, changesNotApplied: 0, notes: [], samples: []
    }
  }

  start (): this {
    for (let i = 0; i < this.opts.clients; i++) this.loops.push(this.client())
    this.loops.push(this.readyPoller())
    return this
  }

  markFaultStart (): void { this.faultStart = Date.now(); this.fig.faultStartMs = this.faultStart - this.startedAt }
  markFaultEnd (): void { this.faultEnd = Date.now(); this.fig.faultEndMs = this.faultEnd - this.startedAt }

  async stop (): Promise<void> {
    this.running = false
    await Promise.all(this.loops)
    this.stoppedAt = Date.now()
  }

  note (s: string): void { this.fig.notes.push(s) }

  private sample (s: string): void { if (this.fig.samples.length < 12) this.fig.samples.push(s) }

  private inFault (t: number): boolean { return this.faultStart > 0 && t >= this.faultStart && (this.faultEnd === 0 || t <= this.faultEnd) }
  private beforeRecovery (t: number): boolean { return this.faultStart > 0 && t >= this.faultStart && this.fig.recoveryAllowedMs === null }

  private async readyPoller (): Promise<void> {
    while (this.running) {
      const sent = Date.now()
      // Judged only when Redis was already back empty as the request left: an answer to a request sent before (while
      // the gateway still rightly served) must not be judged by a probe that waited for the empty Redis to come back.
      const unvouchedAtSend = this.unvouched
      let ready = false
      let fromReplica = false
      try {
        const res = await fetch(this.opts.url() + '/readyz', { signal: AbortSignal.timeout(1000) })
        const body = await res.text()
        ready = res.status === 200
        fromReplica = ready && body.includes('"reason":"replica_without_redis"')
      } catch { /* not listening: not ready */ }
      this.lastReady = ready
      this.fig.readyPolls++
      if (fromReplica) this.fig.readyFromReplica++
      if (ready && !fromReplica && unvouchedAtSend && this.unvouched && !(await this.vouched?.().catch(() => false) ?? false)) {
        this.fig.readyWhileUnvouched++
        this.sample(`/readyz answered 200 while Redis held no filter version, at +${Date.now() - this.startedAt} ms`)
      }
      if (ready && this.faultEnd > 0 && sent >= this.faultEnd && this.fig.recoveryReadyMs === null) this.fig.recoveryReadyMs = Date.now() - this.faultEnd
      await sleep(100)
    }
  }

  private pick<T> (xs: readonly T[]): T { return xs[Math.floor(this.rnd() * xs.length)]! }

  /** A recipient of the group (stored: ONAY or RET) or one nobody has (no record), in a canonical or messy form. */
  private recipientFor (type: string, list: string[]): { canonical: string, input: string } {
    if (this.rnd() < 0.75) {
      const canonical = this.pick(list)
      return { canonical, input: type !== 'EPOSTA' && this.rnd() < 0.3 ? messyPhone(canonical, this.rnd) : canonical }
    }
    const canonical = type === 'EPOSTA' ? `nobody${Math.floor(this.rnd() * 1e9)}@example.org` : '+905' + String(Math.floor(this.rnd() * 1e9)).padStart(9, '0')
    if (POISON_RECIPIENTS.has(canonical)) return this.recipientFor(type, list)
    return { canonical, input: canonical }
  }

  private async client (): Promise<void> {
    while (this.running) {
      const roll = this.rnd()
      try {
        if (roll < 0.55) await this.check(1)
        else if (roll < 0.8) await this.check(20)
        else await this.messages(5)
      } catch (err) {
        // A 200 whose body is not the documented answer (unparsable, wrong shape) is a wrong answer too.
        this.fig.wrong.wrongReason++
        this.sample(`load client error: ${(err as Error).message}`)
      }
      if (this.opts.pauseMs > 0) await sleep(this.opts.pauseMs)
    }
  }

  private async post (path: string, body: unknown): Promise<{ status: number, text: string, sent: number, at: number } | null> {
    const sent = Date.now()
    this.fig.requests++
    try {
      const res = await fetch(this.opts.url() + path, { method: 'POST', headers: { 'content-type': 'application/json', ...authFor(this.opts.url()) }, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) })
      const text = await res.text()
      const at = Date.now()
      if (at - sent > this.fig.maxLatencyMs) { this.fig.maxLatencyMs = at - sent; this.fig.maxLatencyWhere = `${path} sent at +${sent - this.startedAt} ms` }
      if (res.status !== 200) this.countStatus(path, res.status, text, at)
      return { status: res.status, text, sent, at }
    } catch {
      this.fig.netErrors++
      if (this.inFault(Date.now())) this.fig.during.netErrors++
      if (this.beforeRecovery(Date.now())) this.fig.meanwhile.netErrors++
      return null
    }
  }

  private countStatus (path: string, status: number, text: string, at: number): void {
    if (status === 503) {
      this.fig.http503++
      if (this.inFault(at)) this.fig.during.http503++
      if (this.beforeRecovery(at)) this.fig.meanwhile.http503++
    }
    if (status >= 500 && !isDocumented5xx(status, text)) {
      this.fig.bad5xx++
      this.sample(`${path} answered ${status}: ${text.slice(0, 300)}`)
    } else if (status < 500) {
      this.fig.otherStatus++
      this.sample(`${path} answered ${status}: ${text.slice(0, 300)}`)
    }
  }

  private judge (key: string, rt: string, r: { allowed: boolean, reason: string }, sent: number, at: number, what: string): void {
    this.fig.answered++
    const during = this.inFault(at)
    if (during) {
      this.fig.during.answered++
      if (r.allowed) this.fig.during.allowed++
      if (r.reason === 'STORE_UNAVAILABLE') this.fig.during.storeUnavailable++
    }
    if (this.beforeRecovery(at)) {
      this.fig.meanwhile.answered++
      if (r.allowed) this.fig.meanwhile.allowed++
      if (r.reason === 'STORE_UNAVAILABLE') this.fig.meanwhile.storeUnavailable++
    }
    if (r.reason === 'STORE_UNAVAILABLE') this.fig.storeUnavailable++
    const w = this.opts.truth.judge(key, rt, r.allowed, r.reason, at)
    if (w !== null) {
      this.fig.wrong[w]++
      if (this.lastReady === true) this.fig.wrongWhileReady++
      this.sample(`${what}: ${w} (truth ${this.opts.truth.map.get(key) ?? 'none'}, answered allowed=${r.allowed} ${r.reason}) at +${at - this.startedAt} ms`)
    } else if (r.allowed && r.reason === 'CONSENT' && this.faultEnd > 0 && sent >= this.faultEnd && this.fig.recoveryAllowedMs === null) {
      this.fig.recoveryAllowedMs = at - this.faultEnd
    }
  }

  private group (types: readonly string[]): [string, string, string, string[]] {
    for (;;) {
      const [g, list] = this.pick(this.groupList)
      const [b, t, rt] = g.split('|') as [string, string, string]
      if (types.includes(t)) return [b, t, rt, list]
    }
  }

  private async check (size: number): Promise<void> {
    const [brand, type, rt, list] = this.group(TYPES)
    const items = Array.from({ length: size }, () => this.recipientFor(type, list))
    const body = size === 1
      ? { brandCode: Number(brand), type, recipientType: rt, recipient: items[0]!.input }
      : { brandCode: Number(brand), type, recipientType: rt, recipients: items.map(i => i.input) }
    const r = await this.post('/v1/check', body)
    if (r === null || r.status !== 200) return
    const results = (JSON.parse(r.text) as { results: { allowed: boolean, reason: string }[] }).results
    if (results.length !== size) { this.fig.wrong.wrongReason++; this.sample(`check answered ${results.length} results for ${size}`); return }
    this.fig.checkItems += size
    results.forEach((res, i) => {
      const key = truthKey(brand, type, rt, items[i]!.canonical)
      this.answeredChecks.set(key, (this.answeredChecks.get(key) ?? 0) + 1)
      this.judge(key, rt, res, r.sent, r.at, `check ${type} ${rt}`)
    })
  }

  private async messages (size: number): Promise<void> {
    const [brand, type, rt, list] = this.group(['MESAJ'])
    const items = Array.from({ length: size }, () => ({ ...this.recipientFor(type, list), messageId: `${this.opts.idPrefix}-${++this.n}` }))
    const sentAt = Date.now()
    for (const it of items) this.sentMessages.set(it.messageId, { key: truthKey(brand, type, rt, it.canonical), at: sentAt })
    const r = await this.post('/v1/messages', {
      iysCode: 700001, brandCode: Number(brand), type, recipientType: rt, commercial: true,
      messages: items.map(it => ({ recipient: it.input, messageId: it.messageId, sender: 'ACME', text: 'Kampanya' }))
    })
    if (r === null || r.status !== 200) return
    const results = (JSON.parse(r.text) as { results: { messageId: string, allowed: boolean, reason: string, forwarded: boolean }[] }).results
    this.fig.messageItems += size
    results.forEach((res, i) => {
      const key = truthKey(brand, type, rt, items[i]!.canonical)
      this.answeredMessages.set(items[i]!.messageId, [key, rt])
      this.sentMessages.set(items[i]!.messageId, { key, at: r.at })
      this.judge(key, rt, res, r.sent, r.at, `message ${rt}`)
    })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Decisions in Postgres.

/**
 * Answered check decisions with no record in Postgres: per key (brand, type, recipient type, normalized recipient),
 * the answers beyond the records decided in [from, to] (ms). Matching per key keeps a decision recorded but never
 * answered (a request in flight at a crash) from hiding a lost one of another key.
 */
export async function lostCheckDecisions (pool: pg.Pool, brands: string[], answered: Map<string, number>, from: number, to: number): Promise<number> {
  const { rows } = await pool.query<{ k: string, n: number }>(
    `SELECT brand_code::text || '|' || type || '|' || recipient_type || '|' || normalized AS k, count(*)::int AS n FROM decisions
      WHERE source = 'check' AND brand_code = ANY($1::bigint[]) AND normalized IS NOT NULL
        AND decided_at >= to_timestamp($2 / 1000.0) AND decided_at <= to_timestamp($3 / 1000.0)
      GROUP BY 1`, [brands, from - 5, to + 5])
  const recorded = new Map(rows.map(r => [r.k, r.n]))
  let lost = 0
  for (const [k, n] of answered) lost += Math.max(0, n - (recorded.get(k) ?? 0))
  return lost
}

/** Which of these messageIds have a messages decision in Postgres. */
export async function messageIdsRecorded (pool: pg.Pool, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set()
  const { rows } = await pool.query<{ id: string }>("SELECT DISTINCT message_id AS id FROM decisions WHERE source = 'messages' AND message_id = ANY($1)", [ids])
  return new Set(rows.map(r => r.id))
}
