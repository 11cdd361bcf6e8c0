// The key form of an SMS originator (the SMPP source_addr, a "başlık"/sender ID, a short code or a number), under
// which the originator → brand table (`originators add`) stores it and the SMPP front end looks it up, so that the
// same sender written two ways is one entry.
//
// Decisions: the text is trimmed. A phone number (normalizePhone, as everywhere) becomes its E.164 form, so
// `05321112233`, `+90 532 111 22 33` and `905321112233` are one originator. Anything else is kept as typed, except
// that ASCII letters are upper-cased: short codes (`4545`) and other digit strings stay as they are, and
// alphanumeric sender IDs (`acme`, `Acme` → `ACME`) compare without case, as operators treat them. Only printable
// ASCII is accepted, at most 20 characters (after trimming): Turkish sender IDs are registered in ASCII (no `İ`/`ş`),
// and SMPP carries source_addr as an ASCII C-octet string, so a non-ASCII or control-character entry could never
// match a message; such text is refused (null) rather than folded into something it was not.

import { isRecipientError, normalizePhone } from '../domain/normalize.js'

/** The longest originator accepted (SMPP 3.4's source_addr holds 20 characters). */
export const MAX_ORIGINATOR_LENGTH = 20

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/
const LOWER = /[a-z]/

/**
 * The key form of `text`, or null when it cannot be an originator (empty, longer than MAX_ORIGINATOR_LENGTH,
 * control or non-ASCII characters). Idempotent: the key form of a key form is itself.
 */
export function originatorKey (text: string): string | null {
  const t = text.trim()
  if (t.length === 0 || t.length > MAX_ORIGINATOR_LENGTH || !PRINTABLE_ASCII.test(t)) return null
  const phone = normalizePhone(t)
  if (!isRecipientError(phone)) return phone
  // toUpperCase is locale-independent (unlike toLocaleUpperCase), and on ASCII it maps only a-z.
  return LOWER.test(t) ? t.toUpperCase() : t
}
