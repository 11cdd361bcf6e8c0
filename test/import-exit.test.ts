// What `iys-gateway import` tells a script, through the real command line: exit 1 when rows were refused and none
// applied, or when more were refused than --max-rejects allows (the good rows still land; the exit code is the
// verdict); a row with more or fewer fields than the header is a field-count error on its line; a `;`-separated file
// (a spreadsheet's export in a Turkish locale) is read as such, and the summary says so.

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { importFailure, parseRejectLimit, type ImportResult } from '../loaders/import.js'
import { runCli, type CliResult } from './helpers/cli.js'
import { testServices, type TestServices } from './helpers/services.js'

const HEADER = 'iysCode,brandCode,recipient,type,status,source,consentDate'
const row = (n: number, status = 'ONAY', date = '2024-01-01 10:00:00'): string => `700001,600001,0532200${String(n).padStart(4, '0')},MESAJ,${status},HS_WEB,${date}`

/** `line,code` of every refused row, and the message of each. */
function rejects (file: string): { at: string[], messages: string[] } {
  const lines = readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1)
  return { at: lines.map(l => l.split(',').slice(0, 2).join(',')), messages: lines.map(l => l.slice(l.indexOf('"'))) }
}

/** The command's one-line verdict on stderr (the progress lines aside). */
const verdict = (r: CliResult): string[] => r.stderr.split('\n').filter(l => l.startsWith('iys-gateway import:'))

describe('import exit codes, field counts and separators', () => {
  let ws: TestServices
  let env: Record<string, string>
  let pool: pg.Pool
  let dir: string
  let n = 0

  beforeAll(async () => {
    ws = await testServices({ migrate: true, poolSize: 1, dirPrefix: 'iys-impx-' })
    ;({ env, pool, dir } = ws)
  })
  afterAll(async () => { await ws?.close() })

  const write = (text: string): string => {
    const file = join(dir, `f${++n}.csv`)
    writeFileSync(file, text)
    return file
  }
  const imp = async (file: string, ...flags: string[]): Promise<{ r: CliResult, summary: ImportResult }> => {
    const r = await runCli(['import', file, ...flags], env)
    return { r, summary: JSON.parse(r.stdout) }
  }
  const stored = async (recipients: number[]): Promise<number> => Number((await pool.query(
    'SELECT count(*) AS n FROM consents WHERE recipient = ANY($1)', [recipients.map(i => `+90532200${String(i).padStart(4, '0')}`)])).rows[0].n)

  it('exits 1 with one line when --rules provider refuses every row, and 0 when one row applies', async () => {
    const allRet = write(`${HEADER}\n${row(1, 'RET')}\n${row(2, 'RET')}\n`)
    const { r, summary } = await imp(allRet, '--rules', 'provider')
    expect(summary).toMatchObject({ rows: 2, applied: 0, rejected: 2, rejectsByCode: { H175: 2 } })
    expect(r.code).toBe(1)
    expect(verdict(r)).toEqual([`iys-gateway import: nothing applied: all 2 rows were refused (H175: 2); see ${allRet}.rejects.csv`])

    const oneGood = write(`${HEADER}\n${row(3, 'RET')}\n${row(4, 'ONAY')}\n`)
    const ok = await imp(oneGood, '--rules', 'provider')
    expect(ok.summary).toMatchObject({ applied: 1, rejected: 1 })
    expect(ok.r.code, ok.r.stderr).toBe(0)
    expect(verdict(ok.r)).toEqual([])
  })

  it('with İYS rules, a re-run of an imported file (every row already stored) exits 0; a file of only bad rows exits 1', async () => {
    const file = write(`${HEADER}\n${row(10)}\n${row(11, 'RET')}\n`)
    expect((await imp(file)).r.code).toBe(0)
    const again = await imp(file)
    expect(again.summary).toMatchObject({ applied: 0, rejected: 2, rejectsByCode: { H174: 2 } })
    expect(again.r.code, again.r.stderr).toBe(0)

    const bad = await imp(write(`${HEADER}\n700001,600001,0532 11,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00\n`))
    expect(bad.summary).toMatchObject({ applied: 0, rejected: 1, rejectsByCode: { H121: 1 } })
    expect(bad.r.code).toBe(1)
    expect(verdict(bad.r)[0]).toContain('nothing applied: the one row was refused (H121: 1)')
  })

  it('--max-rejects N and P%: exit 1 past the limit with the good rows applied, 0 within it', async () => {
    const bad = (i: number): string => `700001,600001,0532 ${i},MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00`
    const good = [20, 21, 22, 23, 24, 25]
    const text = `${HEADER}\n${good.map(i => row(i)).join('\n')}\n${bad(1)}\n${bad(2)}\n` // 8 rows, 2 bad (25%)
    const over = await imp(write(text), '--max-rejects', '1')
    expect(over.r.code).toBe(1)
    expect(verdict(over.r)).toHaveLength(1)
    expect(verdict(over.r)[0]).toMatch(/2 rows refused \(H121: 2\), more than --max-rejects 1; 6 good rows were applied/)
    expect(await stored(good)).toBe(6)

    const pct = await imp(write(text.replace(/0532200(\d{4})/g, '0532201$1')), '--max-rejects', '20%')
    expect(pct.r.code).toBe(1)
    expect(verdict(pct.r)[0]).toContain('more than --max-rejects 20% (1 of 8 rows)')
    expect(pct.summary.applied).toBe(6)

    expect((await imp(write(text.replace(/0532200(\d{4})/g, '0532202$1')), '--max-rejects', '2')).r.code).toBe(0)
    expect((await imp(write(text.replace(/0532200(\d{4})/g, '0532203$1')), '--max-rejects', '25%')).r.code).toBe(0)
    for (const wrong of ['x', '-1', '1.5', '101%']) {
      const r = await runCli(['import', join(dir, 'f1.csv'), `--max-rejects=${wrong}`], env)
      expect(r.code).toBe(2)
      expect(r.stderr.split('\n').filter(l => l !== '')).toEqual([expect.stringContaining('--max-rejects must be')])
    }
  })

  it('reports a row with more fields than the header, and one with fewer, as field-count errors on their lines', async () => {
    const file = write(`${HEADER}\n${row(30)}\n${row(31)},extra\n700001,600001,05322000032,MESAJ,ONAY,HS_WEB\n\n${row(33)}\n`)
    const { r, summary } = await imp(file)
    expect(r.code, r.stderr).toBe(0)
    expect(summary).toMatchObject({ rows: 4, valid: 2, applied: 2, rejected: 2, rejectsByCode: { INVALID_FIELD: 2 } })
    const got = rejects(file)
    expect(got.at).toEqual(['3,INVALID_FIELD', '4,INVALID_FIELD'])
    expect(got.messages).toEqual(['"the row has 8 fields, the header 7 (field count)"', '"the row has 6 fields, the header 7 (field count)"'])
    expect(await stored([30, 31, 32, 33])).toBe(2)
  })

  it('reads a ;-separated file (quotes and a Turkish header order included) and says so in the summary', async () => {
    const file = write([
      'consentDate;status;type;source;recipient;brandCode;iysCode',
      '2024-01-01 10:00:00;ONAY;MESAJ;HS_WEB;05322000040;600001;700001',
      '"2024-01-01 10:00:00";ONAY;EPOSTA;HS_WEB;"a;b@example.com";600001;700001',
      '2024-01-01 10:00:00;ONAY;MESAJ;HS_WEB;05322000041;600001', // short: field count
      ''
    ].join('\r\n'))
    const { r, summary } = await imp(file)
    expect(r.code, r.stderr).toBe(0)
    expect(summary).toMatchObject({ rows: 3, applied: 1, rejected: 2, separator: ';' })
    expect(rejects(file).at).toEqual(['3,H120', '4,INVALID_FIELD'])
    expect(r.stderr).toContain('read as ;-separated CSV')
    expect(await stored([40, 41])).toBe(1)
    // A comma file says nothing of the kind.
    const comma = await imp(write(`${HEADER}\n${row(42)}\n`))
    expect(comma.summary).not.toHaveProperty('separator')
  })

  it('parses --max-rejects and judges a result the way the command does', () => {
    expect(parseRejectLimit('0')).toEqual({ count: 0 })
    expect(parseRejectLimit('250')).toEqual({ count: 250 })
    expect(parseRejectLimit('0.5%')).toEqual({ percent: 0.5 })
    for (const bad of ['', '%', '-3', '2.5', '100.1%', '5 %x']) expect(parseRejectLimit(bad)).toBeNull()
    const result = (applied: number, rejectsByCode: Record<string, number>): ImportResult => {
      const rejected = Object.values(rejectsByCode).reduce((a, b) => a + b, 0)
      return { rows: applied + rejected, valid: applied + rejected, rejected, applied, superseded: rejectsByCode.H178 ?? 0, rejectsByCode, rejectFile: rejected > 0 ? 'r.csv' : null, lastSeq: applied }
    }
    expect(importFailure(result(0, {}), 'iys', null)).toBeNull() // an empty file
    expect(importFailure(result(0, { H174: 3, H178: 1 }), 'iys', null)).toBeNull()
    expect(importFailure(result(0, { H174: 3 }), 'provider', null)).toMatch(/^nothing applied/)
    expect(importFailure(result(0, { H174: 3, H121: 1 }), 'iys', null)).toMatch(/^nothing applied/)
    expect(importFailure(result(99, { H121: 1 }), 'iys', { percent: 1 })).toBeNull() // 1 of 100 is 1 %
    expect(importFailure(result(98, { H121: 2 }), 'iys', { percent: 1 })).toMatch(/more than --max-rejects 1%/)
    expect(importFailure(result(5, { H121: 1 }), 'iys', { count: 0 })).toMatch(/more than --max-rejects 0/)
  })
})
