// The mirrored İYS API's v2 consent endpoints and the write rules that need the stored record, through a real
// gateway on Postgres, written from the specification (reference/iys-openapi-3.2.0.json):
// - POST /v2/…/consents: "daha önce gönderilmiş bir isteğin hem gövdesi hem de parametre değerleri hiçbir değişiklik
//   yapılmaksızın yeniden gönderilmesi durumunda, sistem aynı transactionId değerini döndürür";
// - POST /v2/…/consents/request and GET /v2/…/consents/request/{id}: a consent already recorded, re-sent with the same
//   data and date, is answered with where it was first processed (originalRequestInformation, isAddConsentV2Service);
// - TACIR: source and consentDate may be left out of a first record, not of an update (H462, H463);
// - the batch examples of the specification (every error, with its index), H190/H191, H193's location.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS } from '../src/domain/errors.js'
import { formatIysDate } from '../src/domain/time.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const SP = '/sps/700001/brands/600002'
const V2 = '/v2' + SP
const ago = (seconds: number): string => formatIysDate(Math.floor(Date.now() / 1000) - seconds)
const DATE = ago(3600)
const consent = (recipient: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ recipient, recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: DATE, ...extra })

describe('İYS v2 consent endpoints and mirrored write rules', () => {
  let services: TestServices
  let gw: RunningGateway

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    gw = await startTestGateway({ ...services.env, AUTH_POLL_MS: '50' })
  })

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  const post = (path: string, body: unknown): Promise<{ status: number, json: any }> => postJson(gw.url + path, body)
  const get = async (path: string, headers = gw.auth): Promise<{ status: number, json: any }> => {
    const r = await fetch(gw.url + path, { headers })
    return { status: r.status, json: await r.json() }
  }
  const ledgerRows = async (recipient: string): Promise<number> =>
    Number((await services.pool.query('SELECT count(*) AS n FROM consent_history WHERE recipient = $1', [recipient])).rows[0].n)
  /** Results of a request once every item is processed. */
  const settled = async (path: string): Promise<any[]> => {
    let results: any[] = []
    await until(async () => {
      const r = await get(path)
      results = r.json
      return Array.isArray(results) && results.length > 0 && results.every(x => x.status !== 'enqueue')
    }, 15_000, 'the request to be processed')
    return results
  }

  describe('POST /v2/…/consents', () => {
    it('answers like v1, and a re-sent identical consent with the same transactionId and creationDate, writing nothing', async () => {
      const body = consent('+905321120001')
      const first = await post(`${V2}/consents`, body)
      expect(first.status).toBe(200)
      expect(Object.keys(first.json).sort()).toEqual(['creationDate', 'transactionId'])
      await new Promise(resolve => setTimeout(resolve, 1100)) // a later second: creationDate must still be the first
      const again = await post(`${V2}/consents`, body)
      expect(again).toEqual({ status: 200, json: first.json })
      // The same consent in another key order, and with the recipientType İYS defaults to left out, is identical too.
      const reordered = Object.fromEntries(Object.entries(body).reverse())
      expect(await post(`${V2}/consents`, reordered)).toEqual({ status: 200, json: first.json })
      const { recipientType: _, ...defaulted } = body
      expect(await post(`${V2}/consents`, defaulted)).toEqual({ status: 200, json: first.json })
      expect(await ledgerRows('+905321120001')).toBe(1)
      // v1 has no such rule: the same body is H174.
      const v1 = await post(`${SP}/consents`, body)
      expect(v1.status).toBe(400)
      expect(v1.json.errors[0].code).toBe('H174')
    })

    it('answers two identical requests at once with one transaction', async () => {
      const body = consent('+905321120002')
      const [a, b] = await Promise.all([post(`${V2}/consents`, body), post(`${V2}/consents`, body)])
      expect(a.status).toBe(200)
      expect(b).toEqual(a)
      expect(await ledgerRows('+905321120002')).toBe(1)
    })

    it('takes a changed body for a new write (judged by İYS\'s rules), and a consent written through v1 as already sent', async () => {
      const v1 = await post(`${SP}/consents`, consent('+905321120003'))
      expect(v1.status).toBe(200)
      expect(await post(`${V2}/consents`, consent('+905321120003'))).toEqual({ status: 200, json: v1.json })
      // Another date, same status: a different request, so İYS's H174.
      const later = await post(`${V2}/consents`, consent('+905321120003', { consentDate: ago(1800) }))
      expect(later.status).toBe(400)
      expect(later.json.errors[0].code).toBe('H174')
      // Once a later change has replaced it, the old consent re-sent is a new write again: here an older date, H178.
      expect((await post(`${V2}/consents`, consent('+905321120003', { status: 'RET', consentDate: ago(600) }))).status).toBe(200)
      const stale = await post(`${V2}/consents`, consent('+905321120003'))
      expect(stale.status).toBe(400)
      expect(stale.json.errors[0].code).toBe('H178')
    })

    it('validates exactly as v1 (İYS sources, E.164, every error)', async () => {
      expect(await post(`${V2}/consents`, consent('+905321120004', { source: 'IYS_WEB' }))).toEqual({ status: 422, json: { errors: [{ code: 'H119', message: ERRORS.H119.message, location: ['source'], value: 'IYS_WEB' }] } })
      const r = await post(`${V2}/consents`, { recipient: '05321120004', status: 'ONAY', consentDate: DATE })
      expect(r.status).toBe(422)
      expect(r.json.errors.map((e: any) => e.code)).toEqual(['H121', 'H111', 'H113'])
    })
  })

  describe('POST /v2/…/consents/request and GET /v2/…/consents/request/{id}', () => {
    it('answers 202 with the sub-requests, and a re-sent consent with where it was first written', async () => {
      // Written first: one by a v1 request, one by v2's single endpoint.
      const v1 = await post(`${SP}/consents/request`, [consent('+905321120011')])
      expect(v1.status).toBe(202)
      const firstResults = await settled(`${SP}/consents/request/${v1.json.requestId}`)
      const single = await post(`${V2}/consents`, consent('+905321120012'))
      expect(single.status).toBe(200)

      const items = [consent('+905321120011'), consent('+905321120012'), consent('+905321120013'), consent('+905321120014', { status: 'RET' })]
      const r = await post(`${V2}/consents/request`, items)
      expect(r.status).toBe(202)
      expect(r.json.requestId).toMatch(/^[0-9a-f]{32}$/)
      expect(r.json.requestId).not.toBe(v1.json.requestId)
      expect(r.json.subRequests.map((s: any) => [s.recipient, s.source, s.consentDate])).toEqual(items.map(i => [i.recipient, 'HS_WEB', DATE]))

      const results = await settled(`${V2}/consents/request/${r.json.requestId}`)
      const sub = (i: number): string => r.json.subRequests[i].subRequestId
      expect(results[0]).toEqual({
        requestId: r.json.requestId, subRequestId: sub(0), index: 0, status: 'success',
        transactionId: firstResults[0].transactionId, creationDate: firstResults[0].creationDate,
        isAddConsentV2Service: false, originalRequestInformation: { requestId: v1.json.requestId, subRequestId: v1.json.subRequests[0].subRequestId }
      })
      expect(results[1]).toEqual({
        requestId: r.json.requestId, subRequestId: sub(1), index: 1, status: 'success', ...single.json, isAddConsentV2Service: true
      })
      expect(results[2]).toMatchObject({ index: 2, status: 'success' })
      expect(results[2].transactionId).toMatch(/^[0-9a-f]{64}$/)
      expect(results[2].originalRequestInformation).toBeUndefined()
      expect(results[3]).toMatchObject({ index: 3, status: 'failure', error: { code: 'H175', message: ERRORS.H175.message } })
      expect(await ledgerRows('+905321120011')).toBe(1)

      // v1's query of the same request: İYS's v1 shape, without v2's fields.
      const plain = await get(`${SP}/consents/request/${r.json.requestId}`)
      expect(plain.json[0]).toEqual({ requestId: r.json.requestId, subRequestId: sub(0), index: 0, status: 'success', transactionId: firstResults[0].transactionId, creationDate: firstResults[0].creationDate })

      // A v1 request re-sending the same consent: H174, as İYS's v1 answers.
      const again = await post(`${SP}/consents/request`, [consent('+905321120013')])
      expect((await settled(`${SP}/consents/request/${again.json.requestId}`))[0].error.code).toBe('H174')
    })

    it('refuses a bad list as a whole: every error of every item with its index, as the specification\'s examples', async () => {
      const dates = await post(`${V2}/consents/request`, [
        consent('+905321120021', { consentDate: '2042-02-10 09:30:00' }),
        consent('+905321120022', { consentDate: '2020-15-10 09:30:00' }),
        consent('+905321120023', { consentDate: '2015-02-10 09:30:00', source: 'HS_2015' }),
        consent('+905321120024', { consentDate: '2014-02-10 09:30:00' })
      ])
      expect(dates.status).toBe(422)
      expect(dates.json.errors.map((e: any) => [e.index, e.code, e.value])).toEqual([
        [0, 'H162', '2042-02-10 09:30:00'], [1, 'H157', '2020-15-10 09:30:00'], [2, 'H156', '2015-02-10 09:30:00'],
        [2, 'H155', '2015-02-10 09:30:00'], [3, 'H156', '2014-02-10 09:30:00']
      ])
      const recipients = await post(`${SP}/consents/request`, [
        consent('ornekadiniz.com', { type: 'EPOSTA' }), consent('+905321120025'), consent('905313334455999999999999')
      ])
      expect(recipients.json.errors.map((e: any) => [e.index, e.code, e.location])).toEqual([[0, 'H120', ['recipient']], [2, 'H160', ['recipient']], [2, 'H121', ['recipient']]])
      const retailers = await post(`${V2}/consents/request`, [consent('+905321120026', { retailerAccess: [] })])
      expect(retailers).toEqual({ status: 422, json: { errors: [{ index: 0, code: 'H163', message: 'İzin erişimi olan bayilerin (retailer) listesi boş olmamalıdır.', location: ['retailerAccess'], value: '[]' }] } })
      const dup = await post(`${V2}/consents/request`, [consent('+905321120027'), consent('+905321120027', { status: 'RET' })])
      expect(dup).toEqual({ status: 422, json: { errors: [{ index: 1, code: 'H194', message: ERRORS.H194.message }] } })
      const big = await post(`${V2}/consents/request`, Array.from({ length: 1001 }, (_, i) => consent(`+9053212${String(i).padStart(5, '0')}`)))
      expect(big).toEqual({ status: 422, json: { errors: [{ code: 'H091', message: ERRORS.H091.message, value: '1001' }] } })
      expect(await post(`${V2}/consents/request`, [])).toEqual({ status: 400, json: { errors: [{ code: 'H092', message: ERRORS.H092.message }] } })
      expect(Number((await services.pool.query("SELECT count(*) AS n FROM consent_history WHERE recipient LIKE '+90532112002%'")).rows[0].n)).toBe(0)
    })

    it('checks request ids like v1', async () => {
      expect((await get(`${V2}/consents/request/${'a'.repeat(37)}`)).json.errors[0]).toEqual({ code: 'H198', message: ERRORS.H198.message, location: ['requestId'], value: 'a'.repeat(37) })
      expect((await get(`${V2}/consents/request/abcde`)).json.errors[0].code).toBe('H199')
      expect((await get(`${V2}/consents/request/12345`)).json.errors[0].code).toBe('H400')
      expect(await get(`${V2}/consents/request/5980a44b06f333c25b1ah61bkceb95fa`)).toEqual({ status: 200, json: [] })
    })
  })

  describe('TACIR', () => {
    it('takes a first record without source and consentDate, and answers its status without a source', async () => {
      const r = await post(`${SP}/consents`, { recipient: '+905321120031', recipientType: 'TACIR', type: 'ARAMA', status: 'ONAY' })
      expect(r.status).toBe(200)
      const s = await post(`${SP}/consents/status`, { recipient: '+905321120031', recipientType: 'TACIR', type: 'ARAMA' })
      expect(s.status).toBe(200)
      expect(s.json.source).toBeUndefined()
      expect(s.json).toMatchObject({ recipient: '+905321120031', recipientType: 'TACIR', type: 'ARAMA', status: 'ONAY', transactionId: r.json.transactionId })
    })

    it('refuses an update without consentDate (H462), without source (H463), or both', async () => {
      const key = { recipient: '+905321120032', recipientType: 'TACIR', type: 'MESAJ' }
      expect((await post(`${SP}/consents`, { ...key, status: 'ONAY', source: 'HS_WEB', consentDate: ago(3600) })).status).toBe(200)
      const noDate = await post(`${SP}/consents`, { ...key, status: 'RET', source: 'HS_WEB' })
      expect(noDate).toEqual({ status: 400, json: { errors: [{ code: 'H462', message: ERRORS.H462.message }] } })
      const noSource = await post(`${SP}/consents`, { ...key, status: 'RET', consentDate: ago(60) })
      expect(noSource).toEqual({ status: 400, json: { errors: [{ code: 'H463', message: ERRORS.H463.message }] } })
      expect((await post(`${V2}/consents`, { ...key, status: 'RET' })).json.errors.map((e: any) => e.code)).toEqual(['H462', 'H463'])
      // In a request: the item fails with the first of them.
      const req = await post(`${SP}/consents/request`, [{ ...key, status: 'RET' }])
      expect((await settled(`${SP}/consents/request/${req.json.requestId}`))[0]).toMatchObject({ status: 'failure', error: { code: 'H462' } })
      expect(await ledgerRows('+905321120032')).toBe(1)
      expect((await post(`${SP}/consents`, { ...key, status: 'RET', source: 'HS_WEB', consentDate: ago(60) })).status).toBe(200)
    })
  })

  describe('paths and status queries', () => {
    it('answers a non-integer iysCode or brandCode with H190 / H191 on every mirrored route', async () => {
      expect(await post('/v2/sps/abc/brands/600002/consents', consent('+905321120041'))).toEqual({ status: 422, json: { errors: [{ code: 'H190', message: ERRORS.H190.message, location: ['iysCode'], value: 'abc' }] } })
      expect((await post('/sps/700001/brands/6x/consents/status', { recipient: '+905321120041', recipientType: 'BIREYSEL', type: 'MESAJ' })).json.errors[0].code).toBe('H191')
      expect((await get('/v2/sps/1.5/brands/x/consents/request/abc123')).json.errors.map((e: any) => e.code)).toEqual(['H190', 'H191'])
      // An integer that is not the key's: İYS's H353.
      expect((await post('/sps/700001/brands/0/consents', consent('+905321120041'))).json.errors[0].code).toBe('H353')
    })

    it('answers an unknown recipient\'s status with 200 and an empty object', async () => {
      expect(await post(`${SP}/consents/status`, { recipient: '+905321120051', recipientType: 'BIREYSEL', type: 'MESAJ' })).toEqual({ status: 200, json: {} })
    })

    it('locates a repeated recipient of a list query at its index (H193)', async () => {
      const r = await post(`${SP}/consents/BIREYSEL/status/MESAJ`, { recipients: ['+905054566789', '+905055566790', '+905055566791', '+905055566791'] })
      expect(r).toEqual({ status: 422, json: { errors: [{ code: 'H193', message: 'Alıcı (recipient) değeri liste içinde tekrarlanamaz.', location: ['recipients', 3], value: '+905055566791' }] } })
    })

    it('lets a key act only for its own brands on the v2 routes (H353)', async () => {
      const other = (await tenantKey(services.env.DATABASE_URL!, { iysCode: '700009', brands: ['690000'] })).apiKey
      await new Promise(resolve => setTimeout(resolve, 300)) // AUTH_POLL_MS: the gateway has the new key
      const res = await fetch(`${gw.url}${V2}/consents`, { method: 'POST', headers: { ...bearer(other), 'content-type': 'application/json' }, body: JSON.stringify(consent('+905321120061')) })
      expect(res.status).toBe(403)
      expect(((await res.json()) as any).errors[0].code).toBe('H353')
      expect(await ledgerRows('+905321120061')).toBe(0)
    })
  })
})
