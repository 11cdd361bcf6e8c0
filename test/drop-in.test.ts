// The İYS drop-in, end to end: a provider's İYS integration written from the specification alone
// (helpers/provider-integration.ts) is first run against (the fake) İYS, then pointed at the gateway with nothing
// changed but its base URL and its credentials (an API key: username = keyId, password = secret). Through the
// gateway it logs in, refreshes, writes single and batch consents, polls the request's results, queries status,
// history, changes and brands — and every consent it wrote reaches İYS, exactly once, through the write-through.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey } from '../src/auth/keys.js'
import { formatIysDate } from '../src/domain/time.js'
import { startFakeIys, type FakeIys } from './helpers/fake-iys.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { ProviderIntegration } from './helpers/provider-integration.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const IYS = '700001'
const BRAND = '600020'
const USER = 'entegrasyon@hs.example'
const PASSWORD = 'iys-account-password'

let n = 0
const phone = (): string => `+90533${String(7_000_000 + (process.pid % 1000) * 100 + n++).padStart(7, '0')}`
const consent = (recipient: string, status: 'ONAY' | 'RET', ago: number): Record<string, unknown> =>
  ({ recipient, type: 'MESAJ', source: 'HS_WEB', status, consentDate: formatIysDate(Math.floor(Date.now() / 1000) - ago), recipientType: 'BIREYSEL' })

/** The provider's flow, the same against İYS and the gateway: log in, write one, write a batch, poll its results. */
async function writeFlow (client: ProviderIntegration, recipients: string[]): Promise<{ single: any, requestId: string, results: any[] }> {
  const login = await client.login()
  expect(login.status, JSON.stringify(login.body)).toBe(200)
  expect(login.body).toMatchObject({ token_type: expect.stringMatching(/^bearer$/i), expires_in: expect.any(Number) })
  expect(typeof login.body.access_token).toBe('string')
  expect(typeof login.body.refresh_token).toBe('string')
  const refreshed = await client.refresh()
  expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200)

  const single = await client.addConsent(consent(recipients[0]!, 'ONAY', 7200))
  expect(single.status, JSON.stringify(single.body)).toBe(200)
  expect(Object.keys(single.body).sort()).toEqual(['creationDate', 'transactionId'])

  const request = await client.addConsentRequest(recipients.slice(1).map(r => consent(r, 'ONAY', 3600)))
  expect(request.status, JSON.stringify(request.body)).toBe(202)
  const requestId = request.body.requestId as string
  expect(typeof requestId).toBe('string')
  let results: any[] = []
  await until(async () => {
    const r = await client.requestResults(requestId)
    expect(r.status, JSON.stringify(r.body)).toBe(200)
    results = r.body
    return results.length === recipients.length - 1 && results.every(i => i.status === 'success')
  }, 20_000, 'the batch to be processed')
  return { single: single.body, requestId, results }
}

describe('an İYS integration pointed at the gateway', () => {
  let services: TestServices
  let fake: FakeIys
  let gw: RunningGateway
  let keyId: string
  let secret: string

  beforeAll(async () => {
    services = await testServices({ migrate: true, dirPrefix: 'iys-dropin-' })
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS })
    gw = await startTestGateway({
      ...services.env, IYS_API_URL: fake.url, IYS_USERNAME: USER, IYS_PASSWORD: PASSWORD, IYS_CODE: IYS, IYS_RESULT_POLL_MS: '200', AUTH_POLL_MS: '50'
    })
    // What an operator runs for the provider (`iys-gateway keys create …`): a key for its tenant and brand.
    const key = await createKey(services.pool, newKey({ iysCode: IYS, brandCodes: BRAND, scopes: 'consents:write,consents:read', rate: '0' }))
    keyId = key.keyId
    secret = key.secret
    await new Promise(resolve => setTimeout(resolve, 200)) // AUTH_POLL_MS
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await fake?.close()
    await services?.close()
  })

  it('speaks İYS: the integration works against (the fake) İYS itself', async () => {
    const client = new ProviderIntegration({ baseUrl: fake.url, username: USER, password: PASSWORD, iysCode: IYS, brandCode: BRAND })
    const recipients = [phone(), phone(), phone()]
    await writeFlow(client, recipients)
    for (const r of recipients) expect(fake.registeredFor(r)).toHaveLength(1)
  })

  it('works unchanged against the gateway, and what it wrote reaches İYS exactly once', async () => {
    const client = new ProviderIntegration({ baseUrl: gw.url, username: keyId, password: secret, iysCode: IYS, brandCode: BRAND })
    const recipients = [phone(), phone(), phone(), phone()]
    const { single } = await writeFlow(client, recipients)

    // Status, history, changes and brands answer from what the gateway accepted.
    const status = await client.status(recipients[0]!, 'MESAJ')
    expect(status.status).toBe(200)
    expect(status.body).toMatchObject({ recipient: recipients[0], type: 'MESAJ', recipientType: 'BIREYSEL', status: 'ONAY', transactionId: single.transactionId })
    const history = await client.history(recipients[0]!, 'MESAJ')
    expect(history.status, JSON.stringify(history.body)).toBe(200)
    expect(history.body.list[0]).toMatchObject({ recipient: recipients[0], status: 'ONAY' })
    expect((await client.changes(null)).status).toBe(204) // İYS's default list: changes recipients made at İYS (none)
    const changes = await client.changes(null, 'HS')
    expect(changes.status).toBe(200)
    expect(changes.body.list.map((c: any) => c.recipient)).toEqual(expect.arrayContaining(recipients))
    const brands = await client.brands()
    expect(brands.status).toBe(200)
    expect(JSON.stringify(brands.body)).toContain(BRAND)

    // A later RET through the gateway, too.
    expect((await client.addConsent(consent(recipients[1]!, 'RET', 60))).status).toBe(200)

    // Everything reached İYS once (the RET as a second transaction of that recipient), and İYS's outcome shows.
    await until(async () => recipients.every(r => fake.registeredFor(r).length === (r === recipients[1] ? 2 : 1)), 20_000, 'the writes to reach İYS')
    expect(fake.registeredFor(recipients[1]!).map(r => r.consent.status)).toEqual(['ONAY', 'RET'])
    await new Promise(resolve => setTimeout(resolve, 500))
    for (const r of recipients) expect(fake.registeredFor(r).length).toBe(r === recipients[1] ? 2 : 1)
    const outcome = await client.requestResults(single.transactionId)
    expect(outcome.status).toBe(200)
    expect(outcome.body[0]).toMatchObject({ status: 'success', transactionId: single.transactionId })
  })

  it('refuses the integration with İYS\'s answers when its credentials are wrong or its token is gone', async () => {
    const wrong = new ProviderIntegration({ baseUrl: gw.url, username: keyId, password: secret + 'x', iysCode: IYS, brandCode: BRAND })
    const login = await wrong.login()
    expect(login.status).toBe(400)
    expect(login.body).toMatchObject({ error: expect.any(String), error_description: expect.any(String) })
    const noToken = await wrong.status(phone(), 'MESAJ')
    expect(noToken.status).toBe(401)
    expect(noToken.body.errors[0].code).toBe('H351')
    // Another brand of the same tenant is not this key's.
    const other = new ProviderIntegration({ baseUrl: gw.url, username: keyId, password: secret, iysCode: IYS, brandCode: '600021' })
    expect((await other.login()).status).toBe(200)
    const refused = await other.addConsent(consent(phone(), 'ONAY', 60))
    expect(refused.status).toBe(403)
    expect(refused.body.errors[0].code).toBe('H353')
  })
})
