// `iys-gateway import`: bad rows go to a reject file with their line numbers and İYS codes while every good row
// is imported; İYS's rules apply row by row in consentDate order per key, whatever the order of the rows.

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { importConsents } from '../loaders/import.js'
import type { ValidConsent } from '../src/domain/consent.js'
import { parseIysDate } from '../src/domain/time.js'
import { writeConsentsTx } from '../src/store/consent-store.js'
import { CONSENT_WRITE_LOCK } from '../src/store/migrate.js'
import { runCli } from './helpers/cli.js'
import { testServices, type TestServices } from './helpers/services.js'

// Columns in another order than the documented one, and no recipientType column (defaults to BIREYSEL).
const HEADER = 'consentDate,status,type,source,recipient,brandCode,iysCode'
const ROWS: [string, string | null][] = [
  // [row, expected reject code or null]
  ['2024-02-01 10:00:00,RET,MESAJ,HS_WEB,05321230001,600001,700001', null], // newer RET first ...
  ['2023-02-01 10:00:00,ONAY,MESAJ,HS_WEB,+905321230001,600001,700001', null], // ... older ONAY later loses
  ['2023-05-05 10:00:00,ONAY,EPOSTA,HS_WEB," Mixed.Case@Example.COM ",600001,700001', null],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_WEB,0532 123,600001,700001', 'H121'],
  ['2023-05-05 10:00:00,ONAY,EPOSTA,HS_WEB,örnek@mail.com,600001,700001', 'H120'],
  ['2023-05-05 10:00:00,ONAY,FAX,HS_WEB,05321230002,600001,700001', 'H117'],
  ['2023-05-05 10:00:00,EVET,MESAJ,HS_WEB,05321230002,600001,700001', 'H115'],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_TELGRAF,05321230002,600001,700001', 'H119'],
  ['05.05.2023 10:00,ONAY,MESAJ,HS_WEB,05321230002,600001,700001', 'H158'],
  ['2023-02-30 10:00:00,ONAY,MESAJ,HS_WEB,05321230002,600001,700001', 'H157'],
  ['2015-04-30 23:59:59,ONAY,MESAJ,HS_WEB,05321230002,600001,700001', 'H156'],
  ['2099-01-01 00:00:00,ONAY,MESAJ,HS_WEB,05321230002,600001,700001', 'H162'],
  ['2016-01-01 00:00:00,ONAY,MESAJ,HS_2015,05321230002,600001,700001', 'H155'],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_KARAR,05321230002,600001,700001', 'H408'],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_WEB,ali@example.com,600001,700001', 'H464'],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_WEB,,600001,700001', 'H114'],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_WEB,"05321230002,600001,700001', 'INVALID_FIELD'],
  ['2023-05-05 10:00:00,ONAY,MESAJ,HS_WEB,05321230002,brand,700001', 'INVALID_BRAND_CODE'],
  ['2015-05-01 00:00:00,ONAY,ARAMA,HS_2015,(0532) 123 00 03,600001,700001', null]
]

describe('import', () => {
  let env: Record<string, string>
  let pool: pg.Pool
  let dir: string

  let ws: TestServices

  beforeAll(async () => {
    ws = await testServices({ migrate: true, poolSize: 1, dirPrefix: 'iys-imp-' })
    ;({ env, pool, dir } = ws)
  })

  afterAll(async () => { await ws?.close() })

  it('reports each bad row with its line number and İYS code and imports every good row', async () => {
    const file = join(dir, 'mixed.csv')
    writeFileSync(file, [HEADER, ...ROWS.map(r => r[0])].join('\r\n') + '\r\n')
    const res = await runCli(['import', file], env)
    expect(res.code).toBe(0)
    const summary = JSON.parse(res.stdout.trim())
    const bad = ROWS.filter(r => r[1] !== null)
    // Both rows of +905321230001 apply: sorted by date, the older ONAY comes first and the newer RET changes it.
    expect(summary).toMatchObject({ rows: ROWS.length, rejected: bad.length, valid: ROWS.length - bad.length, applied: 4, superseded: 0 })

    const rejects = readFileSync(summary.rejectFile, 'utf8').trim().split('\n')
    expect(rejects[0]).toBe('line,code,location,message')
    const got = rejects.slice(1).map(l => l.split(',').slice(0, 2).join(','))
    const want = ROWS.flatMap((r, i) => (r[1] === null ? [] : [`${i + 2},${r[1]}`]))
    expect(got).toEqual(want)
    // The reject file never repeats a recipient.
    expect(readFileSync(summary.rejectFile, 'utf8')).not.toMatch(/0532|@/)

    const { rows } = await pool.query('SELECT recipient, recipient_type, type, status, source FROM consents ORDER BY recipient, type')
    expect(rows).toEqual([
      { recipient: '+905321230001', recipient_type: 'BIREYSEL', type: 'MESAJ', status: 'RET', source: 'HS_WEB' },
      { recipient: '+905321230003', recipient_type: 'BIREYSEL', type: 'ARAMA', status: 'ONAY', source: 'HS_2015' },
      { recipient: 'mixed.case@example.com', recipient_type: 'BIREYSEL', type: 'EPOSTA', status: 'ONAY', source: 'HS_WEB' }
    ])
  })

  it('refuses a row older than the stored record (H178, superseded) and applies a newer one, with a ledger entry each', async () => {
    const file = join(dir, 'second.csv')
    writeFileSync(file, [
      'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate',
      '700001,600001,+905321230001,BIREYSEL,MESAJ,ONAY,HS_WEB,2023-12-31 23:59:59', // older than the stored RET
      '700001,600001,mixed.case@example.com,BIREYSEL,EPOSTA,RET,IYS_WEB,2025-01-01 00:00:00' // newer
    ].join('\n'))
    const res = await runCli(['import', file], env)
    expect(res.code).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 2, applied: 1, superseded: 1, rejected: 1, rejectsByCode: { H178: 1 } })
    expect(readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1).map(l => l.split(',').slice(0, 2).join(','))).toEqual(['2,H178'])
    const state = await pool.query("SELECT recipient, status FROM consents WHERE recipient IN ('+905321230001', 'mixed.case@example.com') ORDER BY recipient")
    expect(state.rows).toEqual([{ recipient: '+905321230001', status: 'RET' }, { recipient: 'mixed.case@example.com', status: 'RET' }])
    const history = await pool.query("SELECT status, via FROM consent_history WHERE recipient = 'mixed.case@example.com' ORDER BY seq")
    expect(history.rows).toEqual([{ status: 'ONAY', via: 'import' }, { status: 'RET', via: 'import' }])
    const seqs = await pool.query('SELECT c.seq = h.seq AS same FROM consents c JOIN consent_history h USING (seq)')
    expect(seqs.rows.every(r => r.same)).toBe(true)
  })

  it('with --rules provider applies H175 (first record RET) and H174 (same status) per key in date order, whatever the row order', async () => {
    const file = join(dir, 'rules.csv')
    const rows = [
      // key A (no record yet): RET first is H175; then ONAY, ONAY again (H174), RET — written out of order
      ['2024-03-01 00:00:00', 'RET', '+905321240001'], // 4th by date → applied
      ['2024-01-01 00:00:00', 'RET', '+905321240001'], // 1st → H175
      ['2024-02-15 00:00:00', 'ONAY', '+905321240001'], // 3rd → H174
      ['2024-02-01 00:00:00', 'ONAY', '+905321240001'], // 2nd → applied
      // key B: RET, RET — both H175 (no record ever)
      ['2024-01-01 00:00:00', 'RET', '+905321240002'],
      ['2024-01-02 00:00:00', 'RET', '+905321240002']
    ]
    writeFileSync(file, 'iysCode,brandCode,recipient,type,status,source,consentDate\n' +
      rows.map(([d, st, r]) => `700001,600009,${r},MESAJ,${st},HS_WEB,${d}`).join('\n') + '\n')
    const res = await runCli(['import', file, '--rules', 'provider'], env)
    expect(res.code).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 6, applied: 2, rejected: 4, rejectsByCode: { H175: 3, H174: 1 } })
    const rejects = readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1).map(l => l.split(',').slice(0, 2).join(','))
    expect(rejects).toEqual(['3,H175', '4,H174', '6,H175', '7,H175'])
    const history = await pool.query("SELECT status, to_char(consent_date AT TIME ZONE INTERVAL '+03:00', 'YYYY-MM-DD') AS d FROM consent_history WHERE brand_code = 600009 ORDER BY seq")
    expect(history.rows).toEqual([{ status: 'ONAY', d: '2024-02-01' }, { status: 'RET', d: '2024-03-01' }])
  })

  it('with İYS rules (the default) keeps a RET that has no ONAY before it, and refuses only exact duplicates', async () => {
    const file = join(dir, 'iys-rules.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,type,status,source,consentDate\n' + [
      '700001,600010,+905321250001,MESAJ,RET,IYS_KISAMESAJ,2024-01-01 00:00:00',
      '700001,600010,+905321250001,MESAJ,RET,IYS_KISAMESAJ,2024-01-01 00:00:00', // the same record twice
      '700001,600010,+905321250002,MESAJ,ONAY,HS_WEB,2024-01-01 00:00:00',
      '700001,600010,+905321250002,MESAJ,ONAY,HS_MOBIL,2024-06-01 00:00:00' // renewed consent: applies
    ].join('\n') + '\n')
    const res = await runCli(['import', file], env)
    expect(res.code).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 4, applied: 3, rejected: 1, rejectsByCode: { H174: 1 } })
    const { rows } = await pool.query("SELECT recipient, status, source FROM consents WHERE brand_code = 600010 ORDER BY recipient")
    expect(rows).toEqual([
      { recipient: '+905321250001', status: 'RET', source: 'IYS_KISAMESAJ' },
      { recipient: '+905321250002', status: 'ONAY', source: 'HS_MOBIL' }
    ])
  })

  it('imports an İYS list without codes in its items when --iys-code and --brand-code give them', async () => {
    const file = join(dir, 'iys-export.json')
    writeFileSync(file, JSON.stringify({ list: [
      { recipient: '+905321260001', recipientType: 'BIREYSEL', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', creationDate: '2024-01-01 10:00:03', transactionId: 'b'.repeat(64), citizenName: 'never stored' }
    ] }, null, 2))
    const without = await runCli(['import', file], env)
    expect(without.code).toBe(1) // nothing applied: every row was refused
    expect(without.stderr).toMatch(/^iys-gateway import: nothing applied: the one row was refused \(/m)
    expect(JSON.parse(without.stdout)).toMatchObject({ applied: 0, rejected: 1 })
    const res = await runCli(['import', file, '--iys-code', '700001', '--brand-code', '600011'], env)
    expect(res.code).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 1, applied: 1, rejected: 0 })
    const { rows } = await pool.query("SELECT iys_code::text, transaction_id FROM consent_history WHERE brand_code = 600011")
    expect(rows).toEqual([{ iys_code: '700001', transaction_id: 'b'.repeat(64) }])
    const bad = await runCli(['import', file, '--brand-code', 'x'], env)
    expect(bad.code).toBe(2)
  })

  it('stores İYS transactionIds exactly as the file carries them, non-ASCII letters, tabs, backslashes and line breaks included, and reads İYS\'s other creationDate shapes', async () => {
    // The first is İYS's own example (a dotless ı); the others hold every character COPY text gives a meaning.
    const ids = ['1sdfsdggjıoyrnvt734jlythk31ba92831d5c587ad25fgu67o3ed985', 'tab\there', 'back\\slash\\N', 'line\nbreak\r\nend', 'space and ünicode']
    const cds = ['2020-06-10 10:02:14:14', '2020-06-10T10:02:14.143Z', '2020-06-10 10:02:14', '2020-06-10T10:02:14+03:00', '2020-06-10 10:02:14.5']
    const file = join(dir, 'odd-ids.json')
    writeFileSync(file, JSON.stringify(ids.map((transactionId, i) => ({ iysCode: 700001, brandCode: 600012, recipient: `+90532127000${i}`, type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', creationDate: cds[i], transactionId }))))
    const res = await runCli(['import', file], env)
    expect(res.code).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: ids.length, applied: ids.length, rejected: 0 })
    const { rows } = await pool.query("SELECT transaction_id, to_char(creation_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS cd FROM consents WHERE brand_code = 600012 ORDER BY recipient")
    expect(rows.map(r => r.transaction_id)).toEqual(ids)
    // Turkey time (UTC+3) unless the text names its zone.
    expect(rows.map(r => r.cd)).toEqual(['2020-06-10 07:02:14', '2020-06-10 10:02:14', '2020-06-10 07:02:14', '2020-06-10 07:02:14', '2020-06-10 07:02:14'])
  })

  it('tells apart the items of a one-line JSON list: a duplicate among them refuses only itself, in every slice', async () => {
    // Every item starts on line 1. One exact duplicate (H174) must not mark the other items of its line, in its own
    // slice or a later one (one key per slice here), as refused.
    const item = (recipient: string, status: string): Record<string, unknown> =>
      ({ iysCode: 700001, brandCode: 600013, recipient, type: 'MESAJ', status, source: 'HS_WEB', consentDate: '2024-01-01 10:00:00' })
    const file = join(dir, 'one-line.json')
    writeFileSync(file, JSON.stringify([item('+905321290001', 'ONAY'), item('+905321290001', 'ONAY'), item('+905321290002', 'RET'), item('+905321290003', 'ONAY')]))
    const res = await importConsents(pool, { file, progress: false, sliceKeys: 1 })
    expect(res).toMatchObject({ rows: 4, applied: 3, rejected: 1, rejectsByCode: { H174: 1 } })
    expect(readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1).map(l => l.split(',').slice(0, 2).join(','))).toEqual(['1,H174'])
    const { rows } = await pool.query('SELECT recipient, status FROM consents WHERE brand_code = 600013 ORDER BY recipient')
    expect(rows).toEqual([{ recipient: '+905321290001', status: 'ONAY' }, { recipient: '+905321290002', status: 'RET' }, { recipient: '+905321290003', status: 'ONAY' }])
  })

  it('judges again, against the state stored then, the keys another writer changed after the rows were judged', async () => {
    // The rows are judged once, outside the write lock; İYS pushes land (under the lock) before the first slice runs.
    const date = (text: string): number => { const d = parseIysDate(text); if (!d.ok) throw new Error(text); return d.seconds }
    const at = (n: number, status: string, d: string): string => `700001,600014,+90532128000${n},MESAJ,${status},HS_WEB,${d}`
    const file = join(dir, 'raced.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,type,status,source,consentDate\n' + [
      at(1, 'ONAY', '2024-01-01 00:00:00'), // a newer RET is pushed meanwhile: superseded (H178)
      at(2, 'RET', '2024-01-01 00:00:00'), // an ONAY of 2024-02-01 is pushed meanwhile: superseded (H178) ...
      at(2, 'ONAY', '2024-03-01 00:00:00'), // ... and this renewed ONAY still applies
      at(3, 'ONAY', '2024-01-01 00:00:00'), // the same record is pushed meanwhile: a duplicate (H174)
      at(4, 'ONAY', '2024-01-01 00:00:00') // nobody else writes this key: applies
    ].join('\n') + '\n')
    const pushed = (n: number, status: 'ONAY' | 'RET', d: string): ValidConsent =>
      ({ iysCode: '700001', brandCode: '600014', recipient: `+90532128000${n}`, recipientType: 'BIREYSEL', type: 'MESAJ', status, source: 'HS_WEB', consentDate: date(d) })
    // Hold the write lock, so that the import judges its rows and then waits for it at its first slice.
    const writer = await pool.connect()
    let importing: Promise<Awaited<ReturnType<typeof importConsents>>> | null = null
    try {
      await writer.query('BEGIN')
      await writer.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
      const importPool = new pg.Pool({ connectionString: ws.db.url, max: 1 })
      importing = importConsents(importPool, { file, progress: false, sliceKeys: 2 }).finally(() => { void importPool.end() })
      for (;;) {
        const { rows } = await writer.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted
                                               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, [CONSENT_WRITE_LOCK])
        if (rows[0].n > 0) break
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      const outcomes = await writeConsentsTx(writer, [pushed(1, 'RET', '2024-06-01 00:00:00'), pushed(2, 'ONAY', '2024-02-01 00:00:00'), pushed(3, 'ONAY', '2024-01-01 00:00:00')]
        .map(consent => ({ consent, authority: 'iys' as const, via: 'push' as const })))
      expect(outcomes.map(o => o.status)).toEqual(['applied', 'applied', 'applied'])
      await writer.query('COMMIT')
    } finally {
      writer.release()
    }
    const res = await importing
    expect(res).toMatchObject({ rows: 5, applied: 2, rejected: 3, rejectsByCode: { H178: 2, H174: 1 } })
    expect(readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1).map(l => l.split(',').slice(0, 2).join(','))).toEqual(['2,H178', '3,H178', '5,H174'])
    const { rows } = await pool.query("SELECT recipient, status, to_char(consent_date AT TIME ZONE INTERVAL '+03:00', 'YYYY-MM-DD') AS d FROM consents WHERE brand_code = 600014 ORDER BY recipient")
    expect(rows).toEqual([
      { recipient: '+905321280001', status: 'RET', d: '2024-06-01' },
      { recipient: '+905321280002', status: 'ONAY', d: '2024-03-01' },
      { recipient: '+905321280003', status: 'ONAY', d: '2024-01-01' },
      { recipient: '+905321280004', status: 'ONAY', d: '2024-01-01' }
    ])
    const ledger = await pool.query("SELECT recipient, via FROM consent_history WHERE brand_code = 600014 ORDER BY seq")
    expect(ledger.rows.map(r => `${r.recipient.slice(-1)} ${r.via}`)).toEqual(['1 push', '2 push', '3 push', '2 import', '4 import'])
  })

  it('refuses a file whose header lacks a required column, importing nothing', async () => {
    const file = join(dir, 'noheader.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,type,status,consentDate\n700001,600001,+905321239999,MESAJ,ONAY,2024-01-01 00:00:00\n')
    const before = await pool.query('SELECT count(*)::int AS n FROM consents')
    const res = await runCli(['import', file], env)
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(/line 1: the header row lacks source/)
    const after = await pool.query('SELECT count(*)::int AS n FROM consents')
    expect(after.rows[0].n).toBe(before.rows[0].n)
  })
})
