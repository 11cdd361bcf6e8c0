// The İYS-shaped consent API over the Router (v1 and v2). Paths, payloads, answers and error codes follow the İYS
// specification so that a provider's İYS integration can point at the gateway; input is validated exactly as İYS
// does (domain/iys-validation.ts), and writes go through store/mirrored-writes.ts (İYS's TACIR update rules, v2's re-send rule).

import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { ValidConsent } from '../domain/consent.js'
import { GatewayError, type ErrorItem } from '../domain/errors.js'
import { formatIysDate } from '../domain/time.js'
import { NO_SOURCE } from '../domain/vocabulary.js'
import { checkRecipientList, checkStatusQuery, iysError, isIysConsent, refusal, validateIysConsent, type Omitted } from '../domain/iys-validation.js'
import { createRequest, type RequestProcessor } from '../store/consent-requests.js'
import { outboxStatus } from '../iys/outbox.js'
import { approvedAmong, consentStatus, type ConsentRecord } from '../store/consent-queries.js'
import { writeMirroredTx } from '../store/mirrored-writes.js'
import { iysPath } from './params.js'
import { inTransaction, type Pool } from '../store/pg.js'
import { json, type Reply, type RequestFacts, type Router } from './router.js'

export interface ConsentRouteDeps {
  pool: Pool
  log: Logger
  requests: RequestProcessor
}

const MAX_BATCH = 1000
const SP = '/sps/:iysCode/brands/:brandCode'
const V2 = '/v2' + SP

const nowSeconds = (): number => Math.floor(Date.now() / 1000)


/** The transactionId of a single write (64 hex digits): its request status is İYS's outcome of that write. */
const TRANSACTION_ID = /^[0-9a-f]{64}$/

/** A requestId as İYS checks it (H198, H199, H400), or one of our transactionIds (see outboxStatus). */
function requestIdFrom (req: RequestFacts): string {
  const id = req.params[2]!
  if (TRANSACTION_ID.test(id)) return id
  if (id.length > 36) throw refusal([iysError('H198', ['requestId'], id)])
  if (/^[A-Za-z]+$/.test(id)) throw refusal([iysError('H199', ['requestId'], id)])
  if (/^\d+$/.test(id)) throw refusal([iysError('H400', ['requestId'], id)])
  return id
}

const consentKey = (c: ValidConsent): string => `${c.recipientType}|${c.type}|${c.recipient}`

/** A stored record in ConsentDetailResponse's shape: what İYS would not hold (no source, no creationDate) left out. */
function statusAnswer (rec: ConsentRecord): Record<string, unknown> {
  const out: Record<string, unknown> = { ...rec }
  if (rec.source === NO_SOURCE) delete out.source
  if (rec.creationDate === null) delete out.creationDate
  if (rec.transactionId === null) delete out.transactionId
  return out
}

export function consentRoutes (router: Router, deps: ConsentRouteDeps): void {
  const { pool } = deps
  const WRITE = { params: 2, auth: { scopes: ['consents:write'] }, iys: true } as const
  const READ = { params: 2, auth: { scopes: ['consents:read'] }, iys: true } as const
  const REQUEST = { params: 3, auth: { scopes: ['consents:write', 'consents:read'] }, iys: true } as const

  // Tekil izin ekleme (v1, v2). v2: a consent re-sent unchanged gets the transactionId it got the first time.
  const addOne = (v2: boolean) => async (body: unknown, req: RequestFacts): Promise<Reply> => {
    const { iysCode, brandCode } = iysPath(req)
    const v = validateIysConsent(body, iysCode, brandCode, nowSeconds())
    if (!isIysConsent(v)) throw refusal(v)
    const [out] = await inTransaction(pool, client => writeMirroredTx(client, [{
      consent: v.consent, omitted: v.omitted, fingerprint: v.fingerprint, v2, origin: { requestId: null, subRequestId: null, v2Single: v2 }
    }]))
    if (out!.status === 'rejected') throw refusal(out!.errors)
    return json(200, { transactionId: out!.transactionId, creationDate: formatIysDate(out!.creationDate) })
  }
  router.post(`${SP}/consents`, 'consents', addOne(false), WRITE)
  router.post(`${V2}/consents`, 'consents', addOne(true), WRITE)

  // Asenkron çoklu izin ekleme (v1, v2): the list is checked whole (every error of every item, with its index), stored,
  // answered 202, and applied in the background (store/consent-requests.ts).
  const addMany = (v2: boolean) => async (body: unknown, req: RequestFacts): Promise<Reply> => {
    const { iysCode, brandCode } = iysPath(req)
    if (!Array.isArray(body) || body.length === 0) throw new GatewayError('H092')
    if (body.length > MAX_BATCH) throw new GatewayError('H091', { value: String(body.length) })
    const now = nowSeconds()
    const errors: (ErrorItem & { index: number })[] = []
    const consents: ValidConsent[] = []
    const extras: { omitted: Omitted, fingerprint: string }[] = []
    const seen = new Set<string>()
    body.forEach((item, index) => {
      const v = validateIysConsent(item, iysCode, brandCode, now)
      if (!isIysConsent(v)) { for (const e of v) errors.push({ index, ...e }); return }
      const k = consentKey(v.consent)
      if (seen.has(k)) { errors.push({ index, ...iysError('H194') }); return }
      seen.add(k)
      consents.push(v.consent)
      extras.push({ omitted: v.omitted, fingerprint: v.fingerprint })
    })
    if (errors.length > 0) throw new GatewayError('INVALID_ITEMS', { items: errors })
    const created = await createRequest(pool, iysCode, brandCode, consents, null, { v2, extras })
    deps.requests.drainer.kick()
    return json(202, created)
  }
  router.post(`${SP}/consents/request`, 'consents', addMany(false), WRITE)
  router.post(`${V2}/consents/request`, 'consents', addMany(true), WRITE)

  // Çoklu izin ekleme isteği sorgulama (v1, v2); an unknown requestId is an empty list, as İYS answers an old one.
  const results = (v2: boolean) => async (_: unknown, req: RequestFacts): Promise<Reply> => {
    const { iysCode, brandCode } = iysPath(req)
    const id = requestIdFrom(req)
    // Postgres text cannot hold U+0000 (the query would fail, a 500): no request was ever issued such an id.
    if (id.includes('\u0000')) return json(200, [])
    return json(200, await outboxStatus(pool, iysCode, brandCode, id, v2)) // with İYS's outcome once written through
  }
  router.get(`${SP}/consents/request/:requestId`, 'consents', results(false), REQUEST)
  router.get(`${V2}/consents/request/:requestId`, 'consents', results(true), REQUEST)

  // Tekil izin durumu sorgulama. No record: 200 with an empty object — the operation documents no "not found"
  // answer, and ConsentDetailResponse has no required field.
  router.post(`${SP}/consents/status`, 'consents', async (body, req) => {
    const { brandCode } = iysPath(req)
    const q = checkStatusQuery(body)
    if (Array.isArray(q)) throw refusal(q)
    const rec = await consentStatus(pool, brandCode, q.type, q.recipientType, q.recipient)
    return json(200, rec === null ? {} : statusAnswer(rec))
  }, READ)

  // Alıcı listesinin izin durumu sorgulama: answers the recipients whose consent is ONAY
  router.post(`${SP}/consents/:recipientType/status/:type`, 'consents', async (body, req) => {
    const { brandCode } = iysPath(req)
    const q = checkRecipientList(req.params[2]!, req.params[3]!, body, MAX_BATCH)
    if (Array.isArray(q)) throw refusal(q)
    return json(200, { requestId: randomUUID(), list: await approvedAmong(pool, brandCode, q.type, q.recipientType, q.recipients) })
  }, { ...READ, params: 4 })
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
