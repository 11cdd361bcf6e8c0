// POST /v1/messages: check each message's recipient through the decision core, forward only the allowed ones to
// the channel's carrier, answer per message in order. The post-decision hook (audit/decisions-hook.ts), the same as
// /v1/check's, counts the decisions, makes running scrubs yield to this traffic and journals every decision (before
// forwarding) with its carrier outcome (after).

import { randomUUID } from 'node:crypto'
import type { Checker, CheckQuery } from '../check/checker.js'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import { requireBrand } from '../auth/principal.js'
import { GatewayError } from '../domain/errors.js'
import { canonicalCode, isConsentType, isRecipientType, type ConsentType } from '../domain/vocabulary.js'
import type { Metrics } from '../metrics.js'
import { isValidMessageId, type OutboundMessage, type PayloadByType } from '../carriers/contract.js'
import type { UpstreamOutcome, Upstreams } from '../carriers/upstream.js'
import { json, type Router } from './router.js'

export const MAX_MESSAGES = 1000

const PAYLOAD_FIELDS: Readonly<Record<ConsentType, readonly string[]>> = Object.freeze({
  MESAJ: ['sender', 'text'],
  EPOSTA: ['from', 'subject', 'body'],
  ARAMA: ['callerId']
})

interface ParsedMessages {
  iysCode: string
  query: Omit<CheckQuery, 'recipients'>
  messageIds: string[]
  recipients: unknown[]
  payloads: PayloadByType[ConsentType][]
}

export function parseMessagesRequest (body: unknown): ParsedMessages {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new GatewayError('INVALID_FIELD', { message: 'The request body must be a JSON object.' })
  const b = body as Record<string, unknown>
  const iysCode = canonicalCode(b.iysCode)
  if (iysCode === null) throw new GatewayError(b.iysCode === undefined ? 'MISSING_FIELD' : 'INVALID_FIELD', { location: 'iysCode', value: b.iysCode, message: 'iysCode must be the provider\'s İYS code.' })
  const brandCode = canonicalCode(b.brandCode)
  if (brandCode === null) throw new GatewayError(b.brandCode === undefined ? 'MISSING_FIELD' : 'INVALID_BRAND_CODE', { location: 'brandCode', value: b.brandCode })
  if (b.type === undefined) throw new GatewayError('H111', { location: 'type' })
  if (!isConsentType(b.type)) throw new GatewayError('H117', { location: 'type', value: b.type })
  const recipientType = b.recipientType ?? 'BIREYSEL'
  if (!isRecipientType(recipientType)) throw new GatewayError('H116', { location: 'recipientType', value: b.recipientType })
  // Sending is explicit: whether a message is commercial decides whether consent is needed, so it is never assumed.
  if (typeof b.commercial !== 'boolean') throw new GatewayError(b.commercial === undefined ? 'MISSING_FIELD' : 'INVALID_FIELD', { location: 'commercial', value: b.commercial, message: 'commercial must be given, true or false.' })
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw new GatewayError('INVALID_FIELD', { location: 'messages', message: 'messages must be a non-empty array.' })
  if (b.messages.length > MAX_MESSAGES) throw new GatewayError('TOO_MANY_MESSAGES', { location: 'messages', value: b.messages.length })
  const type = b.type
  const fields = PAYLOAD_FIELDS[type]
  const out: ParsedMessages = { iysCode, query: { brandCode, type, recipientType, commercial: b.commercial }, messageIds: [], recipients: [], payloads: [] }
  const seen = new Set<string>()
  b.messages.forEach((m: unknown, i: number) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new GatewayError('INVALID_FIELD', { location: `messages.${i}`, message: 'Each message must be an object.' })
    const msg = m as Record<string, unknown>
    const id = msg.messageId ?? randomUUID()
    if (!isValidMessageId(id)) throw new GatewayError('INVALID_FIELD', { location: `messages.${i}.messageId`, message: 'messageId must be 1 to 128 visible ASCII characters.' })
    if (seen.has(id)) throw new GatewayError('INVALID_FIELD', { location: `messages.${i}.messageId`, value: id, message: 'messageId must be unique within a request.' })
    seen.add(id)
    const payload: Record<string, string> = {}
    for (const f of fields) {
      if (typeof msg[f] !== 'string' || msg[f] === '') throw new GatewayError('INVALID_FIELD', { location: `messages.${i}.${f}`, message: `A ${type} message needs ${fields.join(', ')} (non-empty strings).` })
      payload[f] = msg[f] as string
    }
    out.messageIds.push(id)
    out.recipients.push(msg.recipient)
    out.payloads.push(payload as unknown as PayloadByType[ConsentType])
  })
  return out
}

export interface MessagesRouteDeps {
  checker: Checker
  upstreams: Upstreams
  metrics: Metrics
  decisions: DecisionsHook
}

export function messagesRoute (router: Router, deps: MessagesRouteDeps): void {
  router.post('/v1/messages', 'messages', async (body, req) => {
    const p = parseMessagesRequest(body)
    requireBrand(req.principal, p.query.brandCode, p.iysCode, false)
    const query: CheckQuery = { ...p.query, recipients: p.recipients }
    const results = await deps.checker.check(query)
    // The decisions are on local disk before anything is forwarded (a crash from here on cannot lose them), and the
    // carrier outcomes follow them into the same journal segment: Postgres gets one row per message with its outcome.
    const ticket = deps.decisions.afterDecisions('messages', query, results, p)
    let outcomes: (UpstreamOutcome | null)[] = []
    try {
      // Only allowed messages reach the carrier; they go out concurrently (the carrier pool bounds the connections).
      outcomes = await Promise.all(results.map((r, i): Promise<UpstreamOutcome> | null => r.allowed
        ? deps.upstreams.send({ messageId: p.messageIds[i]!, type: query.type, recipient: r.normalized!, iysCode: p.iysCode, brandCode: query.brandCode, payload: p.payloads[i]! } as OutboundMessage)
        : null))
    } finally {
      if (ticket !== null) {
        deps.decisions.afterOutcomes(ticket, outcomes.map(o => o === null ? null : { upstreamStatus: o.status, carrierId: o.forwarded ? o.carrierId : null }))
      }
    }
    for (const o of outcomes) if (o !== null) deps.metrics.upstreamOutcomes.inc({ type: query.type, status: o.status })
    return json(200, {
      results: results.map((r, i) => {
        const o = outcomes[i]!
        const carrier = o === null
          ? undefined
          : o.forwarded
            ? { status: o.status, id: o.carrierId, attempts: o.attempts }
            : { status: o.status, error: o.error, attempts: o.attempts, maybeDelivered: o.maybeDelivered }
        return { messageId: p.messageIds[i], recipient: r.recipient, normalized: r.normalized, allowed: r.allowed, reason: r.reason, ...(r.error !== undefined ? { error: r.error } : {}), forwarded: o !== null && o.forwarded, ...(carrier !== undefined ? { carrier } : {}) }
      })
    })
  }, { auth: { scopes: ['send'] } })
}
