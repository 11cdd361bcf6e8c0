// The evidence ledger: the full history of a key, the state at any moment, and the retention job that keeps
// records at least a year after they stopped being valid (and never deletes the current one).

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatIysDate } from '../src/domain/time.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const SP = '/sps/700001/brands/600001'
const R = '+905321119900'
// İYS refuses a consent taken more than three business days ago (H467): the consent dates are the run's own (what
// the ledger answers at a moment goes by when an entry was received, set below).
const ago = (seconds: number): string => formatIysDate(Math.floor(Date.now() / 1000) - seconds)
const DATES = [ago(3 * 3600), ago(2 * 3600), ago(3600)] as const

describe('evidence ledger', () => {
  let services: TestServices
  let gw: RunningGateway
  let pool: pg.Pool

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    pool = services.pool
    gw = await startTestGateway({ ...services.env, RETENTION_INTERVAL_MS: '200', HISTORY_RETENTION_DAYS: '366' })
    // Three changes of one key: ONAY, RET, ONAY again; then we date their receipt to known moments.
    for (const [status, consentDate] of [['ONAY', DATES[0]], ['RET', DATES[1]], ['ONAY', DATES[2]]]) {
      const r = await postJson(gw.url + SP + '/consents', { recipient: R, type: 'MESAJ', source: 'HS_WEB', status, consentDate })
      expect(r.status).toBe(200)
    }
    await pool.query(`UPDATE consent_history h SET received_at = v.t::timestamptz
      FROM (VALUES (1, '2025-01-10T06:00:05Z'), (2, '2026-02-01T09:00:07Z'), (3, '2026-03-05T05:30:02Z')) AS v(n, t)
      WHERE h.seq = (SELECT seq FROM consent_history WHERE recipient = '${R}' ORDER BY seq OFFSET v.n - 1 LIMIT 1)`)
  })

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  const get = async (path: string): Promise<{ status: number, json: any }> => {
    const r = await fetch(gw.url + path, { headers: gw.auth })
    return { status: r.status, json: await r.json() }
  }

  it('returns the full history of a recipient, oldest first, with who, how and when', async () => {
    const { status, json } = await get(`/v1/consents/history?brandCode=600001&type=MESAJ&recipient=${encodeURIComponent('0532 111 99 00')}`)
    expect(status).toBe(200)
    expect(json.recipient).toBe(R)
    expect(json.history.map((h: any) => [h.status, h.consentDate, h.via, h.source])).toEqual([
      ['ONAY', DATES[0], 'api', 'HS_WEB'],
      ['RET', DATES[1], 'api', 'HS_WEB'],
      ['ONAY', DATES[2], 'api', 'HS_WEB']
    ])
    expect(json.history[1].receivedAt).toBe('2026-02-01T09:00:07.000Z')
    for (const h of json.history) expect(h.transactionId).toMatch(/^[0-9a-f]{64}$/)
  })

  it.each([
    ['2025-01-01T00:00:00+03:00', null],
    ['2025-06-01T10:00:00+03:00', 'ONAY'],
    ['2026-03-01T10:00:00+03:00', 'RET'],
    ['2026-03-05T08:30:01+03:00', 'RET'], // one second before the ONAY was received
    ['2026-03-05T08:30:03+03:00', 'ONAY']
  ])('answers the state at %s', async (at, expected) => {
    const { status, json } = await get(`/v1/consents/state?brandCode=600001&type=MESAJ&recipient=${encodeURIComponent(R)}&at=${encodeURIComponent(at)}`)
    expect(status).toBe(200)
    expect(json.state?.status ?? null).toBe(expected)
  })

  it('refuses a bad query with a clear error', async () => {
    expect((await get('/v1/consents/state?brandCode=600001&type=MESAJ&recipient=%2B905321119900&at=yesterday')).json.errors[0]).toMatchObject({ code: 'INVALID_FIELD', location: ['at'] })
    expect((await get('/v1/consents/history?brandCode=600001&type=FAX&recipient=%2B905321119900')).json.errors[0].code).toBe('H117')
    expect((await get('/v1/consents/history?brandCode=600001&type=MESAJ&recipient=abc')).json.errors[0].code).toBe('H121')
  })

  it('the retention job removes entries replaced more than the retention ago, never the current one', async () => {
    // Another key whose first two entries were replaced two years ago; its last entry is current.
    const old = '+905321119901'
    for (const [status, consentDate] of [['ONAY', DATES[0]], ['RET', DATES[1]], ['ONAY', DATES[2]]]) {
      expect((await postJson(gw.url + SP + '/consents', { recipient: old, type: 'MESAJ', source: 'HS_WEB', status, consentDate })).status).toBe(200)
    }
    await pool.query(`UPDATE consent_history SET received_at = now() - interval '800 days' WHERE recipient = '${old}'`)
    await until(async () => (await pool.query('SELECT count(*)::int AS n FROM consent_history WHERE recipient = $1', [old])).rows[0].n === 1, 15_000, 'the retention job')
    const left = await pool.query('SELECT status FROM consent_history WHERE recipient = $1', [old])
    expect(left.rows).toEqual([{ status: 'ONAY' }])
    // The key above has entries replaced only months ago (less than 366 days before now): all kept.
    expect((await pool.query('SELECT count(*)::int AS n FROM consent_history WHERE recipient = $1', [R])).rows[0].n).toBe(3)
  })
})
