// The one recipient normaliser: every path (check, import, scrub, consent API) goes through here, so the key a
// consent is stored under and the key a check looks up can never disagree.
//
// Phones become E.164. Turkish numbers arrive in every shape people type (05321234567, 5321234567,
// +90 532 123 45 67, 0090 532 1234567, 90-532-123-4567, (0532) 123 45 67); other countries must carry their `+`.
// E-mails are trimmed and lower-cased; İYS refuses non-ASCII addresses (H120), so do we.

import type { ConsentType } from './vocabulary.js'
import { ERRORS } from './errors.js'

export interface RecipientError {
  readonly code: 'H114' | 'H120' | 'H121' | 'H160' | 'H464'
  readonly message: string
}

const err = (code: RecipientError['code']): RecipientError => Object.freeze({ code, message: ERRORS[code].message })
export const MISSING_RECIPIENT = err('H114')
export const BAD_EMAIL = err('H120')
export const BAD_PHONE = err('H121')
export const PHONE_TOO_LONG = err('H160')
const mismatch = (type: ConsentType, kind: string): RecipientError =>
  Object.freeze({ code: 'H464', message: `İzin tipi (type) ${type} için, alıcı (recipient) ${kind} formatında olmalıdır.` })
/** H464 for each channel: the recipient is not of the channel's kind (İYS's wording). */
export const MISMATCH: Readonly<Record<ConsentType, RecipientError>> = Object.freeze({
  MESAJ: mismatch('MESAJ', 'telefon'), ARAMA: mismatch('ARAMA', 'telefon'), EPOSTA: mismatch('EPOSTA', 'e-posta')
})

export const MAX_EMAIL_LENGTH = 265
export const MAX_PHONE_LENGTH = 15

// Already canonical Turkish numbers are the common case on the hot path: test once and return the input as is.
const CANONICAL_TR = /^\+90[2-58]\d{9}$/
// Turkish national significant numbers: 10 digits, mobile 5xx, geographic 2xx/3xx/4xx, 850 and the like 8xx.
const TR_NSN = /^[2-58]\d{9}$/
const E164 = /^\+[1-9]\d{6,14}$/
const PHONE_CHARS = /^(?:\+|\(?\d)[\d\s().-]*$/ // starts with +, a digit or (digit; a leading - is not a number
const SEPARATORS = /[\s().-]/g
const EMAIL = /^[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/

export const isRecipientError = (v: string | RecipientError): v is RecipientError => typeof v !== 'string'

/** Returns the normalised recipient, or the İYS error that explains why it cannot be one. */
export function normalizeRecipient (raw: unknown): string | RecipientError {
  if (typeof raw !== 'string') return typeof raw === 'number' ? normalizePhone(String(raw)) : MISSING_RECIPIENT
  if (raw.length === 0) return MISSING_RECIPIENT
  if (CANONICAL_TR.test(raw)) return raw
  return raw.includes('@') ? normalizeEmail(raw) : normalizePhone(raw)
}

export function normalizeEmail (raw: string): string | RecipientError {
  const s = raw.trim().toLowerCase()
  if (s.length > MAX_EMAIL_LENGTH || !EMAIL.test(s)) return BAD_EMAIL
  return s
}

export function normalizePhone (raw: string): string | RecipientError {
  const t = raw.trim()
  if (t.length === 0) return MISSING_RECIPIENT
  if (!PHONE_CHARS.test(t)) return BAD_PHONE
  const plus = t.charCodeAt(0) === 43 /* + */
  let d = (plus ? t.slice(1) : t).replace(SEPARATORS, '')
  if (d.length === 0 || d.includes('+')) return BAD_PHONE
  if (!plus) {
    if (d.startsWith('00')) d = d.slice(2) // international call prefix
    else if (d.length === 11 && d.charCodeAt(0) === 48 /* 0 */) d = '90' + d.slice(1) // 0532...
    else if (d.length === 10 && TR_NSN.test(d)) d = '90' + d // 532...
    else if (!(d.length === 12 && d.startsWith('90'))) return BAD_PHONE // 90532... is the only other bare form
  }
  // The `+9005...` mistake: a trunk 0 kept after the country code.
  if (d.length === 13 && d.startsWith('900')) d = '90' + d.slice(3)
  if (d.startsWith('90')) {
    if (d.length > MAX_PHONE_LENGTH - 1) return PHONE_TOO_LONG
    return TR_NSN.test(d.slice(2)) ? '+' + d : BAD_PHONE
  }
  const e164 = '+' + d
  if (e164.length > MAX_PHONE_LENGTH) return PHONE_TOO_LONG
  return E164.test(e164) ? e164 : BAD_PHONE
}

/** H464 when the channel does not fit the recipient: MESAJ/ARAMA need a phone, EPOSTA an e-mail address. */
export function checkTypeFit (normalized: string, type: ConsentType): RecipientError | null {
  const isPhone = normalized.charCodeAt(0) === 43 /* + */
  return isPhone === (type !== 'EPOSTA') ? null : MISMATCH[type]
}
