// The decision log: every decision reaches Postgres exactly once, through an outage (the network to Postgres cut
// while 10,000 decisions are made), through a graceful shutdown, and whatever a client puts in its recipient; a batch
// Postgres refuses for its content never holds back the batches behind it.

import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DecisionLog } from '../src/audit/decision-log.js'
import type { CheckQuery, CheckResult } from '../src/check/checker.js'
import { createLogger } from '../src/log.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

describe('decision log', () => {
  let services: TestServices
  let proxy: TcpProxy
  let gw: RunningGateway
  let pool: pg.Pool
  let spool: string
  let env: Record<string, string>

  beforeAll(async () => {
    services = await testServices({ migrate: true, dirPrefix: 'iys-spool-' })
    ;({ pool, dir: spool } = services)
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    env = { DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/${services.db.name}`, DECISION_SPOOL_DIR: spool, DECISION_FLUSH_MS: '50' }
    gw = await startTestGateway(env)
  })

  afterAll(async () => {
    await gw?.close()
    await proxy?.cut()
    await services?.close()
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

  // A DecisionLog in this process, on its own spool folder and Postgres `url`: its promises are ours to watch.
  const query = (recipients: string[]): CheckQuery => ({ brandCode: '600001', type: 'MESAJ', recipientType: 'BIREYSEL', commercial: true, recipients })
  const invalid = (recipients: string[]): CheckResult[] => recipients.map(recipient => ({ recipient, normalized: null, allowed: false, reason: 'INVALID_RECIPIENT' }))
  const record = (log: DecisionLog, recipients: string[]): void => { log.recordChecks('check', null, query(recipients), invalid(recipients)) }

  it('a segment whose file cannot be removed after it landed ends nothing: it is kept, removed later, and its records are written once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-unlink-'))
    const rejections: unknown[] = []
    const onRejection = (reason: unknown): void => { rejections.push(reason) }
    process.on('unhandledRejection', onRejection)
    let readOnly = true
    let refusedUnlinks = 0
    const fs = {
      unlink: async (path: string): Promise<void> => {
        if (readOnly) { refusedUnlinks++; throw Object.assign(new Error(`EROFS: read-only file system, unlink '${path}'`), { code: 'EROFS' }) }
        await unlink(path)
      }
    }
    const log = new DecisionLog({ pool, spoolDir: dir, log: createLogger('silent'), flushMs: 20, journalFs: fs })
    try {
      await log.start()
      const first = phones(80_000, 50)
      record(log, first)
      await expect(log.flush()).resolves.toBeUndefined()
      await until(async () => (await count("recipient LIKE '+905000080%'")) === 50, 10_000, 'the first records to land')
      await until(() => refusedUnlinks >= 3, 10_000, 'removal to be retried on the timer')
      expect(segments(dir)).toBe(1) // kept: it is in Postgres, its file waits for a later removal
      record(log, phones(80_100, 50)) // the log goes on meanwhile
      await until(async () => (await count("recipient LIKE '+905000080%'")) === 100, 10_000, 'records made while the disk refuses removals to land')
      readOnly = false
      await until(() => segments(dir) === 0, 10_000, 'the kept segments to be removed')
      expect(await count("recipient LIKE '+905000080%'")).toBe(100)
      expect(rejections).toEqual([])
    } finally {
      process.off('unhandledRejection', onRejection)
      readOnly = false
      await log.close()
      rmSync(dir, { recursive: true, force: true })
    }
  }, 30_000)

  it('a spooled segment another gateway shipped first is no longer counted as waiting', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-gone-'))
    const away = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', max: 1, connectionTimeoutMillis: 1000 })
    const log = new DecisionLog({ pool: away, spoolDir: dir, log: createLogger('silent'), flushMs: 20 })
    try {
      await log.start()
      record(log, phones(81_000, 5))
      await until(() => log.spooled === 1, 10_000, 'the segment to be spooled')
      for (const f of readdirSync(dir)) if (f.endsWith('.jnl')) rmSync(join(dir, f))
      await until(() => log.spooled === 0, 10_000, 'the vanished segment to be dropped from the spool')
    } finally {
      await log.close()
      await away.end()
      rmSync(dir, { recursive: true, force: true })
    }
  }, 30_000)

  it('a new constraint refusing the records holds their segments in the spool, quarantines nothing, and lets other segments pass', async () => {
    const quarantined = (): number => readdirSync(join(spool, 'quarantine')).length
    const before = quarantined()
    const spooledBefore = spooledRows(await (await fetch(gw.url + '/metrics')).text())
    await pool.query("ALTER TABLE decisions ADD CONSTRAINT refuse_9057 CHECK (recipient NOT LIKE '+9057%')")
    try {
      const held = phones(700_000, 400).map(p => p.replace('+9050', '+9057'))
      await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: held })
      await until(async () => spooledRows(await (await fetch(gw.url + '/metrics')).text()) >= spooledBefore + 400, 10_000, 'the refused segment to be counted as spooled')
      await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: phones(90_000, 5) })
      await until(async () => (await count("normalized LIKE '+905000090%'")) === 5, 15_000, 'a later segment to land past the refused one')
      expect(segments(spool)).toBeGreaterThan(0)
      expect(await count("recipient LIKE '+9057%'")).toBe(0)
      expect(quarantined()).toBe(before)
    } finally {
      await pool.query('ALTER TABLE decisions DROP CONSTRAINT refuse_9057')
    }
    await until(async () => (await count("recipient LIKE '+9057%'")) === 400, 60_000, 'the held records to land once the constraint is gone')
    expect(quarantined()).toBe(before)
  }, 90_000)

  it('records still land after today\'s partition is dropped under a running log: it is recreated and nothing is quarantined', async () => {
    const quarantined = (): number => readdirSync(join(spool, 'quarantine')).length
    const before = quarantined()
    const today = 'decisions_' + new Date().toISOString().slice(0, 10).replace(/-/g, '')
    await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: phones(91_000, 5) }) // the log knows today's partition
    await until(async () => (await count("normalized LIKE '+905000091%'")) === 5, 15_000, 'the first decisions to land')
    await pool.query(`DROP TABLE ${today}`)
    await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: phones(92_000, 300) })
    await until(async () => (await count("normalized LIKE '+905000092%'")) === 300, 15_000, 'the decisions to land in a recreated partition')
    expect(quarantined()).toBe(before)
  }, 60_000)
})
