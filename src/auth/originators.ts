// The key form of an originator — an SMS sender (the SMPP source_addr, a "başlık"/sender ID, a short code or a
// number) or an e-mail sender (an envelope sender address, or its domain) — under which the originator → brand table
// (`originators add`) stores it and the SMPP and SMTP front ends look it up, so that the same sender written two
// ways is one entry.
//
// E-mail: text with an `@` is an address, text with a dot and no `@` a domain; both lower-cased (as normalizeEmail
// does for recipients), at most 254 characters. The SMTP front end looks up the envelope sender, then its domain.
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

/** The longest e-mail address (RFC 5321's path limit less its brackets) or domain accepted. */
export const MAX_EMAIL_ORIGINATOR_LENGTH = 254

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/
// An address (local@domain) or a bare domain with at least one dot; no spaces or brackets.
const EMAIL_OR_DOMAIN = /^(?:[^\s@<>()[\],;:"]+@)?[a-z0-9-]+(?:\.[a-z0-9-]+)+$/i
const LOWER = /[a-z]/

/**
 * The key form of `text`, or null when it cannot be an originator (empty, longer than MAX_ORIGINATOR_LENGTH,
 * control or non-ASCII characters). Idempotent: the key form of a key form is itself.
 */
export function originatorKey (text: string): string | null {
  const t = text.trim()
  if (EMAIL_OR_DOMAIN.test(t)) return t.length <= MAX_EMAIL_ORIGINATOR_LENGTH ? t.toLowerCase() : null
  if (t.length === 0 || t.length > MAX_ORIGINATOR_LENGTH || !PRINTABLE_ASCII.test(t)) return null
  const phone = normalizePhone(t)
  if (!isRecipientError(phone)) return phone
  // toUpperCase is locale-independent (unlike toLocaleUpperCase), and on ASCII it maps only a-z.
  return LOWER.test(t) ? t.toUpperCase() : t
}
