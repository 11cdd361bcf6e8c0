// The generic JSON carrier adapter: the wire format below is what `UPSTREAM_*_URL` carriers speak unless a
// carrier-specific adapter is configured, and what the fake carrier (src/dev/fake-carrier.ts) implements.
//
// ### Carrier wire format (JSON over HTTP)
//
// Request: `POST {UPSTREAM_<TYPE>_URL}/messages`, one message per request, on kept-alive connections.
//
//     content-type: application/json
//     idempotency-key: <messageId>          same value on every attempt for the same message
//
//     {"messageId":"…","type":"MESAJ","to":"+905321234567","iysCode":"700001","brandCode":"600001",
//      "sender":"ACME","text":"…"}
//
// | field | meaning |
// |---|---|
// | `messageId` | the gateway's id for the message (the client's, or one generated for it); also the idempotency key |
// | `type` | `MESAJ`, `EPOSTA` or `ARAMA` |
// | `to` | normalised recipient: E.164 phone (`MESAJ`, `ARAMA`) or lower-case e-mail (`EPOSTA`) |
// | `iysCode`, `brandCode` | the service provider and brand, as decimal strings |
// | `MESAJ` | `sender` (originator), `text` |
// | `EPOSTA` | `from`, `subject`, `body` |
// | `ARAMA` | `callerId` |
//
// Answers the carrier must give:
//
// | answer | meaning | gateway reports |
// |---|---|---|
// | `2xx` with `{"id":"…"}` (or `{"messageId":"…"}`) | accepted; the id is the carrier's reference | `forwarded: true`, `carrierId` |
// | `2xx` without either | cannot tell | not forwarded, `status: "unknown"`, `maybeDelivered: true`, no retry |
// | `4xx` (not 408/409/429) | refused for good; the error text is taken from `errors[0].message`, `error`, `message` or the raw body | `status: "rejected"`, no retry |
// | `408`, `429`, `503` | not taken, try later (a `Retry-After` up to the longest back-off is waited for; a longer one ends the retries) | retried; certainly not delivered |
// | `409` | the same idempotency key is still being processed | retried; maybe delivered |
// | other `5xx` (`500`, `502`, `504`…) | failed somewhere, possibly after the carrier took it (e.g. a proxy timing out) | retried; maybe delivered |
// | `1xx`/`3xx` | not followed | `status: "rejected"` (a misconfigured URL) |
//
// Idempotency: a carrier must treat a repeated `idempotency-key` as the same message: answer the first final
// answer (2xx or 4xx) again and not send it twice, including while the first request is still in progress
// (wait for it, or answer 409). Retries and a client's re-send of a message whose fate was unknown rely on this.

import { retryAfterMs } from '../util/retry-after.js'
import type { CarrierAdapter, CarrierRequest, CarrierResult, OutboundMessage, ResponseHeaders } from './contract.js'

const HEADERS: Readonly<Record<string, string>> = Object.freeze({ 'content-type': 'application/json' })
const MAX_ERROR_TEXT = 200

function body (m: OutboundMessage): string {
  // Fields listed one by one (not spread from the payload) so that nothing but the documented fields leaves.
  switch (m.type) {
    case 'MESAJ':
      return JSON.stringify({ messageId: m.messageId, type: m.type, to: m.recipient, iysCode: m.iysCode, brandCode: m.brandCode, sender: m.payload.sender, text: m.payload.text })
    case 'EPOSTA':
      return JSON.stringify({ messageId: m.messageId, type: m.type, to: m.recipient, iysCode: m.iysCode, brandCode: m.brandCode, from: m.payload.from, subject: m.payload.subject, body: m.payload.body })
    case 'ARAMA':
      return JSON.stringify({ messageId: m.messageId, type: m.type, to: m.recipient, iysCode: m.iysCode, brandCode: m.brandCode, callerId: m.payload.callerId })
  }
}

const tryJson = (text: string): unknown => {
  if (text === '') return undefined
  try { return JSON.parse(text) } catch { return undefined }
}

function clip (text: string): string {
  const t = text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim()
  return t.length > MAX_ERROR_TEXT ? t.slice(0, MAX_ERROR_TEXT) + '…' : t
}

/** The carrier's own words for an error: İYS-style `errors[0].message`, `error`, `error.message`, `message`, or the body. */
export function carrierErrorText (status: number, text: string): string {
  const j = tryJson(text) as Record<string, unknown> | undefined
  let said: unknown
  if (j !== null && typeof j === 'object') {
    const errors = j.errors
    if (Array.isArray(errors) && errors.length > 0 && typeof errors[0] === 'object' && errors[0] !== null) {
      const e = errors[0] as Record<string, unknown>
      said = typeof e.code === 'string' && typeof e.message === 'string' ? `${e.code} ${e.message}` : e.message ?? e.code
    }
    if (typeof said !== 'string') said = typeof j.error === 'object' && j.error !== null ? (j.error as Record<string, unknown>).message : j.error
    if (typeof said !== 'string') said = j.message
  }
  const words = typeof said === 'string' ? clip(said) : clip(text)
  return words === '' ? `HTTP ${status}` : `HTTP ${status}: ${words}`
}

function idOf (j: unknown): string | null {
  if (j === null || typeof j !== 'object') return null
  for (const k of ['id', 'messageId'] as const) {
    const v = (j as Record<string, unknown>)[k]
    if (typeof v === 'string' && v !== '') return v
    if (typeof v === 'number' && Number.isFinite(v)) return String(v)
  }
  return null
}

export const jsonAdapter: CarrierAdapter = Object.freeze({
  name: 'json',

  buildRequest (msg: OutboundMessage): CarrierRequest {
    return { path: '/messages', method: 'POST', headers: HEADERS, body: body(msg) }
  },

  parseResponse (status: number, text: string, headers: ResponseHeaders): CarrierResult {
    if (status >= 200 && status < 300) {
      const id = idOf(tryJson(text))
      return id !== null ? { kind: 'accepted', carrierId: id } : { kind: 'unknown', error: `carrier answered HTTP ${status} without an id` }
    }
    if (status === 408 || status === 429 || status === 503) {
      const after = retryAfterMs(headers)
      return after === undefined
        ? { kind: 'retry', error: carrierErrorText(status, text) }
        : { kind: 'retry', error: carrierErrorText(status, text), retryAfterMs: after }
    }
    if (status === 409) return { kind: 'retry', error: carrierErrorText(status, text), maybeDelivered: true }
    if (status >= 500) return { kind: 'retry', error: carrierErrorText(status, text), maybeDelivered: true }
    if (status >= 400) return { kind: 'rejected', error: carrierErrorText(status, text) }
    return { kind: 'rejected', error: `carrier answered HTTP ${status}; check the upstream URL (redirects are not followed)` }
  }
})
