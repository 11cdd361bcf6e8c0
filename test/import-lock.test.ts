// Issue 8, defect 7: a large `import` must not starve live consent writes. It commits in slices, holding the consent
// write lock for one slice at a time, and the İYS push receiver has a pool of its own. While a 150k-row import runs,
// consent API writes and İYS pushes all succeed, and each push is stored while the import is still running (not
// after it, as when the import held the lock, and so every pooled connection, for its whole run).

import { createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateConsents } from '../loaders/generate.js'
import { importConsents, SLICE_SQL, stageImport, type ImportResult } from '../loaders/import.js'
import { formatIysDate } from '../src/domain/time.js'
import { upsertConsentsSql } from '../src/store/consent-store.js'
import { CONSENT_WRITE_LOCK } from '../src/store/migrate.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestDatabase, type TestServices } from './helpers/services.js'

const ROWS = 150_000
const IYS = 700001
const LIVE_BRAND = 600099 // not in the generated file: live writes never collide with imported keys
const AUTH = 'Basic ' + Buffer.from('iys:s3cret').toString('base64')

describe('import beside live consent writes', () => {
  let services: TestServices
  let db: TestDatabase
  let gw: RunningGateway
  let pool: pg.Pool
  let file: string

  beforeAll(async () => {
    services = await testServices({ migrate: true, poolSize: 3, dirPrefix: 'iys-import-lock-' })
    ;({ db, pool } = services)
    file = join(services.dir, 'big.csv')
    const out = createWriteStream(file)
    await generateConsents({ rows: ROWS, brands: 2, retShare: 0.1, seed: 11 }, out)
    out.end()
    await once(out, 'close')
    // No Redis: the consent API and the push receiver need Postgres only.
    gw = await startTestGateway({ ...services.env, IYS_PUSH_USER: 'iys', IYS_PUSH_PASSWORD: 's3cret' })
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  it('consent API writes and İYS pushes during a large import all succeed, and each push is stored before the import ends', async () => {
    const importPool = new pg.Pool({ connectionString: db.url, max: 1 })
    let importDone = false
    const importing: Promise<ImportResult> = importConsents(importPool, { file, progress: false }).finally(() => { importDone = true })
    try {
      // Start the live traffic once the import is applying (it holds the write lock) and less than half of its rows
      // have been committed, so that it has plenty left to do.
      await until(async () => {
        if (importDone) throw new Error('the import finished before live traffic started: make ROWS larger')
        const { rows } = await pool.query<{ held: boolean, imported: string }>(
          // pg_locks is the whole cluster's: other test files' databases take the same lock key.
          `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted
                            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS held,
                  (SELECT count(*) FROM consent_history WHERE via = 'import') AS imported`, [CONSENT_WRITE_LOCK])
        return rows[0]!.held && Number(rows[0]!.imported) < ROWS / 2
      }, 120_000, 'the import to take the consent write lock')

      // More API writes at once than the gateway's pool has connections, so that with a whole-run lock they hold
      // every connection while they wait.
      // (a consentDate of this run: İYS refuses one more than three business days old, H467)
      const consentDate = formatIysDate(Math.floor(Date.now() / 1000) - 3600)
      const writes = Array.from({ length: 16 }, (_, i) => postJson(`${gw.url}/sps/${IYS}/brands/${LIVE_BRAND}/consents`, {
        recipient: `+90530999${String(i).padStart(4, '0')}`, type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate, recipientType: 'BIREYSEL'
      }))
      await new Promise(resolve => setTimeout(resolve, 50)) // let the writes take the connections first
      const pushes = Array.from({ length: 3 }, async (_, i) => {
        const item = { iysCode: IYS, brandCode: LIVE_BRAND, consentDate: '2025-02-02 10:00:00', creationDate: '2025-02-02 10:00:01', source: 'IYS_KISAMESAJ', recipient: `+90530888${String(i).padStart(4, '0')}`, recipientType: 'TACIR', status: 'RET', type: 'MESAJ' }
        const res = await fetch(gw.url + '/iys/push', { method: 'POST', headers: { 'content-type': 'application/json', authorization: AUTH }, body: JSON.stringify({ list: [item] }) })
        return { status: res.status, importRunning: !importDone, body: await res.text() }
      })
      const answered = await Promise.all(pushes)
      const written = await Promise.all(writes)
      const result = await importing

      for (const p of answered) {
        expect(p.status, p.body).toBe(200)
        expect(p.importRunning, 'push stored while the import was still running').toBe(true)
      }
      for (const w of written) expect(w.status, JSON.stringify(w.json)).toBe(200)

      // The import is complete and correct: every accepted row is one ledger entry, seqs have no duplicates, and
      // the live writes committed between its slices (their seqs fall inside the import's range).
      expect(result.rows).toBe(ROWS)
      expect(result.applied + result.rejected).toBe(ROWS)
      const ledger = await pool.query<{ n: string, lo: string, hi: string }>("SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM consent_history WHERE via = 'import'")
      expect(Number(ledger.rows[0]!.n)).toBe(result.applied)
      expect(Number(ledger.rows[0]!.hi)).toBe(result.lastSeq)
      const live = await pool.query<{ seq: string }>("SELECT seq FROM consent_history WHERE via = 'api'")
      expect(live.rows.length).toBe(16)
      expect(live.rows.some(r => Number(r.seq) > Number(ledger.rows[0]!.lo) && Number(r.seq) < Number(ledger.rows[0]!.hi))).toBe(true)
      const dup = await pool.query('SELECT seq FROM consent_history GROUP BY seq HAVING count(*) > 1')
      expect(dup.rows).toEqual([])
    } finally {
      await importing.catch(() => {})
      await importPool.end()
    }
  }, 240_000)

  it('every statement a slice runs under the write lock reaches the staging table, the state and the ledger through an index, never a scan', async () => {
    // The same file again, over the stored state the first import left (the plans of a re-import at scale), with
    // keys changed by another writer since the rows were judged, so that the slice judges them again. Each slice runs
    // inside the write lock, so a scan of import_staging per slice makes the import quadratic and holds the lock for
    // seconds per slice.
    const client = await pool.connect()
    try {
      const staged = await stageImport(client, { file, progress: false })
      expect(staged.slices).toBeGreaterThan(10)
      const slice = Math.floor(staged.slices / 2)
      await client.query(SLICE_SQL.changedKeys)
      const scans: string[] = []
      const FULL = ['import_staging', 'consents', 'consent_history'] // the tables whose scan grows with the import
      const plan = async (name: string, sql: string, params: unknown[]): Promise<void> => {
        const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${sql}`, params)
        const walk = (n: any): void => {
          if (n['Node Type'] === 'Seq Scan' && FULL.includes(n['Relation Name'])) scans.push(`${name}: ${n['Relation Name']}`)
          for (const c of n.Plans ?? []) walk(c)
        }
        walk((rows[0]!['QUERY PLAN'] as any)[0].Plan)
      }
      await client.query('BEGIN') // as applySlice runs them; rolled back, so the plans are all this changes
      for (const q of SLICE_SQL.settings) await client.query(q)
      // Another writer's change to keys of this slice: the first 50 keys of the slice, stored after the judging.
      await client.query(`INSERT INTO consent_history (seq, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, via)
        SELECT nextval('consent_seq'), brand_code, type, recipient_type, recipient, iys_code, 'RET', source, now(), 'api'
        FROM (SELECT DISTINCT brand_code, type, recipient_type, recipient, iys_code, source FROM import_staging WHERE slice = $1 LIMIT 50) k`, [slice])
      await plan('seeChanges', SLICE_SQL.seeChanges, [staged.judgedAt])
      const seen = await client.query<{ changed: string }>(SLICE_SQL.seeChanges, [staged.judgedAt])
      expect(Number(seen.rows[0]!.changed)).toBe(50)
      await plan('rejudge', SLICE_SQL.rejudge, ['iys', slice])
      await plan('countAccepted', SLICE_SQL.countAccepted, [slice])
      await plan('ledgerRows', SLICE_SQL.ledgerRows(slice, 1, 'NULL'), [])
      await plan('newStateRows', SLICE_SQL.newStateRows(slice, 1, 'NULL'), [])
      await plan('storedStateRows', upsertConsentsSql(SLICE_SQL.storedStateRows(slice, 1, 'NULL')), [])
      expect(scans).toEqual([])
    } finally {
      await client.query('ROLLBACK').catch(() => {})
      client.release(true) // drops the session's staging tables
    }
  }, 120_000)
})
