// Forwarding one allowed message to its channel's carrier, over HTTP (undici, one kept-alive Pool per origin), or
// for MESAJ over SMPP (smpp-upstream.ts) when UPSTREAM_MESAJ_URL is smpp:// or smpps://, or for EPOSTA to a mail
// relay (smtp-upstream.ts) when UPSTREAM_EPOSTA_URL is smtp:// or smtps://. Each is a `Carrier`.
//
// The carrier contract is `CarrierAdapter` (contract.ts): how to turn a message into one HTTP request, and how to
// read the carrier's answer. A carrier with its own API is one new file implementing it (json-adapter.ts is the one
// shipped).
// Everything else is here, the same for every carrier: the timeout, retries with back-off, the idempotency key,
// the circuit breaker, and an outcome that never claims more than we know.
//
// What an outcome promises (the caller reports it per message and writes it to the decision log):
//   forwarded: true                           the carrier answered that it accepted the message (status 'accepted').
//   forwarded: false, maybeDelivered: false   the carrier certainly does not have it: no request of ours reached it
//                                             (refused connection, request still queued at the timeout, circuit
//                                             open), or it answered every attempt with a definite no (4xx, 503, 429).
//   forwarded: false, maybeDelivered: true    we do not know. A request went out and no usable answer came back
//                                             (timeout after sending, connection lost mid-request, 502/504 from a
//                                             proxy in front of it, 2xx without an id). The carrier may send it.
// The fate-unknown case is not reported as forwarded, because that would claim a delivery we cannot prove, nor as
// plainly failed, because a caller that re-sent it under a new id could deliver it twice. Every attempt carries
// the messageId as `Idempotency-Key`, so the safe follow-up for maybeDelivered is to send again with the same
// messageId: a carrier that has it answers its first result and does not send it twice.
//
// Retries (at most `retries` more attempts, exponential back-off with jitter) only follow answers that say
// "not now": network errors, timeouts, 5xx, 429 (and 408/409 where the adapter says so). A 4xx is final: the same
// request would be refused again. Nothing here logs recipients or message contents: the breaker's state changes
// are logged with the upstream's name only. The settings (timeout, retries, back-off, connections, breaker) come
// from the caller, i.e. config.upstream: their defaults are written down there and nowhere else.

import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, type Dispatcher } from 'undici'
import type { Logger } from '../log.js'
import { CONSENT_TYPES, type ConsentType } from '../domain/vocabulary.js'
import { carrierBreaker, circuitOpenText, intOption } from './carrier-options.js'
import { DENIED, type BreakerSettings, type BreakerState, type CircuitBreaker } from './circuit-breaker.js'
import { isValidMessageId, type CarrierAdapter, type CarrierRequest, type CarrierResult, type OutboundMessage, type ResponseHeaders } from './contract.js'
import { jsonAdapter } from './json-adapter.js'
import { SmppUpstream } from './smpp-upstream.js'
import { SmtpUpstream, type DkimOptions } from './smtp-upstream.js'
import type { PDU } from 'smpp'
import { CodedError } from '../domain/errors.js'

// ---- Outcomes ----------------------------------------------------------------------------------------------

export const OUTCOME_STATUSES = ['accepted', 'rejected', 'failed', 'timeout', 'unknown', 'circuit_open', 'no_upstream'] as const
export type OutcomeStatus = (typeof OUTCOME_STATUSES)[number]

export interface ForwardedOutcome {
  readonly forwarded: true
  readonly status: 'accepted'
  readonly carrierId: string
  /** The SMPP carrier's ids of every part when it sent a long text as several submit_sm (carrierId is the first). */
  readonly carrierIds?: readonly string[]
  /** HTTP attempts made (1 + retries used); for SMPP, submit_sm attempts over all parts. */
  readonly attempts: number
}

export interface NotForwardedOutcome {
  readonly forwarded: false
  /**
   * rejected: the carrier refused it (4xx). failed: every attempt failed (network error, 5xx, 429, breaker opened
   * between attempts is 'circuit_open'). timeout: the last attempt got no answer in time. unknown: an answer that
   * does not say. circuit_open: the breaker is open (no attempt, or no further attempt, was made). no_upstream: no
   * carrier is configured for the channel.
   */
  readonly status: Exclude<OutcomeStatus, 'accepted'>
  /** Short text for the client and the decision log. Never contains message contents; may quote the carrier. */
  readonly error: string
  readonly attempts: number
  /** True when the carrier may have the message after all: resend with the same messageId to find out. */
  readonly maybeDelivered: boolean
  /** The HTTP status of the last answer, when there was one. */
  readonly httpStatus?: number
  /** The SMPP command_status of the operator's last answer, when it refused (SMPP carrier). */
  readonly smppStatus?: number
}

/**
 * What the gateway needs from a channel's carrier, whatever its protocol: `Upstream` (HTTP) and `SmppUpstream`.
 * `send` never throws and its outcome keeps the promises at the top of this file.
 */
export interface Carrier {
  /** For logs and metric labels (the channel). */
  readonly name: string
  readonly breaker: CircuitBreaker
  send (msg: OutboundMessage): Promise<UpstreamOutcome>
  /** Stops after what is in flight has its answer (or its timeout). */
  close (): Promise<void>
  /** Drops every connection now. */
  destroy (): Promise<void>
}

export type UpstreamOutcome = ForwardedOutcome | NotForwardedOutcome

// ---- Options -----------------------------------------------------------------------------------------------

/** The carrier settings; config.upstream (UPSTREAM_*) is the one place with their defaults. */
export interface UpstreamSettings {
  /** Total time for one attempt, from dispatch (queueing included) to the last byte of the answer (ms). */
  timeoutMs: number
  /** Further attempts after the first (0 to 10). */
  retries: number
  /** Back-off before retry n (n = 0, 1, ...) is drawn from [cap/2, cap] with cap = min(backoffMaxMs, backoffMs·2^n). */
  backoffMs: number
  /** Longest back-off, and the longest Retry-After we wait for; a longer Retry-After ends the retries. */
  backoffMaxMs: number
  /** Kept-alive connections per carrier origin. */
  connections: number
  breaker: BreakerSettings
}

export interface UpstreamOptions extends UpstreamSettings {
  log?: Logger
  /** Called on every breaker state change, e.g. for a metric; `upstream` is the upstream's name. */
  onBreakerChange?: (upstream: string, from: BreakerState, to: BreakerState) => void
  /** [0, 1) source for the back-off jitter. Default Math.random. */
  random?: () => number
}


/** Builds a kept-alive pool for one carrier origin, with settings that suit `Upstream`. */
export function createCarrierPool (origin: string, opts: Pick<UpstreamSettings, 'timeoutMs' | 'connections'>): Pool {
  const timeoutMs = opts.timeoutMs
  return new Pool(origin, {
    connections: opts.connections,
    // POST is not idempotent at the HTTP level: one request per connection at a time, so a dropped connection
    // never takes a queue of other messages with it in an unknown state.
    pipelining: 1,
    connectTimeout: timeoutMs,
    // Backstops only: the attempt's own timer (below) bounds the whole exchange.
    headersTimeout: timeoutMs * 2,
    bodyTimeout: timeoutMs * 2
  })
}

// ---- One attempt -------------------------------------------------------------------------------------------

type RawAttempt =
  | { kind: 'response', status: number, headers: ResponseHeaders, body: string }
  /** `started`: undici began writing the request onto a socket, so the carrier may have received it. */
  | { kind: 'error', error: Error, started: boolean }
  | { kind: 'timeout', started: boolean }

const MAX_BODY = 64 * 1024
const EMPTY_HEADERS: ResponseHeaders = Object.freeze({})

class TimeoutError extends CodedError<'UPSTREAM_TIMEOUT'> {
  constructor (message: string) { super('UPSTREAM_TIMEOUT', message) }
}

// A raw undici dispatch handler instead of pool.request(): no response stream object per answer, and
// onRequestStart tells us exactly whether the request was handed to a socket. A request that failed or timed out
// before that point never left this process, so the message is certainly not at the carrier.
class AttemptHandler implements Dispatcher.DispatchHandler {
  #done: ((r: RawAttempt) => void) | null
  readonly #timer: NodeJS.Timeout
  #controller: Dispatcher.DispatchController | null = null
  #status = 0
  #headers: ResponseHeaders = EMPTY_HEADERS
  #chunks: Buffer[] = []
  #size = 0

  constructor (done: (r: RawAttempt) => void, timeoutMs: number) {
    this.#done = done
    this.#timer = setTimeout(() => {
      this.#finish({ kind: 'timeout', started: this.#controller !== null })
      this.#controller?.abort(new TimeoutError('upstream attempt timed out'))
    }, timeoutMs)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    // Timed out while still queued in the pool: stop it here, before a single byte is written.
    if (this.#done === null) { controller.abort(new TimeoutError('upstream attempt timed out')); return }
    this.#controller = controller
  }

  onResponseStart (_c: Dispatcher.DispatchController, status: number, headers: ResponseHeaders): void {
    this.#status = status
    this.#headers = headers
    this.#chunks = []
    this.#size = 0
  }

  onResponseData (_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#size >= MAX_BODY) return
    this.#chunks.push(chunk)
    this.#size += chunk.length
  }

  onResponseEnd (): void {
    const c = this.#chunks
    const body = c.length === 0 ? '' : c.length === 1 ? c[0]!.toString('utf8', 0, Math.min(c[0]!.length, MAX_BODY)) : Buffer.concat(c).toString('utf8', 0, MAX_BODY)
    this.#finish({ kind: 'response', status: this.#status, headers: this.#headers, body })
  }

  onResponseError (_c: Dispatcher.DispatchController, error: Error): void {
    this.#finish({ kind: 'error', error, started: this.#controller !== null })
  }

  #finish (r: RawAttempt): void {
    const done = this.#done
    if (done === null) return
    this.#done = null
    clearTimeout(this.#timer)
    done(r)
  }
}

function describeError (err: Error): string {
  const code = (err as { code?: unknown }).code
  const text = typeof code === 'string' && code !== '' ? `${code}: ${err.message}` : err.message || err.name
  return text.length > 200 ? text.slice(0, 200) : text
}

// ---- Upstream ----------------------------------------------------------------------------------------------

export interface UpstreamInit extends UpstreamOptions {
  /** Base URL of the carrier, e.g. UPSTREAM_MESAJ_URL. */
  url: string
  /** For logs and metric labels: keep it to a small fixed set (the channel type). Default: the URL's host. */
  name?: string
  /** Default: the generic JSON adapter. */
  adapter?: CarrierAdapter
  /** A pool shared with other upstreams on the same origin; the caller closes it. Default: one of our own. */
  dispatcher?: Dispatcher
}

type Verdict =
  | { kind: 'accepted', carrierId: string }
  | { kind: 'final', status: 'rejected' | 'unknown', error: string, maybeDelivered: boolean }
  | { kind: 'retry', status: 'failed' | 'timeout', error: string, maybeDelivered: boolean, retryAfterMs: number | undefined }

export class Upstream implements Carrier {
  readonly name: string
  readonly adapter: CarrierAdapter
  readonly breaker: CircuitBreaker
  readonly timeoutMs: number
  readonly retries: number
  readonly #backoffMs: number
  readonly #backoffMaxMs: number
  readonly #random: () => number
  readonly #dispatcher: Dispatcher
  readonly #ownsDispatcher: boolean
  readonly #basePath: string
  readonly #timeoutText: string

  constructor (init: UpstreamInit) {
    let u: URL
    try { u = new URL(init.url) } catch { throw new TypeError('upstream: url is not a URL') }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`upstream: url must be http: or https:, got ${u.protocol}`)
    this.name = init.name ?? u.host
    this.adapter = init.adapter ?? jsonAdapter
    this.timeoutMs = intOption('upstream', 'timeoutMs', init.timeoutMs, 1, 600_000)
    this.retries = intOption('upstream', 'retries', init.retries, 0, 10)
    this.#backoffMs = intOption('upstream', 'backoffMs', init.backoffMs, 0, 60_000)
    this.#backoffMaxMs = intOption('upstream', 'backoffMaxMs', init.backoffMaxMs, this.#backoffMs, 600_000)
    intOption('upstream', 'connections', init.connections, 1, 10_000)
    this.#random = init.random ?? Math.random
    this.#basePath = u.pathname.replace(/\/+$/, '')
    this.#timeoutText = `no answer within ${this.timeoutMs} ms`
    this.breaker = carrierBreaker(this.name, init.breaker, init.log, init.onBreakerChange)
    // Last, once every option has been checked: nothing to close if the constructor threw.
    if (init.dispatcher !== undefined) {
      this.#dispatcher = init.dispatcher
      this.#ownsDispatcher = false
    } else {
      this.#dispatcher = createCarrierPool(u.origin, init)
      this.#ownsDispatcher = true
    }
  }

  /** Sends one message; never throws. See the top of this file for what the outcome promises. */
  async send (msg: OutboundMessage): Promise<UpstreamOutcome> {
    if (!isValidMessageId(msg.messageId)) {
      return { forwarded: false, status: 'failed', error: 'messageId must be 1 to 128 visible ASCII characters', attempts: 0, maybeDelivered: false }
    }
    let req: CarrierRequest
    try {
      req = this.adapter.buildRequest(msg)
    } catch (err) {
      return { forwarded: false, status: 'failed', error: `${this.adapter.name} adapter could not build the request: ${describeError(err as Error)}`, attempts: 0, maybeDelivered: false }
    }
    const opts: Dispatcher.DispatchOptions = {
      path: this.#basePath + req.path,
      method: req.method ?? 'POST',
      headers: { ...req.headers, 'idempotency-key': msg.messageId },
      body: req.body
    }
    let attempts = 0
    let maybeDelivered = false
    let httpStatus: number | undefined
    let lastError = ''
    for (;;) {
      const ticket = this.breaker.acquire()
      if (ticket === DENIED) {
        const error = circuitOpenText(this.name, this.breaker, lastError)
        return { forwarded: false, status: 'circuit_open', error, attempts, maybeDelivered, ...(httpStatus !== undefined ? { httpStatus } : {}) }
      }
      attempts++
      const raw = await this.#attempt(opts)
      if (raw.kind === 'response') httpStatus = raw.status
      const v = this.#judge(raw)
      this.breaker.record(ticket, v.kind !== 'retry')
      if (v.kind === 'accepted') return { forwarded: true, status: 'accepted', carrierId: v.carrierId, attempts }
      maybeDelivered ||= v.maybeDelivered
      lastError = v.error
      const done = (status: NotForwardedOutcome['status'], error: string): NotForwardedOutcome =>
        ({ forwarded: false, status, error, attempts, maybeDelivered, ...(httpStatus !== undefined ? { httpStatus } : {}) })
      if (v.kind === 'final') return done(v.status, v.error)
      if (attempts > this.retries) return done(v.status, v.error)
      const cap = Math.min(this.#backoffMaxMs, this.#backoffMs * 2 ** (attempts - 1))
      let delay = cap / 2 + this.#random() * cap / 2
      if (v.retryAfterMs !== undefined) {
        if (v.retryAfterMs > this.#backoffMaxMs) return done(v.status, `${v.error} (carrier asked to wait ${Math.ceil(v.retryAfterMs / 1000)} s)`)
        delay = Math.max(delay, v.retryAfterMs)
      }
      if (delay >= 1) await sleep(delay)
    }
  }

  /** Closes the pool (if it is ours) after the requests in flight. */
  async close (): Promise<void> {
    if (this.#ownsDispatcher) await this.#dispatcher.close()
  }

  /** Drops the pool's connections (if the pool is ours). */
  async destroy (): Promise<void> {
    if (this.#ownsDispatcher) await this.#dispatcher.destroy()
  }

  #attempt (opts: Dispatcher.DispatchOptions): Promise<RawAttempt> {
    return new Promise(resolve => {
      const handler = new AttemptHandler(resolve, this.timeoutMs)
      try {
        this.#dispatcher.dispatch(opts, handler)
      } catch (err) {
        handler.onResponseError(null as unknown as Dispatcher.DispatchController, err as Error)
      }
    })
  }

  #judge (raw: RawAttempt): Verdict {
    if (raw.kind === 'timeout') return { kind: 'retry', status: 'timeout', error: this.#timeoutText, maybeDelivered: raw.started, retryAfterMs: undefined }
    if (raw.kind === 'error') return { kind: 'retry', status: 'failed', error: describeError(raw.error), maybeDelivered: raw.started, retryAfterMs: undefined }
    let r: CarrierResult
    try {
      r = this.adapter.parseResponse(raw.status, raw.body, raw.headers)
    } catch (err) {
      // An adapter bug must not turn an answer we cannot read into a success or a certain failure.
      r = { kind: 'unknown', error: `${this.adapter.name} adapter could not read HTTP ${raw.status}: ${describeError(err as Error)}` }
    }
    switch (r.kind) {
      case 'accepted': return r
      case 'rejected': return { kind: 'final', status: 'rejected', error: r.error, maybeDelivered: false }
      case 'unknown': return { kind: 'final', status: 'unknown', error: r.error, maybeDelivered: true }
      case 'retry': return { kind: 'retry', status: 'failed', error: r.error, maybeDelivered: r.maybeDelivered === true, retryAfterMs: r.retryAfterMs }
    }
  }
}

// ---- One upstream per channel ------------------------------------------------------------------------------

export interface UpstreamsOptions extends UpstreamOptions {
  /** A carrier-specific adapter per channel; the JSON adapter otherwise. */
  adapters?: Partial<Record<ConsentType, CarrierAdapter>>
  /** Receipts and MO messages from an SMPP carrier's operator (deliver_sm); see SmppUpstreamInit.onDeliver. */
  onDeliver?: (pdu: PDU, bytes: Buffer) => Promise<void> | void
  /** DKIM signing of what an SMTP carrier sends and relays; see SmtpUpstreamInit.dkim. */
  dkim?: DkimOptions
}

const NO_UPSTREAM: Readonly<Record<ConsentType, NotForwardedOutcome>> = Object.freeze(Object.fromEntries(CONSENT_TYPES.map(t => [t, Object.freeze({
  forwarded: false, status: 'no_upstream', error: `no carrier is configured for ${t} (UPSTREAM_${t}_URL)`, attempts: 0, maybeDelivered: false
} as const)])) as Record<ConsentType, NotForwardedOutcome>)

/**
 * The carriers of the three channels (config.upstreams). Channels whose URLs share an origin share one pool;
 * each channel has its own breaker, named after the channel. MESAJ may instead be an SMPP carrier (smpp://, smpps://),
 * EPOSTA a mail relay (smtp://, smtps://).
 */
export class Upstreams {
  readonly #byType: Record<ConsentType, Carrier | null>
  readonly #pools: Pool[] = []
  /** the carriers with connections of their own (SMPP binds, an SMTP pool), closed with the HTTP pools */
  readonly #own: (SmppUpstream | SmtpUpstream)[] = []
  #smtp: SmtpUpstream | null = null

  constructor (urls: Readonly<Record<ConsentType, string | null>>, opts: UpstreamsOptions) {
    const pools = new Map<string, Pool>()
    const byType = {} as Record<ConsentType, Carrier | null>
    for (const type of CONSENT_TYPES) {
      const url = urls[type]
      if (url === null) { byType[type] = null; continue }
      // An operator's SMSC (MESAJ only) or a mail relay (EPOSTA only) instead of an HTTP carrier.
      const own = (channel: ConsentType, what: string, make: () => SmppUpstream | SmtpUpstream): Carrier => {
        if (type !== channel) throw new TypeError(`UPSTREAM_${type}_URL: only ${channel} can go to ${what}`)
        let c: SmppUpstream | SmtpUpstream
        try {
          c = make()
        } catch (err) {
          this.#abandon()
          throw new TypeError(`UPSTREAM_${type}_URL: ${(err as Error).message}`)
        }
        this.#own.push(c)
        return c
      }
      if (/^smpps?:/i.test(url)) { byType[type] = own('MESAJ', 'an SMPP carrier', () => new SmppUpstream({ ...opts, url, name: type })); continue }
      if (/^smtps?:/i.test(url)) { byType[type] = own('EPOSTA', 'an SMTP relay', () => (this.#smtp = new SmtpUpstream({ ...opts, url, name: type }))); continue }
      const origin = new URL(url).origin
      let pool = pools.get(origin)
      if (pool === undefined) {
        pool = createCarrierPool(origin, opts)
        pools.set(origin, pool)
        this.#pools.push(pool)
      }
      byType[type] = new Upstream({ ...opts, url, name: type, adapter: opts.adapters?.[type] ?? jsonAdapter, dispatcher: pool })
    }
    this.#byType = byType
  }

  get (type: ConsentType): Carrier | null { return this.#byType[type] }

  /** The EPOSTA carrier when it is a mail relay: the SMTP front end relays through it. */
  smtp (): SmtpUpstream | null { return this.#smtp }

  send (msg: OutboundMessage): Promise<UpstreamOutcome> {
    const u = this.#byType[msg.type]
    return u === null ? Promise.resolve(NO_UPSTREAM[msg.type]) : u.send(msg)
  }

  /** Breaker state per configured channel, e.g. for /readyz. */
  states (): Partial<Record<ConsentType, BreakerState>> {
    const out: Partial<Record<ConsentType, BreakerState>> = {}
    for (const t of CONSENT_TYPES) { const u = this.#byType[t]; if (u !== null) out[t] = u.breaker.state }
    return out
  }

  /** [channel, whether its breaker refuses messages now] per configured channel (iys_upstream_breaker_open). */
  * refusing (): Generator<readonly [ConsentType, boolean]> {
    for (const t of CONSENT_TYPES) { const u = this.#byType[t]; if (u !== null) yield [t, u.breaker.refusing()] }
  }

  async close (): Promise<void> {
    await Promise.all([...this.#pools.map(p => p.close()), ...this.#own.map(c => c.close())])
  }

  /** Drops every connection at once (after close() has waited long enough). */
  async destroy (): Promise<void> {
    await Promise.all([...this.#pools.map(p => p.destroy()), ...this.#own.map(c => c.destroy())])
  }

  /** A constructor that throws leaves nothing connecting behind. */
  #abandon (): void {
    for (const p of this.#pools) void p.destroy()
    for (const c of this.#own) void c.destroy()
  }
}
