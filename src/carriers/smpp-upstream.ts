// The SMPP carrier: we are the ESME, bound to an operator's SMSC (UPSTREAM_MESAJ_URL=smpp://… or smpps://…). Same
// surface as the HTTP `Upstream` (`Carrier`, upstream.ts) and the same promise about outcomes (the top of
// upstream.ts): forwarded only on the operator's yes; maybeDelivered when a submit_sm went out and no answer came back.
//
//   smpp://system_id:password@host:port?binds=1&window=10&rate=0          (smpps:// for TLS; credentials URL-encoded)
//
// | parameter | default | meaning |
// |---|---|---|
// | port | 2775 (smpps 3550) | the SMSC's port |
// | `binds` | 1 | bind_transceiver sessions in the pool (1..64): no more than the operator's account allows |
// | `window` | 10 | submit_sm awaiting their submit_sm_resp per bind (1..1000); Kannel's default is 10 too |
// | `rate` | 0 | submit_sm per second across the pool (0..100000, 0 = no limit): the operator's TPS |
// | `system_type` | '' | sent in the bind (≤ 12 characters) |
// | `enquire_ms` | 30000 | enquire_link after this long without a PDU from the SMSC (0 = never, else 100..3600000) |
// | `reconnect_ms`, `reconnect_max_ms` | 1000, 60000 | back-off between (re)connects of one bind, doubling with jitter |
// | `reject_unauthorized` | true | smpps only: verify the SMSC's certificate (trust a private CA with NODE_EXTRA_CA_CERTS) |
// | `long` | udh | a text longer than one SMS: `udh` parts (IEI 0x00), or `payload`, one submit_sm with message_payload |
//
// The timeout, retries, back-off and breaker are the shared UPSTREAM_* settings. One attempt (waiting for the pool,
// the rate and a free window slot included) lasts at most timeoutMs, as an HTTP attempt does.
//
// The operator's command_status in the submit_sm_resp (or a generic_nack) decides:
//
// | status | meaning | we do | outcome |
// |---|---|---|---|
// | 0 | taken | | accepted, carrierId = message_id |
// | ESME_RTHROTTLED 0x58, ESME_RMSGQFUL 0x14 | not taken: too fast / queue full | pause the whole pool (back-off), retry | failed when retries are spent |
// | ESME_RSYSERR 0x08, ESME_RX_T_APPN 0x64 | not taken: a temporary fault at the operator | back-off, retry | failed when retries are spent |
// | ESME_RINVBNDSTS 0x04 | not taken: the SMSC lost our bind | rebind that session, retry | failed when retries are spent |
// | any other | refused for good (bad number, sender...) | | rejected, error names it, e.g. `ESME_RINVDSTADR (0x0b)` |
// | no answer within timeoutMs | it went out; fate unknown | never retried by us | timeout, maybeDelivered |
// | session closed after writing | it went out; fate unknown | never retried by us | unknown, maybeDelivered |
// | no bind free in time | never went out | retry | failed |
// A non-zero status comes without a message_id: the operator did not take the message, so retrying it cannot make a
// duplicate. RSYSERR and RX_T_APPN are retried because SMSCs use them for "try later" (Kannel treats them as
// temporary too); a retry is one more submit the operator may refuse again, never a second delivery. A submit_sm
// with no answer is never sent again: there is no idempotency key in SMPP.
//
// What goes out: the provider's own submit_sm (MesajPayload.smppPdu) byte for byte under our sequence number, or one
// built here from sender and text (registered_delivery 1: a receipt is wanted). GSM 03.38 (data_coding 0, the SMSC
// default alphabet) when every character has a GSM code, else UCS2 (0x08): Turkish ş ğ ı İ need UCS2 (the Turkish
// national shift table is not used: handsets and SMSCs support it unevenly). node-smpp's own pick is not used: it
// prefers Latin-1 (0x03) for text like "çok", which many SMSCs mangle, and labels its GSM bytes IA5 (0x01).
// Long texts go as concatenated parts with a UDH (IEI 0x00, 153 GSM characters or 67 UCS2 units per part), because
// every SMSC takes those while message_payload is optional in SMPP 3.4; `long=payload` is there for operators that
// want it. Parts go in order on the pool; a part not taken stops the rest (earlier parts make it maybeDelivered).
//
// From the operator: deliver_sm / data_sm (receipts, esm_class 0x04, and MO) go to `onDeliver`, answered status 0
// once it resolves, ESME_RX_T_APPN when it throws (the SMSC delivers it again later). Nothing here logs a recipient,
// a text or the password.

import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import smpp, { PDU } from 'smpp'
import { statusName } from '../domain/smpp-status.js'
import type { Logger } from '../log.js'
import { ResponseTimeoutError, SmppSession } from '../wire/smpp-session.js'
import { carrierBreaker, circuitOpenText, intOption } from './carrier-options.js'
import { carrierUrlError, intParam, readCarrierUrl, type CarrierUrlSpec } from './carrier-url.js'
import { DENIED, type CircuitBreaker } from './circuit-breaker.js'
import { isValidMessageId, type OutboundMessage } from './contract.js'
// Types only: upstream.ts builds this carrier, so a value import back would be a cycle.
import type { Carrier, NotForwardedOutcome, UpstreamOptions, UpstreamOutcome } from './upstream.js'

// Node's ESM loader finds only PDU by name in this CommonJS module: the tables come from its default export.
const { commands, encodings, errors } = smpp

// ---- Statuses ----------------------------------------------------------------------------------------------

const THROTTLED = 0x58
const MSGQFUL = 0x14
const SYSERR = 0x08
const X_T_APPN = 0x64
const INVBNDSTS = 0x04
const SUBMIT_SM = 0x00000004

/** `ESME_RINVDSTADR (0x0b)`: a command_status as operators' documents name it. */
export function statusText (status: number): string {
  const hex = `0x${status.toString(16).padStart(2, '0')}`
  const name = statusName(status)
  return name.startsWith('ESME_') ? `${name} (${hex})` : `status ${hex}`
}

// ---- The URL -----------------------------------------------------------------------------------------------

export interface SmppUrl {
  readonly tls: boolean
  readonly host: string
  readonly port: number
  readonly systemId: string
  readonly password: string
  readonly systemType: string
  readonly binds: number
  readonly window: number
  readonly rate: number
  readonly enquireMs: number
  readonly reconnectMs: number
  readonly reconnectMaxMs: number
  readonly rejectUnauthorized: boolean
  readonly long: 'udh' | 'payload'
}

const URL_SPEC: CarrierUrlSpec = {
  label: 'SMPP carrier URL',
  schemes: ['smpp:', 'smpps:'],
  example: 'smpp://system_id:password@host:port?…',
  userName: 'system_id',
  params: ['binds', 'window', 'rate', 'system_type', 'enquire_ms', 'reconnect_ms', 'reconnect_max_ms', 'reject_unauthorized', 'long']
}

const urlError = (message: string): TypeError => carrierUrlError(URL_SPEC, message)
const int = (q: URLSearchParams, name: string, def: number, min: number, max: number, zero = false): number => intParam(URL_SPEC, q, name, min, max, zero) ?? def

/** Reads and checks an smpp:// or smpps:// URL. Errors never quote the password. */
export function parseSmppUrl (text: string): SmppUrl {
  const { tls, host, port, user: systemId, password, query: q } = readCarrierUrl(text, URL_SPEC)
  // SMPP 3.4 caps system_id at 15 characters; the password's 8 is not checked: some operators issue longer ones.
  if (!/^[\x21-\x7e]{1,15}$/.test(systemId)) throw urlError('system_id (the user part) must be 1 to 15 visible ASCII characters')
  if (!/^[\x20-\x7e]*$/.test(password)) throw urlError('the password must be ASCII')
  const systemType = q.get('system_type') ?? ''
  if (!/^[\x20-\x7e]{0,12}$/.test(systemType)) throw urlError('system_type must be at most 12 ASCII characters')
  const reconnectMs = int(q, 'reconnect_ms', 1000, 10, 600_000)
  const ru = q.get('reject_unauthorized')
  if (ru !== null && ru !== 'true' && ru !== 'false') throw urlError(`reject_unauthorized must be true or false, got "${ru}"`)
  if (ru !== null && !tls) throw urlError('reject_unauthorized is for smpps: only')
  const long = q.get('long') ?? 'udh'
  if (long !== 'udh' && long !== 'payload') throw urlError(`long must be udh or payload, got "${long}"`)
  return Object.freeze({
    tls,
    host,
    port: port ?? (tls ? 3550 : 2775),
    systemId,
    password,
    systemType,
    binds: int(q, 'binds', 1, 1, 64),
    window: int(q, 'window', 10, 1, 1000),
    rate: int(q, 'rate', 0, 1, 100_000, true),
    enquireMs: int(q, 'enquire_ms', 30_000, 100, 3_600_000, true),
    reconnectMs,
    reconnectMaxMs: int(q, 'reconnect_max_ms', Math.max(60_000, reconnectMs), reconnectMs, 3_600_000),
    rejectUnauthorized: ru !== 'false',
    long
  })
}

// ---- What goes out -----------------------------------------------------------------------------------------

const DC_GSM = 0x00
const DC_UCS2 = 0x08
const ESC = 0x1b
const NO_BYTES = Buffer.alloc(0)

export interface EncodedText { readonly dataCoding: number, readonly bytes: Buffer }

/** GSM 03.38 (unpacked septets, data_coding 0) when every character has a GSM code, else UCS2 (0x08). */
export function encodeText (text: string): EncodedText {
  return encodings.ASCII.match(text) === true
    ? { dataCoding: DC_GSM, bytes: encodings.ASCII.encode(text) as Buffer }
    : { dataCoding: DC_UCS2, bytes: encodings.UCS2.encode(text) as Buffer }
}

/** The text cut into concatenation parts (one part when it fits one SMS): never inside an escape or surrogate pair. */
function cut (e: EncodedText): Buffer[] {
  const gsm = e.dataCoding === DC_GSM
  const b = e.bytes
  if (b.length <= (gsm ? 160 : 140)) return [b]
  const size = gsm ? 153 : 134 // what is left of 140 octets after the 6-octet UDH
  const parts: Buffer[] = []
  for (let at = 0; at < b.length;) {
    let end = Math.min(b.length, at + size)
    if (end < b.length) {
      if (gsm && b[end - 1] === ESC) end--
      else if (!gsm && (b[end - 2]! & 0xfc) === 0xd8) end -= 2
    }
    parts.push(b.subarray(at, end))
    at = end
  }
  if (parts.length > 255) throw new RangeError(`the text needs ${parts.length} parts; at most 255 can be concatenated`)
  return parts
}

function sourceOf (sender: string): { ton: number, npi: number, addr: string } {
  const digits = sender.startsWith('+') ? sender.slice(1) : sender
  if (/^\d{1,20}$/.test(digits)) return { ton: 1, npi: 1, addr: digits }
  // GSM carries at most 11 alphanumeric characters: a longer sender would only be refused by the operator.
  if (!/^[\x20-\x7e]{1,11}$/.test(sender)) throw new RangeError('sender must be digits or 1 to 11 ASCII characters for SMPP')
  return { ton: 5, npi: 0, addr: sender }
}

/**
 * The submit_sm PDUs (sequence number 0: the session sets its own) for one text: one, or one per concatenated part.
 * `ref` is the concatenation reference (0..255) the parts share.
 */
export function buildSubmits (recipient: string, sender: string, text: string, long: 'udh' | 'payload', ref: number): Buffer[] {
  if (!/^\+\d{1,20}$/.test(recipient)) throw new RangeError('recipient must be an E.164 phone number')
  const src = sourceOf(sender)
  const e = encodeText(text)
  const parts = cut(e)
  const fields: Record<string, unknown> = {
    source_addr_ton: src.ton,
    source_addr_npi: src.npi,
    source_addr: src.addr,
    dest_addr_ton: 1,
    dest_addr_npi: 1,
    destination_addr: recipient.slice(1),
    registered_delivery: 1,
    data_coding: e.dataCoding,
    short_message: parts[0]
  }
  if (parts.length === 1) return [new PDU('submit_sm', fields).toBuffer()]
  if (long === 'payload') {
    fields.short_message = NO_BYTES
    fields.message_payload = e.bytes
    return [new PDU('submit_sm', fields).toBuffer()]
  }
  fields.esm_class = 0x40 // UDHI: short_message starts with the user data header
  return parts.map((part, i) => {
    const sm = Buffer.allocUnsafe(6 + part.length)
    sm[0] = 5; sm[1] = 0x00; sm[2] = 3; sm[3] = ref; sm[4] = parts.length; sm[5] = i + 1
    part.copy(sm, 6)
    fields.short_message = sm
    return new PDU('submit_sm', fields).toBuffer()
  })
}

// ---- The carrier -------------------------------------------------------------------------------------------

export interface SmppUpstreamInit extends Omit<UpstreamOptions, 'connections'> {
  /** smpp://system_id:password@host:port?… or smpps://… (see the top of this file). */
  url: string
  /** For logs and metric labels (the channel). Default host:port. */
  name?: string
  /** Receipts and MO messages from the operator; answered ESME_RX_T_APPN when it throws or rejects. Default: answered 0. */
  onDeliver?: (pdu: PDU, bytes: Buffer) => Promise<void> | void
  /** More TLS options for smpps (a `ca` in tests); a deployment trusts a private CA with NODE_EXTRA_CA_CERTS. */
  tls?: Pick<ConnectionOptions, 'ca' | 'cert' | 'key' | 'servername'>
}

/** One connection of the pool. */
interface Link {
  readonly session: SmppSession
  bound: boolean
  /** Our submit_sm awaiting their response on this session (the window in use). */
  inFlight: number
  /** Why it ended before binding, for the log line (the status name of a refusal, a timeout). */
  problem: string | null
}

type Attempt =
  | { readonly kind: 'accepted', readonly id: string }
  | { readonly kind: 'rejected' | 'throttled' | 'temporary', readonly status: number, readonly text: string }
  | { readonly kind: 'timeout' | 'lost' | 'closed' }
  | { readonly kind: 'not_sent', readonly text: string }

type PartResult =
  | { readonly kind: 'accepted', readonly id: string, readonly attempts: number }
  | { readonly kind: NotForwardedOutcome['status'], readonly error: string, readonly attempts: number, readonly maybeDelivered: boolean, readonly smppStatus?: number }

const TIMEOUT: Attempt = Object.freeze({ kind: 'timeout' })
const LOST: Attempt = Object.freeze({ kind: 'lost' })
const CLOSED: Attempt = Object.freeze({ kind: 'closed' })
const EXPIRED = new Error('attempt deadline')

interface Waiter { resolve: (() => void) | null, timer: NodeJS.Timeout | null }


/** Resolves with `p`, or rejects with EXPIRED after `ms`; `p` goes on (its window slot is freed when it settles). */
function within<T> (p: Promise<T>, ms: number): Promise<T> {
  if (ms <= 0) return Promise.reject(EXPIRED)
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(EXPIRED), ms)
    p.then(v => { clearTimeout(t); resolve(v) }, (e: unknown) => { clearTimeout(t); reject(e) })
  })
}

export class SmppUpstream implements Carrier {
  readonly name: string
  readonly breaker: CircuitBreaker
  readonly timeoutMs: number
  readonly retries: number
  readonly #url: SmppUrl
  readonly #backoffMs: number
  readonly #backoffMaxMs: number
  readonly #random: () => number
  readonly #log: Logger | undefined
  readonly #onDeliver: ((pdu: PDU, bytes: Buffer) => Promise<void> | void) | undefined
  readonly #tls: SmppUpstreamInit['tls']
  readonly #timeoutText: string
  /** ms between two submit_sm under `rate`; 0: no limit. */
  readonly #interval: number
  readonly #links: Array<Link | null>
  readonly #failures: number[]
  readonly #timers: Array<NodeJS.Timeout | null>
  #bound = 0
  #inFlight = 0
  // Waiting for a window slot: FIFO, timed-out entries skipped when reached.
  #waiters: Waiter[] = []
  #waitHead = 0
  #waiting = 0
  // The operator's rate: the earliest time the next submit_sm may go (GCRA, no burst: operators count per second,
  // some in slices of it, so submits are spaced evenly rather than sent in bursts).
  #nextAt = 0
  // Throttling: the whole pool waits until #pausedUntil. A throttle answer to a submit sent before the current
  // pause began (an older #pauseEpoch) is part of the same burst and does not lengthen it.
  #pausedUntil = 0
  #pauseEpoch = 0
  #throttleStreak = 0
  #ref = 0
  #closing = false
  #closed: Promise<void> | null = null
  #drained: (() => void) | null = null

  constructor (init: SmppUpstreamInit) {
    this.#url = parseSmppUrl(init.url)
    const u = this.#url
    this.name = init.name ?? `${u.host}:${u.port}`
    this.timeoutMs = intOption('smpp upstream', 'timeoutMs', init.timeoutMs, 1, 600_000)
    this.retries = intOption('smpp upstream', 'retries', init.retries, 0, 10)
    this.#backoffMs = intOption('smpp upstream', 'backoffMs', init.backoffMs, 0, 60_000)
    this.#backoffMaxMs = intOption('smpp upstream', 'backoffMaxMs', init.backoffMaxMs, this.#backoffMs, 600_000)
    this.#random = init.random ?? Math.random
    this.#log = init.log
    this.#onDeliver = init.onDeliver
    this.#tls = init.tls
    this.#timeoutText = `no submit_sm_resp within ${this.timeoutMs} ms`
    this.#interval = u.rate > 0 ? 1000 / u.rate : 0
    this.breaker = carrierBreaker(this.name, init.breaker, init.log, init.onBreakerChange)
    this.#links = new Array<Link | null>(u.binds).fill(null)
    this.#failures = new Array<number>(u.binds).fill(0)
    this.#timers = new Array<NodeJS.Timeout | null>(u.binds).fill(null)
    // Bind now, not at the first message: a message should find the pool bound.
    for (let i = 0; i < u.binds; i++) this.#connect(i)
  }

  /** Sessions bound now. */
  bound (): number { return this.#bound }

  /** submit_sm awaiting the operator's answer, across the pool. */
  inFlight (): number { return this.#inFlight }

  /** Sends one message; never throws. See the tables at the top of this file and of upstream.ts. */
  async send (msg: OutboundMessage): Promise<UpstreamOutcome> {
    if (!isValidMessageId(msg.messageId)) return this.#unsent('messageId must be 1 to 128 visible ASCII characters')
    if (msg.type !== 'MESAJ') return this.#unsent(`an SMPP carrier sends MESAJ only, not ${msg.type}`)
    if (this.#closing) return this.#unsent(`carrier ${this.name} is closed`)
    let pdus: Buffer[]
    try {
      const p = msg.payload
      if (p.smppPdu !== undefined) {
        const b = p.smppPdu
        if (b.length < 17 || b.readUInt32BE(0) !== b.length || b.readUInt32BE(4) !== SUBMIT_SM) throw new TypeError('smppPdu is not one whole submit_sm')
        pdus = [b]
      } else {
        this.#ref = (this.#ref + 1) & 0xff
        pdus = buildSubmits(msg.recipient, p.sender, p.text, this.#url.long, this.#ref)
      }
    } catch (err) {
      return this.#unsent(`cannot build the submit_sm: ${(err as Error).message}`)
    }
    let attempts = 0
    let ids: string[] | null = null
    for (let i = 0; i < pdus.length; i++) {
      let r: PartResult
      try {
        r = await this.#sendPart(pdus[i]!)
      } catch (err) {
        // A bug of ours, not an answer: the part may have gone out, so claim nothing either way.
        r = { kind: 'unknown', error: `SMPP carrier error: ${(err as Error).message}`, attempts: 1, maybeDelivered: true }
      }
      attempts += r.attempts
      if (r.kind === 'accepted') {
        if (pdus.length === 1) return { forwarded: true, status: 'accepted', carrierId: r.id, attempts }
        if (ids === null) ids = []
        ids.push(r.id)
        continue
      }
      return {
        forwarded: false,
        status: r.kind,
        error: pdus.length > 1 ? `part ${i + 1} of ${pdus.length}: ${r.error}` : r.error,
        attempts,
        // Parts before this one were taken: the handset may get a piece of the text.
        maybeDelivered: r.maybeDelivered || i > 0,
        ...(r.smppStatus !== undefined ? { smppStatus: r.smppStatus } : {})
      }
    }
    return { forwarded: true, status: 'accepted', carrierId: ids![0]!, carrierIds: ids!, attempts }
  }

  /** Stops taking messages, waits for the answers in flight (each bounded by timeoutMs), then unbinds. */
  close (): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  /** Drops every session at once: submits in flight end as `unknown`, maybe delivered. */
  async destroy (): Promise<void> {
    this.#stop()
    for (const l of this.#links) l?.session.destroy()
    this.#drained?.()
  }

  async #close (): Promise<void> {
    this.#stop()
    if (this.#inFlight > 0) await new Promise<void>(resolve => { this.#drained = resolve })
    await Promise.all(this.#links.map(l => l === null ? undefined : l.bound ? l.session.unbind() : l.session.destroy()))
  }

  #stop (): void {
    this.#closing = true
    for (let i = 0; i < this.#timers.length; i++) { const t = this.#timers[i]; if (t != null) clearTimeout(t); this.#timers[i] = null }
    this.#wake(Infinity) // waiting messages never went out: they end as failed
  }

  #unsent (error: string): NotForwardedOutcome {
    return { forwarded: false, status: 'failed', error, attempts: 0, maybeDelivered: false }
  }

  // ---- One part: attempts, retries, the breaker ----------------------------------------------------------------

  async #sendPart (bytes: Buffer): Promise<PartResult> {
    let attempts = 0
    let lastError = ''
    let smppStatus: number | undefined
    for (;;) {
      const ticket = this.breaker.acquire()
      if (ticket === DENIED) {
        const error = circuitOpenText(this.name, this.breaker, lastError)
        return { kind: 'circuit_open', error, attempts, maybeDelivered: false, ...(smppStatus !== undefined ? { smppStatus } : {}) }
      }
      attempts++
      const r = await this.#attempt(bytes)
      // The operator answered (yes or a definite no): healthy. Throttling, faults, silence, no bind: not. Our own
      // shutting down says nothing about the operator.
      if (r.kind !== 'closed') this.breaker.record(ticket, r.kind === 'accepted' || r.kind === 'rejected')
      switch (r.kind) {
        case 'accepted': return { kind: 'accepted', id: r.id, attempts }
        case 'rejected': return { kind: 'rejected', error: `the operator refused it: ${r.text}`, attempts, maybeDelivered: false, smppStatus: r.status }
        case 'timeout': return { kind: 'timeout', error: this.#timeoutText, attempts, maybeDelivered: true }
        case 'lost': return { kind: 'unknown', error: 'the SMPP session closed before the operator answered', attempts, maybeDelivered: true }
        case 'closed': return { kind: 'failed', error: `carrier ${this.name} is closed`, attempts, maybeDelivered: false }
      }
      // throttled, temporary, not_sent: the operator does not have it, so it may go again.
      if (r.kind === 'not_sent') { lastError = r.text; smppStatus = undefined } else { lastError = `the operator answered ${r.text}`; smppStatus = r.status }
      if (attempts > this.retries) return { kind: 'failed', error: lastError, attempts, maybeDelivered: false, ...(smppStatus !== undefined ? { smppStatus } : {}) }
      let delay: number
      if (r.kind === 'throttled') {
        delay = this.#pausedUntil - performance.now() // the pool's pause is the back-off
      } else {
        const cap = Math.min(this.#backoffMaxMs, this.#backoffMs * 2 ** (attempts - 1))
        delay = cap / 2 + this.#random() * cap / 2
      }
      if (delay >= 1) await sleep(delay)
    }
  }

  // ---- One attempt: the pause, a window slot, the rate, the submit --------------------------------------------

  async #attempt (bytes: Buffer): Promise<Attempt> {
    const deadline = performance.now() + this.timeoutMs
    let waited = false
    for (;;) {
      if (this.#closing) return CLOSED
      const now = performance.now()
      if (now >= deadline) return { kind: 'not_sent', text: `no SMPP bind could take it within ${this.timeoutMs} ms (${this.#bound} of ${this.#links.length} bound)` }
      if (now < this.#pausedUntil) {
        waited = true
        await sleep(Math.min(this.#pausedUntil, deadline) - now)
        continue
      }
      // A newcomer queues behind messages already waiting for a slot.
      const link = waited || this.#waiting === 0 ? this.#pick() : null
      if (link === null) {
        waited = true
        await this.#slot(deadline)
        continue
      }
      if (this.#interval > 0) {
        const at = Math.max(this.#nextAt, now)
        if (at > deadline) return { kind: 'not_sent', text: `the operator's rate (${this.#url.rate}/s) leaves no room for it within ${this.timeoutMs} ms` }
        this.#nextAt = at + this.#interval
        if (at - now >= 1) {
          waited = true
          link.inFlight++ // hold the slot meanwhile
          await sleep(at - now)
          link.inFlight--
          if (!this.#usable(link) || this.#closing || performance.now() < this.#pausedUntil) continue
        }
      }
      return this.#submit(link, bytes, waited ? deadline : 0)
    }
  }

  #usable (l: Link): boolean {
    return l.bound && l.inFlight < this.#url.window && l.session.socket.writable
  }

  /** The bound session with the fewest submits in flight and room in its window. */
  #pick (): Link | null {
    let best: Link | null = null
    for (const l of this.#links) {
      if (l !== null && this.#usable(l) && (best === null || l.inFlight < best.inFlight)) best = l
    }
    return best
  }

  /** `deadline` 0: the attempt did not wait, and the session's own response timeout (timeoutMs) is the deadline. */
  async #submit (link: Link, bytes: Buffer, deadline: number): Promise<Attempt> {
    const epoch = this.#pauseEpoch
    link.inFlight++
    this.#inFlight++
    const pending = link.session.requestEncoded(bytes)
    let resp: PDU
    if (deadline === 0) {
      try {
        resp = await pending
      } catch (err) {
        return err instanceof ResponseTimeoutError ? TIMEOUT : LOST
      } finally {
        this.#release(link)
      }
    } else {
      // Our deadline may come before the session's: the submit stays in the window until it is answered or expires.
      pending.then(() => this.#release(link), () => this.#release(link))
      try {
        resp = await within(pending, deadline - performance.now())
      } catch (err) {
        return err === EXPIRED || err instanceof ResponseTimeoutError ? TIMEOUT : LOST
      }
    }
    const status = resp.command_status >>> 0
    if (status === 0) {
      if (resp.command !== 'submit_sm_resp') return { kind: 'rejected', status, text: `${resp.command} without a status` }
      this.#throttleStreak = 0
      // message_id is mandatory; an SMSC that leaves it empty still said yes, so it is not reported as unknown.
      return { kind: 'accepted', id: typeof resp.message_id === 'string' ? resp.message_id : '' }
    }
    const text = statusText(status)
    if (status === THROTTLED || status === MSGQFUL) { this.#throttled(epoch, text); return { kind: 'throttled', status, text } }
    if (status === SYSERR || status === X_T_APPN) return { kind: 'temporary', status, text }
    if (status === INVBNDSTS) { link.session.close(); return { kind: 'temporary', status, text } }
    return { kind: 'rejected', status, text }
  }

  #release (link: Link): void {
    link.inFlight--
    this.#inFlight--
    if (this.#waiting > 0) this.#wake(1)
    if (this.#inFlight === 0 && this.#drained !== null) { this.#drained(); this.#drained = null }
  }

  #throttled (epoch: number, text: string): void {
    if (epoch !== this.#pauseEpoch) return
    this.#pauseEpoch++
    const cap = Math.min(this.#backoffMaxMs, this.#backoffMs * 2 ** Math.min(this.#throttleStreak++, 30))
    const delay = cap / 2 + this.#random() * cap / 2
    this.#pausedUntil = performance.now() + delay
    this.#log?.debug({ upstream: this.name, status: text, pauseMs: Math.round(delay) }, 'operator throttling: SMPP pool paused')
  }

  #slot (deadline: number): Promise<void> {
    return new Promise<void>(resolve => {
      const w: Waiter = { resolve, timer: null }
      w.timer = setTimeout(() => {
        if (w.resolve === null) return
        w.resolve = null
        if (--this.#waiting === 0) { this.#waiters.length = 0; this.#waitHead = 0 }
        resolve()
      }, Math.max(1, deadline - performance.now()))
      this.#waiters.push(w)
      this.#waiting++
    })
  }

  #wake (n: number): void {
    while (n > 0 && this.#waiting > 0) {
      const w = this.#waiters[this.#waitHead++]!
      const resolve = w.resolve
      if (resolve === null) continue
      clearTimeout(w.timer!)
      w.resolve = null
      this.#waiting--
      n--
      resolve()
    }
    if (this.#waiting === 0) { this.#waiters.length = 0; this.#waitHead = 0 } else if (this.#waitHead >= 1024 && this.#waitHead * 2 >= this.#waiters.length) {
      this.#waiters.splice(0, this.#waitHead)
      this.#waitHead = 0
    }
  }

  // ---- The pool: connect, bind, back-off ------------------------------------------------------------------------

  #connect (i: number): void {
    this.#timers[i] = null
    if (this.#closing) return
    const u = this.#url
    const socket: Socket = u.tls
      ? tlsConnect({ host: u.host, port: u.port, rejectUnauthorized: u.rejectUnauthorized, ...(isIP(u.host) === 0 ? { servername: u.host } : {}), ...this.#tls })
      : netConnect({ host: u.host, port: u.port })
    const session = new SmppSession(socket, {
      responseTimeoutMs: this.timeoutMs,
      enquireLinkMs: u.enquireMs,
      onRequest: (pdu, s, bytes) => this.#onRequest(pdu, s, bytes),
      onClose: err => this.#onClose(i, link, err)
    })
    const link: Link = { session, bound: false, inFlight: 0, problem: null }
    this.#links[i] = link
    // A connect that hangs (a dead host drops the SYN) is bounded too.
    const connectMs = Math.max(this.timeoutMs, 10_000)
    const timer = setTimeout(() => { link.problem = `no connection within ${connectMs} ms`; session.destroy() }, connectMs)
    socket.once(u.tls ? 'secureConnect' : 'connect', () => { clearTimeout(timer); void this.#bind(i, link) })
    socket.once('close', () => clearTimeout(timer))
  }

  async #bind (i: number, link: Link): Promise<void> {
    const u = this.#url
    let resp: PDU
    try {
      resp = await link.session.request('bind_transceiver', {
        system_id: u.systemId, password: u.password, system_type: u.systemType, interface_version: 0x34, addr_ton: 0, addr_npi: 0, address_range: ''
      })
    } catch (err) {
      if (err instanceof ResponseTimeoutError) link.problem = `no bind_transceiver_resp within ${this.timeoutMs} ms`
      link.session.destroy()
      return
    }
    if (link.session.closed) return
    if (resp.command_status !== 0) {
      link.problem = statusText(resp.command_status >>> 0)
      link.session.close()
      return
    }
    link.bound = true
    this.#bound++
    this.#failures[i] = 0
    this.#log?.info({ upstream: this.name, bind: i, host: u.host, port: u.port, systemId: u.systemId }, 'SMPP bind up')
    this.#wake(u.window)
  }

  #onClose (i: number, link: Link, err: Error | undefined): void {
    if (this.#links[i] === link) this.#links[i] = null
    const wasBound = link.bound
    if (wasBound) { link.bound = false; this.#bound-- }
    if (this.#closing) return
    const u = this.#url
    // A bind that worked and dropped comes back after one short back-off; failures in a row double it.
    const failures = wasBound ? 0 : ++this.#failures[i]!
    const cap = Math.min(u.reconnectMaxMs, u.reconnectMs * 2 ** Math.min(30, Math.max(0, failures - 1)))
    const retryInMs = Math.round(cap / 2 + this.#random() * cap / 2)
    this.#timers[i] = setTimeout(() => this.#connect(i), retryInMs)
    const log = this.#log
    if (log === undefined) return
    const fields = { upstream: this.name, bind: i, host: u.host, port: u.port, systemId: u.systemId, retryInMs }
    if (wasBound) log.warn({ ...fields, ...(err !== undefined ? { err } : {}) }, 'SMPP bind lost')
    else if (link.problem !== null && link.problem.startsWith('ESME_')) log.warn({ ...fields, status: link.problem }, 'the operator refused the SMPP bind')
    else log.warn({ ...fields, ...(err !== undefined ? { err } : {}), ...(link.problem !== null ? { reason: link.problem } : {}) }, 'SMPP connection failed')
  }

  // ---- From the operator ---------------------------------------------------------------------------------------

  #onRequest (pdu: PDU, session: SmppSession, bytes: Buffer): void {
    switch (pdu.command) {
      case 'deliver_sm':
      case 'data_sm':
        this.#deliver(pdu, session, bytes)
        return
      case 'unbind':
        session.respond(pdu, 0)
        session.close() // and bind again after the back-off
        return
      default:
        // Nothing else is for an ESME to answer but "not here" (outbind and the like have no response at all).
        if (commands[`${pdu.command}_resp`] !== undefined) session.respond(pdu, errors.ESME_RINVCMDID!)
    }
  }

  #deliver (pdu: PDU, session: SmppSession, bytes: Buffer): void {
    const on = this.#onDeliver
    if (on === undefined) { session.respond(pdu, 0); return }
    const failed = (err: unknown): void => {
      this.#log?.warn({ upstream: this.name, err }, 'a deliver_sm could not be handled; answered ESME_RX_T_APPN for the operator to deliver it again')
      session.respond(pdu, X_T_APPN)
    }
    let r: Promise<void> | void
    // The PDU's own bytes (a copy: they go to a queue): re-encoding a decoded PDU changes its text, and node-smpp
    // cannot re-encode one with a UDH at all (a concatenated MO).
    try { r = on(pdu, Buffer.from(bytes)) } catch (err) { failed(err); return }
    if (r !== undefined && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(() => session.respond(pdu, 0), failed)
    else session.respond(pdu, 0)
  }
}
