// Faults of the Redis-derived filter index: a Redis that restarts empty and is loaded again (the version number
// repeats, the layout changes), a Redis that hangs (SIGSTOP) with REDIS_TIMEOUT_MS as the bound of a check's wait,
// and a Postgres link cut under the change applier (LISTEN must come back; shutdown must not wait on a dead client).

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { REBUILD_LOCK_KEY } from '../src/filter/build.js'
import { ChangeApplier } from '../src/filter/changes.js'
import { BloomFilter } from '../src/filter/bloom.js'
import { layout } from '../src/filter/layout.js'
import { RedisView } from '../src/filter/view.js'
import { createLogger } from '../src/log.js'
import { createRedis, waitReady } from '../src/store/redis.js'
import { runCli, runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { PrivateRedis, until } from './helpers/redis-server.js'
import { testServices, type TestServices, type TestServicesWithRedis } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'
import { commitRet } from './helpers/ledger.js'

const HEADER = 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n'
const phone = (i: number): string => '+90532' + String(1_000_000 + i).slice(-7)

/** n BIREYSEL ONAY and n TACIR RET (each RET after an earlier ONAY, as İYS requires), recipients from `from`. */
function consents (from: number, n: number): string {
  let s = ''
  for (let i = from; i < from + n; i++) {
    s += `700001,600001,${phone(i)},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00\n`
    s += `700001,600001,${phone(i)},TACIR,MESAJ,ONAY,HS_WEB,2023-01-01 10:00:00\n`
    s += `700001,600001,${phone(i)},TACIR,MESAJ,RET,HS_WEB,2024-01-01 10:00:00\n`
  }
  return s
}

describe('a Redis that restarts empty and is loaded again', () => {
  let services: TestServices
  let redis: PrivateRedis
  let gateway: RunningGateway
  let env: Record<string, string>
  let dir: string

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-ff-' })
    dir = services.dir
    redis = await PrivateRedis.start()
    writeFileSync(join(dir, 'a.csv'), HEADER + consents(0, 50))
    writeFileSync(join(dir, 'b.csv'), HEADER + consents(50, 400))
    env = { ...services.env, REDIS_URL: redis.url, REDIS_PREFIX: 'ff:' }
    await runSteps([['migrate'], ['import', join(dir, 'a.csv')], ['load']], env)
    // No automatic rebuild here: this is the case of a person running `load` by hand.
    gateway = await startTestGateway({ ...env, AUTO_REBUILD: 'false' })
  }, 60_000)

  afterAll(async () => {
    await gateway?.close()
    await redis?.stop()
    await services?.close()
  })

  const readyz = async (): Promise<{ status: number, body: any }> => {
    const res = await fetch(gateway.url + '/readyz')
    return { status: res.status, body: await res.json() }
  }

  it('serves the new version, not the stale one, once the first load after an empty restart (again "version 1") has run', async () => {
    expect(gateway.gw.version()).toBe(1)
    await redis.stop()
    await redis.start() // empty
    await until(async () => (await readyz()).status === 503, 15_000, 'readyz to report the lost version')
    // New rows change the bucket count of the next version; its number is 1 again (the counter was lost too).
    await runSteps([['import', join(dir, 'b.csv')], ['load']], env)
    await until(async () => (await readyz()).status === 200, 15_000, 'readyz to report ready on the new version')
    const recipients = Array.from({ length: 450 }, (_, i) => phone(i))
    const tacir = await check(gateway.url, { brandCode: 600001, type: 'MESAJ', recipientType: 'TACIR', recipients })
    const bireysel = await check(gateway.url, { brandCode: 600001, type: 'MESAJ', recipients })
    expect(tacir.filter(r => r.reason !== 'REJECTED').length).toBe(0)
    expect(bireysel.filter(r => r.reason !== 'CONSENT').length).toBe(0)
  }, 60_000)
})

describe('automatic rebuild after Redis restarts empty', () => {
  let services: TestServices
  let redis: PrivateRedis
  let gateways: RunningGateway[] = []
  let pool: pg.Pool
  let dir: string

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-ffr-' })
    dir = services.dir
    pool = services.pool
    redis = await PrivateRedis.start()
    writeFileSync(join(dir, 'a.csv'), HEADER + consents(0, 300))
    const env = { ...services.env, REDIS_URL: redis.url, REDIS_PREFIX: 'ffr:' }
    await runSteps([['migrate'], ['import', join(dir, 'a.csv')], ['load']], env)
    // Two gateways with Redis and Postgres: AUTO_REBUILD is on by default.
    gateways = [await startTestGateway(env), await startTestGateway(env)]
  }, 60_000)

  afterAll(async () => {
    for (const g of gateways) await g.close()
    await redis?.stop()
    await services?.close()
  })

  const readyz = async (g: RunningGateway): Promise<{ status: number, body: any }> => {
    const res = await fetch(g.url + '/readyz')
    return { status: res.status, body: await res.json() }
  }
  const rebuilds = async (g: RunningGateway): Promise<number> =>
    Number(/iys_filter_rebuilds_total\{result="ok"\} (\d+)/.exec(await (await fetch(g.url + '/metrics')).text())?.[1] ?? 0)

  it('both gateways become ready again by themselves, exactly one of them rebuilt, and they answer as Postgres says', async () => {
    for (const g of gateways) expect((await readyz(g)).status).toBe(200)
    // Hold the build lock, as a gateway in the middle of its rebuild would, to see what the others say meanwhile.
    const holder = await pool.connect()
    await holder.query('SELECT pg_advisory_lock($1)', [REBUILD_LOCK_KEY])
    try {
      await redis.stop()
      await redis.start() // empty
      for (const g of gateways) {
        await until(async () => /another gateway is rebuilding the filter from Postgres/.test((await readyz(g)).body.problem ?? ''), 20_000, 'readyz to say a rebuild is awaited')
        expect((await readyz(g)).status).toBe(503)
        expect((await check(g.url, { brandCode: 600001, type: 'MESAJ', recipientType: 'TACIR', recipient: phone(1) }))[0]).toMatchObject({ allowed: false, reason: 'STORE_UNAVAILABLE' })
      }
    } finally {
      await holder.query('SELECT pg_advisory_unlock($1)', [REBUILD_LOCK_KEY])
      holder.release()
    }
    for (const g of gateways) await until(async () => (await readyz(g)).status === 200, 30_000, 'the gateway to be ready again by itself')

    const truth = await pool.query<{ recipient: string, recipient_type: string, status: string }>(
      "SELECT recipient, recipient_type, status FROM consents WHERE brand_code = 600001 AND type = 'MESAJ'")
    const ret = truth.rows.filter(r => r.status === 'RET')
    const onay = truth.rows.filter(r => r.status === 'ONAY')
    expect(ret.length).toBe(300)
    expect(onay.length).toBe(300)
    for (const g of gateways) {
      const tacir = await check(g.url, { brandCode: 600001, type: 'MESAJ', recipientType: 'TACIR', recipients: ret.filter(r => r.recipient_type === 'TACIR').map(r => r.recipient) })
      const bireysel = await check(g.url, { brandCode: 600001, type: 'MESAJ', recipients: onay.filter(r => r.recipient_type === 'BIREYSEL').map(r => r.recipient) })
      expect(tacir.filter(r => r.allowed || r.reason !== 'REJECTED')).toEqual([])
      expect(bireysel.filter(r => !r.allowed || r.reason !== 'CONSENT')).toEqual([])
    }
    // Exactly one load ran: one rebuild counted over both gateways, and one version made since Redis came back.
    expect((await rebuilds(gateways[0]!)) + (await rebuilds(gateways[1]!))).toBe(1)
    const probe = createRedis(redis.url, { timeoutMs: 2000, name: 'test', failFast: false })
    try { expect(await probe.get(layout('ffr:').next)).toBe('1') } finally { probe.disconnect() }
  }, 90_000)
})

describe('a Redis that hangs (SIGSTOP)', () => {
  let redis: PrivateRedis

  beforeAll(async () => { redis = await PrivateRedis.start() })
  afterAll(async () => { await redis?.stop() })

  it('bounds the wait of a lookup by one REDIS_TIMEOUT_MS even behind another command on the same connection', async () => {
    const client = createRedis(redis.url, { timeoutMs: 1000, name: 'test' })
    client.on('error', () => {})
    try {
      await waitReady(client, 5000)
      const keys = layout('hang:')
      await client.hset(keys.bucket(1, 0), '~', 'g', 'k', 'v')
      const view = new RedisView(client, 1, BloomFilter.forCapacity(1000, 0.01), 1, keys, { generation: 'g', timeoutMs: 1000 })
      redis.pause()
      // A command already on its way (as the mirror's poll is), then the lookup, then a probe sent with the lookup.
      const ahead = client.get('hang:x').catch(() => null)
      await new Promise(resolve => setImmediate(resolve))
      const lookup = view.lookup(['k'], [0])
      let probeDone = false
      const probe = client.get('hang:y').catch(() => null).finally(() => { probeDone = true })
      await expect(lookup).rejects.toThrow()
      // The lookup gave up after its own timeout: the command sent with it, which waits for the one ahead to time out
      // first, still waits. (Whether the one ahead has settled by then is a race of two equal timers: not asserted.)
      expect(probeDone).toBe(false)
      await Promise.all([ahead, probe])
    } finally {
      redis.resume()
      client.disconnect()
    }
  })

  it('answers a check STORE_UNAVAILABLE while Redis hangs', async () => {
    const services = await testServices({ dirPrefix: 'iys-ffh-' })
    const dir = services.dir
    writeFileSync(join(dir, 'a.csv'), HEADER + consents(0, 5))
    const env = { ...services.env, REDIS_URL: redis.url, REDIS_PREFIX: 'ffh:' }
    try {
      await runSteps([['migrate'], ['import', join(dir, 'a.csv')], ['load']], env)
      const gw = await startTestGateway({ REDIS_URL: redis.url, REDIS_PREFIX: 'ffh:', REDIS_TIMEOUT_MS: '300' })
      try {
        expect((await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipient: phone(1) }))[0]).toMatchObject({ reason: 'CONSENT' })
        redis.pause()
        const [r] = await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipient: phone(1) })
        expect(r).toMatchObject({ allowed: false, reason: 'STORE_UNAVAILABLE' })
        redis.resume()
      } finally { redis.resume(); await gw.close() }
    } finally {
      await services.close()
    }
  })
})

describe('the change applier across a Postgres link cut', () => {
  let services: TestServicesWithRedis
  let proxy: TcpProxy

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-ffp-' })
    const m = await runCli(['migrate'], { DATABASE_URL: services.db.url })
    expect(m.code).toBe(0)
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
  }, 60_000)

  afterAll(async () => {
    await proxy?.cut()
    await services?.close()
  })

  it('re-establishes LISTEN after the link comes back, so a change reaches Redis by NOTIFY, and releases its clients on stop', async () => {
    const { redis, env, dir, pool: direct } = services
    writeFileSync(join(dir, 'a.csv'), HEADER + consents(0, 5))
    await runSteps([['import', join(dir, 'a.csv')], ['load']], env)
    const viaProxy = services.db.url.replace('127.0.0.1:5432', `127.0.0.1:${proxy.port}`)
    const pool = new pg.Pool({ connectionString: viaProxy, max: 4 })
    pool.on('error', () => {})
    const appRedis = createRedis(redis.url, { timeoutMs: 2000, name: 'test-applier', failFast: false })
    // A poll interval far beyond the test: only a NOTIFY can make the applier run.
    const applier = new ChangeApplier({ pool, redis: appRedis, layout: layout(redis.prefix), log: createLogger('silent'), pollMs: 3_600_000 })
    const applied = async (): Promise<number> => Number(await redis.client.get(layout(redis.prefix).applied))
    try {
      await applier.start()
      await until(() => applier.listening, 10_000, 'the applier to LISTEN')
      await proxy.cut()
      await new Promise(resolve => setTimeout(resolve, 300))
      await proxy.restore()
      await until(() => applier.listening, 20_000, 'the applier to LISTEN again after the link came back')
      await new Promise(resolve => setTimeout(resolve, 200)) // let the catch-up pass after the reconnect finish
      const seq = await commitRet(direct, phone(1), { notify: true })
      await until(async () => (await applied()) >= seq, 10_000, 'the change to reach Redis by NOTIFY')
    } finally {
      await applier.stop()
      // Nothing is left checked out of the pool: the listener (dead or alive) was released.
      expect(pool.totalCount - pool.idleCount).toBe(0)
      await pool.end()
      appRedis.disconnect()
    }
  }, 60_000)
})

