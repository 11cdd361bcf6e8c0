// Field-level validation of one consent record, as İYS applies it to a consent write. The same function serves
// the file import, the embedded seed and the İYS-shaped API, so a record is accepted or refused alike everywhere.
// State rules that need the stored record (H174 same status, H175 first RET, H178 older date) live with the store.

import { errorItem, type ErrorItem } from './errors.js'
import { checkTypeFit, normalizeRecipient } from './normalize.js'
import { formatIysDate, IYS_EPOCH_S, parseIysDate, TR_OFFSET_S, type ParsedDate } from './time.js'
import {
  canonicalCode, isConsentType, isRecipientType, isSource, isStatus,
  type ConsentSource, type ConsentStatus, type ConsentType, type RecipientType
} from './vocabulary.js'

export interface ValidConsent {
  iysCode: string
  brandCode: string
  recipient: string
  recipientType: RecipientType
  type: ConsentType
  status: ConsentStatus
  source: ConsentSource
  /** epoch seconds */
  consentDate: number
}

/** A field İYS treats as not given: missing, null or empty. */
export const absent = (v: unknown): boolean => v === undefined || v === null || v === ''

const NOT_AN_OBJECT = 'A consent must be a JSON object.'

/**
 * Validates one record. `iysCode` and `brandCode` may come from the URL (API) or from the row (files).
 * Returns the normalised record, or the first error in İYS's order of checks.
 */
export function validateConsent (record: unknown, nowSeconds: number): ValidConsent | ErrorItem {
  // Lists from outside (İYS push, files) may hold anything: null, a number, an array is a refused item, not a throw.
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return errorItem('INVALID_FIELD', undefined, undefined, NOT_AN_OBJECT)
  const input = record as Readonly<Record<string, unknown>>
  const iysCode = canonicalCode(input.iysCode)
  if (iysCode === null) return errorItem('INVALID_FIELD', 'iysCode', input.iysCode, 'iysCode must be a positive integer (İYS code).')
  const brandCode = canonicalCode(input.brandCode)
  if (brandCode === null) return errorItem('INVALID_BRAND_CODE', 'brandCode', input.brandCode)

  if (absent(input.recipient)) return errorItem('H114', 'recipient')
  if (absent(input.type)) return errorItem('H111', 'type')
  if (!isConsentType(input.type)) return errorItem('H117', 'type', input.type)
  if (absent(input.status)) return errorItem('H110', 'status')
  if (!isStatus(input.status)) return errorItem('H115', 'status', input.status)
  if (absent(input.source)) return errorItem('H113', 'source')
  if (!isSource(input.source)) return errorItem('H119', 'source', input.source)
  if (absent(input.consentDate)) return errorItem('H112', 'consentDate')
  const recipientType = absent(input.recipientType) ? 'BIREYSEL' : input.recipientType
  if (!isRecipientType(recipientType)) return errorItem('H116', 'recipientType', input.recipientType)

  const recipient = normalizeRecipient(input.recipient)
  // The recipient's value is not echoed: error lists end up in reject files and logs.
  if (typeof recipient !== 'string') return errorItem(recipient.code, 'recipient', undefined, recipient.message)
  const misfit = checkTypeFit(recipient, input.type)
  if (misfit !== null) return errorItem('H464', 'recipient', undefined, misfit.message)

  if (typeof input.consentDate !== 'string') return errorItem('H158', 'consentDate', input.consentDate)
  const date = parseIysDate(input.consentDate)
  if (!date.ok) return errorItem(date.code, 'consentDate', input.consentDate)
  if (input.source === 'HS_2015' && date.seconds !== IYS_EPOCH_S) return errorItem('H155', 'consentDate', input.consentDate)
  if (date.seconds < IYS_EPOCH_S) return errorItem('H156', 'consentDate', input.consentDate)
  if (date.seconds > nowSeconds) return errorItem('H162', 'consentDate', input.consentDate)
  if (input.source === 'HS_KARAR' && input.status !== 'RET') return errorItem('H408', 'status', input.status)

  return {
    iysCode,
    brandCode,
    recipient,
    recipientType,
    type: input.type,
    status: input.status,
    source: input.source,
    consentDate: date.seconds
  }
}

export const isValidConsent = (v: ValidConsent | ErrorItem): v is ValidConsent => 'recipientType' in v

// İYS's transactionId is opaque text, not a token of a fixed alphabet: İYS's own examples hold non-ASCII letters
// ("1sdfsdggjıoyrnvt…"). Any string up to this length is one, as long as it has no NUL (Postgres text cannot hold
// it). Whoever writes it somewhere with a syntax of its own (COPY text, CSV, HTML) escapes it there.
export const MAX_TRANSACTION_ID_CHARS = 128
export const BAD_TRANSACTION_ID = `transactionId must be text of 1 to ${MAX_TRANSACTION_ID_CHARS} characters with no NUL character.`

export const isTransactionId = (v: unknown): v is string =>
  typeof v === 'string' && v.length > 0 && v.length <= MAX_TRANSACTION_ID_CHARS && !v.includes('\0')

// İYS writes creationDate in more shapes than its own date format: its examples show "2020-06-10 10:02:14:14" (a
// fraction after a colon) and "2020-06-10T10:02:14.143Z". Date and time to the second are read from any of these:
// Turkey time unless the text names a zone (Z or ±hh:mm); the fraction is dropped (İYS dates are whole seconds).
// Its examples also show a consentDate without seconds ("2020-02-01T13:35Z"); such a time is read as :00.
const CREATION_DATE_RE = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})(:\d{2})?(?:[.:]\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$/

/** Parses a creationDate as İYS sends it (see above); H158/H157 as for İYS dates when it cannot be read. */
export function parseCreationDate (text: string): ParsedDate {
  const m = CREATION_DATE_RE.exec(text)
  if (m === null) return { ok: false, code: 'H158' }
  const local = parseIysDate(`${m[1]} ${m[2]}${m[3] ?? ':00'}`)
  const z = m[4]
  if (!local.ok || z === undefined) return local
  // local.seconds read the clock as Turkey time; move it to the zone the text names.
  const zone = z === 'Z' ? 0 : (z[0] === '-' ? -1 : 1) * (Number(z.slice(1, 3)) * 3600 + Number(z.slice(-2)) * 60)
  return { ok: true, seconds: local.seconds + TR_OFFSET_S - zone }
}

export interface ValidIysItem {
  consent: ValidConsent
  /** İYS's transactionId, when the item has a usable one */
  transactionId: string | null
  /** İYS's creationDate in epoch seconds, when the item has a readable one */
  creationDate: number | null
  /** what was wrong with the item's metadata (dropped, the consent kept), or null */
  note: string | null
}

// Only these fields make the consent; a NUL in one of them refuses the item. Anything else in an item (İYS's
// metadata, fields such as citizenName) never refuses a consent.
const CONSENT_FIELDS = ['iysCode', 'brandCode', 'recipient', 'recipientType', 'type', 'status', 'source', 'consentDate'] as const

const NOTE_TRANSACTION_ID = `transactionId dropped: ${BAD_TRANSACTION_ID}`
const NOTE_CONSENT_DATE = 'consentDate read from a form other than yyyy-mm-dd hh:mm:ss.'
const NOTE_CREATION_DATE = 'creationDate dropped: it is not a date and time İYS writes (yyyy-mm-dd hh:mm:ss); the time it arrived stands in.'

/**
 * One item İYS sends (a push notification's list entry): the consent plus İYS's optional transactionId and
 * creationDate. The consent's fields are validated as any consent write's are; a NUL in one of them is refused by
 * name (Postgres text cannot hold it, and no valid value contains one). The metadata never refuses the consent — a
 * citizen's RET must not be lost over how İYS wrote a transaction id or a timestamp: an unusable transactionId or
 * an unreadable creationDate is dropped (null) and named in `note`. Never throws, whatever the item is.
 */
export function validateIysItem (item: unknown, nowSeconds: number): ValidIysItem | ErrorItem {
  if (typeof item === 'object' && item !== null && !Array.isArray(item)) {
    const fields = item as Readonly<Record<string, unknown>>
    for (const key of CONSENT_FIELDS) {
      const value = fields[key]
      if (typeof value === 'string' && value.includes('\0')) return errorItem('INVALID_FIELD', key, undefined, 'A field contains a NUL character.')
    }
  }
  // A consentDate İYS wrote in another of its shapes (ISO 8601, see CREATION_DATE_RE) is a fact of İYS's all the
  // same: it is read, rewritten in İYS's own format for the usual rules (H155, H156, H162), and noted.
  let note: string | null = null
  let input = item
  const rawDate = (item as { consentDate?: unknown } | null)?.consentDate
  if (typeof rawDate === 'string' && !parseIysDate(rawDate).ok) {
    const read = parseCreationDate(rawDate)
    if (read.ok) { input = { ...(item as object), consentDate: formatIysDate(read.seconds) }; note = NOTE_CONSENT_DATE }
  }
  const consent = validateConsent(input, nowSeconds)
  if (!isValidConsent(consent)) return consent
  const { transactionId: tx, creationDate: cd } = item as Readonly<Record<string, unknown>>
  let transactionId: string | null = null
  if (!absent(tx)) {
    if (isTransactionId(tx)) transactionId = tx
    else note = note === null ? NOTE_TRANSACTION_ID : `${note} ${NOTE_TRANSACTION_ID}`
  }
  let creationDate: number | null = null
  if (!absent(cd)) {
    const d = typeof cd === 'string' ? parseCreationDate(cd) : null
    if (d !== null && d.ok) creationDate = d.seconds
    else note = note === null ? NOTE_CREATION_DATE : `${note} ${NOTE_CREATION_DATE}`
  }
  return { consent, transactionId, creationDate, note }
}

export const isValidIysItem = (v: ValidIysItem | ErrorItem): v is ValidIysItem => 'consent' in v
