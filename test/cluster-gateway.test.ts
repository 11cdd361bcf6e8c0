// The gateway on a real Redis Cluster (3 masters with one replica each, src/dev/redis-cluster.ts), three gateways
// against it and one Postgres (two with Postgres, so two change appliers run at once): `load` spreads a version's
// buckets over the shards, checks agree with SQL from the local replica and from Redis, a RET written on one gateway
// reaches the other processes, a second `load` flips under traffic, and a master killed during traffic is replaced by
// its replica with zero wrong answers: while the shard is away a check either answers from the replica or fails
// closed (STORE_UNAVAILABLE), never with another answer than Postgres's.

import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pino from 'pino'
import { RateLimiter } from '../src/auth/rate-limit.js'
import { formatIysDate } from '../src/domain/time.js'
import { layout } from '../src/filter/layout.js'
import { segmentOf } from '../src/filter/bloom.js'
import { hashText, keyCode, keyHash, keyText } from '../src/filter/key.js'
import { CLUSTER_SCHEME, createRedis, waitReady } from '../src/store/redis.js'
import { runCli, seedGenerated, startServeProcess, type ServeProcess } from './helpers/cli.js'
import { differences, gatewayAnswers, randomItems, sqlAnswers, type Answer, type Item } from './helpers/differential.js'
import { authFor, check, postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { startRedisCluster, type RedisCluster } from '../src/dev/redis-cluster.js'
import { hammer } from './helpers/rate.js'
import { freePort, until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const BRAND = 600001
const IYS = 700001

describe('on a Redis Cluster of three masters with a replica each', () => {
  let cluster: RedisCluster
  let services: TestServices
  let env: Record<string, string>
  let pool: pg.Pool
  let prefix: string
  let writer: RunningGateway // Postgres and the cluster: consent API, change applier, replica
  let reader: ServeProcess // another process, the cluster only, the Redis way (REPLICA=false)
  let second: ServeProcess // a third process with Postgres too: a second change applier

  beforeAll(async () => {
    cluster = await startRedisCluster()
    services = await testServices({ dirPrefix: 'iys-cluster-' })
    prefix = `tc${randomBytes(4).toString('hex')}:`
    // A lookup's bound is long here: six Redis servers, three gateways, a `load` and the traffic share two cores, and
    // a lookup timed out is a fail-closed answer the flip test would count; the failover test bounds nothing by it.
    env = { ...services.env, ...cluster.env, REDIS_PREFIX: prefix, REDIS_TIMEOUT_MS: '5000' }
    pool = services.pool
    await seedGenerated(env, join(services.dir, 'c.csv'), { rows: 30_000, brands: 3, retShare: 0.3, seed: 14 })
    writer = await startTestGateway(env)
    reader = await startServeProcess({ ...cluster.env, REDIS_PREFIX: prefix, REDIS_TIMEOUT_MS: '5000', REPLICA: 'false' }, await freePort())
    second = await startServeProcess(env, await freePort())
    await until(async () => /^iys_replica_serving 1$/m.test(await (await fetch(writer.url + '/metrics')).text()), 30_000, 'the replica to serve')
  }, 180_000)

  afterAll(async () => {
    await reader?.stop()
    await second?.stop()
    await writer?.close()
    await services?.close()
    await cluster?.stop()
  })

  /** Keys of this test's prefix on each master (SCAN there), by port. */
  async function keysByMaster (pattern: string): Promise<Map<number, number>> {
    const out = new Map<number, number>()
    for (const m of await cluster.masters()) {
      let cursor = '0'
      let n = 0
      do {
        const [next, keys] = await cluster.call(m.port, 'SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000) as [string, string[]]
        cursor = next
        n += keys.length
      } while (cursor !== '0')
      out.set(m.port, n)
    }
    return out
  }

  it('load spreads a version\'s buckets and bloom bits over every master and keeps the control keys together in one slot', async () => {
    const { filterVersion: version } = await (await fetch(writer.url + '/readyz')).json() as { filterVersion: number }
    const buckets = await keysByMaster(`${prefix}v${version}:b:*`)
    expect([...buckets.values()].every(n => n > 0)).toBe(true)
    const total = [...buckets.values()].reduce((a, b) => a + b, 0)
    // 128 groups over three masters: none holds more than about half of the buckets.
    for (const n of buckets.values()) expect(n / total).toBeLessThan(0.6)
    const keys = layout(prefix)
    const control = await cluster.masterOf(keys.current)
    for (const k of [keys.generation, keys.applied, keys.changes, keys.meta(version)]) expect(await cluster.masterOf(k)).toBe(control)
    // Bloom segment g lives with bucket group g (a key's state and bits are one slot), so the bits spread too.
    const segments = await keysByMaster(`${prefix}v${version}:bloom*`)
    expect([...segments.values()].every(n => n > 0)).toBe(true)
    for (const g of [0, 5, 127]) expect(await cluster.masterOf(keys.bloomSegment(version, g))).toBe(await cluster.masterOf(keys.bucket(version, g + 128)))
  })

  it('agrees with SQL on 30,000 random checks, from the local replica and from Redis', async () => {
    const items = await randomItems(pool, 30_000, 20261207)
    const expected = await sqlAnswers(pool, items)
    expect(differences(items, await gatewayAnswers(writer.url, items), expected).slice(0, 20)).toEqual([])
    expect(differences(items, await gatewayAnswers(reader.url, items), expected).slice(0, 20)).toEqual([])
    const seen = new Set(expected.map(e => e.reason))
    for (const r of ['CONSENT', 'REJECTED', 'TACIR_NO_RECORD', 'NO_CONSENT']) expect(seen).toContain(r)
  }, 120_000)

  /** A scrub list's items: one query's (BRAND, MESAJ, BIREYSEL, commercial), each recipient once (a repeat is a DUPLICATE line). */
  async function listItems (n: number, seed: number): Promise<Item[]> {
    const byRecipient = new Map<string, Item>()
    for (const it of await randomItems(pool, n, seed)) {
      if (it.type === 'MESAJ' && it.rt === 'BIREYSEL' && it.commercial && it.brand === String(BRAND) && it.canonical !== null) byRecipient.set(it.canonical, it)
    }
    return [...byRecipient.values()]
  }

  it('scrubs a list through the cluster, from the replica and the Redis way, as SQL decides', async () => {
    const items = await listItems(20_000, 11)
    expect(items.length).toBeGreaterThan(1000)
    const expected = await sqlAnswers(pool, items)
    for (const url of [writer.url, reader.url]) {
      const auth = authFor(url)
      const up = await fetch(`${url}/v1/scrub?brandCode=${BRAND}&type=MESAJ`, { method: 'POST', headers: { 'content-type': 'text/csv', ...auth }, body: items.map(it => it.input).join('\n') + '\n' })
      expect(up.status).toBe(202)
      const { jobId } = await up.json() as { jobId: string }
      await until(async () => ['done', 'failed'].includes((await (await fetch(`${url}/v1/scrub/${jobId}`, { headers: auth })).json() as { state: string }).state), 60_000, 'the scrub job')
      const rows = (await (await fetch(`${url}/v1/scrub/${jobId}/result`, { headers: auth })).text()).trim().split('\n').slice(1)
      expect(rows.map(r => r.split(',')[3])).toEqual(expected.map(e => e.reason))
    }
  }, 120_000)

  it('scrubs a file from the command line against the cluster (`scrub FILE`), as SQL decides', async () => {
    const items = await listItems(5_000, 13)
    const expected = await sqlAnswers(pool, items)
    const file = join(services.dir, 'list.csv')
    writeFileSync(file, items.map(it => it.input).join('\n') + '\n')
    const r = await runCli(['scrub', file, '--brand-code', String(BRAND), '--type', 'MESAJ', '--out', file + '.out'], { ...cluster.env, REDIS_PREFIX: prefix }, 60_000)
    expect(r.code, r.stderr).toBe(0)
    const rows = readFileSync(file + '.out', 'utf8').trim().split('\n').slice(1)
    expect(rows.map(row => row.split(',')[3])).toEqual(expected.map(e => e.reason))
  }, 90_000)

  it('keeps two processes\' rate limits on one key together through the cluster', async () => {
    const log = pino({ level: 'silent' })
    const clients = [0, 1].map(() => createRedis(CLUSTER_SCHEME + cluster.env.REDIS_CLUSTER_NODES, { timeoutMs: 2000, name: 'rate-test' }))
    try {
      for (const c of clients) await waitReady(c, 10_000)
      const limiters = clients.map(redis => new RateLimiter({ redis, prefix: prefix + 'rate:', log }))
      const started = Date.now()
      const counts = await hammer(limiters, 'shared', 100, 2000)
      const allowance = 100 + 100 * (Date.now() - started) / 1000 // as test/rate-limit.test.ts: one bucket, not two
      expect(counts[0]! + counts[1]!).toBeLessThanOrEqual(Math.ceil(1.3 * allowance))
      expect(Math.min(...counts)).toBeGreaterThan(0)
      expect(await clients[0]!.pttl(prefix + 'rate:shared')).toBeGreaterThan(0)
    } finally {
      for (const c of clients) c.disconnect()
    }
  }, 60_000)

  const consentsUrl = (): string => `${writer.url}/sps/${IYS}/brands/${BRAND}/consents`
  const reason = async (url: string, recipient: string): Promise<string> =>
    (await check(url, { brandCode: BRAND, type: 'MESAJ', recipient }))[0]!.reason

  /** Writes ONAY then RET for `recipient` on the writer and waits for each on the reader. */
  async function consentThenRet (recipient: string): Promise<void> {
    const now = Math.floor(Date.now() / 1000)
    const onay = await postJson(consentsUrl(), { recipient, type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: formatIysDate(now - 7200), recipientType: 'BIREYSEL' })
    expect(onay.status).toBe(200)
    await until(async () => (await reason(reader.url, recipient)) === 'CONSENT', 15_000, 'the ONAY to reach the other gateway')
    const ret = await postJson(consentsUrl(), { recipient, type: 'MESAJ', source: 'HS_WEB', status: 'RET', consentDate: formatIysDate(now - 3600) })
    expect(ret.status).toBe(200)
    await until(async () => (await reason(reader.url, recipient)) === 'REJECTED', 15_000, 'the RET to reach the other gateway')
    for (const url of [writer.url, second.url]) await until(async () => (await reason(url, recipient)) === 'REJECTED', 15_000, 'the RET to reach the replicas')
  }

  it('a RET written on one gateway blocks the checks on another gateway process', async () => {
    await consentThenRet('+905301234600')
  }, 60_000)

  it('answers an asynchronous consent request on another gateway than the one that took it', async () => {
    const now = Math.floor(Date.now() / 1000)
    const items = [{ recipient: '+905301234602', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: formatIysDate(now - 600), recipientType: 'BIREYSEL' }]
    const r = await postJson(`${writer.url}/sps/${IYS}/brands/${BRAND}/consents/request`, items)
    expect(r.status).toBe(202)
    let results: Array<{ status: string }> = []
    await until(async () => {
      const res = await fetch(`${second.url}/sps/${IYS}/brands/${BRAND}/consents/request/${r.json.requestId as string}`, { headers: authFor(second.url) })
      results = await res.json() as Array<{ status: string }>
      return res.status === 200 && results.every(x => x.status !== 'enqueue')
    }, 15_000, 'the request to be processed and read on the other gateway')
    expect(results.map(x => x.status)).toEqual(['success'])
    await until(async () => (await reason(reader.url, '+905301234602')) === 'CONSENT', 15_000, 'the consent to reach the third gateway')
  }, 60_000)

  it('rebuilds the filter once when the whole cluster lost its data, and every gateway answers from it again', async () => {
    const keys = layout(prefix)
    const generation = async (url: string): Promise<string | null> => ((await (await fetch(url + '/readyz')).json()) as { generation?: string | null }).generation ?? null
    const before = await generation(writer.url)
    for (const m of await cluster.masters()) await cluster.call(m.port, 'FLUSHALL')
    // The two gateways with Postgres race for the rebuild (AUTO_REBUILD); one builds, the other follows its flip.
    await until(async () => {
      for (const url of [writer.url, second.url, reader.url]) {
        const g = await generation(url)
        if (g === null || g === before) return false
      }
      return true
    }, 60_000, 'every gateway to serve the rebuilt filter')
    const probe = createRedis(CLUSTER_SCHEME + cluster.env.REDIS_CLUSTER_NODES, { timeoutMs: 2000, name: 'probe' })
    try {
      await waitReady(probe, 10_000)
      expect(await probe.get(keys.next)).toBe('1') // the version counter was lost with the data: exactly one build
    } finally { probe.disconnect() }
    const items = await randomItems(pool, 3_000, 12)
    const expected = await sqlAnswers(pool, items)
    for (const url of [writer.url, second.url, reader.url]) {
      await until(async () => differences(items, await gatewayAnswers(url, items), expected).length === 0, 30_000, `${url} to answer exactly`)
    }
  }, 120_000)

  /**
   * Checks `items` against both gateways in a loop until `stop` resolves; every answer is compared with SQL's:
   * STORE_UNAVAILABLE counts as an outage (fail closed), anything else that differs as a wrong answer.
   */
  async function traffic (items: Item[], expected: Answer[], stop: Promise<unknown>): Promise<{ rounds: number, wrong: string[], unavailable: Map<string, { first: number, last: number, n: number }> }> {
    let done = false
    void stop.finally(() => { done = true })
    const wrong: string[] = []
    const unavailable = new Map<string, { first: number, last: number, n: number }>()
    let rounds = 0
    await Promise.all([writer.url, reader.url, second.url].map(async (url) => {
      while (!done) {
        let got: Answer[]
        try { got = await gatewayAnswers(url, items) } catch (err) { wrong.push(`${url}: ${(err as Error).message}`); continue }
        const now = Date.now()
        for (let i = 0; i < items.length; i++) {
          if (got[i]!.reason === 'STORE_UNAVAILABLE') {
            const u = unavailable.get(url) ?? { first: now, last: now, n: 0 }
            u.last = now; u.n++
            unavailable.set(url, u)
          } else if (got[i]!.reason !== expected[i]!.reason || got[i]!.allowed !== expected[i]!.allowed) {
            wrong.push(`${url} #${i}: gateway ${got[i]!.reason}, SQL ${expected[i]!.reason}`)
          }
        }
        rounds++
      }
    }))
    return { rounds, wrong, unavailable }
  }

  it('a second load flips under traffic with no wrong answer', async () => {
    const items = await randomItems(pool, 2_000, 7)
    const expected = await sqlAnswers(pool, items)
    const load = runCli(['load'], env)
    const t = await traffic(items, expected, load)
    expect((await load).code).toBe(0)
    expect(t.wrong.slice(0, 10)).toEqual([])
    expect([...t.unavailable].map(([url, u]) => `${url}: ${u.n} over ${u.last - u.first} ms`)).toEqual([])
    expect(t.rounds).toBeGreaterThan(2)
  }, 120_000)

  it('the master of the control slot dies during traffic: its replica takes over, zero wrong answers, and a RET written after it still reaches both gateways', async () => {
    const items = await randomItems(pool, 2_000, 8)
    const expected = await sqlAnswers(pool, items)
    const victim = await cluster.masterOf(layout(prefix).current)
    let failoverMs = 0
    const outage = (async () => {
      await new Promise(resolve => setTimeout(resolve, 1000))
      await cluster.kill(victim)
      failoverMs = await cluster.waitFailover(victim)
      await new Promise(resolve => setTimeout(resolve, 3000)) // traffic after the failover too
    })()
    const t = await traffic(items, expected, outage)
    await outage
    const windows = [...t.unavailable].map(([url, u]) => `${url === reader.url ? 'Redis way' : 'replica'}: ${u.n} answers over ${u.last - u.first} ms`)
    console.log(`failover took ${failoverMs} ms; fail-closed answers: ${windows.join('; ') || 'none'}; ${t.rounds} rounds of ${items.length} checks`)
    expect(t.wrong.slice(0, 10)).toEqual([])
    expect(t.rounds).toBeGreaterThan(4)
    // After the failover both answer everything again, exactly.
    await until(async () => differences(items, await gatewayAnswers(reader.url, items), expected).length === 0, 20_000, 'the Redis way to answer exactly again')
    for (const url of [writer.url, second.url]) expect(differences(items, await gatewayAnswers(url, items), expected)).toEqual([])
    await consentThenRet('+905301234601')
    await cluster.restart(victim) // back as a replica of the promoted node
  }, 180_000)

  it('a bucket shard\'s master dies with a RET its replica never got: the appliers apply the recent changes again, and the Redis way answers REJECTED', async () => {
    const keys = layout(prefix)
    const { filterVersion: version } = await (await fetch(writer.url + '/readyz')).json() as { filterVersion: number }
    const control = await cluster.masterOf(keys.current)
    // An ONAY key whose bucket group lives on another master than the control slot.
    const { rows } = await pool.query<{ recipient: string }>(
      `SELECT recipient FROM consents WHERE brand_code = ${BRAND} AND type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND status = 'ONAY' ORDER BY seq DESC LIMIT 200`)
    let recipient = ''
    let master = 0
    for (const r of rows) {
      hashText(keyText(String(BRAND), keyCode('MESAJ', 'BIREYSEL'), r.recipient))
      const m = await cluster.masterOf(keys.bucket(version, segmentOf(keyHash[0]!)))
      if (m !== control) { recipient = r.recipient; master = m; break }
    }
    expect(master).not.toBe(0)
    expect(await reason(reader.url, recipient)).toBe('CONSENT')
    // The master's replica stops (SIGSTOP) and the master drops its link: the RET reaches the master, is acknowledged
    // and published, and is never replicated. Then the master dies and the replica, resumed, is promoted without it.
    const replica = (await cluster.masters()).find(m => m.port === master)!.replicas[0]!
    const pid = Number(/process_id:(\d+)/.exec(String(await cluster.call(replica, 'INFO', 'server')))![1])
    process.kill(pid, 'SIGSTOP')
    try {
      await cluster.call(master, 'CLIENT', 'KILL', 'TYPE', 'replica')
      const ret = await postJson(consentsUrl(), { recipient, type: 'MESAJ', source: 'HS_WEB', status: 'RET', consentDate: formatIysDate(Math.floor(Date.now() / 1000) - 60) })
      expect(ret.status).toBe(200)
      await until(async () => (await reason(reader.url, recipient)) === 'REJECTED', 15_000, 'the RET to reach the master')
      await cluster.kill(master)
    } finally {
      process.kill(pid, 'SIGCONT')
    }
    const failoverMs = await cluster.waitFailover(master)
    const promotedAt = Date.now()
    // The promoted replica held the ONAY; the appliers saw the masters change and wrote the RET again.
    await until(async () => (await reason(reader.url, recipient)) === 'REJECTED', 30_000, 'the RET to be applied again after the failover')
    console.log(`failover of a bucket shard took ${failoverMs} ms; the RET it lost was back ${Date.now() - promotedAt} ms after the cluster settled`)
    for (const url of [writer.url, second.url]) expect(await reason(url, recipient)).toBe('REJECTED') // their replicas never lost it
    await cluster.restart(master)
  }, 120_000)
})
