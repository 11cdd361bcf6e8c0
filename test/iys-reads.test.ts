// The mirrored İYS read endpoints against the real Postgres, through a gateway: the changes pull (İYS's cursor and
// pages over our ledger, every change exactly once in seq order, İYS's limit and source errors), the history of one
// recipient (newest first, İYS's pagination), and the brand list; each refuses another tenant's brand with H353.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey } from '../src/auth/keys.js'
import { ERRORS } from '../src/domain/errors.js'
import { formatIysDate } from '../src/domain/time.js'
import { writeConsents } from '../src/store/consent-store.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServices } from './helpers/services.js'

const SP = '/sps/700001/brands/600001'
const FIELDS = ['consentDate', 'creationDate', 'source', 'recipient', 'recipientType', 'status', 'type', 'transactionId']
const phone = (i: number): string => `+90532${String(7000000 + i)}`
/** A consentDate `minutesAgo` minutes before now, in İYS's format (Turkey time). */
const ago = (minutesAgo: number): string => formatIysDate(Math.floor(Date.now() / 1000) - minutesAgo * 60)
/** İYS's creationDate text as epoch seconds. */
const epochOf = (iysDate: string): number => Date.parse(iysDate.replace(' ', 'T') + '+03:00') / 1000

describe('mirrored İYS reads', () => {
  let services: TestServices
  let gw: RunningGateway
  let other: string // a key of tenant 700002 (brands 610000, 610001)
  let oneBrand: string // a key of the test tenant limited to brand 600001

  const get = async (path: string, key?: string): Promise<{ status: number, json: any, text: string }> => {
    const res = await fetch(gw.url + path, { headers: key === undefined ? gw.auth : bearer(key) })
    const text = await res.text()
    return { status: res.status, json: text === '' ? null : JSON.parse(text), text }
  }
  const post = async (path: string, body: unknown, key?: string): Promise<{ status: number, json: any }> => {
    const res = await fetch(gw.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...(key === undefined ? gw.auth : bearer(key)) }, body: JSON.stringify(body) })
    const text = await res.text()
    return { status: res.status, json: text === '' ? null : JSON.parse(text) }
  }
  const write = async (brandCode: string, recipient: string, status = 'ONAY', minutesAgo = 30): Promise<string> => {
    const r = await post(`/sps/700001/brands/${brandCode}/consents`, { recipient, recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status, consentDate: ago(minutesAgo) })
    expect(r.status, JSON.stringify(r.json)).toBe(200)
    return r.json.transactionId
  }
  /** Follows `after` from `start` until 204; every page and the last cursor. */
  const pullAll = async (path: string, start: string | null = null): Promise<{ pages: any[][], after: string | null }> => {
    const pages: any[][] = []
    let after = start
    for (;;) {
      const r = await get(path + (after !== null ? `&after=${encodeURIComponent(after)}` : ''))
      if (r.status === 204) { expect(r.text).toBe(''); return { pages, after } }
      expect(r.status, r.text).toBe(200)
      expect(Object.keys(r.json)).toEqual(['after', 'list'])
      pages.push(r.json.list)
      after = r.json.after
    }
  }
  const ledger = async (brandCode: string, prefix: string): Promise<string[]> =>
    (await services.pool.query<{ tx: string }>('SELECT transaction_id AS tx FROM consent_history WHERE brand_code = $1 AND starts_with(source, $2) ORDER BY seq', [brandCode, prefix])).rows.map(r => r.tx)

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    other = (await tenantKey(services.env.DATABASE_URL!, { iysCode: '700002', brands: ['610000', '610001'] })).apiKey
    await services.pool.query("UPDATE brands SET name = 'Marka ' || brand_code WHERE iys_code = 700002")
    oneBrand = (await createKey(services.pool, newKey({ iysCode: '700001', brandCodes: '600001', scopes: 'consents:read', rate: '0' }))).apiKey
    gw = await startTestGateway(services.env)
    // The first changes of the ledger, aged past İYS's 7-day window (received 8 days ago).
    for (let i = 0; i < 3; i++) await write('600003', phone(900 + i))
    await services.pool.query("UPDATE consent_history SET received_at = now() - interval '8 days' WHERE brand_code = 600003")
    // 25 provider changes of brand 600001, changes of another brand in between, and 4 recipients' own (İYS-side).
    for (let i = 0; i < 25; i++) {
      await write('600001', phone(i))
      if (i % 10 === 0) await write('600002', phone(i))
    }
    const now = Math.floor(Date.now() / 1000)
    await writeConsents(services.pool, [0, 1, 2, 3].map(i => ({
      consent: { iysCode: '700001', brandCode: '600001', recipient: phone(100 + i), recipientType: 'BIREYSEL' as const, type: 'MESAJ' as const, status: 'ONAY' as const, source: 'IYS_MOBIL' as const, consentDate: now - 600 },
      authority: 'iys' as const,
      via: 'push' as const,
      transactionId: `iys-tx-${i}`.padEnd(64, '0'),
      creationDate: now - 300
    })))
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  describe('GET …/consents/changes', () => {
    it('lists every change exactly once across pages, in seq order, with İYS\'s fields and cursor', async () => {
      const { pages, after } = await pullAll(`${SP}/consents/changes?source=HS&limit=10`)
      expect(pages.map(p => p.length)).toEqual([10, 10, 5])
      const all = pages.flat()
      expect(all.map(c => c.transactionId)).toEqual(await ledger('600001', 'HS_'))
      for (const c of all) expect(Object.keys(c)).toEqual(FIELDS)
      expect(all[0]).toMatchObject({ recipient: phone(0), recipientType: 'BIREYSEL', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB' })
      expect(all[0].creationDate).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/)
      // İYS's shape: <creationDate of the last change, epoch seconds>_<64 hex>
      expect(after).toMatch(/^\d{10}_[0-9a-f]{64}$/)
      expect(Number(after!.split('_')[0])).toBe(epochOf(all.at(-1).creationDate))
    })

    it('shows a change written after the last page to the last cursor, and nothing else', async () => {
      const first = await pullAll(`${SP}/consents/changes?source=HS`)
      expect(first.pages.map(p => p.length)).toEqual([25])
      const tx = await write('600001', phone(3), 'RET', 5)
      const next = await pullAll(`${SP}/consents/changes?source=HS`, first.after)
      expect(next.pages).toEqual([[expect.objectContaining({ transactionId: tx, recipient: phone(3), status: 'RET' })]])
      // The cursor it ends with sees nothing more.
      expect((await get(`${SP}/consents/changes?source=HS&after=${next.after}`)).status).toBe(204)
    })

    it('lists the recipients\' own changes by default (source=IYS), as İYS does', async () => {
      const { pages } = await pullAll(`${SP}/consents/changes?limit=3`)
      expect(pages.flat().map(c => c.transactionId)).toEqual(await ledger('600001', 'IYS_'))
      expect(pages.flat().map(c => c.source)).toEqual(['IYS_MOBIL', 'IYS_MOBIL', 'IYS_MOBIL', 'IYS_MOBIL'])
    })

    it('starts İYS\'s 7-day window without a cursor', async () => {
      expect((await get('/sps/700001/brands/600003/consents/changes?source=HS')).status).toBe(204)
      const tx = await write('600003', phone(950))
      const { pages } = await pullAll('/sps/700001/brands/600003/consents/changes?source=HS')
      expect(pages.flat().map(c => c.transactionId)).toEqual([tx])
    })

    it('continues from the moment of a cursor İYS itself gave (a client that changed its base URL)', async () => {
      const iys = (epoch: number): string => `${epoch}_632cc155429fdccd7f2be8e9482aa322993ff210c2923fb84e8ed0fb1902ae21`
      // From 2020: the window's start; from an hour ahead: nothing yet.
      const old = await pullAll(`${SP}/consents/changes?source=HS`, iys(1597740617))
      expect(old.pages.flat().map(c => c.transactionId)).toEqual(await ledger('600001', 'HS_'))
      expect((await get(`${SP}/consents/changes?source=HS&after=${iys(Math.floor(Date.now() / 1000) + 3600)}`)).status).toBe(204)
      // A cursor of another brand is no cursor of this one: taken for its moment only.
      const elsewhere = await pullAll('/sps/700001/brands/600002/consents/changes?source=HS')
      expect(elsewhere.pages.flat()).toHaveLength(3)
      const mixed = await pullAll(`${SP}/consents/changes?source=HS`, elsewhere.after)
      expect(mixed.pages.flat().length).toBeGreaterThan(0)
    })

    it.each([
      ['limit=1001', 'H507', 'limit', '1001'],
      ['limit=99999999999999999999', 'H507', 'limit', '99999999999999999999'],
      ['limit=0', 'H187', 'limit', '0'],
      ['limit=-5', 'H183', 'limit', '-5'],
      ['limit=ten', 'H183', 'limit', 'ten'],
      ['source=SH', 'H506', 'source', 'SH']
    ] as const)('refuses %s with İYS\'s %s', async (query, code, location, value) => {
      const r = await get(`${SP}/consents/changes?${query}`)
      expect(r.status).toBe(422)
      expect(r.json).toEqual({ errors: [{ code, message: ERRORS[code].message, location: [location], value }] })
    })

    it('takes limit=1000, İYS\'s most', async () => {
      const r = await get(`${SP}/consents/changes?source=HS&limit=1000`)
      expect(r.status).toBe(200)
      expect(r.json.list).toHaveLength(26)
    })

    it('refuses a cursor that is neither ours nor İYS\'s', async () => {
      const r = await get(`${SP}/consents/changes?after=yesterday`)
      expect(r.status).toBe(422)
      expect(r.json.errors[0]).toMatchObject({ code: 'INVALID_FIELD', location: ['after'], value: 'yesterday' })
    })
  })

  describe('POST …/consents/history', () => {
    const KEY = { recipient: phone(500), recipientType: 'BIREYSEL', type: 'MESAJ' }
    let txs: string[]

    beforeAll(async () => {
      txs = [await write('600001', phone(500), 'ONAY', 30), await write('600001', phone(500), 'RET', 20), await write('600001', phone(500), 'ONAY', 10)]
    })

    it('lists one recipient\'s changes newest first, with İYS\'s fields and pagination', async () => {
      const r = await post(`${SP}/consents/history`, KEY)
      expect(r.status).toBe(200)
      expect(Object.keys(r.json)).toEqual(['list', 'pagination'])
      expect(r.json.list.map((c: any) => c.transactionId)).toEqual([...txs].reverse())
      expect(r.json.list.map((c: any) => c.status)).toEqual(['ONAY', 'RET', 'ONAY'])
      expect(Object.keys(r.json.list[0])).toEqual(['consentDate', 'source', 'recipient', 'recipientType', 'status', 'type', 'creationDate', 'transactionId'])
      expect(r.json.list[0]).toMatchObject({ recipient: phone(500), recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB' })
      expect(r.json.list.map((c: any) => c.consentDate).every((d: string, i: number, all: string[]) => i === 0 || all[i - 1]! >= d)).toBe(true)
      expect(r.json.pagination).toEqual({ totalCount: 3, pageSize: 3, offset: 0 })
    })

    it('pages with limit and offset', async () => {
      const a = await post(`${SP}/consents/history?limit=2`, KEY)
      expect(a.json.list.map((c: any) => c.transactionId)).toEqual([txs[2], txs[1]])
      expect(a.json.pagination).toEqual({ totalCount: 3, pageSize: 2, offset: 0 })
      const b = await post(`${SP}/consents/history?limit=2&offset=2`, KEY)
      expect(b.json.list.map((c: any) => c.transactionId)).toEqual([txs[0]])
      expect(b.json.pagination).toEqual({ totalCount: 3, pageSize: 1, offset: 2 })
    })

    it('answers an empty list for a recipient with no record', async () => {
      const r = await post(`${SP}/consents/history`, { ...KEY, recipient: phone(999) })
      expect(r.status).toBe(200)
      expect(r.json).toEqual({ list: [], pagination: { totalCount: 0, pageSize: 0, offset: 0 } })
    })

    it.each([
      ['limit=101', 'H186', 'limit', '101'],
      ['limit=0', 'H187', 'limit', '0'],
      ['limit=x', 'H183', 'limit', 'x'],
      ['offset=-1', 'H182', 'offset', '-1'],
      ['offset=99999999999999999999', 'H182', 'offset', '99999999999999999999']
    ] as const)('refuses %s with İYS\'s %s', async (query, code, location, value) => {
      const r = await post(`${SP}/consents/history?${query}`, KEY)
      expect(r.status).toBe(422)
      expect(r.json).toEqual({ errors: [{ code, message: ERRORS[code].message, location: [location], value }] })
    })

    it('reports every missing or wrong field at once', async () => {
      const r = await post(`${SP}/consents/history`, { recipient: phone(500) })
      expect(r.status).toBe(422)
      expect(r.json.errors.map((e: any) => [e.code, e.location])).toEqual([['H111', ['type']], ['H170', ['recipientType']]])
      const w = await post(`${SP}/consents/history`, { type: 'FAX', recipientType: 'KURUM' })
      expect(w.json.errors.map((e: any) => [e.code, e.value])).toEqual([['H117', 'FAX'], ['H116', 'KURUM'], ['H114', undefined]])
      const p = await post(`${SP}/consents/history`, { ...KEY, recipient: 'not-a-phone' })
      expect(p.json.errors.map((e: any) => e.code)).toEqual(['H121'])
      expect((await post(`${SP}/consents/history`, [KEY])).json).toEqual({ errors: [{ code: 'H097', message: ERRORS.H097.message }] })
    })
  })

  describe('GET /sps/{iysCode}/brands', () => {
    it('lists the tenant\'s brands with İYS\'s fields and the counts of their consents', async () => {
      const r = await get('/sps/700001/brands')
      expect(r.status).toBe(200)
      expect(r.json).toHaveLength(100)
      expect(r.json.map((b: any) => b.brandCode).slice(0, 3)).toEqual([600000, 600001, 600002])
      const b1 = r.json.find((b: any) => b.brandCode === 600001)
      const { rows } = await services.pool.query("SELECT count(*) FILTER (WHERE status = 'ONAY')::int AS a, count(*) FILTER (WHERE status = 'RET')::int AS r, count(*)::int AS t FROM consents WHERE brand_code = 600001")
      expect(b1).toEqual({ brandCode: 600001, stats: { consents: { approval: rows[0].a, rejection: rows[0].r, total: rows[0].t }, retailers: { total: 0 } }, name: '' })
      expect(rows[0].r).toBeGreaterThan(0)
    })

    it('lists another tenant\'s own brands to its key, by name, and a limited key only its brand', async () => {
      const r = await get('/sps/700002/brands', other)
      expect(r.json).toEqual([
        { brandCode: 610000, stats: { consents: { approval: 0, rejection: 0, total: 0 }, retailers: { total: 0 } }, name: 'Marka 610000' },
        { brandCode: 610001, stats: { consents: { approval: 0, rejection: 0, total: 0 }, retailers: { total: 0 } }, name: 'Marka 610001' }
      ])
      expect((await get('/sps/700001/brands', oneBrand)).json.map((b: any) => b.brandCode)).toEqual([600001])
    })

    it('takes a zero-padded iysCode, refuses a non-numeric one with H190 and another tenant\'s with H353', async () => {
      expect((await get('/sps/0700001/brands')).json).toHaveLength(100)
      const bad = await get('/sps/70000a/brands')
      expect(bad.status).toBe(422)
      expect(bad.json).toEqual({ errors: [{ code: 'H190', message: ERRORS.H190.message, location: ['iysCode'], value: '70000a' }] })
      const theirs = await get('/sps/700001/brands', other)
      expect(theirs.status).toBe(403)
      expect(theirs.json).toEqual({ errors: [{ code: 'H353', message: 'iysCode, kullanıcı izinleriyle eşleştirilemiyor', location: ['iysCode'] }] })
    })
  })

  describe('tenancy and path codes on every read', () => {
    const reads = (iys: string, brand: string): [string, () => Promise<{ status: number, json: any }>][] => [
      ['changes', () => get(`/sps/${iys}/brands/${brand}/consents/changes?source=HS`, other)],
      ['history', () => post(`/sps/${iys}/brands/${brand}/consents/history`, { recipient: phone(500), recipientType: 'BIREYSEL', type: 'MESAJ' }, other)]
    ]

    it('refuses another tenant\'s brand with H353, whether the path names its iysCode or the caller\'s', async () => {
      for (const [iys, field] of [['700001', 'iysCode'], ['700002', 'brandCode']] as const) {
        for (const [what, call] of reads(iys, '600001')) {
          const r = await call()
          expect(r.status, what).toBe(403)
          expect(r.json, what).toEqual({ errors: [{ code: 'H353', message: `${field}, kullanıcı izinleriyle eşleştirilemiyor`, location: [field] }] })
        }
      }
      // A key limited to one brand of its own tenant: the others are refused too.
      const r = await fetch(gw.url + '/sps/700001/brands/600002/consents/changes?source=HS', { headers: bearer(oneBrand) })
      expect(r.status).toBe(403)
    })

    it('answers H190 and H191 for path codes that are not integers', async () => {
      const a = await get('/sps/abc/brands/600001/consents/changes')
      expect(a.json).toEqual({ errors: [{ code: 'H190', message: ERRORS.H190.message, location: ['iysCode'], value: 'abc' }] })
      const b = await post('/sps/700001/brands/6000x1/consents/history', { recipient: phone(500), recipientType: 'BIREYSEL', type: 'MESAJ' })
      expect(b.status).toBe(422)
      expect(b.json).toEqual({ errors: [{ code: 'H191', message: ERRORS.H191.message, location: ['brandCode'], value: '6000x1' }] })
    })

    it('lets a key own tenant read its own brand (the refusals are about the tenant)', async () => {
      expect((await get('/sps/700002/brands/610000/consents/changes?source=HS', other)).status).toBe(204)
      expect((await post('/sps/700002/brands/610000/consents/history', { recipient: phone(500), recipientType: 'BIREYSEL', type: 'MESAJ' }, other)).json.pagination.totalCount).toBe(0)
    })
  })
})
