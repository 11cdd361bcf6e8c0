// The İYS-shaped consent API: same paths, payloads, answers and error codes as İYS (the specification in
// shared/reference), against the real Postgres.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS } from '../src/domain/errors.js'
import { formatIysDate } from '../src/domain/time.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const SP = '/sps/700001/brands/600001'
// İYS refuses a consent taken more than three business days ago (H467): the dates are the run's own.
const ago = (seconds: number): string => formatIysDate(Math.floor(Date.now() / 1000) - seconds)
const GOOD = { recipient: '+905321110100', recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: ago(3600) }

describe('İYS-shaped consent API', () => {
  let services: TestServices
  let gw: RunningGateway

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    gw = await startTestGateway(services.env)
  })

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  const add = (body: unknown): Promise<{ status: number, json: any }> => postJson(gw.url + SP + '/consents', body)
  const body = (code: keyof typeof ERRORS, extra: Record<string, unknown> = {}): unknown => ({ errors: [{ code, message: ERRORS[code].message, ...extra }] })

  it('adds a consent and answers transactionId and creationDate like İYS', async () => {
    const r = await add(GOOD)
    expect(r.status).toBe(200)
    expect(Object.keys(r.json).sort()).toEqual(['creationDate', 'transactionId'])
    expect(r.json.transactionId).toMatch(/^[0-9a-f]{64}$/)
    expect(r.json.creationDate).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/)
    const s = await postJson(gw.url + SP + '/consents/status', { recipient: '+905321110100', recipientType: 'BIREYSEL', type: 'MESAJ' })
    expect(s.status).toBe(200)
    expect(s.json).toEqual({ recipient: '+905321110100', recipientType: 'BIREYSEL', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: GOOD.consentDate, creationDate: r.json.creationDate, transactionId: r.json.transactionId })
  })

  it.each([
    ['H174', { ...GOOD }, 400, { message: 'İzin durumu (status) güncellemesi için farklı bir durum girilmelidir. İzin durumu: ONAY' }],
    ['H178', { ...GOOD, status: 'RET', consentDate: ago(7200) }, 400, {}],
    ['H175', { ...GOOD, recipient: '+905321110199', status: 'RET' }, 400, {}]
  ] as const)('refuses a write breaking İYS rule %s with İYS\'s body', async (code, payload, status, extra) => {
    const r = await add(payload)
    expect(r.status).toBe(status)
    expect(r.json).toEqual({ errors: [{ code, message: ERRORS[code].message, ...extra }] })
  })

  it.each([
    ['H118', { ...GOOD, colour: 'red' }, { location: ['colour'], value: 'red' }],
    ['H111', { ...GOOD, type: undefined }, { location: ['type'] }],
    ['H117', { ...GOOD, type: 'EPOSTAa' }, { location: ['type'], value: 'EPOSTAa' }],
    ['H110', { ...GOOD, status: undefined }, { location: ['status'] }],
    ['H115', { ...GOOD, status: 'ONAYY' }, { location: ['status'], value: 'ONAYY' }],
    ['H113', { ...GOOD, source: undefined }, { location: ['source'] }],
    ['H119', { ...GOOD, source: 'HS_FIZIKSEL_OTAM' }, { location: ['source'], value: 'HS_FIZIKSEL_OTAM' }],
    ['H112', { ...GOOD, consentDate: undefined }, { location: ['consentDate'] }],
    ['H158', { ...GOOD, consentDate: '01.01.2024' }, { location: ['consentDate'], value: '01.01.2024' }],
    ['H157', { ...GOOD, consentDate: '2020-15-01 13:35:00' }, { location: ['consentDate'], value: '2020-15-01 13:35:00' }],
    ['H156', { ...GOOD, consentDate: '2015-04-30 23:59:00' }, { location: ['consentDate'], value: '2015-04-30 23:59:00' }],
    ['H162', { ...GOOD, consentDate: '2042-02-10 09:30:00' }, { location: ['consentDate'], value: '2042-02-10 09:30:00' }],
    ['H155', { ...GOOD, source: 'HS_2015', consentDate: '2020-04-30 23:59:00' }, { location: ['consentDate'], value: '2020-04-30 23:59:00' }],
    ['H408', { ...GOOD, source: 'HS_KARAR' }, { location: ['status'], value: 'ONAY' }],
    ['H116', { ...GOOD, recipientType: 'TACIRR' }, { location: ['recipientType'], value: 'TACIRR' }],
    ['H114', { ...GOOD, recipient: undefined }, { location: ['recipient'] }],
    ['H120', { ...GOOD, type: 'EPOSTA', recipient: 'örnek@mail.com' }, { location: ['recipient'], value: 'örnek@mail.com' }],
    ['H121', { ...GOOD, recipient: '+0554321' }, { location: ['recipient'], value: '+0554321' }],
    ['H121', { ...GOOD, recipient: '05321110100' }, { location: ['recipient'], value: '05321110100' }]
  ] as const)('answers a consent with %s and İYS\'s 422 body, writing nothing', async (code, payload, extra) => {
    const r = await add(payload)
    expect(r.status).toBe(422)
    expect(r.json).toEqual(body(code, extra))
  })

  it('answers a phone too long and not E.164 with both H160 and H121, as İYS does', async () => {
    const r = await add({ ...GOOD, recipient: '+9055436100000000' })
    expect(r.status).toBe(422)
    const at = { location: ['recipient'], value: '+9055436100000000' }
    expect(r.json).toEqual({ errors: [{ code: 'H160', message: ERRORS.H160.message, ...at }, { code: 'H121', message: ERRORS.H121.message, ...at }] })
  })

  it('answers H464 when the channel does not fit the recipient', async () => {
    const r = await add({ ...GOOD, recipient: 'test@gmail.com' })
    expect(r.status).toBe(422)
    expect(r.json).toEqual({ errors: [{ code: 'H464', location: ['recipient'], value: 'test@gmail.com', message: 'İzin tipi (type) MESAJ için, alıcı (recipient) telefon formatında olmalıdır.' }] })
  })

  it('takes the moment of receipt as consentDate for a TACIR consent without one, as İYS does', async () => {
    const r = await add({ recipient: '+905321110150', recipientType: 'TACIR', type: 'ARAMA', source: 'HS_WEB', status: 'ONAY' })
    expect(r.status).toBe(200)
  })

  it('accepts an asynchronous request of up to 1000 consents and reports each as success or failure with İYS codes', async () => {
    const items = [
      { ...GOOD, recipient: '+905321110201' },
      { ...GOOD, recipient: '+905321110202', status: 'RET' }, // H175: first record RET
      { ...GOOD, recipient: 'ayse@example.com', type: 'EPOSTA' },
      { ...GOOD, recipient: '+905321110100', status: 'ONAY' } // H174: already ONAY from the first test
    ]
    const r = await postJson(gw.url + SP + '/consents/request', items)
    expect(r.status).toBe(202)
    expect(r.json.requestId).toMatch(/^[0-9a-f]{32}$/)
    expect(r.json.subRequests.map((s: any) => s.recipient)).toEqual(['+905321110201', '+905321110202', 'ayse@example.com', '+905321110100'])
    let results: any[] = []
    await until(async () => {
      results = (await fetch(`${gw.url}${SP}/consents/request/${r.json.requestId}`, { headers: gw.auth }).then(x => x.json())) as any[]
      return results.every(x => x.status !== 'enqueue')
    }, 15_000, 'the request to be processed')
    expect(results.map(x => [x.index, x.status, x.error?.code])).toEqual([[0, 'success', undefined], [1, 'failure', 'H175'], [2, 'success', undefined], [3, 'failure', 'H174']])
    expect(results[0].transactionId).toMatch(/^[0-9a-f]{64}$/)
    expect(results[0].subRequestId).toBe(r.json.subRequests[0].subRequestId)
  })

  it('refuses a bad asynchronous request as a whole, with indexes', async () => {
    expect(await postJson(gw.url + SP + '/consents/request', { not: 'a list' })).toEqual({ status: 400, json: body('H092') })
    expect(await postJson(gw.url + SP + '/consents/request', [])).toEqual({ status: 400, json: body('H092') })
    const big = await postJson(gw.url + SP + '/consents/request', Array.from({ length: 1001 }, (_, i) => ({ ...GOOD, recipient: `+9053211${String(i).padStart(5, '0')}` })))
    expect(big.status).toBe(422)
    expect(big.json.errors[0].code).toBe('H091')
    const dup = await postJson(gw.url + SP + '/consents/request', [{ ...GOOD, recipient: '+905321110301' }, { ...GOOD, recipient: '+905321110301', status: 'RET' }])
    expect(dup).toEqual({ status: 422, json: { errors: [{ index: 1, code: 'H194', message: ERRORS.H194.message }] } })
    const invalid = await postJson(gw.url + SP + '/consents/request', [{ ...GOOD, recipient: '+905321110302' }, { ...GOOD, type: 'EPOSTAA' }])
    expect(invalid).toEqual({ status: 422, json: { errors: [{ index: 1, code: 'H117', location: ['type'], value: 'EPOSTAA', message: ERRORS.H117.message }] } })
  })

  it('validates request ids like İYS and answers an unknown one with an empty list', async () => {
    const get = async (id: string): Promise<any> => { const r = await fetch(`${gw.url}${SP}/consents/request/${id}`, { headers: gw.auth }); return { status: r.status, json: await r.json() } }
    expect((await get('a'.repeat(37))).json.errors[0].code).toBe('H198')
    expect((await get('abcde')).json.errors[0].code).toBe('H199')
    expect((await get('12345')).json.errors[0].code).toBe('H400')
    expect(await get('5980a44b06f333c25b1ah61bkceb95fa')).toEqual({ status: 200, json: [] })
  })

  it('answers the status query errors İYS lists', async () => {
    const q = (b: unknown): Promise<{ status: number, json: any }> => postJson(gw.url + SP + '/consents/status', b)
    expect((await q({ recipient: '+905321110100', recipientType: 'BIREYSEL' })).json.errors[0].code).toBe('H111')
    expect((await q({ recipient: '+905321110100', type: 'MESAJ' })).json.errors[0].code).toBe('H170')
    expect((await q({ recipient: '+9055436100000000', type: 'MESAJ', recipientType: 'BIREYSEL' })).json.errors[0].code).toBe('H166')
    // No record: the operation documents no "not found" answer; a ConsentDetailResponse with nothing in it.
    expect(await q({ recipient: '+905009990000', type: 'MESAJ', recipientType: 'BIREYSEL' })).toEqual({ status: 200, json: {} })
    expect((await q({ recipient: '05321110100', type: 'MESAJ', recipientType: 'BIREYSEL' })).json.errors[0].code).toBe('H121')
    expect((await q([1, 2])).json).toEqual(body('H097'))
  })

  it('lists which recipients have ONAY, like İYS\'s multiple status query', async () => {
    await add({ ...GOOD, recipient: '+905321110401' })
    await add({ ...GOOD, recipient: '+905321110402' })
    await add({ ...GOOD, recipient: '+905321110402', status: 'RET', consentDate: ago(60) })
    const url = gw.url + SP + '/consents/BIREYSEL/status/MESAJ'
    const r = await postJson(url, { recipients: ['+905321110402', '+905321110401', '+905009990001'] })
    expect(r.status).toBe(200)
    expect(r.json.list).toEqual(['+905321110401'])
    expect(r.json.requestId).toMatch(/^[0-9a-f-]{36}$/)
    expect((await postJson(url, {})).json.errors[0].code).toBe('H168')
    expect((await postJson(url, { recipients: {} })).json.errors[0].code).toBe('H478')
    expect((await postJson(url, { recipients: [] })).json.errors[0].code).toBe('H164')
    expect((await postJson(url, { recipients: ['test@gmail.com'] })).json.errors[0].code).toBe('H464')
    expect((await postJson(url, { recipients: ['+905321110401', '+905321110401'] })).json).toEqual({ errors: [{ code: 'H193', message: 'Alıcı (recipient) değeri liste içinde tekrarlanamaz.', location: ['recipients', 1], value: '+905321110401' }] })
  })
})
