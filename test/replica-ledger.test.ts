// The replica while Redis is away (issue 12): two gateways with a local replica each keep answering every check
// exactly from it, and a RET written through one gateway's consent API during the outage reaches the other through
// the ledger in Postgres (each follows it by seq while the change stream is quiet). With Postgres cut too, the
// replicas go without news past REPLICA_MAX_LAG_MS and commercial checks fail closed.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatIysDate } from '../src/domain/time.js'
import { runSteps } from './helpers/cli.js'
import { check, postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { PrivateRedis, until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const ONAY = ['+905321110001', '+905321110002', '+905321110003', '+905321110004']
const RET = '+905321110009'
const SP = '/sps/700001/brands/600001'
const LAG_MS = 1500

describe('the replica while Redis is away', () => {
  let services: TestServices
  let redis: PrivateRedis
  let proxy: TcpProxy
  let a: RunningGateway
  let b: RunningGateway

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-replica-ledger-' })
    redis = await PrivateRedis.start()
    const file = join(services.dir, 'c.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      ONAY.map(p => `700001,600001,${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join('') +
      `700001,600001,${RET},BIREYSEL,MESAJ,RET,HS_WEB,2024-01-15 10:00:00\n`)
    const env = { ...services.env, REDIS_URL: redis.url, REDIS_PREFIX: 'rl:' }
    await runSteps([['migrate'], ['import', file], ['load']], env)
    // Both gateways reach Postgres through a proxy that the last test cuts; a person runs `load` (no rebuild here).
    const pgUrl = new URL(services.env.DATABASE_URL!)
    proxy = await TcpProxy.start({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) })
    pgUrl.port = String(proxy.port)
    const gwEnv = { ...env, DATABASE_URL: pgUrl.toString(), REPLICA: 'true', REPLICA_MAX_LAG_MS: String(LAG_MS), REDIS_TIMEOUT_MS: '200', AUTO_REBUILD: 'false' }
    a = await startTestGateway(gwEnv)
    b = await startTestGateway(gwEnv)
  }, 120_000)

  afterAll(async () => {
    await a?.close()
    await b?.close()
    await proxy?.cut()
    await redis?.stop()
    await services?.close()
  })

  const readyz = async (gw: RunningGateway): Promise<{ status: number, body: any }> => {
    const r = await fetch(gw.url + '/readyz')
    return { status: r.status, body: await r.json() }
  }
  const reasons = async (gw: RunningGateway, recipients: string[]): Promise<string[]> =>
    (await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients })).map(r => r.reason)
  const metric = async (gw: RunningGateway, name: string): Promise<number> => {
    const line = (await (await fetch(gw.url + '/metrics')).text()).split('\n').find(l => l.startsWith(name + ' '))
    return Number(line?.split(' ')[1])
  }

  it('serves from the replica, following the change stream, while Redis is up', async () => {
    for (const gw of [a, b]) await until(async () => (await readyz(gw)).body.replica?.serving === true, 30_000, 'the replica to serve')
    // The news comes from the change stream. On a loaded machine an applier's heartbeat can come later than the
    // stream's quiet bound, and the replica then reads the ledger for a moment (harmless, and right): so wait for the
    // stream to be the source again rather than sample one instant.
    let last: any
    await until(async () => {
      last = await readyz(b)
      return last.status === 200 && last.body.reason === 'ok' && last.body.replica?.newsFrom === 'stream' &&
        await metric(b, 'iys_replica_following_ledger') === 0
    }, 30_000, 'the replica to take its news from the change stream')
    expect(last.body).toMatchObject({ reason: 'ok', replica: { serving: true, newsFrom: 'stream' } })
    expect(await reasons(b, [...ONAY, RET])).toEqual(['CONSENT', 'CONSENT', 'CONSENT', 'CONSENT', 'REJECTED'])
  })

  it('keeps answering exactly from the replica while Redis is down, and a RET written on A reaches B through the ledger', async () => {
    const seqBefore = await metric(b, 'iys_replica_seq')
    await redis.stop()
    // Past the lag bound, the stream has long been quiet: the answers come from a replica kept current from Postgres.
    await new Promise(resolve => setTimeout(resolve, LAG_MS + 500))
    for (const gw of [a, b]) expect(await reasons(gw, [...ONAY, RET])).toEqual(['CONSENT', 'CONSENT', 'CONSENT', 'CONSENT', 'REJECTED'])
    const rb = await readyz(b)
    expect(rb.status).toBe(200)
    expect(rb.body).toMatchObject({ ready: true, reason: 'replica_without_redis', replica: { serving: true, newsFrom: 'ledger' } })
    expect(rb.body.problem).toMatch(/Redis/)
    expect(await metric(b, 'iys_replica_following_ledger')).toBe(1)
    expect((await (await fetch(b.url + '/metrics')).text())).toMatch(/^iys_ready\{reason="replica_without_redis"\} 1$/m)

    // A RET through A's consent API, committed in Postgres while Redis is away.
    const now = Math.floor(Date.now() / 1000)
    const w = await postJson(a.url + SP + '/consents', { recipient: ONAY[0], recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'RET', consentDate: formatIysDate(now - 1) })
    expect(w.status).toBe(200)
    const written = Date.now()
    await until(async () => (await reasons(b, [ONAY[0]!]))[0] === 'REJECTED', 10_000, 'the RET to reach gateway B without Redis')
    const tookMs = Date.now() - written
    await until(async () => (await reasons(a, [ONAY[0]!]))[0] === 'REJECTED', 10_000, 'the RET to reach gateway A without Redis')
    expect(await reasons(b, ONAY)).toEqual(['REJECTED', 'CONSENT', 'CONSENT', 'CONSENT'])
    expect(await metric(b, 'iys_replica_seq')).toBeGreaterThan(seqBefore)
    console.log(`RET on A → REJECTED on B during a Redis outage after ${tookMs} ms`)
  })

  it('fails closed once Postgres is cut too and the replica has gone without news past its bound', async () => {
    await proxy.cut()
    await until(async () => (await reasons(b, [ONAY[1]!]))[0] === 'STORE_UNAVAILABLE', 15_000, 'checks to fail closed')
    expect(await reasons(b, [ONAY[1]!, RET])).toEqual(['STORE_UNAVAILABLE', 'STORE_UNAVAILABLE'])
    expect((await check(b.url, { brandCode: 600001, type: 'MESAJ', recipient: ONAY[1], commercial: false }))[0]).toMatchObject({ allowed: true, reason: 'INFORMATIONAL' })
    const r = await readyz(b)
    expect(r.status).toBe(503)
    expect(r.body).toMatchObject({ ready: false, reason: 'redis_unreachable', replica: { serving: false } })
    expect(await metric(b, 'iys_replica_serving')).toBe(0)
  })
})
