// The post-decision hook that /v1/check and /v1/messages share (src/audit/decisions-hook.ts): both front ends count
// their decisions, stamp the clock running scrubs yield to, and journal before anything leaves. Runs the HTTP app in
// this process over a fake carrier, with a fake clock and a recording journal (no Redis, no Postgres).

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { DecisionLog, MessageTicket } from '../src/audit/decision-log.js'
import { DecisionsHook } from '../src/audit/decisions-hook.js'
import { KeyStore } from '../src/auth/key-store.js'
import { Upstreams } from '../src/carriers/upstream.js'
import { Checker } from '../src/check/checker.js'
import { loadConfig } from '../src/config.js'
import { startFakeCarrier, type FakeCarrier } from '../src/dev/fake-carrier.js'
import { GatewayError } from '../src/domain/errors.js'
import { createApp } from '../src/http/app.js'
import { messagesRoute } from '../src/http/messages-route.js'
import type { Router } from '../src/http/router.js'
import { uWS } from '../src/http/uws.js'
import { createLogger } from '../src/log.js'
import { Metrics } from '../src/metrics.js'
import { postJson } from './helpers/gateway.js'

type Journal = Pick<DecisionLog, 'recordChecks' | 'recordMessages' | 'recordOutcomes'>

describe('the post-decision hook of /v1/check and /v1/messages', () => {
  let carrier: FakeCarrier
  let upstreams: Upstreams
  let listen: uWS.us_listen_socket
  let router: Router
  let url: string
  let metrics: Metrics
  let hook: DecisionsHook
  let clock = 0
  /** what the journal was asked, with how many messages the carrier had at that moment */
  let events: { call: string, carrierSent: number }[] = []
  let journalDown = false

  const journal: Journal = {
    recordChecks: () => { if (journalDown) throw new GatewayError('SERVICE_UNAVAILABLE'); events.push({ call: 'checks', carrierSent: carrier.stats().sent }) },
    recordMessages: () => {
      if (journalDown) throw new GatewayError('SERVICE_UNAVAILABLE')
      events.push({ call: 'messages', carrierSent: carrier.stats().sent })
      return { segment: null, key: '1' } satisfies MessageTicket
    },
    recordOutcomes: () => { events.push({ call: 'outcomes', carrierSent: carrier.stats().sent }) }
  }

  const send = (): Promise<{ status: number, json: any }> => postJson(url + '/v1/messages', {
    iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: false, messages: [{ recipient: '+905321112233', sender: 'ACME', text: 'Siparişiniz yolda' }]
  })
  const check = (): Promise<{ status: number, json: any }> => postJson(url + '/v1/check', { brandCode: 600001, type: 'MESAJ', commercial: false, recipient: '+905321112233' })
  const counted = async (): Promise<number> => {
    const m = (await metrics.registry.getSingleMetric('iys_decisions_total')!.get()).values
    return m.filter(v => v.labels.reason === 'INFORMATIONAL' && v.labels.type === 'MESAJ').reduce((a, v) => a + v.value, 0)
  }

  beforeAll(async () => {
    carrier = await startFakeCarrier({ port: 0 })
    const config = loadConfig({ LOG_LEVEL: 'silent', UPSTREAM_MESAJ_URL: carrier.url })
    const log = createLogger('silent')
    metrics = new Metrics()
    hook = new DecisionsHook({ metrics, decisionLog: journal, now: () => clock })
    upstreams = new Upstreams(config.upstreams, { ...config.upstream, log })
    // Informational traffic only: it needs no filter, so the checker has none.
    const checker = new Checker(() => null, { tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' })
    const built = createApp({
      checker,
      metrics,
      log,
      maxBodyBytes: 1 << 20,
      auth: KeyStore.demo(), // postJson sends the demo key to a gateway it did not start
      rateLimit: { take: () => 0 },
      readiness: () => ({ ready: true, reason: 'ok' }),
      decisions: hook,
      routes: r => { messagesRoute(r, { checker, upstreams, metrics, decisions: hook }) }
    })
    router = built.router
    listen = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
      built.app.listen('127.0.0.1', 0, t => { if (t === false) reject(new Error('cannot listen')); else resolve(t) })
    })
    url = `http://127.0.0.1:${uWS.us_socket_local_port(listen)}`
  })

  afterAll(async () => {
    if (listen !== undefined) uWS.us_listen_socket_close(listen)
    await router?.drain(2000)
    await upstreams?.close()
    await carrier?.close()
  })

  beforeEach(() => {
    events = []
    journalDown = false
    carrier.reset()
  })

  it('makes a running scrub yield to send traffic on /v1/messages, as it does to checks', async () => {
    // Fresh hook state: a stamp far in the past, so the scrub runs at full speed.
    clock = 1_000_000
    hook.lastDecisionAt = 1
    expect(hook.scrubPauseMs()).toBe(0)

    clock = 2_000_000
    const sent = await send()
    expect(sent.status).toBe(200)
    expect(sent.json.results[0]).toMatchObject({ allowed: true, reason: 'INFORMATIONAL', forwarded: true })
    // The stamp is the moment of the send's decisions, and the pause the engine asks for is not zero.
    expect(hook.lastDecisionAt).toBe(2_000_000)
    expect(hook.scrubPauseMs()).toBeGreaterThan(0)
    // Once the traffic has stopped for a while, the scrub runs at full speed again.
    clock = 3_000_000
    expect(hook.scrubPauseMs()).toBe(0)

    // A check stamps the same clock.
    clock = 4_000_000
    expect((await check()).status).toBe(200)
    expect(hook.lastDecisionAt).toBe(4_000_000)
    expect(hook.scrubPauseMs()).toBeGreaterThan(0)
  })

  it('counts the decisions of both front ends in the same metric, once each', async () => {
    const before = await counted()
    await send()
    await check()
    expect(await counted()).toBe(before + 2)
  })

  it('journals a send before the carrier gets the message and its outcome after, and a check once', async () => {
    expect((await send()).status).toBe(200)
    expect(events).toEqual([{ call: 'messages', carrierSent: 0 }, { call: 'outcomes', carrierSent: 1 }])
    events = []
    expect((await check()).status).toBe(200)
    expect(events.map(e => e.call)).toEqual(['checks'])
  })

  it('forwards nothing and answers 503 on both routes when the journal cannot be written', async () => {
    journalDown = true
    const sent = await send()
    expect(sent.status).toBe(503)
    expect(sent.json.errors[0].code).toBe('SERVICE_UNAVAILABLE')
    expect(carrier.stats().requests).toBe(0)
    expect((await check()).status).toBe(503)
  })
})
