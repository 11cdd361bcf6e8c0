// What an SRE's tools make of the metrics: the exported text passes the real `promtool check metrics`, the alert
// rules pass `promtool check rules` and their unit tests (`promtool test rules`), single checks and batches are timed
// apart, and a carrier breaker's gauge tells the truth when no traffic follows an outage.
//
// promtool comes with Debian's `prometheus` package; .ci/run installs it. A machine without it fails these tests
// with the command to run, never skips them.

import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Upstreams } from '../src/carriers/upstream.js'
import { loadConfig } from '../src/config.js'
import { startFakeCarrier } from '../src/dev/fake-carrier.js'
import { Metrics } from '../src/metrics.js'
import { mesaj } from './helpers/carrier.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))

function promtool (args: string[], input?: string): { status: number, output: string } {
  const r = spawnSync('promtool', args, { cwd: ROOT, input, encoding: 'utf8' })
  if (r.error !== undefined) throw new Error(`promtool is needed for this test (apt-get install prometheus): ${r.error.message}`)
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` }
}

describe('promtool', () => {
  let services: TestServicesWithRedis
  let gateway: RunningGateway

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true, dirPrefix: 'iys-prom-' })
    gateway = await startTestGateway({ ...services.env, UPSTREAM_MESAJ_URL: 'http://127.0.0.1:9/' })
  })
  afterAll(async () => {
    await gateway?.close()
    await services?.close()
  })

  it('passes `promtool check metrics` on what a gateway with Postgres, Redis and traffic exports', async () => {
    await postJson(gateway.url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: '+905321110001' })
    await postJson(gateway.url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipients: ['+905321110001', 'x'] })
    await fetch(gateway.url + '/nowhere')
    const text = await (await fetch(gateway.url + '/metrics')).text()
    expect(text).toContain('iys_ready{reason=')
    expect(text).toContain('iys_upstream_breaker_open{upstream="MESAJ"} 0')
    const r = promtool(['check', 'metrics'], text)
    expect(r.output).toBe('')
    expect(r.status).toBe(0)
  })

  it('passes `promtool check rules` on the alert rules', () => {
    const r = promtool(['check', 'rules', 'prometheus/alerts.yml'])
    expect(r.output).toMatch(/SUCCESS/)
    expect(r.status).toBe(0)
  })

  it('passes the alert rules\' unit tests (`promtool test rules`)', () => {
    const r = promtool(['test', 'rules', 'prometheus/alerts.test.yml'])
    expect(r.output).toMatch(/SUCCESS/)
    expect(r.status).toBe(0)
  })

  it('times single checks and batches apart: route="check" and route="check_batch"', async () => {
    const count = async (route: string): Promise<number> => {
      const text = await (await fetch(gateway.url + '/metrics')).text()
      const line = text.split('\n').find(l => l.startsWith(`iys_http_request_duration_seconds_count{route="${route}"}`))
      return line === undefined ? 0 : Number(line.split(' ')[1])
    }
    const [single, batch] = [await count('check'), await count('check_batch')]
    await postJson(gateway.url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: '+905321110001' })
    for (let i = 0; i < 2; i++) await postJson(gateway.url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipients: ['+905321110001', '+905321110002'] })
    expect(await count('check')).toBe(single + 1)
    expect(await count('check_batch')).toBe(batch + 2)
  })
})

describe('the carrier breaker gauge', () => {
  it('is 1 while the breaker refuses messages and 0 once its cool-down is over, with no traffic in between', async () => {
    const carrier = await startFakeCarrier()
    const settings = loadConfig({}).upstream
    const ups = new Upstreams({ MESAJ: carrier.url, EPOSTA: null, ARAMA: null }, {
      ...settings,
      timeoutMs: 1000,
      retries: 0,
      breaker: { ...settings.breaker, minCalls: 3, failureRatio: 0.5, cooldownMs: 400 }
    })
    const metrics = new Metrics()
    metrics.watch({ readiness: () => ({ ready: true, reason: 'ok' }), breakers: () => ups.refusing() })
    const gauge = async (): Promise<string | undefined> => (await metrics.registry.metrics()).split('\n').find(l => l.startsWith('iys_upstream_breaker_open{'))
    try {
      expect(await gauge()).toBe('iys_upstream_breaker_open{upstream="MESAJ"} 0')
      await carrier.setMode({ down: 'refuse' })
      for (let i = 0; i < 5; i++) await ups.send(mesaj())
      expect(ups.get('MESAJ')!.breaker.state).toBe('open')
      expect(await gauge()).toBe('iys_upstream_breaker_open{upstream="MESAJ"} 1')
      await carrier.setMode({ down: false })
      await new Promise(resolve => setTimeout(resolve, 500))
      // No message since: the breaker is still formally open, but the next message would go through as its probe.
      expect(ups.get('MESAJ')!.breaker.state).toBe('open')
      expect(await gauge()).toBe('iys_upstream_breaker_open{upstream="MESAJ"} 0')
      expect(await ups.send(mesaj())).toMatchObject({ forwarded: true })
      expect(ups.get('MESAJ')!.breaker.state).toBe('closed')
    } finally {
      await ups.close()
      await carrier.close()
    }
  })
})
