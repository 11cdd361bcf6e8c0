// Field-level validation of one consent record, as İYS applies it to a consent write. The same function serves
// the file import, the embedded seed and the İYS-shaped API, so a record is accepted or refused alike everywhere.
// State rules that need the stored record (H174 same status, H175 first RET, H178 older date) live with the store.

import { errorItem, type ErrorItem } from './errors.js'
import { checkTypeFit, normalizeRecipient } from './normalize.js'
import { IYS_EPOCH_S, parseIysDate } from './time.js'
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

const absent = (v: unknown): boolean => v === undefined || v === null || v === ''

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

// İYS issues transaction ids as UUID-like tokens; these characters are also safe in COPY text and CSV.
export const TRANSACTION_ID_RE = /^[A-Za-z0-9_-]{1,128}$/

export interface ValidIysItem {
  consent: ValidConsent
  /** İYS's transactionId, when the item has one */
  transactionId: string | null
  /** İYS's creationDate in epoch seconds, when the item has one */
  creationDate: number | null
}

/**
 * One item İYS sends (a push notification's list entry): the consent plus İYS's optional transactionId and
 * creationDate. A string with a NUL character is refused by name: Postgres text cannot hold it, and nothing İYS
 * legitimately sends contains one. Never throws, whatever the item is.
 */
export function validateIysItem (item: unknown, nowSeconds: number): ValidIysItem | ErrorItem {
  if (typeof item === 'object' && item !== null && !Array.isArray(item)) {
    for (const [key, value] of Object.entries(item)) {
      // The field's name is named only when it is a plain word: names are the sender's text too.
      if (typeof value === 'string' && value.includes('\0')) return errorItem('INVALID_FIELD', /^[A-Za-z]{1,40}$/.test(key) ? key : undefined, undefined, 'A field contains a NUL character.')
    }
  }
  const consent = validateConsent(item, nowSeconds)
  if (!isValidConsent(consent)) return consent
  const { transactionId: tx, creationDate: cd } = item as Readonly<Record<string, unknown>>
  let transactionId: string | null = null
  if (!absent(tx)) {
    if (typeof tx !== 'string' || !TRANSACTION_ID_RE.test(tx)) return errorItem('INVALID_FIELD', 'transactionId', undefined, 'transactionId must be 1 to 128 characters of A-Z, a-z, 0-9, _ and -.')
    transactionId = tx
  }
  let creationDate: number | null = null
  if (!absent(cd)) {
    const d = typeof cd === 'string' ? parseIysDate(cd) : { ok: false as const, code: 'H158' as const }
    if (!d.ok) return errorItem(d.code, 'creationDate')
    creationDate = d.seconds
  }
  return { consent, transactionId, creationDate }
}

export const isValidIysItem = (v: ValidIysItem | ErrorItem): v is ValidIysItem => 'consent' in v
