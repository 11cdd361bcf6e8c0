// The send path end to end: /v1/messages against the real Postgres and Redis and the fake carrier. Blocked messages
// never reach the carrier; a carrier that is down, slow or flapping is reported honestly; retries never send twice;
// a Postgres outage and a SIGTERM lose no decision record; evidence shows the consent each message relied on.

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFakeCarrier, type FakeCarrier } from '../src/dev/fake-carrier.js'
import { formatIysDate } from '../src/domain/time.js'
import { runSteps } from './helpers/cli.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const SP = '/sps/700001/brands/600001/consents'
// İYS refuses a consent taken more than three business days ago (H467): the consent dates are the run's own.
const ago = (seconds: number): string => formatIysDate(Math.floor(Date.now() / 1000) - seconds)

describe('POST /v1/messages', () => {
  let services: TestServicesWithRedis
  let carrier: FakeCarrier
  let proxy: TcpProxy
  let gw: RunningGateway
  let pool: pg.Pool
  let env: Record<string, string>

  const consent = async (recipient: string, status: string, consentDate: string): Promise<void> => {
    const r = await postJson(gw.url + SP, { recipient, type: 'MESAJ', source: 'HS_WEB', status, consentDate })
    if (r.status !== 200) throw new Error(JSON.stringify(r.json))
  }
  const send = (messages: Record<string, unknown>[], extra: Record<string, unknown> = {}): Promise<{ status: number, json: any }> =>
    postJson(gw.url + '/v1/messages', { iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true, messages, ...extra })
  const sms = (recipient: string, messageId?: string): Record<string, unknown> => ({ recipient, sender: 'ACME', text: 'Kampanya', ...(messageId !== undefined ? { messageId } : {}) })
  const phones = (from: number, n: number): string[] => Array.from({ length: n }, (_, i) => '+9053' + String(from + i).padStart(8, '0'))

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-msg-' })
    pool = services.pool
    carrier = await startFakeCarrier({ port: 0 })
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    await runSteps([['migrate'], ['load']], services.env)
    env = { ...services.env, DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/${services.db.name}`, UPSTREAM_MESAJ_URL: carrier.url, DECISION_SPOOL_DIR: services.dir, DECISION_FLUSH_MS: '50', UPSTREAM_TIMEOUT_MS: '300', UPSTREAM_BREAKER_MIN_CALLS: '5', UPSTREAM_BREAKER_COOLDOWN_MS: '300' }
    gw = await startTestGateway(env)
    for (const r of phones(0, 50)) await consent(r, 'ONAY', ago(3600))
    const last = phones(49, 1)[0]!
    await until(async () => (await send([sms(last)])).json.results[0].reason === 'CONSENT', 15_000, 'the consents to reach the filter')
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await carrier?.close()
    await proxy?.cut()
    await services?.close()
  })

  it('forwards only the allowed messages: the carrier never sees a blocked one', async () => {
    carrier.reset()
    const allowed = phones(0, 50)
    const blocked = phones(100, 50) // no consent
    const messages = [...allowed, ...blocked, 'not-a-phone'].map((r, i) => sms(r, `block-${i}`))
    const { status, json } = await send(messages)
    expect(status).toBe(200)
    expect(json.results).toHaveLength(101)
    json.results.forEach((r: any, i: number) => {
      expect(r.messageId).toBe(`block-${i}`)
      if (i < 50) expect(r).toMatchObject({ allowed: true, reason: 'CONSENT', forwarded: true, carrier: { status: 'accepted' } })
      else expect(r).toMatchObject({ allowed: false, forwarded: false })
    })
    const stats = carrier.stats()
    expect(stats.sent).toBe(50)
    expect(new Set(stats.accepted.map(a => a.to))).toEqual(new Set(allowed))
    expect(stats.accepted.every(a => !blocked.includes(a.to))).toBe(true)
    const informational = await send([sms(phones(100, 1)[0]!, 'info-1')], { commercial: false })
    expect(informational.json.results[0]).toMatchObject({ reason: 'INFORMATIONAL', forwarded: true })
  })

  it('refuses a malformed request whole, with the field named', async () => {
    expect((await send([{ recipient: '+905300000000', sender: 'ACME' }])).json.errors[0]).toMatchObject({ code: 'INVALID_FIELD', location: ['messages.0.text'] })
    expect((await send([sms('+905300000000', 'a'), sms('+905300000001', 'a')])).json.errors[0].location).toEqual(['messages.1.messageId'])
    expect((await send([sms('+905300000000')], { commercial: undefined })).json.errors[0]).toMatchObject({ code: 'MISSING_FIELD', location: ['commercial'] })
    expect((await send(Array.from({ length: 1001 }, () => sms('+905300000000')))).json.errors[0].code).toBe('TOO_MANY_MESSAGES')
  })

  it('reports a carrier that is down quickly and honestly, then recovers', async () => {
    carrier.reset()
    carrier.setMode({ down: 'refuse' })
    const t0 = Date.now()
    const { json } = await send(phones(0, 20).map((r, i) => sms(r, `down-${i}`)))
    expect(Date.now() - t0).toBeLessThan(20_000) // fails fast: far below 20 timeouts in a row (a generous bound)
    for (const r of json.results) {
      expect(r.forwarded).toBe(false)
      expect(['failed', 'circuit_open']).toContain(r.carrier.status)
    }
    expect(json.results.some((r: any) => r.carrier.status === 'circuit_open')).toBe(true)
    expect(carrier.stats().sent).toBe(0)
    carrier.setMode({ down: false })
    await until(async () => (await send([sms(phones(0, 1)[0]!)])).json.results[0].forwarded === true, 15_000, 'the breaker to close')
  })

  it('never reports a slow carrier\'s message as forwarded, and a retry with the same messageId does not send twice', async () => {
    carrier.reset()
    carrier.setMode({ latencyMs: 600 })
    const { json } = await send([sms(phones(0, 1)[0]!, 'slow-1')])
    expect(json.results[0]).toMatchObject({ forwarded: false, carrier: { status: 'timeout', maybeDelivered: true } })
    carrier.setMode({ latencyMs: 0 })
    const again = await send([sms(phones(0, 1)[0]!, 'slow-1')])
    expect(again.json.results[0]).toMatchObject({ forwarded: true })
    await until(() => carrier.stats().accepted.filter(a => a.messageId === 'slow-1').length === 1, 15_000, 'the carrier to hold the message')
    expect(carrier.stats().accepted.filter(a => a.messageId === 'slow-1')).toHaveLength(1)
  })

  it('with a flapping carrier, what is reported forwarded is exactly what the carrier has', async () => {
    carrier.reset()
    carrier.setMode({ flap: { everyRequests: 3 } })
    const reported = new Set<string>()
    for (let round = 0; round < 5; round++) {
      const { json } = await send(phones(0, 40).map((r, i) => sms(r, `flap-${round}-${i}`)))
      for (const r of json.results) if (r.forwarded) reported.add(r.messageId)
    }
    carrier.setMode({ flap: undefined })
    const atCarrier = carrier.stats().accepted.map(a => a.messageId)
    expect(new Set(atCarrier).size).toBe(atCarrier.length) // never twice
    for (const id of reported) expect(atCarrier).toContain(id) // never a lie
  })

  it('loses no decision while Postgres is unreachable: 10,000 messages, each recorded exactly once', async () => {
    carrier.reset()
    await proxy.cut()
    const ids: string[] = []
    for (let b = 0; b < 10; b++) {
      const msgs = phones(10_000 + b * 1000, 1000).map((r, i) => { const id = `outage-${b}-${i}`; ids.push(id); return sms(r, id) })
      const { status, json } = await send(msgs)
      expect(status).toBe(200)
      expect(json.results).toHaveLength(1000)
    }
    await proxy.restore()
    const count = async (): Promise<number> => (await pool.query("SELECT count(*)::int AS n FROM decisions WHERE message_id LIKE 'outage-%'")).rows[0].n
    await until(async () => (await count()) >= 10_000, 20_000, 'the spooled decisions to be written')
    expect(await count()).toBe(10_000)
    const dup = await pool.query("SELECT message_id FROM decisions WHERE message_id LIKE 'outage-%' GROUP BY message_id HAVING count(*) > 1")
    expect(dup.rows).toEqual([])
  }, 60_000)

  it('evidence for a recipient whose consent changed between two messages shows both states', async () => {
    const r = '+905399990001'
    const onayDate = ago(7200)
    const retDate = ago(3600)
    await consent(r, 'ONAY', onayDate)
    await until(async () => (await send([sms(r, 'ev-probe')])).json.results[0].reason === 'CONSENT', 15_000, 'the ONAY to be served')
    expect((await send([sms(r, 'ev-1')])).json.results[0]).toMatchObject({ allowed: true, forwarded: true })
    await consent(r, 'RET', retDate)
    await until(async () => (await send([sms(r, `ev-wait-${Date.now()}`)])).json.results[0].reason === 'REJECTED', 15_000, 'the RET to be served')
    expect((await send([sms(r, 'ev-2')])).json.results[0]).toMatchObject({ allowed: false, reason: 'REJECTED', forwarded: false })
    const q = `brandCode=600001&type=MESAJ&recipient=${encodeURIComponent(r)}`
    let ev: any
    await until(async () => { ev = await (await fetch(`${gw.url}/v1/evidence?${q}`, { headers: gw.auth })).json(); return ev.decisions.some((d: any) => d.messageId === 'ev-2') }, 15_000, 'the decisions to be written')
    const one = ev.decisions.find((d: any) => d.messageId === 'ev-1')
    const two = ev.decisions.find((d: any) => d.messageId === 'ev-2')
    expect(one).toMatchObject({ source: 'messages', allowed: true, reason: 'CONSENT', upstreamStatus: 'accepted', consent: { status: 'ONAY', source: 'HS_WEB', consentDate: onayDate } })
    expect(two).toMatchObject({ allowed: false, reason: 'REJECTED', upstreamStatus: null, consent: { status: 'RET', consentDate: retDate } })
    expect(one.consent.transactionId).toMatch(/^[0-9a-f]{64}$/)
    expect(two.consent.seq).toBeGreaterThan(one.consent.seq)
    const html = await (await fetch(`${gw.url}/v1/evidence?${q}`, { headers: { accept: 'text/html', ...gw.auth } })).text()
    expect(html).toContain('<table>')
    expect(html).toContain('ev-1')
    expect(html).toContain(retDate)
  })

  it('SIGTERM during load loses nothing: every answered message has its decision record', async () => {
    carrier.reset()
    const answered: string[] = []
    let stop = false
    const sender = async (w: number): Promise<void> => {
      for (let b = 0; !stop; b++) {
        const msgs = phones(20_000 + w * 10_000 + b * 100, 100).map((r, i) => sms(r, `term-${w}-${b}-${i}`))
        try {
          const { status, json } = await send(msgs)
          if (status === 200) for (const r of json.results) answered.push(r.messageId)
        } catch { return } // the listener closed
      }
    }
    const senders = [sender(0), sender(1), sender(2)]
    await new Promise(resolve => setTimeout(resolve, 300))
    await gw.close() // what SIGTERM does: stop listening, finish, flush the decision log
    stop = true
    await Promise.all(senders)
    expect(answered.length).toBeGreaterThan(100)
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM decisions WHERE message_id = ANY($1)', [answered])
    expect(rows[0]!.n).toBe(answered.length)
    gw = await startTestGateway(env)
  })
})
