// Mobile-originated (MO) messages: the text a recipient sent, and whether it is a rejection ("RET", "IPTAL",
// "RET <brand>") to record as a RET consent for the brand the number belongs to.
//
// The keyword is matched strictly: after trimming and folding (any case; Turkish İ/ı/I/i and the diacritics of
// ç ğ ö ş ü â î û folded to ASCII), the whole text must be RET or IPTAL, alone or followed by exactly one brand word
// (letters and digits, then also & . _ -). "RETURN", "RET.", "IPTAL ET LUTFEN" or "RET ACME MARKET" are not
// rejections: a message that only looks like one must not withdraw a consent, and a brand of several words cannot
// be told from a sentence. Such messages still reach the tenant's receiver bind, where a person can read them.
// The brand word is returned as written (folded, upper-case); resolving it to a brand is the caller's.

import { messageBody, UDHI, type ConcatFields } from './concat.js'

/** A rejection keyword, and the brand word that followed it (null: none). */
export interface Rejection { readonly brand: string | null }

// NFD splits İ into I + U+0307 and ç ğ ö ş ü â î û into a base letter and a mark; dropping the marks and upper-casing
// (ı upper-cases to I in every locale) leaves ASCII for every Turkish letter.
const MARKS = /[\u0300-\u036f]/g
const REJECTION = /^(?:RET|IPTAL)(?:\s+([A-Z0-9][A-Z0-9&._-]*))?$/

/** Folds text for keyword matching: Turkish letters and Latin diacritics to ASCII, upper case. */
export const foldText = (text: string): string => text.normalize('NFD').replace(MARKS, '').toUpperCase()

/** The rejection an MO text makes, or null when it is not exactly a rejection keyword (and a brand word). */
export function rejectionOf (text: string): Rejection | null {
  const t = text.trim()
  if (t.length < 3) return null
  const m = REJECTION.exec(foldText(t))
  return m === null ? null : { brand: m[1] ?? null }
}

/** The fields of a deliver_sm (or data_sm) moText reads, as node-smpp names them. */
export interface MoFields extends ConcatFields {
  readonly data_coding?: number
}

/**
 * The MO's text from short_message, or message_payload when short_message is empty; '' when the data coding is not
 * text we read. node-smpp has decoded GSM default (0), IA5 (1), Latin-1 (3) and UCS2 (8) already, UDH national
 * language tables included, and leaves other codings as octets; raw octets (not decoded) are read here: GSM default
 * alphabet (unpacked septets), IA5, Latin-1, UCS2 big-endian, after the UDH when esm_class says there is one.
 */
export function moText (pdu: MoFields): string {
  const body = messageBody(pdu)
  if (body === undefined) return ''
  const dcs = pdu.data_coding ?? 0
  if (!(body instanceof Uint8Array)) return typeof body.message === 'string' ? body.message : decodeText(body.message, dcs)
  if (((pdu.esm_class ?? 0) & UDHI) === 0) return decodeText(body, dcs)
  const start = body.length === 0 ? 1 : 1 + body[0]!
  return start > body.length ? '' : decodeText(body.subarray(start), dcs)
}

// GSM 03.38 default alphabet and its escape (0x1B) extension table.
const GSM = '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà'
const GSM_EXT: Readonly<Record<number, string>> = { 0x0a: '\f', 0x14: '^', 0x28: '{', 0x29: '}', 0x2f: '\\', 0x3c: '[', 0x3d: '~', 0x3e: ']', 0x40: '|', 0x65: '€', 0x1b: ' ' }
const UCS2 = new TextDecoder('utf-16be')

/** Text from octets in SMPP data coding `dcs` (§5.2.19, and the GSM message-class codings 0xF0–0xF3); '' if not text. */
export function decodeText (bytes: Uint8Array, dcs: number): string {
  switch (dcs) {
    case 0x00: case 0xf0: case 0xf1: case 0xf2: case 0xf3: return gsm(bytes)
    case 0x01: case 0x03: return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1')
    case 0x08: return UCS2.decode(bytes)
    default: return ''
  }
}

function gsm (bytes: Uint8Array): string {
  let s = ''
  for (let i = 0; i < bytes.length; i++) {
    let c = bytes[i]!
    if (c > 0x7f) return '' // not unpacked septets
    if (c === 0x1b) {
      if (++i === bytes.length) break // a lone escape at the end shows nothing
      c = bytes[i]!
      if (c > 0x7f) return ''
      // TS 23.038: an escaped code the extension table lacks shows as the default table's character.
      s += GSM_EXT[c] ?? GSM[c]!
    } else s += GSM[c]!
  }
  return s
}
