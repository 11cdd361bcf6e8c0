// When Redis cannot answer, commercial checks that need it fail closed (STORE_UNAVAILABLE, allowed:false, HTTP 200),
// the process stays up, and it recovers by itself. A Redis that comes back empty never turns into "no record".

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli, runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { PrivateRedis, until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const CSV = `iysCode,brandCode,recipient,recipientType,type,status,source,consentDate
700001,600001,+905321110001,BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00
700001,600001,+905321110002,TACIR,MESAJ,ONAY,HS_WEB,2023-01-01 10:00:00
700001,600001,+905321110002,TACIR,MESAJ,RET,HS_WEB,2024-01-01 10:00:00
`

describe('fail closed when Redis is unavailable', () => {
  let services: TestServices
  let redis: PrivateRedis
  let gateway: RunningGateway
  let env: Record<string, string>

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-fc-' })
    const { dir } = services
    redis = await PrivateRedis.start()
    writeFileSync(join(dir, 'c.csv'), CSV)
    env = { ...services.env, REDIS_URL: redis.url, REDIS_PREFIX: 'fc:' }
    await runSteps([['migrate'], ['import', join(dir, 'c.csv')], ['load']], env)
    // A person runs `load` here (the automatic rebuild has its own test, auto-rebuild.test.ts). The Redis path: with
    // the local replica, a gateway with Postgres keeps answering from it while Redis is away (replica-ledger.test.ts).
    gateway = await startTestGateway({ ...env, REDIS_TIMEOUT_MS: '200', AUTO_REBUILD: 'false', REPLICA: 'false' })
  }, 60_000)

  afterAll(async () => {
    await gateway?.close()
    await redis?.stop()
    await services?.close()
  })

  const ask = (recipient: string, more: Record<string, unknown> = {}): Promise<any> =>
    check(gateway.url, { brandCode: 600001, type: 'MESAJ', recipient, ...more }).then(r => r[0])
  const ready = async (): Promise<number> => (await fetch(gateway.url + '/readyz')).status
  /** The one iys_ready series a scrape shows, e.g. 'redis_unreachable 0' */
  const readyGauge = async (): Promise<string> => {
    const lines = (await (await fetch(gateway.url + '/metrics')).text()).split('\n').filter(l => l.startsWith('iys_ready{'))
    expect(lines).toHaveLength(1)
    return lines[0]!.replace(/^iys_ready\{reason="(\w+)"\} /, '$1 ')
  }

  it('answers from Redis while it is up', async () => {
    expect(await ask('+905321110001')).toMatchObject({ allowed: true, reason: 'CONSENT' })
    expect(await ask('+905321110002', { recipientType: 'TACIR' })).toMatchObject({ allowed: false, reason: 'REJECTED' })
    expect(await ready()).toBe(200)
    expect(await readyGauge()).toBe('ok 1')
  })

  it('blocks commercial checks with STORE_UNAVAILABLE while Redis is down, and stays up', async () => {
    await redis.stop()
    await until(async () => (await ask('+905321110001')).reason === 'STORE_UNAVAILABLE', 10_000, 'checks to fail closed')
    expect(await ask('+905321110001')).toMatchObject({ allowed: false, reason: 'STORE_UNAVAILABLE' })
    expect(await ask('+905321110002', { recipientType: 'TACIR' })).toMatchObject({ allowed: false, reason: 'STORE_UNAVAILABLE' })
    // Informational messages need no consent, and an invalid recipient needs no store.
    expect(await ask('+905321110001', { commercial: false })).toMatchObject({ allowed: true, reason: 'INFORMATIONAL' })
    expect(await ask('123')).toMatchObject({ allowed: false, reason: 'INVALID_RECIPIENT' })
    await until(async () => (await ready()) === 503, 15_000, 'readyz to report 503')
    expect(await readyGauge()).toBe('redis_unreachable 0')
    const metrics = await (await fetch(gateway.url + '/metrics')).text()
    expect(metrics).toMatch(/iys_store_errors_total [1-9]/)
  })

  it('never answers "no record" from a Redis that came back empty', async () => {
    await redis.start()
    const readyBody = async (): Promise<any> => (await fetch(gateway.url + '/readyz')).json()
    await until(async () => (await readyBody()).redis === 'ok', 10_000, 'the gateway to reconnect to Redis')
    // Reconnected, but the version the gateway serves is gone: still closed, including the TACIR rejection that
    // an empty store would otherwise turn into TACIR_NO_RECORD (allowed).
    expect(await ask('+905321110001')).toMatchObject({ allowed: false, reason: 'STORE_UNAVAILABLE' })
    expect(await ask('+905321110002', { recipientType: 'TACIR' })).toMatchObject({ allowed: false, reason: 'STORE_UNAVAILABLE' })
    await until(async () => /gone from Redis/.test((await readyBody()).problem ?? ''), 15_000, 'readyz to report the missing version')
    expect(await ready()).toBe(503)
    // What IysGatewayNotReady alerts on: Redis was emptied under a gateway that served a version.
    expect((await readyBody()).reason).toBe('filter_version_lost')
    expect(await readyGauge()).toBe('filter_version_lost 0')
  })

  it('recovers by itself once the filter is loaded again', async () => {
    const r = await runCli(['load'], env)
    expect(r.code).toBe(0)
    await until(async () => (await ready()) === 200, 10_000, 'readyz to recover')
    expect(await readyGauge()).toBe('ok 1')
    expect(await ask('+905321110001')).toMatchObject({ allowed: true, reason: 'CONSENT' })
    expect(await ask('+905321110002', { recipientType: 'TACIR' })).toMatchObject({ allowed: false, reason: 'REJECTED' })
  })
})

describe('STORE_FAILURE_MODE=open', () => {
  it('lets commercial checks through when the store cannot answer, saying why', async () => {
    const redis = await PrivateRedis.start()
    const services = await testServices({ dirPrefix: 'iys-fo-' })
    const { dir } = services
    writeFileSync(join(dir, 'c.csv'), CSV)
    const env = { ...services.env, REDIS_URL: redis.url, REDIS_PREFIX: 'fo:' }
    try {
      await runSteps([['migrate'], ['import', join(dir, 'c.csv')], ['load']], env)
      const gw = await startTestGateway({ ...env, STORE_FAILURE_MODE: 'open', REDIS_TIMEOUT_MS: '200', REPLICA: 'false' })
      try {
        await redis.stop()
        const ask = async (): Promise<any> => (await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipient: '+905321110001' }))[0]
        await until(async () => (await ask()).reason === 'STORE_UNAVAILABLE', 10_000, 'the store to be unavailable')
        expect(await ask()).toMatchObject({ allowed: true, reason: 'STORE_UNAVAILABLE' })
      } finally { await gw.close() }
    } finally {
      await redis.stop()
      await services.close()
    }
  })
})
