// Scrub workers answering from the gateway's local replica (issue 12): while the replica is current a chunk goes to
// its worker with the replica's shared buffers and is answered from them with no Redis at all; when it is not
// current (REPLICA=false, or past the lag bound: exact() answers null) the worker asks Redis as before. Every way,
// the result file is the one SQL says, byte for byte: reasons, RET, no record, invalid lines and duplicates.

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { messyPhone } from '../loaders/generate.js'
import { layout } from '../src/filter/layout.js'
import type { ReplicaTable } from '../src/filter/replica.js'
import { buildReplica } from '../src/filter/replica-source.js'
import { RedisView } from '../src/filter/view.js'
import { csvField } from '../src/formats/csv.js'
import { createLogger } from '../src/log.js'
import { RESULT_HEADER, scrubFile, type EngineDeps } from '../src/scrub/engine.js'
import { emptyTotals } from '../src/scrub/job-record.js'
import { createScrubPool } from '../src/scrub/pool.js'
import { mulberry32 } from '../src/util/random.js'
import { seedGenerated } from './helpers/cli.js'
import { authFor, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { freePort, until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'
import { readBloom } from '../src/filter/bloom-store.js'

const BRAND = '600001'
const PARAMS = { brandCode: BRAND, type: 'MESAJ', recipientType: 'BIREYSEL', commercial: true } as const
const POLICY = { tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' } as const
const LINES = 30_000

describe('scrub answered from the local replica', () => {
  let services: TestServicesWithRedis
  let list: string
  let expected: string

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-scrub-replica-' })
    await seedGenerated(services.env, join(services.dir, 'c.csv'), { rows: 20_000, brands: 2, retShare: 0.3, seed: 12 })
    const { rows } = await services.pool.query<{ r: string }>(
      `SELECT recipient AS r FROM consents WHERE brand_code = ${BRAND} AND type = 'MESAJ' AND recipient_type = 'BIREYSEL' ORDER BY recipient`)
    const present = rows.map(x => x.r)

    // The list: stored phones (ONAY and RET) and unknown ones, typed as people type them; invalid lines (one not
    // ASCII, so that byte offsets differ from chars in its chunk); repeats, exact and in another form.
    const rnd = mulberry32(42)
    const inputs: string[] = []
    const canonical: (string | null)[] = []
    for (let i = 0; i < LINES; i++) {
      const roll = rnd()
      let c: string | null
      let input: string
      if (roll < 0.45) { c = present[Math.floor(rnd() * present.length)]!; input = rnd() < 0.5 ? c : messyPhone(c, rnd) } else if (roll < 0.9) { c = '+905' + String(Math.floor(rnd() * 1e9)).padStart(9, '0'); input = rnd() < 0.5 ? c : messyPhone(c, rnd) } else if (roll < 0.94) { c = null; input = ['abc', '+90532', 'ali@example.com', 'çağrı merkezi', '"05, 32"'][Math.floor(rnd() * 5)]! } else {
        const j = Math.floor(rnd() * Math.max(1, i))
        c = canonical[j] ?? null
        input = inputs[j] ?? 'abc'
        if (c !== null && rnd() < 0.5) input = messyPhone(c, rnd)
      }
      inputs.push(input)
      canonical.push(c)
    }
    list = join(services.dir, 'list.csv')
    writeFileSync(list, inputs.map(s => (/[",]/.test(s) || s.startsWith(' ') ? `"${s.replace(/"/g, '""')}"` : s)).join('\n') + '\n')

    // SQL's answer for each distinct recipient; the rows of the result file as they must be.
    const { rows: truth } = await services.pool.query<{ r: string, status: string }>(
      `SELECT recipient AS r, status FROM consents WHERE brand_code = ${BRAND} AND type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND recipient = ANY($1)`,
      [[...new Set(canonical.filter(c => c !== null))]])
    const status = new Map(truth.map(t => [t.r, t.status]))
    const firstLine = new Map<string, number>()
    let text = RESULT_HEADER
    inputs.forEach((input, i) => {
      const line = i + 1
      const c = canonical[i]!
      const shown = csvField(input)
      if (c === null) { text += `${shown},${input === 'ali@example.com' ? 'ali@example.com' : ''},false,INVALID_RECIPIENT,${line},\n`; return }
      const first = firstLine.get(c)
      if (first !== undefined) { text += `${shown},${c},false,DUPLICATE,${line},${first}\n`; return }
      firstLine.set(c, line)
      const s = status.get(c)
      text += `${shown},${c},${s === 'ONAY'},${s === 'ONAY' ? 'CONSENT' : s === 'RET' ? 'REJECTED' : 'NO_CONSENT'},${line},\n`
    })
    expected = text
    // The list covers every outcome.
    for (const r of ['true,CONSENT', 'REJECTED', 'NO_CONSENT', 'INVALID_RECIPIENT', 'DUPLICATE']) expect(expected).toContain(r)
  }, 180_000)

  afterAll(async () => {
    await services?.close()
  })

  /** The first line where `got` and `expected` differ, with the line before it. */
  const firstDifference = (got: string): string | null => {
    const a = got.split('\n')
    const b = expected.split('\n')
    for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return `row ${i}: got ${JSON.stringify(a[i])}, SQL says ${JSON.stringify(b[i])}`
    return null
  }

  describe('in the engine, with the workers\' Redis unreachable', () => {
    let redis: Redis
    let view: RedisView
    let table: ReplicaTable
    let deadRedisUrl: string

    beforeAll(async () => {
      redis = new Redis(services.redis.url)
      const keys = layout(services.redis.prefix)
      const version = Number(await redis.get(keys.current))
      const meta = await redis.hgetall(keys.meta(version))
      const bloom = await readBloom(redis, keys, version, Number(meta.blocks))
      view = new RedisView(redis, version, bloom!, Number(meta.buckets), keys, { generation: meta.gen ?? null, timeoutMs: 500 })
      // The replica as the gateway's mirror builds it, from the version in Redis.
      const built = await buildReplica(redis, keys, version, Number(meta.buckets), Number(meta.count), 1 << 30, () => true)
      table = built!.table!
      deadRedisUrl = `redis://127.0.0.1:${await freePort()}` // nothing listens there
    })

    afterAll(() => { redis?.disconnect() })

    const scrubWith = async (redisUrl: string, exact: () => ReplicaTable | null): Promise<string> => {
      const pool = createScrubPool({ redisUrl, redisPrefix: services.redis.prefix, redisTimeoutMs: 300, policy: POLICY }, 2)
      view.exact = exact
      const deps: EngineDeps = { getView: () => view, policy: POLICY, pool, chunkLines: 1000, threads: 2, log: createLogger('silent') }
      const out = join(services.dir, `result-${Math.random()}.csv`)
      try {
        await scrubFile(deps, list, out, PARAMS, 'csv', emptyTotals())
      } finally {
        await pool.destroy()
      }
      return readFileSync(out, 'utf8')
    }

    it('answers every line as SQL says from the replica alone: the workers never needed Redis', async () => {
      expect(firstDifference(await scrubWith(deadRedisUrl, () => table))).toBeNull()
    }, 60_000)

    it('asks Redis when the replica is not current at dispatch (past the lag bound): right with Redis, failing closed without', async () => {
      expect(firstDifference(await scrubWith(services.redis.url, () => null))).toBeNull()
      // The same workers with no Redis and no replica cannot answer the lines the bloom lets through.
      const blind = await scrubWith(deadRedisUrl, () => null)
      expect(blind).toContain(',false,STORE_UNAVAILABLE,')
    }, 60_000)
  })

  describe('through a gateway\'s HTTP API', () => {
    let withReplica: RunningGateway
    let redisWay: RunningGateway

    beforeAll(async () => {
      const env = { ...services.env, SCRUB_THREADS: '2', SCRUB_CHUNK_LINES: '1000' }
      withReplica = await startTestGateway({ ...env, REPLICA: 'true' })
      redisWay = await startTestGateway({ ...env, REPLICA: 'false' })
      await until(async () => /^iys_replica_serving 1$/m.test(await (await fetch(withReplica.url + '/metrics')).text()), 30_000, 'the replica to serve')
    }, 60_000)

    afterAll(async () => {
      await redisWay?.close()
      await withReplica?.close()
    })

    const scrub = async (gw: RunningGateway): Promise<string> => {
      const res = await fetch(`${gw.url}/v1/scrub?brandCode=${BRAND}&type=MESAJ`, { method: 'POST', headers: { 'content-type': 'text/csv', ...authFor(gw.url) }, body: readFileSync(list) })
      expect(res.status).toBe(202)
      const { jobId } = (await res.json()) as { jobId: string }
      await until(async () => ((await (await fetch(`${gw.url}/v1/scrub/${jobId}`, { headers: authFor(gw.url) })).json()) as { state: string }).state === 'done', 60_000, 'the scrub job')
      return (await fetch(`${gw.url}/v1/scrub/${jobId}/result`, { headers: authFor(gw.url) })).text()
    }

    it.each([['its current local replica', () => withReplica, 1], ['Redis (REPLICA=false)', () => redisWay, 0]] as const)('answers a scrub line by line as SQL says, from %s', async (_, gw, serving) => {
      expect(firstDifference(await scrub(gw()))).toBeNull()
      expect(await (await fetch(gw().url + '/metrics')).text()).toMatch(new RegExp(`^iys_replica_serving ${serving}$`, 'm'))
    }, 60_000)
  })
})
