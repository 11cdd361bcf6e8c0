// `iys-gateway import` takes İYS's JSON consent lists (a top-level array, or `{"list":[...]}` as İYS's pull and
// push bodies have it) and NDJSON beside CSV: the same consents end in the same state whatever the format, İYS's
// transactionId and creationDate reach the ledger, a broken item is reported with the line it starts on while the
// rest imports, and a file that is not a list at all is refused with one clear line, importing nothing.

import { readFileSync, writeFileSync, existsSync, createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mulberry32 } from '../src/util/random.js'
import { FileFormatError, readConsentFile, type ConsentBatch, type ConsentDefaults } from '../src/formats/consent-file.js'
import { readJsonListItems } from '../src/formats/json-lines.js'
import { runCli } from './helpers/cli.js'
import { testServices, type TestServices } from './helpers/services.js'

type Item = Record<string, unknown>

// The same nine consents in every format. Every item that lands carries a transactionId and a creationDate, so
// that the stored rows are identical to the byte whatever the format.
const SAME: Item[] = [
  { iysCode: 700001, brandCode: 600001, recipient: '05321110001', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', transactionId: 'tx-a1', creationDate: '2024-01-01 10:00:05' },
  { iysCode: 700001, brandCode: 600001, recipient: '+905321110001', type: 'MESAJ', status: 'RET', source: 'IYS_KISAMESAJ', consentDate: '2024-03-01 10:00:00', transactionId: 'tx-a2', creationDate: '2024-03-01 10:00:09' },
  // older than the row before it in the file: applies before it, in date order
  { iysCode: 700001, brandCode: 600001, recipient: '+90 532 111 00 01', type: 'MESAJ', status: 'ONAY', source: 'HS_MOBIL', consentDate: '2024-02-01 10:00:00', transactionId: 'tx-a3', creationDate: '2024-02-01 11:00:00' },
  // the first row again: H174
  { iysCode: 700001, brandCode: 600001, recipient: '05321110001', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', transactionId: 'tx-a4', creationDate: '2024-01-01 10:00:05' },
  { iysCode: 700001, brandCode: '000600001', recipient: ' Mixed.Case@Example.COM ', type: 'EPOSTA', status: 'ONAY', source: 'HS_WEB', consentDate: '2023-05-05 10:00:00', transactionId: 'tx_b1', creationDate: '2023-05-05 10:00:00' },
  { iysCode: 700001, brandCode: 600001, recipient: '(0532) 111 00 03', recipientType: 'TACIR', type: 'ARAMA', status: 'ONAY', source: 'HS_CAGRI_MERKEZI', consentDate: '2023-06-01 09:00:00', transactionId: 'C1', creationDate: '2023-06-01 09:00:00' },
  // a RET with no record before it: a fact under İYS's rules
  { iysCode: 700001, brandCode: 600001, recipient: '+905321110004', recipientType: 'BIREYSEL', type: 'MESAJ', status: 'RET', source: 'IYS_WEB', consentDate: '2024-02-02 02:02:02', transactionId: 'd1-6f1c2e0a-9b7d-4c3e-8f21-0a1b2c3d4e5f', creationDate: '2024-02-02 02:03:00' },
  { iysCode: 700001, brandCode: 600001, recipient: '0532 11', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', transactionId: 'tx-e1', creationDate: '2024-01-01 10:00:00' },
  { iysCode: 700001, brandCode: 600001, recipient: '+905321110005', type: 'ARAMA', status: 'ONAY', source: 'HS_2015', consentDate: '2015-05-01 00:00:00', transactionId: 'tx-f1', creationDate: '2020-01-01 00:00:00' }
]
const SAME_SUMMARY = { rows: 9, valid: 8, applied: 7, rejected: 2, rejectsByCode: { H174: 1, H121: 1 } }

const CSV_FIELDS = ['iysCode', 'brandCode', 'recipient', 'recipientType', 'type', 'status', 'source', 'consentDate', 'transactionId', 'creationDate']
const csvField = (v: unknown): string => (v === undefined ? '' : `"${String(v).replace(/"/g, '""')}"`)
const toCsv = (items: Item[]): string =>
  CSV_FIELDS.join(',') + '\n' + items.map(it => CSV_FIELDS.map(f => csvField(it[f])).join(',')).join('\n') + '\n'
/** One item per line, the layout most tools write: item i is on line i + 2. */
const toJsonArray = (items: Item[]): string => '[\n' + items.map(it => JSON.stringify(it)).join(',\n') + '\n]\n'
const toNdjson = (items: Item[]): string => items.map(it => JSON.stringify(it)).join('\n') + '\n'
/** As İYS answers a pull: other keys before and after "list", pretty-printed, extra fields in every item. */
const toIysList = (items: Item[]): string => JSON.stringify({
  after: 'eyJpZCI6MTIzNH0',
  list: items.map(it => ({ ...it, citizenName: 'Ayşe Yılmaz', retailerAccess: [22233344, 44222419] })),
  pageSize: 1000
}, null, 2) + '\n'

/** `line,code,location` of every refused row. */
function rejectsOf (file: string): string[] {
  if (!existsSync(file + '.rejects.csv')) return []
  return readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1).map(l => l.split(',').slice(0, 3).join(','))
}

/** The line on which each item starts when `texts` are written as `[\n` + texts.join(',\n') + `\n]`. */
function startLines (texts: string[]): number[] {
  let line = 2
  return texts.map(t => { const at = line; line += t.split('\n').length; return at })
}

async function collect (path: string, defaults?: ConsentDefaults): Promise<ConsentBatch> {
  const all: ConsentBatch = { consents: [], lines: [], rejects: [], transactionIds: [], creationDates: [], bytesRead: 0 }
  for await (const b of readConsentFile(path, Math.floor(Date.now() / 1000), defaults)) {
    all.consents.push(...b.consents); all.lines.push(...b.lines); all.rejects.push(...b.rejects)
    all.transactionIds.push(...b.transactionIds); all.creationDates.push(...b.creationDates); all.bytesRead = b.bytesRead
  }
  return all
}

describe('import of JSON and NDJSON consent lists', () => {
  let env: Record<string, string>
  let pool: pg.Pool
  let dir: string

  let ws: TestServices

  beforeAll(async () => {
    ws = await testServices({ migrate: true, poolSize: 1, dirPrefix: 'iys-fmt-' })
    ;({ env, pool, dir } = ws)
  })

  afterAll(async () => { await ws?.close() })

  async function importFile (name: string, content: string, args: string[] = []): Promise<{ code: number, stdout: string, stderr: string, file: string }> {
    const file = join(dir, name)
    writeFileSync(file, content)
    return { ...(await runCli(['import', file, ...args], env)), file }
  }

  const epoch = (col: string): string => `extract(epoch FROM ${col})::bigint::text AS ${col}`
  async function snapshot (): Promise<{ consents: unknown[], ledger: unknown[] }> {
    const consents = await pool.query(`SELECT brand_code::text, type, recipient_type, recipient, iys_code::text, status, source, ${epoch('consent_date')},
      transaction_id, ${epoch('creation_date')} FROM consents ORDER BY brand_code, type, recipient_type, recipient`)
    const ledger = await pool.query(`SELECT brand_code::text, type, recipient_type, recipient, iys_code::text, status, source, ${epoch('consent_date')},
      transaction_id, ${epoch('creation_date')}, via FROM consent_history ORDER BY seq`)
    return { consents: consents.rows, ledger: ledger.rows }
  }

  it('a JSON array, an İYS {"list":[...]} and NDJSON end in the same consents and ledger as the equivalent CSV', async () => {
    const results: Record<string, { consents: unknown[], ledger: unknown[] }> = {}
    for (const [name, content] of [['same.csv', toCsv(SAME)], ['same.json', toJsonArray(SAME)], ['same-list.json', toIysList(SAME)], ['same.ndjson', toNdjson(SAME)], ['same.jsonl', toNdjson(SAME)]] as const) {
      await pool.query('TRUNCATE consents, consent_history')
      const res = await importFile(name, content)
      expect(res.code, res.stderr).toBe(0)
      expect(JSON.parse(res.stdout)).toMatchObject(SAME_SUMMARY)
      expect(rejectsOf(res.file).map(r => r.split(',')[1])).toEqual(['H174', 'H121'])
      results[name] = await snapshot()
    }
    const csv = results['same.csv']!
    expect(csv.consents).toHaveLength(5)
    expect(csv.ledger).toHaveLength(7)
    for (const name of ['same.json', 'same-list.json', 'same.ndjson', 'same.jsonl']) expect(results[name], name).toEqual(csv)

    // The reject lines follow each format: CSV and the one-per-line array both have item i on line i + 2.
    expect(rejectsOf(join(dir, 'same.csv'))).toEqual(['5,H174,', '9,H121,recipient'])
    expect(rejectsOf(join(dir, 'same.json'))).toEqual(['5,H174,', '9,H121,recipient'])
    expect(rejectsOf(join(dir, 'same.ndjson'))).toEqual(['4,H174,', '8,H121,recipient'])
    // Pretty-printed: each item starts on the line of its `{`.
    const pretty = toIysList(SAME).split('\n')
    const itemStarts = pretty.flatMap((l, i) => (l === '    {' ? [i + 1] : []))
    expect(rejectsOf(join(dir, 'same-list.json'))).toEqual([`${itemStarts[3]},H174,`, `${itemStarts[7]},H121,recipient`])
  })

  it('stores the transactionId and creationDate the file carries in the ledger and the current state', async () => {
    await pool.query('TRUNCATE consents, consent_history')
    const res = await importFile('tx-list.json', toIysList(SAME))
    expect(res.code, res.stderr).toBe(0)
    const tr = (col: string): string => `to_char(${col} AT TIME ZONE INTERVAL '+03:00', 'YYYY-MM-DD HH24:MI:SS') AS ${col}`
    const ledger = await pool.query(`SELECT transaction_id, ${tr('creation_date')}, status FROM consent_history WHERE recipient = '+905321110001' ORDER BY seq`)
    expect(ledger.rows).toEqual([
      { transaction_id: 'tx-a1', creation_date: '2024-01-01 10:00:05', status: 'ONAY' },
      { transaction_id: 'tx-a3', creation_date: '2024-02-01 11:00:00', status: 'ONAY' },
      { transaction_id: 'tx-a2', creation_date: '2024-03-01 10:00:09', status: 'RET' }
    ])
    const state = await pool.query(`SELECT recipient, transaction_id, ${tr('creation_date')} FROM consents ORDER BY recipient`)
    expect(state.rows).toEqual([
      { recipient: '+905321110001', transaction_id: 'tx-a2', creation_date: '2024-03-01 10:00:09' },
      { recipient: '+905321110003', transaction_id: 'C1', creation_date: '2023-06-01 09:00:00' },
      { recipient: '+905321110004', transaction_id: 'd1-6f1c2e0a-9b7d-4c3e-8f21-0a1b2c3d4e5f', creation_date: '2024-02-02 02:03:00' },
      { recipient: '+905321110005', transaction_id: 'tx-f1', creation_date: '2020-01-01 00:00:00' },
      { recipient: 'mixed.case@example.com', transaction_id: 'tx_b1', creation_date: '2023-05-05 10:00:00' }
    ])
    // Fields the gateway does not know (İYS's citizenName, retailerAccess) are stored nowhere.
    const leaked = await pool.query(`SELECT (SELECT count(*) FROM consents c WHERE c::text ~ 'Ayşe|22233344')
      + (SELECT count(*) FROM consent_history h WHERE h::text ~ 'Ayşe|22233344') AS n`)
    expect(Number(leaked.rows[0].n)).toBe(0)
  })

  it('reports each broken item of a pretty-printed JSON list with the line it starts on, and imports the good ones', async () => {
    const good = (n: number, extra: Item = {}): Item => ({
      iysCode: 700001, brandCode: 600002, recipient: `+90532112000${n}`, type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', ...extra
    })
    const pretty = (o: unknown): string => JSON.stringify(o, null, 2)
    const items: [string, string | null][] = [
      [pretty(good(1, { citizenName: 'Ayşe Yılmaz', retailerAccess: [1, 2, 3] })), null],
      ['{\n  "recipient": "+905321120002",\n  "type": "MESAJ",\n  "status": ONAY\n}', 'H014,'],
      [pretty(good(3, { recipient: '0532 112' })), 'H121,recipient'],
      [pretty(good(4, { transactionId: 'tx\u00004' })), 'INVALID_FIELD,transactionId'],
      [pretty(good(5, { transactionId: 'x'.repeat(129) })), 'INVALID_FIELD,transactionId'],
      [pretty(good(6, { transactionId: 'x'.repeat(128), creationDate: '2024-02-30 10:00:00' })), 'H157,creationDate'],
      [pretty(good(7, { creationDate: '01.02.2024 10:00' })), 'H158,creationDate'],
      ['42', 'H014,'],
      [pretty({ ...good(8), iysCode: undefined }), 'INVALID_FIELD,iysCode'],
      // a string left open: the item ends at its line, the next item is found on the next line that starts with {
      ['{"recipient": "+905321120009, "type": "MESAJ", "status": "ONAY"}', 'H014,'],
      [pretty(good(0, { recipientType: 'TACIR', transactionId: 'x'.repeat(128), creationDate: '2024-01-01 10:00:00' })), null]
    ]
    const texts = items.map(i => i[0])
    const starts = startLines(texts)
    const res = await importFile('broken.json', '[\n' + texts.join(',\n') + '\n]\n')
    expect(res.code, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: items.length, applied: 2, rejected: items.length - 2 })
    expect(rejectsOf(res.file)).toEqual(items.flatMap((it, i) => (it[1] === null ? [] : [`${starts[i]},${it[1]}`])))
    const { rows } = await pool.query('SELECT recipient, recipient_type FROM consents WHERE brand_code = 600002 ORDER BY recipient')
    expect(rows).toEqual([{ recipient: '+905321120000', recipient_type: 'TACIR' }, { recipient: '+905321120001', recipient_type: 'BIREYSEL' }])
    // Nothing the user sees repeats a recipient or a field the gateway does not know.
    const visible = readFileSync(res.file + '.rejects.csv', 'utf8') + res.stdout + res.stderr
    expect(visible).not.toMatch(/\+90532|0532|Ayşe/)
  })

  it('in a one-item-per-line list, refuses the item after a missing comma and an empty item, and tolerates a trailing comma', async () => {
    const item = (n: number): string => JSON.stringify({ iysCode: '700001', brandCode: '600003', recipient: `+90532113000${n}`, type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00' })
    const content = [
      '{"list": [',
      item(1) + ',',
      item(2), // no comma after it
      item(3) + ',,',
      item(4) + ',',
      ']}'
    ].join('\n') + '\n'
    const res = await importFile('commas.json', content)
    expect(res.code, res.stderr).toBe(0)
    expect(rejectsOf(res.file)).toEqual(['4,H014,', '4,H014,'])
    expect(readFileSync(res.file + '.rejects.csv', 'utf8')).toMatch(/item 3 of the list: no ',' between this item and the one before it/)
    const { rows } = await pool.query('SELECT recipient FROM consents WHERE brand_code = 600003 ORDER BY recipient')
    expect(rows.map(r => r.recipient)).toEqual(['+905321130001', '+905321130002', '+905321130004'])
  })

  it('reports broken NDJSON lines by their line numbers, blank lines included in the count', async () => {
    const line = (n: number, extra: Item = {}): string => JSON.stringify({ iysCode: 700001, brandCode: 600004, recipient: `+90532114000${n}`, type: 'ARAMA', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00', ...extra })
    const content = [
      line(1),
      '',
      '{"recipient": "+905321140002", "type": "ARAMA",', // cut short
      '   ',
      line(3, { status: 'EVET' }),
      '[1, 2]',
      line(4, { creationDate: '2024-01-01' }),
      line(5, { transactionId: 12345 }),
      '\t' + line(6) + '  ',
      line(7, { consentDate: '2099-01-01 00:00:00' })
    ].join('\r\n')
    const res = await importFile('broken.ndjson', content)
    expect(res.code, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 8, applied: 2, rejected: 6 })
    expect(rejectsOf(res.file)).toEqual(['3,H014,', '5,H115,status', '6,H014,', '7,H158,creationDate', '8,INVALID_FIELD,transactionId', '10,H162,consentDate'])
    const { rows } = await pool.query('SELECT recipient FROM consents WHERE brand_code = 600004 ORDER BY recipient')
    expect(rows.map(r => r.recipient)).toEqual(['+905321140001', '+905321140006'])
    expect(readFileSync(res.file + '.rejects.csv', 'utf8')).not.toMatch(/0532/)
  })

  it('refuses a JSON file that is not a consent list, with one clear line, and imports nothing of it', async () => {
    const first = JSON.stringify({ iysCode: 700001, brandCode: 600005, recipient: '+905321150001', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-01 10:00:00' })
    const cases: [string, RegExp][] = [
      ['"+905321150001"', /line 1: a JSON consent file must hold an array of consents or an object with a "list" array/],
      ['\n\n{"errors": [{"code": "H014"}]}', /line 3: the top-level object has no "list" array of consents/],
      ['{"after": "x",\n "list": {"recipient": "+905321150001"}}', /line 2: "list" must be an array of consents/],
      [`[\n${first},\n{"recipient": "+9053211`, /line 3: the item starting here is not closed at the end of the file \(truncated\?\)/],
      [`{"list": [\n${first},\n${first}`, /line 3: the file ends before the list of consents is closed with '\]' \(truncated\?\)/],
      [`[\n${first}\n]\n[\n${first}\n]\n`, /line 4: unexpected text after the end of the JSON document/],
      ['', /the file is empty/]
    ]
    for (const [i, [content, message]] of cases.entries()) {
      const res = await importFile(`bad-${i}.json`, content)
      expect(res.code, content).toBe(1)
      const errors = res.stderr.split('\n').filter(l => l.startsWith('iys-gateway import:'))
      expect(errors, content).toHaveLength(1)
      expect(errors[0], content).toMatch(message)
      expect(res.stderr).not.toMatch(/0532/)
    }
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM consents WHERE brand_code = 600005')
    expect(rows[0].n).toBe(0)
  })

  it('fills iysCode and brandCode from the defaults where an İYS list leaves them out, and refuses the item without them', async () => {
    // A page of İYS's pull answer: no iysCode or brandCode in the items (the request named them).
    const pull = join(dir, 'pull.json')
    writeFileSync(pull, JSON.stringify({
      after: 'abc',
      list: [
        { consentDate: '2024-01-01 10:00:00', creationDate: '2024-01-01 10:00:01', source: 'IYS_WEB', recipient: '+905321160001', recipientType: 'BIREYSEL', status: 'RET', type: 'MESAJ', transactionId: 'p-1', citizenName: 'Ayşe Yılmaz' },
        { consentDate: '2024-01-02 10:00:00', creationDate: '2024-01-02 10:00:01', source: 'HS_WEB', recipient: 'a@example.com', recipientType: 'TACIR', status: 'ONAY', type: 'EPOSTA', transactionId: 'p-2', brandCode: 600099 }
      ]
    }))
    const without = await collect(pull)
    expect(without.consents).toHaveLength(0)
    expect(without.rejects.map(r => [r.line, r.error.code, r.error.location, r.error.message])).toEqual([
      [1, 'INVALID_FIELD', ['iysCode'], 'iysCode must be a positive integer (İYS code).'],
      [1, 'INVALID_FIELD', ['iysCode'], 'iysCode must be a positive integer (İYS code).']
    ])
    const filled = await collect(pull, { iysCode: '700001', brandCode: '0600006' })
    expect(filled.rejects).toEqual([])
    expect(filled.consents.map(c => [c.iysCode, c.brandCode, c.recipient, c.status])).toEqual([
      ['700001', '600006', '+905321160001', 'RET'],
      ['700001', '600099', 'a@example.com', 'ONAY'] // the item's own brandCode wins
    ])
    expect(filled.transactionIds).toEqual(['p-1', 'p-2'])
    expect(filled.creationDates).toEqual([1704092401, 1704178801])
    expect(JSON.stringify(filled)).not.toMatch(/Ayşe/)

    // CSV too: with defaults, the header may leave the columns out.
    const csv = join(dir, 'no-codes.csv')
    writeFileSync(csv, 'recipient,type,status,source,consentDate\n+905321160002,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00\n')
    expect((await collect(csv, { iysCode: '700001', brandCode: '600006' })).consents.map(c => c.brandCode)).toEqual(['600006'])
    await expect(collect(csv)).rejects.toThrow(FileFormatError)
    await expect(collect(csv)).rejects.toThrow(/line 1: the header row lacks iysCode, brandCode/)
    await expect(collect(csv, { iysCode: 'abc' })).rejects.toThrow(/the default iysCode must be a positive integer/)
  })

  it('finds the same items as JSON.parse in random JSON lists, however the bytes are split into chunks', async () => {
    const rnd = mulberry32(7)
    const pick = <T>(xs: readonly T[]): T => xs[(rnd() * xs.length) | 0]!
    const nasty = ['', 'a', '"', '\\', '\\"', '{', '}', '[', ']', ',', ':', 'ç', 'İ', '😀', '\n', '\t', '\u2028', '"}],{["', '\\\\"']
    const str = (): string => Array.from({ length: (rnd() * 5) | 0 }, () => pick(nasty)).join('')
    const value = (depth: number): unknown => {
      const r = rnd()
      if (r < 0.4 || depth > 2) return str()
      if (r < 0.55) return Math.round(rnd() * 1e6) / 100
      if (r < 0.6) return pick([true, false, null])
      if (r < 0.8) return Array.from({ length: (rnd() * 4) | 0 }, () => value(depth + 1))
      return Object.fromEntries(Array.from({ length: (rnd() * 4) | 0 }, () => [str(), value(depth + 1)]))
    }
    const ws = (): string => pick(['', '', ' ', '\n', ' \r\n  ', '\t'])
    for (let doc = 0; doc < 300; doc++) {
      const items = Array.from({ length: (rnd() * 8) | 0 }, () => rnd() < 0.9 ? Object.fromEntries(Array.from({ length: 1 + ((rnd() * 5) | 0) }, () => [str(), value(0)])) : value(1))
      const wrapped = rnd() < 0.5
      // Build the text and note the line each item starts on.
      let text = ws() + (wrapped ? `{${ws()}"after"${ws()}:${ws()}${JSON.stringify(value(0))},${ws()}"list"${ws()}:${ws()}[` : '[')
      const want: number[] = []
      items.forEach((it, i) => {
        text += ws()
        want.push(text.split('\n').length)
        text += JSON.stringify(it, null, rnd() < 0.3 ? 2 : undefined) + ws() + (i < items.length - 1 ? ',' : '')
      })
      text += ws() + ']' + (wrapped ? `${ws()},"x"${ws()}:${ws()}${JSON.stringify(value(0))}${ws()}}` : '') + ws()
      const parsed = JSON.parse(text) as unknown
      expect(wrapped ? (parsed as { list: unknown[] }).list : parsed).toEqual(items)

      const bytes = Buffer.from(text)
      const chunks: Buffer[] = []
      for (let i = 0; i < bytes.length;) { const n = 1 + ((rnd() * 40) | 0); chunks.push(bytes.subarray(i, i + n)); i += n }
      const got: unknown[] = []
      const lines: number[] = []
      for await (const b of readJsonListItems(Readable.from(chunks))) {
        expect(b.problems.every(p => p === null), text).toBe(true)
        got.push(...b.values); lines.push(...b.lines)
      }
      expect(got, text).toEqual(items)
      expect(lines, text).toEqual(want)
    }
  })

  it('streams a 200,000-item NDJSON file through the real import', async () => {
    const file = join(dir, 'big.ndjson')
    const out = createWriteStream(file)
    for (let i = 0; i < 200_000; i++) {
      const line = `{"brandCode":600007,"iysCode":700001,"recipient":"+90533${String(i).padStart(7, '0')}","type":"MESAJ","status":"${i % 10 === 0 ? 'RET' : 'ONAY'}","source":"HS_WEB","consentDate":"2024-01-01 10:00:00","transactionId":"big-${i}","citizenName":"x"}\n`
      if (!out.write(line)) await once(out, 'drain')
    }
    out.end()
    await once(out, 'close')
    const res = await runCli(['import', file], env, 180_000)
    expect(res.code, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout)).toMatchObject({ rows: 200_000, valid: 200_000, applied: 200_000, rejected: 0 })
    const { rows } = await pool.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE status = 'RET')::int AS ret,
      count(DISTINCT transaction_id)::int AS tx FROM consents WHERE brand_code = 600007`)
    expect(rows[0]).toEqual({ n: 200_000, ret: 20_000, tx: 200_000 })
  }, 240_000)

  it('streams a 200,000-item minified {"list":[...]} file, one line long, item by item', async () => {
    const file = join(dir, 'big-min.json')
    const out = createWriteStream(file)
    out.write('{"after":"x","list":[')
    for (let i = 0; i < 200_000; i++) {
      const item = `${i === 0 ? '' : ','}{"brandCode":600008,"iysCode":700001,"recipient":"+90534${String(i).padStart(7, '0')}","type":"MESAJ","status":"ONAY","source":"HS_WEB","consentDate":"2024-01-01 10:00:00"}`
      if (!out.write(item)) await once(out, 'drain')
    }
    out.end(']}')
    await once(out, 'close')
    let consents = 0
    let rejects = 0
    let batches = 0
    for await (const b of readConsentFile(file, Math.floor(Date.now() / 1000))) {
      consents += b.consents.length; rejects += b.rejects.length; batches++
      expect(b.lines.every(l => l === 1)).toBe(true)
    }
    expect({ consents, rejects }).toEqual({ consents: 200_000, rejects: 0 })
    expect(batches).toBeGreaterThan(10) // batch by batch, as the bytes come
  })
})
