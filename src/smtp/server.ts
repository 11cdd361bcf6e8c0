// The SMTP front end (SMTP_PORT with STARTTLS, SMTP_TLS_PORT with implicit TLS): a provider's mail software uses the
// gateway as its smarthost, and only mail the law allows goes on to its real relay (UPSTREAM_EPOSTA_URL=smtp://…).
//
//   AUTH PLAIN/LOGIN   username = an API key's id (ik_…), password = its secret (or the whole key); scope `send`.
//                      Nobody relays without it.
//   MAIL FROM          the brand, commercial or not, and the recipient type come from the envelope (rules below), so
//                      that each recipient is decided at RCPT TO.
//   RCPT TO            decided through the checker and the post-decision hook (source 'smtp', journalled before the
//                      answer): allowed 250; REJECTED/NO_CONSENT 550 5.7.1; an invalid address 553 5.1.3; the store
//                      unable to answer 451 4.3.0 (try later); the key's rate 451 4.7.1.
//   DATA               on disk (spool.ts, fsynced) before 250; the relay (relay.ts) sends one copy per accepted
//                      recipient, with RFC 8058 List-Unsubscribe headers for commercial mail. A message whose
//                      recipients were all refused has no DATA (smtp-server answers 503): it never leaves.
//
// The envelope rules (README "SMTP"): the brand from the ESMTP parameter X-IYS-BRAND=<code>, else the tenant's
// originator table (`originators add --originator news@acme.com.tr` or `acme.com.tr`: the envelope sender, then
// its domain), else the key's one brand (a key limited to a single brand; the demo key: the sample's); commercial from
// X-IYS-COMMERCIAL=0|1, else a `+iys-bilgi` tag on the sender's local part (informational), else commercial; the
// recipient type from X-IYS-RECIPIENT-TYPE=BIREYSEL|TACIR, else a `+iys-tacir` tag, else BIREYSEL. Tags are removed
// from the sender before the mail is relayed.

import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from 'smtp-server'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import type { MessageTicket } from '../audit/decision-log.js'
import { DEMO_BRAND_CODE, type KeyStore } from '../auth/key-store.js'
import { hasScope, mayActFor, type Principal } from '../auth/principal.js'
import type { RateLimiter } from '../auth/rate-limit.js'
import type { Checker, CheckQuery } from '../check/checker.js'
import { isRecipientError, normalizeEmail } from '../domain/normalize.js'
import { canonicalCode, isRecipientType, type RecipientType } from '../domain/vocabulary.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { MailSpool, SpoolRecipient } from './spool.js'

export interface SmtpServerSettings {
  host: string
  port: number | null
  tlsPort: number | null
  tls: { certFile: string, keyFile: string } | null
  hostname: string
  maxMessageBytes: number
  maxRecipients: number
}

export interface SmtpServerDeps {
  keys: Pick<KeyStore, 'authenticate' | 'originatorBrand' | 'principalOf'>
  checker: Pick<Checker, 'check'>
  decisions: DecisionsHook
  rateLimit: Pick<RateLimiter, 'take'>
  spool: Pick<MailSpool, 'accept'>
  /** Called after a message is spooled (the relay starts on it at once). */
  spooled: () => void
  metrics: Metrics
  log: Logger
}

/** One MAIL FROM … DATA transaction: what the envelope says and the recipients accepted so far. */
interface Transaction {
  iysCode: string
  brandCode: string
  commercial: boolean
  recipientType: RecipientType
  /** The envelope sender without our tags: what the relay sends from. */
  from: string
  accepted: SpoolRecipient[]
  tickets: (MessageTicket | null)[]
  /** ended (RSET, a new MAIL, the client gone): a decision that finishes after this is recorded as not sent */
  ended: boolean
  /** DATA is being spooled: the spool decides the outcome, not the end of the session */
  spooling: boolean
}

const TAG = /\+iys-(bilgi|tacir)(?=[+@])/gi

/** An SMTP answer to a command: smtp-server sends `responseCode` and the message (which starts with the enhanced code). */
function reply (code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code })
}

export class SmtpFrontEnd {
  private readonly settings: SmtpServerSettings
  private readonly deps: SmtpServerDeps
  private readonly servers: SMTPServer[] = []
  private readonly transactions = new Map<string, Transaction>()

  constructor (settings: SmtpServerSettings, deps: SmtpServerDeps) {
    this.settings = settings
    this.deps = deps
  }

  async start (): Promise<{ port: number | null, tlsPort: number | null }> {
    const tls = this.settings.tls === null ? {} : { cert: readFileSync(this.settings.tls.certFile), key: readFileSync(this.settings.tls.keyFile) }
    const listen = async (secure: boolean, port: number): Promise<number> => {
      const server = this.create(secure, tls)
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, this.settings.host, () => { server.off('error', reject); resolve() })
      })
      server.on('error', (err: Error) => { this.deps.log.warn({ err }, 'SMTP server error') })
      this.servers.push(server)
      return (server.server.address() as { port: number }).port
    }
    const port = this.settings.port === null ? null : await listen(false, this.settings.port)
    const tlsPort = this.settings.tlsPort === null ? null : await listen(true, this.settings.tlsPort)
    return { port, tlsPort }
  }

  async close (): Promise<void> {
    await Promise.all(this.servers.map(s => new Promise<void>(resolve => s.close(() => resolve()))))
  }

  private create (secure: boolean, tls: { cert?: Buffer, key?: Buffer }): SMTPServer {
    const withTls = tls.cert !== undefined
    const server = new SMTPServer({
      secure,
      ...tls,
      name: this.settings.hostname,
      banner: 'iys-gateway: consent-checked relay',
      size: this.settings.maxMessageBytes,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: false,
      // Without a certificate there is no STARTTLS to require: AUTH in the clear is allowed then (a trial, a
      // loopback or a private network), and the README says so. With one, AUTH needs TLS first.
      allowInsecureAuth: !withTls,
      hideSTARTTLS: !withTls,
      disabledCommands: withTls ? [] : ['STARTTLS'],
      logger: false,
      onAuth: (auth, _session, cb) => { this.onAuth(auth.username ?? '', auth.password ?? '', cb) },
      onMailFrom: (address, session, cb) => { this.settle(cb, () => { this.onMailFrom(address, session) }) },
      onRcptTo: (address, session, cb) => { this.onRcptTo(address, session).then(() => cb(), (err: Error) => cb(err)) },
      onData: (stream, session, cb) => { this.onData(stream, session).then(() => cb(), (err: Error) => cb(err)) },
      onClose: (session) => { this.endTransaction(session.id) }
    })
    // A client that pipelines (RFC 2920) sends MAIL, RCPT and DATA in one go; smtp-server writes each reply on its own,
    // a syscall each (the largest item of the gateway's profile in the smtp benchmark). The socket is corked while a
    // chunk from the client is handled and uncorked at the end of this turn of the event loop, so that the replies
    // ready by then leave together. Only where no TLS can come: STARTTLS and implicit TLS hand the socket to the TLS
    // layer, which a reply held back here would miss.
    if (!withTls) server.server.on('connection', (socket: Socket) => { batchReplies(socket) })
    return server
  }

  /** The session's key as it is now (a connection may outlive a revocation, or a change of brands or rate). */
  private current (session: SMTPServerSession): Principal {
    const p = this.deps.keys.principalOf((session.user as Principal).keyId)
    if (p === null) throw reply(535, '5.7.8 The key of this session was revoked')
    return p
  }

  private settle (cb: (err?: Error | null) => void, f: () => void): void {
    try { f(); cb() } catch (err) { cb(err as Error) }
  }

  private onAuth (username: string, password: string, cb: (err: Error | null | undefined, response?: { user?: unknown }) => void): void {
    const apiKey = password.startsWith(username + '.') ? password : `${username}.${password}`
    const principal = this.deps.keys.authenticate(apiKey)
    if (principal === null || !hasScope(principal, 'send')) {
      this.deps.metrics.smtpCommands.inc({ command: 'auth', result: 'refused' })
      cb(reply(535, '5.7.8 Authentication credentials invalid (an API key with the send scope: username = key id, password = secret)'))
      return
    }
    this.deps.metrics.smtpCommands.inc({ command: 'auth', result: 'ok' })
    cb(null, { user: principal })
  }

  private onMailFrom (address: SMTPServerAddress, session: SMTPServerSession): void {
    this.endTransaction(session.id) // after RSET: the earlier transaction's decisions were not sent
    const principal = this.current(session)
    const args = address.args as Record<string, string | boolean | undefined>
    const from = address.address.replace(TAG, '')
    const tags = new Set([...address.address.matchAll(TAG)].map(m => m[1]!.toLowerCase()))
    const sender = from.toLowerCase()
    const domain = sender.slice(sender.lastIndexOf('@') + 1)
    const named = args['X-IYS-BRAND']
    const brandCode = named !== undefined
      ? canonicalCode(String(named))
      : this.deps.keys.originatorBrand(principal.iysCode, sender) ?? (domain !== '' ? this.deps.keys.originatorBrand(principal.iysCode, domain) : null) ?? onlyBrand(principal)
    if (brandCode === null || !mayActFor(principal, brandCode)) {
      this.deps.metrics.smtpCommands.inc({ command: 'mail', result: 'no_brand' })
      throw reply(550, '5.7.1 No brand of this key for this sender (X-IYS-BRAND, `originators add --originator`, or a key limited to one brand)')
    }
    const commercialArg = args['X-IYS-COMMERCIAL']
    if (commercialArg !== undefined && commercialArg !== '0' && commercialArg !== '1') throw reply(501, '5.5.4 X-IYS-COMMERCIAL must be 0 or 1')
    const typeArg = typeof args['X-IYS-RECIPIENT-TYPE'] === 'string' ? (args['X-IYS-RECIPIENT-TYPE'] as string).toUpperCase() : undefined
    if (typeArg !== undefined && !isRecipientType(typeArg)) throw reply(501, '5.5.4 X-IYS-RECIPIENT-TYPE must be BIREYSEL or TACIR')
    this.transactions.set(session.id, {
      iysCode: principal.iysCode,
      brandCode,
      // Neither the envelope nor a tag says: commercial, i.e. consent needed (the safe side of the law).
      commercial: commercialArg !== undefined ? commercialArg === '1' : !tags.has('bilgi'),
      recipientType: typeArg ?? (tags.has('tacir') ? 'TACIR' : 'BIREYSEL'),
      from,
      accepted: [],
      tickets: [],
      ended: false,
      spooling: false
    })
    this.deps.metrics.smtpCommands.inc({ command: 'mail', result: 'ok' })
  }

  private async onRcptTo (address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const t = this.transactions.get(session.id)
    if (t === undefined) throw reply(503, '5.5.1 MAIL FROM first')
    const principal = this.current(session)
    if (t.accepted.length >= this.settings.maxRecipients) throw reply(452, '4.5.3 Too many recipients (SMTP_MAX_RECIPIENTS): send the rest in another message')
    const recipient = normalizeEmail(address.address)
    if (isRecipientError(recipient)) { this.count('invalid'); throw reply(553, '5.1.3 Not a valid e-mail address') }
    // The same address twice (smtp-server keeps one): one copy, one decision.
    if (t.accepted.some(r => r.address === recipient)) return
    if (this.deps.rateLimit.take(principal.keyId, principal.ratePerSecond) > 0) { this.count('throttled'); throw reply(451, '4.7.1 Rate limit of this key: try again shortly') }
    const query: CheckQuery = { brandCode: t.brandCode, type: 'EPOSTA', recipientType: t.recipientType, commercial: t.commercial, recipients: [recipient] }
    const results = await this.deps.checker.check(query)
    const r = results[0]!
    const messageId = randomUUID()
    let ticket: MessageTicket | null
    try {
      ticket = this.deps.decisions.afterDecisions('smtp', query, results, { iysCode: t.iysCode, messageIds: [messageId] })
    } catch {
      this.count('journal_unavailable')
      throw reply(451, '4.3.0 Cannot record the decision now: try again later')
    }
    if (r.allowed) {
      if (t.ended) { // the transaction ended while this was decided: not sent
        if (ticket !== null) this.deps.decisions.afterOutcomes(ticket, [null])
        throw reply(503, '5.5.1 The transaction ended')
      }
      t.accepted.push({ address: recipient, brandCode: t.brandCode, iysCode: t.iysCode, commercial: t.commercial, messageId })
      t.tickets.push(ticket)
      this.count('accepted')
      return
    }
    this.count(r.reason)
    if (r.reason === 'STORE_UNAVAILABLE') throw reply(451, '4.3.0 Consent cannot be checked right now: try again later')
    if (r.reason === 'INVALID_RECIPIENT') throw reply(553, '5.1.3 Not a valid e-mail address')
    throw reply(550, r.reason === 'REJECTED'
      ? '5.7.1 The recipient has rejected messages from this brand (İYS RET)'
      : '5.7.1 No consent (İYS ONAY) of the recipient for this brand')
  }

  private async onData (stream: NodeJS.ReadableStream & { sizeExceeded?: boolean }, session: SMTPServerSession): Promise<void> {
    const t = this.transactions.get(session.id)
    if (t === undefined || t.accepted.length === 0) { stream.resume(); throw reply(503, '5.5.1 No valid recipients') }
    t.spooling = true
    this.transactions.delete(session.id) // this message's outcome is the spool's now, whatever the session does
    const { chunks, bytes } = await collect(stream, this.settings.maxMessageBytes)
    if (stream.sizeExceeded === true || bytes > this.settings.maxMessageBytes) { this.outcomes(t, null); throw reply(552, `5.3.4 Message too big (SMTP_MAX_MESSAGE_BYTES ${this.settings.maxMessageBytes})`) }
    let id: string
    try {
      id = await this.deps.spool.accept({ envelopeFrom: t.from, recipients: t.accepted, raw: Buffer.concat(chunks, bytes) })
    } catch (err) {
      this.deps.log.error({ err }, 'SMTP: the spool refused a message')
      this.outcomes(t, null)
      throw reply(452, '4.3.1 Cannot take the message now (spool): try again later')
    }
    this.outcomes(t, id)
    this.deps.metrics.smtpCommands.inc({ command: 'data', result: 'spooled' })
    this.deps.spooled()
  }

  /** The decisions' outcome in the decision log: spooled for relay (with the spool id), or not taken. */
  private outcomes (t: Transaction, spoolId: string | null): void {
    for (const ticket of t.tickets) if (ticket !== null) this.deps.decisions.afterOutcomes(ticket, [spoolId === null ? null : { upstreamStatus: 'spooled', carrierId: spoolId }])
    t.tickets = []
  }

  private endTransaction (sessionId: string): void {
    const t = this.transactions.get(sessionId)
    if (t === undefined) return
    this.transactions.delete(sessionId)
    t.ended = true
    if (!t.spooling) this.outcomes(t, null)
  }

  private count (result: string): void {
    this.deps.metrics.smtpCommands.inc({ command: 'rcpt', result })
  }
}

/**
 * The message's chunks up to `max` bytes, and its size. smtp-server only flags a message over SIZE and streams on: it
 * is not kept once it is too big. Events rather than `for await`, whose iterator showed per message in the profile.
 */
function collect (stream: NodeJS.ReadableStream, max: number): Promise<{ chunks: Buffer[], bytes: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let bytes = 0
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length
      if (bytes <= max) chunks.push(chunk)
    })
    stream.once('end', () => resolve({ chunks, bytes }))
    stream.once('error', reject)
  })
}

/** Corks `socket` when data comes in (before smtp-server's parser sees it) until the event loop's next check phase. */
function batchReplies (socket: Socket): void {
  let corked = false
  const uncork = (): void => { corked = false; socket.uncork() }
  socket.prependListener('data', () => {
    if (corked) return
    corked = true
    socket.cork()
    setImmediate(uncork)
  })
}

/** A key limited to one brand sends for it; the embedded trial's demo key for the sample data's brand. */
const onlyBrand = (p: Principal): string | null => p.brands !== 'any' && p.brands.size === 1 ? [...p.brands][0]! : p.demo ? DEMO_BRAND_CODE : null
