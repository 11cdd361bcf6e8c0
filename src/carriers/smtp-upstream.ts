// The SMTP carrier: EPOSTA goes to a mail relay (UPSTREAM_EPOSTA_URL=smtp://… or smtps://…) over a pool of SMTP
// sessions (smtp-pool.ts: nodemailer's SMTPConnection under a queue of ours; no Mail object nor MIME node per message).
// Same surface as the HTTP `Upstream` (`Carrier`, upstream.ts) for /v1/messages, plus `relay()` for the SMTP front
// end, which hands on a client's message as it came.
//
//   smtp://user:password@host:port?pool=5&starttls=required     (smtps:// for TLS from the first byte; credentials
//                                                                 URL-encoded, both or neither)
//
// | parameter | default | meaning |
// |---|---|---|
// | port | 25 (smtps 465) | the relay's port; write 587 for a submission port |
// | `pool` | 5 | connections kept open to the relay (1..100): what its per-client limit allows |
// | `starttls` | `required` with credentials, else `opportunistic` | smtp: only. `required`: no STARTTLS, no mail; `opportunistic`: when the relay offers it; `never` |
// | `reject_unauthorized` | true | verify the relay's certificate (trust a private CA with NODE_EXTRA_CA_CERTS); not with starttls=never |
// | `timeout_ms` | UPSTREAM_TIMEOUT_MS | connect, greeting, the wait for each reply, and how long a pooled connection may sit silent (10..600000): relays that scan content answer the end of DATA in seconds |
// | `ehlo` | this host's name (nodemailer's choice) | the name we give in EHLO, for relays that check it |
// Unknown parameters are an error naming them. `required` is the default with credentials because a password must not
// cross the network in clear; a relay on the same host may say `starttls=never`.
//
// What the relay's answer means (an SMTP reply code, or no reply):
//
// | the relay | relay() | send() (/v1/messages) | breaker |
// |---|---|---|---|
// | 250 after the message | accepted, its reply | accepted, carrierId = its queue id from the reply, else our Message-ID | healthy |
// | 5xx to MAIL, RCPT or DATA (not 503) | permanent, code; `rejected` at RCPT | rejected | healthy |
// | 4xx, 503 | temporary, code | retried, then failed | failure |
// | 5xx to the greeting, EHLO, STARTTLS or AUTH; 530 (it wants a login we lack) | temporary: the session, not the message | retried, then failed | failure |
// | refused, reset, TLS failure, no answer in timeout_ms before the message went out | temporary | retried, then failed / timeout | failure |
// | lost or silent after the message's bytes began to go out | temporary, maybeDelivered, "the relay may have it" | unknown / timeout, maybeDelivered, not retried | failure |
// | breaker open | temporary, "circuit open" | circuit_open | |
// | message over the relay's SIZE (checked here); an envelope address that is not a plain mailbox | permanent, 552 / 553 | failed | not told |
// 503 is "bad sequence of commands", a session problem rather than a verdict on the message (nodemailer reads it so
// too). SMTP has no idempotency key: a message whose end of DATA went out and got no answer may be delivered, and
// sending it again may deliver it twice. relay() says so and leaves the decision to the caller; send() does not retry
// it. The Message-ID that send() builds from messageId makes such a duplicate recognisable downstream.
//
// relay() never retries: the caller's spool retries with its own back-off, so that a message waits on disk, not in
// memory. The pool may put a message on a fresh connection once when not a byte of it was sent: a pooled connection
// the relay had closed while idle, or that it closes with a 421; that is no second delivery.
// send() retries what certainly did not arrive, with the shared UPSTREAM_RETRIES and back-off, as the other carriers do.
//
// relay() takes one recipient per call (the front end sends one copy per accepted recipient, each with its own
// unsubscribe headers), so a permanent answer is that recipient's and a 250 is the whole message's; a caller that
// passes more is a bug and gets a TypeError. The raw message goes out as given: SMTP adds dot-stuffing (undone by the
// relay) and nodemailer's SMTPConnection turns a bare CR or LF into CRLF and ends the message with one; with DKIM
// configured a DKIM-Signature header goes first. send() composes its plain-text mail with nodemailer's MailComposer and
// hands the bytes to the same pool. BODY=8BITMIME is asked for when the message has 8-bit bytes and the relay offers
// it; SIZE= when it offers SIZE.
//
// DKIM (optional): nodemailer's signer, over the message as it leaves (headers we add included), RSA-SHA256. Nothing
// here logs a recipient, a message or the password; errors quote the relay's reply, never our credentials.

import { isAscii } from 'node:buffer'
import { createPrivateKey } from 'node:crypto'
import { isIP } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ConnectionOptions } from 'node:tls'
import DKIM from 'nodemailer/lib/dkim'
import MailComposer from 'nodemailer/lib/mail-composer'
import type { Logger } from '../log.js'
import { carrierBreaker, circuitOpenText, intOption } from './carrier-options.js'
import { carrierUrlError, intParam, readCarrierUrl, type CarrierUrlSpec } from './carrier-url.js'
import { DENIED, type CircuitBreaker } from './circuit-breaker.js'
import { isValidMessageId, type OutboundMessage } from './contract.js'
import { SmtpPool, type PoolAnswer, type SmtpError } from './smtp-pool.js'
// Types only: upstream.ts builds this carrier, so a value import back would be a cycle.
import type { Carrier, NotForwardedOutcome, UpstreamOptions, UpstreamOutcome } from './upstream.js'

// ---- The URL -----------------------------------------------------------------------------------------------

export type StartTls = 'required' | 'opportunistic' | 'never'

export interface SmtpUrl {
  /** smtps: TLS from the first byte. */
  readonly tls: boolean
  readonly host: string
  readonly port: number
  /** Both null without credentials. */
  readonly user: string | null
  readonly password: string | null
  readonly pool: number
  /** smtps: 'never' (TLS is already there). */
  readonly starttls: StartTls
  readonly rejectUnauthorized: boolean
  /** null: the shared UPSTREAM_TIMEOUT_MS. */
  readonly timeoutMs: number | null
  readonly ehlo: string | null
}

const URL_SPEC: CarrierUrlSpec = {
  label: 'SMTP carrier URL',
  schemes: ['smtp:', 'smtps:'],
  example: 'smtp://user:password@host:port?…',
  userName: 'user',
  params: ['pool', 'starttls', 'reject_unauthorized', 'timeout_ms', 'ehlo']
}
const STARTTLS: readonly StartTls[] = ['required', 'opportunistic', 'never']
const EHLO_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])$/

const urlError = (message: string): TypeError => carrierUrlError(URL_SPEC, message)

/** Reads and checks an smtp:// or smtps:// URL. Errors never quote the password. */
export function parseSmtpUrl (text: string): SmtpUrl {
  const { tls, host, port, user, password, query: q } = readCarrierUrl(text, URL_SPEC)
  if (user === '' && password !== '') throw urlError('a password without a user')
  if (user !== '' && password === '') throw urlError('a user without a password (AUTH needs both)')
  if (/[\r\n\0]/.test(user) || /[\r\n\0]/.test(password)) throw urlError('the credentials must not contain CR, LF or NUL')
  const st = q.get('starttls')
  if (st !== null && !(STARTTLS as readonly string[]).includes(st)) throw urlError(`starttls must be ${STARTTLS.join(', ')}, got "${st}"`)
  if (st !== null && tls) throw urlError('starttls is for smtp: only (smtps: is TLS from the first byte)')
  const starttls: StartTls = tls ? 'never' : (st as StartTls | null) ?? (user !== '' ? 'required' : 'opportunistic')
  const ru = q.get('reject_unauthorized')
  if (ru !== null && ru !== 'true' && ru !== 'false') throw urlError(`reject_unauthorized must be true or false, got "${ru}"`)
  if (ru !== null && !tls && starttls === 'never') throw urlError('reject_unauthorized needs TLS (smtps:, or starttls other than never)')
  const ehlo = q.get('ehlo')
  if (ehlo !== null && !EHLO_RE.test(ehlo)) throw urlError(`ehlo must be a host name or an address literal like [192.0.2.1], got "${ehlo}"`)
  return Object.freeze({
    tls,
    host,
    port: port ?? (tls ? 465 : 25),
    user: user === '' ? null : user,
    password: user === '' ? null : password,
    pool: intParam(URL_SPEC, q, 'pool', 1, 100) ?? 5,
    starttls,
    rejectUnauthorized: ru !== 'false',
    timeoutMs: intParam(URL_SPEC, q, 'timeout_ms', 10, 600_000),
    ehlo
  })
}

// ---- What goes out -----------------------------------------------------------------------------------------

/** What relay() reports; see the table at the top of this file. */
export type RelayOutcome =
  /** The relay took it; `response` is its reply (`250 2.0.0 Ok: queued as 4F2…`). */
  | { readonly kind: 'accepted', readonly response: string }
  /**
   * Not taken now; try again later. `maybeDelivered`: the message's bytes went out and no answer came, so the relay
   * may have it and another try may deliver it twice (the error says so too).
   */
  | { readonly kind: 'temporary', readonly error: string, readonly code?: number, readonly maybeDelivered?: boolean }
  /** Refused for good: bounce it. `rejected`: the recipient, when the refusal was its RCPT TO. */
  | { readonly kind: 'permanent', readonly error: string, readonly code?: number, readonly rejected?: readonly string[] }

export interface RelayEnvelope {
  /** The envelope sender; '' for the null sender (a bounce). */
  readonly from: string
  /** Exactly one recipient (see the top of this file). */
  readonly to: readonly string[]
}

export interface DkimOptions {
  readonly domainName: string
  readonly keySelector: string
  /** PEM, an RSA key. */
  readonly privateKey: string
}

// A msg-id's left part must be a dot-atom; ids made of these characters are used as they are, any other is encoded
// (base64url after '=', a character the first form never has), so that different messageIds never share one.
const PLAIN_ID = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/
const DOMAIN_OF = /@([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)>?\s*$/

/** `<messageId@sender's domain>`: the same messageId gives the same Message-ID, so a resend is recognisable. */
export function messageIdHeader (messageId: string, from: string): string {
  const left = PLAIN_ID.test(messageId) ? messageId : `=${Buffer.from(messageId).toString('base64url')}`
  const domain = DOMAIN_OF.exec(from)?.[1]?.toLowerCase() ?? 'iys-gateway.invalid'
  return `<${left}@${domain}>`
}

// The queue id in the 250 after DATA, as the common relays write it: Postfix "queued as 4F2xY3", Exim "id=1qA2b3-…",
// Sendmail "2.0.0 3B9Jx2Zq012345 Message accepted", Gmail "OK 1700000000 a1b2c3… - gsmtp".
const QUEUE_ID: readonly RegExp[] = [
  /\bqueued as ([A-Za-z0-9]+)/i,
  /\bid=([A-Za-z0-9-]+)/,
  /^250[ -](?:\d\.\d{1,3}\.\d{1,3} )?([A-Za-z0-9]{8,}) Message accepted/i,
  /^250[ -]\S+ OK +\d+ (\S+) - gsmtp/
]

/** The relay's id for the message from its final reply, when it names one in a known form. */
export function queueIdOf (response: string): string | null {
  for (const re of QUEUE_ID) {
    const m = re.exec(response)
    if (m !== null && m[1]!.length <= 128) return m[1]!
  }
  return null
}

// The front end's addresses are plain mailboxes. Anything else is refused before it reaches a command line, where a
// space would start an ESMTP parameter and a comma or parenthesis would mean more to a relay than one mailbox.
const UNSAFE_ADDRESS = /[\s<>,;:"()[\]\\]/

// ---- One attempt -------------------------------------------------------------------------------------------

type Attempt =
  | { readonly kind: 'accepted', readonly response: string, readonly serverMessageId: string | null }
  /** `ours`: decided here, not by the relay (the breaker is not told). */
  | { readonly kind: 'permanent', readonly text: string, readonly code?: number, readonly rejected?: readonly string[], readonly ours: boolean }
  | { readonly kind: 'temporary', readonly text: string, readonly code?: number, readonly maybeDelivered: boolean, readonly timeout: boolean, readonly ours: boolean }

/** One envelope: one sender ('' for the null sender), one recipient. */
interface Envelope { readonly from: string, readonly to: string }

// The relay wants a login we did not give, or refused ours: our configuration, not a verdict on the message.
const AUTH_CODES: ReadonlySet<number> = new Set([530, 534, 535, 538])
// Only an answer to these is about the message; a 5xx to the greeting, EHLO or STARTTLS is about the session.
const MESSAGE_COMMANDS: ReadonlySet<string> = new Set(['MAIL FROM', 'RCPT TO', 'DATA'])

function clip (s: string): string {
  const t = s.replace(/\s+/g, ' ').trim()
  return t.length > 200 ? t.slice(0, 200) : t
}

/** The signed message: the signer's stream read to its end, so that what the pool sends is bytes again. */
async function signed (dkim: DKIM, raw: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of dkim.sign(raw)) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

// ---- The carrier -------------------------------------------------------------------------------------------

export interface SmtpUpstreamInit extends Omit<UpstreamOptions, 'connections'> {
  /** smtp://user:password@host:port?… or smtps://… (see the top of this file). */
  url: string
  /** For logs and metric labels (the channel). Default host:port. */
  name?: string
  /** Sign what goes out (relayed and sent) with this key. */
  dkim?: DkimOptions
  /** More TLS options (a `ca` in tests); a deployment trusts a private CA with NODE_EXTRA_CA_CERTS. */
  tls?: Pick<ConnectionOptions, 'ca' | 'servername'>
}

export class SmtpUpstream implements Carrier {
  readonly name: string
  readonly breaker: CircuitBreaker
  readonly timeoutMs: number
  readonly retries: number
  readonly #url: SmtpUrl
  readonly #backoffMs: number
  readonly #backoffMaxMs: number
  readonly #random: () => number
  readonly #log: Logger | undefined
  readonly #pool: SmtpPool
  readonly #dkim: DKIM | null
  readonly #timeoutText: string
  #inFlight = 0
  #drained: (() => void) | null = null
  #closing = false
  #closed: Promise<void> | null = null

  constructor (init: SmtpUpstreamInit) {
    this.#url = parseSmtpUrl(init.url)
    const u = this.#url
    this.name = init.name ?? `${u.host}:${u.port}`
    this.timeoutMs = u.timeoutMs ?? intOption('smtp upstream', 'timeoutMs', init.timeoutMs, 1, 600_000)
    this.retries = intOption('smtp upstream', 'retries', init.retries, 0, 10)
    this.#backoffMs = intOption('smtp upstream', 'backoffMs', init.backoffMs, 0, 60_000)
    this.#backoffMaxMs = intOption('smtp upstream', 'backoffMaxMs', init.backoffMaxMs, this.#backoffMs, 600_000)
    this.#random = init.random ?? Math.random
    this.#log = init.log
    this.#timeoutText = `no answer from the relay within ${this.timeoutMs} ms`
    this.#dkim = init.dkim === undefined ? null : checkedDkim(init.dkim)
    this.breaker = carrierBreaker(this.name, init.breaker, init.log, init.onBreakerChange)
    this.#pool = new SmtpPool({
      size: u.pool,
      auth: u.user !== null ? { user: u.user, pass: u.password! } : null,
      connection: {
        host: u.host,
        port: u.port,
        secure: u.tls,
        requireTLS: u.starttls === 'required',
        ignoreTLS: u.starttls === 'never' && !u.tls,
        // A STARTTLS that fails ends the connection: it never goes on in clear.
        opportunisticTLS: false,
        tls: { rejectUnauthorized: u.rejectUnauthorized, ...(isIP(u.host) === 0 ? { servername: u.host } : {}), ...init.tls },
        ...(u.ehlo !== null ? { name: u.ehlo } : {}),
        connectionTimeout: this.timeoutMs,
        greetingTimeout: this.timeoutMs,
        socketTimeout: this.timeoutMs,
        dnsTimeout: this.timeoutMs
      }
    })
    this.#log?.info({ upstream: this.name, host: u.host, port: u.port, tls: u.tls ? 'implicit' : u.starttls, user: u.user, pool: u.pool, dkim: this.#dkim !== null }, 'SMTP carrier ready')
  }

  /** Messages handed to the pool and not answered yet (queued for a connection included). */
  inFlight (): number { return this.#inFlight }

  /** Sends one /v1/messages EPOSTA message as a plain-text mail; never throws. See the tables here and in upstream.ts. */
  async send (msg: OutboundMessage): Promise<UpstreamOutcome> {
    if (!isValidMessageId(msg.messageId)) return unsent('messageId must be 1 to 128 visible ASCII characters')
    if (msg.type !== 'EPOSTA') return unsent(`an SMTP carrier sends EPOSTA only, not ${msg.type}`)
    if (this.#closing) return unsent(`carrier ${this.name} is closed`)
    const p = msg.payload
    // Without an address in From, the envelope would have the null sender, as a bounce does.
    if (!DOMAIN_OF.test(p.from)) return unsent('payload.from must contain an e-mail address')
    const messageId = messageIdHeader(msg.messageId, p.from)
    let raw: Buffer
    let envelope: Envelope
    try {
      // Built once: every retry sends the same bytes (the same Message-ID and Date).
      const node = new MailComposer({ from: p.from, to: msg.recipient, subject: p.subject, text: p.body, messageId, disableFileAccess: true, disableUrlAccess: true }).compile()
      const env = node.getEnvelope()
      if (typeof env.from !== 'string' || env.from === '' || env.to.length !== 1) return unsent('payload.from and the recipient must be one e-mail address each')
      envelope = { from: env.from, to: env.to[0]! }
      if (UNSAFE_ADDRESS.test(envelope.from) || UNSAFE_ADDRESS.test(envelope.to)) return unsent('payload.from and the recipient must be plain mailboxes')
      raw = await node.build()
    } catch (err) {
      return unsent(`the message could not be composed: ${clip((err as Error).message)}`)
    }
    let attempts = 0
    let lastError = ''
    for (;;) {
      const ticket = this.breaker.acquire()
      if (ticket === DENIED) {
        const error = circuitOpenText(this.name, this.breaker, lastError)
        return { forwarded: false, status: 'circuit_open', error, attempts, maybeDelivered: false }
      }
      attempts++
      const r = await this.#attempt(envelope, raw)
      this.#record(ticket, r)
      if (r.kind === 'accepted') return { forwarded: true, status: 'accepted', carrierId: queueIdOf(r.response) ?? r.serverMessageId ?? messageId, attempts }
      if (r.kind === 'permanent') return { forwarded: false, status: r.ours ? 'failed' : 'rejected', error: r.text, attempts, maybeDelivered: false }
      if (r.maybeDelivered) return { forwarded: false, status: r.timeout ? 'timeout' : 'unknown', error: r.text, attempts, maybeDelivered: true }
      lastError = r.text
      // The SMTP reply code has no field of its own in the outcome: the error quotes it.
      if (attempts > this.retries || this.#closing) {
        return { forwarded: false, status: r.timeout ? 'timeout' : 'failed', error: r.text, attempts, maybeDelivered: false }
      }
      const cap = Math.min(this.#backoffMaxMs, this.#backoffMs * 2 ** (attempts - 1))
      const delay = cap / 2 + this.#random() * cap / 2
      if (delay >= 1) await sleep(delay)
    }
  }

  /**
   * Hands one raw RFC 5322 message to the relay for one recipient, unchanged; never retries, never throws for the
   * relay's sake (a `to` of other than one address is the caller's bug: TypeError). See the table at the top.
   */
  async relay (envelope: RelayEnvelope, raw: Buffer): Promise<RelayOutcome> {
    if (envelope.to.length !== 1) throw new TypeError(`relay takes exactly one recipient per call, got ${envelope.to.length}`)
    const to = envelope.to[0]!
    if (to === '' || UNSAFE_ADDRESS.test(to) || UNSAFE_ADDRESS.test(envelope.from)) {
      return { kind: 'permanent', error: 'the envelope address is not a plain mailbox (empty, or with spaces, <>, quotes, commas or the like)', code: 553 }
    }
    if (this.#closing) return { kind: 'temporary', error: `carrier ${this.name} is closed` }
    const ticket = this.breaker.acquire()
    if (ticket === DENIED) {
      return { kind: 'temporary', error: `circuit open: carrier ${this.name} is failing, next try in ${Math.ceil(this.breaker.retryInMs())} ms` }
    }
    const r = await this.#attempt({ from: envelope.from, to }, raw)
    this.#record(ticket, r)
    switch (r.kind) {
      case 'accepted': return { kind: 'accepted', response: r.response }
      case 'permanent': return { kind: 'permanent', error: r.text, ...(r.code !== undefined ? { code: r.code } : {}), ...(r.rejected !== undefined ? { rejected: r.rejected } : {}) }
      case 'temporary': return { kind: 'temporary', error: r.text, ...(r.code !== undefined ? { code: r.code } : {}), ...(r.maybeDelivered ? { maybeDelivered: true } : {}) }
    }
  }

  /** Stops taking messages, waits for the ones in the pool to get their answer (or their timeout), then closes it. */
  close (): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  /** Drops every connection now: messages in flight end temporary (maybe delivered, when their bytes had gone out). */
  async destroy (): Promise<void> {
    this.#closing = true
    this.#pool.destroy()
    this.#drained?.()
  }

  async #close (): Promise<void> {
    this.#closing = true
    if (this.#inFlight > 0) await new Promise<void>(resolve => { this.#drained = resolve })
    this.#pool.close()
  }

  /** The relay answered (yes or a definite no): healthy. Silence, refusals to connect, 4xx: not. Our own errors: neither. */
  #record (ticket: number, r: Attempt): void {
    if (r.kind === 'accepted') this.breaker.record(ticket, true)
    else if (!r.ours) this.breaker.record(ticket, r.kind === 'permanent')
  }

  async #attempt (envelope: Envelope, raw: Buffer): Promise<Attempt> {
    this.#inFlight++
    try {
      let message = raw
      if (this.#dkim !== null) {
        // Signed before the pool gets it, so that "did any of it go out" means the relay's socket, not the signer.
        try {
          message = await signed(this.#dkim, raw)
        } catch (err) {
          return { kind: 'temporary', text: `the message could not be signed: ${clip((err as Error).message)}`, maybeDelivered: false, timeout: false, ours: true }
        }
      }
      // SIZE= when the relay offers SIZE (and the pool refuses what is over its limit); BODY=8BITMIME for 8-bit bytes.
      const a = await this.#pool.send({ from: envelope.from, to: [envelope.to], size: message.length, use8BitMime: !isAscii(message) }, message)
      return this.#read(a)
    } finally {
      if (--this.#inFlight === 0 && this.#drained !== null) { this.#drained(); this.#drained = null }
    }
  }

  #read (a: PoolAnswer): Attempt {
    if (a.ok) return { kind: 'accepted', response: clip(a.response), serverMessageId: a.serverMessageId }
    return this.#judge(a.error, a.started)
  }

  #judge (err: SmtpError, started: boolean): Attempt {
    const reply = typeof err.response === 'string' ? clip(err.response) : ''
    const code = typeof err.responseCode === 'number' ? err.responseCode : undefined
    const at = typeof err.command === 'string' ? err.command : ''
    const ours = this.#closing
    if (code !== undefined && code >= 400 && code < 600) {
      if (err.code === 'EAUTH' || AUTH_CODES.has(code)) {
        return { kind: 'temporary', text: this.#scrub(`the relay refused our login: ${reply}`), code, maybeDelivered: false, timeout: false, ours }
      }
      const text = this.#scrub(`the relay answered ${reply} to ${at !== '' ? at : 'the connection'}`)
      if (code >= 500 && code !== 503 && MESSAGE_COMMANDS.has(at)) {
        const rejected = at === 'RCPT TO' && Array.isArray(err.rejected) ? (err.rejected as unknown[]).filter((a): a is string => typeof a === 'string') : undefined
        return { kind: 'permanent', text, code, ...(rejected !== undefined && rejected.length > 0 ? { rejected } : {}), ours: false }
      }
      // A 4xx after the end of DATA is still a "not taken".
      return { kind: 'temporary', text, code, maybeDelivered: false, timeout: false, ours }
    }
    switch (err.code) {
      case 'EAUTH':
      case 'ENOAUTH':
        return { kind: 'temporary', text: this.#scrub(`login to the relay failed: ${err.message}`), maybeDelivered: false, timeout: false, ours }
      case 'EMESSAGE':
        if (at === 'MAIL FROM') return { kind: 'permanent', text: this.#scrub(`the relay takes no message this large: ${err.message}`), code: 552, ours: true }
        break
      case 'EENVELOPE':
        if (at === 'API') return { kind: 'permanent', text: this.#scrub(err.message), ours: true }
        break
      case 'ESTREAM':
        return { kind: 'temporary', text: this.#scrub(`the message could not be read: ${err.message}`), maybeDelivered: false, timeout: false, ours: true }
    }
    const timeout = err.code === 'ETIMEDOUT'
    const what = timeout ? this.#timeoutText : `${err.code ?? 'error'}: ${clip(err.message)}`
    const text = started ? `${what} after the message went out: the relay may have it, and sending it again may deliver it twice` : what
    return { kind: 'temporary', text: this.#scrub(text), ...(code !== undefined ? { code } : {}), maybeDelivered: started, timeout, ours }
  }

  /** Our password never leaves in an error, whatever a library put into one. */
  #scrub (text: string): string {
    const p = this.#url.password
    return p !== null && p.length >= 4 && text.includes(p) ? text.split(p).join('…') : text
  }
}

function unsent (error: string): NotForwardedOutcome {
  return { forwarded: false, status: 'failed', error, attempts: 0, maybeDelivered: false }
}

/** A signer for a checked key: a bad key is a start-up error, not a failure of every message. */
function checkedDkim (o: DkimOptions): DKIM {
  if (!EHLO_RE.test(o.domainName) || o.domainName.startsWith('[')) throw new TypeError('dkim: domainName must be a domain name')
  if (!/^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$/.test(o.keySelector)) throw new TypeError('dkim: keySelector must be a DNS label (letters, digits, . _ -)')
  let type: string | undefined
  try { type = createPrivateKey(o.privateKey).asymmetricKeyType } catch { throw new TypeError('dkim: privateKey is not a PEM private key') }
  // nodemailer signs rsa-sha256 only.
  if (type !== 'rsa') throw new TypeError(`dkim: privateKey must be an RSA key, got ${type ?? 'unknown'}`)
  return new DKIM({ domainName: o.domainName, keySelector: o.keySelector, privateKey: o.privateKey })
}
