// A version flip under load: while `load` rebuilds and flips twice, checks keep succeeding with the same answers,
// the gateway moves to the newest version, and the versions it left are removed from Redis.

import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli, seedGenerated } from './helpers/cli.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestDatabase, type TestRedis, type TestServicesWithRedis } from './helpers/services.js'
import { layout } from '../src/filter/layout.js'

describe('filter version flip under load', () => {
  let services: TestServicesWithRedis
  let db: TestDatabase
  let redis: TestRedis
  let gateway: RunningGateway
  let env: Record<string, string>

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-flip-' })
    ;({ db, redis, env } = services)
    const file = join(services.dir, 'c.csv')
    await seedGenerated(env, file, { rows: 30_000, brands: 2, seed: 5 })
    gateway = await startTestGateway(env)
  }, 120_000)

  afterAll(async () => {
    await gateway?.close()
    await services?.close()
  })

  it('keeps answering every check correctly while load runs and flips the version twice', async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 1 })
    const { rows } = await pool.query<{ b: string, rc: string, status: string }>(
      "SELECT brand_code::text AS b, recipient AS rc, status FROM consents WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND brand_code = 600001 LIMIT 200")
    await pool.end()
    const body = JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipients: rows.map(r => r.rc) })
    const expected = rows.map(r => (r.status === 'ONAY' ? 'CONSENT' : 'REJECTED'))
    expect(gateway.gw.version()).toBe(1)

    let stop = false
    let requests = 0
    const failures: string[] = []
    const versionsSeen = new Set<number>()
    const worker = async (): Promise<void> => {
      while (!stop) {
        const { status, json } = await postJson(gateway.url + '/v1/check', body)
        requests++
        versionsSeen.add(gateway.gw.version())
        if (status !== 200) { failures.push(`HTTP ${status}`); continue }
        json.results.forEach((r: { reason: string }, i: number) => { if (r.reason !== expected[i]) failures.push(`${i}: ${r.reason}`) })
      }
    }
    const workers = [worker(), worker(), worker(), worker()]
    const first = await runCli(['load'], env)
    const second = await runCli(['load'], env)
    // Give the mirror a poll interval to settle, with checks still running.
    await new Promise(resolve => setTimeout(resolve, 300))
    stop = true
    await Promise.all(workers)

    expect(first.code).toBe(0)
    expect(second.code).toBe(0)
    expect(failures.slice(0, 10)).toEqual([])
    expect(requests).toBeGreaterThan(20)
    expect(gateway.gw.version()).toBe(3)
    expect(versionsSeen.size).toBeGreaterThan(1)
    expect(await redis.client.get(layout(redis.prefix).current)).toBe('3')
    // Versions 1 and 2 were removed once the gateway moved on; only version 3 remains.
    for (const v of [1, 2]) expect(await redis.client.exists(layout(redis.prefix).meta(v), layout(redis.prefix).bloomSegment(v, 0))).toBe(0)
    expect(await redis.client.exists(layout(redis.prefix).meta(3))).toBe(1)
  }, 120_000)

  it('a load that fails half-way removes what it wrote and leaves the current version serving, untouched', async () => {
    const versionKeys = async (v: number): Promise<string[]> => (await Promise.all(layout(redis.prefix).versionPatterns(v).map(async p => await redis.client.keys(p)))).flat()
    const before = await redis.client.get(layout(redis.prefix).current)
    const keysBefore = (await versionKeys(Number(before))).sort()
    // A row with a source we cannot encode, written around the gateway, makes the load fail after it has
    // already written thousands of buckets of the new version.
    const pool = new pg.Pool({ connectionString: db.url, max: 1 })
    await pool.query("INSERT INTO consents (brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, seq) VALUES (600001, 'MESAJ', 'BIREYSEL', '+905001110000', 700001, 'ONAY', 'BOGUS', now(), nextval('consent_seq'))")
    const r = await runCli(['load'], env)
    await pool.query("DELETE FROM consents WHERE source = 'BOGUS'")
    await pool.end()
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/unknown status or source/)
    expect(r.stderr).not.toContain('+905001110000')
    expect(await redis.client.get(layout(redis.prefix).current)).toBe(before)
    expect(await versionKeys(Number(before) + 1)).toEqual([])
    expect((await versionKeys(Number(before))).sort()).toEqual(keysBefore)
    const { json } = await postJson(gateway.url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: '+905009998877' })
    expect(json.results[0].reason).toBe('NO_CONSENT')
    expect(gateway.gw.version()).toBe(Number(before))
  })
})
