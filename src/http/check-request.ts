// The /v1/check edge: turns a parsed body into a CheckQuery, or throws a GatewayError naming the field, and turns the
// checker's decisions into the answer's bytes (the presentation, İYS's date format included, lives here and not in
// the checker). Per-recipient problems (a bad phone number) are not request errors: they come back as
// INVALID_RECIPIENT items.
//
// A recipient that is not a string (a number, null, an object, an array) is such an item too (the README's
// contract): it is never sent to, and it is echoed back as given. It is never walked here. Echoing it
// (serializeResults) and logging it (the decision log) stringify it, which is safe because the router refuses, with
// 400 JSON_TOO_DEEP before parsing, any body nesting deeper than MAX_JSON_DEPTH (src/http/body.ts): a recipient
// is at most that deep and at most MAX_BODY_BYTES long, so `recipients: [[[[…10,000 deep…]]]]` is a request error,
// not a 500.

import { GatewayError } from '../domain/errors.js'
import { canonicalCode, isConsentType, isRecipientType } from '../domain/vocabulary.js'
import type { CheckQuery, CheckResult } from '../check/checker.js'
import { formatIysDate } from '../domain/time.js'

export const MAX_RECIPIENTS = 1000

const KNOWN_FIELDS = new Set(['brandCode', 'type', 'recipientType', 'commercial', 'recipient', 'recipients'])

export function parseCheckRequest (body: unknown): CheckQuery {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GatewayError('INVALID_FIELD', { message: 'The request body must be a JSON object.' })
  }
  const b = body as Record<string, unknown>
  for (const k in b) {
    if (!KNOWN_FIELDS.has(k)) throw new GatewayError('INVALID_FIELD', { location: k, message: `Unknown field "${k}"; allowed: ${[...KNOWN_FIELDS].join(', ')}.` })
  }
  if (b.brandCode === undefined) throw new GatewayError('MISSING_FIELD', { location: 'brandCode', message: 'brandCode is required.' })
  const brandCode = canonicalCode(b.brandCode)
  if (brandCode === null) throw new GatewayError('INVALID_BRAND_CODE', { location: 'brandCode', value: b.brandCode })
  if (b.type === undefined) throw new GatewayError('H111', { location: 'type' })
  if (!isConsentType(b.type)) throw new GatewayError('H117', { location: 'type', value: b.type })
  const recipientType = b.recipientType ?? 'BIREYSEL'
  if (!isRecipientType(recipientType)) throw new GatewayError('H116', { location: 'recipientType', value: b.recipientType })
  const commercial = b.commercial ?? true
  if (typeof commercial !== 'boolean') throw new GatewayError('INVALID_FIELD', { location: 'commercial', value: b.commercial, message: 'commercial must be true or false.' })

  let recipients: readonly unknown[]
  if (b.recipients !== undefined) {
    if (b.recipient !== undefined) throw new GatewayError('INVALID_FIELD', { location: 'recipient', message: 'Send either recipient or recipients, not both.' })
    if (!Array.isArray(b.recipients)) throw new GatewayError('INVALID_FIELD', { location: 'recipients', message: 'recipients must be an array.' })
    if (b.recipients.length === 0) throw new GatewayError('INVALID_FIELD', { location: 'recipients', message: 'recipients must not be empty.' })
    if (b.recipients.length > MAX_RECIPIENTS) throw new GatewayError('TOO_MANY_RECIPIENTS', { location: 'recipients', value: b.recipients.length })
    recipients = b.recipients
  } else {
    if (b.recipient === undefined) throw new GatewayError('H114', { location: 'recipient' })
    recipients = [b.recipient]
  }
  return { brandCode, type: b.type, recipientType, commercial, recipients }
}

// Hand-written serialisation of the hot path's answer: the shapes are fixed and only `recipient` (the caller's raw
// input) needs escaping; `normalized` is E.164 or an e-mail that passed a strict ASCII pattern without quotes or
// backslashes, status and source are vocabulary words. Measurably faster than JSON.stringify over per-item objects.
// The consent the decision relied on is shown with its date in İYS's format (Turkey time), straight from its state.
export function serializeResults (results: readonly CheckResult[]): string {
  let s = '{"results":['
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!
    if (i > 0) s += ','
    s += '{"recipient":' + (r.recipient === undefined ? 'null' : JSON.stringify(r.recipient)) +
      ',"normalized":' + (r.normalized === null ? 'null' : '"' + r.normalized + '"') +
      ',"allowed":' + r.allowed + ',"reason":"' + r.reason + '"'
    const c = r.state
    if (c !== undefined) s += ',"consent":{"status":"' + c.status + '","source":"' + c.source + '","consentDate":"' + formatIysDate(c.consentDate) + '"}'
    if (r.error !== undefined) s += ',"error":{"code":"' + r.error.code + '","message":' + JSON.stringify(r.error.message) + '}'
    s += '}'
  }
  return s + ']}'
}
