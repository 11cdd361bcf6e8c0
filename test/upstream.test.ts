// The send path's carrier side: a real fake carrier on a free port, real undici pools, and a circuit breaker on a
// fake clock. What matters most: an outcome never says "forwarded" unless the carrier has the message, a retry
// never makes the carrier send twice, and a dead carrier is answered for quickly without being hammered.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CircuitBreaker, DENIED, type BreakerSettings, type BreakerState, type CircuitBreakerOptions } from '../src/carriers/circuit-breaker.js'
import type { CarrierAdapter, OutboundMessage } from '../src/carriers/contract.js'
import { carrierErrorText, jsonAdapter } from '../src/carriers/json-adapter.js'
import { createCarrierPool, Upstream, Upstreams, type UpstreamInit } from '../src/carriers/upstream.js'
import { loadConfig } from '../src/config.js'
import { startFakeCarrier, type FakeCarrier } from '../src/dev/fake-carrier.js'
import { retryAfterMs } from '../src/util/retry-after.js'
import { arama, eposta, expectHonest, mesaj } from './helpers/carrier.js'

// The carrier code has no defaults of its own: the configuration's (no UPSTREAM_* set) are what the tests start from.
const SETTINGS = loadConfig({}).upstream

class FakeClock {
  t = 1_000_000
  now = (): number => this.t
  advance (ms: number): void { this.t += ms }
}

describe('circuit breaker', () => {
  const make = (more: Partial<CircuitBreakerOptions> = {}): { b: CircuitBreaker, clock: FakeClock, changes: string[] } => {
    const clock = new FakeClock()
    const changes: string[] = []
    const b = new CircuitBreaker({ minCalls: 10, failureRatio: 0.5, windowMs: 10_000, buckets: 10, cooldownMs: 5000, now: clock.now, onStateChange: (f: BreakerState, t: BreakerState) => changes.push(`${f}>${t}`), ...more })
    return { b, clock, changes }
  }
  const call = (b: CircuitBreaker, ok: boolean): void => { const t = b.acquire(); expect(t).not.toBe(DENIED); b.record(t, ok) }

  it('stays closed while the window holds fewer calls than minCalls, even if they all fail', () => {
    const { b } = make()
    for (let i = 0; i < 9; i++) call(b, false)
    expect(b.state).toBe('closed')
    call(b, false)
    expect(b.state).toBe('open')
  })

  it('opens when the failure ratio reaches the threshold, then denies every call until the cool-down ends', () => {
    const { b, clock, changes } = make()
    for (let i = 0; i < 10; i++) call(b, true)
    for (let i = 0; i < 9; i++) call(b, false)
    expect(b.state).toBe('closed') // 9 of 19
    call(b, false) // 10 of 20
    expect(b.state).toBe('open')
    expect(changes).toEqual(['closed>open'])
    clock.advance(4999)
    expect(b.acquire()).toBe(DENIED)
    expect(b.retryInMs()).toBe(1)
  })

  it('stays closed at a steady 30 % failure rate', () => {
    const { b, clock } = make()
    for (let i = 0; i < 10_000; i++) {
      call(b, i % 10 >= 3)
      clock.advance(1)
    }
    expect(b.state).toBe('closed')
  })

  it('forgets failures that have left the window', () => {
    const { b, clock } = make()
    for (let i = 0; i < 9; i++) call(b, false)
    clock.advance(10_000)
    for (let i = 0; i < 9; i++) call(b, true)
    call(b, false) // 1 of 10 in the window: the 9 old failures no longer count
    expect(b.state).toBe('closed')
  })

  it('lets exactly one probe through after the cool-down, and a successful probe closes it', () => {
    const { b, clock, changes } = make()
    for (let i = 0; i < 10; i++) call(b, false)
    clock.advance(5000)
    const probe = b.acquire()
    expect(probe).not.toBe(DENIED)
    expect(b.state).toBe('half_open')
    expect(b.acquire()).toBe(DENIED)
    expect(b.acquire()).toBe(DENIED)
    b.record(probe, true)
    expect(b.state).toBe('closed')
    expect(changes).toEqual(['closed>open', 'open>half_open', 'half_open>closed'])
    // A clean slate: it takes minCalls new calls to open again.
    for (let i = 0; i < 9; i++) call(b, false)
    expect(b.state).toBe('closed')
  })

  it('opens again for a full cool-down when the probe fails', () => {
    const { b, clock } = make()
    for (let i = 0; i < 10; i++) call(b, false)
    clock.advance(6000)
    const probe = b.acquire()
    clock.advance(1000)
    b.record(probe, false)
    expect(b.state).toBe('open')
    clock.advance(4999)
    expect(b.acquire()).toBe(DENIED)
    clock.advance(1)
    expect(b.acquire()).not.toBe(DENIED)
  })

  it('ignores results of calls that started before it opened', () => {
    const { b, clock } = make()
    const late = b.acquire()
    for (let i = 0; i < 10; i++) call(b, false)
    expect(b.state).toBe('open')
    b.record(late, true) // a slow call from the closed period: no proof the carrier is back
    expect(b.state).toBe('open')
    clock.advance(5000)
    const probe = b.acquire()
    b.record(late, true)
    expect(b.state).toBe('half_open')
    b.record(probe, true)
    expect(b.state).toBe('closed')
  })

  it('allows another probe when the first one never reports back', () => {
    const { b, clock } = make()
    for (let i = 0; i < 10; i++) call(b, false)
    clock.advance(5000)
    const lost = b.acquire()
    clock.advance(4999)
    expect(b.acquire()).toBe(DENIED)
    clock.advance(1)
    const second = b.acquire()
    expect(second).not.toBe(DENIED)
    b.record(lost, false) // too late to count
    expect(b.state).toBe('half_open')
    b.record(second, true)
    expect(b.state).toBe('closed')
  })

  it('refuses impossible settings', () => {
    expect(() => new CircuitBreaker({ ...SETTINGS.breaker, failureRatio: 0 })).toThrow(/failureRatio/)
    expect(() => new CircuitBreaker({ ...SETTINGS.breaker, minCalls: 0 })).toThrow(/minCalls/)
    expect(() => new CircuitBreaker({ ...SETTINGS.breaker, windowMs: 5, buckets: 10 })).toThrow(/windowMs/)
  })
})

describe('JSON adapter', () => {
  it('sends exactly the documented fields for each channel', () => {
    const m = mesaj()
    const req = jsonAdapter.buildRequest(m)
    expect(req).toMatchObject({ path: '/messages', method: 'POST', headers: { 'content-type': 'application/json' } })
    expect(JSON.parse(req.body)).toEqual({ messageId: m.messageId, type: 'MESAJ', to: m.recipient, iysCode: '700001', brandCode: '600001', sender: 'ACME', text: (m.payload as { text: string }).text })
    const e = eposta()
    expect(Object.keys(JSON.parse(jsonAdapter.buildRequest(e).body))).toEqual(['messageId', 'type', 'to', 'iysCode', 'brandCode', 'from', 'subject', 'body'])
    const a = arama()
    expect(Object.keys(JSON.parse(jsonAdapter.buildRequest(a).body))).toEqual(['messageId', 'type', 'to', 'iysCode', 'brandCode', 'callerId'])
  })

  it('reads each kind of answer as the wire format says', () => {
    const p = (status: number, body = '', headers: Record<string, string> = {}): unknown => jsonAdapter.parseResponse(status, body, headers)
    expect(p(202, '{"id":"c-1"}')).toEqual({ kind: 'accepted', carrierId: 'c-1' })
    expect(p(200, '{"messageId":"m-1","status":"queued"}')).toEqual({ kind: 'accepted', carrierId: 'm-1' })
    expect(p(200, '{"id":42}')).toEqual({ kind: 'accepted', carrierId: '42' })
    expect(p(200, '<html>ok</html>')).toMatchObject({ kind: 'unknown' })
    expect(p(200, '{}')).toMatchObject({ kind: 'unknown' })
    expect(p(400, '{"errors":[{"code":"BAD_TO","message":"unknown subscriber"}]}')).toEqual({ kind: 'rejected', error: 'HTTP 400: BAD_TO unknown subscriber' })
    expect(p(422, '{"error":"sender not registered"}')).toEqual({ kind: 'rejected', error: 'HTTP 422: sender not registered' })
    expect(p(403, 'forbidden\r\n')).toEqual({ kind: 'rejected', error: 'HTTP 403: forbidden' })
    expect(p(429, '', { 'retry-after': '2' })).toEqual({ kind: 'retry', error: 'HTTP 429', retryAfterMs: 2000 })
    expect(p(503)).toEqual({ kind: 'retry', error: 'HTTP 503' })
    expect(p(409)).toMatchObject({ kind: 'retry', maybeDelivered: true })
    expect(p(500)).toMatchObject({ kind: 'retry', maybeDelivered: true })
    expect(p(504)).toMatchObject({ kind: 'retry', maybeDelivered: true })
    expect(p(301)).toMatchObject({ kind: 'rejected' })
  })

  it('reads Retry-After as seconds or as a date, and cuts long error texts', () => {
    expect(retryAfterMs({ 'retry-after': new Date(10_000).toUTCString() }, 4000)).toBe(6000)
    expect(retryAfterMs({ 'retry-after': 'soon' })).toBeUndefined()
    expect(carrierErrorText(400, 'x'.repeat(1000)).length).toBeLessThan(220)
  })
})

describe('upstream to a real carrier', () => {
  let carrier: FakeCarrier
  const upstreams: Array<{ close (): Promise<void> }> = []
  const upstream = ({ breaker, ...more }: Omit<Partial<UpstreamInit>, 'breaker'> & { breaker?: Partial<BreakerSettings> } = {}): Upstream => {
    const u = new Upstream({ ...SETTINGS, url: carrier.url, name: 'MESAJ', timeoutMs: 1000, retries: 2, backoffMs: 2, backoffMaxMs: 20, ...more, breaker: { ...SETTINGS.breaker, ...breaker } })
    upstreams.push(u)
    return u
  }

  beforeAll(async () => { carrier = await startFakeCarrier({ seed: 7 }) })
  afterEach(async () => {
    await Promise.all(upstreams.splice(0).map(u => u.close()))
    await carrier.setMode({ latencyMs: 0, failureRate: 0, down: false, flap: null })
    carrier.reset()
  })
  afterAll(async () => { await carrier?.close() })

  it('reports an accepted message with the carrier id, after one attempt', async () => {
    const u = upstream()
    const msgs = [mesaj(), eposta(), arama()]
    const outcomes = await Promise.all(msgs.map(m => u.send(m)))
    const stats = carrier.stats()
    for (const o of outcomes) expect(o).toMatchObject({ forwarded: true, status: 'accepted', carrierId: expect.stringMatching(/^fc-\d+$/), attempts: 1 })
    expect(stats.sentByType).toEqual({ MESAJ: 1, EPOSTA: 1, ARAMA: 1 })
    expect(stats.requests).toBe(3)
    expectHonest(msgs, outcomes, stats)
  })

  it('reports a 4xx as rejected with the carrier\'s words, and does not retry it', async () => {
    const u = upstream()
    const o = await u.send(mesaj({ recipient: 'not-a-phone' }))
    expect(o).toEqual({ forwarded: false, status: 'rejected', error: 'HTTP 400: INVALID_FIELD to must be an E.164 phone number for MESAJ', attempts: 1, maybeDelivered: false, httpStatus: 400 })
    expect(carrier.stats()).toMatchObject({ requests: 1, rejected: 1, sent: 0 })
  })

  it('says a message is certainly not delivered when the carrier refuses connections', async () => {
    await carrier.setMode({ down: 'refuse' })
    const u = upstream({ breaker: { minCalls: 100 } })
    const o = await u.send(mesaj())
    expect(o).toMatchObject({ forwarded: false, status: 'failed', attempts: 3, maybeDelivered: false })
    expect(o.forwarded === false && o.error).toMatch(/ECONNREFUSED/)
  })

  it('fails fast once the breaker opens: nothing reaches a dead carrier during the cool-down, then one probe, then it closes when the carrier is back', async () => {
    const lines: string[] = []
    const log = pino({ level: 'trace' }, new Writable({ write (chunk, _e, cb) { lines.push(String(chunk)); cb() } }))
    const changes: string[] = []
    const u = upstream({ log, breaker: { minCalls: 3, failureRatio: 0.5, cooldownMs: 400 }, onBreakerChange: (name, from, to) => changes.push(`${name}:${from}>${to}`) })
    await carrier.setMode({ down: 'reset' })
    const first = mesaj({ text: 'secret offer text' })
    // The connection drops after the request went out: the carrier might have it, so the outcome says so.
    expect(await u.send(first)).toMatchObject({ forwarded: false, status: 'failed', attempts: 3, maybeDelivered: true })
    expect(u.breaker.state).toBe('open')
    expect(carrier.stats().requests).toBe(3)

    const started = performance.now()
    const during = await Promise.all(Array.from({ length: 20 }, () => u.send(mesaj())))
    expect(performance.now() - started).toBeLessThan(u.timeoutMs) // answered without waiting on the network
    for (const o of during) expect(o).toMatchObject({ forwarded: false, status: 'circuit_open', attempts: 0, maybeDelivered: false })
    expect(carrier.stats().requests).toBe(3)

    // Cool-down over, carrier still down: one probe goes out, fails, and the breaker opens again.
    await sleep(u.breaker.retryInMs() + 10)
    const probes = await Promise.all(Array.from({ length: 5 }, () => u.send(mesaj())))
    expect(carrier.stats().requests).toBe(4)
    expect(probes.filter(o => o.attempts === 1)).toHaveLength(1)
    for (const o of probes) expect(o).toMatchObject({ forwarded: false, status: 'circuit_open' })
    expect(u.breaker.state).toBe('open')

    // Carrier back: after the cool-down one probe goes through and closes the breaker; the others failed fast.
    await carrier.setMode({ down: false })
    await sleep(u.breaker.retryInMs() + 10)
    const batch = [mesaj(), mesaj(), mesaj(), mesaj(), mesaj()]
    const back = await Promise.all(batch.map(m => u.send(m)))
    expect(back.filter(o => o.forwarded)).toHaveLength(1)
    expect(back.filter(o => !o.forwarded && o.status === 'circuit_open' && o.attempts === 0)).toHaveLength(4)
    expect(carrier.stats().requests).toBe(5)
    expect(u.breaker.state).toBe('closed')
    expect(await u.send(mesaj())).toMatchObject({ forwarded: true, attempts: 1 })
    expectHonest(batch, back, carrier.stats())

    expect(changes).toEqual(['MESAJ:closed>open', 'MESAJ:open>half_open', 'MESAJ:half_open>open', 'MESAJ:open>half_open', 'MESAJ:half_open>closed'])
    const logged = lines.join('')
    expect(logged).toMatch(/carrier circuit open/)
    expect(logged).not.toContain(first.recipient)
    expect(logged).not.toContain('secret offer text')
  })

  it('does not report a message forwarded when a slow carrier misses the timeout, and a resend with the same messageId is not sent twice', async () => {
    await carrier.setMode({ latencyMs: 300 })
    const u = upstream({ timeoutMs: 60, breaker: { minCalls: 100 } })
    const m = mesaj()
    const o = await u.send(m)
    expect(o).toMatchObject({ forwarded: false, status: 'timeout', attempts: 3, maybeDelivered: true })
    // The carrier took the first attempt; the two retries carried the same key and were answered from memory.
    await sleep(300)
    expect(carrier.stats()).toMatchObject({ requests: 3, sent: 1, duplicates: 2 })

    await carrier.setMode({ latencyMs: 0 })
    const again = await u.send(m)
    const stats = carrier.stats()
    expect(again).toMatchObject({ forwarded: true, attempts: 1, carrierId: stats.accepted[0]!.carrierId })
    expect(stats).toMatchObject({ sent: 1, duplicates: 3 })
  })

  it('says a message that timed out while still queued for a connection is certainly not delivered', async () => {
    await carrier.setMode({ latencyMs: 300 })
    const pool = createCarrierPool(carrier.url, { ...SETTINGS, connections: 1 })
    upstreams.push(pool)
    const patient = upstream({ dispatcher: pool, timeoutMs: 2000 })
    const hasty = upstream({ dispatcher: pool, timeoutMs: 50, retries: 0 })
    const [slow, queued] = await Promise.all([patient.send(mesaj()), hasty.send(mesaj())])
    expect(slow).toMatchObject({ forwarded: true })
    expect(queued).toMatchObject({ forwarded: false, status: 'timeout', attempts: 1, maybeDelivered: false })
    expect(carrier.stats()).toMatchObject({ requests: 1, sent: 1 })
  })

  it('never reports a message forwarded that a flapping carrier does not have, and resending the unsure ones sends each exactly once', async () => {
    await carrier.setMode({ flap: { everyRequests: 4 }, latencyMs: 2 })
    // A breaker that tolerates the flapping, so that retries (not fail-fast) decide most outcomes.
    // (A loaded machine can make an attempt time out too: an honest outcome like the others, resent below as well.)
    const u = upstream({ timeoutMs: 2000, breaker: { minCalls: 10, failureRatio: 0.9, cooldownMs: 20 } })
    const msgs = Array.from({ length: 300 }, () => mesaj())
    const outcomes = await Promise.all(msgs.map(m => u.send(m)))
    const stats = carrier.stats()
    expectHonest(msgs, outcomes, stats)
    expect(stats.dropped).toBeGreaterThan(0)
    expect(outcomes.some(o => o.forwarded && o.attempts > 1)).toBe(true)
    for (const o of outcomes) if (!o.forwarded) expect(['failed', 'circuit_open', 'timeout']).toContain(o.status)

    // The caller's follow-up for everything not forwarded: the same messageId again, to a carrier that is up.
    // One at a time: if the breaker is open, the first resend after its cool-down is the probe that closes it.
    await carrier.setMode({ flap: null })
    await sleep(u.breaker.retryInMs() + 5)
    const retried = msgs.filter((_, i) => !outcomes[i]!.forwarded)
    const second = []
    for (const m of retried) second.push(await u.send(m))
    expect(second.every(o => o.forwarded)).toBe(true)
    const after = carrier.stats()
    expect(after.sent).toBe(msgs.length)
    expect(new Set(after.accepted.map(a => a.messageId)).size).toBe(msgs.length)
  })

  it('at a 30 % failure rate with 2 retries, the carrier has exactly the messages reported forwarded, each once', async () => {
    await carrier.setMode({ failureRate: 0.3 })
    const u = upstream({ breaker: { minCalls: 1_000_000 } })
    const msgs = Array.from({ length: 500 }, () => mesaj())
    const outcomes = await Promise.all(msgs.map(m => u.send(m)))
    const stats = carrier.stats()
    const forwarded = outcomes.filter(o => o.forwarded).length
    expect(stats.sent).toBe(forwarded)
    expect(stats.failed).toBeGreaterThan(0)
    expect(outcomes.some(o => o.attempts > 1)).toBe(true)
    expect(forwarded).toBeGreaterThan(msgs.length * 0.9) // 0.3³ ≈ 2.7 % fail all three attempts
    for (const o of outcomes) if (!o.forwarded) expect(o).toMatchObject({ status: 'failed', attempts: 3, maybeDelivered: false, httpStatus: 503 })
    expectHonest(msgs, outcomes, stats)
  })

  it('routes each channel to its own carrier, under the URL\'s path, and answers no_upstream for a channel without one', async () => {
    const second = await startFakeCarrier()
    const ups = new Upstreams({ MESAJ: carrier.url, EPOSTA: `${second.url}/api/v2`, ARAMA: null }, { ...SETTINGS, timeoutMs: 1000 })
    upstreams.push(ups, second)
    const [m, e, a] = await Promise.all([ups.send(mesaj()), ups.send(eposta()), ups.send(arama())])
    expect(m).toMatchObject({ forwarded: true })
    expect(e).toMatchObject({ forwarded: true })
    expect(a).toEqual({ forwarded: false, status: 'no_upstream', error: 'no carrier is configured for ARAMA (UPSTREAM_ARAMA_URL)', attempts: 0, maybeDelivered: false })
    expect(carrier.stats().sentByType).toEqual({ MESAJ: 1, EPOSTA: 0, ARAMA: 0 })
    expect(second.stats().sentByType).toEqual({ MESAJ: 0, EPOSTA: 1, ARAMA: 0 })
    expect(ups.states()).toEqual({ MESAJ: 'closed', EPOSTA: 'closed' })
  })

  it('refuses a messageId that cannot travel as a header, without a request', async () => {
    const u = upstream()
    expect(await u.send(mesaj({ messageId: 'has space\r\n' }))).toMatchObject({ forwarded: false, status: 'failed', attempts: 0, maybeDelivered: false })
    expect(carrier.stats().requests).toBe(0)
  })
})

describe('a carrier with its own API', () => {
  it('plugs in as one adapter object, and every attempt carries the idempotency key', async () => {
    const seen: IncomingHttpHeaders[] = []
    const server = createServer((req, res) => {
      seen.push(req.headers)
      req.resume()
      req.on('end', () => {
        if (seen.length === 1) { res.writeHead(503).end('busy'); return }
        res.writeHead(200, { 'content-type': 'text/plain' }).end('OK 12345')
      })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const textAdapter: CarrierAdapter = {
      name: 'text',
      buildRequest: (m: OutboundMessage) => ({ path: '/send', headers: { 'content-type': 'text/plain' }, body: `${m.recipient}\n${m.type === 'MESAJ' ? m.payload.text : ''}` }),
      parseResponse: (status, body) => status === 200 && body.startsWith('OK ')
        ? { kind: 'accepted', carrierId: body.slice(3) }
        : status >= 500 ? { kind: 'retry', error: body } : { kind: 'rejected', error: body }
    }
    const u = new Upstream({ ...SETTINGS, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, adapter: textAdapter, backoffMs: 1 })
    try {
      const m = mesaj()
      expect(await u.send(m)).toEqual({ forwarded: true, status: 'accepted', carrierId: '12345', attempts: 2 })
      expect(seen.map(h => h['idempotency-key'])).toEqual([m.messageId, m.messageId])
    } finally {
      await u.close()
      await new Promise(resolve => server.close(resolve))
    }
  })
})

describe('fake carrier', () => {
  it('keeps its memory bounded: the latest accepted messages in order, recent keys still de-duplicated', async () => {
    const c = await startFakeCarrier({ maxRemembered: 4 })
    const u = new Upstream({ ...SETTINGS, url: c.url })
    try {
      const msgs = Array.from({ length: 10 }, () => mesaj())
      for (const m of msgs) await u.send(m)
      const again = await u.send(msgs[9]!)
      const stats = c.stats()
      expect(stats.accepted.map(a => a.messageId)).toEqual(msgs.slice(6).map(m => m.messageId))
      expect(stats).toMatchObject({ sent: 10, duplicates: 1 })
      expect(again).toMatchObject({ forwarded: true, carrierId: stats.accepted[3]!.carrierId })
      const counts = await (await fetch(c.url + '/stats')).json()
      expect(counts).toEqual({ requests: 11, sent: 10, sentByType: { MESAJ: 10, EPOSTA: 0, ARAMA: 0 }, duplicates: 1, rejected: 0, failed: 0, dropped: 0 })
    } finally {
      await u.close()
      await c.close()
    }
  })

  it('runs from the command line: one line with its URL, and a clean exit on SIGTERM', async () => {
    const module = new URL('../dist/src/dev/fake-carrier.js', import.meta.url).href
    const child = spawn(process.execPath, ['--input-type=module', '-e',
      `import { fakeCarrierCommand } from ${JSON.stringify(module)}; process.exitCode = await fakeCarrierCommand(process.argv.slice(1))`,
      '--', '--port', '0', '--latency-ms', '1', '--failure-rate', '0'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('..', import.meta.url)) })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    const exited = once(child, 'exit')
    while (!out.includes('\n') && child.exitCode === null) await sleep(20)
    const url = /(http:\/\/\S+)/.exec(out)?.[1]
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(await (await fetch(url + '/stats')).json()).toMatchObject({ requests: 0, sent: 0 })
    child.kill('SIGTERM')
    expect((await exited)[0]).toBe(0)
  })
})
