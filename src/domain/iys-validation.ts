// İYS's own validation, for the mirrored routes (/sps/… and /v2/sps/…): a consent write or query is checked as İYS
// checks it and answered as İYS answers — every error that applies (not only the first), in İYS's order, each with
// İYS's code and message, its `location` (field names; list indexes as numbers, `["recipients", 3]`) and its
// `value` as text (the specification's type: "1001", not 1001; a list or an object as its JSON text). Nothing is
// repaired here: a phone must already be E.164, an empty recipientType is refused. Our own /v1 routes and the file
// import stay lenient (domain/consent.ts, domain/normalize.ts).
//
// Order of a consent's errors: request-shape errors first and alone (a field that is a list or an object where İYS
// wants text, a retailer code that is not a number: H085; an empty retailerCode: H267 — İYS refuses such a body
// before it validates fields, with 400); then H118 per unknown field; then the fields in the order of İYS's Consent
// schema: recipient, type, source, status (with H408), consentDate, recipientType, retailerCode, retailerAccess.
// Within a field, İYS's examples: H160 before H121, H156 before H155.

import { createHash } from 'node:crypto'
import type { ValidConsent } from './consent.js'
import { ERRORS, GatewayError, type ErrorCode, type ErrorItem } from './errors.js'
import { olderThanThreeBusinessDays } from './holidays.js'
import { MISMATCH } from './normalize.js'
import { formatIysDate, IYS_EPOCH_S, parseIysDate } from './time.js'
import {
  canonicalCode, isConsentType, isRecipientType, isStatus, NO_SOURCE, PROVIDER_SOURCES,
  type ConsentSource, type ConsentType, type RecipientType
} from './vocabulary.js'

/** The TACIR fields İYS lets the provider leave out of a first record (stored as now and NO_SOURCE). */
export interface Omitted {
  source: boolean
  consentDate: boolean
}

export const NOTHING_OMITTED: Omitted = Object.freeze({ source: false, consentDate: false })

type Location = readonly (string | number)[]

/** errors[].value as İYS's schema types it: text. Scalars as written, lists and objects as their JSON text. */
export function iysValue (v: unknown): string | undefined {
  if (v === undefined) return undefined
  if (typeof v === 'string') return v
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return String(v)
  return JSON.stringify(v)
}

/** One İYS error item; `message` defaults to the code's message in ERRORS (İYS's table). */
export function iysError (code: ErrorCode, location?: Location, value?: unknown, message: string = ERRORS[code].message): ErrorItem {
  const item: ErrorItem = { code, message }
  if (location !== undefined) item.location = [...location]
  const text = iysValue(value)
  if (text !== undefined) item.value = text
  return item
}

/** The answer to a list of errors: the first one's status, all of them in the body. */
export function refusal (errors: readonly ErrorItem[]): GatewayError {
  const first = errors[0]!
  return new GatewayError(first.code, { message: first.message, items: [...errors] })
}

// Messages İYS's own examples give for these operations where the error table's text is generic or about another
// field (H267's row speaks of iysCode; H126's says 100 where the schema and the example say 3000).
const MSG_H193 = 'Alıcı (recipient) değeri liste içinde tekrarlanamaz.'
const MSG_H267 = 'retailerCode değeri boş string olmamalıdır!'
const MSG_H163 = 'İzin erişimi olan bayilerin (retailer) listesi boş olmamalıdır.'
const MSG_H126 = 'İzin erişimi olan bayilerin (retailer) liste uzunluğu en fazla 3000 olmalıdır.'
const MSG_H180 = 'retailerCode kullanıcı üzerinde bulunamadı.'

// ---- path codes ----

const INTEGER = /^[+-]?\d+$/

/**
 * iysCode and brandCode of a path, İYS's way: text that is not an integer is H190 / H191 (both when both). An integer
 * that is no code (0, negative, too long) is kept as written: no tenant has it, so the tenancy check answers H353.
 */
export function pathCodes (rawIysCode: string, rawBrandCode: string): { iysCode: string, brandCode: string } {
  const errors = [pathCodeError(rawIysCode, 'iysCode'), pathCodeError(rawBrandCode, 'brandCode')].filter(e => e !== null)
  if (errors.length > 0) throw refusal(errors)
  return { iysCode: asCode(rawIysCode), brandCode: asCode(rawBrandCode) }
}

/** One path code (a route that names only an iysCode), İYS's way as in pathCodes. */
export function pathCode (raw: string, field: 'iysCode' | 'brandCode'): string {
  const error = pathCodeError(raw, field)
  if (error !== null) throw refusal([error])
  return asCode(raw)
}

const pathCodeError = (raw: string, field: 'iysCode' | 'brandCode'): ErrorItem | null =>
  INTEGER.test(raw) ? null : iysError(field === 'iysCode' ? 'H190' : 'H191', [field], raw)

const asCode = (raw: string): string => canonicalCode(raw.startsWith('+') ? raw.slice(1) : raw) ?? raw

// ---- recipients ----

/** İYS: "Telefon numaraları 15 karakterden daha uzun olamaz"; "E-posta adresleri 265 karakterden daha uzun olamaz". */
const MAX_PHONE_CHARS = 15
const MIN_EMAIL_CHARS = 6
const MAX_EMAIL_CHARS = 265
// E.164 as İYS checks it: `+`, country code, number, nothing else. Turkish numbers (+90) have a 10-digit national
// number starting 2-5 or 8 (geographic, mobile, 8xx), as in domain/normalize.ts; others 7 to 14 digits after `+`.
const E164_TR = /^\+90[2-58]\d{9}$/
const E164_OTHER = /^\+[1-9]\d{6,13}$/
const isE164 = (r: string): boolean => r.startsWith('+90') ? E164_TR.test(r) : E164_OTHER.test(r)
const PHONE_LIKE = /^\+?[\d\s().-]+$/
// İYS's e-mail rules (TANIMLAR, "İzin Türü (type) E-posta, Şartlar"): no Turkish letters, no special characters
// ({[(!'^%&/()=?,”½²³°¶)}] …) but `+` for labels, `.`, `-` and `_` in the part before @ (also first, also repeated),
// at least {1}@{2}.{2}, 6 to 265 characters, no space. İYS keeps addresses in lower case (upper case is accepted and
// lowered). Domain: labels of letters, digits and `-`, a top-level domain of two letters or more.
const EMAIL_LOCAL = /^[a-z0-9._+-]+$/
const EMAIL_DOMAIN = /^[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}$/

/** The address in İYS's form (lower case), or null when İYS refuses it (H120). */
export function iysEmail (raw: string): string | null {
  if (raw.length < MIN_EMAIL_CHARS || raw.length > MAX_EMAIL_CHARS) return null
  const s = raw.toLowerCase()
  const at = s.indexOf('@')
  if (at <= 0 || at !== s.lastIndexOf('@')) return null
  const domain = s.slice(at + 1)
  if (!EMAIL_LOCAL.test(s.slice(0, at)) || !EMAIL_DOMAIN.test(domain)) return null
  return domain.lastIndexOf('.') >= 2 ? s : null // {2 karakter} before the last dot: a@b.co is refused
}

/**
 * A recipient as İYS takes it, for a consent of `type` (null: type unknown, so judged by its shape): the stored
 * form, or the errors. `query`: the status queries, which answer a long phone with H166 alone (İYS's example).
 */
export function checkRecipient (raw: unknown, type: ConsentType | null, query: boolean, location: Location = ['recipient']): { recipient: string } | { errors: ErrorItem[] } {
  if (raw === undefined || raw === null || raw === '') return { errors: [iysError('H114', location)] }
  const r = typeof raw === 'string' ? raw : String(raw)
  const email = r.includes('@')
  if (type !== null && type !== 'EPOSTA' && email) return { errors: [iysError('H464', location, r, MISMATCH[type].message)] }
  if (type === 'EPOSTA' && !email && PHONE_LIKE.test(r)) return { errors: [iysError('H464', location, r, MISMATCH[type].message)] }
  if (type === 'EPOSTA' || (type === null && email)) {
    const address = iysEmail(r)
    return address === null ? { errors: [iysError('H120', location, r)] } : { recipient: address }
  }
  const errors: ErrorItem[] = []
  if (r.length > MAX_PHONE_CHARS) {
    if (query) return { errors: [iysError('H166', location, r)] }
    errors.push(iysError('H160', location, r))
  }
  if (!isE164(r)) errors.push(iysError('H121', location, r))
  return errors.length > 0 ? { errors } : { recipient: r }
}

// ---- one consent ----

export interface IysConsent {
  consent: ValidConsent
  /** TACIR fields left out (the store refuses them on an update: H462, H463) */
  omitted: Omitted
  /** hex sha-256 of the consent as sent: v2's "identical" (store/mirrored-writes.ts) */
  fingerprint: string
}

export const isIysConsent = (v: IysConsent | ErrorItem[]): v is IysConsent => !Array.isArray(v)

/** İYS's H118 list: the fields a consent may carry. */
const CONSENT_FIELDS: ReadonlySet<string> = new Set(['recipientType', 'retailerAccess', 'recipient', 'retailerCode', 'source', 'type', 'consentDate', 'status'])
const TEXT_FIELDS = ['recipient', 'type', 'source', 'status', 'consentDate', 'recipientType'] as const
const providerSources: ReadonlySet<string> = new Set(PROVIDER_SOURCES)
/** İYS's retailer codes: eight digits (the schema's `maximum: 8`, example 55550127). */
const MAX_RETAILER_CODE = 99_999_999
/** Consent.retailerAccess maxItems. */
const MAX_RETAILER_ACCESS = 3000

const given = (v: unknown): boolean => v !== undefined && v !== null && v !== ''
const isObjectLike = (v: unknown): boolean => typeof v === 'object' && v !== null

/** A retailer code as İYS's JSON reader takes it (an integer, or its digits as text); null: not a number. */
function retailerNumber (v: unknown): number | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : null
  if (typeof v === 'string' && INTEGER.test(v)) { const n = Number(v); return Number.isSafeInteger(n) ? n : null }
  return null
}

/** Errors İYS answers before it looks at the fields (400): the body does not read as a consent. */
function shapeErrors (o: Readonly<Record<string, unknown>>): ErrorItem[] {
  const errors: ErrorItem[] = []
  for (const f of TEXT_FIELDS) if (isObjectLike(o[f])) errors.push(iysError('H085', [f], o[f]))
  const code = o.retailerCode
  if (code === '') errors.push(iysError('H267', ['retailerCode'], undefined, MSG_H267))
  else if (code !== undefined && code !== null && retailerNumber(code) === null) errors.push(iysError('H085', ['retailerCode'], code))
  const access = o.retailerAccess
  if (access !== undefined && access !== null) {
    if (!Array.isArray(access)) errors.push(iysError('H085', ['retailerAccess'], access))
    else access.forEach((a, i) => { if (retailerNumber(a) === null) errors.push(iysError('H085', ['retailerAccess', i], a)) })
  }
  return errors
}

/**
 * Checks one consent object of a write to iysCode/brandCode (canonical) as İYS does; `nowSeconds` decides H162 and
 * H467, and is the consentDate of a TACIR consent that leaves it out. Returns the consent or every error.
 */
export function validateIysConsent (item: unknown, iysCode: string, brandCode: string, nowSeconds: number): IysConsent | ErrorItem[] {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) return [iysError('H085')]
  const o = item as Readonly<Record<string, unknown>>
  const shape = shapeErrors(o)
  if (shape.length > 0) return shape

  const errors: ErrorItem[] = []
  for (const k of Object.keys(o)) if (!CONSENT_FIELDS.has(k)) errors.push(iysError('H118', [k], o[k]))
  // TACIR may leave out source and consentDate ("Alıcı tipi TACIR ise eklenmesi zorunlu değildir"); missing is BIREYSEL.
  const tacir = o.recipientType === 'TACIR'

  const type = isConsentType(o.type) ? o.type : null
  const recipient = checkRecipient(o.recipient, type, false)
  if ('errors' in recipient) errors.push(...recipient.errors)

  if (!given(o.type)) errors.push(iysError('H111', ['type']))
  else if (type === null) errors.push(iysError('H117', ['type'], o.type))

  const omitSource = !given(o.source) && tacir
  if (!given(o.source)) {
    if (!tacir) errors.push(iysError('H113', ['source']))
  } else if (typeof o.source !== 'string' || !providerSources.has(o.source)) {
    errors.push(iysError('H119', ['source'], o.source))
  }

  if (!given(o.status)) errors.push(iysError('H110', ['status']))
  else if (!isStatus(o.status)) errors.push(iysError('H115', ['status'], o.status))
  else if (o.source === 'HS_KARAR' && o.status !== 'RET') errors.push(iysError('H408', ['status'], o.status))

  const omitDate = !given(o.consentDate) && tacir
  let consentDate = nowSeconds
  if (!given(o.consentDate)) {
    if (!tacir) errors.push(iysError('H112', ['consentDate']))
  } else {
    const text = typeof o.consentDate === 'string' ? o.consentDate : String(o.consentDate)
    const date = parseIysDate(text)
    if (!date.ok) errors.push(iysError(date.code, ['consentDate'], text))
    else {
      const dateErrors: ErrorItem[] = []
      if (date.seconds < IYS_EPOCH_S) dateErrors.push(iysError('H156', ['consentDate'], text))
      if (o.source === 'HS_2015' && date.seconds !== IYS_EPOCH_S) dateErrors.push(iysError('H155', ['consentDate'], text))
      if (date.seconds > nowSeconds) dateErrors.push(iysError('H162', ['consentDate'], text))
      // HS_2015's date is fixed by H155 and is not when the consent was taken: the three-business-day rule cannot apply.
      if (dateErrors.length === 0 && o.source !== 'HS_2015' && olderThanThreeBusinessDays(date.seconds, nowSeconds)) {
        dateErrors.push(iysError('H467', ['consentDate'], text))
      }
      errors.push(...dateErrors)
      consentDate = date.seconds
    }
  }

  const recipientType: RecipientType | null = o.recipientType === undefined || o.recipientType === null ? 'BIREYSEL' : isRecipientType(o.recipientType) ? o.recipientType : null
  if (recipientType === null) errors.push(iysError('H116', ['recipientType'], o.recipientType))

  // Retailers are not modelled here: a well-formed code is accepted and ignored; one no retailer can have is H180.
  const retailerCode = o.retailerCode === undefined || o.retailerCode === null ? null : retailerNumber(o.retailerCode)!
  if (retailerCode !== null && (retailerCode < 1 || retailerCode > MAX_RETAILER_CODE)) errors.push(iysError('H180', ['retailerCode'], retailerCode, MSG_H180))
  const access = Array.isArray(o.retailerAccess) ? o.retailerAccess.map(a => retailerNumber(a)!) : null
  if (access !== null) {
    if (access.length === 0) errors.push(iysError('H163', ['retailerAccess'], [], MSG_H163))
    else if (access.length > MAX_RETAILER_ACCESS) errors.push(iysError('H126', ['retailerAccess'], undefined, MSG_H126))
    else access.forEach((a, i) => { if (a < 1 || a > MAX_RETAILER_CODE) errors.push(iysError('H180', ['retailerAccess', i], a, MSG_H180)) })
  }

  if (errors.length > 0 || 'errors' in recipient) return errors
  const consent: ValidConsent = {
    iysCode,
    brandCode,
    recipient: recipient.recipient,
    recipientType: recipientType!,
    type: type!,
    status: o.status as ValidConsent['status'],
    source: omitSource ? NO_SOURCE : o.source as ConsentSource,
    consentDate
  }
  // "Identical" (v2): the same consent to the same brand, fields as İYS reads them (recipientType left out is
  // BIREYSEL; an e-mail address in any case is the same address), retailer fields included.
  const fingerprint = createHash('sha256').update(JSON.stringify([
    iysCode, brandCode, consent.recipient, consent.recipientType, consent.type, consent.status,
    omitSource ? null : consent.source, omitDate ? null : formatIysDate(consentDate), retailerCode, access
  ])).digest('hex')
  return { consent, omitted: { source: omitSource, consentDate: omitDate }, fingerprint }
}

// ---- status queries ----

/** POST …/consents/status: the query's fields, or every error (H097 for a body that is not an object). */
export function checkStatusQuery (body: unknown): { recipient: string, recipientType: RecipientType, type: ConsentType } | ErrorItem[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return [iysError('H097')]
  const b = body as Readonly<Record<string, unknown>>
  const errors: ErrorItem[] = []
  const type = isConsentType(b.type) ? b.type : null
  const recipient = checkRecipient(b.recipient, type, true)
  if ('errors' in recipient) errors.push(...recipient.errors)
  if (b.recipientType === undefined || b.recipientType === null) errors.push(iysError('H170', ['recipientType']))
  else if (!isRecipientType(b.recipientType)) errors.push(iysError('H116', ['recipientType'], b.recipientType))
  if (!given(b.type)) errors.push(iysError('H111', ['type']))
  else if (type === null) errors.push(iysError('H117', ['type'], b.type))
  if (errors.length > 0 || 'errors' in recipient) return errors
  return { recipient: recipient.recipient, recipientType: b.recipientType as RecipientType, type: type! }
}

/**
 * POST …/consents/{recipientType}/status/{type}: the distinct recipients in the stored form, or every error. Format
 * errors are located at ["recipient"] with the recipient as value (İYS's examples); a repeat is H193 at its index.
 */
export function checkRecipientList (recipientType: string, type: string, body: unknown, max: number): { recipientType: RecipientType, type: ConsentType, recipients: string[] } | ErrorItem[] {
  const errors: ErrorItem[] = []
  if (!isRecipientType(recipientType)) errors.push(iysError('H116', ['recipientType'], recipientType))
  if (!isConsentType(type)) errors.push(iysError('H117', ['type'], type))
  const list = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body as Record<string, unknown> : {}).recipients
  if (list === undefined || list === null) errors.push(iysError('H168', ['recipients']))
  else if (!Array.isArray(list)) errors.push(iysError('H478', ['recipients'], list))
  else if (list.length === 0) errors.push(iysError('H164', ['recipients'], []))
  else if (list.length > max) errors.push(iysError('H091', ['recipients'], list.length, `Tek sorguda en fazla ${max} alıcı sorgulanabilir.`))
  if (errors.length > 0) return errors
  const recipients: string[] = []
  const seen = new Set<string>()
  const listed = list as unknown[]
  for (let i = 0; i < listed.length; i++) {
    const r = checkRecipient(listed[i], type as ConsentType, true)
    if ('errors' in r) errors.push(...r.errors)
    else if (seen.has(r.recipient)) errors.push(iysError('H193', ['recipients', i], listed[i], MSG_H193))
    else { seen.add(r.recipient); recipients.push(r.recipient) }
  }
  return errors.length > 0 ? errors : { recipientType: recipientType as RecipientType, type: type as ConsentType, recipients }
}
