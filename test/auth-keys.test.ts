// Keys across gateways: a revoked key stops on every gateway within a second; tokens are accepted by every gateway
// of the database that shares AUTH_TOKEN_SECRET and by no other; the public demo key is accepted only by the
// embedded trial (or where AUTH_DEMO_KEY says so), never with DATABASE_URL.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEMO_API_KEY } from '../src/auth/key-store.js'
import { revokeKey } from '../src/auth/keys.js'
import { loadConfig } from '../src/config.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const CHECK = JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipient: '+905321234567', commercial: false })

const check = async (g: RunningGateway, credential: string): Promise<number> =>
  (await fetch(g.url + '/v1/check', { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(credential) }, body: CHECK })).status

describe('keys across gateways', () => {
  let services: TestServicesWithRedis
  const gateways: RunningGateway[] = []

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true })
    const secret = 'a-token-secret-of-at-least-32-characters'
    for (const s of [secret, secret, 'another-token-secret-of-32-characters!']) {
      gateways.push(await startTestGateway({ ...services.env, AUTO_REBUILD: 'false', AUTH_TOKEN_SECRET: s }))
    }
  }, 60_000)

  afterAll(async () => {
    for (const g of gateways) await g.close()
    await services?.close()
  })

  it('stops a revoked key on every gateway within a second', async () => {
    const key = await tenantKey(services.env.DATABASE_URL!)
    await new Promise(resolve => setTimeout(resolve, 600)) // AUTH_POLL_MS (250) twice: every gateway has it
    for (const g of gateways) expect(await check(g, key.apiKey)).toBe(200)
    await revokeKey(services.pool, key.keyId)
    const revokedAt = Date.now()
    const stoppedAfter = await Promise.all(gateways.map(async g => {
      while (await check(g, key.apiKey) !== 401) {
        if (Date.now() - revokedAt > 5000) throw new Error('the revoked key still works after 5 s')
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      return Date.now() - revokedAt
    }))
    for (const ms of stoppedAfter) expect(ms).toBeLessThan(1000)
  })

  it('accepts a token on every gateway that shares AUTH_TOKEN_SECRET, and on no other', async () => {
    const key = await tenantKey(services.env.DATABASE_URL!)
    await new Promise(resolve => setTimeout(resolve, 600))
    const res = await fetch(gateways[0]!.url + '/oauth2/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'password', username: key.keyId, password: key.secret }).toString() })
    expect(res.status).toBe(200)
    const token = ((await res.json()) as { access_token: string }).access_token
    expect(await check(gateways[0]!, token)).toBe(200)
    expect(await check(gateways[1]!, token)).toBe(200)
    expect(await check(gateways[2]!, token)).toBe(401)
  })

  it('refuses the demo key wherever there is a database', async () => {
    for (const g of gateways) expect(await check(g, DEMO_API_KEY)).toBe(401)
    expect(() => loadConfig({ DATABASE_URL: services.env.DATABASE_URL!, AUTH_DEMO_KEY: 'true' })).toThrow(/AUTH_DEMO_KEY/)
  })

  it('accepts no key at all on a Redis gateway without a database unless AUTH_DEMO_KEY is set, and says so', async () => {
    const { DATABASE_URL: _, ...redisOnly } = services.env
    const bare = await startTestGateway({ ...redisOnly, AUTH_DEMO_KEY: 'false' })
    try {
      expect(await check(bare, DEMO_API_KEY)).toBe(401)
      const ready = await (await fetch(bare.url + '/readyz')).json() as { apiKeys: { source: string }, warnings: string[] }
      expect(ready.apiKeys.source).toBe('none')
      expect(ready.warnings.join(' ')).toMatch(/no API key exists/)
    } finally {
      await bare.close()
    }
    expect(loadConfig({ REDIS_URL: services.env.REDIS_URL! }).demoKey).toBe(false)
    expect(loadConfig({}).demoKey).toBe(true)
  })
})
