// Our message TLVs, in the range SMPP 3.4 (§5.3.2) leaves to vendors (0x1400–0x3FFF). A submit_sm may carry them to
// say what the bind's defaults and the originator table would otherwise decide:
//
//   0x1420 brand code      ASCII digits (İYS brandCode), one trailing NUL allowed: "100", "000100\0" → "100"
//   0x1421 commercial      1 octet: 0 informational, 1 commercial (ASCII "0"/"1" too)
//   0x1422 recipient type  1 octet: 0 BIREYSEL, 1 TACIR; or ASCII "0"/"1", "BIREYSEL"/"TACIR" (any case)
//
// A tag that is present but malformed refuses the message (ESME_RINVTLVVAL by default, domain/smpp-status.ts): ignoring it would
// decide under the defaults a sender explicitly overrode. node-smpp hands unknown TLVs over as `pdu[tag] = Buffer`;
// a process that registers them with smpp.addTLV must use the names in TAG_NAMES (any TLV type works: Buffer,
// string and number values are all read). node-smpp keeps only the last of a repeated TLV.

import { canonicalCode, type RecipientType } from '../domain/vocabulary.js'

export const TAG_BRAND_CODE = 0x1420
export const TAG_COMMERCIAL = 0x1421
export const TAG_RECIPIENT_TYPE = 0x1422

/** The property names node-smpp decodes our tags to if they are registered with smpp.addTLV. */
export const TAG_NAMES = Object.freeze({
  [TAG_BRAND_CODE]: 'iys_brand_code', [TAG_COMMERCIAL]: 'iys_commercial', [TAG_RECIPIENT_TYPE]: 'iys_recipient_type'
} as const)

/** What the message's tags say; a field is absent when its tag is. */
export interface MessageTags {
  readonly brandCode?: string
  readonly commercial?: boolean
  readonly recipientType?: RecipientType
}

/** A tag that is present but malformed: `error` names the tag and what is wrong with it. */
export interface TagError { readonly error: string }

/** A decoded PDU as node-smpp gives it: unknown TLVs under their tag number. */
export type TaggedPdu = Readonly<Record<string | number, unknown>>

export const isTagError = (v: MessageTags | TagError): v is TagError => 'error' in v

// Most PDUs carry none of our tags: one shared answer, no allocation.
const NO_TAGS: MessageTags = Object.freeze({})
const BRAND_DIGITS = /^\d{1,15}$/

/** Reads our TLVs from a decoded submit_sm (or data_sm). */
export function messageTags (pdu: TaggedPdu): MessageTags | TagError {
  const brandRaw = pdu[TAG_BRAND_CODE] ?? pdu[TAG_NAMES[TAG_BRAND_CODE]]
  const commercialRaw = pdu[TAG_COMMERCIAL] ?? pdu[TAG_NAMES[TAG_COMMERCIAL]]
  const typeRaw = pdu[TAG_RECIPIENT_TYPE] ?? pdu[TAG_NAMES[TAG_RECIPIENT_TYPE]]
  if (brandRaw === undefined && commercialRaw === undefined && typeRaw === undefined) return NO_TAGS

  const out: { brandCode?: string, commercial?: boolean, recipientType?: RecipientType } = {}
  if (brandRaw !== undefined) {
    const text = asText(brandRaw)
    const code = text !== null && BRAND_DIGITS.test(text) ? canonicalCode(text) : null
    if (code === null) return bad(TAG_BRAND_CODE, 'brand code', 'must be 1 to 15 ASCII digits naming a brand (not 0)', brandRaw)
    out.brandCode = code
  }
  if (commercialRaw !== undefined) {
    const flag = asFlag(commercialRaw)
    if (flag === null) return bad(TAG_COMMERCIAL, 'commercial flag', 'must be one octet, 0 (informational) or 1 (commercial)', commercialRaw)
    out.commercial = flag === 1
  }
  if (typeRaw !== undefined) {
    const flag = asFlag(typeRaw)
    if (flag !== null) out.recipientType = flag === 1 ? 'TACIR' : 'BIREYSEL'
    else {
      const word = asText(typeRaw)?.toUpperCase()
      if (word !== 'BIREYSEL' && word !== 'TACIR') return bad(TAG_RECIPIENT_TYPE, 'recipient type', 'must be one octet, 0 (BIREYSEL) or 1 (TACIR), or the word BIREYSEL or TACIR', typeRaw)
      out.recipientType = word
    }
  }
  return out
}

/** The value as ASCII text without one trailing NUL; null when it is not text (a non-ASCII octet, a wrong type). */
function asText (v: unknown): string | null {
  if (typeof v === 'string') v = Buffer.from(v, 'latin1')
  else if (typeof v === 'number') return null
  if (!(v instanceof Uint8Array)) return null
  let end = v.length
  if (end > 1 && v[end - 1] === 0) end--
  let s = ''
  for (let i = 0; i < end; i++) {
    const c = v[i]!
    if (c < 0x20 || c > 0x7e) return null
    s += String.fromCharCode(c)
  }
  return s
}

/** 0 or 1 from one binary octet (0x00/0x01, or a number from a registered int8 TLV) or the text "0"/"1"; else null. */
function asFlag (v: unknown): 0 | 1 | null {
  if (typeof v === 'number') return v === 0 || v === 1 ? v : null
  if (v instanceof Uint8Array && v.length === 1 && (v[0] === 0 || v[0] === 1)) return v[0]
  const text = asText(v)
  return text === '0' ? 0 : text === '1' ? 1 : null
}

function bad (tag: number, name: string, rule: string, value: unknown): TagError {
  return { error: `TLV 0x${tag.toString(16).toUpperCase()} (${name}) ${rule}; got ${describe(value)}` }
}

/** The offending value for the error text: its octets in hex, at most 16 (a TLV may hold anything). */
function describe (v: unknown): string {
  if (typeof v === 'number') return `the number ${v}`
  const bytes = typeof v === 'string' ? Buffer.from(v, 'latin1') : v instanceof Uint8Array ? v : null
  if (bytes === null) return `a value of type ${Array.isArray(v) ? 'array' : typeof v}`
  if (bytes.length === 0) return 'an empty value'
  const shown = Array.from(bytes.subarray(0, 16), b => b.toString(16).padStart(2, '0')).join(' ')
  return `${bytes.length} octet${bytes.length === 1 ? '' : 's'}: ${shown}${bytes.length > 16 ? ' …' : ''}`
}
