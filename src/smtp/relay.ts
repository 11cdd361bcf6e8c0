// The relay worker: takes copies from the spool (spool.ts) to the upstream mail relay, one copy per recipient, so
// that each carries that recipient's own RFC 8058 unsubscribe link and each gets its own outcome.
//
//   accepted   the recipient is delivered.
//   temporary  tried again after an exponential back-off with jitter (retry.baseMs doubling up to retry.maxMs, each
//              delay drawn from its upper half), the last try at acceptedAt + retry.giveUpAfterMs; a temporary
//              refusal at or after that deadline bounces (Status 5.4.7, delivery time expired). A relayer that throws
//              or a message file that cannot be read counts as temporary.
//   permanent  bounces at once, with the upstream's enhanced status when it gave a 5.x.x (else 5.0.0).
//
// A bounce is a DSN (RFC 3464, buildDsn) to the envelope sender, from the empty sender so that it can never bounce
// back; it is spooled like any message (fsynced before the recipient is marked bounced) and relayed by this same
// loop, so a bounce is not lost to a crash or to the upstream being down either. A message whose envelope sender was
// empty (a bounce itself) gets no DSN. One DSN per bounced recipient.
//
// Nothing is lost across a restart: the spool keeps no "sending" state, so a copy in flight when the process died is
// still pending on disk and is sent again at the next start. SMTP has no idempotency key: a crash between the
// upstream's 250 and our state write (markDelivered) delivers that one copy twice. That is the price of never losing
// one; the window is one fsync long.

import { randomBytes } from 'node:crypto'
import { redact, type Logger } from '../log.js'
import type { RelayEnvelope, RelayOutcome } from '../carriers/smtp-upstream.js'
import type { MailSpool, SpoolEntry, SpoolRecipient } from './spool.js'

/** The upstream side (the SMTP carrier, carriers/smtp-upstream.ts): sends one message to one envelope. */
export interface Relayer {
  relay: (envelope: RelayEnvelope, raw: Buffer) => Promise<RelayOutcome>
}

/** The unsubscribe links of one recipient's copy (null: none, the copy goes without). */
export type UnsubscribeLinks = (r: { recipient: string, brandCode: string, iysCode: string }) => { url: string, mailto?: string } | null

export type RelayResult = 'delivered' | 'bounced' | 'retrying'

export interface RetryPolicy {
  baseMs: number
  maxMs: number
  /** from acceptance (SMTP_RETRY_MAX_HOURS) */
  giveUpAfterMs: number
}

/** A start for RetryPolicy's delays: a minute, doubling to an hour (the deadline is configuration). */
export const RETRY_DELAYS = { baseMs: 60_000, maxMs: 3_600_000 } as const

export interface MailRelayDeps {
  spool: MailSpool
  relayer: Relayer
  unsubscribe: UnsubscribeLinks
  /** Each copy's outcome, by the decision's message id (not called for our own bounces). Must not throw. */
  onOutcome?: (messageId: string, outcome: RelayResult, detail: string) => void
  log: Logger
  retry: RetryPolicy
  /** the DSN's From: and, by its domain, the Reporting-MTA (e.g. MAILER-DAEMON@<SMTP_HOSTNAME>) */
  bounceFrom: string
  /** copies being sent at once */
  concurrency?: number
  now?: () => number
  /** [0, 1): the jitter's draw */
  random?: () => number
}

/** Longest sleep between passes: a clock that jumps is noticed within this. */
const MAX_SLEEP_MS = 60_000
const DEFAULT_CONCURRENCY = 8

export class MailRelay {
  private readonly deps: MailRelayDeps
  private readonly now: () => number
  private readonly random: () => number
  private readonly concurrency: number
  private readonly reportingMta: string
  /** copies being sent, by `<spool id>/<recipient index>` */
  private readonly sending = new Map<string, Promise<void>>()
  /** message bytes read once and shared by the copies of a message in flight */
  private readonly bodies = new Map<string, { raw: Promise<Buffer>, users: number }>()
  private started = false
  private stopped = false
  private pumpQueued = false
  private timer: NodeJS.Timeout | null = null

  constructor (deps: MailRelayDeps) {
    this.deps = deps
    this.now = deps.now ?? Date.now
    this.random = deps.random ?? Math.random
    this.concurrency = deps.concurrency ?? DEFAULT_CONCURRENCY
    this.reportingMta = deps.bounceFrom.slice(deps.bounceFrom.lastIndexOf('@') + 1) || 'localhost'
  }

  /** Starts sending what the spool holds (after spool.open()). */
  start (): void {
    this.started = true
    this.kick()
  }

  /** Looks for due copies soon (after an accept, a completion, a timer); kicks in one turn make one pass. */
  kick (): void {
    if (!this.started || this.stopped || this.pumpQueued) return
    this.pumpQueued = true
    setImmediate(() => { this.pumpQueued = false; this.pump() })
  }

  /** No new copies; resolves once the copies in flight have their outcome on disk. */
  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    while (this.sending.size > 0) await Promise.allSettled([...this.sending.values()])
  }

  /** Resolves when no pass is queued and no copy is in flight (tests). */
  async idle (): Promise<void> {
    while (this.pumpQueued || this.sending.size > 0) {
      if (this.sending.size > 0) await Promise.allSettled([...this.sending.values()])
      else await new Promise(resolve => setImmediate(resolve))
    }
  }

  /** Copies in flight. */
  get inFlight (): number { return this.sending.size }

  /**
   * One pass: starts the copies due, in the order they became due, up to the concurrency, and sleeps until the next is
   * due. The spool's index hands out only due copies (O(log N) each): a pass never walks the copies backing off.
   */
  private pump (): void {
    if (this.stopped) return
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    const { spool } = this.deps
    const now = this.now()
    // Due again while its last attempt's outcome is still being written (a clock that jumped): put back after the
    // pass, and taken by the pass its completion kicks.
    let busy: { id: string, index: number }[] | null = null
    while (this.sending.size < this.concurrency) {
      const copy = spool.takeDue(now)
      if (copy === undefined) break
      const { entry, index } = copy
      const key = `${entry.id}/${index}`
      if (this.sending.has(key)) { (busy ??= []).push({ id: entry.id, index }); continue }
      const p = this.deliver(entry, index)
        .catch((err: unknown) => { this.deps.log.error({ err, spoolId: entry.id }, 'SMTP relay: the outcome of a copy could not be written (a restart sends it again)') })
        .finally(() => { this.sending.delete(key); this.kick() })
      this.sending.set(key, p)
    }
    const next = this.sending.size >= this.concurrency ? Infinity : spool.nextDueAt // at the limit a completion kicks the next pass
    if (busy !== null) for (const c of busy) spool.requeue(c.id, c.index)
    if (next !== Infinity) {
      this.timer = setTimeout(() => { this.timer = null; this.kick() }, Math.min(Math.max(0, next - now), MAX_SLEEP_MS))
      this.timer.unref()
    }
  }

  private async deliver (entry: SpoolEntry, i: number): Promise<void> {
    const r = entry.recipients[i]!
    let raw: Buffer | null = null
    try {
      let outcome: RelayOutcome
      try {
        raw = await this.body(entry.id)
      } catch (err) {
        outcome = { kind: 'temporary', error: `local: the spooled message cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})` }
      }
      if (raw !== null) {
        // A failure here (a bad link, a relayer that throws) is a temporary refusal like any other: the copy gets
        // its back-off, never a tight loop of passes.
        try {
          let copy = raw
          if (r.commercial) {
            const links = this.deps.unsubscribe({ recipient: r.address, brandCode: r.brandCode, iysCode: r.iysCode })
            if (links !== null) copy = withUnsubscribeHeaders(raw, links.url, links.mailto)
          }
          outcome = await this.deps.relayer.relay({ from: entry.envelopeFrom, to: [r.address] }, copy)
        } catch (err) {
          outcome = { kind: 'temporary', error: `local: ${(err as Error).message}` }
        }
      }
      await this.settle(entry, i, outcome!, raw)
    } finally {
      this.release(entry.id)
    }
  }

  private async settle (entry: SpoolEntry, i: number, outcome: RelayOutcome, raw: Buffer | null): Promise<void> {
    const { spool, retry } = this.deps
    const r = entry.recipients[i]!
    if (outcome.kind === 'accepted') {
      await spool.markDelivered(entry.id, i, oneLine(outcome.response))
      this.report(entry, r, 'delivered', outcome.response)
      return
    }
    const error = withCode(outcome.error, outcome.code)
    if (outcome.kind === 'permanent') {
      await this.bounce(entry, i, raw, { status: enhancedStatus(error), diagnostic: error, reason: 'The receiving mail system refused it permanently.' })
      return
    }
    const now = this.now()
    const deadline = entry.acceptedAt + retry.giveUpAfterMs
    if (now >= deadline) {
      const hours = Math.round(retry.giveUpAfterMs / 360_000) / 10
      await this.bounce(entry, i, raw, { status: '5.4.7', diagnostic: error, reason: `It could not be delivered for ${hours} hours (${r.attempts + 1} attempts); the last attempt was refused temporarily.` })
      return
    }
    const retryAt = Math.min(now + this.backoff(r.attempts + 1), deadline)
    await spool.markFailed(entry.id, i, oneLine(error), retryAt)
    this.report(entry, r, 'retrying', error)
  }

  /** The delay after the n-th failed attempt: base · 2^(n-1), at most maxMs, drawn from its upper half. */
  private backoff (n: number): number {
    const { baseMs, maxMs } = this.deps.retry
    const d = Math.min(maxMs, baseMs * 2 ** Math.min(n - 1, 40))
    return Math.round(d / 2 + (d / 2) * this.random())
  }

  /** Spools the DSN (none for a bounce), then marks the recipient bounced: a crash between sends the DSN twice. */
  private async bounce (entry: SpoolEntry, i: number, raw: Buffer | null, why: { status: string, diagnostic: string, reason: string }): Promise<void> {
    const { spool } = this.deps
    const r = entry.recipients[i]!
    if (entry.envelopeFrom !== '') {
      const dsn = buildDsn({
        reportingMta: this.reportingMta,
        from: this.deps.bounceFrom,
        to: entry.envelopeFrom,
        recipient: r.address,
        status: why.status,
        diagnostic: why.diagnostic,
        reason: why.reason,
        originalHeaders: raw === null ? Buffer.alloc(0) : raw.subarray(0, headerBlockEnd(raw)),
        arrivalDate: new Date(entry.acceptedAt),
        date: new Date(this.now()),
        messageId: `${randomBytes(12).toString('hex')}@${this.reportingMta}`,
        boundary: `=_iys_${randomBytes(12).toString('hex')}`
      })
      const to: SpoolRecipient = { address: entry.envelopeFrom, brandCode: r.brandCode, iysCode: r.iysCode, commercial: false, messageId: r.messageId }
      try {
        await spool.accept({ envelopeFrom: '', recipients: [to], raw: dsn, bounceOf: entry.id }, { ignoreLimit: true })
      } catch (err) {
        // The bounce must not be lost: the recipient stays pending and is tried (and bounced) again later.
        this.deps.log.error({ err, spoolId: entry.id }, 'SMTP relay: could not spool a bounce; the copy stays pending')
        await spool.markFailed(entry.id, i, oneLine(why.diagnostic), this.now() + this.backoff(r.attempts + 1))
        this.report(entry, r, 'retrying', why.diagnostic)
        return
      }
    }
    await spool.markFailed(entry.id, i, oneLine(why.diagnostic), null)
    this.report(entry, r, 'bounced', why.diagnostic)
  }

  private report (entry: SpoolEntry, r: SpoolRecipient, outcome: RelayResult, detail: string): void {
    if (entry.bounceOf !== undefined) { // our own DSN: no decision of a client's behind it
      const level = outcome === 'bounced' ? 'warn' : 'info'
      this.deps.log[level]({ spoolId: entry.id, bounceOf: entry.bounceOf, outcome, detail: redact(oneLine(detail)) }, 'SMTP relay: bounce (DSN) to the sender')
      return
    }
    if (outcome !== 'delivered') this.deps.log.info({ spoolId: entry.id, messageId: r.messageId, outcome, detail: redact(oneLine(detail)) }, 'SMTP relay: copy refused by the upstream')
    try {
      this.deps.onOutcome?.(r.messageId, outcome, detail)
    } catch (err) {
      this.deps.log.error({ err }, 'SMTP relay: onOutcome threw')
    }
  }

  private body (id: string): Promise<Buffer> {
    let b = this.bodies.get(id)
    if (b === undefined) {
      b = { raw: this.deps.spool.read(id), users: 0 }
      b.raw.catch(() => {}) // each user awaits it; a failure is theirs to handle
      this.bodies.set(id, b)
    }
    b.users++
    return b.raw
  }

  private release (id: string): void {
    const b = this.bodies.get(id)
    if (b !== undefined && --b.users <= 0) this.bodies.delete(id)
  }
}

// ---- the copy's headers ----

const HAS_LIST_UNSUBSCRIBE = /(?:^|\n)List-Unsubscribe[ \t]*:/i
const HAS_LIST_UNSUBSCRIBE_POST = /(?:^|\n)List-Unsubscribe-Post[ \t]*:/i
/** What a URI inside <…> of a header may not contain: controls, space, angle brackets, non-ASCII. */
const BAD_LINK = /[^\x21-\x3b\x3d\x3f-\x7e]/

/**
 * Byte offset where the header block ends: the start of the empty line that separates it from the body (the whole
 * message when there is none). Lines end in CRLF or LF, as the message has them.
 */
export function headerBlockEnd (raw: Buffer): number {
  let pos = 0
  while (pos < raw.length) {
    if (raw[pos] === 0x0a || (raw[pos] === 0x0d && raw[pos + 1] === 0x0a)) return pos
    const nl = raw.indexOf(0x0a, pos)
    if (nl === -1) return raw.length
    pos = nl + 1
  }
  return raw.length
}

/**
 * The message with RFC 8058's `List-Unsubscribe: <url>[, <mailto:…>]` and `List-Unsubscribe-Post:
 * List-Unsubscribe=One-Click` put at the top of its header block, in the line endings it uses. A message that has a
 * List-Unsubscribe field already (its own, which the sender may have signed) is returned as it is; a
 * List-Unsubscribe-Post alone is not doubled. The bytes of the message follow unchanged: the body is never touched.
 */
export function withUnsubscribeHeaders (raw: Buffer, url: string, mailto?: string): Buffer {
  const head = raw.toString('latin1', 0, headerBlockEnd(raw))
  if (HAS_LIST_UNSUBSCRIBE.test(head)) return raw
  const nl = raw.indexOf(0x0a)
  const eol = nl > 0 && raw[nl - 1] === 0x0d ? '\r\n' : nl === -1 ? '\r\n' : '\n'
  const links = [`<${link(url)}>`]
  if (mailto !== undefined && mailto !== '') links.push(`<${link(/^mailto:/i.test(mailto) ? mailto : `mailto:${mailto}`)}>`)
  let field = `List-Unsubscribe: ${links.join(', ')}`
  if (field.length > 78 && links.length > 1) field = `List-Unsubscribe: ${links.join(`,${eol} `)}` // folded, RFC 5322 §2.2.3
  const post = HAS_LIST_UNSUBSCRIBE_POST.test(head) ? '' : `List-Unsubscribe-Post: List-Unsubscribe=One-Click${eol}`
  return Buffer.concat([Buffer.from(field + eol + post, 'latin1'), raw])
}

function link (uri: string): string {
  if (uri === '' || BAD_LINK.test(uri)) throw new TypeError('an unsubscribe link must be a non-empty ASCII URI without spaces or angle brackets')
  return uri
}

// ---- the DSN ----

export interface DsnInput {
  /** this host's name (Reporting-MTA: dns; …) */
  reportingMta: string
  /** the DSN's From: (MAILER-DAEMON@…) */
  from: string
  /** the original envelope sender, who gets the DSN */
  to: string
  /** the recipient whose copy failed (Final-Recipient) */
  recipient: string
  /** 5.x.x */
  status: string
  /** the upstream's answer (Diagnostic-Code: smtp; …) */
  diagnostic: string
  /** one sentence for the person reading it */
  reason: string
  /** the original's header block, as text/rfc822-headers */
  originalHeaders: Buffer
  arrivalDate: Date
  date: Date
  /** the DSN's Message-ID, without angle brackets */
  messageId: string
  boundary: string
}

/** An RFC 3464 delivery status notification (multipart/report; report-type=delivery-status), CRLF throughout. */
export function buildDsn (d: DsnInput): Buffer {
  const CRLF = '\r\n'
  const headerText = d.originalHeaders.toString('latin1').replace(/\r?\n/g, CRLF)
  const head = [
    `From: Mail Delivery System <${oneLine(d.from)}>`,
    `To: <${oneLine(d.to)}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${rfc5322Date(d.date)}`,
    `Message-ID: <${oneLine(d.messageId)}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${d.boundary}"`,
    '',
    'This is a MIME-encapsulated delivery status notification (RFC 3464).',
    '',
    `--${d.boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    `This is the mail system at ${oneLine(d.reportingMta)}.`,
    '',
    `Your message could not be delivered to <${oneLine(d.recipient)}>.`,
    oneLine(d.reason),
    '',
    `The mail system answered: ${oneLine(d.diagnostic)}`,
    '',
    `--${d.boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${oneLine(d.reportingMta)}`,
    `Arrival-Date: ${rfc5322Date(d.arrivalDate)}`,
    '',
    `Final-Recipient: rfc822; ${oneLine(d.recipient)}`,
    'Action: failed',
    `Status: ${d.status}`,
    `Diagnostic-Code: smtp; ${oneLine(d.diagnostic)}`,
    `Last-Attempt-Date: ${rfc5322Date(d.date)}`,
    '',
    `--${d.boundary}`,
    'Content-Type: text/rfc822-headers',
    '',
    ''
  ].join(CRLF)
  const tail = `${headerText.endsWith(CRLF) || headerText === '' ? '' : CRLF}${CRLF}--${d.boundary}--${CRLF}`
  return Buffer.concat([Buffer.from(head, 'utf8'), Buffer.from(headerText, 'latin1'), Buffer.from(tail, 'latin1')])
}

/** RFC 5322 date-time in UTC ("Tue, 02 Jan 2024 03:04:05 +0000"). */
const rfc5322Date = (t: Date): string => t.toUTCString().replace(/GMT$/, '+0000')

/** One header-safe line: no CR/LF (a folded or hostile value cannot add a field), at most 900 characters. */
const oneLine = (s: string): string => s.replace(/[\r\n]+[ \t]*/g, ' ').trim().slice(0, 900)

/** The upstream's text with its reply code in front when the text lacks one ("550 5.1.1 …"). */
const withCode = (error: string, code?: number): string => code !== undefined && !/^\d{3}\b/.test(error) ? `${code} ${error}` : error

/** The enhanced status of a permanent refusal: the upstream's own 5.x.x, else 5.0.0. */
function enhancedStatus (error: string): string {
  const m = /\b[45]\.(\d{1,3})\.(\d{1,3})\b/.exec(error)
  return m === null ? '5.0.0' : `5.${m[1]}.${m[2]}`
}
