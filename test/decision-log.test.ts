// The decision log: every decision reaches Postgres exactly once, through an outage (the network to Postgres cut
// while 10,000 decisions are made), through a graceful shutdown, and whatever a client puts in its recipient; a batch
// Postgres refuses for its content never holds back the batches behind it.

import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
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
  // Journal segments waiting in the spool folder (the current one included, while it has lines).
  const segments = (dir: string): number => readdirSync(dir).filter(f => f.endsWith('.jnl')).length
  const spooledRows = (metrics: string): number => Number(/^iys_decision_log_spooled_total (\d+)$/m.exec(metrics)?.[1] ?? 0)
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
    await until(async () => spooledRows(await (await fetch(gw.url + '/metrics')).text()) > 0, 10_000, 'batches to be spooled')
    await proxy.restore()
    await until(async () => (await count("normalized LIKE '+9050%'")) >= 10_000, 20_000, 'the spool to be replayed')
    await until(() => segments(spool) === 0, 15_000, 'the spool to empty')
    expect(await count("normalized LIKE '+9050%'")).toBe(10_000)
    const dup = await pool.query("SELECT normalized FROM decisions WHERE normalized LIKE '+9050%' GROUP BY normalized HAVING count(*) > 1")
    expect(dup.rows).toEqual([])
  }, 60_000)

  it('stores recipients holding a NUL byte, COPY control characters or a lone surrogate, and the decisions behind them land too', async () => {
    const before = await count()
    const poison = ['x\u0000', 'a\\b\tc\nd\re\\.', '\uD800x', 'y\uDC00']
    for (const recipient of poison) await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipient })
    await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: phones(70_000, 5) })
    await until(async () => (await count()) === before + poison.length + 5, 15_000, 'the decisions to be written')
    const { rows } = await pool.query("SELECT recipient FROM decisions WHERE reason = 'INVALID_RECIPIENT' AND recipient <> 'nonsense' ORDER BY recipient")
    // NUL cannot be stored in Postgres text, and a lone surrogate has no UTF-8 form: both become U+FFFD.
    expect(rows.map(r => r.recipient).sort()).toEqual(['x\uFFFD', 'a\\b\tc\nd\re\\.', '\uFFFDx', 'y\uFFFD'].sort())
    expect(readdirSync(join(spool, 'quarantine')).length).toBe(0)
  })

  it('quarantines a poisoned spooled batch with its reason and writes the good batches behind it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-poison-'))
    try {
      const day = new Date().toISOString()
      const line = (i: number, recipient = `+9051${String(i).padStart(8, '0')}`): string =>
        `${day}\tcheck\t\\N\t600001\tMESAJ\tBIREYSEL\t${recipient}\t\\N\ttrue\tfalse\tNO_CONSENT\t\\N\t\\N\t\\N\t\\N\n`
      // What an older gateway spooled for a NUL recipient (a raw 0x00 byte, refused by Postgres), first in order...
      writeFileSync(join(dir, '0-old-poison.tsv'), line(1) + line(2, 'x\u0000') + line(3))
      // ...and a batch with a value of the wrong type, then good batches.
      writeFileSync(join(dir, '1-dead-00000001.jnl'), line(4) + line(5).replace('\ttrue\t', '\tmaybe\t') + line(6))
      writeFileSync(join(dir, '2-good.tsv'), line(7) + line(8))
      writeFileSync(join(dir, '3-dead-00000001.jnl'), line(9) + line(10))
      const other = await startTestGateway({ ...env, DECISION_SPOOL_DIR: dir })
      try {
        const landed = async (): Promise<number> => count("normalized IS NULL AND recipient LIKE '+9051%'")
        await until(async () => (await landed()) === 8, 20_000, 'the good decisions of the spool to be written')
        const { rows } = await pool.query("SELECT recipient FROM decisions WHERE recipient LIKE '+9051%' ORDER BY recipient")
        expect(rows.map(r => Number(r.recipient.slice(5)))).toEqual([1, 3, 4, 6, 7, 8, 9, 10])
        await until(() => readdirSync(dir).filter(f => /\.(tsv|jnl)$/.test(f)).length === 0, 10_000, 'the spool to empty')
        const q = join(dir, 'quarantine')
        const reasons = readdirSync(q).filter(f => f.endsWith('.json')).map(f => JSON.parse(readFileSync(join(q, f), 'utf8')))
        expect(reasons.map(r => r.sqlstate).sort()).toEqual(['22021', '22P02'])
        const held = readdirSync(q).filter(f => f.endsWith('.tsv')).map(f => readFileSync(join(q, f), 'utf8')).join('')
        expect(held).toContain('x\u0000')
        expect(held).toContain('\tmaybe\t')
        expect(held.split('\n').filter(l => l !== '')).toHaveLength(2)
        expect(await (await fetch(other.url + '/metrics')).text()).toMatch(/^iys_decision_batches_quarantined_total 2$/m)
      } finally {
        await other.close()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
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
    expect(segments(spool)).toBeGreaterThan(0)
    await proxy.restore()
    gw = await startTestGateway(env)
    await until(async () => (await count()) === before + 700, 10_000, 'the spool left by the previous run to be written')
  }, 60_000)
})
