// The decision log: every decision reaches Postgres exactly once, through an outage (the network to Postgres cut
// while 10,000 decisions are made) and through a graceful shutdown.

import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { createTestDatabase, type TestDatabase } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

describe('decision log', () => {
  let db: TestDatabase
  let proxy: TcpProxy
  let gw: RunningGateway
  let pool: pg.Pool
  let spool: string
  let env: Record<string, string>

  beforeAll(async () => {
    db = await createTestDatabase()
    expect((await runCli(['migrate'], { DATABASE_URL: db.url })).code).toBe(0)
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    spool = mkdtempSync(join(tmpdir(), 'iys-spool-'))
    env = { DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/${db.name}`, DECISION_SPOOL_DIR: spool, DECISION_FLUSH_MS: '50' }
    gw = await startTestGateway(env)
    pool = new pg.Pool({ connectionString: db.url, max: 2 })
  })

  afterAll(async () => {
    await gw?.close()
    await proxy?.cut()
    await pool?.end()
    await db?.drop()
    if (spool !== undefined) rmSync(spool, { recursive: true, force: true })
  })

  const count = async (where = 'true'): Promise<number> => (await pool.query(`SELECT count(*)::int AS n FROM decisions WHERE ${where}`)).rows[0].n
  const phones = (from: number, n: number): string[] => Array.from({ length: n }, (_, i) => '+9050' + String(from + i).padStart(8, '0'))

  it('records every check decision with what it relied on', async () => {
    const res = await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: ['0532 123 45 67', '+905327654321', 'nonsense'] })
    expect(res.map(r => r.reason)).toEqual(['CONSENT', 'REJECTED', 'INVALID_RECIPIENT'])
    await until(async () => (await count()) === 3, 15_000, 'the decisions to be written')
    const { rows } = await pool.query('SELECT source, brand_code::text, type, recipient_type, recipient, normalized, commercial, allowed, reason, consent_seq IS NOT NULL AS has_seq FROM decisions ORDER BY recipient')
    expect(rows).toEqual([
      { source: 'check', brand_code: '600001', type: 'MESAJ', recipient_type: 'BIREYSEL', recipient: '+905327654321', normalized: '+905327654321', commercial: true, allowed: false, reason: 'REJECTED', has_seq: true },
      { source: 'check', brand_code: '600001', type: 'MESAJ', recipient_type: 'BIREYSEL', recipient: '0532 123 45 67', normalized: '+905321234567', commercial: true, allowed: true, reason: 'CONSENT', has_seq: true },
      { source: 'check', brand_code: '600001', type: 'MESAJ', recipient_type: 'BIREYSEL', recipient: 'nonsense', normalized: null, commercial: true, allowed: false, reason: 'INVALID_RECIPIENT', has_seq: false }
    ])
  })

  it('loses nothing while Postgres is unreachable: 10,000 decisions land exactly once after it returns', async () => {
    await proxy.cut()
    const all = phones(1, 10_000)
    for (let i = 0; i < all.length; i += 500) {
      const res = await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: all.slice(i, i + 500) })
      expect(res).toHaveLength(500)
    }
    await until(() => readdirSync(spool).some(f => f.endsWith('.tsv')), 10_000, 'batches to be spooled')
    await proxy.restore()
    await until(async () => (await count("normalized LIKE '+9050%'")) >= 10_000, 20_000, 'the spool to be replayed')
    await until(() => readdirSync(spool).filter(f => f.endsWith('.tsv')).length === 0, 15_000, 'the spool to empty')
    expect(await count("normalized LIKE '+9050%'")).toBe(10_000)
    const dup = await pool.query("SELECT normalized FROM decisions WHERE normalized LIKE '+9050%' GROUP BY normalized HAVING count(*) > 1")
    expect(dup.rows).toEqual([])
  }, 60_000)

  it('flushes everything on a graceful shutdown', async () => {
    const before = await count()
    const batch = phones(50_000, 1000)
    await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: batch })
    await gw.close() // what SIGTERM does
    expect(await count()).toBe(before + 1000)
    gw = await startTestGateway(env)
  })

  it('spools at shutdown when Postgres is away, and the next start writes the spool', async () => {
    const before = await count()
    await proxy.cut()
    await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: phones(60_000, 700) })
    await gw.close()
    expect(readdirSync(spool).filter(f => f.endsWith('.tsv')).length).toBeGreaterThan(0)
    await proxy.restore()
    gw = await startTestGateway(env)
    await until(async () => (await count()) === before + 700, 10_000, 'the spool left by the previous run to be written')
  }, 60_000)
})
