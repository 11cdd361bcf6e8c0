// Filter builds and the change applier around them: a Redis that lost its data must not make every applier walk
// the whole history, two builds that overlap (a lost advisory lock) must never flip to a version that misses
// changes, and a build that died must not leave its half-written version behind.

import { createServer, type AddressInfo, type Socket } from 'node:net'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { BloomFilter } from '../src/filter/bloom.js'
import { buildFilter, REBUILD_LOCK_KEY, type LoadResult } from '../src/filter/build.js'
import { ChangeApplier } from '../src/filter/changes.js'
import { layout, type Layout } from '../src/filter/layout.js'
import { createLogger } from '../src/log.js'
import { FilterMirror } from '../src/filter/mirror.js'
import { RedisView, VersionGoneError } from '../src/filter/view.js'
import { createRedis, type RedisClient } from '../src/store/redis.js'
import { RespBulkWriter } from '../src/store/resp-bulk.js'
import { createTestRedis, testServices, type TestRedis, type TestServices } from './helpers/services.js'
import { commitRet } from './helpers/ledger.js'
import { writeBloom } from '../src/filter/bloom-store.js'

const ROWS = 5000 // more than two of the applier's 2000-row batches
const log = createLogger(process.env.TLOG ?? 'silent')
const phone = (i: number): string => '+90532' + String(1_000_000 + i).slice(-7)

interface Hooks {
  /** Runs before each `FROM consent_history` query made through the pool (the applier's batches, a build's replay). */
  beforeHistory?: (call: number) => Promise<void>
  /** Backend pids of the connections handed out by pool.connect() (a build's lock connection is the first). */
  pids: number[]
  historyQueries: number
}

/** A pool whose history queries can be paused or counted, as a Postgres that is slow at the wrong moment would. */
function hookedPool (url: string): { pool: pg.Pool, hooks: Hooks } {
  const pool = new pg.Pool({ connectionString: url, max: 3 })
  pool.on('error', () => {})
  const hooks: Hooks = { pids: [], historyQueries: 0 }
  const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>
  pool.query = (async (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('FROM consent_history')) {
      const call = ++hooks.historyQueries
      await hooks.beforeHistory?.(call)
    }
    return query(...args)
  }) as typeof pool.query
  const connect = pool.connect.bind(pool) as (...a: unknown[]) => Promise<pg.PoolClient>
  pool.connect = ((...args: unknown[]) => {
    if (args.length > 0) return connect(...args) // pool.query's own (callback) use
    return connect().then(c => { hooks.pids.push((c as unknown as { processID: number }).processID); return c })
  }) as typeof pool.connect
  return { pool, hooks }
}

/** ROWS BIREYSEL ONAY consents, one history row each (seq 1..ROWS). */
async function seed (pool: pg.Pool): Promise<void> {
  await pool.query(`INSERT INTO consent_history (seq, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, via)
    SELECT nextval('consent_seq'), 600001, 'MESAJ', 'BIREYSEL', '+90532' || (1000000 + i)::text, 700001, 'ONAY', 'HS_WEB', '2024-01-01 10:00:00+03', 'import'
    FROM generate_series(0, ${ROWS - 1}) i`)
  await pool.query(`INSERT INTO consents (brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, seq)
    SELECT brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, seq FROM consent_history`)
}


describe('filter builds and the change applier', () => {
  let services: TestServices
  let direct: pg.Pool
  let tr: TestRedis
  let redis: RedisClient
  let keys: Layout

  beforeAll(async () => {
    services = await testServices({ migrate: true, poolSize: 4 })
    direct = services.pool
    await seed(direct)
  }, 60_000)

  afterAll(async () => {
    await services?.close()
  })

  beforeEach(async () => {
    tr = await createTestRedis() // a prefix of its own: an empty Redis, as after a data loss
    keys = layout(tr.prefix)
    redis = createRedis(tr.url, { timeoutMs: 0, name: 'test-build', failFast: false })
  })

  afterEach(async () => {
    redis.disconnect()
    await tr.cleanup()
  })

  const build = (pool: pg.Pool, signal?: AbortSignal): Promise<LoadResult | null> =>
    buildFilter({ pool, redis, redisUrl: tr.url, layout: keys, fpr: 0.01, log, lock: 'wait', drainTimeoutMs: 0, signal })
  const streamLength = async (): Promise<number> => await redis.xlen(keys.changes)
  const versionKeys = async (v: number): Promise<string[]> => (await Promise.all(keys.versionPatterns(v).map(async p => await redis.keys(p)))).flat()

  it('applies nothing and reads nothing from Postgres while Redis has no version and no watermark', async () => {
    const { pool, hooks } = hookedPool(services.db.url)
    const applier = new ChangeApplier({ pool, redis, layout: keys, log })
    try {
      await expect(applier.catchUp()).rejects.toThrow(/no filter version/)
      expect(hooks.historyQueries).toBe(0)
      expect(await streamLength()).toBe(0)
    } finally { await pool.end() }
  })

  it('an applier running while the build after a data loss is under way applies only the changes after its snapshot', async () => {
    const { pool, hooks } = hookedPool(services.db.url)
    const other = new ChangeApplier({ pool: direct, redis, layout: keys, log })
    let retSeq = 0
    let streamDuringBuild = -1
    // The build's replay is its first history query: the version is claimed and written by then.
    hooks.beforeHistory = async call => {
      if (call !== 1) return
      retSeq = await commitRet(direct, phone(7))
      await other.catchUp()
      streamDuringBuild = await streamLength()
    }
    try {
      const r = await build(pool)
      expect(r!.seq).toBe(ROWS)
      // Only the RET committed after the snapshot went through the applier: not the ROWS changes before it.
      expect(streamDuringBuild).toBe(1)
      expect(Number(await redis.get(keys.applied))).toBe(retSeq)
    } finally { await pool.end() }
  }, 60_000)

  it('writes nothing into a version whose bloom segments are gone (being removed), so no stray bucket comes back', async () => {
    const r = await build(direct)
    // Another build's claim, for a version whose removal has begun: its segments are gone, its meta still there.
    await redis.hset(keys.meta(r!.version + 1), { gen: 'gone', buckets: 128, blocks: 128 })
    await redis.set(keys.building, `${r!.version + 1}|gone`)
    await commitRet(direct, phone(8))
    await new ChangeApplier({ pool: direct, redis, layout: keys, log }).catchUp()
    expect(await versionKeys(r!.version + 1)).toEqual([keys.meta(r!.version + 1)]) // no bucket, no segment
    // The current version took the change.
    expect(Number(await redis.get(keys.applied))).toBeGreaterThan(r!.seq)
  }, 60_000)

  it('a catch-up walk stops as soon as the watermark in Redis is raised past it', async () => {
    await build(direct)
    await redis.del(keys.applied, keys.changes) // the watermark lost: the walk starts from 0
    const { pool, hooks } = hookedPool(services.db.url)
    // While the first batch is read, a flip (or another applier) raises the watermark to the end of the history.
    const last = (await direct.query<{ s: string }>('SELECT max(seq) AS s FROM consent_history')).rows[0]!.s
    hooks.beforeHistory = async call => { if (call === 1) await redis.set(keys.applied, last) }
    const applier = new ChangeApplier({ pool, redis, layout: keys, log })
    try {
      await applier.catchUp()
      expect(await streamLength()).toBe(2000) // the one batch already read, not the whole history
    } finally { await pool.end() }
  }, 60_000)

  it('a build whose advisory lock died with its connection does not flip, removes its version, and the next build flips', async () => {
    const a = hookedPool(services.db.url)
    const b = hookedPool(services.db.url)
    let releaseB!: () => void
    const bMayGoOn = new Promise<void>(resolve => { releaseB = resolve })
    let bClaimed!: () => void
    const bHasClaimed = new Promise<void>(resolve => { bClaimed = resolve })
    let buildB: Promise<LoadResult | null> | null = null
    b.hooks.beforeHistory = async call => { if (call === 1) { bClaimed(); await bMayGoOn } }
    // A, at its replay: its lock connection is killed (a Postgres restart would do it), B takes the lock and claims.
    a.hooks.beforeHistory = async call => {
      if (call !== 1) return
      await direct.query('SELECT pg_terminate_backend($1)', [a.hooks.pids[0]])
      buildB = build(b.pool)
      await bHasClaimed
    }
    try {
      const buildA = build(a.pool)
      await expect(buildA).rejects.toThrow()
      const versionA = 1
      expect(await redis.get(keys.current)).toBe(null)
      releaseB()
      const rb = await buildB!
      expect(rb!.version).toBe(2)
      expect(await redis.get(keys.current)).toBe('2')
      expect(await versionKeys(versionA)).toEqual([])
    } finally {
      releaseB()
      await a.pool.end()
      await b.pool.end()
    }
  }, 60_000)

  it('a flip is refused when another build claimed the filter after this one, and the refused build removes its version', async () => {
    const { pool, hooks } = hookedPool(services.db.url)
    hooks.beforeHistory = async call => { if (call === 1) await redis.set(keys.building, '99|another') }
    try {
      await expect(build(pool)).rejects.toThrow(/another build claimed/)
      expect(await redis.get(keys.current)).toBe(null)
      expect(await redis.get(keys.building)).toBe('99|another')
      expect(await versionKeys(1)).toEqual([])
    } finally { await pool.end() }
  }, 60_000)

  it('a build removes the half-written version that a killed build left behind', async () => {
    await redis.set(keys.next, '6')
    await redis.set(keys.building, '5|deadbuild')
    await redis.hset(keys.meta(5), { gen: 'deadbuild', buckets: 1, blocks: 1 })
    await redis.hset(keys.bucket(5, 0), '~', 'deadbuild')
    const r = await build(direct)
    expect(r!.version).toBe(7)
    expect(await versionKeys(5)).toEqual([])
    expect(await redis.get(keys.building)).toBe(null)
  }, 60_000)

  it('an aborted build (the deadline of the automatic rebuild) flips nothing, removes its version and releases the build lock', async () => {
    const { pool, hooks } = hookedPool(services.db.url)
    const controller = new AbortController()
    hooks.beforeHistory = async call => { if (call === 1) controller.abort(new Error('deadline')) }
    try {
      await expect(build(pool, controller.signal)).rejects.toThrow()
      expect(await redis.get(keys.current)).toBe(null)
      expect(await versionKeys(1)).toEqual([])
      const probe = await direct.connect()
      try {
        expect((await probe.query('SELECT pg_try_advisory_lock($1) AS ok', [REBUILD_LOCK_KEY])).rows[0].ok).toBe(true)
        await probe.query('SELECT pg_advisory_unlock($1)', [REBUILD_LOCK_KEY])
      } finally { probe.release() }
    } finally { await pool.end() }
  }, 60_000)

  it('a multi-key lookup fails closed when one of its buckets has lost its sentinel (evicted), instead of reading "no record"', async () => {
    await redis.hset(keys.meta(1), { gen: 'g1', buckets: 2, blocks: 1 })
    await redis.hset(keys.bucket(1, 0), '~', 'g1', 'k0', 'v0')
    // Bucket 1, which held k1's RET, was evicted: the meta and bucket 0 are intact.
    const view = new RedisView(redis, 1, BloomFilter.forCapacity(1000, 0.01), 2, keys, { generation: 'g1' })
    await expect(view.lookup(['k0', 'k1'], [0, 1])).rejects.toThrow(VersionGoneError)
    await redis.hset(keys.bucket(1, 1), '~', 'g1')
    expect(await view.lookup(['k0', 'k1'], [0, 1])).toEqual(['v0', null])
    await redis.hset(keys.bucket(1, 1), '~', 'another-generation')
    await expect(view.lookup(['k0', 'k1'], [0, 1])).rejects.toThrow(VersionGoneError)
  })
})

describe('the bulk RESP writer', () => {
  it('a write waiting for the socket to drain fails when the connection dies, instead of waiting forever', async () => {
    const peers: Socket[] = []
    // A "Redis" that accepts the connection and never reads: the writer's socket fills up and needs a drain.
    const server = createServer(s => { s.pause(); s.on('error', () => {}); peers.push(s) })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const w = await RespBulkWriter.connect(`redis://127.0.0.1:${(server.address() as AddressInfo).port}`)
    try {
      const value = 'x'.repeat(64 * 1024)
      for (let i = 0; i < 1024 && !w.congested; i++) { w.reserve(value.length + 64); w.command(['SET', 'k', value]) }
      const waiting = w.backpressure()
      const outcome = waiting.then(() => 'resolved', (err: Error) => 'rejected: ' + err.message)
      expect(w.congested).toBe(true)
      peers[0]!.destroy() // Redis dies mid-write
      const stillWaiting = new Promise<string>(resolve => setTimeout(() => resolve('still waiting'), 15_000).unref())
      expect(await Promise.race([outcome, stillWaiting])).toMatch(/^rejected/)
    } finally {
      w.close()
      for (const p of peers) p.destroy()
      server.close()
    }
  }, 30_000)
})

describe('a gateway whose mirror cannot load the version the pointer names', () => {
  it('stops serving the previous version (it no longer receives changes) and says why, instead of serving it', async () => {
    const tr = await createTestRedis()
    const keys = layout(tr.prefix)
    const redis = createRedis(tr.url, { timeoutMs: 2000, name: 'test-mirror', failFast: false })
    const bloom = BloomFilter.forCapacity(1000, 0.01)
    const mirror = new FilterMirror(redis, keys, { pollMs: 3_600_000, log })
    try {
      await redis.hset(keys.meta(1), { gen: 'g1', buckets: 1, blocks: bloom.blocks, count: 0, complete: 1 })
      await writeBloom(redis, keys, 1, bloom)
      await redis.mset(keys.current, '1', keys.generation, 'g1')
      await mirror.poll()
      expect(mirror.view?.version).toBe(1)
      // A flip to version 2, whose bloom this gateway cannot load (here: it is missing).
      await redis.hset(keys.meta(2), { gen: 'g2', buckets: 1, blocks: bloom.blocks, count: 0, complete: 1 })
      await redis.mset(keys.current, '2', keys.generation, 'g2')
      await mirror.poll()
      expect(mirror.view).toBe(null)
      expect(mirror.problem).toMatchObject({ kind: 'unloadable', version: 2 })
      await writeBloom(redis, keys, 2, bloom)
      await mirror.poll()
      expect(mirror.view?.version).toBe(2)
      expect(mirror.problem).toBe(null)
    } finally {
      await mirror.stop()
      redis.disconnect()
      await tr.cleanup()
    }
  })
})
