// One submit_sm from a provider's bind, through the decision core: which brand, commercial or not, which recipient
// type (our TLVs, then the tenant's originator table, then the bind's defaults), the decision (taken once for all
// parts of a concatenated message), the post-decision hook, and for an allowed message the operator. Answers with
// the command_status and message_id of the submit_sm_resp; never throws for what a peer can send.

import { randomUUID } from 'node:crypto'
import { PDU } from 'smpp'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import type { SmppLogin } from '../auth/key-store.js'
import { mayActFor } from '../auth/principal.js'
import type { UpstreamOutcome, Upstreams } from '../carriers/upstream.js'
import type { MessageTicket } from '../audit/decision-log.js'
import { deferAppends } from '../audit/journal.js'
import type { Checker, CheckQuery, CheckResult } from '../check/checker.js'
import { isRecipientError } from '../domain/normalize.js'
import type { Metrics } from '../metrics.js'
import { destinationOf } from './address.js'
import { concatOf, ConcatDecisions, isConcatError } from './concat.js'
import type { ReceiptStore } from './receipts.js'
import type { SmppStatusMap } from '../domain/smpp-status.js'
import type { SharedParts } from './shared-parts.js'
import { statusOfReason, statusOfOutcome } from './status.js'
import { submitSmForDestination, withoutTlvs, type MultiDestination } from './pdu-bytes.js'
import { readSubmitSm } from './submit-reader.js'
import { isTagError, messageTags, TAG_BRAND_CODE, TAG_COMMERCIAL, TAG_RECIPIENT_TYPE } from './tags.js'

/** ESME_RINVDLNAME: a distribution list name in a submit_multi (not offered). */
const INVALID_DL_NAME = 0x34

const OUR_TAGS: ReadonlySet<number> = new Set([TAG_BRAND_CODE, TAG_COMMERCIAL, TAG_RECIPIENT_TYPE])

export interface SubmitAnswer {
  status: number
  messageId?: string
}

/** What the front end needs to know about the bind a submit came on. */
export interface SubmitBind {
  readonly login: SmppLogin
  readonly systemId: string
}

export interface SubmitDeps {
  checker: Checker
  decisions: DecisionsHook
  /** The carriers (the MESAJ one; none configured: allowed messages are answered as not forwarded). */
  upstreams: Pick<Upstreams, 'send'>
  receipts: ReceiptStore
  metrics: Metrics
  statuses: SmppStatusMap
  /** Looks up a tenant's originator → brand table (KeyStore.originatorBrand). */
  originatorBrand: (iysCode: string, originator: string) => string | null
  /** How long all parts of a concatenated message share one decision (ms). */
  concatTtlMs: number
  /** The parts' decisions shared with the other gateways (Redis); null: this gateway's own only. */
  sharedParts: SharedParts | null
}

/**
 * A decision, shared by every part of one concatenated message. `ticket`: the journal's record awaiting its carrier
 * outcome; the first part forwarded takes it (the message is logged once, with that part's outcome).
 */
interface Decided { result: CheckResult, ticket: MessageTicket | null }
type PartsDecision = Promise<Decided | SubmitAnswer>

/** What a submit_multi is answered: the first accepted message id, and the destinations that were not sent. */
export interface MultiAnswer {
  status: number
  messageId: string
  unsuccess: { dest_addr_ton: number, dest_addr_npi: number, destination_addr: string, error_status_code: number }[]
}

export class SubmitHandler {
  private readonly deps: SubmitDeps
  private readonly parts: ConcatDecisions<PartsDecision>

  constructor (deps: SubmitDeps) {
    this.deps = deps
    this.parts = new ConcatDecisions<PartsDecision>({ ttlMs: deps.concatTtlMs })
  }

  async handle (bind: SubmitBind, pdu: PDU, bytes: Buffer): Promise<SubmitAnswer> {
    const s = this.deps.statuses
    const recipient = destinationOf(String(pdu.destination_addr ?? ''), pdu.dest_addr_ton ?? 0, pdu.dest_addr_npi ?? 0)
    if (isRecipientError(recipient)) return { status: s.INVALID_RECIPIENT }
    const tags = messageTags(pdu)
    if (isTagError(tags)) return { status: s.BAD_TLV }
    const { principal, defaults } = bind.login
    const source = String(pdu.source_addr ?? '')
    const brandCode = tags.brandCode ?? this.deps.originatorBrand(principal.iysCode, source) ?? defaults.brandCode
    // No brand, or one this key may not send for: the originator is what is wrong (ESME_RINVSRCADR by default).
    if (brandCode === null || !mayActFor(principal, brandCode)) return { status: s.NO_BRAND }
    const query: CheckQuery = {
      brandCode,
      type: 'MESAJ',
      recipientType: tags.recipientType ?? defaults.recipientType,
      // Neither the message nor the bind says: commercial, i.e. consent needed (the safe side of the law).
      commercial: tags.commercial ?? defaults.commercial ?? true,
      recipients: [recipient]
    }
    const concat = concatOf(pdu)
    if (concat !== null && isConcatError(concat)) return { status: concat.field === 'udh' ? s.BAD_UDH : s.BAD_TLV }
    // Our id for this part: the decision log's and the carrier's idempotency key (the operator's id is answered).
    const messageId = randomUUID()
    let decided: Decided | SubmitAnswer
    if (concat === null) {
      decided = await this.decide(query, principal.iysCode, messageId)
    } else {
      // Every part gets the decision of the first one to arrive (parts may arrive together: share the promise).
      const key = ConcatDecisions.keyOf(principal.keyId, source, recipient, concat)
      let shared = this.parts.get(key)
      if (shared === undefined) {
        shared = this.decideParts(query, principal.iysCode, messageId, key)
        this.parts.set(key, shared)
        shared.catch(() => { this.parts.delete(key) }) // a failure is no decision: the next part decides again
      }
      decided = await shared
      // A temporary answer is not the message's decision: the platform retries those parts, and they are decided again.
      if (!('result' in decided) || decided.result.reason === 'STORE_UNAVAILABLE') this.parts.delete(key)
    }
    if (!('result' in decided)) return decided
    if (!decided.result.allowed) return { status: statusOfReason(s, decided.result.reason) }
    const ticket = decided.ticket
    decided.ticket = null
    const tagged = tags.brandCode !== undefined || tags.commercial !== undefined || tags.recipientType !== undefined
    return this.forward(bind, query, recipient, source, bytes, tagged, ticket, messageId)
  }

  /**
   * A submit_multi: each SME destination decided and forwarded as the submit_sm it makes (pdu-bytes.ts), all at
   * once. Answered 0 with the destinations that were not sent in unsuccess_sme, each with the status its submit_sm
   * would have had, and the first accepted operator id as message_id (the receipts of the others are routed to the
   * bind all the same). Distribution lists (dest_flag 2) are not offered: ESME_RINVDLNAME for each.
   * `admit` says whether one more message fits the key's rate now (false: that destination is ESME_RTHROTTLED).
   */
  async handleMulti (bind: SubmitBind, pdu: PDU, bytes: Buffer, admit: () => boolean): Promise<MultiAnswer> {
    const dests: MultiDestination[] = Array.isArray(pdu.dest_address) ? pdu.dest_address : []
    const answers = await Promise.all(dests.map(async (d): Promise<SubmitAnswer> => {
      if (d.dl_name !== undefined) return { status: INVALID_DL_NAME }
      if (!admit()) return { status: this.deps.statuses.THROTTLED }
      const one = submitSmForDestination(bytes, d.dest_addr_ton ?? 0, d.dest_addr_npi ?? 0, String(d.destination_addr ?? ''))
      if (one === null) return { status: this.deps.statuses.BAD_TLV }
      return this.handle(bind, readSubmitSm(one) ?? new PDU(one), one)
    }))
    const out: MultiAnswer = { status: 0, messageId: '', unsuccess: [] }
    answers.forEach((a, i) => {
      if (a.status === 0) { if (out.messageId === '') out.messageId = a.messageId ?? ''; return }
      const d = dests[i]!
      out.unsuccess.push({ dest_addr_ton: d.dest_addr_ton ?? 0, dest_addr_npi: d.dest_addr_npi ?? 0, destination_addr: String(d.destination_addr ?? d.dl_name ?? ''), error_status_code: a.status })
    })
    return out
  }

  /**
   * The decision of a concatenated message: another gateway's if it decided first (shared-parts.ts: not logged
   * again here), else ours, claimed for the others before it is journalled. Redis not answering: ours alone.
   */
  private async decideParts (query: CheckQuery, iysCode: string, messageId: string, key: string): Promise<Decided | SubmitAnswer> {
    const shared = this.deps.sharedParts
    if (shared === null) return this.decide(query, iysCode, messageId)
    const theirs = await shared.get(key).catch(() => null)
    if (theirs !== null) return { result: { recipient: query.recipients[0], normalized: query.recipients[0] as string, ...theirs }, ticket: null }
    const results = await this.deps.checker.check(query)
    const r = results[0]!
    // A temporary answer is not the message's decision: nothing to claim (the platform retries those parts).
    let claimed = false
    if (r.reason !== 'STORE_UNAVAILABLE') {
      const won = await shared.claim(key, { allowed: r.allowed, reason: r.reason }).then(w => { claimed = w === null; return w }, () => null)
      if (won !== null) return { result: { ...r, allowed: won.allowed, reason: won.reason }, ticket: null }
    }
    const decided = await this.journal(query, results, iysCode, messageId)
    // Not journalled: nothing may leave on this decision, here or on another gateway.
    if (claimed && !('result' in decided)) await shared.release(key).catch(() => {})
    return decided
  }

  /** The decision for one message, through the post-decision hook (journalled before anything is forwarded). */
  private async decide (query: CheckQuery, iysCode: string, messageId: string): Promise<Decided | SubmitAnswer> {
    return this.journal(query, await this.deps.checker.check(query), iysCode, messageId)
  }

  /**
   * Journals the decision with the other submits decided in this turn (one write for all of them) and resolves once
   * it is written: only then may the message be forwarded, or its refusal answered.
   */
  private async journal (query: CheckQuery, results: CheckResult[], iysCode: string, messageId: string): Promise<Decided | SubmitAnswer> {
    try {
      const d = deferAppends(() => this.deps.decisions.afterDecisions('smpp', query, results, { iysCode, messageIds: [messageId] }))
      await d.written
      return { result: results[0]!, ticket: d.value }
    } catch {
      // The journal cannot take it: nothing may leave. Temporary, the platform retries.
      return { status: this.deps.statuses.STORE_UNAVAILABLE }
    }
  }

  private async forward (bind: SubmitBind, query: CheckQuery, recipient: string, source: string, bytes: Buffer, tagged: boolean, ticket: MessageTicket | null, messageId: string): Promise<SubmitAnswer> {
    const o = await this.send(bind, query, recipient, source, bytes, tagged, messageId)
    // Written with the turn's other journal lines; nothing waits for it (a lost outcome is logged by the journal, and
    // the decision stays recorded as interrupted, as after a crash here).
    if (ticket !== null) deferAppends(() => { this.deps.decisions.afterOutcomes(ticket, [{ upstreamStatus: o.status, carrierId: o.forwarded ? o.carrierId : null }]) })
    this.deps.metrics.upstreamOutcomes.inc({ type: 'MESAJ', status: o.status })
    const s = this.deps.statuses
    if (!o.forwarded) return { status: statusOfOutcome(s, o.status) }
    // The operator's id goes back to the platform as is, so its receipts need no rewriting; who sent it is kept
    // for routing them. A failure to remember loses a receipt, never the message: answered as sent.
    await this.deps.receipts.remember(o.carrierId, bind.systemId).catch(() => { this.deps.metrics.smppReceipts.inc({ result: 'owner_not_stored' }) })
    return { status: 0, messageId: o.carrierId }
  }

  private send (bind: SubmitBind, query: CheckQuery, recipient: string, source: string, bytes: Buffer, tagged: boolean, messageId: string): Promise<UpstreamOutcome> {
    const encoded = tagged ? withoutTlvs(bytes, OUR_TAGS) : Buffer.from(bytes)
    return this.deps.upstreams.send({
      messageId,
      type: 'MESAJ',
      recipient,
      iysCode: bind.login.principal.iysCode,
      brandCode: query.brandCode,
      payload: { sender: source, text: '', smppPdu: encoded }
    })
  }
}
