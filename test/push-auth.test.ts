// The İYS push receiver's sign-in (http/push-route.ts, auth/lockout.ts): basic auth compared in constant time
// whatever the length, a source locked out after repeated failures (429 with Retry-After, even for the right
// password), a success clearing the failures, failures logged without the secret and counted in metrics. The
// lockout runs on an injected clock; the route on a real uWS server on port 0 with the real router, sources told
// apart by connecting from different loopback addresses (127.0.0.2, 127.0.0.3).

import { Writable } from 'node:stream'
import pino from 'pino'
import { Agent, fetch } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { Lockout, sourceOf } from '../src/auth/lockout.js'
import { basicAuthVerifier, pushRoute } from '../src/http/push-route.js'
import { Router, type RouterDeps } from '../src/http/router.js'
import { uWS } from '../src/http/uws.js'
import { Metrics } from '../src/metrics.js'

const basic = (user: string, password: string): string => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64')

describe('the lockout', () => {
  const clock = (): { now: () => number, advance: (ms: number) => void } => {
    let t = 5_000_000
    return { now: () => t, advance: (ms) => { t += ms } }
  }

  it('locks a source at the 10th failure within 5 minutes, for 15 minutes, then starts afresh', () => {
    const c = clock()
    const l = new Lockout({ maxFailures: 10, windowMs: 300_000, lockMs: 900_000, now: c.now })
    for (let i = 0; i < 9; i++) { expect(l.fail('1.2.3.4')).toBe(false); c.advance(1000) }
    expect(l.lockedFor('1.2.3.4')).toBe(0)
    expect(l.fail('1.2.3.4')).toBe(true)
    expect(l.lockedFor('1.2.3.4')).toBe(900_000)
    expect(l.lockedFor('5.6.7.8')).toBe(0) // another source is not affected
    expect(l.fail('1.2.3.4')).toBe(false) // a failure while locked neither locks again nor extends the lock
    c.advance(899_999)
    expect(l.lockedFor('1.2.3.4')).toBe(1)
    c.advance(1)
    expect(l.lockedFor('1.2.3.4')).toBe(0)
    expect(l.fail('1.2.3.4')).toBe(false) // the failures before the lock are gone
  })

  it('counts failures in a sliding window: ten spread over more than the window do not lock', () => {
    const c = clock()
    const l = new Lockout({ maxFailures: 10, windowMs: 300_000, lockMs: 900_000, now: c.now })
    for (let i = 0; i < 30; i++) { expect(l.fail('s')).toBe(false); c.advance(33_400) } // 10 failures span 300.6 s
    for (let i = 0; i < 9; i++) l.fail('t')
    c.advance(300_000)
    expect(l.fail('t')).toBe(true) // the 10th exactly at the window's end still counts
  })

  it('forgets the failures of a source that signs in successfully', () => {
    const c = clock()
    const l = new Lockout({ maxFailures: 3, windowMs: 60_000, lockMs: 60_000, now: c.now })
    l.fail('s'); l.fail('s')
    l.succeed('s')
    expect(l.fail('s')).toBe(false)
    expect(l.fail('s')).toBe(false)
    expect(l.fail('s')).toBe(true)
  })

  it('tracks a bounded number of sources', () => {
    const l = new Lockout({ maxFailures: 3, windowMs: 60_000, lockMs: 60_000, maxSources: 100 })
    for (let i = 0; i < 10_000; i++) l.fail(`10.0.${i >> 8}.${i & 255}`)
    expect(l.size).toBe(100)
  })

  it('counts IPv4 as it is (also IPv4-mapped) and IPv6 by its /64', () => {
    expect(sourceOf('203.0.113.7')).toBe('203.0.113.7')
    expect(sourceOf('0000:0000:0000:0000:0000:ffff:7f00:0001')).toBe('127.0.0.1')
    expect(sourceOf('::ffff:203.0.113.7')).toBe('203.0.113.7')
    expect(sourceOf('2001:0db8:0001:0002:0003:0004:0005:0006')).toBe('2001:db8:1:2::/64')
    expect(sourceOf('2001:db8:1:2::9')).toBe('2001:db8:1:2::/64')
    expect(sourceOf('')).toBe('unknown')
    expect(sourceOf(undefined)).toBe('unknown')
  })
})

describe('the basic-auth check', () => {
  const verify = basicAuthVerifier({ user: 'iys', password: 's3cret-password' })

  it('accepts the right credentials, with the scheme in any case', () => {
    expect(verify(basic('iys', 's3cret-password'))).toBe(true)
    expect(verify('basic ' + Buffer.from('iys:s3cret-password').toString('base64'))).toBe(true)
  })

  it('refuses wrong ones of any length without throwing (the digests compared are always 32 bytes)', () => {
    for (const [user, password] of [['iys', 's3cret-passworx'], ['iys', ''], ['iys', 's3cret-password-and-more'], ['', ''], ['x'.repeat(5000), 'y']]) {
      expect(verify(basic(user!, password!))).toMatchObject({ kind: 'wrong', userLength: user!.length, userMatches: user === 'iys' })
    }
    expect(verify('Basic')).toMatchObject({ kind: 'missing' })
    expect(verify('Basic !!!not base64')).toMatchObject({ kind: 'wrong' })
    expect(verify('')).toMatchObject({ kind: 'missing' })
    expect(verify('Bearer abc.def')).toMatchObject({ kind: 'missing' })
  })
})

describe('POST /iys/push sign-in', () => {
  const USER = 'iys-pusher'
  const PASSWORD = 'correct horse battery staple'
  const closers: Array<() => void> = []
  afterEach(() => { for (const c of closers.splice(0)) c() })

  /** A push receiver on its own uWS server: a stand-in inbox, a lockout of 3 failures, captured logs. */
  async function receiver (): Promise<{ url: string, metrics: Metrics, logs: string[], stored: unknown[] }> {
    const logs: string[] = []
    const log = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { logs.push(String(chunk)); done() } }))
    const metrics = new Metrics()
    const app = uWS.App()
    const deps: RouterDeps = { metrics, log, maxBodyBytes: 1 << 20, auth: { authenticate: () => null }, rateLimit: { take: () => 0 } }
    const router = new Router(app, deps)
    const stored: unknown[] = []
    pushRoute(router, {
      push: { store: async (body) => { stored.push(body); return stored.length } },
      credentials: { user: USER, password: PASSWORD },
      lockout: new Lockout({ maxFailures: 3, windowMs: 60_000, lockMs: 60_000 }),
      log,
      metrics
    })
    router.catchAll('other')
    const socket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
      app.listen('127.0.0.1', 0, (t) => { if (t === false) reject(new Error('cannot listen')); else resolve(t) })
    })
    closers.push(() => { uWS.us_listen_socket_close(socket) })
    return { url: `http://127.0.0.1:${uWS.us_socket_local_port(socket)}/iys/push`, metrics, logs, stored }
  }

  /** Connections from one loopback address: one source as the receiver sees it. */
  const from = (address: string): Agent => {
    const agent = new Agent({ localAddress: address })
    closers.push(() => { void agent.close() })
    return agent
  }

  const push = async (url: string, agent: Agent, authorization: string | null): Promise<{ status: number, retryAfter: string | null, body: any }> => {
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (authorization !== null) headers.authorization = authorization
    const res = await fetch(url, { method: 'POST', headers, body: '{"list":[]}', dispatcher: agent })
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() }
  }

  const metricValue = async (m: Metrics, name: string, labels = ''): Promise<number> => {
    const text = await m.registry.metrics()
    const line = text.split('\n').find(l => l.startsWith(`${name}${labels} `))
    return line === undefined ? 0 : Number(line.split(' ')[1])
  }

  it('locks out a source after 3 failures, answering 429 with Retry-After even for the right password; another source still gets in', async () => {
    const r = await receiver()
    const guesser = from('127.0.0.2')
    const iys = from('127.0.0.3')
    for (let i = 0; i < 3; i++) expect((await push(r.url, guesser, basic(USER, `guess${i}`))).status).toBe(401)
    const locked = await push(r.url, guesser, basic(USER, PASSWORD))
    expect(locked.status).toBe(429)
    expect(locked.body.errors[0].code).toBe('RATE_LIMITED')
    expect(Number(locked.retryAfter)).toBeGreaterThanOrEqual(59)
    expect(Number(locked.retryAfter)).toBeLessThanOrEqual(60)
    expect((await push(r.url, iys, basic(USER, PASSWORD))).status).toBe(200)
    expect(r.stored).toHaveLength(1) // nothing from the locked source was stored

    expect(await metricValue(r.metrics, 'iys_push_auth_failures_total', '{kind="wrong"}')).toBe(3)
    expect(await metricValue(r.metrics, 'iys_push_auth_failures_total', '{kind="locked"}')).toBe(1)
    expect(await metricValue(r.metrics, 'iys_push_lockouts_total')).toBe(1)
  })

  it('clears a source\'s failures when it signs in successfully', async () => {
    const r = await receiver()
    const a = from('127.0.0.4')
    expect((await push(r.url, a, basic(USER, 'wrong'))).status).toBe(401)
    expect((await push(r.url, a, basic(USER, 'wrong'))).status).toBe(401)
    expect((await push(r.url, a, basic(USER, PASSWORD))).status).toBe(200)
    expect((await push(r.url, a, basic(USER, 'wrong'))).status).toBe(401)
    expect((await push(r.url, a, basic(USER, 'wrong'))).status).toBe(401)
    expect((await push(r.url, a, basic(USER, PASSWORD))).status).toBe(200)
  })

  it('answers 401 without credentials and counts it; logs each failure with the source, never the secret', async () => {
    const r = await receiver()
    const a = from('127.0.0.5')
    const none = await push(r.url, a, null)
    expect(none.status).toBe(401)
    expect(none.body.errors[0].code).toBe('UNAUTHORIZED')
    const wrongPassword = 'hunter2-is-not-it'
    expect((await push(r.url, a, basic(USER, wrongPassword))).status).toBe(401)
    expect(await metricValue(r.metrics, 'iys_push_auth_failures_total', '{kind="missing"}')).toBe(1)
    expect(await metricValue(r.metrics, 'iys_push_auth_failures_total', '{kind="wrong"}')).toBe(1)

    const failures = r.logs.map(l => JSON.parse(l)).filter(l => l.msg === 'İYS push: failed sign-in')
    expect(failures).toHaveLength(2)
    expect(failures[1]).toMatchObject({ source: '127.0.0.5', kind: 'wrong', userLength: USER.length, userMatches: true })
    const all = r.logs.join('\n')
    for (const secret of [PASSWORD, wrongPassword, USER, Buffer.from(`${USER}:${wrongPassword}`).toString('base64')]) expect(all).not.toContain(secret)

    // The third failure locks the source: logged once as such.
    await push(r.url, a, basic('someone', 'else'))
    expect(r.logs.filter(l => l.includes('source locked out'))).toHaveLength(1)
  })

  it('signs in before it reads a body: an unauthenticated push is 401 whatever its body (never parsed: no H014)', async () => {
    const r = await receiver()
    for (const body of ['not json at all', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]']) {
      const res = await fetch(r.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: basic(USER, 'wrong') }, body, dispatcher: from('127.0.0.6') })
      expect(res.status).toBe(401)
      expect(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('UNAUTHORIZED')
    }
    expect(r.stored).toHaveLength(0)
  })
})
