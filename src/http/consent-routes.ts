// The İYS-shaped consent API over the Router. Payloads, answers and
// error codes follow the İYS specification so that a provider's İYS integration can point at the gateway.

import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { isValidConsent, validateConsent, type ValidConsent } from '../domain/consent.js'
import { requireBrand } from '../auth/principal.js'
import { errorItem, GatewayError, type ErrorItem } from '../domain/errors.js'
import { formatIysDate } from '../domain/time.js'
import { canonicalCode, isConsentType, isRecipientType } from '../domain/vocabulary.js'
import { createRequest, requestResults, type RequestProcessor } from '../store/consent-requests.js'
import { approvedAmong, consentStatus } from '../store/consent-queries.js'
import { writeConsents } from '../store/consent-store.js'
import type { Pool } from '../store/pg.js'
import { recipientFor } from './params.js'
import { json, type Reply, type RequestFacts, type Router } from './router.js'

export interface ConsentRouteDeps {
  pool: Pool
  log: Logger
  requests: RequestProcessor
}

const MAX_BATCH = 1000
// İYS's H118 list: the fields a consent object may carry (retailer fields are accepted and ignored: no retailers here).
const CONSENT_FIELDS = new Set(['recipientType', 'retailerAccess', 'recipient', 'retailerCode', 'source', 'type', 'consentDate', 'status'])
const SP = '/sps/:iysCode/brands/:brandCode'

/** An answer of one İYS error item (from the domain or the store); its status is its code's in ERRORS. */
const refusal = (item: ErrorItem): GatewayError => new GatewayError(item.code, { message: item.message, items: [item] })

function codesFrom (req: RequestFacts): { iysCode: string, brandCode: string } {
  const iysCode = canonicalCode(req.params[0])
  if (iysCode === null) throw new GatewayError('INVALID_FIELD', { location: 'iysCode', value: req.params[0], message: 'iysCode must be a positive integer (İYS code).' })
  const brandCode = canonicalCode(req.params[1])
  if (brandCode === null) throw new GatewayError('INVALID_BRAND_CODE', { location: 'brandCode', value: req.params[1] })
  requireBrand(req.principal, brandCode, iysCode, true)
  return { iysCode, brandCode }
}

/** Field checks of one consent object, İYS's way: unknown properties are H118; TACIR may omit consentDate. */
function checkConsent (item: unknown, iysCode: string, brandCode: string, now: number): ValidConsent | ErrorItem {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) return errorItem('H085')
  const o = item as Record<string, unknown>
  for (const k of Object.keys(o)) if (!CONSENT_FIELDS.has(k)) return errorItem('H118', k, o[k])
  // İYS: "Alıcı tipi TACIR ise consentDate eklenmesi zorunlu değildir" — we take the moment of receipt.
  const consentDate = o.consentDate === undefined && o.recipientType === 'TACIR' ? formatIysDate(now) : o.consentDate
  return validateConsent({ ...o, consentDate, iysCode, brandCode }, now)
}

const consentKey = (c: ValidConsent): string => `${c.recipientType}|${c.type}|${c.recipient}`

export function consentRoutes (router: Router, deps: ConsentRouteDeps): void {
  const { pool } = deps
  const WRITE = { auth: { scopes: ['consents:write'] }, iys: true } as const
  const READ = { auth: { scopes: ['consents:read'] }, iys: true } as const
  const P = { params: 2, ...WRITE }
  const Q = { params: 2, ...READ }

  // Tekil izin ekleme
  router.post(`${SP}/consents`, 'consents', async (body, req) => {
    const { iysCode, brandCode } = codesFrom(req)
    const now = Math.floor(Date.now() / 1000)
    const v = checkConsent(body, iysCode, brandCode, now)
    if (!isValidConsent(v)) throw refusal(v)
    const [out] = await writeConsents(pool, [{ consent: v, authority: 'provider', via: 'api' }])
    if (out!.status === 'applied') return json(200, { transactionId: out!.transactionId, creationDate: formatIysDate(out!.creationDate) })
    if (out!.status === 'rejected') throw refusal(out!.error)
    throw new Error('a provider write cannot be stale')
  }, P)

  // Asenkron çoklu izin ekleme
  router.post(`${SP}/consents/request`, 'consents', async (body, req) => {
    const { iysCode, brandCode } = codesFrom(req)
    if (!Array.isArray(body) || body.length === 0) throw new GatewayError('H092')
    if (body.length > MAX_BATCH) throw new GatewayError('H091', { value: body.length })
    const now = Math.floor(Date.now() / 1000)
    const errors: (ErrorItem & { index: number })[] = []
    const consents: ValidConsent[] = []
    const seen = new Set<string>()
    body.forEach((item, index) => {
      const v = checkConsent(item, iysCode, brandCode, now)
      if (!isValidConsent(v)) { errors.push({ index, ...v }); return }
      const k = consentKey(v)
      if (seen.has(k)) { errors.push({ index, ...errorItem('H194') }); return }
      seen.add(k)
      consents.push(v)
    })
    if (errors.length > 0) throw new GatewayError('INVALID_ITEMS', { items: errors })
    const created = await createRequest(pool, iysCode, brandCode, consents, null)
    deps.requests.drainer.kick()
    return json(202, created)
  }, P)

  // Çoklu izin ekleme isteği sorgulama
  router.get(`${SP}/consents/request/:requestId`, 'consents', async (_, req) => {
    const { iysCode, brandCode } = codesFrom(req)
    const id = req.params[2]!
    if (id.length > 36) throw new GatewayError('H198', { location: 'requestId', value: id })
    if (/^[A-Za-z]+$/.test(id)) throw new GatewayError('H199', { location: 'requestId', value: id })
    if (/^\d+$/.test(id)) throw new GatewayError('H400', { location: 'requestId', value: id })
    // Postgres text cannot hold U+0000 (the query would fail, a 500): no request was ever issued such an id.
    if (id.includes('\u0000')) return json(200, [])
    return json(200, await requestResults(pool, iysCode, brandCode, id))
  }, { params: 3, auth: { scopes: ['consents:write', 'consents:read'] }, iys: true })

  // Tekil izin durumu sorgulama
  router.post(`${SP}/consents/status`, 'consents', async (body, req) => {
    const { brandCode } = codesFrom(req)
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new GatewayError('H097')
    const b = body as Record<string, unknown>
    if (b.type === undefined) throw new GatewayError('H111', { location: 'type' })
    if (!isConsentType(b.type)) throw new GatewayError('H117', { location: 'type', value: b.type })
    if (b.recipientType === undefined) throw new GatewayError('H170', { location: 'recipientType' })
    if (!isRecipientType(b.recipientType)) throw new GatewayError('H116', { location: 'recipientType', value: b.recipientType })
    const recipient = recipientFor(b.recipient, b.type)
    if (typeof recipient !== 'string') throw refusal(recipient)
    const rec = await consentStatus(pool, brandCode, b.type, b.recipientType, recipient)
    if (rec === null) throw new GatewayError('CONSENT_NOT_FOUND')
    return json(200, rec)
  }, Q)

  // Alıcı listesinin izin durumu sorgulama: answers the recipients whose consent is ONAY
  router.post(`${SP}/consents/:recipientType/status/:type`, 'consents', async (body, req) => {
    const { brandCode } = codesFrom(req)
    const recipientType = req.params[2]
    const type = req.params[3]
    if (!isRecipientType(recipientType)) throw new GatewayError('H116', { location: 'recipientType', value: recipientType })
    if (!isConsentType(type)) throw new GatewayError('H117', { location: 'type', value: type })
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
    if (b.recipients === undefined) throw new GatewayError('H168', { location: 'recipients' })
    if (!Array.isArray(b.recipients)) throw new GatewayError('H478', { location: 'recipients', value: b.recipients })
    if (b.recipients.length === 0) throw new GatewayError('H164', { location: 'recipients', value: [] })
    if (b.recipients.length > MAX_BATCH) throw new GatewayError('H091', { location: 'recipients', value: b.recipients.length, message: `Tek sorguda en fazla ${MAX_BATCH} alıcı sorgulanabilir.` })
    const list: string[] = []
    const seen = new Set<string>()
    for (let i = 0; i < b.recipients.length; i++) {
      const r = recipientFor(b.recipients[i], type)
      if (typeof r !== 'string') throw refusal({ ...r, location: ['recipients', String(i)] })
      if (seen.has(r)) throw new GatewayError('H193', { message: 'Alıcı (recipient) değeri liste içinde tekrarlanamaz.' })
      seen.add(r)
      list.push(r)
    }
    return json(200, { requestId: randomUUID(), list: await approvedAmong(pool, brandCode, type, recipientType, list) })
  }, { params: 4, ...READ })

}

/** Without DATABASE_URL these endpoints exist but say what they need, instead of a bare 404. */
export function notConfiguredRoutes (router: Router): void {
  const reply = (): Reply => { throw new GatewayError('NOT_CONFIGURED') }
  const IYS = { auth: { scopes: ['consents:read', 'consents:write'] }, iys: true } as const
  router.post('/sps/*', 'consents', reply, IYS)
  router.get('/sps/*', 'consents', reply, IYS)
  router.post('/v2/sps/*', 'consents', reply, IYS)
  router.get('/v2/sps/*', 'consents', reply, IYS)
  router.post('/iys/push', 'push', reply, { auth: 'public' })
  router.get('/v1/consents/*', 'history', reply, { auth: { scopes: ['consents:read'] } })
  router.get('/v1/evidence', 'history', reply, { auth: { scopes: ['evidence'] } })
}




