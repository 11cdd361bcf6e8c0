// The carrier contract: the message handed to a carrier, and `CarrierAdapter`, how one carrier's API turns it into
// an HTTP request and reads the answer. Its own file so that adapters (json-adapter.ts is the one shipped) need
// nothing from upstream.ts, which drives them and picks the JSON adapter by default: imports go one way only.

import type { ConsentType } from '../domain/vocabulary.js'
import type { HeaderMap } from '../util/retry-after.js'

// ---- Messages ----------------------------------------------------------------------------------------------

export interface MesajPayload {
  readonly sender: string
  readonly text: string
  /**
   * The provider's own encoded submit_sm, from the SMPP front end: an SMPP carrier sends it on byte for byte (its
   * coding, UDH and TLVs as the provider wrote them; only the sequence number is ours) instead of building one from
   * `sender` and `text`. Other carriers ignore it.
   */
  readonly smppPdu?: Buffer
}
export interface EpostaPayload { readonly from: string, readonly subject: string, readonly body: string }
export interface AramaPayload { readonly callerId: string }
export interface PayloadByType { MESAJ: MesajPayload, EPOSTA: EpostaPayload, ARAMA: AramaPayload }

interface MessageOf<T extends ConsentType> {
  /** Unique per message; the caller generates one if the client gave none. Sent as the idempotency key. */
  readonly messageId: string
  readonly type: T
  /** Normalised: E.164 phone for MESAJ/ARAMA, lower-case e-mail for EPOSTA. */
  readonly recipient: string
  /** Canonical decimal text (vocabulary.canonicalCode). */
  readonly iysCode: string
  readonly brandCode: string
  readonly payload: PayloadByType[T]
}

/** One message to forward; `type` selects the payload's shape. */
export type OutboundMessage = MessageOf<'MESAJ'> | MessageOf<'EPOSTA'> | MessageOf<'ARAMA'>

/** A messageId goes into an HTTP header on every attempt: visible ASCII, 1 to 128 characters. */
export const MESSAGE_ID_RE = /^[\x21-\x7e]{1,128}$/
export const isValidMessageId = (v: unknown): v is string => typeof v === 'string' && MESSAGE_ID_RE.test(v)

// ---- The carrier contract ----------------------------------------------------------------------------------

export interface CarrierRequest {
  /** Appended to the upstream URL's path: UPSTREAM_MESAJ_URL=http://c/api + '/messages' → POST http://c/api/messages */
  readonly path: string
  readonly method?: 'POST' | 'PUT'
  /** `idempotency-key: <messageId>` is added to these on every attempt; adapters need not set it. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** Response headers as undici gives them (lower-case names). */
export type ResponseHeaders = HeaderMap

/** What the carrier's answer to one attempt means. */
export type CarrierResult =
  /** The carrier took the message; `carrierId` is its reference for it. */
  | { readonly kind: 'accepted', readonly carrierId: string }
  /** A definite no for this message (bad number, unknown sender...): final, never retried. */
  | { readonly kind: 'rejected', readonly error: string }
  /** Not taken this time; try again. `maybeDelivered`: the answer does not exclude that it was taken. */
  | { readonly kind: 'retry', readonly error: string, readonly maybeDelivered?: boolean, readonly retryAfterMs?: number }
  /** An answer that says neither yes nor no (2xx without an id...): final, and the message may have been taken. */
  | { readonly kind: 'unknown', readonly error: string }

export interface CarrierAdapter {
  readonly name: string
  /** Called once per message (not per attempt): every attempt sends the same bytes. Must not throw for a valid message. */
  buildRequest (msg: OutboundMessage): CarrierRequest
  /** Reads one complete answer (the body is cut at 64 KiB). Network errors and timeouts never reach the adapter. */
  parseResponse (status: number, body: string, headers: ResponseHeaders): CarrierResult
}
