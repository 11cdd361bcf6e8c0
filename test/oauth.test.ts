// POST /oauth2/token as İYS answers it (the spec's createToken2, Oauth2Response, Bad2Request): an İYS client logs in
// with an API key's keyId and secret, calls the İYS-shaped routes with the token, refreshes it, and gets İYS's
// error bodies; tokens are scoped like their key, expire, die with a revoked key and work on every gateway.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey, revokeKey, splitApiKey, type CreatedKey } from '../src/auth/keys.js'
import { TokenIssuer } from '../src/auth/tokens.js'
import type { Principal, Scope } from '../src/auth/principal.js'
import { DEMO_API_KEY, tenantKey, TEST_IYS_CODE } from './helpers/auth.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServices } from './helpers/services.js'

const SP = `/sps/${TEST_IYS_CODE}/brands/600001`
const H351 = { errors: [{ code: 'H351', message: 'Eksik veya geçersiz jeton!' }] }

interface Tokens { access_token: string, refresh_token: string, expires_in: number, refresh_expires_in: number, token_type: string }

/** POST /oauth2/token with a form body (what OAuth clients send) or, with `json`, a JSON body. */
async function token (base: string, params: Record<string, unknown>, opts: { json?: boolean, raw?: string, contentType?: string } = {}): Promise<{ status: number, json: any, headers: Headers }> {
  const json = opts.json === true
  const body = opts.raw ?? (json ? JSON.stringify(params) : new URLSearchParams(params as Record<string, string>).toString())
  const contentType = opts.contentType ?? (json ? 'application/json' : 'application/x-www-form-urlencoded')
  const res = await fetch(base + '/oauth2/token', { method: 'POST', headers: contentType === '' ? {} : { 'content-type': contentType }, body })
  const text = await res.text()
  return { status: res.status, json: text === '' ? null : JSON.parse(text), headers: res.headers }
}

const login = async (base: string, key: CreatedKey, json = false): Promise<Tokens> => {
  const r = await token(base, { grant_type: 'password', username: key.keyId, password: key.secret }, { json })
  expect(r.status, JSON.stringify(r.json)).toBe(200)
  return r.json
}

/** An İYS-shaped read with a bearer token: the consent status of one recipient of brand 600001 (or `path`). */
const status = async (base: string, accessToken: string, path = SP): Promise<{ status: number, json: any }> => {
  const res = await fetch(base + path + '/consents/status', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${accessToken}` },
    body: JSON.stringify({ recipient: '+905321234567', recipientType: 'BIREYSEL', type: 'MESAJ' })
  })
  return { status: res.status, json: await res.json() }
}

const claimsOf = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8'))

/** İYS's time of day in Türkiye (UTC+3), as consentDate wants it. */
const turkeyNow = (): string => new Date(Date.now() + 3 * 3600_000).toISOString().replace('T', ' ').slice(0, 19)

describe('POST /oauth2/token', () => {
  let services: TestServices
  let gw: RunningGateway
  let key: CreatedKey

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    gw = await startTestGateway({ ...services.env, AUTH_POLL_MS: '50' })
    key = await tenantKey(services.db.url, { scopes: 'consents:read,consents:write' })
    await new Promise(resolve => setTimeout(resolve, 200)) // AUTH_POLL_MS: the gateway loads the new key
  })

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  it('logs in with a keyId and secret and answers İYS\'s fields, with İYS\'s lifetimes (2 h access, 4 h refresh)', async () => {
    const t = await login(gw.url, key)
    expect(Object.keys(t).sort()).toEqual(['access_token', 'expires_in', 'refresh_expires_in', 'refresh_token', 'token_type'])
    expect(t).toMatchObject({ expires_in: 7200, refresh_expires_in: 14400, token_type: 'bearer' })
    // JWTs, as İYS's: a client may read `exp`; never shaped like an API key
    for (const jwt of [t.access_token, t.refresh_token]) {
      expect(jwt).toMatch(/^eyJ[\w-]+\.eyJ[\w-]+\.[\w-]{43}$/)
      expect(splitApiKey(jwt)).toBeNull()
    }
    const claims = claimsOf(t.access_token)
    expect(claims).toMatchObject({ sub: key.keyId, preferred_username: key.keyId, typ: 'Bearer', serviceProvider: { iysCode: TEST_IYS_CODE } })
    expect(claims.exp - claims.iat).toBe(7200)
    expect(claims.exp * 1000).toBeGreaterThan(Date.now() + 7199_000)
  })

  it('gives a token that works on the İYS-shaped routes as a bearer: a consent written and its status read', async () => {
    const { access_token: at } = await login(gw.url, key)
    const consent = { recipient: '+905321234567', recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: turkeyNow() }
    const write = await fetch(gw.url + SP + '/consents', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${at}` }, body: JSON.stringify(consent) })
    expect(write.status, await write.clone().text()).toBe(200)
    expect(await write.json()).toHaveProperty('transactionId')
    const s = await status(gw.url, at)
    expect(s.status).toBe(200)
    expect(s.json).toMatchObject({ recipient: '+905321234567', status: 'ONAY' })
  })

  it('takes JSON bodies as well as forms, and a body without Content-Type by its look', async () => {
    const viaJson = await login(gw.url, key, true)
    expect((await status(gw.url, viaJson.access_token)).status).toBe(200)
    const params = { grant_type: 'password', username: key.keyId, password: key.secret }
    for (const raw of [JSON.stringify(params), new URLSearchParams(params).toString()]) {
      const r = await token(gw.url, {}, { raw, contentType: '' })
      expect(r.status).toBe(200)
      expect((await status(gw.url, r.json.access_token)).status).toBe(200)
    }
    const charset = await token(gw.url, {}, { raw: new URLSearchParams(params).toString(), contentType: 'application/x-www-form-urlencoded; charset=UTF-8' })
    expect(charset.status).toBe(200)
  })

  it('refreshes: a refresh token gives a new working access token (form and JSON), and may be used again', async () => {
    const first = await login(gw.url, key)
    const viaForm = await token(gw.url, { grant_type: 'refresh_token', refresh_token: first.refresh_token })
    expect(viaForm.status).toBe(200)
    expect(viaForm.json).toMatchObject({ expires_in: 7200, refresh_expires_in: 14400, token_type: 'bearer' })
    expect(viaForm.json.access_token).not.toBe(first.access_token)
    expect((await status(gw.url, viaForm.json.access_token)).status).toBe(200)
    const viaJson = await token(gw.url, { grant_type: 'refresh_token', refresh_token: viaForm.json.refresh_token }, { json: true })
    expect(viaJson.status).toBe(200)
    expect((await status(gw.url, viaJson.json.access_token)).status).toBe(200)
    // stateless: a refresh token is good until it expires (Keycloak's default too), and the old access token still works
    expect((await token(gw.url, { grant_type: 'refresh_token', refresh_token: first.refresh_token })).status).toBe(200)
    expect((await status(gw.url, first.access_token)).status).toBe(200)
  })

  it('never takes a refresh token for an access token, nor the other way round, nor a tampered one', async () => {
    const t = await login(gw.url, key)
    expect(await status(gw.url, t.refresh_token)).toEqual({ status: 401, json: H351 })
    expect((await token(gw.url, { grant_type: 'refresh_token', refresh_token: t.access_token })).json).toEqual({ error: 'invalid_grant', error_description: 'Invalid refresh token' })
    // the same claims with another key's id, under the old signature
    const [h, p, s] = t.access_token.split('.') as [string, string, string]
    const forged = Buffer.from(JSON.stringify({ ...claimsOf(t.access_token), sub: gw.apiKey.split('.')[0] })).toString('base64url')
    expect(await status(gw.url, `${h}.${forged}.${s}`)).toEqual({ status: 401, json: H351 })
    expect(await status(gw.url, `${h}.${p}.${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`)).toEqual({ status: 401, json: H351 })
    expect((await token(gw.url, { grant_type: 'refresh_token', refresh_token: 'not-a-token' })).json).toEqual({ error: 'invalid_grant', error_description: 'Invalid refresh token' })
  })

  it('scopes a token like its key: another brand or tenant is H353, a scope the key lacks too', async () => {
    const own = await tenantKey(services.db.url, { iysCode: '700002', brands: ['610001', '610002'], scopes: 'consents:read' })
    const limited = await createKey(services.pool, newKey({ iysCode: '700002', brandCodes: '610001', scopes: 'consents:read' }))
    await new Promise(resolve => setTimeout(resolve, 200)) // AUTH_POLL_MS: the gateway loads the new keys
    const t = await login(gw.url, limited)
    expect((await status(gw.url, t.access_token, '/sps/700002/brands/610001')).status).toBe(200)
    for (const path of ['/sps/700002/brands/610002', SP]) {
      const r = await status(gw.url, t.access_token, path)
      expect(r.status).toBe(403)
      expect(r.json.errors[0].code).toBe('H353')
    }
    const readOnly = await login(gw.url, own)
    const write = await fetch(gw.url + '/sps/700002/brands/610001/consents', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${readOnly.access_token}` }, body: '{}' })
    expect(write.status).toBe(403)
    expect(((await write.json()) as any).errors[0].code).toBe('H353')
  })

  it('stops a revoked key\'s tokens within a second, and refuses to refresh or log in for it', async () => {
    const doomed = await tenantKey(services.db.url, { scopes: 'consents:read' })
    await new Promise(resolve => setTimeout(resolve, 200))
    const t = await login(gw.url, doomed)
    expect((await status(gw.url, t.access_token)).status).toBe(200)
    await revokeKey(services.pool, doomed.keyId)
    const revokedAt = Date.now()
    let last = 200
    while (Date.now() - revokedAt < 1000) {
      last = (await status(gw.url, t.access_token)).status
      if (last === 401) break
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    expect(last).toBe(401)
    expect(await status(gw.url, t.access_token)).toEqual({ status: 401, json: H351 })
    expect((await token(gw.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token })).json).toEqual({ error: 'invalid_grant', error_description: 'Token is not active' })
    expect((await token(gw.url, { grant_type: 'password', username: doomed.keyId, password: doomed.secret })).json).toEqual({ error: 'invalid_request', error_description: 'Kullanıcı kimlik bilgileri geçersiz.' })
  })

  it('answers İYS\'s error bodies (400) for bad credentials and bad requests', async () => {
    const cases: [string, Record<string, unknown>, boolean, { error: string, error_description: string }][] = [
      ['wrong password', { grant_type: 'password', username: key.keyId, password: key.secret + 'x' }, false, { error: 'invalid_request', error_description: 'Kullanıcı kimlik bilgileri geçersiz.' }],
      ['unknown user', { grant_type: 'password', username: 'ik_0123456789abcdef', password: key.secret }, false, { error: 'invalid_request', error_description: 'Kullanıcı kimlik bilgileri geçersiz.' }],
      ['a whole API key as user name', { grant_type: 'password', username: key.apiKey, password: key.secret }, false, { error: 'invalid_request', error_description: 'Kullanıcı kimlik bilgileri geçersiz.' }],
      ['missing grant_type', { username: key.keyId, password: key.secret }, false, { error: 'invalid_request', error_description: 'Giriş yöntemi belirtilmemiş.' }],
      ['unknown grant_type', { grant_type: 'magic', username: key.keyId, password: key.secret }, false, { error: 'invalid_request', error_description: 'Bilinmeyen giriş yöntemi.' }],
      ['empty grant_type', { grant_type: '' }, false, { error: 'invalid_grant', error_description: 'Giriş yöntemi boş olamaz.' }],
      ['unsupported grant_type', { grant_type: 'client_credentials' }, false, { error: 'invalid_grant', error_description: 'Desteklenmeyen giriş yöntemi.' }],
      ['grant_type not a string', { grant_type: 1 }, true, { error: 'invalid_grant', error_description: 'Desteklenmeyen giriş yöntemi.' }],
      ['missing username', { grant_type: 'password', password: key.secret }, false, { error: 'invalid_request', error_description: 'Kullanıcı adı verilmemiş.' }],
      ['empty username', { grant_type: 'password', username: '', password: key.secret }, false, { error: 'invalid_grant', error_description: 'Kullanıcı adı boş bırakılamaz.' }],
      ['missing password', { grant_type: 'password', username: key.keyId }, true, { error: 'invalid_request', error_description: 'Şifre verilmemiş.' }],
      ['empty password', { grant_type: 'password', username: key.keyId, password: '' }, false, { error: 'invalid_grant', error_description: 'Şifre boş bırakılamaz.' }],
      ['password not a string', { grant_type: 'password', username: key.keyId, password: 12345 }, true, { error: 'invalid_request', error_description: 'Desteklenmeyen şifre türü.' }],
      ['missing refresh_token', { grant_type: 'refresh_token' }, false, { error: 'invalid_request', error_description: 'Yenileme jetonu verilmemiş.' }],
      ['empty refresh_token', { grant_type: 'refresh_token', refresh_token: '' }, true, { error: 'invalid_grant', error_description: 'Yenileme jetonu boş olamaz.' }]
    ]
    for (const [name, params, json, expected] of cases) {
      const r = await token(gw.url, params, { json })
      expect({ name, status: r.status, body: r.json }).toEqual({ name, status: 400, body: expected })
      expect(r.headers.get('content-type')).toMatch(/^application\/json/)
    }
    for (const raw of ['{not json', '[1,2]', 'null']) {
      const r = await token(gw.url, {}, { raw, json: true })
      expect({ raw, status: r.status, body: r.json }).toEqual({ raw, status: 400, body: { error: 'invalid_request', error_description: 'Giriş yöntemi belirtilmemiş.' } })
    }
  })

  it('lets one address log in more than İYS\'s 10 times an hour by default', async () => {
    for (let i = 0; i < 11; i++) await login(gw.url, key)
  })

  it('answers an İYS-shaped 401 to a missing, wrong or API-key-shaped bearer on the İYS routes, and is reached without a key', async () => {
    expect(await status(gw.url, 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.' + 'A'.repeat(43))).toEqual({ status: 401, json: H351 })
    expect((await status(gw.url, gw.apiKey)).status).toBe(200) // the same bearer key works too
    const other = await fetch(gw.url + '/oauth2/token', { method: 'GET' })
    expect(other.status).toBe(405)
  })
})

describe('tokens on several gateways, and their expiry', () => {
  let services: TestServices
  let a: RunningGateway
  let b: RunningGateway
  let short: RunningGateway
  let key: CreatedKey

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    const env = { ...services.env, AUTH_POLL_MS: '50' }
    ;[a, b] = [await startTestGateway(env), await startTestGateway(env)]
    short = await startTestGateway({ ...env, AUTH_ACCESS_TOKEN_SECONDS: '1', AUTH_REFRESH_TOKEN_SECONDS: '2', AUTH_TOKEN_REQUESTS_PER_HOUR: '3' })
    key = await tenantKey(services.db.url, { scopes: 'consents:read' })
    await new Promise(resolve => setTimeout(resolve, 200))
  })

  afterAll(async () => {
    for (const g of [a, b, short]) await g?.close()
    await services?.close()
  })

  it('shares one signing secret through Postgres: a token from one gateway works on another, and refreshes there', async () => {
    const t = await login(a.url, key)
    expect((await status(b.url, t.access_token)).status).toBe(200)
    const r = await token(b.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token })
    expect(r.status).toBe(200)
    expect((await status(a.url, r.json.access_token)).status).toBe(200)
    const { rows } = await services.pool.query('SELECT count(*)::int AS n FROM auth_token_secret')
    expect(rows[0].n).toBe(1)
  })

  it('expires tokens: an expired access token is H351, an expired refresh token invalid_grant', async () => {
    const t = await login(short.url, key)
    expect(t).toMatchObject({ expires_in: 1, refresh_expires_in: 2 })
    expect((await status(short.url, t.access_token)).status).toBe(200)
    const deadline = Date.now() + 4000
    let r = await status(short.url, t.access_token)
    while (r.status === 200 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 100))
      r = await status(short.url, t.access_token)
    }
    expect(r).toEqual({ status: 401, json: H351 })
    expect(Date.now() - (claimsOf(t.access_token).exp * 1000)).toBeLessThan(1000) // refused once `exp` passed, not later
    while (Date.now() < claimsOf(t.refresh_token).exp * 1000) await new Promise(resolve => setTimeout(resolve, 100))
    expect((await token(short.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token })).json).toEqual({ error: 'invalid_grant', error_description: 'Token is not active' })
  })

  it('limits token requests per address and hour (AUTH_TOKEN_REQUESTS_PER_HOUR): İYS\'s 429 H084 with Retry-After', async () => {
    // the expiry test spent two of the three; this gateway's limit is 3
    const seen: number[] = []
    let last: Awaited<ReturnType<typeof token>> | null = null
    for (let i = 0; i < 3; i++) {
      last = await token(short.url, { grant_type: 'password', username: key.keyId, password: key.secret })
      seen.push(last.status)
    }
    expect(seen).toContain(429)
    expect(last!.status).toBe(429)
    expect(last!.json).toEqual({ errors: [{ code: 'H084', message: 'Saatte kabul edilen kimlik doğrulama istek limitine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.' }] })
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(3500)
    // other gateways count their own
    expect((await token(a.url, { grant_type: 'password', username: key.keyId, password: key.secret })).status).toBe(200)
  })
})

describe('the embedded trial (no DATABASE_URL)', () => {
  let gw: RunningGateway
  beforeAll(async () => { gw = await startTestGateway({}) })
  afterAll(async () => { await gw?.close() })

  it('logs in with the demo key, on a secret of its own', async () => {
    const [keyId, secret] = DEMO_API_KEY.split('.') as [string, string]
    const t = await login(gw.url, { keyId, secret, apiKey: DEMO_API_KEY })
    const res = await fetch(gw.url + '/v1/check', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.access_token}` }, body: JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipient: '+905321234567' }) })
    expect(res.status).toBe(200)
  })
})

describe('TokenIssuer', () => {
  const principal: Principal = { keyId: 'ik_00000000000000aa', iysCode: '700001', brands: new Set(['600001']), scopes: new Set<Scope>(['check']), ratePerSecond: 0, demo: false }
  let now = Date.UTC(2026, 0, 1, 12, 0, 0, 500)
  const issuer = TokenIssuer.local({ accessSeconds: 60, refreshSeconds: 120 }, { now: () => now })

  it('accepts its access token until `exp`, never sooner than expires_in said, and from the cache as without it', () => {
    const t = issuer.issue(principal)
    expect(issuer.keyIdOf(t.access_token)).toBe(principal.keyId)
    const exp = claimsOf(t.access_token).exp * 1000
    expect(exp - now).toBeGreaterThanOrEqual(60_000)
    now = exp - 1
    expect(issuer.keyIdOf(t.access_token)).toBe(principal.keyId)
    now = exp
    expect(issuer.keyIdOf(t.access_token)).toBeNull()
    expect(issuer.keyIdOf(t.access_token)).toBeNull()
    expect(issuer.checkRefresh(t.refresh_token)).toEqual({ keyId: principal.keyId })
    now = claimsOf(t.refresh_token).exp * 1000
    expect(issuer.checkRefresh(t.refresh_token)).toBe('expired')
  })

  it('refuses tokens of another secret, refresh tokens as access tokens, garbage and overlong text', () => {
    const other = TokenIssuer.local({ accessSeconds: 60, refreshSeconds: 120 }, { now: () => now })
    const t = other.issue(principal)
    expect(issuer.keyIdOf(t.access_token)).toBeNull()
    expect(issuer.checkRefresh(t.refresh_token)).toBe('invalid')
    const mine = issuer.issue(principal)
    expect(issuer.keyIdOf(mine.refresh_token)).toBeNull()
    expect(issuer.checkRefresh(mine.access_token)).toBe('invalid')
    for (const junk of ['', '.', 'a.b.c', mine.access_token + 'x', mine.access_token.slice(0, -43) + 'é'.repeat(43), 'eyJ' + 'a'.repeat(5000)]) {
      expect(issuer.keyIdOf(junk)).toBeNull()
      expect(issuer.checkRefresh(junk)).toBe('invalid')
    }
  })
})
