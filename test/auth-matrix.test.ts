// Nobody acts for a brand that is not theirs: every route the gateway registers (read from its route table, so a
// new route cannot be left out) is called with no key, a malformed and a wrong key, a revoked key, a key of another
// tenant, a key without the route's scope and a key limited to another brand. Each gets 401 or 403 (İYS's H351/H353
// on the İYS-shaped routes), or — for the listing routes — sees none of the tenant's records; and nothing changes.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey, revokeKey } from '../src/auth/keys.js'
import { SCOPES, type Scope } from '../src/auth/principal.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const SP = '/sps/700001/brands/600001'
const RECIPIENT = '+905321234567'
const CONSENT = { recipient: RECIPIENT, recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: '' }
const QUERY = `brandCode=600001&type=MESAJ&recipientType=BIREYSEL&recipient=${encodeURIComponent(RECIPIENT)}`

interface Sample { path: string, body?: string, contentType?: string }

/** One request per route, naming tenant 700001 and brand 600001 (ids are filled in once the records exist). */
function samples (ids: { jobId: string, requestId: string, v2RequestId: string }): Record<string, Sample> {
  const json = (path: string, body: unknown): Sample => ({ path, body: JSON.stringify(body), contentType: 'application/json' })
  return {
    'POST /v1/check': json('/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: RECIPIENT }),
    'POST /v1/messages': json('/v1/messages', { iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true, messages: [{ recipient: RECIPIENT, sender: 'BRAND', text: 'hi' }] }),
    'POST /v1/scrub': { path: '/v1/scrub?brandCode=600001&type=MESAJ', body: `recipient\n${RECIPIENT}\n`, contentType: 'text/csv' },
    'GET /v1/scrub': { path: '/v1/scrub' },
    'GET /v1/scrub/:jobId': { path: `/v1/scrub/${ids.jobId}` },
    'GET /v1/scrub/:jobId/result': { path: `/v1/scrub/${ids.jobId}/result` },
    'GET /v1/consents/history': { path: `/v1/consents/history?${QUERY}` },
    'GET /v1/consents/state': { path: `/v1/consents/state?${QUERY}` },
    'GET /v1/evidence': { path: `/v1/evidence?${QUERY}` },
    'POST /sps/:iysCode/brands/:brandCode/consents': json(`${SP}/consents`, { ...CONSENT, recipient: '+905321234500' }),
    'POST /sps/:iysCode/brands/:brandCode/consents/request': json(`${SP}/consents/request`, [{ ...CONSENT, recipient: '+905321234501' }]),
    'GET /sps/:iysCode/brands/:brandCode/consents/request/:requestId': { path: `${SP}/consents/request/${ids.requestId}` },
    'POST /sps/:iysCode/brands/:brandCode/consents/status': json(`${SP}/consents/status`, { recipient: RECIPIENT, recipientType: 'BIREYSEL', type: 'MESAJ' }),
    'POST /sps/:iysCode/brands/:brandCode/consents/:recipientType/status/:type': json(`${SP}/consents/BIREYSEL/status/MESAJ`, { recipients: [RECIPIENT] }),
    'POST /sps/:iysCode/brands/:brandCode/consents/history': json(`${SP}/consents/history`, { recipient: RECIPIENT, recipientType: 'BIREYSEL', type: 'MESAJ' }),
    'GET /sps/:iysCode/brands/:brandCode/consents/changes': { path: `${SP}/consents/changes?limit=10` },
    'GET /sps/:iysCode/brands': { path: '/sps/700001/brands' },
    'POST /v2/sps/:iysCode/brands/:brandCode/consents': json(`/v2${SP}/consents`, { ...CONSENT, recipient: '+905321234502' }),
    'POST /v2/sps/:iysCode/brands/:brandCode/consents/request': json(`/v2${SP}/consents/request`, [{ ...CONSENT, recipient: '+905321234503' }]),
    'GET /v2/sps/:iysCode/brands/:brandCode/consents/request/:requestId': { path: `/v2${SP}/consents/request/${ids.v2RequestId}` }
  }
}

/** The İYS-shaped routes answer İYS's codes. */
const isIys = (route: string): boolean => / \/(v2\/)?sps\//.test(route)

describe('every route refuses whoever may not call it', () => {
  let services: TestServicesWithRedis
  let gw: RunningGateway
  let routes: { method: string, pattern: string, scopes: readonly Scope[] | null }[]
  let table: Record<string, Sample>
  const keys: Record<string, string> = {}

  const call = async (route: string, apiKey: string | null, raw?: string): Promise<{ status: number, text: string }> => {
    const s = table[route]!
    const headers: Record<string, string> = {}
    if (s.contentType !== undefined) headers['content-type'] = s.contentType
    if (raw !== undefined) headers.authorization = raw
    else if (apiKey !== null) headers.authorization = bearer(apiKey).authorization
    const res = await fetch(gw.url + s.path, { method: route.split(' ')[0], headers, body: s.body })
    return { status: res.status, text: await res.text() }
  }

  /** What a refused request must never change: the consent state, the ledger, the queues, the scrub jobs. */
  const snapshot = async (): Promise<unknown> => {
    const { rows } = await services.pool.query(`SELECT
      (SELECT count(*) FROM consents) AS consents, (SELECT coalesce(max(seq), 0) FROM consent_history) AS seq,
      (SELECT count(*) FROM consent_requests) AS requests`)
    const jobs = await (await fetch(gw.url + '/v1/scrub', { headers: gw.auth })).json()
    return { ...rows[0], jobs }
  }

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true })
    gw = await startTestGateway({ ...services.env, AUTH_POLL_MS: '50' })
    const now = new Date(Date.now() + 3 * 3600_000).toISOString().replace('T', ' ').slice(0, 19) // Turkish time
    CONSENT.consentDate = now
    // The tenant's records the other keys try to reach: a consent, a scrub job, two consent requests.
    const post = async (path: string, body: string, contentType = 'application/json'): Promise<any> => {
      const res = await fetch(gw.url + path, { method: 'POST', headers: { ...gw.auth, 'content-type': contentType }, body })
      expect(res.status, `${path}: ${await res.clone().text()}`).toBeLessThan(300)
      return res.json()
    }
    await post(`${SP}/consents`, JSON.stringify(CONSENT))
    const job = await post('/v1/scrub?brandCode=600001&type=MESAJ', `recipient\n${RECIPIENT}\n`, 'text/csv')
    const request = await post(`${SP}/consents/request`, JSON.stringify([{ ...CONSENT, recipient: '+905321234599' }]))
    const v2 = await post(`/v2${SP}/consents/request`, JSON.stringify([{ ...CONSENT, recipient: '+905321234598' }]))
    table = samples({ jobId: job.jobId ?? job.id, requestId: request.requestId, v2RequestId: v2.requestId })

    keys.otherTenant = (await tenantKey(services.env.DATABASE_URL!, { iysCode: '700002', brands: ['610000'] })).apiKey
    keys.otherBrand = (await createKey(services.pool, newKey({ iysCode: '700001', brandCodes: '600099', scopes: SCOPES.join(','), rate: '0' }))).apiKey
    const revoked = await createKey(services.pool, newKey({ iysCode: '700001', scopes: 'admin', rate: '0' }))
    await revokeKey(services.pool, revoked.keyId)
    keys.revoked = revoked.apiKey
    for (const scope of SCOPES) keys[`only:${scope}`] = (await createKey(services.pool, newKey({ iysCode: '700001', scopes: scope, rate: '0' }))).apiKey
    await new Promise(resolve => setTimeout(resolve, 300)) // AUTH_POLL_MS: the gateway has the new keys (and the revocation)
    routes = gw.gw.routes().filter(r => r.pattern !== '/*')
  })

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  it('has a sample request for every route the gateway serves, and serves every sampled route', () => {
    const registered = routes.filter(r => r.scopes !== null).map(r => `${r.method} ${r.pattern}`)
    expect(registered.filter(r => table[r] === undefined)).toEqual([])
    expect(Object.keys(table).filter(r => !registered.includes(r))).toEqual([])
  })

  it('leaves only probes, metrics, the OpenAPI document, the İYS push receiver and the token endpoint public', () => {
    expect(routes.filter(r => r.scopes === null).map(r => `${r.method} ${r.pattern}`).sort())
      .toEqual(['GET /healthz', 'GET /metrics', 'GET /openapi.json', 'GET /readyz', 'GET /v1/unsubscribe/:token', 'POST /iys/push', 'POST /oauth2/token', 'POST /v1/unsubscribe/:token'])
  })

  it('answers 401 without a valid key, whatever the route', async () => {
    const before = await snapshot()
    for (const r of routes.filter(r => r.scopes !== null)) {
      const route = `${r.method} ${r.pattern}`
      const unauthorized = isIys(route) ? 'H351' : 'UNAUTHORIZED'
      for (const [what, key, raw] of [
        ['no key', null, undefined],
        ['a malformed header', null, 'Bearer'],
        ['basic auth', null, 'Basic ' + Buffer.from('a:b').toString('base64')],
        ['an unknown key', 'ik_0123456789abcdef.not-a-secret', undefined],
        ['a wrong secret', keys.otherBrand!.replace(/\..*$/, '.wrong'), undefined],
        ['a revoked key', keys.revoked!, undefined]
      ] as const) {
        const res = await call(route, key, raw)
        expect(res.status, `${route} with ${what}: ${res.text}`).toBe(401)
        expect(JSON.parse(res.text).errors[0].code, `${route} with ${what}`).toBe(unauthorized)
      }
    }
    expect(await snapshot()).toEqual(before)
  })

  it('answers 403 to a key without the route\'s scope', async () => {
    const before = await snapshot()
    for (const r of routes.filter(r => r.scopes !== null)) {
      const route = `${r.method} ${r.pattern}`
      for (const scope of SCOPES.filter(s => s !== 'admin' && !r.scopes!.includes(s))) {
        const res = await call(route, keys[`only:${scope}`]!)
        expect(res.status, `${route} with only ${scope}: ${res.text}`).toBe(403)
        expect(JSON.parse(res.text).errors[0].code).toBe(isIys(route) ? 'H353' : 'FORBIDDEN')
      }
    }
    expect(await snapshot()).toEqual(before)
  })

  it.each(['otherTenant', 'otherBrand'])('answers 403 to a key of %s, and lists nothing of the tenant to it', async (which) => {
    const before = await snapshot()
    for (const r of routes.filter(r => r.scopes !== null)) {
      const route = `${r.method} ${r.pattern}`
      const res = await call(route, keys[which]!)
      // A listing answers the key's own list: none of the tenant's jobs, none of the brands the key may not act for.
      if (route === 'GET /v1/scrub' || (route === 'GET /sps/:iysCode/brands' && which === 'otherBrand')) {
        expect(res.status, `${route}: ${res.text}`).toBe(200)
        expect(res.text, route).not.toContain('600001')
        continue
      }
      expect(res.status, `${route} with a key of ${which}: ${res.text}`).toBe(403)
      expect(JSON.parse(res.text).errors[0].code).toBe(isIys(route) ? 'H353' : 'FORBIDDEN')
    }
    expect(await snapshot()).toEqual(before)
  })

  it('lets the tenant\'s own key through on every route (the refusals above are about the key, not the request)', async () => {
    for (const r of routes.filter(r => r.scopes !== null)) {
      const route = `${r.method} ${r.pattern}`
      const res = await call(route, gw.apiKey)
      expect([401, 403], `${route}: ${res.status} ${res.text}`).not.toContain(res.status)
    }
  })
})
