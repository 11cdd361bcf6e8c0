// One-click unsubscribe (RFC 8058): the tokens of the SMTP relay's List-Unsubscribe links (signed, encrypted,
// rotated) and the route that turns their POST into a RET. The route is driven on a router of its own built with
// createApp (as the gateway builds its own) over real Postgres, and its effect is checked on a real gateway over the
// same Postgres and Redis: the other gateway refuses the address within a second.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DecisionsHook } from '../src/audit/decisions-hook.js'
import { KeyStore } from '../src/auth/key-store.js'
import { parseUnsubscribeSecrets, signUnsubscribe, verifyUnsubscribe } from '../src/auth/unsubscribe-tokens.js'
import { Checker } from '../src/check/checker.js'
import { createApp } from '../src/http/app.js'
import { isOneClick, unsubscribeRoute, type UnsubscribeRouteDeps } from '../src/http/unsubscribe-route.js'
import { uWS } from '../src/http/uws.js'
import { createLogger } from '../src/log.js'
import { Metrics } from '../src/metrics.js'
import { createPool, type Pool } from '../src/store/pg.js'
import { runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { freePort, until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const OLD = 'the old secret still in the list: 0123456789'
const NEW = 'the new secret first in the list: 9876543210'
const OTHER = 'somebody else\'s secret of 32+ characters!!'
const CLAIM = { iysCode: '700001', brandCode: '600001', recipient: 'ayse.yilmaz@example.com' }

describe('unsubscribe tokens', () => {
  it('carry the claim there and back, with the address normalised and issuedAt now by default', () => {
    const before = Math.floor(Date.now() / 1000)
    const token = signUnsubscribe(NEW, { ...CLAIM, recipient: ' Ayse.Yilmaz@Example.COM ' })
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/)
    const claim = verifyUnsubscribe([NEW], token)
    expect(claim).toMatchObject(CLAIM)
    expect(claim!.issuedAt).toBeGreaterThanOrEqual(before)
    expect(claim!.issuedAt).toBeLessThanOrEqual(Math.floor(Date.now() / 1000))
    expect(verifyUnsubscribe([NEW], signUnsubscribe(NEW, { ...CLAIM, issuedAt: 1_700_000_000 }))).toEqual({ ...CLAIM, issuedAt: 1_700_000_000 })
  })

  it('take an address of İYS\'s longest (265 characters), and an address with | in it, into a URL-sized token', () => {
    const long = `${'a'.repeat(64)}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.examples`
    expect(long).toHaveLength(265)
    const t = signUnsubscribe(NEW, { ...CLAIM, recipient: long })
    expect(t.length).toBeLessThan(512)
    expect(verifyUnsubscribe([NEW], t)?.recipient).toBe(long)
    expect(verifyUnsubscribe([NEW], signUnsubscribe(NEW, { ...CLAIM, recipient: 'a|b@example.com' }))?.recipient).toBe('a|b@example.com')
  })

  it('do not show the address, the brand or the tenant, in the token or in its bytes', () => {
    const token = signUnsubscribe(NEW, CLAIM)
    const bytes = Buffer.from(token, 'base64url')
    for (const word of ['ayse', 'yilmaz', 'example', '600001', '700001']) {
      expect(token.toLowerCase()).not.toContain(word)
      expect(bytes.includes(word)).toBe(false)
    }
    // Two recipients of one brand share no visible structure beyond the version byte.
    const other = signUnsubscribe(NEW, { ...CLAIM, recipient: 'ayse.yilmaz@example.org' })
    expect(Buffer.from(other, 'base64url').subarray(1, 17).equals(bytes.subarray(1, 17))).toBe(false)
  })

  it('refuse any altered token: each byte flipped, cut short, lengthened, re-spelt or re-encoded', () => {
    const token = signUnsubscribe(NEW, CLAIM)
    const bytes = Buffer.from(token, 'base64url')
    for (let i = 0; i < bytes.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const altered = Buffer.from(bytes)
        altered[i]! ^= bit
        expect(verifyUnsubscribe([NEW], altered.toString('base64url')), `byte ${i} bit ${bit}`).toBeNull()
      }
    }
    expect(verifyUnsubscribe([NEW], token.slice(0, -1))).toBeNull()
    expect(verifyUnsubscribe([NEW], token.slice(0, -4))).toBeNull()
    expect(verifyUnsubscribe([NEW], token + 'A')).toBeNull()
    expect(verifyUnsubscribe([NEW], token + '=')).toBeNull()
    expect(verifyUnsubscribe([NEW], token + '==')).toBeNull()
    expect(verifyUnsubscribe([NEW], bytes.toString('base64'))).toBe(/[+/=]/.test(bytes.toString('base64')) ? null : verifyUnsubscribe([NEW], token))
    // Spellings that decode to the same bytes (other unused bits in the last character) are not the token.
    const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    for (const c of ALPHABET) {
      const spelt = token.slice(0, -1) + c
      if (spelt !== token && Buffer.from(spelt, 'base64url').equals(bytes)) expect(verifyUnsubscribe([NEW], spelt)).toBeNull()
    }
    expect(verifyUnsubscribe([NEW], Buffer.concat([bytes, Buffer.of(0)]).toString('base64url'))).toBeNull()
    for (const junk of ['', 'A', 'not a token', '%41', 'x'.repeat(5000), Buffer.alloc(60).toString('base64url')]) expect(verifyUnsubscribe([NEW], junk)).toBeNull()
  })

  it('rotate: a token signed with the old secret verifies while the old secret is in the list, and not after', () => {
    const old = signUnsubscribe(OLD, CLAIM)
    expect(verifyUnsubscribe([NEW, OLD], old)).toMatchObject(CLAIM)
    expect(verifyUnsubscribe([NEW], old)).toBeNull()
    expect(verifyUnsubscribe([NEW, OLD], signUnsubscribe(NEW, CLAIM))).toMatchObject(CLAIM)
    expect(verifyUnsubscribe([], old)).toBeNull()
  })

  it('cannot be made without a secret of the list', () => {
    expect(verifyUnsubscribe([NEW, OLD], signUnsubscribe(OTHER, CLAIM))).toBeNull()
    // Random tokens of a real token's shape and length: none verifies.
    const length = Buffer.from(signUnsubscribe(NEW, CLAIM), 'base64url').length
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.from(Array.from({ length }, () => Math.floor(Math.random() * 256)))
      bytes[0] = 0x01
      expect(verifyUnsubscribe([NEW, OLD], bytes.toString('base64url'))).toBeNull()
    }
  })

  it('are refused at signing for what is not an e-mail address and İYS codes, or with a short secret', () => {
    expect(() => signUnsubscribe('short', CLAIM)).toThrow(/32 characters/)
    expect(() => signUnsubscribe(NEW, { ...CLAIM, recipient: '+905321234567' })).toThrow(/e-mail address/)
    expect(() => signUnsubscribe(NEW, { ...CLAIM, brandCode: 'acme' })).toThrow(/İYS codes/)
    expect(() => signUnsubscribe(NEW, { ...CLAIM, issuedAt: -1 })).toThrow(/epoch seconds/)
    // The address is never in the message (it would reach a log).
    expect(() => signUnsubscribe(NEW, { ...CLAIM, recipient: 'not-an-address' })).toThrow(/^(?!.*not-an-address)/)
  })
})

describe('SMTP_UNSUBSCRIBE_SECRETS', () => {
  it('is a comma-separated list of secrets of at least 32 characters, the first first; empty: none', () => {
    expect(parseUnsubscribeSecrets('')).toEqual([])
    expect(parseUnsubscribeSecrets('  ')).toEqual([])
    expect(parseUnsubscribeSecrets(NEW)).toEqual([NEW])
    expect(parseUnsubscribeSecrets(` ${NEW} ,${OLD}`)).toEqual([NEW, OLD])
  })

  it('refuses a short or an empty secret, naming it by its position and never by its value', () => {
    expect(() => parseUnsubscribeSecrets('tooshort')).toThrow('the secret has 8 characters; each needs at least 32')
    expect(() => parseUnsubscribeSecrets(`${NEW},tooshort`)).toThrow(/^secret 2 of 2 has 8 characters/)
    expect(() => parseUnsubscribeSecrets(`${NEW},,${OLD}`)).toThrow('secret 2 of 3 is empty')
    expect(() => parseUnsubscribeSecrets(`${NEW},`)).toThrow('secret 2 of 2 is empty')
    try { parseUnsubscribeSecrets(`${NEW},tooshort`) } catch (err) { expect((err as Error).message).not.toContain('tooshort') }
  })
})

describe('the one-click body', () => {
  const one = Buffer.from('List-Unsubscribe=One-Click')
  it('is List-Unsubscribe=One-Click as a form, urlencoded or multipart, or as the bare text whatever the type', () => {
    expect(isOneClick(one, 'application/x-www-form-urlencoded')).toBe(true)
    expect(isOneClick(Buffer.from('a=1&List-Unsubscribe=One-Click\r\n'), 'application/x-www-form-urlencoded; charset=utf-8')).toBe(true)
    expect(isOneClick(one, '')).toBe(true)
    expect(isOneClick(one, 'text/plain')).toBe(true)
    expect(isOneClick(one, 'application/json')).toBe(true)
    const multipart = '--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--XyZ--\r\n'
    expect(isOneClick(Buffer.from(multipart), 'multipart/form-data; boundary=XyZ')).toBe(true)
    expect(isOneClick(Buffer.from(multipart), 'multipart/form-data; boundary="XyZ"')).toBe(true)
  })

  it('is nothing else', () => {
    expect(isOneClick(Buffer.alloc(0), '')).toBe(false)
    expect(isOneClick(Buffer.from('List-Unsubscribe=Yes'), 'application/x-www-form-urlencoded')).toBe(false)
    expect(isOneClick(Buffer.from('{"List-Unsubscribe":"One-Click"}'), 'application/json')).toBe(false)
    expect(isOneClick(Buffer.from('a=1&List-Unsubscribe=One-Click'), 'text/plain')).toBe(false)
    const file = '--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"; filename="x.txt"\r\n\r\nOne-Click\r\n--XyZ--\r\n'
    expect(isOneClick(Buffer.from(file), 'multipart/form-data; boundary=XyZ')).toBe(false)
    expect(isOneClick(Buffer.from('--XyZ\r\n\r\nOne-Click\r\n--XyZ--'), 'multipart/form-data')).toBe(false)
  })
})

// ---- the route, over real Postgres and Redis -----------------------------------------------------------------------

const AYSE = 'ayse.yilmaz@example.com'
const MEHMET = 'mehmet.kaya@example.com'
const NOBODY = 'no.record@example.com'

/** The first error of an error answer. */
const errorOf = async (res: Response): Promise<{ code: string, message: string }> => ((await res.json()) as { errors: { code: string, message: string }[] }).errors[0]!

interface Served { url: string, metrics: Metrics, close (): Promise<void> }

/** A router of our own, assembled by createApp as the gateway's is, with only the unsubscribe routes on it. */
async function serve (deps: Omit<UnsubscribeRouteDeps, 'log' | 'metrics'>): Promise<Served> {
  const metrics = new Metrics()
  const log = createLogger('silent')
  const { app, router } = createApp({
    checker: new Checker(() => null, { tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' }),
    metrics,
    log,
    maxBodyBytes: 1 << 16,
    auth: KeyStore.demo(),
    rateLimit: { take: () => 0 },
    readiness: () => ({ ready: true, reason: 'ok' }),
    decisions: new DecisionsHook({ metrics, decisionLog: null }),
    routes: r => { unsubscribeRoute(r, { ...deps, log, metrics }) }
  })
  const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
    app.listen('127.0.0.1', 0, t => { if (t === false) reject(new Error('cannot listen')); else resolve(t) })
  })
  return {
    url: `http://127.0.0.1:${uWS.us_socket_local_port(socket)}`,
    metrics,
    async close () { uWS.us_listen_socket_close(socket); await router.drain(2000) }
  }
}

describe('POST /v1/unsubscribe/:token on a real gateway', () => {
  let services: TestServicesWithRedis
  let other: RunningGateway
  let served: Served
  const closers: Array<() => Promise<void>> = []

  const tokenFor = (recipient: string, secret = NEW): string => signUnsubscribe(secret, { iysCode: '700001', brandCode: '600001', recipient })
  const post = (base: string, token: string, body: string | FormData = 'List-Unsubscribe=One-Click', type: string | null = 'application/x-www-form-urlencoded'): Promise<Response> =>
    fetch(`${base}/v1/unsubscribe/${token}`, { method: 'POST', headers: type === null ? {} : { 'content-type': type }, body })
  const reason = async (recipient: string): Promise<string> =>
    (await check(other.url, { brandCode: 600001, type: 'EPOSTA', recipient }))[0]!.reason
  const ledger = async (recipient: string): Promise<{ recipient_type: string, status: string, source: string, via: string, actor: string | null }[]> =>
    (await services.pool.query(`SELECT recipient_type, status, source, via, actor FROM consent_history
                                WHERE brand_code = 600001 AND type = 'EPOSTA' AND recipient = $1 ORDER BY seq`, [recipient])).rows
  const lastSeq = async (): Promise<number> => Number((await services.pool.query('SELECT coalesce(max(seq), 0) AS s FROM consent_history')).rows[0].s)

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-unsubscribe-' })
    const file = join(services.dir, 'consents.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      [AYSE, MEHMET].map(r => `700001,600001,${r},BIREYSEL,EPOSTA,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join(''))
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    other = await startTestGateway(services.env)
    served = await serve({ secrets: [NEW, OLD], pool: services.pool })
    await until(async () => (await fetch(other.url + '/readyz')).status === 200, 30_000, 'the other gateway to be ready')
  }, 120_000)

  afterAll(async () => {
    for (const c of closers) await c()
    await served?.close()
    await other?.close()
    await services?.close()
  })

  it('GET answers a page whose form POSTs the one-click body, and changes nothing', async () => {
    const seq = await lastSeq()
    const res = await fetch(`${served.url}/v1/unsubscribe/${tokenFor(AYSE)}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await res.text()
    expect(html).toContain('<form method="post">')
    expect(html).toContain('<input type="hidden" name="List-Unsubscribe" value="One-Click">')
    expect(html).toMatch(/Abonelikten çık/)
    expect(html).toMatch(/Unsubscribe/)
    expect(html).not.toMatch(/<script|<link|src=|https?:/i) // nothing external, nothing run
    expect(html).not.toContain(AYSE)
    expect(await lastSeq()).toBe(seq)
    expect(await reason(AYSE)).toBe('CONSENT')
  })

  it('POST records a RET (HS_EPOSTA, actor unsubscribe) that another gateway refuses the address for within a second', async () => {
    expect(await reason(AYSE)).toBe('CONSENT')
    const res = await post(served.url, tokenFor(AYSE))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await res.text()).toMatch(/unsubscribed/i)
    // No timing threshold here (the machines are noisy): the benchmark measures propagation.
    await until(async () => await reason(AYSE) === 'REJECTED', 10_000, 'the other gateway to refuse the address')
    // BIREYSEL had an ONAY: a RET now. TACIR had no record: a RET all the same (İYS's H175 is a rule for a
    // provider's first record, not for the citizen's own rejection), so a TACIR send is refused too.
    const rows = await ledger(AYSE)
    expect(rows.map(r => [r.recipient_type, r.status, r.via])).toEqual([['BIREYSEL', 'ONAY', 'import'], ['BIREYSEL', 'RET', 'api'], ['TACIR', 'RET', 'api']])
    expect(rows[1]).toEqual({ recipient_type: 'BIREYSEL', status: 'RET', source: 'HS_EPOSTA', via: 'api', actor: 'unsubscribe' })
    await until(async () => (await check(other.url, { brandCode: 600001, type: 'EPOSTA', recipientType: 'TACIR', recipient: AYSE }))[0]!.reason === 'REJECTED', 10_000, 'the TACIR RET on the other gateway')
    // Other recipients of the brand are untouched.
    expect(await reason(MEHMET)).toBe('CONSENT')
  })

  it('a second POST is 200 too, and writes nothing', async () => {
    const seq = await lastSeq()
    const res = await post(served.url, tokenFor(AYSE))
    expect(res.status).toBe(200)
    expect(await res.text()).toMatch(/unsubscribed/i)
    expect(await lastSeq()).toBe(seq)
  })

  it('a token signed with the old secret still in the list works; multipart and bare-text bodies work', async () => {
    const form = new FormData()
    form.set('List-Unsubscribe', 'One-Click')
    const res = await post(served.url, tokenFor(MEHMET, OLD), form, null) // fetch sets multipart/form-data; boundary=…
    expect(res.status, await res.clone().text()).toBe(200)
    await until(async () => await reason(MEHMET) === 'REJECTED', 10_000, 'the other gateway to refuse the second address')
    expect((await post(served.url, tokenFor(MEHMET), 'List-Unsubscribe=One-Click', 'text/plain')).status).toBe(200)
  })

  it('a recipient with no record: 200, and a RET for both recipient types (the citizen\'s rejection holds without a record)', async () => {
    const seq = await lastSeq()
    expect((await post(served.url, tokenFor(NOBODY))).status).toBe(200)
    expect(await lastSeq()).toBe(seq + 2)
    expect((await ledger(NOBODY)).map(r => [r.recipient_type, r.status, r.source, r.actor])).toEqual([['BIREYSEL', 'RET', 'HS_EPOSTA', 'unsubscribe'], ['TACIR', 'RET', 'HS_EPOSTA', 'unsubscribe']])
  })

  it('a bad token is 404 with no detail, on POST and GET; a body that is not the one-click form is 422; neither writes', async () => {
    const seq = await lastSeq()
    const good = tokenFor(NOBODY)
    const flipped = Buffer.from(good, 'base64url')
    flipped[20]! ^= 1
    for (const token of [flipped.toString('base64url'), 'nonsense', signUnsubscribe(OTHER, CLAIM), good.slice(0, -2)]) {
      for (const method of ['POST', 'GET']) {
        const res = method === 'POST' ? await post(served.url, token) : await fetch(`${served.url}/v1/unsubscribe/${token}`)
        expect(res.status, `${method} ${token}`).toBe(404)
        expect(await errorOf(res)).toEqual({ code: 'NOT_FOUND', message: 'No such unsubscribe link.' })
      }
    }
    for (const [body, type] of [['', null], ['List-Unsubscribe=Yes', 'application/x-www-form-urlencoded'], ['{"List-Unsubscribe":"One-Click"}', 'application/json']] as const) {
      const res = await post(served.url, tokenFor(MEHMET), body, type)
      expect(res.status, body).toBe(422)
      expect((await errorOf(res)).code).toBe('INVALID_FIELD')
    }
    expect(await lastSeq()).toBe(seq)
  })

  it('counts what became of the POSTs (iys_unsubscribes_total)', async () => {
    const text = await served.metrics.registry.metrics()
    const count = (result: string): number => Number(new RegExp(`^iys_unsubscribes_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1])
    expect(count('recorded')).toBe(3)
    expect(count('unchanged')).toBe(2)
    expect(count('invalid_token')).toBe(4)
  })

  it('Postgres unreachable: 503 DATABASE_UNAVAILABLE with Retry-After (mail providers retry)', async () => {
    const pool: Pool = createPool(`postgres://postgres@127.0.0.1:${await freePort()}/nothing`, 1, { connectTimeoutMs: 500 })
    const down = await serve({ secrets: [NEW], pool })
    closers.push(async () => { await down.close(); await pool.end() })
    const res = await post(down.url, tokenFor(AYSE))
    expect(res.status).toBe(503)
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect((await errorOf(res)).code).toBe('DATABASE_UNAVAILABLE')
  })

  it('without DATABASE_URL the POST is 503 NOT_CONFIGURED (the GET page still shows); without secrets both are', async () => {
    const noPool = await serve({ secrets: [NEW], pool: null })
    const noSecrets = await serve({ secrets: [], pool: services.pool })
    closers.push(noPool.close, noSecrets.close)
    const token = tokenFor(AYSE)
    const a = await post(noPool.url, token)
    expect(a.status).toBe(503)
    expect(await errorOf(a)).toMatchObject({ code: 'NOT_CONFIGURED', message: expect.stringContaining('DATABASE_URL') })
    expect((await fetch(`${noPool.url}/v1/unsubscribe/${token}`)).status).toBe(200)
    for (const res of [await post(noSecrets.url, token), await fetch(`${noSecrets.url}/v1/unsubscribe/${token}`)]) {
      expect(res.status).toBe(503)
      expect(await errorOf(res)).toMatchObject({ code: 'NOT_CONFIGURED', message: expect.stringContaining('SMTP_UNSUBSCRIBE_SECRETS') })
    }
  })
})
